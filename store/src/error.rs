//! What a proposal can fail with. Every variant tells the client what to do next: go to
//! another store, refresh its region cache, back off, or retry.

use tessera_proto::storepb::{Peer, Region};
use thiserror::Error;

/// Why the store did not execute a command.
#[derive(Clone, Debug, Error, PartialEq)]
pub enum StoreError {
    /// This peer is not the region's leader. `leader` is the leader it knows of, if any:
    /// the client retries there.
    #[error("region {region_id}: not the leader (leader: {leader:?})")]
    NotLeader { region_id: u64, leader: Option<Peer> },
    /// The store hosts no peer of this region (never did, or it was removed). A command the
    /// peer had accepted before it was destroyed gets it too: its outcome is then unknown
    /// (it may have been applied by the region's other peers).
    #[error("region {0} not found on this store")]
    RegionNotFound(u64),
    /// A key of the command lies outside the region's range.
    #[error("key {key:02x?} is not in region {region_id}")]
    KeyNotInRegion { key: Vec<u8>, region_id: u64, start_key: Vec<u8>, end_key: Vec<u8> },
    /// The command was routed with an epoch that is not the region's current one (the
    /// membership or the range changed). `current` is the region as this store knows it.
    #[error("region epoch does not match; current region: {current:?}")]
    EpochNotMatch { current: Box<Region> },
    /// A bounded queue on the way (a mailbox, the proposals of a peer) is full. Back off.
    #[error("server is busy: {0}")]
    ServerIsBusy(String),
    /// The proposal was accepted but will never be applied: its log position was taken by
    /// another leader's entry, or the peer was destroyed. It may be retried.
    #[error("proposal dropped: {0}")]
    ProposalDropped(String),
    /// The command is malformed (no requests, an empty key, an admin command that cannot
    /// apply). Retrying it will not help.
    #[error("invalid command: {0}")]
    InvalidCommand(String),
    /// The store is shutting down or stopped after a fatal error. For a command it had
    /// accepted, the outcome is unknown.
    #[error("store is stopped")]
    StoreStopped,
}

impl StoreError {
    /// A proposal at `index` of `term` whose log position another leader's entry took.
    pub(crate) fn replaced(index: u64, term: u64) -> StoreError {
        StoreError::ProposalDropped(format!("entry {index} of term {term} was replaced by another leader's"))
    }
}

pub type StoreResult<T> = Result<T, StoreError>;
