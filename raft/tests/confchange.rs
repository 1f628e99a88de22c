//! Tests of the configuration changer: golden files under `testdata/confchange/`, and a
//! randomized test that applies random change sequences and checks the invariants after
//! each step. Rewrite the golden files with `REWRITE=1 cargo test -p tessera-raft --test
//! confchange` and review the diff.
//!
//! A golden command is `simple`, `enter-joint [autoleave=true]` or `leave-joint`; its input
//! lists changes: `v3` makes 3 a voter, `l3` a learner, `r3` removes it, `u3` updates it.

use tessera_raft::confchange::{check_invariants, Changer, ConfChangeError};
use tessera_raft::raftpb::{ConfChangeSingle, ConfChangeType};
use tessera_raft::rng::SeededRng as Rng;
use tessera_raft::tracker::ProgressTracker;

fn parse_changes(input: &str) -> Result<Vec<ConfChangeSingle>, String> {
    input
        .split_whitespace()
        .map(|token| {
            let (kind, id) = token.split_at(1);
            let change_type = match kind {
                "v" => ConfChangeType::AddNode,
                "l" => ConfChangeType::AddLearnerNode,
                "r" => ConfChangeType::RemoveNode,
                "u" => ConfChangeType::UpdateNode,
                other => return Err(format!("unknown change kind {other:?} in {token:?}")),
            };
            let node_id = id.parse().map_err(|e| format!("bad id in {token:?}: {e}"))?;
            Ok(ConfChangeSingle { change_type: change_type as i32, node_id })
        })
        .collect()
}

fn render(tracker: &ProgressTracker) -> String {
    let mut out = format!("{}\n", tracker.config);
    for (id, pr) in &tracker.progress {
        out.push_str(&format!("{id}: {pr}\n"));
    }
    out
}

#[test]
fn golden() {
    datadriven::walk("testdata/confchange", |file| {
        let mut tracker = ProgressTracker::new(10, 0);
        // Each command happens at a later log index, so new peers' next index shows which
        // command added them.
        let mut last_index = 0u64;
        file.run(|tc| -> String {
            last_index += 1;
            let changes = match parse_changes(&tc.input) {
                Ok(changes) => changes,
                Err(e) => return format!("error: {e}\n"),
            };
            let changer = Changer::new(&tracker, last_index);
            let result = match tc.directive.as_str() {
                "simple" => changer.simple(&changes),
                "enter-joint" => {
                    let auto_leave = tc.try_take_arg::<bool>("autoleave").ok().flatten().unwrap_or(false);
                    changer.enter_joint(auto_leave, &changes)
                }
                "leave-joint" => {
                    if !changes.is_empty() {
                        return "error: leave-joint takes no changes\n".to_string();
                    }
                    changer.leave_joint()
                }
                other => return format!("error: unknown command {other}\n"),
            };
            match result {
                Ok((config, progress)) => {
                    tracker.config = config;
                    tracker.progress = progress;
                    render(&tracker)
                }
                Err(e) => format!("error: {e}\n"),
            }
        });
    });
}

fn random_changes(rng: &mut Rng, max: u64) -> Vec<ConfChangeSingle> {
    let kinds = [
        ConfChangeType::AddNode,
        ConfChangeType::AddLearnerNode,
        ConfChangeType::RemoveNode,
        ConfChangeType::UpdateNode,
    ];
    (0..1 + rng.below(max))
        .map(|_| ConfChangeSingle {
            change_type: kinds[rng.below(4) as usize] as i32,
            node_id: 1 + rng.below(7),
        })
        .collect()
}

#[test]
fn random_change_sequences_keep_invariants() {
    for seed in 0..300u64 {
        let mut rng = Rng::new(seed);
        let mut tracker = ProgressTracker::new(10, 0);
        // Bootstrap: one voter, as a new group starts.
        let boot = [ConfChangeSingle { change_type: ConfChangeType::AddNode as i32, node_id: 1 }];
        let (config, progress) = Changer::new(&tracker, 1).simple(&boot).expect("bootstrap");
        tracker.config = config;
        tracker.progress = progress;
        for step in 0..40u64 {
            let before = tracker.config.clone();
            let was_joint = before.voters.is_joint();
            let changer = Changer::new(&tracker, step + 2);
            let (kind, result) = match rng.below(3) {
                0 => ("simple", changer.simple(&random_changes(&mut rng, 2))),
                1 => ("enter-joint", changer.enter_joint(rng.below(2) == 0, &random_changes(&mut rng, 4))),
                _ => ("leave-joint", changer.leave_joint()),
            };
            match result {
                Ok((config, progress)) => {
                    check_invariants(&config, &progress)
                        .unwrap_or_else(|e| panic!("seed {seed} step {step} {kind}: {e}"));
                    assert!(!config.voters.incoming.is_empty(), "seed {seed} step {step}: no voters");
                    match kind {
                        "simple" => {
                            assert!(!was_joint && !config.voters.is_joint(), "seed {seed} step {step}");
                            let diff = before
                                .voters
                                .incoming
                                .ids()
                                .symmetric_difference(config.voters.incoming.ids())
                                .count();
                            assert!(diff <= 1, "seed {seed} step {step}: simple changed {diff} voters");
                        }
                        "enter-joint" => {
                            assert!(!was_joint, "seed {seed} step {step}: entered joint twice");
                            assert_eq!(
                                config.voters.outgoing, before.voters.incoming,
                                "seed {seed} step {step}"
                            );
                        }
                        _ => {
                            assert!(was_joint && !config.voters.is_joint(), "seed {seed} step {step}");
                            assert_eq!(
                                config.voters.incoming, before.voters.incoming,
                                "seed {seed} step {step}"
                            );
                            assert!(!config.auto_leave && config.learners_next.is_empty());
                        }
                    }
                    tracker.config = config;
                    tracker.progress = progress;
                }
                Err(e) => {
                    // A refusal must name a rule the change really breaks.
                    let explained = match &e {
                        ConfChangeError::AlreadyJoint => was_joint,
                        ConfChangeError::NotJoint => !was_joint,
                        ConfChangeError::ZeroVotersJoint => before.voters.incoming.is_empty(),
                        ConfChangeError::RemovesAllVoters | ConfChangeError::MultipleVotersWithoutJoint => {
                            true
                        }
                        other => panic!("seed {seed} step {step} {kind}: unexpected {other}"),
                    };
                    assert!(explained, "seed {seed} step {step} {kind}: unexplained refusal {e}");
                }
            }
            // A refused change leaves the configuration as it was; an accepted one was
            // installed above. Either way the tracker is consistent.
            check_invariants(&tracker.config, &tracker.progress)
                .unwrap_or_else(|e| panic!("seed {seed} step {step}: {e}"));
        }
    }
}
