//! Tessera's router crate: how a store reaches the other stores.
//!
//! A store sends through a [`Transport`] and receives through the [`RaftReceiver`] it
//! registers with the network: `send` buffers a message for another store, `flush` (once per
//! poll round) sends the buffer, and the destination's receiver routes each message to a
//! region's mailbox. Snapshots go through `send_snapshot`, which streams the data file in
//! chunks to the receiver's `receive_snapshot`.
//!
//! Two networks implement the seam: [`InMemoryNetwork`] connects the stores of one process
//! (the multi-store test harness, benchmarks) and injects faults (partitions, isolation,
//! drops, delays, filters); the gRPC transport comes later. The region mailboxes and the
//! batch system stay in `tessera-store` until per-store outbound queues and heartbeat
//! coalescing arrive here.

pub mod memory;
mod rng;
pub mod transport;

pub use memory::{
    FilterId, InMemoryNetwork, InMemoryTransport, NetworkConfig, NetworkConfigError, NetworkStats,
};
pub use transport::{RaftReceiver, SharedReceiver, SnapshotChunks, Transport, TransportError};
