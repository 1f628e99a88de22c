//! Destroying a removed peer: its apply FSM stops first (so that no apply write can land
//! after the tombstone), then one write deletes its data, log and states and leaves a
//! tombstone record, so that a late message cannot bring the peer back.

use tessera_proto::storepb::{PeerState, RegionLocalState};

use super::PollContext;
use crate::context::StoreStats;
use crate::error::StoreError;
use crate::keys::{self, CF_DEFAULT, CF_META};
use crate::msg::ApplyMsg;
use crate::peer::{Life, Peer};

impl Peer {
    pub(crate) fn start_destroy(&mut self, ctx: &mut PollContext<'_>) {
        if self.life != Life::Alive {
            return;
        }
        if ctx.store.apply_router.force_send(self.region_id, ApplyMsg::Destroy).is_err() {
            // A forced send ignores the mailbox's length: it fails only when the apply FSM is
            // gone, which it is not while the peer is alive (it stops on `Destroy` alone).
            return;
        }
        self.life = Life::Destroying;
        if let Some(deferred) = self.deferred_snapshot.take() {
            super::discard_snapshot_file(ctx.store, &deferred);
        }
        for proposal in self.proposals.drain(..) {
            proposal.callback.invoke(Err(StoreError::RegionNotFound(self.region_id)));
        }
        self.drop_reads();
        for task in self.apply_backlog.drain(..) {
            for proposal in task.proposals {
                proposal.callback.invoke(Err(StoreError::RegionNotFound(self.region_id)));
            }
        }
    }

    /// The apply FSM stopped: write the destruction into the round's batch.
    pub(crate) fn on_apply_stopped(&mut self, ctx: &mut PollContext<'_>) {
        if self.life != Life::Destroying {
            return;
        }
        let initialized = self.is_initialized();
        self.raw.store_mut().clear(ctx.batch);
        if initialized {
            let data = keys::data_range(&self.region.start_key, &self.region.end_key);
            ctx.batch.delete_range(CF_DEFAULT, &data.start, &data.end);
        }
        let tombstone = RegionLocalState {
            region: Some(self.region.clone()),
            state: PeerState::Tombstone as i32,
            conf_state: None,
            peer_id: self.meta.id,
        };
        ctx.batch.put_msg(CF_META, &keys::region_state_key(self.region_id), &tombstone);
        self.round.wrote = true;
        self.life = Life::Destroyed;
    }

    /// After the destruction is durable: forget the region and close the mailboxes.
    pub(crate) fn finish_destroy(&mut self, ctx: &mut PollContext<'_>) {
        ctx.store.meta().remove(self.region_id);
        ctx.store.apply_router.close(self.region_id);
        ctx.store.raft_router.close(self.region_id);
        StoreStats::add(&ctx.store.stats.peers_destroyed, 1);
        metrics::counter!("tessera_store_peers_destroyed_total").increment(1);
        tracing::info!(
            store_id = ctx.store.store_id,
            region_id = self.region_id,
            peer_id = self.meta.id,
            "peer destroyed"
        );
    }
}
