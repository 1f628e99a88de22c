//! The application's handle on a node: feed it ticks and messages, take `Ready`s out.

use std::collections::BTreeMap;

use prost::Message as _;
use tessera_proto::raftpb::{
    ConfChange, ConfChangeV2, ConfState, Entry, EntryType, HardState, Message, MessageType, Snapshot,
    SnapshotMetadata,
};

use crate::config::Config;
use crate::errors::{Error, Result};
use crate::raft::{is_local_thread, Raft, SnapshotStatus, SoftState};
use crate::read_only::ReadState;
use crate::storage::Storage;
use crate::tracker::Progress;
use crate::{LOCAL_APPEND_THREAD, LOCAL_APPLY_THREAD};

/// Everything the node asks the application to do, as plain data.
///
/// Without async storage writes, handle it in exactly this order:
/// 1. send `messages` (they may go before anything is persisted);
/// 2. persist, in one atomic write: `snapshot` if any, then `entries` (which may overwrite
///    a stored tail), then `hard_state` if any; sync it if `must_sync`;
/// 3. send `persisted_messages` (they promise that step 2 is durable);
/// 4. apply `committed_entries`;
/// 5. call `RawNode::advance` with the Ready.
///
/// With async storage writes, the storage work travels as messages instead (see
/// `Config::async_storage_writes`): the fields other than `soft_state` and `messages` are
/// empty and `advance` must not be called.
#[derive(Debug, Default, PartialEq)]
pub struct Ready {
    number: u64,
    /// The leader and role, when they changed since the last Ready.
    pub soft_state: Option<SoftState>,
    /// Term, vote and commit index, when they changed; to persist.
    pub hard_state: Option<HardState>,
    /// Entries to persist.
    pub entries: Vec<Entry>,
    /// A snapshot from the leader to persist and apply.
    pub snapshot: Option<Snapshot>,
    /// Committed entries to apply, after the persisting of this Ready.
    pub committed_entries: Vec<Entry>,
    /// Messages that do not depend on this Ready being persisted.
    pub messages: Vec<Message>,
    /// Messages to send only after this Ready is persisted: votes and acknowledgements.
    pub persisted_messages: Vec<Message>,
    /// Confirmed reads. Serve each once the applied index reaches its `index`.
    pub read_states: Vec<ReadState>,
    /// Whether the write of this Ready must be synced to disk (it changes term, vote or
    /// the log). A commit-only change may be written without sync: it can be relearned.
    pub must_sync: bool,
}

impl Ready {
    /// Ready numbers grow by one per Ready; the application may use them to match
    /// completions to Readys.
    pub fn number(&self) -> u64 {
        self.number
    }
}

/// A node's status, with the leader's view of every peer.
#[derive(Clone, Debug, PartialEq)]
pub struct Status {
    pub basic: BasicStatus,
    /// Per-peer replication progress, present on the leader only.
    pub progress: Option<BTreeMap<u64, Progress>>,
}

/// A node's status without the progress map: cheap to take often.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BasicStatus {
    pub id: u64,
    pub hard_state: HardState,
    pub soft_state: SoftState,
    pub applied: u64,
    pub lead_transferee: u64,
}

/// A Raft node driven by the application.
#[derive(Debug)]
pub struct RawNode<S: Storage> {
    raft: Raft<S>,
    prev_soft_state: SoftState,
    prev_hard_state: HardState,
    ready_number: u64,
    /// Without async writes: the completions to step when the Ready is advanced.
    steps_on_advance: Vec<Message>,
    /// Emptied vectors of advanced Readys, reused by the next Ready so that the steady
    /// state of a busy node allocates no vectors (see `advance`).
    spare: SpareVecs,
}

/// Vectors handed back through `advance`, cleared, with their capacity kept.
#[derive(Debug, Default)]
struct SpareVecs {
    entries: Vec<Entry>,
    persisted_messages: Vec<Message>,
}

impl<S: Storage> RawNode<S> {
    pub fn new(config: &Config, storage: S) -> Result<Self> {
        let raft = Raft::new(config, storage)?;
        let prev_soft_state = raft.soft_state();
        let prev_hard_state = raft.hard_state();
        Ok(RawNode {
            raft,
            prev_soft_state,
            prev_hard_state,
            ready_number: 0,
            steps_on_advance: Vec::new(),
            spare: SpareVecs::default(),
        })
    }

    /// Read access to the state machine, for status pages and tests.
    pub fn raft(&self) -> &Raft<S> {
        &self.raft
    }

    /// The storage the node reads, for the application to write through its own handle.
    pub fn store(&self) -> &S {
        &self.raft.raft_log.store
    }

    /// The storage, for the application to persist a Ready into (a storage that keeps
    /// its state in plain fields, rather than behind a lock, needs this).
    pub fn store_mut(&mut self) -> &mut S {
        &mut self.raft.raft_log.store
    }

    /// Advances the logical clock by one tick.
    pub fn tick(&mut self) {
        self.raft.tick();
    }

    /// How many ticks the node can take before one it acts on; see `Raft::ticks_before_due`.
    pub fn ticks_before_due(&self) -> usize {
        self.raft.ticks_before_due()
    }

    /// Starts an election now (after a pre-election if pre-vote is on). With lease reads,
    /// refused with `CampaignInVoteLease` while the node heard from a leader within the
    /// election timeout, or started less than one ago: its own vote could elect a second
    /// leader while the first serves reads from its lease. `transfer_leader` is the way to
    /// move leadership then.
    pub fn campaign(&mut self) -> Result<()> {
        if self.raft.in_vote_lease_with_lease_reads() {
            return Err(Error::CampaignInVoteLease);
        }
        self.raft.step(Message { msg_type: MessageType::MsgHup as i32, ..Default::default() })
    }

    /// Proposes one entry of data.
    pub fn propose(&mut self, data: impl Into<bytes::Bytes>) -> Result<()> {
        self.propose_entries(vec![Entry { data: data.into(), ..Default::default() }])
    }

    /// Proposes several entries at once; they are appended together, in one message to
    /// each follower where the size limits allow.
    pub fn propose_entries(&mut self, entries: Vec<Entry>) -> Result<()> {
        let id = self.raft.id;
        self.raft.step(Message {
            msg_type: MessageType::MsgPropose as i32,
            from: id,
            entries,
            ..Default::default()
        })
    }

    /// Proposes a membership change. It takes effect when the application applies the
    /// committed entry and calls `apply_conf_change`. Refused with a typed error if another
    /// change is pending or the change breaks a configuration invariant. To remove or
    /// demote the leader, transfer leadership away first (see
    /// `Config::step_down_on_removal` for why).
    pub fn propose_conf_change(&mut self, context: Vec<u8>, cc: ConfChangeV2) -> Result<()> {
        let entry = Entry {
            entry_type: EntryType::EntryConfChangeV2 as i32,
            data: cc.encode_to_vec().into(),
            context,
            ..Default::default()
        };
        self.propose_entries(vec![entry])
    }

    /// Proposes a single-step membership change in the older ConfChange form.
    pub fn propose_conf_change_v1(&mut self, context: Vec<u8>, cc: ConfChange) -> Result<()> {
        let entry = Entry {
            entry_type: EntryType::EntryConfChange as i32,
            data: cc.encode_to_vec().into(),
            context,
            ..Default::default()
        };
        self.propose_entries(vec![entry])
    }

    /// Applies a committed membership change (decoded from an EntryConfChange or
    /// EntryConfChangeV2 entry with `conf_change_of`) and returns the configuration now in
    /// force, which the application stores with its applied state.
    pub fn apply_conf_change(&mut self, cc: &ConfChangeV2) -> Result<ConfState> {
        self.raft.apply_conf_change(cc)
    }

    /// Asks the leader to hand leadership to `target`. On a follower the request is
    /// forwarded to the leader; a node that knows no leader refuses it
    /// (`ProposalDropped(NoLeader)`). The leader ignores a target that is a learner or
    /// not a member; whether the transfer happened shows in the soft state.
    pub fn transfer_leader(&mut self, target: u64) -> Result<()> {
        let m =
            Message { msg_type: MessageType::MsgTransferLeader as i32, from: target, ..Default::default() };
        self.raft.step(m)
    }

    /// Requests a linearizable read. The answer arrives as a `ReadState` carrying
    /// `request_ctx` in a later Ready; the read may be served once the applied index
    /// reaches its index. Reads that arrive between two Readys share one heartbeat round.
    pub fn read_index(&mut self, request_ctx: impl Into<bytes::Bytes>) -> Result<()> {
        let id = self.raft.id;
        let entry = Entry { data: request_ctx.into(), ..Default::default() };
        self.raft.step(Message {
            msg_type: MessageType::MsgReadIndex as i32,
            from: id,
            entries: vec![entry],
            ..Default::default()
        })
    }

    /// Steps a message from a peer, or a completion from a local storage thread.
    pub fn step(&mut self, m: Message) -> Result<()> {
        let msg_type =
            MessageType::try_from(m.msg_type).map_err(|_| Error::MessageTypeUnknown(m.msg_type))?;
        let from_local_thread = is_local_thread(m.from) || m.from == self.raft.id;
        if msg_type.is_local() && !from_local_thread {
            return Err(Error::StepLocalMessage(msg_type));
        }
        if msg_type == MessageType::MsgHup {
            // A campaign asked for by stepping follows the rules of `campaign`.
            return self.campaign();
        }
        if msg_type.is_response() && !from_local_thread && !self.raft.trk.progress.contains_key(&m.from) {
            return Err(Error::StepPeerNotFound(m.from));
        }
        self.raft.step(m)
    }

    /// The transport could not deliver to `id`; the leader stops pipelining to it.
    /// Ends the leader lease (see [`crate::raft::Raft::expire_lease`]): call it when the node's clock
    /// stops and when it starts again.
    pub fn expire_lease(&mut self) {
        self.raft.expire_lease();
    }

    pub fn report_unreachable(&mut self, id: u64) {
        self.raft.report(MessageType::MsgUnreachable, id, false);
    }

    /// The outcome of sending a snapshot to `id`.
    pub fn report_snapshot(&mut self, id: u64, status: SnapshotStatus) {
        self.raft.report(MessageType::MsgSnapStatus, id, status == SnapshotStatus::Failure);
    }

    pub fn status(&self) -> Status {
        let progress = (self.raft.role == crate::StateRole::Leader).then(|| self.raft.trk.progress.clone());
        Status { basic: self.basic_status(), progress }
    }

    pub fn basic_status(&self) -> BasicStatus {
        BasicStatus {
            id: self.raft.id,
            hard_state: self.raft.hard_state(),
            soft_state: self.raft.soft_state(),
            applied: self.raft.raft_log.applied,
            lead_transferee: self.raft.lead_transferee,
        }
    }

    fn allow_unstable_apply(&self) -> bool {
        !self.raft.async_storage_writes
    }

    /// Whether `ready` would return anything to do.
    pub fn has_ready(&self) -> bool {
        let raft = &self.raft;
        raft.soft_state() != self.prev_soft_state
            || raft.hard_state() != self.prev_hard_state
            || raft.raft_log.next_unstable_snapshot().is_some()
            || raft.raft_log.has_next_unstable_entries()
            || !raft.msgs.is_empty()
            || raft.proposals_unsent
            || !raft.msgs_after_append.is_empty()
            || raft.raft_log.has_next_committed_entries(self.allow_unstable_apply())
            || !raft.read_states.is_empty()
            || (raft.role == crate::StateRole::Leader && !raft.reads_waiting.is_empty())
    }

    /// Collects what the node needs done and marks it handed out. See `Ready` for how to
    /// handle it.
    pub fn ready(&mut self) -> Ready {
        let allow_unstable = self.allow_unstable_apply();
        // Proposals that arrived since the last Ready share one append per follower, and
        // reads one heartbeat round.
        self.raft.flush_proposals();
        self.raft.flush_reads();
        let raft = &mut self.raft;
        self.ready_number += 1;
        let mut entries = std::mem::take(&mut self.spare.entries);
        entries.extend_from_slice(raft.raft_log.next_unstable_entries());
        let mut rd = Ready {
            number: self.ready_number,
            entries,
            snapshot: raft.raft_log.next_unstable_snapshot().cloned(),
            committed_entries: raft.raft_log.next_committed_entries(allow_unstable),
            messages: std::mem::take(&mut raft.msgs),
            read_states: std::mem::take(&mut raft.read_states),
            persisted_messages: std::mem::take(&mut self.spare.persisted_messages),
            ..Default::default()
        };
        let soft_state = raft.soft_state();
        if soft_state != self.prev_soft_state {
            rd.soft_state = Some(soft_state);
            self.prev_soft_state = soft_state;
        }
        let hard_state = raft.hard_state();
        if hard_state != self.prev_hard_state {
            rd.must_sync =
                hard_state.term != self.prev_hard_state.term || hard_state.vote != self.prev_hard_state.vote;
            rd.hard_state = Some(hard_state);
            self.prev_hard_state = hard_state;
        }
        rd.must_sync |= !rd.entries.is_empty() || rd.snapshot.is_some();

        // The completions of this Ready's storage work, as the node will step them.
        let last_unstable = raft.raft_log.unstable.entries.last().map(|e| (e.index, e.term));
        let apply_response = rd.committed_entries.last().map(|last| Message {
            msg_type: MessageType::MsgStorageApplyResponse as i32,
            to: raft.id,
            from: LOCAL_APPLY_THREAD,
            index: last.index,
            ..Default::default()
        });

        raft.raft_log.unstable.accept_in_progress();
        if let Some(last) = rd.committed_entries.last() {
            raft.raft_log.accept_applying(last.index);
            raft.reduce_uncommitted_bytes(&rd.committed_entries);
        }

        if raft.async_storage_writes {
            let after_append = std::mem::take(&mut raft.msgs_after_append);
            let needs_append = !rd.entries.is_empty()
                || rd.hard_state.is_some()
                || rd.snapshot.is_some()
                || !after_append.is_empty();
            if needs_append {
                let hs = rd.hard_state.take().unwrap_or_default();
                let mut responses = after_append;
                responses.push(storage_append_response(raft.id, raft.term, last_unstable, &rd));
                rd.messages.push(Message {
                    msg_type: MessageType::MsgStorageAppend as i32,
                    to: LOCAL_APPEND_THREAD,
                    from: raft.id,
                    term: hs.term,
                    vote: hs.vote,
                    commit: hs.commit,
                    entries: std::mem::take(&mut rd.entries),
                    snapshot: rd.snapshot.take().map(Box::new),
                    responses,
                    ..Default::default()
                });
            }
            if let Some(apply_response) = apply_response {
                rd.messages.push(Message {
                    msg_type: MessageType::MsgStorageApply as i32,
                    to: LOCAL_APPLY_THREAD,
                    from: raft.id,
                    entries: std::mem::take(&mut rd.committed_entries),
                    responses: vec![apply_response],
                    ..Default::default()
                });
            }
            rd.must_sync = false;
        } else {
            // Drained, not taken: the queue keeps its buffer for the next Ready.
            for m in raft.msgs_after_append.drain(..) {
                if m.to == raft.id {
                    self.steps_on_advance.push(m);
                } else {
                    rd.persisted_messages.push(m);
                }
            }
            // Without entries or a snapshot to confirm, the completion would change nothing.
            if last_unstable.is_some() || rd.snapshot.is_some() {
                self.steps_on_advance.push(storage_append_response(raft.id, raft.term, last_unstable, &rd));
            }
            self.steps_on_advance.extend(apply_response);
        }
        rd
    }

    /// Tells the node the Ready was handled: persisted, sent and applied.
    pub fn advance(&mut self, rd: Ready) {
        assert!(
            !self.raft.async_storage_writes,
            "invariant: with async storage writes, completions are stepped, never advanced"
        );
        assert_eq!(rd.number, self.ready_number, "invariant: advance the Ready most recently taken");
        for m in self.steps_on_advance.drain(..) {
            // Completions are local and well formed; stepping them cannot fail.
            self.raft.step(m).expect("invariant: completions step cleanly");
        }
        self.recycle(rd);
    }

    /// Keeps the vectors of a handled Ready for the next one. A driver that drains the
    /// message vectors (`drain(..)`, `append`) rather than taking them leaves their
    /// capacity here; what it left unsent is dropped, as it would be anyway.
    fn recycle(&mut self, rd: Ready) {
        let Ready { mut entries, mut messages, mut persisted_messages, .. } = rd;
        entries.clear();
        self.spare.entries = entries;
        persisted_messages.clear();
        self.spare.persisted_messages = persisted_messages;
        // Messages produced between `ready` and `advance` are already queued; keep them.
        if self.raft.msgs.is_empty() {
            messages.clear();
            self.raft.msgs = messages;
        }
    }
}

/// The membership change an entry carries, or None for a normal entry.
pub fn conf_change_of(entry: &Entry) -> Result<Option<ConfChangeV2>> {
    crate::raft::decode_conf_change(entry)
}

/// The message that confirms a Ready's writes: the snapshot's metadata, and the last
/// unstable entry, which this write and the writes before it (done in order) made durable.
///
/// It carries the node's term, and only a confirmation of the current term marks entries
/// stable. A write of an older term may have been overtaken: a newer leader overwrote its
/// entries and a still newer one wrote the same (index, term) back, in writes that are
/// still under way (the ABA race, etcd-io/raft#8). The confirmation of a later write, at
/// the latest the one of the new hard state that every term change causes, vouches for
/// the entries instead; this is why it names the last unstable entry, not the last one in
/// `rd.entries`.
fn storage_append_response(id: u64, term: u64, last_unstable: Option<(u64, u64)>, rd: &Ready) -> Message {
    let mut m = Message {
        msg_type: MessageType::MsgStorageAppendResponse as i32,
        to: id,
        from: LOCAL_APPEND_THREAD,
        term,
        ..Default::default()
    };
    if let Some((index, log_term)) = last_unstable {
        m.index = index;
        m.log_term = log_term;
    }
    if let Some(snapshot) = &rd.snapshot {
        let meta = snapshot.metadata.clone().unwrap_or_default();
        m.snapshot = Some(Box::new(Snapshot {
            data: bytes::Bytes::new(),
            metadata: Some(Box::new(SnapshotMetadata {
                conf_state: None,
                index: meta.index,
                term: meta.term,
            })),
        }));
    }
    m
}
