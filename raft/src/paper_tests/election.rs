//! Terms (5.1), leader election (5.2), voting (5.2, 5.4.1) and pre-vote.

use super::*;

// ==== 5.1: terms =========================================================================

/// "If a server's current term is smaller than the other's, it updates its current term to
/// the larger value. If a candidate or leader discovers that its term is out of date, it
/// immediately reverts to follower state." Checked for every role and for the messages that
/// carry a term, requests and responses alike.
#[test]
fn higher_term_in_any_message_updates_term_and_reverts_to_follower() {
    let kinds = [
        (MessageType::MsgAppend, true),
        (MessageType::MsgHeartbeat, true),
        (MessageType::MsgRequestVote, false),
        (MessageType::MsgAppendResponse, false),
        (MessageType::MsgHeartbeatResponse, false),
        (MessageType::MsgRequestVoteResponse, false),
    ];
    for role in [StateRole::Follower, StateRole::Candidate, StateRole::Leader] {
        for (kind, from_leader) in kinds {
            let mut r = new_raft(1, &[1, 2, 3]);
            match role {
                StateRole::Follower => r.become_follower(1, 2),
                StateRole::Candidate => r.become_candidate(),
                _ => make_leader(&mut r),
            }
            persist(&mut r);
            r.msgs.clear();
            let mut m = msg(kind, 2, 1, 5);
            if kind == MessageType::MsgRequestVote {
                // A candidate whose log is as up to date as anyone's.
                m.log_term = 5;
                m.index = 5;
            }
            r.step(m).unwrap();
            let ctx = format!("{role:?} receiving {kind:?} of term 5");
            assert_eq!(r.term, 5, "{ctx}");
            assert_eq!(r.role, StateRole::Follower, "{ctx}");
            // Only a message from the leader of the new term names a leader.
            assert_eq!(r.leader_id, if from_leader { 2 } else { NONE }, "{ctx}");
            // A new term starts without a vote, unless this very message earned one.
            assert_eq!(r.vote, if kind == MessageType::MsgRequestVote { 2 } else { NONE }, "{ctx}");
        }
    }
}

/// A leader that learns of a higher term from a follower's answer steps down before doing
/// anything with the answer, and its new state is durable.
#[test]
fn leader_steps_down_on_higher_term_response_and_persists_the_term() {
    let mut r = new_raft(1, &[1, 2, 3]);
    make_leader(&mut r);
    r.step(Message { reject: true, ..append_ack(2, 1, 3, 1) }).unwrap();
    assert_eq!((r.role, r.term, r.vote, r.leader_id), (StateRole::Follower, 3, NONE, NONE));
    assert_eq!(sent(&mut r), Vec::<String>::new(), "the stale leader answers nothing");
    assert_eq!(r.raft_log.store.rl().hard_state().term, 3);
}

/// "If a server receives a request with a stale term number, it rejects the request."
/// Without pre-vote or check-quorum a stale append or heartbeat is dropped: no state
/// change, no answer. A stale vote request changes nothing either, but is refused with our
/// term (see `stale_candidate_is_told_the_newer_term`).
#[test]
fn stale_term_requests_are_ignored() {
    let stale = [
        (append(2, 1, 1, (0, 0), vec![entry(1, 1)], 1), Vec::<String>::new()),
        (msg(MessageType::MsgHeartbeat, 2, 1, 1), Vec::new()),
        (vote_request(2, 1, 1, 9, 9), vec!["1->2 MsgVoteResp Term:2 Log:0/0 Rejected (Hint: 0)".to_string()]),
    ];
    for (m, answer) in stale {
        let ctx = describe_message(&m);
        let mut r = new_raft(1, &[1, 2, 3]);
        r.become_follower(2, NONE);
        r.step(m).unwrap();
        assert_eq!((r.term, r.vote, r.leader_id, r.role), (2, NONE, NONE, StateRole::Follower), "{ctx}");
        assert_eq!(r.raft_log.last_index(), 0, "{ctx}");
        assert_eq!(sent(&mut r), answer, "{ctx}");
    }
}

/// Stale responses are ignored too: a vote granted in an old term does not count in the
/// candidate's current election, and a stale append acknowledgement moves no progress.
#[test]
fn stale_term_responses_are_ignored() {
    let mut r = new_raft(1, &[1, 2, 3]);
    r.become_follower(1, NONE);
    r.become_candidate(); // term 2
    persist(&mut r);
    r.step(vote_response(2, 1, 1, true)).unwrap();
    assert_eq!(r.role, StateRole::Candidate, "a grant from term 1 must not elect in term 2");
    assert_eq!(r.trk.votes.get(&2), None);

    let mut l = new_raft(1, &[1, 2, 3]);
    l.become_follower(1, NONE);
    make_leader(&mut l); // term 2, entry 1
    l.step(append_ack(2, 1, 1, 1)).unwrap();
    assert_eq!(l.trk.progress[&2].matched, 0);
    assert_eq!(l.raft_log.committed, 0);
}

/// With check-quorum (or pre-vote) a stale leader is answered with the newer term instead of
/// being ignored, since it may never hear a vote request from us; the answer deposes it.
#[test]
fn stale_leader_is_told_the_newer_term_when_check_quorum_is_on() {
    let cfg = Config { check_quorum: true, ..config(2) };
    let mut follower = raft_with(cfg, &[1, 2, 3], &[], 3, 0);
    follower.step(msg(MessageType::MsgHeartbeat, 1, 2, 1)).unwrap();
    let answer = take_msgs(&mut follower);
    assert_eq!(answer.iter().map(describe_message).collect::<Vec<_>>(), ["2->1 MsgAppResp Term:3 Log:0/0"]);
    assert_eq!(follower.term, 3);

    let mut stale_leader = new_raft(1, &[1, 2, 3]);
    make_leader(&mut stale_leader);
    stale_leader.step(answer[0].clone()).unwrap();
    assert_eq!((stale_leader.role, stale_leader.term), (StateRole::Follower, 3));
}

/// A learner with a newer term answers a stale leader even without check-quorum or
/// pre-vote: it never campaigns, so no vote request of its would ever depose that leader,
/// and the leader would keep heartbeating a learner that ignores it. Found by the
/// randomized simulation (seed 1811 on branch sim2): a sole voter kept leading term 25
/// while its learners, demoted after campaigning up to term 37, never caught up again.
#[test]
fn stale_leader_is_told_the_newer_term_by_a_learner() {
    let storage = MemStorage::new();
    storage.wl().set_conf_state(ConfState { voters: vec![1], learners: vec![2], ..Default::default() });
    storage.wl().set_hard_state(HardState { term: 3, vote: NONE, commit: 0 });
    let mut learner = Raft::new(&config(2), storage).unwrap();
    learner.step(msg(MessageType::MsgHeartbeat, 1, 2, 1)).unwrap();
    let answer = take_msgs(&mut learner);
    assert_eq!(answer.iter().map(describe_message).collect::<Vec<_>>(), ["2->1 MsgAppResp Term:3 Log:0/0"]);
    assert_eq!(learner.term, 3);
}

/// "If RPC request or response contains term T > currentTerm: set currentTerm = T, convert
/// to follower" only works if the candidate hears our term: a vote request of an older term
/// is refused with ours, and the candidate moves to it. (Ignoring it, as etcd does, wedged
/// the simulation when the nodes with the newer term could not or would not campaign.)
#[test]
fn stale_candidate_is_told_the_newer_term() {
    let storage = MemStorage::new_with_voters(&[1, 2]);
    storage.wl().set_hard_state(HardState { term: 5, vote: NONE, commit: 0 });
    let mut voter = Raft::new(&config(2), storage).unwrap();
    let mut request = msg(MessageType::MsgRequestVote, 1, 2, 3);
    request.log_term = 3;
    request.index = 9;
    voter.step(request).unwrap();
    let answer = take_msgs(&mut voter);
    assert_eq!(
        answer.iter().map(describe_message).collect::<Vec<_>>(),
        ["2->1 MsgVoteResp Term:5 Log:0/0 Rejected (Hint: 0)"]
    );
    assert_eq!((voter.term, voter.vote), (5, NONE), "the refusal changes nothing here");

    let mut candidate = raft_with_log(1, &[1, 2], &[1, 3], 3, 0);
    candidate.become_candidate();
    let candidate_term = candidate.term;
    assert!(candidate_term < 5);
    let mut refusal = answer.into_iter().next().unwrap();
    refusal.to = 1;
    candidate.step(refusal).unwrap();
    assert_eq!((candidate.role, candidate.term), (StateRole::Follower, 5));
}

// ==== 5.2: leader election ===============================================================

/// "If a follower receives no communication over a period of time called the election
/// timeout, then it assumes there is no viable leader and begins an election": it
/// increments its term, votes for itself and asks every other server for its vote.
#[test]
fn follower_starts_election_after_election_timeout() {
    let mut r = raft_with_log(1, &[1, 2, 3], &[1, 2], 2, 0);
    let timeout = r.randomized_election_ticks;
    tick_times(&mut r, timeout - 1);
    assert_eq!((r.role, r.term), (StateRole::Follower, 2));
    assert_eq!(sent(&mut r), Vec::<String>::new());
    r.tick();
    assert_eq!((r.role, r.term, r.vote), (StateRole::Candidate, 3, 1));
    // The candidate's own vote waits for the vote to be durable, like any vote.
    assert_eq!(
        r.msgs_after_append.iter().map(describe_message).collect::<Vec<_>>(),
        ["1->1 MsgVoteResp Term:3 Log:0/0"]
    );
    assert_eq!(sent(&mut r), ["1->2 MsgVote Term:3 Log:2/2", "1->3 MsgVote Term:3 Log:2/2"]);
    assert_eq!(r.trk.votes, BTreeMap::from([(1, true)]));
    assert_eq!(r.raft_log.store.rl().hard_state(), &HardState { term: 3, vote: 1, commit: 0 });
}

/// Hearing from the leader resets the election timer: a follower that keeps getting
/// heartbeats never campaigns.
#[test]
fn follower_hearing_from_leader_does_not_campaign() {
    let mut r = new_raft(1, &[1, 2, 3]);
    r.become_follower(1, 2);
    for _ in 0..5 * ELECTION_TICKS {
        r.tick();
        r.step(msg(MessageType::MsgHeartbeat, 2, 1, 1)).unwrap();
    }
    assert_eq!((r.role, r.term, r.leader_id), (StateRole::Follower, 1, 2));
}

/// "A candidate wins an election if it receives votes from a majority of the servers in the
/// full cluster for the same term"; a majority of rejections ends the election, and
/// anything in between leaves it waiting.
#[test]
fn candidate_wins_with_majority_and_loses_with_majority_of_rejections() {
    // (group size, votes from peers, resulting role)
    type Case = (usize, &'static [(u64, bool)], StateRole);
    let cases: &[Case] = &[
        (1, &[], StateRole::Leader),
        (3, &[(2, true), (3, true)], StateRole::Leader),
        (3, &[(2, true)], StateRole::Leader),
        (5, &[(2, true), (3, true), (4, true), (5, true)], StateRole::Leader),
        (5, &[(2, true), (3, true), (4, true)], StateRole::Leader),
        (5, &[(2, true), (3, true)], StateRole::Leader),
        (5, &[(2, false), (3, false), (4, true), (5, true)], StateRole::Leader),
        (3, &[], StateRole::Candidate),
        (3, &[(2, false)], StateRole::Candidate),
        (5, &[(2, true)], StateRole::Candidate),
        (5, &[(2, false), (3, false)], StateRole::Candidate),
        (3, &[(2, false), (3, false)], StateRole::Follower),
        (5, &[(2, false), (3, false), (4, false)], StateRole::Follower),
        (5, &[(2, true), (3, false), (4, false), (5, false)], StateRole::Follower),
    ];
    for (size, votes, want) in cases {
        let peers: Vec<u64> = (1..=*size as u64).collect();
        let mut r = new_raft(1, &peers);
        r.step(hup()).unwrap();
        persist(&mut r);
        for (from, granted) in *votes {
            r.step(vote_response(*from, 1, 1, *granted)).unwrap();
        }
        persist(&mut r);
        assert_eq!(r.role, *want, "size {size} votes {votes:?}");
        // Losing an election does not end the term.
        assert_eq!(r.term, 1, "size {size} votes {votes:?}");
        if *want == StateRole::Leader {
            assert_eq!(r.leader_id, 1);
        }
    }
}

/// "Once a candidate wins an election, it becomes leader. It then sends heartbeat messages
/// to all of the other servers to establish its authority": here the append carrying the
/// leader's empty entry of its term.
#[test]
fn new_leader_announces_itself_to_all_peers() {
    let mut r = raft_with_log(1, &[1, 2, 3], &[1], 1, 1);
    r.step(hup()).unwrap();
    persist(&mut r);
    r.msgs.clear();
    r.step(vote_response(2, 1, 2, true)).unwrap();
    assert_eq!(r.role, StateRole::Leader);
    assert_eq!(
        sent(&mut r),
        [
            "1->2 MsgApp Term:2 Log:1/1 Commit:1 Entries:[2/2 EntryNormal]",
            "1->3 MsgApp Term:2 Log:1/1 Commit:1 Entries:[2/2 EntryNormal]",
        ]
    );
}

/// "While waiting for votes, a candidate may receive an AppendEntries RPC from another
/// server claiming to be leader. If the leader's term is at least as large as the
/// candidate's current term, then the candidate recognizes the leader as legitimate and
/// returns to follower state."
#[test]
fn candidate_becomes_follower_on_append_from_legitimate_leader() {
    for term in [1, 2] {
        let cases = [
            (append(2, 1, term, (0, 0), vec![], 0), format!("1->2 MsgAppResp Term:{term} Log:0/0")),
            (
                msg(MessageType::MsgHeartbeat, 2, 1, term),
                format!("1->2 MsgHeartbeatResp Term:{term} Log:0/0"),
            ),
        ];
        for (m, answer) in cases {
            let ctx = describe_message(&m);
            let mut r = new_raft(1, &[1, 2, 3]);
            r.become_candidate();
            persist(&mut r);
            r.msgs.clear();
            r.step(m).unwrap();
            assert_eq!((r.role, r.term, r.leader_id), (StateRole::Follower, term, 2), "{ctx}");
            // It answers as a follower would.
            assert_eq!(sent(&mut r), [answer], "{ctx}");
        }
    }
}

/// "If the term in the RPC is smaller than the candidate's current term, then the candidate
/// rejects the RPC and continues in candidate state."
#[test]
fn candidate_rejects_append_from_stale_leader() {
    let mut r = new_raft(1, &[1, 2, 3]);
    r.become_follower(1, NONE);
    r.become_candidate();
    persist(&mut r);
    r.msgs.clear();
    r.step(append(2, 1, 1, (0, 0), vec![entry(1, 1)], 1)).unwrap();
    assert_eq!((r.role, r.term, r.leader_id), (StateRole::Candidate, 2, NONE));
    assert_eq!(r.raft_log.last_index(), 0);
}

/// "When this happens [a split vote], each candidate will time out and start a new election
/// by incrementing its term and initiating another round of RequestVote RPCs."
#[test]
fn candidate_restarts_election_after_split_vote_timeout() {
    let mut r = new_raft(1, &[1, 2, 3, 4]);
    r.step(hup()).unwrap();
    persist(&mut r);
    r.msgs.clear();
    // Node 3 campaigns in the same term and keeps its vote; node 2 votes for us; node 4's
    // answer never arrives. With 2 of 4 votes the election can neither be won nor lost.
    r.step(vote_response(2, 1, 1, true)).unwrap();
    r.step(vote_response(3, 1, 1, false)).unwrap();
    assert_eq!((r.role, r.term), (StateRole::Candidate, 1));
    let timeout = r.randomized_election_ticks;
    tick_times(&mut r, timeout);
    assert_eq!((r.role, r.term, r.vote), (StateRole::Candidate, 2, 1));
    assert_eq!(
        sent(&mut r),
        ["1->2 MsgVote Term:2 Log:0/0", "1->3 MsgVote Term:2 Log:0/0", "1->4 MsgVote Term:2 Log:0/0"]
    );
    assert_eq!(r.trk.votes, BTreeMap::from([(1, true)]), "the old round's votes are forgotten");
}

/// "Raft uses randomized election timeouts ... chosen randomly from a fixed interval": here
/// [election_ticks, 2 * election_ticks), and every value of the interval is used.
#[test]
fn randomized_election_timeout_stays_in_range_and_covers_it() {
    let mut seen = BTreeSet::new();
    for seed in 0..20 {
        let mut r =
            Raft::new(&Config { random_seed: seed, ..config(1) }, MemStorage::new_with_voters(&[1, 2, 3]))
                .unwrap();
        for term in 1..50 {
            r.become_follower(term, NONE);
            let t = r.randomized_election_ticks;
            assert!((ELECTION_TICKS..2 * ELECTION_TICKS).contains(&t), "seed {seed}: timeout {t}");
            seen.insert(t);
        }
    }
    assert_eq!(seen, (ELECTION_TICKS..2 * ELECTION_TICKS).collect());
}

/// The timeouts come from the node's seeded generator, not from a global one: the same seed
/// replays the same sequence, a different seed gives a different one.
#[test]
fn randomized_election_timeout_is_determined_by_the_seed() {
    fn timeouts(seed: u64) -> Vec<usize> {
        let cfg = Config { random_seed: seed, ..config(1) };
        let mut r = Raft::new(&cfg, MemStorage::new_with_voters(&[1, 2, 3])).unwrap();
        let mut out = vec![r.randomized_election_ticks];
        for _ in 0..30 {
            r.become_candidate();
            out.push(r.randomized_election_ticks);
        }
        out
    }
    assert_eq!(timeouts(7), timeouts(7));
    assert_eq!(timeouts(12345), timeouts(12345));
    assert_ne!(timeouts(7), timeouts(8));
    // The node's id does not leak into the draw: only the seed does.
    let with_id = |id: u64| {
        let mut r =
            Raft::new(&Config { random_seed: 99, ..config(id) }, MemStorage::new_with_voters(&[1, 2, 3]))
                .unwrap();
        r.become_follower(1, NONE);
        r.randomized_election_ticks
    };
    assert_eq!(with_id(1), with_id(2));
}

/// Randomization spreads the servers out "so that in most cases only a single server will
/// time out": followers seeded differently (the default seed is the id) rarely pick the same
/// timeout, and the tick at which a follower campaigns is exactly its drawn timeout.
#[test]
fn election_timeouts_differ_across_nodes_and_govern_when_they_campaign() {
    let mut collisions = 0;
    let rounds = 200;
    for round in 0..rounds {
        let mut timeouts = BTreeSet::new();
        for id in 1..=3u64 {
            let cfg = Config { random_seed: round * 10 + id, ..config(id) };
            let mut r = Raft::new(&cfg, MemStorage::new_with_voters(&[1, 2, 3])).unwrap();
            r.become_follower(1, NONE);
            let drawn = r.randomized_election_ticks;
            let mut ticks = 0;
            while r.role == StateRole::Follower {
                r.tick();
                ticks += 1;
            }
            assert_eq!(ticks, drawn, "node {id} campaigned off its drawn timeout");
            timeouts.insert(drawn);
        }
        if timeouts.len() < 3 {
            collisions += 1;
        }
    }
    // Three draws from ten values collide with probability 0.28; far from always.
    assert!(collisions < rounds / 2, "{collisions} of {rounds} rounds had equal timeouts");
}

/// "Leaders send periodic heartbeats (AppendEntries RPCs that carry no log entries) to all
/// followers in order to maintain their authority", every heartbeat interval.
#[test]
fn leader_sends_heartbeats_every_heartbeat_interval() {
    let cfg = Config { heartbeat_ticks: 3, ..config(1) };
    let mut r = raft_with(cfg, &[1, 2, 3], &[], 0, 0);
    make_leader(&mut r);
    // Peer 2 has the leader's entry; the heartbeat tells each peer only what it holds.
    r.step(append_ack(2, 1, 1, 1)).unwrap();
    assert_eq!(r.raft_log.committed, 1);
    persist(&mut r);
    r.msgs.clear();
    for round in 0..3 {
        tick_times(&mut r, 2);
        assert_eq!(sent(&mut r), Vec::<String>::new(), "round {round}: too early");
        r.tick();
        // Each broadcast is a new read-confirmation round, numbered from 1.
        let number = round + 1;
        assert_eq!(
            sent(&mut r),
            [
                format!("1->2 MsgHeartbeat Term:1 Log:0/0 Commit:1 Round:{number}"),
                format!("1->3 MsgHeartbeat Term:1 Log:0/0 Round:{number}")
            ],
            "round {round}"
        );
    }
    assert_eq!(r.role, StateRole::Leader);
}

// ==== 5.2 / 5.4.1: voting ================================================================

/// "Each server will vote for at most one candidate in a given term, on a first-come-first-
/// served basis." A repeated request from the chosen candidate gets the same answer.
#[test]
fn at_most_one_vote_per_term_first_come_first_served() {
    let mut r = new_raft(1, &[1, 2, 3]);
    r.step(vote_request(2, 1, 1, 0, 0)).unwrap();
    assert_eq!(sent(&mut r), ["1->2 MsgVoteResp Term:1 Log:0/0"]);
    assert_eq!(r.vote, 2);
    r.step(vote_request(3, 1, 1, 0, 0)).unwrap();
    assert_eq!(sent(&mut r), ["1->3 MsgVoteResp Term:1 Log:0/0 Rejected (Hint: 0)"]);
    r.step(vote_request(2, 1, 1, 0, 0)).unwrap();
    assert_eq!(sent(&mut r), ["1->2 MsgVoteResp Term:1 Log:0/0"], "a retransmission is granted again");
    assert_eq!(r.vote, 2);
    // The next term is a new chance.
    r.step(vote_request(3, 1, 2, 0, 0)).unwrap();
    assert_eq!(sent(&mut r), ["1->3 MsgVoteResp Term:2 Log:0/0"]);
    assert_eq!(r.vote, 3);
}

/// The vote is durable before it is announced, so a restarted server cannot vote twice.
#[test]
fn vote_is_persisted_before_it_is_sent_and_survives_restart() {
    let storage = MemStorage::new_with_voters(&[1, 2, 3]);
    let mut r = Raft::new(&config(1), storage.clone()).unwrap();
    r.step(vote_request(2, 1, 1, 0, 0)).unwrap();
    assert!(r.msgs.is_empty(), "the grant must not leave before the vote is durable");
    assert_eq!(r.msgs_after_append.len(), 1);
    persist(&mut r);
    assert_eq!(storage.rl().hard_state(), &HardState { term: 1, vote: 2, commit: 0 });

    let mut restarted = Raft::new(&config(1), storage).unwrap();
    restarted.step(vote_request(3, 1, 1, 0, 0)).unwrap();
    assert_eq!(sent(&mut restarted), ["1->3 MsgVoteResp Term:1 Log:0/0 Rejected (Hint: 0)"]);
    assert_eq!(restarted.vote, 2);
}

/// A follower that knows the leader of the current term does not vote for someone else in
/// that term (the leader already won it).
#[test]
fn follower_with_a_leader_rejects_votes_in_the_same_term() {
    let mut r = new_raft(1, &[1, 2, 3]);
    r.become_follower(1, 2);
    r.step(vote_request(3, 1, 1, 0, 0)).unwrap();
    assert_eq!(sent(&mut r), ["1->3 MsgVoteResp Term:1 Log:0/0 Rejected (Hint: 0)"]);
    assert_eq!(r.vote, NONE);
}

/// "Raft determines which of two logs is more up-to-date by comparing the index and term of
/// the last entries in the logs. If the logs have last entries with different terms, then
/// the log with the later term is more up-to-date. If the logs end with the same term, then
/// whichever log is longer is more up-to-date." The voter refuses a less up-to-date
/// candidate and grants otherwise.
#[test]
fn voter_grants_only_to_candidates_at_least_as_up_to_date() {
    // The voter's log ends with (term 2, index 2).
    let cases = [
        // Lower last term: rejected whatever the length.
        (1, 1, false),
        (1, 2, false),
        (1, 3, false),
        // Same last term: the longer (or equal) log wins.
        (2, 1, false),
        (2, 2, true),
        (2, 3, true),
        // Higher last term: granted whatever the length.
        (3, 1, true),
        (3, 2, true),
        (3, 3, true),
        // An empty log is behind any non-empty one.
        (0, 0, false),
    ];
    for (last_term, last_index, granted) in cases {
        let mut r = raft_with_log(1, &[1, 2, 3], &[1, 2], 2, 0);
        r.step(vote_request(2, 1, 3, last_term, last_index)).unwrap();
        let want = if granted {
            "1->2 MsgVoteResp Term:3 Log:0/0".to_string()
        } else {
            "1->2 MsgVoteResp Term:3 Log:0/0 Rejected (Hint: 0)".to_string()
        };
        assert_eq!(sent(&mut r), [want], "candidate log ends with {last_term}/{last_index}");
        assert_eq!(r.vote, if granted { 2 } else { NONE });
        // Either way the higher term of the request is adopted.
        assert_eq!(r.term, 3);
    }
}

/// A vote request from a candidate with a stale log moves the voter to the new term but
/// leaves it free to vote for a better candidate in that term.
#[test]
fn rejecting_a_stale_log_keeps_the_vote_free_for_the_term() {
    let mut r = raft_with_log(1, &[1, 2, 3], &[1, 2], 2, 0);
    r.step(vote_request(2, 1, 3, 1, 5)).unwrap();
    r.step(vote_request(3, 1, 3, 2, 2)).unwrap();
    assert_eq!(
        sent(&mut r),
        ["1->2 MsgVoteResp Term:3 Log:0/0 Rejected (Hint: 0)", "1->3 MsgVoteResp Term:3 Log:0/0"]
    );
    assert_eq!(r.vote, 3);
}

/// Granting a vote resets the election timer, so the voter gives the candidate a chance to
/// win before it campaigns itself.
#[test]
fn granting_a_vote_resets_the_election_timer() {
    let mut r = new_raft(1, &[1, 2, 3]);
    r.become_follower(1, NONE);
    let timeout = r.randomized_election_ticks;
    tick_times(&mut r, timeout - 1);
    // A request of the same term: the grant itself, not a term change, resets the timer.
    r.step(vote_request(2, 1, 1, 0, 0)).unwrap();
    assert_eq!((r.vote, r.election_elapsed), (2, 0));
    tick_times(&mut r, timeout - 1);
    assert_eq!(r.role, StateRole::Follower);
    r.tick();
    assert_eq!((r.role, r.term), (StateRole::Candidate, 2));
}

// ==== pre-vote (section 9.6 of Ongaro's dissertation) and its lessons ==================

fn pre_vote_config(id: u64) -> Config {
    Config { pre_vote: true, ..config(id) }
}

/// A pre-candidate asks whether it could win the next term without moving to it: its term
/// and vote stay, its requests carry term + 1, and voters do not change term or vote either.
#[test]
fn pre_vote_does_not_bump_terms() {
    let mut r = raft_with(pre_vote_config(1), &[1, 2, 3], &[1, 2], 2, 0);
    r.step(hup()).unwrap();
    assert_eq!((r.role, r.term, r.vote), (StateRole::PreCandidate, 2, NONE));
    assert_eq!(sent(&mut r), ["1->2 MsgPreVote Term:3 Log:2/2", "1->3 MsgPreVote Term:3 Log:2/2"]);
    assert_eq!(r.raft_log.store.rl().hard_state().term, 2);

    let mut voter = raft_with(pre_vote_config(2), &[1, 2, 3], &[1, 2], 2, 0);
    voter.become_follower(2, NONE);
    tick_times(&mut voter, 3);
    voter.step(pre_vote_request(1, 2, 3, 2, 2)).unwrap();
    assert_eq!(sent(&mut voter), ["2->1 MsgPreVoteResp Term:3 Log:0/0"]);
    assert_eq!((voter.term, voter.vote, voter.election_elapsed), (2, NONE, 3), "a pre-vote binds nothing");
}

/// An isolated node with pre-vote campaigns forever without raising its term, so when it
/// comes back it does not depose the leader of the majority.
#[test]
fn partitioned_pre_vote_node_does_not_disrupt_on_return() {
    let mut net = Network::with_config(&[1, 2, 3], |c| c.pre_vote = true);
    net.campaign(1);
    assert_eq!(net.node(1).role, StateRole::Leader);
    net.isolate(3);
    // The majority moves on without node 3, so node 3's log falls behind.
    net.propose(1, b"x");
    for _ in 0..5 * 2 * ELECTION_TICKS {
        net.tick(3);
    }
    assert_eq!((net.node(3).role, net.node(3).term), (StateRole::PreCandidate, 1));
    net.recover();
    net.tick(3);
    net.step_local(1, msg(MessageType::MsgBeat, 1, 1, 0));
    assert_eq!((net.node(1).role, net.node(1).term), (StateRole::Leader, 1));
    assert_eq!((net.node(3).role, net.node(3).leader_id), (StateRole::Follower, 1));
}

/// A pre-candidate that wins the pre-vote runs the real election in the next term; one that
/// loses it returns to follower in its old term.
#[test]
fn pre_candidate_campaigns_after_winning_and_stands_down_after_losing() {
    let mut r = raft_with(pre_vote_config(1), &[1, 2, 3], &[], 1, 0);
    r.step(hup()).unwrap();
    persist(&mut r);
    r.msgs.clear();
    r.step(msg(MessageType::MsgRequestPreVoteResponse, 2, 1, 2)).unwrap();
    assert_eq!((r.role, r.term, r.vote), (StateRole::Candidate, 2, 1));
    assert_eq!(sent(&mut r), ["1->2 MsgVote Term:2 Log:0/0", "1->3 MsgVote Term:2 Log:0/0"]);

    let mut r = raft_with(pre_vote_config(1), &[1, 2, 3], &[], 1, 0);
    r.step(hup()).unwrap();
    persist(&mut r);
    // Voters that reject answer with their own term (here 1, the same as ours).
    r.step(Message { reject: true, ..msg(MessageType::MsgRequestPreVoteResponse, 2, 1, 1) }).unwrap();
    r.step(Message { reject: true, ..msg(MessageType::MsgRequestPreVoteResponse, 3, 1, 1) }).unwrap();
    assert_eq!((r.role, r.term, r.vote), (StateRole::Follower, 1, NONE));
}

/// etcd-io/etcd#8288: a granted pre-vote answers with the term of the request, not the
/// voter's. A pre-candidate at term 5 asks lagging voters at term 1; had they answered with
/// term 1, it would drop their grants as stale and never be elected.
#[test]
fn pre_vote_response_echoes_the_request_term() {
    let mut voter = raft_with(pre_vote_config(2), &[1, 2, 3], &[1], 1, 0);
    voter.step(pre_vote_request(1, 2, 6, 1, 1)).unwrap();
    assert_eq!(sent(&mut voter), ["2->1 MsgPreVoteResp Term:6 Log:0/0"]);
    assert_eq!(voter.term, 1);

    let n1 = raft_with(pre_vote_config(1), &[1, 2, 3], &[1], 5, 0);
    let n2 = raft_with(pre_vote_config(2), &[1, 2, 3], &[1], 1, 0);
    let n3 = raft_with(pre_vote_config(3), &[1, 2, 3], &[1], 1, 0);
    let mut net = Network::from_rafts(vec![n1, n2, n3]);
    net.campaign(1);
    assert_eq!((net.node(1).role, net.node(1).term), (StateRole::Leader, 6));
    assert_eq!(net.node(2).leader_id, 1);
}

/// etcd-io/etcd#8334, tikv/raft-rs#84: a pre-candidate forgets the leader it lost contact
/// with. Otherwise, with check-quorum's vote lease, it would ignore its peers' pre-votes as if
/// the old leader were alive, and two pre-candidates could wedge the election.
#[test]
fn pre_candidate_forgets_the_leader() {
    let mut r = new_raft(1, &[1, 2, 3]);
    r.pre_vote = true;
    r.become_follower(1, 2);
    r.step(hup()).unwrap();
    assert_eq!((r.role, r.leader_id, r.term), (StateRole::PreCandidate, NONE, 1));

    let mut net = Network::with_config(&[1, 2, 3], |c| {
        c.pre_vote = true;
        c.check_quorum = true;
    });
    net.campaign(1);
    assert_eq!(net.node(1).role, StateRole::Leader);
    net.isolate(1);
    // Node 2 times out first; node 3 still trusts the leader and ignores it.
    let timeout = net.node(2).randomized_election_ticks;
    for _ in 0..timeout {
        net.tick(2);
    }
    assert_eq!((net.node(2).role, net.node(2).leader_id), (StateRole::PreCandidate, NONE));
    // Node 3 times out right after; node 2 has just restarted its timer but, knowing no
    // leader, grants the pre-vote and then the vote.
    let timeout = net.node(3).randomized_election_ticks;
    for _ in 0..timeout {
        net.tick(3);
    }
    assert_eq!((net.node(3).role, net.node(3).term), (StateRole::Leader, 2));
    assert_eq!((net.node(2).role, net.node(2).leader_id), (StateRole::Follower, 3));
}

/// etcd-io/etcd#8501: a pre-vote for a term lower than the voter's gets an explicit
/// rejection carrying the voter's term; the pre-candidate adopts that term.
#[test]
fn lower_term_pre_vote_gets_explicit_rejection_with_the_higher_term() {
    let mut voter = raft_with(pre_vote_config(2), &[1, 2, 3], &[1], 3, 0);
    voter.step(pre_vote_request(1, 2, 2, 1, 5)).unwrap();
    assert_eq!(sent(&mut voter), ["2->1 MsgPreVoteResp Term:3 Log:0/0 Rejected (Hint: 0)"]);
    assert_eq!(voter.term, 3);

    let mut pre_candidate = raft_with(pre_vote_config(1), &[1, 2, 3], &[1, 1], 1, 0);
    pre_candidate.step(hup()).unwrap();
    persist(&mut pre_candidate);
    pre_candidate
        .step(Message { reject: true, ..msg(MessageType::MsgRequestPreVoteResponse, 2, 1, 3) })
        .unwrap();
    assert_eq!((pre_candidate.role, pre_candidate.term), (StateRole::Follower, 3));
}

/// The deadlock the explicit rejection prevents: node 1 has the longest log but the lowest
/// term; node 2 has the highest term but a shorter log; node 3 is down. Node 2 cannot win
/// (node 1 refuses its log), and node 1's pre-votes for term 2 are below node 2's term. The
/// rejection moves node 1 to term 3, and its next pre-election succeeds.
#[test]
fn explicit_pre_vote_rejection_unsticks_a_lagging_term() {
    let n1 = raft_with(pre_vote_config(1), &[1, 2, 3], &[1, 1], 1, 0);
    let n2 = raft_with(pre_vote_config(2), &[1, 2, 3], &[1], 3, 0);
    let n3 = raft_with(pre_vote_config(3), &[1, 2, 3], &[1], 3, 0);
    let mut net = Network::from_rafts(vec![n1, n2, n3]);
    net.isolate(3);
    net.campaign(2);
    // Node 1 refuses node 2's shorter log (with its own, lower term, so node 2 does not even
    // count the rejection); node 2 cannot win.
    assert_eq!((net.node(2).role, net.node(2).term), (StateRole::PreCandidate, 3));
    net.campaign(1);
    assert_eq!((net.node(1).role, net.node(1).term), (StateRole::Follower, 3));
    net.campaign(1);
    assert_eq!((net.node(1).role, net.node(1).term), (StateRole::Leader, 4));
    assert_eq!(log_terms(net.node(2)), [1, 1, 4]);
}
