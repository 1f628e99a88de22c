//! The simulated cluster: nodes with disks and state machines, the driver loop that plays
//! application (and async storage threads) for each of them, the fault injector, and the
//! invariant checks run after every step. Membership changes, transfers, reads and the
//! life cycle of nodes (created on demand, destroyed for good) are in `operations.rs`.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::rc::Rc;

use tessera_raft::raftpb::{
    ConfState, Entry, EntryType, HardState, Message, MessageType, Snapshot, SnapshotMetadata,
};
use tessera_raft::{
    describe, Error, MemStorage, RawNode, ReadState, SnapshotStatus, StateRole, Storage, StorageError,
    LOCAL_APPEND_THREAD, LOCAL_APPLY_THREAD,
};

use super::history::{History, StateMachine};
use super::knobs::{Knobs, RunStats};
use super::network::{Network, Sent};
use super::reads::{ReadOrigin, Reads};
use super::rng::Rng;

// A child module, so that it may use the private state of the simulation.
#[path = "faults.rs"]
mod faults;
#[path = "invariants.rs"]
mod invariants;
#[path = "operations.rs"]
mod operations;

pub use invariants::check_pair;

/// The group starts, as a TiKV region does, from a snapshot at this index and term that
/// holds the initial configuration. A node created later has an empty log, which the
/// leader can fill only with a snapshot, so the node learns its configuration from it
/// rather than by replaying membership changes on top of no configuration at all.
const BOOTSTRAP_INDEX: u64 = 5;
const BOOTSTRAP_TERM: u64 = 5;

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

/// Where a node id is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Lifecycle {
    /// A spare id no node runs under yet. The first message from a leader or candidate
    /// creates it.
    Absent,
    /// Running, or crashed and due to restart.
    Created,
    /// Gone for good (TiKV's tombstone): it never runs again, and its id is never added
    /// back. Its disk stays, only so that commit durability can count the copies it held.
    Destroyed,
}

/// One simulated machine.
#[derive(Debug)]
struct Node {
    id: u64,
    lifecycle: Lifecycle,
    /// The running node, or None while crashed (or absent, or destroyed).
    raw: Option<RawNode<MemStorage>>,
    /// Counts crashes: a request made to an earlier incarnation died with it.
    incarnation: u64,
    /// What survives a crash: everything persisted. The running node reads it too.
    disk: MemStorage,
    /// The state machine in memory, and the configuration it has applied.
    sm: StateMachine,
    conf: ConfState,
    /// The state machine (and its configuration) as last flushed; what a restart may
    /// resume from.
    sm_durable: StateMachine,
    conf_durable: ConfState,
    /// How many Readys this node handed out: a forwarded proposal leaves with the next one.
    readies_taken: u64,
    /// Async storage writes: the newest snapshot queued for the append thread. Entries
    /// at or below it are not applied, their effect (configuration included) arrives with
    /// the snapshot, which the core has adopted already.
    snapshot_queued_index: u64,
    /// The highest commit index checked for durability (see `History::check_commit`), or
    /// learned as a follower.
    commit_checked: u64,
    /// Reads answered (`ReadState`) but not yet served: (read, read index).
    reads_confirmed: Vec<(u64, u64)>,
    /// The term this node campaigned in because it received TimeoutNow.
    timeout_now_term: u64,
    /// Async storage writes: the work of the append and apply threads, in order.
    append_queue: VecDeque<Message>,
    apply_queue: VecDeque<Message>,
    /// The highest commit index this incarnation reported; it never decreases.
    committed_seen: u64,
    /// Leader completeness: the term this node was last seen leading in, and how much of
    /// the applied history its log was checked against in that term.
    leader_checked: (u64, u64),
    ticks_since_heal: u64,
    /// Held-ticks seeds: ticks the application held back because the node would not act on
    /// them (`RawNode::ticks_before_due`), handed over before anything else reaches it.
    held_ticks: u64,
}

pub struct Sim {
    knobs: Knobs,
    /// The highest commit index any node ever had (commit indexes only ever grow, and
    /// every one of them was really committed): the floor of a read issued now.
    commit_max: u64,
    /// Lease seeds: ticks of the cluster clock, which every node follows in lockstep.
    cluster_ticks: u64,
    reads: Reads,
    /// Nodes handed a membership change to forward (node, incarnation, Readys taken then):
    /// until their next Ready or crash it may still leave, and add a destroyed id back.
    conf_change_holders: Vec<(usize, u64, u64)>,
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
    run_with(seed, trace, |_| {})
}

/// `run`, with the seed's knobs changed by `adjust` before it starts.
pub fn run_with(seed: u64, trace: Option<Trace>, adjust: impl FnOnce(&mut Knobs)) -> RunStats {
    let mut sim = Sim::new(seed, trace);
    adjust(&mut sim.knobs);
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
        let conf = ConfState { voters: voters.clone(), ..ConfState::default() };
        let (history, sm) = History::bootstrap(BOOTSTRAP_INDEX, BOOTSTRAP_TERM, conf.clone());
        let nodes = (1..=knobs.pool_size() as u64)
            .map(|id| {
                let disk = MemStorage::new();
                let mut node = Node {
                    id,
                    lifecycle: Lifecycle::Absent,
                    raw: None,
                    incarnation: 0,
                    disk,
                    sm: StateMachine::default(),
                    conf: ConfState::default(),
                    sm_durable: StateMachine::default(),
                    conf_durable: ConfState::default(),
                    readies_taken: 0,
                    snapshot_queued_index: 0,
                    commit_checked: 0,
                    reads_confirmed: Vec::new(),
                    timeout_now_term: 0,
                    append_queue: VecDeque::new(),
                    apply_queue: VecDeque::new(),
                    committed_seen: 0,
                    leader_checked: (0, 0),
                    ticks_since_heal: 0,
                    held_ticks: 0,
                };
                if voters.contains(&id) {
                    let metadata = SnapshotMetadata {
                        conf_state: Some(conf.clone()),
                        index: BOOTSTRAP_INDEX,
                        term: BOOTSTRAP_TERM,
                    };
                    let snapshot = Snapshot { data: sm.encode().into(), metadata: Some(Box::new(metadata)) };
                    node.disk.wl().apply_snapshot(snapshot).expect("a fresh disk takes any snapshot");
                    let raw = RawNode::new(&knobs.config(id, rng.next_u64(), 0), node.disk.clone())
                        .expect("invariant: the simulated configuration is valid");
                    node.commit_checked = raw.raft().raft_log().committed;
                    node.raw = Some(raw);
                    node.lifecycle = Lifecycle::Created;
                    node.sm = sm;
                    node.sm_durable = sm;
                    node.conf = conf.clone();
                    node.conf_durable = conf.clone();
                }
                node
            })
            .collect();
        let net = Network::new(knobs.net);
        Sim {
            knobs,
            commit_max: BOOTSTRAP_INDEX,
            cluster_ticks: 0,
            reads: Reads::default(),
            conf_change_holders: Vec::new(),
            rng,
            nodes,
            net,
            history,
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
        self.stats.reads_unanswered = self.reads.unanswered();
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

    fn alive(&self, i: usize) -> bool {
        self.nodes[i].raw.is_some()
    }

    /// The node, after the ticks held back for it: every use of it (a message, a proposal,
    /// a read, its Ready) sees its timers where ticking on time would have left them.
    fn raw(&mut self, i: usize) -> &mut RawNode<MemStorage> {
        self.hand_over_held_ticks(i);
        self.raw_now(i)
    }

    fn raw_now(&mut self, i: usize) -> &mut RawNode<MemStorage> {
        self.nodes[i].raw.as_mut().expect("invariant: the node is up")
    }

    pub(super) fn hand_over_held_ticks(&mut self, i: usize) {
        for _ in 0..std::mem::take(&mut self.nodes[i].held_ticks) {
            self.raw_now(i).tick();
            self.observe(i);
        }
    }

    /// One tick of node `i`'s clock. Held-ticks seeds hold it back, as a store holds a
    /// peer's ticks in its mailbox, while the node would not act on it; otherwise it is
    /// handed over, after the held ones.
    fn tick_node(&mut self, i: usize) {
        if self.knobs.held_ticks {
            let quiet = self.raw_now(i).ticks_before_due() as u64;
            if self.nodes[i].held_ticks < quiet {
                self.nodes[i].held_ticks += 1;
                self.stats.ticks_held += 1;
                return;
            }
        }
        self.raw(i).tick();
        self.observe(i);
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
        if self.knobs.lease_reads {
            // The clock assumption of lease reads: one clock, followed by every node.
            if self.rng.chance(self.knobs.tick_permille) {
                self.cluster_ticks += 1;
                for i in 0..n {
                    if self.alive(i) {
                        self.tick_node(i);
                        self.nodes[i].ticks_since_heal += 1;
                    }
                }
            }
        } else {
            for i in 0..n {
                if self.alive(i) && self.rng.chance(self.knobs.tick_permille) {
                    // Now and then a node's clock jumps, as after a long pause of its process.
                    let ticks = if !self.healing && self.rng.chance(3) {
                        self.rng.between(2, 2 * self.knobs.election_ticks as u64)
                    } else {
                        1
                    };
                    for _ in 0..ticks {
                        self.tick_node(i);
                    }
                    self.nodes[i].ticks_since_heal += ticks;
                }
            }
        }
        if self.rng.chance(self.knobs.propose_permille) {
            self.propose_at_random();
        }
        if !self.healing {
            if self.rng.chance(self.knobs.conf_change_permille) {
                self.propose_conf_change_at_random();
            }
            if self.rng.chance(self.knobs.transfer_permille) {
                self.transfer_at_random();
            }
            if self.rng.chance(self.knobs.read_permille) {
                self.read_at_random();
            }
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
        if self.healing {
            for i in 0..n {
                if self.may_restart(i) {
                    self.restart(i);
                }
            }
            self.destroy_non_members_for_liveness();
        } else if self.rng.chance(self.knobs.destroy_permille) {
            self.destroy_at_random();
        }
        self.check_all();
        for i in 0..n {
            self.serve_reads(i);
        }
    }

    /// Whether node `i` is down and may come back. Lease seeds need no down time: the core
    /// itself keeps a restarted node from voting or campaigning for an election timeout
    /// (the vote lease it may have promised before it went down), and restarts at once are
    /// what test that.
    fn may_restart(&self, i: usize) -> bool {
        let node = &self.nodes[i];
        node.lifecycle == Lifecycle::Created && node.raw.is_none()
    }

    fn inject_faults(&mut self) {
        if self.rng.chance(self.knobs.crash_permille) {
            if let Some(i) = self.random_live_node() {
                self.crash(i, "at random", false);
            }
        }
        for i in 0..self.nodes.len() {
            if self.may_restart(i) && self.rng.chance(self.knobs.restart_permille) {
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
                match self.raw(i).campaign() {
                    Ok(()) => {}
                    Err(Error::CampaignInVoteLease) if self.knobs.lease_reads => {
                        self.trace(|| format!("node {} refuses: inside its vote lease", i + 1));
                        self.stats.campaigns_refused_in_vote_lease += 1;
                    }
                    Err(e) => panic!("invariant: campaigning cannot fail: {e}"),
                }
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
            let read_context = match m.msg_type() {
                MessageType::MsgReadIndex | MessageType::MsgReadIndexResponse => {
                    m.entries.first().map(|e| e.data.clone())
                }
                _ => None,
            };
            let duplicated_before = self.net.stats.duplicated;
            let sent = self.net.send(from, m, self.now_step, &mut self.rng);
            if let Some(ctx) = read_context {
                if self.net.stats.duplicated > duplicated_before {
                    self.reads.note_duplicated(&ctx);
                }
            }
            match sent {
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
        let msg_type = m.msg_type();
        let is_snapshot = msg_type == MessageType::MsgSnapshot;
        let i = (to - 1) as usize;
        if !self.net.connected(from, to) {
            self.transport_failed(from, to, is_snapshot);
            return;
        }
        let from_leader_or_candidate = matches!(
            msg_type,
            MessageType::MsgAppend
                | MessageType::MsgHeartbeat
                | MessageType::MsgSnapshot
                | MessageType::MsgRequestVote
                | MessageType::MsgRequestPreVote
        );
        if self.nodes[i].lifecycle == Lifecycle::Absent && from_leader_or_candidate {
            self.create_node(i, from);
        }
        if !self.alive(i) {
            self.transport_failed(from, to, is_snapshot);
            return;
        }
        self.trace(|| format!("deliver {}", describe::describe_message(&m)));
        let carries_conf_change = msg_type == MessageType::MsgPropose
            && m.entries.iter().any(|e| e.entry_type() != EntryType::EntryNormal);
        match self.raw(i).step(m) {
            Ok(()) => {}
            Err(Error::ProposalDropped(why)) if carries_conf_change => {
                self.stats.conf_changes_refused_at_propose += 1;
                self.trace(|| format!("node {to} drops a forwarded membership change: {why:?}"));
            }
            Err(Error::ProposalDropped(why)) => {
                self.stats.proposals_dropped += 1;
                self.trace(|| format!("node {to} drops a forwarded proposal: {why:?}"));
            }
            Err(Error::ConfChange(why)) => {
                self.stats.conf_changes_refused_at_propose += 1;
                self.trace(|| format!("node {to} refuses a forwarded membership change: {why}"));
            }
            // A forwarded read that reaches a node no longer able to serve it is dropped;
            // its node never hears back, as after a lost message.
            Err(Error::ReadIndexDropped(why)) => {
                self.trace(|| format!("node {to} drops a forwarded read: {why:?}"));
            }
            // A response from a node this one no longer (or not yet) has in its
            // configuration, after a membership change.
            Err(Error::StepPeerNotFound(peer)) => {
                self.stats.messages_from_non_members += 1;
                self.trace(|| format!("node {to} ignores a response from non-member {peer}"));
            }
            Err(e) => panic!("invariant: node {to} refuses a message from {from}: {e}"),
        }
        if carries_conf_change {
            // If this node forwards the change, it sits in the node's outbox until the
            // next Ready.
            let node = &self.nodes[i];
            self.conf_change_holders.push((i, node.incarnation, node.readies_taken));
        }
        if msg_type == MessageType::MsgTimeoutNow {
            let raft = self.raw(i).raft();
            if raft.role() == StateRole::Candidate {
                let term = raft.term();
                self.nodes[i].timeout_now_term = term;
            }
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
        self.nodes[i].readies_taken += 1;
        self.trace(|| format!("node {} {}", i + 1, describe::describe_ready(&rd)));
        self.observe(i);
        let read_states = std::mem::take(&mut rd.read_states);
        self.on_read_states(i, &read_states);
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
                        if let Some(meta) = m.snapshot.as_ref().and_then(|s| s.metadata.as_ref()) {
                            let node = &mut self.nodes[i];
                            node.snapshot_queued_index = node.snapshot_queued_index.max(meta.index);
                        }
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
            let conf = meta.conf_state.clone().unwrap_or_default();
            assert_eq!(
                &conf,
                &self.history.conf_at(meta.index),
                "configuration safety violated: node {id} got a snapshot at {} whose configuration differs from \
                 the one applied there",
                meta.index
            );
            self.trace(|| format!("node {id} installs {}", describe::describe_snapshot(&snapshot)));
            self.nodes[i]
                .disk
                .wl()
                .apply_snapshot(snapshot)
                .unwrap_or_else(|e| panic!("invariant: node {id} can store the snapshot it accepted: {e}"));
            let node = &mut self.nodes[i];
            node.sm = sm;
            node.sm_durable = sm;
            node.conf_durable = conf.clone();
            node.conf = conf;
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
        for e in entries {
            let mut sm = self.nodes[i].sm;
            if e.index <= sm.index {
                self.history.check_reapplied(id, e);
                continue;
            }
            // The log now starting past the entry means the core adopted a later snapshot.
            let adopted = self.nodes[i].raw.as_ref().map_or(0, |raw| raw.raft().raft_log().first_index() - 1);
            if e.index <= self.nodes[i].snapshot_queued_index.max(adopted) {
                // Async storage writes: the core adopted a later snapshot (and its
                // configuration) since it handed these entries out, and the append thread
                // will install it. Applying a membership change on top of the snapshot's
                // configuration would apply it twice.
                continue;
            }
            let is_new = self.history.is_new(e.index);
            self.history.on_apply(id, &mut sm, e);
            if is_new && e.data == self.marker {
                self.marker_index = Some(e.index);
            }
            self.nodes[i].sm = sm;
            self.stats.entries_applied += 1;
            if e.entry_type() != EntryType::EntryNormal {
                self.apply_conf_change(i, e);
            }
        }
        if self.rng.coin() {
            let node = &mut self.nodes[i];
            node.sm_durable = node.sm;
            node.conf_durable = node.conf.clone();
        }
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
        assert_eq!(
            &node.conf,
            &self.history.conf_at(sm.index),
            "invariant: node {}'s configuration is the one applied at {}",
            node.id,
            sm.index
        );
        let mut disk = node.disk.wl();
        match disk.create_snapshot(sm.index, Some(node.conf.clone()), sm.encode()) {
            // The snapshot taken at the last membership change is as new.
            Ok(()) | Err(StorageError::SnapshotOutOfDate) => {}
            Err(e) => panic!("invariant: node {} snapshots inside its log: {e}", node.id),
        }
        disk.compact(sm.index + 1).expect("compaction inside the log");
        drop(disk);
        self.trace(|| format!("node {} snapshots at {} and compacts", i + 1, sm.index));
        self.stats.compactions += 1;
    }
}
