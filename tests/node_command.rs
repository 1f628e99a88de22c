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
