//! Log replication (5.3) and committing entries from previous terms (5.4.2, Figure 8).

use super::*;

// ==== 5.3: log replication ===============================================================

/// "The leader appends the command to its log as a new entry, then issues AppendEntries
/// RPCs in parallel to each of the other servers to replicate the entry."
#[test]
fn leader_appends_proposal_and_sends_append_entries() {
    let mut r = new_raft(1, &[1, 2, 3]);
    make_leader(&mut r);
    // The followers have the empty entry; the leader is replicating to them.
    r.step(append_ack(2, 1, 1, 1)).unwrap();
    r.step(append_ack(3, 1, 1, 1)).unwrap();
    persist(&mut r);
    r.msgs.clear();
    propose(&mut r, b"x").unwrap();
    assert_eq!(r.raft_log.all_entries(), [entry(1, 1), data_entry(1, 2, b"x")]);
    assert_eq!(
        sent(&mut r),
        [
            "1->2 MsgApp Term:1 Log:1/1 Commit:1 Entries:[1/2 EntryNormal \"x\"]",
            "1->3 MsgApp Term:1 Log:1/1 Commit:1 Entries:[1/2 EntryNormal \"x\"]",
        ]
    );
    assert_eq!(r.raft_log.committed, 1, "not committed before a majority stores it");
}

/// "A log entry is committed once the leader that created the entry has replicated it on a
/// majority of the servers", and the leader then applies it.
#[test]
fn leader_commits_and_applies_once_a_majority_stored_the_entry() {
    let cases: &[(usize, &[u64], bool)] = &[
        (1, &[], true),
        (3, &[], false),
        (3, &[2], true),
        (3, &[2, 3], true),
        (5, &[2], false),
        (5, &[2, 3], true),
        (5, &[2, 3, 4, 5], true),
    ];
    for (size, acks, commits) in cases {
        let peers: Vec<u64> = (1..=*size as u64).collect();
        let mut r = new_raft(1, &peers);
        make_leader(&mut r);
        propose(&mut r, b"x").unwrap();
        persist(&mut r);
        assert_eq!(r.trk.progress[&1].matched, 2, "the leader's own write counts");
        for from in *acks {
            r.step(append_ack(*from, 1, 1, 2)).unwrap();
        }
        let ctx = format!("size {size} acks {acks:?}");
        assert_eq!(r.raft_log.committed, if *commits { 2 } else { 0 }, "{ctx}");
        let applied = apply(&mut r);
        if *commits {
            assert_eq!(applied, [entry(1, 1), data_entry(1, 2, b"x")], "{ctx}");
            assert_eq!(r.raft_log.applied, 2);
        } else {
            assert!(applied.is_empty(), "{ctx}");
        }
    }
}

/// Only durable entries count: the leader's own unpersisted entry is not one of the
/// majority, so a single follower acknowledgement in a three-node group is not enough.
#[test]
fn leader_counts_its_own_entry_only_once_it_is_durable() {
    let mut r = new_raft(1, &[1, 2, 3]);
    make_leader(&mut r);
    r.step(append_ack(2, 1, 1, 1)).unwrap();
    assert_eq!(r.raft_log.committed, 1);
    propose(&mut r, b"x").unwrap();
    r.step(append_ack(2, 1, 1, 2)).unwrap();
    assert_eq!(r.raft_log.committed, 1, "only the follower has it durably so far");
    persist(&mut r);
    assert_eq!(r.raft_log.committed, 2);
}

/// "The leader keeps track of the highest index it knows to be committed, and it includes
/// that index in future AppendEntries RPCs (including heartbeats) so that the other servers
/// eventually find out. Once a follower learns that a log entry is committed, it applies the
/// entry to its local state machine."
#[test]
fn followers_learn_commit_index_and_apply() {
    let ents = vec![data_entry(1, 1, b"a"), data_entry(1, 2, b"b"), data_entry(1, 3, b"c")];
    for commit in [0, 1, 2, 3, 9] {
        let mut r = new_raft(2, &[1, 2, 3]);
        r.become_follower(1, 1);
        r.step(append(1, 2, 1, (0, 0), ents.clone(), commit)).unwrap();
        // Never beyond what this append proves we hold.
        let want = commit.min(3);
        assert_eq!(r.raft_log.committed, want, "leader commit {commit}");
        assert_eq!(apply(&mut r), ents[..want as usize], "leader commit {commit}");
        assert_eq!(sent(&mut r), ["2->1 MsgAppResp Term:1 Log:0/3"]);
    }
    // A heartbeat carries the commit index too.
    let mut r = new_raft(2, &[1, 2, 3]);
    r.become_follower(1, 1);
    r.step(append(1, 2, 1, (0, 0), ents.clone(), 1)).unwrap();
    r.step(Message { commit: 3, ..msg(MessageType::MsgHeartbeat, 1, 2, 1) }).unwrap();
    assert_eq!(r.raft_log.committed, 3);
    assert_eq!(apply(&mut r), ents);
}

/// Followers in a cluster end up with the leader's commit index and apply the same entries.
#[test]
fn committed_entries_reach_every_follower() {
    let mut net = Network::new(&[1, 2, 3]);
    net.campaign(1);
    net.propose(1, b"a");
    net.propose(1, b"b");
    // The last commit index travels with the next heartbeat.
    net.step_local(1, msg(MessageType::MsgBeat, 1, 1, 0));
    for id in [1, 2, 3] {
        let r = net.node_mut(id);
        assert_eq!(r.raft_log.committed, 3, "node {id}");
        let data: Vec<Vec<u8>> = apply(r).into_iter().map(|e| e.data.to_vec()).collect();
        assert_eq!(data, [b"".to_vec(), b"a".to_vec(), b"b".to_vec()], "node {id}");
    }
}

/// "This also commits all preceding entries in the leader's log, including entries created
/// by previous leaders."
#[test]
fn leader_commits_preceding_entries_of_earlier_terms() {
    let logs: &[&[u64]] = &[&[], &[2], &[1, 1], &[1, 2]];
    for terms in logs {
        let mut r = raft_with_log(1, &[1, 2, 3], terms, 2, 0);
        make_leader(&mut r); // term 3
        propose(&mut r, b"x").unwrap();
        persist(&mut r);
        let last = r.raft_log.last_index();
        r.step(append_ack(2, 1, 3, last)).unwrap();
        assert_eq!(r.raft_log.committed, last, "log {terms:?}");
        let mut want = log_of(terms);
        want.push(entry(3, terms.len() as u64 + 1));
        want.push(data_entry(3, terms.len() as u64 + 2, b"x"));
        assert_eq!(apply(&mut r), want, "log {terms:?}");
    }
}

/// "If the follower does not find an entry in its log with the same index and term, then it
/// refuses the new entries", with a hint where its log may match.
#[test]
fn follower_rejects_append_when_previous_entry_does_not_match() {
    // The follower's log is 1/1 2/2 3/3.
    let cases = [
        // (previous term, previous index): the answer.
        ((0, 0), "2->1 MsgAppResp Term:4 Log:0/1"),
        ((1, 1), "2->1 MsgAppResp Term:4 Log:0/2"),
        ((2, 2), "2->1 MsgAppResp Term:4 Log:0/3"),
        ((3, 3), "2->1 MsgAppResp Term:4 Log:0/4"),
        // Term mismatch at an index we have: hint the last entry not above the leader's term.
        ((3, 2), "2->1 MsgAppResp Term:4 Log:2/2 Rejected (Hint: 2)"),
        ((2, 3), "2->1 MsgAppResp Term:4 Log:2/3 Rejected (Hint: 2)"),
        ((1, 3), "2->1 MsgAppResp Term:4 Log:1/3 Rejected (Hint: 1)"),
        // An index past our log: hint our last entry.
        ((3, 4), "2->1 MsgAppResp Term:4 Log:3/4 Rejected (Hint: 3)"),
        ((4, 9), "2->1 MsgAppResp Term:4 Log:3/9 Rejected (Hint: 3)"),
    ];
    for (prev, want) in cases {
        let mut r = raft_with_log(2, &[1, 2, 3], &[1, 2, 3], 3, 0);
        r.step(append(1, 2, 4, prev, vec![entry(4, prev.1 + 1)], 0)).unwrap();
        assert_eq!(sent(&mut r), [want], "previous {prev:?}");
        let rejected = want.contains("Rejected");
        let want_log: Vec<u64> =
            if rejected { vec![1, 2, 3] } else { [&[1u64, 2, 3][..prev.1 as usize], &[4u64][..]].concat() };
        assert_eq!(log_terms(&r), want_log, "previous {prev:?}");
    }
}

/// "If an existing entry conflicts with a new one (same index but different terms), delete
/// the existing entry and all that follow it; append any new entries not already in the
/// log." Entries the follower already has are kept, so a late duplicate of an older append
/// cannot cut off what a newer one added.
#[test]
fn follower_deletes_conflicting_entries_and_appends_new_ones() {
    // The follower's log is 1/1 2/2.
    // ((previous term, previous index), new entries as (term, index), resulting log terms)
    type Case = ((u64, u64), &'static [(u64, u64)], &'static [u64]);
    let cases: &[Case] = &[
        ((2, 2), &[(3, 3)], &[1, 2, 3]),
        ((1, 1), &[(3, 2), (4, 3)], &[1, 3, 4]),
        ((0, 0), &[(1, 1)], &[1, 2]),
        ((0, 0), &[(1, 1), (2, 2)], &[1, 2]),
        ((1, 1), &[], &[1, 2]),
        ((0, 0), &[(3, 1)], &[3]),
        ((1, 1), &[(2, 2), (4, 3)], &[1, 2, 4]),
    ];
    for (prev, new, want) in cases {
        let mut r = raft_with_log(2, &[1, 2, 3], &[1, 2], 2, 0);
        let entries = new.iter().map(|(t, i)| entry(*t, *i)).collect();
        r.step(append(1, 2, 4, *prev, entries, 0)).unwrap();
        assert_eq!(log_terms(&r), *want, "previous {prev:?} new {new:?}");
        let answer = sent(&mut r);
        let last_new = prev.1 + new.len() as u64;
        assert_eq!(
            answer,
            [format!("2->1 MsgAppResp Term:4 Log:0/{last_new}")],
            "previous {prev:?} new {new:?}"
        );
        // What the follower acknowledged is durable.
        let store = &r.raft_log.store;
        let stored = store.entries(1, store.last_index().unwrap() + 1, None).unwrap();
        assert_eq!(stored.iter().map(|e| e.term).collect::<Vec<_>>(), *want);
    }
}

/// An append that reaches below the follower's commit index cannot conflict with it (the
/// committed prefix matches any leader's); the follower just reports how far it has
/// committed, so the leader skips ahead.
#[test]
fn follower_answers_append_below_its_commit_index_with_its_commit() {
    let mut r = raft_with_log(2, &[1, 2, 3], &[1, 1, 1], 1, 3);
    r.step(append(1, 2, 2, (1, 1), vec![entry(1, 2)], 3)).unwrap();
    assert_eq!(sent(&mut r), ["2->1 MsgAppResp Term:2 Log:0/3"]);
    assert_eq!(log_terms(&r), [1, 1, 1]);
}

/// Figure 7: "When the leader at the top comes to power, it is possible that any of
/// scenarios (a-f) could occur in follower logs." The leader (term 8, log 1 1 1 4 4 5 5 6 6
/// 6) finds where each follower's log matches, overwrites what conflicts, and brings the
/// follower to exactly its own log; the leader's own log only grows.
fn check_figure_7(follower_terms: &[u64]) {
    let leader_terms = [1, 1, 1, 4, 4, 5, 5, 6, 6, 6];
    let mut leader = raft_with_log(1, &[1, 2], &leader_terms, 7, 0);
    let follower_term = *follower_terms.last().unwrap();
    let follower = raft_with_log(2, &[1, 2], follower_terms, follower_term, 0);
    leader.become_candidate();
    assert_eq!(leader.term, 8);
    leader.become_leader();
    leader.bcast_append();
    let out = take_msgs(&mut leader);
    let mut net = Network::from_rafts(vec![leader, follower]);
    net.deliver(out);

    let mut want = leader_terms.to_vec();
    want.push(8);
    let (leader, follower) = (net.node(1), net.node(2));
    assert_eq!(log_terms(leader), want, "the leader's log is append-only");
    assert_eq!(log_terms(follower), want, "the follower holds the leader's log");
    assert_eq!(leader.raft_log.committed, 11);
    assert_eq!(follower.raft_log.committed, 11);
    assert_eq!((follower.term, follower.leader_id), (8, 1));
    assert_eq!(leader.trk.progress[&2].matched, 11);
    assert_log_matching(&[leader, follower]);
}

#[test]
fn figure_7_a_follower_missing_entries() {
    check_figure_7(&[1, 1, 1, 4, 4, 5, 5, 6, 6]);
}

#[test]
fn figure_7_b_follower_missing_many_entries() {
    check_figure_7(&[1, 1, 1, 4]);
}

#[test]
fn figure_7_c_follower_with_an_extra_uncommitted_entry() {
    check_figure_7(&[1, 1, 1, 4, 4, 5, 5, 6, 6, 6, 6]);
}

#[test]
fn figure_7_d_follower_with_extra_entries_of_a_later_term() {
    check_figure_7(&[1, 1, 1, 4, 4, 5, 5, 6, 6, 6, 7, 7]);
}

#[test]
fn figure_7_e_follower_missing_and_extra_entries() {
    check_figure_7(&[1, 1, 1, 4, 4, 4, 4]);
}

#[test]
fn figure_7_f_follower_with_entries_of_terms_the_leader_never_saw() {
    check_figure_7(&[1, 1, 1, 2, 2, 2, 3, 3, 3, 3, 3]);
}

/// "After a rejection, the leader decrements nextIndex and retries the AppendEntries RPC."
/// The exact probing: the rejection's hint lets the leader skip every entry of a term the
/// follower cannot match, so Figure 7 (f) is repaired in one extra round trip.
#[test]
fn leader_backs_up_next_index_on_rejection() {
    let mut leader = raft_with_log(1, &[1, 2], &[1, 1, 1, 4, 4, 5, 5, 6, 6, 6], 7, 0);
    leader.become_candidate();
    leader.become_leader();
    persist(&mut leader);
    leader.bcast_append();
    assert_eq!(sent(&mut leader), ["1->2 MsgApp Term:8 Log:6/10 Entries:[8/11 EntryNormal]"]);
    // Follower (f) has 3s at indexes 7-11: its hint is (10, term 3).
    let rejection = Message { reject: true, reject_hint: 10, log_term: 3, ..append_ack(2, 1, 8, 10) };
    leader.step(rejection).unwrap();
    assert_eq!(leader.trk.progress[&2].next_idx, 4);
    let retry = sent(&mut leader);
    assert_eq!(retry.len(), 1);
    assert!(retry[0].starts_with("1->2 MsgApp Term:8 Log:1/3 Entries:[4/4 EntryNormal, "), "{retry:?}");
    // A duplicate of the same rejection is stale and changes nothing.
    leader.step(Message { reject: true, reject_hint: 10, log_term: 3, ..append_ack(2, 1, 8, 10) }).unwrap();
    assert_eq!(leader.trk.progress[&2].next_idx, 4);
    assert_eq!(sent(&mut leader), Vec::<String>::new());
}

/// Log Matching holds across a run with leader changes, partitions and overwritten tails.
#[test]
fn log_matching_property_holds_after_leader_changes_and_repair() {
    let mut net = Network::new(&[1, 2, 3, 4, 5]);
    net.campaign(1);
    net.propose(1, b"a");
    // Leader 1 appends entries that reach only node 2.
    net.isolate(3);
    net.isolate(4);
    net.isolate(5);
    net.propose(1, b"lost-1");
    net.propose(1, b"lost-2");
    // Node 5 leads the majority side and writes entries of its own.
    net.recover();
    net.isolate(1);
    net.isolate(2);
    net.campaign(5);
    assert_eq!(net.node(5).role, StateRole::Leader);
    net.propose(5, b"b");
    net.propose(5, b"c");
    // Everyone reconnects; the new leader's heartbeat brings 1 and 2 back in line.
    net.recover();
    net.step_local(5, msg(MessageType::MsgBeat, 5, 5, 0));
    let nodes: Vec<&R> = net.nodes.values().collect();
    assert_log_matching(&nodes);
    let want = log_terms(net.node(5));
    for r in &nodes {
        assert_eq!(log_terms(r), want, "node {}", r.id);
        assert!(r.raft_log.all_entries().iter().all(|e| !e.data.starts_with(b"lost")), "node {}", r.id);
    }
}

// ==== 5.4.2: committing entries from previous terms (Figure 8) ===========================

/// The starting point of Figure 8 (c), in a five-server group: S1 leads term 4 and has the
/// term-2 entry at index 2, which S2 and S3 also hold; S5 holds a term-3 entry at index 2
/// from its time as leader; S4 only the first entry. S1's term-4 entry (index 3) is only on
/// S1 so far. Index 1 is committed everywhere.
fn figure_8_c() -> Network {
    let peers = [1, 2, 3, 4, 5];
    let mut s1 = raft_with_log(1, &peers, &[1, 2], 3, 1);
    make_leader(&mut s1);
    assert_eq!((s1.term, log_terms(&s1)), (4, vec![1, 2, 4]));
    // S1 learns where S2 and S3 stand: they hold index 2 (S1 replicated it to them).
    s1.step(append_ack(2, 1, 4, 2)).unwrap();
    s1.step(append_ack(3, 1, 4, 2)).unwrap();
    persist(&mut s1);
    s1.msgs.clear();
    let mut s2 = raft_with_log(2, &peers, &[1, 2], 4, 1);
    s2.become_follower(4, 1);
    let mut s3 = raft_with_log(3, &peers, &[1, 2], 4, 1);
    s3.become_follower(4, 1);
    let s4 = raft_with_log(4, &peers, &[1], 4, 1);
    let s5 = raft_with_log(5, &peers, &[1, 3], 4, 1);
    Network::from_rafts(vec![s1, s2, s3, s4, s5])
}

/// "A leader cannot immediately conclude that an entry from a previous term is committed
/// once it is stored on a majority of servers." S1's term-2 entry is on S1, S2 and S3, yet
/// S1 does not commit it; it commits it only together with its term-4 entry.
#[test]
fn figure_8_leader_does_not_commit_previous_term_entry_by_counting_replicas() {
    let mut net = figure_8_c();
    let s1 = net.node_mut(1);
    assert_eq!(
        [s1.trk.progress[&1].matched, s1.trk.progress[&2].matched, s1.trk.progress[&3].matched],
        [3, 2, 2]
    );
    assert_eq!(s1.raft_log.committed, 1, "the term-2 entry is on a majority but not committed");
    assert!(apply(s1).iter().all(|e| e.index == 1));
    // Once a majority also holds the term-4 entry, both commit.
    s1.step(append_ack(2, 1, 4, 3)).unwrap();
    assert_eq!(s1.raft_log.committed, 1, "S1 and S2 are not a majority of five");
    s1.step(append_ack(3, 1, 4, 3)).unwrap();
    assert_eq!(s1.raft_log.committed, 3);
    assert_eq!(apply(s1), [entry(2, 2), entry(4, 3)]);
}

/// Figure 8 (d): why counting replicas would be wrong. With S1 down, S5 is elected by S2,
/// S3 and S4 (its last term 3 beats their 2) and overwrites the term-2 entry everywhere.
#[test]
fn figure_8_d_uncommitted_old_term_entry_is_overwritten_by_a_later_leader() {
    let mut net = figure_8_c();
    net.isolate(1);
    net.campaign(5);
    assert_eq!((net.node(5).role, net.node(5).term), (StateRole::Leader, 5));
    for id in [2, 3, 4, 5] {
        assert_eq!(log_terms(net.node(id)), [1, 3, 5], "node {id}");
        assert_eq!(net.node(id).raft_log.committed, 3, "node {id}");
    }
    // Had S1 committed (and applied) the term-2 entry, state machines would now diverge.
    assert_eq!(net.node(1).raft_log.committed, 1);
}

/// Figure 8 (e): once S1 has replicated an entry of its own term on a majority, the term-2
/// entry before it is committed, and S5 can no longer be elected.
#[test]
fn figure_8_e_old_term_entry_commits_with_current_term_entry_and_stays() {
    let mut net = figure_8_c();
    net.isolate(5);
    net.node_mut(1).bcast_append();
    let out = take_msgs(net.node_mut(1));
    net.deliver(out);
    assert_eq!(net.node(1).raft_log.committed, 3);
    for id in [2, 3, 4] {
        assert_eq!(log_terms(net.node(id)), [1, 2, 4], "node {id}");
    }
    net.recover();
    net.isolate(1);
    net.campaign(5);
    assert_ne!(net.node(5).role, StateRole::Leader, "S5 lacks committed entries");
    for id in [2, 3, 4] {
        assert_eq!(log_terms(net.node(id)), [1, 2, 4], "node {id} kept the committed entries");
    }
}
