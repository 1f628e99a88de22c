//! Messages between this peer and the other replicas of its region.

use prost::Message as _;
use tessera_proto::raftpb::{Message, MessageType};
use tessera_proto::serverpb::{RaftMessage, SnapshotDescriptor};
use tessera_proto::storepb::RegionEpoch;

use super::PollContext;
use crate::context::StoreStats;
use crate::peer::{Life, Peer};

/// Whether `theirs` is an older epoch than `ours` in membership (the only part this store
/// changes until split and merge arrive).
pub(crate) fn is_conf_stale(theirs: &Option<RegionEpoch>, ours: &Option<RegionEpoch>) -> bool {
    theirs.unwrap_or_default().conf_ver < ours.unwrap_or_default().conf_ver
}

impl Peer {
    /// Wraps a core message with its routing and sends it (or, for a snapshot, hands it
    /// to a snapshot thread).
    pub(crate) fn send_raft_message(&mut self, ctx: &mut PollContext<'_>, message: Message) {
        let to = message.to;
        let Some(to_peer) = self.peer_cache.get(&to).cloned() else {
            // A peer we have never heard of and that is not in the region: nowhere to send.
            StoreStats::add(&ctx.store.stats.messages_unsent, 1);
            return;
        };
        let is_snapshot = message.msg_type == MessageType::MsgSnapshot as i32;
        let msg = RaftMessage {
            region_id: self.region_id,
            from_peer: Some(self.meta.clone()),
            to_peer: Some(to_peer),
            message: Some(message),
            region_epoch: self.region.epoch,
            start_key: self.region.start_key.clone(),
            end_key: self.region.end_key.clone(),
            is_tombstone: false,
        };
        if is_snapshot {
            self.send_snapshot(ctx, msg);
            return;
        }
        match ctx.store.transport.send(msg) {
            Ok(()) => {
                StoreStats::add(&ctx.store.stats.messages_sent, 1);
                metrics::counter!("tessera_store_raft_messages_sent_total").increment(1);
            }
            Err(_) => {
                StoreStats::add(&ctx.store.stats.messages_unsent, 1);
                metrics::counter!("tessera_store_raft_messages_unreachable_total").increment(1);
                self.raw.report_unreachable(to);
            }
        }
    }

    /// Handles a message from another replica of the region.
    pub(crate) fn on_raft_message(&mut self, ctx: &mut PollContext<'_>, msg: Box<RaftMessage>) {
        if self.life != Life::Alive {
            return;
        }
        let (Some(from_peer), Some(to_peer)) = (msg.from_peer.clone(), msg.to_peer.as_ref()) else {
            return;
        };
        if to_peer.id != self.meta.id {
            // Meant for another replica of this region on this store: a newer one if its id
            // is higher (peer ids only grow), in which case this one was removed.
            if to_peer.id > self.meta.id && !is_conf_stale(&msg.region_epoch, &self.region.epoch) {
                self.start_destroy(ctx, "a newer peer of the region is addressed on this store");
            }
            return;
        }
        if msg.is_tombstone {
            // A current member says we are out. Only trust a newer membership than ours.
            let ours = self.region.epoch.unwrap_or_default().conf_ver;
            if !self.is_initialized() || msg.region_epoch.unwrap_or_default().conf_ver > ours {
                self.start_destroy(ctx, "told it was removed from the region");
            }
            return;
        }
        let from_is_member = self.region.peers.iter().any(|p| p.id == from_peer.id);
        if self.is_initialized() && !from_is_member && is_conf_stale(&msg.region_epoch, &self.region.epoch) {
            // A peer removed from the region (it does not know yet): tell it, so that it
            // destroys itself instead of campaigning forever.
            self.send_tombstone(ctx, from_peer);
            return;
        }
        self.peer_cache.insert(from_peer.id, from_peer);
        let Some(message) = msg.message.as_ref() else { return };
        if message.msg_type == MessageType::MsgSnapshot as i32 {
            if self.apply_tasks_in_flight > 0 || !self.apply_backlog.is_empty() {
                // Installing moves the apply state; wait until the apply FSM is idle. A newer
                // snapshot replaces one already waiting, whose file is no longer needed.
                if let Some(replaced) = self.deferred_snapshot.replace(msg) {
                    if let Some(snapshot) = replaced.message.as_ref().and_then(|m| m.snapshot.as_deref()) {
                        let _ = ctx.store.snapshots.remove_received(snapshot);
                    }
                }
                return;
            }
            if !self.accepts_snapshot(ctx, &msg) {
                return;
            }
        }
        let msg = *msg;
        let Some(message) = msg.message else { return };
        // Errors here are messages the core refuses on purpose (a response from a peer that
        // is no longer in the configuration, say); they carry nothing to act on.
        if self.raw.step(message).is_err() {
            metrics::counter!("tessera_store_messages_refused_total").increment(1);
        }
    }

    /// Checks a snapshot before the core sees it: its data arrived, it is for this region,
    /// and its range overlaps no other region on this store (LESSONS.md #17).
    fn accepts_snapshot(&self, ctx: &PollContext<'_>, msg: &RaftMessage) -> bool {
        let Some(snapshot) = msg.message.as_ref().and_then(|m| m.snapshot.as_ref()) else { return false };
        let Ok(descriptor) = SnapshotDescriptor::decode(snapshot.data.clone()) else { return false };
        let Some(region) = descriptor.region.as_ref() else { return false };
        if region.id != self.region_id || !ctx.store.snapshots.has_received(snapshot) {
            return false;
        }
        let overlapping = ctx.store.meta().overlapping(region, self.region_id);
        if !overlapping.is_empty() {
            metrics::counter!("tessera_store_snapshots_refused_total").increment(1);
            let _ = ctx.store.snapshots.remove_received(snapshot);
            return false;
        }
        true
    }

    fn send_tombstone(&mut self, ctx: &mut PollContext<'_>, to_peer: tessera_proto::storepb::Peer) {
        let msg = RaftMessage {
            region_id: self.region_id,
            from_peer: Some(self.meta.clone()),
            to_peer: Some(to_peer),
            message: None,
            region_epoch: self.region.epoch,
            start_key: self.region.start_key.clone(),
            end_key: self.region.end_key.clone(),
            is_tombstone: true,
        };
        let _ = ctx.store.transport.send(msg);
    }
}
