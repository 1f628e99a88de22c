//! An in-memory network between the stores of one process, for the store's multi-store test
//! harness and for benchmarks, with the faults that tests need: partitions, isolation,
//! random drops, delays and message filters, all changeable while the stores run.
//!
//! Data flow: a store sends through its [`InMemoryTransport`]: the router's [`Outbound`]
//! queues, which check at once that the destination is reachable (so that the store can
//! report the peer unreachable to Raft), buffer the message in the destination's bounded
//! queue, and coalesce heartbeats into records. `flush` hands each destination's queue to
//! the [`InMemoryLink`] as one batch (counted per store pair, as a real network counts
//! requests), which expands it and routes each message in order: if the destination is
//! still reachable (a partition may have begun since the send), it draws against the drop
//! rate and asks the filters, then either hands the message on with the rest of the batch
//! to the destination's [`receive_batch`](crate::RaftReceiver::receive_batch) on the
//! flushing thread or, when a delay is set, to the delay thread, which delivers it once it
//! is due (if the destination is still reachable then). Snapshots skip the queues:
//! `send_snapshot` calls the destination's `receive_snapshot` on the calling thread.
//!
//! Reachability. Two stores reach each other when the destination is registered and
//! neither is isolated and both are in the same partition group. Every store is in exactly
//! one group: the groups named in [`InMemoryNetwork::partition`], plus one implicit group of
//! all the stores it does not name (those registered later included). So
//! `partition(&[&[1, 2]])` splits stores 1 and 2 from all the others in one call, and no
//! store that a test forgot to list can bridge two groups. A store always reaches itself.
//! Only the destination must be registered: a store may send before it registers its own
//! receiver, which is the order in which a store starts.
//!
//! Accounting. Every message that `send` accepts is counted once in `messages_sent` and,
//! once it has left the network, once in either `messages_delivered` or `messages_dropped`;
//! messages that `send` refuses count in `messages_unreachable` or `messages_full` instead.
//! Snapshots have their own counters. The counters are plain atomics until the store wires
//! metrics to the `metrics` crate; an in-memory network exists in tests and benchmarks
//! only, so nothing scrapes them.
//!
//! Threads. With no delay set, no thread runs. The first delayed message starts one delay
//! thread, which lives until [`InMemoryNetwork::shutdown`] or until the last
//! `InMemoryNetwork` handle is dropped; both stop and join it. Transports do not keep the
//! network alive, because stores hold transports and the network holds the stores'
//! receivers: that cycle would otherwise keep the thread running forever. Shutdown also
//! forgets the receivers to break the cycle, and a transport of a shut-down network finds
//! every store unreachable.

use std::cmp::Ordering as CmpOrdering;
use std::collections::{BinaryHeap, HashMap, HashSet};
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use tessera_proto::serverpb::{RaftMessage, RaftMessageBatch};
use thiserror::Error;

use crate::coalesce::expand_batch;
use crate::outbound::{Outbound, OutboundConfig, OutboundStats};
use crate::rng::SplitMix64;
use crate::transport::{SharedReceiver, SnapshotChunks, StoreLink, Transport, TransportError};

/// The drop rate is in parts per million: fine enough for rare losses in long runs.
const PER_MILLION: u32 = 1_000_000;

/// The seed the network's generator starts from, so that a test which never calls
/// `set_seed` still replays the same drops and delays on every run.
const SEED_DEFAULT: u64 = 0x7E55_E7A0;

/// The limits of an in-memory network. Both bound a queue, so neither may be zero.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NetworkConfig {
    /// Most messages one transport buffers toward one store between two flushes. A store flushes once per
    /// poll round, so this only fills up when a round produces a burst (or a store forgets
    /// to flush); then `send` fails with `Full`, as a real transport pushes back when its
    /// connection falls behind, instead of growing memory.
    pub queue_len_max: usize,
    /// Most delayed messages waiting for their due time, over the whole network. Past it,
    /// a delayed message is dropped (and counted in `delay_queue_full`): a network whose
    /// delay is longer than the senders' patience loses messages rather than memory.
    pub delayed_len_max: usize,
}

impl Default for NetworkConfig {
    fn default() -> Self {
        NetworkConfig { queue_len_max: 65_536, delayed_len_max: 65_536 }
    }
}

/// A network configuration that cannot work.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum NetworkConfigError {
    /// A limit is zero: no room in a transport's queue or in the delay queue would lose
    /// every message.
    #[error("network config field `{field}` must be at least 1")]
    Zero { field: &'static str },
}

impl NetworkConfig {
    /// Checks that every limit leaves room for at least one message.
    pub fn validate(&self) -> Result<(), NetworkConfigError> {
        let fields = [("queue_len_max", self.queue_len_max), ("delayed_len_max", self.delayed_len_max)];
        match fields.into_iter().find(|(_, value)| *value == 0) {
            Some((field, _)) => Err(NetworkConfigError::Zero { field }),
            None => Ok(()),
        }
    }
}

/// Names a filter added with [`InMemoryNetwork::add_filter`], to remove it again.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FilterId(u64);

/// The network's counters at one moment. Each field is read on its own, so a snapshot
/// taken while messages move may be off by the messages in flight between two fields.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NetworkStats {
    /// Messages that `send` accepted into a transport's queue.
    pub messages_sent: u64,
    /// Messages handed to a receiver's `receive`.
    pub messages_delivered: u64,
    /// Messages that `send` accepted but that never reached a receiver: lost to a filter,
    /// the drop rate, a partition or unregistration that began after the send, a full delay
    /// queue, or the network's shutdown.
    pub messages_dropped: u64,
    /// Sends refused with `Unreachable`.
    pub messages_unreachable: u64,
    /// Sends refused with `Full` because the transport's queue was at `queue_len_max`.
    pub messages_full: u64,
    /// Delayed messages dropped because the delay queue was at `delayed_len_max` (also
    /// counted in `messages_dropped`).
    pub delay_queue_full: u64,
    /// Snapshots handed to a receiver's `receive_snapshot`, refused ones included.
    pub snapshots_sent: u64,
    /// Snapshots that the receiver refused.
    pub snapshots_refused: u64,
    /// Snapshots lost to a filter or the drop rate (the sender saw `Unreachable`).
    pub snapshots_dropped: u64,
    /// Snapshots whose destination was unreachable.
    pub snapshots_unreachable: u64,
    /// Bytes of the snapshot chunks that receivers pulled through, refused snapshots
    /// included.
    pub snapshot_bytes: u64,
}

/// A predicate over messages; true drops the message.
type Filter = Arc<dyn Fn(&RaftMessage) -> bool + Send + Sync>;

/// The network through which the stores of one process reach each other. Cloning it is cheap and
/// every clone controls the same network; dropping the last clone shuts the network down.
///
/// ```
/// use std::sync::{Arc, Mutex};
/// use tessera_proto::serverpb::RaftMessage;
/// use tessera_proto::storepb::Peer;
/// use tessera_router::{InMemoryNetwork, RaftReceiver, SnapshotChunks, Transport};
///
/// #[derive(Default)]
/// struct Inbox(Mutex<Vec<RaftMessage>>);
/// impl RaftReceiver for Inbox {
///     fn receive(&self, msg: RaftMessage) {
///         self.0.lock().unwrap().push(msg);
///     }
///     fn receive_snapshot(&self, _: RaftMessage, _: &mut dyn SnapshotChunks) -> Result<(), String> {
///         Err("no snapshots here".to_owned())
///     }
/// }
///
/// let network = InMemoryNetwork::new();
/// let inbox = Arc::new(Inbox::default());
/// network.register(2, inbox.clone());
/// let transport = network.transport(1);
/// let to_peer = Peer { id: 20, store_id: 2, ..Default::default() };
/// transport.send(RaftMessage { region_id: 7, to_peer: Some(to_peer), ..Default::default() }).unwrap();
/// assert!(inbox.0.lock().unwrap().is_empty(), "nothing moves before the flush");
/// transport.flush();
/// assert_eq!(inbox.0.lock().unwrap().len(), 1);
/// assert_eq!(network.delivered_between(1, 2), 1);
/// ```
#[derive(Clone)]
pub struct InMemoryNetwork {
    handle: Arc<NetworkHandle>,
}

/// The one object that all clones of an `InMemoryNetwork` share. Its drop is the drop of
/// the last clone, which is when the network shuts down; transports and the delay thread
/// hold the state directly and so do not keep the network running.
struct NetworkHandle {
    shared: Arc<Shared>,
}

impl Drop for NetworkHandle {
    fn drop(&mut self) {
        self.shared.shutdown();
    }
}

impl fmt::Debug for InMemoryNetwork {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let shared = &self.handle.shared;
        let state = lock(&shared.state);
        f.debug_struct("InMemoryNetwork")
            .field("config", &shared.config)
            .field("stores_registered", &state.receivers.len())
            .field("closed", &state.closed)
            .finish_non_exhaustive()
    }
}

impl Default for InMemoryNetwork {
    fn default() -> Self {
        InMemoryNetwork::new()
    }
}

impl InMemoryNetwork {
    /// A network with the default limits and no store.
    pub fn new() -> Self {
        Self::from_valid_config(NetworkConfig::default())
    }

    /// A network with the given limits.
    pub fn with_config(config: NetworkConfig) -> Result<Self, NetworkConfigError> {
        config.validate()?;
        Ok(Self::from_valid_config(config))
    }

    fn from_valid_config(config: NetworkConfig) -> Self {
        let shared = Arc::new(Shared {
            config,
            state: Mutex::new(State::new()),
            counters: Counters::default(),
            delivered_pairs: Mutex::new(HashMap::new()),
            batch_pairs: Mutex::new(HashMap::new()),
            delay: DelayQueue::default(),
        });
        InMemoryNetwork { handle: Arc::new(NetworkHandle { shared }) }
    }

    fn shared(&self) -> &Arc<Shared> {
        &self.handle.shared
    }

    /// A store comes up and receives through `receiver` from now on. A store that restarts
    /// registers again, and its new receiver replaces the old one (messages still in the
    /// delay queue go to the new one, as they would reach a restarted process).
    ///
    /// A receiver that needs to send holds its store's transport, not the network: a clone
    /// of the network inside a receiver keeps the network alive until it unregisters.
    ///
    /// # Panics
    /// If `store_id` is 0, which names no store: it is where a message without `to_peer`
    /// would go.
    pub fn register(&self, store_id: u64, receiver: SharedReceiver) {
        assert!(store_id != 0, "store id 0 names no store");
        let previous = lock(&self.shared().state).receivers.insert(store_id, receiver);
        // A receiver's drop may run any code of the store, so it runs without the lock.
        drop(previous);
    }

    /// The store stopped: messages to it fail with `Unreachable` until it registers again.
    pub fn unregister(&self, store_id: u64) {
        let previous = lock(&self.shared().state).receivers.remove(&store_id);
        drop(previous);
    }

    /// The outbound side of store `from_store_id`. Each call makes a transport with its own
    /// queue, so a store takes one and shares it between its threads.
    pub fn transport(&self, from_store_id: u64) -> InMemoryTransport {
        let link = InMemoryLink { from_store_id, shared: Arc::clone(self.shared()) };
        let config =
            OutboundConfig { queue_len_max: self.shared().config.queue_len_max, ..OutboundConfig::default() };
        let outbound =
            Outbound::new(from_store_id, link, config).expect("invariant: the network config was validated");
        InMemoryTransport { outbound }
    }

    /// Splits the stores into `groups` that cannot reach each other; the stores that no
    /// group names form one more group. It replaces the previous partition and leaves
    /// isolated stores isolated. Messages already buffered or delayed across the new cuts
    /// are dropped when they would be delivered.
    ///
    /// # Panics
    /// If a store is named in two groups: the test would not say what it wants.
    pub fn partition(&self, groups: &[&[u64]]) {
        let mut group_of_store = HashMap::new();
        for (group, stores) in groups.iter().enumerate() {
            for &store_id in stores.iter() {
                let previous = group_of_store.insert(store_id, group);
                assert!(
                    previous.is_none_or(|previous| previous == group),
                    "store {store_id} is named in two partition groups"
                );
            }
        }
        lock(&self.shared().state).group_of_store = group_of_store;
    }

    /// Cuts `store_id` off from every other store, on top of any partition.
    pub fn isolate(&self, store_id: u64) {
        lock(&self.shared().state).isolated.insert(store_id);
    }

    /// Undoes every partition and isolation. Filters, the drop rate and the delay stay.
    pub fn heal(&self) {
        let mut state = lock(&self.shared().state);
        state.group_of_store.clear();
        state.isolated.clear();
    }

    /// Drops `per_million` of every million messages and snapshots at random, from the
    /// network's seeded generator. 0 (the default) drops none.
    ///
    /// # Panics
    /// If `per_million` is over a million.
    pub fn set_drop_rate(&self, per_million: u32) {
        assert!(per_million <= PER_MILLION, "drop rate {per_million} is over a million per million");
        lock(&self.shared().state).drop_per_million = per_million;
    }

    /// Restarts the generator behind drops and delays from `seed`. The same seed and the
    /// same messages, flushed in the same order, give the same drops and delays; when
    /// several threads flush at once, their interleaving decides which message meets which
    /// draw.
    pub fn set_seed(&self, seed: u64) {
        lock(&self.shared().state).rng = SplitMix64::new(seed);
    }

    /// Delays each message by a time drawn uniformly from `[delay_min, delay_max]`. Messages
    /// with different delays overtake each other, as they do on a real network; a fixed
    /// delay keeps them in order. A zero `delay_max` (the default) delivers on the flushing
    /// thread. Snapshots are never delayed: they already run on their own thread.
    ///
    /// # Panics
    /// If `delay_min` is greater than `delay_max`.
    pub fn set_delay(&self, delay_min: Duration, delay_max: Duration) {
        assert!(delay_min <= delay_max, "delay range {delay_min:?}..={delay_max:?} is empty");
        let mut state = lock(&self.shared().state);
        state.delay_min = delay_min;
        state.delay_max = delay_max;
    }

    /// Adds a filter that drops the messages and snapshots for which it returns true. It
    /// sees those that passed the reachability check and the drop rate, in the order they
    /// are flushed. It runs on the flushing (or snapshot-sending) thread without the
    /// network's lock held, so it may change the network's faults; a filter that holds a
    /// clone of the network keeps the network alive until it is removed.
    pub fn add_filter(&self, filter: impl Fn(&RaftMessage) -> bool + Send + Sync + 'static) -> FilterId {
        // Ids start at 1, so this placeholder is never an id that was handed out.
        let mut id = FilterId(0);
        self.change_filters(|filters, filter_id_next| {
            id = FilterId(*filter_id_next);
            *filter_id_next += 1;
            filters.push((id, Arc::new(filter)));
        });
        id
    }

    /// Removes a filter; returns whether it was still there.
    pub fn remove_filter(&self, id: FilterId) -> bool {
        let mut removed = false;
        self.change_filters(|filters, _| {
            let len_before = filters.len();
            filters.retain(|(filter_id, _)| *filter_id != id);
            removed = filters.len() != len_before;
        });
        removed
    }

    /// Removes every filter.
    pub fn clear_filters(&self) {
        self.change_filters(|filters, _| filters.clear());
    }

    /// Filters are copied on write: a flush clones the `Arc` of the list under the lock and
    /// runs the filters after releasing it. The old list is dropped after the lock is
    /// released too: what a removed filter captured may run any code when it is dropped.
    fn change_filters(&self, change: impl FnOnce(&mut Vec<(FilterId, Filter)>, &mut u64)) {
        let previous = {
            let mut state = lock(&self.shared().state);
            let mut filters = Vec::clone(&state.filters);
            let State { filter_id_next, .. } = &mut *state;
            change(&mut filters, filter_id_next);
            std::mem::replace(&mut state.filters, Arc::new(filters))
        };
        drop(previous);
    }

    /// The network's counters now.
    pub fn stats(&self) -> NetworkStats {
        self.shared().counters.snapshot()
    }

    /// How many messages from store `from_store_id` were handed to store `to_store_id`'s
    /// `receive`. Snapshots are not counted.
    pub fn delivered_between(&self, from_store_id: u64, to_store_id: u64) -> u64 {
        lock(&self.shared().delivered_pairs).get(&(from_store_id, to_store_id)).copied().unwrap_or(0)
    }

    /// How many batches store `from_store_id` sent store `to_store_id`: what a real network
    /// would carry as one request each.
    pub fn batches_between(&self, from_store_id: u64, to_store_id: u64) -> u64 {
        lock(&self.shared().batch_pairs).get(&(from_store_id, to_store_id)).map_or(0, |(batches, _)| *batches)
    }

    /// The encoded bytes of those batches (what they would weigh on the wire, before any
    /// transport framing). Snapshots are not counted.
    pub fn batch_bytes_between(&self, from_store_id: u64, to_store_id: u64) -> u64 {
        lock(&self.shared().batch_pairs).get(&(from_store_id, to_store_id)).map_or(0, |(_, bytes)| *bytes)
    }

    /// Stops the network: every store becomes unreachable, the receivers are released,
    /// delayed messages are dropped and the delay thread is joined. Dropping the last clone
    /// does the same; calling it twice is harmless.
    pub fn shutdown(&self) {
        self.shared().shutdown();
    }
}

/// The outbound side of one store on an [`InMemoryNetwork`]: the router's per-store queues
/// (heartbeat coalescing included) over an [`InMemoryLink`], with the network's counters.
pub struct InMemoryTransport {
    outbound: Outbound<InMemoryLink>,
}

impl fmt::Debug for InMemoryTransport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("InMemoryTransport").field("outbound", &self.outbound).finish()
    }
}

impl InMemoryTransport {
    /// The store this transport sends from.
    pub fn from_store_id(&self) -> u64 {
        self.outbound.from_store_id()
    }

    /// Messages buffered and not flushed yet.
    pub fn queue_len(&self) -> usize {
        self.outbound.queue_len()
    }

    /// The outbound queues' own counters (batches, coalesced heartbeats).
    pub fn outbound_stats(&self) -> OutboundStats {
        self.outbound.stats()
    }
}

impl Transport for InMemoryTransport {
    /// Buffers `msg` until the next `flush`, after checking that its destination is
    /// reachable now.
    fn send(&self, msg: RaftMessage) -> Result<(), TransportError> {
        let counters = &self.outbound.link().shared.counters;
        let result = self.outbound.send(msg);
        let counter = match result {
            Ok(()) => &counters.messages_sent,
            Err(TransportError::Full(_)) => &counters.messages_full,
            Err(_) => &counters.messages_unreachable,
        };
        counter.fetch_add(1, Ordering::Relaxed);
        result
    }

    /// Sends each destination's queue as one batch; the network routes its messages in
    /// order. Two threads flushing the same transport at once each route their own part of
    /// the queues, and those parts may interleave.
    fn flush(&self) {
        self.outbound.flush();
    }

    fn flush_heartbeats(&self) {
        self.outbound.flush_heartbeats();
    }

    fn send_snapshot(&self, msg: RaftMessage, chunks: &mut dyn SnapshotChunks) -> Result<(), TransportError> {
        self.outbound.send_snapshot(msg, chunks)
    }
}

/// What carries one store's batches over an [`InMemoryNetwork`].
pub struct InMemoryLink {
    from_store_id: u64,
    shared: Arc<Shared>,
}

impl fmt::Debug for InMemoryLink {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("InMemoryLink").field("from_store_id", &self.from_store_id).finish_non_exhaustive()
    }
}

impl StoreLink for InMemoryLink {
    fn reachable(&self, to_store_id: u64) -> bool {
        lock(&self.shared.state).reaches(self.from_store_id, to_store_id)
    }

    /// Routes the batch's messages (heartbeat records expanded) through the faults; those
    /// that pass at once reach the receiver together. Losses are the network's, counted as
    /// drops, never an error: a real link does not know what the far side received.
    fn send_batch(&self, batch: RaftMessageBatch) -> Result<(), TransportError> {
        let bytes = prost::Message::encoded_len(&batch) as u64;
        let pair = (batch.from_store_id, batch.to_store_id);
        {
            let mut batch_pairs = lock(&self.shared.batch_pairs);
            let (batches, batch_bytes) = batch_pairs.entry(pair).or_insert((0, 0));
            *batches += 1;
            *batch_bytes += bytes;
        }
        self.shared.route_batch(self.from_store_id, batch.to_store_id, expand_batch(batch));
        Ok(())
    }

    /// Hands the snapshot to the destination's `receive_snapshot` on this thread. A
    /// snapshot lost to a filter or the drop rate fails with `Unreachable`, as a broken
    /// connection would; Raft retries it later.
    fn send_snapshot(&self, msg: RaftMessage, chunks: &mut dyn SnapshotChunks) -> Result<(), TransportError> {
        let to_store_id = destination(&msg);
        let counters = &self.shared.counters;
        let (receiver, lost, filters) = {
            let mut state = lock(&self.shared.state);
            if !state.reaches(self.from_store_id, to_store_id) {
                counters.snapshots_unreachable.fetch_add(1, Ordering::Relaxed);
                return Err(TransportError::Unreachable(to_store_id));
            }
            let receiver = state.receivers.get(&to_store_id).cloned();
            (receiver, state.draw_lost(), Arc::clone(&state.filters))
        };
        let receiver = receiver.expect("invariant: a reachable store has a receiver");
        if lost || filters.iter().any(|(_, filter)| filter(&msg)) {
            counters.snapshots_dropped.fetch_add(1, Ordering::Relaxed);
            return Err(TransportError::Unreachable(to_store_id));
        }
        counters.snapshots_sent.fetch_add(1, Ordering::Relaxed);
        let mut counted = CountedChunks { inner: chunks, counters };
        receiver.receive_snapshot(msg, &mut counted).map_err(|reason| {
            counters.snapshots_refused.fetch_add(1, Ordering::Relaxed);
            TransportError::SnapshotRefused { store_id: to_store_id, reason }
        })
    }
}

/// The store a message goes to. A message without `to_peer` goes to store 0, which no store
/// may register as, so it is unreachable rather than a panic in the sender's poller.
fn destination(msg: &RaftMessage) -> u64 {
    msg.to_peer.as_ref().map_or(0, |peer| peer.store_id)
}

/// Counts the bytes a receiver pulls through, as they pass.
struct CountedChunks<'a> {
    inner: &'a mut dyn SnapshotChunks,
    counters: &'a Counters,
}

impl SnapshotChunks for CountedChunks<'_> {
    fn next_chunk(&mut self) -> Result<Option<bytes::Bytes>, String> {
        let chunk = self.inner.next_chunk()?;
        if let Some(chunk) = &chunk {
            self.counters.snapshot_bytes.fetch_add(chunk.len() as u64, Ordering::Relaxed);
        }
        Ok(chunk)
    }
}

/// Everything the network handles, transports and the delay thread share.
struct Shared {
    config: NetworkConfig,
    state: Mutex<State>,
    counters: Counters,
    /// Delivered messages per ordered `(from, to)` store pair. Bounded by the square of
    /// the number of stores a test starts.
    delivered_pairs: Mutex<HashMap<(u64, u64), u64>>,
    /// Batches (what a real network carries as one request) and their encoded bytes, per
    /// ordered store pair.
    batch_pairs: Mutex<HashMap<(u64, u64), (u64, u64)>>,
    delay: DelayQueue,
}

impl Shared {
    /// Takes the messages of one batch through the fault rules: each is dropped, delayed
    /// (to the delay thread) or delivered, and the delivered ones reach the receiver in one
    /// `receive_batch` on the flushing thread. No lock is held while a filter or the
    /// receiver runs: both may send, and filters may change the faults.
    fn route_batch(self: &Arc<Self>, from_store_id: u64, to_store_id: u64, msgs: Vec<RaftMessage>) {
        let mut delays = Vec::with_capacity(msgs.len());
        let (receiver, filters) = {
            let mut state = lock(&self.state);
            // Messages to an unreachable store are lost anyway and take no draw.
            if !state.reaches(from_store_id, to_store_id) {
                drop(state);
                self.on_dropped(msgs.len());
                return;
            }
            for _ in &msgs {
                // Per message, in order, so that a seed replays the same drops and delays.
                let lost = state.draw_lost();
                delays.push(if lost { None } else { Some(state.draw_delay()) });
            }
            let receiver = state.receivers.get(&to_store_id).cloned();
            (receiver.expect("invariant: a reachable store has a receiver"), Arc::clone(&state.filters))
        };
        let mut now = Vec::with_capacity(msgs.len());
        for (msg, delay) in msgs.into_iter().zip(delays) {
            let filtered = filters.iter().any(|(_, filter)| filter(&msg));
            match delay {
                _ if filtered => self.on_dropped(1),
                None => self.on_dropped(1),
                Some(None) => now.push(msg),
                Some(Some(delay)) => self.enqueue_delayed(from_store_id, msg, delay),
            }
        }
        if !now.is_empty() {
            self.count_delivered(from_store_id, to_store_id, now.len());
            receiver.receive_batch(now);
        }
    }

    fn count_delivered(&self, from_store_id: u64, to_store_id: u64, messages_len: usize) {
        self.counters.messages_delivered.fetch_add(messages_len as u64, Ordering::Relaxed);
        *lock(&self.delivered_pairs).entry((from_store_id, to_store_id)).or_insert(0) += messages_len as u64;
    }

    fn on_dropped(&self, messages_len: usize) {
        self.counters.messages_dropped.fetch_add(messages_len as u64, Ordering::Relaxed);
    }

    /// Queues a message for the delay thread, starting the thread if it is the first.
    fn enqueue_delayed(self: &Arc<Self>, from_store_id: u64, msg: RaftMessage, delay: Duration) {
        let mut inner = lock(&self.delay.inner);
        if inner.stopped {
            drop(inner);
            self.on_dropped(1);
            return;
        }
        if inner.heap.len() >= self.config.delayed_len_max {
            drop(inner);
            self.counters.delay_queue_full.fetch_add(1, Ordering::Relaxed);
            self.on_dropped(1);
            return;
        }
        let seq = inner.seq_next;
        inner.seq_next += 1;
        inner.heap.push(Delayed { due: Instant::now() + delay, seq, from_store_id, msg });
        if inner.thread.is_none() {
            let shared = Arc::clone(self);
            let thread = thread::Builder::new()
                .name("tessera-net-delay".to_owned())
                .spawn(move || shared.run_delay_thread())
                .expect("the OS refused to start the in-memory network's delay thread");
            inner.thread = Some(thread);
        }
        drop(inner);
        // The new message may be due before the one the thread sleeps toward.
        self.delay.wakeup.notify_one();
    }

    /// The delay thread: sleeps until the earliest message is due, then delivers every due
    /// message without holding the queue's lock, until shutdown.
    fn run_delay_thread(&self) {
        let mut due = Vec::new();
        loop {
            {
                let mut inner = lock(&self.delay.inner);
                loop {
                    if inner.stopped {
                        return;
                    }
                    let now = Instant::now();
                    let Some(first_due) = inner.heap.peek().map(|first| first.due) else {
                        inner = self.delay.wakeup.wait(inner).unwrap_or_else(PoisonError::into_inner);
                        continue;
                    };
                    if first_due > now {
                        let (guard, _) = self
                            .delay
                            .wakeup
                            .wait_timeout(inner, first_due - now)
                            .unwrap_or_else(PoisonError::into_inner);
                        inner = guard;
                        continue;
                    }
                    while inner.heap.peek().is_some_and(|first| first.due <= now) {
                        due.extend(inner.heap.pop());
                    }
                    break;
                }
            }
            for delayed in due.drain(..) {
                self.deliver_delayed(delayed);
            }
        }
    }

    /// Delivers a message whose delay is over, if its destination is still reachable: a
    /// partition that began while the message was in flight cuts it, like a pulled cable.
    fn deliver_delayed(&self, delayed: Delayed) {
        let to_store_id = destination(&delayed.msg);
        let receiver = {
            let state = lock(&self.state);
            if state.reaches(delayed.from_store_id, to_store_id) {
                state.receivers.get(&to_store_id).cloned()
            } else {
                None
            }
        };
        match receiver {
            Some(receiver) => {
                self.count_delivered(delayed.from_store_id, to_store_id, 1);
                receiver.receive(delayed.msg);
            }
            None => self.on_dropped(1),
        }
    }

    fn shutdown(&self) {
        let receivers = {
            let mut state = lock(&self.state);
            state.closed = true;
            std::mem::take(&mut state.receivers)
        };
        // Releasing the receivers breaks the cycle store -> transport -> network -> store.
        // Their drops run store code, so they run without the lock.
        drop(receivers);
        let (pending, thread) = {
            let mut inner = lock(&self.delay.inner);
            inner.stopped = true;
            (std::mem::take(&mut inner.heap), inner.thread.take())
        };
        self.delay.wakeup.notify_all();
        self.on_dropped(pending.len());
        drop(pending);
        if let Some(thread) = thread {
            // The last handle may be dropped by a receiver on the delay thread itself; that
            // thread sees `stopped` as soon as the receiver returns, and cannot join itself.
            if thread.thread().id() != thread::current().id() {
                // A receiver that panicked on the delay thread already printed its panic,
                // and its messages are missing from the test's view: nothing to add here.
                let _ = thread.join();
            }
        }
    }
}

/// The network's mutable state, behind one lock that is held only for lookups and draws.
struct State {
    /// Set by shutdown: every store is unreachable from then on.
    closed: bool,
    receivers: HashMap<u64, SharedReceiver>,
    /// The partition group of each store a partition names. Unnamed stores share the
    /// implicit group `None`, so with no partition every store is in the same group.
    group_of_store: HashMap<u64, usize>,
    isolated: HashSet<u64>,
    drop_per_million: u32,
    rng: SplitMix64,
    delay_min: Duration,
    delay_max: Duration,
    filters: Arc<Vec<(FilterId, Filter)>>,
    filter_id_next: u64,
}

impl State {
    fn new() -> Self {
        State {
            closed: false,
            receivers: HashMap::new(),
            group_of_store: HashMap::new(),
            isolated: HashSet::new(),
            drop_per_million: 0,
            rng: SplitMix64::new(SEED_DEFAULT),
            delay_min: Duration::ZERO,
            delay_max: Duration::ZERO,
            filters: Arc::new(Vec::new()),
            filter_id_next: 1,
        }
    }

    /// Whether a message from `from_store_id` can reach `to_store_id` now.
    fn reaches(&self, from_store_id: u64, to_store_id: u64) -> bool {
        if self.closed || !self.receivers.contains_key(&to_store_id) {
            return false;
        }
        if from_store_id == to_store_id {
            return true;
        }
        !self.isolated.contains(&from_store_id)
            && !self.isolated.contains(&to_store_id)
            && self.group_of_store.get(&from_store_id) == self.group_of_store.get(&to_store_id)
    }

    /// Whether the drop rate takes this message. It draws only when a rate is set, so
    /// that setting one later does not shift the delays drawn before.
    fn draw_lost(&mut self) -> bool {
        self.drop_per_million > 0 && self.rng.below(u64::from(PER_MILLION)) < u64::from(self.drop_per_million)
    }

    /// This message's delay, or None to deliver at once.
    fn draw_delay(&mut self) -> Option<Duration> {
        if self.delay_max.is_zero() {
            return None;
        }
        let spread_nanos = (self.delay_max - self.delay_min).as_nanos() as u64;
        let extra_nanos = if spread_nanos == 0 { 0 } else { self.rng.below(spread_nanos + 1) };
        Some(self.delay_min + Duration::from_nanos(extra_nanos))
    }
}

/// The delay thread's timer queue.
#[derive(Default)]
struct DelayQueue {
    inner: Mutex<DelayInner>,
    /// Wakes the delay thread when a message arrives or the network shuts down.
    wakeup: Condvar,
}

#[derive(Default)]
struct DelayInner {
    /// Ordered so that the earliest due message is on top; bounded by `delayed_len_max`.
    heap: BinaryHeap<Delayed>,
    /// Breaks ties between messages due at the same instant, in the order they came.
    seq_next: u64,
    stopped: bool,
    /// The delay thread, once the first delayed message started it.
    thread: Option<JoinHandle<()>>,
}

struct Delayed {
    due: Instant,
    seq: u64,
    from_store_id: u64,
    msg: RaftMessage,
}

impl Ord for Delayed {
    /// Reversed, because `BinaryHeap` puts the greatest on top and the delay thread wants
    /// the earliest due (and, among those, the first queued).
    fn cmp(&self, other: &Self) -> CmpOrdering {
        (other.due, other.seq).cmp(&(self.due, self.seq))
    }
}

impl PartialOrd for Delayed {
    fn partial_cmp(&self, other: &Self) -> Option<CmpOrdering> {
        Some(self.cmp(other))
    }
}

impl PartialEq for Delayed {
    fn eq(&self, other: &Self) -> bool {
        (self.due, self.seq) == (other.due, other.seq)
    }
}

impl Eq for Delayed {}

/// The counters behind `NetworkStats`. Relaxed atomics are enough: each counter is read on
/// its own, and nothing is synchronized through them.
#[derive(Default)]
struct Counters {
    messages_sent: AtomicU64,
    messages_delivered: AtomicU64,
    messages_dropped: AtomicU64,
    messages_unreachable: AtomicU64,
    messages_full: AtomicU64,
    delay_queue_full: AtomicU64,
    snapshots_sent: AtomicU64,
    snapshots_refused: AtomicU64,
    snapshots_dropped: AtomicU64,
    snapshots_unreachable: AtomicU64,
    snapshot_bytes: AtomicU64,
}

impl Counters {
    fn snapshot(&self) -> NetworkStats {
        let read = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        NetworkStats {
            messages_sent: read(&self.messages_sent),
            messages_delivered: read(&self.messages_delivered),
            messages_dropped: read(&self.messages_dropped),
            messages_unreachable: read(&self.messages_unreachable),
            messages_full: read(&self.messages_full),
            delay_queue_full: read(&self.delay_queue_full),
            snapshots_sent: read(&self.snapshots_sent),
            snapshots_refused: read(&self.snapshots_refused),
            snapshots_dropped: read(&self.snapshots_dropped),
            snapshots_unreachable: read(&self.snapshots_unreachable),
            snapshot_bytes: read(&self.snapshot_bytes),
        }
    }
}

/// Locks a mutex, ignoring poison: no code of this module panics while it holds a lock
/// (filters and receivers run unlocked), so the state behind a poisoned lock is whole.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

#[cfg(test)]
#[path = "memory_tests.rs"]
mod tests;
