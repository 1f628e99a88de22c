//! The knobs of a run (cluster shape, Raft configuration, fault rates), drawn from its
//! seed, and the counters a run reports.

use tessera_raft::{Config, ReadOnlyOption};

use super::network::NetFaults;
use super::rng::Rng;

/// The knobs of one run, all drawn from its seed.
#[derive(Clone, Debug)]
pub struct Knobs {
    /// The voters the group starts with; ids `1..=node_count`.
    pub node_count: usize,
    /// Ids that membership changes may add beyond the initial voters; the node pool is
    /// `1..=node_count + spare_ids`.
    pub spare_ids: usize,
    pub async_storage_writes: bool,
    pub pre_vote: bool,
    pub check_quorum: bool,
    pub election_ticks: usize,
    pub heartbeat_ticks: usize,
    pub msg_bytes_max: u64,
    pub inflight_msgs_max: usize,
    pub inflight_bytes_max: u64,
    pub committed_bytes_per_ready_max: u64,
    pub uncommitted_bytes_max: u64,
    pub disable_proposal_forwarding: bool,
    /// Steps of the fault phase, before everything heals.
    pub fault_steps: u64,
    /// Per node and step: the chance to tick. Below 1000, clocks drift apart.
    pub tick_permille: u64,
    /// Per step: the chance of a proposal at a random node.
    pub propose_permille: u64,
    /// Per node and step: the chance the node handles its Ready (a slow node lags).
    pub ready_permille: u64,
    /// Per step: the chance a random live node crashes.
    pub crash_permille: u64,
    /// Per down node and step: the chance it restarts.
    pub restart_permille: u64,
    /// Per Ready (or async storage work item): the chance of crashing part way through.
    pub crash_in_ready_permille: u64,
    pub partition_permille: u64,
    pub heal_permille: u64,
    /// Per step: the chance a random node snapshots its state and compacts its log.
    pub compact_permille: u64,
    /// Async storage writes: per node, queue and step, the chance to process queued work.
    pub queue_permille: u64,
    /// Per step: the chance a random node is told to campaign.
    pub campaign_permille: u64,
    pub net: NetFaults,
    /// Per step: the chance a random live node proposes a random membership change.
    pub conf_change_permille: u64,
    /// Per step: the chance a random node that is no longer a member is destroyed for good.
    pub destroy_permille: u64,
    /// Per step: the chance a random live node is asked to transfer leadership.
    pub transfer_permille: u64,
    /// Per step: the chance a random live node is asked for a linearizable read.
    pub read_permille: u64,
    pub step_down_on_removal: bool,
    /// Lease reads, with the clock assumption they rest on honoured: every node ticks in
    /// lockstep (no drift, no jumps). Implies check-quorum. A crashed node may restart at
    /// once and any node may be told to campaign: the core's vote lease (kept from start,
    /// and refusing campaigns asked for inside it) covers both.
    pub lease_reads: bool,

    pub lease_margin_ticks: usize,
    pub lazy_commit_broadcast: bool,
    /// The application holds back ticks the node would not act on and hands them over
    /// before anything else reaches it (`RawNode::ticks_before_due`), as the store does.
    pub held_ticks: bool,
    /// `Config::reads_pending_max`: small in some seeds, so that leaders cut off from
    /// their quorum reach it and refuse reads.
    pub reads_pending_max: usize,
}

impl Knobs {
    /// The seed's class (seed % 4) fixes the cluster shape, so one seed replays alone:
    /// 0 and 2 are three nodes, 1 and 3 five; 2 and 3 use async storage writes.
    pub fn random(seed: u64, rng: &mut Rng) -> Knobs {
        let class = seed % 4;
        let election_ticks = rng.between(5, 15) as usize;
        let tick_permille = rng.between(300, 800);
        // Delays beyond a third of the election timeout only make for runs in which no
        // leader survives long enough to do anything interesting.
        let election_steps = election_ticks as u64 * 1000 / tick_permille;
        let msg_bytes_max = *rng.pick(&[0, 16, 64, 256, 1 << 20]);
        let inflight_bytes_max = if rng.coin() { 0 } else { msg_bytes_max.max(16) * rng.between(1, 4) };
        let mut knobs = Knobs {
            node_count: if class.is_multiple_of(2) { 3 } else { 5 },
            async_storage_writes: class >= 2,
            pre_vote: rng.coin(),
            check_quorum: rng.coin(),
            election_ticks,
            heartbeat_ticks: rng.between(1, 3.min(election_ticks as u64 - 1)) as usize,
            msg_bytes_max,
            inflight_msgs_max: *rng.pick(&[1, 2, 4, 256]),
            inflight_bytes_max,
            committed_bytes_per_ready_max: *rng.pick(&[1, 64, 1 << 24]),
            uncommitted_bytes_max: *rng.pick(&[64, 1024, 1 << 26]),
            disable_proposal_forwarding: rng.chance(200),
            fault_steps: rng.between(300, 1000),
            tick_permille,
            // Clients without back-pressure: at the high end proposals outrun a leader
            // with a window of one entry, and the log grows a backlog.
            propose_permille: rng.between(20, 200),
            ready_permille: rng.between(500, 1000),
            crash_permille: rng.between(0, 15),
            restart_permille: rng.between(10, 100),
            crash_in_ready_permille: rng.between(0, 20),
            partition_permille: rng.between(0, 10),
            heal_permille: rng.between(5, 50),
            compact_permille: rng.between(0, 60),
            queue_permille: rng.between(200, 900),
            campaign_permille: rng.between(0, 5),
            net: NetFaults {
                drop_permille: rng.between(0, 150),
                duplicate_permille: rng.between(0, 100),
                delay_steps_max: rng.between(0, (election_steps / 3).min(6)),
            },
            spare_ids: 2,
            // Drawn after the knobs of part 1, so those keep their values per seed.
            conf_change_permille: *rng.pick(&[0, 5, 15, 40]),
            destroy_permille: rng.between(0, 10),
            transfer_permille: rng.between(0, 15),
            read_permille: rng.between(0, 100),
            step_down_on_removal: rng.coin(),
            lease_reads: rng.chance(250),
            lease_margin_ticks: rng.between(0, 2) as usize,
            // From the seed, not drawn: a draw here would shift every draw after it, and
            // seeds that played before the knob existed would no longer replay.
            lazy_commit_broadcast: (seed / 4) % 2 == 1,
            held_ticks: (seed / 8) % 2 == 1,
            reads_pending_max: if (seed / 16) % 2 == 1 { 3 } else { 4096 },
        };
        if knobs.lease_reads {
            knobs.check_quorum = true;
        }
        knobs
    }

    /// The size of the node pool: the initial voters and the spare ids.
    pub fn pool_size(&self) -> usize {
        self.node_count + self.spare_ids
    }

    pub fn config(&self, id: u64, random_seed: u64, applied: u64) -> Config {
        Config {
            id,
            election_ticks: self.election_ticks,
            heartbeat_ticks: self.heartbeat_ticks,
            random_seed,
            applied,
            msg_bytes_max: self.msg_bytes_max,
            committed_bytes_per_ready_max: self.committed_bytes_per_ready_max,
            inflight_msgs_max: self.inflight_msgs_max,
            inflight_bytes_max: self.inflight_bytes_max,
            uncommitted_bytes_max: self.uncommitted_bytes_max,
            check_quorum: self.check_quorum,
            pre_vote: self.pre_vote,
            disable_proposal_forwarding: self.disable_proposal_forwarding,
            async_storage_writes: self.async_storage_writes,
            step_down_on_removal: self.step_down_on_removal,
            read_only_option: if self.lease_reads {
                ReadOnlyOption::LeaseBased
            } else {
                ReadOnlyOption::Safe
            },
            lease_margin_ticks: self.lease_margin_ticks,
            lazy_commit_broadcast: self.lazy_commit_broadcast,
            reads_pending_max: self.reads_pending_max,
            // What lets lease seeds restart a crashed node at once.
            vote_lease_at_start: true,
        }
    }
}

/// What happened in one run; the tests add them up and check the faults really occurred.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RunStats {
    pub runs: u64,
    pub steps: u64,
    pub proposals_ok: u64,
    pub proposals_dropped: u64,
    pub entries_committed: u64,
    pub entries_applied: u64,
    pub leaders: u64,
    pub crashes: u64,
    pub crashes_mid_ready: u64,
    pub restarts: u64,
    pub partitions: u64,
    pub compactions: u64,
    pub snapshots_sent: u64,
    pub snapshots_installed: u64,
    pub messages_sent: u64,
    pub messages_dropped: u64,
    pub liveness_ticks_max: u64,
    /// The largest share of its liveness bound a run used, in permille.
    pub liveness_bound_used_permille_max: u64,
    pub conf_changes_proposed: u64,
    /// Refused with a typed error when proposed (at the proposer or, forwarded, at the
    /// leader).
    pub conf_changes_refused_at_propose: u64,
    pub conf_changes_refused_at_apply: u64,
    /// Applied (counted once per index, by the first node to apply it) without joint
    /// consensus, entering a joint configuration, and leaving one.
    pub conf_changes_simple: u64,
    pub conf_changes_joint_entered: u64,
    pub conf_changes_joint_left: u64,
    pub nodes_created: u64,
    pub nodes_destroyed: u64,
    /// Messages a node refused because their sender is not in its configuration.
    pub messages_from_non_members: u64,
    pub transfers_requested: u64,
    pub transfers_refused: u64,
    /// Elections started by TimeoutNow and won by the node that received it.
    pub transfers_completed: u64,
    pub reads_issued: u64,
    pub reads_refused: u64,
    /// Of them, refused because `reads_pending_max` reads already waited.
    pub reads_refused_pending_max: u64,
    pub reads_served_on_leader: u64,
    pub reads_served_on_follower: u64,
    pub reads_served_on_learner: u64,
    /// Served reads issued on a leader whose lease was valid at the time.
    pub lease_reads_served: u64,
    /// Answers to a read whose node crashed since it asked, or duplicated by the network.
    pub reads_answered_late_or_twice: u64,
    /// Reads that never got an answer: dropped on a leadership change, a crash, a lost
    /// message. Not a failure; the client retries.
    pub reads_unanswered: u64,
    /// Runs that ended in the known liveness limit after a leader's demotion (see
    /// `Sim::wedged_by_demoted_leader`) instead of a live cluster.
    pub liveness_wedged_by_demoted_leader: u64,
    /// Ticks held back and handed over later (held-ticks seeds).
    pub ticks_held: u64,
    /// Campaigns asked of a node inside its vote lease, which it refused (lease seeds).
    pub campaigns_refused_in_vote_lease: u64,
}

impl RunStats {
    pub fn add(&mut self, o: &RunStats) {
        self.runs += o.runs;
        self.steps += o.steps;
        self.proposals_ok += o.proposals_ok;
        self.proposals_dropped += o.proposals_dropped;
        self.entries_committed += o.entries_committed;
        self.entries_applied += o.entries_applied;
        self.leaders += o.leaders;
        self.crashes += o.crashes;
        self.crashes_mid_ready += o.crashes_mid_ready;
        self.restarts += o.restarts;
        self.partitions += o.partitions;
        self.compactions += o.compactions;
        self.snapshots_sent += o.snapshots_sent;
        self.snapshots_installed += o.snapshots_installed;
        self.messages_sent += o.messages_sent;
        self.messages_dropped += o.messages_dropped;
        self.liveness_ticks_max = self.liveness_ticks_max.max(o.liveness_ticks_max);
        self.liveness_bound_used_permille_max =
            self.liveness_bound_used_permille_max.max(o.liveness_bound_used_permille_max);
        self.conf_changes_proposed += o.conf_changes_proposed;
        self.conf_changes_refused_at_propose += o.conf_changes_refused_at_propose;
        self.conf_changes_refused_at_apply += o.conf_changes_refused_at_apply;
        self.conf_changes_simple += o.conf_changes_simple;
        self.conf_changes_joint_entered += o.conf_changes_joint_entered;
        self.conf_changes_joint_left += o.conf_changes_joint_left;
        self.nodes_created += o.nodes_created;
        self.nodes_destroyed += o.nodes_destroyed;
        self.messages_from_non_members += o.messages_from_non_members;
        self.transfers_requested += o.transfers_requested;
        self.transfers_refused += o.transfers_refused;
        self.transfers_completed += o.transfers_completed;
        self.reads_issued += o.reads_issued;
        self.reads_refused += o.reads_refused;
        self.reads_refused_pending_max += o.reads_refused_pending_max;
        self.reads_served_on_leader += o.reads_served_on_leader;
        self.reads_served_on_follower += o.reads_served_on_follower;
        self.reads_served_on_learner += o.reads_served_on_learner;
        self.lease_reads_served += o.lease_reads_served;
        self.reads_answered_late_or_twice += o.reads_answered_late_or_twice;
        self.reads_unanswered += o.reads_unanswered;
        self.liveness_wedged_by_demoted_leader += o.liveness_wedged_by_demoted_leader;
        self.ticks_held += o.ticks_held;
        self.campaigns_refused_in_vote_lease += o.campaigns_refused_in_vote_lease;
    }
}
