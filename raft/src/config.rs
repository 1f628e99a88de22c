use crate::errors::{Error, Result};
use crate::read_only::ReadOnlyOption;
use crate::NONE;

/// How one Raft node behaves. Every field says why it exists; `validate` refuses
/// combinations that cannot work.
#[derive(Clone, Debug)]
pub struct Config {
    /// This node's id. Zero is reserved for "nobody".
    pub id: u64,

    /// A follower that hears nothing from a leader for this many ticks (randomized to
    /// `[election_ticks, 2 * election_ticks)`, so candidates rarely collide) starts an
    /// election. Must exceed `heartbeat_ticks`; ten times is customary.
    pub election_ticks: usize,

    /// A leader sends heartbeats every this many ticks, so followers know it is alive.
    pub heartbeat_ticks: usize,

    /// Seeds the node's own generator for randomized election timeouts. The core uses no
    /// global randomness, so a run replays exactly from its seeds.
    pub random_seed: u64,

    /// The highest index the application has applied, when restarting. Entries up to it are
    /// not handed out again. Zero on a fresh start.
    pub applied: u64,

    /// The most entry bytes one append message carries (at least one entry is always sent).
    /// Bounds the memory and the latency of one message; zero means one entry per message.
    pub msg_bytes_max: u64,

    /// The most committed-entry bytes one Ready hands to the application (at least one
    /// entry), so a follower catching up applies in bounded steps.
    pub committed_bytes_per_ready_max: u64,

    /// How many append messages may be in flight to one follower in Replicate state. Bounds
    /// the memory a slow follower costs the leader and the transport.
    pub inflight_msgs_max: usize,

    /// How many payload bytes may be in flight to one follower; zero means no byte limit.
    /// Complements `inflight_msgs_max` when entries vary in size.
    pub inflight_bytes_max: u64,

    /// The most payload bytes the leader keeps uncommitted. Beyond it proposals are refused
    /// (`ProposalDropReason::UncommittedSizeExceeded`) so that a leader cut off from its
    /// quorum cannot grow its log without bound. The empty entry of a new leader is always
    /// accepted, and so is one proposal when nothing is uncommitted.
    pub uncommitted_bytes_max: u64,

    /// A leader that has not heard from a quorum for an election timeout steps down, and a
    /// follower that heard from a leader within the election timeout ignores vote requests
    /// (the vote lease). Protects a healthy group from a partitioned node with a high term.
    pub check_quorum: bool,

    /// Run a pre-election before a real one: a node only raises its term once a quorum
    /// says it could win. A node rejoining after a partition then cannot disrupt the group.
    pub pre_vote: bool,

    /// Followers refuse proposals instead of forwarding them to the leader. Useful when the
    /// application routes proposals to the leader itself and wants a quick error otherwise.
    pub disable_proposal_forwarding: bool,

    /// Persistence is expressed as messages to a local append thread and a local apply
    /// thread (`LOCAL_APPEND_THREAD`, `LOCAL_APPLY_THREAD`) instead of `Ready` fields, so
    /// the application can write in the background while the node keeps working. Messages
    /// that promise durability travel inside the append message and leave only after it.
    pub async_storage_writes: bool,

    /// A leader removed from (or demoted in) the configuration steps down as soon as the
    /// change is applied. Off by default because sequences that demote and then remove a
    /// leader rely on it leading until the end; on, it stops a removed leader that keeps
    /// heartbeating from holding the group hostage.
    ///
    /// Either way, move leadership away (`RawNode::transfer_leader`) before removing or
    /// demoting the leader. A node outside its own configuration never campaigns, so a
    /// leader that applied its own removal, then lost leadership while holding entries no
    /// one else has, refuses every other candidate (its log is newer) and can win no
    /// election itself: the group has no leader until an operator intervenes. The
    /// simulation finds this schedule in about 0.2% of seeds with membership changes.
    pub step_down_on_removal: bool,

    /// A commit index that moves while there is nothing new to send is not broadcast with
    /// an empty append: followers learn it from the next append or heartbeat instead. That
    /// halves the messages of a group that commits one entry at a time (the next proposal
    /// carries the previous commit), at the cost of followers applying up to a heartbeat
    /// interval later. A ReadIndex read on a follower can wait that long too: its read
    /// index may be above the commit index the follower knows (with lease reads the leader
    /// answers without a heartbeat round; otherwise the round's heartbeats carry only what
    /// the follower acknowledged). The commit of a membership change is always broadcast,
    /// so that every member applies the new configuration promptly.
    pub lazy_commit_broadcast: bool,

    /// How reads are confirmed. `LeaseBased` answers from the commit index while the leader
    /// lease holds: a quorum acknowledged a heartbeat sent at tick `t`, and followers with
    /// check-quorum refuse to vote for `election_ticks` after hearing from a leader, so no
    /// other leader exists before `t + election_ticks - lease_margin_ticks`.
    ///
    /// Clock assumption: ticks on different nodes advance at rates that differ by less
    /// than `lease_margin_ticks` per election timeout. Violate it and a lease read may be
    /// stale; use `Safe` (the default) when clocks cannot be trusted. Requires
    /// `check_quorum`. A restart must not break the followers' promise either: see
    /// `vote_lease_at_start`.
    pub read_only_option: ReadOnlyOption,

    /// Ticks cut from the lease for clock drift; see `read_only_option`.
    pub lease_margin_ticks: usize,

    /// The most reads a leader holds unconfirmed (waiting for its first commit in the
    /// term, or for a heartbeat round). A leader cut off from its quorum confirms none, so
    /// without a bound they pile up for as long as it believes it leads. Beyond it a local
    /// `read_index` fails with `ReadIndexDropped(ReadsPendingExceeded)` and a read
    /// forwarded by a follower is dropped (its caller retries, as after a lost message).
    pub reads_pending_max: usize,

    /// With `LeaseBased` reads: a node neither votes nor campaigns for its first
    /// `election_ticks` ticks after it starts, unless a leader hands leadership over to it.
    /// Just before a restart it may have acknowledged a heartbeat that a leader's lease
    /// counts on, promising to help elect no one for an election timeout; the restart
    /// forgot that leader, and without this its first vote could elect a second leader
    /// while the first still serves reads from its lease. Every start counts, even one
    /// with no term on disk: a heartbeat is answered before the term it raised is durable,
    /// so a node may have acknowledged a round and lost its term. Turn it off only where
    /// nodes are known to stay down an election timeout after a crash.
    pub vote_lease_at_start: bool,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            id: NONE,
            election_ticks: 10,
            heartbeat_ticks: 1,
            random_seed: 0,
            applied: 0,
            msg_bytes_max: 1024 * 1024,
            committed_bytes_per_ready_max: 16 * 1024 * 1024,
            inflight_msgs_max: 256,
            inflight_bytes_max: 0,
            uncommitted_bytes_max: 64 * 1024 * 1024,
            check_quorum: false,
            pre_vote: false,
            disable_proposal_forwarding: false,
            async_storage_writes: false,
            step_down_on_removal: false,
            lazy_commit_broadcast: false,
            read_only_option: ReadOnlyOption::Safe,
            lease_margin_ticks: 2,
            reads_pending_max: 4096,
            vote_lease_at_start: true,
        }
    }
}

impl Config {
    /// A default configuration for node `id`, seeded with the id.
    pub fn new(id: u64) -> Self {
        Config { id, random_seed: id, ..Config::default() }
    }

    pub fn validate(&self) -> Result<()> {
        let invalid = |why: &str| Err(Error::ConfigInvalid(why.to_string()));
        if self.id == NONE {
            return invalid("id must not be zero");
        }
        if self.heartbeat_ticks == 0 {
            return invalid("heartbeat_ticks must be positive");
        }
        if self.election_ticks <= self.heartbeat_ticks {
            return invalid("election_ticks must be greater than heartbeat_ticks");
        }
        if self.inflight_msgs_max == 0 {
            return invalid("inflight_msgs_max must be positive");
        }
        if self.inflight_bytes_max != 0 && self.inflight_bytes_max < self.msg_bytes_max {
            return invalid("inflight_bytes_max must be zero or at least msg_bytes_max");
        }
        if self.read_only_option == ReadOnlyOption::LeaseBased && !self.check_quorum {
            return invalid("lease-based reads require check_quorum");
        }
        if self.lease_margin_ticks >= self.election_ticks {
            return invalid("lease_margin_ticks must be smaller than election_ticks");
        }
        if self.reads_pending_max == 0 {
            return invalid("reads_pending_max must be positive");
        }
        if self.uncommitted_bytes_max == 0 {
            return invalid("uncommitted_bytes_max must be positive");
        }
        Ok(())
    }
}
