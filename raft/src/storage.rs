//! Where the core reads its persisted log. The application writes (entries, hard state,
//! snapshots) as each `Ready` asks; the core only reads through this trait.

use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};

use tessera_proto::raftpb::{ConfState, Entry, HardState, Snapshot, SnapshotMetadata};

use crate::errors::StorageError;
use crate::util::limit_size;

pub type StorageResult<T> = std::result::Result<T, StorageError>;

/// What a node restarts from.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct RaftState {
    pub hard_state: HardState,
    pub conf_state: ConfState,
}

/// Read access to a node's durable log.
///
/// The log is `[first_index, last_index]`; the entry just before `first_index` has been
/// compacted into a snapshot, but its term stays known (`term(first_index - 1)` succeeds).
pub trait Storage {
    /// The hard state and configuration at start.
    fn initial_state(&self) -> StorageResult<RaftState>;

    /// Entries `[low, high)`, their total encoded size capped at `bytes_max` but never
    /// fewer than one entry. `Compacted` if `low` is below the first index.
    fn entries(&self, low: u64, high: u64, bytes_max: Option<u64>) -> StorageResult<Vec<Entry>>;

    /// The term of the entry at `index`, which may be `first_index() - 1`.
    fn term(&self, index: u64) -> StorageResult<u64>;

    fn first_index(&self) -> StorageResult<u64>;

    fn last_index(&self) -> StorageResult<u64>;

    /// The most recent snapshot, for sending to peer `to` which needs entries from
    /// `request_index` on. `SnapshotTemporarilyUnavailable` tells the leader to retry later.
    fn snapshot(&self, request_index: u64, to: u64) -> StorageResult<Snapshot>;
}

/// The state behind a `MemStorage`.
#[derive(Debug, Default)]
pub struct MemStorageCore {
    hard_state: HardState,
    /// The latest snapshot: the state at its index and the configuration then. It is what
    /// a lagging follower receives; compaction never changes it.
    snapshot_metadata: SnapshotMetadata,
    snapshot_data: bytes::Bytes,
    /// The last compacted entry, (index, term): the log holds the entries after it, and
    /// its term stays known so that an append right after it can be matched.
    compacted_index: u64,
    compacted_term: u64,
    /// Entries after `compacted_index`, contiguous.
    entries: Vec<Entry>,
    /// Tests set this so the next `snapshot()` call fails as if generation were under way.
    snapshot_unavailable_once: bool,
}

impl MemStorageCore {
    fn first_index(&self) -> u64 {
        self.compacted_index + 1
    }

    fn last_index(&self) -> u64 {
        self.compacted_index + self.entries.len() as u64
    }

    fn term(&self, index: u64) -> StorageResult<u64> {
        if index == self.compacted_index {
            return Ok(self.compacted_term);
        }
        if index < self.first_index() {
            return Err(StorageError::Compacted);
        }
        if index > self.last_index() {
            return Err(StorageError::Unavailable);
        }
        Ok(self.entries[(index - self.first_index()) as usize].term)
    }

    pub fn hard_state(&self) -> &HardState {
        &self.hard_state
    }

    pub fn set_hard_state(&mut self, hard_state: HardState) {
        self.hard_state = hard_state;
    }

    pub fn set_commit(&mut self, commit: u64) {
        self.hard_state.commit = commit;
    }

    pub fn conf_state(&self) -> ConfState {
        self.snapshot_metadata.conf_state.clone().unwrap_or_default()
    }

    /// Sets the configuration the node starts with (the snapshot's, which later snapshots
    /// and applied membership changes replace).
    pub fn set_conf_state(&mut self, conf_state: ConfState) {
        self.snapshot_metadata.conf_state = Some(conf_state);
    }

    /// Stores entries, overwriting any stored entries at the same and later indexes (a
    /// conflicting tail from an older term). Entries below the first index are skipped.
    pub fn append(&mut self, entries: &[Entry]) -> StorageResult<()> {
        let Some(first) = entries.first() else { return Ok(()) };
        if first.index > self.last_index() + 1 {
            return Err(StorageError::Other(
                format!("gap: appending index {} after last index {}", first.index, self.last_index()).into(),
            ));
        }
        let skip = self.first_index().saturating_sub(first.index) as usize;
        if skip >= entries.len() {
            return Ok(());
        }
        let entries = &entries[skip..];
        let keep = (entries[0].index - self.first_index()) as usize;
        self.entries.truncate(keep);
        self.entries.extend_from_slice(entries);
        Ok(())
    }

    /// Replaces the whole log with a snapshot.
    pub fn apply_snapshot(&mut self, snapshot: Snapshot) -> StorageResult<()> {
        let metadata = *snapshot.metadata.unwrap_or_default();
        if metadata.index < self.snapshot_metadata.index {
            return Err(StorageError::SnapshotOutOfDate);
        }
        self.hard_state.term = self.hard_state.term.max(metadata.term);
        self.hard_state.commit = self.hard_state.commit.max(metadata.index);
        self.compacted_index = metadata.index;
        self.compacted_term = metadata.term;
        self.snapshot_metadata = metadata;
        self.snapshot_data = snapshot.data;
        self.entries.clear();
        Ok(())
    }

    /// Records a snapshot of the applied state at `index`, which must be in the log (or be
    /// its compacted boundary). The log is left alone: compacting is a separate step, so a
    /// snapshot can be taken first and the log trimmed behind it later.
    pub fn create_snapshot(
        &mut self,
        index: u64,
        conf_state: Option<ConfState>,
        data: impl Into<bytes::Bytes>,
    ) -> StorageResult<()> {
        if index <= self.snapshot_metadata.index {
            return Err(StorageError::SnapshotOutOfDate);
        }
        let term = self.term(index)?;
        self.snapshot_metadata.index = index;
        self.snapshot_metadata.term = term;
        if let Some(cs) = conf_state {
            self.snapshot_metadata.conf_state = Some(cs);
        }
        self.snapshot_data = data.into();
        Ok(())
    }

    /// Drops the entries before `compact_index`; `compact_index - 1` becomes the last
    /// compacted entry whose term stays known. The latest snapshot is not touched: a
    /// follower that needs compacted entries receives it, so compact only up to the
    /// latest snapshot when followers may lag (as etcd's storage, this is the caller's
    /// responsibility).
    pub fn compact(&mut self, compact_index: u64) -> StorageResult<()> {
        if compact_index <= self.first_index() {
            return Ok(());
        }
        if compact_index > self.last_index() + 1 {
            return Err(StorageError::Unavailable);
        }
        let drop_count = (compact_index - self.first_index()) as usize;
        let last_dropped = &self.entries[drop_count - 1];
        self.compacted_index = last_dropped.index;
        self.compacted_term = last_dropped.term;
        self.entries.drain(..drop_count);
        Ok(())
    }

    /// Makes the next `snapshot()` call answer `SnapshotTemporarilyUnavailable`.
    pub fn trigger_snapshot_unavailable(&mut self) {
        self.snapshot_unavailable_once = true;
    }
}

/// An in-memory `Storage` for tests and examples. Clones share one log, so a driver can
/// keep a handle for writing while the node reads through its own.
#[derive(Clone, Debug, Default)]
pub struct MemStorage {
    core: Arc<RwLock<MemStorageCore>>,
}

impl MemStorage {
    pub fn new() -> Self {
        MemStorage::default()
    }

    /// A storage whose configuration has the given voters, as a brand-new group starts.
    pub fn new_with_voters(voters: &[u64]) -> Self {
        let storage = MemStorage::new();
        storage.wl().set_conf_state(ConfState { voters: voters.to_vec(), ..Default::default() });
        storage
    }

    pub fn rl(&self) -> RwLockReadGuard<'_, MemStorageCore> {
        self.core.read().expect("invariant: MemStorage lock is not poisoned")
    }

    pub fn wl(&self) -> RwLockWriteGuard<'_, MemStorageCore> {
        self.core.write().expect("invariant: MemStorage lock is not poisoned")
    }
}

impl Storage for MemStorage {
    fn initial_state(&self) -> StorageResult<RaftState> {
        let core = self.rl();
        Ok(RaftState { hard_state: core.hard_state, conf_state: core.conf_state() })
    }

    fn entries(&self, low: u64, high: u64, bytes_max: Option<u64>) -> StorageResult<Vec<Entry>> {
        let core = self.rl();
        if low < core.first_index() {
            return Err(StorageError::Compacted);
        }
        if high > core.last_index() + 1 {
            return Err(StorageError::Unavailable);
        }
        let offset = core.first_index();
        let mut entries = core.entries[(low - offset) as usize..(high - offset) as usize].to_vec();
        limit_size(&mut entries, bytes_max);
        Ok(entries)
    }

    fn term(&self, index: u64) -> StorageResult<u64> {
        self.rl().term(index)
    }

    fn first_index(&self) -> StorageResult<u64> {
        Ok(self.rl().first_index())
    }

    fn last_index(&self) -> StorageResult<u64> {
        Ok(self.rl().last_index())
    }

    fn snapshot(&self, _request_index: u64, _to: u64) -> StorageResult<Snapshot> {
        let mut core = self.wl();
        if std::mem::take(&mut core.snapshot_unavailable_once) {
            return Err(StorageError::SnapshotTemporarilyUnavailable);
        }
        Ok(Snapshot {
            data: core.snapshot_data.clone(),
            metadata: Some(Box::new(core.snapshot_metadata.clone())),
        })
    }
}
