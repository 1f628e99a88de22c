//! The client side: [`GrpcLink`] carries a store's outbound batches to other stores, one
//! long-lived gRPC stream per destination, and sends snapshots over connections of their
//! own.
//!
//! Each destination store has a bounded queue and a task that owns its connection. The
//! task connects lazily (on the first send toward the store), forwards queued batches into
//! the stream, and when the connection fails or the stream ends it marks the store down,
//! drops what was queued and reconnects after a backoff that doubles up to a maximum.
//! While a store is down `reachable` is false and `send_batch` refuses with `Unreachable`,
//! so the sending store reports its peers unreachable at once instead of queueing messages
//! that would be lost anyway.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ::metrics::{counter, histogram, Gauge};
use bytes::Bytes;
use prost::Message;
use tessera_proto::serverpb::{RaftMessage, RaftMessageBatch, SnapshotChunk};
use tessera_router::{SnapshotChunks, StoreLink, TransportError};
use tokio::runtime::Handle;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::{Channel, Endpoint};
use tonic::{Code, Status};

use crate::config::{ConfigError, TransportConfig};
use crate::metrics;
use crate::resolver::StoreResolver;
use crate::transportpb::raft_transport_client::RaftTransportClient;

/// What a batch's own fields (two store ids) may take beyond its messages when encoded:
/// two tags and two ten-byte varints, rounded up.
const BATCH_ENVELOPE_BYTES: usize = 32;

/// Where a destination's connection stands, as `reachable` sees it.
const STATE_UNTRIED: u8 = 0;
const STATE_CONNECTED: u8 = 1;
const STATE_DOWN: u8 = 2;

/// A store's outbound network over gRPC. Use it under the router's outbound queues (which
/// batch, coalesce heartbeats and flush once per round); it is cheap to call from the
/// store's threads and never blocks them, except `send_snapshot`, which a snapshot thread
/// calls.
pub struct GrpcLink {
    store_id: u64,
    config: TransportConfig,
    resolver: Arc<dyn StoreResolver>,
    runtime: Handle,
    destinations: Mutex<HashMap<u64, Destination>>,
    snapshot_sends: AtomicUsize,
    closed: AtomicBool,
}

impl std::fmt::Debug for GrpcLink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GrpcLink").field("store_id", &self.store_id).finish_non_exhaustive()
    }
}

/// One destination store: its queue and the task that owns its connection.
struct Destination {
    state: Arc<AtomicU8>,
    queue: mpsc::Sender<Queued>,
    load: Arc<QueueLoad>,
    task: JoinHandle<()>,
}

/// A batch in a destination's queue, with its encoded size.
struct Queued {
    batch: RaftMessageBatch,
    bytes: usize,
}

/// What a destination's queue holds, in batches (the channel's capacity bounds them) and in
/// bytes (counted here): a few large appends must not fill memory any more than many small
/// messages may.
struct QueueLoad {
    bytes: AtomicUsize,
    batches_gauge: Gauge,
    bytes_gauge: Gauge,
}

impl QueueLoad {
    fn new(to_store_id: u64) -> QueueLoad {
        QueueLoad {
            bytes: AtomicUsize::new(0),
            batches_gauge: metrics::queue_batches(to_store_id),
            bytes_gauge: metrics::queue_bytes(to_store_id),
        }
    }

    /// Counts `bytes` in if they fit under `bytes_max`. A batch larger than the limit is
    /// still taken into an empty queue, or it could never be sent.
    fn reserve(&self, bytes: usize, bytes_max: usize) -> bool {
        let before = self.bytes.fetch_add(bytes, Ordering::AcqRel);
        if before > 0 && before + bytes > bytes_max {
            self.bytes.fetch_sub(bytes, Ordering::AcqRel);
            return false;
        }
        self.bytes_gauge.increment(bytes as f64);
        true
    }

    /// Counts batches out: sent, dropped, or never queued after a reservation.
    fn release(&self, batches: usize, bytes: usize) {
        self.bytes.fetch_sub(bytes, Ordering::AcqRel);
        self.bytes_gauge.decrement(bytes as f64);
        self.batches_gauge.decrement(batches as f64);
    }

    fn clear_gauges(&self) {
        self.batches_gauge.set(0.0);
        self.bytes_gauge.set(0.0);
    }
}

impl GrpcLink {
    /// The link of store `store_id`, finding other stores through `resolver` and running
    /// its connections on `runtime`. Nothing connects until the first send.
    pub fn new(
        config: TransportConfig,
        store_id: u64,
        resolver: Arc<dyn StoreResolver>,
        runtime: Handle,
    ) -> Result<GrpcLink, ConfigError> {
        config.validate()?;
        Ok(GrpcLink {
            store_id,
            config,
            resolver,
            runtime,
            destinations: Mutex::new(HashMap::new()),
            snapshot_sends: AtomicUsize::new(0),
            closed: AtomicBool::new(false),
        })
    }

    pub fn store_id(&self) -> u64 {
        self.store_id
    }

    /// Closes every connection and stops reconnecting; later sends are `Unreachable`.
    /// Dropping the link does the same.
    pub fn shutdown(&self) {
        let destinations = {
            let mut destinations = self.lock_destinations();
            // Under the lock, so that no send can add a destination after the ones here
            // are taken away.
            self.closed.store(true, Ordering::Release);
            std::mem::take(&mut *destinations)
        };
        for (_, destination) in destinations {
            destination.task.abort();
            destination.load.clear_gauges();
        }
    }

    fn lock_destinations(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Destination>> {
        self.destinations.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Runs `f` on the destination `to_store_id`, starting its connection task on first use.
    /// None when the link is closed or the store has no address.
    fn with_destination<T>(&self, to_store_id: u64, f: impl FnOnce(&Destination) -> T) -> Option<T> {
        {
            let destinations = self.lock_destinations();
            if self.closed.load(Ordering::Acquire) {
                return None;
            }
            if let Some(destination) = destinations.get(&to_store_id) {
                return Some(f(destination));
            }
        }
        // An unknown store is unreachable without a connection attempt; it is looked up
        // again on the next send, so an address that appears later is used. The resolver
        // is asked without the lock held: it may be slow (PD), and other sends go on.
        self.resolver.resolve(to_store_id)?;
        let mut destinations = self.lock_destinations();
        if self.closed.load(Ordering::Acquire) {
            return None;
        }
        let destination = destinations.entry(to_store_id).or_insert_with(|| {
            let (queue, queue_rx) = mpsc::channel(self.config.queue_batches_max);
            let state = Arc::new(AtomicU8::new(STATE_UNTRIED));
            let load = Arc::new(QueueLoad::new(to_store_id));
            let connection = Connection {
                to_store_id,
                config: self.config.clone(),
                resolver: Arc::clone(&self.resolver),
                state: Arc::clone(&state),
                load: Arc::clone(&load),
            };
            let task = self.runtime.spawn(connection.run(queue_rx));
            Destination { state, queue, load, task }
        });
        Some(f(destination))
    }

    fn send_snapshot_to(
        &self,
        to_store_id: u64,
        msg: RaftMessage,
        chunks: &mut dyn SnapshotChunks,
    ) -> Result<(), TransportError> {
        if !self.reachable(to_store_id) {
            metrics::snapshots_sent("unreachable").increment(1);
            return Err(TransportError::Unreachable(to_store_id));
        }
        let address = self.resolver.resolve(to_store_id).ok_or(TransportError::Unreachable(to_store_id))?;
        let (chunk_tx, chunk_rx) = mpsc::channel(self.config.snapshot_chunks_in_flight_max);
        let (outcome_tx, outcome_rx) = oneshot::channel();
        let config = self.config.clone();
        self.runtime.spawn(async move {
            let outcome = match tokio::time::timeout(
                config.snapshot_send_timeout,
                stream_snapshot(&config, &address, chunk_rx),
            )
            .await
            {
                Ok(outcome) => outcome,
                Err(_) => Err(SnapshotSendError::Unreachable),
            };
            let _ = outcome_tx.send(outcome);
        });
        let mut call = SnapshotCall { chunks: chunk_tx, outcome: outcome_rx, ended: None };
        let mut sent_bytes = 0u64;
        let mut read_error = None;
        // A send fails when the call ended early (the receiver refused, the connection
        // broke, or the time ran out); the call's outcome then says which, so the pump just
        // stops.
        if call.send(&self.runtime, SnapshotChunk { message: Some(msg), data: Bytes::new() }) {
            'chunks: loop {
                match chunks.next_chunk() {
                    Ok(Some(data)) => {
                        for piece in cut(data, self.config.snapshot_chunk_bytes) {
                            let piece_bytes = piece.len() as u64;
                            if !call.send(&self.runtime, SnapshotChunk { message: None, data: piece }) {
                                break 'chunks;
                            }
                            sent_bytes += piece_bytes;
                        }
                    }
                    Ok(None) => {
                        // The end marker: an empty chunk. Without it the receiver takes the
                        // stream for broken off, whatever way it ended.
                        call.send(&self.runtime, SnapshotChunk::default());
                        break;
                    }
                    Err(reason) => {
                        read_error = Some(reason);
                        break;
                    }
                }
            }
        }
        counter!("tessera_transport_snapshot_sent_bytes_total").increment(sent_bytes);
        // Ending the stream (without the end marker, after a read error) lets the receiver
        // discard what it staged and answer; waiting for that answer keeps the two sides in
        // step.
        let outcome = call.finish();
        if let Some(reason) = read_error {
            metrics::snapshots_sent("failed").increment(1);
            return Err(TransportError::SnapshotRefused {
                store_id: to_store_id,
                reason: format!("reading the snapshot to send failed: {reason}"),
            });
        }
        match outcome {
            Ok(()) => {
                metrics::snapshots_sent("ok").increment(1);
                Ok(())
            }
            Err(SnapshotSendError::Unreachable) => {
                metrics::snapshots_sent("unreachable").increment(1);
                Err(TransportError::Unreachable(to_store_id))
            }
            Err(SnapshotSendError::Refused(reason)) => {
                metrics::snapshots_sent("refused").increment(1);
                Err(TransportError::SnapshotRefused { store_id: to_store_id, reason })
            }
        }
    }
}

impl Drop for GrpcLink {
    fn drop(&mut self) {
        self.shutdown();
    }
}

impl StoreLink for GrpcLink {
    fn send_batch(&self, batch: RaftMessageBatch) -> Result<(), TransportError> {
        let to_store_id = batch.to_store_id;
        let budget_bytes =
            self.config.message_bytes_max - BATCH_ENVELOPE_BYTES.min(self.config.message_bytes_max);
        let outcome = self.with_destination(to_store_id, |destination| {
            if destination.state.load(Ordering::Acquire) == STATE_DOWN {
                return Err(TransportError::Unreachable(to_store_id));
            }
            for part in split_batch(batch, budget_bytes) {
                let bytes = part.encoded_len();
                if !destination.load.reserve(bytes, self.config.queue_bytes_max) {
                    counter!("tessera_transport_queue_full_total").increment(1);
                    return Err(TransportError::Full(to_store_id));
                }
                destination.load.batches_gauge.increment(1.0);
                match destination.queue.try_send(Queued { batch: part, bytes }) {
                    Ok(()) => {}
                    Err(refused) => {
                        destination.load.release(1, bytes);
                        if let mpsc::error::TrySendError::Full(_) = refused {
                            counter!("tessera_transport_queue_full_total").increment(1);
                            return Err(TransportError::Full(to_store_id));
                        }
                        return Err(TransportError::Unreachable(to_store_id));
                    }
                }
            }
            Ok(())
        });
        let outcome = outcome.unwrap_or(Err(TransportError::Unreachable(to_store_id)));
        if outcome == Err(TransportError::Unreachable(to_store_id)) {
            counter!("tessera_transport_batches_unreachable_total").increment(1);
        }
        outcome
    }

    fn reachable(&self, to_store_id: u64) -> bool {
        self.with_destination(to_store_id, |destination| {
            destination.state.load(Ordering::Acquire) != STATE_DOWN
        })
        .unwrap_or(false)
    }

    fn send_snapshot(&self, msg: RaftMessage, chunks: &mut dyn SnapshotChunks) -> Result<(), TransportError> {
        let to_store_id = msg.to_peer.as_ref().map_or(0, |peer| peer.store_id);
        let limit = self.config.snapshot_send_concurrency_max;
        let taken = self
            .snapshot_sends
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |sends| (sends < limit).then_some(sends + 1));
        if taken.is_err() {
            metrics::snapshots_sent("limit").increment(1);
            return Err(TransportError::Full(to_store_id));
        }
        let sending = metrics::GaugeGuard::raise(metrics::snapshot_sends());
        let started = Instant::now();
        let outcome = self.send_snapshot_to(to_store_id, msg, chunks);
        histogram!("tessera_transport_snapshot_send_seconds").record(started.elapsed().as_secs_f64());
        drop(sending);
        self.snapshot_sends.fetch_sub(1, Ordering::AcqRel);
        outcome
    }
}

/// The task that owns one destination's connection.
struct Connection {
    to_store_id: u64,
    config: TransportConfig,
    resolver: Arc<dyn StoreResolver>,
    state: Arc<AtomicU8>,
    load: Arc<QueueLoad>,
}

impl Connection {
    async fn run(self, mut queue: mpsc::Receiver<Queued>) {
        let mut backoff = self.config.reconnect_backoff_initial;
        // The link dropped its end of the queue: nobody sends here any more.
        while !queue.is_closed() {
            let address = self.resolver.resolve(self.to_store_id);
            let channel = match &address {
                Some(address) => connect(&self.config, address).await.ok(),
                None => None,
            };
            metrics::connects(channel.is_some()).increment(1);
            if channel.is_none() {
                tracing::debug!(
                    to_store_id = self.to_store_id,
                    address = address.as_deref().unwrap_or("unresolved"),
                    "cannot connect to store"
                );
            }
            if let Some(channel) = channel {
                tracing::info!(
                    to_store_id = self.to_store_id,
                    address = address.as_deref().unwrap_or("unresolved"),
                    "connected to store"
                );
                self.state.store(STATE_CONNECTED, Ordering::Release);
                metrics::connections().increment(1.0);
                let connected_at = Instant::now();
                self.stream_batches(channel, &mut queue).await;
                metrics::connections().decrement(1.0);
                tracing::warn!(to_store_id = self.to_store_id, "connection to store lost; reconnecting");
                // A connection that held for a while was healthy: its loss starts a new
                // series of quick retries. One that broke at once (a server that refuses
                // the stream) keeps backing off.
                if connected_at.elapsed() >= self.config.reconnect_backoff_max {
                    backoff = self.config.reconnect_backoff_initial;
                }
            }
            self.state.store(STATE_DOWN, Ordering::Release);
            self.drop_queued(&mut queue);
            tokio::time::sleep(backoff).await;
            // Batches that raced with the state change are stale by now.
            self.drop_queued(&mut queue);
            backoff = next_backoff(backoff, &self.config);
        }
    }

    /// Forwards queued batches into one `Raft` stream until it ends.
    async fn stream_batches(&self, channel: Channel, queue: &mut mpsc::Receiver<Queued>) {
        let mut client = RaftTransportClient::new(channel)
            .max_encoding_message_size(self.config.message_bytes_max)
            .max_decoding_message_size(self.config.message_bytes_max);
        // One slot: the queue is the buffer; this only hands batches to the stream.
        let (stream_tx, stream_rx) = mpsc::channel(1);
        let call = client.raft(ReceiverStream::new(stream_rx));
        tokio::pin!(call);
        loop {
            let batch = tokio::select! {
                _ = &mut call => return,
                batch = queue.recv() => batch,
            };
            let Some(Queued { batch, bytes }) = batch else { return };
            self.load.release(1, bytes);
            let batch_bytes = bytes as u64;
            tokio::select! {
                _ = &mut call => {
                    counter!("tessera_transport_batches_dropped_total").increment(1);
                    return;
                }
                sent = stream_tx.send(batch) => {
                    if sent.is_err() {
                        counter!("tessera_transport_batches_dropped_total").increment(1);
                        return;
                    }
                    counter!("tessera_transport_batches_sent_total").increment(1);
                    counter!("tessera_transport_sent_bytes_total").increment(batch_bytes);
                }
            }
        }
    }

    fn drop_queued(&self, queue: &mut mpsc::Receiver<Queued>) {
        let (mut dropped, mut dropped_bytes) = (0, 0);
        while let Ok(queued) = queue.try_recv() {
            dropped += 1;
            dropped_bytes += queued.bytes;
        }
        if dropped > 0 {
            self.load.release(dropped, dropped_bytes);
            counter!("tessera_transport_batches_dropped_total").increment(dropped as u64);
        }
    }
}

/// The sending side of one snapshot call, driven from a snapshot thread.
struct SnapshotCall {
    chunks: mpsc::Sender<SnapshotChunk>,
    outcome: oneshot::Receiver<Result<(), SnapshotSendError>>,
    /// The outcome, once it arrived while a chunk waited to be sent.
    ended: Option<Result<(), SnapshotSendError>>,
}

impl SnapshotCall {
    /// Sends one chunk; false when the call ended first. Waiting on the outcome too means
    /// a call that timed out or failed frees the thread even if the network side never
    /// takes another chunk.
    fn send(&mut self, runtime: &Handle, chunk: SnapshotChunk) -> bool {
        if self.ended.is_some() {
            return false;
        }
        runtime.block_on(async {
            tokio::select! {
                sent = self.chunks.send(chunk) => sent.is_ok(),
                outcome = &mut self.outcome => {
                    // No outcome at all means the runtime stopped under the call.
                    self.ended = Some(outcome.unwrap_or(Err(SnapshotSendError::Unreachable)));
                    false
                }
            }
        })
    }

    /// Ends the stream and waits for the receiver's answer.
    fn finish(self) -> Result<(), SnapshotSendError> {
        drop(self.chunks);
        match self.ended {
            Some(outcome) => outcome,
            None => self.outcome.blocking_recv().unwrap_or(Err(SnapshotSendError::Unreachable)),
        }
    }
}

/// Why a snapshot did not go through, as the sender sorts it.
enum SnapshotSendError {
    /// No connection, a broken one, or no answer in time. (The reason is not kept: the
    /// caller can only report the store unreachable, and Raft retries.)
    Unreachable,
    /// The receiver answered with a refusal (at its limit, or the data did not check out).
    Refused(String),
}

async fn stream_snapshot(
    config: &TransportConfig,
    address: &str,
    chunks: mpsc::Receiver<SnapshotChunk>,
) -> Result<(), SnapshotSendError> {
    let channel = connect(config, address).await.map_err(|_| SnapshotSendError::Unreachable)?;
    let mut client = RaftTransportClient::new(channel)
        .max_encoding_message_size(config.message_bytes_max)
        .max_decoding_message_size(config.message_bytes_max);
    match client.snapshot(ReceiverStream::new(chunks)).await {
        Ok(_) => Ok(()),
        Err(status) => Err(classify_snapshot_status(status)),
    }
}

fn classify_snapshot_status(status: Status) -> SnapshotSendError {
    match status.code() {
        Code::Unavailable | Code::Cancelled | Code::Unknown | Code::DeadlineExceeded => {
            SnapshotSendError::Unreachable
        }
        _ => SnapshotSendError::Refused(format!("{:?}: {}", status.code(), status.message())),
    }
}

async fn connect(config: &TransportConfig, address: &str) -> Result<Channel, tonic::transport::Error> {
    Endpoint::from_shared(format!("http://{address}"))?
        .connect_timeout(config.connect_timeout)
        .tcp_nodelay(true)
        .http2_keep_alive_interval(config.keepalive_interval)
        .keep_alive_timeout(config.keepalive_interval)
        .connect()
        .await
}

/// `batch` as parts of at most `budget_bytes` of messages each (usually the batch itself).
/// A single message over the budget could never be delivered: it is dropped and counted,
/// and Raft sends it again (a store bounds its messages far below the limit).
fn split_batch(batch: RaftMessageBatch, budget_bytes: usize) -> Vec<RaftMessageBatch> {
    if batch.encoded_len() <= budget_bytes {
        return vec![batch];
    }
    let RaftMessageBatch { messages, from_store_id, to_store_id, heartbeats } = batch;
    let empty = || RaftMessageBatch { from_store_id, to_store_id, ..Default::default() };
    let mut parts = Vec::new();
    let mut part = empty();
    let mut part_bytes = 0;
    for msg in messages {
        let msg_bytes = framed_len(msg.encoded_len());
        if msg_bytes > budget_bytes {
            counter!("tessera_transport_messages_oversized_total").increment(1);
            continue;
        }
        if part_bytes + msg_bytes > budget_bytes {
            parts.push(std::mem::replace(&mut part, empty()));
            part_bytes = 0;
        }
        part.messages.push(msg);
        part_bytes += msg_bytes;
    }
    for record in heartbeats {
        let record_bytes = framed_len(record.encoded_len());
        if part_bytes + record_bytes > budget_bytes {
            parts.push(std::mem::replace(&mut part, empty()));
            part_bytes = 0;
        }
        part.heartbeats.push(record);
        part_bytes += record_bytes;
    }
    if !part.messages.is_empty() || !part.heartbeats.is_empty() {
        parts.push(part);
    }
    parts
}

/// The bytes a repeated field element of `len` bytes takes: one tag byte, its length, itself.
fn framed_len(len: usize) -> usize {
    1 + prost::encoding::encoded_len_varint(len as u64) + len
}

/// `data` in pieces of at most `piece_bytes` (slices of the same buffer, no copies).
fn cut(data: Bytes, piece_bytes: usize) -> Vec<Bytes> {
    if data.is_empty() {
        return Vec::new();
    }
    (0..data.len())
        .step_by(piece_bytes)
        .map(|start| data.slice(start..(start + piece_bytes).min(data.len())))
        .collect()
}

/// The wait after one more failure in a row: double the last one, up to the maximum.
fn next_backoff(backoff: Duration, config: &TransportConfig) -> Duration {
    (backoff * 2).min(config.reconnect_backoff_max)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tessera_proto::serverpb::HeartbeatRecord;

    fn message(region_id: u64, payload_bytes: usize) -> RaftMessage {
        RaftMessage { region_id, start_key: vec![7; payload_bytes], ..Default::default() }
    }

    #[test]
    fn a_batch_under_the_limit_travels_whole() {
        let batch = RaftMessageBatch {
            messages: vec![message(1, 10)],
            from_store_id: 1,
            to_store_id: 2,
            heartbeats: vec![HeartbeatRecord { region_id: 3, ..Default::default() }],
        };
        assert_eq!(split_batch(batch.clone(), 1_000), vec![batch]);
    }

    #[test]
    fn a_large_batch_is_split_and_a_message_over_the_limit_dropped() {
        let batch = RaftMessageBatch {
            messages: vec![message(1, 400), message(2, 400), message(3, 5_000), message(4, 400)],
            from_store_id: 1,
            to_store_id: 2,
            heartbeats: (0..3).map(|region_id| HeartbeatRecord { region_id, ..Default::default() }).collect(),
        };
        let parts = split_batch(batch, 1_000);
        let regions: Vec<Vec<u64>> =
            parts.iter().map(|part| part.messages.iter().map(|m| m.region_id).collect()).collect();
        assert_eq!(regions, vec![vec![1, 2], vec![4]], "region 3's message is over the limit");
        assert_eq!(parts.iter().map(|part| part.heartbeats.len()).sum::<usize>(), 3);
        for part in &parts {
            assert!(part.encoded_len() <= 1_000);
            assert_eq!((part.from_store_id, part.to_store_id), (1, 2));
        }
    }

    #[test]
    fn snapshot_data_is_cut_into_pieces_of_the_chunk_size() {
        let pieces = cut(Bytes::from(vec![1u8; 10]), 4);
        assert_eq!(pieces.iter().map(Bytes::len).collect::<Vec<_>>(), vec![4, 4, 2]);
        assert!(cut(Bytes::new(), 4).is_empty());
    }

    #[test]
    fn reconnect_backoff_doubles_up_to_its_maximum() {
        let config = TransportConfig {
            reconnect_backoff_initial: Duration::from_millis(100),
            reconnect_backoff_max: Duration::from_millis(500),
            ..TransportConfig::default()
        };
        let mut backoff = config.reconnect_backoff_initial;
        let mut millis = Vec::new();
        for _ in 0..5 {
            millis.push(backoff.as_millis());
            backoff = next_backoff(backoff, &config);
        }
        assert_eq!(millis, vec![100, 200, 400, 500, 500]);
    }
}
