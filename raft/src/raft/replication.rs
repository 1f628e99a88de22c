//! Replication: what a leader sends (appends, snapshots, heartbeats), what a follower does
//! with it, and how the leader counts it into its commit index and its uncommitted bytes.

use tessera_proto::raftpb::{Entry, Message, MessageType, Snapshot};

use super::{Raft, StateRole};
use crate::confchange;
use crate::errors::StorageError;
use crate::read_only::{round_context, PendingRead};
use crate::storage::Storage;
use crate::tracker::{ProgressState, ProgressTracker};
use crate::util::payload_bytes;
use crate::NONE;

impl<S: Storage> Raft<S> {
    pub(crate) fn send(&mut self, mut m: Message) {
        if m.from == NONE {
            m.from = self.id;
        }
        let msg_type = m.msg_type();
        match msg_type {
            MessageType::MsgRequestVote
            | MessageType::MsgRequestVoteResponse
            | MessageType::MsgRequestPreVote
            | MessageType::MsgRequestPreVoteResponse => {
                // Vote messages carry an explicit term: a pre-vote request the next term,
                // a response the term of the request it answers.
                assert!(m.term != 0, "invariant: {msg_type:?} must carry a term");
            }
            MessageType::MsgPropose | MessageType::MsgReadIndex => {
                // Forwarded requests are term-less: the leader accepts them whatever
                // term the forwarder is in.
                assert!(m.term == 0, "invariant: forwarded {msg_type:?} carries no term");
            }
            _ => {
                assert!(m.term == 0, "invariant: {msg_type:?} gets its term from the sender");
                m.term = self.term;
            }
        }
        if matches!(
            msg_type,
            MessageType::MsgAppendResponse
                | MessageType::MsgRequestVoteResponse
                | MessageType::MsgRequestPreVoteResponse
        ) {
            // These promise that what they acknowledge (entries, a vote) is durable, so
            // they wait until the unstable state accepted so far has been persisted.
            self.msgs_after_append.push(m);
        } else {
            assert!(m.to != self.id, "invariant: {msg_type:?} is not sent to oneself");
            self.msgs.push(m);
        }
    }

    /// Sends an append (or a snapshot, if the follower needs compacted entries) to `to`.
    pub(crate) fn send_append(&mut self, to: u64) {
        self.maybe_send_append(to, true);
    }

    /// Sends an append to `to` unless flow control pauses it, or unless there is nothing to
    /// send and `send_if_empty` is false. Returns whether a message was sent.
    pub(crate) fn maybe_send_append(&mut self, to: u64, send_if_empty: bool) -> bool {
        let Some(pr) = self.trk.progress.get(&to) else { return false };
        if pr.is_paused() {
            return false;
        }
        let prev_index = pr.next_idx - 1;
        let prev_term = self.raft_log.term(prev_index);
        // A full window in Replicate is unpaused only by a heartbeat response, so that a
        // window whose messages were all lost cannot stall the follower: send an empty
        // append then, whose answer (ack or rejection) frees the window. Entries would
        // overflow it.
        let entries = if pr.state == ProgressState::Replicate && pr.inflights.full() {
            Ok(Vec::new())
        } else {
            self.raft_log.entries(pr.next_idx, Some(self.msg_bytes_max))
        };
        let (prev_term, entries) = match (prev_term, entries) {
            (Ok(t), Ok(e)) => (t, e),
            (Err(StorageError::Compacted), _) | (_, Err(StorageError::Compacted)) => {
                return self.maybe_send_snapshot(to);
            }
            (Err(e), _) | (_, Err(e)) => panic!("invariant: leader log readable for {to}: {e}"),
        };
        if entries.is_empty() && !send_if_empty {
            return false;
        }
        let bytes = payload_bytes(&entries);
        let count = entries.len();
        let m = Message {
            msg_type: MessageType::MsgAppend as i32,
            to,
            index: prev_index,
            log_term: prev_term,
            entries,
            commit: self.raft_log.committed,
            ..Default::default()
        };
        self.trk.progress.get_mut(&to).expect("checked above").on_entries_sent(count, bytes);
        self.send(m);
        true
    }

    fn maybe_send_snapshot(&mut self, to: u64) -> bool {
        let pr = &self.trk.progress[&to];
        if !pr.recent_active {
            // A snapshot is expensive; do not spend it on a peer that may be down.
            return false;
        }
        let snapshot = match self.raft_log.snapshot(pr.next_idx, to) {
            Ok(s) => s,
            Err(StorageError::SnapshotTemporarilyUnavailable) => return false,
            Err(e) => panic!("invariant: a snapshot for {to} can be produced: {e}"),
        };
        let index = snapshot.metadata.as_ref().map_or(0, |m| m.index);
        assert!(index != 0, "invariant: a snapshot sent to {to} is not empty");
        self.trk.progress.get_mut(&to).expect("checked above").become_snapshot(index);
        self.send(Message {
            msg_type: MessageType::MsgSnapshot as i32,
            to,
            snapshot: Some(Box::new(snapshot)),
            ..Default::default()
        });
        true
    }

    fn send_heartbeat(&mut self, to: u64, context: Vec<u8>) {
        // Never tell a follower to commit beyond what it is known to have: it might not
        // have those entries, and committing them would be unsafe.
        let commit = self.trk.progress[&to].matched.min(self.raft_log.committed);
        self.send(Message {
            msg_type: MessageType::MsgHeartbeat as i32,
            to,
            commit,
            context,
            ..Default::default()
        });
    }

    /// The peer after `after` in id order, skipping ourselves. Walking peers this way,
    /// rather than collecting their ids first, keeps broadcasts free of allocation while
    /// the loop body mutates the tracker.
    pub(super) fn next_peer(&self, after: u64) -> Option<u64> {
        self.trk.progress.range(after + 1..).map(|(id, _)| *id).find(|id| *id != self.id)
    }

    pub(crate) fn bcast_append(&mut self) {
        self.bcast_append_to_peers(true);
    }

    /// Offers every peer an append; with `send_if_empty` false, only peers that lack
    /// entries we have get one.
    pub(super) fn bcast_append_to_peers(&mut self, send_if_empty: bool) {
        let mut cursor = NONE;
        while let Some(id) = self.next_peer(cursor) {
            self.maybe_send_append(id, send_if_empty);
            cursor = id;
        }
    }

    /// Broadcasts one heartbeat round, carrying `reads`: a quorum of acknowledgements
    /// confirms our leadership as of now, for those reads and for the lease.
    pub(crate) fn bcast_heartbeat(&mut self, reads: Vec<PendingRead>) {
        let round = self.read_only.start_round(self.ticks, self.id, reads);
        let context = round_context(round);
        let mut cursor = NONE;
        while let Some(id) = self.next_peer(cursor) {
            self.send_heartbeat(id, context.clone());
            cursor = id;
        }
        // Our own ack may already be a quorum (a single voter).
        self.on_round_ack(round, self.id);
    }

    // ---- follower handlers -----------------------------------------------------------

    pub(super) fn handle_append_entries(&mut self, m: &mut Message) {
        if m.index < self.raft_log.committed {
            // Everything up to our commit index matches the leader by definition; tell it
            // where we stand so it skips ahead.
            self.send(Message {
                msg_type: MessageType::MsgAppendResponse as i32,
                to: m.from,
                index: self.raft_log.committed,
                ..Default::default()
            });
            return;
        }
        let entries = std::mem::take(&mut m.entries);
        if let Some(last_new) = self.raft_log.maybe_append(m.index, m.log_term, m.commit, entries) {
            self.send(Message {
                msg_type: MessageType::MsgAppendResponse as i32,
                to: m.from,
                index: last_new,
                ..Default::default()
            });
            return;
        }
        // Our log does not match at m.index. Hint the leader with the last entry that
        // might match: at most our last index, and of a term no higher than the leader's
        // entry there, so the leader can skip whole terms.
        let hint_index = m.index.min(self.raft_log.last_index());
        let (hint_index, hint_term) = self.raft_log.find_conflict_by_term(hint_index, m.log_term);
        self.send(Message {
            msg_type: MessageType::MsgAppendResponse as i32,
            to: m.from,
            index: m.index,
            reject: true,
            reject_hint: hint_index,
            log_term: hint_term,
            ..Default::default()
        });
    }

    pub(super) fn handle_heartbeat(&mut self, m: &mut Message) {
        self.raft_log.commit_to(m.commit);
        self.send(Message {
            msg_type: MessageType::MsgHeartbeatResponse as i32,
            to: m.from,
            context: std::mem::take(&mut m.context),
            ..Default::default()
        });
    }

    pub(super) fn handle_snapshot(&mut self, m: &mut Message) {
        let snapshot = m.snapshot.take().map(|boxed| *boxed).unwrap_or_default();
        let index = if self.restore(snapshot) { self.raft_log.last_index() } else { self.raft_log.committed };
        self.send(Message {
            msg_type: MessageType::MsgAppendResponse as i32,
            to: m.from,
            index,
            ..Default::default()
        });
    }

    /// Replaces our log and configuration with a snapshot from the leader. Returns false
    /// when the snapshot is of no use (old, or we already have its last entry).
    pub(crate) fn restore(&mut self, snapshot: Snapshot) -> bool {
        let meta = snapshot.metadata.clone().unwrap_or_default();
        if meta.index <= self.raft_log.committed {
            return false;
        }
        if self.role != StateRole::Follower {
            // Only a follower receives snapshots; anything else means a second leader in
            // this term. Step down into a new term rather than corrupt the log.
            self.become_follower(self.term + 1, NONE);
            return false;
        }
        let cs = meta.conf_state.clone().unwrap_or_default();
        let member = cs.voters.iter().chain(&cs.learners).chain(&cs.voters_outgoing).any(|id| *id == self.id);
        if !member {
            // A snapshot whose configuration lacks us comes from a leader that removed us,
            // or is broken. Applying it would leave us without a configuration.
            return false;
        }
        if self.raft_log.match_term(meta.index, meta.term) {
            // We already have the snapshot's last entry: fast-forward the commit index
            // instead of throwing away the log.
            self.raft_log.commit_to(meta.index);
            return false;
        }
        // Check the snapshot's configuration before touching the log: a configuration that
        // breaks the invariants comes from a broken leader and must not replace ours.
        let mut restored = ProgressTracker::new(self.trk.inflights_count_max, self.trk.inflights_bytes_max);
        if confchange::restore(&mut restored, meta.index, &cs).is_err() {
            return false;
        }
        self.raft_log.restore(snapshot);
        self.trk = restored;
        self.is_learner = self.trk.progress.get(&self.id).is_some_and(|pr| pr.is_learner);
        true
    }

    pub(super) fn on_snapshot_persisted(&mut self, index: u64) {
        self.raft_log.stable_snapshot_to(index);
        if index > self.raft_log.applied {
            // The snapshot is the applied state up to its index.
            self.raft_log.applied_to(index);
        }
    }

    // ---- leader helpers --------------------------------------------------------------

    /// Assigns terms and indexes to proposed entries and appends them. Returns false if
    /// the uncommitted-size limit refuses them.
    pub(crate) fn append_entries(&mut self, mut entries: Vec<Entry>) -> bool {
        let last_index = self.raft_log.last_index();
        for (offset, entry) in entries.iter_mut().enumerate() {
            entry.term = self.term;
            entry.index = last_index + 1 + offset as u64;
        }
        if !self.maybe_increase_uncommitted_bytes(&entries) {
            return false;
        }
        let last_index = self.raft_log.append_owned(entries);
        // The leader acknowledges its own entries, like any follower, once they are
        // durable: this message comes back to us after the write.
        self.send(Message {
            msg_type: MessageType::MsgAppendResponse as i32,
            to: self.id,
            index: last_index,
            ..Default::default()
        });
        true
    }

    fn maybe_increase_uncommitted_bytes(&mut self, entries: &[Entry]) -> bool {
        let bytes = payload_bytes(entries);
        // An empty entry (a new leader's, or a leave-joint) always fits, and so does one
        // batch when nothing is uncommitted, so that a single large proposal can progress.
        if self.uncommitted_bytes > 0
            && bytes > 0
            && self.uncommitted_bytes + bytes > self.uncommitted_bytes_max
        {
            return false;
        }
        self.uncommitted_bytes += bytes;
        true
    }

    /// Entries were handed out for applying: they no longer count as uncommitted.
    pub(crate) fn reduce_uncommitted_bytes(&mut self, entries: &[Entry]) {
        // Entries of earlier terms were never counted by this leader; never go below zero.
        self.uncommitted_bytes = self.uncommitted_bytes.saturating_sub(payload_bytes(entries));
    }

    /// Tells the followers that the commit index moved: with empty appends, unless
    /// `lazy_commit_broadcast` leaves it to the next append or heartbeat. A membership
    /// change in flight is always broadcast (see the config field).
    pub(super) fn broadcast_commit(&mut self) {
        if !self.lazy_commit_broadcast || self.pending_conf_index > self.raft_log.applied {
            self.bcast_append();
        }
    }

    pub(crate) fn maybe_commit(&mut self) -> bool {
        let committed = self.trk.committed();
        self.raft_log.maybe_commit(committed, self.term)
    }
}
