//! The client-facing KV service of a node.
//!
//! ```text
//! client --gRPC Kv--> KvService --route (region context, or Store::region_for_key)-->
//!     Put/Delete/BatchPut: Store::propose (one command per region) --callback--> answer
//!     Get/Scan:            Store::read (linearizable, at the leader) --callback--> answer
//! ```
//!
//! The store answers through callbacks on its own threads; each one completes a oneshot
//! channel that the gRPC task awaits, so no runtime thread ever blocks on the store. A
//! store refusal becomes a typed [`KvError`](tessera_proto::kvpb::KvError) in the response;
//! arguments no retry can fix (an empty key, an oversized value) fail the call with
//! `INVALID_ARGUMENT`.

mod errors;
mod service;

/// The generated gRPC client and server of the `Kv` service; its messages are
/// tessera-proto's `kvpb`.
#[allow(missing_debug_implementations, clippy::all)]
pub mod kvservicepb {
    tonic::include_proto!("kvservicepb");
}

pub use errors::kv_error_of;
pub use service::{KvService, KvServiceConfig, SharedStore};
