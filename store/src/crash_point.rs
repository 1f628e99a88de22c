//! Crash points: moments at which a test has a store's process killed, as `kill -9` would
//! kill it there, to check what a restart finds (`tests/crash.rs`). A point acts only when
//! the environment variable `TESSERA_CRASH_AT` names it exactly; the variable is read once,
//! and an unarmed check costs one load. Like `Store::fail_writes`, this is test support
//! compiled into every build (a cargo feature would give tests a build of their own); do
//! not set the variable for a store you run.

use std::sync::OnceLock;
use std::time::Duration;

/// The environment variable that arms a crash point, by name.
pub const CRASH_AT_VAR: &str = "TESSERA_CRASH_AT";
/// Optional: the store whose reaching the point kills the process; unset, any store's
/// does. A process that runs several stores picks the one it means.
pub const CRASH_STORE_VAR: &str = "TESSERA_CRASH_STORE";

/// A raft round that installs a snapshot, once its batch is staged and before its write.
pub const SNAPSHOT_INSTALL_BEFORE_WRITE: &str = "snapshot-install-before-write";
/// A raft round that installs a snapshot, right after its write, before the staged file is
/// removed and the apply FSM hears of the install.
pub const SNAPSHOT_INSTALL_AFTER_WRITE: &str = "snapshot-install-after-write";

/// The armed point, and the store it is armed for (None: any).
fn armed() -> Option<(&'static str, Option<u64>)> {
    static ARMED: OnceLock<Option<(String, Option<u64>)>> = OnceLock::new();
    ARMED
        .get_or_init(|| {
            let point = std::env::var(CRASH_AT_VAR).ok()?;
            let store_id = std::env::var(CRASH_STORE_VAR).ok().and_then(|v| v.parse().ok());
            Some((point, store_id))
        })
        .as_ref()
        .map(|(point, store_id)| (point.as_str(), *store_id))
}

/// Kills this process with SIGKILL if `point` is armed for `store_id` and `reached()` says
/// this is the moment. The calling thread never returns: it waits for the signal, so that
/// nothing it would do next happens. No destructor runs, nothing is flushed.
pub(crate) fn crash_if_armed(point: &str, store_id: u64, reached: impl FnOnce() -> bool) {
    let Some((armed_point, armed_store)) = armed() else { return };
    if armed_point != point || armed_store.is_some_and(|s| s != store_id) || !reached() {
        return;
    }
    eprintln!("crash point {point}: killing process {}", std::process::id());
    let killed =
        std::process::Command::new("sh").args(["-c", &format!("kill -9 {}", std::process::id())]).status();
    if killed.is_err() {
        // No shell to send the signal: an abort stops the process as abruptly.
        std::process::abort();
    }
    loop {
        std::thread::sleep(Duration::from_secs(1));
    }
}
