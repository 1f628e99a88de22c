//! Tessera's router crate: how a store reaches the other stores.
//!
//! For now it holds the `Transport` seam (a store sends through a `Transport` and receives
//! through the `RaftReceiver` it registers with the network) and an in-memory network for
//! tests and benchmarks. The region mailboxes and the batch system stay in `tessera-store`
//! until per-store outbound queues and heartbeat coalescing arrive here.

pub mod transport;

pub use transport::{RaftReceiver, SharedReceiver, SnapshotChunks, Transport, TransportError};
