//! Heartbeat coalescing: the heartbeats and heartbeat responses of every region between two
//! stores travel as compact records inside the one batch those stores exchange per round,
//! and the receiving side turns them back into ordinary messages for its peers. Idle
//! regions then cost one batch per store pair and tick, not one message per region.

use tessera_proto::raftpb::{Message, MessageType};
use tessera_proto::serverpb::{HeartbeatRecord, RaftMessage, RaftMessageBatch};
use tessera_proto::storepb::Peer;

/// The record that carries `msg` inside a batch, if it is a heartbeat or a heartbeat
/// response between peers whose stores the batch connects. Anything else (another type, a
/// tombstone, an urgent heartbeat that a read waits for, routing that disagrees with the
/// batch) travels as a whole message.
pub fn heartbeat_record(msg: &RaftMessage, from_store_id: u64, to_store_id: u64) -> Option<HeartbeatRecord> {
    let message = msg.message.as_ref()?;
    let is_response = match MessageType::try_from(message.msg_type).ok()? {
        MessageType::MsgHeartbeat => false,
        MessageType::MsgHeartbeatResponse => true,
        _ => return None,
    };
    let (from_peer, to_peer) = (msg.from_peer.as_ref()?, msg.to_peer.as_ref()?);
    let routed_as_batch = from_peer.store_id == from_store_id && to_peer.store_id == to_store_id;
    let consistent = message.from == from_peer.id && message.to == to_peer.id;
    // Fields a record cannot carry must be empty, so that expanding it gives back exactly
    // the message that went in.
    let only_record_fields = !msg.is_tombstone
        && !msg.urgent
        && msg.start_key.is_empty()
        && msg.end_key.is_empty()
        && *message
            == Message {
                msg_type: message.msg_type,
                to: message.to,
                from: message.from,
                term: message.term,
                commit: message.commit,
                context: message.context.clone(),
                ..Default::default()
            };
    if !(routed_as_batch && consistent && only_record_fields) {
        return None;
    }
    Some(HeartbeatRecord {
        region_id: msg.region_id,
        from_peer_id: from_peer.id,
        to_peer_id: to_peer.id,
        term: message.term,
        commit: message.commit,
        context: message.context.clone(),
        is_response,
        region_epoch: msg.region_epoch,
        from_role: from_peer.role,
        to_role: to_peer.role,
    })
}

/// The message a record stands for, between peers on the batch's two stores.
pub fn expand_record(record: HeartbeatRecord, from_store_id: u64, to_store_id: u64) -> RaftMessage {
    let msg_type =
        if record.is_response { MessageType::MsgHeartbeatResponse } else { MessageType::MsgHeartbeat };
    // Roles only help a receiver that does not know the region yet; it learns the real
    // ones from the region. An unknown value is passed on as it came.
    let (from_role, to_role) = (record.from_role, record.to_role);
    RaftMessage {
        region_id: record.region_id,
        from_peer: Some(Peer { id: record.from_peer_id, store_id: from_store_id, role: from_role }),
        to_peer: Some(Peer { id: record.to_peer_id, store_id: to_store_id, role: to_role }),
        message: Some(Message {
            msg_type: msg_type as i32,
            to: record.to_peer_id,
            from: record.from_peer_id,
            term: record.term,
            commit: record.commit,
            context: record.context,
            ..Default::default()
        }),
        region_epoch: record.region_epoch,
        ..Default::default()
    }
}

/// Every message a received batch carries, its heartbeat records expanded, in the order
/// whole messages first, then heartbeats (Raft does not depend on the order of messages
/// of different regions, and within a region heartbeats commute with appends).
pub fn expand_batch(batch: RaftMessageBatch) -> Vec<RaftMessage> {
    let RaftMessageBatch { mut messages, from_store_id, to_store_id, heartbeats } = batch;
    messages.reserve(heartbeats.len());
    messages.extend(heartbeats.into_iter().map(|record| expand_record(record, from_store_id, to_store_id)));
    messages
}

#[cfg(test)]
mod tests {
    use super::*;
    use tessera_proto::storepb::PeerRole;

    fn heartbeat(msg_type: MessageType, role: PeerRole) -> RaftMessage {
        RaftMessage {
            region_id: 7,
            from_peer: Some(Peer { id: 71, store_id: 1, role: role as i32 }),
            to_peer: Some(Peer { id: 72, store_id: 2, role: PeerRole::Learner as i32 }),
            message: Some(Message {
                msg_type: msg_type as i32,
                from: 71,
                to: 72,
                term: 5,
                commit: 40,
                context: 9u64.to_be_bytes().to_vec(),
                ..Default::default()
            }),
            region_epoch: Some(tessera_proto::storepb::RegionEpoch { conf_ver: 3, version: 4 }),
            ..Default::default()
        }
    }

    #[test]
    fn heartbeats_and_responses_round_trip_through_records() {
        for (msg_type, role) in [
            (MessageType::MsgHeartbeat, PeerRole::Voter),
            (MessageType::MsgHeartbeatResponse, PeerRole::Learner),
        ] {
            let msg = heartbeat(msg_type, role);
            let record = heartbeat_record(&msg, 1, 2).expect("a plain heartbeat coalesces");
            assert_eq!(expand_record(record, 1, 2), msg);
        }
    }

    #[test]
    fn messages_a_record_cannot_carry_travel_whole() {
        let mut with_index = heartbeat(MessageType::MsgHeartbeat, PeerRole::Voter);
        with_index.message.as_mut().unwrap().index = 3;
        let mut tombstone = heartbeat(MessageType::MsgHeartbeat, PeerRole::Voter);
        tombstone.is_tombstone = true;
        let mut urgent = heartbeat(MessageType::MsgHeartbeat, PeerRole::Voter);
        urgent.urgent = true;
        let mut append = heartbeat(MessageType::MsgHeartbeat, PeerRole::Voter);
        append.message.as_mut().unwrap().msg_type = MessageType::MsgAppend as i32;
        let mut mismatched = heartbeat(MessageType::MsgHeartbeat, PeerRole::Voter);
        mismatched.message.as_mut().unwrap().from = 99;
        for msg in [with_index, tombstone, urgent, append, mismatched] {
            assert_eq!(heartbeat_record(&msg, 1, 2), None, "{msg:?}");
        }
        let plain = heartbeat(MessageType::MsgHeartbeat, PeerRole::Voter);
        assert_eq!(heartbeat_record(&plain, 1, 3), None, "routed to another store than the batch");
    }

    #[test]
    fn a_batch_expands_to_its_messages_and_records() {
        let whole = RaftMessage { region_id: 1, ..Default::default() };
        let beat = heartbeat(MessageType::MsgHeartbeat, PeerRole::Voter);
        let batch = RaftMessageBatch {
            messages: vec![whole.clone()],
            from_store_id: 1,
            to_store_id: 2,
            heartbeats: vec![heartbeat_record(&beat, 1, 2).unwrap()],
        };
        assert_eq!(expand_batch(batch), vec![whole, beat]);
    }
}
