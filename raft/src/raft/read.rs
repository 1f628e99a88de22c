//! Linearizable reads on the leader: ReadIndex rounds confirmed by a heartbeat quorum, or
//! answered at once while the leader lease holds; postponed until the leader has committed
//! an entry of its term.

use tessera_proto::raftpb::{Message, MessageType};

use super::{Raft, StateRole};
use crate::quorum::VoteResult;
use crate::read_only::{PendingRead, ReadOnlyOption, ReadState};
use crate::storage::Storage;
use crate::NONE;

impl<S: Storage> Raft<S> {
    fn committed_entry_in_current_term(&self) -> bool {
        self.raft_log.term_or_zero(self.raft_log.committed) == self.term
    }

    /// Ends the leader lease until a heartbeat round started after this call is
    /// acknowledged by a quorum. For an application that stops ticking a node (a
    /// hibernating region): the lease is counted in the node's ticks, which say nothing of
    /// the time that passed while they stood still.
    pub fn expire_lease(&mut self) {
        self.read_only.expire_lease();
    }

    /// Whether the leader lease holds: a quorum acknowledged a heartbeat recently enough
    /// that no other leader can have been elected since.
    pub fn lease_valid(&self) -> bool {
        self.role == StateRole::Leader
            && self.read_only_option == ReadOnlyOption::LeaseBased
            && self.check_quorum
            && !self.transfer_started_this_term
            && self.ticks < self.read_only.lease_until_tick
    }

    /// Reads this leader holds unconfirmed: postponed until it commits in its term, waiting
    /// for the next round, or in a started round. Bounded by `reads_pending_max`.
    pub fn reads_pending(&self) -> usize {
        self.reads_postponed.len() + self.reads_waiting.len() + self.read_only.pending_reads()
    }

    /// Whether a read arriving now is answered without waiting: this leader committed in
    /// its term, and it is the sole voter or holds the lease. Such reads never count
    /// against `reads_pending_max`.
    pub(super) fn answers_reads_at_once(&self) -> bool {
        // Only the sole voter itself needs nobody's confirmation: a demoted leader whose
        // configuration has one voter must ask that voter, which may lead already.
        let sole_voter = self.trk.is_singleton() && self.trk.config.voters.contains(self.id);
        self.committed_entry_in_current_term() && (sole_voter || self.lease_valid())
    }

    pub(super) fn handle_read_index_on_leader(&mut self, request: Message) {
        if !self.committed_entry_in_current_term() {
            self.reads_postponed.push(request);
            return;
        }
        let answer_now = self.answers_reads_at_once();
        let read = PendingRead { request, index: self.raft_log.committed };
        if answer_now {
            self.respond_read(read);
        } else {
            self.reads_waiting.push(read);
        }
    }

    pub(super) fn release_postponed_reads(&mut self) {
        if self.reads_postponed.is_empty() || !self.committed_entry_in_current_term() {
            return;
        }
        for request in std::mem::take(&mut self.reads_postponed) {
            self.handle_read_index_on_leader(request);
        }
    }

    /// Sends the entries proposed since the last call to every follower that can take
    /// them. `RawNode::ready` calls this, so all proposals of one batch of input travel
    /// in one append per follower.
    pub(crate) fn flush_proposals(&mut self) {
        if !std::mem::take(&mut self.proposals_unsent) || self.role != StateRole::Leader {
            return;
        }
        // A follower whose answer arrived meanwhile may have been sent them already.
        self.bcast_append_to_peers(false);
    }

    /// Starts one heartbeat round for all reads that arrived since the last call. The
    /// application calls this once per batch of input (`RawNode::ready` does), so that
    /// reads arriving together share a round.
    pub(crate) fn flush_reads(&mut self) {
        if self.role == StateRole::Leader && !self.reads_waiting.is_empty() {
            let reads = std::mem::take(&mut self.reads_waiting);
            self.bcast_heartbeat(reads);
        }
    }

    pub(super) fn on_round_ack(&mut self, round: u64, from: u64) {
        let voters = &self.trk.config.voters;
        let has_quorum = |acks: &std::collections::BTreeSet<u64>| {
            voters.vote_result(|id| acks.contains(&id).then_some(true)) == VoteResult::Won
        };
        let confirmed = self.read_only.on_ack(round, from, has_quorum);
        self.on_rounds_confirmed(confirmed);
    }

    /// The configuration changed: rounds may now have a quorum of the new voters.
    pub(super) fn recount_rounds(&mut self) {
        let voters = &self.trk.config.voters;
        let has_quorum = |acks: &std::collections::BTreeSet<u64>| {
            voters.vote_result(|id| acks.contains(&id).then_some(true)) == VoteResult::Won
        };
        let confirmed = self.read_only.recount(has_quorum);
        self.on_rounds_confirmed(confirmed);
    }

    fn on_rounds_confirmed(&mut self, confirmed: Option<(Option<u64>, Vec<PendingRead>)>) {
        let Some((sent_tick, reads)) = confirmed else { return };
        if let Some(sent_tick) = sent_tick {
            // No other leader can be elected before sent_tick + election_ticks by the
            // followers' clocks; the margin absorbs clock drift between nodes.
            let lease_ticks = (self.election_ticks - self.lease_margin_ticks) as u64;
            self.read_only.lease_until_tick = self.read_only.lease_until_tick.max(sent_tick + lease_ticks);
        }
        for read in reads {
            self.respond_read(read);
        }
    }

    fn respond_read(&mut self, read: PendingRead) {
        let PendingRead { request, index } = read;
        if request.from == NONE || request.from == self.id {
            let request_ctx = request.entries.first().map(|e| e.data.clone()).unwrap_or_default();
            self.read_states.push(ReadState { index, request_ctx });
        } else {
            self.send(Message {
                msg_type: MessageType::MsgReadIndexResponse as i32,
                to: request.from,
                index,
                entries: request.entries,
                ..Default::default()
            });
        }
    }
}
