//! The simulated cluster: nodes with disks and state machines, the driver loop that plays
//! application (and async storage threads) for each of them, the fault injector, and the
//! invariant checks run after every step.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::rc::Rc;

use tessera_raft::raftpb::{Entry, HardState, Message, MessageType, Snapshot};
use tessera_raft::{
    describe, Error, MemStorage, RawNode, SnapshotStatus, StateRole, Storage, StorageError,
    LOCAL_APPEND_THREAD, LOCAL_APPLY_THREAD,
};

use super::history::{History, StateMachine};
use super::knobs::{Knobs, RunStats};
use super::network::{Network, Sent};
use super::rng::Rng;

/// After the network heals, a leader must commit a fresh proposal on every node within
/// this many election timeouts (counted in the ticks of the fastest-ticking node).
const LIVENESS_ELECTIONS_MAX: u64 = 40;

/// Once healed, messages take at most this many steps more than one, and nodes tick at
/// most this often per step, so a round trip (at most about 2 * (1 + 2) steps) takes
/// under two ticks.
const HEALED_DELAY_STEPS_MAX: u64 = 2;
const HEALED_TICK_PERMILLE_MAX: u64 = 300;

/// Besides the elections, the liveness bound allows this many steps per entry of the
/// backlog (uncommitted or unapplied somewhere) at healing: a window of one entry moves
/// one entry per round trip.
const HEALED_STEPS_PER_BACKLOG_ENTRY: u64 = 8;

/// How many trace lines a failing run keeps.
const TRACE_LINES_MAX: usize = 400;

/// Every full log comparison (durable logs and pairwise log matching) happens this often;
/// the cheap incremental checks run after every step.
const FULL_CHECK_INTERVAL_STEPS: u64 = 64;

/// A run's event log: kept in a ring for a failure report, or echoed live on replay.
#[derive(Clone, Debug, Default)]
pub struct Trace {
    pub lines: Rc<RefCell<VecDeque<String>>>,
    pub echo: bool,
}

/// A transport's report about a message it sent, to hand to the sender.
#[derive(Clone, Copy, Debug)]
enum TransportReport {
    Snapshot(u64, SnapshotStatus),
    Unreachable(u64),
}

/// One simulated machine.
#[derive(Debug)]
struct Node {
    id: u64,
    /// The running node, or None while crashed.
    raw: Option<RawNode<MemStorage>>,
    /// What survives a crash: everything persisted. The running node reads it too.
    disk: MemStorage,
    /// The state machine in memory.
    sm: StateMachine,
    /// The state machine as last flushed; what a restart may resume from.
    sm_durable: StateMachine,
    /// Async storage writes: the work of the append and apply threads, in order.
    append_queue: VecDeque<Message>,
    apply_queue: VecDeque<Message>,
    /// The highest commit index this incarnation reported; it never decreases.
    committed_seen: u64,
    /// Leader completeness: the term this node was last seen leading in, and how much of
    /// the applied history its log was checked against in that term.
    leader_checked: (u64, u64),
    ticks_since_heal: u64,
}

pub struct Sim {
    knobs: Knobs,
    rng: Rng,
    nodes: Vec<Node>,
    net: Network,
    history: History,
    now_step: u64,
    /// The fault phase is over: no more crashes, drops or partitions.
    healing: bool,
    proposal_seq: u64,
    reports: Vec<(u64, TransportReport)>,
    stats: RunStats,
    trace: Option<Trace>,
    /// The liveness proposal, and the index it was first applied at.
    marker: Vec<u8>,
    marker_index: Option<u64>,
}

/// Runs one seed: the fault phase, then healing and the liveness check. Panics (with a
/// message naming the invariant) on any violation.
pub fn run(seed: u64, trace: Option<Trace>) -> RunStats {
    let mut sim = Sim::new(seed, trace);
    sim.trace(|| format!("seed {seed}: {:?}", sim.knobs));
    for _ in 0..sim.knobs.fault_steps {
        sim.step_once();
    }
    sim.heal();
    sim.run_until_live();
    sim.check_logs_fully();
    sim.finish()
}

impl Sim {
    fn new(seed: u64, trace: Option<Trace>) -> Sim {
        let mut rng = Rng::new(seed);
        let knobs = Knobs::random(seed, &mut rng);
        let voters: Vec<u64> = (1..=knobs.node_count as u64).collect();
        let nodes = voters
            .iter()
            .map(|&id| {
                let disk = MemStorage::new_with_voters(&voters);
                let raw = RawNode::new(&knobs.config(id, rng.next_u64(), 0), disk.clone())
                    .expect("invariant: the simulated configuration is valid");
                Node {
                    id,
                    raw: Some(raw),
                    disk,
                    sm: StateMachine::default(),
                    sm_durable: StateMachine::default(),
                    append_queue: VecDeque::new(),
                    apply_queue: VecDeque::new(),
                    committed_seen: 0,
                    leader_checked: (0, 0),
                    ticks_since_heal: 0,
                }
            })
            .collect();
        let net = Network::new(knobs.net);
        Sim {
            knobs,
            rng,
            nodes,
            net,
            history: History::default(),
            now_step: 0,
            healing: false,
            proposal_seq: 0,
            reports: Vec::new(),
            stats: RunStats { runs: 1, ..RunStats::default() },
            trace,
            marker: format!("liveness-{seed}").into_bytes(),
            marker_index: None,
        }
    }

    fn finish(mut self) -> RunStats {
        self.stats.steps = self.now_step;
        self.stats.entries_committed = self.history.applied_len();
        self.stats.leaders = self.history.leader_count() as u64;
        self.stats.messages_sent = self.net.stats.sent;
        self.stats.messages_dropped = self.net.stats.dropped;
        self.trace(|| format!("done: {:?}", self.stats));
        self.stats
    }

    fn trace(&self, line: impl FnOnce() -> String) {
        let Some(trace) = &self.trace else { return };
        let line = format!("[{:>5}] {}", self.now_step, line().trim_end().replace('\n', " | "));
        if trace.echo {
            println!("{line}");
        }
        let mut lines = trace.lines.borrow_mut();
        if lines.len() >= TRACE_LINES_MAX {
            lines.pop_front();
        }
        lines.push_back(line);
    }

    fn quorum(&self) -> usize {
        self.nodes.len() / 2 + 1
    }

    fn alive(&self, i: usize) -> bool {
        self.nodes[i].raw.is_some()
    }

    fn raw(&mut self, i: usize) -> &mut RawNode<MemStorage> {
        self.nodes[i].raw.as_mut().expect("invariant: the node is up")
    }

    fn random_live_node(&mut self) -> Option<usize> {
        let live: Vec<usize> = (0..self.nodes.len()).filter(|&i| self.alive(i)).collect();
        (!live.is_empty()).then(|| *self.rng.pick(&live))
    }

    // ---- the step loop -------------------------------------------------------------

    fn step_once(&mut self) {
        self.now_step += 1;
        if !self.healing {
            self.inject_faults();
        }
        let n = self.nodes.len();
        for i in 0..n {
            if self.alive(i) && self.rng.chance(self.knobs.tick_permille) {
                // Now and then a node's clock jumps, as after a long pause of its process.
                let ticks = if !self.healing && self.rng.chance(3) {
                    self.rng.between(2, 2 * self.knobs.election_ticks as u64)
                } else {
                    1
                };
                for _ in 0..ticks {
                    self.raw(i).tick();
                    self.observe(i);
                }
                self.nodes[i].ticks_since_heal += ticks;
            }
        }
        if self.rng.chance(self.knobs.propose_permille) {
            self.propose_at_random();
        }
        for (sender, m) in self.net.take_due(self.now_step, &mut self.rng) {
            self.deliver(sender, m);
        }
        let mut order: Vec<usize> = (0..n).collect();
        self.rng.shuffle(&mut order);
        for &i in &order {
            if self.alive(i) && self.rng.chance(self.knobs.ready_permille) {
                self.handle_ready(i);
            }
        }
        if self.knobs.async_storage_writes {
            for &i in &order {
                // A healed node's storage keeps up: it works off everything queued.
                let batch_max = if self.healing { u64::MAX } else { self.rng.between(1, 3) };
                if self.alive(i) && self.rng.chance(self.knobs.queue_permille) {
                    for _ in 0..batch_max.min(self.nodes[i].append_queue.len() as u64) {
                        self.process_append(i);
                    }
                }
                if self.alive(i) && self.rng.chance(self.knobs.queue_permille) {
                    for _ in 0..batch_max.min(self.nodes[i].apply_queue.len() as u64) {
                        self.process_apply(i);
                    }
                }
            }
        }
        self.flush_reports();
        if self.rng.chance(self.knobs.compact_permille) {
            let i = self.rng.below(n as u64) as usize;
            self.maybe_compact(i);
        }
        self.check_all();
    }

    fn inject_faults(&mut self) {
        if self.rng.chance(self.knobs.crash_permille) {
            if let Some(i) = self.random_live_node() {
                self.crash(i, "at random", false);
            }
        }
        for i in 0..self.nodes.len() {
            if !self.alive(i) && self.rng.chance(self.knobs.restart_permille) {
                self.restart(i);
            }
        }
        if self.net.is_partitioned() {
            if self.rng.chance(self.knobs.heal_permille) {
                self.trace(|| "partition heals".to_string());
                self.net.heal();
            }
        } else if self.rng.chance(self.knobs.partition_permille) {
            let n = self.nodes.len();
            let groups: Vec<u8> = if self.rng.coin() {
                // Cut one node off.
                let lonely = self.rng.below(n as u64) as usize;
                (0..n).map(|i| u8::from(i == lonely)).collect()
            } else {
                (0..n).map(|_| self.rng.below(3) as u8).collect()
            };
            self.trace(|| format!("partition {groups:?}"));
            self.net.partition(groups);
            self.stats.partitions += 1;
        }
        if self.rng.chance(self.knobs.campaign_permille) {
            if let Some(i) = self.random_live_node() {
                self.trace(|| format!("node {} campaigns", i + 1));
                self.raw(i).campaign().expect("invariant: campaigning cannot fail");
                self.observe(i);
            }
        }
        if self.rng.chance(5) {
            // The next snapshot request fails as if generation were under way.
            let i = self.rng.below(self.nodes.len() as u64) as usize;
            self.nodes[i].disk.wl().trigger_snapshot_unavailable();
        }
    }

    /// Proposes one entry, or now and then a batch of a few, at a random live node.
    fn propose_at_random(&mut self) {
        let Some(i) = self.random_live_node() else { return };
        let count = if self.rng.chance(100) { self.rng.between(2, 4) } else { 1 };
        let mut entries = Vec::new();
        for _ in 0..count {
            self.proposal_seq += 1;
            let mut data = format!("p{}", self.proposal_seq).into_bytes();
            data.resize(data.len() + self.rng.below(40) as usize, b'.');
            entries.push(Entry { data: data.into(), ..Entry::default() });
        }
        let result = if count == 1 {
            let data = entries.pop().expect("one entry").data;
            self.raw(i).propose(data)
        } else {
            self.raw(i).propose_entries(entries)
        };
        self.count_proposal(i, result);
    }

    fn count_proposal(&mut self, i: usize, result: tessera_raft::Result<()>) {
        match result {
            Ok(()) => self.stats.proposals_ok += 1,
            Err(Error::ProposalDropped(why)) => {
                self.stats.proposals_dropped += 1;
                self.trace(|| format!("node {} drops a proposal: {why:?}", i + 1));
            }
            Err(e) => panic!("invariant: node {} refuses a proposal with an unexpected error: {e}", i + 1),
        }
        self.observe(i);
    }

    // ---- the network -----------------------------------------------------------------

    /// Sends messages that node `i` produced.
    fn send_all(&mut self, i: usize, msgs: Vec<Message>) {
        let from = i as u64 + 1;
        for m in msgs {
            let to = m.to;
            assert!(
                from != to && (1..=self.nodes.len() as u64).contains(&to),
                "invariant: a node sends to a peer, not to {}: {}",
                describe::node_name(to),
                describe::describe_message(&m)
            );
            self.check_durable_before_sent(i, &m);
            let is_snapshot = m.msg_type() == MessageType::MsgSnapshot;
            if is_snapshot {
                self.stats.snapshots_sent += 1;
            }
            match self.net.send(from, m, self.now_step, &mut self.rng) {
                Sent::Queued => {}
                Sent::Refused => self.transport_failed(from, to, is_snapshot),
                // A snapshot travels over a stream whose breakage the sender sees.
                Sent::Lost if is_snapshot => self.transport_failed(from, to, true),
                Sent::Lost => {}
            }
        }
    }

    /// A vote or an acknowledgement promises durability: what it grants or acknowledges
    /// must already be on the sender's disk when it leaves.
    ///
    /// Except when the sender has durably moved on to a later term, and the message can
    /// only reach a deposed leader. The core does send such stale promises (seed 1025
    /// before this exception): a follower acknowledges entries of term T, then a leader of
    /// a later term overwrites them before the Ready carrying the acknowledgement is
    /// written. It is harmless: the follower held the entries until that overwrite, so in
    /// every election before it the follower voted as a node holding them, and Raft's
    /// leader-completeness argument goes through unchanged.
    fn check_durable_before_sent(&self, i: usize, m: &Message) {
        let disk = &self.nodes[i].disk;
        let hs = *disk.rl().hard_state();
        if m.reject || hs.term > m.term {
            return;
        }
        match m.msg_type() {
            MessageType::MsgRequestVoteResponse => {
                assert!(
                    hs.term == m.term && hs.vote == m.to,
                    "durability violated: node {} grants its vote in term {} to {} with hard state {} on disk",
                    i + 1,
                    m.term,
                    m.to,
                    describe::describe_hard_state(&hs)
                );
            }
            MessageType::MsgAppendResponse => {
                let last = disk.last_index().expect("MemStorage answers");
                assert!(
                    m.index <= last,
                    "durability violated: node {} acknowledges index {} with only {last} on disk: {}",
                    i + 1,
                    m.index,
                    describe::describe_message(m)
                );
            }
            _ => {}
        }
    }

    fn transport_failed(&mut self, from: u64, to: u64, is_snapshot: bool) {
        if is_snapshot {
            self.reports.push((from, TransportReport::Snapshot(to, SnapshotStatus::Failure)));
        } else if self.rng.coin() {
            self.reports.push((from, TransportReport::Unreachable(to)));
        }
    }

    fn deliver(&mut self, from: u64, m: Message) {
        let to = m.to;
        let is_snapshot = m.msg_type() == MessageType::MsgSnapshot;
        let i = (to - 1) as usize;
        if !self.alive(i) || !self.net.connected(from, to) {
            self.transport_failed(from, to, is_snapshot);
            return;
        }
        self.trace(|| format!("deliver {}", describe::describe_message(&m)));
        match self.raw(i).step(m) {
            Ok(()) => {}
            Err(Error::ProposalDropped(why)) => {
                self.stats.proposals_dropped += 1;
                self.trace(|| format!("node {to} drops a forwarded proposal: {why:?}"));
            }
            Err(e) => panic!("invariant: node {to} refuses a message from {from}: {e}"),
        }
        self.observe(i);
        if is_snapshot {
            self.reports.push((from, TransportReport::Snapshot(to, SnapshotStatus::Finish)));
        }
    }

    fn flush_reports(&mut self) {
        for (from, report) in std::mem::take(&mut self.reports) {
            let i = (from - 1) as usize;
            if !self.alive(i) {
                continue;
            }
            self.trace(|| format!("node {from} hears from its transport: {report:?}"));
            match report {
                TransportReport::Snapshot(to, status) => self.raw(i).report_snapshot(to, status),
                TransportReport::Unreachable(to) => self.raw(i).report_unreachable(to),
            }
            self.observe(i);
        }
    }

    // ---- the application: Ready, storage, state machine -------------------------------

    fn handle_ready(&mut self, i: usize) {
        let raw = self.raw(i);
        if !raw.has_ready() {
            return;
        }
        let mut rd = raw.ready();
        self.trace(|| format!("node {} {}", i + 1, describe::describe_ready(&rd)));
        self.observe(i);
        if self.knobs.async_storage_writes {
            assert!(
                rd.entries.is_empty() && rd.committed_entries.is_empty() && rd.persisted_messages.is_empty(),
                "invariant: with async storage writes the Ready carries work only as messages"
            );
            let mut outgoing = Vec::new();
            for m in std::mem::take(&mut rd.messages) {
                match m.to {
                    LOCAL_APPEND_THREAD => {
                        self.check_new_entries(i, &m.entries);
                        self.nodes[i].append_queue.push_back(m);
                    }
                    LOCAL_APPLY_THREAD => self.nodes[i].apply_queue.push_back(m),
                    _ => outgoing.push(m),
                }
            }
            self.send_all(i, outgoing);
            return;
        }

        self.check_new_entries(i, &rd.entries);
        let crash_at =
            (!self.healing && self.rng.chance(self.knobs.crash_in_ready_permille)).then(|| self.rng.below(5));
        if crash_at == Some(0) {
            return self.crash(i, "holding a Ready it has not started on", true);
        }
        self.send_all(i, std::mem::take(&mut rd.messages));
        if crash_at == Some(1) {
            return self.crash(i, "after sending a Ready's messages, before persisting it", true);
        }
        self.persist(i, rd.snapshot.take(), &rd.entries, rd.hard_state.take());
        if crash_at == Some(2) {
            return self.crash(i, "after persisting a Ready, before sending its persisted messages", true);
        }
        self.send_all(i, std::mem::take(&mut rd.persisted_messages));
        if crash_at == Some(3) {
            return self.crash(i, "after persisting a Ready, before applying it", true);
        }
        self.apply(i, &rd.committed_entries);
        if crash_at == Some(4) {
            return self.crash(i, "after applying a Ready, before advancing", true);
        }
        self.raw(i).advance(rd);
        self.observe(i);
    }

    /// Log matching on entries as they are handed out for persisting: every entry enters
    /// a durable log this way, so together with the unstable tails checked after each
    /// step this covers every log.
    fn check_new_entries(&mut self, i: usize, entries: &[Entry]) {
        let Some(first) = entries.first() else { return };
        let raw = self.nodes[i].raw.as_ref().expect("invariant: the node is up");
        let mut prev_term = raw.raft().raft_log().term(first.index - 1).ok();
        for e in entries {
            self.history.check_entry(i as u64 + 1, e, prev_term);
            prev_term = Some(e.term);
        }
    }

    /// One atomic write to the node's disk: snapshot, entries, hard state.
    fn persist(
        &mut self,
        i: usize,
        snapshot: Option<Snapshot>,
        entries: &[Entry],
        hard_state: Option<HardState>,
    ) {
        let id = i as u64 + 1;
        if let Some(snapshot) = snapshot {
            let meta = snapshot.metadata.clone().unwrap_or_default();
            let sm = StateMachine::decode(&snapshot.data);
            assert_eq!(
                sm.index, meta.index,
                "invariant: node {id} got a snapshot whose payload is the state at {} but whose metadata says {}",
                sm.index, meta.index
            );
            self.history.check_state(id, &sm, "snapshot from the leader");
            self.trace(|| format!("node {id} installs {}", describe::describe_snapshot(&snapshot)));
            self.nodes[i]
                .disk
                .wl()
                .apply_snapshot(snapshot)
                .unwrap_or_else(|e| panic!("invariant: node {id} can store the snapshot it accepted: {e}"));
            let node = &mut self.nodes[i];
            node.sm = sm;
            node.sm_durable = sm;
            self.stats.snapshots_installed += 1;
        }
        let mut disk = self.nodes[i].disk.wl();
        disk.append(entries).unwrap_or_else(|e| panic!("invariant: node {id} can append to its disk: {e}"));
        if let Some(hs) = hard_state {
            disk.set_hard_state(hs);
        }
    }

    /// Applies committed entries to the node's state machine. An entry it already holds
    /// (its durable state ran ahead of its durable commit index before a restart) is
    /// skipped, after checking it is the same.
    fn apply(&mut self, i: usize, entries: &[Entry]) {
        let id = i as u64 + 1;
        let quorum = self.quorum();
        for e in entries {
            let mut sm = self.nodes[i].sm;
            if e.index <= sm.index {
                self.history.check_reapplied(id, e);
                continue;
            }
            let is_new = self.history.is_new(e.index);
            let copies = if is_new { self.durable_copies(e) } else { 0 };
            self.history.on_apply(id, &mut sm, e, copies, quorum);
            if is_new && e.data == self.marker {
                self.marker_index = Some(e.index);
            }
            self.nodes[i].sm = sm;
            self.stats.entries_applied += 1;
        }
        if self.rng.coin() {
            self.nodes[i].sm_durable = self.nodes[i].sm;
        }
    }

    /// How many disks hold `e` (or a snapshot past it).
    fn durable_copies(&self, e: &Entry) -> usize {
        self.nodes
            .iter()
            .filter(|n| match n.disk.term(e.index) {
                Ok(term) => term == e.term,
                Err(StorageError::Compacted) => true,
                Err(_) => false,
            })
            .count()
    }

    /// Async storage writes: the append thread persists one queued write, then delivers
    /// the messages that waited for it.
    fn process_append(&mut self, i: usize) {
        let Some(m) = self.nodes[i].append_queue.pop_front() else { return };
        let hard_state = (m.term != 0).then_some(HardState { term: m.term, vote: m.vote, commit: m.commit });
        self.persist(i, m.snapshot.map(|boxed| *boxed), &m.entries, hard_state);
        if !self.healing && self.rng.chance(self.knobs.crash_in_ready_permille) {
            return self.crash(i, "after an async append, before its responses", true);
        }
        self.deliver_responses(i, m.responses);
    }

    /// Async storage writes: the apply thread applies one batch, then reports it.
    fn process_apply(&mut self, i: usize) {
        let Some(m) = self.nodes[i].apply_queue.pop_front() else { return };
        self.apply(i, &m.entries);
        if !self.healing && self.rng.chance(self.knobs.crash_in_ready_permille) {
            return self.crash(i, "after an async apply, before its response", true);
        }
        self.deliver_responses(i, m.responses);
    }

    fn deliver_responses(&mut self, i: usize, responses: Vec<Message>) {
        let id = i as u64 + 1;
        let mut outgoing = Vec::new();
        for r in responses {
            if r.to != id {
                outgoing.push(r);
                continue;
            }
            self.trace(|| format!("node {id} completes {}", describe::describe_message(&r)));
            self.check_durable_before_sent(i, &r);
            self.raw(i)
                .step(r)
                .unwrap_or_else(|e| panic!("invariant: node {id} steps its own storage completion: {e}"));
            self.observe(i);
        }
        self.send_all(i, outgoing);
    }

    /// Snapshots the state machine and compacts the log up to it, so that lagging peers
    /// need the snapshot. Only state the node knows is applied, and only up to its durable
    /// commit index: a restart must find the snapshot at or below the stored commit.
    fn maybe_compact(&mut self, i: usize) {
        let node = &self.nodes[i];
        let Some(raw) = &node.raw else { return };
        let sm = node.sm;
        if sm.index == 0 || sm.index > raw.raft().raft_log().applied {
            return;
        }
        let first = node.disk.first_index().expect("MemStorage answers");
        let last = node.disk.last_index().expect("MemStorage answers");
        let commit = node.disk.rl().hard_state().commit;
        if sm.index < first || sm.index > last || sm.index > commit {
            return;
        }
        let term = node.disk.term(sm.index).expect("the index is on disk");
        assert_eq!(
            Some(term),
            self.history.applied_term(sm.index),
            "invariant: node {}'s disk holds the entry its state machine applied at {}",
            node.id,
            sm.index
        );
        let mut disk = node.disk.wl();
        disk.create_snapshot(sm.index, None, sm.encode()).expect("a snapshot inside the log");
        disk.compact(sm.index + 1).expect("compaction inside the log");
        drop(disk);
        self.trace(|| format!("node {} snapshots at {} and compacts", i + 1, sm.index));
        self.stats.compactions += 1;
    }

    // ---- crashes and restarts ----------------------------------------------------------

    /// Crashes a node: it loses everything it had not persisted. `mid_work` says the crash
    /// interrupted a Ready or a storage work item rather than striking between them.
    fn crash(&mut self, i: usize, when: &str, mid_work: bool) {
        self.trace(|| format!("node {} crashes {when}", i + 1));
        self.stats.crashes += 1;
        self.stats.crashes_mid_ready += u64::from(mid_work);
        let node = &mut self.nodes[i];
        node.raw = None;
        node.append_queue.clear();
        node.apply_queue.clear();
        node.sm = StateMachine::default();
    }

    /// Restarts a node from a copy of its disk. The state machine resumes either from the
    /// disk's snapshot with `applied` = 0 (everything after it is applied again), or from
    /// its last flushed state with `applied` set to it.
    fn restart(&mut self, i: usize) {
        let id = i as u64 + 1;
        let disk = copy_disk(&self.nodes[i].disk);
        let snapshot = disk.snapshot(0, id).expect("a fresh copy has no pending unavailability");
        let snapshot_sm = StateMachine::decode(&snapshot.data);
        let snapshot_index = snapshot.metadata.as_ref().map_or(0, |m| m.index);
        assert_eq!(
            snapshot_sm.index, snapshot_index,
            "invariant: node {id}'s disk snapshot payload matches its metadata"
        );
        self.history.check_state(id, &snapshot_sm, "snapshot on disk");
        let flushed = self.nodes[i].sm_durable;
        self.history.check_state(id, &flushed, "flushed state machine");
        // With async storage writes the apply thread may run ahead of the write that
        // records the commit index, and the core refuses a restart with `applied` above
        // the stored commit: claim no more than that, and skip the entries applied again.
        let stored_commit = disk.rl().hard_state().commit;
        let (sm, applied) = if self.rng.coin() {
            (snapshot_sm, 0)
        } else if flushed.index > snapshot_sm.index {
            (flushed, flushed.index.min(stored_commit))
        } else {
            (snapshot_sm, snapshot_sm.index)
        };
        let config = self.knobs.config(id, self.rng.next_u64(), applied);
        let raw = RawNode::new(&config, disk.clone())
            .unwrap_or_else(|e| panic!("invariant: node {id} restarts from its disk: {e}"));
        self.trace(|| {
            format!(
                "node {id} restarts at {} (state machine at {}, applied {applied})",
                describe_node(&raw),
                sm.index
            )
        });
        let node = &mut self.nodes[i];
        node.committed_seen = raw.raft().raft_log().committed;
        node.leader_checked = (0, 0);
        node.raw = Some(raw);
        node.disk = disk;
        node.sm = sm;
        node.sm_durable = sm;
        self.stats.restarts += 1;
        self.check_disk_log(i);
        self.observe(i);
    }

    // ---- healing and liveness ----------------------------------------------------------

    fn heal(&mut self) {
        self.trace(|| "heal: network whole, no drops, every node up".to_string());
        self.healing = true;
        self.net.heal();
        // A healthy network: nothing lost, and round trips well inside the election
        // timeout (a clock that ticks slower than messages travel); nodes keep up.
        self.net.faults.drop_permille = 0;
        self.net.faults.delay_steps_max = self.net.faults.delay_steps_max.min(HEALED_DELAY_STEPS_MAX);
        self.knobs.tick_permille = self.knobs.tick_permille.min(HEALED_TICK_PERMILLE_MAX);
        self.knobs.ready_permille = 1000;
        self.knobs.queue_permille = 1000;
        self.knobs.propose_permille = 0;
        for i in 0..self.nodes.len() {
            if !self.alive(i) {
                self.restart(i);
            }
            self.nodes[i].ticks_since_heal = 0;
        }
    }

    /// Liveness: with everything healed, a leader must get a fresh proposal committed
    /// and applied on every node within a bounded number of ticks.
    fn run_until_live(&mut self) {
        let backlog = self.backlog_entries();
        let ticks_max = LIVENESS_ELECTIONS_MAX * self.knobs.election_ticks as u64
            + backlog * HEALED_STEPS_PER_BACKLOG_ENTRY * self.knobs.tick_permille / 1000;
        let repropose_steps = 4 * self.knobs.election_ticks as u64 * 1000 / self.knobs.tick_permille;
        let mut proposed_at: Option<u64> = None;
        loop {
            if let Some(index) = self.marker_index {
                if self.nodes.iter().all(|n| n.sm.index >= index) {
                    let ticks = self.nodes.iter().map(|n| n.ticks_since_heal).max().unwrap_or(0);
                    self.stats.liveness_ticks_max = ticks;
                    self.stats.liveness_bound_used_permille_max = ticks * 1000 / ticks_max;
                    self.trace(|| format!("live: index {index} applied everywhere after {ticks} ticks"));
                    return;
                }
            } else if proposed_at.is_none_or(|at| self.now_step >= at + repropose_steps) {
                if let Some(i) = self.leader() {
                    let marker = self.marker.clone();
                    let result = self.raw(i).propose(marker);
                    self.count_proposal(i, result);
                    proposed_at = Some(self.now_step);
                }
            }
            let ticks = self.nodes.iter().map(|n| n.ticks_since_heal).max().unwrap_or(0);
            if ticks > ticks_max {
                let status: Vec<String> = self
                    .nodes
                    .iter()
                    .map(|n| {
                        format!(
                            "{} (state machine at {})",
                            describe_node(n.raw.as_ref().expect("up")),
                            n.sm.index
                        )
                    })
                    .collect();
                panic!(
                    "liveness violated: {ticks} ticks after healing, the proposal is {} (applied at {:?}); nodes: {}",
                    if proposed_at.is_some() { "not applied everywhere" } else { "not even accepted" },
                    self.marker_index,
                    status.join("; ")
                );
            }
            self.step_once();
        }
    }

    /// How far the longest log runs ahead of the least applied state machine.
    fn backlog_entries(&self) -> u64 {
        let last =
            self.nodes.iter().filter_map(|n| Some(n.raw.as_ref()?.raft().raft_log().last_index())).max();
        let applied = self.nodes.iter().map(|n| n.sm.index).min();
        last.unwrap_or(0).saturating_sub(applied.unwrap_or(0))
    }

    /// The live leader of the highest term, if any.
    fn leader(&self) -> Option<usize> {
        (0..self.nodes.len())
            .filter_map(|i| {
                let raft = self.nodes[i].raw.as_ref()?.raft();
                (raft.role() == StateRole::Leader).then_some((raft.term(), i))
            })
            .max()
            .map(|(_, i)| i)
    }

    // ---- invariants --------------------------------------------------------------------

    /// After every operation on a node: election safety, and the highest term seen.
    fn observe(&mut self, i: usize) {
        let Some(raw) = &self.nodes[i].raw else { return };
        let raft = raw.raft();
        self.history.note_term(raft.term());
        if raft.role() == StateRole::Leader {
            self.history.record_leader(raft.term(), raft.id());
        }
    }

    /// After every step.
    fn check_all(&mut self) {
        for node in &mut self.nodes {
            let Some(raw) = &node.raw else { continue };
            let raft = raw.raft();
            let log = raft.raft_log();
            let id = node.id;
            self.history.note_term(raft.term());
            assert!(
                log.committed >= node.committed_seen,
                "invariant violated: node {id}'s commit index went back from {} to {}",
                node.committed_seen,
                log.committed
            );
            node.committed_seen = log.committed;
            assert!(
                log.applied <= log.committed,
                "invariant violated: node {id} applied {} beyond its commit index {}",
                log.applied,
                log.committed
            );
            let unstable = &log.unstable.entries;
            for (k, e) in unstable.iter().enumerate() {
                let prev_term = if k == 0 { log.term(e.index - 1).ok() } else { Some(unstable[k - 1].term) };
                self.history.check_entry(id, e, prev_term);
            }
            if raft.role() == StateRole::Leader {
                let term = raft.term();
                self.history.record_leader(term, id);
                let checked = if node.leader_checked.0 == term { node.leader_checked.1 } else { 0 };
                let checked = self.history.check_leader_log(id, term, checked, |index| log.term(index));
                node.leader_checked = (term, checked);
            }
        }
        if self.now_step % FULL_CHECK_INTERVAL_STEPS == 0 {
            self.check_logs_fully();
        }
    }

    /// Log matching over a node's whole durable log.
    fn check_disk_log(&mut self, i: usize) {
        let disk = &self.nodes[i].disk;
        let first = disk.first_index().expect("MemStorage answers");
        let last = disk.last_index().expect("MemStorage answers");
        let entries = disk.entries(first, last + 1, None).expect("the disk log is readable");
        let mut prev_term = disk.term(first - 1).ok();
        for e in &entries {
            self.history.check_entry(i as u64 + 1, e, prev_term);
            prev_term = Some(e.term);
        }
    }

    /// The durable logs, then the literal log matching property between every two live
    /// logs (durable and unstable): where they agree on a term, they agree on everything
    /// before.
    fn check_logs_fully(&mut self) {
        for i in 0..self.nodes.len() {
            self.check_disk_log(i);
        }
        let logs: Vec<(u64, Vec<Entry>)> = self
            .nodes
            .iter()
            .filter_map(|n| {
                let log = n.raw.as_ref()?.raft().raft_log();
                Some((n.id, log.all_entries()))
            })
            .collect();
        for (a, (id_a, log_a)) in logs.iter().enumerate() {
            for (id_b, log_b) in &logs[a + 1..] {
                check_pair(*id_a, log_a, *id_b, log_b);
            }
        }
    }
}

/// Log matching between two logs: find the highest index where both have an entry of the
/// same term; every entry both hold up to there must be identical.
pub fn check_pair(id_a: u64, a: &[Entry], id_b: u64, b: &[Entry]) {
    let (Some(fa), Some(fb)) = (a.first(), b.first()) else { return };
    let low = fa.index.max(fb.index);
    let high = a.last().expect("non-empty").index.min(b.last().expect("non-empty").index);
    let at = |log: &'_ [Entry], first: u64, index: u64| -> Entry { log[(index - first) as usize].clone() };
    let Some(agree) = (low..=high).rev().find(|&i| at(a, fa.index, i).term == at(b, fb.index, i).term) else {
        return;
    };
    for i in low..=agree {
        let (ea, eb) = (at(a, fa.index, i), at(b, fb.index, i));
        assert!(
            ea == eb,
            "log matching violated: nodes {id_a} and {id_b} agree on the term at index {agree} but differ at {i}: {} vs {}",
            describe::describe_entry(&ea),
            describe::describe_entry(&eb)
        );
    }
}

fn describe_node(raw: &RawNode<MemStorage>) -> String {
    let raft = raw.raft();
    let log = raft.raft_log();
    format!(
        "node {} {:?} term {} vote {} leader {} log [{}, {}] committed {} applied {}",
        raft.id(),
        raft.role(),
        raft.term(),
        raft.vote(),
        raft.leader_id(),
        log.first_index(),
        log.last_index(),
        log.committed,
        log.applied
    )
}

/// A deep copy of what a disk holds, so the restarted node shares nothing with the
/// crashed one.
fn copy_disk(disk: &MemStorage) -> MemStorage {
    let snapshot = loop {
        match disk.snapshot(0, 0) {
            Ok(s) => break s,
            // A pending test-induced unavailability; it clears itself.
            Err(StorageError::SnapshotTemporarilyUnavailable) => continue,
            Err(e) => panic!("invariant: a disk yields its snapshot: {e}"),
        }
    };
    let first = disk.first_index().expect("MemStorage answers");
    let last = disk.last_index().expect("MemStorage answers");
    let entries = disk.entries(first, last + 1, None).expect("the disk log is readable");
    let hard_state = *disk.rl().hard_state();
    let copy = MemStorage::new();
    {
        let mut core = copy.wl();
        core.apply_snapshot(snapshot).expect("a fresh disk takes any snapshot");
        core.append(&entries).expect("the entries follow the snapshot");
        core.set_hard_state(hard_state);
    }
    copy
}
