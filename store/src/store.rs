//! A running store: open the engine, load every region, start the raft and apply pollers
//! and the store timer; route client commands and inbound messages; stop.

use std::sync::atomic::{AtomicBool, AtomicU64};
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};
use prost::Message as _;
use tessera_proto::raftpb::ConfState;
use tessera_proto::serverpb::{RaftCmdRequest, RaftMessage};
use tessera_proto::storepb::{PeerState, Region, RegionLocalState};
use tessera_raft::{StateRole, Storage};
use tessera_router::{RaftReceiver, SnapshotChunks, Transport};
use thiserror::Error;

use crate::apply::{ApplyControlFsm, ApplyFsm, ApplyPoller};
use crate::batch::{BatchSystem, SendError};
use crate::config::{StoreConfig, StoreConfigError};
use crate::context::{StoreContext, StoreMeta, StoreStats};
use crate::engine::{Engine, EngineError};
use crate::error::{server_is_busy, BusyCause, StoreError, StoreResult};
use crate::fsm::{PeerFsm, RaftPoller, StoreFsm};
use crate::keys::{self, CF_DEFAULT, CF_META};
use crate::msg::{Callback, CmdResponse, PeerMsg, ReadRequest, ReadResponse, StoreMsg};
use crate::peer::Peer;
use crate::peer_storage::write_initial_region;
use crate::snapshot::{SnapshotError, SnapshotManager};

/// Why a store did not start.
#[derive(Debug, Error)]
pub enum StartError {
    #[error(transparent)]
    Config(#[from] StoreConfigError),
    #[error(transparent)]
    Engine(#[from] EngineError),
    #[error(transparent)]
    Snapshot(#[from] SnapshotError),
    #[error("region {region_id}: {reason}")]
    Region { region_id: u64, reason: String },
    #[error("starting threads: {0}")]
    Thread(#[from] std::io::Error),
}

/// The peer id of initial region `region_id` on store `store_id` in a statically
/// bootstrapped cluster: every store computes the same ids without talking to the others.
/// Store ids stay below 1,000 for the ids to be unique.
pub fn initial_peer_id(region_id: u64, store_id: u64) -> u64 {
    region_id * 1_000 + store_id
}

/// Writes the initial records of `regions` that have a peer on this store, if the store
/// holds no region yet. A store is bootstrapped once: on a store that holds regions (live
/// or tombstoned) this writes nothing, so a restarted node may run it again, even with a
/// different list (the regions it holds have moved on since, and writing others beside them
/// could overlap them). Every store of the initial cluster bootstraps the same regions;
/// regions of the list that overlap each other are refused.
pub fn bootstrap(config: &StoreConfig, regions: &[Region]) -> Result<(), StartError> {
    config.validate()?;
    let engine = Arc::new(Engine::open(&config.data_dir.join("db"), &config.engine)?);
    let range = keys::region_meta_range();
    let mut holds_regions = false;
    engine.scan(CF_META, &range.start, &range.end, |_, _| {
        holds_regions = true;
        Ok(false)
    })?;
    if holds_regions {
        return Ok(());
    }
    let mut meta = StoreMeta::default();
    let mut batch = engine.write_batch();
    for region in regions {
        let Some(peer) = region.peers.iter().find(|p| p.store_id == config.store_id) else {
            continue;
        };
        if let Some(other) = meta.overlapping(region, region.id).first() {
            return Err(StartError::Region {
                region_id: region.id,
                reason: format!("its range overlaps region {other} of the same bootstrap"),
            });
        }
        meta.set_region(region.clone());
        let conf_state = ConfState {
            voters: region.peers.iter().filter(|p| p.role == 0).map(|p| p.id).collect(),
            learners: region.peers.iter().filter(|p| p.role != 0).map(|p| p.id).collect(),
            ..Default::default()
        };
        write_initial_region(&mut batch, region, &conf_state, peer.id);
    }
    engine.write(batch, true)?;
    Ok(())
}

/// A peer's state, for tests, tools and status pages.
#[derive(Clone, Debug, PartialEq)]
pub struct PeerStatus {
    pub region: Region,
    pub peer_id: u64,
    pub leader_id: u64,
    pub term: u64,
    pub is_leader: bool,
    pub commit_index: u64,
    pub applied_index: u64,
    pub first_index: u64,
    pub last_index: u64,
    pub initialized: bool,
    /// Resting: the store timer does not tick it (hibernation).
    pub hibernating: bool,
    /// The core's configuration is joint: a membership change of several peers is half
    /// done, and its leave entry is still to apply.
    pub joint: bool,
}

/// A running store. Dropping it stops it.
pub struct Store {
    ctx: Arc<StoreContext>,
    raft_system: BatchSystem<PeerFsm, StoreFsm>,
    apply_system: BatchSystem<ApplyFsm, ApplyControlFsm>,
    ticker: Option<(Sender<()>, JoinHandle<()>)>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").field("store_id", &self.ctx.store_id).finish_non_exhaustive()
    }
}

impl Store {
    /// Opens the store's data, loads every region it hosts and starts its threads.
    /// Messages for other stores go out through `transport`; register `receiver()` with
    /// the network for messages to come in.
    pub fn start(config: StoreConfig, transport: Arc<dyn Transport>) -> Result<Store, StartError> {
        config.validate()?;
        let engine = Arc::new(Engine::open(&config.data_dir.join("db"), &config.engine)?);
        let snapshots = SnapshotManager::open(config.snapshot.clone())?;
        let mut raft_system =
            BatchSystem::with_name("raft", &config.raft_batch, Box::new(StoreFsm::default()))
                .map_err(StoreConfigError::from)?;
        let mut apply_system =
            BatchSystem::with_name("apply", &config.apply_batch, Box::new(ApplyControlFsm))
                .map_err(StoreConfigError::from)?;
        let ctx = Arc::new(StoreContext {
            store_id: config.store_id,
            engine,
            raft_router: raft_system.router().clone(),
            apply_router: apply_system.router().clone(),
            transport,
            snapshots,
            meta: Mutex::new(StoreMeta::default()),
            stats: Arc::new(StoreStats::default()),
            fatal: Mutex::new(None),
            stopped: AtomicBool::new(false),
            ticking: Mutex::new(Default::default()),
            timer_stalled_until: Mutex::new(None),
            apply_delay_us: AtomicU64::new(0),
            config,
        });
        load_regions(&ctx)?;
        let store_id = ctx.store_id;
        {
            let ctx = Arc::clone(&ctx);
            raft_system.spawn(&format!("raft-{store_id}"), move |_| RaftPoller::new(Arc::clone(&ctx)))?;
        }
        {
            let ctx = Arc::clone(&ctx);
            apply_system.spawn(&format!("apply-{store_id}"), move |_| ApplyPoller::new(Arc::clone(&ctx)))?;
        }
        let ticker = start_ticker(&ctx)?;
        tracing::info!(store_id, regions = ctx.meta().regions.len(), "store started");
        Ok(Store { ctx, raft_system, apply_system, ticker: Some(ticker) })
    }

    pub fn store_id(&self) -> u64 {
        self.ctx.store_id
    }

    /// What the network delivers to. It holds the store weakly: a network that outlives
    /// the store drops its messages.
    pub fn receiver(&self) -> Arc<dyn RaftReceiver> {
        Arc::new(StoreReceiver { ctx: Arc::downgrade(&self.ctx) })
    }

    /// Proposes a command to its region's peer here; `callback` hears the outcome.
    pub fn propose(&self, request: RaftCmdRequest, callback: Callback) {
        let region_id = request.header.as_ref().map_or(0, |h| h.region_id);
        self.send_client_message(region_id, PeerMsg::Command { request: Box::new(request), callback });
    }

    /// `propose`, answered on a channel.
    pub fn propose_and_wait(&self, request: RaftCmdRequest) -> Receiver<StoreResult<CmdResponse>> {
        let (callback, receiver) = Callback::channel();
        self.propose(request, callback);
        receiver
    }

    /// Reads from a region's leader here, linearizably; `callback` hears the answer.
    pub fn read(&self, request: ReadRequest, callback: Callback<ReadResponse>) {
        let region_id = request.region_id;
        self.send_client_message(region_id, PeerMsg::Read { request: Box::new(request), callback });
    }

    /// `read`, answered on a channel.
    pub fn read_and_wait(&self, request: ReadRequest) -> Receiver<StoreResult<ReadResponse>> {
        let (callback, receiver) = Callback::channel();
        self.read(request, callback);
        receiver
    }

    /// Delivers a client's command or read to its region's peer, or answers its callback
    /// with why it could not be delivered.
    fn send_client_message(&self, region_id: u64, msg: PeerMsg) {
        let refused = if self.ctx.is_stopped() {
            Some((StoreError::StoreStopped, msg))
        } else {
            self.ctx
                .raft_router
                .send(region_id, msg)
                .err()
                .map(|e| (refusal(region_id, &e), e.into_message()))
        };
        if let Some((error, msg)) = refused {
            msg.refuse(error);
        }
    }

    /// Asks a region's peer to campaign now (an election without waiting for a timeout).
    /// With `raft_lease_reads` on, a peer that heard from its leader within the election
    /// timeout, or started less than one ago (bootstrap included), declines and logs it:
    /// its vote could elect a second leader while the first serves reads from its lease.
    /// Use `transfer_leader` on the leader to move leadership.
    pub fn campaign(&self, region_id: u64) -> StoreResult<()> {
        self.send_peer(region_id, PeerMsg::Campaign)
    }

    /// Asks a region's leader here to hand leadership to `to_peer_id`.
    pub fn transfer_leader(&self, region_id: u64, to_peer_id: u64) -> StoreResult<()> {
        self.send_peer(region_id, PeerMsg::TransferLeader { to_peer_id })
    }

    fn send_peer(&self, region_id: u64, msg: PeerMsg) -> StoreResult<()> {
        self.ctx.raft_router.send(region_id, msg).map_err(|e| refusal(region_id, &e))
    }

    /// The state of a region's peer, asked through its mailbox (so it is consistent with
    /// the peer's own view), within `timeout`.
    pub fn peer_status(&self, region_id: u64, timeout: Duration) -> Option<PeerStatus> {
        let (sender, receiver) = crossbeam_channel::bounded(1);
        self.ask_peer_status(region_id, move |status| {
            let _ = sender.send(status);
        })
        .ok()?;
        receiver.recv_timeout(timeout).ok()
    }

    /// Asks a region's peer for its state; `answer` runs on the poller that owns the peer,
    /// so it must not block. For callers that must not block either (an async service).
    /// `answer` is dropped unrun if the peer goes away first.
    pub fn ask_peer_status(
        &self,
        region_id: u64,
        answer: impl FnOnce(PeerStatus) + Send + 'static,
    ) -> StoreResult<()> {
        let query =
            PeerMsg::Query(crate::msg::PeerQuery(Box::new(move |peer: &Peer| answer(status_of(peer)))));
        self.send_peer(region_id, query)
    }

    /// The ids of the regions this store hosts (initialized or not).
    pub fn region_ids(&self) -> Vec<u64> {
        let mut ids: Vec<u64> = self.ctx.meta().regions.keys().copied().collect();
        ids.sort_unstable();
        ids
    }

    /// The region hosted here whose range holds `key`, as this store knows it (its epoch
    /// and peers as of its last apply): where a service routes a client's key. None if no
    /// initialized region here covers the key.
    pub fn region_for_key(&self, key: &[u8]) -> Option<Region> {
        let meta = self.ctx.meta();
        // The first region ending after the key holds it, if it starts at or before it.
        let (_, id) = meta
            .ranges
            .range((
                std::ops::Bound::Excluded(crate::context::EndKey::Key(key.to_vec())),
                std::ops::Bound::Unbounded,
            ))
            .next()?;
        let region = meta.regions.get(id)?;
        (region.start_key.as_slice() <= key).then(|| region.clone())
    }

    /// Reads a user key from this store's data as applied here: not linearizable (a
    /// follower may lag); for tests and tools. Linearizable reads go through the leader.
    pub fn get_local(&self, key: &[u8]) -> Result<Option<Vec<u8>>, EngineError> {
        self.ctx.engine.get(CF_DEFAULT, &keys::data_key(key))
    }

    /// The persisted record of a region on this store, tombstones included.
    pub fn region_record(&self, region_id: u64) -> Result<Option<RegionLocalState>, EngineError> {
        self.ctx.engine.get_msg(CF_META, &keys::region_state_key(region_id))
    }

    /// Memory its RocksDB holds in memtables and the block cache (for status pages and
    /// benchmarks that tell the store's own memory from the engine's).
    pub fn engine_memory_bytes(&self) -> u64 {
        self.ctx.engine.memory_bytes()
    }

    /// The fsyncs of its RocksDB's write-ahead log since the store started: one per synced
    /// write (`StoreStats::synced_writes`), or fewer when RocksDB merged concurrent synced
    /// writes into one write group, plus one whenever a full memtable closes a log.
    pub fn wal_syncs(&self) -> u64 {
        self.ctx.engine.wal_syncs()
    }

    /// How many regions the store timer ticks now (those not resting).
    pub fn ticking_regions_len(&self) -> usize {
        self.ctx.ticking.lock().unwrap_or_else(PoisonError::into_inner).len()
    }

    pub fn stats(&self) -> &Arc<StoreStats> {
        &self.ctx.stats
    }

    /// The snapshot manager's counters: generated, sent, received, refused as busy.
    pub fn snapshot_stats(&self) -> crate::snapshot::SnapshotStats {
        self.ctx.snapshots.stats()
    }

    /// Fault injection for tests: every receive slot is taken until the returned hold
    /// drops, so snapshots sent to this store are refused as Busy meanwhile.
    pub fn hold_snapshot_receives(&self) -> crate::snapshot::ReceiveHold {
        self.ctx.snapshots.hold_receives()
    }

    /// Fault injection for tests: every later write of this store's engine fails.
    pub fn fail_writes(&self) {
        self.ctx.engine.fail_writes();
    }

    /// Fault injection for tests: the store timer skips every tick for `duration`, as a
    /// timer thread that gets no CPU would. The skipped ticks are lost, not delivered late.
    pub fn stall_timer(&self, duration: Duration) {
        *self.ctx.timer_stalled_until.lock().unwrap_or_else(PoisonError::into_inner) =
            Some(Instant::now() + duration);
    }

    /// Fault injection for tests: every apply round waits `delay` before its write, as a
    /// slow disk or a heavy batch would make it (`None` ends it). Entries then stay committed
    /// and unapplied for a while, which reads must wait out.
    pub fn slow_applies(&self, delay: Option<Duration>) {
        let delay_us = delay.map_or(0, |d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX));
        self.ctx.apply_delay_us.store(delay_us, std::sync::atomic::Ordering::Relaxed);
    }

    /// The raft pollers' counters (rounds, FSMs handled, messages handled).
    pub fn raft_batch_stats(&self) -> &crate::batch::BatchStats {
        self.raft_system.stats()
    }

    /// The apply pollers' counters.
    pub fn apply_batch_stats(&self) -> &crate::batch::BatchStats {
        self.apply_system.stats()
    }

    /// The reason the store stopped on its own, if it did.
    pub fn fatal_error(&self) -> Option<String> {
        self.ctx.fatal.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone()
    }

    /// Stops the timer and the pollers, then waits (bounded) for snapshot threads to let go
    /// of the engine, so that the data directory can be opened again at once.
    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        // `stop` and then `drop` both come here; only the first has a ticker to stop.
        let first_shutdown = self.ticker.is_some();
        if let Some((stop, handle)) = self.ticker.take() {
            drop(stop);
            let _ = handle.join();
        }
        // A poller that stopped the store on a failed write panicked on purpose; its panic
        // was the loud part, the shutdown of the others must not repeat it.
        let stopped_fatally = self.fatal_error().is_some();
        for result in [
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| self.raft_system.shutdown())),
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| self.apply_system.shutdown())),
        ] {
            if let Err(panic) = result {
                if !stopped_fatally {
                    std::panic::resume_unwind(panic);
                }
            }
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        while Arc::strong_count(&self.ctx) > 1 && Instant::now() < deadline {
            thread::sleep(Duration::from_millis(5));
        }
        if first_shutdown {
            tracing::info!(store_id = self.ctx.store_id, "store stopped");
        }
    }
}

impl Drop for Store {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// What the sender of a message its region's mailbox refused should hear: a full mailbox is
/// `ServerIsBusy` (counted), a missing or closed one `RegionNotFound`.
fn refusal(region_id: u64, e: &SendError<PeerMsg>) -> StoreError {
    match e {
        SendError::Full(_) => {
            server_is_busy(BusyCause::MailboxFull, format!("region {region_id}: mailbox is full"))
        }
        _ => StoreError::RegionNotFound(region_id),
    }
}

fn status_of(peer: &Peer) -> PeerStatus {
    let raft = peer.raw.raft();
    let storage = peer.raw.store();
    PeerStatus {
        region: peer.region.clone(),
        peer_id: peer.meta.id,
        leader_id: raft.leader_id(),
        term: raft.term(),
        is_leader: raft.role() == StateRole::Leader,
        commit_index: raft.raft_log().committed,
        applied_index: storage.apply_state().applied_index,
        first_index: storage.first_index().unwrap_or(0),
        last_index: storage.last_index().unwrap_or(0),
        initialized: peer.is_initialized(),
        hibernating: peer.hibernation.asleep,
        joint: raft.tracker().config.voters.is_joint(),
    }
}

/// Loads every live region from CF meta and registers its peer and apply FSM.
fn load_regions(ctx: &Arc<StoreContext>) -> Result<(), StartError> {
    let range = keys::region_meta_range();
    let mut records = Vec::new();
    ctx.engine.scan(CF_META, &range.start, &range.end, |key, value| {
        if let Some(region_id) = keys::decode_region_state_key(key) {
            let record = RegionLocalState::decode(value).map_err(|e| EngineError::Corrupt {
                cf: CF_META,
                key: key.to_vec(),
                reason: e.to_string(),
            })?;
            records.push((region_id, record));
        }
        Ok(true)
    })?;
    let mut cleanup = ctx.engine.write_batch();
    for (region_id, record) in records {
        if record.state == PeerState::Tombstone as i32 {
            continue;
        }
        let region = record.region.clone().unwrap_or_default();
        let Some(meta) = region.peers.iter().find(|p| p.store_id == ctx.store_id).cloned() else {
            if record.peer_id == 0 {
                return Err(StartError::Region {
                    region_id,
                    reason: "its record names no peer on this store".into(),
                });
            }
            // Removed by a membership change that was applied, but the process stopped
            // before the peer was destroyed: finish the destruction now.
            finish_destroy_at_load(&mut cleanup, region_id, &region, record.peer_id);
            continue;
        };
        let peer = Peer::new(&ctx.config, Arc::clone(&ctx.engine), region.clone(), meta)?;
        let apply_state = *peer.raw.store().apply_state();
        let applied_term = peer.raw.store().term(apply_state.applied_index).map_err(|e| {
            StartError::Region { region_id, reason: format!("no term for the applied index: {e}") }
        })?;
        // Entries below the truncated index left by a crash between a compaction's apply
        // and its deletion.
        let stale = keys::raft_log_range(region_id, 0, apply_state.truncated_index + 1);
        cleanup.delete_range(keys::CF_RAFT, &stale.start, &stale.end);
        let conf_state = record.conf_state.clone().unwrap_or_default();
        let apply = ApplyFsm::new(meta.id, region.clone(), conf_state, apply_state, applied_term);
        if ctx.apply_router.register(region_id, Box::new(apply)).is_err()
            || ctx.raft_router.register(region_id, Box::new(PeerFsm { peer })).is_err()
        {
            return Err(StartError::Region { region_id, reason: "registered twice".into() });
        }
        ctx.set_ticking(region_id, true);
        let mut meta_guard = ctx.meta();
        if !meta_guard.overlapping(&region, region_id).is_empty() {
            return Err(StartError::Region { region_id, reason: "its range overlaps another region".into() });
        }
        meta_guard.set_region(region);
    }
    // Synced: a tombstone written here must not be lost to a second crash.
    ctx.engine.write(cleanup, true)?;
    metrics::gauge!("tessera_store_regions").set(ctx.raft_router.len() as f64);
    // Wake every peer once, so that each starts ticking (elections, hibernation) without
    // waiting for traffic. Entries committed but not applied before the restart wait for
    // the leader's next message: the commit index that moves alone is not recorded.
    ctx.raft_router.broadcast_normal(|| PeerMsg::Tick { fired_at: None });
    Ok(())
}

/// Writes what destroying a removed peer writes (see `operation/destroy.rs`): its log and
/// states deleted, its data range cleared, and a tombstone naming the peer.
fn finish_destroy_at_load(
    batch: &mut crate::engine::WriteBatch,
    region_id: u64,
    region: &Region,
    peer_id: u64,
) {
    let log = keys::raft_log_range(region_id, 0, u64::MAX);
    batch.delete_range(keys::CF_RAFT, &log.start, &log.end);
    batch.delete(keys::CF_RAFT, &keys::raft_state_key(region_id));
    batch.delete(CF_META, &keys::apply_state_key(region_id));
    let data = keys::data_range(&region.start_key, &region.end_key);
    batch.delete_range(CF_DEFAULT, &data.start, &data.end);
    let tombstone = RegionLocalState {
        region: Some(region.clone()),
        state: PeerState::Tombstone as i32,
        conf_state: None,
        peer_id,
    };
    batch.put_msg(CF_META, &keys::region_state_key(region_id), &tombstone);
    metrics::counter!("tessera_store_peers_destroyed_total").increment(1);
}

/// The store timer: one thread that ticks every peer, instead of a timer per region.
fn start_ticker(ctx: &Arc<StoreContext>) -> std::io::Result<(Sender<()>, JoinHandle<()>)> {
    let (stop, stopped) = crossbeam_channel::bounded::<()>(0);
    let interval = ctx.config.raft_tick_interval;
    // The timer holds the store weakly, like the network: it must not keep it alive.
    let weak = Arc::downgrade(ctx);
    let handle = thread::Builder::new().name(format!("tick-{}", ctx.store_id)).spawn(move || {
        let ticker = crossbeam_channel::tick(interval);
        let mut regions = Vec::new();
        loop {
            crossbeam_channel::select! {
                recv(ticker) -> fired_at => {
                    // The time the tick was due, which the ticker hands out: ticks are at
                    // least an interval apart by it, however late this thread runs.
                    let fired_at = fired_at.ok();
                    let Some(ctx) = weak.upgrade() else { return };
                    let stalled_until = *ctx.timer_stalled_until.lock().unwrap_or_else(PoisonError::into_inner);
                    if stalled_until.is_some_and(|until| Instant::now() < until) {
                        continue;
                    }
                    // Only regions that are not resting: an idle store ticks nothing.
                    ctx.ticking_regions(&mut regions);
                    let mut full = 0;
                    for region_id in &regions {
                        // Quiet: a peer takes the ticks it would not act on with its next
                        // message (operation/quiet.rs).
                        match ctx.raft_router.send_quiet(*region_id, PeerMsg::Tick { fired_at }) {
                            Ok(()) => {}
                            Err(SendError::Full(_)) => full += 1,
                            // Destroyed since: it no longer needs ticks.
                            Err(_) => ctx.set_ticking(*region_id, false),
                        }
                    }
                    // A full control mailbox skips one store tick; the next one comes.
                    let _ = ctx.raft_router.send_control(StoreMsg::Tick);
                    if full > 0 {
                        metrics::counter!("tessera_store_ticks_missed_total").increment(full as u64);
                    }
                }
                recv(stopped) -> _ => return,
            }
        }
    })?;
    Ok((stop, handle))
}

/// A received message that its region's mailbox did not take: for a region without a peer
/// here it goes to the control FSM (which may create one); a full mailbox drops it (Raft
/// retries, memory stays bounded).
fn on_refused_delivery(ctx: &StoreContext, refused: SendError<PeerMsg>) {
    match refused {
        SendError::UnknownAddress(PeerMsg::Raft(msg)) => {
            let _ = ctx.raft_router.send_control(StoreMsg::Raft(msg));
        }
        e => {
            metrics::counter!("tessera_store_messages_dropped_total").increment(1);
            if let PeerMsg::Raft(msg) = e.into_message() {
                crate::operation::discard_snapshot_file(ctx, &msg);
            }
        }
    }
}

/// The network's way into a store.
struct StoreReceiver {
    ctx: Weak<StoreContext>,
}

impl RaftReceiver for StoreReceiver {
    fn receive(&self, msg: RaftMessage) {
        let Some(ctx) = self.ctx.upgrade() else { return };
        if ctx.is_stopped() {
            return;
        }
        let region_id = msg.region_id;
        if let Err(refused) = ctx.raft_router.send(region_id, PeerMsg::Raft(Box::new(msg))) {
            on_refused_delivery(&ctx, refused);
        }
    }

    /// Routes a whole batch under one look-up of the mailboxes.
    fn receive_batch(&self, msgs: Vec<RaftMessage>) {
        let Some(ctx) = self.ctx.upgrade() else { return };
        if ctx.is_stopped() {
            return;
        }
        let routed = msgs.into_iter().map(|msg| (msg.region_id, PeerMsg::Raft(Box::new(msg))));
        ctx.raft_router.send_all(routed, |refused| on_refused_delivery(&ctx, refused));
    }

    fn receive_snapshot(&self, msg: RaftMessage, chunks: &mut dyn SnapshotChunks) -> Result<(), String> {
        let ctx = self.ctx.upgrade().ok_or_else(|| "store stopped".to_string())?;
        ctx.snapshots.receive(&msg, chunks).map_err(|e| e.to_string())?;
        drop(ctx);
        self.receive(msg);
        Ok(())
    }
}
