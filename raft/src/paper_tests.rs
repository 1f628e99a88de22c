//! The rules of section 5 of the Raft paper (Ongaro & Ousterhout, "In Search of an
//! Understandable Consensus Algorithm"), one or more tests per rule, plus the pre-vote rules
//! that production systems learned the hard way (see `shared/LESSONS.md`).
//!
//! The tests drive `Raft` directly, below `RawNode`, so they can set up any state the paper
//! draws (Figures 7 and 8) and assert on the exact messages a step produces. Two helpers
//! stand in for the application:
//! - `persist` writes the unstable tail into the node's `MemStorage`, then releases the
//!   messages that waited for durability: the ones addressed to the node itself (a leader's
//!   self-acknowledgement, a candidate's own vote) are stepped back in, the rest join
//!   `msgs` to be sent;
//! - `Network` is a tiny in-process cluster that delivers messages until none are left,
//!   with isolation to play crashes and partitions.
//!
//! Messages are compared as `describe_message` lines, so a failure shows the whole trace.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use tessera_proto::raftpb::{ConfState, Entry, HardState, Message, MessageType};

use crate::describe::describe_message;
use crate::storage::Storage;
use crate::{Config, MemStorage, Raft, StateRole, NONE};

type R = Raft<MemStorage>;

const ELECTION_TICKS: usize = 10;

mod election;
mod replication;
mod safety;

// ---- building nodes --------------------------------------------------------------------

fn config(id: u64) -> Config {
    Config { election_ticks: ELECTION_TICKS, heartbeat_ticks: 1, ..Config::new(id) }
}

fn entry(term: u64, index: u64) -> Entry {
    Entry { term, index, ..Default::default() }
}

fn data_entry(term: u64, index: u64, data: &[u8]) -> Entry {
    Entry { term, index, data: data.to_vec().into(), ..Default::default() }
}

/// A log whose entry at index `i + 1` has term `terms[i]`.
fn log_of(terms: &[u64]) -> Vec<Entry> {
    terms.iter().enumerate().map(|(i, t)| entry(*t, i as u64 + 1)).collect()
}

/// A node restarted from storage holding a log with the given terms, in `term`, having
/// committed `commit`.
fn raft_with(cfg: Config, peers: &[u64], terms: &[u64], term: u64, commit: u64) -> R {
    let storage = MemStorage::new_with_voters(peers);
    storage.wl().append(&log_of(terms)).unwrap();
    storage.wl().set_hard_state(HardState { term, vote: NONE, commit });
    Raft::new(&cfg, storage).unwrap()
}

fn raft_with_log(id: u64, peers: &[u64], terms: &[u64], term: u64, commit: u64) -> R {
    raft_with(config(id), peers, terms, term, commit)
}

fn new_raft(id: u64, peers: &[u64]) -> R {
    Raft::new(&config(id), MemStorage::new_with_voters(peers)).unwrap()
}

/// Makes `r` leader of its next term without an election, with the empty entry of the new
/// term persisted and self-acknowledged, and nothing left to send.
fn make_leader(r: &mut R) {
    r.become_candidate();
    r.become_leader();
    persist(r);
    r.msgs.clear();
}

// ---- playing the application -----------------------------------------------------------

/// Persists what the node accepted (entries, hard state) into its storage and releases the
/// messages that waited for it: the ones to the node itself are stepped back in (which may
/// produce more work, done in turn), the rest are queued in `msgs` for sending.
fn persist(r: &mut R) {
    for _ in 0..100 {
        // Snapshots belong to section 7; these tests never produce one.
        assert!(r.raft_log.unstable.snapshot.is_none(), "no snapshot expected in section 5 tests");
        let entries = r.raft_log.unstable.entries.clone();
        if let Some(last) = entries.last() {
            r.raft_log.store.wl().append(&entries).unwrap();
            r.raft_log.unstable.accept_in_progress();
            r.raft_log.stable_to(last.index, last.term);
        }
        let hs = r.hard_state();
        r.raft_log.store.wl().set_hard_state(hs);
        let after_append = std::mem::take(&mut r.msgs_after_append);
        if after_append.is_empty() {
            return;
        }
        for m in after_append {
            if m.to == r.id {
                r.step(m).expect("a completion addressed to oneself steps cleanly");
            } else {
                r.msgs.push(m);
            }
        }
    }
    panic!("persist did not settle");
}

/// Persists, then takes every message the node wants sent, in sending order.
fn take_msgs(r: &mut R) -> Vec<Message> {
    r.flush_proposals();
    persist(r);
    std::mem::take(&mut r.msgs)
}

/// The messages the node wants sent, rendered one per line.
fn sent(r: &mut R) -> Vec<String> {
    take_msgs(r).iter().map(describe_message).collect()
}

/// Hands committed entries to the "application" and confirms them applied.
fn apply(r: &mut R) -> Vec<Entry> {
    let entries = r.raft_log.next_committed_entries(true);
    if let Some(last) = entries.last() {
        r.raft_log.accept_applying(last.index);
        r.reduce_uncommitted_bytes(&entries);
        r.raft_log.applied_to(last.index);
    }
    entries
}

fn msg(t: MessageType, from: u64, to: u64, term: u64) -> Message {
    Message { msg_type: t as i32, from, to, term, ..Default::default() }
}

fn vote_request(from: u64, to: u64, term: u64, last_term: u64, last_index: u64) -> Message {
    Message { log_term: last_term, index: last_index, ..msg(MessageType::MsgRequestVote, from, to, term) }
}

fn pre_vote_request(from: u64, to: u64, term: u64, last_term: u64, last_index: u64) -> Message {
    Message { log_term: last_term, index: last_index, ..msg(MessageType::MsgRequestPreVote, from, to, term) }
}

fn vote_response(from: u64, to: u64, term: u64, granted: bool) -> Message {
    Message { reject: !granted, ..msg(MessageType::MsgRequestVoteResponse, from, to, term) }
}

fn append(from: u64, to: u64, term: u64, prev: (u64, u64), entries: Vec<Entry>, commit: u64) -> Message {
    Message {
        log_term: prev.0,
        index: prev.1,
        entries,
        commit,
        ..msg(MessageType::MsgAppend, from, to, term)
    }
}

fn append_ack(from: u64, to: u64, term: u64, index: u64) -> Message {
    Message { index, ..msg(MessageType::MsgAppendResponse, from, to, term) }
}

fn hup() -> Message {
    msg(MessageType::MsgHup, 0, 0, 0)
}

fn propose(r: &mut R, data: &[u8]) -> crate::Result<()> {
    let m = Message {
        entries: vec![Entry { data: data.to_vec().into(), ..Default::default() }],
        ..msg(MessageType::MsgPropose, r.id, r.id, 0)
    };
    r.step(m)
}

/// The terms of a node's log, index 1 first.
fn log_terms(r: &R) -> Vec<u64> {
    r.raft_log.all_entries().iter().map(|e| e.term).collect()
}

fn tick_times(r: &mut R, ticks: usize) {
    for _ in 0..ticks {
        r.tick();
    }
}

// ---- a tiny in-process cluster ---------------------------------------------------------

/// Nodes over `MemStorage`, with messages delivered in order, one at a time, until none are
/// left. Every node persists synchronously after each step. An isolated node neither sends
/// nor receives: it plays a crashed or partitioned server.
struct Network {
    nodes: BTreeMap<u64, R>,
    isolated: BTreeSet<u64>,
}

impl Network {
    fn new(ids: &[u64]) -> Network {
        Network::with_config(ids, |_| {})
    }

    fn with_config(ids: &[u64], tweak: impl Fn(&mut Config)) -> Network {
        let rafts = ids
            .iter()
            .map(|id| {
                let mut cfg = config(*id);
                tweak(&mut cfg);
                Raft::new(&cfg, MemStorage::new_with_voters(ids)).unwrap()
            })
            .collect();
        Network::from_rafts(rafts)
    }

    fn from_rafts(rafts: Vec<R>) -> Network {
        Network { nodes: rafts.into_iter().map(|r| (r.id, r)).collect(), isolated: BTreeSet::new() }
    }

    fn node(&self, id: u64) -> &R {
        &self.nodes[&id]
    }

    fn node_mut(&mut self, id: u64) -> &mut R {
        self.nodes.get_mut(&id).unwrap()
    }

    fn isolate(&mut self, id: u64) {
        self.isolated.insert(id);
    }

    fn recover(&mut self) {
        self.isolated.clear();
    }

    /// Delivers `msgs` and everything they cause, until the network is quiet.
    fn deliver(&mut self, msgs: Vec<Message>) {
        let mut queue: VecDeque<Message> = msgs.into();
        let mut delivered = 0;
        while let Some(m) = queue.pop_front() {
            delivered += 1;
            assert!(delivered < 100_000, "the network never went quiet");
            if self.isolated.contains(&m.from) || self.isolated.contains(&m.to) {
                continue;
            }
            let Some(node) = self.nodes.get_mut(&m.to) else { continue };
            // Refused proposals are the proposer's business; the network moves on.
            let _ = node.step(m);
            queue.extend(take_msgs(node));
        }
    }

    /// Steps a local message into `id` and delivers what follows.
    fn step_local(&mut self, id: u64, m: Message) {
        let node = self.node_mut(id);
        let _ = node.step(m);
        let out = take_msgs(node);
        self.deliver(out);
    }

    fn campaign(&mut self, id: u64) {
        self.step_local(id, hup());
    }

    fn propose(&mut self, id: u64, data: &[u8]) {
        let node = self.node_mut(id);
        propose(node, data).unwrap();
        let out = take_msgs(node);
        self.deliver(out);
    }

    fn tick(&mut self, id: u64) {
        let node = self.node_mut(id);
        node.tick();
        let out = take_msgs(node);
        self.deliver(out);
    }

    fn leaders(&self) -> Vec<u64> {
        self.nodes.values().filter(|r| r.role == StateRole::Leader).map(|r| r.id).collect()
    }
}

/// Log Matching (Figure 3): if two logs hold an entry with the same index and term, the logs
/// are identical in all entries up to that index.
fn assert_log_matching(nodes: &[&R]) {
    for a in nodes {
        for b in nodes {
            let (la, lb) = (a.raft_log.all_entries(), b.raft_log.all_entries());
            for i in (0..la.len().min(lb.len())).rev() {
                if la[i].term == lb[i].term {
                    assert_eq!(
                        la[..=i],
                        lb[..=i],
                        "logs of {} and {} match at {} but differ before",
                        a.id,
                        b.id,
                        i + 1
                    );
                    break;
                }
            }
        }
    }
}
