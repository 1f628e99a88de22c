use std::sync::Mutex;

use tessera_proto::raftpb::{Entry, Message, MessageType};
use tessera_proto::storepb::Peer;

use super::*;

/// A link that records batches, and can be told a store is down or refuse batches.
#[derive(Default)]
struct RecordingLink {
    batches: Mutex<Vec<RaftMessageBatch>>,
    down: Mutex<Vec<u64>>,
    refuse: Mutex<bool>,
}

impl StoreLink for RecordingLink {
    fn send_batch(&self, batch: RaftMessageBatch) -> Result<(), TransportError> {
        if *self.refuse.lock().unwrap() {
            return Err(TransportError::Unreachable(batch.to_store_id));
        }
        self.batches.lock().unwrap().push(batch);
        Ok(())
    }

    fn reachable(&self, to_store_id: u64) -> bool {
        !self.down.lock().unwrap().contains(&to_store_id)
    }

    fn send_snapshot(&self, msg: RaftMessage, _: &mut dyn SnapshotChunks) -> Result<(), TransportError> {
        Err(TransportError::Unreachable(destination(&msg)))
    }
}

fn destination(msg: &RaftMessage) -> u64 {
    msg.to_peer.as_ref().map_or(0, |p| p.store_id)
}

fn message(region_id: u64, to_store_id: u64, msg_type: MessageType, payload_bytes: usize) -> RaftMessage {
    let (from, to) = (region_id * 10 + 1, region_id * 10 + to_store_id);
    let entries = if payload_bytes > 0 {
        vec![Entry { data: vec![0; payload_bytes].into(), ..Default::default() }]
    } else {
        Vec::new()
    };
    RaftMessage {
        region_id,
        from_peer: Some(Peer { id: from, store_id: 1, ..Default::default() }),
        to_peer: Some(Peer { id: to, store_id: to_store_id, ..Default::default() }),
        message: Some(Message {
            msg_type: msg_type as i32,
            from,
            to,
            term: 2,
            entries,
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn outbound(config: OutboundConfig) -> Outbound<RecordingLink> {
    Outbound::new(1, RecordingLink::default(), config).unwrap()
}

#[test]
fn a_flush_sends_one_batch_per_store_with_heartbeats_as_records() {
    let out = outbound(OutboundConfig::default());
    for region_id in 1..=100 {
        for to_store_id in [2, 3] {
            out.send(message(region_id, to_store_id, MessageType::MsgHeartbeat, 0)).unwrap();
        }
    }
    out.send(message(7, 2, MessageType::MsgAppend, 10)).unwrap();
    assert!(out.link().batches.lock().unwrap().is_empty(), "nothing leaves before the flush");
    assert_eq!(out.queue_len(), 201);
    out.flush();
    let batches = std::mem::take(&mut *out.link().batches.lock().unwrap());
    assert_eq!(batches.len(), 1, "a round's flush sends the queue that has a message");
    assert_eq!((batches[0].to_store_id, batches[0].heartbeats.len(), batches[0].messages.len()), (2, 100, 1));
    assert_eq!(out.queue_len(), 100, "heartbeats alone wait for the tick's flush");
    for region_id in 1..=100 {
        out.send(message(region_id, 2, MessageType::MsgHeartbeat, 0)).unwrap();
    }
    out.flush_heartbeats();
    let mut batches = std::mem::take(&mut *out.link().batches.lock().unwrap());
    batches.sort_by_key(|b| b.to_store_id);
    assert_eq!(batches.len(), 2, "one batch per destination store");
    assert_eq!((batches[0].from_store_id, batches[0].to_store_id), (1, 2));
    assert_eq!((batches[0].heartbeats.len(), batches[0].messages.len()), (100, 0));
    assert_eq!((batches[1].heartbeats.len(), batches[1].messages.len()), (100, 0));
    let stats = out.stats();
    assert_eq!((stats.messages_queued, stats.heartbeats_coalesced, stats.batches_sent), (301, 300, 3));
    out.flush();
    assert!(out.link().batches.lock().unwrap().is_empty(), "an empty flush sends nothing");
}

#[test]
fn a_queue_at_its_limit_refuses_and_an_unreachable_store_is_refused_at_once() {
    let out = outbound(OutboundConfig { queue_len_max: 2, ..OutboundConfig::default() });
    out.send(message(1, 2, MessageType::MsgAppend, 0)).unwrap();
    out.send(message(2, 2, MessageType::MsgHeartbeat, 0)).unwrap();
    assert_eq!(out.send(message(3, 2, MessageType::MsgAppend, 0)), Err(TransportError::Full(2)));
    out.send(message(3, 3, MessageType::MsgAppend, 0)).expect("other stores have their own queue");
    out.link().down.lock().unwrap().push(3);
    assert_eq!(out.send(message(4, 3, MessageType::MsgAppend, 0)), Err(TransportError::Unreachable(3)));
    let mut no_route = message(5, 2, MessageType::MsgAppend, 0);
    no_route.to_peer = None;
    assert_eq!(out.send(no_route), Err(TransportError::Unreachable(0)));
    let stats = out.stats();
    assert_eq!((stats.messages_full, stats.messages_unreachable, stats.messages_queued), (1, 2, 3));
    out.flush();
    out.send(message(3, 2, MessageType::MsgAppend, 0)).expect("the flush emptied the queue");
}

#[test]
fn a_queue_reaching_its_byte_limit_leaves_before_the_flush() {
    let out = outbound(OutboundConfig { batch_bytes_max: 10_000, ..OutboundConfig::default() });
    out.send(message(1, 2, MessageType::MsgAppend, 6_000)).unwrap();
    assert!(out.link().batches.lock().unwrap().is_empty());
    out.send(message(2, 2, MessageType::MsgAppend, 6_000)).unwrap();
    let batches = std::mem::take(&mut *out.link().batches.lock().unwrap());
    assert_eq!(batches.len(), 1);
    assert_eq!(batches[0].messages.len(), 2);
    assert_eq!(batches[0].to_store_id, 2);
    assert_eq!(out.queue_len(), 0);
}

#[test]
fn batches_the_link_refuses_are_counted_as_lost() {
    let out = outbound(OutboundConfig::default());
    *out.link().refuse.lock().unwrap() = true;
    out.send(message(1, 2, MessageType::MsgAppend, 0)).unwrap();
    out.send(message(1, 2, MessageType::MsgHeartbeat, 0)).unwrap();
    out.flush_heartbeats();
    let stats = out.stats();
    assert_eq!((stats.batches_failed, stats.messages_lost, stats.batches_sent), (1, 2, 0));
}

#[test]
fn zero_limits_are_refused() {
    let zero_len = OutboundConfig { queue_len_max: 0, ..OutboundConfig::default() };
    assert_eq!(zero_len.validate(), Err(OutboundConfigError::Zero { field: "queue_len_max" }));
    let zero_bytes = OutboundConfig { batch_bytes_max: 0, ..OutboundConfig::default() };
    assert!(Outbound::new(1, RecordingLink::default(), zero_bytes).is_err());
}
