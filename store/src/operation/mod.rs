//! The operations on a peer, one per file, as `impl Peer` blocks. Each takes the round's
//! `PollContext`: the store's shared state and the batch the round will write and sync.

mod applied;
mod conf_change;
mod destroy;
mod hibernate;
mod lease;
mod log_gc;
mod message;
mod propose;
mod quiet;
mod read;
mod ready;
mod snapshot;
mod stale_peer;

use crate::context::StoreContext;
use crate::engine::WriteBatch;

/// What a raft poller lends a peer while it handles it.
pub(crate) struct PollContext<'a> {
    pub store: &'a StoreContext,
    /// The round's write: every peer of the round adds to it; the poller syncs it once.
    pub batch: &'a mut WriteBatch,
}

pub(crate) use hibernate::Hibernation;
pub(crate) use lease::TickClock;
pub(crate) use message::{carries_range, discard_snapshot_file, may_create_peer};
pub(crate) use propose::{check_epoch, check_requests};
pub(crate) use read::Reads;
pub(crate) use stale_peer::RemovedPeers;
