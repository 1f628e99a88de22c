//! The snapshot data files of a store: generating them from a consistent view of a region,
//! reading them out in bounded chunks for a send, staging and checking what another store
//! sends, and staging a received snapshot into the write batch that applies it.
//!
//! A region snapshot is a `raftpb::Snapshot` whose metadata is an applied index, its term and
//! the configuration there, and whose `data` is an encoded `SnapshotDescriptor`: the region
//! at that index and the size, CRC-32 and record count of a data file. The data file travels
//! beside the Raft message in chunks, so that a region of any size is never one message and
//! never sits whole in memory on either side.
//!
//! # Life of a snapshot
//! - The leader's apply thread calls `spawn_generate`, which returns once a generation
//!   thread holds a RocksDB snapshot (`Engine::read_view`). The apply thread writes nothing
//!   in between, so the view holds exactly the state at the snapshot's index. The thread
//!   writes `gen_{region}_{term}_{index}.snap` and hands the `Snapshot` to `on_done`.
//! - A send thread takes a `SendGuard`, streams `open_chunks` through the transport, and
//!   calls `remove_generated` when the send is over, whatever its outcome.
//! - The receiving store's network thread calls `receive`, which writes the chunks to a
//!   staging file, checks all of it, and only then gives it the name
//!   `rcv_{region}_{term}_{index}.snap`. The Raft message is delivered after that.
//! - The peer applies with `apply_to_batch`, which stages a range delete and the records
//!   into the batch that also carries the region's new state, and calls `remove_received`
//!   once that batch is written.
//!
//! # Data file format, version 1
//!
//! ```text
//! header:  b"TSNP" | format version: u32 little-endian (1)
//! record:  key length: u32 LE | value length: u32 LE | key | value      (repeated)
//! ```
//!
//! Keys are user keys, without the prefix `keys::data_key` adds: the file then does not
//! depend on how a store lays out its column families, and the receiver encodes each key
//! with its own layout. Keys are strictly increasing and inside the descriptor's region.
//! Nothing follows the last record: the descriptor carries the file's length, its CRC-32
//! (IEEE, over the whole file, header included) and its record count, so the file needs no
//! footer. A reader checks all of these and refuses a file that disagrees with any; bad data
//! is an error, never a panic. `snapshot_tests.rs` pins the encoding.
//!
//! # Files
//! One directory per store holds nothing but these files. A file is written under a unique
//! staging name (`….snap.{seq}.tmp`), synced, linked to its final name (which never
//! replaces a file another transfer of the same snapshot published), and the directory
//! synced: a file under a final name is always complete. The format's code is in
//! `snapshot/format.rs`. At open, staging files (a crash
//! during a generation or a receive), generated files (their sends died with the process,
//! and Raft asks for a new snapshot) and received files (the message that would install one
//! lived in memory only, so the leader sends the snapshot again) are removed (LESSONS.md
//! #24). An installed snapshot needs no file: its install was one write.
//!
//! # Limits and metrics
//! Generations, sends and receives each have a per-store concurrency limit
//! (`SnapshotConfig`); beyond it the caller gets `SnapshotError::Busy` (or no `SendGuard`)
//! and Raft retries later. Metrics: `tessera_snapshot_{generated,received,applied}_total`,
//! `tessera_snapshot_{generated,received,applied}_bytes_total`,
//! `tessera_snapshot_{generate,receive}_failed_total`,
//! `tessera_snapshot_generate_duration_seconds`, `tessera_snapshot_busy_total{what}` and the
//! gauge `tessera_snapshot_in_progress{what}`, with `what` one of generate, send, receive;
//! `tessera_snapshot_leftovers_removed_total` at open. `SnapshotManager::stats` returns the
//! same counts without a metrics recorder.

use std::fs::{self, File, OpenOptions};
use std::io::{self, BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::Instant;

use bytes::Bytes;
use prost::Message as _;
use tessera_proto::raftpb::{ConfState, Snapshot, SnapshotMetadata};
use tessera_proto::serverpb::{RaftMessage, SnapshotDescriptor};
use tessera_proto::storepb::Region;
use tessera_router::SnapshotChunks;

use crate::engine::{Engine, EngineError, ReadView, WriteBatch};
use crate::keys::{self, CF_DEFAULT};

mod format;
use format::{read_records, RecordWriter, HEADER_BYTES};

/// The buffer between a file and the code that reads or writes it record by record: large
/// enough that small records do not cost a system call each.
const IO_BUFFER_BYTES: usize = 64 << 10;

/// How a store keeps and moves its snapshot files.
#[derive(Clone, Debug)]
pub struct SnapshotConfig {
    /// The directory of this store's snapshot files. Files under names this module does not
    /// use are left alone.
    pub dir: PathBuf,
    /// The size of the pieces a data file is sent in: what one chunk costs in memory on each
    /// side, and the size of one network message (keep it under the transport's limit).
    pub chunk_bytes: usize,
    /// Generations at once. Each is a thread scanning a region and writing a file, and each
    /// holds a RocksDB snapshot, which keeps old versions of data from being compacted away.
    pub generate_concurrency_max: usize,
    /// Sends at once. Each is a thread with an open file and a chunk in memory, and they
    /// share the network with Raft's own messages.
    pub send_concurrency_max: usize,
    /// Receives at once. Each holds a network thread and writes a file; beyond the limit a
    /// store refuses, and the sender retries later, rather than letting snapshots pile up
    /// on its disk (LESSONS.md #24).
    pub receive_concurrency_max: usize,
}

impl SnapshotConfig {
    /// The defaults, with files in `dir`.
    pub fn new(dir: impl Into<PathBuf>) -> SnapshotConfig {
        SnapshotConfig {
            dir: dir.into(),
            chunk_bytes: 1 << 20,
            generate_concurrency_max: 2,
            send_concurrency_max: 4,
            receive_concurrency_max: 4,
        }
    }

    /// Refuses a configuration that could never move a snapshot.
    pub fn validate(&self) -> Result<(), SnapshotError> {
        let limits = [
            ("chunk_bytes", self.chunk_bytes),
            ("generate_concurrency_max", self.generate_concurrency_max),
            ("send_concurrency_max", self.send_concurrency_max),
            ("receive_concurrency_max", self.receive_concurrency_max),
        ];
        for (name, value) in limits {
            if value == 0 {
                return Err(SnapshotError::Config(format!("{name} must be positive")));
            }
        }
        Ok(())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error("invalid snapshot config: {0}")]
    Config(String),
    /// At a concurrency limit. Nothing was done; Raft retries the snapshot later.
    #[error("snapshot {what} is at its concurrency limit of {limit}")]
    Busy { what: &'static str, limit: usize },
    #[error("{op} {path}: {source}")]
    Io { op: &'static str, path: PathBuf, source: io::Error },
    #[error("spawning a snapshot thread: {0}")]
    Spawn(io::Error),
    /// A data file disagrees with its descriptor or with the format.
    #[error("corrupt snapshot data in {path}: {reason}")]
    Corrupt { path: PathBuf, reason: String },
    /// A snapshot's metadata or descriptor is missing, does not decode, or contradicts the
    /// message that carries it.
    #[error("bad snapshot descriptor: {0}")]
    BadDescriptor(String),
    #[error("reading the engine for a snapshot: {0}")]
    Engine(#[from] EngineError),
    /// The sender's side of a transfer failed; the transfer is abandoned.
    #[error("snapshot data source failed: {0}")]
    Source(String),
    #[error("a {what} of {len} bytes does not fit the data file's 32-bit lengths")]
    RecordTooLarge { what: &'static str, len: usize },
    #[error("the generation thread of region {region_id} stopped before taking its read view")]
    GenerateThreadDied { region_id: u64 },
    /// `apply_to_batch` found the file bad on its second read after the first had found it
    /// good, so the batch already holds part of the snapshot: drop the batch, never write it.
    #[error("snapshot file changed while it was applied; the batch holds part of it: {0}")]
    ApplyAborted(Box<SnapshotError>),
}

fn io_error<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> SnapshotError + 'a {
    move |source| SnapshotError::Io { op, path: path.to_path_buf(), source }
}

/// Counts of what a manager did, for tests and debugging; the metrics carry the same.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SnapshotStats {
    pub generated: u64,
    pub generate_failed: u64,
    pub received: u64,
    pub receive_failed: u64,
    /// Snapshots staged into an apply batch (whether the batch was then written is the
    /// caller's).
    pub applied: u64,
    pub busy_generate: u64,
    pub busy_send: u64,
    pub busy_receive: u64,
    pub generating: usize,
    pub sending: usize,
    pub receiving: usize,
    /// Staging and generated files of a previous run removed at open.
    pub leftovers_removed: u64,
}

#[derive(Debug, Default)]
struct Counters {
    generated: AtomicU64,
    generate_failed: AtomicU64,
    received: AtomicU64,
    receive_failed: AtomicU64,
    applied: AtomicU64,
    leftovers_removed: AtomicU64,
}

/// One per-store concurrency limit.
#[derive(Debug)]
struct Slots {
    /// The label of its metrics and the subject of its Busy errors.
    what: &'static str,
    limit: usize,
    in_use: AtomicUsize,
    busy: AtomicU64,
}

impl Slots {
    fn new(what: &'static str, limit: usize) -> Arc<Slots> {
        Arc::new(Slots { what, limit, in_use: AtomicUsize::new(0), busy: AtomicU64::new(0) })
    }

    /// A free slot, or None (counted as busy) at the limit.
    fn try_acquire(self: &Arc<Self>) -> Option<SlotGuard> {
        let guard = self.take_free();
        if guard.is_none() {
            self.busy.fetch_add(1, Ordering::Relaxed);
            metrics::counter!("tessera_snapshot_busy_total", "what" => self.what).increment(1);
        }
        guard
    }

    /// A free slot, or None at the limit, uncounted.
    fn take_free(self: &Arc<Self>) -> Option<SlotGuard> {
        self.in_use
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| (n < self.limit).then_some(n + 1))
            .ok()?;
        metrics::gauge!("tessera_snapshot_in_progress", "what" => self.what).increment(1.0);
        Some(SlotGuard { slots: Arc::clone(self) })
    }

    fn busy_error(&self) -> SnapshotError {
        SnapshotError::Busy { what: self.what, limit: self.limit }
    }
}

/// One slot of a `Slots`, given back on drop.
#[derive(Debug)]
struct SlotGuard {
    slots: Arc<Slots>,
}

impl Drop for SlotGuard {
    fn drop(&mut self) {
        self.slots.in_use.fetch_sub(1, Ordering::AcqRel);
        metrics::gauge!("tessera_snapshot_in_progress", "what" => self.slots.what).decrement(1.0);
    }
}

/// Every receive slot of a store, taken by a test (`SnapshotManager::hold_receives`):
/// until it drops, each snapshot that arrives is refused as Busy.
#[derive(Debug)]
pub struct ReceiveHold {
    _slots: Vec<SlotGuard>,
}

/// The right to run one send; the slot is given back when it drops.
#[derive(Debug)]
pub struct SendGuard {
    _slot: SlotGuard,
}

/// Which snapshot a file holds. Two snapshots of a region at one index hold the same data
/// (the state machine is deterministic), so one file per (region, term, index) suffices.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct SnapshotId {
    region_id: u64,
    term: u64,
    index: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum FileKind {
    Generated,
    Received,
}

impl FileKind {
    fn prefix(self) -> &'static str {
        match self {
            FileKind::Generated => "gen_",
            FileKind::Received => "rcv_",
        }
    }
}

const FINAL_SUFFIX: &str = ".snap";
const STAGING_SUFFIX: &str = ".tmp";

/// What a snapshot says about its data file, checked to be complete.
#[derive(Debug)]
struct Described {
    id: SnapshotId,
    descriptor: SnapshotDescriptor,
    region: Region,
}

/// Which file holds `snapshot`, whether generated or received, or None for a snapshot
/// that is not one of ours.
pub(crate) fn file_id(snapshot: &Snapshot) -> Option<SnapshotId> {
    describe(snapshot).ok().map(|described| described.id)
}

fn describe(snapshot: &Snapshot) -> Result<Described, SnapshotError> {
    let metadata = snapshot
        .metadata
        .as_deref()
        .ok_or_else(|| SnapshotError::BadDescriptor("no metadata".to_string()))?;
    let descriptor = SnapshotDescriptor::decode(&snapshot.data[..])
        .map_err(|e| SnapshotError::BadDescriptor(format!("data does not decode as a descriptor: {e}")))?;
    let region =
        descriptor.region.clone().ok_or_else(|| SnapshotError::BadDescriptor("no region".to_string()))?;
    if descriptor.data_bytes < HEADER_BYTES {
        return Err(SnapshotError::BadDescriptor(format!(
            "a data file of {} bytes is shorter than its header",
            descriptor.data_bytes
        )));
    }
    let id = SnapshotId { region_id: region.id, term: metadata.term, index: metadata.index };
    Ok(Described { id, descriptor, region })
}

/// The snapshot files of one store, and its limits on moving them.
#[derive(Debug)]
pub struct SnapshotManager {
    config: SnapshotConfig,
    generate_slots: Arc<Slots>,
    send_slots: Arc<Slots>,
    receive_slots: Arc<Slots>,
    counters: Counters,
    /// Makes staging names unique, so that two transfers of one snapshot never share a file.
    staging_seq: AtomicU64,
    /// Tests hold generation threads here, right after they take their view, to write to
    /// the engine at a moment they control.
    #[cfg(test)]
    generate_gate: std::sync::Mutex<Option<crossbeam_channel::Receiver<()>>>,
    /// Tests make the syncs of snapshot files fail here, as a failing disk would.
    #[cfg(test)]
    sync_fault: std::sync::Mutex<Option<SyncFault>>,
}

/// Which sync of a snapshot file a test makes fail: the file's data, or the directory
/// entry of its final name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum SyncFault {
    File,
    Directory,
}

impl SnapshotManager {
    /// Opens the directory of `config`, creating it, and removes what a previous run left
    /// behind (see the module docs).
    pub fn open(config: SnapshotConfig) -> Result<Arc<SnapshotManager>, SnapshotError> {
        config.validate()?;
        fs::create_dir_all(&config.dir).map_err(io_error("creating", &config.dir))?;
        let leftovers_removed = remove_leftovers(&config.dir)?;
        metrics::counter!("tessera_snapshot_leftovers_removed_total").increment(leftovers_removed);
        let manager = SnapshotManager {
            generate_slots: Slots::new("generate", config.generate_concurrency_max),
            send_slots: Slots::new("send", config.send_concurrency_max),
            receive_slots: Slots::new("receive", config.receive_concurrency_max),
            counters: Counters {
                leftovers_removed: AtomicU64::new(leftovers_removed),
                ..Counters::default()
            },
            staging_seq: AtomicU64::new(0),
            #[cfg(test)]
            generate_gate: std::sync::Mutex::new(None),
            #[cfg(test)]
            sync_fault: std::sync::Mutex::new(None),
            config,
        };
        Ok(Arc::new(manager))
    }

    pub fn config(&self) -> &SnapshotConfig {
        &self.config
    }

    pub fn stats(&self) -> SnapshotStats {
        let count = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        let c = &self.counters;
        SnapshotStats {
            generated: count(&c.generated),
            generate_failed: count(&c.generate_failed),
            received: count(&c.received),
            receive_failed: count(&c.receive_failed),
            applied: count(&c.applied),
            busy_generate: count(&self.generate_slots.busy),
            busy_send: count(&self.send_slots.busy),
            busy_receive: count(&self.receive_slots.busy),
            generating: self.generate_slots.in_use.load(Ordering::Relaxed),
            sending: self.send_slots.in_use.load(Ordering::Relaxed),
            receiving: self.receive_slots.in_use.load(Ordering::Relaxed),
            leftovers_removed: count(&c.leftovers_removed),
        }
    }

    fn path(&self, kind: FileKind, id: SnapshotId) -> PathBuf {
        let SnapshotId { region_id, term, index } = id;
        self.config.dir.join(format!("{}{region_id}_{term}_{index}{FINAL_SUFFIX}", kind.prefix()))
    }

    fn staging_path(&self, kind: FileKind, id: SnapshotId) -> PathBuf {
        let seq = self.staging_seq.fetch_add(1, Ordering::Relaxed);
        let mut path = self.path(kind, id).into_os_string();
        path.push(format!(".{seq}{STAGING_SUFFIX}"));
        path.into()
    }

    /// Generates a snapshot of `region` at `index` (of `term`, with `conf_state`) on a new
    /// thread, and calls `on_done` with it there.
    ///
    /// Returns once the thread holds its read view of `engine`. The caller (the apply
    /// thread) must not write to the region from the moment it decides on `index` until
    /// this returns: the view then holds exactly the region at `index`. Later writes are not
    /// in the snapshot. On an error nothing was started and `on_done` is never called;
    /// otherwise it is called exactly once.
    pub fn spawn_generate(
        self: &Arc<Self>,
        engine: Arc<Engine>,
        region: Region,
        index: u64,
        term: u64,
        conf_state: ConfState,
        on_done: Box<dyn FnOnce(Result<Snapshot, SnapshotError>) + Send>,
    ) -> Result<(), SnapshotError> {
        let Some(slot) = self.generate_slots.try_acquire() else {
            return Err(self.generate_slots.busy_error());
        };
        let region_id = region.id;
        let id = SnapshotId { region_id, term, index };
        let manager = Arc::clone(self);
        let (view_taken_tx, view_taken_rx) = crossbeam_channel::bounded(1);
        thread::Builder::new()
            .name(format!("snap-gen-{region_id}"))
            .spawn(move || {
                let view = engine.read_view();
                // The caller is blocked in `recv` until this arrives, so the send cannot
                // fail; from here on the caller may write again.
                let _ = view_taken_tx.send(());
                #[cfg(test)]
                manager.wait_at_generate_gate();
                let started = Instant::now();
                let result = manager.generate(&view, region, id, conf_state);
                // Give back the RocksDB snapshot and the slot before the callback runs, so
                // that the callback may start another generation.
                drop(view);
                drop(slot);
                match &result {
                    Ok((_, data_bytes)) => {
                        manager.counters.generated.fetch_add(1, Ordering::Relaxed);
                        metrics::counter!("tessera_snapshot_generated_total").increment(1);
                        metrics::counter!("tessera_snapshot_generated_bytes_total").increment(*data_bytes);
                        metrics::histogram!("tessera_snapshot_generate_duration_seconds")
                            .record(started.elapsed().as_secs_f64());
                    }
                    Err(_) => {
                        manager.counters.generate_failed.fetch_add(1, Ordering::Relaxed);
                        metrics::counter!("tessera_snapshot_generate_failed_total").increment(1);
                    }
                }
                on_done(result.map(|(snapshot, _)| snapshot));
            })
            .map_err(SnapshotError::Spawn)?;
        view_taken_rx.recv().map_err(|_| SnapshotError::GenerateThreadDied { region_id })
    }

    /// The sync a test made fail, if any.
    fn injected_sync_fault(&self) -> Option<SyncFault> {
        #[cfg(test)]
        return *self.sync_fault.lock().expect("no test panics holding the fault");
        #[cfg(not(test))]
        None
    }

    #[cfg(test)]
    fn wait_at_generate_gate(&self) {
        let gate = self.generate_gate.lock().expect("no test panics holding the gate").clone();
        if let Some(gate) = gate {
            let _ = gate.recv();
        }
    }

    /// Scans the region through `view` into a generated file; returns the snapshot and the
    /// size of its file.
    fn generate(
        &self,
        view: &ReadView<'_>,
        region: Region,
        id: SnapshotId,
        conf_state: ConfState,
    ) -> Result<(Snapshot, u64), SnapshotError> {
        let (staging, file) = StagingFile::create(self.staging_path(FileKind::Generated, id))?;
        let mut writer = RecordWriter::new(BufWriter::with_capacity(IO_BUFFER_BYTES, file), staging.path())?;
        let range = keys::data_range(&region.start_key, &region.end_key);
        let mut write_error = None;
        view.scan(CF_DEFAULT, &range.start, &range.end, |key, value| {
            let user_key = keys::user_key(key).expect("invariant: a data range holds only data keys");
            match writer.put(user_key, value) {
                Ok(()) => Ok(true),
                Err(e) => {
                    write_error = Some(e);
                    Ok(false)
                }
            }
        })?;
        if let Some(e) = write_error {
            return Err(e);
        }
        let (buffered, summary) = writer.finish()?;
        let file = buffered.into_inner().map_err(|e| io_error("writing", staging.path())(e.into_error()))?;
        staging.publish(
            file,
            &self.path(FileKind::Generated, id),
            &self.config.dir,
            self.injected_sync_fault(),
        )?;
        let descriptor = SnapshotDescriptor {
            region: Some(region),
            data_bytes: summary.data_bytes,
            data_crc32: summary.data_crc32,
            kvs_len: summary.kvs_len,
        };
        let snapshot = Snapshot {
            data: descriptor.encode_to_vec().into(),
            metadata: Some(Box::new(SnapshotMetadata {
                conf_state: Some(conf_state),
                index: id.index,
                term: id.term,
            })),
        };
        Ok((snapshot, summary.data_bytes))
    }

    /// Takes a send slot, if one is free. Hold it for the whole send.
    pub fn try_acquire_send(&self) -> Option<SendGuard> {
        self.send_slots.try_acquire().map(|slot| SendGuard { _slot: slot })
    }

    /// The generated file of `snapshot`, as chunks of `chunk_bytes` read one at a time.
    pub fn open_chunks(&self, snapshot: &Snapshot) -> Result<FileChunks, SnapshotError> {
        let described = describe(snapshot)?;
        let path = self.path(FileKind::Generated, described.id);
        let file = File::open(&path).map_err(io_error("opening", &path))?;
        let file_bytes = file.metadata().map_err(io_error("reading the size of", &path))?.len();
        if file_bytes != described.descriptor.data_bytes {
            let reason = format!(
                "the file has {file_bytes} bytes, its descriptor says {}",
                described.descriptor.data_bytes
            );
            return Err(SnapshotError::Corrupt { path, reason });
        }
        Ok(FileChunks { file, path, chunk_bytes: self.config.chunk_bytes, remaining_bytes: file_bytes })
    }

    /// Deletes the generated file of `snapshot`, once its send is over. A file already gone
    /// is not an error.
    pub fn remove_generated(&self, snapshot: &Snapshot) -> Result<(), SnapshotError> {
        let described = describe(snapshot)?;
        remove_if_present(&self.path(FileKind::Generated, described.id))
    }

    /// Fault injection for tests: takes every free receive slot, as receives in flight
    /// would, so that the store refuses snapshots as Busy until the hold drops.
    pub fn hold_receives(&self) -> ReceiveHold {
        let mut taken = Vec::with_capacity(self.receive_slots.limit);
        while let Some(slot) = self.receive_slots.take_free() {
            taken.push(slot);
        }
        ReceiveHold { _slots: taken }
    }

    /// Receives the data file of the snapshot `msg` carries from `chunks`, checks it against
    /// the descriptor (size, CRC-32, format, keys inside the region), and keeps it for
    /// `apply_to_batch`. On any error nothing is kept.
    pub fn receive(&self, msg: &RaftMessage, chunks: &mut dyn SnapshotChunks) -> Result<(), SnapshotError> {
        let Some(_slot) = self.receive_slots.try_acquire() else {
            return Err(self.receive_slots.busy_error());
        };
        match self.receive_file(msg, chunks) {
            Ok(data_bytes) => {
                self.counters.received.fetch_add(1, Ordering::Relaxed);
                metrics::counter!("tessera_snapshot_received_total").increment(1);
                metrics::counter!("tessera_snapshot_received_bytes_total").increment(data_bytes);
                Ok(())
            }
            Err(e) => {
                self.counters.receive_failed.fetch_add(1, Ordering::Relaxed);
                metrics::counter!("tessera_snapshot_receive_failed_total").increment(1);
                Err(e)
            }
        }
    }

    /// `receive` without its slot and counts; returns the size of the file.
    fn receive_file(&self, msg: &RaftMessage, chunks: &mut dyn SnapshotChunks) -> Result<u64, SnapshotError> {
        let snapshot = msg
            .message
            .as_ref()
            .and_then(|m| m.snapshot.as_deref())
            .ok_or_else(|| SnapshotError::BadDescriptor("the message carries no snapshot".to_string()))?;
        let described = describe(snapshot)?;
        if described.id.region_id != msg.region_id {
            return Err(SnapshotError::BadDescriptor(format!(
                "a snapshot of region {} in a message for region {}",
                described.id.region_id, msg.region_id
            )));
        }
        let data_bytes = described.descriptor.data_bytes;
        let (staging, file) = StagingFile::create(self.staging_path(FileKind::Received, described.id))?;
        let mut writer = BufWriter::with_capacity(IO_BUFFER_BYTES, file);
        let mut received_bytes = 0u64;
        while let Some(chunk) = chunks.next_chunk().map_err(SnapshotError::Source)? {
            received_bytes += chunk.len() as u64;
            // Refused at once: a sender that sends more than it announced is broken, and
            // its data would otherwise fill the disk.
            if received_bytes > data_bytes {
                let reason = format!("more than the descriptor's {data_bytes} bytes arrived");
                return Err(SnapshotError::Corrupt { path: staging.path().to_path_buf(), reason });
            }
            writer.write_all(&chunk).map_err(io_error("writing", staging.path()))?;
        }
        if received_bytes < data_bytes {
            let reason = format!("only {received_bytes} of the descriptor's {data_bytes} bytes arrived");
            return Err(SnapshotError::Corrupt { path: staging.path().to_path_buf(), reason });
        }
        let file = writer.into_inner().map_err(|e| io_error("writing", staging.path())(e.into_error()))?;
        // Checking reads the file back, mostly from the page cache. That costs a read but
        // keeps one reader of the format, the one `apply_to_batch` uses, instead of a
        // second, incremental one for chunks.
        read_records(staging.path(), &described, |_, _| {})?;
        let final_path = self.path(FileKind::Received, described.id);
        staging.publish(file, &final_path, &self.config.dir, self.injected_sync_fault())?;
        Ok(data_bytes)
    }

    /// Whether the data file of `snapshot` was received and kept.
    pub fn has_received(&self, snapshot: &Snapshot) -> bool {
        describe(snapshot).is_ok_and(|d| self.path(FileKind::Received, d.id).is_file())
    }

    /// Stages the received data of `snapshot` into `batch`: one range delete over the
    /// region's data range (the old data of that range goes), then a put per record.
    /// Returns the descriptor; the caller adds the region's new state to the same batch and
    /// writes it, then calls `remove_received`.
    ///
    /// The file is read twice: once to check all of it, then to stage it. A bad file
    /// therefore leaves the batch as it was, which matters because the batch may carry
    /// other regions' writes. Only a file that changes between the two reads ends with
    /// `SnapshotError::ApplyAborted` and a batch that must be dropped.
    pub fn apply_to_batch(
        &self,
        batch: &mut WriteBatch,
        snapshot: &Snapshot,
    ) -> Result<SnapshotDescriptor, SnapshotError> {
        let described = describe(snapshot)?;
        let path = self.path(FileKind::Received, described.id);
        read_records(&path, &described, |_, _| {})?;
        let range = keys::data_range(&described.region.start_key, &described.region.end_key);
        batch.delete_range(CF_DEFAULT, &range.start, &range.end);
        read_records(&path, &described, |key, value| batch.put(CF_DEFAULT, &keys::data_key(key), value))
            .map_err(|e| SnapshotError::ApplyAborted(Box::new(e)))?;
        self.counters.applied.fetch_add(1, Ordering::Relaxed);
        metrics::counter!("tessera_snapshot_applied_total").increment(1);
        metrics::counter!("tessera_snapshot_applied_bytes_total").increment(described.descriptor.data_bytes);
        Ok(described.descriptor)
    }

    /// Deletes the received file of `snapshot`, once the batch that applied it is written
    /// (or the snapshot is abandoned). A file already gone is not an error.
    pub fn remove_received(&self, snapshot: &Snapshot) -> Result<(), SnapshotError> {
        let described = describe(snapshot)?;
        remove_if_present(&self.path(FileKind::Received, described.id))
    }
}

/// Removes the snapshot files of a previous run from `dir`; returns how many.
fn remove_leftovers(dir: &Path) -> Result<u64, SnapshotError> {
    let mut removed = 0;
    for entry in fs::read_dir(dir).map_err(io_error("listing", dir))? {
        let entry = entry.map_err(io_error("listing", dir))?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if is_leftover(name) {
            let path = entry.path();
            fs::remove_file(&path).map_err(io_error("removing", &path))?;
            removed += 1;
        }
    }
    Ok(removed)
}

fn is_leftover(name: &str) -> bool {
    let staging = name.ends_with(STAGING_SUFFIX)
        && (name.starts_with(FileKind::Generated.prefix()) || name.starts_with(FileKind::Received.prefix()));
    let complete = (name.starts_with(FileKind::Generated.prefix())
        || name.starts_with(FileKind::Received.prefix()))
        && name.ends_with(FINAL_SUFFIX);
    staging || complete
}

fn remove_if_present(path: &Path) -> Result<(), SnapshotError> {
    match fs::remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(io_error("removing", path)(e)),
        _ => Ok(()),
    }
}

/// A file being written under a staging name. It is removed on drop unless published.
#[derive(Debug)]
struct StagingFile {
    path: PathBuf,
    published: bool,
}

impl StagingFile {
    fn create(path: PathBuf) -> Result<(StagingFile, File), SnapshotError> {
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)
            .map_err(io_error("creating", &path))?;
        Ok((StagingFile { path, published: false }, file))
    }

    fn path(&self) -> &Path {
        &self.path
    }

    /// Syncs `file`, then gives it `final_path` and syncs `dir`, so that a file is under its
    /// final name only once it is complete on disk. If another transfer of the same snapshot
    /// published that name first, its file holds the same snapshot, checked the same way: it
    /// stays, and this transfer's staging file goes. So a transfer never replaces or removes
    /// a final file it did not create.
    ///
    /// A failed sync fails the transfer and removes the file it wrote, under whichever name
    /// it has then: after a failed fsync the page cache may have dropped the data, so the
    /// file is never synced again or trusted (LESSONS.md #25). Unlike a failed write of the
    /// engine, it does not stop the store: nothing durable depends on a snapshot file (a
    /// restart removes them all, and an installed snapshot lives in the engine), so the
    /// leader's next transfer replaces it, and a failing disk stops the store at the
    /// engine's next fsync.
    fn publish(
        mut self,
        file: File,
        final_path: &Path,
        dir: &Path,
        injected_fault: Option<SyncFault>,
    ) -> Result<(), SnapshotError> {
        let sync = |file: &File, at: SyncFault| {
            if injected_fault == Some(at) {
                return Err(io::Error::other("injected sync failure"));
            }
            file.sync_all()
        };
        sync(&file, SyncFault::File).map_err(io_error("syncing", &self.path))?;
        drop(file);
        // A link, unlike a rename, never replaces an existing name.
        match fs::hard_link(&self.path, final_path) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => return Ok(()),
            Err(e) => return Err(io_error("linking", &self.path)(e)),
        }
        // Best effort: a staging name left behind is removed at the next open.
        let _ = fs::remove_file(&self.path);
        // From here on the file has only its final name, which the drop removes if the
        // directory's sync fails.
        self.path = final_path.to_path_buf();
        File::open(dir).and_then(|d| sync(&d, SyncFault::Directory)).map_err(io_error("syncing", dir))?;
        self.published = true;
        Ok(())
    }
}

impl Drop for StagingFile {
    fn drop(&mut self) {
        if !self.published {
            // Best effort: what is left is removed at the next open.
            let _ = fs::remove_file(&self.path);
        }
    }
}

/// A generated data file read in chunks of at most `chunk_bytes`, for a send; from
/// `SnapshotManager::open_chunks`. Only one chunk is in memory at a time.
#[derive(Debug)]
pub struct FileChunks {
    file: File,
    path: PathBuf,
    chunk_bytes: usize,
    remaining_bytes: u64,
}

impl SnapshotChunks for FileChunks {
    fn next_chunk(&mut self) -> Result<Option<Bytes>, String> {
        if self.remaining_bytes == 0 {
            return Ok(None);
        }
        let want_bytes = self.remaining_bytes.min(self.chunk_bytes as u64);
        let mut chunk = Vec::with_capacity(want_bytes as usize);
        (&mut self.file)
            .take(want_bytes)
            .read_to_end(&mut chunk)
            .map_err(|e| format!("reading {}: {e}", self.path.display()))?;
        if (chunk.len() as u64) < want_bytes {
            let missing_bytes = self.remaining_bytes - chunk.len() as u64;
            return Err(format!("{} ended {missing_bytes} bytes early", self.path.display()));
        }
        self.remaining_bytes -= want_bytes;
        Ok(Some(Bytes::from(chunk)))
    }
}

#[cfg(test)]
#[path = "snapshot_tests.rs"]
mod tests;
