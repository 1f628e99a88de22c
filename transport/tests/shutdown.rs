//! Stopping stores, servers and links leaves no thread behind: a process that restarts its
//! transport (or a test binary that starts many) does not accumulate them. Alone in its
//! binary, so that no other test's threads come and go while it counts.

mod common;

use std::time::Duration;

use common::GrpcCluster;
use tessera_store::cluster::{key_in_region, wait_until};

/// Threads of this process, less RocksDB's: its default environment keeps one pool of
/// background threads per process, started by the first database opened and shared by all.
fn threads_len() -> usize {
    thread_names().iter().filter(|name| !name.starts_with("rocksdb:")).count()
}

fn thread_names() -> Vec<String> {
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else { return Vec::new() };
    tasks
        .filter_map(|task| std::fs::read_to_string(task.ok()?.path().join("comm")).ok())
        .map(|name| name.trim().to_string())
        .collect()
}

#[test]
fn a_stopped_cluster_leaves_no_threads_behind() {
    let before = threads_len();
    {
        let mut cluster = GrpcCluster::new(3, |_| {});
        cluster.start_all();
        cluster.must_put(&key_in_region(1, "a"), b"1");
        let leader = cluster.leader_store(common::WAIT).unwrap();
        let follower = (1..=3).find(|id| *id != leader).unwrap();
        cluster.stop_store(follower);
        cluster.start_store(follower);
        assert!(cluster.wait_for_value(follower, &key_in_region(1, "a"), b"1", common::WAIT));
        assert!(threads_len() > before, "the stores and their transports run threads");
    }
    let back = wait_until(Duration::from_secs(10), || threads_len() <= before);
    assert!(back, "threads remain: {:?}, {before} before the cluster", thread_names());
}
