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
