//! Stores in one process connected by real gRPC on loopback: each store has its own
//! runtime, server (on a port the OS picked) and link, as separate processes would.

#![allow(dead_code)]

use std::collections::HashMap;
use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use tempfile::TempDir;
use tessera_proto::serverpb::{RaftCmdRequest, RequestHeader};
use tessera_proto::storepb::{Peer, PeerRole, Region, RegionEpoch};
use tessera_router::{Outbound, OutboundConfig};
use tessera_store::cluster::{initial_peer_id, put_command};
use tessera_store::{bootstrap, CmdResponse, Store, StoreConfig, StoreError};
use tessera_transport::{
    GrpcLink, RaftServer, ReceiverSlot, StaticResolver, TransportConfig, TransportRuntime,
};

pub const WAIT: Duration = Duration::from_secs(20);

/// The transport config of test stores: quick reconnects, so that healing shows at once.
pub fn test_transport_config() -> TransportConfig {
    TransportConfig {
        reconnect_backoff_initial: Duration::from_millis(20),
        reconnect_backoff_max: Duration::from_millis(200),
        connect_timeout: Duration::from_millis(500),
        runtime_worker_threads: 1,
        ..TransportConfig::default()
    }
}

/// Binds `address` again after its previous server closed it. The port was ours a moment
/// ago; another process taking it in between would be a (rare) reason to fail.
pub fn rebind(address: SocketAddr) -> TcpListener {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        match TcpListener::bind(address) {
            Ok(listener) => return listener,
            Err(e) if Instant::now() < deadline => {
                let _ = e;
                thread::sleep(Duration::from_millis(20));
            }
            Err(e) => panic!("rebinding {address}: {e}"),
        }
    }
}

/// One store's process, as far as the network goes.
struct Node {
    store: Option<Store>,
    server: Option<RaftServer>,
    outbound: Arc<Outbound<GrpcLink>>,
    slot: Arc<ReceiverSlot>,
    runtime: TransportRuntime,
}

pub struct GrpcCluster {
    pub transport: TransportConfig,
    pub resolver: Arc<StaticResolver>,
    store_configs: HashMap<u64, StoreConfig>,
    addresses: HashMap<u64, SocketAddr>,
    /// Listeners bound up front (so every address is known before any store starts) and
    /// not yet handed to a server.
    listeners: HashMap<u64, TcpListener>,
    nodes: HashMap<u64, Node>,
    _dir: TempDir,
}

impl std::fmt::Debug for GrpcCluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GrpcCluster").field("addresses", &self.addresses).finish_non_exhaustive()
    }
}

impl GrpcCluster {
    /// `stores_len` stores and one region replicated on all of them; `configure` adjusts
    /// each store's config. Nothing runs yet.
    pub fn new(stores_len: u64, configure: impl Fn(&mut StoreConfig)) -> GrpcCluster {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let region = Region {
            id: 1,
            start_key: Vec::new(),
            end_key: Vec::new(),
            epoch: Some(RegionEpoch { conf_ver: 1, version: 1 }),
            peers: (1..=stores_len)
                .map(|store_id| Peer {
                    id: initial_peer_id(1, store_id),
                    store_id,
                    role: PeerRole::Voter as i32,
                })
                .collect(),
        };
        let resolver = Arc::new(StaticResolver::default());
        let (mut store_configs, mut addresses, mut listeners) =
            (HashMap::new(), HashMap::new(), HashMap::new());
        for store_id in 1..=stores_len {
            let mut config = StoreConfig::new(store_id, dir.path().join(format!("store-{store_id}")));
            // Quick elections, but not so quick that two loaded cores running three stores
            // and their gRPC threads miss heartbeats.
            config.raft_tick_interval = Duration::from_millis(20);
            configure(&mut config);
            bootstrap(&config, std::slice::from_ref(&region)).expect("bootstrap");
            store_configs.insert(store_id, config);
            let listener = TcpListener::bind("127.0.0.1:0").expect("a free loopback port");
            let address = listener.local_addr().expect("a bound address");
            resolver.insert(store_id, address.to_string());
            addresses.insert(store_id, address);
            listeners.insert(store_id, listener);
        }
        GrpcCluster {
            transport: test_transport_config(),
            resolver,
            store_configs,
            addresses,
            listeners,
            nodes: HashMap::new(),
            _dir: dir,
        }
    }

    pub fn start_all(&mut self) {
        let mut ids: Vec<u64> = self.store_configs.keys().copied().collect();
        ids.sort_unstable();
        for store_id in ids {
            self.start_store(store_id);
        }
    }

    /// Starts store `store_id` (again) at its address: runtime, server, link, then the
    /// store, whose receiver goes into the server's slot.
    pub fn start_store(&mut self, store_id: u64) {
        assert!(!self.nodes.contains_key(&store_id), "store {store_id} is running");
        let runtime = TransportRuntime::new(&store_id.to_string(), self.transport.runtime_worker_threads)
            .expect("a transport runtime");
        let slot = ReceiverSlot::new();
        let server = self.start_server_on(store_id, &slot, &runtime);
        let link = GrpcLink::new(self.transport.clone(), store_id, self.resolver.clone(), runtime.handle())
            .expect("a valid transport config");
        let outbound = Arc::new(
            Outbound::new(store_id, link, OutboundConfig::default()).expect("a valid outbound config"),
        );
        let store = Store::start(self.store_configs[&store_id].clone(), outbound.clone())
            .unwrap_or_else(|e| panic!("store {store_id} starts: {e}"));
        slot.set(store.receiver());
        self.nodes
            .insert(store_id, Node { store: Some(store), server: Some(server), outbound, slot, runtime });
    }

    fn start_server_on(
        &mut self,
        store_id: u64,
        slot: &Arc<ReceiverSlot>,
        runtime: &TransportRuntime,
    ) -> RaftServer {
        let listener = self.listeners.remove(&store_id).unwrap_or_else(|| rebind(self.addresses[&store_id]));
        RaftServer::start(&self.transport, store_id, listener, slot.clone(), runtime.handle())
            .expect("the transport server starts")
    }

    /// Stops store `store_id` and everything of its process: store, server, link, runtime.
    pub fn stop_store(&mut self, store_id: u64) {
        let Some(mut node) = self.nodes.remove(&store_id) else { return };
        node.slot.clear();
        if let Some(store) = node.store.take() {
            store.stop();
        }
        if let Some(server) = node.server.take() {
            server.shutdown();
        }
        node.outbound.link().shutdown();
        drop(node);
    }

    /// Stops only the server of store `store_id`: the others can no longer reach it
    /// (connections are refused), while it still runs and sends.
    pub fn stop_server(&mut self, store_id: u64) {
        let node = self.nodes.get_mut(&store_id).expect("a running store");
        node.server.take().expect("a running server").shutdown();
    }

    /// Starts the server of store `store_id` again at its address.
    pub fn start_server(&mut self, store_id: u64) {
        let (slot, runtime) = {
            let node = &self.nodes[&store_id];
            assert!(node.server.is_none(), "store {store_id}'s server is running");
            (node.slot.clone(), node.runtime.handle())
        };
        let listener = rebind(self.addresses[&store_id]);
        let server = RaftServer::start(&self.transport, store_id, listener, slot, runtime)
            .expect("the transport server starts");
        self.nodes.get_mut(&store_id).unwrap().server = Some(server);
    }

    pub fn store(&self, store_id: u64) -> &Store {
        self.nodes[&store_id].store.as_ref().expect("a running store")
    }

    pub fn link(&self, store_id: u64) -> &GrpcLink {
        self.nodes[&store_id].outbound.link()
    }

    pub fn outbound(&self, store_id: u64) -> &Outbound<GrpcLink> {
        &self.nodes[&store_id].outbound
    }

    pub fn running_store_ids(&self) -> Vec<u64> {
        let mut ids: Vec<u64> = self.nodes.keys().copied().collect();
        ids.sort_unstable();
        ids
    }

    /// The running store whose peer of region 1 leads with the highest term.
    pub fn leader_store(&self, timeout: Duration) -> Option<u64> {
        let deadline = Instant::now() + timeout;
        loop {
            let leader = self
                .running_store_ids()
                .into_iter()
                .filter_map(|id| self.store(id).peer_status(1, Duration::from_secs(2)).map(|s| (id, s)))
                .filter(|(_, status)| status.is_leader)
                .max_by_key(|(_, status)| status.term)
                .map(|(id, _)| id);
            if leader.is_some() || Instant::now() >= deadline {
                return leader;
            }
            thread::sleep(Duration::from_millis(10));
        }
    }

    /// Writes `value` under `key` in region 1 through its leader, following leader changes.
    pub fn put(&self, key: &[u8], value: &[u8], timeout: Duration) -> Result<CmdResponse, StoreError> {
        let deadline = Instant::now() + timeout;
        let mut last_error = StoreError::NotLeader { region_id: 1, leader: None };
        while Instant::now() < deadline {
            let left = deadline.saturating_duration_since(Instant::now());
            let Some(store_id) = self.leader_store(left) else { break };
            let Some(status) = self.store(store_id).peer_status(1, Duration::from_secs(2)) else { continue };
            let mut request: RaftCmdRequest = put_command(1, None, key, value);
            request.header = Some(RequestHeader { region_id: 1, region_epoch: status.region.epoch });
            let left = deadline.saturating_duration_since(Instant::now());
            match self.store(store_id).propose_and_wait(request).recv_timeout(left) {
                Ok(Ok(response)) => return Ok(response),
                Ok(Err(e)) => last_error = e,
                Err(_) => last_error = StoreError::ProposalDropped("timed out".into()),
            }
            thread::sleep(Duration::from_millis(10));
        }
        Err(last_error)
    }

    pub fn must_put(&self, key: &[u8], value: &[u8]) {
        self.put(key, value, WAIT).unwrap_or_else(|e| panic!("put {key:?}: {e}"));
    }

    /// Waits until store `store_id` has `value` under `key`.
    pub fn wait_for_value(&self, store_id: u64, key: &[u8], value: &[u8], timeout: Duration) -> bool {
        tessera_store::cluster::wait_until(timeout, || {
            self.store(store_id).get_local(key).ok().flatten().as_deref() == Some(value)
        })
    }
}

impl Drop for GrpcCluster {
    fn drop(&mut self) {
        for store_id in self.running_store_ids() {
            self.stop_store(store_id);
        }
    }
}
