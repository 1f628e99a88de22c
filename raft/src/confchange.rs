//! Membership changes as pure functions from one configuration to the next.
//!
//! The `Changer` never mutates the tracker it reads: it returns a new configuration and
//! progress map, or a typed error saying which invariant the change would break. Three
//! transitions exist:
//! - `simple`: at most one voter changes (learners may change freely). Safe without joint
//!   consensus because any majority of the old set overlaps any majority of the new one.
//! - `enter_joint`: any change; the old voters become the outgoing half, and decisions need
//!   a majority of both halves until the joint configuration is left.
//! - `leave_joint`: drop the outgoing half; voters demoted while joint become learners.

use std::collections::BTreeMap;

use tessera_proto::raftpb::{ConfChangeSingle, ConfChangeType, ConfChangeV2, ConfState};
use thiserror::Error;

use crate::quorum::MajorityConfig;
use crate::tracker::{Progress, ProgressTracker, TrackerConfig};

/// Why a membership change is refused.
#[derive(Clone, Debug, Error, PartialEq, Eq)]
pub enum ConfChangeError {
    #[error("the configuration is already joint")]
    AlreadyJoint,
    #[error("the configuration is not joint")]
    NotJoint,
    #[error("a configuration without voters cannot become joint")]
    ZeroVotersJoint,
    #[error("the change removes all voters")]
    RemovesAllVoters,
    #[error("more than one voter changes without joint consensus")]
    MultipleVotersWithoutJoint,
    #[error("the change type {0} is unknown")]
    UnknownChangeType(i32),
    #[error("configuration invariant broken: {0}")]
    InvariantBroken(String),
    #[error("a membership change is already pending; apply it first")]
    Pending,
    #[error("the membership change does not decode: {0}")]
    Malformed(String),
}

/// A configuration and the progress of its members.
pub type NextConfig = (TrackerConfig, BTreeMap<u64, Progress>);

pub type ChangeResult = std::result::Result<NextConfig, ConfChangeError>;

/// Computes configurations that follow the tracker's current one.
#[derive(Debug)]
pub struct Changer<'a> {
    tracker: &'a ProgressTracker,
    /// New peers start probing from here: the leader's last index.
    last_index: u64,
}

impl<'a> Changer<'a> {
    pub fn new(tracker: &'a ProgressTracker, last_index: u64) -> Self {
        Changer { tracker, last_index }
    }

    /// Enters a joint configuration: the current voters become the outgoing half and the
    /// changes apply to the incoming half. `auto_leave` asks the leader to propose leaving
    /// as soon as the joint configuration is applied.
    pub fn enter_joint(&self, auto_leave: bool, changes: &[ConfChangeSingle]) -> ChangeResult {
        let (mut cfg, mut prs) = self.checked_snapshot()?;
        if cfg.voters.is_joint() {
            return Err(ConfChangeError::AlreadyJoint);
        }
        if cfg.voters.incoming.is_empty() {
            // Bootstrapping adds voters to an empty configuration one by one; there is no
            // old majority for a joint configuration to protect.
            return Err(ConfChangeError::ZeroVotersJoint);
        }
        cfg.voters.outgoing = cfg.voters.incoming.clone();
        self.apply(&mut cfg, &mut prs, changes)?;
        cfg.auto_leave = auto_leave;
        check_invariants(&cfg, &prs)?;
        Ok((cfg, prs))
    }

    /// Leaves the joint configuration: the outgoing half stops counting, its voters that
    /// were demoted become learners, and its voters that were removed are forgotten.
    pub fn leave_joint(&self) -> ChangeResult {
        let (mut cfg, mut prs) = self.checked_snapshot()?;
        if !cfg.voters.is_joint() {
            return Err(ConfChangeError::NotJoint);
        }
        for id in std::mem::take(&mut cfg.learners_next) {
            cfg.learners.insert(id);
            if let Some(pr) = prs.get_mut(&id) {
                pr.is_learner = true;
            }
        }
        for id in cfg.voters.outgoing.ids().clone() {
            if !cfg.voters.incoming.contains(id) && !cfg.learners.contains(&id) {
                prs.remove(&id);
            }
        }
        cfg.voters.outgoing = MajorityConfig::default();
        cfg.auto_leave = false;
        check_invariants(&cfg, &prs)?;
        Ok((cfg, prs))
    }

    /// Applies changes that touch at most one voter, without joint consensus.
    pub fn simple(&self, changes: &[ConfChangeSingle]) -> ChangeResult {
        let (mut cfg, mut prs) = self.checked_snapshot()?;
        if cfg.voters.is_joint() {
            return Err(ConfChangeError::AlreadyJoint);
        }
        self.apply(&mut cfg, &mut prs, changes)?;
        let before = self.tracker.config.voters.incoming.ids();
        let after = cfg.voters.incoming.ids();
        if before.symmetric_difference(after).count() > 1 {
            return Err(ConfChangeError::MultipleVotersWithoutJoint);
        }
        check_invariants(&cfg, &prs)?;
        Ok((cfg, prs))
    }

    fn checked_snapshot(&self) -> ChangeResult {
        let cfg = self.tracker.config.clone();
        let prs = self.tracker.progress.clone();
        check_invariants(&cfg, &prs)?;
        Ok((cfg, prs))
    }

    fn apply(
        &self,
        cfg: &mut TrackerConfig,
        prs: &mut BTreeMap<u64, Progress>,
        changes: &[ConfChangeSingle],
    ) -> Result<(), ConfChangeError> {
        for cc in changes {
            if cc.node_id == 0 {
                // Id zero is "nobody"; such a change is a no-op by convention.
                continue;
            }
            let change_type = ConfChangeType::try_from(cc.change_type)
                .map_err(|_| ConfChangeError::UnknownChangeType(cc.change_type))?;
            match change_type {
                ConfChangeType::AddNode => self.make_voter(cfg, prs, cc.node_id),
                ConfChangeType::AddLearnerNode => self.make_learner(cfg, prs, cc.node_id),
                ConfChangeType::RemoveNode => remove(cfg, prs, cc.node_id),
                ConfChangeType::UpdateNode => {}
            }
        }
        if cfg.voters.incoming.is_empty() {
            return Err(ConfChangeError::RemovesAllVoters);
        }
        Ok(())
    }

    fn make_voter(&self, cfg: &mut TrackerConfig, prs: &mut BTreeMap<u64, Progress>, id: u64) {
        match prs.get_mut(&id) {
            None => self.init_progress(cfg, prs, id, false),
            Some(pr) => {
                pr.is_learner = false;
                cfg.learners.remove(&id);
                cfg.learners_next.remove(&id);
                cfg.voters.incoming.insert(id);
            }
        }
    }

    fn make_learner(&self, cfg: &mut TrackerConfig, prs: &mut BTreeMap<u64, Progress>, id: u64) {
        let Some(pr) = prs.get(&id) else {
            self.init_progress(cfg, prs, id, true);
            return;
        };
        if pr.is_learner {
            return;
        }
        let saved = pr.clone();
        remove(cfg, prs, id);
        let mut pr = saved;
        if cfg.voters.outgoing.contains(id) {
            // Still a voter of the outgoing half, so it cannot be a learner yet: it becomes
            // one when the joint configuration is left.
            cfg.learners_next.insert(id);
        } else {
            pr.is_learner = true;
            cfg.learners.insert(id);
        }
        prs.insert(id, pr);
    }

    fn init_progress(
        &self,
        cfg: &mut TrackerConfig,
        prs: &mut BTreeMap<u64, Progress>,
        id: u64,
        is_learner: bool,
    ) {
        if is_learner {
            cfg.learners.insert(id);
        } else {
            cfg.voters.incoming.insert(id);
        }
        // Probe from the leader's last index: a new peer usually has an empty log and the
        // first rejection tells the leader where to start.
        let mut pr = Progress::new(
            self.last_index.max(1),
            self.tracker.inflights_count_max,
            self.tracker.inflights_bytes_max,
        );
        pr.is_learner = is_learner;
        // A peer just added has not had the chance to talk to us; counting it inactive
        // would let check-quorum depose the leader right away.
        pr.recent_active = true;
        prs.insert(id, pr);
    }
}

fn remove(cfg: &mut TrackerConfig, prs: &mut BTreeMap<u64, Progress>, id: u64) {
    if !prs.contains_key(&id) {
        return;
    }
    cfg.voters.incoming.remove(id);
    cfg.learners.remove(&id);
    cfg.learners_next.remove(&id);
    // A voter of the outgoing half keeps its progress: it still counts until the joint
    // configuration is left.
    if !cfg.voters.outgoing.contains(id) {
        prs.remove(&id);
    }
}

/// The rules every configuration obeys, checked before and after every change.
pub fn check_invariants(cfg: &TrackerConfig, prs: &BTreeMap<u64, Progress>) -> Result<(), ConfChangeError> {
    let broken = |why: String| Err(ConfChangeError::InvariantBroken(why));
    for id in cfg.voters.ids().iter().chain(&cfg.learners).chain(&cfg.learners_next) {
        if !prs.contains_key(id) {
            return broken(format!("no progress for {id}"));
        }
    }
    for id in &cfg.learners_next {
        if !cfg.voters.outgoing.contains(*id) {
            return broken(format!("{id} is in learners_next but not an outgoing voter"));
        }
        if prs[id].is_learner {
            return broken(format!("{id} is in learners_next but already marked learner"));
        }
    }
    for id in &cfg.learners {
        if cfg.voters.contains(*id) {
            return broken(format!("{id} is both learner and voter"));
        }
        if !prs[id].is_learner {
            return broken(format!("{id} is a learner not marked learner"));
        }
    }
    if !cfg.voters.is_joint() {
        if !cfg.learners_next.is_empty() {
            return broken("learners_next outside a joint configuration".to_string());
        }
        if cfg.auto_leave {
            return broken("auto_leave outside a joint configuration".to_string());
        }
    }
    Ok(())
}

/// The changes that rebuild `cs` from an empty configuration, and whether the last step
/// enters a joint configuration: outgoing voters first (simple changes), then the
/// incoming half and learners (joint), so a restored configuration passes the same checks
/// as one built by live changes.
pub fn restore_steps(cs: &ConfState) -> (Vec<ConfChangeSingle>, Vec<ConfChangeSingle>) {
    let change = |change_type: ConfChangeType, node_id: u64| ConfChangeSingle {
        change_type: change_type as i32,
        node_id,
    };
    let mut outgoing = Vec::new();
    let mut incoming = Vec::new();
    if cs.voters_outgoing.is_empty() {
        incoming.extend(cs.voters.iter().map(|id| change(ConfChangeType::AddNode, *id)));
        incoming.extend(cs.learners.iter().map(|id| change(ConfChangeType::AddLearnerNode, *id)));
    } else {
        outgoing.extend(cs.voters_outgoing.iter().map(|id| change(ConfChangeType::AddNode, *id)));
        // Entering joint copies the outgoing voters into the incoming half; rebuild the
        // incoming half from scratch on top of that.
        incoming.extend(cs.voters_outgoing.iter().map(|id| change(ConfChangeType::RemoveNode, *id)));
        incoming.extend(cs.voters.iter().map(|id| change(ConfChangeType::AddNode, *id)));
        incoming.extend(cs.learners.iter().map(|id| change(ConfChangeType::AddLearnerNode, *id)));
        incoming.extend(cs.learners_next.iter().map(|id| change(ConfChangeType::AddLearnerNode, *id)));
    }
    (outgoing, incoming)
}

/// Replaces the tracker's configuration with `cs` (from a snapshot or at start), building
/// it through the same checked transitions as live changes.
pub fn restore(
    tracker: &mut ProgressTracker,
    last_index: u64,
    cs: &ConfState,
) -> Result<(), ConfChangeError> {
    let (outgoing, incoming) = restore_steps(cs);
    tracker.config = TrackerConfig::default();
    tracker.progress.clear();
    tracker.votes.clear();
    fn install(tracker: &mut ProgressTracker, result: ChangeResult) -> Result<(), ConfChangeError> {
        let (config, progress) = result?;
        tracker.config = config;
        tracker.progress = progress;
        Ok(())
    }
    if outgoing.is_empty() {
        // One change at a time: each adds at most one voter, which `simple` allows.
        for change in incoming {
            let result = Changer::new(tracker, last_index).simple(&[change]);
            install(tracker, result)?;
        }
        return Ok(());
    }
    for change in outgoing {
        let result = Changer::new(tracker, last_index).simple(&[change]);
        install(tracker, result)?;
    }
    let result = Changer::new(tracker, last_index).enter_joint(cs.auto_leave, &incoming);
    install(tracker, result)
}

/// The configuration that applying `cc` to `cs` yields, computed the way the node itself
/// applies it. For applications that record the configuration with their applied state on
/// another thread than the one driving the node (the store's apply threads), so that the
/// record and the applied index change in one write.
pub fn next_conf_state(cs: &ConfState, cc: &ConfChangeV2) -> Result<ConfState, ConfChangeError> {
    let mut tracker = ProgressTracker::new(1, 0);
    restore(&mut tracker, 0, cs)?;
    let changer = Changer::new(&tracker, 0);
    let (config, _) = if crate::raft::is_leave_joint(cc) {
        changer.leave_joint()
    } else if let Some(auto_leave) = crate::raft::enter_joint(cc) {
        changer.enter_joint(auto_leave, &cc.changes)
    } else {
        changer.simple(&cc.changes)
    }?;
    Ok(config.to_conf_state())
}
