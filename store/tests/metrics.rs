//! The store records its figures through the `metrics` crate: with a recorder installed,
//! the names the issue lists show up with values after a few writes.

use std::collections::HashMap;
use std::time::Duration;

use metrics_util::debugging::{DebugValue, DebuggingRecorder};
use metrics_util::MetricKind;
use tessera_store::cluster::{key_in_region, Cluster};

#[test]
fn writes_record_rounds_fsyncs_latencies_and_regions() {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    recorder.install().expect("the only recorder of this test binary");

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
        ("tessera_store_raft_fsyncs_total", MetricKind::Counter),
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
