//! Messages between this peer and the other replicas of its region.

use prost::Message as _;
use tessera_proto::raftpb::{Message, MessageType, Snapshot};
use tessera_proto::serverpb::{ExtraMessage, ExtraMessageType, RaftMessage, SnapshotDescriptor};
use tessera_proto::storepb::RegionEpoch;

use super::PollContext;
use crate::context::StoreStats;
use crate::peer::{Life, Peer};

/// Whether `theirs` is an older epoch than `ours` in membership (the only part this store
/// changes until split and merge arrive).
pub(crate) fn is_conf_stale(theirs: &Option<RegionEpoch>, ours: &Option<RegionEpoch>) -> bool {
    theirs.unwrap_or_default().conf_ver < ours.unwrap_or_default().conf_ver
}

/// The Raft message types one peer may send another. Everything else (local messages,
/// proposals, which a store takes from clients only, and reads, which the store does not
/// issue yet) is refused at the door, so that a malformed or hostile message cannot
/// reach the core's internal paths.
fn is_peer_message_type(msg_type: i32) -> bool {
    use MessageType::*;
    [
        MsgAppend,
        MsgAppendResponse,
        MsgRequestVote,
        MsgRequestVoteResponse,
        MsgRequestPreVote,
        MsgRequestPreVoteResponse,
        MsgSnapshot,
        MsgHeartbeat,
        MsgHeartbeatResponse,
        MsgTransferLeader,
        MsgTimeoutNow,
    ]
    .iter()
    .any(|t| *t as i32 == msg_type)
}

/// Whether the Raft message inside `msg` agrees with its envelope: it comes from the peer
/// the envelope names, to this peer, and it is a message peers exchange.
fn is_well_formed(msg: &RaftMessage, message: &Message, my_id: u64) -> bool {
    let from = msg.from_peer.as_ref().map_or(0, |p| p.id);
    from != 0
        && from != my_id
        && !tessera_raft::raft::is_local_thread(from)
        && message.from == from
        && message.to == my_id
        && is_peer_message_type(message.msg_type)
}

/// Removes the received data file of a snapshot message that will not be installed
/// (LESSONS.md #24: a refused snapshot must not leave its file behind).
pub(crate) fn discard_snapshot_file(store: &crate::context::StoreContext, msg: &RaftMessage) {
    if let Some(snapshot) = snapshot_of(msg) {
        let _ = store.snapshots.remove_received(snapshot);
    }
}

/// The snapshot a message carries, if any.
pub(crate) fn snapshot_of(msg: &RaftMessage) -> Option<&Snapshot> {
    msg.message.as_ref().and_then(|m| m.snapshot.as_deref())
}

/// Keeps `msg` as the snapshot that waits for the apply FSM, in place of any older one, and
/// returns the replaced message if its file is no longer needed: not when both name the
/// same received file, which the waiting message needs.
fn defer_snapshot(
    deferred: &mut Option<Box<RaftMessage>>,
    msg: Box<RaftMessage>,
) -> Option<Box<RaftMessage>> {
    let replaced = deferred.replace(msg)?;
    let file_of = |msg: &RaftMessage| snapshot_of(msg).and_then(crate::snapshot::file_id);
    let same_file = file_of(&replaced) == deferred.as_deref().and_then(file_of);
    (!same_file).then_some(replaced)
}

/// Whether a message of this type carries its region's range: the messages that may create
/// a peer on their receiver, heartbeats aside (they travel as compact records and create
/// peers without it). The sender fills the range in by this rule, and the receiver reads it
/// by the same rule: an empty range on these messages means the whole key space.
pub(crate) fn carries_range(msg_type: MessageType) -> bool {
    matches!(
        msg_type,
        MessageType::MsgAppend
            | MessageType::MsgSnapshot
            | MessageType::MsgRequestVote
            | MessageType::MsgRequestPreVote
    )
}

/// Whether a message may create a peer on a store that has none for its region: only a
/// leader's (appends, heartbeats, snapshots) or a candidate's (vote requests) may, never a
/// response.
pub(crate) fn may_create_peer(msg_type: MessageType) -> bool {
    carries_range(msg_type) || msg_type == MessageType::MsgHeartbeat
}

impl Peer {
    /// Wraps a core message with its routing and sends it (or, for a snapshot, hands it
    /// to a snapshot thread).
    pub(crate) fn send_raft_message(&mut self, ctx: &mut PollContext<'_>, message: Message) {
        let to = message.to;
        let Some(to_peer) = self.peer_cache.get(to) else {
            // A peer we have never heard of and that is not in the region: nowhere to send.
            StoreStats::add(&ctx.store.stats.messages_unsent, 1);
            return;
        };
        let is_snapshot = message.msg_type == MessageType::MsgSnapshot as i32;
        // Responses, half of the traffic, would copy two keys each for nothing.
        let (start_key, end_key) = if carries_range(message.msg_type()) {
            // An uninitialized peer knows no range, and an empty one would claim every key;
            // it never leads nor stands for election, so it never sends these.
            debug_assert!(
                self.is_initialized(),
                "region {}: a range-carrying message from an uninitialized peer",
                self.region_id
            );
            (self.region.start_key.clone(), self.region.end_key.clone())
        } else {
            (Vec::new(), Vec::new())
        };
        // Heartbeats carrying a read's round (or answering one) must not wait for the tick.
        let urgent = match message.msg_type() {
            MessageType::MsgHeartbeat => self.reads.awaiting_index(),
            MessageType::MsgHeartbeatResponse => self.round.urgent_heartbeat_received,
            _ => false,
        };
        let msg = RaftMessage {
            region_id: self.region_id,
            from_peer: Some(self.meta),
            to_peer: Some(to_peer),
            message: Some(message),
            urgent,
            region_epoch: self.region.epoch,
            start_key,
            end_key,
            is_tombstone: false,
            extra: None,
        };
        if is_snapshot {
            self.send_snapshot(ctx, msg);
            return;
        }
        if !send_counted(ctx, msg) {
            self.raw.report_unreachable(to);
        }
    }

    /// Handles a message from another replica of the region. A snapshot message that is
    /// not stepped (or kept for later) has its received file discarded.
    pub(crate) fn on_raft_message(&mut self, ctx: &mut PollContext<'_>, msg: Box<RaftMessage>) {
        if let Some(refused) = self.try_step_raft_message(ctx, msg) {
            discard_snapshot_file(ctx.store, &refused);
        }
    }

    /// Steps the message if it passes every check, or keeps a snapshot for later; gives the
    /// message back if it did neither.
    fn try_step_raft_message(
        &mut self,
        ctx: &mut PollContext<'_>,
        msg: Box<RaftMessage>,
    ) -> Option<Box<RaftMessage>> {
        if self.life != Life::Alive {
            return Some(msg);
        }
        let (Some(from_peer), Some(to_peer)) = (msg.from_peer, msg.to_peer.as_ref()) else {
            return Some(msg);
        };
        if to_peer.id != self.meta.id {
            // Meant for another replica of this region on this store: a newer one if its id
            // is higher (peer ids only grow) and the membership that names it is newer than
            // ours, in which case this one was removed.
            let theirs = msg.region_epoch.unwrap_or_default().conf_ver;
            if to_peer.id > self.meta.id && theirs > self.region.epoch.unwrap_or_default().conf_ver {
                self.start_destroy(ctx);
            }
            return Some(msg);
        }
        if msg.is_tombstone {
            // A member says we are out. Initialized, trust only a membership newer than ours.
            // Uninitialized, trust one at least as new as any that wrote to us: a conf_ver
            // names one membership, and the tombstone's sender shows that it leaves us out;
            // we may have heard that very conf_ver, on a message queued for us before our
            // removal applied and stamped when it left. A sender whose membership a power
            // loss took back (an unsynced apply) sits below what we heard.
            let theirs = msg.region_epoch.unwrap_or_default().conf_ver;
            let trusted = if self.is_initialized() {
                theirs > self.region.epoch.unwrap_or_default().conf_ver
            } else {
                theirs >= self.conf_ver_heard
            };
            if trusted {
                self.start_destroy(ctx);
            }
            return Some(msg);
        }
        let from_is_member = self.region.peers.iter().any(|p| p.id == from_peer.id);
        if self.is_initialized() && !from_is_member && is_conf_stale(&msg.region_epoch, &self.region.epoch) {
            // A peer removed from the region (it does not know yet): tell it, so that it
            // destroys itself instead of campaigning forever.
            self.send_tombstone(ctx, from_peer);
            return Some(msg);
        }
        if let Some(extra) = msg.extra {
            if msg.message.is_some() || from_peer.id == 0 || from_peer.id == self.meta.id {
                metrics::counter!("tessera_store_messages_malformed_total").increment(1);
                return Some(msg);
            }
            self.on_extra_message(ctx, from_peer, extra);
            return None;
        }
        let well_formed = msg.message.as_ref().is_some_and(|m| is_well_formed(&msg, m, self.meta.id));
        if !well_formed {
            metrics::counter!("tessera_store_messages_malformed_total").increment(1);
            return Some(msg);
        }
        self.peer_cache.learn(from_peer);
        if !self.is_initialized() {
            self.conf_ver_heard = self.conf_ver_heard.max(msg.region_epoch.unwrap_or_default().conf_ver);
        }
        let is_snapshot = msg.message.as_ref().is_some_and(|m| m.msg_type == MessageType::MsgSnapshot as i32);
        if is_snapshot {
            if self.apply_tasks_in_flight > 0 || !self.apply_backlog.is_empty() {
                // Installing moves the apply state; wait until the apply FSM is idle. A newer
                // snapshot replaces one already waiting, whose file is no longer needed.
                return defer_snapshot(&mut self.deferred_snapshot, msg);
            }
            if !self.accepts_snapshot(ctx, &msg) {
                return Some(msg);
            }
            self.snapshot_stepped = snapshot_of(&msg).cloned();
        }
        if msg.urgent {
            self.round.urgent_heartbeat_received = true;
        }
        let message = msg.message.expect("checked by is_well_formed");
        if self.hibernation.asleep && self.message_wakes(&message) {
            self.wake(ctx);
        }
        // Errors here are messages the core refuses on purpose (a response from a peer that
        // is no longer in the configuration, say); they carry nothing to act on.
        if self.raw.step(message).is_err() {
            metrics::counter!("tessera_store_messages_refused_total").increment(1);
        }
        None
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
            return false;
        }
        true
    }

    pub(crate) fn send_extra(
        &mut self,
        ctx: &mut PollContext<'_>,
        to: u64,
        extra_type: ExtraMessageType,
        term: u64,
        index: u64,
    ) {
        let Some(to_peer) = self.peer_cache.get(to) else { return };
        let msg = RaftMessage {
            region_id: self.region_id,
            from_peer: Some(self.meta),
            to_peer: Some(to_peer),
            region_epoch: self.region.epoch,
            extra: Some(ExtraMessage { extra_type: extra_type as i32, term, index }),
            ..Default::default()
        };
        send_counted(ctx, msg);
    }

    pub(crate) fn send_tombstone(
        &mut self,
        ctx: &mut PollContext<'_>,
        to_peer: tessera_proto::storepb::Peer,
    ) {
        let msg = RaftMessage {
            region_id: self.region_id,
            from_peer: Some(self.meta),
            to_peer: Some(to_peer),
            message: None,
            region_epoch: self.region.epoch,
            // A tombstone never creates a peer, so it carries no range.
            start_key: Vec::new(),
            end_key: Vec::new(),
            is_tombstone: true,
            extra: None,
            urgent: false,
        };
        send_counted(ctx, msg);
    }
}

/// Hands `msg` to the transport and counts it, in the store's stats and its metrics, as
/// sent or as refused (the destination store is unreachable or its queue is full). Every
/// message a peer sends but snapshots (which a snapshot thread streams) goes through here.
/// Returns whether it was sent.
fn send_counted(ctx: &PollContext<'_>, msg: RaftMessage) -> bool {
    match ctx.store.transport.send(msg) {
        Ok(()) => {
            StoreStats::add(&ctx.store.stats.messages_sent, 1);
            metrics::counter!("tessera_store_raft_messages_sent_total").increment(1);
            true
        }
        Err(_) => {
            StoreStats::add(&ctx.store.stats.messages_unsent, 1);
            metrics::counter!("tessera_store_raft_messages_unreachable_total").increment(1);
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use tessera_proto::raftpb::SnapshotMetadata;

    use super::*;

    /// A snapshot message of region 1 at `index`, whose descriptor says `kvs_len` records.
    fn snapshot_message_of(index: u64, kvs_len: u64) -> Box<RaftMessage> {
        let region = tessera_proto::storepb::Region { id: 1, ..Default::default() };
        let descriptor =
            SnapshotDescriptor { region: Some(region), data_bytes: 8, kvs_len, ..Default::default() };
        let snapshot = Snapshot {
            metadata: Some(SnapshotMetadata { index, term: 6, ..Default::default() }.into()),
            data: descriptor.encode_to_vec().into(),
        };
        let message = Message {
            msg_type: MessageType::MsgSnapshot as i32,
            snapshot: Some(snapshot.into()),
            ..Default::default()
        };
        Box::new(RaftMessage { region_id: 1, message: Some(message), ..Default::default() })
    }

    fn snapshot_message(index: u64) -> Box<RaftMessage> {
        snapshot_message_of(index, 0)
    }

    /// A newer snapshot waits in place of an older one, whose file goes; the same snapshot
    /// sent again waits in place of itself, and its one file stays.
    #[test]
    fn a_deferred_snapshot_gives_up_its_file_only_to_another_snapshot() {
        let mut deferred = None;
        assert!(defer_snapshot(&mut deferred, snapshot_message(10)).is_none());
        let replaced =
            defer_snapshot(&mut deferred, snapshot_message(20)).expect("the older one's file goes");
        assert_eq!(snapshot_of(&replaced).and_then(|s| s.metadata.as_ref()).map(|m| m.index), Some(10));
        assert!(
            defer_snapshot(&mut deferred, snapshot_message(20)).is_none(),
            "the same snapshot keeps its file"
        );
        // Another encoding of the same snapshot names the same file.
        let reencoded = snapshot_message_of(20, 7);
        assert!(defer_snapshot(&mut deferred, reencoded).is_none(), "the file is named by index and term");
        assert_eq!(
            deferred.as_deref().and_then(snapshot_of).and_then(|s| s.metadata.as_ref()).map(|m| m.index),
            Some(20)
        );
    }
}
