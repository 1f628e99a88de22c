//! `tessera node` as an operator starts it: the config file, flags over it, and a bad file.

use std::process::{Command, Output};

const CONFIG: &str = r#"
store_id = 1
data_dir = "/var/lib/tessera/1"
raft_address = "127.0.0.1:20160"
kv_address = "127.0.0.1:20170"

[[peers]]
store_id = 1
raft_address = "127.0.0.1:20160"
"#;

fn tessera_node(config: &str, flags: &[&str]) -> Output {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let path = dir.path().join("node.toml");
    std::fs::write(&path, config).expect("the config file is written");
    Command::new(env!("CARGO_BIN_EXE_tessera"))
        .args(["node", "--config"])
        .arg(&path)
        .args(flags)
        .output()
        .expect("the binary runs")
}

#[test]
fn print_config_shows_the_file_with_the_flags_applied() {
    let output = tessera_node(CONFIG, &["--kv-address", "127.0.0.1:30170", "--print-config"]);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{output:?}");
    assert!(stdout.contains("kv_address = \"127.0.0.1:30170\""), "{stdout}");
    assert!(stdout.contains("raft_address = \"127.0.0.1:20160\""), "{stdout}");
    assert!(stdout.contains("regions_len = 1"), "the default is shown: {stdout}");
}

#[test]
fn an_unknown_key_fails_with_its_name() {
    let output = tessera_node(&format!("colour = \"blue\"\n{CONFIG}"), &["--print-config"]);
    assert_eq!(output.status.code(), Some(1), "{output:?}");
    assert!(String::from_utf8_lossy(&output.stderr).contains("unknown field `colour`"), "{output:?}");
}

#[test]
fn every_scalar_key_and_the_peers_can_be_overridden_by_flags() {
    let flags = [
        "--regions-len",
        "4",
        "--raft-tick-interval-ms",
        "50",
        "--raft-election-ticks",
        "20",
        "--raft-heartbeat-ticks",
        "3",
        "--raft-pool-size",
        "1",
        "--apply-pool-size",
        "2",
        "--runtime-worker-threads",
        "3",
        "--peer",
        "1=127.0.0.1:20160,2=127.0.0.1:21160",
        "--peer",
        "3=127.0.0.1:22160",
        "--print-config",
    ];
    let output = tessera_node(CONFIG, &flags);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{output:?}");
    for line in [
        "regions_len = 4",
        "raft_tick_interval_ms = 50",
        "raft_election_ticks = 20",
        "raft_heartbeat_ticks = 3",
        "raft_pool_size = 1",
        "apply_pool_size = 2",
        "runtime_worker_threads = 3",
        "raft_address = \"127.0.0.1:22160\"",
    ] {
        assert!(stdout.contains(line), "{line} missing from {stdout}");
    }
    let bad_peer = tessera_node(CONFIG, &["--peer", "one=127.0.0.1:1", "--print-config"]);
    assert_eq!(bad_peer.status.code(), Some(2), "clap refuses it as a bad value: {bad_peer:?}");
    let twice = tessera_node(CONFIG, &["--peer", "1=127.0.0.1:1,1=127.0.0.1:2", "--print-config"]);
    assert!(String::from_utf8_lossy(&twice.stderr).contains("twice"), "{twice:?}");
}
