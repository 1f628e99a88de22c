//! Quorum math: which index a configuration has committed and who won an election.
//!
//! A majority configuration is a plain set of voters; a joint configuration is two of them
//! (incoming and outgoing) and needs a majority of both. Everything here is pure arithmetic
//! on ids and acknowledged indexes, so it is tested against a naive model on random inputs.

mod joint;
mod majority;

pub use joint::JointConfig;
pub use majority::MajorityConfig;

/// The outcome of counting votes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VoteResult {
    /// Not decided yet: enough voters have not answered to win or to lose.
    Pending,
    /// A quorum refused, or can no longer grant.
    Lost,
    /// A quorum granted.
    Won,
}

/// How a configuration learns what a voter has acknowledged: the index a voter has durably
/// matched, or `None` when the voter is unknown to the caller.
pub trait AckedIndexer {
    fn acked_index(&self, voter_id: u64) -> Option<u64>;
}

impl<F: Fn(u64) -> Option<u64>> AckedIndexer for F {
    fn acked_index(&self, voter_id: u64) -> Option<u64> {
        self(voter_id)
    }
}

#[cfg(test)]
mod tests;
