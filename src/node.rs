//! [`Node`]: one store of a static cluster with its network services, in one process.
//!
//! ```text
//! NodeConfig --bootstrap (idempotent)--> data_dir/db
//!   TransportRuntime (tokio) --+-- RaftServer on raft_address  --> ReceiverSlot --> Store
//!                              +-- Kv server on kv_address      --> KvService  --> Store
//!   Store --Outbound<GrpcLink>--> other nodes' raft_address
//! ```
//!
//! The cluster is static: every node is given the same stores and the same number of
//! regions, and bootstraps the same regions (region i has one voter per store, with peer id
//! `region_id * 1000 + store_id`). Bootstrapping writes nothing on a store that already
//! holds regions, so a node restarted with its data directory comes back with its data.
//!
//! The Raft transport and the KV service listen on two addresses: one server for both would
//! need tonic's router, which the workspace leaves out to keep the build small.

use std::collections::BTreeMap;
use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tessera_proto::storepb::{Peer, PeerRole, Region, RegionEpoch};
use tessera_router::{Outbound, OutboundConfig};
use tessera_store::{bootstrap, initial_peer_id, Store, StoreConfig};
use tessera_transport::{
    stop_requested, tokio_listener, GrpcLink, RaftServer, ReceiverSlot, ServingTask, StaticResolver,
    TransportConfig, TransportRuntime,
};
use thiserror::Error;
use tonic::transport::server::TcpIncoming;

use crate::kv::kvservicepb::kv_server::KvServer;
use crate::kv::{KvService, KvServiceConfig, SharedStore};
use crate::metrics_http::MetricsServer;

/// Peer ids are `region_id * 1000 + store_id`, so store ids stay below this.
const STORE_ID_LIMIT: u64 = 1_000;

/// Initial regions split the key space at two-byte boundaries, so at most this many.
const REGIONS_LEN_MAX: u64 = 1 << 16;

/// How long `shutdown` lets in-flight KV requests finish before it cuts them off.
const KV_SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// How often a resting peer asks its members whether it is still one of them
/// (`StoreConfig::resting_peer_check_ticks`, which counts ticks): the store default's
/// period at its default tick. Five minutes bounds how long a peer removed while it
/// rested keeps its data, at about six small messages per resting region per period.
const RESTING_PEER_CHECK_PERIOD: Duration = Duration::from_secs(300);

/// `period` in ticks of `tick_interval` (rounded down), at least one.
fn ticks_in(period: Duration, tick_interval: Duration) -> usize {
    let ticks = (period.as_nanos() / tick_interval.as_nanos().max(1)).max(1);
    usize::try_from(ticks).unwrap_or(usize::MAX)
}

/// Everything a node needs to start. `NodeConfig::new` fills in defaults for the rest.
#[derive(Clone, Debug)]
pub struct NodeConfig {
    /// This node's store id: unique in the cluster, in 1..1000.
    pub store_id: u64,
    /// Where the store keeps RocksDB and snapshots. Reusing it on restart keeps the data.
    pub data_dir: PathBuf,
    /// Where other nodes' stores reach this one (the Raft transport). Must be this
    /// node's entry in `peers`.
    pub raft_address: String,
    /// Where clients reach the KV service.
    pub kv_address: String,
    /// The Raft address of every store of the cluster, this one included. Every node of the
    /// cluster must be given the same stores.
    pub peers: BTreeMap<u64, String>,
    /// How many regions the cluster starts with, splitting the key space evenly at two-byte
    /// boundaries (for 4: `[.., 0x4000)`, `[0x4000, 0x8000)`, ...). Every node must be
    /// given the same number.
    pub regions_len: u64,
    /// Threads stepping Raft peers (and fsyncing their writes), and threads applying
    /// committed entries.
    pub raft_pool_size: usize,
    pub apply_pool_size: usize,
    /// Threads of the tokio runtime under both gRPC servers and the outbound links.
    pub runtime_worker_threads: usize,
    /// One Raft tick, and the election and heartbeat timeouts in ticks.
    pub raft_tick_interval: Duration,
    pub raft_election_ticks: usize,
    pub raft_heartbeat_ticks: usize,
    /// Where `GET /metrics` serves every metric of the process in Prometheus text format;
    /// none when absent. Serving installs the process's metrics recorder (see
    /// [`crate::metrics_http`]).
    pub metrics_address: Option<String>,
    pub kv: KvServiceConfig,
    pub transport: TransportConfig,
}

impl NodeConfig {
    /// A node `store_id` of the cluster `peers`, with one region and default timings.
    pub fn new(
        store_id: u64,
        data_dir: impl Into<PathBuf>,
        raft_address: impl Into<String>,
        kv_address: impl Into<String>,
        peers: BTreeMap<u64, String>,
    ) -> NodeConfig {
        let store_defaults = StoreConfig::new(store_id, PathBuf::new());
        NodeConfig {
            store_id,
            data_dir: data_dir.into(),
            raft_address: raft_address.into(),
            kv_address: kv_address.into(),
            peers,
            regions_len: 1,
            raft_pool_size: store_defaults.raft_batch.pool_size,
            apply_pool_size: store_defaults.apply_batch.pool_size,
            runtime_worker_threads: 2,
            raft_tick_interval: store_defaults.raft_tick_interval,
            raft_election_ticks: store_defaults.raft_election_ticks,
            raft_heartbeat_ticks: store_defaults.raft_heartbeat_ticks,
            metrics_address: None,
            kv: KvServiceConfig::default(),
            transport: TransportConfig::default(),
        }
    }

    fn validate(&self) -> Result<(), NodeError> {
        let invalid = |reason: String| Err(NodeError::Config(reason));
        if self.store_id == 0 || self.store_id >= STORE_ID_LIMIT {
            return invalid(format!("store_id {} is not in 1..{STORE_ID_LIMIT}", self.store_id));
        }
        if let Some(&bad) = self.peers.keys().find(|&&id| id == 0 || id >= STORE_ID_LIMIT) {
            return invalid(format!("peer store id {bad} is not in 1..{STORE_ID_LIMIT}"));
        }
        match self.peers.get(&self.store_id) {
            Some(address) if *address == self.raft_address => {}
            Some(address) => {
                return invalid(format!(
                    "peers gives store {} the address {address}, but raft_address is {}",
                    self.store_id, self.raft_address
                ))
            }
            None => return invalid(format!("peers does not list this store ({})", self.store_id)),
        }
        if self.runtime_worker_threads == 0 {
            return invalid("runtime_worker_threads must be at least 1".to_string());
        }
        if self.regions_len == 0 || self.regions_len > REGIONS_LEN_MAX {
            return invalid(format!("regions_len {} is not in 1..={REGIONS_LEN_MAX}", self.regions_len));
        }
        Ok(())
    }

    /// The store's config: the store defaults with this node's pools and timings.
    pub fn store_config(&self) -> StoreConfig {
        let mut config = StoreConfig::new(self.store_id, self.data_dir.clone());
        config.raft_batch.pool_size = self.raft_pool_size;
        config.apply_batch.pool_size = self.apply_pool_size;
        config.raft_tick_interval = self.raft_tick_interval;
        config.raft_election_ticks = self.raft_election_ticks;
        config.raft_heartbeat_ticks = self.raft_heartbeat_ticks;
        // The node file has no key for it: it follows a longer election timeout, which it
        // must leave room for.
        config.stale_peer_check_ticks = config.stale_peer_check_ticks.max(5 * self.raft_election_ticks);
        // Nor for the resting peers' check: it keeps its period in time, whatever the tick.
        config.resting_peer_check_ticks = ticks_in(RESTING_PEER_CHECK_PERIOD, self.raft_tick_interval);
        config
    }

    /// The regions every store of the cluster bootstraps.
    pub fn initial_regions(&self) -> Vec<Region> {
        initial_regions(&self.peers.keys().copied().collect::<Vec<_>>(), self.regions_len)
    }
}

/// `regions_len` regions splitting the key space evenly at two-byte boundaries, each with
/// one voter on every store of `store_ids`.
pub fn initial_regions(store_ids: &[u64], regions_len: u64) -> Vec<Region> {
    assert!((1..=REGIONS_LEN_MAX).contains(&regions_len), "regions_len {regions_len} out of range");
    let boundary = |i: u64| ((i * REGIONS_LEN_MAX / regions_len) as u16).to_be_bytes().to_vec();
    (1..=regions_len)
        .map(|id| Region {
            id,
            start_key: if id == 1 { Vec::new() } else { boundary(id - 1) },
            end_key: if id == regions_len { Vec::new() } else { boundary(id) },
            epoch: Some(RegionEpoch { conf_ver: 1, version: 1 }),
            peers: store_ids
                .iter()
                .map(|&store_id| Peer {
                    id: initial_peer_id(id, store_id),
                    store_id,
                    role: PeerRole::Voter as i32,
                })
                .collect(),
        })
        .collect()
}

/// Why a node did not start.
#[derive(Debug, Error)]
pub enum NodeError {
    #[error("invalid node config: {0}")]
    Config(String),
    #[error("binding {address}: {source}")]
    Bind { address: String, source: std::io::Error },
    #[error("runtime: {0}")]
    Runtime(std::io::Error),
    #[error("store: {0}")]
    Store(#[from] tessera_store::StartError),
    #[error("transport server: {0}")]
    Server(#[from] tessera_transport::ServerError),
    #[error("transport: {0}")]
    Transport(String),
    #[error("metrics: {0}")]
    Metrics(String),
}

/// A running node. Stop it with [`Node::shutdown`]; dropping it stops it too, without
/// letting in-flight KV requests finish. Both block until the store and the transport have
/// stopped, so call them outside any tokio runtime: blocking inside one makes tokio panic.
#[derive(Debug)]
pub struct Node {
    store_id: u64,
    raft_address: SocketAddr,
    kv_address: SocketAddr,
    store: Arc<SharedStore>,
    slot: Arc<ReceiverSlot>,
    outbound: Arc<Outbound<GrpcLink>>,
    raft_server: Option<RaftServer>,
    kv_server: Option<ServingTask>,
    metrics_server: Option<MetricsServer>,
    // Dropped last: the servers and the link run on it.
    _runtime: TransportRuntime,
}

impl Node {
    /// Starts a node on the addresses of `config`.
    pub fn start(config: NodeConfig) -> Result<Node, NodeError> {
        let bind = |address: &str| {
            TcpListener::bind(address)
                .map_err(|source| NodeError::Bind { address: address.to_string(), source })
        };
        let raft_listener = bind(&config.raft_address)?;
        let kv_listener = bind(&config.kv_address)?;
        Node::start_on(config, raft_listener, kv_listener)
    }

    /// Starts a node on listeners bound already (tests bind port 0 first, so that every
    /// node's address is known before any starts). `config.raft_address` must be the
    /// address other nodes know `raft_listener` by.
    pub fn start_on(
        config: NodeConfig,
        raft_listener: TcpListener,
        kv_listener: TcpListener,
    ) -> Result<Node, NodeError> {
        config.validate()?;
        let store_id = config.store_id;
        let store_config = config.store_config();
        bootstrap(&store_config, &config.initial_regions())?;
        let kv_address = kv_listener.local_addr().map_err(NodeError::Runtime)?;
        let metrics_listener = match &config.metrics_address {
            Some(address) => Some(
                TcpListener::bind(address)
                    .map_err(|source| NodeError::Bind { address: address.clone(), source })?,
            ),
            None => None,
        };
        let runtime = TransportRuntime::new(&store_id.to_string(), config.runtime_worker_threads)
            .map_err(NodeError::Runtime)?;
        // Before the store starts, so that its first figures are recorded.
        let metrics_server = match metrics_listener {
            Some(listener) => {
                let handle = crate::metrics_http::prometheus_handle().map_err(NodeError::Metrics)?;
                Some(MetricsServer::start(listener, handle, &runtime.handle()).map_err(NodeError::Runtime)?)
            }
            None => None,
        };
        let slot = ReceiverSlot::new();
        let raft_server =
            RaftServer::start(&config.transport, store_id, raft_listener, slot.clone(), runtime.handle())?;
        let resolver =
            Arc::new(StaticResolver::new(config.peers.iter().map(|(&id, address)| (id, address.clone()))));
        let link = GrpcLink::new(config.transport.clone(), store_id, resolver, runtime.handle())
            .map_err(|e| NodeError::Transport(e.to_string()))?;
        let outbound = Arc::new(
            Outbound::new(store_id, link, OutboundConfig::default())
                .map_err(|e| NodeError::Transport(e.to_string()))?,
        );
        let store = Store::start(store_config, outbound.clone())?;
        slot.set(store.receiver());
        let store = Arc::new(SharedStore::new(store));
        let kv_server =
            start_kv_server(&runtime, kv_listener, KvService::new(store.clone(), config.kv.clone()))?;
        Ok(Node {
            store_id,
            raft_address: raft_server.local_addr(),
            kv_address,
            store,
            slot,
            outbound,
            raft_server: Some(raft_server),
            kv_server: Some(kv_server),
            metrics_server,
            _runtime: runtime,
        })
    }

    pub fn store_id(&self) -> u64 {
        self.store_id
    }

    pub fn raft_address(&self) -> SocketAddr {
        self.raft_address
    }

    pub fn kv_address(&self) -> SocketAddr {
        self.kv_address
    }

    /// Where `GET /metrics` is served, if the config asked for it.
    pub fn metrics_address(&self) -> Option<SocketAddr> {
        self.metrics_server.as_ref().map(MetricsServer::local_addr)
    }

    /// Runs `f` with the node's store (for status pages, tools and tests).
    pub fn with_store<T>(&self, f: impl FnOnce(&Store) -> T) -> Option<T> {
        self.store.with(f)
    }

    /// Stops the node: the KV server stops accepting and lets in-flight requests finish
    /// (bounded), then the store stops, then the Raft server and the link. When it returns
    /// both addresses can be bound again. Call it from outside any tokio runtime.
    pub fn shutdown(mut self) {
        if let Some(kv_server) = self.kv_server.take() {
            kv_server.shutdown(KV_SHUTDOWN_GRACE);
        }
        self.stop_rest();
    }

    /// Everything after the KV server, in the order that lets each part wind down: the
    /// store stops before the transport it sends through.
    fn stop_rest(&mut self) {
        self.metrics_server = None;
        self.slot.clear();
        if let Some(store) = self.store.take() {
            store.stop();
        }
        if let Some(raft_server) = self.raft_server.take() {
            raft_server.shutdown();
        }
        self.outbound.link().shutdown();
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        // Dropping the KV server stops it without letting requests finish.
        self.kv_server = None;
        self.stop_rest();
    }
}

fn start_kv_server(
    runtime: &TransportRuntime,
    listener: TcpListener,
    service: KvService,
) -> Result<ServingTask, NodeError> {
    let listener = tokio_listener(listener, &runtime.handle()).map_err(NodeError::Runtime)?;
    let incoming = TcpIncoming::from(listener).with_nodelay(Some(true));
    Ok(ServingTask::spawn(&runtime.handle(), move |stopped| async move {
        let serve = tonic::transport::Server::builder().serve_with_incoming_shutdown(
            KvServer::new(service),
            incoming,
            stop_requested(stopped),
        );
        if let Err(error) = serve.await {
            tracing::error!(%error, "the KV server stopped on an error");
        }
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn initial_regions_split_the_key_space_evenly_with_one_peer_per_store() {
        let regions = initial_regions(&[1, 2, 3], 4);
        let ranges: Vec<(Vec<u8>, Vec<u8>)> =
            regions.iter().map(|r| (r.start_key.clone(), r.end_key.clone())).collect();
        assert_eq!(
            ranges,
            vec![
                (vec![], vec![0x40, 0x00]),
                (vec![0x40, 0x00], vec![0x80, 0x00]),
                (vec![0x80, 0x00], vec![0xc0, 0x00]),
                (vec![0xc0, 0x00], vec![]),
            ]
        );
        let peer_ids: Vec<u64> = regions[2].peers.iter().map(|p| p.id).collect();
        assert_eq!(peer_ids, vec![3001, 3002, 3003]);
        assert_eq!(initial_regions(&[1], 1)[0].end_key, Vec::<u8>::new());
    }

    /// Settings the node file leaves out follow the ones it gives, so that any valid
    /// election timeout makes a store config that validates.
    #[test]
    fn a_long_election_timeout_makes_a_valid_store_config() {
        let peers = BTreeMap::from([(1, "127.0.0.1:1".to_string())]);
        let mut node = NodeConfig::new(1, "/nonexistent", "127.0.0.1:1", "127.0.0.1:0", peers);
        node.raft_election_ticks = 60;
        let store = node.store_config();
        assert!(store.validate().is_ok(), "{:?}", store.validate());
        assert_eq!(store.stale_peer_check_ticks, 300);
    }

    /// The store counts the resting peers' check in ticks; a node keeps its period in
    /// time, the store default's at the default tick, whatever tick its file sets.
    #[test]
    fn the_resting_check_keeps_its_period_whatever_the_tick() {
        let peers = BTreeMap::from([(1, "127.0.0.1:1".to_string())]);
        let mut node = NodeConfig::new(1, "/nonexistent", "127.0.0.1:1", "127.0.0.1:0", peers);
        let defaults = StoreConfig::new(1, "/nonexistent");
        assert_eq!(node.raft_tick_interval, defaults.raft_tick_interval);
        assert_eq!(node.store_config().resting_peer_check_ticks, defaults.resting_peer_check_ticks);
        node.raft_tick_interval = Duration::from_secs(1);
        assert_eq!(node.store_config().resting_peer_check_ticks, 300);
        node.raft_tick_interval = Duration::from_millis(70);
        assert_eq!(node.store_config().resting_peer_check_ticks, 4_285, "rounded down");
        node.raft_tick_interval = Duration::from_secs(600);
        assert_eq!(node.store_config().resting_peer_check_ticks, 1, "at least one tick");
    }

    #[test]
    fn a_config_that_does_not_list_this_store_or_disagrees_on_its_address_is_refused() {
        let peers = BTreeMap::from([(1, "127.0.0.1:1".to_string()), (2, "127.0.0.1:2".to_string())]);
        let valid = NodeConfig::new(1, "/nonexistent", "127.0.0.1:1", "127.0.0.1:0", peers.clone());
        assert!(valid.validate().is_ok());
        let unlisted = NodeConfig::new(3, "/nonexistent", "127.0.0.1:3", "127.0.0.1:0", peers.clone());
        assert!(matches!(unlisted.validate(), Err(NodeError::Config(_))));
        let elsewhere = NodeConfig::new(1, "/nonexistent", "127.0.0.1:9", "127.0.0.1:0", peers.clone());
        assert!(matches!(elsewhere.validate(), Err(NodeError::Config(_))));
        let mut no_regions = valid.clone();
        no_regions.regions_len = 0;
        assert!(matches!(no_regions.validate(), Err(NodeError::Config(_))));
        let mut no_threads = valid.clone();
        no_threads.runtime_worker_threads = 0;
        assert!(matches!(no_threads.validate(), Err(NodeError::Config(_))));
        let big_id = NodeConfig::new(1_000, "/nonexistent", "127.0.0.1:1", "127.0.0.1:0", peers);
        assert!(matches!(big_id.validate(), Err(NodeError::Config(_))));
    }
}
