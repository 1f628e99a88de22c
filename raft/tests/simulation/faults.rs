//! Faults the simulation plays: crashes (at any point of a Ready or a storage work item)
//! and restarts from what the disk kept; then healing, after which the cluster must make
//! progress again (liveness).

use tessera_raft::quorum::VoteResult;
use tessera_raft::raftpb::{ConfState, Snapshot, SnapshotMetadata};
use tessera_raft::{MemStorage, RawNode, StateRole, Storage, StorageError};

use super::super::history::StateMachine;
use super::{
    Lifecycle, Sim, HEALED_DELAY_STEPS_MAX, HEALED_STEPS_PER_BACKLOG_ENTRY, HEALED_TICK_PERMILLE_MAX,
    LIVENESS_ELECTIONS_MAX,
};

impl Sim {
    // ---- crashes and restarts ----------------------------------------------------------

    /// Crashes a node: it loses everything it had not persisted. `mid_work` says the crash
    /// interrupted a Ready or a storage work item rather than striking between them.
    pub(super) fn crash(&mut self, i: usize, when: &str, mid_work: bool) {
        self.trace(|| format!("node {} crashes {when}", i + 1));
        self.stats.crashes += 1;
        self.stats.crashes_mid_ready += u64::from(mid_work);
        let node = &mut self.nodes[i];
        node.raw = None;
        // Held ticks were the process's, and die with it.
        node.held_ticks = 0;
        node.incarnation += 1;
        node.append_queue.clear();
        node.apply_queue.clear();
        node.sm = StateMachine::default();
        node.conf = ConfState::default();
        node.snapshot_queued_index = 0;
        node.reads_confirmed.clear();
    }

    /// Restarts a node from a copy of its disk. The state machine resumes either from the
    /// disk's snapshot with `applied` = 0 (everything after it is applied again), or from
    /// its last flushed state with `applied` set to it.
    pub(super) fn restart(&mut self, i: usize) {
        let id = i as u64 + 1;
        let disk = copy_disk(&self.nodes[i].disk);
        let snapshot = disk.snapshot(0, id).expect("a fresh copy has no pending unavailability");
        let snapshot_sm = StateMachine::decode(&snapshot.data);
        let snapshot_index = snapshot.metadata.as_ref().map_or(0, |m| m.index);
        assert_eq!(
            snapshot_sm.index, snapshot_index,
            "invariant: node {id}'s disk snapshot payload matches its metadata"
        );
        self.history.check_state(id, &snapshot_sm, "snapshot on disk");
        let snapshot_conf = snapshot.metadata.as_ref().and_then(|m| m.conf_state.clone()).unwrap_or_default();
        assert_eq!(
            &snapshot_conf,
            &self.history.conf_at(snapshot_index),
            "configuration safety violated: node {id}'s disk snapshot at {snapshot_index} holds another \
             configuration than the one applied there"
        );
        let flushed = self.nodes[i].sm_durable;
        let flushed_conf = self.nodes[i].conf_durable.clone();
        self.history.check_state(id, &flushed, "flushed state machine");
        // With async storage writes the apply thread may run ahead of the write that
        // records the commit index (which Raft keeps volatile), and the core refuses a
        // restart with `applied` above the stored commit. The applied entries were
        // committed, so the stored commit is raised to them, as the store does on load
        // (`PeerStorage::load`). Claiming less than was applied instead left a node whose
        // state machine was ahead of its own commit index, which then served a read at an
        // index it did not know committed (seed 4025842).
        let last_index = disk.last_index().expect("invariant: a disk copy knows its last index");
        let stored_commit = {
            let mut store = disk.wl();
            let mut hard_state = *store.hard_state();
            if flushed.index > hard_state.commit && flushed.index <= last_index {
                hard_state.commit = flushed.index;
                store.set_hard_state(hard_state);
            }
            hard_state.commit
        };
        let (sm, applied, conf) = if self.rng.coin() {
            (snapshot_sm, 0, snapshot_conf)
        } else if flushed.index > snapshot_sm.index {
            // The flushed state comes with the configuration applied with it, which the
            // core reads from the stored snapshot: store the flushed state as the snapshot
            // (as an application that keeps both in one engine would), rather than pairing
            // the older snapshot's index with a newer configuration.
            disk.wl()
                .create_snapshot(flushed.index, Some(flushed_conf.clone()), flushed.encode())
                .unwrap_or_else(|e| {
                    panic!("invariant: node {id} stores its flushed state as a snapshot: {e}")
                });
            (flushed, flushed.index.min(stored_commit), flushed_conf)
        } else {
            (snapshot_sm, snapshot_sm.index, snapshot_conf)
        };
        assert_eq!(
            &conf,
            &self.history.conf_at(sm.index),
            "configuration safety violated: node {id} resumes at {} with another configuration than the one \
             applied there",
            sm.index
        );
        let config = self.knobs.config(id, self.rng.next_u64(), applied);
        let raw = RawNode::new(&config, disk.clone())
            .unwrap_or_else(|e| panic!("invariant: node {id} restarts from its disk: {e}"));
        assert_eq!(
            raw.raft().tracker().conf_state(),
            conf,
            "configuration safety violated: node {id} restarts at {} with another configuration than it had \
             applied there",
            sm.index
        );
        self.trace(|| {
            format!(
                "node {id} restarts at {} (state machine at {}, applied {applied})",
                describe_node(&raw),
                sm.index
            )
        });
        let node = &mut self.nodes[i];
        node.committed_seen = raw.raft().raft_log().committed;
        node.commit_checked = node.committed_seen;
        node.leader_checked = (0, 0);
        node.timeout_now_term = 0;
        node.raw = Some(raw);
        node.disk = disk;
        node.sm = sm;
        node.sm_durable = sm;
        node.conf_durable = conf.clone();
        node.conf = conf;
        self.stats.restarts += 1;
        self.check_disk_log(i);
        self.observe(i);
    }

    // ---- healing and liveness ----------------------------------------------------------

    pub(super) fn heal(&mut self) {
        self.trace(|| "heal: network whole, no drops, every node up".to_string());
        self.healing = true;
        self.net.heal();
        // A healthy network: nothing lost, and round trips well inside the election
        // timeout (a clock that ticks slower than messages travel); nodes keep up.
        self.net.faults.drop_permille = 0;
        self.net.faults.delay_steps_max = self.net.faults.delay_steps_max.min(HEALED_DELAY_STEPS_MAX);
        self.knobs.tick_permille = self.knobs.tick_permille.min(HEALED_TICK_PERMILLE_MAX);
        self.knobs.ready_permille = 1000;
        self.knobs.queue_permille = 1000;
        self.knobs.propose_permille = 0;
        for i in 0..self.nodes.len() {
            // Lease seeds restart the rest once their down time is over (`step_once`).
            if self.may_restart(i) {
                self.restart(i);
            }
            self.nodes[i].ticks_since_heal = 0;
        }
        self.destroy_non_members_for_liveness();
    }

    /// Liveness: with everything healed, a leader must get a fresh proposal committed
    /// and applied on every member (voter or learner) of the final configuration within a
    /// bounded number of ticks. A joint configuration that waits for an explicit leave is
    /// left first: the driver proposes the leave, as its application would.
    pub(super) fn run_until_live(&mut self) {
        let backlog = self.backlog_entries();
        let ticks_max = LIVENESS_ELECTIONS_MAX * self.knobs.election_ticks as u64
            + backlog * HEALED_STEPS_PER_BACKLOG_ENTRY * self.knobs.tick_permille / 1000;
        let repropose_steps = 4 * self.knobs.election_ticks as u64 * 1000 / self.knobs.tick_permille;
        let mut proposed_at: Option<u64> = None;
        let mut leave_proposed_at: Option<u64> = None;
        loop {
            let (_, conf) = self.history.latest_conf();
            let joint = !conf.voters_outgoing.is_empty();
            let members: Vec<u64> = conf.voters.iter().chain(&conf.learners).copied().collect();
            if joint && leave_proposed_at.is_none_or(|at| self.now_step >= at + repropose_steps) {
                if let Some(i) = self.leader() {
                    if self.propose_explicit_leave(i) {
                        leave_proposed_at = Some(self.now_step);
                    }
                }
            }
            if let Some(index) = self.marker_index {
                let applied_everywhere =
                    members.iter().all(|id| self.nodes[(*id - 1) as usize].sm.index >= index);
                if !joint && applied_everywhere {
                    let ticks = self.nodes.iter().map(|n| n.ticks_since_heal).max().unwrap_or(0);
                    self.stats.liveness_ticks_max = ticks;
                    self.stats.liveness_bound_used_permille_max = ticks * 1000 / ticks_max;
                    self.trace(|| {
                        format!("live: index {index} applied on every member {members:?} after {ticks} ticks")
                    });
                    return;
                }
            } else if proposed_at.is_none_or(|at| self.now_step >= at + repropose_steps) {
                if let Some(i) = self.leader() {
                    let marker = self.marker.clone();
                    let result = self.raw(i).propose(marker);
                    self.count_proposal(i, result);
                    proposed_at = Some(self.now_step);
                }
            }
            let ticks = self.nodes.iter().map(|n| n.ticks_since_heal).max().unwrap_or(0);
            if ticks > ticks_max {
                if let Some(why) = self.wedged_by_demoted_leader() {
                    self.trace(|| format!("known liveness limit: {why}"));
                    self.stats.liveness_wedged_by_demoted_leader += 1;
                    return;
                }
                let status: Vec<String> = self
                    .nodes
                    .iter()
                    .map(|n| match &n.raw {
                        Some(raw) => format!("{} (state machine at {})", describe_node(raw), n.sm.index),
                        None => format!("node {} {:?}, not running", n.id, n.lifecycle),
                    })
                    .collect();
                let (conf_index, conf) = self.history.latest_conf();
                panic!(
                    "liveness violated: {ticks} ticks after healing, the proposal is {} (applied at {:?}); \
                     configuration {conf:?} (applied at {conf_index}); nodes: {}",
                    if proposed_at.is_some() { "not applied on every member" } else { "not even accepted" },
                    self.marker_index,
                    status.join("; ")
                );
            }
            self.step_once();
        }
    }

    /// A known liveness limit of the core, reported rather than failed: a leader demoted
    /// (or removed) by a change it committed lost its leadership (stepping down on
    /// removal, by check-quorum, to a higher term) after appending entries that never left
    /// it, and before every voter learned that the change committed. The old leader, no
    /// longer a voter in its own configuration, may not campaign, yet holds the most
    /// up-to-date log; the nodes that may campaign run configurations in which it (or
    /// another node ahead of them) still votes, and those votes are refused. Nobody can be
    /// elected again. Raft's thesis (section 4.2.2) has a node outside its latest
    /// configuration still start elections for this reason; the core does not.
    ///
    /// Returns a description when the cluster is in that state: no node that may campaign
    /// can collect a quorum of its configuration from nodes whose logs are not ahead of
    /// its own, and the most up-to-date log belongs to a node that may not campaign.
    pub(super) fn wedged_by_demoted_leader(&self) -> Option<String> {
        let running: Vec<&RawNode<MemStorage>> = self.nodes.iter().filter_map(|n| n.raw.as_ref()).collect();
        let last = |raw: &RawNode<MemStorage>| {
            (raw.raft().raft_log().last_term(), raw.raft().raft_log().last_index())
        };
        let last_of = |id: u64| running.iter().find(|raw| raw.raft().id() == id).map(|raw| last(raw));
        let candidates: Vec<_> = running.iter().filter(|raw| raw.raft().promotable()).collect();
        let could_win = candidates.iter().any(|raw| {
            let own = last(raw);
            let votes = |id: u64| Some(id == raw.raft().id() || last_of(id).is_some_and(|l| l <= own));
            raw.raft().tracker().config.voters.vote_result(votes) == VoteResult::Won
        });
        let best = running.iter().max_by_key(|raw| last(raw))?;
        if could_win || best.raft().promotable() {
            return None;
        }
        Some(format!(
            "node {} may not campaign but holds the most up-to-date log {:?}, and no node that may campaign \
             can collect a quorum of votes",
            best.raft().id(),
            last(best)
        ))
    }

    /// How far the longest log runs ahead of the least applied state machine.
    fn backlog_entries(&self) -> u64 {
        let last =
            self.nodes.iter().filter_map(|n| Some(n.raw.as_ref()?.raft().raft_log().last_index())).max();
        let applied =
            self.nodes.iter().filter(|n| n.lifecycle == Lifecycle::Created).map(|n| n.sm.index).min();
        last.unwrap_or(0).saturating_sub(applied.unwrap_or(0))
    }

    /// The live leader of the highest term, if any.
    pub(super) fn leader(&self) -> Option<usize> {
        (0..self.nodes.len())
            .filter_map(|i| {
                let raft = self.nodes[i].raw.as_ref()?.raft();
                (raft.role() == StateRole::Leader).then_some((raft.term(), i))
            })
            .max()
            .map(|(_, i)| i)
    }
}

fn describe_node(raw: &RawNode<MemStorage>) -> String {
    let raft = raw.raft();
    let log = raft.raft_log();
    format!(
        "node {} {:?} term {} vote {} leader {} log [{}, {}] committed {} applied {}",
        raft.id(),
        raft.role(),
        raft.term(),
        raft.vote(),
        raft.leader_id(),
        log.first_index(),
        log.last_index(),
        log.committed,
        log.applied
    )
}

/// A deep copy of what a disk holds, so the restarted node shares nothing with the
/// crashed one. The latest snapshot may be newer than the compacted boundary (the driver
/// snapshots at every membership change without compacting), so the copy is compacted at
/// the same boundary first and given the snapshot after.
fn copy_disk(disk: &MemStorage) -> MemStorage {
    let snapshot = loop {
        match disk.snapshot(0, 0) {
            Ok(s) => break s,
            // A pending test-induced unavailability; it clears itself.
            Err(StorageError::SnapshotTemporarilyUnavailable) => continue,
            Err(e) => panic!("invariant: a disk yields its snapshot: {e}"),
        }
    };
    let first = disk.first_index().expect("MemStorage answers");
    let last = disk.last_index().expect("MemStorage answers");
    let entries = disk.entries(first, last + 1, None).expect("the disk log is readable");
    let hard_state = *disk.rl().hard_state();
    let meta = snapshot.metadata.clone().unwrap_or_default();
    let copy = MemStorage::new();
    {
        let mut core = copy.wl();
        if meta.index + 1 == first {
            core.apply_snapshot(snapshot.clone()).expect("a fresh disk takes any snapshot");
        } else {
            let compacted_term = disk.term(first - 1).expect("the compacted boundary's term is known");
            let boundary = SnapshotMetadata { conf_state: None, index: first - 1, term: compacted_term };
            core.apply_snapshot(Snapshot { data: Default::default(), metadata: Some(Box::new(boundary)) })
                .expect("a fresh disk takes any snapshot");
        }
        core.append(&entries).expect("the entries follow the snapshot");
        if meta.index + 1 != first {
            core.create_snapshot(meta.index, meta.conf_state, snapshot.data)
                .expect("the snapshot is inside the copied log");
        }
        core.set_hard_state(hard_state);
    }
    copy
}
