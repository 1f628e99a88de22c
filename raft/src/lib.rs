//! Tessera's Raft consensus core: a pure state machine, in the spirit of etcd's raft.
//!
//! Message in, `Ready` out. The core owns no clock, thread, socket or file: time enters as
//! `tick()`, randomness from a seed in the `Config`, and every effect (messages to send,
//! entries and hard state to persist, entries to apply) leaves as plain data in a `Ready`.
//!
//! ```text
//!  tick() / step(msg) / propose(data)          ready()               advance(ready)
//!  ----------------------------------> RawNode -------> application -------------->
//!                                        |     send, persist, send, apply
//!                                      Raft (roles, elections, replication)
//!                                        |-- RaftLog = Storage (durable) + Unstable (tail)
//!                                        |-- ProgressTracker (config, per-peer progress)
//! ```
//!
//! The one correct way to consume a Ready (without async storage writes):
//!
//! ```
//! use tessera_raft::{Config, MemStorage, RawNode};
//!
//! let storage = MemStorage::new_with_voters(&[1]);
//! let mut node = RawNode::new(&Config::new(1), storage.clone()).unwrap();
//! node.campaign().unwrap();
//! let (mut applied, mut proposed) = (Vec::new(), false);
//! for _ in 0..4 {
//!     if node.raft().role() == tessera_raft::StateRole::Leader && !proposed {
//!         node.propose(b"hello".to_vec()).unwrap();
//!         proposed = true;
//!     }
//!     if !node.has_ready() {
//!         continue;
//!     }
//!     let rd = node.ready();
//!     // 1. rd.messages may be sent right away (none here: a single node).
//!     // 2. Persist snapshot, entries and hard state, in one write.
//!     let mut store = storage.wl();
//!     if let Some(snapshot) = &rd.snapshot {
//!         store.apply_snapshot(snapshot.clone()).unwrap();
//!     }
//!     store.append(&rd.entries).unwrap();
//!     if let Some(hs) = &rd.hard_state {
//!         store.set_hard_state(*hs);
//!     }
//!     drop(store);
//!     // 3. Now rd.persisted_messages may be sent. 4. Apply the committed entries.
//!     applied.extend(rd.committed_entries.iter().filter(|e| !e.data.is_empty()).map(|e| e.data.clone()));
//!     // 5. Advance.
//!     node.advance(rd);
//! }
//! assert_eq!(applied, vec![b"hello".to_vec()]);
//! ```

pub mod confchange;
pub mod config;
pub mod describe;
pub mod errors;
pub mod log_unstable;
pub mod quorum;
pub mod raft;
pub mod raft_log;
pub mod raw_node;
pub mod read_only;
pub mod rng;
pub mod storage;
pub mod tracker;
pub mod util;

pub use bytes::Bytes;
pub use config::Config;
pub use errors::{Error, ProposalDropReason, Result, StorageError};
pub use raft::{Raft, SnapshotStatus, SoftState, StateRole, CAMPAIGN_TRANSFER};
pub use raw_node::{conf_change_of, BasicStatus, RawNode, Ready, Status};
pub use read_only::{ReadOnlyOption, ReadState};
pub use storage::{MemStorage, MemStorageCore, RaftState, Storage};
pub use tessera_proto::raftpb;

/// The id that means "nobody": no leader, no vote.
pub const NONE: u64 = 0;

/// With async storage writes: the destination of messages that carry persistence work.
pub const LOCAL_APPEND_THREAD: u64 = u64::MAX;

/// With async storage writes: the destination of messages that carry entries to apply.
pub const LOCAL_APPLY_THREAD: u64 = u64::MAX - 1;

#[cfg(test)]
mod paper_tests;

#[cfg(test)]
mod log_tests;
