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
//! drops, delays, filters); `tessera-transport` carries it over gRPC. Under both, the
//! [`Outbound`] queues batch a store's messages per destination store and coalesce the
//! heartbeats of all regions into records ([`coalesce`]). The [`batch`] system holds the
//! mailboxes: region id to mailbox, the store's control mailbox, and the poller threads
//! that drive the FSMs behind them.
//!
//! ```
//! use std::sync::{Arc, Mutex};
//! use tessera_proto::serverpb::RaftMessage;
//! use tessera_proto::storepb::Peer;
//! use tessera_router::{InMemoryNetwork, RaftReceiver, SnapshotChunks, Transport, TransportError};
//!
//! #[derive(Default)]
//! struct Inbox(Mutex<Vec<u64>>);
//! impl RaftReceiver for Inbox {
//!     fn receive(&self, msg: RaftMessage) {
//!         self.0.lock().unwrap().push(msg.region_id);
//!     }
//!     fn receive_snapshot(&self, _: RaftMessage, _: &mut dyn SnapshotChunks) -> Result<(), String> {
//!         Err("no snapshots here".into())
//!     }
//! }
//!
//! let network = InMemoryNetwork::new();
//! let inbox = Arc::new(Inbox::default());
//! network.register(2, inbox.clone());
//! let transport = network.transport(1);
//! let to_store_2 = |region_id| RaftMessage {
//!     region_id,
//!     to_peer: Some(Peer { id: 20, store_id: 2, ..Default::default() }),
//!     ..Default::default()
//! };
//! transport.send(to_store_2(7)).unwrap();
//! assert!(inbox.0.lock().unwrap().is_empty(), "buffered until the poll round flushes");
//! transport.flush();
//! assert_eq!(*inbox.0.lock().unwrap(), vec![7]);
//! network.isolate(2);
//! assert_eq!(transport.send(to_store_2(8)), Err(TransportError::Unreachable(2)));
//! ```

pub mod batch;
pub mod coalesce;
pub mod memory;
pub mod outbound;
mod rng;
pub mod transport;

pub use coalesce::expand_batch;
pub use memory::{
    FilterId, InMemoryLink, InMemoryNetwork, InMemoryTransport, NetworkConfig, NetworkConfigError,
    NetworkStats,
};
pub use outbound::{Outbound, OutboundConfig, OutboundConfigError, OutboundStats};
pub use transport::{RaftReceiver, SharedReceiver, SnapshotChunks, StoreLink, Transport, TransportError};
