use std::collections::BTreeSet;

use super::{AckedIndexer, VoteResult};

/// A set of voters that decides by simple majority.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MajorityConfig {
    voters: BTreeSet<u64>,
}

/// Configurations up to this size sort their acknowledged indexes on the stack. Raft groups
/// are almost always 3 or 5 voters, and the commit computation runs on every append
/// response, so it must not allocate.
const STACK_VOTERS_MAX: usize = 7;

impl MajorityConfig {
    pub fn new(voters: BTreeSet<u64>) -> Self {
        MajorityConfig { voters }
    }

    pub fn ids(&self) -> &BTreeSet<u64> {
        &self.voters
    }

    pub fn contains(&self, id: u64) -> bool {
        self.voters.contains(&id)
    }

    pub fn len(&self) -> usize {
        self.voters.len()
    }

    pub fn is_empty(&self) -> bool {
        self.voters.is_empty()
    }

    pub fn insert(&mut self, id: u64) -> bool {
        self.voters.insert(id)
    }

    pub fn remove(&mut self, id: u64) -> bool {
        self.voters.remove(&id)
    }

    pub fn clear(&mut self) {
        self.voters.clear()
    }

    /// The largest index that a majority of voters has acknowledged. An empty configuration
    /// returns `u64::MAX`, so that in a joint configuration whose outgoing half is empty the
    /// incoming half alone decides (the joint result is the minimum of both).
    pub fn committed_index(&self, acked: &impl AckedIndexer) -> u64 {
        let n = self.voters.len();
        if n == 0 {
            return u64::MAX;
        }
        let mut stack = [0u64; STACK_VOTERS_MAX];
        let mut heap = Vec::new();
        let indexes: &mut [u64] = if n <= STACK_VOTERS_MAX {
            &mut stack[..n]
        } else {
            heap.resize(n, 0);
            &mut heap
        };
        for (slot, id) in indexes.iter_mut().zip(self.voters.iter()) {
            *slot = acked.acked_index(*id).unwrap_or(0);
        }
        // Sorted ascending, the element at position n - (n/2 + 1) is acknowledged by
        // itself and every voter to its right: exactly a majority.
        indexes.sort_unstable();
        indexes[n - (n / 2 + 1)]
    }

    /// Counts granted and refused votes; voters missing from `votes` have not answered. An
    /// empty configuration wins, for the same reason `committed_index` returns `u64::MAX`.
    pub fn vote_result(&self, votes: impl Fn(u64) -> Option<bool>) -> VoteResult {
        if self.voters.is_empty() {
            return VoteResult::Won;
        }
        let (mut granted, mut missing) = (0, 0);
        for id in &self.voters {
            match votes(*id) {
                Some(true) => granted += 1,
                Some(false) => {}
                None => missing += 1,
            }
        }
        let quorum = self.voters.len() / 2 + 1;
        if granted >= quorum {
            VoteResult::Won
        } else if granted + missing >= quorum {
            VoteResult::Pending
        } else {
            VoteResult::Lost
        }
    }
}

impl std::fmt::Display for MajorityConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let ids: Vec<String> = self.voters.iter().map(u64::to_string).collect();
        write!(f, "({})", ids.join(" "))
    }
}
