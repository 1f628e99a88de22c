//! The raft side of the batch system: the FSM types (which only dispatch) and the raft
//! poller, whose round ends with one write and one fsync for every peer it handled.

use std::sync::Arc;
use std::time::Instant;

use crate::batch::{Fsm, HandleResult, Inbox, PollHandler};
use crate::context::{StoreContext, StoreStats};
use crate::crash_point::{self, crash_if_armed};
use crate::engine::WriteBatch;
use crate::msg::{PeerMsg, StoreMsg};
use crate::operation::PollContext;
use crate::peer::Peer;
use crate::store_fsm::StoreFsmState;

/// A peer behind its mailbox.
#[derive(Debug)]
pub(crate) struct PeerFsm {
    pub peer: Peer,
}

impl Fsm for PeerFsm {
    type Message = PeerMsg;

    fn is_stopped(&self) -> bool {
        // Closed by `finish_destroy` once its destruction is durable.
        false
    }

    /// Quiet messages (ticks the peer would not act on, apply reports of nothing but the
    /// applied index) wait for the peer's next message; see `Peer::quiet_messages_held_max`.
    fn quiet_messages_held_max(&self) -> usize {
        self.peer.quiet_messages_held_max()
    }
}

/// The store's control FSM.
#[derive(Debug, Default)]
pub(crate) struct StoreFsm {
    pub state: StoreFsmState,
}

impl Fsm for StoreFsm {
    type Message = StoreMsg;
}

pub(crate) struct RaftPoller {
    ctx: Arc<StoreContext>,
    batch: WriteBatch,
    ticks_of_round: usize,
}

impl RaftPoller {
    pub fn new(ctx: Arc<StoreContext>) -> Self {
        let batch = ctx.engine.write_batch();
        RaftPoller { ctx, batch, ticks_of_round: 0 }
    }
}

impl PollHandler<PeerFsm, StoreFsm> for RaftPoller {
    fn begin(&mut self, _fsms_len: usize) {
        self.ticks_of_round = 0;
    }

    fn handle_control(&mut self, control: &mut StoreFsm, inbox: &mut Inbox<'_, StoreMsg>) -> HandleResult {
        for msg in inbox {
            if self.ctx.is_stopped() {
                continue;
            }
            match msg {
                StoreMsg::Raft(msg) => control.state.on_unknown_region_message(&self.ctx, msg),
                StoreMsg::Tick => control.state.on_tick(&self.ctx),
            }
        }
        HandleResult::Release
    }

    fn handle_normal(&mut self, fsm: &mut PeerFsm, inbox: &mut Inbox<'_, PeerMsg>) -> HandleResult {
        let peer = &mut fsm.peer;
        let mut ctx = PollContext { store: &self.ctx, batch: &mut self.batch };
        for msg in inbox {
            if self.ctx.is_stopped() {
                // After a fatal error nothing is stepped or answered but refusals.
                msg.refuse(crate::error::StoreError::StoreStopped);
                continue;
            }
            match msg {
                PeerMsg::Raft(msg) => peer.on_raft_message(&mut ctx, msg),
                PeerMsg::Command { request, callback } => {
                    peer.wake(&mut ctx);
                    peer.propose(&mut ctx, *request, callback)
                }
                PeerMsg::Tick { fired_at } => peer.on_tick(&mut ctx, fired_at),
                PeerMsg::Applied(result) => peer.on_applied(&mut ctx, *result),
                PeerMsg::SnapshotGenerated(result) => peer.on_snapshot_generated(&mut ctx, *result),
                PeerMsg::SnapshotSent { to_peer_id, succeeded } => {
                    peer.on_snapshot_sent(to_peer_id, succeeded)
                }
                PeerMsg::ApplyStopped => peer.on_apply_stopped(&mut ctx),
                PeerMsg::Campaign => {
                    peer.wake(&mut ctx);
                    peer.campaign()
                }
                PeerMsg::TransferLeader { to_peer_id } => {
                    peer.wake(&mut ctx);
                    peer.transfer_leader(to_peer_id)
                }
                PeerMsg::Query(query) => (query.0)(peer),
                PeerMsg::Read { request, callback } => {
                    peer.wake(&mut ctx);
                    peer.read(&mut ctx, *request, callback)
                }
                PeerMsg::StoreDown(store_id) => peer.on_store_down(&mut ctx, store_id),
                PeerMsg::CheckMembershipAtRest => {
                    let _ = peer.maybe_check_membership_at_rest(&mut ctx);
                }
            }
        }
        if !self.ctx.is_stopped() {
            peer.collect_ready(&mut ctx);
        }
        HandleResult::Release
    }

    fn end(&mut self, fsms: &mut [Box<PeerFsm>], results: &mut [HandleResult]) {
        if self.ctx.is_stopped() {
            return;
        }
        // Messages that do not wait for this store's disk leave first, so followers write
        // in parallel with the leader.
        self.ctx.transport.flush();
        // Every write of a raft round must be durable before the round's completions leave
        // (a commit index alone is not written at all; see `Peer::persist_append`).
        let synced = !self.batch.is_empty();
        if synced {
            let installs_snapshot = || fsms.iter().any(|f| f.peer.round.installed_snapshot.is_some());
            crash_if_armed(crash_point::SNAPSHOT_INSTALL_BEFORE_WRITE, self.ctx.store_id, installs_snapshot);
            let started = Instant::now();
            let batch_bytes = self.batch.bytes();
            let batch = std::mem::replace(&mut self.batch, self.ctx.engine.write_batch());
            if let Err(e) = self.ctx.engine.write(batch, true) {
                self.ctx.stop_fatally(format!("raft write failed: {e}"));
            }
            crash_if_armed(crash_point::SNAPSHOT_INSTALL_AFTER_WRITE, self.ctx.store_id, installs_snapshot);
            let stats = &self.ctx.stats;
            StoreStats::add(&stats.synced_writes, 1);
            let peers_written = fsms.iter().filter(|f| f.peer.round.wrote).count() as u64;
            StoreStats::add(&stats.peers_written, peers_written);
            metrics::counter!("tessera_store_raft_synced_writes_total").increment(1);
            metrics::histogram!("tessera_store_raft_write_duration_seconds").record(started.elapsed());
            metrics::histogram!("tessera_store_raft_write_batch_bytes").record(batch_bytes as f64);
            metrics::histogram!("tessera_store_raft_peers_per_write").record(peers_written as f64);
        }
        metrics::histogram!("tessera_store_raft_peers_per_round").record(fsms.len() as f64);
        let mut ctx = PollContext { store: &self.ctx, batch: &mut self.batch };
        for (fsm, result) in fsms.iter_mut().zip(results.iter_mut()) {
            let peer = &mut fsm.peer;
            // Invariant 3: completions that promise durability (they wait in the peer's
            // round) leave only after the write that made them true was synced.
            assert!(
                synced || !peer.round.needs_sync,
                "invariant: region {} delivers persistence completions without a synced write",
                peer.region_id
            );
            peer.finish_round(&mut ctx);
            if peer.needs_another_round() {
                *result = HandleResult::Reschedule;
            }
        }
        self.ctx.transport.flush();
    }
}
