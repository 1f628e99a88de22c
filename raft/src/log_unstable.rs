//! The tail of the log that is not yet durable: entries (and possibly a snapshot) the node
//! accepted and the application has not confirmed persisting.

use tessera_proto::raftpb::{Entry, Snapshot};

/// The largest buffer of entries an emptied unstable log keeps (80 bytes each).
const ENTRIES_CAPACITY_KEPT_MAX: usize = 8;

#[derive(Clone, Debug, Default)]
pub struct Unstable {
    /// A snapshot received from the leader, not yet persisted.
    pub snapshot: Option<Snapshot>,
    /// Entries from `offset` on, not yet persisted.
    pub entries: Vec<Entry>,
    pub offset: u64,
    /// Whether the snapshot was handed to the application for persisting.
    pub snapshot_in_progress: bool,
    /// Entries below this index were handed to the application for persisting; the ones
    /// from it on have not been handed out yet.
    pub offset_in_progress: u64,
    /// (index, term) of the entry just below `offset`, as confirmed by the write that made
    /// it stable. A leader matches followers and a follower matches the leader at exactly
    /// that entry in steady state, and knowing its term here spares a storage read (a lock,
    /// or worse, a disk read) on every append. Forgotten whenever it might be overwritten.
    pub last_stable: Option<(u64, u64)>,
}

impl Unstable {
    pub fn new(offset: u64) -> Self {
        Unstable { offset, offset_in_progress: offset, ..Default::default() }
    }

    fn snapshot_index(&self) -> Option<u64> {
        self.snapshot.as_ref().map(|s| s.metadata.as_ref().map_or(0, |m| m.index))
    }

    /// The first index, if a snapshot is pending (it replaces the whole log).
    pub fn maybe_first_index(&self) -> Option<u64> {
        self.snapshot_index().map(|i| i + 1)
    }

    pub fn maybe_last_index(&self) -> Option<u64> {
        match self.entries.last() {
            Some(e) => Some(e.index),
            None => self.snapshot_index(),
        }
    }

    pub fn maybe_term(&self, index: u64) -> Option<u64> {
        if index < self.offset {
            let meta = self.snapshot.as_ref()?.metadata.as_ref()?;
            return (meta.index == index).then_some(meta.term);
        }
        let last = self.maybe_last_index()?;
        if index > last {
            return None;
        }
        Some(self.entries[(index - self.offset) as usize].term)
    }

    /// Entries not yet handed out for persisting.
    pub fn next_entries(&self) -> &[Entry] {
        let start = (self.offset_in_progress - self.offset) as usize;
        &self.entries[start.min(self.entries.len())..]
    }

    /// The snapshot, if not yet handed out for persisting.
    pub fn next_snapshot(&self) -> Option<&Snapshot> {
        if self.snapshot_in_progress {
            return None;
        }
        self.snapshot.as_ref()
    }

    /// Marks everything currently unstable as handed out for persisting.
    pub fn accept_in_progress(&mut self) {
        if let Some(last) = self.entries.last() {
            self.offset_in_progress = last.index + 1;
        }
        if self.snapshot.is_some() {
            self.snapshot_in_progress = true;
        }
    }

    /// The application persisted entries up to `index`, the last of which had term `term`.
    /// If that entry has since been replaced by one of another term (a newer leader
    /// overwrote the tail while the write was under way), the confirmation speaks of
    /// entries that no longer exist and is ignored: the newer entries will be confirmed by
    /// their own write.
    pub fn stable_to(&mut self, index: u64, term: u64) {
        let Some(current) = self.maybe_term(index) else { return };
        if index < self.offset {
            // The entry is the pending snapshot's last one; the snapshot confirms itself.
            return;
        }
        if current != term {
            return;
        }
        let drop_count = (index + 1 - self.offset) as usize;
        self.entries.drain(..drop_count);
        self.offset = index + 1;
        self.last_stable = Some((index, term));
        self.offset_in_progress = self.offset_in_progress.max(self.offset);
        if self.entries.is_empty() && self.entries.capacity() > ENTRIES_CAPACITY_KEPT_MAX {
            // Release a large buffer: a long-lived idle group should not keep its peak. A
            // small one is kept, so that steady one-entry traffic does not allocate.
            self.entries = Vec::new();
        }
    }

    pub fn stable_snapshot_to(&mut self, index: u64) {
        if self.snapshot_index() == Some(index) {
            self.snapshot = None;
            self.snapshot_in_progress = false;
        }
    }

    pub fn restore(&mut self, snapshot: Snapshot) {
        let index = snapshot.metadata.as_ref().map_or(0, |m| m.index);
        self.offset = index + 1;
        self.offset_in_progress = self.offset;
        self.entries.clear();
        self.last_stable = None;
        self.snapshot = Some(snapshot);
        self.snapshot_in_progress = false;
    }

    /// Appends entries, first dropping any unstable entries at or after the first new index.
    pub fn truncate_and_append(&mut self, entries: &[Entry]) {
        let Some(first) = entries.first() else { return };
        self.truncate_from(first.index);
        self.entries.extend_from_slice(entries);
    }

    /// `truncate_and_append` for entries the caller owns: they are moved, not cloned.
    pub fn truncate_and_append_owned(&mut self, entries: Vec<Entry>) {
        let Some(first) = entries.first() else { return };
        self.truncate_from(first.index);
        self.entries.extend(entries);
    }

    /// Drops the unstable entries at and after `from`, which the next append starts at.
    fn truncate_from(&mut self, from: u64) {
        if from == self.offset + self.entries.len() as u64 {
            // The common case: a direct continuation.
        } else if from <= self.offset {
            // The new entries replace everything unstable (and maybe some stable entries,
            // which the application overwrites when it persists these).
            if from < self.offset {
                self.last_stable = None;
            }
            self.offset = from;
            self.offset_in_progress = from;
            self.entries.clear();
        } else {
            self.entries.truncate((from - self.offset) as usize);
            self.offset_in_progress = self.offset_in_progress.min(from);
        }
    }

    /// Entries `[low, high)`, which must lie within the unstable entries.
    pub fn slice(&self, low: u64, high: u64) -> &[Entry] {
        assert!(
            self.offset <= low && low <= high && high <= self.offset + self.entries.len() as u64,
            "invariant: unstable slice [{low}, {high}) out of [{}, {})",
            self.offset,
            self.offset + self.entries.len() as u64
        );
        &self.entries[(low - self.offset) as usize..(high - self.offset) as usize]
    }
}
