//! Tessera: a multi-Raft sharded storage engine.
//!
//! This root crate is the embedding facade: [`Node`] runs one store of a static cluster
//! with its Raft transport and its client-facing KV service ([`kv`]). It re-exports the
//! consensus core and the wire types.
//!
//! ```no_run
//! use std::collections::BTreeMap;
//! use tessera::{Node, NodeConfig};
//!
//! let peers = BTreeMap::from([(1, "127.0.0.1:20160".to_string())]);
//! let config = NodeConfig::new(1, "/tmp/tessera-1", "127.0.0.1:20160", "127.0.0.1:20170", peers);
//! let node = Node::start(config).unwrap();
//! // Clients talk to node.kv_address(), through `tessera::Client` for instance.
//! node.shutdown();
//! ```

pub mod client;
pub mod kv;
pub mod metrics_http;
pub mod node;

pub use client::{Client, ClientConfig, ClientError};
pub use node::{Node, NodeConfig, NodeError};
pub use tessera_proto as proto;
pub use tessera_raft as raft;
