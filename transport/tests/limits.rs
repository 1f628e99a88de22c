//! The transport against bad input and at its limits, over loopback with a recording
//! receiver in place of a store: malformed, misrouted and oversized input gets a status and
//! a counter and the server goes on serving; snapshots travel in bounded chunks and are
//! refused beyond the concurrency limit; a store that cannot be reached is reported so, and
//! a full queue refuses.

use std::net::TcpListener;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Mutex, OnceLock};
use std::thread;
use std::time::Duration;

use bytes::Bytes;
use metrics_util::debugging::{DebugValue, DebuggingRecorder, Snapshotter};
use tessera_proto::serverpb::{RaftMessage, RaftMessageBatch, SnapshotChunk};
use tessera_proto::storepb::Peer;
use tessera_router::{RaftReceiver, SnapshotChunks, StoreLink, TransportError};
use tessera_store::cluster::wait_until;
use tessera_transport::raw_codec::RawCodec;
use tessera_transport::transportpb::raft_transport_client::RaftTransportClient;
use tessera_transport::{
    GrpcLink, RaftServer, StaticResolver, StoreResolver, TransportConfig, TransportRuntime,
};
use tonic::codegen::http::uri::PathAndQuery;
use tonic::transport::{Channel, Endpoint};
use tonic::Code;

const WAIT: Duration = Duration::from_secs(10);
const SERVER_STORE_ID: u64 = 2;

/// The metrics of this test binary: one recorder per process.
fn snapshotter() -> &'static Snapshotter {
    static SNAPSHOTTER: OnceLock<Snapshotter> = OnceLock::new();
    SNAPSHOTTER.get_or_init(|| {
        let recorder = DebuggingRecorder::new();
        let snapshotter = recorder.snapshotter();
        recorder.install().expect("the only recorder of this test binary");
        snapshotter
    })
}

/// The sum of counter `name` over the series whose labels include `label`, since the
/// process started. A snapshot of the debugging recorder resets its counters, so totals
/// are kept here; tests running beside each other then only ever see counts grow, and
/// each compares a counter before and after what it does.
fn counter(name: &str, label: Option<(&str, &str)>) -> u64 {
    let totals = collect_metrics();
    totals
        .iter()
        .filter(|(n, ..)| n == name)
        .filter(|(_, labels, _)| label.is_none_or(|(k, v)| labels.iter().any(|(lk, lv)| lk == k && lv == v)))
        .map(|(.., total)| total)
        .sum()
}

type Labels = Vec<(String, String)>;

/// The latest value of every gauge, by name (over all its series).
static GAUGES: Mutex<Vec<(String, f64)>> = Mutex::new(Vec::new());

/// Takes a snapshot of the recorder: adds its counters to the running totals (a snapshot
/// resets them) and records its gauges. Returns the totals, locked.
fn collect_metrics() -> std::sync::MutexGuard<'static, Vec<(String, Labels, u64)>> {
    static TOTALS: Mutex<Vec<(String, Labels, u64)>> = Mutex::new(Vec::new());
    let mut totals = TOTALS.lock().unwrap();
    let mut gauges = GAUGES.lock().unwrap();
    for (key, _, _, value) in snapshotter().snapshot().into_vec() {
        let (name, labels) = (key.key().name().to_string(), key.key().labels());
        let labels: Vec<(String, String)> =
            labels.map(|l| (l.key().to_string(), l.value().to_string())).collect();
        match value {
            DebugValue::Counter(increment) => {
                match totals.iter_mut().find(|(n, l, _)| *n == name && *l == labels) {
                    Some(total) => total.2 += increment,
                    None => totals.push((name, labels, increment)),
                }
            }
            DebugValue::Gauge(value) => match gauges.iter_mut().find(|(n, _)| *n == name) {
                Some(gauge) => gauge.1 = value.into_inner(),
                None => gauges.push((name, value.into_inner())),
            },
            DebugValue::Histogram(_) => {}
        }
    }
    totals
}

/// The value of gauge `name` in this process (0 if never set). Nextest runs every test in
/// a process of its own, so no other test moves it meanwhile.
fn gauge(name: &str) -> f64 {
    drop(collect_metrics());
    GAUGES.lock().unwrap().iter().find(|(n, _)| n == name).map_or(0.0, |(_, value)| *value)
}

fn rejected(reason: &str) -> u64 {
    counter("tessera_transport_rejected_total", Some(("reason", reason)))
}

/// How many chunks a received snapshot came in and its data, or the error it ended with.
type SnapshotOutcome = Result<(usize, Vec<u8>), String>;

/// A receiver that records what arrives. Snapshots are read to the end (or to their error);
/// while `hold` is set, a snapshot waits for a signal before it reads anything.
#[derive(Default)]
struct Recording {
    messages: Mutex<Vec<RaftMessage>>,
    snapshots: Mutex<Vec<SnapshotOutcome>>,
    hold: Mutex<Option<mpsc::Receiver<()>>>,
    snapshots_entered: AtomicUsize,
}

impl RaftReceiver for Recording {
    fn receive(&self, msg: RaftMessage) {
        self.messages.lock().unwrap().push(msg);
    }

    fn receive_snapshot(&self, _msg: RaftMessage, chunks: &mut dyn SnapshotChunks) -> Result<(), String> {
        self.snapshots_entered.fetch_add(1, Ordering::SeqCst);
        if let Some(release) = self.hold.lock().unwrap().take() {
            release.recv_timeout(WAIT).map_err(|_| "never released".to_string())?;
        }
        let (mut chunks_len, mut data) = (0, Vec::new());
        let outcome = loop {
            match chunks.next_chunk() {
                Ok(Some(chunk)) => {
                    chunks_len += 1;
                    data.extend_from_slice(&chunk);
                }
                Ok(None) => break Ok((chunks_len, data)),
                Err(reason) => break Err(reason),
            }
        };
        self.snapshots.lock().unwrap().push(outcome.clone());
        outcome.map(drop)
    }
}

struct Fixture {
    recording: Arc<Recording>,
    server: Option<RaftServer>,
    config: TransportConfig,
    runtime: TransportRuntime,
}

impl Fixture {
    fn new(configure: impl FnOnce(&mut TransportConfig)) -> Fixture {
        snapshotter();
        let mut config = TransportConfig {
            reconnect_backoff_initial: Duration::from_millis(20),
            reconnect_backoff_max: Duration::from_millis(100),
            ..TransportConfig::default()
        };
        configure(&mut config);
        let runtime = TransportRuntime::new("limits", 2).unwrap();
        let recording = Arc::new(Recording::default());
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let server =
            RaftServer::start(&config, SERVER_STORE_ID, listener, recording.clone(), runtime.handle())
                .unwrap();
        Fixture { recording, server: Some(server), config, runtime }
    }

    fn address(&self) -> String {
        self.server.as_ref().unwrap().local_addr().to_string()
    }

    /// A link of store 1 that knows the server as store 2.
    fn link(&self) -> GrpcLink {
        let resolver = Arc::new(StaticResolver::new([(SERVER_STORE_ID, self.address())]));
        GrpcLink::new(self.config.clone(), 1, resolver, self.runtime.handle()).unwrap()
    }

    fn channel(&self) -> Channel {
        let endpoint = Endpoint::from_shared(format!("http://{}", self.address())).unwrap();
        self.runtime.handle().block_on(endpoint.connect()).unwrap()
    }

    /// Sends one batch of a message for `region_id` through a fresh link and waits for it.
    fn assert_still_serving(&self, region_id: u64) {
        let link = self.link();
        let batch = RaftMessageBatch {
            from_store_id: 1,
            to_store_id: SERVER_STORE_ID,
            messages: vec![RaftMessage { region_id, ..Default::default() }],
            ..Default::default()
        };
        link.send_batch(batch).unwrap();
        let arrived = wait_until(WAIT, || {
            self.recording.messages.lock().unwrap().iter().any(|m| m.region_id == region_id)
        });
        assert!(arrived, "the server still delivers after bad input");
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        if let Some(server) = self.server.take() {
            server.shutdown();
        }
    }
}

#[test]
fn garbage_bytes_are_refused_with_a_status_and_counted() {
    let fixture = Fixture::new(|_| {});
    let before = rejected("malformed");
    let channel = fixture.channel();
    let outcome = fixture.runtime.handle().block_on(async move {
        let mut grpc = tonic::client::Grpc::new(channel);
        grpc.ready().await.unwrap();
        // 0xff is field 31 with wire type 7, which does not exist.
        let garbage = tokio_stream::iter(vec![vec![0xff; 32]]);
        let path = PathAndQuery::from_static("/transportpb.RaftTransport/Raft");
        grpc.client_streaming(tonic::Request::new(garbage), path, RawCodec).await
    });
    let status = outcome.expect_err("garbage is refused");
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    assert!(status.message().contains("malformed"), "{status:?}");
    assert!(rejected("malformed") > before);
    fixture.assert_still_serving(11);
}

#[test]
fn a_batch_for_another_store_is_refused_and_counted() {
    let fixture = Fixture::new(|_| {});
    let before = rejected("wrong_store");
    let channel = fixture.channel();
    let misrouted = [
        RaftMessageBatch { from_store_id: 1, to_store_id: 9, ..Default::default() },
        RaftMessageBatch {
            from_store_id: SERVER_STORE_ID,
            to_store_id: SERVER_STORE_ID,
            ..Default::default()
        },
    ];
    for batch in misrouted {
        let channel = channel.clone();
        let outcome = fixture.runtime.handle().block_on(async move {
            RaftTransportClient::new(channel).raft(tokio_stream::iter(vec![batch])).await
        });
        let status = outcome.expect_err("a misrouted batch is refused");
        assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    }
    // A stream that changes its sender midway is refused at the change.
    let changing = vec![
        RaftMessageBatch { from_store_id: 1, to_store_id: SERVER_STORE_ID, ..Default::default() },
        RaftMessageBatch { from_store_id: 3, to_store_id: SERVER_STORE_ID, ..Default::default() },
    ];
    let outcome = fixture
        .runtime
        .handle()
        .block_on(async move { RaftTransportClient::new(channel).raft(tokio_stream::iter(changing)).await });
    assert_eq!(outcome.expect_err("a second sender is refused").code(), Code::InvalidArgument);
    assert!(rejected("wrong_store") >= before + 3);
    fixture.assert_still_serving(12);
}

#[test]
fn an_oversized_batch_is_refused_and_counted() {
    let fixture = Fixture::new(|config| {
        config.message_bytes_max = 64 << 10;
        config.snapshot_chunk_bytes = 16 << 10;
    });
    let before = rejected("oversized");
    let channel = fixture.channel();
    let huge = RaftMessageBatch {
        from_store_id: 1,
        to_store_id: SERVER_STORE_ID,
        messages: vec![RaftMessage { region_id: 1, start_key: vec![0; 100 << 10], ..Default::default() }],
        ..Default::default()
    };
    let outcome = fixture.runtime.handle().block_on(async move {
        RaftTransportClient::new(channel)
            .max_encoding_message_size(1 << 20)
            .raft(tokio_stream::iter(vec![huge]))
            .await
    });
    let status = outcome.expect_err("an oversized batch is refused");
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    assert!(rejected("oversized") > before);
    fixture.assert_still_serving(13);
}

/// A snapshot's data, handed out in chunks of `chunk_bytes`, failing after `fail_after`
/// chunks if set.
struct TestChunks {
    data: Bytes,
    chunk_bytes: usize,
    offset: usize,
    fail_after: Option<usize>,
    handed: usize,
}

impl TestChunks {
    fn new(data: &[u8], chunk_bytes: usize) -> TestChunks {
        TestChunks { data: Bytes::copy_from_slice(data), chunk_bytes, offset: 0, fail_after: None, handed: 0 }
    }
}

impl SnapshotChunks for TestChunks {
    fn next_chunk(&mut self) -> Result<Option<Bytes>, String> {
        if self.fail_after == Some(self.handed) {
            return Err("disk read failed".into());
        }
        if self.offset >= self.data.len() {
            return Ok(None);
        }
        let end = (self.offset + self.chunk_bytes).min(self.data.len());
        let chunk = self.data.slice(self.offset..end);
        self.offset = end;
        self.handed += 1;
        Ok(Some(chunk))
    }
}

fn snapshot_message() -> RaftMessage {
    RaftMessage {
        region_id: 5,
        to_peer: Some(Peer { id: 5002, store_id: SERVER_STORE_ID, ..Default::default() }),
        ..Default::default()
    }
}

#[test]
fn a_snapshot_arrives_in_bounded_chunks_and_a_broken_one_never_passes_for_whole() {
    let fixture = Fixture::new(|config| config.snapshot_chunk_bytes = 1 << 10);
    let link = fixture.link();
    let data: Vec<u8> = (0..10_000u32).map(|i| (i % 251) as u8).collect();
    // The store reads in 5 KB pieces; the wire carries at most 1 KiB per chunk.
    link.send_snapshot(snapshot_message(), &mut TestChunks::new(&data, 5_000)).unwrap();
    let (chunks_len, received) = fixture.recording.snapshots.lock().unwrap()[0].clone().unwrap();
    assert_eq!(received, data);
    assert_eq!(chunks_len, 10, "two 5,000-byte reads become 5 + 5 chunks of at most 1,024 bytes");

    let mut failing = TestChunks::new(&data, 5_000);
    failing.fail_after = Some(1);
    let error = link.send_snapshot(snapshot_message(), &mut failing).unwrap_err();
    assert!(
        matches!(&error, TransportError::SnapshotRefused { reason, .. } if reason.contains("disk read failed"))
    );
    let received_error = wait_until(WAIT, || fixture.recording.snapshots.lock().unwrap().len() == 2);
    assert!(received_error, "the receiver hears of the broken stream");
    let second = fixture.recording.snapshots.lock().unwrap()[1].clone();
    assert!(second.is_err(), "a truncated snapshot must end in an error, got {second:?}");

    // A sender whose resolver confuses store 7 with this server is refused by the server.
    let before = rejected("wrong_store");
    let resolver = Arc::new(StaticResolver::new([(7, fixture.address())]));
    let confused = GrpcLink::new(fixture.config.clone(), 1, resolver, fixture.runtime.handle()).unwrap();
    let misrouted =
        RaftMessage { to_peer: Some(Peer { store_id: 7, ..Default::default() }), ..snapshot_message() };
    let error = confused.send_snapshot(misrouted, &mut TestChunks::new(&data, 5_000)).unwrap_err();
    assert!(
        matches!(&error, TransportError::SnapshotRefused { store_id: 7, reason } if reason.contains("reached store 2")),
        "{error:?}"
    );
    assert!(rejected("wrong_store") > before);
}

#[test]
fn snapshot_receives_beyond_the_limit_are_refused_and_messages_pass_meanwhile() {
    let fixture = Fixture::new(|config| config.snapshot_receive_concurrency_max = 1);
    let (release, held) = mpsc::channel();
    *fixture.recording.hold.lock().unwrap() = Some(held);
    let before = counter("tessera_transport_snapshots_received_total", Some(("result", "limit")));
    let data = vec![7u8; 300_000];
    let link = Arc::new(fixture.link());
    let first = {
        let link = link.clone();
        let data = data.clone();
        thread::spawn(move || link.send_snapshot(snapshot_message(), &mut TestChunks::new(&data, 64 << 10)))
    };
    assert!(wait_until(WAIT, || fixture.recording.snapshots_entered.load(Ordering::SeqCst) == 1));
    // The held snapshot does not hold up the same link's messages.
    let batch = RaftMessageBatch {
        from_store_id: 1,
        to_store_id: SERVER_STORE_ID,
        messages: vec![RaftMessage { region_id: 31, ..Default::default() }],
        ..Default::default()
    };
    link.send_batch(batch).unwrap();
    let arrived =
        wait_until(WAIT, || fixture.recording.messages.lock().unwrap().iter().any(|m| m.region_id == 31));
    assert!(arrived, "messages pass while a snapshot is stuck");
    let error = link.send_snapshot(snapshot_message(), &mut TestChunks::new(&data, 64 << 10)).unwrap_err();
    match &error {
        TransportError::SnapshotRefused { store_id: SERVER_STORE_ID, reason } => {
            assert!(reason.contains("snapshot_receive_concurrency_max"), "{reason}")
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
    assert!(counter("tessera_transport_snapshots_received_total", Some(("result", "limit"))) > before);
    release.send(()).unwrap();
    first.join().unwrap().expect("the first snapshot goes through once released");
    assert_eq!(fixture.recording.snapshots.lock().unwrap()[0].clone().unwrap().1, data);
}

/// A snapshot call the sender cancels mid-stream (it drops the call) ends its receive: the
/// gauge goes back down, the half-received snapshot never passes for whole, its slot stays
/// taken until the receiving thread has seen the stream end, and then takes a new snapshot.
/// (The server's handler sees the cancellation as a failed stream and returns; the guards
/// in the server also cover a handler that is dropped, as at shutdown, which this test does
/// not reach.)
#[test]
fn a_cancelled_snapshot_call_releases_its_gauge_and_then_its_slot() {
    let fixture = Fixture::new(|config| config.snapshot_receive_concurrency_max = 1);
    let (release, held) = mpsc::channel();
    *fixture.recording.hold.lock().unwrap() = Some(held);
    let channel = fixture.channel();
    // The first chunk, then a stream that never ends, until the call is dropped.
    let call = fixture.runtime.handle().spawn(async move {
        let mut client = RaftTransportClient::new(channel);
        let first = SnapshotChunk { message: Some(snapshot_message()), data: Bytes::from_static(b"partial") };
        let chunks = tokio_stream::StreamExt::chain(tokio_stream::iter(vec![first]), tokio_stream::pending());
        client.snapshot(chunks).await
    });
    assert!(wait_until(WAIT, || fixture.recording.snapshots_entered.load(Ordering::SeqCst) == 1));
    assert_eq!(gauge("tessera_transport_snapshot_receives"), 1.0);
    call.abort();
    assert!(
        wait_until(WAIT, || gauge("tessera_transport_snapshot_receives") == 0.0),
        "the cancelled call no longer counts as a receive in progress"
    );
    // The receiving thread is still held: the slot is still taken.
    let link = fixture.link();
    let data = vec![5u8; 1_000];
    let refused = link.send_snapshot(snapshot_message(), &mut TestChunks::new(&data, 256));
    assert!(matches!(refused, Err(TransportError::SnapshotRefused { .. })), "{refused:?}");
    release.send(()).unwrap();
    assert!(wait_until(WAIT, || !fixture.recording.snapshots.lock().unwrap().is_empty()));
    assert!(
        fixture.recording.snapshots.lock().unwrap()[0].is_err(),
        "a cancelled snapshot never passes for whole"
    );
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        match link.send_snapshot(snapshot_message(), &mut TestChunks::new(&data, 256)) {
            Ok(()) => break,
            Err(error) => assert!(std::time::Instant::now() < deadline, "the slot never frees: {error:?}"),
        }
        thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(fixture.recording.snapshots.lock().unwrap().last().cloned(), Some(Ok((4, data))));
}

/// A sender that stalls mid-snapshot while its connection stays up loses the snapshot after
/// `snapshot_chunk_timeout`: its call fails with DEADLINE_EXCEEDED, the half-received
/// snapshot never passes for whole, and the slot takes the next snapshot.
#[test]
fn a_stalled_snapshot_sender_is_cut_off_and_its_slot_freed() {
    let fixture = Fixture::new(|config| {
        config.snapshot_receive_concurrency_max = 1;
        config.snapshot_chunk_timeout = Duration::from_millis(300);
    });
    let channel = fixture.channel();
    let (answer_tx, answer) = mpsc::channel();
    // The first chunk, then a stream that neither sends nor ends.
    fixture.runtime.handle().spawn(async move {
        let mut client = RaftTransportClient::new(channel);
        let first = SnapshotChunk { message: Some(snapshot_message()), data: Bytes::from_static(b"partial") };
        let chunks = tokio_stream::StreamExt::chain(tokio_stream::iter(vec![first]), tokio_stream::pending());
        let _ = answer_tx.send(client.snapshot(chunks).await);
    });
    let status = answer.recv_timeout(WAIT).expect("the stalled call is answered").unwrap_err();
    assert_eq!(status.code(), Code::DeadlineExceeded, "{status:?}");
    assert!(wait_until(WAIT, || !fixture.recording.snapshots.lock().unwrap().is_empty()));
    assert!(
        fixture.recording.snapshots.lock().unwrap()[0].is_err(),
        "a cut-off snapshot never passes for whole"
    );
    let link = fixture.link();
    let data = vec![6u8; 1_000];
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        match link.send_snapshot(snapshot_message(), &mut TestChunks::new(&data, 256)) {
            Ok(()) => break,
            Err(error) => assert!(std::time::Instant::now() < deadline, "the slot never frees: {error:?}"),
        }
        thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(fixture.recording.snapshots.lock().unwrap().last().cloned(), Some(Ok((4, data))));
}

#[test]
fn a_store_that_refuses_connections_is_unreachable_until_its_address_works() {
    let fixture = Fixture::new(|_| {});
    // A port that was just free and is closed again: connections to it are refused.
    let closed = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().to_string();
    let resolver = Arc::new(StaticResolver::new([(SERVER_STORE_ID, closed)]));
    let link = GrpcLink::new(fixture.config.clone(), 1, resolver.clone(), fixture.runtime.handle()).unwrap();
    assert!(!link.reachable(4), "a store without an address is unreachable at once");
    let failed_before = counter("tessera_transport_connects_total", Some(("result", "failed")));
    link.reachable(SERVER_STORE_ID);
    assert!(
        wait_until(WAIT, || !link.reachable(SERVER_STORE_ID)),
        "a refused connection makes it unreachable"
    );
    assert!(counter("tessera_transport_connects_total", Some(("result", "failed"))) > failed_before);
    let batch = RaftMessageBatch {
        from_store_id: 1,
        to_store_id: SERVER_STORE_ID,
        messages: vec![RaftMessage { region_id: 21, ..Default::default() }],
        ..Default::default()
    };
    assert_eq!(link.send_batch(batch.clone()), Err(TransportError::Unreachable(SERVER_STORE_ID)));
    let mut chunks = TestChunks::new(b"data", 4);
    let error = link.send_snapshot(snapshot_message(), &mut chunks).unwrap_err();
    assert_eq!(error, TransportError::Unreachable(SERVER_STORE_ID));

    // Healing: the address now leads to a server; the next attempt after the backoff works.
    resolver.insert(SERVER_STORE_ID, fixture.address());
    assert_eq!(resolver.resolve(SERVER_STORE_ID), Some(fixture.address()));
    assert!(wait_until(WAIT, || link.reachable(SERVER_STORE_ID)), "it reconnects");
    assert!(wait_until(WAIT, || link.send_batch(batch.clone()).is_ok()));
    let arrived =
        wait_until(WAIT, || fixture.recording.messages.lock().unwrap().iter().any(|m| m.region_id == 21));
    assert!(arrived);
}

#[test]
fn a_full_queue_refuses_batches_and_counts_them() {
    let fixture = Fixture::new(|config| config.queue_batches_max = 2);
    // A listener that never accepts: connections hang in its backlog, so nothing leaves
    // the queue.
    let silent = TcpListener::bind("127.0.0.1:0").unwrap();
    let resolver =
        Arc::new(StaticResolver::new([(SERVER_STORE_ID, silent.local_addr().unwrap().to_string())]));
    let link = GrpcLink::new(fixture.config.clone(), 1, resolver, fixture.runtime.handle()).unwrap();
    let before = counter("tessera_transport_queue_full_total", None);
    let batch = RaftMessageBatch {
        from_store_id: 1,
        to_store_id: SERVER_STORE_ID,
        messages: vec![RaftMessage { region_id: 1, start_key: vec![0; 16 << 10], ..Default::default() }],
        ..Default::default()
    };
    let outcomes: Vec<_> = (0..50).map(|_| link.send_batch(batch.clone())).collect();
    assert!(outcomes.contains(&Err(TransportError::Full(SERVER_STORE_ID))), "{outcomes:?}");
    assert!(counter("tessera_transport_queue_full_total", None) > before);
    drop(silent);
}

#[test]
fn a_queue_full_of_bytes_refuses_batches() {
    let fixture = Fixture::new(|config| config.queue_bytes_max = 40 << 10);
    // As above, nothing leaves the queue: the listener never accepts.
    let silent = TcpListener::bind("127.0.0.1:0").unwrap();
    let resolver =
        Arc::new(StaticResolver::new([(SERVER_STORE_ID, silent.local_addr().unwrap().to_string())]));
    let link = GrpcLink::new(fixture.config.clone(), 1, resolver, fixture.runtime.handle()).unwrap();
    let batch = |key_bytes: usize| RaftMessageBatch {
        from_store_id: 1,
        to_store_id: SERVER_STORE_ID,
        messages: vec![RaftMessage { region_id: 1, start_key: vec![0; key_bytes], ..Default::default() }],
        ..Default::default()
    };
    // Two batches of a little over 16 KiB fit in 40 KiB; a third does not, though the queue
    // has room for a thousand batches.
    assert_eq!(link.send_batch(batch(16 << 10)), Ok(()));
    assert_eq!(link.send_batch(batch(16 << 10)), Ok(()));
    assert_eq!(link.send_batch(batch(16 << 10)), Err(TransportError::Full(SERVER_STORE_ID)));
    // A small one still fits.
    assert_eq!(link.send_batch(batch(1 << 10)), Ok(()));
    drop(silent);
}
