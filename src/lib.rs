//! Tessera: a multi-Raft sharded storage engine.
//!
//! This root crate is the embedding facade. Today it re-exports the consensus core and the
//! wire types; the store, router, transport and placement driver join it as they land.

pub use tessera_proto as proto;
pub use tessera_raft as raft;
