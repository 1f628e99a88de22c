//! [`Client`]: a Rust client of a Tessera cluster's KV service, with a region cache.
//!
//! ```text
//! Client::connect(endpoints) --Status--> store id of each endpoint
//! put/get/delete(key):  region cache --miss--> LocateKey at any store
//!                       --request with the region's id and epoch--> the leader's store
//!                       NotLeader(leader)   -> remember the leader, resend at once
//!                       EpochNotMatch(now)  -> cache the region as it is now, resend
//!                       no leader, busy, dropped, timeout, connection lost
//!                                           -> pause (doubling), try the next peer
//! scan:                 one region at a time, going on where each answer says
//! batch_put:            one BatchPut per region; the parts that fail are sent again
//! ```
//!
//! Every operation retries until it succeeds, fails in a way no retry can fix (a bad
//! argument, a command the store refuses), or runs out of `operation_timeout`.
//!
//! Writes are retried too, after a lost connection or a timeout. Put and delete are
//! idempotent, so a write applied once and then again leaves what one write would, unless
//! another client wrote the same key in between: the retry then overwrites that write.
//! A write that runs out of time has an unknown outcome ([`ClientError::Timeout`] says so).
//!
//! The client must be given the KV address of every store it is to reach: leader hints
//! name stores, not addresses. A store whose endpoint did not answer at connect time is
//! asked again when a leader hint names it (at most once a second).
//!
//! Hints are followed at once, but only three in a row: hints going round in circles
//! (nodes naming each other during an election) then wait like any retry.

mod cache;

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::Duration;

use tessera_proto::kvpb::{
    kv_error, BatchPutRequest, DeleteRequest, GetRequest, KvError, KvPair, LocateKeyRequest, OtherErrorKind,
    PutRequest, RegionContext, ScanRequest, StatusRequest,
};
use tessera_proto::storepb::Region;
use thiserror::Error;
use tokio::time::Instant;
use tonic::transport::{Channel, Endpoint};
use tonic::{Code, Status};

use crate::kv::kvservicepb::kv_client::KvClient;
use cache::{CachedRegion, RegionCache};

/// How a client retries and how long it waits.
#[derive(Clone, Debug, PartialEq)]
pub struct ClientConfig {
    /// How long one operation (a put, a get, a whole scan or batch) may take, retries
    /// included, before it fails with [`ClientError::Timeout`].
    pub operation_timeout: Duration,
    /// How long one RPC may take. It should exceed the nodes' own `request_timeout`, so
    /// that a slow store answers with a typed timeout before the client gives up on the call.
    pub rpc_timeout: Duration,
    /// How long establishing a connection to an endpoint may take.
    pub connect_timeout: Duration,
    /// The pause before a retry: the first one, and the most it doubles to.
    pub backoff_min: Duration,
    pub backoff_max: Duration,
    /// Most pairs, and most key and value bytes, in one BatchPut command; a region's pairs
    /// beyond either go in more commands. At most the nodes' own limits (`batch_pairs_max`
    /// of the KV service, and gRPC's 4 MiB message limit).
    pub batch_pairs_max: usize,
    pub batch_bytes_max: usize,
}

impl Default for ClientConfig {
    fn default() -> Self {
        ClientConfig {
            operation_timeout: Duration::from_secs(20),
            rpc_timeout: Duration::from_secs(12),
            connect_timeout: Duration::from_secs(2),
            backoff_min: Duration::from_millis(10),
            backoff_max: Duration::from_millis(500),
            batch_pairs_max: 1_024,
            batch_bytes_max: 2 << 20,
        }
    }
}

/// Why an operation failed.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ClientError {
    /// The request can never succeed as sent (an empty key, an oversized value, a bad
    /// range, an endpoint that is not an address).
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// The operation did not succeed within `operation_timeout`. For a write the outcome
    /// is unknown: it may have been applied.
    #[error("no success within {timeout:?} (for a write, the outcome is unknown); last error: {last_error}")]
    Timeout { timeout: Duration, last_error: String },
    /// No endpoint given to `connect` answered.
    #[error("no endpoint answered: {0}")]
    NoEndpoint(String),
    /// The store refused the command, or answered in a way this client does not know.
    #[error("the store refused the request: {0}")]
    Refused(String),
}

/// How often the client was redirected or had to retry; for tools and tests.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ClientStats {
    /// Requests resent at once to the leader a `NotLeader` named, or with the region a
    /// stale epoch was answered with.
    pub redirects: u64,
    /// Requests resent after a pause (no leader known, busy, connection lost, ...).
    pub retries: u64,
    /// Regions looked up with `LocateKey` (cache misses).
    pub region_lookups: u64,
}

/// A client of a Tessera cluster. Cheap to clone: clones share connections and the cache.
#[derive(Clone, Debug)]
pub struct Client {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    config: ClientConfig,
    /// Every endpoint given to `connect`, with the store id it answered with (once known).
    endpoints: Mutex<Vec<EndpointState>>,
    /// The client of each store whose id is known.
    stores: RwLock<BTreeMap<u64, KvClient<Channel>>>,
    cache: RwLock<RegionCache>,
    /// A leader hint named a store the client does not know: ask the endpoints again.
    stores_wanted: AtomicBool,
    stores_refreshed_at: Mutex<Option<Instant>>,
    counters: Counters,
}

/// What `ClientStats` reports.
#[derive(Debug, Default)]
struct Counters {
    redirects: AtomicU64,
    retries: AtomicU64,
    region_lookups: AtomicU64,
}

#[derive(Debug)]
struct EndpointState {
    address: String,
    client: KvClient<Channel>,
    store_id: Option<u64>,
}

/// What to do after a request that did not succeed.
enum Next {
    /// Send again now: the answer told where to go.
    Redirect,
    /// Send again after a pause, at another peer unless the cache knows the leader.
    Retry,
    /// Give up with this error.
    Fail(ClientError),
}

impl Client {
    /// Connects to `endpoints` (the KV addresses of the cluster's nodes, as `host:port`)
    /// and learns which store answers on each. Fails only if none answers.
    pub async fn connect(endpoints: &[String], config: ClientConfig) -> Result<Client, ClientError> {
        let mut states = Vec::with_capacity(endpoints.len());
        for address in endpoints {
            let endpoint = Endpoint::from_shared(format!("http://{address}"))
                .map_err(|error| ClientError::InvalidArgument(format!("endpoint {address}: {error}")))?
                .connect_timeout(config.connect_timeout)
                // Requests are small; Nagle's delay would only add latency.
                .tcp_nodelay(true);
            states.push(EndpointState {
                address: address.clone(),
                client: KvClient::new(endpoint.connect_lazy()),
                store_id: None,
            });
        }
        if states.is_empty() {
            return Err(ClientError::InvalidArgument("no endpoints".into()));
        }
        let client = Client {
            inner: Arc::new(Inner {
                config,
                endpoints: Mutex::new(states),
                stores: RwLock::new(BTreeMap::new()),
                cache: RwLock::new(RegionCache::default()),
                stores_wanted: AtomicBool::new(false),
                stores_refreshed_at: Mutex::new(None),
                counters: Counters::default(),
            }),
        };
        if let Err(errors) = client.learn_store_ids(client.inner.config.rpc_timeout).await {
            if client.inner.stores.read().unwrap_or_else(PoisonError::into_inner).is_empty() {
                return Err(ClientError::NoEndpoint(errors));
            }
        }
        Ok(client)
    }

    pub fn stats(&self) -> ClientStats {
        ClientStats {
            redirects: self.inner.counters.redirects.load(Ordering::Relaxed),
            retries: self.inner.counters.retries.load(Ordering::Relaxed),
            region_lookups: self.inner.counters.region_lookups.load(Ordering::Relaxed),
        }
    }

    /// The ids of the stores whose endpoints answered so far.
    pub fn store_ids(&self) -> Vec<u64> {
        self.inner.stores.read().unwrap_or_else(PoisonError::into_inner).keys().copied().collect()
    }

    /// Writes `value` under `key`, once a quorum has it durably and the leader applied it.
    pub async fn put(&self, key: &[u8], value: &[u8]) -> Result<(), ClientError> {
        self.on_region(key, self.deadline(), |mut kv, context| {
            let request = PutRequest { context: Some(context), key: key.to_vec(), value: value.to_vec() };
            async move { kv.put(request).await.map(|answer| answer.into_inner().error.map_or(Ok(()), Err)) }
        })
        .await
    }

    /// Reads `key` linearizably; `None` when it has no value.
    pub async fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, ClientError> {
        self.on_region(key, self.deadline(), |mut kv, context| {
            let request = GetRequest { context: Some(context), key: key.to_vec() };
            async move {
                kv.get(request).await.map(|answer| {
                    let answer = answer.into_inner();
                    answer.error.map_or(Ok(answer.value), Err)
                })
            }
        })
        .await
    }

    /// Deletes `key` (a key without a value is not an error).
    pub async fn delete(&self, key: &[u8]) -> Result<(), ClientError> {
        self.on_region(key, self.deadline(), |mut kv, context| {
            let request = DeleteRequest { context: Some(context), key: key.to_vec() };
            async move { kv.delete(request).await.map(|answer| answer.into_inner().error.map_or(Ok(()), Err)) }
        })
        .await
    }

    /// The first `limit` pairs of `[start_key, end_key)` in key order, across regions (an
    /// empty `end_key` is the end of the key space). Each region's part is a linearizable
    /// read of its own; the parts are not one snapshot. The whole scan shares one deadline.
    pub async fn scan(
        &self,
        start_key: &[u8],
        end_key: &[u8],
        limit: usize,
    ) -> Result<Vec<(Vec<u8>, Vec<u8>)>, ClientError> {
        if !end_key.is_empty() && end_key <= start_key {
            return Err(ClientError::InvalidArgument(
                "a scan needs start_key < end_key (or an empty end_key)".into(),
            ));
        }
        let deadline = self.deadline();
        let mut pairs = Vec::new();
        let mut next = Some(start_key.to_vec());
        while let Some(from) = next.take() {
            let wanted = limit.saturating_sub(pairs.len());
            if wanted == 0 {
                break;
            }
            let (part, next_start_key) = self
                .on_region(&from, deadline, |mut kv, context| {
                    let request = ScanRequest {
                        context: Some(context),
                        start_key: from.clone(),
                        end_key: end_key.to_vec(),
                        limit: u32::try_from(wanted).unwrap_or(u32::MAX),
                    };
                    async move {
                        kv.scan(request).await.map(|answer| {
                            let answer = answer.into_inner();
                            answer.error.map_or(Ok((answer.pairs, answer.next_start_key)), Err)
                        })
                    }
                })
                .await?;
            // Each step must move forward, or a confused node could keep the scan going
            // round in place until the deadline.
            if next_start_key.as_ref().is_some_and(|next| next.as_slice() <= from.as_slice()) {
                return Err(ClientError::Refused(format!(
                    "a node answered a scan from {from:?} with a continuation that does not move forward"
                )));
            }
            pairs.extend(part.into_iter().map(|pair| (pair.key, pair.value)));
            next = next_start_key;
        }
        pairs.truncate(limit);
        Ok(pairs)
    }

    /// Writes every pair, each region's pairs as one atomic command (pairs of different
    /// regions are not atomic together; a region's pairs beyond `batch_pairs_max` or
    /// `batch_bytes_max` go in more than one command). A part that fails is sent again
    /// until the operation's deadline.
    pub async fn batch_put(&self, pairs: Vec<(Vec<u8>, Vec<u8>)>) -> Result<(), ClientError> {
        let mut attempts = Attempts::new(&self.inner.config, self.deadline());
        let mut pending: Vec<KvPair> = pairs.into_iter().map(|(key, value)| KvPair { key, value }).collect();
        while !pending.is_empty() {
            self.refresh_stores_if_due(&attempts).await;
            // One group per region the cache knows. A lookup that fails leaves the rest of
            // the pairs for the next round rather than failing once per pair.
            let mut groups: BTreeMap<u64, (CachedRegion, Vec<KvPair>)> = BTreeMap::new();
            let mut next = Next::Redirect;
            let mut unlocated = Vec::new();
            for pair in std::mem::take(&mut pending) {
                if !unlocated.is_empty() {
                    unlocated.push(pair);
                    continue;
                }
                match self.locate(&pair.key, &attempts).await {
                    Ok(region) => {
                        groups.entry(region.region.id).or_insert_with(|| (region, Vec::new())).1.push(pair)
                    }
                    Err(error) => {
                        attempts.last_error = error;
                        next = Next::Retry;
                        unlocated.push(pair);
                    }
                }
            }
            pending = unlocated;
            for (_, (region, part)) in groups {
                let config = &self.inner.config;
                for chunk in chunks(part, config.batch_pairs_max, config.batch_bytes_max) {
                    let (outcome, failed) = self.put_chunk(&region, chunk, &mut attempts).await;
                    next = next.worse(outcome);
                    pending.extend(failed);
                }
            }
            if pending.is_empty() {
                break;
            }
            attempts.after(&self.inner.counters, next).await?;
        }
        Ok(())
    }

    /// Sends one BatchPut for `region`; says what to do next and returns the pairs to send
    /// again.
    async fn put_chunk(
        &self,
        region: &CachedRegion,
        chunk: Vec<KvPair>,
        attempts: &mut Attempts,
    ) -> (Next, Vec<KvPair>) {
        let Some((store_id, mut kv)) = self.store_for(region, attempts.peer_turn) else {
            attempts.last_error = format!("no known store hosts region {}", region.region.id);
            self.forget_region(region.region.id);
            return (Next::Retry, chunk);
        };
        let request = BatchPutRequest { pairs: chunk.clone() };
        let answer =
            match tokio::time::timeout(attempts.rpc_timeout(&self.inner.config), kv.batch_put(request)).await
            {
                Ok(Ok(answer)) => answer.into_inner(),
                Ok(Err(status)) => {
                    attempts.last_error = format!("store {store_id}: {status}");
                    return (self.after_status(region, &status), chunk);
                }
                Err(_) => {
                    attempts.last_error = format!("store {store_id}: no answer within the rpc timeout");
                    self.set_leader(region.region.id, None);
                    return (Next::Retry, chunk);
                }
            };
        // The node grouped the keys by its own view of the regions: each failed part is
        // judged against the region the client now holds for its keys, not the group's.
        let mut by_key: BTreeMap<Vec<u8>, Vec<u8>> =
            chunk.into_iter().map(|pair| (pair.key, pair.value)).collect();
        let mut next = Next::Redirect;
        let mut again = Vec::new();
        for failed_part in answer.failed {
            let error = failed_part.error.unwrap_or_default();
            attempts.last_error = format!("store {store_id}: {error:?}");
            let cached = failed_part.keys.first().and_then(|key| self.cached(key));
            next = next.worse(match &cached {
                Some(cached) => self.after_kv_error(cached, store_id, &error),
                None => Next::Retry,
            });
            for key in failed_part.keys {
                if let Some(value) = by_key.remove(&key) {
                    again.push(KvPair { key, value });
                }
            }
        }
        (next, again)
    }

    /// Runs `call` against the region holding `key` until it succeeds, fails for good, or
    /// `deadline` passes.
    async fn on_region<T, F, Fut>(&self, key: &[u8], deadline: Instant, mut call: F) -> Result<T, ClientError>
    where
        F: FnMut(KvClient<Channel>, RegionContext) -> Fut,
        Fut: Future<Output = Result<Result<T, KvError>, Status>>,
    {
        let mut attempts = Attempts::new(&self.inner.config, deadline);
        loop {
            self.refresh_stores_if_due(&attempts).await;
            let next = match self.locate(key, &attempts).await {
                Err(error) => {
                    attempts.last_error = error;
                    Next::Retry
                }
                Ok(region) => match self.store_for(&region, attempts.peer_turn) {
                    None => {
                        attempts.last_error = format!("no known store hosts region {}", region.region.id);
                        self.forget_region(region.region.id);
                        Next::Retry
                    }
                    Some((store_id, kv)) => {
                        let context =
                            RegionContext { region_id: region.region.id, region_epoch: region.region.epoch };
                        let rpc_timeout = attempts.rpc_timeout(&self.inner.config);
                        match tokio::time::timeout(rpc_timeout, call(kv, context)).await {
                            Ok(Ok(Ok(answer))) => return Ok(answer),
                            Ok(Ok(Err(error))) => {
                                attempts.last_error = format!("store {store_id}: {error:?}");
                                self.after_kv_error(&region, store_id, &error)
                            }
                            Ok(Err(status)) => {
                                attempts.last_error = format!("store {store_id}: {status}");
                                self.after_status(&region, &status)
                            }
                            Err(_) => {
                                attempts.last_error =
                                    format!("store {store_id}: no answer within the rpc timeout");
                                self.set_leader(region.region.id, None);
                                Next::Retry
                            }
                        }
                    }
                },
            };
            attempts.after(&self.inner.counters, next).await?;
        }
    }

    /// What a KV error from `store_id` about `region` means for the next attempt, with the
    /// cache updated by what the error told.
    fn after_kv_error(&self, region: &CachedRegion, store_id: u64, error: &KvError) -> Next {
        let region_id = region.region.id;
        match &error.kind {
            Some(kv_error::Kind::NotLeader(not_leader)) => match &not_leader.leader {
                Some(leader) if leader.store_id != store_id && self.knows_store(leader.store_id) => {
                    self.set_leader(region_id, Some(leader.store_id));
                    Next::Redirect
                }
                Some(leader) if leader.store_id != store_id => {
                    // A store whose endpoint has not answered yet: ask the endpoints again
                    // (`refresh_stores_if_due`) and meanwhile try the peers we know.
                    self.inner.stores_wanted.store(true, Ordering::Relaxed);
                    self.set_leader(region_id, None);
                    Next::Retry
                }
                _ => {
                    self.set_leader(region_id, None);
                    Next::Retry
                }
            },
            Some(kv_error::Kind::EpochNotMatch(stale)) => match &stale.current {
                // Newer than what the request carried: follow it at once.
                Some(current) if current.id != region_id || epoch_of(current) > epoch_of(&region.region) => {
                    self.cache_region(current.clone(), None);
                    Next::Redirect
                }
                // The node's own view is not newer (it lags behind whoever answered the
                // lookup): look the region up again after a pause.
                _ => {
                    self.forget_region(region_id);
                    Next::Retry
                }
            },
            Some(kv_error::Kind::RegionNotFound(_)) | Some(kv_error::Kind::KeyNotInRegion(_)) => {
                self.forget_region(region_id);
                Next::Retry
            }
            Some(kv_error::Kind::ServerIsBusy(_)) => Next::Retry,
            Some(kv_error::Kind::Other(other)) => match OtherErrorKind::try_from(other.kind) {
                // Dropped by a leader change, a node stopping, a node out of time: another
                // attempt may well succeed (and a write is idempotent; see the module docs).
                Ok(
                    OtherErrorKind::ProposalDropped | OtherErrorKind::StoreStopped | OtherErrorKind::Timeout,
                ) => {
                    self.set_leader(region_id, None);
                    Next::Retry
                }
                Ok(OtherErrorKind::InvalidCommand) => Next::Fail(ClientError::Refused(other.message.clone())),
                _ => Next::Fail(ClientError::Refused(format!(
                    "an error of unknown kind {}: {}",
                    other.kind, other.message
                ))),
            },
            None => Next::Fail(ClientError::Refused("an error without a kind".into())),
        }
    }

    /// What a failed call (a gRPC status) means for the next attempt.
    fn after_status(&self, region: &CachedRegion, status: &Status) -> Next {
        match status.code() {
            Code::InvalidArgument | Code::OutOfRange | Code::ResourceExhausted => {
                Next::Fail(ClientError::InvalidArgument(status.message().to_string()))
            }
            // The node could not be reached or went away mid-call: try another peer.
            Code::Unavailable | Code::Unknown | Code::Cancelled | Code::DeadlineExceeded | Code::Aborted => {
                self.set_leader(region.region.id, None);
                Next::Retry
            }
            _ => Next::Fail(ClientError::Refused(status.to_string())),
        }
    }

    /// The region holding `key`: from the cache, else asked of the stores in turn within the
    /// attempt's deadline.
    async fn locate(&self, key: &[u8], attempts: &Attempts) -> Result<CachedRegion, String> {
        if let Some(region) = self.cached(key) {
            return Ok(region);
        }
        self.inner.counters.region_lookups.fetch_add(1, Ordering::Relaxed);
        let mut errors = Vec::new();
        for (store_id, mut kv) in self.known_stores() {
            if Instant::now() >= attempts.deadline {
                break;
            }
            let request = LocateKeyRequest { key: key.to_vec() };
            match tokio::time::timeout(attempts.rpc_timeout(&self.inner.config), kv.locate_key(request)).await
            {
                Ok(Ok(answer)) => {
                    let answer = answer.into_inner();
                    match (answer.error, answer.region) {
                        (None, Some(region)) => {
                            let leader = answer.leader.map(|peer| peer.store_id);
                            self.cache_region(region, leader);
                            if let Some(found) = self.cached(key) {
                                return Ok(found);
                            }
                            errors.push(format!("store {store_id}: its region does not hold the key"));
                        }
                        (error, _) => errors.push(format!("store {store_id}: {error:?}")),
                    }
                }
                Ok(Err(status)) => errors.push(format!("store {store_id}: {status}")),
                Err(_) => errors.push(format!("store {store_id}: no answer within the rpc timeout")),
            }
        }
        Err(format!("no store located the key: {}", errors.join("; ")))
    }

    /// The store to send a request for `region` to, and its client: the leader if known,
    /// else the region's peers in turn.
    fn store_for(&self, region: &CachedRegion, peer_turn: usize) -> Option<(u64, KvClient<Channel>)> {
        let stores = self.inner.stores.read().unwrap_or_else(PoisonError::into_inner);
        if let Some(leader) = region.leader_store_id {
            if let Some(kv) = stores.get(&leader) {
                return Some((leader, kv.clone()));
            }
        }
        let candidates: Vec<u64> = region
            .region
            .peers
            .iter()
            .map(|peer| peer.store_id)
            .filter(|store_id| stores.contains_key(store_id))
            .collect();
        let store_id = *candidates.get(peer_turn % candidates.len().max(1))?;
        Some((store_id, stores[&store_id].clone()))
    }

    fn known_stores(&self) -> Vec<(u64, KvClient<Channel>)> {
        let stores = self.inner.stores.read().unwrap_or_else(PoisonError::into_inner);
        stores.iter().map(|(&id, kv)| (id, kv.clone())).collect()
    }

    fn knows_store(&self, store_id: u64) -> bool {
        self.inner.stores.read().unwrap_or_else(PoisonError::into_inner).contains_key(&store_id)
    }

    /// Asks the endpoints whose store is unknown again, when a request needs a store the
    /// client does not know (a leader hint named one, or none is known at all), at most
    /// once per `STORES_REFRESH_INTERVAL`.
    async fn refresh_stores_if_due(&self, attempts: &Attempts) {
        let wanted = self.inner.stores_wanted.load(Ordering::Relaxed)
            || self.inner.stores.read().unwrap_or_else(PoisonError::into_inner).is_empty();
        if !wanted {
            return;
        }
        {
            let mut last = self.inner.stores_refreshed_at.lock().unwrap_or_else(PoisonError::into_inner);
            if last.is_some_and(|at| at.elapsed() < STORES_REFRESH_INTERVAL) {
                return;
            }
            *last = Some(Instant::now());
        }
        self.inner.stores_wanted.store(false, Ordering::Relaxed);
        let _ = self.learn_store_ids(attempts.rpc_timeout(&self.inner.config)).await;
    }

    /// Asks every endpoint whose store id is unknown for it, each within `rpc_timeout`. The
    /// error lists the endpoints that did not answer.
    async fn learn_store_ids(&self, rpc_timeout: Duration) -> Result<(), String> {
        let unknown: Vec<(usize, String, KvClient<Channel>)> = {
            let endpoints = self.inner.endpoints.lock().unwrap_or_else(PoisonError::into_inner);
            endpoints
                .iter()
                .enumerate()
                .filter(|(_, state)| state.store_id.is_none())
                .map(|(i, state)| (i, state.address.clone(), state.client.clone()))
                .collect()
        };
        let mut asked = tokio::task::JoinSet::new();
        for (i, address, mut kv) in unknown {
            asked.spawn(async move {
                let answer = tokio::time::timeout(rpc_timeout, kv.status(StatusRequest {})).await;
                (i, address, kv, answer)
            });
        }
        let mut errors = Vec::new();
        while let Some(joined) = asked.join_next().await {
            let Ok((i, address, kv, answer)) = joined else {
                errors.push("a status request panicked".to_string());
                continue;
            };
            match answer {
                Ok(Ok(status)) => {
                    let store_id = status.into_inner().store_id;
                    self.inner.endpoints.lock().unwrap_or_else(PoisonError::into_inner)[i].store_id =
                        Some(store_id);
                    self.inner.stores.write().unwrap_or_else(PoisonError::into_inner).insert(store_id, kv);
                }
                Ok(Err(status)) => errors.push(format!("{address}: {status}")),
                Err(_) => errors.push(format!("{address}: no answer within the rpc timeout")),
            }
        }
        if errors.is_empty() {
            Ok(())
        } else {
            Err(errors.join("; "))
        }
    }

    fn cached(&self, key: &[u8]) -> Option<CachedRegion> {
        self.inner.cache.read().unwrap_or_else(PoisonError::into_inner).find(key)
    }

    fn cache_region(&self, region: Region, leader_store_id: Option<u64>) {
        self.inner.cache.write().unwrap_or_else(PoisonError::into_inner).insert(region, leader_store_id);
    }

    fn set_leader(&self, region_id: u64, leader_store_id: Option<u64>) {
        self.inner
            .cache
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .set_leader(region_id, leader_store_id);
    }

    fn forget_region(&self, region_id: u64) {
        self.inner.cache.write().unwrap_or_else(PoisonError::into_inner).remove(region_id);
    }

    fn deadline(&self) -> Instant {
        Instant::now() + self.inner.config.operation_timeout
    }
}

/// Redirects in a row sent without a pause. Past this the next one waits like a retry, so
/// that hints going round in circles (two nodes naming each other during an election)
/// cannot spin.
const REDIRECTS_IN_ROW_MAX: u32 = 3;

/// How often, at most, the client asks the endpoints whose store it does not know.
const STORES_REFRESH_INTERVAL: Duration = Duration::from_secs(1);

/// Splits a region's pairs into commands of at most `pairs_max` pairs and `bytes_max` key
/// and value bytes (a single larger pair goes alone).
fn chunks(part: Vec<KvPair>, pairs_max: usize, bytes_max: usize) -> Vec<Vec<KvPair>> {
    let mut chunks = vec![Vec::new()];
    let mut chunk_bytes = 0;
    for pair in part {
        let pair_bytes = pair.key.len() + pair.value.len();
        let last = chunks.last_mut().expect("never empty");
        if !last.is_empty() && (last.len() >= pairs_max.max(1) || chunk_bytes + pair_bytes > bytes_max) {
            chunks.push(Vec::new());
            chunk_bytes = 0;
        }
        chunk_bytes += pair_bytes;
        chunks.last_mut().expect("never empty").push(pair);
    }
    chunks
}

/// `(version, conf_ver)` of a region's epoch: larger is newer.
fn epoch_of(region: &Region) -> (u64, u64) {
    region.epoch.map_or((0, 0), |epoch| (epoch.version, epoch.conf_ver))
}

impl Next {
    /// Of two outcomes for parts of one round, the one that decides the round: a failure
    /// over a pause over an immediate resend.
    fn worse(self, other: Next) -> Next {
        match (self, other) {
            (Next::Fail(error), _) | (_, Next::Fail(error)) => Next::Fail(error),
            (Next::Retry, _) | (_, Next::Retry) => Next::Retry,
            _ => Next::Redirect,
        }
    }
}

/// The retry state of one operation: its deadline, the pause before the next retry, how
/// many redirects came in a row, which peer to try next, and the last error for the report.
struct Attempts {
    deadline: Instant,
    backoff: Duration,
    backoff_max: Duration,
    redirects_in_row: u32,
    peer_turn: usize,
    last_error: String,
    timeout: Duration,
}

impl Attempts {
    fn new(config: &ClientConfig, deadline: Instant) -> Attempts {
        Attempts {
            deadline,
            backoff: config.backoff_min,
            backoff_max: config.backoff_max,
            redirects_in_row: 0,
            peer_turn: 0,
            last_error: String::new(),
            timeout: config.operation_timeout,
        }
    }

    /// One RPC's time: the configured bound, or what is left of the operation if less.
    fn rpc_timeout(&self, config: &ClientConfig) -> Duration {
        config.rpc_timeout.min(self.deadline.saturating_duration_since(Instant::now()))
    }

    /// After an attempt that did not succeed: gives up (a failure, or the deadline passed),
    /// or waits as `next` says before the next attempt.
    async fn after(&mut self, counters: &Counters, next: Next) -> Result<(), ClientError> {
        // A failure no retry fixes is reported as itself, even at the deadline.
        if let Next::Fail(error) = next {
            return Err(error);
        }
        if Instant::now() >= self.deadline {
            return Err(ClientError::Timeout {
                timeout: self.timeout,
                last_error: std::mem::take(&mut self.last_error),
            });
        }
        if matches!(next, Next::Redirect) && self.redirects_in_row < REDIRECTS_IN_ROW_MAX {
            self.redirects_in_row += 1;
            counters.redirects.fetch_add(1, Ordering::Relaxed);
            return Ok(());
        }
        self.redirects_in_row = 0;
        self.peer_turn += 1;
        counters.retries.fetch_add(1, Ordering::Relaxed);
        tokio::time::sleep_until(self.deadline.min(Instant::now() + self.backoff)).await;
        self.backoff = (self.backoff * 2).min(self.backoff_max);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair(key: &str, value_bytes: usize) -> KvPair {
        KvPair { key: key.as_bytes().to_vec(), value: vec![0; value_bytes] }
    }

    #[test]
    fn batches_split_by_pairs_and_by_bytes() {
        let sizes = |chunks: Vec<Vec<KvPair>>| chunks.iter().map(Vec::len).collect::<Vec<_>>();
        let part: Vec<KvPair> = (0..5).map(|i| pair(&format!("k{i}"), 8)).collect();
        assert_eq!(sizes(chunks(part.clone(), 2, 1 << 20)), vec![2, 2, 1]);
        // Each pair is 10 bytes: three fit in 30, the fourth starts a new command.
        assert_eq!(sizes(chunks(part, 100, 30)), vec![3, 2]);
        // A pair larger than the byte budget still goes, alone.
        assert_eq!(sizes(chunks(vec![pair("a", 1), pair("big", 100), pair("b", 1)], 100, 10)), vec![1, 1, 1]);
        assert_eq!(sizes(chunks(Vec::new(), 10, 10)), vec![0]);
    }

    #[tokio::test]
    async fn redirects_in_a_row_turn_into_paused_retries_and_the_deadline_ends_them() {
        let pause = Duration::from_millis(20);
        let config = ClientConfig { backoff_min: pause, backoff_max: pause * 2, ..ClientConfig::default() };
        let counters = Counters::default();
        let started = Instant::now();
        let mut attempts = Attempts::new(&config, started + Duration::from_millis(300));
        for _ in 0..REDIRECTS_IN_ROW_MAX {
            attempts.after(&counters, Next::Redirect).await.unwrap();
        }
        assert!(started.elapsed() < pause, "redirects go at once");
        attempts.after(&counters, Next::Redirect).await.unwrap();
        assert!(started.elapsed() >= pause, "one redirect too many waits like a retry");
        assert_eq!(counters.redirects.load(Ordering::Relaxed), u64::from(REDIRECTS_IN_ROW_MAX));
        assert_eq!(counters.retries.load(Ordering::Relaxed), 1);
        // Retries pause, and the deadline ends them.
        let mut outcome = Ok(());
        while outcome.is_ok() {
            outcome = attempts.after(&counters, Next::Retry).await;
        }
        assert!(matches!(outcome, Err(ClientError::Timeout { .. })), "{outcome:?}");
        assert!(started.elapsed() >= Duration::from_millis(300));
        let retries = counters.retries.load(Ordering::Relaxed);
        assert!((3..=20).contains(&retries), "paused retries, not a spin: {retries}");
        // A failure is reported as itself, deadline or not.
        let refused = attempts.after(&counters, Next::Fail(ClientError::Refused("no".into()))).await;
        assert_eq!(refused, Err(ClientError::Refused("no".into())));
    }
}
