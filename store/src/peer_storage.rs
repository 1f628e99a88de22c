//! One region's Raft log and state over the store's shared engine.
//!
//! `PeerStorage` implements the core's `Storage` trait (what the core reads) and writes
//! what a `Ready` asks into a `WriteBatch` that the poller shares among all the regions it
//! handles in a round (what the store persists). The hot tail of the log stays in an entry
//! cache, so that replication and apply read RocksDB only for a follower far behind.
//!
//! On disk a region's log is `(truncated_index, last_index]` in CF raft; `truncated_index`
//! and its term live in the apply state. The Raft state records `last_index` and its term
//! as of its last write, which a plain append does not repeat: loading finds the log's end
//! past it (`write_raft_state_if_needed`). Both are checked when a region is loaded: a
//! store does not start on a log that contradicts its own records.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::sync::Arc;

use prost::Message as _;
use tessera_proto::raftpb::{ConfState, Entry, HardState, Snapshot};
use tessera_proto::storepb::{ApplyState, PeerState, RaftLocalState, Region, RegionLocalState};
use tessera_raft::util::limit_size;
use tessera_raft::{RaftState, Storage, StorageError};

use crate::engine::{Engine, EngineError, EngineResult, WriteBatch};
use crate::keys::{self, CF_META, CF_RAFT};

/// A region bootstrapped with the cluster starts with a log that is empty up to this index,
/// as if a snapshot of term `INIT_TERM` had been applied there. A peer created later from a
/// message starts from zero instead, so the leader's log is never a prefix it could match:
/// it catches up by snapshot, which carries the region's data.
pub const INIT_INDEX: u64 = 5;
pub const INIT_TERM: u64 = 5;

/// Writes the records of a region bootstrapped with the cluster on this store, whose peer
/// here is `peer_id`.
pub fn write_initial_region(batch: &mut WriteBatch, region: &Region, conf_state: &ConfState, peer_id: u64) {
    let region_state = RegionLocalState {
        region: Some(region.clone()),
        state: PeerState::Normal as i32,
        conf_state: Some(conf_state.clone()),
        peer_id,
    };
    batch.put_msg(CF_META, &keys::region_state_key(region.id), &region_state);
    let raft_state = RaftLocalState {
        hard_state: Some(HardState { term: INIT_TERM, vote: 0, commit: INIT_INDEX }),
        last_index: INIT_INDEX,
        last_term: INIT_TERM,
    };
    batch.put_msg(CF_RAFT, &keys::raft_state_key(region.id), &raft_state);
    let apply_state =
        ApplyState { applied_index: INIT_INDEX, truncated_index: INIT_INDEX, truncated_term: INIT_TERM };
    batch.put_msg(CF_META, &keys::apply_state_key(region.id), &apply_state);
}

/// The hot tail of a region's log, contiguous, bounded by bytes.
#[derive(Debug, Default)]
struct EntryCache {
    entries: VecDeque<Entry>,
    bytes: usize,
    bytes_max: usize,
}

impl EntryCache {
    fn first_index(&self) -> Option<u64> {
        self.entries.front().map(|e| e.index)
    }

    fn get(&self, index: u64) -> Option<&Entry> {
        let first = self.first_index()?;
        self.entries.get(usize::try_from(index.checked_sub(first)?).ok()?)
    }

    /// Caches persisted entries; entries at and after the first of them are replaced.
    fn append(&mut self, entries: &[Entry]) {
        let Some(first) = entries.first() else { return };
        match self.first_index() {
            Some(cached_first) if first.index > cached_first => {
                let keep = (first.index - cached_first) as usize;
                if keep > self.entries.len() {
                    // A gap: the cache would not be contiguous.
                    self.clear();
                } else {
                    for dropped in self.entries.drain(keep..) {
                        self.bytes -= dropped.encoded_len();
                    }
                }
            }
            Some(_) => self.clear(),
            None => {}
        }
        for entry in entries {
            self.bytes += entry.encoded_len();
            self.entries.push_back(entry.clone());
        }
        // Keep at least the newest entry: followers and apply read the tail first.
        while self.bytes > self.bytes_max && self.entries.len() > 1 {
            let dropped = self.entries.pop_front().expect("more than one entry");
            self.bytes -= dropped.encoded_len();
        }
    }

    /// Drops the entries at and below `index` (compacted away).
    fn compact_to(&mut self, index: u64) {
        while self.entries.front().is_some_and(|e| e.index <= index) {
            let dropped = self.entries.pop_front().expect("checked");
            self.bytes -= dropped.encoded_len();
        }
    }

    fn clear(&mut self) {
        self.entries.clear();
        self.bytes = 0;
    }
}

/// A region's log and Raft state on this store.
#[derive(Debug)]
pub struct PeerStorage {
    engine: Arc<Engine>,
    region: Region,
    conf_state: ConfState,
    raft_state: RaftLocalState,
    /// The Raft state as its record on disk holds it (see `write_raft_state_if_needed`).
    recorded_raft_state: RaftLocalState,
    /// An append since the record's last write replaced entries the record covers.
    overwrote_recorded_entries: bool,
    apply_state: ApplyState,
    cache: EntryCache,
    /// Snapshots are generated off the poller thread; the core asks through `snapshot`
    /// (which takes `&self`), so the request is recorded here and picked up by the peer.
    snapshot_generation: RefCell<SnapshotGeneration>,
    /// Generated snapshots the core found too old; the peer removes their files.
    stale_snapshots: RefCell<Vec<Snapshot>>,
}

/// Where the generation of a snapshot for sending stands.
#[derive(Debug, Default)]
enum SnapshotGeneration {
    #[default]
    Idle,
    /// The core asked; the peer has not started a generation yet.
    Requested,
    Generating,
    /// Ready to be handed to the core on its next request.
    Generated(Snapshot),
}

fn corrupt(cf: &'static str, key: &[u8], reason: String) -> EngineError {
    EngineError::Corrupt { cf, key: key.to_vec(), reason }
}

fn storage_error(e: EngineError) -> StorageError {
    StorageError::Other(Box::new(e))
}

impl PeerStorage {
    /// Loads a region's storage from its records, or starts an empty one for a peer that
    /// has no records yet (created from a message; it will be caught up by snapshot).
    pub fn load(
        engine: Arc<Engine>,
        region: Region,
        entry_cache_bytes_max: usize,
    ) -> EngineResult<PeerStorage> {
        let region_id = region.id;
        let region_state: Option<RegionLocalState> =
            engine.get_msg(CF_META, &keys::region_state_key(region_id))?;
        let conf_state = region_state.and_then(|s| s.conf_state).unwrap_or_default();
        let raft_state: RaftLocalState =
            engine.get_msg(CF_RAFT, &keys::raft_state_key(region_id))?.unwrap_or_default();
        let apply_state: ApplyState =
            engine.get_msg(CF_META, &keys::apply_state_key(region_id))?.unwrap_or_default();
        let recorded_raft_state = raft_state;
        let mut raft_state = raft_state;
        // A plain append does not rewrite the record (`write_raft_state_if_needed`), so the
        // recorded last index is a lower bound: the log's last entry says where it ends. Log
        // GC may have deleted entries past the record since, so the log starts after the
        // higher of the two; entries at or below the truncated index may be left over from
        // a crash (the store deletes them at start) and are no part of the log.
        let log_start = recorded_raft_state.last_index.max(apply_state.truncated_index) + 1;
        let log_tail = keys::raft_log_range(region_id, log_start, u64::MAX);
        if let Some((key, value)) = engine.last_in_range(CF_RAFT, &log_tail.start, &log_tail.end)? {
            let entry = Entry::decode(value.as_ref()).map_err(|e| corrupt(CF_RAFT, &key, e.to_string()))?;
            if keys::decode_raft_log_key(&key) != Some((region_id, entry.index)) {
                return Err(corrupt(
                    CF_RAFT,
                    &key,
                    format!("region {region_id}: entry {} under this key", entry.index),
                ));
            }
            // The log is contiguous: where the search started, an entry must be too. (A hole
            // further in would cost a scan to find at load; reading it fails loudly later.)
            let first = keys::raft_log_key(region_id, log_start);
            if engine.get(CF_RAFT, &first)?.is_none() {
                return Err(corrupt(
                    CF_RAFT,
                    &first,
                    format!("region {region_id}: the log has a gap between {log_start} and {}", entry.index),
                ));
            }
            raft_state.last_index = entry.index;
            raft_state.last_term = entry.term;
        } else if raft_state.last_index < apply_state.truncated_index {
            // Log GC took every entry since the record was written: the log is empty, and
            // ends where it was truncated.
            raft_state.last_index = apply_state.truncated_index;
            raft_state.last_term = apply_state.truncated_term;
        }
        // A commit index that moves alone is not written (Raft keeps it volatile; see
        // `Peer::persist_append`), so the recorded one often lags the applied index. The
        // applied entries were committed: raise the commit to them. An applied index beyond
        // the log is still corruption.
        if let Some(hard_state) = raft_state.hard_state.as_mut() {
            if apply_state.applied_index > hard_state.commit
                && apply_state.applied_index <= raft_state.last_index
            {
                hard_state.commit = apply_state.applied_index;
            }
        }
        let storage = PeerStorage {
            engine,
            region,
            conf_state,
            raft_state,
            recorded_raft_state,
            overwrote_recorded_entries: false,
            apply_state,
            cache: EntryCache { bytes_max: entry_cache_bytes_max, ..Default::default() },
            snapshot_generation: RefCell::default(),
            stale_snapshots: RefCell::default(),
        };
        storage.check_records()?;
        Ok(storage)
    }

    /// The invariants between the Raft state, the apply state and the log, checked on
    /// every load: truncated <= applied <= commit <= last, and the last entry is where the
    /// Raft state says, with its term.
    fn check_records(&self) -> EngineResult<()> {
        let key = keys::raft_state_key(self.region.id);
        let commit = self.hard_state().commit;
        let (truncated, applied, last) =
            (self.apply_state.truncated_index, self.apply_state.applied_index, self.raft_state.last_index);
        if !(truncated <= applied && applied <= commit && commit <= last) {
            return Err(corrupt(
                CF_RAFT,
                &key,
                format!("region {}: need truncated {truncated} <= applied {applied} <= commit {commit} <= last {last}", self.region.id),
            ));
        }
        if last > truncated {
            let term = self.read_term(last)?;
            if term != self.raft_state.last_term {
                return Err(corrupt(
                    CF_RAFT,
                    &key,
                    format!(
                        "region {}: entry {last} has term {term}, the Raft state says {}",
                        self.region.id, self.raft_state.last_term
                    ),
                ));
            }
        } else if last == truncated && self.raft_state.last_term != self.apply_state.truncated_term {
            return Err(corrupt(
                CF_RAFT,
                &key,
                format!("region {}: last term disagrees with the truncated term", self.region.id),
            ));
        }
        Ok(())
    }

    pub fn region(&self) -> &Region {
        &self.region
    }

    pub fn hard_state(&self) -> HardState {
        self.raft_state.hard_state.unwrap_or_default()
    }

    pub fn apply_state(&self) -> &ApplyState {
        &self.apply_state
    }

    /// Whether the peer has any state yet (a peer created from a message has none until its
    /// first snapshot).
    pub fn is_initialized(&self) -> bool {
        self.raft_state.last_index > 0 || !self.conf_state.voters.is_empty()
    }

    /// Persists entries from a Ready: they may overwrite an uncommitted tail, whose leftover
    /// entries beyond the new last one are deleted in the same batch.
    pub fn append(&mut self, batch: &mut WriteBatch, entries: &[Entry]) {
        let (Some(first), Some(last)) = (entries.first(), entries.last()) else { return };
        assert!(
            first.index > self.apply_state.truncated_index && first.index <= self.raft_state.last_index + 1,
            "invariant: region {} appends at {} within ({}, {}]",
            self.region.id,
            first.index,
            self.apply_state.truncated_index,
            self.raft_state.last_index + 1
        );
        let region_id = self.region.id;
        let mut value = Vec::new();
        for entry in entries {
            value.clear();
            entry.encode(&mut value).expect("a Vec grows as needed");
            batch.put(CF_RAFT, &keys::raft_log_key(region_id, entry.index), &value);
        }
        if self.raft_state.last_index > last.index {
            let stale = keys::raft_log_range(region_id, last.index + 1, self.raft_state.last_index + 1);
            batch.delete_range(CF_RAFT, &stale.start, &stale.end);
        }
        if first.index <= self.recorded_raft_state.last_index {
            self.overwrote_recorded_entries = true;
        }
        self.raft_state.last_index = last.index;
        self.raft_state.last_term = last.term;
        self.cache.append(entries);
    }

    pub fn set_hard_state(&mut self, hard_state: HardState) {
        self.raft_state.hard_state = Some(hard_state);
    }

    /// Writes the Raft state (hard state, last index and term); call after `append` and
    /// `set_hard_state` for the Ready, in the same batch.
    pub fn write_raft_state(&mut self, batch: &mut WriteBatch) {
        batch.put_msg(CF_RAFT, &keys::raft_state_key(self.region.id), &self.raft_state);
        self.recorded_raft_state = self.raft_state;
        self.overwrote_recorded_entries = false;
    }

    /// Writes the Raft state, as `write_raft_state` does, only if a restart could not
    /// recover it from the record and the log; returns whether it wrote. That is when the
    /// term or the vote moved, or an append replaced entries the record covers (an
    /// overwritten tail: the log may now end below the recorded last index, or at it with
    /// another term). A plain append leaves the record alone: `load` finds the log's last
    /// entry past the recorded one. Nor does a commit index that moved alone: Raft keeps it
    /// volatile. With a thousand regions writing, this saves a record write per region and
    /// round on every replica.
    pub fn write_raft_state_if_needed(&mut self, batch: &mut WriteBatch) -> bool {
        let (current, recorded) =
            (self.hard_state(), self.recorded_raft_state.hard_state.unwrap_or_default());
        let needed =
            current.term != recorded.term || current.vote != recorded.vote || self.overwrote_recorded_entries;
        if needed {
            self.write_raft_state(batch);
        }
        needed
    }

    /// Log GC: deletes the entries up to `index` (at most the applied index) with one range
    /// delete and records the new truncated point in the apply state, in the same batch.
    /// Only for tests that drive a node over this storage alone: in a store the apply
    /// thread owns the apply state record (see `truncate_log_to`).
    #[cfg(test)]
    pub fn compact_to(&mut self, batch: &mut WriteBatch, index: u64) -> Result<(), StorageError> {
        if self.truncate_log_to(batch, index)? {
            batch.put_msg(CF_META, &keys::apply_state_key(self.region.id), &self.apply_state);
        }
        Ok(())
    }

    /// Log GC in the store: the apply thread already recorded the truncated point in the
    /// apply state (it owns that record); this deletes the entries up to `index` with one
    /// range delete and moves the in-memory view. Returns whether anything was deleted.
    pub fn truncate_log_to(&mut self, batch: &mut WriteBatch, index: u64) -> Result<bool, StorageError> {
        if index <= self.apply_state.truncated_index {
            return Ok(false);
        }
        assert!(
            index <= self.apply_state.applied_index && index <= self.raft_state.last_index,
            "invariant: region {} compacts only applied entries ({index} > applied {} or last {})",
            self.region.id,
            self.apply_state.applied_index,
            self.raft_state.last_index
        );
        let term = self.term(index)?;
        let range = keys::raft_log_range(self.region.id, self.apply_state.truncated_index + 1, index + 1);
        batch.delete_range(CF_RAFT, &range.start, &range.end);
        self.apply_state.truncated_index = index;
        self.apply_state.truncated_term = term;
        self.cache.compact_to(index);
        Ok(true)
    }

    /// The apply thread applied (and recorded) entries up to `index`.
    pub fn on_applied(&mut self, index: u64) {
        self.apply_state.applied_index = self.apply_state.applied_index.max(index);
    }

    /// Installs a snapshot at `index`/`term`: the whole log is replaced by it (deleted with
    /// one range delete), and the Raft and apply states say so, in the caller's batch,
    /// which also carries the snapshot's data and region record.
    pub fn install_snapshot(
        &mut self,
        batch: &mut WriteBatch,
        region: Region,
        conf_state: ConfState,
        index: u64,
        term: u64,
    ) {
        let region_id = self.region.id;
        let stale = keys::raft_log_range(region_id, 0, self.raft_state.last_index.max(index) + 1);
        batch.delete_range(CF_RAFT, &stale.start, &stale.end);
        let mut hard_state = self.hard_state();
        hard_state.commit = hard_state.commit.max(index);
        hard_state.term = hard_state.term.max(term);
        self.raft_state = RaftLocalState { hard_state: Some(hard_state), last_index: index, last_term: term };
        self.apply_state = ApplyState { applied_index: index, truncated_index: index, truncated_term: term };
        self.write_raft_state(batch);
        batch.put_msg(CF_META, &keys::apply_state_key(region_id), &self.apply_state);
        self.cache.clear();
        self.region = region;
        self.conf_state = conf_state;
    }

    /// Deletes the region's log, Raft state and apply state (the peer is destroyed; its
    /// caller writes the tombstone and clears the data in the same batch).
    pub fn clear(&mut self, batch: &mut WriteBatch) {
        let region_id = self.region.id;
        let log = keys::raft_log_range(region_id, 0, u64::MAX);
        batch.delete_range(CF_RAFT, &log.start, &log.end);
        batch.delete(CF_RAFT, &keys::raft_state_key(region_id));
        batch.delete(CF_META, &keys::apply_state_key(region_id));
        self.cache.clear();
    }

    /// The region and configuration changed by an applied membership change.
    pub fn set_region(&mut self, region: Region, conf_state: ConfState) {
        self.region = region;
        self.conf_state = conf_state;
    }

    /// Whether the core asked for a snapshot that nobody is generating yet; marks it as
    /// being generated. The peer then asks its apply thread to generate one.
    pub fn take_snapshot_request(&mut self) -> bool {
        let state = self.snapshot_generation.get_mut();
        if matches!(state, SnapshotGeneration::Requested) {
            *state = SnapshotGeneration::Generating;
            return true;
        }
        false
    }

    /// Generated snapshots that will not be sent; their files can go.
    pub fn take_stale_snapshots(&mut self) -> Vec<Snapshot> {
        std::mem::take(self.stale_snapshots.get_mut())
    }

    /// A generation finished: the next `snapshot` call hands the result out (or, after a
    /// failure, asks for a new one).
    pub fn on_snapshot_generated(&mut self, result: Result<Snapshot, String>) -> Option<Snapshot> {
        let state = self.snapshot_generation.get_mut();
        match result {
            Ok(snapshot) => match std::mem::replace(state, SnapshotGeneration::Generated(snapshot)) {
                // A generation nobody waits for any more: its file can go.
                SnapshotGeneration::Generated(stale) => Some(stale),
                _ => None,
            },
            Err(_) => {
                *state = SnapshotGeneration::Idle;
                None
            }
        }
    }

    /// Records how far the state machine got, in the batch that carries the applied data.
    /// Only for tests, like `compact_to`.
    #[cfg(test)]
    pub fn set_applied(&mut self, batch: &mut WriteBatch, index: u64) {
        assert!(
            index >= self.apply_state.applied_index,
            "invariant: region {} applied index goes back ({index} < {})",
            self.region.id,
            self.apply_state.applied_index
        );
        self.apply_state.applied_index = index;
        batch.put_msg(CF_META, &keys::apply_state_key(self.region.id), &self.apply_state);
    }

    fn read_term(&self, index: u64) -> EngineResult<u64> {
        let key = keys::raft_log_key(self.region.id, index);
        let entry: Entry = self.engine.get_msg(CF_RAFT, &key)?.ok_or_else(|| {
            corrupt(CF_RAFT, &key, format!("region {}: entry {index} missing", self.region.id))
        })?;
        Ok(entry.term)
    }

    /// Reads `[low, high)` from the engine, stopping early once `bytes_max` is passed.
    fn read_entries(
        &self,
        low: u64,
        high: u64,
        bytes_max: Option<u64>,
        out: &mut Vec<Entry>,
    ) -> EngineResult<()> {
        let range = keys::raft_log_range(self.region.id, low, high);
        let mut expected = low;
        let mut bytes = 0u64;
        self.engine.scan(CF_RAFT, &range.start, &range.end, |key, value| {
            let entry = Entry::decode(value).map_err(|e| corrupt(CF_RAFT, key, e.to_string()))?;
            if entry.index != expected {
                return Err(corrupt(
                    CF_RAFT,
                    key,
                    format!("region {}: expected entry {expected}", self.region.id),
                ));
            }
            expected += 1;
            bytes += entry.encoded_len() as u64;
            out.push(entry);
            Ok(bytes_max.is_none_or(|max| bytes <= max))
        })?;
        if expected < high && bytes_max.is_none_or(|max| bytes <= max) {
            let key = keys::raft_log_key(self.region.id, expected);
            return Err(corrupt(
                CF_RAFT,
                &key,
                format!("region {}: entry {expected} missing", self.region.id),
            ));
        }
        Ok(())
    }
}

impl Storage for PeerStorage {
    fn initial_state(&self) -> Result<RaftState, StorageError> {
        Ok(RaftState { hard_state: self.hard_state(), conf_state: self.conf_state.clone() })
    }

    fn entries(&self, low: u64, high: u64, bytes_max: Option<u64>) -> Result<Vec<Entry>, StorageError> {
        if low <= self.apply_state.truncated_index {
            return Err(StorageError::Compacted);
        }
        if high > self.raft_state.last_index + 1 {
            return Err(StorageError::Unavailable);
        }
        // Not `high - low`: a leader asks for everything a far-behind follower lacks and
        // lets `bytes_max` cut it, so the range can be far larger than what is returned.
        let mut entries = Vec::new();
        let cache_first = self.cache.first_index().unwrap_or(high).clamp(low, high);
        if low < cache_first {
            self.read_entries(low, cache_first, bytes_max, &mut entries).map_err(storage_error)?;
        }
        if entries.len() as u64 == cache_first - low {
            for index in cache_first..high {
                entries.push(
                    self.cache
                        .get(index)
                        .expect("invariant: the cache is contiguous to the last index")
                        .clone(),
                );
            }
        }
        limit_size(&mut entries, bytes_max);
        Ok(entries)
    }

    fn term(&self, index: u64) -> Result<u64, StorageError> {
        if index == self.apply_state.truncated_index {
            return Ok(self.apply_state.truncated_term);
        }
        if index < self.apply_state.truncated_index {
            return Err(StorageError::Compacted);
        }
        if index > self.raft_state.last_index {
            return Err(StorageError::Unavailable);
        }
        if let Some(entry) = self.cache.get(index) {
            return Ok(entry.term);
        }
        self.read_term(index).map_err(storage_error)
    }

    fn first_index(&self) -> Result<u64, StorageError> {
        Ok(self.apply_state.truncated_index + 1)
    }

    fn last_index(&self) -> Result<u64, StorageError> {
        Ok(self.raft_state.last_index)
    }

    /// Snapshot generation runs off the poller thread (see `take_snapshot_request`): until
    /// a snapshot recent enough is generated, the leader hears that none is available and
    /// retries on a later heartbeat round.
    fn snapshot(&self, request_index: u64, _to: u64) -> Result<Snapshot, StorageError> {
        let mut state = self.snapshot_generation.borrow_mut();
        match std::mem::take(&mut *state) {
            SnapshotGeneration::Generated(snapshot)
                if snapshot.metadata.as_ref().is_some_and(|m| m.index >= request_index) =>
            {
                Ok(snapshot)
            }
            SnapshotGeneration::Generating => {
                *state = SnapshotGeneration::Generating;
                Err(StorageError::SnapshotTemporarilyUnavailable)
            }
            SnapshotGeneration::Generated(stale) => {
                self.stale_snapshots.borrow_mut().push(stale);
                *state = SnapshotGeneration::Requested;
                Err(StorageError::SnapshotTemporarilyUnavailable)
            }
            // Idle or requested: ask for a fresh one.
            _ => {
                *state = SnapshotGeneration::Requested;
                Err(StorageError::SnapshotTemporarilyUnavailable)
            }
        }
    }
}

#[cfg(test)]
#[path = "peer_storage_tests.rs"]
mod tests;
