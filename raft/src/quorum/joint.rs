use std::collections::BTreeSet;

use super::{AckedIndexer, MajorityConfig, VoteResult};

/// Two majority configurations that must both agree: the incoming one, and the outgoing
/// one, which is empty unless a joint-consensus membership change is in progress.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct JointConfig {
    pub incoming: MajorityConfig,
    pub outgoing: MajorityConfig,
}

impl JointConfig {
    pub fn new(voters: BTreeSet<u64>) -> Self {
        JointConfig { incoming: MajorityConfig::new(voters), outgoing: MajorityConfig::default() }
    }

    pub fn is_joint(&self) -> bool {
        !self.outgoing.is_empty()
    }

    /// Every voter of either half, each once.
    pub fn ids(&self) -> BTreeSet<u64> {
        self.incoming.ids().union(self.outgoing.ids()).copied().collect()
    }

    pub fn contains(&self, id: u64) -> bool {
        self.incoming.contains(id) || self.outgoing.contains(id)
    }

    /// Whether the configuration is a single voter: that voter commits on its own and
    /// never needs to wait for anybody. It need not be the node asking (a demoted leader).
    pub fn is_singleton(&self) -> bool {
        !self.is_joint() && self.incoming.len() == 1
    }

    /// The largest index both halves have committed.
    pub fn committed_index(&self, acked: &impl AckedIndexer) -> u64 {
        self.incoming.committed_index(acked).min(self.outgoing.committed_index(acked))
    }

    /// Won when both halves won, lost when either lost, pending otherwise.
    pub fn vote_result(&self, votes: impl Fn(u64) -> Option<bool>) -> VoteResult {
        let incoming = self.incoming.vote_result(&votes);
        let outgoing = self.outgoing.vote_result(&votes);
        match (incoming, outgoing) {
            (VoteResult::Won, VoteResult::Won) => VoteResult::Won,
            (VoteResult::Lost, _) | (_, VoteResult::Lost) => VoteResult::Lost,
            _ => VoteResult::Pending,
        }
    }
}

impl std::fmt::Display for JointConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.outgoing.is_empty() {
            write!(f, "{}", self.incoming)
        } else {
            write!(f, "{}&&{}", self.incoming, self.outgoing)
        }
    }
}
