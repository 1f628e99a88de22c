//! Linearizable reads without writing to the log.
//!
//! A read is safe to serve at index `i` once (a) `i` was the leader's commit index when the
//! read arrived and (b) the leader has since confirmed that it still leads: a quorum
//! acknowledged a heartbeat sent after the read arrived. Every heartbeat broadcast is a
//! numbered *round* whose context is our own counter, never the caller's context: a
//! duplicate caller context or a late acknowledgement of an older round then cannot confirm
//! a read it was not sent for. A quorum on round k confirms every round up to k, so reads
//! arriving together share one round, and a lost heartbeat is retried by the next one.
//!
//! The same rounds feed the leader lease: a quorum acknowledging a heartbeat sent at tick
//! `t` means no other leader can be elected before `t + election_ticks` by the followers'
//! clocks (they refuse votes while they hear from a leader; see `Config::check_quorum`).

use std::collections::{BTreeSet, VecDeque};

use tessera_proto::raftpb::Message;

/// How a leader confirms reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum ReadOnlyOption {
    /// A quorum heartbeat round per batch of reads. Always safe.
    #[default]
    Safe,
    /// Answer from the commit index while the leader lease holds, falling back to a round
    /// otherwise. Assumes bounded clock drift; see `Config::read_only_option`.
    LeaseBased,
}

/// A read the application may serve once it has applied up to `index`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ReadState {
    pub index: u64,
    /// The context the caller gave `read_index`, to match the answer to the request.
    pub request_ctx: bytes::Bytes,
}

/// A read request waiting for confirmation: the MsgReadIndex (local or forwarded) and the
/// commit index when it arrived.
#[derive(Clone, Debug)]
pub(crate) struct PendingRead {
    pub request: Message,
    pub index: u64,
}

#[derive(Clone, Debug)]
struct Round {
    id: u64,
    sent_tick: u64,
    reads: Vec<PendingRead>,
    acks: BTreeSet<u64>,
}

/// The most heartbeat rounds a leader tracks at once. A leader cut off from its quorum
/// keeps broadcasting; beyond this the oldest round is folded into a newer one (its reads
/// stay pending and are confirmed by the newer round), so memory stays bounded.
pub const ROUNDS_MAX: usize = 16;

#[derive(Clone, Debug, Default)]
pub struct ReadOnly {
    /// Never reset while the node lives, so round ids are unique across its terms.
    last_round_id: u64,
    rounds: VecDeque<Round>,
    /// The leader lease holds while the node's tick count is below this.
    pub(crate) lease_until_tick: u64,
    /// Only rounds with at least this id may extend the lease: `expire_lease` moves it past
    /// every round started so far, whose send ticks no longer say how long ago they left.
    lease_round_min: u64,
}

impl ReadOnly {
    /// Forgets rounds, reads and the lease: leadership changed. Reads not yet confirmed are
    /// returned so the caller can report them.
    pub(crate) fn reset(&mut self) -> Vec<PendingRead> {
        self.lease_until_tick = 0;
        self.rounds.drain(..).flat_map(|r| r.reads).collect()
    }

    /// Ends the lease now, and keeps the rounds already started from renewing it: their
    /// acknowledgements may arrive after a pause of the node's clock (a hibernating
    /// leader's ticks stop while the followers' clocks may not), so their send ticks no
    /// longer bound how long ago a quorum heard from us. Reads they confirm stay safe: a
    /// read's safety rests on the order of its arrival and the round, not on time.
    pub(crate) fn expire_lease(&mut self) {
        self.lease_until_tick = 0;
        self.lease_round_min = self.last_round_id + 1;
    }

    /// Starts a round sent at `tick` carrying `reads`, with the leader's own ack, and
    /// returns its id for the heartbeats' context.
    pub(crate) fn start_round(&mut self, tick: u64, self_id: u64, reads: Vec<PendingRead>) -> u64 {
        self.last_round_id += 1;
        let mut round =
            Round { id: self.last_round_id, sent_tick: tick, reads, acks: BTreeSet::from([self_id]) };
        if self.rounds.len() >= ROUNDS_MAX {
            let oldest = self.rounds.pop_front().expect("at capacity, so not empty");
            let mut reads = oldest.reads;
            reads.append(&mut round.reads);
            round.reads = reads;
        }
        self.rounds.push_back(round);
        self.last_round_id
    }

    /// Records `from`'s ack of round `id`. Returns, when the ack completes a quorum, the
    /// send tick of that round (if it may renew the lease) and every read it confirms (its own and older rounds').
    pub(crate) fn on_ack(
        &mut self,
        id: u64,
        from: u64,
        has_quorum: impl Fn(&BTreeSet<u64>) -> bool,
    ) -> Option<(Option<u64>, Vec<PendingRead>)> {
        let position = self.rounds.iter().position(|r| r.id == id)?;
        let round = &mut self.rounds[position];
        round.acks.insert(from);
        if !has_quorum(&round.acks) {
            return None;
        }
        Some(self.confirm_through(position))
    }

    /// Re-counts every outstanding round against a new configuration: acks that were not
    /// a quorum of the old voters may be one of the new. Returns, for the newest round
    /// that now has a quorum, its send tick and every read it confirms.
    pub(crate) fn recount(
        &mut self,
        has_quorum: impl Fn(&BTreeSet<u64>) -> bool,
    ) -> Option<(Option<u64>, Vec<PendingRead>)> {
        let position = self.rounds.iter().rposition(|r| has_quorum(&r.acks))?;
        Some(self.confirm_through(position))
    }

    /// Confirms the rounds up to `position`. The send tick is returned only if that round
    /// may renew the lease.
    fn confirm_through(&mut self, position: usize) -> (Option<u64>, Vec<PendingRead>) {
        let round = &self.rounds[position];
        let sent_tick = (round.id >= self.lease_round_min).then_some(round.sent_tick);
        let confirmed = self.rounds.drain(..=position).flat_map(|r| r.reads).collect();
        (sent_tick, confirmed)
    }

    /// How many reads wait for a quorum to confirm their round.
    pub fn pending_reads(&self) -> usize {
        self.rounds.iter().map(|r| r.reads.len()).sum()
    }
}

/// Encodes a round id as a heartbeat context.
pub(crate) fn round_context(id: u64) -> Vec<u8> {
    id.to_be_bytes().to_vec()
}

/// Decodes a heartbeat context; anything that is not eight bytes is not one of ours.
pub fn context_round(context: &[u8]) -> Option<u64> {
    Some(u64::from_be_bytes(context.try_into().ok()?))
}
