//! A store's outbound side: one bounded queue per destination store, flushed as one batch
//! per store (once per poll round, or earlier when a queue reaches its byte limit), with the
//! heartbeats of all regions coalesced into compact records. Under it, a [`StoreLink`]
//! carries whole batches (the in-memory network, or gRPC).
//!
//! The cost of replication then grows with the number of store pairs, not of regions: a
//! poll round that touches a thousand regions sends each other store one batch.

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};

use thiserror::Error;

use crate::coalesce::heartbeat_record;
use crate::transport::{SnapshotChunks, StoreLink, Transport, TransportError};
use tessera_proto::serverpb::{RaftMessage, RaftMessageBatch};

/// Bytes a heartbeat record is counted as toward a batch's size (its encoding is about 40).
const HEARTBEAT_RECORD_BYTES: usize = 48;

/// Fixed overhead counted per message (routing, epoch, header fields), beside its payload.
const MESSAGE_OVERHEAD_BYTES: usize = 96;

/// The limits of a store's outbound queues.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OutboundConfig {
    /// Most messages (coalesced heartbeats included) queued toward one store between two
    /// flushes. Past it `send` fails with `Full`: the sender reports the peer unreachable
    /// and Raft retries later, instead of the queue growing.
    pub queue_len_max: usize,
    /// A queue whose messages reach this many bytes (estimated) is sent at once rather than
    /// at the round's flush, so that one round's burst does not become one huge batch.
    pub batch_bytes_max: usize,
}

impl Default for OutboundConfig {
    fn default() -> Self {
        OutboundConfig { queue_len_max: 65_536, batch_bytes_max: 4 << 20 }
    }
}

/// An outbound configuration that cannot work.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum OutboundConfigError {
    #[error("outbound config field `{field}` must be at least 1")]
    Zero { field: &'static str },
}

impl OutboundConfig {
    pub fn validate(&self) -> Result<(), OutboundConfigError> {
        let fields = [("queue_len_max", self.queue_len_max), ("batch_bytes_max", self.batch_bytes_max)];
        match fields.into_iter().find(|(_, value)| *value == 0) {
            Some((field, _)) => Err(OutboundConfigError::Zero { field }),
            None => Ok(()),
        }
    }
}

/// What the outbound queues did, since they were made.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct OutboundStats {
    /// Messages accepted by `send`, heartbeats included.
    pub messages_queued: u64,
    /// Of those, heartbeats and heartbeat responses that travel as records.
    pub heartbeats_coalesced: u64,
    /// Sends refused because the destination was unreachable.
    pub messages_unreachable: u64,
    /// Sends refused because the destination's queue was full.
    pub messages_full: u64,
    /// Batches the link accepted.
    pub batches_sent: u64,
    /// Batches the link refused; their messages are lost (Raft resends).
    pub batches_failed: u64,
    /// Messages inside those refused batches.
    pub messages_lost: u64,
}

#[derive(Default)]
struct Counters {
    messages_queued: AtomicU64,
    heartbeats_coalesced: AtomicU64,
    messages_unreachable: AtomicU64,
    messages_full: AtomicU64,
    batches_sent: AtomicU64,
    batches_failed: AtomicU64,
    messages_lost: AtomicU64,
}

/// The queue toward one store: the batch being filled.
#[derive(Default)]
struct PendingBatch {
    batch: RaftMessageBatch,
    len: usize,
    bytes: usize,
}

/// Per-store outbound queues over a link; it is the [`Transport`] a store sends through.
pub struct Outbound<L> {
    from_store_id: u64,
    link: L,
    config: OutboundConfig,
    /// Queues by destination store. One lock: a send holds it for a push, and a flush only
    /// to take the batches out; batches go to the link without it.
    queues: Mutex<HashMap<u64, PendingBatch>>,
    counters: Counters,
}

impl<L: StoreLink> fmt::Debug for Outbound<L> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Outbound")
            .field("from_store_id", &self.from_store_id)
            .field("queue_len", &self.queue_len())
            .finish_non_exhaustive()
    }
}

impl<L: StoreLink> Outbound<L> {
    pub fn new(from_store_id: u64, link: L, config: OutboundConfig) -> Result<Self, OutboundConfigError> {
        config.validate()?;
        Ok(Outbound {
            from_store_id,
            link,
            config,
            queues: Mutex::new(HashMap::new()),
            counters: Counters::default(),
        })
    }

    pub fn from_store_id(&self) -> u64 {
        self.from_store_id
    }

    pub fn link(&self) -> &L {
        &self.link
    }

    pub fn stats(&self) -> OutboundStats {
        let c = &self.counters;
        let read = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        OutboundStats {
            messages_queued: read(&c.messages_queued),
            heartbeats_coalesced: read(&c.heartbeats_coalesced),
            messages_unreachable: read(&c.messages_unreachable),
            messages_full: read(&c.messages_full),
            batches_sent: read(&c.batches_sent),
            batches_failed: read(&c.batches_failed),
            messages_lost: read(&c.messages_lost),
        }
    }

    /// Messages queued and not flushed yet, over every destination.
    pub fn queue_len(&self) -> usize {
        self.lock_queues().values().map(|q| q.len).sum()
    }

    fn lock_queues(&self) -> MutexGuard<'_, HashMap<u64, PendingBatch>> {
        self.queues.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn send_batch(&self, pending: PendingBatch) {
        let (len, bytes) = (pending.len, pending.bytes);
        metrics::histogram!("tessera_router_batch_messages").record(len as f64);
        metrics::histogram!("tessera_router_batch_bytes").record(bytes as f64);
        match self.link.send_batch(pending.batch) {
            Ok(()) => {
                self.counters.batches_sent.fetch_add(1, Ordering::Relaxed);
                metrics::counter!("tessera_router_batches_sent_total").increment(1);
            }
            Err(_) => {
                self.counters.batches_failed.fetch_add(1, Ordering::Relaxed);
                self.counters.messages_lost.fetch_add(len as u64, Ordering::Relaxed);
                metrics::counter!("tessera_router_batches_failed_total").increment(1);
                metrics::counter!("tessera_router_messages_lost_total").increment(len as u64);
            }
        }
    }
}

impl<L: StoreLink> Outbound<L> {
    fn flush_queues(&self, with_heartbeats_only: bool) {
        let batches: Vec<(u64, PendingBatch)> = {
            let mut queues = self.lock_queues();
            if queues.is_empty() {
                return;
            }
            let leaving: Vec<u64> = queues
                .iter()
                .filter(|(_, pending)| {
                    !pending.batch.messages.is_empty() || with_heartbeats_only && pending.len > 0
                })
                .map(|(to_store_id, _)| *to_store_id)
                .collect();
            // Sent queues are removed rather than kept empty: a store that stops talking to
            // another (it left every region they shared) keeps no memory for it.
            leaving.into_iter().filter_map(|id| queues.remove(&id).map(|pending| (id, pending))).collect()
        };
        for (to_store_id, mut pending) in batches {
            pending.batch.from_store_id = self.from_store_id;
            pending.batch.to_store_id = to_store_id;
            self.send_batch(pending);
        }
    }
}

/// Estimated encoded size of a message, cheap enough to compute for every send.
fn estimated_bytes(msg: &RaftMessage) -> usize {
    let message = msg.message.as_ref();
    let entries = message.map_or(0, |m| m.entries.iter().map(|e| e.data.len() + 24).sum::<usize>());
    MESSAGE_OVERHEAD_BYTES + entries + msg.start_key.len() + msg.end_key.len()
}

impl<L: StoreLink> Transport for Outbound<L> {
    /// Queues `msg` toward its store, as a heartbeat record when it is one. Refuses at once
    /// when the link says the store cannot be reached, or when its queue is full.
    fn send(&self, msg: RaftMessage) -> Result<(), TransportError> {
        let to_store_id = msg.to_peer.as_ref().map_or(0, |peer| peer.store_id);
        if to_store_id == 0 || !self.link.reachable(to_store_id) {
            self.counters.messages_unreachable.fetch_add(1, Ordering::Relaxed);
            metrics::counter!("tessera_router_messages_unreachable_total").increment(1);
            return Err(TransportError::Unreachable(to_store_id));
        }
        let record = heartbeat_record(&msg, self.from_store_id, to_store_id);
        let full_batch = {
            let mut queues = self.lock_queues();
            let pending = queues.entry(to_store_id).or_default();
            if pending.len >= self.config.queue_len_max {
                drop(queues);
                self.counters.messages_full.fetch_add(1, Ordering::Relaxed);
                metrics::counter!("tessera_router_messages_full_total").increment(1);
                return Err(TransportError::Full(to_store_id));
            }
            match record {
                Some(record) => {
                    pending.batch.heartbeats.push(record);
                    pending.bytes += HEARTBEAT_RECORD_BYTES;
                    self.counters.heartbeats_coalesced.fetch_add(1, Ordering::Relaxed);
                }
                None => {
                    pending.bytes += estimated_bytes(&msg);
                    pending.batch.messages.push(msg);
                }
            }
            pending.len += 1;
            if pending.bytes >= self.config.batch_bytes_max {
                queues.remove(&to_store_id)
            } else {
                None
            }
        };
        self.counters.messages_queued.fetch_add(1, Ordering::Relaxed);
        if let Some(mut pending) = full_batch {
            pending.batch.from_store_id = self.from_store_id;
            pending.batch.to_store_id = to_store_id;
            self.send_batch(pending);
        }
        Ok(())
    }

    /// Sends every queue that holds a message as one batch to its store, with the heartbeats
    /// queued for that store riding along; queues of heartbeats alone wait for
    /// `flush_heartbeats`.
    fn flush(&self) {
        self.flush_queues(false);
    }

    fn flush_heartbeats(&self) {
        self.flush_queues(true);
    }

    fn send_snapshot(&self, msg: RaftMessage, chunks: &mut dyn SnapshotChunks) -> Result<(), TransportError> {
        self.link.send_snapshot(msg, chunks)
    }
}

#[cfg(test)]
#[path = "outbound_tests.rs"]
mod tests;
