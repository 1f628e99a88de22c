//! The leader's bookkeeping: the active configuration, each peer's replication progress,
//! and the votes of the current election.

mod inflights;
mod progress;

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

pub use inflights::Inflights;
pub use progress::{Progress, ProgressState};
use tessera_proto::raftpb::ConfState;

use crate::quorum::{JointConfig, VoteResult};

/// The membership of a group, as quorum sets plus learners.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TrackerConfig {
    pub voters: JointConfig,
    /// Receive the log but never count toward a quorum. Never overlaps the voters.
    pub learners: BTreeSet<u64>,
    /// Voters of the outgoing half that become learners when the joint configuration is
    /// left. They cannot be learners while they still vote, so they wait here.
    pub learners_next: BTreeSet<u64>,
    /// Leave the joint configuration automatically once it is committed.
    pub auto_leave: bool,
}

impl TrackerConfig {
    pub fn to_conf_state(&self) -> ConfState {
        ConfState {
            voters: self.voters.incoming.ids().iter().copied().collect(),
            learners: self.learners.iter().copied().collect(),
            voters_outgoing: self.voters.outgoing.ids().iter().copied().collect(),
            learners_next: self.learners_next.iter().copied().collect(),
            auto_leave: self.auto_leave,
        }
    }
}

impl fmt::Display for TrackerConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "voters={}", self.voters)?;
        let list = |set: &BTreeSet<u64>| set.iter().map(u64::to_string).collect::<Vec<_>>().join(" ");
        if !self.learners.is_empty() {
            write!(f, " learners=({})", list(&self.learners))?;
        }
        if !self.learners_next.is_empty() {
            write!(f, " learners_next=({})", list(&self.learners_next))?;
        }
        if self.auto_leave {
            write!(f, " autoleave")?;
        }
        Ok(())
    }
}

/// The configuration, the progress of every member, and the votes cast this term.
#[derive(Clone, Debug)]
pub struct ProgressTracker {
    pub config: TrackerConfig,
    /// Ordered by id so that every walk over peers (and so every message trace) is
    /// deterministic.
    pub progress: BTreeMap<u64, Progress>,
    pub votes: BTreeMap<u64, bool>,
    pub inflights_count_max: usize,
    pub inflights_bytes_max: u64,
}

impl ProgressTracker {
    pub fn new(inflights_count_max: usize, inflights_bytes_max: u64) -> Self {
        ProgressTracker {
            config: TrackerConfig::default(),
            progress: BTreeMap::new(),
            votes: BTreeMap::new(),
            inflights_count_max,
            inflights_bytes_max,
        }
    }

    pub fn conf_state(&self) -> ConfState {
        self.config.to_conf_state()
    }

    pub fn is_singleton(&self) -> bool {
        self.config.voters.is_singleton()
    }

    /// The largest index a quorum has durably matched.
    pub fn committed(&self) -> u64 {
        let progress = &self.progress;
        self.config.voters.committed_index(&|id: u64| progress.get(&id).map(|pr| pr.matched))
    }

    /// Whether a quorum of voters has been active since the last check. A learner's
    /// activity never counts.
    pub fn quorum_active(&self) -> bool {
        let progress = &self.progress;
        self.config.voters.vote_result(|id| progress.get(&id).map(|pr| pr.recent_active)) == VoteResult::Won
    }

    pub fn reset_votes(&mut self) {
        self.votes.clear();
    }

    /// Records a vote, keeping the first one a voter cast this term.
    pub fn record_vote(&mut self, id: u64, granted: bool) {
        self.votes.entry(id).or_insert(granted);
    }

    /// Returns (granted, rejected, result) over the current votes.
    pub fn tally_votes(&self) -> (usize, usize, VoteResult) {
        let (mut granted, mut rejected) = (0, 0);
        for (id, pr) in &self.progress {
            if pr.is_learner {
                continue;
            }
            match self.votes.get(id) {
                Some(true) => granted += 1,
                Some(false) => rejected += 1,
                None => {}
            }
        }
        let result = self.config.voters.vote_result(|id| self.votes.get(&id).copied());
        (granted, rejected, result)
    }
}

#[cfg(test)]
mod tests;
