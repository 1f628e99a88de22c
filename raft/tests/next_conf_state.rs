//! `confchange::next_conf_state` computes what a node's own `apply_conf_change` returns, so
//! an application can record the configuration on another thread than the node's.

use tessera_raft::confchange::next_conf_state;
use tessera_raft::raftpb::{ConfChangeSingle, ConfChangeTransition, ConfChangeType, ConfChangeV2, ConfState};
use tessera_raft::{Config, MemStorage, RawNode};

fn change(change_type: ConfChangeType, node_id: u64) -> ConfChangeSingle {
    ConfChangeSingle { change_type: change_type as i32, node_id }
}

fn cc(transition: ConfChangeTransition, changes: Vec<ConfChangeSingle>) -> ConfChangeV2 {
    ConfChangeV2 { transition: transition as i32, changes, context: Vec::new() }
}

#[test]
fn it_agrees_with_the_node_over_a_sequence_of_changes() {
    use ConfChangeTransition::*;
    use ConfChangeType::*;
    let storage = MemStorage::new_with_voters(&[1, 2, 3]);
    let mut node = RawNode::new(&Config::new(1), storage).unwrap();
    let mut conf_state = ConfState { voters: vec![1, 2, 3], ..Default::default() };
    let steps = vec![
        cc(Auto, vec![change(AddLearnerNode, 4)]),
        cc(Auto, vec![change(AddNode, 4)]),
        // Two voters at once: joint, left automatically by an empty change.
        cc(Auto, vec![change(RemoveNode, 2), change(AddNode, 5)]),
        cc(Auto, vec![]),
        // Explicit joint with a demotion, left by an empty change.
        cc(JointExplicit, vec![change(AddLearnerNode, 3), change(AddNode, 6)]),
        cc(Auto, vec![]),
        cc(Auto, vec![change(RemoveNode, 3)]),
    ];
    for step in steps {
        let expected = node.apply_conf_change(&step).unwrap();
        let computed = next_conf_state(&conf_state, &step).unwrap();
        assert_eq!(computed, expected, "after {step:?}");
        conf_state = computed;
    }
    assert_eq!(conf_state.voters, vec![1, 4, 5, 6]);
    assert!(conf_state.learners.is_empty() && !conf_state.is_joint());
}

#[test]
fn it_refuses_what_the_node_refuses() {
    let conf_state = ConfState { voters: vec![1, 2, 3], ..Default::default() };
    let two_voters = cc(
        ConfChangeTransition::Auto,
        vec![change(ConfChangeType::RemoveNode, 1), change(ConfChangeType::RemoveNode, 2)],
    );
    // Auto with two changes is joint, which is allowed; leaving a config that is not joint
    // is not.
    assert!(next_conf_state(&conf_state, &two_voters).is_ok());
    assert!(next_conf_state(&conf_state, &cc(ConfChangeTransition::Auto, vec![])).is_err());
}
