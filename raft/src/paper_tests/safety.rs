//! Safety (5.4) and checks over whole clusters.

use super::*;

// ==== 5.4: safety ========================================================================

/// Leader Append-Only: "a leader never overwrites or deletes entries in its log; it only
/// appends new entries." An append of its own term (which no correct peer sends) changes
/// nothing.
#[test]
fn leader_never_overwrites_its_log() {
    let mut r = raft_with_log(1, &[1, 2, 3], &[1, 1], 1, 0);
    make_leader(&mut r);
    propose(&mut r, b"x").unwrap();
    persist(&mut r);
    r.msgs.clear();
    let before = r.raft_log.all_entries();
    r.step(append(2, 1, 2, (1, 1), vec![entry(2, 2)], 0)).unwrap();
    assert_eq!(r.role, StateRole::Leader);
    assert_eq!(r.raft_log.all_entries(), before);
    // Rejections and acknowledgements repair followers, never the leader.
    r.step(Message { reject: true, reject_hint: 0, ..append_ack(2, 1, 2, 4) }).unwrap();
    r.step(append_ack(3, 1, 2, 4)).unwrap();
    assert_eq!(r.raft_log.all_entries(), before);
}

/// The election restriction: "a candidate must contact a majority of the cluster in order
/// to be elected, which means that every committed entry must be present in at least one of
/// those servers." A node that missed a committed entry cannot win; one that has it can.
#[test]
fn candidate_with_a_stale_log_cannot_win() {
    let mut net = Network::new(&[1, 2, 3]);
    net.campaign(1);
    net.isolate(3);
    net.propose(1, b"committed");
    assert_eq!(net.node(1).raft_log.committed, 2);
    // The leader goes down; node 3, which missed the entry, campaigns.
    net.recover();
    net.isolate(1);
    net.campaign(3);
    assert_eq!(net.node(3).role, StateRole::Candidate, "node 2 refuses the stale candidate");
    assert_eq!(net.node(2).vote, NONE);
    // Node 2 holds the committed entry and wins; node 3 then gets it.
    net.campaign(2);
    assert_eq!(net.node(2).role, StateRole::Leader);
    for id in [2, 3] {
        assert!(
            net.node(id).raft_log.all_entries().iter().any(|e| e.data.as_ref() == b"committed"),
            "node {id}"
        );
    }
}

/// Leader Completeness: "if a log entry is committed in a given term, then that entry will
/// be present in the logs of the leaders for all higher-numbered terms." Leadership moves
/// around a five-node group with a different minority down each time; every new leader
/// holds every entry committed before it.
#[test]
fn every_leader_has_all_committed_entries() {
    let mut net = Network::new(&[1, 2, 3, 4, 5]);
    let mut committed: Vec<Entry> = Vec::new();
    let rounds: [(u64, [u64; 2]); 6] =
        [(1, [4, 5]), (2, [1, 5]), (3, [1, 2]), (4, [2, 3]), (5, [3, 4]), (1, [2, 5])];
    for (round, (leader, down)) in rounds.iter().enumerate() {
        net.recover();
        for id in down {
            net.isolate(*id);
        }
        // Ties can split a vote; campaigning again in a new term settles it.
        for _ in 0..3 {
            if net.node(*leader).role != StateRole::Leader {
                net.campaign(*leader);
            }
        }
        let l = net.node(*leader);
        assert_eq!(l.role, StateRole::Leader, "round {round}");
        let log = l.raft_log.all_entries();
        assert_eq!(
            log[..committed.len()],
            committed[..],
            "round {round}: leader {leader} lost a committed entry"
        );
        net.propose(*leader, format!("round-{round}").as_bytes());
        let l = net.node(*leader);
        committed = l.raft_log.slice(1, l.raft_log.committed + 1, None).unwrap();
        assert!(committed.iter().any(|e| e.data == format!("round-{round}").as_bytes()), "round {round}");
    }
    let nodes: Vec<&R> = net.nodes.values().collect();
    assert_log_matching(&nodes);
}

// ==== whole-cluster checks ==============================================================

impl Network {
    /// Ticks every node once, in id order, delivering what each tick causes.
    fn tick_all(&mut self) {
        let ids: Vec<u64> = self.nodes.keys().copied().collect();
        for id in ids {
            self.tick(id);
        }
    }
}

/// "In most cases only a single server will time out; it wins the election and sends
/// heartbeats before any other servers time out." Driven by ticks alone, the node with the
/// shortest drawn timeout becomes leader in term 1 and the others follow it.
#[test]
fn first_node_to_time_out_wins_the_election() {
    let mut checked = 0;
    for offset in 0..20u64 {
        let mut net = Network::with_config(&[1, 2, 3], |c| c.random_seed = offset * 100 + c.id);
        let timeouts: BTreeMap<u64, usize> =
            net.nodes.values().map(|r| (r.id, r.randomized_election_ticks)).collect();
        let shortest = *timeouts.values().min().unwrap();
        let first: Vec<u64> = timeouts.iter().filter(|(_, t)| **t == shortest).map(|(id, _)| *id).collect();
        for _ in 0..shortest {
            net.tick_all();
        }
        if first.len() > 1 {
            continue;
        }
        checked += 1;
        let leader = first[0];
        assert_eq!(net.leaders(), [leader], "seed offset {offset}, timeouts {timeouts:?}");
        for r in net.nodes.values() {
            assert_eq!((r.term, r.leader_id), (1, leader), "seed offset {offset}: node {}", r.id);
        }
        // The leader's heartbeats keep the others from ever timing out.
        for _ in 0..5 * ELECTION_TICKS {
            net.tick_all();
        }
        assert_eq!(net.leaders(), [leader]);
        assert!(net.nodes.values().all(|r| r.term == 1), "seed offset {offset}");
    }
    assert!(checked >= 10, "only {checked} runs had a unique shortest timeout");
}

/// Election Safety: "at most one leader can be elected in a given term." Five nodes run on
/// ticks alone through a series of partitions (minorities and majorities cut off, healed);
/// every leader seen is recorded by term. While a majority is connected, it elects a leader.
#[test]
fn election_safety_at_most_one_leader_per_term() {
    let mut net = Network::new(&[1, 2, 3, 4, 5]);
    let mut leader_of_term: BTreeMap<u64, u64> = BTreeMap::new();
    let partitions: [&[u64]; 8] = [&[], &[1, 2], &[3], &[], &[4, 5], &[1], &[2, 3], &[]];
    for (round, down) in partitions.iter().enumerate() {
        net.recover();
        for id in *down {
            net.isolate(*id);
        }
        for _ in 0..5 * ELECTION_TICKS {
            net.tick_all();
            for r in net.nodes.values().filter(|r| r.role == StateRole::Leader) {
                let first = *leader_of_term.entry(r.term).or_insert(r.id);
                assert_eq!(first, r.id, "round {round}: two leaders in term {}", r.term);
            }
        }
        let connected_leaders: Vec<u64> = net.leaders().into_iter().filter(|id| !down.contains(id)).collect();
        assert_eq!(connected_leaders.len(), 1, "round {round}: the majority side elects one leader");
        let leader = connected_leaders[0];
        net.propose(leader, format!("round-{round}").as_bytes());
    }
    assert!(leader_of_term.len() >= 3, "leadership moved: {leader_of_term:?}");
    let nodes: Vec<&R> = net.nodes.values().collect();
    assert_log_matching(&nodes);
}

/// The commit rule seen from the application: the entry appears in `Ready::committed_entries`
/// (to apply) exactly when a majority has stored it, not before.
#[test]
fn committed_entry_is_handed_to_the_application_once_a_majority_stored_it() {
    use crate::{RawNode, Ready};

    /// Handles a Ready as the application must; returns what to send, what to apply.
    fn handle(node: &mut RawNode<MemStorage>, storage: &MemStorage) -> (Vec<String>, Vec<Entry>) {
        let rd: Ready = node.ready();
        let mut out: Vec<String> = rd.messages.iter().map(describe_message).collect();
        storage.wl().append(&rd.entries).unwrap();
        if let Some(hs) = &rd.hard_state {
            storage.wl().set_hard_state(*hs);
        }
        out.extend(rd.persisted_messages.iter().map(describe_message));
        let applied = rd.committed_entries.clone();
        node.advance(rd);
        (out, applied)
    }

    let storage = MemStorage::new_with_voters(&[1, 2, 3]);
    let mut node = RawNode::new(&config(1), storage.clone()).unwrap();
    node.campaign().unwrap();
    let (out, applied) = handle(&mut node, &storage);
    assert_eq!(out, ["1->2 MsgVote Term:1 Log:0/0", "1->3 MsgVote Term:1 Log:0/0"]);
    assert!(applied.is_empty());
    node.step(vote_response(2, 1, 1, true)).unwrap();
    let (out, applied) = handle(&mut node, &storage);
    assert_eq!(
        out,
        [
            "1->2 MsgApp Term:1 Log:0/0 Entries:[1/1 EntryNormal]",
            "1->3 MsgApp Term:1 Log:0/0 Entries:[1/1 EntryNormal]"
        ]
    );
    assert!(applied.is_empty());
    node.step(append_ack(2, 1, 1, 1)).unwrap();
    node.propose(b"x".to_vec()).unwrap();
    let (_, applied) = handle(&mut node, &storage);
    assert_eq!(applied, [entry(1, 1)], "the leader's entry, stored by 1 and 2");
    // The proposal is durable on the leader only: not yet to apply.
    assert!(!node.has_ready() || handle(&mut node, &storage).1.is_empty());
    node.step(append_ack(3, 1, 1, 2)).unwrap();
    let (_, applied) = handle(&mut node, &storage);
    assert_eq!(applied, [data_entry(1, 2, b"x")]);
    assert_eq!(storage.rl().hard_state().commit, 2);
}

/// LESSONS.md #15: the uncommitted-bytes count restarts with each term, as etcd's does. A
/// leader elected again does not count the tail it proposed in its previous term (that
/// term's limit bounded it), and that tail's commit neither drives the count below zero nor
/// leaves it stuck: proposals are refused at the limit and flow again once entries apply.
#[test]
fn uncommitted_bytes_restart_with_the_term_and_never_stick() {
    let mut net = Network::with_config(&[1, 2, 3, 4, 5], |cfg| cfg.uncommitted_bytes_max = 30);
    net.campaign(1);
    for id in [1, 2, 3, 4, 5] {
        apply(net.node_mut(id));
    }
    // Two entries of 10 bytes reach node 2 only: no quorum of 5, so they stay uncommitted.
    for id in [3, 4, 5] {
        net.isolate(id);
    }
    net.propose(1, &[b'a'; 10]);
    net.propose(1, &[b'b'; 10]);
    assert_eq!(net.node(1).uncommitted_bytes(), 20);
    let tail_end = net.node(1).raft_log.last_index();
    assert!(net.node(1).raft_log.committed < tail_end);

    // Node 1 steps down (as a leader that lost its quorum does) and is elected again, in a
    // new term: the count starts over, though the tail it counted is still there (it
    // commits with the new term's entry, and nothing was handed out for applying yet).
    net.recover();
    let term = net.node(1).term;
    net.node_mut(1).become_follower(term, NONE);
    net.campaign(1);
    assert_eq!((net.node(1).role, net.node(1).term), (StateRole::Leader, term + 1));
    assert!(net.node(1).raft_log.committed >= tail_end);
    assert_eq!(net.node(1).uncommitted_bytes(), 0);
    // Handing the tail out for applying takes nothing below zero.
    apply(net.node_mut(1));
    assert_eq!(net.node(1).uncommitted_bytes(), 0);

    // Three more proposals reach the limit, with followers cut off so nothing commits.
    for id in [2, 3, 4, 5] {
        net.isolate(id);
    }
    for data in [b'c', b'd', b'e'] {
        net.propose(1, &[data; 10]);
    }
    assert_eq!(net.node(1).uncommitted_bytes(), 30);
    let refused = propose(net.node_mut(1), &[b'f'; 10]);
    assert!(
        matches!(
            refused,
            Err(crate::Error::ProposalDropped(crate::ProposalDropReason::UncommittedSizeExceeded))
        ),
        "{refused:?}"
    );
    // Once they commit and apply, the count is back to zero and proposals flow.
    net.recover();
    net.node_mut(1).bcast_append();
    let out = take_msgs(net.node_mut(1));
    net.deliver(out);
    apply(net.node_mut(1));
    assert_eq!(net.node(1).uncommitted_bytes(), 0);
    propose(net.node_mut(1), &[b'g'; 10]).unwrap();
}
