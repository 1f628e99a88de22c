//! A three-node group driven through the public API: election, replication, commit.

mod common;

use tessera_raft::raftpb::{Message, MessageType};
use tessera_raft::{Config, MemStorage, RawNode, StateRole};

fn drive(nodes: &mut [RawNode<MemStorage>], storages: &[MemStorage], applied: &mut [Vec<Vec<u8>>]) {
    loop {
        let mut inbox: Vec<Message> = Vec::new();
        let mut any = false;
        for (i, node) in nodes.iter_mut().enumerate() {
            if !node.has_ready() {
                continue;
            }
            any = true;
            let rd = node.ready();
            inbox.extend(rd.messages.iter().cloned());
            common::persist_ready(&storages[i], &rd);
            inbox.extend(rd.persisted_messages.iter().cloned());
            applied[i]
                .extend(rd.committed_entries.iter().filter(|e| !e.data.is_empty()).map(|e| e.data.to_vec()));
            node.advance(rd);
        }
        for m in inbox {
            any = true;
            nodes[(m.to - 1) as usize].step(m).unwrap();
        }
        if !any {
            return;
        }
    }
}

type Applied = Vec<Vec<Vec<u8>>>;

/// Three nodes over their own MemStorage, node 1 elected leader.
fn elected_group() -> (Vec<MemStorage>, Vec<RawNode<MemStorage>>, Applied) {
    let storages: Vec<MemStorage> = (0..3).map(|_| MemStorage::new_with_voters(&[1, 2, 3])).collect();
    let mut nodes: Vec<RawNode<MemStorage>> =
        (0..3).map(|i| RawNode::new(&Config::new(i as u64 + 1), storages[i].clone()).unwrap()).collect();
    let mut applied = vec![Vec::new(); 3];
    nodes[0].campaign().unwrap();
    drive(&mut nodes, &storages, &mut applied);
    assert_eq!(nodes[0].raft().role(), StateRole::Leader);
    (storages, nodes, applied)
}

#[test]
fn three_nodes_elect_and_replicate() {
    let (storages, mut nodes, mut applied) = elected_group();
    assert_eq!(nodes[1].raft().leader_id(), 1);
    for i in 0..10u8 {
        nodes[0].propose(vec![i]).unwrap();
    }
    // A follower forwards its proposal to the leader.
    nodes[2].propose(b"fwd".to_vec()).unwrap();
    drive(&mut nodes, &storages, &mut applied);
    for a in &applied {
        assert_eq!(a.len(), 11, "{applied:?}");
        assert_eq!(a, &applied[0]);
    }
    assert_eq!(nodes[1].raft().raft_log().committed, 12);
}

/// `advance` keeps the emptied message vector of the Ready for reuse, but never at the cost
/// of messages the node produced between `ready` and `advance`: they leave with the next
/// Ready. And proposals made before a Ready leave together, one append per follower.
#[test]
fn messages_made_between_ready_and_advance_are_kept() {
    let (storages, mut nodes, _) = elected_group();

    for payload in [b"a", b"b", b"c"] {
        nodes[0].propose(payload.to_vec()).unwrap();
    }
    let mut rd = nodes[0].ready();
    let appends: Vec<Message> = rd.messages.drain(..).collect();
    assert_eq!(appends.len(), 2, "one append per follower for three proposals: {appends:?}");
    assert!(appends.iter().all(|m| m.entries.len() == 3));
    storages[0].wl().append(&rd.entries).unwrap();
    // A heartbeat round starts before the Ready is advanced.
    nodes[0].tick();
    nodes[0].advance(rd);
    let rd = nodes[0].ready();
    let heartbeats = rd.messages.iter().filter(|m| m.msg_type() == MessageType::MsgHeartbeat).count();
    assert_eq!(heartbeats, 2, "{:?}", rd.messages);
    nodes[0].advance(rd);
}

/// Ticks a node whose Ready has nothing: whether the tick made it act.
fn tick_acts(node: &mut RawNode<MemStorage>) -> bool {
    assert!(!node.has_ready(), "the node is quiet before the tick");
    node.tick();
    node.has_ready()
}

/// `ticks_before_due` is exact: that many ticks pass without any effect beyond the timers,
/// and the next one acts (a leader's heartbeat, a follower's election, a leader's
/// check-quorum round). An application that holds ticks back relies on both halves.
#[test]
fn ticks_before_due_counts_the_ticks_a_node_does_not_act_on() {
    let (storages, mut nodes, mut applied) = elected_group();
    let leader_config = Config::new(1);
    // The leader acts at its next heartbeat.
    let quiet = nodes[0].ticks_before_due();
    assert_eq!(quiet, leader_config.heartbeat_ticks - 1);
    for _ in 0..quiet {
        assert!(!tick_acts(&mut nodes[0]), "a held tick would have mattered");
    }
    assert!(tick_acts(&mut nodes[0]), "the tick after them is the heartbeat");
    let rd = nodes[0].ready();
    assert!(rd.messages.iter().all(|m| m.msg_type() == MessageType::MsgHeartbeat), "{:?}", rd.messages);
    nodes[0].advance(rd);

    // A follower that hears nothing campaigns at its randomized timeout, not a tick sooner.
    drive(&mut nodes, &storages, &mut applied);
    let quiet = nodes[1].ticks_before_due();
    let timeout = nodes[1].raft().randomized_election_ticks();
    assert_eq!(quiet, timeout - nodes[1].raft().election_elapsed() - 1);
    for _ in 0..quiet {
        assert!(!tick_acts(&mut nodes[1]));
    }
    assert!(tick_acts(&mut nodes[1]), "the follower campaigns on the tick after them");
    assert_ne!(nodes[1].raft().role(), StateRole::Follower);
}

/// A leader with check-quorum counts down to its quorum check too, whichever comes first;
/// cut off from its followers, it steps down at a tick `ticks_before_due` said would act.
#[test]
fn a_leaders_ticks_before_due_end_at_its_check_quorum_round() {
    let storages: Vec<MemStorage> = (0..3).map(|_| MemStorage::new_with_voters(&[1, 2, 3])).collect();
    let config =
        |id: u64| Config { check_quorum: true, election_ticks: 10, heartbeat_ticks: 9, ..Config::new(id) };
    let mut nodes: Vec<RawNode<MemStorage>> =
        (0..3).map(|i| RawNode::new(&config(i as u64 + 1), storages[i].clone()).unwrap()).collect();
    let mut applied = vec![Vec::new(); 3];
    nodes[0].campaign().unwrap();
    drive(&mut nodes, &storages, &mut applied);
    assert_eq!(nodes[0].raft().role(), StateRole::Leader);
    let leader = &mut nodes[0];
    let mut due_at_quorum_check = false;
    for _ in 0..30 {
        let quiet = leader.ticks_before_due();
        // After the first heartbeat (tick 9) the quorum check (tick 10) is due first.
        if quiet == 0 && leader.raft().election_elapsed() + 1 == 10 {
            due_at_quorum_check = true;
        }
        let acted = tick_acts(leader) || leader.raft().role() != StateRole::Leader;
        assert!(quiet == 0 || !acted, "a tick acted with {quiet} quiet ticks announced");
        if leader.raft().role() != StateRole::Leader {
            break;
        }
        // The followers never hear the heartbeats, so they never answer.
        if leader.has_ready() {
            let rd = leader.ready();
            leader.advance(rd);
        }
    }
    assert!(due_at_quorum_check, "the quorum check was announced as due");
    assert_eq!(leader.raft().role(), StateRole::Follower, "the second quorum check found no quorum");
}
