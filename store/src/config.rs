//! How a store runs: its batch systems, Raft timings and the limits of its queues.

use std::path::PathBuf;
use std::time::Duration;

use thiserror::Error;

use crate::batch::{BatchConfig, ConfigError as BatchConfigError};
use crate::engine::EngineConfig;
use crate::snapshot::SnapshotConfig;

/// Everything a store needs to start. `StoreConfig::new` gives sensible defaults for a
/// store whose data lives in `data_dir`.
#[derive(Clone, Debug)]
pub struct StoreConfig {
    /// This store's id, unique in the cluster and never zero.
    pub store_id: u64,
    /// Where RocksDB (`data_dir/db`) and snapshot files (`data_dir/snap`) live.
    pub data_dir: PathBuf,
    pub engine: EngineConfig,
    /// The raft pollers: they step peers and persist every peer's Ready of a round with one
    /// write and one fsync.
    pub raft_batch: BatchConfig,
    /// The apply pollers: they apply committed entries of many regions in one write.
    pub apply_batch: BatchConfig,
    /// One logical Raft tick. Election and heartbeat timeouts are counted in ticks.
    pub raft_tick_interval: Duration,
    pub raft_election_ticks: usize,
    pub raft_heartbeat_ticks: usize,
    /// Most entry bytes in one append message.
    pub raft_msg_bytes_max: u64,
    /// Append messages in flight to one follower.
    pub raft_inflight_msgs_max: usize,
    /// Uncommitted bytes a leader accepts before it refuses proposals.
    pub raft_uncommitted_bytes_max: u64,
    /// The hot tail of each region's log kept in memory.
    pub entry_cache_bytes_max: usize,
    /// Proposals of one peer waiting to be applied. Beyond it new ones are refused with
    /// `ServerIsBusy`, so a region whose log does not commit cannot grow memory.
    /// (Also the most reads one peer holds in flight.)
    pub proposals_per_peer_max: usize,
    /// Linearizable reads: false confirms the leadership with a heartbeat round per batch
    /// of reads (ReadIndex, always safe); true answers from the leader lease while it holds
    /// (no round trip; assumes clocks drift less than the lease margin). A leader whose
    /// ticks fall behind the real clock (dropped by a full mailbox, or a starved timer)
    /// gives the lease up until they keep pace again (`operation/lease.rs`; counted by
    /// `tessera_store_leases_expired_for_lost_ticks_total`).
    pub raft_lease_reads: bool,
    /// Most pairs one scan returns, whatever the client asks.
    pub scan_limit_max: usize,
    /// Most key and value bytes one scan returns (it stops after the pair that reaches it,
    /// so it always makes progress). Scans run on the raft pollers and their answers are
    /// held in memory: this keeps one scan of large values from stalling the peers of a
    /// poller and from growing memory without bound. Below gRPC's default 4 MiB message.
    pub scan_bytes_max: u64,
    /// Log GC: how often the leader checks (in ticks), and when it compacts: when more
    /// than `log_gc_count_threshold` applied entries, or `log_gc_bytes_threshold` bytes of
    /// them (estimated), are in the log.
    pub log_gc_check_ticks: usize,
    pub log_gc_count_threshold: u64,
    pub log_gc_bytes_threshold: u64,
    /// A follower this many entries behind the applied index no longer holds back log GC:
    /// it will be caught up by snapshot instead.
    pub log_gc_lag_max: u64,
    /// Whether idle regions rest (stop ticking and heartbeating) until something wakes
    /// them; see `operation/hibernate.rs` for the rules.
    pub hibernate_regions: bool,
    /// How long a leader must have had nothing to do before it asks its followers to rest.
    pub hibernate_idle_ticks: usize,
    /// How often this store tells every store it shares regions with that it is alive.
    pub store_heartbeat_ticks: usize,
    /// A store not heard from for this long is taken as down: resting peers whose leader
    /// lives there wake up to elect another. Must exceed `store_heartbeat_ticks`.
    pub store_down_ticks: usize,
    /// A peer that has heard from no leader for this many ticks asks the other members of
    /// its region whether it is still one of them, and again every as many ticks: a peer
    /// removed while cut off (a learner above all, which never campaigns) learns so from
    /// their tombstone answer and is destroyed (`operation/stale_peer.rs`). At least
    /// `2 * raft_election_ticks`, so that elections run their course first.
    pub stale_peer_check_ticks: usize,
    /// How many tombstones the leader that applies a removal sends the removed peer, one
    /// election timeout apart, in case it missed the change (0: none). The region does not
    /// rest meanwhile. See `operation/stale_peer.rs`.
    pub removed_peer_tombstones: usize,
    /// Every this many ticks, each resting peer asks the other members of its region
    /// whether it is still one of them, without waking anyone (the store sweeps its resting
    /// peers a slice per tick). A resting peer takes no ticks, so it never runs the check of
    /// `stale_peer_check_ticks`, and one removed while cut off from the leader that removed
    /// it, past that leader's tombstones or a change of leader, would otherwise rest forever
    /// (`operation/stale_peer.rs`).
    pub resting_peer_check_ticks: usize,
    pub snapshot: SnapshotConfig,
}

impl StoreConfig {
    pub fn new(store_id: u64, data_dir: impl Into<PathBuf>) -> Self {
        let data_dir = data_dir.into();
        StoreConfig {
            store_id,
            snapshot: SnapshotConfig::new(data_dir.join("snap")),
            data_dir,
            engine: EngineConfig::default(),
            raft_batch: BatchConfig::default(),
            apply_batch: BatchConfig { pool_size: 1, ..BatchConfig::default() },
            raft_tick_interval: Duration::from_millis(100),
            raft_election_ticks: 10,
            raft_heartbeat_ticks: 2,
            raft_msg_bytes_max: 1 << 20,
            raft_inflight_msgs_max: 256,
            raft_uncommitted_bytes_max: 64 << 20,
            entry_cache_bytes_max: 1 << 20,
            proposals_per_peer_max: 4096,
            raft_lease_reads: false,
            scan_limit_max: 10_000,
            scan_bytes_max: 2 << 20,
            log_gc_check_ticks: 10,
            log_gc_count_threshold: 10_000,
            log_gc_bytes_threshold: 64 << 20,
            log_gc_lag_max: 20_000,
            hibernate_regions: true,
            hibernate_idle_ticks: 10,
            store_heartbeat_ticks: 2,
            store_down_ticks: 20,
            stale_peer_check_ticks: 50,
            removed_peer_tombstones: 10,
            // Five minutes at 100 ms ticks.
            resting_peer_check_ticks: 3_000,
        }
    }

    /// Checks what would make the store unable to work.
    pub fn validate(&self) -> Result<(), StoreConfigError> {
        if self.store_id == 0 {
            return Err(StoreConfigError::Invalid("store_id must not be 0".into()));
        }
        self.raft_batch.validate()?;
        self.apply_batch.validate()?;
        self.snapshot.validate().map_err(|e| StoreConfigError::Invalid(e.to_string()))?;
        if self.raft_tick_interval.is_zero() {
            return Err(StoreConfigError::Invalid("raft_tick_interval must not be zero".into()));
        }
        if self.raft_heartbeat_ticks == 0 || self.raft_election_ticks <= self.raft_heartbeat_ticks {
            return Err(StoreConfigError::Invalid(
                "raft_election_ticks must exceed raft_heartbeat_ticks, which must be at least 1".into(),
            ));
        }
        if self.stale_peer_check_ticks < 2 * self.raft_election_ticks {
            return Err(StoreConfigError::Invalid(
                "stale_peer_check_ticks must be at least twice raft_election_ticks".into(),
            ));
        }
        // The core's own checks (the lease margin against the election timeout, ...), here
        // rather than when the first peer starts, where a refusal would read as corrupt data.
        crate::peer::raft_config(self, 1, 0)
            .validate()
            .map_err(|e| StoreConfigError::Invalid(format!("raft settings: {e}")))?;
        let limits = [
            ("proposals_per_peer_max", self.proposals_per_peer_max as u64),
            ("scan_limit_max", self.scan_limit_max as u64),
            ("scan_bytes_max", self.scan_bytes_max),
            ("log_gc_check_ticks", self.log_gc_check_ticks as u64),
            ("log_gc_count_threshold", self.log_gc_count_threshold),
            ("raft_inflight_msgs_max", self.raft_inflight_msgs_max as u64),
            ("hibernate_idle_ticks", self.hibernate_idle_ticks as u64),
            ("store_heartbeat_ticks", self.store_heartbeat_ticks as u64),
            ("resting_peer_check_ticks", self.resting_peer_check_ticks as u64),
        ];
        if let Some((field, _)) = limits.iter().find(|(_, value)| *value == 0) {
            return Err(StoreConfigError::Invalid(format!("{field} must be at least 1")));
        }
        if self.store_down_ticks <= self.store_heartbeat_ticks {
            return Err(StoreConfigError::Invalid(
                "store_down_ticks must exceed store_heartbeat_ticks, or every store looks down".into(),
            ));
        }
        Ok(())
    }
}

#[derive(Debug, Error, PartialEq, Eq)]
pub enum StoreConfigError {
    #[error(transparent)]
    Batch(#[from] BatchConfigError),
    #[error("invalid store config: {0}")]
    Invalid(String),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stale_peer_check_inside_an_election_is_refused() {
        let mut config = StoreConfig::new(1, "/nonexistent");
        config.stale_peer_check_ticks = 2 * config.raft_election_ticks - 1;
        match config.validate() {
            Err(StoreConfigError::Invalid(reason)) => {
                assert!(reason.contains("stale_peer_check_ticks"), "{reason}")
            }
            other => panic!("expected a config refusal, got {other:?}"),
        }
        config.stale_peer_check_ticks += 1;
        assert!(config.validate().is_ok());
    }

    #[test]
    fn raft_settings_the_core_refuses_are_refused_as_config() {
        let mut config = StoreConfig::new(1, "/nonexistent");
        assert!(config.validate().is_ok());
        // Passes the store's own tick check, but leaves no room for the lease margin.
        config.raft_election_ticks = 2;
        config.raft_heartbeat_ticks = 1;
        match config.validate() {
            Err(StoreConfigError::Invalid(reason)) => assert!(reason.contains("raft settings"), "{reason}"),
            other => panic!("expected a config refusal, got {other:?}"),
        }
    }
}
