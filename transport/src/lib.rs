//! Tessera's gRPC transport: how stores in different processes reach each other.
//!
//! Outbound, a store sends through the router's per-store queues, which flush one
//! `RaftMessageBatch` per destination and round into a [`GrpcLink`]. The link keeps one
//! long-lived client stream per destination store (connected lazily, reconnected with a
//! doubling backoff after a failure), with a bounded queue in front of it; while a store
//! is not connected it is unreachable, and the sender's peers hear so at once. Snapshots
//! travel over a stream and a connection of their own, in bounded chunks, so that a large
//! snapshot never holds up the message stream.
//!
//! Inbound, a [`RaftServer`] checks each batch (addressed to this store, from one other
//! store), expands its coalesced heartbeats and hands the messages to the store's
//! [`RaftReceiver`](tessera_router::RaftReceiver); a snapshot is staged by the receiver on a
//! blocking thread that pulls chunks from the stream. Oversized and malformed input is
//! refused with a gRPC status and counted; it never reaches the store.
//!
//! The store runs on OS threads, so the transport brings its own small runtime
//! ([`TransportRuntime`]) unless the process has one to lend (a `tokio::runtime::Handle`).
//! Other stores' addresses come from a [`StoreResolver`]. Metrics are listed in
//! [`metrics`](crate::metrics).
//!
//! ```
//! use std::net::TcpListener;
//! use std::sync::Arc;
//! use tessera_proto::serverpb::RaftMessageBatch;
//! use tessera_router::StoreLink;
//! use tessera_transport::{
//!     GrpcLink, RaftServer, ReceiverSlot, StaticResolver, TransportConfig, TransportRuntime,
//! };
//!
//! let config = TransportConfig::default();
//! let runtime = TransportRuntime::new("doc", 1).unwrap();
//! // Store 2 listens; its store binds a receiver into the slot once it runs.
//! let listener = TcpListener::bind("127.0.0.1:0").unwrap();
//! let slot = ReceiverSlot::new();
//! let server = RaftServer::start(&config, 2, listener, slot.clone(), runtime.handle()).unwrap();
//! // Store 1 sends to it.
//! let resolver = Arc::new(StaticResolver::new([(2, server.local_addr().to_string())]));
//! let link = GrpcLink::new(config, 1, resolver, runtime.handle()).unwrap();
//! assert!(link.reachable(2), "not tried yet, so not known to be down");
//! link.send_batch(RaftMessageBatch { from_store_id: 1, to_store_id: 2, ..Default::default() }).unwrap();
//! link.shutdown();
//! server.shutdown();
//! ```

mod codec;
pub mod config;
mod link;
pub mod metrics;
pub mod raw_codec;
mod receiver_slot;
mod resolver;
mod runtime;
mod server;
mod serving;

/// The generated gRPC service (`RaftTransport`) and its `Done` message; the messages it
/// carries are tessera-proto's.
#[allow(missing_debug_implementations, clippy::all)]
pub mod transportpb {
    tonic::include_proto!("transportpb");
}

pub use codec::MeteredCodec;
pub use config::{ConfigError, TransportConfig};
pub use link::GrpcLink;
pub use receiver_slot::ReceiverSlot;
pub use resolver::{StaticResolver, StoreResolver};
pub use runtime::TransportRuntime;
pub use server::{RaftServer, ServerError};
pub use serving::{stop_requested, tokio_listener, ServingTask};
