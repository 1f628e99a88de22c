//! The consensus state machine of one node: roles, elections, replication and snapshots.
//!
//! `Raft` never sends or persists anything itself. Messages it wants sent pile up in two
//! queues: `msgs` may leave at once, `msgs_after_append` only once everything the node has
//! accepted so far is durable (votes and append acknowledgements promise durability).
//! `RawNode` turns both, plus the log's unstable tail, into a `Ready`.
//!
//! This file holds the node's state, its roles, ticks, elections and the stepping of
//! messages by role; `Raft`'s other methods live by concern in `raft/replication.rs`,
//! `raft/membership.rs` and `raft/read.rs`.

use tessera_proto::raftpb::{Entry, HardState, Message, MessageType};

use crate::confchange;
use crate::config::Config;
use crate::errors::{Error, ProposalDropReason, Result};
use crate::quorum::VoteResult;
use crate::raft_log::RaftLog;
use crate::read_only::{context_round, PendingRead, ReadOnly, ReadOnlyOption, ReadState};
use crate::rng::SeededRng;
use crate::storage::Storage;
use crate::tracker::{ProgressState, ProgressTracker};
use crate::{LOCAL_APPEND_THREAD, LOCAL_APPLY_THREAD, NONE};

mod membership;
mod read;
mod replication;

pub(crate) use membership::decode_conf_change;
pub use membership::{enter_joint, is_leave_joint};

/// The context of a vote request in an election started by a leadership transfer. Such a
/// request overrides the vote lease of check-quorum: the old leader asked for it.
pub const CAMPAIGN_TRANSFER: &[u8] = b"CampaignTransfer";

/// The role a node plays in its current term.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum StateRole {
    #[default]
    Follower,
    /// Running a pre-election: asking whether it could win before raising its term.
    PreCandidate,
    Candidate,
    Leader,
}

/// The volatile state worth reporting: who leads, and our role.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct SoftState {
    pub leader_id: u64,
    pub role: StateRole,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum CampaignKind {
    PreElection,
    Election,
    Transfer,
}

/// The outcome of sending a snapshot, reported by the application.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SnapshotStatus {
    Finish,
    Failure,
}

pub struct Raft<S: Storage> {
    pub(crate) id: u64,
    pub(crate) term: u64,
    pub(crate) vote: u64,
    pub(crate) raft_log: RaftLog<S>,
    pub(crate) trk: ProgressTracker,
    pub(crate) role: StateRole,
    /// Whether this node is a learner in the current configuration.
    pub(crate) is_learner: bool,
    pub(crate) leader_id: u64,
    /// The target of a leadership transfer under way, or NONE.
    pub(crate) lead_transferee: u64,
    /// The index of the latest membership change in the log, which must be applied before
    /// another is proposed.
    pub(crate) pending_conf_index: u64,
    /// Payload bytes appended by this leader and not yet handed out for applying.
    pub(crate) uncommitted_bytes: u64,

    pub(crate) msgs: Vec<Message>,
    pub(crate) msgs_after_append: Vec<Message>,
    /// Proposals were appended since the last broadcast of appends. Proposals that arrive
    /// together (between two Readys) leave as one append per follower, not one each.
    pub(crate) proposals_unsent: bool,

    pub(crate) read_only: ReadOnly,
    pub(crate) read_only_option: ReadOnlyOption,
    /// Confirmed reads for the application, handed out in the next Ready.
    pub(crate) read_states: Vec<ReadState>,
    /// Reads that arrived since the last Ready; they share the next heartbeat round.
    pub(crate) reads_waiting: Vec<PendingRead>,
    /// Reads that arrived before this leader committed an entry of its term. Its commit
    /// index may be stale until then (it may not know what its predecessor committed), so
    /// they wait rather than being answered wrongly or dropped.
    pub(crate) reads_postponed: Vec<Message>,
    /// Set once this leader sent TimeoutNow in its term. The target may win an election at
    /// any later time (the message can be delayed), bypassing the vote leases that the
    /// leader lease relies on, so the lease is not trusted again in this term.
    pub(crate) transfer_started_this_term: bool,
    /// The node's logical clock: ticks since start. Only leases read it.
    pub(crate) ticks: u64,
    /// Until this tick of `ticks` the node neither votes nor campaigns, leader transfers
    /// aside: the vote lease it may have promised before it started (see
    /// `Config::vote_lease_at_start`). Zero when there is nothing to keep.
    votes_held_until_tick: u64,

    /// Ticks since the last election timeout reset (followers and candidates), or since
    /// the last check-quorum round (leaders).
    pub(crate) election_elapsed: usize,
    pub(crate) heartbeat_elapsed: usize,
    pub(crate) randomized_election_ticks: usize,
    rng: SeededRng,

    pub(crate) election_ticks: usize,
    pub(crate) heartbeat_ticks: usize,
    pub(crate) check_quorum: bool,
    pub(crate) pre_vote: bool,
    disable_proposal_forwarding: bool,
    pub(crate) async_storage_writes: bool,
    msg_bytes_max: u64,
    uncommitted_bytes_max: u64,
    step_down_on_removal: bool,
    lazy_commit_broadcast: bool,
    lease_margin_ticks: usize,
    reads_pending_max: usize,
}

impl<S: Storage> std::fmt::Debug for Raft<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Raft")
            .field("id", &self.id)
            .field("term", &self.term)
            .field("vote", &self.vote)
            .field("role", &self.role)
            .field("leader_id", &self.leader_id)
            .field("committed", &self.raft_log.committed)
            .field("applied", &self.raft_log.applied)
            .field("last_index", &self.raft_log.last_index())
            .finish()
    }
}

impl<S: Storage> Raft<S> {
    pub fn new(config: &Config, storage: S) -> Result<Self> {
        config.validate()?;
        let initial = storage.initial_state()?;
        let raft_log = RaftLog::new(storage, config.committed_bytes_per_ready_max)?;
        let mut raft = Raft {
            id: config.id,
            term: 0,
            vote: NONE,
            raft_log,
            trk: ProgressTracker::new(config.inflight_msgs_max, config.inflight_bytes_max),
            role: StateRole::Follower,
            is_learner: false,
            leader_id: NONE,
            lead_transferee: NONE,
            pending_conf_index: 0,
            uncommitted_bytes: 0,
            msgs: Vec::new(),
            msgs_after_append: Vec::new(),
            proposals_unsent: false,
            read_only: ReadOnly::default(),
            read_only_option: config.read_only_option,
            read_states: Vec::new(),
            reads_waiting: Vec::new(),
            reads_postponed: Vec::new(),
            transfer_started_this_term: false,
            ticks: 0,
            votes_held_until_tick: 0,
            election_elapsed: 0,
            heartbeat_elapsed: 0,
            randomized_election_ticks: config.election_ticks,
            rng: SeededRng::new(config.random_seed),
            election_ticks: config.election_ticks,
            heartbeat_ticks: config.heartbeat_ticks,
            check_quorum: config.check_quorum,
            pre_vote: config.pre_vote,
            disable_proposal_forwarding: config.disable_proposal_forwarding,
            async_storage_writes: config.async_storage_writes,
            msg_bytes_max: config.msg_bytes_max,
            uncommitted_bytes_max: config.uncommitted_bytes_max,
            step_down_on_removal: config.step_down_on_removal,
            lazy_commit_broadcast: config.lazy_commit_broadcast,
            lease_margin_ticks: config.lease_margin_ticks,
            reads_pending_max: config.reads_pending_max,
        };
        let last_index = raft.raft_log.last_index();
        confchange::restore(&mut raft.trk, last_index, &initial.conf_state)?;
        raft.is_learner = raft.trk.progress.get(&raft.id).is_some_and(|pr| pr.is_learner);
        if !initial.hard_state.is_empty() {
            raft.load_hard_state(&initial.hard_state);
        }
        // The application may restart having applied less than the compacted prefix (that
        // state came with the snapshot). It may also have applied more than the stored
        // commit index says: with async writes the apply thread can finish before the
        // append thread persists the commit index of the same Ready. Applied entries were
        // committed, so the commit index rises to them, provided they are in the log;
        // applied entries missing from the log mean the log lost durable data.
        if config.applied > raft.raft_log.committed {
            if config.applied > raft.raft_log.last_index() {
                return Err(Error::ConfigInvalid(format!(
                    "applied index {} is beyond the last stored index {}: the log lost entries",
                    config.applied,
                    raft.raft_log.last_index()
                )));
            }
            raft.raft_log.commit_to(config.applied);
        }
        if config.applied > raft.raft_log.applied {
            raft.raft_log.applied_to(config.applied);
        }
        if config.vote_lease_at_start && config.read_only_option == ReadOnlyOption::LeaseBased {
            raft.votes_held_until_tick = config.election_ticks as u64;
        }
        raft.become_follower(raft.term, NONE);
        Ok(raft)
    }

    /// Whether this node still keeps the vote lease it may have promised before it
    /// started (`votes_held_until_tick`).
    fn holds_votes_since_start(&self) -> bool {
        self.ticks < self.votes_held_until_tick
    }

    /// The vote lease: this node heard from a leader within the election timeout, or
    /// started less than one ago with lease reads on. With check-quorum it then helps elect
    /// no one, leader transfers aside, which the leader lease counts on.
    fn in_vote_lease(&self) -> bool {
        (self.leader_id != NONE && self.election_elapsed < self.election_ticks)
            || self.holds_votes_since_start()
    }

    /// Whether a campaign asked for now would break a lease a leader may count on: with
    /// lease reads, a node other than the leader inside its vote lease. An election timer
    /// that fires is past the vote lease, so only a campaign asked for from outside can
    /// meet this.
    pub(crate) fn in_vote_lease_with_lease_reads(&self) -> bool {
        self.read_only_option == ReadOnlyOption::LeaseBased
            && self.role != StateRole::Leader
            && self.in_vote_lease()
    }

    fn load_hard_state(&mut self, hs: &HardState) {
        let (committed, last) = (self.raft_log.committed, self.raft_log.last_index());
        assert!(
            hs.commit >= committed && hs.commit <= last,
            "invariant: stored commit {} outside [{committed}, {last}]",
            hs.commit
        );
        self.raft_log.committed = hs.commit;
        self.term = hs.term;
        self.vote = hs.vote;
    }

    // ---- accessors -------------------------------------------------------------------

    pub fn id(&self) -> u64 {
        self.id
    }

    pub fn term(&self) -> u64 {
        self.term
    }

    pub fn vote(&self) -> u64 {
        self.vote
    }

    pub fn role(&self) -> StateRole {
        self.role
    }

    pub fn leader_id(&self) -> u64 {
        self.leader_id
    }

    pub fn raft_log(&self) -> &RaftLog<S> {
        &self.raft_log
    }

    pub fn tracker(&self) -> &ProgressTracker {
        &self.trk
    }

    /// Confirmed reads not yet handed out in a Ready.
    pub fn read_states(&self) -> &[ReadState] {
        &self.read_states
    }

    pub fn lead_transferee(&self) -> u64 {
        self.lead_transferee
    }

    pub fn uncommitted_bytes(&self) -> u64 {
        self.uncommitted_bytes
    }

    /// The election timeout drawn for the current term, in ticks.
    pub fn randomized_election_ticks(&self) -> usize {
        self.randomized_election_ticks
    }

    /// Ticks since the election timer (or, on a leader, the check-quorum round) was reset.
    pub fn election_elapsed(&self) -> usize {
        self.election_elapsed
    }

    pub fn soft_state(&self) -> SoftState {
        SoftState { leader_id: self.leader_id, role: self.role }
    }

    pub fn hard_state(&self) -> HardState {
        HardState { term: self.term, vote: self.vote, commit: self.raft_log.committed }
    }

    /// Whether this node may become leader: it is a voter, and not waiting for a snapshot.
    pub fn promotable(&self) -> bool {
        self.trk.progress.get(&self.id).is_some_and(|pr| !pr.is_learner)
            && self.raft_log.unstable.snapshot.is_none()
    }

    // ---- role changes ----------------------------------------------------------------

    fn reset(&mut self, term: u64) {
        self.proposals_unsent = false;
        if self.term != term {
            self.term = term;
            self.vote = NONE;
            self.transfer_started_this_term = false;
        }
        self.leader_id = NONE;
        self.election_elapsed = 0;
        self.heartbeat_elapsed = 0;
        self.reset_randomized_election_timeout();
        self.lead_transferee = NONE;
        self.trk.reset_votes();
        let next_idx = self.raft_log.last_index() + 1;
        let persisted = self.raft_log.persisted_index();
        let id = self.id;
        let (count_max, bytes_max) = (self.trk.inflights_count_max, self.trk.inflights_bytes_max);
        for (peer, pr) in self.trk.progress.iter_mut() {
            let is_learner = pr.is_learner;
            *pr = crate::tracker::Progress::new(next_idx, count_max, bytes_max);
            pr.is_learner = is_learner;
            if *peer == id {
                // Only what is durable counts toward our own match; entries still being
                // written are acknowledged by the self-response once they are.
                pr.matched = persisted;
            }
        }
        self.pending_conf_index = 0;
        self.uncommitted_bytes = 0;
        // Unconfirmed reads die with the role that took them; their callers time out and
        // retry against the new leader. Reads confirmed already stay in read_states.
        self.read_only.reset();
        self.reads_waiting.clear();
        self.reads_postponed.clear();
    }

    fn reset_randomized_election_timeout(&mut self) {
        self.randomized_election_ticks =
            self.election_ticks + self.rng.below(self.election_ticks as u64) as usize;
    }

    pub(crate) fn become_follower(&mut self, term: u64, leader_id: u64) {
        self.reset(term);
        self.leader_id = leader_id;
        self.role = StateRole::Follower;
    }

    pub(crate) fn become_candidate(&mut self) {
        assert!(self.role != StateRole::Leader, "invariant: a leader does not become candidate");
        self.reset(self.term + 1);
        self.vote = self.id;
        self.role = StateRole::Candidate;
    }

    pub(crate) fn become_pre_candidate(&mut self) {
        assert!(self.role != StateRole::Leader, "invariant: a leader does not become pre-candidate");
        // A pre-candidate changes neither term nor vote, but it forgets the leader: it
        // campaigns because it lost contact, and remembering the old leader would let the
        // vote lease of others wedge the election.
        self.trk.reset_votes();
        self.leader_id = NONE;
        self.role = StateRole::PreCandidate;
    }

    pub(crate) fn become_leader(&mut self) {
        assert!(self.role != StateRole::Follower, "invariant: a follower becomes leader only via election");
        self.reset(self.term);
        self.leader_id = self.id;
        self.role = StateRole::Leader;
        let pr = self.trk.progress.get_mut(&self.id).expect("invariant: a leader is a member");
        // The leader trivially matches itself, and is always active.
        pr.become_replicate();
        pr.recent_active = true;
        // Conservatively assume the log may hold an unapplied membership change.
        self.pending_conf_index = self.raft_log.last_index();
        // An empty entry of the new term lets the leader commit (it may only count
        // replicas for entries of its own term) and so learn the commit index.
        assert!(
            self.append_entries(vec![Entry::default()]),
            "invariant: the empty leader entry is never refused"
        );
    }

    // ---- ticks -----------------------------------------------------------------------

    /// How many more ticks the node can take without acting on any of them: until then a
    /// tick only advances its timers; the tick after them may send messages or change the
    /// node's role (a heartbeat, a check-quorum round, an election; for a leader without
    /// check-quorum it may also do nothing, its election timer then only resets).
    ///
    /// An application that hosts many nodes may hold such ticks back and hand them over, in
    /// order, before the node's next message or call, as long as it hands over the one after
    /// them promptly: the node then ends up exactly where ticking on time would have left
    /// it, because nothing reads its timers between two calls. Every call of the node's API
    /// counts, reads and votes included: a vote request judged against a timer that lags
    /// would refuse a vote it should grant.
    pub fn ticks_before_due(&self) -> usize {
        let left = |timeout: usize, elapsed: usize| timeout.saturating_sub(elapsed + 1);
        match self.role {
            StateRole::Leader => left(self.heartbeat_ticks, self.heartbeat_elapsed)
                .min(left(self.election_ticks, self.election_elapsed)),
            _ if self.promotable() => left(self.randomized_election_ticks, self.election_elapsed),
            // A learner, or a node waiting for a snapshot, never acts on a tick.
            _ => usize::MAX,
        }
    }

    pub fn tick(&mut self) {
        self.ticks += 1;
        match self.role {
            StateRole::Leader => self.tick_heartbeat(),
            _ => self.tick_election(),
        }
    }

    fn tick_election(&mut self) {
        self.election_elapsed += 1;
        if self.promotable() && self.election_elapsed >= self.randomized_election_ticks {
            self.election_elapsed = 0;
            let _ = self.step(local_message(MessageType::MsgHup, self.id));
        }
    }

    fn tick_heartbeat(&mut self) {
        self.heartbeat_elapsed += 1;
        self.election_elapsed += 1;
        if self.election_elapsed >= self.election_ticks {
            self.election_elapsed = 0;
            if self.check_quorum {
                let _ = self.step(local_message(MessageType::MsgCheckQuorum, self.id));
            }
            // A transfer that has not completed within an election timeout has failed
            // (the target is down or slow); accept proposals again.
            if self.role == StateRole::Leader && self.lead_transferee != NONE {
                self.abort_leader_transfer();
            }
        }
        if self.role != StateRole::Leader {
            return;
        }
        if self.heartbeat_elapsed >= self.heartbeat_ticks {
            self.heartbeat_elapsed = 0;
            let _ = self.step(local_message(MessageType::MsgBeat, self.id));
        }
    }

    // ---- elections -------------------------------------------------------------------

    fn hup(&mut self, kind: CampaignKind) {
        if self.role == StateRole::Leader || !self.promotable() {
            return;
        }
        if kind != CampaignKind::Transfer && self.holds_votes_since_start() {
            // Our own vote would break the vote lease we may have promised before we
            // started as surely as a vote for another.
            return;
        }
        if self.has_unapplied_conf_change() {
            // The configuration we would campaign in is not final yet: a membership change
            // is committed but not applied. Campaigning could count the wrong voters.
            return;
        }
        self.campaign(kind);
    }

    fn has_unapplied_conf_change(&self) -> bool {
        let log = &self.raft_log;
        if log.applied >= log.committed {
            return false;
        }
        let mut low = log.applied + 1;
        let high = log.committed + 1;
        while low < high {
            // Page through the log so that a long unapplied tail does not load at once.
            let entries = match log.slice(low, high, Some(self.msg_bytes_max)) {
                Ok(entries) => entries,
                Err(_) => return false,
            };
            if entries.iter().any(|e| e.entry_type() != tessera_proto::raftpb::EntryType::EntryNormal) {
                return true;
            }
            low += entries.len() as u64;
        }
        false
    }

    fn campaign(&mut self, kind: CampaignKind) {
        let (vote_type, term) = if kind == CampaignKind::PreElection {
            self.become_pre_candidate();
            // A pre-vote asks about the term we would campaign in, without moving to it.
            (MessageType::MsgRequestPreVote, self.term + 1)
        } else {
            self.become_candidate();
            (MessageType::MsgRequestVote, self.term)
        };
        let (last_index, last_term) = (self.raft_log.last_index(), self.raft_log.last_term());
        let context = if kind == CampaignKind::Transfer { CAMPAIGN_TRANSFER.to_vec() } else { Vec::new() };
        for id in self.trk.config.voters.ids() {
            if id == self.id {
                // Our own vote counts once it is durable: the response comes back to us
                // through msgs_after_append.
                self.send(Message {
                    msg_type: vote_type.vote_response() as i32,
                    to: id,
                    term,
                    ..Default::default()
                });
                continue;
            }
            self.send(Message {
                msg_type: vote_type as i32,
                to: id,
                term,
                index: last_index,
                log_term: last_term,
                context: context.clone(),
                ..Default::default()
            });
        }
    }

    fn poll(&mut self, from: u64, granted: bool) -> VoteResult {
        self.trk.record_vote(from, granted);
        self.trk.tally_votes().2
    }

    // ---- stepping --------------------------------------------------------------------

    /// Handles one message: a peer's, or a local one (hup, beat, propose, ...).
    pub fn step(&mut self, mut m: Message) -> Result<()> {
        let msg_type =
            MessageType::try_from(m.msg_type).map_err(|_| Error::MessageTypeUnknown(m.msg_type))?;
        if m.term == 0 {
            // A local message, or a term-less forwarded proposal or read.
        } else if m.term > self.term {
            if matches!(msg_type, MessageType::MsgRequestVote | MessageType::MsgRequestPreVote) {
                let forced = m.context == CAMPAIGN_TRANSFER;
                if !forced && self.check_quorum && self.in_vote_lease() {
                    // We heard from a live leader within the election timeout (or may have,
                    // just before we started): this vote request comes from a node that lost
                    // contact. Ignore it without raising our term.
                    return Ok(());
                }
            }
            match msg_type {
                // A pre-vote neither raises our term nor is a sign of a newer leader.
                MessageType::MsgRequestPreVote => {}
                // A granted pre-vote answers with the term we would campaign in; we move to
                // it when we actually campaign.
                MessageType::MsgRequestPreVoteResponse if !m.reject => {}
                MessageType::MsgAppend | MessageType::MsgHeartbeat | MessageType::MsgSnapshot => {
                    self.become_follower(m.term, m.from);
                }
                _ => self.become_follower(m.term, NONE),
            }
        } else if m.term < self.term && msg_type != MessageType::MsgStorageAppendResponse {
            if (self.check_quorum || self.pre_vote || !self.promotable())
                && matches!(msg_type, MessageType::MsgHeartbeat | MessageType::MsgAppend)
            {
                // A leader from an old term is talking to us. Ignoring it would leave it
                // stuck believing it leads (with check-quorum or pre-vote it never sees a
                // higher-term vote request from us, and a learner never campaigns at
                // all); answering with our term deposes it.
                self.send(Message {
                    msg_type: MessageType::MsgAppendResponse as i32,
                    to: m.from,
                    ..Default::default()
                });
            } else if msg_type == MessageType::MsgRequestPreVote {
                // Reject explicitly, with our higher term: a node with a long log but a
                // lower term would otherwise keep pre-campaigning without ever learning
                // that it must catch up, and the group could deadlock.
                self.send(Message {
                    msg_type: MessageType::MsgRequestPreVoteResponse as i32,
                    to: m.from,
                    term: self.term,
                    reject: true,
                    ..Default::default()
                });
            } else if msg_type == MessageType::MsgRequestVote {
                // Refuse with our term, as the Raft paper's RequestVote reply does. etcd
                // ignores such a request, counting on the candidate to learn the newer term
                // from those who campaign in it; but a node that may not campaign (a
                // learner, or one outside its own configuration) never does, and one whose
                // stale configuration lacks the candidate never asks it. If the candidate
                // needs our vote, no leader could ever be elected (found by the simulation,
                // seeds 1056573 and 1093106).
                self.send(Message {
                    msg_type: MessageType::MsgRequestVoteResponse as i32,
                    to: m.from,
                    term: self.term,
                    reject: true,
                    ..Default::default()
                });
            }
            return Ok(());
        }

        match msg_type {
            MessageType::MsgHup => {
                let kind = if self.pre_vote { CampaignKind::PreElection } else { CampaignKind::Election };
                self.hup(kind);
            }
            MessageType::MsgStorageAppendResponse => {
                // A write of an older term may have been overtaken (see RawNode's
                // storage_append_response): it confirms a snapshot, but no entries.
                if m.index != 0 && m.term == self.term {
                    self.raft_log.stable_to(m.index, m.log_term);
                }
                if let Some(snapshot) = &m.snapshot {
                    let index = snapshot.metadata.as_ref().map_or(0, |md| md.index);
                    self.on_snapshot_persisted(index);
                }
            }
            MessageType::MsgStorageApplyResponse => {
                // The append thread may install a snapshot (which moves `applied` past it)
                // before the apply thread reports entries queued earlier: such a report
                // is stale, not a step back.
                if m.index > self.raft_log.applied {
                    self.applied_to(m.index);
                }
            }
            MessageType::MsgRequestVote | MessageType::MsgRequestPreVote => {
                self.handle_vote_request(&m, msg_type)
            }
            _ => match self.role {
                // The role handlers borrow the message: it is large, and moving it down
                // each level of the call chain would copy it each time.
                StateRole::Leader => self.step_leader(&mut m, msg_type)?,
                StateRole::Candidate | StateRole::PreCandidate => self.step_candidate(&mut m, msg_type)?,
                StateRole::Follower => self.step_follower(&mut m, msg_type)?,
            },
        }
        Ok(())
    }

    fn handle_vote_request(&mut self, m: &Message, msg_type: MessageType) {
        // We can vote for the candidate if we already did this term (a retransmission),
        // if we have voted for nobody and know no leader this term, or if this is a
        // pre-vote for a future term (pre-votes bind nothing).
        let can_vote = self.vote == m.from
            || (self.vote == NONE && self.leader_id == NONE)
            || (msg_type == MessageType::MsgRequestPreVote && m.term > self.term);
        if can_vote && self.raft_log.is_up_to_date(m.index, m.log_term) {
            // The response carries the request's term, not ours: for a pre-vote ours is
            // lower, and the pre-candidate would drop a response of an older term.
            self.send(Message {
                msg_type: msg_type.vote_response() as i32,
                to: m.from,
                term: m.term,
                ..Default::default()
            });
            if msg_type == MessageType::MsgRequestVote {
                self.election_elapsed = 0;
                self.vote = m.from;
            }
        } else {
            self.send(Message {
                msg_type: msg_type.vote_response() as i32,
                to: m.from,
                term: self.term,
                reject: true,
                ..Default::default()
            });
        }
    }

    fn step_leader(&mut self, m: &mut Message, msg_type: MessageType) -> Result<()> {
        match msg_type {
            MessageType::MsgBeat => {
                let reads = std::mem::take(&mut self.reads_waiting);
                self.bcast_heartbeat(reads);
                // Retry an automatic leave of a joint configuration that was refused
                // earlier (during a leadership transfer, say), even if nothing is applied.
                self.maybe_auto_leave_joint();
                return Ok(());
            }
            MessageType::MsgCheckQuorum => {
                if !self.trk.quorum_active() {
                    self.become_follower(self.term, NONE);
                }
                // Everybody must prove to be alive again before the next check.
                let id = self.id;
                for (peer, pr) in self.trk.progress.iter_mut() {
                    if *peer != id {
                        pr.recent_active = false;
                    }
                }
                return Ok(());
            }
            MessageType::MsgPropose => {
                if m.entries.is_empty() {
                    return Err(Error::ProposalEmpty);
                }
                if !self.trk.progress.contains_key(&self.id) {
                    return Err(Error::ProposalDropped(ProposalDropReason::NotAMember));
                }
                if self.lead_transferee != NONE {
                    return Err(Error::ProposalDropped(ProposalDropReason::TransferringLeader));
                }
                let conf_change_offset = self.check_conf_change_proposal(&m.entries)?;
                let last_index = self.raft_log.last_index();
                if !self.append_entries(std::mem::take(&mut m.entries)) {
                    return Err(Error::ProposalDropped(ProposalDropReason::UncommittedSizeExceeded));
                }
                if let Some(offset) = conf_change_offset {
                    self.pending_conf_index = last_index + 1 + offset as u64;
                }
                // Sent by `flush_proposals`, together with the proposals that follow.
                self.proposals_unsent = true;
                return Ok(());
            }
            MessageType::MsgReadIndex => {
                if self.reads_pending() >= self.reads_pending_max && !self.answers_reads_at_once() {
                    if m.from == self.id {
                        return Err(Error::ReadIndexDropped(ProposalDropReason::ReadsPendingExceeded));
                    }
                    // A follower's read: nothing answers a refusal, so its caller retries
                    // as after a lost message.
                    return Ok(());
                }
                self.handle_read_index_on_leader(std::mem::take(m));
                return Ok(());
            }
            _ => {}
        }

        let from = m.from;
        let Some(pr) = self.trk.progress.get_mut(&from) else { return Ok(()) };
        match msg_type {
            MessageType::MsgAppendResponse => {
                pr.recent_active = true;
                if m.reject {
                    self.handle_append_rejection(m);
                } else {
                    self.handle_append_success(from, m.index);
                }
            }
            MessageType::MsgHeartbeatResponse => {
                pr.recent_active = true;
                // A heartbeat response proves the follower is reachable: unpause a probe
                // that may have been lost, so a stuck follower is retried every heartbeat.
                pr.msg_app_flow_paused = false;
                if pr.matched < self.raft_log.last_index() || pr.state == ProgressState::Probe {
                    self.send_append(from);
                }
                if let Some(round) = context_round(&m.context) {
                    self.on_round_ack(round, from);
                }
            }
            MessageType::MsgTransferLeader => {
                let target = from;
                if pr.is_learner {
                    // A learner cannot be elected; refusing here is the whole answer.
                    return Ok(());
                }
                let matched = pr.matched;
                if self.lead_transferee != NONE {
                    if self.lead_transferee == target {
                        // The same transfer again: it is already under way.
                        return Ok(());
                    }
                    // A transfer to another target replaces this one.
                    self.abort_leader_transfer();
                }
                if target == self.id {
                    return Ok(());
                }
                // The transfer must complete within one election timeout.
                self.election_elapsed = 0;
                self.lead_transferee = target;
                if matched == self.raft_log.last_index() {
                    self.send_timeout_now(target);
                } else {
                    // Bring the target's log up to date first; TimeoutNow follows its ack.
                    self.send_append(target);
                }
            }
            MessageType::MsgSnapStatus => {
                if pr.state != ProgressState::Snapshot {
                    return Ok(());
                }
                if m.reject {
                    // The snapshot failed: forget it, probe again (which sends a fresh one).
                    pr.pending_snapshot = 0;
                }
                pr.become_probe();
                // Wait for the follower to answer (an append response or a heartbeat
                // response) before probing, rather than flooding it.
                pr.msg_app_flow_paused = true;
            }
            // Optimistic pipelining to an unreachable peer only loses messages.
            MessageType::MsgUnreachable if pr.state == ProgressState::Replicate => pr.become_probe(),
            _ => {}
        }
        Ok(())
    }

    fn handle_append_rejection(&mut self, m: &Message) {
        // The follower says its log does not match at m.index; its hint is the last index
        // (and that entry's term) where it might. Skip back over every entry of ours whose
        // term is above the hinted term: they cannot match either. This repairs a lagging
        // follower in one round trip per term rather than per entry.
        let mut next_probe = m.reject_hint;
        if m.log_term > 0 {
            next_probe = self.raft_log.find_conflict_by_term(m.reject_hint, m.log_term).0;
        }
        let pr = self.trk.progress.get_mut(&m.from).expect("checked by caller");
        if pr.maybe_decr_to(m.index, next_probe) {
            if pr.state == ProgressState::Replicate {
                pr.become_probe();
            }
            self.send_append(m.from);
        }
    }

    fn handle_append_success(&mut self, from: u64, index: u64) {
        let pr = self.trk.progress.get_mut(&from).expect("checked by caller");
        let was_paused = pr.is_paused();
        if !(pr.maybe_update(index) || (pr.matched == index && pr.state == ProgressState::Probe)) {
            return;
        }
        match pr.state {
            ProgressState::Probe => pr.become_replicate(),
            // The follower caught up past the snapshot (or reached a point from which the
            // log is available): replicate from there. Waiting for the snapshot report
            // alone could leave it stuck if the report is lost.
            ProgressState::Snapshot if pr.matched + 1 >= self.raft_log.first_index() => {
                pr.become_probe();
                pr.become_replicate();
            }
            ProgressState::Snapshot => {}
            ProgressState::Replicate => pr.inflights.free_le(index),
        }
        if self.maybe_commit() {
            self.release_postponed_reads();
            self.broadcast_commit();
        } else if from != self.id && was_paused {
            // The window opened again: the follower may be waiting for more.
            self.send_append(from);
        }
        if from != self.id {
            // Acknowledgements may have freed several slots of the window, or the peer
            // just moved from probe to replicate: send as much as flow control allows,
            // without empty messages.
            while self.maybe_send_append(from, false) {}
        }
        if from == self.lead_transferee && self.trk.progress[&from].matched == self.raft_log.last_index() {
            // The transfer target caught up: hand leadership over.
            self.send_timeout_now(from);
        }
    }

    fn step_candidate(&mut self, m: &mut Message, msg_type: MessageType) -> Result<()> {
        let my_vote_response = if self.role == StateRole::PreCandidate {
            MessageType::MsgRequestPreVoteResponse
        } else {
            MessageType::MsgRequestVoteResponse
        };
        match msg_type {
            MessageType::MsgPropose => return Err(Error::ProposalDropped(ProposalDropReason::Campaigning)),
            MessageType::MsgReadIndex => {
                return Err(Error::ReadIndexDropped(ProposalDropReason::Campaigning))
            }
            MessageType::MsgAppend => {
                self.become_follower(m.term, m.from);
                self.handle_append_entries(m);
            }
            MessageType::MsgHeartbeat => {
                self.become_follower(m.term, m.from);
                self.handle_heartbeat(m);
            }
            MessageType::MsgSnapshot => {
                self.become_follower(m.term, m.from);
                self.handle_snapshot(m);
            }
            t if t == my_vote_response => match self.poll(m.from, !m.reject) {
                VoteResult::Won => {
                    if self.role == StateRole::PreCandidate {
                        self.campaign(CampaignKind::Election);
                    } else {
                        self.become_leader();
                        self.bcast_append();
                    }
                }
                VoteResult::Lost => self.become_follower(self.term, NONE),
                VoteResult::Pending => {}
            },
            _ => {}
        }
        Ok(())
    }

    fn step_follower(&mut self, m: &mut Message, msg_type: MessageType) -> Result<()> {
        match msg_type {
            MessageType::MsgPropose => {
                if self.leader_id == NONE {
                    return Err(Error::ProposalDropped(ProposalDropReason::NoLeader));
                }
                if self.disable_proposal_forwarding {
                    return Err(Error::ProposalDropped(ProposalDropReason::ForwardingDisabled));
                }
                m.to = self.leader_id;
                self.send(std::mem::take(m));
            }
            MessageType::MsgAppend => {
                self.election_elapsed = 0;
                self.leader_id = m.from;
                self.handle_append_entries(m);
            }
            MessageType::MsgHeartbeat => {
                self.election_elapsed = 0;
                self.leader_id = m.from;
                self.handle_heartbeat(m);
            }
            MessageType::MsgSnapshot => {
                self.election_elapsed = 0;
                self.leader_id = m.from;
                self.handle_snapshot(m);
            }
            MessageType::MsgTimeoutNow => {
                // The leader hands us leadership: campaign at once, past pre-vote and the
                // vote lease of others.
                self.hup(CampaignKind::Transfer);
            }
            MessageType::MsgTransferLeader => {
                if self.leader_id == NONE {
                    return Err(Error::ProposalDropped(ProposalDropReason::NoLeader));
                }
                m.to = self.leader_id;
                self.send(std::mem::take(m));
            }
            MessageType::MsgReadIndex => {
                if self.leader_id == NONE {
                    return Err(Error::ReadIndexDropped(ProposalDropReason::NoLeader));
                }
                m.to = self.leader_id;
                self.send(std::mem::take(m));
            }
            MessageType::MsgReadIndexResponse => {
                let [entry] = m.entries.as_slice() else { return Ok(()) };
                self.read_states.push(ReadState { index: m.index, request_ctx: entry.data.clone() });
            }
            _ => {}
        }
        Ok(())
    }

    /// Steps a message the application reports about a peer (unreachable, snapshot done).
    pub(crate) fn report(&mut self, msg_type: MessageType, from: u64, reject: bool) {
        let m = Message { msg_type: msg_type as i32, from, reject, ..Default::default() };
        let _ = self.step(m);
    }
}

fn local_message(msg_type: MessageType, from: u64) -> Message {
    Message { msg_type: msg_type as i32, from, ..Default::default() }
}

/// Whether a message's sender is one of the local storage threads of async writes.
pub fn is_local_thread(id: u64) -> bool {
    id == LOCAL_APPEND_THREAD || id == LOCAL_APPLY_THREAD
}
