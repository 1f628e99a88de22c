//! The node's whole log: the durable part behind `Storage` and the unstable tail, with the
//! commit and apply positions.

use tessera_proto::raftpb::{Entry, Snapshot};

use crate::errors::StorageError;
use crate::log_unstable::Unstable;
use crate::storage::{Storage, StorageResult};
use crate::util::limit_size;

#[derive(Debug)]
pub struct RaftLog<S: Storage> {
    pub store: S,
    pub unstable: Unstable,
    /// The highest index known to be committed by a quorum.
    pub committed: u64,
    /// The highest index handed to the application for applying.
    pub applying: u64,
    /// The highest index the application confirmed applied.
    pub applied: u64,
    /// The most committed-entry bytes handed out at once.
    committed_bytes_per_ready_max: u64,
}

impl<S: Storage> RaftLog<S> {
    pub fn new(store: S, committed_bytes_per_ready_max: u64) -> StorageResult<Self> {
        let first = store.first_index()?;
        let last = store.last_index()?;
        Ok(RaftLog {
            store,
            unstable: Unstable::new(last + 1),
            committed: first - 1,
            applying: first - 1,
            applied: first - 1,
            committed_bytes_per_ready_max,
        })
    }

    pub fn first_index(&self) -> u64 {
        match self.unstable.maybe_first_index() {
            Some(i) => i,
            None => self.store.first_index().expect("invariant: storage answers first_index"),
        }
    }

    pub fn last_index(&self) -> u64 {
        match self.unstable.maybe_last_index() {
            Some(i) => i,
            // With nothing unstable, the log ends right before the unstable offset: entries
            // leave the tail only once the storage confirmed them. Asking the storage
            // instead would take its lock on one of the hottest paths.
            None => {
                debug_assert_eq!(
                    Ok(self.unstable.offset - 1),
                    self.store.last_index().map_err(|e| e.to_string()),
                    "invariant: the unstable offset follows the stored log"
                );
                self.unstable.offset - 1
            }
        }
    }

    /// The last index known durable: everything before the unstable tail.
    pub fn persisted_index(&self) -> u64 {
        self.unstable.offset - 1
    }

    /// The term of the entry at `index`. Indexes outside `[first_index - 1, last_index]`
    /// have no known term: `Compacted` below, `Unavailable` above.
    pub fn term(&self, index: u64) -> StorageResult<u64> {
        // The unstable tail (and a pending snapshot's last entry) answers first: it is the
        // newest, and asking it takes no lock.
        if let Some(term) = self.unstable.maybe_term(index) {
            return Ok(term);
        }
        if index >= self.unstable.offset {
            return Err(StorageError::Unavailable);
        }
        if self.unstable.snapshot.is_some() {
            // Below a pending snapshot everything counts as compacted, whatever the
            // storage still holds.
            return Err(StorageError::Compacted);
        }
        if let Some((stable_index, stable_term)) = self.unstable.last_stable {
            if stable_index == index {
                return Ok(stable_term);
            }
        }
        // The storage knows its compacted boundary: its term is still known (the entry
        // before the first one), anything older is Compacted.
        self.store.term(index)
    }

    /// The term at `index`, or 0 when it is not in the log. For places where an unknown
    /// entry simply does not match.
    pub fn term_or_zero(&self, index: u64) -> u64 {
        self.term(index).unwrap_or(0)
    }

    pub fn last_term(&self) -> u64 {
        self.term(self.last_index()).expect("invariant: the last entry has a term")
    }

    pub fn match_term(&self, index: u64, term: u64) -> bool {
        self.term(index).is_ok_and(|t| t == term)
    }

    /// Raft's election restriction: a candidate whose last entry is (term, index) has a log
    /// at least as up to date as ours.
    pub fn is_up_to_date(&self, last_index: u64, term: u64) -> bool {
        let our_term = self.last_term();
        term > our_term || (term == our_term && last_index >= self.last_index())
    }

    /// Appends the leader's entries that follow (index, log_term) if our log matches there.
    /// Returns the index of the last new entry, or None when the logs do not match.
    pub fn maybe_append(
        &mut self,
        index: u64,
        log_term: u64,
        committed: u64,
        mut entries: Vec<Entry>,
    ) -> Option<u64> {
        if !self.match_term(index, log_term) {
            return None;
        }
        let last_new = index + entries.len() as u64;
        let conflict = self.find_conflict(&entries);
        if conflict != 0 {
            assert!(
                conflict > self.committed,
                "invariant: entry {conflict} conflicts with the committed log (committed {})",
                self.committed
            );
            let start = (conflict - (index + 1)) as usize;
            entries.drain(..start);
            self.append_owned(entries);
        }
        self.commit_to(committed.min(last_new));
        Some(last_new)
    }

    /// Appends entries (whose first index may overwrite an uncommitted tail) and returns
    /// the new last index.
    pub fn append(&mut self, entries: &[Entry]) -> u64 {
        self.check_append(entries);
        self.unstable.truncate_and_append(entries);
        self.last_index()
    }

    /// `append` for entries the caller owns: they are moved, not cloned.
    pub fn append_owned(&mut self, entries: Vec<Entry>) -> u64 {
        self.check_append(&entries);
        self.unstable.truncate_and_append_owned(entries);
        self.last_index()
    }

    fn check_append(&self, entries: &[Entry]) {
        if let Some(first) = entries.first() {
            assert!(
                first.index > self.committed,
                "invariant: appending at {} would overwrite committed entries (committed {})",
                first.index,
                self.committed
            );
        }
    }

    /// The first index among `entries` whose term differs from ours, or that we lack; zero
    /// when every entry is already in our log.
    pub fn find_conflict(&self, entries: &[Entry]) -> u64 {
        entries.iter().find(|e| !self.match_term(e.index, e.term)).map_or(0, |e| e.index)
    }

    /// The last (index, term) at or before `index` whose term is at most `term`. A leader
    /// uses it on a rejection hint to skip over a whole term of conflicting entries at once.
    pub fn find_conflict_by_term(&self, index: u64, term: u64) -> (u64, u64) {
        let mut index = index;
        loop {
            match self.term(index) {
                Ok(t) if t > term => index -= 1,
                Ok(t) => return (index, t),
                // Compacted or unknown: the best hint is this index with an unknown term.
                Err(_) => return (index, 0),
            }
        }
    }

    /// Entries not yet handed out for persisting.
    pub fn next_unstable_entries(&self) -> &[Entry] {
        self.unstable.next_entries()
    }

    pub fn has_next_unstable_entries(&self) -> bool {
        !self.unstable.next_entries().is_empty()
    }

    pub fn next_unstable_snapshot(&self) -> Option<&Snapshot> {
        self.unstable.next_snapshot()
    }

    /// While a snapshot is pending no entry is applied: they follow it.
    fn has_pending_snapshot(&self) -> bool {
        self.unstable.snapshot.is_some()
    }

    /// The highest index that may be handed out for applying. Without async writes the
    /// application persists a Ready before applying it, so unstable committed entries are
    /// fine; with async writes only durable entries are applied.
    fn max_appliable_index(&self, allow_unstable: bool) -> u64 {
        if allow_unstable {
            self.committed
        } else {
            self.committed.min(self.persisted_index())
        }
    }

    pub fn has_next_committed_entries(&self, allow_unstable: bool) -> bool {
        !self.has_pending_snapshot() && self.applying < self.max_appliable_index(allow_unstable)
    }

    /// Committed entries not yet handed out, at most `committed_bytes_per_ready_max`.
    pub fn next_committed_entries(&self, allow_unstable: bool) -> Vec<Entry> {
        if !self.has_next_committed_entries(allow_unstable) {
            return Vec::new();
        }
        let low = self.applying + 1;
        let high = self.max_appliable_index(allow_unstable) + 1;
        self.slice(low, high, Some(self.committed_bytes_per_ready_max))
            .expect("invariant: committed entries not yet applied are in the log")
    }

    /// Entries `[low, high)`, at most `bytes_max` (at least one).
    pub fn slice(&self, low: u64, high: u64, bytes_max: Option<u64>) -> StorageResult<Vec<Entry>> {
        if low >= high {
            return Ok(Vec::new());
        }
        if self.unstable.maybe_first_index().is_some_and(|first| low < first) {
            // Below a pending snapshot.
            return Err(StorageError::Compacted);
        }
        assert!(
            high <= self.last_index() + 1,
            "invariant: slice [{low}, {high}) beyond last index {}",
            self.last_index()
        );
        let mut entries = Vec::new();
        if low < self.unstable.offset {
            let stored_high = high.min(self.unstable.offset);
            entries = self.store.entries(low, stored_high, bytes_max)?;
            // The storage stopped early because of the size limit: that is all we return.
            if (entries.len() as u64) < stored_high - low {
                return Ok(entries);
            }
        }
        if high > self.unstable.offset {
            let unstable_low = low.max(self.unstable.offset);
            entries.extend_from_slice(self.unstable.slice(unstable_low, high));
            limit_size(&mut entries, bytes_max);
        }
        Ok(entries)
    }

    /// Entries from `index` to the end, at most `bytes_max`.
    pub fn entries(&self, index: u64, bytes_max: Option<u64>) -> StorageResult<Vec<Entry>> {
        let last = self.last_index();
        if index > last {
            return Ok(Vec::new());
        }
        self.slice(index, last + 1, bytes_max)
    }

    /// Every entry in the log, for tests and debugging.
    pub fn all_entries(&self) -> Vec<Entry> {
        self.entries(self.first_index(), None).expect("invariant: the whole log is readable")
    }

    /// Commits up to `max_index` if the entry there is of `term`: a leader only commits by
    /// counting replicas for entries of its own term (Figure 8 of the Raft paper).
    pub fn maybe_commit(&mut self, max_index: u64, term: u64) -> bool {
        if max_index > self.committed && self.term_or_zero(max_index) == term {
            self.commit_to(max_index);
            return true;
        }
        false
    }

    pub fn commit_to(&mut self, index: u64) {
        if index > self.committed {
            assert!(
                index <= self.last_index(),
                "invariant: commit {index} beyond last index {}; the log was corrupted, truncated or lost",
                self.last_index()
            );
            self.committed = index;
        }
    }

    /// The application took entries up to `index` for applying.
    pub fn accept_applying(&mut self, index: u64) {
        assert!(index <= self.committed, "invariant: applying {index} beyond committed {}", self.committed);
        self.applying = self.applying.max(index);
    }

    /// The application applied entries up to `index`.
    pub fn applied_to(&mut self, index: u64) {
        if index == 0 {
            return;
        }
        assert!(
            index <= self.committed && index >= self.applied,
            "invariant: applied index {index} outside [applied {}, committed {}]",
            self.applied,
            self.committed
        );
        self.applied = index;
        self.applying = self.applying.max(index);
    }

    pub fn stable_to(&mut self, index: u64, term: u64) {
        self.unstable.stable_to(index, term);
    }

    pub fn stable_snapshot_to(&mut self, index: u64) {
        self.unstable.stable_snapshot_to(index);
    }

    /// Replaces the log with a snapshot from the leader.
    pub fn restore(&mut self, snapshot: Snapshot) {
        let index = snapshot.metadata.as_ref().map_or(0, |m| m.index);
        self.committed = index;
        self.unstable.restore(snapshot);
    }

    /// The snapshot to send a lagging follower: a pending one, or the storage's.
    pub fn snapshot(&self, request_index: u64, to: u64) -> StorageResult<Snapshot> {
        if let Some(snapshot) = &self.unstable.snapshot {
            return Ok(snapshot.clone());
        }
        self.store.snapshot(request_index, to)
    }
}
