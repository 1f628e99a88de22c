//! Tessera's store: the part of a process that hosts thousands of Raft groups (regions) on
//! one RocksDB.
//!
//! Data flow of a write: `Store::propose` puts the command in its region's mailbox; a raft
//! poller (`fsm.rs`) takes up to a batch of ready peers, steps each one's Raft node
//! (`peer.rs`, operations in `operation/`), and ends the round with ONE write batch holding
//! every peer's entries and Raft state, synced ONCE; the leaders' appends leave before that
//! write, acknowledgements after it. Committed entries go to the apply pollers (`apply.rs`),
//! which write the data of many regions with their apply states in one batch and then
//! answer the proposers. Messages for regions this store does not host go to the control
//! FSM (`store_fsm.rs`), which may create a peer. Snapshots are generated, streamed and
//! installed through `snapshot.rs`.
//!
//! Bottom up:
//! - `keys`: the key layout of the one RocksDB (CF `raft` for every region's log and Raft
//!   state, CF `meta` for region records and apply states, CF `default` for user data),
//!   pinned by a golden test;
//! - `engine`: RocksDB with those column families, typed reads, read views, and write
//!   batches shared by many regions; a failed write is fatal, never retried;
//! - `peer_storage`: one region's log over the engine, implementing the core's `Storage`
//!   with an entry cache for the hot tail;
//! - `batch`: the generic batch system (FSMs behind bounded mailboxes, poller threads that
//!   handle FSMs in rounds with one end-of-round hook);
//! - `store`: starting, feeding and stopping a store; `cluster`: N stores in one process over
//!   the in-memory network, for tests and benchmarks.
//!
//! ```
//! use std::time::Duration;
//! use tessera_store::cluster::{key_in_region, Cluster};
//!
//! // Three stores, two regions, each replicated on all three.
//! let mut cluster = Cluster::new(3, 2, 3, |_| {});
//! cluster.start_all();
//! cluster.must_put(2, &key_in_region(2, "greeting"), b"hello");
//! let leader = cluster.leader_store(2, Duration::from_secs(10)).unwrap();
//! let value = cluster.store(leader).get_local(&key_in_region(2, "greeting")).unwrap();
//! assert_eq!(value.as_deref(), Some(&b"hello"[..]));
//! ```

mod apply;
// The batch system lives in the router crate (mailboxes and their routing); re-exported so
// that `crate::batch` keeps naming it here.
pub use tessera_router::batch;
pub mod cluster;
pub mod config;
mod context;
#[doc(hidden)]
pub mod crash_point;
pub mod engine;
pub mod error;
mod fsm;
pub mod keys;
pub mod msg;
mod operation;
mod peer;
mod peer_cache;
pub mod peer_storage;
pub mod snapshot;
pub mod store;
mod store_fsm;

pub use config::StoreConfig;
pub use context::StoreStats;
pub use error::{StoreError, StoreResult};
pub use msg::{command, request, Callback, CmdResponse, ReadQuery, ReadRequest, ReadResponse};
pub use store::{bootstrap, initial_peer_id, PeerStatus, StartError, Store};

pub use tessera_proto as proto;
