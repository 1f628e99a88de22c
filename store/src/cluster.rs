//! An in-process cluster of stores for tests and benchmarks: N stores, each with its own
//! RocksDB directory under one temporary directory, connected by the in-memory network
//! (which can drop, delay, partition and heal), with helpers to stop and restart a store
//! and to find leaders and write through them.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use tempfile::TempDir;
use tessera_proto::raftpb::ConfChangeType;
use tessera_proto::serverpb::{
    admin_request, AdminRequest, ChangePeer, ChangePeerRequest, CmdType, RaftCmdRequest, RequestHeader,
};
use tessera_proto::storepb::{Peer, PeerRole, Region, RegionEpoch};
use tessera_router::InMemoryNetwork;

use crate::config::StoreConfig;
use crate::error::{StoreError, StoreResult};
use crate::msg::CmdResponse;
pub use crate::msg::{command, request};
pub use crate::store::initial_peer_id;
use crate::store::{bootstrap, PeerStatus, Store};

/// How long one status query may take before the harness counts the peer as silent.
const STATUS_TIMEOUT: Duration = Duration::from_secs(2);

/// The boundary between regions `i` and `i + 1` of `regions_len` even regions.
fn boundary(i: u64) -> Vec<u8> {
    format!("k{i:08}").into_bytes()
}

/// A key inside initial region `region_id` (1-based).
pub fn key_in_region(region_id: u64, suffix: &str) -> Vec<u8> {
    format!("k{:08}{suffix}", region_id - 1).into_bytes()
}

/// Polls `condition` every 10 ms until it holds (true) or `timeout` passes (false).
pub fn wait_until(timeout: Duration, mut condition: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if condition() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        thread::sleep(Duration::from_millis(10));
    }
}

/// A command that makes `changes` to the region's membership, as one change (a joint one
/// if there are several).
pub fn change_peers_command(
    region_id: u64,
    epoch: Option<RegionEpoch>,
    changes: &[(ConfChangeType, Peer)],
) -> RaftCmdRequest {
    let changes = changes
        .iter()
        .map(|(change_type, peer)| ChangePeer { change_type: *change_type as i32, peer: Some(*peer) })
        .collect();
    RaftCmdRequest {
        header: Some(RequestHeader { region_id, region_epoch: epoch }),
        requests: Vec::new(),
        admin: Some(AdminRequest {
            cmd: Some(admin_request::Cmd::ChangePeer(ChangePeerRequest { changes })),
        }),
    }
}

/// A command that writes `value` under `key` in region `region_id`, routed with `epoch`.
pub fn put_command(region_id: u64, epoch: Option<RegionEpoch>, key: &[u8], value: &[u8]) -> RaftCmdRequest {
    command(region_id, epoch, vec![request(CmdType::Put, key, value, b"")])
}

pub struct Cluster {
    pub network: InMemoryNetwork,
    /// Where the stores' directories are, and the temporary directory that holds them
    /// (removed with the cluster) unless the caller gave its own.
    root: std::path::PathBuf,
    _temp_dir: Option<TempDir>,
    configs: HashMap<u64, StoreConfig>,
    stores: HashMap<u64, Store>,
    transports: HashMap<u64, std::sync::Arc<tessera_router::InMemoryTransport>>,
    /// The regions as bootstrapped.
    pub initial_regions: Vec<Region>,
    next_id: AtomicU64,
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cluster").field("stores", &self.stores.len()).finish_non_exhaustive()
    }
}

impl Cluster {
    /// Bootstraps `stores_len` stores and `regions_len` regions splitting the key space
    /// evenly, each replicated on every store (`replicas` of them, on the first stores);
    /// `configure` adjusts each store's config. Stores are not started yet.
    pub fn new(
        stores_len: u64,
        regions_len: u64,
        replicas: u64,
        configure: impl Fn(&mut StoreConfig),
    ) -> Cluster {
        let temp_dir = tempfile::tempdir().expect("a temporary directory");
        let mut cluster = Cluster::open(temp_dir.path(), stores_len, regions_len, replicas, configure);
        cluster._temp_dir = Some(temp_dir);
        cluster
    }

    /// `new`, with the stores' directories under `root`, which the cluster leaves in place:
    /// a later `open` of the same root finds the stores as they were left (bootstrapping
    /// skips stores that hold regions), as after a crash of the process.
    pub fn open(
        root: &std::path::Path,
        stores_len: u64,
        regions_len: u64,
        replicas: u64,
        configure: impl Fn(&mut StoreConfig),
    ) -> Cluster {
        assert!(replicas <= stores_len && regions_len >= 1);
        let initial_regions: Vec<Region> = (1..=regions_len)
            .map(|id| Region {
                id,
                start_key: if id == 1 { Vec::new() } else { boundary(id - 1) },
                end_key: if id == regions_len { Vec::new() } else { boundary(id) },
                epoch: Some(RegionEpoch { conf_ver: 1, version: 1 }),
                peers: (1..=replicas)
                    .map(|store_id| Peer {
                        id: initial_peer_id(id, store_id),
                        store_id,
                        role: PeerRole::Voter as i32,
                    })
                    .collect(),
            })
            .collect();
        let mut configs = HashMap::new();
        for store_id in 1..=stores_len {
            let mut config = StoreConfig::new(store_id, root.join(format!("store-{store_id}")));
            config.raft_tick_interval = Duration::from_millis(10);
            configure(&mut config);
            bootstrap(&config, &initial_regions).expect("bootstrap");
            configs.insert(store_id, config);
        }
        let next_id = AtomicU64::new((regions_len + 1) * 1_000);
        Cluster {
            network: InMemoryNetwork::new(),
            root: root.to_path_buf(),
            _temp_dir: None,
            configs,
            stores: HashMap::new(),
            transports: HashMap::new(),
            initial_regions,
            next_id,
        }
    }

    pub fn start_all(&mut self) {
        let mut ids: Vec<u64> = self.configs.keys().copied().collect();
        ids.sort_unstable();
        for id in ids {
            self.start_store(id);
        }
    }

    /// Starts (or restarts, reopening its RocksDB) store `store_id`.
    pub fn start_store(&mut self, store_id: u64) {
        assert!(!self.stores.contains_key(&store_id), "store {store_id} is running");
        let config = self.configs[&store_id].clone();
        let transport = std::sync::Arc::new(self.network.transport(store_id));
        self.transports.insert(store_id, transport.clone());
        let store =
            Store::start(config, transport).unwrap_or_else(|e| panic!("store {store_id} starts: {e}"));
        self.network.register(store_id, store.receiver());
        self.stores.insert(store_id, store);
    }

    /// Stops store `store_id` as a crash would look to the others: it stops answering.
    pub fn stop_store(&mut self, store_id: u64) {
        self.network.unregister(store_id);
        if let Some(store) = self.stores.remove(&store_id) {
            store.stop();
        }
    }

    /// Adds an empty store to the cluster (for membership changes) and starts it.
    pub fn add_store(&mut self, store_id: u64, configure: impl Fn(&mut StoreConfig)) {
        let mut config = StoreConfig::new(store_id, self.root.join(format!("store-{store_id}")));
        config.raft_tick_interval = Duration::from_millis(10);
        configure(&mut config);
        self.configs.insert(store_id, config);
        self.start_store(store_id);
    }

    /// The configuration store `store_id` runs (or will run) with.
    pub fn config(&self, store_id: u64) -> &StoreConfig {
        &self.configs[&store_id]
    }

    pub fn store(&self, store_id: u64) -> &Store {
        &self.stores[&store_id]
    }

    /// The outbound side of a store (its latest start): batches, coalesced heartbeats.
    pub fn transport(&self, store_id: u64) -> &tessera_router::InMemoryTransport {
        &self.transports[&store_id]
    }

    pub fn running_store_ids(&self) -> Vec<u64> {
        let mut ids: Vec<u64> = self.stores.keys().copied().collect();
        ids.sort_unstable();
        ids
    }

    pub fn alloc_id(&self) -> u64 {
        self.next_id.fetch_add(1, Ordering::Relaxed)
    }

    /// The statuses of a region's peers on the running stores.
    pub fn statuses(&self, region_id: u64) -> Vec<(u64, PeerStatus)> {
        self.running_store_ids()
            .into_iter()
            .filter_map(|id| self.stores[&id].peer_status(region_id, STATUS_TIMEOUT).map(|s| (id, s)))
            .collect()
    }

    /// Waits until a running store's peer of the region is leader; returns its store id.
    pub fn leader_store(&self, region_id: u64, timeout: Duration) -> Option<u64> {
        let deadline = Instant::now() + timeout;
        loop {
            let leaders: Vec<(u64, u64)> = self
                .statuses(region_id)
                .into_iter()
                .filter(|(_, s)| s.is_leader)
                .map(|(id, s)| (id, s.term))
                .collect();
            if let Some((store_id, _)) = leaders.iter().max_by_key(|(_, term)| *term) {
                return Some(*store_id);
            }
            if Instant::now() >= deadline {
                return None;
            }
            thread::sleep(Duration::from_millis(10));
        }
    }

    /// The region as its leader knows it (current epoch and peers).
    pub fn region(&self, region_id: u64, timeout: Duration) -> Option<Region> {
        let store_id = self.leader_store(region_id, timeout)?;
        self.stores[&store_id].peer_status(region_id, STATUS_TIMEOUT).map(|s| s.region)
    }

    /// The region as its leader describes it once out of any joint configuration (which
    /// still counts its outgoing voters; the leader leaves it on its own), within `timeout`.
    pub fn settled_region(&self, region_id: u64, timeout: Duration) -> Option<Region> {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let status = self
                .leader_store(region_id, left)
                .and_then(|store_id| self.stores[&store_id].peer_status(region_id, STATUS_TIMEOUT));
            if let Some(status) = status.filter(|s| s.is_leader && !s.joint) {
                return Some(status.region);
            }
            if Instant::now() >= deadline {
                return None;
            }
            thread::sleep(Duration::from_millis(10));
        }
    }

    /// Proposes a command to the region's leader, following leader changes and retrying
    /// retriable errors until `timeout`. A command without an epoch takes the leader's
    /// before each try; one with an epoch keeps it, so that it fails with `EpochNotMatch`
    /// if the region changed since its caller read it (a membership change decided on
    /// what the caller saw must not apply to another membership).
    pub fn execute(&self, mut request: RaftCmdRequest, timeout: Duration) -> StoreResult<CmdResponse> {
        let region_id = request.header.as_ref().map_or(0, |h| h.region_id);
        let fixed_epoch = request.header.as_ref().and_then(|h| h.region_epoch);
        let deadline = Instant::now() + timeout;
        let mut last_error = StoreError::NotLeader { region_id, leader: None };
        while Instant::now() < deadline {
            let left = deadline.saturating_duration_since(Instant::now());
            let Some(store_id) = self.leader_store(region_id, left) else { break };
            let Some(status) = self.stores[&store_id].peer_status(region_id, STATUS_TIMEOUT) else {
                continue;
            };
            request.header =
                Some(RequestHeader { region_id, region_epoch: fixed_epoch.or(status.region.epoch) });
            let answer = self.stores[&store_id].propose_and_wait(request.clone());
            let left = deadline.saturating_duration_since(Instant::now());
            match answer.recv_timeout(left) {
                Ok(Ok(response)) => return Ok(response),
                Ok(Err(e @ (StoreError::KeyNotInRegion { .. } | StoreError::InvalidCommand(_)))) => {
                    return Err(e)
                }
                Ok(Err(e @ StoreError::EpochNotMatch { .. })) if fixed_epoch.is_some() => return Err(e),
                Ok(Err(e)) => last_error = e,
                Err(_) => last_error = StoreError::ProposalDropped("timed out".into()),
            }
            thread::sleep(Duration::from_millis(10));
        }
        Err(last_error)
    }

    pub fn put(
        &self,
        region_id: u64,
        key: &[u8],
        value: &[u8],
        timeout: Duration,
    ) -> StoreResult<CmdResponse> {
        self.execute(put_command(region_id, None, key, value), timeout)
    }

    pub fn must_put(&self, region_id: u64, key: &[u8], value: &[u8]) -> CmdResponse {
        self.put(region_id, key, value, Duration::from_secs(20))
            .unwrap_or_else(|e| panic!("put {key:?} in region {region_id}: {e}"))
    }

    /// Proposes one membership change and waits until it is applied on the leader.
    pub fn change_peer(
        &self,
        region_id: u64,
        change_type: ConfChangeType,
        peer: Peer,
        timeout: Duration,
    ) -> StoreResult<CmdResponse> {
        self.change_peers(region_id, None, &[(change_type, peer)], timeout)
    }

    /// Proposes membership changes as one command and waits until it is applied on the
    /// leader. More than one change goes through a joint configuration, which the leader
    /// leaves on its own afterwards. With `epoch`, the command is refused with
    /// `EpochNotMatch` if the membership changed since (see `execute`).
    pub fn change_peers(
        &self,
        region_id: u64,
        epoch: Option<RegionEpoch>,
        changes: &[(ConfChangeType, Peer)],
        timeout: Duration,
    ) -> StoreResult<CmdResponse> {
        self.execute(change_peers_command(region_id, epoch, changes), timeout)
    }

    /// Waits until store `store_id` has `value` (or no value) under `key` in its data.
    pub fn wait_for_value(&self, store_id: u64, key: &[u8], value: Option<&[u8]>, timeout: Duration) -> bool {
        wait_until(timeout, || self.stores[&store_id].get_local(key).ok().flatten().as_deref() == value)
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let ids = self.running_store_ids();
        for id in ids {
            self.stop_store(id);
        }
        self.network.shutdown();
    }
}
