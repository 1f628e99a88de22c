//! What every poller of a store shares: the engine, the routers, the transport, and the
//! store's view of which regions it hosts.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use tessera_proto::storepb::Region;
use tessera_router::Transport;

use crate::apply::{ApplyControlFsm, ApplyFsm};
use crate::batch::BatchRouter;
use crate::config::StoreConfig;
use crate::engine::Engine;
use crate::fsm::{PeerFsm, StoreFsm};
use crate::snapshot::SnapshotManager;

pub(crate) type RaftRouter = BatchRouter<PeerFsm, StoreFsm>;
pub(crate) type ApplyRouter = BatchRouter<ApplyFsm, ApplyControlFsm>;

/// The regions this store hosts, with an index by range so that a new peer or a snapshot
/// that would overlap a live region is refused (ARCHITECTURE.md invariant 5).
#[derive(Debug, Default)]
pub(crate) struct StoreMeta {
    /// Every peer's region, initialized or not.
    pub regions: HashMap<u64, Region>,
    /// Initialized regions by end key (an empty end, the end of the key space, sorts after
    /// every real key): the first entry past a key holds that key, if any region does.
    pub ranges: BTreeMap<EndKey, u64>,
}

/// An end key that sorts the open end (empty) after every real key. (Not an `Option`:
/// `None` sorts before every `Some`.)
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum EndKey {
    Key(Vec<u8>),
    Unbounded,
}

impl EndKey {
    pub fn of(region: &Region) -> EndKey {
        if region.end_key.is_empty() {
            EndKey::Unbounded
        } else {
            EndKey::Key(region.end_key.clone())
        }
    }
}

impl StoreMeta {
    /// The ids of initialized regions other than `except` whose ranges overlap `region`'s.
    pub fn overlapping(&self, region: &Region, except: u64) -> Vec<u64> {
        let start = EndKey::Key(region.start_key.clone());
        let mut found = Vec::new();
        // Regions ending after our start key, in key order, until one starts at or after
        // our end.
        for (_, id) in self.ranges.range((std::ops::Bound::Excluded(start), std::ops::Bound::Unbounded)) {
            let other = &self.regions[id];
            if !region.end_key.is_empty() && other.start_key >= region.end_key {
                break;
            }
            if *id != except {
                found.push(*id);
            }
        }
        found
    }

    /// Records `region` (initialized) and its range.
    pub fn set_region(&mut self, region: Region) {
        if let Some(old) = self.regions.get(&region.id) {
            let old_end = EndKey::of(old);
            if self.ranges.get(&old_end) == Some(&region.id) {
                self.ranges.remove(&old_end);
            }
        }
        self.ranges.insert(EndKey::of(&region), region.id);
        self.regions.insert(region.id, region);
    }

    /// Records a peer that has no data yet: it owns no range.
    pub fn set_uninitialized(&mut self, region: Region) {
        self.regions.insert(region.id, region);
    }

    pub fn remove(&mut self, region_id: u64) {
        if let Some(old) = self.regions.remove(&region_id) {
            let old_end = EndKey::of(&old);
            if self.ranges.get(&old_end) == Some(&region_id) {
                self.ranges.remove(&old_end);
            }
        }
    }
}

/// Counters of the store's own work, readable without a metrics recorder (tests and the
/// benchmark read them; the `metrics` crate gets the same figures).
#[derive(Debug, Default)]
pub struct StoreStats {
    /// Synced writes of raft pollers, one per round that wrote something that must be
    /// durable. RocksDB may serve concurrent ones with one fsync: `Store::wal_syncs` counts
    /// the fsyncs themselves.
    pub synced_writes: AtomicU64,
    /// Peers whose Ready went into a raft poller's write.
    pub peers_written: AtomicU64,
    /// Entries applied by apply pollers.
    pub entries_applied: AtomicU64,
    /// Apply writes (one per apply round at most).
    pub apply_writes: AtomicU64,
    /// Messages handed to the transport, and those it refused.
    pub messages_sent: AtomicU64,
    pub messages_unsent: AtomicU64,
    pub snapshots_sent: AtomicU64,
    pub snapshots_applied: AtomicU64,
    pub peers_created: AtomicU64,
    /// Messages that would have created a peer whose range overlaps a hosted region.
    pub peer_creations_refused_overlap: AtomicU64,
    pub peers_destroyed: AtomicU64,
    pub log_compactions: AtomicU64,
    /// Ticks peers handled (resting peers get none).
    pub peer_ticks: AtomicU64,
    /// Times a peer went to rest, and woke.
    pub hibernations: AtomicU64,
    pub wakeups: AtomicU64,
    /// Times another store was found down (no store heartbeat for `store_down_ticks`).
    pub stores_found_down: AtomicU64,
}

impl StoreStats {
    pub(crate) fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }
}

/// Everything a store's threads share.
pub(crate) struct StoreContext {
    pub store_id: u64,
    pub config: StoreConfig,
    pub engine: Arc<Engine>,
    pub raft_router: RaftRouter,
    pub apply_router: ApplyRouter,
    pub transport: Arc<dyn Transport>,
    pub snapshots: Arc<SnapshotManager>,
    pub meta: Mutex<StoreMeta>,
    pub stats: Arc<StoreStats>,
    /// Set when a write failed: the store stopped and refuses everything from then on.
    pub fatal: Mutex<Option<String>>,
    pub stopped: AtomicBool,
    /// The regions the store timer ticks: all but the resting ones (hibernation).
    pub ticking: Mutex<HashSet<u64>>,
    /// Fault injection: the store timer skips its ticks until then (`Store::stall_timer`).
    pub timer_stalled_until: Mutex<Option<std::time::Instant>>,
    /// Fault injection: every apply round that writes waits this many microseconds first
    /// (`Store::slow_applies`; 0, the normal case, costs the apply path one atomic load).
    pub apply_delay_us: AtomicU64,
}

impl std::fmt::Debug for StoreContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoreContext").field("store_id", &self.store_id).finish_non_exhaustive()
    }
}

impl StoreContext {
    pub fn meta(&self) -> MutexGuard<'_, StoreMeta> {
        self.meta.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Starts or stops the store timer's ticks for a region.
    pub fn set_ticking(&self, region_id: u64, ticking: bool) {
        let mut regions = self.ticking.lock().unwrap_or_else(PoisonError::into_inner);
        if ticking {
            regions.insert(region_id);
        } else {
            regions.remove(&region_id);
        }
        metrics::gauge!("tessera_store_regions_ticking").set(regions.len() as f64);
    }

    /// The regions the timer ticks now, into `out` (reused between ticks).
    pub fn ticking_regions(&self, out: &mut Vec<u64>) {
        out.clear();
        out.extend(self.ticking.lock().unwrap_or_else(PoisonError::into_inner).iter().copied());
    }

    pub fn is_stopped(&self) -> bool {
        self.stopped.load(Ordering::Acquire)
    }

    /// A write failed: the store stops for good. Nothing retries the write, because after
    /// a failed fsync the data it covered may be gone from the page cache (LESSONS.md #25).
    pub fn stop_fatally(&self, reason: String) -> ! {
        self.stopped.store(true, Ordering::Release);
        *self.fatal.lock().unwrap_or_else(PoisonError::into_inner) = Some(reason.clone());
        metrics::counter!("tessera_store_fatal_errors_total").increment(1);
        tracing::error!(store_id = self.store_id, %reason, "store stopped for good on a failed write");
        panic!("store {} stopped: {reason}", self.store_id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn region(id: u64, start: &str, end: &str) -> Region {
        Region {
            id,
            start_key: start.as_bytes().to_vec(),
            end_key: end.as_bytes().to_vec(),
            ..Default::default()
        }
    }

    #[test]
    fn overlapping_finds_exactly_the_regions_a_range_touches() {
        let mut meta = StoreMeta::default();
        meta.set_region(region(1, "", "b"));
        meta.set_region(region(2, "b", "d"));
        meta.set_region(region(3, "f", ""));
        meta.set_uninitialized(region(9, "", ""));
        let ids = |r: &Region| meta.overlapping(r, 0);
        assert_eq!(ids(&region(7, "a", "c")), vec![1, 2]);
        assert_eq!(ids(&region(7, "b", "c")), vec![2]);
        // End keys are exclusive, start keys inclusive.
        assert_eq!(ids(&region(7, "d", "f")), Vec::<u64>::new());
        assert_eq!(ids(&region(7, "c", "g")), vec![2, 3]);
        assert_eq!(ids(&region(7, "x", "")), vec![3]);
        assert_eq!(ids(&region(7, "", "")), vec![1, 2, 3]);
        // The region itself does not count, and an uninitialized peer owns no range.
        assert_eq!(meta.overlapping(&region(2, "b", "d"), 2), Vec::<u64>::new());
    }

    #[test]
    fn a_region_that_changes_range_is_indexed_by_its_new_end_only() {
        let mut meta = StoreMeta::default();
        meta.set_region(region(1, "a", "m"));
        meta.set_region(region(1, "a", "c"));
        assert_eq!(meta.overlapping(&region(7, "d", "e"), 0), Vec::<u64>::new());
        assert_eq!(meta.overlapping(&region(7, "b", "e"), 0), vec![1]);
        meta.remove(1);
        assert!(meta.ranges.is_empty() && meta.regions.is_empty());
    }
}
