//! Tessera's store: the part of a process that hosts thousands of Raft groups (regions) on
//! one RocksDB.
//!
//! Built so far, bottom up:
//! - `keys`: the key layout of the one RocksDB (CF `raft` for every region's log and Raft
//!   state, CF `meta` for region records and apply states, CF `default` for user data),
//!   pinned by a golden test;
//! - `engine`: opening RocksDB with those column families, typed reads, and write batches
//!   shared by many regions; a failed write is fatal, never retried;
//! - `peer_storage`: one region's log over the engine, implementing the core's `Storage`
//!   with an entry cache for the hot tail, and the writes that persist a `Ready`;
//! - `batch`: the generic batch system (FSMs behind bounded mailboxes, a router by address,
//!   poller threads that handle FSMs in rounds with one end-of-round hook), on which the
//!   store will run its peers and its control FSM.
//!
//! ```
//! use std::sync::Arc;
//! use tessera_store::engine::{Engine, EngineConfig};
//! use tessera_store::peer_storage::{write_initial_region, PeerStorage, INIT_INDEX};
//! use tessera_store::proto::raftpb::ConfState;
//! use tessera_store::proto::storepb::Region;
//! use tessera_raft::Storage;
//!
//! let dir = tempfile::tempdir().unwrap();
//! let engine = Arc::new(Engine::open(dir.path(), &EngineConfig::default()).unwrap());
//! let region = Region { id: 1, ..Default::default() };
//! let mut batch = engine.write_batch();
//! write_initial_region(&mut batch, &region, &ConfState { voters: vec![1], ..Default::default() }, 1);
//! engine.write(batch, true).unwrap();
//! let storage = PeerStorage::load(engine.clone(), region, 4 << 20).unwrap();
//! assert_eq!(storage.last_index().unwrap(), INIT_INDEX);
//! ```

mod apply;
pub mod batch;
pub mod cluster;
pub mod config;
mod context;
pub mod engine;
pub mod error;
mod fsm;
pub mod keys;
pub mod msg;
mod operation;
mod peer;
pub mod peer_storage;
pub mod snapshot;
pub mod store;
mod store_fsm;

pub use config::StoreConfig;
pub use context::StoreStats;
pub use error::{StoreError, StoreResult};
pub use msg::{Callback, CmdResponse};
pub use store::{bootstrap, PeerStatus, StartError, Store};

pub use tessera_proto as proto;
