//! Membership change, leadership transfer and reads through the public API, on a group
//! driven to quiescence after each step.

mod common;

use tessera_raft::raftpb::{ConfChangeSingle, ConfChangeType, ConfChangeV2, EntryType, Message};
use tessera_raft::{conf_change_of, Config, MemStorage, RawNode, ReadOnlyOption, StateRole};

struct Group {
    nodes: Vec<Option<RawNode<MemStorage>>>,
    storages: Vec<MemStorage>,
    applied: Vec<Vec<Vec<u8>>>,
    reads: Vec<Vec<(u64, Vec<u8>)>>,
}

impl Group {
    fn new(voters: &[u64], total: u64, config: impl Fn(u64) -> Config) -> Group {
        let mut group =
            Group { nodes: Vec::new(), storages: Vec::new(), applied: Vec::new(), reads: Vec::new() };
        for id in 1..=total {
            // Every node starts from the group's initial configuration, which lives in
            // storage rather than in the log; the others join it through the log.
            let storage = MemStorage::new_with_voters(voters);
            let node = voters.contains(&id).then(|| RawNode::new(&config(id), storage.clone()).unwrap());
            group.nodes.push(node);
            group.storages.push(storage);
            group.applied.push(Vec::new());
            group.reads.push(Vec::new());
        }
        group
    }

    fn node(&mut self, id: u64) -> &mut RawNode<MemStorage> {
        self.nodes[(id - 1) as usize].as_mut().unwrap()
    }

    fn settle(&mut self, config: &impl Fn(u64) -> Config) {
        for _ in 0..1000 {
            let mut inbox: Vec<Message> = Vec::new();
            for i in 0..self.nodes.len() {
                let Some(node) = self.nodes[i].as_mut() else { continue };
                if !node.has_ready() {
                    continue;
                }
                let rd = node.ready();
                inbox.extend(rd.messages.iter().cloned());
                common::persist_ready(&self.storages[i], &rd);
                inbox.extend(rd.persisted_messages.iter().cloned());
                for rs in &rd.read_states {
                    self.reads[i].push((rs.index, rs.request_ctx.to_vec()));
                }
                for e in &rd.committed_entries {
                    if e.entry_type() == EntryType::EntryNormal {
                        if !e.data.is_empty() {
                            self.applied[i].push(e.data.to_vec());
                        }
                    } else {
                        let cc = conf_change_of(e).unwrap().unwrap();
                        let cs = node
                            .apply_conf_change(&cc)
                            .unwrap_or_else(|e| panic!("node {} applying {cc:?}: {e}", i + 1));
                        self.storages[i].wl().set_conf_state(cs);
                    }
                }
                node.advance(rd);
            }
            if inbox.is_empty() {
                return;
            }
            for m in inbox {
                let to = (m.to - 1) as usize;
                if self.nodes[to].is_none() {
                    // A node added by a membership change starts when first contacted.
                    self.nodes[to] = Some(RawNode::new(&config(m.to), self.storages[to].clone()).unwrap());
                }
                let _ = self.nodes[to].as_mut().unwrap().step(m);
            }
        }
        panic!("the group did not settle");
    }
}

fn add(id: u64) -> ConfChangeSingle {
    ConfChangeSingle { change_type: ConfChangeType::AddNode as i32, node_id: id }
}

#[test]
fn add_voters_jointly_transfer_and_read() {
    let config = |id| Config { check_quorum: true, pre_vote: true, ..Config::new(id) };
    let mut g = Group::new(&[1, 2, 3], 5, config);
    g.node(1).campaign().unwrap();
    g.settle(&config);
    assert_eq!(g.node(1).raft().role(), StateRole::Leader);

    // Two voters at once: joint consensus, left automatically.
    let cc = ConfChangeV2 { changes: vec![add(4), add(5)], ..Default::default() };
    g.node(1).propose_conf_change(Vec::new(), cc.clone()).unwrap();
    // A second change while the first is pending is refused with a typed error.
    let err = g.node(1).propose_conf_change(Vec::new(), cc).unwrap_err();
    assert!(err.to_string().contains("pending"), "{err}");
    g.settle(&config);
    let voters = &g.node(1).raft().tracker().config;
    assert!(!voters.voters.is_joint(), "auto-leave happened: {voters}");
    assert_eq!(voters.voters.incoming.ids().len(), 5);

    g.node(1).propose(b"x".to_vec()).unwrap();
    g.settle(&config);
    assert_eq!(g.applied[4], vec![b"x".to_vec()], "node 5 joined and applied");

    // Hand leadership to 4, which campaigns at once.
    g.node(2).transfer_leader(4).unwrap();
    g.settle(&config);
    assert_eq!(g.node(4).raft().role(), StateRole::Leader);
    assert_eq!(g.node(1).raft().leader_id(), 4);

    // A read on a follower is forwarded and confirmed by a heartbeat round.
    g.node(4).propose(b"y".to_vec()).unwrap();
    g.settle(&config);
    g.node(2).read_index(b"r1".to_vec()).unwrap();
    g.node(2).read_index(b"r2".to_vec()).unwrap();
    g.settle(&config);
    let committed = g.node(4).raft().raft_log().committed;
    assert_eq!(g.reads[1], vec![(committed, b"r1".to_vec()), (committed, b"r2".to_vec())]);
}

#[test]
fn lease_reads_skip_the_round_while_the_lease_holds() {
    let config =
        // Nodes that stand for long-running ones: no vote lease kept from start, so that
        // node 1 may campaign at once.
        |id| Config {
            check_quorum: true,
            read_only_option: ReadOnlyOption::LeaseBased,
            vote_lease_at_start: false,
            ..Config::new(id)
        };
    let mut g = Group::new(&[1, 2, 3], 3, config);
    g.node(1).campaign().unwrap();
    g.settle(&config);
    // No lease yet: the first read needs a heartbeat round, which also starts the lease.
    g.node(1).read_index(b"a".to_vec()).unwrap();
    let rd = g.node(1).ready();
    assert!(rd.read_states.is_empty());
    let heartbeats: Vec<Message> = rd.messages.clone();
    assert!(heartbeats.iter().all(|m| m.msg_type() == tessera_raft::raftpb::MessageType::MsgHeartbeat));
    assert_eq!(heartbeats.len(), 2);
    g.node(1).advance(rd);
    for m in heartbeats {
        let to = m.to;
        g.node(to).step(m).unwrap();
    }
    g.settle(&config);
    assert_eq!(g.reads[0].len(), 1);
    // With the lease, the answer is immediate: no message at all.
    g.node(1).read_index(b"b".to_vec()).unwrap();
    let rd = g.node(1).ready();
    assert_eq!(rd.read_states.len(), 1);
    assert!(rd.messages.is_empty());
    g.node(1).advance(rd);
    // Cut off from its followers for most of an election timeout (heartbeats dropped), the
    // leader still leads (check-quorum has not run yet) but its lease has run out.
    for _ in 0..9 {
        g.node(1).tick();
        let rd = g.node(1).ready();
        g.node(1).advance(rd);
    }
    assert_eq!(g.node(1).raft().role(), StateRole::Leader);
    g.node(1).read_index(b"c".to_vec()).unwrap();
    let rd = g.node(1).ready();
    assert!(rd.read_states.is_empty(), "the lease expired, so the read waits for a round");
    g.node(1).advance(rd);
}

#[test]
fn transfer_without_a_known_leader_is_refused() {
    let config = |id| Config::new(id);
    let mut g = Group::new(&[1, 2, 3], 3, config);
    let err = g.node(2).transfer_leader(3).unwrap_err();
    assert!(
        matches!(err, tessera_raft::Error::ProposalDropped(tessera_raft::ProposalDropReason::NoLeader)),
        "{err}"
    );
}

#[test]
fn an_expired_lease_is_not_renewed_by_rounds_started_before_it_expired() {
    let config =
        // Nodes that stand for long-running ones: no vote lease kept from start, so that
        // node 1 may campaign at once.
        |id| Config {
            check_quorum: true,
            read_only_option: ReadOnlyOption::LeaseBased,
            vote_lease_at_start: false,
            ..Config::new(id)
        };
    let mut g = Group::new(&[1, 2, 3], 3, config);
    g.node(1).campaign().unwrap();
    g.settle(&config);
    // A round goes out (for read "a"); its acknowledgements are held back.
    g.node(1).read_index(b"a".to_vec()).unwrap();
    let rd = g.node(1).ready();
    let heartbeats: Vec<Message> = rd.messages.clone();
    g.node(1).advance(rd);
    let mut acks = Vec::new();
    for m in heartbeats {
        let to = m.to;
        g.node(to).step(m).unwrap();
        let rd = g.node(to).ready();
        acks.extend(rd.messages.iter().filter(|m| m.to == 1).cloned());
        g.node(to).advance(rd);
    }
    assert_eq!(acks.len(), 2);
    // The application stops the leader's clock (it hibernates) and expires the lease; the
    // old round's acks arrive later, after a pause no tick measured.
    g.node(1).expire_lease();
    for ack in acks {
        g.node(1).step(ack).unwrap();
    }
    g.settle(&config);
    assert_eq!(g.reads[0].len(), 1, "the old round still confirms the read it carried");
    assert!(!g.node(1).raft().lease_valid(), "but it does not renew the lease");
    // A round started after the expiry renews it.
    g.node(1).read_index(b"b".to_vec()).unwrap();
    g.settle(&config);
    assert_eq!(g.reads[0].len(), 2);
    assert!(g.node(1).raft().lease_valid());
    g.node(1).read_index(b"c".to_vec()).unwrap();
    let rd = g.node(1).ready();
    assert_eq!(rd.read_states.len(), 1, "the renewed lease answers at once");
    g.node(1).advance(rd);
}

/// With lease reads, a campaign asked for inside the vote lease is refused whether the
/// application calls `campaign` or steps a `MsgHup` of its own; once the node has ticked an
/// election timeout it campaigns.
#[test]
fn a_campaign_inside_the_vote_lease_is_refused_however_it_is_asked() {
    let config =
        Config { check_quorum: true, read_only_option: ReadOnlyOption::LeaseBased, ..Config::new(1) };
    let mut node = RawNode::new(&config, MemStorage::new_with_voters(&[1, 2, 3])).unwrap();
    let hup = Message {
        msg_type: tessera_raft::raftpb::MessageType::MsgHup as i32,
        from: 1,
        to: 1,
        ..Default::default()
    };
    assert!(matches!(node.campaign(), Err(tessera_raft::Error::CampaignInVoteLease)));
    assert!(matches!(node.step(hup.clone()), Err(tessera_raft::Error::CampaignInVoteLease)));
    assert_eq!(node.raft().role(), StateRole::Follower);
    for _ in 0..config.election_ticks - 1 {
        node.tick();
    }
    assert!(matches!(node.step(hup.clone()), Err(tessera_raft::Error::CampaignInVoteLease)));
    node.tick();
    node.step(hup).unwrap();
    assert_eq!(node.raft().role(), StateRole::Candidate);
}
