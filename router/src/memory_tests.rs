use std::collections::VecDeque;
use std::sync::atomic::AtomicUsize;

use bytes::Bytes;
use tessera_proto::raftpb::Message;
use tessera_proto::storepb::Peer;

use super::*;
use crate::transport::RaftReceiver;

/// Long enough to tell a delayed delivery from an immediate one, short enough for a fast
/// test run. Tests only assert that a message arrives no earlier than its delay and before
/// a generous deadline, never an exact time.
const DELAY: Duration = Duration::from_millis(30);
const DEADLINE: Duration = Duration::from_secs(5);

/// What a receiver saw: each message with where and when it arrived.
struct Received {
    msg: RaftMessage,
    at: Instant,
    thread_name: Option<String>,
}

/// Records what the network hands it; refuses snapshots when told to.
#[derive(Default)]
struct Recorder {
    received: Mutex<Vec<Received>>,
    snapshots: Mutex<Vec<(RaftMessage, Vec<u8>)>>,
    snapshot_refusal: Option<String>,
}

impl RaftReceiver for Recorder {
    fn receive(&self, msg: RaftMessage) {
        let thread_name = thread::current().name().map(str::to_owned);
        self.received.lock().unwrap().push(Received { msg, at: Instant::now(), thread_name });
    }

    fn receive_snapshot(&self, msg: RaftMessage, chunks: &mut dyn SnapshotChunks) -> Result<(), String> {
        let mut data = Vec::new();
        while let Some(chunk) = chunks.next_chunk()? {
            data.extend_from_slice(&chunk);
        }
        if let Some(reason) = &self.snapshot_refusal {
            return Err(reason.clone());
        }
        self.snapshots.lock().unwrap().push((msg, data));
        Ok(())
    }
}

impl Recorder {
    /// The Raft indexes of the received messages, in arrival order: tests number their
    /// messages through `index`.
    fn indexes(&self) -> Vec<u64> {
        self.received.lock().unwrap().iter().map(|received| index(&received.msg)).collect()
    }

    fn received_len(&self) -> usize {
        self.received.lock().unwrap().len()
    }
}

/// A snapshot's data, already cut into chunks.
struct Chunks(VecDeque<Bytes>);

impl SnapshotChunks for Chunks {
    fn next_chunk(&mut self) -> Result<Option<Bytes>, String> {
        Ok(self.0.pop_front())
    }
}

/// A message from store `from` to store `to` (peer ids are store ids times ten), numbered
/// by its Raft `index`.
fn message(from: u64, to: u64, index: u64) -> RaftMessage {
    RaftMessage {
        region_id: 1,
        from_peer: Some(Peer { id: from * 10, store_id: from, ..Default::default() }),
        to_peer: Some(Peer { id: to * 10, store_id: to, ..Default::default() }),
        message: Some(Message { index, ..Default::default() }),
        ..Default::default()
    }
}

fn index(msg: &RaftMessage) -> u64 {
    msg.message.as_ref().map_or(0, |message| message.index)
}

/// A network with a recorder registered for each of `store_ids`.
fn network_with(store_ids: &[u64]) -> (InMemoryNetwork, HashMap<u64, Arc<Recorder>>) {
    let network = InMemoryNetwork::new();
    let recorders = register_recorders(&network, store_ids);
    (network, recorders)
}

fn register_recorders(network: &InMemoryNetwork, store_ids: &[u64]) -> HashMap<u64, Arc<Recorder>> {
    let mut recorders = HashMap::new();
    for &store_id in store_ids {
        let recorder = Arc::new(Recorder::default());
        network.register(store_id, recorder.clone());
        recorders.insert(store_id, recorder);
    }
    recorders
}

/// Polls `condition` until it holds or the deadline passes; returns whether it held.
fn wait_until(condition: impl Fn() -> bool) -> bool {
    let deadline = Instant::now() + DEADLINE;
    while Instant::now() < deadline {
        if condition() {
            return true;
        }
        thread::sleep(Duration::from_millis(2));
    }
    condition()
}

/// Whether a message from `from` to `to` gets through `send` now.
fn reaches(network: &InMemoryNetwork, from: u64, to: u64) -> bool {
    match network.transport(from).send(message(from, to, 1)) {
        Ok(()) => true,
        Err(TransportError::Unreachable(store_id)) => {
            assert_eq!(store_id, to, "the error names the destination");
            false
        }
        Err(error) => panic!("unexpected send error {error:?}"),
    }
}

#[test]
fn flush_delivers_what_send_buffered() {
    let (network, recorders) = network_with(&[1, 2]);
    let transport = network.transport(1);
    for i in 1..=3 {
        transport.send(message(1, 2, i)).unwrap();
    }
    assert_eq!(transport.queue_len(), 3);
    assert_eq!(recorders[&2].received_len(), 0, "nothing moves before the flush");

    transport.flush();
    assert_eq!(recorders[&2].indexes(), vec![1, 2, 3]);
    assert_eq!(transport.queue_len(), 0);
    let received = recorders[&2].received.lock().unwrap();
    let flushing_thread = thread::current().name().map(str::to_owned);
    assert!(received.iter().all(|r| r.thread_name == flushing_thread), "delivered on the flushing thread");
    drop(received);
    let stats = network.stats();
    assert_eq!((stats.messages_sent, stats.messages_delivered, stats.messages_dropped), (3, 3, 0));
}

#[test]
fn flush_keeps_send_order_per_destination() {
    let (network, recorders) = network_with(&[1, 2, 3]);
    let transport = network.transport(1);
    for i in 0..100 {
        transport.send(message(1, 2 + i % 2, i)).unwrap();
    }
    transport.flush();
    assert_eq!(recorders[&2].indexes(), (0..100).step_by(2).collect::<Vec<_>>());
    assert_eq!(recorders[&3].indexes(), (1..100).step_by(2).collect::<Vec<_>>());
}

#[test]
fn unregistered_store_is_unreachable_until_it_registers_again() {
    let (network, recorders) = network_with(&[1]);
    let transport = network.transport(1);
    assert_eq!(transport.send(message(1, 2, 1)), Err(TransportError::Unreachable(2)));
    assert_eq!(network.stats().messages_unreachable, 1);

    let first = Arc::new(Recorder::default());
    network.register(2, first.clone());
    transport.send(message(1, 2, 2)).unwrap();
    // The store stops between the send and the flush: the message is lost, not an error.
    network.unregister(2);
    transport.flush();
    assert_eq!(first.received_len(), 0);
    assert_eq!(network.stats().messages_dropped, 1);
    assert!(!reaches(&network, 1, 2));

    // It restarts with a new receiver, which replaces the old one.
    let restarted = Arc::new(Recorder::default());
    network.register(2, restarted.clone());
    transport.send(message(1, 2, 3)).unwrap();
    transport.flush();
    assert_eq!(restarted.indexes(), vec![3]);
    assert_eq!(first.received_len(), 0);
    assert_eq!(recorders[&1].received_len(), 0);
}

#[test]
fn message_without_destination_is_unreachable() {
    let (network, _recorders) = network_with(&[1]);
    let msg = RaftMessage { to_peer: None, ..message(1, 1, 1) };
    assert_eq!(network.transport(1).send(msg), Err(TransportError::Unreachable(0)));
}

#[test]
fn partition_cuts_between_groups_and_heal_restores() {
    let (network, _recorders) = network_with(&[1, 2, 3, 4, 5]);
    network.partition(&[&[1, 2], &[3]]);

    assert!(reaches(&network, 1, 2) && reaches(&network, 2, 1), "same group");
    assert!(!reaches(&network, 1, 3) && !reaches(&network, 3, 1), "different groups");
    // Stores 4 and 5 are named nowhere: together they form one more group.
    assert!(reaches(&network, 4, 5) && reaches(&network, 5, 4));
    assert!(!reaches(&network, 4, 1) && !reaches(&network, 1, 4));
    assert!(!reaches(&network, 4, 3) && !reaches(&network, 3, 4));
    assert!(reaches(&network, 3, 3), "a store always reaches itself");

    // A new partition replaces the old one.
    network.partition(&[&[1, 3]]);
    assert!(reaches(&network, 1, 3));
    assert!(!reaches(&network, 1, 2));
    assert!(reaches(&network, 2, 4));

    network.heal();
    for from in 1..=5 {
        for to in 1..=5 {
            assert!(reaches(&network, from, to), "{from} -> {to} after heal");
        }
    }
}

#[test]
#[should_panic(expected = "store 2 is named in two partition groups")]
fn partition_refuses_a_store_in_two_groups() {
    InMemoryNetwork::new().partition(&[&[1, 2], &[2, 3]]);
}

#[test]
fn isolate_cuts_one_store_both_ways() {
    let (network, _recorders) = network_with(&[1, 2, 3]);
    network.isolate(2);
    assert!(!reaches(&network, 1, 2) && !reaches(&network, 2, 1) && !reaches(&network, 2, 3));
    assert!(reaches(&network, 1, 3) && reaches(&network, 3, 1));
    assert!(reaches(&network, 2, 2), "a store always reaches itself");

    // Isolation survives a new partition and only heal undoes it.
    network.partition(&[&[1, 2, 3]]);
    assert!(!reaches(&network, 1, 2));
    network.heal();
    assert!(reaches(&network, 1, 2) && reaches(&network, 2, 1));
}

#[test]
fn partition_after_send_drops_at_flush() {
    let (network, recorders) = network_with(&[1, 2, 3]);
    let transport = network.transport(1);
    transport.send(message(1, 2, 1)).unwrap();
    transport.send(message(1, 3, 2)).unwrap();
    network.partition(&[&[1, 3]]);
    transport.flush();
    assert_eq!(recorders[&2].received_len(), 0);
    assert_eq!(recorders[&3].indexes(), vec![2]);
    let stats = network.stats();
    assert_eq!((stats.messages_sent, stats.messages_delivered, stats.messages_dropped), (2, 1, 1));
}

/// The indexes that get through 10,000 messages at 20% drop rate with `seed`.
fn survivors(seed: u64) -> Vec<u64> {
    let (network, recorders) = network_with(&[1, 2]);
    network.set_seed(seed);
    network.set_drop_rate(200_000);
    let transport = network.transport(1);
    for i in 0..10_000 {
        transport.send(message(1, 2, i)).unwrap();
    }
    transport.flush();
    let stats = network.stats();
    assert_eq!(stats.messages_sent, stats.messages_delivered + stats.messages_dropped);
    recorders[&2].indexes()
}

#[test]
fn drop_rate_takes_its_share_and_replays_with_its_seed() {
    let first = survivors(42);
    // 8,000 expected; the binomial's standard deviation is 40, so this is 12 of them.
    assert!((7_500..=8_500).contains(&first.len()), "{} of 10000 survived a 20% drop rate", first.len());
    assert_eq!(survivors(42), first, "the same seed drops the same messages");
    assert_ne!(survivors(43), first, "another seed drops others");
}

#[test]
fn drop_rate_bounds() {
    let (network, recorders) = network_with(&[1, 2]);
    let transport = network.transport(1);
    network.set_drop_rate(1_000_000);
    transport.send(message(1, 2, 1)).unwrap();
    transport.flush();
    network.set_drop_rate(0);
    transport.send(message(1, 2, 2)).unwrap();
    transport.flush();
    assert_eq!(recorders[&2].indexes(), vec![2]);
}

#[test]
fn delay_delivers_later_on_the_delay_thread_in_order() {
    let (network, recorders) = network_with(&[1, 2]);
    network.set_delay(DELAY, DELAY);
    let transport = network.transport(1);
    for i in 1..=5 {
        transport.send(message(1, 2, i)).unwrap();
    }
    let flushed_before = Instant::now();
    transport.flush();

    assert!(wait_until(|| recorders[&2].received_len() == 5), "delayed messages arrive");
    assert_eq!(recorders[&2].indexes(), vec![1, 2, 3, 4, 5], "a fixed delay keeps the order");
    for received in recorders[&2].received.lock().unwrap().iter() {
        assert!(received.at >= flushed_before + DELAY, "arrived before its delay was over");
        assert_eq!(received.thread_name.as_deref(), Some("tessera-net-delay"));
    }
    assert_eq!(network.delivered_between(1, 2), 5);

    // Back to no delay: delivery on the flushing thread again.
    network.set_delay(Duration::ZERO, Duration::ZERO);
    transport.send(message(1, 2, 6)).unwrap();
    transport.flush();
    assert_eq!(recorders[&2].received_len(), 6);
}

#[test]
fn random_delays_stay_in_their_range() {
    let (network, recorders) = network_with(&[1, 2]);
    network.set_delay(Duration::from_millis(10), DELAY);
    let transport = network.transport(1);
    for i in 0..20 {
        transport.send(message(1, 2, i)).unwrap();
    }
    let flushed_before = Instant::now();
    transport.flush();
    assert!(wait_until(|| recorders[&2].received_len() == 20));
    let mut indexes = recorders[&2].indexes();
    assert!(recorders[&2]
        .received
        .lock()
        .unwrap()
        .iter()
        .all(|r| r.at >= flushed_before + Duration::from_millis(10)));
    indexes.sort_unstable();
    assert_eq!(indexes, (0..20).collect::<Vec<_>>(), "every message arrives exactly once");
}

#[test]
fn partition_cuts_messages_in_flight() {
    let (network, recorders) = network_with(&[1, 2]);
    network.set_delay(Duration::from_secs(10), Duration::from_secs(10));
    let transport = network.transport(1);
    transport.send(message(1, 2, 1)).unwrap();
    transport.flush();
    network.isolate(2);
    // Deliver the delayed message now rather than in ten seconds: the check under test is
    // the one made at delivery time.
    let delayed =
        lock(&network.shared().delay.inner).heap.pop().expect("the message waits in the delay queue");
    network.shared().deliver_delayed(delayed);
    assert_eq!(recorders[&2].received_len(), 0);
    assert_eq!(network.stats().messages_dropped, 1);
}

#[test]
fn filters_drop_until_removed() {
    let (network, recorders) = network_with(&[1, 2]);
    let transport = network.transport(1);
    let even = network.add_filter(|msg| index(msg).is_multiple_of(2));
    network.add_filter(|msg| index(msg) == 3);
    for i in 1..=6 {
        transport.send(message(1, 2, i)).unwrap();
    }
    transport.flush();
    assert_eq!(recorders[&2].indexes(), vec![1, 5]);
    assert_eq!(network.stats().messages_dropped, 4);

    assert!(network.remove_filter(even));
    assert!(!network.remove_filter(even), "a filter is removed once");
    for i in 7..=8 {
        transport.send(message(1, 2, i)).unwrap();
    }
    transport.send(message(1, 2, 3)).unwrap();
    transport.flush();
    assert_eq!(recorders[&2].indexes(), vec![1, 5, 7, 8]);

    network.add_filter(|_| true);
    network.clear_filters();
    transport.send(message(1, 2, 3)).unwrap();
    transport.flush();
    assert_eq!(recorders[&2].indexes(), vec![1, 5, 7, 8, 3]);
}

#[test]
fn filter_may_change_the_faults_while_a_flush_runs() {
    let (network, recorders) = network_with(&[1, 2]);
    let transport = network.transport(1);
    // The filter isolates store 2 once it has seen message 2. The batch it belongs to was
    // already on its way (a real network does not recall a sent request): the cut applies
    // from the next send on. A deadlock here would hang the test.
    let controller = network.clone();
    network.add_filter(move |msg| {
        if index(msg) == 2 {
            controller.isolate(2);
        }
        false
    });
    for i in 1..=4 {
        transport.send(message(1, 2, i)).unwrap();
    }
    transport.flush();
    assert_eq!(recorders[&2].indexes(), vec![1, 2, 3, 4]);
    assert_eq!(transport.send(message(1, 2, 5)), Err(TransportError::Unreachable(2)));
    // The filter holds a clone of the network; removing it lets the network shut down.
    network.clear_filters();
}

#[test]
fn full_queue_refuses_with_full_and_counts() {
    let config = NetworkConfig { queue_len_max: 2, ..NetworkConfig::default() };
    let network = InMemoryNetwork::with_config(config).unwrap();
    let recorders = register_recorders(&network, &[1, 2]);
    let transport = network.transport(1);
    transport.send(message(1, 2, 1)).unwrap();
    transport.send(message(1, 2, 2)).unwrap();
    assert_eq!(transport.send(message(1, 2, 3)), Err(TransportError::Full(2)));
    assert_eq!(network.stats().messages_full, 1);
    assert_eq!(network.stats().messages_sent, 2);

    // Each transport has its own queue.
    network.transport(2).send(message(2, 1, 1)).unwrap();

    transport.flush();
    transport.send(message(1, 2, 3)).unwrap();
    transport.flush();
    assert_eq!(recorders[&2].indexes(), vec![1, 2, 3]);
}

#[test]
fn full_delay_queue_drops_and_counts() {
    let config = NetworkConfig { delayed_len_max: 2, ..NetworkConfig::default() };
    let network = InMemoryNetwork::with_config(config).unwrap();
    let _recorders = register_recorders(&network, &[1, 2]);
    network.set_delay(Duration::from_secs(10), Duration::from_secs(10));
    let transport = network.transport(1);
    for i in 1..=3 {
        transport.send(message(1, 2, i)).unwrap();
    }
    transport.flush();
    let stats = network.stats();
    assert_eq!((stats.delay_queue_full, stats.messages_dropped), (1, 1));
    // Shutdown drops the two that still wait.
    network.shutdown();
    assert_eq!(network.stats().messages_dropped, 3);
}

#[test]
fn config_with_a_zero_limit_is_refused() {
    let config = NetworkConfig { queue_len_max: 0, ..NetworkConfig::default() };
    assert_eq!(
        InMemoryNetwork::with_config(config).unwrap_err(),
        NetworkConfigError::Zero { field: "queue_len_max" }
    );
    let config = NetworkConfig { delayed_len_max: 0, ..NetworkConfig::default() };
    assert_eq!(
        InMemoryNetwork::with_config(config).unwrap_err(),
        NetworkConfigError::Zero { field: "delayed_len_max" }
    );
}

fn chunks(parts: &[&'static [u8]]) -> Chunks {
    Chunks(parts.iter().map(|part| Bytes::from_static(part)).collect())
}

#[test]
fn snapshot_pulls_chunks_through_and_counts_bytes() {
    let (network, recorders) = network_with(&[1, 2]);
    let transport = network.transport(1);
    transport.send_snapshot(message(1, 2, 9), &mut chunks(&[b"abc", b"", b"defg"])).unwrap();

    let snapshots = recorders[&2].snapshots.lock().unwrap();
    assert_eq!(snapshots.len(), 1);
    assert_eq!(index(&snapshots[0].0), 9);
    assert_eq!(snapshots[0].1, b"abcdefg");
    drop(snapshots);
    let stats = network.stats();
    assert_eq!((stats.snapshots_sent, stats.snapshot_bytes, stats.snapshots_refused), (1, 7, 0));
    assert_eq!(stats.messages_sent, 0, "snapshots do not go through the message queue");
    assert_eq!(network.delivered_between(1, 2), 0);
}

#[test]
fn refused_snapshot_is_snapshot_refused() {
    let network = InMemoryNetwork::new();
    let refuser = Recorder { snapshot_refusal: Some("too many snapshots".to_owned()), ..Recorder::default() };
    network.register(2, Arc::new(refuser));
    let result = network.transport(1).send_snapshot(message(1, 2, 9), &mut chunks(&[b"abc"]));
    assert_eq!(
        result,
        Err(TransportError::SnapshotRefused { store_id: 2, reason: "too many snapshots".to_owned() })
    );
    let stats = network.stats();
    assert_eq!((stats.snapshots_sent, stats.snapshots_refused, stats.snapshot_bytes), (1, 1, 3));
}

#[test]
fn failing_chunks_refuse_the_snapshot() {
    struct Broken;
    impl SnapshotChunks for Broken {
        fn next_chunk(&mut self) -> Result<Option<Bytes>, String> {
            Err("disk read failed".to_owned())
        }
    }
    let (network, _recorders) = network_with(&[1, 2]);
    let result = network.transport(1).send_snapshot(message(1, 2, 9), &mut Broken);
    assert_eq!(
        result,
        Err(TransportError::SnapshotRefused { store_id: 2, reason: "disk read failed".to_owned() })
    );
}

#[test]
fn snapshot_meets_the_fault_rules() {
    let (network, recorders) = network_with(&[1, 2, 3]);
    let transport = network.transport(1);
    assert_eq!(
        transport.send_snapshot(message(1, 4, 1), &mut chunks(&[b"x"])),
        Err(TransportError::Unreachable(4))
    );
    network.isolate(2);
    assert_eq!(
        transport.send_snapshot(message(1, 2, 1), &mut chunks(&[b"x"])),
        Err(TransportError::Unreachable(2))
    );
    network.heal();

    let filter = network.add_filter(|msg| index(msg) == 1);
    assert_eq!(
        transport.send_snapshot(message(1, 2, 1), &mut chunks(&[b"x"])),
        Err(TransportError::Unreachable(2))
    );
    network.remove_filter(filter);
    network.set_drop_rate(1_000_000);
    assert_eq!(
        transport.send_snapshot(message(1, 3, 1), &mut chunks(&[b"x"])),
        Err(TransportError::Unreachable(3))
    );
    network.set_drop_rate(0);
    transport.send_snapshot(message(1, 3, 1), &mut chunks(&[b"x"])).unwrap();

    assert!(recorders[&2].snapshots.lock().unwrap().is_empty());
    assert_eq!(recorders[&3].snapshots.lock().unwrap().len(), 1);
    let stats = network.stats();
    assert_eq!((stats.snapshots_unreachable, stats.snapshots_dropped, stats.snapshots_sent), (2, 2, 1));
    assert_eq!(stats.snapshot_bytes, 1, "a dropped snapshot moves no data");
}

#[test]
fn delivered_between_counts_each_ordered_pair() {
    let (network, _recorders) = network_with(&[1, 2, 3]);
    let one = network.transport(1);
    let two = network.transport(2);
    for i in 0..3 {
        one.send(message(1, 2, i)).unwrap();
    }
    one.send(message(1, 3, 0)).unwrap();
    two.send(message(2, 1, 0)).unwrap();
    one.flush();
    two.flush();
    assert_eq!(network.delivered_between(1, 2), 3);
    assert_eq!(network.delivered_between(1, 3), 1);
    assert_eq!(network.delivered_between(2, 1), 1);
    assert_eq!(network.delivered_between(3, 1), 0);
    assert_eq!(network.delivered_between(2, 3), 0);
}

#[test]
fn dropping_the_last_handle_stops_the_delay_thread() {
    let (network, recorders) = network_with(&[1, 2]);
    network.set_delay(Duration::from_secs(10), Duration::from_secs(10));
    let transport = network.transport(1);
    transport.send(message(1, 2, 1)).unwrap();
    transport.flush();
    assert!(
        lock(&transport.outbound.link().shared.delay.inner).thread.is_some(),
        "the first delayed message starts the thread"
    );

    let clone = network.clone();
    drop(network);
    assert!(
        lock(&transport.outbound.link().shared.delay.inner).thread.is_some(),
        "a clone keeps the network running"
    );

    let dropped_at = Instant::now();
    drop(clone);
    // The join must not wait for the ten-second delay.
    assert!(dropped_at.elapsed() < Duration::from_secs(2));
    assert!(lock(&transport.outbound.link().shared.delay.inner).thread.is_none());
    assert_eq!(
        Arc::strong_count(&transport.outbound.link().shared),
        1,
        "the delay thread let go of the network"
    );
    assert_eq!(recorders[&2].received_len(), 0);
    assert_eq!(Arc::strong_count(&recorders[&2]), 1, "shutdown released the receivers");
    assert_eq!(transport.send(message(1, 2, 2)), Err(TransportError::Unreachable(2)));
    assert_eq!(transport.outbound.link().shared.counters.snapshot().messages_dropped, 1);
}

#[test]
fn shutdown_stops_everything_and_twice_is_harmless() {
    let (network, recorders) = network_with(&[1, 2]);
    let transport = network.transport(1);
    transport.send(message(1, 2, 1)).unwrap();
    network.shutdown();
    network.shutdown();
    transport.flush();
    assert_eq!(recorders[&2].received_len(), 0);
    assert_eq!(Arc::strong_count(&recorders[&2]), 1);
    assert_eq!(
        transport.send_snapshot(message(1, 2, 1), &mut chunks(&[b"x"])),
        Err(TransportError::Unreachable(2))
    );
    let stats = network.stats();
    assert_eq!((stats.messages_sent, stats.messages_dropped), (1, 1));
}

/// Answers each message with the next index, up to a limit, and flushes at once: a
/// receiver that sends while it receives, as a store answering a heartbeat may.
struct Echo {
    transport: InMemoryTransport,
    peer_store_id: u64,
    index_max: u64,
    received_len: AtomicUsize,
}

impl RaftReceiver for Echo {
    fn receive(&self, msg: RaftMessage) {
        self.received_len.fetch_add(1, Ordering::Relaxed);
        if index(&msg) < self.index_max {
            let from = self.transport.from_store_id();
            self.transport.send(message(from, self.peer_store_id, index(&msg) + 1)).unwrap();
            self.transport.flush();
        }
    }

    fn receive_snapshot(&self, _: RaftMessage, _: &mut dyn SnapshotChunks) -> Result<(), String> {
        Ok(())
    }
}

fn echo_pair(network: &InMemoryNetwork, index_max: u64) -> (Arc<Echo>, Arc<Echo>) {
    let echo = |from, to| {
        Arc::new(Echo {
            transport: network.transport(from),
            peer_store_id: to,
            index_max,
            received_len: AtomicUsize::new(0),
        })
    };
    let (one, two) = (echo(1, 2), echo(2, 1));
    network.register(1, one.clone());
    network.register(2, two.clone());
    (one, two)
}

#[test]
fn receiver_may_send_and_flush_while_it_receives() {
    let network = InMemoryNetwork::new();
    let (one, two) = echo_pair(&network, 20);
    one.transport.send(message(1, 2, 0)).unwrap();
    one.transport.flush();
    assert_eq!(two.received_len.load(Ordering::Relaxed), 11);
    assert_eq!(one.received_len.load(Ordering::Relaxed), 10);

    // The same through the delay thread.
    network.set_delay(Duration::from_millis(1), Duration::from_millis(1));
    one.transport.send(message(1, 2, 0)).unwrap();
    one.transport.flush();
    assert!(wait_until(
        || one.received_len.load(Ordering::Relaxed) == 20 && two.received_len.load(Ordering::Relaxed) == 22
    ));
    // Each echo holds a transport and the network holds the echoes; shutdown breaks that
    // cycle.
    drop(network);
    assert_eq!(Arc::strong_count(&one), 1);
    assert_eq!(Arc::strong_count(&two), 1);
}

#[test]
fn faults_change_while_stores_send() {
    let (network, recorders) = network_with(&[1, 2, 3]);
    network.set_delay(Duration::ZERO, Duration::from_millis(2));
    network.set_drop_rate(100_000);
    let senders: Vec<_> = [1u64, 2]
        .into_iter()
        .map(|from| {
            let transport = network.transport(from);
            thread::spawn(move || {
                for i in 0..2_000 {
                    // Refusals are expected while a partition is on.
                    let _ = transport.send(message(from, 3, i));
                    if i % 16 == 0 {
                        transport.flush();
                    }
                }
                transport.flush();
            })
        })
        .collect();
    for round in 0..50 {
        match round % 3 {
            0 => network.partition(&[&[1, 3], &[2]]),
            1 => network.isolate(3),
            _ => network.heal(),
        }
        thread::sleep(Duration::from_millis(1));
    }
    for sender in senders {
        sender.join().unwrap();
    }
    let settled = || {
        let stats = network.stats();
        stats.messages_sent == stats.messages_delivered + stats.messages_dropped
    };
    assert!(wait_until(settled), "every accepted message was delivered or dropped: {:?}", network.stats());
    let stats = network.stats();
    assert_eq!(stats.messages_sent + stats.messages_unreachable, 4_000);
    assert_eq!(recorders[&3].received_len() as u64, stats.messages_delivered);
    assert_eq!(network.delivered_between(1, 3) + network.delivered_between(2, 3), stats.messages_delivered);
}
