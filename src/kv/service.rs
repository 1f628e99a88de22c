//! [`KvService`]: the `Kv` gRPC service over one store.

use std::collections::BTreeMap;
use std::sync::{Arc, PoisonError, RwLock};
use std::time::{Duration, Instant};

use tessera_proto::kvpb::{
    BatchPutRequest, BatchPutResponse, DeleteRequest, DeleteResponse, FailedPart, GetRequest, GetResponse,
    KvError, KvPair, LocateKeyRequest, LocateKeyResponse, PutRequest, PutResponse, RegionContext,
    ScanRequest, ScanResponse, StatusRequest, StatusResponse,
};
use tessera_proto::serverpb::{CmdType, RaftCmdRequest};
use tessera_proto::storepb::{Region, RegionEpoch};
use tessera_store::{Callback, CmdResponse, ReadQuery, ReadRequest, ReadResponse, Store, StoreResult};
use tonic::{Request, Response, Status};

use super::errors::{kv_error_of, no_region_for_key, timeout_error};
use super::kvservicepb::kv_server::Kv;

/// How long `LocateKey` waits for the peer to say who leads; past it the answer goes out
/// without a leader (the region alone routes a client well enough).
const LEADER_QUERY_TIMEOUT: Duration = Duration::from_millis(200);

/// The limits of what one client request may carry, and how long the service waits for the
/// store. Every field bounds memory or time a single client can make the node spend.
#[derive(Clone, Debug, PartialEq)]
pub struct KvServiceConfig {
    /// Longest key accepted. Keys are copied into every replica's log and data, and a huge
    /// key would make region boundaries and scans expensive.
    pub key_bytes_max: usize,
    /// Largest value accepted. A value travels in one Raft entry to every replica, so this
    /// bounds the size of a single proposal.
    pub value_bytes_max: usize,
    /// Most pairs in one BatchPut.
    pub batch_pairs_max: usize,
    /// Most pairs one Scan returns, whatever the client asks (the store has its own maximum
    /// too; the smaller one wins).
    pub scan_limit_max: usize,
    /// How long a request waits for the store's answer before it is answered with a
    /// `TIMEOUT` error (a write's outcome is then unknown).
    pub request_timeout: Duration,
    /// Most requests being served at once (each may wait up to `request_timeout` for the
    /// store). Past it a request is answered `ServerIsBusy` at once, so that clients back
    /// off instead of the node holding an unbounded number of waiting requests.
    pub requests_in_flight_max: usize,
}

impl Default for KvServiceConfig {
    fn default() -> Self {
        KvServiceConfig {
            key_bytes_max: 4 << 10,
            value_bytes_max: 1 << 20,
            batch_pairs_max: 1_024,
            scan_limit_max: 10_000,
            request_timeout: Duration::from_secs(10),
            requests_in_flight_max: 16_384,
        }
    }
}

/// The store a node's services share. The node takes it out to stop it; requests that
/// arrive afterwards hear `STORE_STOPPED` instead of reaching a store that is going away.
#[derive(Debug, Default)]
pub struct SharedStore(RwLock<Option<Store>>);

impl SharedStore {
    pub fn new(store: Store) -> SharedStore {
        SharedStore(RwLock::new(Some(store)))
    }

    /// Runs `f` with the store, if it still runs. `f` must not block: the lock is held.
    pub fn with<T>(&self, f: impl FnOnce(&Store) -> T) -> Option<T> {
        self.0.read().unwrap_or_else(PoisonError::into_inner).as_ref().map(f)
    }

    /// Takes the store out, for the node to stop it.
    pub fn take(&self) -> Option<Store> {
        self.0.write().unwrap_or_else(PoisonError::into_inner).take()
    }
}

/// The `Kv` service over one store. Requests with a region context go to that region;
/// others go to the region hosted here that holds the key.
#[derive(Debug)]
pub struct KvService {
    store: Arc<SharedStore>,
    config: KvServiceConfig,
    in_flight: Arc<tokio::sync::Semaphore>,
}

/// Where a request goes: a region and the epoch it was routed with.
struct Route {
    region_id: u64,
    epoch: Option<RegionEpoch>,
}

impl KvService {
    pub fn new(store: Arc<SharedStore>, config: KvServiceConfig) -> KvService {
        let in_flight = Arc::new(tokio::sync::Semaphore::new(config.requests_in_flight_max));
        KvService { store, config, in_flight }
    }

    /// A slot among the requests in flight, or `ServerIsBusy` (counted) when none is free.
    fn admit(&self, method: &'static str, started: Instant) -> Result<InFlight, KvError> {
        match Arc::clone(&self.in_flight).try_acquire_owned() {
            Ok(permit) => {
                let gauge = metrics::gauge!("tessera_kv_requests_in_flight");
                gauge.increment(1.0);
                Ok(InFlight { _permit: permit, gauge })
            }
            Err(_) => {
                let error = kv_error_of(tessera_store::StoreError::ServerIsBusy(format!(
                    "{} requests in flight (requests_in_flight_max)",
                    self.config.requests_in_flight_max
                )));
                observe(method, started, Some(&error));
                Err(error)
            }
        }
    }

    fn check_key(&self, key: &[u8]) -> Result<(), Status> {
        if key.is_empty() {
            return Err(Status::invalid_argument("the key is empty"));
        }
        if key.len() > self.config.key_bytes_max {
            return Err(Status::invalid_argument(format!(
                "the key has {} bytes, more than key_bytes_max ({})",
                key.len(),
                self.config.key_bytes_max
            )));
        }
        Ok(())
    }

    fn check_value(&self, value: &[u8]) -> Result<(), Status> {
        if value.len() > self.config.value_bytes_max {
            return Err(Status::invalid_argument(format!(
                "the value has {} bytes, more than value_bytes_max ({})",
                value.len(),
                self.config.value_bytes_max
            )));
        }
        Ok(())
    }

    /// The region hosted here whose range holds `key`, as this store knows it.
    fn region_for_key(&self, key: &[u8]) -> Option<Region> {
        self.store.with(|store| store.region_for_key(key)).flatten()
    }

    /// The client's region context if it gave one, else the region here that holds `key`.
    fn route(&self, context: Option<RegionContext>, key: &[u8]) -> Result<Route, KvError> {
        if let Some(context) = context.filter(|c| c.region_id != 0) {
            return Ok(Route { region_id: context.region_id, epoch: context.region_epoch });
        }
        let region = self.region_for_key(key).ok_or_else(no_region_for_key)?;
        Ok(Route { region_id: region.id, epoch: region.epoch })
    }

    /// Proposes `command` and waits (without blocking a thread) for it to be applied.
    async fn execute(&self, command: RaftCmdRequest) -> Result<(), KvError> {
        let answer = self.propose(command);
        self.wait(answer, self.deadline()).await.map(drop)
    }

    /// Proposes `command`; its answer arrives on the returned channel once it is applied.
    fn propose(&self, command: RaftCmdRequest) -> Answer<CmdResponse> {
        let (callback, answer) = oneshot_callback();
        // Without a store the callback is dropped, which answers it with `StoreStopped`.
        self.store.with(move |store| store.propose(command, callback));
        answer
    }

    /// Reads linearizably from the region's leader here.
    async fn read(&self, request: ReadRequest) -> Result<ReadResponse, KvError> {
        let (callback, answer) = oneshot_callback();
        self.store.with(move |store| store.read(request, callback));
        self.wait(answer, self.deadline()).await
    }

    /// When a request that starts now stops waiting for the store.
    fn deadline(&self) -> tokio::time::Instant {
        tokio::time::Instant::now() + self.config.request_timeout
    }

    async fn wait<T>(&self, receiver: Answer<T>, deadline: tokio::time::Instant) -> Result<T, KvError> {
        match tokio::time::timeout_at(deadline, receiver).await {
            Ok(Ok(result)) => result.map_err(kv_error_of),
            // A callback always answers, even when dropped; a closed channel means the
            // store went away without running it.
            Ok(Err(_)) => Err(kv_error_of(tessera_store::StoreError::StoreStopped)),
            Err(_) => Err(timeout_error(self.config.request_timeout.as_millis())),
        }
    }

    /// Where a scan of `[start_key, end_key)` that stopped after `pairs` continues, if it
    /// did not exhaust the range: after the last pair when it stopped at the limit, at the
    /// region's end when it stopped there before `end_key`.
    fn next_start_key(
        &self,
        route: &Route,
        start_key: &[u8],
        end_key: &[u8],
        pairs: &[(Vec<u8>, Vec<u8>)],
        reached_region_end: bool,
        reached_limit: bool,
    ) -> Result<Option<Vec<u8>>, KvError> {
        if reached_region_end {
            // The read answers only whether it reached the region's end; where that end is
            // comes from the region record here. A region that is no longer the one read
            // (it split in between) has to be routed again.
            let region = self.region_for_key(start_key).ok_or_else(no_region_for_key)?;
            if region.id != route.region_id {
                return Err(kv_error_of(tessera_store::StoreError::EpochNotMatch {
                    current: Box::new(region),
                }));
            }
            let region_end = region.end_key;
            let range_goes_on =
                !region_end.is_empty() && (end_key.is_empty() || region_end.as_slice() < end_key);
            return Ok(range_goes_on.then_some(region_end));
        }
        // The store says so rather than the count being compared with our limit: it may
        // have capped the scan lower, at its own `scan_limit_max`.
        if reached_limit {
            // The smallest key after the last one returned.
            let mut next = pairs.last().map(|(key, _)| key.clone()).unwrap_or_default();
            next.push(0);
            return Ok(Some(next));
        }
        Ok(None)
    }
}

/// One request's slot among those in flight; the gauge counts it while it lives.
struct InFlight {
    _permit: tokio::sync::OwnedSemaphorePermit,
    gauge: metrics::Gauge,
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.gauge.decrement(1.0);
    }
}

/// Where a store callback's answer arrives for the request's task to await.
type Answer<T> = tokio::sync::oneshot::Receiver<StoreResult<T>>;

/// A callback that completes a oneshot channel: the store answers on its own threads, and
/// the gRPC task awaits the channel, so no runtime thread ever blocks on the store.
fn oneshot_callback<T: Send + 'static>() -> (Callback<T>, Answer<T>) {
    let (sender, answer) = tokio::sync::oneshot::channel();
    let callback = Callback::new(move |result| {
        let _ = sender.send(result);
    });
    (callback, answer)
}

/// Counts a request refused as malformed (`INVALID_ARGUMENT`), and passes its status on.
fn refused(method: &'static str, status: Status) -> Status {
    metrics::counter!("tessera_kv_requests_total", "method" => method, "result" => "invalid_argument")
        .increment(1);
    status
}

/// Counts a finished request by method and outcome, and records its latency.
fn observe(method: &'static str, started: Instant, error: Option<&KvError>) {
    let result = if error.is_some() { "error" } else { "ok" };
    metrics::counter!("tessera_kv_requests_total", "method" => method, "result" => result).increment(1);
    metrics::histogram!("tessera_kv_request_duration_seconds", "method" => method)
        .record(started.elapsed().as_secs_f64());
}

#[tonic::async_trait]
impl Kv for KvService {
    async fn put(&self, request: Request<PutRequest>) -> Result<Response<PutResponse>, Status> {
        let started = Instant::now();
        let _in_flight = match self.admit("put", started) {
            Ok(slot) => slot,
            Err(error) => return Ok(Response::new(PutResponse { error: Some(error) })),
        };
        let PutRequest { context, key, value } = request.into_inner();
        self.check_key(&key).map_err(|status| refused("put", status))?;
        self.check_value(&value).map_err(|status| refused("put", status))?;
        let outcome = match self.route(context, &key) {
            Ok(route) => {
                let requests = vec![tessera_store::request(CmdType::Put, &key, &value, b"")];
                self.execute(tessera_store::command(route.region_id, route.epoch, requests)).await
            }
            Err(e) => Err(e),
        };
        let error = outcome.err();
        observe("put", started, error.as_ref());
        Ok(Response::new(PutResponse { error }))
    }

    async fn get(&self, request: Request<GetRequest>) -> Result<Response<GetResponse>, Status> {
        let started = Instant::now();
        let _in_flight = match self.admit("get", started) {
            Ok(slot) => slot,
            Err(error) => return Ok(Response::new(GetResponse { error: Some(error), value: None })),
        };
        let GetRequest { context, key } = request.into_inner();
        self.check_key(&key).map_err(|status| refused("get", status))?;
        let outcome = match self.route(context, &key) {
            Ok(route) => {
                let read = ReadRequest {
                    region_id: route.region_id,
                    region_epoch: route.epoch,
                    query: ReadQuery::Get { key },
                };
                self.read(read).await
            }
            Err(e) => Err(e),
        };
        let response = match outcome {
            Ok(ReadResponse::Value(value)) => GetResponse { error: None, value },
            Ok(ReadResponse::Pairs { .. }) => {
                return Err(Status::internal("the store answered a get with pairs"));
            }
            Err(error) => GetResponse { error: Some(error), value: None },
        };
        observe("get", started, response.error.as_ref());
        Ok(Response::new(response))
    }

    async fn delete(&self, request: Request<DeleteRequest>) -> Result<Response<DeleteResponse>, Status> {
        let started = Instant::now();
        let _in_flight = match self.admit("delete", started) {
            Ok(slot) => slot,
            Err(error) => return Ok(Response::new(DeleteResponse { error: Some(error) })),
        };
        let DeleteRequest { context, key } = request.into_inner();
        self.check_key(&key).map_err(|status| refused("delete", status))?;
        let outcome = match self.route(context, &key) {
            Ok(route) => {
                let requests = vec![tessera_store::request(CmdType::Delete, &key, b"", b"")];
                self.execute(tessera_store::command(route.region_id, route.epoch, requests)).await
            }
            Err(e) => Err(e),
        };
        let error = outcome.err();
        observe("delete", started, error.as_ref());
        Ok(Response::new(DeleteResponse { error }))
    }

    async fn scan(&self, request: Request<ScanRequest>) -> Result<Response<ScanResponse>, Status> {
        let started = Instant::now();
        let _in_flight = match self.admit("scan", started) {
            Ok(slot) => slot,
            Err(error) => {
                return Ok(Response::new(ScanResponse { error: Some(error), ..Default::default() }))
            }
        };
        let ScanRequest { context, start_key, end_key, limit } = request.into_inner();
        if start_key.len() > self.config.key_bytes_max || end_key.len() > self.config.key_bytes_max {
            return Err(refused(
                "scan",
                Status::invalid_argument("a scan bound is longer than key_bytes_max"),
            ));
        }
        if !end_key.is_empty() && end_key <= start_key {
            return Err(refused(
                "scan",
                Status::invalid_argument("a scan needs start_key < end_key (or an empty end_key)"),
            ));
        }
        let limit = match limit as usize {
            0 => self.config.scan_limit_max,
            limit => limit.min(self.config.scan_limit_max),
        };
        let route = match self.route(context, &start_key) {
            Ok(route) => route,
            Err(error) => {
                observe("scan", started, Some(&error));
                return Ok(Response::new(ScanResponse { error: Some(error), ..Default::default() }));
            }
        };
        let read = ReadRequest {
            region_id: route.region_id,
            region_epoch: route.epoch,
            query: ReadQuery::Scan { start_key: start_key.clone(), end_key: end_key.clone(), limit },
        };
        let response = match self.read(read).await {
            Ok(ReadResponse::Pairs { pairs, reached_region_end, reached_limit }) => {
                match self.next_start_key(
                    &route,
                    &start_key,
                    &end_key,
                    &pairs,
                    reached_region_end,
                    reached_limit,
                ) {
                    Ok(next_start_key) => ScanResponse {
                        error: None,
                        pairs: pairs.into_iter().map(|(key, value)| KvPair { key, value }).collect(),
                        next_start_key,
                    },
                    Err(error) => ScanResponse { error: Some(error), ..Default::default() },
                }
            }
            Ok(ReadResponse::Value(_)) => {
                return Err(Status::internal("the store answered a scan with a value"))
            }
            Err(error) => ScanResponse { error: Some(error), ..Default::default() },
        };
        observe("scan", started, response.error.as_ref());
        Ok(Response::new(response))
    }

    async fn batch_put(
        &self,
        request: Request<BatchPutRequest>,
    ) -> Result<Response<BatchPutResponse>, Status> {
        let started = Instant::now();
        let BatchPutRequest { pairs } = request.into_inner();
        let _in_flight = match self.admit("batch_put", started) {
            Ok(slot) => slot,
            Err(error) => {
                let keys = pairs.into_iter().map(|pair| pair.key).collect();
                return Ok(Response::new(BatchPutResponse {
                    failed: vec![FailedPart { keys, error: Some(error) }],
                }));
            }
        };
        if pairs.len() > self.config.batch_pairs_max {
            return Err(refused(
                "batch_put",
                Status::invalid_argument(format!(
                    "the batch has {} pairs, more than batch_pairs_max ({})",
                    pairs.len(),
                    self.config.batch_pairs_max
                )),
            ));
        }
        for pair in &pairs {
            self.check_key(&pair.key).map_err(|status| refused("batch_put", status))?;
            self.check_value(&pair.value).map_err(|status| refused("batch_put", status))?;
        }
        // One part per region, in the order of the pairs within it (a key written twice
        // keeps its last value). Keys no region here holds form a failed part of their own.
        let mut parts: BTreeMap<u64, (Region, Vec<KvPair>)> = BTreeMap::new();
        let mut unrouted = Vec::new();
        for pair in pairs {
            match self.region_for_key(&pair.key) {
                Some(region) => parts.entry(region.id).or_insert_with(|| (region, Vec::new())).1.push(pair),
                None => unrouted.push(pair.key),
            }
        }
        let mut failed = Vec::new();
        if !unrouted.is_empty() {
            failed.push(FailedPart { keys: unrouted, error: Some(no_region_for_key()) });
        }
        // Every part is proposed before any is awaited, so that the regions replicate their
        // parts in parallel.
        let deadline = self.deadline();
        let mut waiting = Vec::with_capacity(parts.len());
        for (region_id, (region, part)) in parts {
            let requests = part
                .iter()
                .map(|pair| tessera_store::request(CmdType::Put, &pair.key, &pair.value, b""))
                .collect();
            let answer = self.propose(tessera_store::command(region_id, region.epoch, requests));
            waiting.push((part, answer));
        }
        for (part, receiver) in waiting {
            if let Err(error) = self.wait(receiver, deadline).await {
                failed.push(FailedPart {
                    keys: part.into_iter().map(|pair| pair.key).collect(),
                    error: Some(error),
                });
            }
        }
        observe("batch_put", started, failed.first().and_then(|part| part.error.as_ref()));
        Ok(Response::new(BatchPutResponse { failed }))
    }

    async fn status(&self, _request: Request<StatusRequest>) -> Result<Response<StatusResponse>, Status> {
        let status = self
            .store
            .with(|store| StatusResponse {
                store_id: store.store_id(),
                regions_len: store.region_ids().len() as u64,
            })
            .ok_or_else(|| Status::unavailable("the store is stopped"))?;
        Ok(Response::new(status))
    }

    async fn locate_key(
        &self,
        request: Request<LocateKeyRequest>,
    ) -> Result<Response<LocateKeyResponse>, Status> {
        let started = Instant::now();
        let LocateKeyRequest { key } = request.into_inner();
        if key.len() > self.config.key_bytes_max {
            return Err(refused(
                "locate_key",
                Status::invalid_argument("the key is longer than key_bytes_max"),
            ));
        }
        let Some(region) = self.region_for_key(&key) else {
            let error = no_region_for_key();
            observe("locate_key", started, Some(&error));
            return Ok(Response::new(LocateKeyResponse { error: Some(error), ..Default::default() }));
        };
        // The leader as the peer here knows it, asked through its mailbox. A peer that does
        // not answer in time (a full mailbox, a peer going away) leaves the leader unknown:
        // the region alone is still an answer the client can route with.
        let (sender, receiver) = tokio::sync::oneshot::channel();
        let asked = self.store.with(|store| {
            store.ask_peer_status(region.id, move |status| {
                let _ = sender.send(status.leader_id);
            })
        });
        let leader_id = match asked {
            Some(Ok(())) => {
                tokio::time::timeout(LEADER_QUERY_TIMEOUT, receiver).await.ok().and_then(Result::ok)
            }
            _ => None,
        };
        let leader = leader_id.and_then(|id| region.peers.iter().find(|peer| peer.id == id).cloned());
        observe("locate_key", started, None);
        Ok(Response::new(LocateKeyResponse { error: None, region: Some(region), leader }))
    }
}

#[cfg(test)]
mod tests {
    use tessera_proto::kvpb::kv_error;

    use super::*;

    #[test]
    fn requests_beyond_the_in_flight_limit_are_answered_busy_until_a_slot_frees() {
        let config = KvServiceConfig { requests_in_flight_max: 2, ..KvServiceConfig::default() };
        let service = KvService::new(Arc::new(SharedStore::default()), config);
        let first = service.admit("put", Instant::now()).expect("a free slot");
        let second = service.admit("get", Instant::now()).expect("a free slot");
        let refused = service.admit("put", Instant::now()).err().expect("no slot left");
        assert!(matches!(refused.kind, Some(kv_error::Kind::ServerIsBusy(_))), "{refused:?}");
        drop(first);
        let third = service.admit("put", Instant::now()).expect("the freed slot");
        drop((second, third));
    }
}
