//! The store's one RocksDB: opening it with its column families, typed reads, and write
//! batches that many regions share.
//!
//! A failed write is fatal. After a failed fsync the kernel may have dropped the dirty pages
//! it could not write, so a retry that succeeds proves nothing about the earlier data
//! (LESSONS.md #25). `Engine::write` therefore returns `EngineError::WriteFailed`, which
//! the caller must treat as the end of the store; nothing in this crate retries a write.
//! The raft and apply pollers stop the store on it (`StoreContext::stop_fatally`).

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use rocksdb::{
    statistics::{StatsLevel, Ticker},
    BlockBasedOptions, Cache, ColumnFamily, ColumnFamilyDescriptor, DBCompressionType, Direction,
    IteratorMode, Options, ReadOptions, SnapshotWithThreadMode, WriteOptions, DB,
};

use crate::keys::{ALL_CFS, CF_DEFAULT, REGION_RECORD_KEY_LEN};

/// The RocksDB column-family option that hints memtable inserts by key prefix; the C API
/// has no setter for it, so it is set by name.
const INSERT_HINT_OPTION: &str = "memtable_insert_with_hint_prefix_extractor";

/// How the engine is opened.
#[derive(Clone, Debug)]
pub struct EngineConfig {
    /// The block cache shared by every column family. It bounds the memory RocksDB spends
    /// on reads, whatever the number of regions.
    pub block_cache_bytes: usize,
    /// RocksDB's flush and compaction threads.
    pub background_jobs: i32,
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig { block_cache_bytes: 64 << 20, background_jobs: 2 }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("opening RocksDB at {path}: {source}")]
    Open { path: PathBuf, source: rocksdb::Error },
    #[error("reading RocksDB: {0}")]
    ReadFailed(rocksdb::Error),
    /// Fatal: the store must stop (see the module docs).
    #[error("writing RocksDB failed; the store must stop, not retry: {0}")]
    WriteFailed(String),
    /// A stored value did not decode: the disk or an older format wrote something else.
    #[error("corrupt record in CF {cf} at key {key:02x?}: {reason}")]
    Corrupt { cf: &'static str, key: Vec<u8>, reason: String },
}

pub type EngineResult<T> = Result<T, EngineError>;

/// A key and its value, as an iterator returns them.
pub type KeyValue = (Box<[u8]>, Box<[u8]>);

/// One RocksDB with the column families of `keys`.
pub struct Engine {
    db: DB,
    /// The options the database was opened with: they hold RocksDB's statistics, which the
    /// database shares (see `wal_syncs`).
    db_options: Options,
    path: PathBuf,
    /// Fault injection: every write fails from the moment it is set (see `fail_writes`).
    failing_writes: AtomicBool,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine").field("path", &self.path).finish_non_exhaustive()
    }
}

impl Engine {
    /// Opens (creating if needed) the engine in directory `path`.
    pub fn open(path: &Path, config: &EngineConfig) -> EngineResult<Engine> {
        let cache = Cache::new_lru_cache(config.block_cache_bytes);
        // The WAL stays on, flushed by every write, with the default point-in-time recovery:
        // raft state, apply state and data share it, and a crash recovers a prefix of it.
        // Data and its apply state must survive or vanish together, so do not turn on
        // `manual_wal_flush`, skip the WAL for apply writes, or pick a recovery mode that
        // skips corrupted records.
        let mut db_options = Options::default();
        db_options.create_if_missing(true);
        db_options.create_missing_column_families(true);
        db_options.set_max_background_jobs(config.background_jobs);
        // Memtable inserts hinted by region (below) only happen on RocksDB's serial insert
        // path; with concurrent inserts on, a write group of several pollers takes the
        // unhinted concurrent path instead. The switch is database-wide, so the apply
        // pollers' data inserts take the serial path too: alternated bench pairs at 1 and
        // 64 regions (1 KiB values) showed no cost to that.
        db_options.set_allow_concurrent_memtable_write(false);
        // Counters only (no histograms or timers, which read the clock per operation): the
        // store reports the WAL syncs RocksDB did. Concurrent synced writes (two raft pollers
        // ending their rounds together) join one write group and share its sync, so synced
        // writes overcount the disk's flushes; a bench at 64 regions showed about a third
        // fewer fdatasync calls than synced writes.
        db_options.enable_statistics();
        db_options.set_statistics_level(StatsLevel::ExceptHistogramOrTimers);
        let mut descriptors = Vec::with_capacity(ALL_CFS.len());
        for name in ALL_CFS {
            let mut table = BlockBasedOptions::default();
            table.set_block_cache(&cache);
            let mut cf_options = if name == CF_DEFAULT {
                Options::default()
            } else {
                // With many regions writing, every round appends an entry and rewrites the
                // apply state of each region (the raft state only on a new term or vote, an
                // overwritten tail or a snapshot), at scattered places in the memtable: a
                // full skip-list search each, which profiles showed as the largest CPU cost
                // per write at 1,024 regions. A record's first bytes name its region
                // and kind, and each region's records of one kind arrive in key order (log
                // indexes grow; a state's new version sorts right before its old one), so
                // RocksDB can remember where the last insert of that prefix landed and
                // start the next one there.
                Options::default()
                    .get_options_from_string(format!(
                        "{INSERT_HINT_OPTION}=rocksdb.FixedPrefix.{REGION_RECORD_KEY_LEN}"
                    ))
                    .map_err(|source| EngineError::Open { path: path.to_path_buf(), source })?
            };
            cf_options.set_block_based_table_factory(&table);
            // Log entries live briefly (log GC deletes them soon after they apply) and are
            // read back hot, mostly from the entry cache: compressing them costs CPU on every
            // write for little space. User data is compressed.
            let compression =
                if name == CF_DEFAULT { DBCompressionType::Lz4 } else { DBCompressionType::None };
            cf_options.set_compression_type(compression);
            descriptors.push(ColumnFamilyDescriptor::new(name, cf_options));
        }
        let db = DB::open_cf_descriptors(&db_options, path, descriptors)
            .map_err(|source| EngineError::Open { path: path.to_path_buf(), source })?;
        Ok(Engine { db, db_options, path: path.to_path_buf(), failing_writes: AtomicBool::new(false) })
    }

    /// Makes every later write fail as a failed fsync would, for tests of what the store
    /// does then (it must stop, not retry).
    pub fn fail_writes(&self) {
        self.failing_writes.store(true, Ordering::Relaxed);
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// How many times RocksDB has synced its write-ahead log since the engine opened
    /// (its `WAL_FILE_SYNCED` ticker): one per synced write group, however many synced
    /// writes RocksDB merged into it, and one per sync of logs closed when a memtable
    /// filled. A count of sync operations, not of fsync system calls.
    pub fn wal_syncs(&self) -> u64 {
        self.db_options.get_ticker_count(Ticker::WalFileSynced)
    }

    /// Memory RocksDB holds now: every column family's memtables, plus the shared block
    /// cache's contents (counted once). Properties it cannot read count as zero.
    pub fn memory_bytes(&self) -> u64 {
        let memtables: u64 = ALL_CFS
            .iter()
            .filter_map(|name| {
                self.db.property_int_value_cf(self.cf(name), "rocksdb.cur-size-all-mem-tables").ok().flatten()
            })
            .sum();
        let block_cache = self
            .db
            .property_int_value_cf(self.cf(CF_DEFAULT), "rocksdb.block-cache-usage")
            .ok()
            .flatten()
            .unwrap_or(0);
        memtables + block_cache
    }

    fn cf(&self, name: &'static str) -> &ColumnFamily {
        self.db.cf_handle(name).expect("invariant: every column family is created at open")
    }

    /// The raw value at `key`.
    pub fn get(&self, cf: &'static str, key: &[u8]) -> EngineResult<Option<Vec<u8>>> {
        let value = self.db.get_pinned_cf(self.cf(cf), key).map_err(EngineError::ReadFailed)?;
        Ok(value.map(|v| v.to_vec()))
    }

    /// The message at `key`, decoded.
    pub fn get_msg<M: prost::Message + Default>(
        &self,
        cf: &'static str,
        key: &[u8],
    ) -> EngineResult<Option<M>> {
        let Some(value) = self.db.get_pinned_cf(self.cf(cf), key).map_err(EngineError::ReadFailed)? else {
            return Ok(None);
        };
        let msg = M::decode(&*value).map_err(|e| EngineError::Corrupt {
            cf,
            key: key.to_vec(),
            reason: e.to_string(),
        })?;
        Ok(Some(msg))
    }

    /// The last (key, value) in `[start, end)`, if any: one reverse seek, however many keys
    /// the range holds.
    pub fn last_in_range(
        &self,
        cf: &'static str,
        start: &[u8],
        end: &[u8],
    ) -> EngineResult<Option<KeyValue>> {
        let mut read_options = ReadOptions::default();
        read_options.set_iterate_lower_bound(start.to_vec());
        read_options.set_iterate_upper_bound(end.to_vec());
        let mut iter = self.db.iterator_cf_opt(self.cf(cf), read_options, IteratorMode::End);
        iter.next().transpose().map_err(EngineError::ReadFailed)
    }

    /// Calls `visit` with every (key, value) in `[start, end)` in key order, until it
    /// returns false.
    pub fn scan(
        &self,
        cf: &'static str,
        start: &[u8],
        end: &[u8],
        visit: impl FnMut(&[u8], &[u8]) -> EngineResult<bool>,
    ) -> EngineResult<()> {
        self.scan_as_of(None, cf, start, end, visit)
    }

    /// `scan`, as of `snapshot` if one is given, else as of now.
    fn scan_as_of(
        &self,
        snapshot: Option<&SnapshotWithThreadMode<'_, DB>>,
        cf: &'static str,
        start: &[u8],
        end: &[u8],
        mut visit: impl FnMut(&[u8], &[u8]) -> EngineResult<bool>,
    ) -> EngineResult<()> {
        let mut read_options = ReadOptions::default();
        read_options.set_iterate_upper_bound(end.to_vec());
        if let Some(snapshot) = snapshot {
            read_options.set_snapshot(snapshot);
        }
        let iter =
            self.db.iterator_cf_opt(self.cf(cf), read_options, IteratorMode::From(start, Direction::Forward));
        for item in iter {
            let (key, value) = item.map_err(EngineError::ReadFailed)?;
            if !visit(&key, &value)? {
                break;
            }
        }
        Ok(())
    }

    /// A view of the engine as it is now, which later writes do not change: what a snapshot
    /// of a region is generated from while the region keeps applying. RocksDB keeps the
    /// versions the view needs until it is dropped, so hold it no longer than the read.
    pub fn read_view(&self) -> ReadView<'_> {
        ReadView { engine: self, snapshot: self.db.snapshot() }
    }

    /// An empty batch of writes on this engine.
    ///
    /// The batch holds a reference-counted handle on the engine rather than a borrow, so a
    /// poller thread can keep one batch across the many regions of a round.
    pub fn write_batch(self: &Arc<Self>) -> WriteBatch {
        WriteBatch { engine: self.clone(), inner: rocksdb::WriteBatch::default() }
    }

    /// Writes the batch atomically; with `sync`, it is on disk when this returns. An error
    /// is fatal: stop the store (see the module docs).
    pub fn write(&self, batch: WriteBatch, sync: bool) -> EngineResult<()> {
        let mut write_options = WriteOptions::default();
        write_options.set_sync(sync);
        if self.failing_writes.load(Ordering::Relaxed) {
            return Err(EngineError::WriteFailed("injected write failure".into()));
        }
        self.db.write_opt(batch.inner, &write_options).map_err(|e| EngineError::WriteFailed(e.to_string()))
    }
}

/// A consistent read view of the engine (a RocksDB snapshot), from `Engine::read_view`.
pub struct ReadView<'a> {
    engine: &'a Engine,
    snapshot: SnapshotWithThreadMode<'a, DB>,
}

impl std::fmt::Debug for ReadView<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReadView").field("sequence", &self.snapshot.sequence_number()).finish()
    }
}

impl ReadView<'_> {
    /// `Engine::scan`, as of the moment the view was taken.
    pub fn scan(
        &self,
        cf: &'static str,
        start: &[u8],
        end: &[u8],
        visit: impl FnMut(&[u8], &[u8]) -> EngineResult<bool>,
    ) -> EngineResult<()> {
        self.engine.scan_as_of(Some(&self.snapshot), cf, start, end, visit)
    }
}

/// Writes to apply atomically, across any number of regions and column families.
pub struct WriteBatch {
    engine: Arc<Engine>,
    inner: rocksdb::WriteBatch,
}

impl std::fmt::Debug for WriteBatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WriteBatch").field("ops", &self.inner.len()).field("bytes", &self.bytes()).finish()
    }
}

impl WriteBatch {
    pub fn put(&mut self, cf: &'static str, key: &[u8], value: &[u8]) {
        self.inner.put_cf(self.engine.cf(cf), key, value);
    }

    pub fn put_msg(&mut self, cf: &'static str, key: &[u8], msg: &impl prost::Message) {
        self.inner.put_cf(self.engine.cf(cf), key, msg.encode_to_vec());
    }

    pub fn delete(&mut self, cf: &'static str, key: &[u8]) {
        self.inner.delete_cf(self.engine.cf(cf), key);
    }

    /// Deletes every key in `[start, end)` with one range tombstone, however many keys
    /// that is (one delete per key floods RocksDB with tombstones: LESSONS.md #22).
    pub fn delete_range(&mut self, cf: &'static str, start: &[u8], end: &[u8]) {
        self.inner.delete_range_cf(self.engine.cf(cf), start, end);
    }

    /// How many operations the batch holds.
    pub fn len(&self) -> usize {
        self.inner.len()
    }

    pub fn is_empty(&self) -> bool {
        self.inner.is_empty()
    }

    /// The batch's encoded size.
    pub fn bytes(&self) -> usize {
        self.inner.size_in_bytes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::{CF_META, CF_RAFT};
    use tessera_proto::storepb::ApplyState;

    #[test]
    fn writes_survive_a_reopen_and_range_deletes_remove_a_range() {
        let dir = tempfile::tempdir().unwrap();
        {
            let engine = Arc::new(Engine::open(dir.path(), &EngineConfig::default()).unwrap());
            let mut batch = engine.write_batch();
            for i in 0u8..10 {
                batch.put(CF_RAFT, &[1, i], &[i]);
            }
            batch.put_msg(CF_META, b"apply", &ApplyState { applied_index: 7, ..Default::default() });
            batch.put(CF_DEFAULT, b"zk", b"v");
            assert_eq!(batch.len(), 12);
            engine.write(batch, true).unwrap();
            let mut batch = engine.write_batch();
            batch.delete_range(CF_RAFT, &[1, 2], &[1, 8]);
            batch.delete(CF_DEFAULT, b"zk");
            engine.write(batch, true).unwrap();
        }
        let engine = Arc::new(Engine::open(dir.path(), &EngineConfig::default()).unwrap());
        let mut seen = Vec::new();
        engine
            .scan(CF_RAFT, &[1], &[2], |key, _| {
                seen.push(key[1]);
                Ok(true)
            })
            .unwrap();
        assert_eq!(seen, vec![0, 1, 8, 9]);
        let apply: Option<ApplyState> = engine.get_msg(CF_META, b"apply").unwrap();
        assert_eq!(apply.map(|a| a.applied_index), Some(7));
        assert_eq!(engine.get(CF_DEFAULT, b"zk").unwrap(), None);
    }

    /// The insert hints are a tuning that nothing observable depends on, so this reads the
    /// options RocksDB wrote at open to check the option string was taken.
    #[test]
    fn raft_and_meta_memtables_hint_inserts_by_region_record() {
        let dir = tempfile::tempdir().unwrap();
        let _engine = Engine::open(dir.path(), &EngineConfig::default()).unwrap();
        let options_file = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|entry| entry.unwrap().path())
            .filter(|path| path.file_name().unwrap().to_string_lossy().starts_with("OPTIONS-"))
            .max()
            .expect("RocksDB writes an OPTIONS file at open");
        let text = std::fs::read_to_string(options_file).unwrap();
        let hinted = format!("{INSERT_HINT_OPTION}=rocksdb.FixedPrefix.{REGION_RECORD_KEY_LEN}");
        let sections: Vec<&str> = text.split("[CFOptions ").skip(1).collect();
        assert_eq!(sections.len(), ALL_CFS.len(), "{text}");
        for section in sections {
            let name = section.split('"').nth(1).unwrap();
            let expected = name != CF_DEFAULT;
            assert_eq!(section.contains(&hinted), expected, "column family {name}: {section}");
        }
        assert!(text.contains("allow_concurrent_memtable_write=false"), "{text}");
    }

    /// The store reports RocksDB's count of WAL syncs: a synced write costs one, an unsynced
    /// write none, and concurrent synced writes at most one each (they may share one, which
    /// this test cannot force).
    #[test]
    fn wal_syncs_count_synced_writes_only() {
        let dir = tempfile::tempdir().unwrap();
        let engine = Arc::new(Engine::open(dir.path(), &EngineConfig::default()).unwrap());
        let write = |sync: bool| {
            let mut batch = engine.write_batch();
            batch.put(CF_RAFT, b"k", b"v");
            engine.write(batch, sync).unwrap();
        };
        let before = engine.wal_syncs();
        write(false);
        write(false);
        assert_eq!(engine.wal_syncs(), before);
        write(true);
        assert_eq!(engine.wal_syncs(), before + 1);
        let threads_len = 4;
        let writes_per_thread = 50;
        std::thread::scope(|scope| {
            for _ in 0..threads_len {
                scope.spawn(|| (0..writes_per_thread).for_each(|_| write(true)));
            }
        });
        let synced = engine.wal_syncs() - before - 1;
        assert!(
            0 < synced && synced <= threads_len * writes_per_thread,
            "{synced} WAL syncs for {} synced writes",
            threads_len * writes_per_thread
        );
    }

    #[test]
    fn a_value_that_does_not_decode_is_reported_corrupt() {
        let dir = tempfile::tempdir().unwrap();
        let engine = Arc::new(Engine::open(dir.path(), &EngineConfig::default()).unwrap());
        let mut batch = engine.write_batch();
        batch.put(CF_META, b"apply", &[0xff, 0xff, 0xff]);
        engine.write(batch, false).unwrap();
        let err = engine.get_msg::<ApplyState>(CF_META, b"apply").unwrap_err();
        assert!(matches!(err, EngineError::Corrupt { cf: CF_META, .. }), "{err}");
    }

    #[test]
    fn a_read_view_does_not_see_later_writes() {
        let dir = tempfile::tempdir().unwrap();
        let engine = Arc::new(Engine::open(dir.path(), &EngineConfig::default()).unwrap());
        let mut batch = engine.write_batch();
        batch.put(CF_DEFAULT, b"za", b"1");
        batch.put(CF_DEFAULT, b"zb", b"1");
        engine.write(batch, false).unwrap();
        let view = engine.read_view();
        let mut batch = engine.write_batch();
        batch.put(CF_DEFAULT, b"za", b"2");
        batch.delete(CF_DEFAULT, b"zb");
        batch.put(CF_DEFAULT, b"zc", b"2");
        engine.write(batch, false).unwrap();
        let mut seen = Vec::new();
        view.scan(CF_DEFAULT, b"z", b"{", |key, value| {
            seen.push((key.to_vec(), value.to_vec()));
            Ok(true)
        })
        .unwrap();
        assert_eq!(seen, vec![(b"za".to_vec(), b"1".to_vec()), (b"zb".to_vec(), b"1".to_vec())]);
        assert_eq!(engine.get(CF_DEFAULT, b"za").unwrap(), Some(b"2".to_vec()));
    }

    #[test]
    fn last_in_range_finds_the_last_key_below_the_end_and_nothing_outside() {
        let dir = tempfile::tempdir().unwrap();
        let engine = Arc::new(Engine::open(dir.path(), &EngineConfig::default()).unwrap());
        let mut batch = engine.write_batch();
        for key in [[1u8, 1], [1, 5], [2, 0]] {
            batch.put(CF_RAFT, &key, &key);
        }
        engine.write(batch, false).unwrap();
        let last = |start: &[u8], end: &[u8]| {
            engine.last_in_range(CF_RAFT, start, end).unwrap().map(|(key, _)| key.to_vec())
        };
        assert_eq!(last(&[1], &[2]), Some(vec![1, 5]), "a neighbour at the end is excluded");
        assert_eq!(last(&[0], &[1, 5]), Some(vec![1, 1]), "the end itself is excluded");
        assert_eq!(last(&[1, 6], &[2]), None, "nothing below the start is taken");
        assert_eq!(last(&[3], &[4]), None);
    }

    #[test]
    fn scan_stops_when_told() {
        let dir = tempfile::tempdir().unwrap();
        let engine = Arc::new(Engine::open(dir.path(), &EngineConfig::default()).unwrap());
        let mut batch = engine.write_batch();
        for i in 0u8..5 {
            batch.put(CF_RAFT, &[i], &[]);
        }
        engine.write(batch, false).unwrap();
        let mut count = 0;
        engine
            .scan(CF_RAFT, &[0], &[9], |_, _| {
                count += 1;
                Ok(count < 3)
            })
            .unwrap();
        assert_eq!(count, 3);
    }
}
