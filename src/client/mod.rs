//! [`Client`]: a Rust client of a Tessera cluster's KV service, with a region cache.
//!
//! ```text
//! Client::connect(endpoints) --Status--> store id of each endpoint
//! put/get/delete(key):  region cache --miss--> GetRegion at any store
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
//! asked again when a request needs it.

mod cache;

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::Duration;

use tessera_proto::kvpb::{
    kv_error, BatchPutRequest, DeleteRequest, GetRegionRequest, GetRequest, KvError, KvPair, OtherErrorKind,
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
}

impl Default for ClientConfig {
    fn default() -> Self {
        ClientConfig {
            operation_timeout: Duration::from_secs(20),
            rpc_timeout: Duration::from_secs(12),
            connect_timeout: Duration::from_secs(2),
            backoff_min: Duration::from_millis(10),
            backoff_max: Duration::from_millis(500),
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
    /// Regions looked up with `GetRegion` (cache misses).
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
                redirects: AtomicU64::new(0),
                retries: AtomicU64::new(0),
                region_lookups: AtomicU64::new(0),
            }),
        };
        if let Err(errors) = client.learn_store_ids().await {
            if client.inner.stores.read().unwrap_or_else(PoisonError::into_inner).is_empty() {
                return Err(ClientError::NoEndpoint(errors));
            }
        }
        Ok(client)
    }

    pub fn stats(&self) -> ClientStats {
        ClientStats {
            redirects: self.inner.redirects.load(Ordering::Relaxed),
            retries: self.inner.retries.load(Ordering::Relaxed),
            region_lookups: self.inner.region_lookups.load(Ordering::Relaxed),
        }
    }

    /// The ids of the stores whose endpoints answered so far.
    pub fn store_ids(&self) -> Vec<u64> {
        self.inner.stores.read().unwrap_or_else(PoisonError::into_inner).keys().copied().collect()
    }

    /// Writes `value` under `key`, once a quorum has it durably and the leader applied it.
    pub async fn put(&self, key: &[u8], value: &[u8]) -> Result<(), ClientError> {
        self.on_region(key, |mut kv, context| {
            let request = PutRequest { context: Some(context), key: key.to_vec(), value: value.to_vec() };
            async move { kv.put(request).await.map(|answer| answer.into_inner().error.map_or(Ok(()), Err)) }
        })
        .await
    }

    /// Reads `key` linearizably; `None` when it has no value.
    pub async fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, ClientError> {
        self.on_region(key, |mut kv, context| {
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
        self.on_region(key, |mut kv, context| {
            let request = DeleteRequest { context: Some(context), key: key.to_vec() };
            async move { kv.delete(request).await.map(|answer| answer.into_inner().error.map_or(Ok(()), Err)) }
        })
        .await
    }

    /// The first `limit` pairs of `[start_key, end_key)` in key order, across regions (an
    /// empty `end_key` is the end of the key space). Each region's part is a linearizable
    /// read of its own; the parts are not one snapshot.
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
        let mut pairs = Vec::new();
        let mut next = Some(start_key.to_vec());
        while let Some(from) = next.take() {
            let wanted = limit - pairs.len();
            if wanted == 0 {
                break;
            }
            let (part, next_start_key) = self
                .on_region(&from, |mut kv, context| {
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
            pairs.extend(part.into_iter().map(|pair| (pair.key, pair.value)));
            next = next_start_key;
        }
        pairs.truncate(limit);
        Ok(pairs)
    }

    /// Writes every pair, each region's pairs as one atomic command (pairs of different
    /// regions are not atomic together). A part that fails is sent again until the
    /// operation's deadline.
    pub async fn batch_put(&self, pairs: Vec<(Vec<u8>, Vec<u8>)>) -> Result<(), ClientError> {
        let deadline = self.deadline();
        let mut backoff = self.inner.config.backoff_min;
        let mut pending: Vec<KvPair> = pairs.into_iter().map(|(key, value)| KvPair { key, value }).collect();
        let mut last_error = String::new();
        while !pending.is_empty() {
            // One group per region the cache knows, sent to its leader (or a peer).
            let mut groups: BTreeMap<u64, (CachedRegion, Vec<KvPair>)> = BTreeMap::new();
            let mut paused = false;
            for pair in std::mem::take(&mut pending) {
                match self.locate(&pair.key).await {
                    Ok(region) => {
                        groups.entry(region.region.id).or_insert_with(|| (region, Vec::new())).1.push(pair)
                    }
                    Err(error) => {
                        last_error = error;
                        pending.push(pair);
                        paused = true;
                    }
                }
            }
            for (_, (region, part)) in groups {
                let Some((store_id, mut kv)) = self.store_for(&region, 0) else {
                    last_error = format!("no known store hosts region {}", region.region.id);
                    self.forget_region(region.region.id);
                    pending.extend(part);
                    paused = true;
                    continue;
                };
                let request = BatchPutRequest { pairs: part.clone() };
                let answer = tokio::time::timeout(self.rpc_timeout(deadline), kv.batch_put(request)).await;
                match answer {
                    Ok(Ok(answer)) => {
                        // Failed parts name their keys; send those again.
                        let failed = answer.into_inner().failed;
                        let by_key: BTreeMap<Vec<u8>, Vec<u8>> =
                            part.into_iter().map(|pair| (pair.key, pair.value)).collect();
                        for failed_part in failed {
                            let error = failed_part.error.unwrap_or_default();
                            last_error = format!("store {store_id}: {error:?}");
                            match self.after_kv_error(&region, store_id, &error) {
                                Next::Redirect => {}
                                Next::Retry => paused = true,
                                Next::Fail(error) => return Err(error),
                            }
                            for key in failed_part.keys {
                                if let Some(value) = by_key.get(&key) {
                                    pending.push(KvPair { key, value: value.clone() });
                                }
                            }
                        }
                    }
                    Ok(Err(status)) => {
                        last_error = format!("store {store_id}: {status}");
                        match self.after_status(&region, &status) {
                            Next::Fail(error) => return Err(error),
                            _ => paused = true,
                        }
                        pending.extend(part);
                    }
                    Err(_) => {
                        last_error = format!("store {store_id}: no answer within the rpc timeout");
                        self.set_leader(region.region.id, None);
                        pending.extend(part);
                        paused = true;
                    }
                }
            }
            if pending.is_empty() {
                break;
            }
            if Instant::now() >= deadline {
                return Err(self.timeout(last_error));
            }
            if paused {
                self.inner.retries.fetch_add(1, Ordering::Relaxed);
                sleep_until_or(deadline, backoff).await;
                backoff = (backoff * 2).min(self.inner.config.backoff_max);
            } else {
                self.inner.redirects.fetch_add(1, Ordering::Relaxed);
            }
        }
        Ok(())
    }

    /// Runs `call` against the region holding `key` until it succeeds, fails for good, or
    /// the operation's deadline passes.
    async fn on_region<T, F, Fut>(&self, key: &[u8], mut call: F) -> Result<T, ClientError>
    where
        F: FnMut(KvClient<Channel>, RegionContext) -> Fut,
        Fut: Future<Output = Result<Result<T, KvError>, Status>>,
    {
        let deadline = self.deadline();
        let mut backoff = self.inner.config.backoff_min;
        // Counts the peers tried since the leader was last known, to go round them in turn.
        let mut peer_turn = 0;
        let mut last_error;
        loop {
            let next = match self.locate(key).await {
                Err(error) => {
                    last_error = error;
                    Next::Retry
                }
                Ok(region) => match self.store_for(&region, peer_turn) {
                    None => {
                        last_error = format!("no known store hosts region {}", region.region.id);
                        self.forget_region(region.region.id);
                        Next::Retry
                    }
                    Some((store_id, kv)) => {
                        let context =
                            RegionContext { region_id: region.region.id, region_epoch: region.region.epoch };
                        match tokio::time::timeout(self.rpc_timeout(deadline), call(kv, context)).await {
                            Ok(Ok(Ok(answer))) => return Ok(answer),
                            Ok(Ok(Err(error))) => {
                                last_error = format!("store {store_id}: {error:?}");
                                self.after_kv_error(&region, store_id, &error)
                            }
                            Ok(Err(status)) => {
                                last_error = format!("store {store_id}: {status}");
                                self.after_status(&region, &status)
                            }
                            Err(_) => {
                                last_error = format!("store {store_id}: no answer within the rpc timeout");
                                self.set_leader(region.region.id, None);
                                Next::Retry
                            }
                        }
                    }
                },
            };
            if Instant::now() >= deadline {
                return Err(self.timeout(last_error));
            }
            match next {
                Next::Redirect => {
                    self.inner.redirects.fetch_add(1, Ordering::Relaxed);
                    // A redirect goes where it was told; should the hints go round in
                    // circles, the deadline still ends it, and so does the pause below
                    // once they keep coming.
                    backoff = self.inner.config.backoff_min;
                }
                Next::Retry => {
                    self.inner.retries.fetch_add(1, Ordering::Relaxed);
                    peer_turn += 1;
                    sleep_until_or(deadline, backoff).await;
                    backoff = (backoff * 2).min(self.inner.config.backoff_max);
                }
                Next::Fail(error) => return Err(error),
            }
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
                _ => {
                    self.set_leader(region_id, None);
                    Next::Retry
                }
            },
            Some(kv_error::Kind::EpochNotMatch(stale)) => {
                match &stale.current {
                    Some(current) => self.cache_region(current.clone(), None),
                    None => self.forget_region(region_id),
                }
                Next::Redirect
            }
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

    /// The region holding `key`: from the cache, else asked of the stores in turn.
    async fn locate(&self, key: &[u8]) -> Result<CachedRegion, String> {
        if let Some(region) = self.inner.cache.read().unwrap_or_else(PoisonError::into_inner).find(key) {
            return Ok(region);
        }
        self.inner.region_lookups.fetch_add(1, Ordering::Relaxed);
        let stores: Vec<(u64, KvClient<Channel>)> = self.known_stores();
        let mut errors = Vec::new();
        if stores.is_empty() {
            // Perhaps every endpoint was down at connect; ask again.
            let _ = self.learn_store_ids().await;
        }
        for (store_id, mut kv) in stores {
            let request = GetRegionRequest { key: key.to_vec() };
            match tokio::time::timeout(self.inner.config.rpc_timeout, kv.get_region(request)).await {
                Ok(Ok(answer)) => {
                    let answer = answer.into_inner();
                    match (answer.error, answer.region) {
                        (None, Some(region)) => {
                            let leader = answer.leader.map(|peer| peer.store_id);
                            self.cache_region(region, leader);
                            if let Some(found) =
                                self.inner.cache.read().unwrap_or_else(PoisonError::into_inner).find(key)
                            {
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

    /// Asks every endpoint whose store id is unknown for it. The error lists the endpoints
    /// that did not answer.
    async fn learn_store_ids(&self) -> Result<(), String> {
        let unknown: Vec<(usize, String, KvClient<Channel>)> = {
            let endpoints = self.inner.endpoints.lock().unwrap_or_else(PoisonError::into_inner);
            endpoints
                .iter()
                .enumerate()
                .filter(|(_, state)| state.store_id.is_none())
                .map(|(i, state)| (i, state.address.clone(), state.client.clone()))
                .collect()
        };
        let rpc_timeout = self.inner.config.rpc_timeout;
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

    /// One RPC's time: the configured bound, or what is left of the operation if less.
    fn rpc_timeout(&self, deadline: Instant) -> Duration {
        self.inner.config.rpc_timeout.min(deadline.saturating_duration_since(Instant::now()))
    }

    fn timeout(&self, last_error: String) -> ClientError {
        ClientError::Timeout { timeout: self.inner.config.operation_timeout, last_error }
    }
}

/// Sleeps `pause`, or until `deadline` if that comes first.
async fn sleep_until_or(deadline: Instant, pause: Duration) {
    tokio::time::sleep_until(deadline.min(Instant::now() + pause)).await;
}
