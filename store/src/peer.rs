//! One region's replica on this store: its Raft node, its region record, and the work of
//! the current poll round. The raft pollers drive it (`fsm.rs`); the operations on it
//! (propose, ready, conf change, log GC, snapshots, destroy) live in `operation/`.

use std::collections::VecDeque;
use std::sync::Arc;

use tessera_proto::raftpb::Message;
use tessera_proto::serverpb::RaftMessage;
use tessera_proto::storepb::{Peer as PeerMeta, Region};
use tessera_raft::{Config as RaftConfig, RawNode, ReadOnlyOption};

use crate::config::StoreConfig;
use crate::context::StoreStats;
use crate::engine::{Engine, EngineResult};
use crate::msg::{ApplyTask, Proposal};
use crate::peer_cache::PeerCache;
use crate::peer_storage::PeerStorage;

/// Where a peer is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Life {
    Alive,
    /// Asked its apply FSM to stop; waits for it before deleting its data.
    Destroying,
    /// Gone: its mailbox is closed when its poller releases it.
    Destroyed,
}

/// A snapshot installed in this round's write: after the write, the apply FSM, the store's
/// range index and the received file are updated.
#[derive(Debug)]
pub(crate) struct InstalledSnapshot {
    pub region: Region,
    pub index: u64,
    pub term: u64,
    pub snapshot: tessera_proto::raftpb::Snapshot,
}

/// The work a peer collected in the current round, finished in the poller's `end`.
#[derive(Debug, Default)]
pub(crate) struct RoundWork {
    /// Whether the peer put anything in the round's write batch.
    pub wrote: bool,
    /// Whether what it put must be synced before its completions leave (entries, a
    /// snapshot, a new term or vote; not a commit index alone).
    pub needs_sync: bool,
    /// Completions that may only be delivered once the round's write is synced.
    pub after_persist: Vec<Message>,
    pub installed_snapshot: Option<InstalledSnapshot>,
    /// An urgent heartbeat arrived this round: the answers to heartbeats are urgent too.
    pub urgent_heartbeat_received: bool,
    /// The peer handled ticks this round: its tick clock is checked once they are all in.
    pub ticked: bool,
}

pub(crate) struct Peer {
    pub region_id: u64,
    /// This replica.
    pub meta: PeerMeta,
    pub raw: RawNode<PeerStorage>,
    /// The region as of the applied index.
    pub region: Region,
    /// Where the other peers live, learned from the region and from received messages
    /// (a peer created from a message does not know its region yet).
    pub peer_cache: PeerCache,
    /// Proposals whose entries are not yet handed to the apply FSM, in log order.
    pub proposals: VecDeque<Proposal>,
    /// Committed entries handed out by the core and not yet sent to the apply FSM
    /// (its mailbox was full). While any wait, the peer takes no new Ready.
    pub apply_backlog: VecDeque<ApplyTask>,
    /// Apply tasks sent and not yet answered.
    pub apply_tasks_in_flight: usize,
    /// A snapshot message that arrived while apply tasks were in flight: a snapshot moves
    /// the apply state, so it is stepped only once the apply FSM is idle.
    pub deferred_snapshot: Option<Box<RaftMessage>>,
    /// The snapshot stepped into the core since the last Ready: if that Ready does not
    /// install it (the core found it stale), its received file is removed.
    pub snapshot_stepped: Option<tessera_proto::raftpb::Snapshot>,
    pub life: Life,
    pub round: RoundWork,
    /// Ticks since the leader last considered log GC, and how many make a check.
    pub log_gc_elapsed_ticks: usize,
    pub log_gc_check_ticks: usize,
    /// The highest index a log compaction was proposed for, so it is not proposed twice.
    pub log_gc_proposed_index: u64,
    /// Estimated bytes of applied entries still in the log (for the size threshold).
    pub log_bytes_since_compaction: u64,
    pub hibernation: crate::operation::Hibernation,
    /// The leader's ticks against the real clock; see `operation/lease.rs`.
    pub tick_clock: crate::operation::TickClock,
    pub reads: crate::operation::Reads,
    /// Peers this region removed, that the leader still tells so; see
    /// `operation/stale_peer.rs`.
    pub removed_peers: crate::operation::RemovedPeers,
    /// While this peer is uninitialized (it knows no membership of its own): the highest
    /// `conf_ver` of the messages that named it. Only a tombstone from a membership at least
    /// that new destroys it: a peer whose membership went back (a power loss took an
    /// unsynced apply) may not list it yet.
    pub conf_ver_heard: u64,
}

impl std::fmt::Debug for Peer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Peer")
            .field("region_id", &self.region_id)
            .field("peer_id", &self.meta.id)
            .field("life", &self.life)
            .finish_non_exhaustive()
    }
}

/// The Raft configuration every peer of a store runs with.
pub(crate) fn raft_config(config: &StoreConfig, peer_id: u64, applied: u64) -> RaftConfig {
    RaftConfig {
        election_ticks: config.raft_election_ticks,
        heartbeat_ticks: config.raft_heartbeat_ticks,
        applied,
        msg_bytes_max: config.raft_msg_bytes_max,
        inflight_msgs_max: config.raft_inflight_msgs_max,
        uncommitted_bytes_max: config.raft_uncommitted_bytes_max,
        check_quorum: true,
        pre_vote: true,
        // The store answers a client at a follower with the leader's address instead, so
        // a proposal's index is always known where its callback waits.
        disable_proposal_forwarding: true,
        // Persisting and applying happen on other threads than stepping: the core's
        // storage work comes out as messages and completes when the store steps the
        // answers (see `operation/ready.rs`).
        async_storage_writes: true,
        step_down_on_removal: true,
        // Followers learn a new commit index from the next append or heartbeat instead of
        // an empty append of its own: with thousands of regions each committing an entry at
        // a time, that is half of every write's messages and follower rounds. A read never
        // waits on a follower's commit index (followers send reads to the leader).
        lazy_commit_broadcast: true,
        read_only_option: if config.raft_lease_reads {
            ReadOnlyOption::LeaseBased
        } else {
            ReadOnlyOption::Safe
        },
        ..RaftConfig::new(peer_id)
    }
}

impl Peer {
    /// Loads (or, for a region it has no record of, starts empty) the replica `meta` of
    /// `region`.
    pub fn new(
        config: &StoreConfig,
        engine: Arc<Engine>,
        region: Region,
        meta: PeerMeta,
    ) -> EngineResult<Peer> {
        let storage = PeerStorage::load(engine, region.clone(), config.entry_cache_bytes_max)?;
        let applied = storage.apply_state().applied_index;
        let raft_config = raft_config(config, meta.id, applied);
        let raw = RawNode::new(&raft_config, storage).map_err(|e| crate::engine::EngineError::Corrupt {
            cf: crate::keys::CF_RAFT,
            key: crate::keys::raft_state_key(region.id).to_vec(),
            reason: format!("region {}: the Raft node does not start from its records: {e}", region.id),
        })?;
        let peer_cache = PeerCache::new(&region);
        Ok(Peer {
            region_id: region.id,
            meta,
            raw,
            region,
            peer_cache,
            proposals: VecDeque::new(),
            apply_backlog: VecDeque::new(),
            apply_tasks_in_flight: 0,
            deferred_snapshot: None,
            snapshot_stepped: None,
            life: Life::Alive,
            round: RoundWork::default(),
            log_gc_elapsed_ticks: 0,
            log_gc_check_ticks: config.log_gc_check_ticks,
            log_gc_proposed_index: 0,
            log_bytes_since_compaction: 0,
            hibernation: Default::default(),
            tick_clock: crate::operation::TickClock::new(),
            reads: Default::default(),
            removed_peers: Default::default(),
            conf_ver_heard: 0,
        })
    }

    pub fn is_initialized(&self) -> bool {
        self.raw.store().is_initialized()
    }

    pub fn is_leader(&self) -> bool {
        self.raw.raft().role() == tessera_raft::StateRole::Leader
    }

    pub fn leader(&self) -> Option<PeerMeta> {
        let leader_id = self.raw.raft().leader_id();
        self.peer_cache.get(leader_id)
    }

    /// One tick of the store timer: the Raft clock, and the leader's periodic log GC check.
    pub(crate) fn on_tick(
        &mut self,
        ctx: &mut crate::operation::PollContext<'_>,
        fired_at: Option<std::time::Instant>,
    ) {
        if self.life != Life::Alive {
            return;
        }
        if self.hibernation.asleep {
            // A tick sent before the region went to rest.
            return;
        }
        StoreStats::add(&ctx.store.stats.peer_ticks, 1);
        self.raw.tick();
        // Measured against the real clock once the round's ticks are all in: ticks held in
        // the mailbox arrive together, and only the newest says how far the clock has come.
        self.tick_clock.on_tick(fired_at);
        self.round.ticked = true;
        self.drop_replaced_proposals();
        self.serve_reads(ctx);
        if self.is_leader() {
            self.log_gc_elapsed_ticks += 1;
            if self.log_gc_elapsed_ticks >= self.log_gc_check_ticks {
                self.log_gc_elapsed_ticks = 0;
                let _ = self.maybe_propose_log_gc(ctx);
            }
        }
        self.hibernation_tick(ctx);
        let _ = self.maybe_check_membership(ctx);
        let _ = self.maybe_tell_removed_peers(ctx);
    }

    /// Starts an election now; a learner or a peer outside its configuration ignores it.
    /// With lease reads, a peer inside its vote lease refuses (the core's
    /// `CampaignInVoteLease`): a leader's lease may count on it. It says so in the log,
    /// since the caller's `Store::campaign` returned when the request was queued.
    pub(crate) fn campaign(&mut self) {
        if let Err(e) = self.raw.campaign() {
            tracing::info!(region_id = self.region_id, peer_id = self.meta.id, "not campaigning: {e}");
        }
    }

    /// Asks for leadership to move to `to_peer_id`; the core ignores impossible targets.
    pub(crate) fn transfer_leader(&mut self, to_peer_id: u64) {
        let _ = self.raw.transfer_leader(to_peer_id);
    }

    /// Remembers where peers live: the region's list replaces what the cache knew of
    /// them, and keeps what it learned from messages of peers not (yet) in the region.
    pub fn refresh_peer_cache(&mut self) {
        self.peer_cache.set_members(&self.region);
    }
}
