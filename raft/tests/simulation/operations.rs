//! What the simulated clients and operators do besides writing: membership changes,
//! leadership transfers and linearizable reads; and the life cycle of node ids around
//! membership changes: created on demand, destroyed for good.

use tessera_raft::raftpb::{
    ConfChange, ConfChangeSingle, ConfChangeTransition, ConfChangeType, ConfChangeV2, ConfState, Entry,
    EntryType, MessageType,
};
use tessera_raft::{conf_change_of, describe, Error, ProposalDropReason, RawNode, StateRole, Storage};

use super::super::history::StateMachine;
use super::{Lifecycle, ReadOrigin, ReadState, Sim};
use crate::reads::Answer;

/// Whether `id` is in `conf` in any role.
fn is_member(conf: &ConfState, id: u64) -> bool {
    conf.voters
        .iter()
        .chain(&conf.voters_outgoing)
        .chain(&conf.learners)
        .chain(&conf.learners_next)
        .any(|m| *m == id)
}

/// Whether `e` is a membership change that adds `id` (as a voter or a learner).
fn adds(e: &Entry, id: u64) -> bool {
    let Ok(Some(cc)) = conf_change_of(e) else { return false };
    cc.changes.iter().any(|c| {
        c.node_id == id
            && matches!(
                ConfChangeType::try_from(c.change_type),
                Ok(ConfChangeType::AddNode | ConfChangeType::AddLearnerNode)
            )
    })
}

fn single(change_type: ConfChangeType, node_id: u64) -> ConfChangeSingle {
    ConfChangeSingle { change_type: change_type as i32, node_id }
}

/// A membership change as the driver proposes it.
#[derive(Debug)]
enum Proposal {
    V1(ConfChange),
    V2(ConfChangeV2),
    /// An EntryConfChangeV2 entry whose payload does not decode.
    Malformed,
}

impl Sim {
    // ---- node life cycle -------------------------------------------------------------

    /// Creates the node for a spare id when the first message from a leader or candidate
    /// arrives for it, as TiKV creates a peer: with empty storage and no configuration. It
    /// catches up by snapshot, whose configuration tells it the membership; until then it
    /// cannot campaign.
    pub(super) fn create_node(&mut self, i: usize, from: u64) {
        let id = i as u64 + 1;
        let config = self.knobs.config(id, self.rng.next_u64(), 0);
        let node = &mut self.nodes[i];
        let raw = RawNode::new(&config, node.disk.clone())
            .unwrap_or_else(|e| panic!("invariant: node {id} starts with empty storage: {e}"));
        node.raw = Some(raw);
        node.lifecycle = Lifecycle::Created;
        node.incarnation += 1;
        self.stats.nodes_created += 1;
        self.trace(|| format!("node {id} is created on a message from {from}"));
    }

    /// Destroys node `i` for good. Its id is never added back (the driver never proposes
    /// it, and `may_destroy` made sure no change in flight does).
    fn destroy(&mut self, i: usize) {
        self.trace(|| format!("node {} is destroyed", i + 1));
        let node = &mut self.nodes[i];
        node.lifecycle = Lifecycle::Destroyed;
        node.raw = None;
        node.held_ticks = 0;
        node.incarnation += 1;
        node.append_queue.clear();
        node.apply_queue.clear();
        node.reads_confirmed.clear();
        self.stats.nodes_destroyed += 1;
    }

    /// Whether node `i` may be destroyed without a later configuration needing it: it is
    /// not a member of the newest applied configuration nor of the one any of its members
    /// applied, and no membership change that
    /// could still be committed adds it. Such a change is in a log (of a running node or
    /// on a disk) past the newest applied one, on the wire (a forwarded proposal, or an
    /// append whose sender lost its copy in a crash), or in the outbox of a node that was
    /// handed one to forward and has not taken a Ready since (nor has nothing to send).
    fn may_destroy(&self, i: usize) -> bool {
        let id = i as u64 + 1;
        let node = &self.nodes[i];
        if node.lifecycle != Lifecycle::Created {
            return false;
        }
        let (conf_index, conf) = self.history.latest_conf();
        if is_member(conf, id) {
            return false;
        }
        // Every member must have applied a configuration without it as well: a member that
        // has not learned of the removal still counts its vote, and might never win an
        // election without it. (Stale non-members do not matter: they may count each other.)
        let mut members =
            self.nodes.iter().filter(|n| n.lifecycle == Lifecycle::Created && is_member(conf, n.id));
        let still_counted = members.any(|n| match &n.raw {
            Some(raw) => is_member(&raw.raft().tracker().conf_state(), id),
            None => is_member(&n.disk.rl().conf_state(), id) || is_member(&n.conf_durable, id),
        });
        if still_counted {
            return false;
        }
        let holding = self.conf_change_holders.iter().any(|&(k, incarnation, readies)| {
            let holder = &self.nodes[k];
            holder.incarnation == incarnation
                && holder.readies_taken == readies
                && holder.raw.as_ref().is_some_and(|raw| raw.has_ready())
        });
        if holding {
            return false;
        }
        for n in &self.nodes {
            let first = (conf_index + 1).max(n.disk.first_index().expect("MemStorage answers"));
            let last = n.disk.last_index().expect("MemStorage answers");
            if first <= last {
                let entries = n.disk.entries(first, last + 1, None).expect("the disk log is readable");
                if entries.iter().any(|e| adds(e, id)) {
                    return false;
                }
            }
            if let Some(raw) = &n.raw {
                let log = raw.raft().raft_log();
                let low = (conf_index + 1).max(log.first_index());
                let entries = log.slice(low, log.last_index() + 1, None).unwrap_or_default();
                if entries.iter().any(|e| adds(e, id)) {
                    return false;
                }
            }
        }
        !self.net.in_flight().any(|m| {
            matches!(m.msg_type(), MessageType::MsgAppend | MessageType::MsgPropose)
                && m.entries.iter().any(|e| adds(e, id))
        })
    }

    /// Now and then a node that is no longer a member is destroyed, as a store garbage
    /// collects a removed peer.
    pub(super) fn destroy_at_random(&mut self) {
        self.conf_change_holders.retain(|&(k, incarnation, readies)| {
            let holder = &self.nodes[k];
            holder.incarnation == incarnation
                && holder.readies_taken == readies
                && holder.raw.as_ref().is_some_and(|raw| raw.has_ready())
        });
        let candidates: Vec<usize> = (0..self.nodes.len()).filter(|&i| self.may_destroy(i)).collect();
        if !candidates.is_empty() {
            let i = *self.rng.pick(&candidates);
            self.destroy(i);
        }
    }

    /// While healing, destroys the nodes that are no longer members where they could stop
    /// the group from making progress, as the application must: a removed leader without
    /// `step_down_on_removal` keeps leading a group it cannot propose to (LESSONS 11), and
    /// without pre-vote or check-quorum a removed node that never learned of its removal
    /// keeps campaigning with ever higher terms, deposing every leader (the disruptive
    /// server of section 4.2.3 of the Raft thesis). Elsewhere removed nodes keep running,
    /// and must not disrupt.
    pub(super) fn destroy_non_members_for_liveness(&mut self) {
        let disruptive =
            !self.knobs.step_down_on_removal || (!self.knobs.pre_vote && !self.knobs.check_quorum);
        if !disruptive {
            return;
        }
        self.conf_change_holders.retain(|&(k, incarnation, readies)| {
            let holder = &self.nodes[k];
            holder.incarnation == incarnation
                && holder.readies_taken == readies
                && holder.raw.as_ref().is_some_and(|raw| raw.has_ready())
        });
        for i in 0..self.nodes.len() {
            if self.may_destroy(i) {
                self.destroy(i);
            }
        }
    }

    // ---- membership changes ----------------------------------------------------------

    /// An id a change may add: any of the pool but the destroyed ones.
    fn random_addable_id(&mut self) -> Option<u64> {
        let ids: Vec<u64> =
            self.nodes.iter().filter(|n| n.lifecycle != Lifecycle::Destroyed).map(|n| n.id).collect();
        (!ids.is_empty()).then(|| *self.rng.pick(&ids))
    }

    /// One random change against the configuration `conf`: add a voter or a learner,
    /// remove, promote a learner, demote a voter.
    fn random_change(&mut self, conf: &ConfState) -> ConfChangeSingle {
        let pool = self.nodes.len() as u64;
        let addable = self.random_addable_id().unwrap_or(1);
        let change = match self.rng.below(5) {
            0 => single(ConfChangeType::AddNode, addable),
            1 => single(ConfChangeType::AddLearnerNode, addable),
            2 => {
                let members: Vec<u64> = conf.voters.iter().chain(&conf.learners).copied().collect();
                let id = if members.is_empty() || self.rng.chance(200) {
                    self.rng.between(1, pool)
                } else {
                    *self.rng.pick(&members)
                };
                single(ConfChangeType::RemoveNode, id)
            }
            3 if !conf.learners.is_empty() => single(ConfChangeType::AddNode, *self.rng.pick(&conf.learners)),
            _ if !conf.voters.is_empty() => {
                single(ConfChangeType::AddLearnerNode, *self.rng.pick(&conf.voters))
            }
            _ => single(ConfChangeType::AddNode, addable),
        };
        // The proposer's configuration may be stale and still list a node destroyed since:
        // never add (or demote, or promote) it back; removing it is harmless.
        let destroyed = self.nodes[(change.node_id - 1) as usize].lifecycle == Lifecycle::Destroyed;
        if destroyed && change.change_type != ConfChangeType::RemoveNode as i32 {
            return single(ConfChangeType::RemoveNode, change.node_id);
        }
        change
    }

    fn random_proposal(&mut self, conf: &ConfState) -> Proposal {
        let transition = |rng: &mut crate::rng::Rng| {
            *rng.pick(&[
                ConfChangeTransition::Auto,
                ConfChangeTransition::JointImplicit,
                ConfChangeTransition::JointExplicit,
            ]) as i32
        };
        match self.rng.below(100) {
            // The single-step form of old.
            0..=14 => {
                let c = self.random_change(conf);
                Proposal::V1(ConfChange {
                    change_type: c.change_type,
                    node_id: c.node_id,
                    ..Default::default()
                })
            }
            // One change, without joint consensus.
            15..=34 => {
                let changes = vec![self.random_change(conf)];
                Proposal::V2(ConfChangeV2 { changes, ..Default::default() })
            }
            // Several changes through a joint configuration, left automatically, implicitly
            // or explicitly; or one change through a joint configuration on request.
            35..=64 => {
                let count = self.rng.between(1, 3);
                let changes = (0..count).map(|_| self.random_change(conf)).collect();
                let transition = transition(&mut self.rng);
                Proposal::V2(ConfChangeV2 { transition, changes, ..Default::default() })
            }
            // Leave a joint configuration (refused when not in one).
            65..=84 => Proposal::V2(ConfChangeV2::default()),
            // Remove every voter: refused.
            85..=89 => {
                let changes = conf.voters.iter().map(|id| single(ConfChangeType::RemoveNode, *id)).collect();
                let transition = transition(&mut self.rng);
                Proposal::V2(ConfChangeV2 { transition, changes, ..Default::default() })
            }
            // A change type nobody knows: refused.
            90..=94 => {
                let changes = vec![ConfChangeSingle { change_type: 99, node_id: 1 }];
                Proposal::V2(ConfChangeV2 { changes, ..Default::default() })
            }
            _ => Proposal::Malformed,
        }
    }

    /// A random live node, leader or not, proposes a random membership change, valid or
    /// not. Refusals must be typed errors, at propose or at apply.
    pub(super) fn propose_conf_change_at_random(&mut self) {
        let Some(i) = self.random_live_node() else { return };
        let conf = self.raw(i).raft().tracker().conf_state();
        let proposal = self.random_proposal(&conf);
        self.trace(|| format!("node {} proposes membership change {proposal:?}", i + 1));
        let raw = self.raw(i);
        let result = match proposal {
            Proposal::V1(cc) => raw.propose_conf_change_v1(Vec::new(), cc),
            Proposal::V2(cc) => raw.propose_conf_change(Vec::new(), cc),
            Proposal::Malformed => {
                // Field 31 with wire type 7, which does not exist: never decodes.
                let data = vec![0xff, 0xff];
                raw.propose_entries(vec![Entry {
                    entry_type: EntryType::EntryConfChangeV2 as i32,
                    data: data.into(),
                    ..Entry::default()
                }])
            }
        };
        self.count_conf_change_proposal(i, result);
    }

    fn count_conf_change_proposal(&mut self, i: usize, result: tessera_raft::Result<()>) {
        match result {
            Ok(()) => {
                self.stats.conf_changes_proposed += 1;
                let node = &self.nodes[i];
                self.conf_change_holders.push((i, node.incarnation, node.readies_taken));
            }
            Err(Error::ProposalDropped(_) | Error::ConfChange(_)) => {
                self.stats.conf_changes_refused_at_propose += 1;
                self.trace(|| {
                    format!("node {} refuses the membership change: {}", i + 1, result.unwrap_err())
                });
            }
            Err(e) => {
                panic!("invariant: node {} refuses a membership change with an unexpected error: {e}", i + 1)
            }
        }
        self.observe(i);
    }

    /// While healing: leader `i` proposes to leave a joint configuration that waits for an
    /// explicit leave. Returns whether it was in one.
    pub(super) fn propose_explicit_leave(&mut self, i: usize) -> bool {
        let config = &self.raw(i).raft().tracker().config;
        if !config.voters.is_joint() || config.auto_leave {
            return false;
        }
        self.trace(|| format!("node {} proposes to leave the joint configuration", i + 1));
        let result = self.raw(i).propose_conf_change(Vec::new(), ConfChangeV2::default());
        self.count_conf_change_proposal(i, result);
        true
    }

    /// Node `i` applies the membership change `e`, exactly as the kv example does, and
    /// keeps the configuration with its applied state. Every node that applies index
    /// `e.index` must end with the same configuration.
    pub(super) fn apply_conf_change(&mut self, i: usize, e: &Entry) {
        let id = i as u64 + 1;
        let cc = conf_change_of(e)
            .unwrap_or_else(|err| panic!("invariant: a committed membership change decodes: {err}"))
            .expect("invariant: an entry that is not normal is a membership change");
        let first_to_apply = !self.history.has_conf_at(e.index);
        let result = self.raw(i).apply_conf_change(&cc);
        let tracker_conf = self.raw(i).raft().tracker().conf_state();
        let conf = match result {
            Ok(conf) => {
                assert_eq!(conf, tracker_conf, "invariant: node {id} is in the configuration it reports");
                if first_to_apply {
                    let outgoing = !conf.voters_outgoing.is_empty();
                    let was_joint = !self.nodes[i].conf.voters_outgoing.is_empty();
                    match (was_joint, outgoing) {
                        (true, false) => self.stats.conf_changes_joint_left += 1,
                        (false, true) => self.stats.conf_changes_joint_entered += 1,
                        _ => self.stats.conf_changes_simple += 1,
                    }
                }
                conf
            }
            Err(err) => {
                self.trace(|| {
                    format!("node {id} refuses to apply {}: {err}", describe::describe_conf_change(&cc))
                });
                assert_eq!(
                    self.nodes[i].conf, tracker_conf,
                    "invariant: node {id} keeps its configuration when it refuses a change"
                );
                if first_to_apply {
                    self.stats.conf_changes_refused_at_apply += 1;
                }
                tracker_conf
            }
        };
        self.trace(|| {
            format!("node {id} applies {} at {}: {conf:?}", describe::describe_conf_change(&cc), e.index)
        });
        self.history.on_conf_applied(id, e.index, &conf);
        // A slow node may still apply an older configuration that lists a destroyed node;
        // a configuration applied for the first time is newer than any at its destruction.
        let members = conf.voters.iter().chain(&conf.voters_outgoing).chain(&conf.learners);
        for member in members.filter(|_| first_to_apply) {
            assert!(
                self.nodes[(*member - 1) as usize].lifecycle != Lifecycle::Destroyed,
                "invariant: destroyed node {member} is a member again; the simulation's destroy rule is broken"
            );
        }
        // The application snapshots its state at every membership change, so that the
        // leader can initialize a node the change adds with a snapshot that includes it
        // (a stale one would be refused: it does not make the node a member).
        let sm = self.nodes[i].sm;
        match self.nodes[i].disk.wl().create_snapshot(sm.index, Some(conf.clone()), sm.encode()) {
            Ok(()) | Err(tessera_raft::StorageError::SnapshotOutOfDate) => {}
            Err(err) => panic!("invariant: node {id} snapshots at the membership change it applied: {err}"),
        }
        self.nodes[i].conf = conf;
        self.observe(i);
    }

    // ---- leadership transfers --------------------------------------------------------

    /// Asks a node (the leader, usually) to hand leadership to a random target: a voter,
    /// a learner, itself, an id that is not a member, or one nobody has.
    pub(super) fn transfer_at_random(&mut self) {
        let i = match self.leader() {
            Some(leader) if self.rng.chance(700) => leader,
            _ => match self.random_live_node() {
                Some(i) => i,
                None => return,
            },
        };
        let id = i as u64 + 1;
        let pool = self.nodes.len() as u64;
        let conf = self.raw(i).raft().tracker().conf_state();
        let voters: Vec<u64> = conf.voters.iter().copied().filter(|v| *v != id).collect();
        let non_members: Vec<u64> = (1..=pool).filter(|n| !is_member(&conf, *n)).collect();
        let target = match self.rng.below(8) {
            0..=3 if !voters.is_empty() => *self.rng.pick(&voters),
            4 if !conf.learners.is_empty() => *self.rng.pick(&conf.learners),
            5 if !non_members.is_empty() => *self.rng.pick(&non_members),
            6 => pool + 1 + self.rng.below(3),
            _ => id,
        };
        self.trace(|| format!("node {id} is asked to transfer leadership to {target}"));
        match self.raw(i).transfer_leader(target) {
            Ok(()) => self.stats.transfers_requested += 1,
            Err(Error::ProposalDropped(why)) => {
                self.stats.transfers_refused += 1;
                self.trace(|| format!("node {id} refuses the transfer: {why:?}"));
            }
            Err(e) => panic!("invariant: node {id} refuses a transfer with an unexpected error: {e}"),
        }
        self.observe(i);
    }

    // ---- reads -----------------------------------------------------------------------

    /// Asks a random live node for a linearizable read, with a context of its own.
    pub(super) fn read_at_random(&mut self) {
        let Some(i) = self.random_live_node() else { return };
        let id = i as u64 + 1;
        // Whether the lease holds is read off the node's timers: bring them up to date first,
        // as the read itself does (see `raw`).
        self.hand_over_held_ticks(i);
        let raft = self.nodes[i].raw.as_ref().expect("invariant: the node is up").raft();
        let origin = if raft.role() == StateRole::Leader {
            ReadOrigin::Leader
        } else if raft.tracker().config.learners.contains(&id) {
            ReadOrigin::Learner
        } else {
            ReadOrigin::Follower
        };
        let lease = self.knobs.lease_reads && raft.lease_valid();
        let (seq, ctx) = self.reads.issue(id, self.nodes[i].incarnation, self.commit_max, origin, lease);
        self.trace(|| format!("node {id} is asked for read {seq} ({origin:?}, floor {})", self.commit_max));
        match self.raw(i).read_index(ctx) {
            Ok(()) => self.stats.reads_issued += 1,
            Err(Error::ReadIndexDropped(why)) => {
                self.stats.reads_refused += 1;
                self.stats.reads_refused_pending_max +=
                    u64::from(why == ProposalDropReason::ReadsPendingExceeded);
                self.reads.refuse(seq);
                self.trace(|| format!("node {id} refuses read {seq}: {why:?}"));
            }
            Err(e) => panic!("invariant: node {id} refuses a read with an unexpected error: {e}"),
        }
        self.observe(i);
    }

    /// Node `i` handed out answers to reads: check them, and keep those to serve.
    pub(super) fn on_read_states(&mut self, i: usize, read_states: &[ReadState]) {
        let id = i as u64 + 1;
        for rs in read_states {
            let incarnation = self.nodes[i].incarnation;
            match self.reads.on_answer(id, incarnation, rs, self.commit_max) {
                Answer::Serve(seq) => {
                    self.trace(|| format!("node {id} may serve read {seq} at index {}", rs.index));
                    self.nodes[i].reads_confirmed.push((seq, rs.index));
                }
                Answer::Ignore => self.stats.reads_answered_late_or_twice += 1,
            }
        }
    }

    /// Serves the reads whose index node `i` has applied, from its state machine now.
    pub(super) fn serve_reads(&mut self, i: usize) {
        let node = &mut self.nodes[i];
        let Some(raw) = &node.raw else { return };
        if node.reads_confirmed.is_empty() {
            return;
        }
        let committed = raw.raft().raft_log().committed;
        let sm: StateMachine = node.sm;
        let mut due = Vec::new();
        node.reads_confirmed.retain(|&(seq, index)| {
            if sm.index < index {
                return true;
            }
            due.push((seq, index));
            false
        });
        for (seq, index) in due {
            assert!(
                index <= committed,
                "read safety violated: node {} serves read {seq} at index {index} beyond its commit index \
                 {committed}",
                i + 1
            );
            self.history.check_state(i as u64 + 1, &sm, "state a read returns");
            let served = self.reads.on_served(seq, sm.index);
            match served.origin {
                ReadOrigin::Leader => self.stats.reads_served_on_leader += 1,
                ReadOrigin::Follower => self.stats.reads_served_on_follower += 1,
                ReadOrigin::Learner => self.stats.reads_served_on_learner += 1,
            }
            self.stats.lease_reads_served += u64::from(served.lease);
        }
    }
}
