//! The seam between a store and the network: what a store sends through, and what it
//! offers to receive with.

use std::sync::Arc;

use bytes::Bytes;
use tessera_proto::serverpb::{RaftMessage, RaftMessageBatch};
use thiserror::Error;

/// Why a message or snapshot did not go out. The store reports the peer unreachable to
/// Raft (or the snapshot as failed), and the protocol retries; nothing is queued without
/// bound.
#[derive(Clone, Debug, Error, PartialEq, Eq)]
pub enum TransportError {
    /// The destination store is down, partitioned away or unknown to the network.
    #[error("store {0} is unreachable")]
    Unreachable(u64),
    /// The queue toward the destination is at its limit.
    #[error("queue to store {0} is full")]
    Full(u64),
    /// The receiver refused a snapshot (at its concurrency limit, or the data was bad).
    #[error("snapshot refused by store {store_id}: {reason}")]
    SnapshotRefused { store_id: u64, reason: String },
}

/// A store's outbound side. Implementations: the in-memory network of this crate (tests,
/// benchmarks) and the gRPC transport.
pub trait Transport: Send + Sync + 'static {
    /// Queues one message for `msg.to_peer.store_id`. It may be buffered until `flush`.
    fn send(&self, msg: RaftMessage) -> Result<(), TransportError>;

    /// Sends what `send` buffered, except heartbeats that have no other message to ride
    /// with: those wait for `flush_heartbeats`. The store calls it once per poll round.
    fn flush(&self);

    /// Sends everything buffered, heartbeats included. The store calls it once per tick, so
    /// that the heartbeats of all regions toward a store leave together, as one batch per
    /// tick however many poll rounds produced them. (A heartbeat waits at most a tick;
    /// Raft's heartbeat interval is several.)
    fn flush_heartbeats(&self) {
        self.flush();
    }

    /// Sends a snapshot: `msg` (whose Raft message is the MsgSnapshot) and then the data
    /// file in bounded chunks pulled from `chunks`. Blocks until the receiver has it all
    /// and accepted it, so the caller runs it on a snapshot thread, never on a poller.
    fn send_snapshot(&self, msg: RaftMessage, chunks: &mut dyn SnapshotChunks) -> Result<(), TransportError>;
}

/// The network under a store's outbound queues: it carries whole batches to other stores.
/// [`crate::Outbound`] (per-store queues, heartbeat coalescing) sits on top of it and is what
/// a store sends through; the in-memory network and the gRPC transport implement it.
pub trait StoreLink: Send + Sync + 'static {
    /// Hands one batch for `batch.to_store_id` to the network without blocking. `Unreachable`
    /// when the store cannot be reached now (unknown address, connection down); `Full` when
    /// the link's own queue toward it is at its limit. A batch it accepts may still be lost
    /// (a connection that breaks); Raft recovers from lost messages.
    fn send_batch(&self, batch: RaftMessageBatch) -> Result<(), TransportError>;

    /// Whether a batch for `to_store_id` could go out now: false while the store is known to
    /// be down or cut off, so that senders report their peers unreachable at once instead
    /// of queueing messages that will be lost.
    fn reachable(&self, to_store_id: u64) -> bool;

    /// As [`Transport::send_snapshot`].
    fn send_snapshot(&self, msg: RaftMessage, chunks: &mut dyn SnapshotChunks) -> Result<(), TransportError>;
}

/// The data of one snapshot, read chunk by chunk so that its size never sits in memory.
pub trait SnapshotChunks: Send {
    /// The next chunk, or None at the end. An error aborts the transfer.
    fn next_chunk(&mut self) -> Result<Option<Bytes>, String>;
}

/// A store's inbound side: what the network hands received messages to.
pub trait RaftReceiver: Send + Sync + 'static {
    /// One message arrived. The store routes it to the region's mailbox (or its control
    /// FSM); it must not block.
    fn receive(&self, msg: RaftMessage);

    /// Many messages arrived at once (a batch from another store, its coalesced heartbeats
    /// already expanded). Receivers route them in one go where they can.
    fn receive_batch(&self, msgs: Vec<RaftMessage>) {
        for msg in msgs {
            self.receive(msg);
        }
    }

    /// A snapshot arrives: `msg` first, then its data from `chunks`. The receiver stages
    /// the data, checks it, and only then delivers `msg` as it would through `receive`.
    /// Errors refuse the snapshot; the sender reports it failed and Raft retries later.
    fn receive_snapshot(&self, msg: RaftMessage, chunks: &mut dyn SnapshotChunks) -> Result<(), String>;
}

/// Handy for tests and for stores that are wired after the network exists.
pub type SharedReceiver = Arc<dyn RaftReceiver>;
