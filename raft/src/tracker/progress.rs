use std::fmt;

use super::Inflights;

/// How the leader replicates to one follower.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum ProgressState {
    /// The leader does not know where the follower's log matches; it sends one append at a
    /// time and waits for the answer (or a heartbeat response) before the next.
    #[default]
    Probe,
    /// The follower's log is known to match; appends are pipelined optimistically, bounded
    /// by the in-flight window.
    Replicate,
    /// The follower needs entries the leader compacted; a snapshot is on its way and nothing
    /// else is sent until it is reported.
    Snapshot,
}

/// The leader's view of one peer's log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Progress {
    /// The highest index known to be durably in the peer's log.
    pub matched: u64,
    /// The index of the next entry to send.
    pub next_idx: u64,
    pub state: ProgressState,
    /// In `Snapshot`: the index of the snapshot being sent.
    pub pending_snapshot: u64,
    /// Whether the peer has been heard from since the last check-quorum round.
    pub recent_active: bool,
    /// In `Probe`: a probe is outstanding. In `Replicate`: the in-flight window is full.
    pub msg_app_flow_paused: bool,
    pub inflights: Inflights,
    pub is_learner: bool,
}

impl Progress {
    pub fn new(next_idx: u64, inflights_count_max: usize, inflights_bytes_max: u64) -> Self {
        Progress {
            matched: 0,
            next_idx,
            state: ProgressState::Probe,
            pending_snapshot: 0,
            recent_active: false,
            msg_app_flow_paused: false,
            inflights: Inflights::new(inflights_count_max, inflights_bytes_max),
            is_learner: false,
        }
    }

    fn reset_state(&mut self, state: ProgressState) {
        self.msg_app_flow_paused = false;
        self.pending_snapshot = 0;
        self.state = state;
        self.inflights.reset();
    }

    pub fn become_probe(&mut self) {
        if self.state == ProgressState::Snapshot {
            // The snapshot (if it arrived) covers everything up to pending_snapshot, so
            // probing resumes right after it rather than at the stale matched index.
            let pending = self.pending_snapshot;
            self.reset_state(ProgressState::Probe);
            self.next_idx = (self.matched + 1).max(pending + 1);
        } else {
            self.reset_state(ProgressState::Probe);
            self.next_idx = self.matched + 1;
        }
    }

    pub fn become_replicate(&mut self) {
        self.reset_state(ProgressState::Replicate);
        self.next_idx = self.matched + 1;
    }

    pub fn become_snapshot(&mut self, snapshot_index: u64) {
        self.reset_state(ProgressState::Snapshot);
        self.pending_snapshot = snapshot_index;
    }

    /// Accounts for an append of `entries_count` entries (`bytes` of payload) just sent.
    pub fn on_entries_sent(&mut self, entries_count: usize, bytes: u64) {
        match self.state {
            ProgressState::Replicate => {
                if entries_count > 0 {
                    self.next_idx += entries_count as u64;
                    self.inflights.add(self.next_idx - 1, bytes);
                }
                self.msg_app_flow_paused = self.inflights.full();
            }
            // Every append sent in Probe is a probe: wait for its answer.
            ProgressState::Probe => self.msg_app_flow_paused = true,
            ProgressState::Snapshot => {
                panic!("invariant: no append is sent to a peer in Snapshot state")
            }
        }
    }

    /// The peer acknowledged everything up to `index`. Returns whether `matched` grew.
    pub fn maybe_update(&mut self, index: u64) -> bool {
        let updated = self.matched < index;
        if updated {
            self.matched = index;
            self.msg_app_flow_paused = false;
        }
        self.next_idx = self.next_idx.max(index + 1);
        updated
    }

    /// The peer rejected an append whose previous entry was `rejected`; `match_hint` is the
    /// highest index at which its log may still match. Returns false for a stale rejection.
    pub fn maybe_decr_to(&mut self, rejected: u64, match_hint: u64) -> bool {
        if self.state == ProgressState::Replicate {
            // In Replicate every append carries a previous index above matched; a rejection
            // at or below matched answers an older message and is ignored.
            if rejected <= self.matched {
                return false;
            }
            self.next_idx = self.matched + 1;
            return true;
        }
        // In Probe only the answer to the latest probe (sent from next_idx - 1) counts.
        if self.next_idx == 0 || self.next_idx - 1 != rejected {
            return false;
        }
        self.next_idx = rejected.min(match_hint + 1).max(self.matched + 1);
        self.msg_app_flow_paused = false;
        true
    }

    /// Whether appends to this peer must wait.
    pub fn is_paused(&self) -> bool {
        match self.state {
            ProgressState::Probe | ProgressState::Replicate => self.msg_app_flow_paused,
            ProgressState::Snapshot => true,
        }
    }
}

impl fmt::Display for Progress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?} match={} next={}", self.state, self.matched, self.next_idx)?;
        if self.is_learner {
            write!(f, " learner")?;
        }
        if self.msg_app_flow_paused {
            write!(f, " paused")?;
        }
        if self.pending_snapshot > 0 {
            write!(f, " pendingSnap={}", self.pending_snapshot)?;
        }
        if !self.recent_active {
            write!(f, " inactive")?;
        }
        if self.inflights.count() > 0 {
            write!(f, " inflight={}", self.inflights.count())?;
            if self.inflights.full() {
                write!(f, "[full]")?;
            }
        }
        Ok(())
    }
}
