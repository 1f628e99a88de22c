//! Golden-file scenario tests for the Raft core.
//!
//! Every file in `raft/testdata/scenarios/*.txt` is a script of commands, each followed by
//! the text it printed. The harness drives real `RawNode`s over `MemStorage` through the
//! public API only, with a network that is a plain queue the script controls, so a trace
//! shows every message, every Ready and every persistence step in order and can be checked
//! by eye against the Raft paper.
//!
//! Running:
//!
//! ```text
//! CARGO_TARGET_DIR=/work/target-scenarios cargo test -p tessera-raft --test scenarios
//! ... cargo test -p tessera-raft --test scenarios figure7   # one file, by test name
//! REWRITE=1 ... cargo test -p tessera-raft --test scenarios   # regenerate the expected text
//! ```
//!
//! Each file is one test, named after it; a new file must be added to the `scenarios!`
//! list below (a test checks the list against the directory).
//!
//! `REWRITE` (the variable the `datadriven` crate reads) overwrites the expected output of
//! every file with what the code prints now. Review the diff like code: a changed trace is a
//! changed protocol.
//!
//! Commands (node ids are bare numbers, in any order; everything else is `name=value`):
//!
//! - `add-nodes N voters=(1,2,3) [learners=(4)] [index=I] [content=X] [log-terms=(1,1,2)]
//!   [term=T] [commit=C] [<config>]`: creates N nodes with the next free ids. `index=I`
//!   starts them from a snapshot at index I (term 1) holding the configuration and the data
//!   `content`; `log-terms` adds entries after it with those terms; `term` and `commit` set
//!   the stored hard state. Config options: `pre-vote check-quorum async-storage-writes
//!   disable-forwarding step-down-on-removal lazy-commit-broadcast` (bools, `=true`),
//!   `read-only=safe|lease` (lease needs `check-quorum=true`) and `election-ticks heartbeat-ticks
//!   inflight-msgs-max inflight-bytes-max msg-bytes-max uncommitted-bytes-max
//!   committed-bytes-per-ready-max lease-margin-ticks`. Every node is seeded with its id,
//!   so randomized timeouts replay exactly. Every node created by one `add-nodes` starts
//!   with the same stored configuration, `voters`/`learners`, including nodes that are in
//!   neither list: such a node is a non-member that a later membership change adds. It
//!   follows the log from the common starting point (no snapshot is needed to join), and
//!   it never campaigns until a change it applies makes it a voter.
//! - `campaign ID`, `propose ID DATA` (or `propose ID size=N` for N bytes of payload),
//!   `propose-batch ID data=(a,b,c)` (or `count=N size=M`): print only errors.
//! - `tick-election ID` ticks until the node's (randomized) election timeout, or on a
//!   leader its check-quorum round, elapses; `tick-heartbeat ID`; `tick ID count=N`.
//! - `process-ready ID...`: takes and handles one Ready per node, in the documented order
//!   (send messages, persist, send persisted messages, apply, advance). With async storage
//!   writes the storage work is queued for the node's append and apply threads instead.
//! - `process-append-thread ID... [count=N]`, `process-apply-thread ID... [count=N]`: perform
//!   (up to N items of) the queued storage work, then deliver its responses (stepped into the node if addressed to
//!   it, else queued on the network).
//! - `deliver-msgs [ID...] [drop=(ids)] [type=MsgApp]`: steps the queued messages addressed
//!   to the listed nodes (all nodes if none and no `drop`), and drops those addressed to the
//!   `drop` nodes. `type` restricts both to one message type.
//! - `stabilize [ID...] [quiet]`: repeats the above until nothing is left to do (`quiet`
//!   hides the trace, for set-up steps shown in full elsewhere).
//! - `propose-conf-change ID [v1] [transition=auto|implicit|explicit]`, with the changes
//!   as words in the input block (between the command and `----`, in order): `v4` adds
//!   voter 4, `l5` adds learner 5 (or demotes voter 5), `r2` removes 2, `u3` updates 3. No
//!   words (with `transition=auto`) proposes leaving a joint configuration. `v1` proposes
//!   the single change as an old-style ConfChange. Prints only errors, typed (Debug) and
//!   in words. When a node applies a committed change, the harness calls
//!   `apply_conf_change`, stores the configuration it returns and prints it (`conf change
//!   T/I applied: Voters:[..]&&[outgoing] Learners:[..]`), or the error. Entries show a
//!   change in the same words (`EntryConfChangeV2 v4 r1`, `leave-joint`).
//! - `transfer-leader ID target=T`: asks node ID (the leader, or a follower that forwards
//!   the request) to hand leadership to T.
//! - `read-index ID ctx=NAME`: requests a linearizable read; the answer shows up as a
//!   `ReadStates:` section of a later Ready. Prints only errors.
//! - `compact ID index=I`: snapshots the node's storage at I and drops the log through I.
//! - `report-unreachable ID peer=P`, `report-snapshot ID peer=P status=ok|fail`,
//!   `snapshot-unavailable ID` (the storage's next snapshot request fails temporarily),
//!   `restart ID` (rebuilds the node from its storage, losing anything unpersisted).
//! - `raft-log ID`, `raft-state`, `status ID`, `applied ID`: print state. `raft-state`
//!   shows each node's role (`Non-member` for a node outside the configuration it knows)
//!   and configuration, and on a leader `Transferee:T` during a leadership transfer and
//!   `Lease:valid|invalid` with lease reads. `status` (the leader's progress of every
//!   peer) adds the same transfer and lease state as lines when they apply.

mod harness;

use std::collections::BTreeSet;

use harness::Env;

/// The crate's directory as the test runner gives it when it starts the test, not as it was
/// when the test was compiled: a build directory shared between checkouts (CI's and ours
/// share one) can hold a test binary compiled in another checkout, since cargo sees nothing
/// to rebuild when only the checkout's path changed.
fn crate_dir() -> String {
    std::env::var("CARGO_MANIFEST_DIR").unwrap_or_else(|_| env!("CARGO_MANIFEST_DIR").to_string())
}

/// Runs one scenario file with a fresh environment.
fn run(name: &str) {
    let path = format!("{}/testdata/scenarios/{name}.txt", crate_dir());
    let mut files = 0;
    datadriven::walk(&path, |file| {
        files += 1;
        let mut env = Env::default();
        file.run(|tc| env.handle(tc));
    });
    // datadriven's RUN variable would make `walk` silently skip a single file: filter by
    // test name instead (`cargo test --test scenarios figure7`).
    assert_eq!(files, 1, "scenario {path} did not run (is RUN set?)");
}

/// One test per scenario file, so that a failure (or a panic in the core) in one scenario
/// does not hide the others.
macro_rules! scenarios {
    ($($name:ident),* $(,)?) => {
        $(
            #[test]
            fn $name() {
                run(stringify!($name));
            }
        )*

        const LISTED: &[&str] = &[$(stringify!($name)),*];
    };
}

scenarios!(
    async_append_aba_race,
    async_crash_restart,
    async_storage_writes,
    check_quorum_step_down,
    committed_entries_pagination,
    confchange_add_voter,
    confchange_demoted_leader_recounts_commit,
    confchange_auto_leave_during_transfer,
    confchange_auto_leave_new_leader,
    confchange_joint_auto_leave,
    confchange_learner_votes,
    confchange_no_campaign_unapplied,
    confchange_promote_demote_joint,
    confchange_refused,
    confchange_remove_leader,
    confchange_remove_leader_step_down,
    confchange_replace_leader,
    confchange_snapshot_joint,
    confchange_snapshot_outgoing_voter,
    confchange_v2_explicit,
    election_dropped_node,
    fast_log_rejection,
    figure7_probe_replicate,
    figure8_commit_rule,
    heartbeat_probe_recovery,
    inflight_bytes_max,
    inflight_msgs_max,
    lazy_commit_broadcast,
    learner_replication,
    msg_bytes_max,
    prevote_checkquorum_no_wedge,
    prevote_election,
    prevote_lagging_rejected,
    prevote_lower_term_rejection,
    prevote_response_term,
    proposal_forwarding,
    read_index_after_removal,
    read_index_demoted_leader,
    read_index_duplicate_ctx,
    read_index_follower,
    read_index_joint,
    read_index_leader,
    read_index_learner,
    read_index_new_leader,
    read_lease,
    read_lease_transfer,
    lease_new_node_keeps_vote_lease,
    read_index_forwarded_to_old_leader,
    read_lease_transfer_aborted,
    read_pending_limit,
    read_pending_limit_postponed,
    read_pending_limit_lease,
    lease_restart_forgets_vote_lease,
    lease_restart_keeps_vote_lease,
    lease_restart_transfer_overrides_vote_lease,
    report_unreachable,
    single_node,
    snapshot_lagging_follower,
    snapshot_report_failure,
    snapshot_unavailable,
    stale_leader_deposed,
    three_node_election,
    transfer_checkquorum_prevote,
    transfer_lagging,
    transfer_repeated,
    transfer_replaced,
    transfer_timeout_abort,
    transfer_to_learner,
    transfer_to_removed,
    transfer_to_self,
    transfer_up_to_date,
    uncommitted_size_limit,
    vote_lease,
);

/// A scenario file that no test runs would rot unnoticed.
#[test]
fn every_scenario_file_is_listed() {
    let on_disk: BTreeSet<String> = std::fs::read_dir(format!("{}/testdata/scenarios", crate_dir()))
        .expect("scenario directory is readable")
        .map(|entry| entry.expect("directory entry").file_name().to_string_lossy().into_owned())
        .filter_map(|name| name.strip_suffix(".txt").map(str::to_string))
        .collect();
    let listed: BTreeSet<String> = LISTED.iter().map(|s| s.to_string()).collect();
    let unlisted: Vec<&String> = on_disk.difference(&listed).collect();
    let missing: Vec<&String> = listed.difference(&on_disk).collect();
    assert!(
        unlisted.is_empty() && missing.is_empty(),
        "files not in the scenarios! list: {unlisted:?}; listed without a file: {missing:?}"
    );
}
