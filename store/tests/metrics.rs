//! The store records its figures through the `metrics` crate: with a recorder installed,
//! the names the issue lists show up with values after a few writes, and refusals are
//! counted by cause.

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard, OnceLock, PoisonError};
use std::time::Duration;

use metrics_util::debugging::{DebugValue, DebuggingRecorder, Snapshotter};
use metrics_util::MetricKind;
use tessera_store::cluster::{key_in_region, put_command, Cluster};
use tessera_store::{ReadQuery, ReadRequest, StoreError};

const WAIT: Duration = Duration::from_secs(20);

/// The recorder of this test binary (one per process), and the right to use it alone: a
/// snapshot resets the counters, so tests that share a process take turns.
fn recorder() -> (&'static Snapshotter, MutexGuard<'static, ()>) {
    static SNAPSHOTTER: OnceLock<Snapshotter> = OnceLock::new();
    static TURN: Mutex<()> = Mutex::new(());
    let turn = TURN.lock().unwrap_or_else(PoisonError::into_inner);
    let snapshotter = SNAPSHOTTER.get_or_init(|| {
        let recorder = DebuggingRecorder::new();
        let snapshotter = recorder.snapshotter();
        recorder.install().expect("the only recorder of this test binary");
        snapshotter
    });
    // Counts from an earlier test's cluster go with this snapshot.
    let _ = snapshotter.snapshot();
    (snapshotter, turn)
}

#[test]
fn writes_record_rounds_fsyncs_latencies_and_regions() {
    let (snapshotter, _turn) = recorder();

    let mut cluster = Cluster::new(3, 2, 3, |config| {
        config.log_gc_count_threshold = 5;
        config.log_gc_check_ticks = 2;
    });
    cluster.start_all();
    for i in 0..20 {
        cluster.must_put(1, &key_in_region(1, &format!("k{i}")), b"v");
    }
    std::thread::sleep(Duration::from_millis(300));

    let mut seen: HashMap<String, (MetricKind, f64)> = HashMap::new();
    for (key, _, _, value) in snapshotter.snapshot().into_vec() {
        let amount = match value {
            DebugValue::Counter(n) => n as f64,
            DebugValue::Gauge(g) => g.into_inner(),
            DebugValue::Histogram(samples) => samples.len() as f64,
        };
        let entry = seen.entry(key.key().name().to_string()).or_insert((key.kind(), 0.0));
        entry.1 += amount;
    }
    let expect = [
        ("tessera_batch_poll_rounds_total", MetricKind::Counter),
        ("tessera_batch_fsms_per_round", MetricKind::Histogram),
        // Ticks the peers would not act on and apply reports of the applied index alone.
        ("tessera_batch_quiet_messages_handled_total", MetricKind::Counter),
        ("tessera_store_raft_synced_writes_total", MetricKind::Counter),
        ("tessera_store_wal_syncs_total", MetricKind::Counter),
        ("tessera_store_raft_write_duration_seconds", MetricKind::Histogram),
        ("tessera_store_raft_write_batch_bytes", MetricKind::Histogram),
        ("tessera_store_raft_peers_per_write", MetricKind::Histogram),
        ("tessera_store_propose_to_commit_duration_seconds", MetricKind::Histogram),
        ("tessera_store_propose_to_apply_duration_seconds", MetricKind::Histogram),
        ("tessera_store_apply_write_duration_seconds", MetricKind::Histogram),
        ("tessera_store_entries_applied_total", MetricKind::Counter),
        ("tessera_store_proposals_total", MetricKind::Counter),
        ("tessera_store_log_compactions_total", MetricKind::Counter),
        ("tessera_store_regions", MetricKind::Gauge),
    ];
    for (name, kind) in expect {
        let (seen_kind, amount) =
            seen.get(name).unwrap_or_else(|| panic!("{name} is recorded; seen: {:?}", seen.keys()));
        assert_eq!(*seen_kind, kind, "{name}");
        assert!(*amount > 0.0, "{name} has a value");
    }
    // Twenty writes were proposed through the leader of region 1.
    assert!(seen["tessera_store_proposals_total"].1 >= 20.0);
}

/// What a refused request hears, which comes at once.
fn refusal<T>(answer: crossbeam_channel::Receiver<T>) -> T {
    answer.recv_timeout(WAIT).expect("a refusal is answered at once")
}

/// Every kind of busy refusal a cut-off leader can give is counted under its cause; a
/// refusal for too many uncommitted bytes once went uncounted.
#[test]
fn busy_refusals_are_counted_by_cause() {
    let (snapshotter, _turn) = recorder();
    let mut cluster = Cluster::new(3, 1, 3, |config| {
        config.raft_uncommitted_bytes_max = 1024;
        config.proposals_per_peer_max = 2;
    });
    cluster.start_all();
    cluster.must_put(1, &key_in_region(1, "a"), b"1");
    let leader = cluster.leader_store(1, WAIT).expect("a leader");
    let epoch = cluster.region(1, WAIT).expect("the region").epoch;
    cluster.network.isolate(leader);
    let store = cluster.store(leader);
    let propose = |name: &str, value_len: usize| {
        store.propose_and_wait(put_command(1, epoch, &key_in_region(1, name), &vec![b'x'; value_len]))
    };
    // Accepted, and stuck: the leader cannot commit.
    let _first = propose("first", 600);
    let too_big = refusal(propose("second", 600));
    assert!(
        matches!(&too_big, Err(StoreError::ServerIsBusy(why)) if why.contains("uncommitted")),
        "{too_big:?}"
    );
    let _small = propose("small", 10);
    let queued = refusal(propose("third", 10));
    assert!(matches!(&queued, Err(StoreError::ServerIsBusy(why)) if why.contains("waiting")), "{queued:?}");
    let read = |name: &str| {
        let query = ReadQuery::Get { key: key_in_region(1, name) };
        store.read_and_wait(ReadRequest { region_id: 1, region_epoch: epoch, query })
    };
    let _reads = [read("a"), read("a")];
    let reads_full = refusal(read("a"));
    assert!(
        matches!(&reads_full, Err(StoreError::ServerIsBusy(why)) if why.contains("reads")),
        "{reads_full:?}"
    );

    let mut busy_by_cause: HashMap<String, u64> = HashMap::new();
    for (key, _, _, value) in snapshotter.snapshot().into_vec() {
        if key.key().name() != "tessera_store_server_busy_total" {
            continue;
        }
        let DebugValue::Counter(count) = value else { panic!("a counter: {value:?}") };
        let cause = key.key().labels().find(|l| l.key() == "cause").map(|l| l.value().to_string());
        *busy_by_cause.entry(cause.expect("every busy refusal has a cause")).or_default() += count;
    }
    let expected: HashMap<String, u64> =
        [("uncommitted_bytes", 1), ("proposals_waiting", 1), ("reads_pending", 1)]
            .into_iter()
            .map(|(cause, count)| (cause.to_string(), count))
            .collect();
    assert_eq!(busy_by_cause, expected);
}
