//! `tessera local` as an operator runs it: the built binary, from a fresh data directory,
//! for a few seconds.

use std::io::Read;
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

/// Start-up, the demo, three seconds of serving and the shutdown, with room for a loaded
/// CI machine.
const RUN_DEADLINE: Duration = Duration::from_secs(60);

/// Kills the child when the test fails before it exits, so that no cluster outlives it.
struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn local_runs_the_demo_prints_endpoints_and_exits_cleanly() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let child = Command::new(env!("CARGO_BIN_EXE_tessera"))
        .args(["local", "--duration", "5", "--keys", "60", "--dir"])
        .arg(dir.path())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the binary starts");
    let mut child = KillOnDrop(child);
    // Drained on threads of their own: a child blocked on a full pipe would never exit.
    let mut stdout = child.0.stdout.take().expect("piped stdout");
    let mut stderr = child.0.stderr.take().expect("piped stderr");
    let stdout = thread::spawn(move || {
        let mut text = String::new();
        stdout.read_to_string(&mut text).map(|_| text)
    });
    let stderr = thread::spawn(move || {
        let mut text = String::new();
        stderr.read_to_string(&mut text).map(|_| text)
    });

    let deadline = Instant::now() + RUN_DEADLINE;
    let status = loop {
        if let Some(status) = child.0.try_wait().expect("the child's status") {
            break status;
        }
        assert!(Instant::now() < deadline, "tessera local still running after {RUN_DEADLINE:?}");
        thread::sleep(Duration::from_millis(50));
    };
    let stdout = stdout.join().expect("the stdout reader").expect("utf-8 stdout");
    let stderr = stderr.join().expect("the stderr reader").expect("utf-8 stderr");
    let output = format!("stdout:\n{stdout}\nstderr:\n{stderr}");
    assert!(status.success(), "exit status {status}\n{output}");

    for store_id in 1..=3 {
        let line = stdout
            .lines()
            .find(|line| line.trim_start().starts_with(&format!("node {store_id}: kv 127.0.0.1:")))
            .unwrap_or_else(|| panic!("no endpoints of node {store_id}\n{output}"));
        assert!(line.contains("raft 127.0.0.1:"), "no raft endpoint of node {store_id}\n{output}");
    }
    assert!(stdout.contains("demo: ok: wrote 60 keys and read all 60 back"), "{output}");
    assert!(stdout.contains("stopping (--duration elapsed)"), "{output}");
    assert!(stdout.trim_end().ends_with("stopped"), "{output}");
    for store_id in 1..=3 {
        assert!(dir.path().join(format!("node-{store_id}")).is_dir(), "no data of node {store_id}");
    }
}
