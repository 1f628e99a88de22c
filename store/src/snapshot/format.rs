//! The data file format of a snapshot (see the parent module's docs): writing records while
//! keeping the size, CRC-32 and count the descriptor will carry, and reading a file back
//! with every check a receiver makes.

use std::fs::File;
use std::io::{self, BufReader, Read, Write};
use std::path::{Path, PathBuf};

use tessera_proto::storepb::Region;

use super::{io_error, Described, SnapshotError, IO_BUFFER_BYTES};

pub(super) const MAGIC: [u8; 4] = *b"TSNP";
pub(super) const FORMAT_VERSION: u32 = 1;
pub(super) const HEADER_BYTES: u64 = 8;
pub(super) const RECORD_HEADER_BYTES: u64 = 8;

/// What the descriptor says about a data file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct FileSummary {
    pub(super) data_bytes: u64,
    pub(super) data_crc32: u32,
    pub(super) kvs_len: u64,
}

/// Writes the data file format to `W`, keeping its size, CRC-32 and record count.
#[derive(Debug)]
pub(super) struct RecordWriter<W: Write> {
    inner: W,
    /// For errors only.
    path: PathBuf,
    hasher: crc32fast::Hasher,
    summary: FileSummary,
}

impl<W: Write> RecordWriter<W> {
    pub(super) fn new(inner: W, path: &Path) -> Result<RecordWriter<W>, SnapshotError> {
        let mut writer = RecordWriter {
            inner,
            path: path.to_path_buf(),
            hasher: crc32fast::Hasher::new(),
            summary: FileSummary { data_bytes: 0, data_crc32: 0, kvs_len: 0 },
        };
        writer.write(&MAGIC)?;
        writer.write(&FORMAT_VERSION.to_le_bytes())?;
        Ok(writer)
    }

    pub(super) fn write(&mut self, bytes: &[u8]) -> Result<(), SnapshotError> {
        self.inner.write_all(bytes).map_err(io_error("writing", &self.path))?;
        self.hasher.update(bytes);
        self.summary.data_bytes += bytes.len() as u64;
        Ok(())
    }

    pub(super) fn put(&mut self, key: &[u8], value: &[u8]) -> Result<(), SnapshotError> {
        let len_u32 =
            |what, len: usize| u32::try_from(len).map_err(|_| SnapshotError::RecordTooLarge { what, len });
        let key_len = len_u32("key", key.len())?;
        let value_len = len_u32("value", value.len())?;
        self.write(&key_len.to_le_bytes())?;
        self.write(&value_len.to_le_bytes())?;
        self.write(key)?;
        self.write(value)?;
        self.summary.kvs_len += 1;
        Ok(())
    }

    pub(super) fn finish(mut self) -> Result<(W, FileSummary), SnapshotError> {
        self.inner.flush().map_err(io_error("writing", &self.path))?;
        self.summary.data_crc32 = self.hasher.finalize();
        Ok((self.inner, self.summary))
    }
}

/// A reader that keeps the CRC-32 of what it read.
pub(super) struct CrcReader<R> {
    inner: R,
    hasher: crc32fast::Hasher,
}

impl<R: Read> Read for CrcReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }
}

/// Reads the data file at `path` and checks it against `described`: its length, header,
/// record framing, keys (inside the region, strictly increasing), record count and CRC-32.
/// Calls `visit` with each (user key, value) as it goes, before the CRC is known: a caller
/// that must not act on a bad file reads it once with a `visit` that does nothing.
pub(super) fn read_records(
    path: &Path,
    described: &Described,
    mut visit: impl FnMut(&[u8], &[u8]),
) -> Result<(), SnapshotError> {
    let corrupt = |reason: String| SnapshotError::Corrupt { path: path.to_path_buf(), reason };
    // A file that ends before its length says is corrupt too, however the read noticed it.
    let read_error = |e: io::Error| {
        if e.kind() == io::ErrorKind::UnexpectedEof {
            corrupt("the file ends early".to_string())
        } else {
            io_error("reading", path)(e)
        }
    };
    let descriptor = &described.descriptor;
    let file = File::open(path).map_err(io_error("opening", path))?;
    let file_bytes = file.metadata().map_err(io_error("reading the size of", path))?.len();
    if file_bytes != descriptor.data_bytes {
        return Err(corrupt(format!(
            "the file has {file_bytes} bytes, its descriptor says {}",
            descriptor.data_bytes
        )));
    }
    let mut reader = CrcReader {
        inner: BufReader::with_capacity(IO_BUFFER_BYTES, file),
        hasher: crc32fast::Hasher::new(),
    };
    let mut header = [0u8; HEADER_BYTES as usize];
    reader.read_exact(&mut header).map_err(read_error)?;
    if header[..4] != MAGIC {
        return Err(corrupt("not a snapshot data file (bad magic)".to_string()));
    }
    let version = u32::from_le_bytes(header[4..].try_into().expect("four bytes"));
    if version != FORMAT_VERSION {
        return Err(corrupt(format!("format version {version}; this store reads version {FORMAT_VERSION}")));
    }
    let region = &described.region;
    let mut offset_bytes = HEADER_BYTES;
    let (mut key, mut value, mut previous_key) = (Vec::new(), Vec::new(), Vec::new());
    let mut kvs_len = 0u64;
    while offset_bytes < descriptor.data_bytes {
        if descriptor.data_bytes - offset_bytes < RECORD_HEADER_BYTES {
            return Err(corrupt(format!("the record at byte {offset_bytes} is cut off")));
        }
        let mut lens = [0u8; RECORD_HEADER_BYTES as usize];
        reader.read_exact(&mut lens).map_err(read_error)?;
        offset_bytes += RECORD_HEADER_BYTES;
        let key_len = u64::from(u32::from_le_bytes(lens[..4].try_into().expect("four bytes")));
        let value_len = u64::from(u32::from_le_bytes(lens[4..].try_into().expect("four bytes")));
        // The lengths come from the file: check them against what is left of it before
        // reading, so that a corrupt length cannot make us allocate gigabytes.
        let remaining_bytes = descriptor.data_bytes - offset_bytes;
        if key_len + value_len > remaining_bytes {
            return Err(corrupt(format!(
                "the record at byte {} claims {} bytes, {remaining_bytes} remain",
                offset_bytes - RECORD_HEADER_BYTES,
                key_len + value_len
            )));
        }
        read_exactly(&mut reader, &mut key, key_len).map_err(read_error)?;
        read_exactly(&mut reader, &mut value, value_len).map_err(read_error)?;
        offset_bytes += key_len + value_len;
        if !region_contains(region, &key) {
            return Err(corrupt(format!(
                "key {key:02x?} is outside region {} [{:02x?}, {:02x?})",
                region.id, region.start_key, region.end_key
            )));
        }
        if kvs_len > 0 && key <= previous_key {
            return Err(corrupt(format!("key {key:02x?} does not follow {previous_key:02x?}")));
        }
        visit(&key, &value);
        kvs_len += 1;
        std::mem::swap(&mut key, &mut previous_key);
    }
    if kvs_len != descriptor.kvs_len {
        return Err(corrupt(format!("{kvs_len} records, the descriptor says {}", descriptor.kvs_len)));
    }
    let crc32 = reader.hasher.finalize();
    if crc32 != descriptor.data_crc32 {
        return Err(corrupt(format!(
            "CRC-32 {crc32:08x}, the descriptor says {:08x}",
            descriptor.data_crc32
        )));
    }
    Ok(())
}

/// Reads exactly `len` bytes into `buf`, replacing what it held.
pub(super) fn read_exactly(reader: &mut impl Read, buf: &mut Vec<u8>, len: u64) -> io::Result<()> {
    buf.clear();
    reader.take(len).read_to_end(buf)?;
    if (buf.len() as u64) < len {
        return Err(io::ErrorKind::UnexpectedEof.into());
    }
    Ok(())
}

pub(super) fn region_contains(region: &Region, user_key: &[u8]) -> bool {
    user_key >= region.start_key.as_slice()
        && (region.end_key.is_empty() || user_key < region.end_key.as_slice())
}
