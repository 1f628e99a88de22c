//! The seam between the load generator and the store under test.

use std::future::Future;

use bytes::Bytes;

/// A key-value store under load, as one closed-loop client sees it.
///
/// The runner owns one value per client and drives it with one request at a time, so an
/// implementation can keep per-client state (which endpoint it talks to, a connection, a
/// region cache handle) without locks. `&mut self` also matches tonic's generated clients.
///
/// The futures must be `Send` because the runner spreads clients over the threads of a
/// multi-threaded runtime.
pub trait KvTarget: Send + 'static {
    /// Writes `value` under `key`; returns once the store says the write is durable.
    fn put(&mut self, key: Bytes, value: Bytes) -> impl Future<Output = Result<(), KvError>> + Send;

    /// Reads `key` linearizably; `None` when the key has no value.
    fn get(&mut self, key: Bytes) -> impl Future<Output = Result<Option<Bytes>, KvError>> + Send;
}

/// Why a request failed, sorted into the kinds the report counts separately. Each carries the
/// store's own message, because the kind alone rarely tells an operator what went wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KvError {
    /// The endpoint could not be reached, or the store could not serve the request right now
    /// (no leader, a leader change, a request timed out inside the cluster).
    #[error("unavailable: {0}")]
    Unavailable(String),
    /// No answer arrived within the client's request timeout.
    #[error("timed out: {0}")]
    Timeout(String),
    /// The store shed load (etcd's "too many requests", Tessera's `ServerIsBusy`).
    #[error("busy: {0}")]
    Busy(String),
    /// The store refused the request as invalid (too large, bad argument, not permitted).
    #[error("rejected: {0}")]
    Rejected(String),
    /// Anything else the store reported as its own failure.
    #[error("server error: {0}")]
    Server(String),
}

impl KvError {
    /// A short, stable name for the kind, used as the key in reports and JSON.
    pub fn kind(&self) -> &'static str {
        match self {
            KvError::Unavailable(_) => "unavailable",
            KvError::Timeout(_) => "timeout",
            KvError::Busy(_) => "busy",
            KvError::Rejected(_) => "rejected",
            KvError::Server(_) => "server",
        }
    }
}
