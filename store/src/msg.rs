//! What travels through the store's mailboxes.

use std::fmt;

use tessera_proto::raftpb::{ConfChangeV2, ConfState, Entry, Message, Snapshot};
use tessera_proto::serverpb::{CmdType, RaftCmdRequest, RaftMessage, Request, RequestHeader};
use tessera_proto::storepb::{ApplyState, Region, RegionEpoch};

use crate::error::StoreResult;

/// A command of several requests to region `region_id`, routed with `epoch` (the region's
/// epoch as the proposer knows it; a stale one is refused with the current region).
pub fn command(region_id: u64, epoch: Option<RegionEpoch>, requests: Vec<Request>) -> RaftCmdRequest {
    RaftCmdRequest { header: Some(RequestHeader { region_id, region_epoch: epoch }), requests, admin: None }
}

/// One request of a command; `end_key` is for delete-range only.
pub fn request(cmd_type: CmdType, key: &[u8], value: &[u8], end_key: &[u8]) -> Request {
    Request {
        cmd_type: cmd_type as i32,
        key: key.to_vec(),
        value: value.to_vec().into(),
        end_key: end_key.to_vec(),
    }
}

/// What a successful command returns: where it landed in the log.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CmdResponse {
    pub index: u64,
    pub term: u64,
}

/// Called exactly once with the outcome of a command (after it was committed and applied)
/// or of a read, or with the reason it never will be. A callback dropped without being
/// called (its peer went away with the store) is called then with `StoreStopped`, so no
/// client waits forever.
pub struct Callback<T = CmdResponse>(Option<Box<dyn FnOnce(StoreResult<T>) + Send>>);

impl<T> Callback<T> {
    pub fn new(f: impl FnOnce(StoreResult<T>) + Send + 'static) -> Self {
        Callback(Some(Box::new(f)))
    }

    pub fn invoke(mut self, result: StoreResult<T>) {
        if let Some(f) = self.0.take() {
            f(result)
        }
    }
}

impl<T: Send + 'static> Callback<T> {
    /// A callback that sends its answer to the returned channel.
    pub fn channel() -> (Self, crossbeam_channel::Receiver<StoreResult<T>>) {
        let (sender, receiver) = crossbeam_channel::bounded(1);
        let callback = Callback::new(move |result| {
            let _ = sender.send(result);
        });
        (callback, receiver)
    }
}

impl<T> Drop for Callback<T> {
    fn drop(&mut self) {
        if let Some(f) = self.0.take() {
            f(Err(crate::error::StoreError::StoreStopped))
        }
    }
}

impl<T> fmt::Debug for Callback<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Callback")
    }
}

/// What a linearizable read asks of a region.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ReadQuery {
    /// The value of one key.
    Get { key: Vec<u8> },
    /// The pairs in `[start_key, end_key)`, in key order, at most `limit` of them. The scan
    /// stops at the region's end: an empty or larger `end_key` means the region's end, and
    /// the client continues in the next region.
    Scan { start_key: Vec<u8>, end_key: Vec<u8>, limit: usize },
}

/// A read routed to a region, with the epoch the client believes in.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReadRequest {
    pub region_id: u64,
    pub region_epoch: Option<tessera_proto::storepb::RegionEpoch>,
    pub query: ReadQuery,
}

/// The answer to a read, as of a point after the read arrived (linearizable).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ReadResponse {
    Value(Option<Vec<u8>>),
    /// The pairs found, and why the scan stopped: at the region's end (before the requested
    /// end: the client goes on in the next region), or at the limit (the requested one, or
    /// the store's `scan_limit_max` if that is lower, or the store's `scan_bytes_max`: the
    /// client goes on after the last pair). Neither means the requested range is exhausted.
    Pairs {
        pairs: Vec<(Vec<u8>, Vec<u8>)>,
        reached_region_end: bool,
        reached_limit: bool,
    },
}

/// A command waiting for its entry to apply.
#[derive(Debug)]
pub struct Proposal {
    pub index: u64,
    pub term: u64,
    pub callback: Callback,
    /// When the peer proposed it: commit and apply latencies are measured from here.
    pub proposed_at: std::time::Instant,
}

/// A message for one region's peer (raft pollers).
#[derive(Debug)]
pub enum PeerMsg {
    /// From another store, through the transport.
    Raft(Box<RaftMessage>),
    /// From a client: a command to propose. Boxed so that the message type stays small:
    /// every mailbox's channel keeps a block of slots of this size, even when idle.
    Command { request: Box<RaftCmdRequest>, callback: Callback },
    /// One logical tick. `fired_at` is when the store timer fired it (it may wait in the
    /// mailbox a while after); `None` for the wake-up tick a store sends every peer at start,
    /// which no timer fired. The leader lease measures its ticks by it
    /// (`operation/lease.rs`).
    Tick { fired_at: Option<std::time::Instant> },
    /// The apply thread applied a batch of this region's committed entries.
    Applied(Box<ApplyResult>),
    /// The apply thread finished a snapshot generation (or failed).
    SnapshotGenerated(Box<Result<Snapshot, String>>),
    /// A snapshot send to `to_peer_id` finished.
    SnapshotSent { to_peer_id: u64, succeeded: bool },
    /// The apply FSM of a peer being destroyed has stopped: the peer may now delete its
    /// data and write its tombstone.
    ApplyStopped,
    /// Starts an election if this peer is a voter (used to elect a first leader quickly).
    Campaign,
    /// Asks the leader to hand leadership to `to_peer_id`.
    TransferLeader { to_peer_id: u64 },
    /// Reads the peer's state (status pages, tests).
    Query(PeerQuery),
    /// From a client: a linearizable read. Boxed for the same reason as `Command`.
    Read { request: Box<ReadRequest>, callback: Callback<ReadResponse> },
    /// The store with this id stopped sending store heartbeats: a resting peer whose
    /// leader lives there wakes to elect another.
    StoreDown(u64),
    /// The store's sweep of resting peers reached this one: if it rests, it asks the other
    /// members whether it is still one of them (`Peer::maybe_check_membership_at_rest`).
    CheckMembershipAtRest,
}

impl PeerMsg {
    /// Answers a client's command or read with `error` instead of handling it; any other
    /// message is dropped (Raft retries its own).
    pub(crate) fn refuse(self, error: crate::error::StoreError) {
        match self {
            PeerMsg::Command { callback, .. } => callback.invoke(Err(error)),
            PeerMsg::Read { callback, .. } => callback.invoke(Err(error)),
            _ => {}
        }
    }
}

/// A read of a peer's state, run on the poller that owns the peer.
pub struct PeerQuery(pub(crate) Box<dyn FnOnce(&crate::peer::Peer) + Send>);

impl fmt::Debug for PeerQuery {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PeerQuery")
    }
}

/// A message for the store's control FSM.
#[derive(Debug)]
pub enum StoreMsg {
    /// A message for a region that has no peer here: perhaps a peer to create.
    Raft(Box<RaftMessage>),
    /// One tick of the store timer, for store-level periodic work.
    Tick,
}

/// A message for one region's apply FSM (apply pollers).
#[derive(Debug)]
pub enum ApplyMsg {
    /// Committed entries to apply, the proposals waiting for them, and the completions to
    /// hand back to the core once they are applied.
    Apply(Box<ApplyTask>),
    /// The peer installed a snapshot: the apply state jumps to it. Sent only while no
    /// apply task is in flight.
    SnapshotInstalled(Box<InstalledState>),
    /// Take a consistent view of the region's data now and generate a snapshot from it.
    GenerateSnapshot,
    /// The peer is being destroyed: stop after the tasks before this one, answer the
    /// remaining proposals, and tell the peer.
    Destroy,
}

/// The state a snapshot installed, for the apply FSM to continue from.
#[derive(Debug)]
pub struct InstalledState {
    pub region: Region,
    pub apply_state: ApplyState,
    pub conf_state: ConfState,
}

#[derive(Debug)]
pub struct ApplyTask {
    pub entries: Vec<Entry>,
    pub proposals: Vec<Proposal>,
    pub responses: Vec<Message>,
}

/// What applying changed beyond the data, for the peer to act on.
#[derive(Debug)]
pub enum ExecResult {
    /// A membership change was applied; the peer applies it to its Raft node.
    ConfChange(Box<AppliedConfChange>),
    /// The log up to `index` may be deleted.
    CompactLog { index: u64, term: u64 },
}

#[derive(Debug)]
pub struct AppliedConfChange {
    pub cc: ConfChangeV2,
    pub region: Region,
    pub conf_state: ConfState,
    pub removed_self: bool,
}

#[derive(Debug)]
pub struct ApplyResult {
    pub apply_state: ApplyState,
    pub exec_results: Vec<ExecResult>,
    pub responses: Vec<Message>,
}
