//! Tessera's wire and state types, generated from `proto/*.proto` by prost.
//!
//! `raftpb` holds what the consensus core exchanges and persists: entries, messages, hard
//! state, configurations and snapshots. `storepb` holds what a store persists about its
//! regions beside their logs; `serverpb` what stores send each other and what clients
//! propose; `kvpb` what clients send a node's KV service. Small helpers that every crate
//! needs live here too.
//!
//! ```
//! use tessera_proto::raftpb::{Entry, EntryType};
//! let entry = Entry { term: 2, index: 7, data: b"x".to_vec().into(), ..Default::default() };
//! assert_eq!(entry.entry_type(), EntryType::EntryNormal);
//! ```

#[allow(missing_debug_implementations, clippy::all)]
pub mod raftpb {
    include!(concat!(env!("OUT_DIR"), "/raftpb.rs"));
}

/// What a store persists about its regions: region records, Raft and apply state.
#[allow(missing_debug_implementations, clippy::all)]
pub mod storepb {
    include!(concat!(env!("OUT_DIR"), "/storepb.rs"));
}

/// What clients and a node's KV service exchange: requests, answers and typed errors.
#[allow(missing_debug_implementations, clippy::all)]
pub mod kvpb {
    include!(concat!(env!("OUT_DIR"), "/kvpb.rs"));
}

/// What stores send each other (Raft messages, snapshot chunks) and what clients propose
/// to a region (commands, which become Raft entries).
#[allow(missing_debug_implementations, clippy::all)]
pub mod serverpb {
    include!(concat!(env!("OUT_DIR"), "/serverpb.rs"));
}

use raftpb::{ConfState, HardState, MessageType};

impl HardState {
    /// Whether this is the all-zero state of a node that has never voted, committed or seen a term.
    pub fn is_empty(&self) -> bool {
        *self == HardState::default()
    }
}

impl ConfState {
    /// Whether the configuration is joint (has an outgoing half).
    pub fn is_joint(&self) -> bool {
        !self.voters_outgoing.is_empty()
    }
}

impl MessageType {
    /// Messages a node generates for itself; they never cross the network.
    pub fn is_local(self) -> bool {
        matches!(
            self,
            MessageType::MsgHup
                | MessageType::MsgBeat
                | MessageType::MsgUnreachable
                | MessageType::MsgSnapStatus
                | MessageType::MsgCheckQuorum
                | MessageType::MsgStorageAppend
                | MessageType::MsgStorageAppendResponse
                | MessageType::MsgStorageApply
                | MessageType::MsgStorageApplyResponse
        )
    }

    /// Responses to another message (as opposed to requests).
    pub fn is_response(self) -> bool {
        matches!(
            self,
            MessageType::MsgAppendResponse
                | MessageType::MsgRequestVoteResponse
                | MessageType::MsgHeartbeatResponse
                | MessageType::MsgUnreachable
                | MessageType::MsgReadIndexResponse
                | MessageType::MsgRequestPreVoteResponse
                | MessageType::MsgStorageAppendResponse
                | MessageType::MsgStorageApplyResponse
        )
    }

    /// The response kind that answers a vote or pre-vote request.
    pub fn vote_response(self) -> MessageType {
        match self {
            MessageType::MsgRequestVote => MessageType::MsgRequestVoteResponse,
            MessageType::MsgRequestPreVote => MessageType::MsgRequestPreVoteResponse,
            other => panic!("invariant: vote_response asked for non-vote message {other:?}"),
        }
    }
}
