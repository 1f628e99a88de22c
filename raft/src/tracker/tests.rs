//! The leader's bookkeeping, one small fact at a time: the in-flight window, one peer's
//! progress through its states, and the tracker over a whole configuration.

use tessera_proto::raftpb::ConfState;

use super::{Inflights, Progress, ProgressState, ProgressTracker};
use crate::quorum::VoteResult;

// ---------------------------------------------------------------------------------------
// Inflights

#[test]
fn inflights_fill_up_by_count() {
    let mut inf = Inflights::new(3, 0);
    assert!(!inf.full());
    inf.add(5, 10);
    inf.add(7, 10);
    assert!(!inf.full());
    assert_eq!(inf.count(), 2);
    inf.add(9, 10);
    assert!(inf.full());
    assert_eq!((inf.count(), inf.bytes()), (3, 30));
    // Freeing the oldest message opens one slot.
    inf.free_le(5);
    assert!(!inf.full());
    assert_eq!((inf.count(), inf.bytes()), (2, 20));
}

#[test]
fn inflights_fill_up_by_bytes() {
    let mut inf = Inflights::new(100, 1000);
    inf.add(1, 400);
    inf.add(2, 599);
    assert!(!inf.full(), "999 of 1000 bytes leave room");
    inf.add(3, 1);
    assert!(inf.full(), "reaching the byte limit exactly fills the window");
    inf.free_le(1);
    assert_eq!(inf.bytes(), 600);
    assert!(!inf.full());
    // A single message larger than the whole budget is allowed (progress must be possible)
    // but fills the window at once.
    let mut inf = Inflights::new(100, 1000);
    inf.add(1, 5000);
    assert!(inf.full());
    assert_eq!(inf.count(), 1);
}

#[test]
fn inflights_without_byte_limit_count_only() {
    let mut inf = Inflights::new(2, 0);
    inf.add(1, u64::MAX / 4);
    assert!(!inf.full(), "zero bytes_max means no byte limit");
    inf.add(2, u64::MAX / 4);
    assert!(inf.full());
}

#[test]
fn inflights_free_le_frees_a_prefix() {
    let mut inf = Inflights::new(10, 0);
    for (i, index) in [3u64, 6, 9, 12].into_iter().enumerate() {
        inf.add(index, (i as u64 + 1) * 100);
    }
    // Below the first message: nothing freed.
    inf.free_le(2);
    assert_eq!((inf.count(), inf.bytes()), (4, 1000));
    // Between messages: frees the ones at or below.
    inf.free_le(7);
    assert_eq!((inf.count(), inf.bytes()), (2, 700));
    // A stale (lower) acknowledgement frees nothing more.
    inf.free_le(4);
    assert_eq!((inf.count(), inf.bytes()), (2, 700));
    // Exactly at a message's last index frees it.
    inf.free_le(9);
    assert_eq!((inf.count(), inf.bytes()), (1, 400));
    // Past everything empties the window.
    inf.free_le(100);
    assert_eq!((inf.count(), inf.bytes()), (0, 0));
    // The window is reusable, with indexes continuing upward.
    inf.add(101, 1);
    assert_eq!((inf.count(), inf.bytes()), (1, 1));
}

#[test]
fn inflights_reset_empties_the_window() {
    let mut inf = Inflights::new(2, 100);
    inf.add(4, 60);
    inf.add(8, 60);
    assert!(inf.full());
    inf.reset();
    assert!(!inf.full());
    assert_eq!((inf.count(), inf.bytes()), (0, 0));
    // After a reset (e.g. a new probe), indexes may start lower again.
    inf.add(2, 10);
    assert_eq!(inf.count(), 1);
}

#[test]
#[should_panic(expected = "full in-flight window")]
fn inflights_add_to_full_window_panics() {
    let mut inf = Inflights::new(1, 0);
    inf.add(1, 1);
    inf.add(2, 1);
}

#[test]
#[should_panic(expected = "in-flight indexes grow")]
fn inflights_add_non_increasing_index_panics() {
    let mut inf = Inflights::new(4, 0);
    inf.add(5, 1);
    inf.add(5, 1);
}

#[test]
#[should_panic(expected = "at least one message")]
fn inflights_need_room_for_one_message() {
    let _ = Inflights::new(0, 0);
}

// ---------------------------------------------------------------------------------------
// Progress

fn progress(state: ProgressState, matched: u64, next_idx: u64) -> Progress {
    let mut pr = Progress::new(next_idx, 256, 0);
    pr.matched = matched;
    pr.state = state;
    pr
}

#[test]
fn progress_maybe_update() {
    let mut pr = progress(ProgressState::Replicate, 3, 6);
    pr.msg_app_flow_paused = true;
    // A newer acknowledgement raises matched and unpauses; next stays ahead.
    assert!(pr.maybe_update(4));
    assert_eq!((pr.matched, pr.next_idx), (4, 6));
    assert!(!pr.msg_app_flow_paused);
    // An acknowledgement past next moves next along.
    assert!(pr.maybe_update(9));
    assert_eq!((pr.matched, pr.next_idx), (9, 10));
    // A stale or repeated acknowledgement changes nothing and reports it.
    pr.msg_app_flow_paused = true;
    assert!(!pr.maybe_update(9));
    assert!(!pr.maybe_update(2));
    assert_eq!((pr.matched, pr.next_idx), (9, 10));
    assert!(pr.msg_app_flow_paused, "a stale acknowledgement must not unpause the flow");
}

#[test]
fn progress_maybe_update_never_lowers_next() {
    let mut pr = progress(ProgressState::Probe, 0, 20);
    assert!(pr.maybe_update(5));
    assert_eq!((pr.matched, pr.next_idx), (5, 20));
}

#[test]
fn progress_decr_in_replicate_ignores_stale_rejections() {
    let mut pr = progress(ProgressState::Replicate, 5, 10);
    // Rejections at or below matched answer messages older than our last success.
    assert!(!pr.maybe_decr_to(5, 5));
    assert!(!pr.maybe_decr_to(4, 1));
    assert_eq!((pr.matched, pr.next_idx), (5, 10));
    // A fresh rejection rewinds next to right after matched, whatever the hint.
    assert!(pr.maybe_decr_to(9, 2));
    assert_eq!((pr.matched, pr.next_idx), (5, 6));
}

#[test]
fn progress_decr_in_probe_only_answers_the_latest_probe() {
    let mut pr = progress(ProgressState::Probe, 0, 10);
    pr.msg_app_flow_paused = true;
    // The latest probe was sent with prev index next - 1 = 9; other rejections are stale.
    assert!(!pr.maybe_decr_to(8, 3));
    assert!(!pr.maybe_decr_to(10, 3));
    assert_eq!(pr.next_idx, 10);
    assert!(pr.msg_app_flow_paused);
    // The follower hints its log ends at 3: probe from 4 next, and unpause.
    assert!(pr.maybe_decr_to(9, 3));
    assert_eq!(pr.next_idx, 4);
    assert!(!pr.msg_app_flow_paused);
}

#[test]
fn progress_decr_in_probe_is_bounded_by_rejected_and_matched() {
    // A hint at or past the rejected index moves next back by exactly one.
    let mut pr = progress(ProgressState::Probe, 0, 10);
    assert!(pr.maybe_decr_to(9, 50));
    assert_eq!(pr.next_idx, 9);
    // A hint below matched cannot take next below matched + 1.
    let mut pr = progress(ProgressState::Probe, 5, 10);
    assert!(pr.maybe_decr_to(9, 1));
    assert_eq!(pr.next_idx, 6);
    // Hint zero (an empty follower log) probes from index 1.
    let mut pr = progress(ProgressState::Probe, 0, 3);
    assert!(pr.maybe_decr_to(2, 0));
    assert_eq!(pr.next_idx, 1);
}

#[test]
fn progress_become_probe_after_snapshot() {
    // The snapshot at 20 covers what the follower lacked: probe right after it.
    let mut pr = progress(ProgressState::Replicate, 3, 4);
    pr.become_snapshot(20);
    assert_eq!((pr.state, pr.pending_snapshot), (ProgressState::Snapshot, 20));
    pr.become_probe();
    assert_eq!(pr.state, ProgressState::Probe);
    assert_eq!((pr.next_idx, pr.pending_snapshot), (21, 0));
    // If the follower got further than the snapshot meanwhile, keep its match.
    let mut pr = progress(ProgressState::Probe, 3, 4);
    pr.become_snapshot(20);
    pr.matched = 25;
    pr.become_probe();
    assert_eq!(pr.next_idx, 26);
    // A failed snapshot (pending cleared by the caller) probes from matched.
    let mut pr = progress(ProgressState::Probe, 3, 4);
    pr.become_snapshot(20);
    pr.pending_snapshot = 0;
    pr.become_probe();
    assert_eq!(pr.next_idx, 4);
}

#[test]
fn progress_become_probe_from_replicate_and_become_replicate() {
    let mut pr = progress(ProgressState::Replicate, 7, 7);
    pr.on_entries_sent(3, 30);
    assert_eq!(pr.next_idx, 10);
    assert_eq!(pr.inflights.count(), 1);
    pr.become_probe();
    assert_eq!((pr.state, pr.next_idx), (ProgressState::Probe, 8));
    assert_eq!(pr.inflights.count(), 0, "the window is reset on a state change");
    assert!(!pr.msg_app_flow_paused);
    pr.maybe_update(9);
    pr.become_replicate();
    assert_eq!((pr.state, pr.matched, pr.next_idx), (ProgressState::Replicate, 9, 10));
}

#[test]
fn progress_is_paused_per_state() {
    let mut pr = progress(ProgressState::Probe, 0, 1);
    assert!(!pr.is_paused());
    pr.msg_app_flow_paused = true;
    assert!(pr.is_paused(), "a probe is outstanding");

    let mut pr = progress(ProgressState::Replicate, 0, 1);
    assert!(!pr.is_paused());
    pr.msg_app_flow_paused = true;
    assert!(pr.is_paused(), "the window is full");

    let mut pr = progress(ProgressState::Replicate, 0, 1);
    pr.become_snapshot(5);
    assert!(pr.is_paused(), "nothing is sent while a snapshot is in flight");
    pr.msg_app_flow_paused = false;
    assert!(pr.is_paused());
}

#[test]
fn progress_on_entries_sent_in_replicate_pipelines_until_full() {
    let mut pr = Progress::new(1, 2, 0);
    pr.become_replicate();
    pr.on_entries_sent(2, 20);
    assert_eq!((pr.next_idx, pr.inflights.count()), (3, 1));
    assert!(!pr.is_paused());
    // An empty append (a commit update) takes no slot and does not move next.
    pr.on_entries_sent(0, 0);
    assert_eq!((pr.next_idx, pr.inflights.count()), (3, 1));
    assert!(!pr.is_paused());
    pr.on_entries_sent(1, 10);
    assert_eq!((pr.next_idx, pr.inflights.count(), pr.inflights.bytes()), (4, 2, 30));
    assert!(pr.is_paused(), "the window holds two messages");
    // Acknowledging the first message frees its slot.
    assert!(pr.maybe_update(2));
    pr.inflights.free_le(2);
    assert!(!pr.inflights.full());
    assert!(!pr.is_paused());
}

#[test]
fn progress_on_entries_sent_by_bytes() {
    let mut pr = Progress::new(1, 100, 50);
    pr.become_replicate();
    pr.on_entries_sent(1, 30);
    assert!(!pr.is_paused());
    pr.on_entries_sent(1, 30);
    assert!(pr.is_paused(), "60 of 50 bytes in flight");
}

#[test]
fn progress_on_entries_sent_in_probe_pauses_and_keeps_next() {
    let mut pr = Progress::new(5, 10, 0);
    pr.on_entries_sent(3, 30);
    assert_eq!(pr.next_idx, 5, "a probe does not advance next optimistically");
    assert!(pr.is_paused());
    assert_eq!(pr.inflights.count(), 0);
    // Even an empty probe waits for its answer.
    let mut pr = Progress::new(5, 10, 0);
    pr.on_entries_sent(0, 0);
    assert!(pr.is_paused());
}

#[test]
#[should_panic(expected = "Snapshot state")]
fn progress_on_entries_sent_in_snapshot_panics() {
    let mut pr = Progress::new(5, 10, 0);
    pr.become_snapshot(9);
    pr.on_entries_sent(1, 1);
}

#[test]
fn progress_display() {
    let mut pr = Progress::new(5, 1, 0);
    pr.matched = 4;
    assert_eq!(pr.to_string(), "Probe match=4 next=5 inactive");
    pr.become_replicate();
    pr.recent_active = true;
    pr.is_learner = true;
    pr.on_entries_sent(1, 1);
    assert_eq!(pr.to_string(), "Replicate match=4 next=6 learner paused inflight=1[full]");
    pr.become_snapshot(10);
    assert_eq!(pr.to_string(), "Snapshot match=4 next=6 learner pendingSnap=10");
}

// ---------------------------------------------------------------------------------------
// ProgressTracker

fn conf_state(voters: &[u64], learners: &[u64]) -> ConfState {
    ConfState { voters: voters.to_vec(), learners: learners.to_vec(), ..Default::default() }
}

fn tracker(cs: &ConfState) -> ProgressTracker {
    let mut trk = ProgressTracker::new(256, 0);
    crate::confchange::restore(&mut trk, 11, cs).expect("a valid configuration");
    trk
}

fn set_matched(trk: &mut ProgressTracker, pairs: &[(u64, u64)]) {
    for &(id, matched) in pairs {
        trk.progress.get_mut(&id).expect("member").matched = matched;
    }
}

#[test]
fn tracker_restore_creates_fresh_progress_for_every_member() {
    let mut trk = tracker(&conf_state(&[1, 2, 3], &[4]));
    assert_eq!(trk.progress.keys().copied().collect::<Vec<_>>(), vec![1, 2, 3, 4]);
    for (id, pr) in &trk.progress {
        assert_eq!((pr.matched, pr.next_idx, pr.state), (0, 11, ProgressState::Probe), "peer {id}");
        assert!(pr.recent_active, "peer {id} starts active so check-quorum does not fire at once");
        assert_eq!(pr.is_learner, *id == 4, "peer {id}");
    }
    assert!(!trk.is_singleton());
    assert_eq!(trk.conf_state(), conf_state(&[1, 2, 3], &[4]));

    // Restoring again replaces members, progress and votes.
    trk.record_vote(1, true);
    set_matched(&mut trk, &[(1, 9)]);
    crate::confchange::restore(&mut trk, 30, &conf_state(&[1], &[])).expect("a valid configuration");
    assert_eq!(trk.progress.keys().copied().collect::<Vec<_>>(), vec![1]);
    assert_eq!((trk.progress[&1].matched, trk.progress[&1].next_idx), (0, 30));
    assert!(trk.votes.is_empty());
    assert!(trk.is_singleton());
}

#[test]
fn tracker_restore_joint_config() {
    // Joint (1 2 3)&&(1 2 4): 4 is leaving the voters and becomes a learner afterwards;
    // 5 is a plain learner.
    let cs = ConfState {
        voters: vec![1, 2, 3],
        voters_outgoing: vec![1, 2, 4],
        learners: vec![5],
        learners_next: vec![4],
        auto_leave: true,
    };
    let trk = tracker(&cs);
    assert!(trk.config.voters.is_joint());
    assert_eq!(trk.progress.keys().copied().collect::<Vec<_>>(), vec![1, 2, 3, 4, 5]);
    assert!(!trk.progress[&4].is_learner, "4 still votes in the outgoing half");
    assert!(trk.progress[&5].is_learner);
    assert_eq!(trk.conf_state(), cs, "the configuration round-trips");
    assert_eq!(trk.config.to_string(), "voters=(1 2 3)&&(1 2 4) learners=(5) learners_next=(4) autoleave");
}

#[test]
fn tracker_committed_counts_voters_only() {
    let mut trk = tracker(&conf_state(&[1, 2, 3], &[4, 5]));
    set_matched(&mut trk, &[(1, 10), (2, 3), (3, 1), (4, 10), (5, 10)]);
    // Learners at 10 do not help: voters 10, 3, 1 -> 3.
    assert_eq!(trk.committed(), 3);
    set_matched(&mut trk, &[(3, 7)]);
    assert_eq!(trk.committed(), 7);
}

#[test]
fn tracker_committed_in_joint_config_needs_both_halves() {
    let cs = ConfState { voters: vec![1, 2, 3], voters_outgoing: vec![4, 5, 6], ..Default::default() };
    let mut trk = tracker(&cs);
    set_matched(&mut trk, &[(1, 9), (2, 9), (3, 9)]);
    assert_eq!(trk.committed(), 0, "the outgoing half has acknowledged nothing");
    set_matched(&mut trk, &[(4, 5), (5, 6)]);
    assert_eq!(trk.committed(), 5);
}

#[test]
fn tracker_committed_singleton_and_empty() {
    let mut trk = tracker(&conf_state(&[7], &[]));
    set_matched(&mut trk, &[(7, 4)]);
    assert_eq!(trk.committed(), 4);
    // With no voters at all the quorum math answers "everything"; callers must cap it
    // by their own last index. (Learners without voters are not a configuration at all.)
    let trk = tracker(&conf_state(&[], &[]));
    assert_eq!(trk.committed(), u64::MAX);
    let mut learners_only = ProgressTracker::new(256, 0);
    assert_eq!(
        crate::confchange::restore(&mut learners_only, 11, &conf_state(&[], &[3])),
        Err(crate::confchange::ConfChangeError::RemovesAllVoters)
    );
}

#[test]
fn tracker_quorum_active_ignores_learners() {
    let mut trk = tracker(&conf_state(&[1, 2, 3], &[4, 5]));
    for pr in trk.progress.values_mut() {
        pr.recent_active = false;
    }
    // Both learners active, one voter: not a quorum.
    for id in [1, 4, 5] {
        trk.progress.get_mut(&id).expect("member").recent_active = true;
    }
    assert!(!trk.quorum_active());
    trk.progress.get_mut(&2).expect("member").recent_active = true;
    assert!(trk.quorum_active());
}

#[test]
fn tracker_quorum_active_in_joint_config() {
    let cs = ConfState { voters: vec![1, 2, 3], voters_outgoing: vec![3, 4, 5], ..Default::default() };
    let mut trk = tracker(&cs);
    for pr in trk.progress.values_mut() {
        pr.recent_active = false;
    }
    for id in [1, 2, 3] {
        trk.progress.get_mut(&id).expect("member").recent_active = true;
    }
    assert!(!trk.quorum_active(), "only one of (3 4 5) is active");
    trk.progress.get_mut(&5).expect("member").recent_active = true;
    assert!(trk.quorum_active());
}

#[test]
fn tracker_tally_votes() {
    let mut trk = tracker(&conf_state(&[1, 2, 3, 4, 5], &[6]));
    assert_eq!(trk.tally_votes(), (0, 0, VoteResult::Pending));
    trk.record_vote(1, true);
    trk.record_vote(2, false);
    // A learner's vote is neither counted nor decisive.
    trk.record_vote(6, true);
    assert_eq!(trk.tally_votes(), (1, 1, VoteResult::Pending));
    trk.record_vote(3, true);
    assert_eq!(trk.tally_votes(), (2, 1, VoteResult::Pending));
    // The first vote a voter casts in a term is the one that counts.
    trk.record_vote(2, true);
    assert_eq!(trk.tally_votes(), (2, 1, VoteResult::Pending));
    trk.record_vote(4, true);
    assert_eq!(trk.tally_votes(), (3, 1, VoteResult::Won));
    trk.reset_votes();
    assert_eq!(trk.tally_votes(), (0, 0, VoteResult::Pending));
    for id in [1, 2, 3] {
        trk.record_vote(id, false);
    }
    assert_eq!(trk.tally_votes(), (0, 3, VoteResult::Lost));
}

#[test]
fn tracker_tally_votes_in_joint_config() {
    let cs = ConfState { voters: vec![1, 2, 3], voters_outgoing: vec![1, 4, 5], ..Default::default() };
    let mut trk = tracker(&cs);
    trk.record_vote(1, true);
    trk.record_vote(2, true);
    assert_eq!(trk.tally_votes(), (2, 0, VoteResult::Pending), "the outgoing half has one of three");
    trk.record_vote(4, false);
    trk.record_vote(5, false);
    assert_eq!(trk.tally_votes(), (2, 2, VoteResult::Lost));
}

// ---------------------------------------------------------------------------------------
// The window through a real leader.

mod through_the_leader {
    use tessera_proto::raftpb::{Message, MessageType};

    use crate::storage::MemStorage;
    use crate::{Config, RawNode, StateRole};

    /// Handles every Ready of `node` in the synchronous contract and returns its messages.
    fn handle_readies(node: &mut RawNode<MemStorage>, storage: &MemStorage) -> Vec<Message> {
        let mut out = Vec::new();
        while node.has_ready() {
            let rd = node.ready();
            out.extend(rd.messages.iter().cloned());
            let mut store = storage.wl();
            store.append(&rd.entries).expect("contiguous");
            if let Some(hs) = &rd.hard_state {
                store.set_hard_state(*hs);
            }
            drop(store);
            out.extend(rd.persisted_messages.iter().cloned());
            node.advance(rd);
        }
        out
    }

    fn stabilize(nodes: &mut [RawNode<MemStorage>], storages: &[MemStorage]) {
        loop {
            let mut msgs = Vec::new();
            for (node, storage) in nodes.iter_mut().zip(storages) {
                msgs.extend(handle_readies(node, storage));
            }
            if msgs.is_empty() {
                return;
            }
            for m in msgs {
                let to = (m.to - 1) as usize;
                nodes[to].step(m).expect("peers know each other");
            }
        }
    }

    /// A follower whose whole in-flight window was lost answers a heartbeat: the leader must
    /// not push entries through the full window (that broke the window's invariant and
    /// panicked the leader) but send an empty append, whose rejection repairs the follower.
    #[test]
    fn heartbeat_response_with_a_full_window_sends_an_empty_append() {
        let storages: Vec<MemStorage> = (0..2).map(|_| MemStorage::new_with_voters(&[1, 2])).collect();
        let mut nodes: Vec<RawNode<MemStorage>> = (0..2u64)
            .map(|i| {
                let config = Config { inflight_msgs_max: 1, ..Config::new(i + 1) };
                RawNode::new(&config, storages[i as usize].clone()).expect("valid config")
            })
            .collect();
        nodes[0].campaign().expect("campaign");
        stabilize(&mut nodes, &storages);
        assert_eq!(nodes[0].raft().role(), StateRole::Leader);
        assert_eq!(nodes[0].raft().tracker().progress[&2].to_string(), "Replicate match=1 next=2");

        // Entry 2 goes out and is lost; it fills the window, so entry 3 waits.
        nodes[0].propose(b"a".to_vec()).expect("leader accepts");
        let lost = handle_readies(&mut nodes[0], &storages[0]);
        assert_eq!(lost.len(), 1);
        nodes[0].propose(b"b".to_vec()).expect("leader accepts");
        assert!(handle_readies(&mut nodes[0], &storages[0]).is_empty(), "the window is full");
        assert_eq!(
            nodes[0].raft().tracker().progress[&2].to_string(),
            "Replicate match=1 next=3 paused inflight=1[full]"
        );

        let term = nodes[0].raft().term();
        let response = Message {
            msg_type: MessageType::MsgHeartbeatResponse as i32,
            from: 2,
            to: 1,
            term,
            ..Default::default()
        };
        nodes[0].step(response).expect("from a peer");
        let sent = handle_readies(&mut nodes[0], &storages[0]);
        assert_eq!(sent.len(), 1);
        assert_eq!(sent[0].msg_type(), MessageType::MsgAppend);
        assert_eq!((sent[0].to, sent[0].index), (2, 2));
        assert!(sent[0].entries.is_empty(), "nothing fits through a full window");
        assert_eq!(nodes[0].raft().tracker().progress[&2].inflights.count(), 1);

        // The follower lacks entry 2 and says so; the leader probes back and repairs it.
        nodes[1].step(sent[0].clone()).expect("from the leader");
        stabilize(&mut nodes, &storages);
        for node in &nodes {
            assert_eq!(node.raft().raft_log().committed, 3);
        }
        assert_eq!(nodes[0].raft().tracker().progress[&2].to_string(), "Replicate match=3 next=4");
    }
}
