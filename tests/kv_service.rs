//! Three nodes in one process over real gRPC on loopback: the KV service end to end, its
//! typed errors, and a whole-cluster restart on the same data directories.

use std::collections::BTreeMap;
use std::net::{SocketAddr, TcpListener};
use std::thread;
use std::time::{Duration, Instant};

use tempfile::TempDir;
use tessera::kv::kvservicepb::kv_client::KvClient;
use tessera::proto::kvpb::{
    kv_error, BatchPutRequest, DeleteRequest, GetRequest, KvError, KvPair, PutRequest, RegionContext,
    ScanRequest,
};
use tessera::proto::storepb::RegionEpoch;
use tessera::{Node, NodeConfig};
use tonic::transport::Channel;
use tonic::Code;

const WAIT: Duration = Duration::from_secs(15);

/// Binds `address` again after its previous server closed it. The port was ours a moment
/// ago; another process taking it in between would be a (rare) reason to fail.
fn rebind(address: SocketAddr) -> TcpListener {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        match TcpListener::bind(address) {
            Ok(listener) => return listener,
            Err(e) if Instant::now() >= deadline => panic!("rebinding {address}: {e}"),
            Err(_) => thread::sleep(Duration::from_millis(20)),
        }
    }
}

/// Three nodes with three regions (boundaries 0x5555 and 0xaaaa), and a client runtime.
struct TestCluster {
    configs: BTreeMap<u64, NodeConfig>,
    nodes: BTreeMap<u64, Node>,
    raft_addresses: BTreeMap<u64, SocketAddr>,
    kv_addresses: BTreeMap<u64, SocketAddr>,
    client_runtime: tokio::runtime::Runtime,
    _dir: TempDir,
}

impl TestCluster {
    fn start() -> TestCluster {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let bind = || TcpListener::bind("127.0.0.1:0").expect("a free loopback port");
        let mut listeners = BTreeMap::new();
        for store_id in 1..=3u64 {
            listeners.insert(store_id, (bind(), bind()));
        }
        let address = |listener: &TcpListener| listener.local_addr().expect("a bound address");
        let raft_addresses: BTreeMap<u64, SocketAddr> =
            listeners.iter().map(|(&id, (raft, _))| (id, address(raft))).collect();
        let kv_addresses = listeners.iter().map(|(&id, (_, kv))| (id, address(kv))).collect();
        let peers: BTreeMap<u64, String> =
            raft_addresses.iter().map(|(&id, a)| (id, a.to_string())).collect();
        let mut configs = BTreeMap::new();
        for store_id in 1..=3u64 {
            let mut config = NodeConfig::new(
                store_id,
                dir.path().join(format!("node-{store_id}")),
                raft_addresses[&store_id].to_string(),
                "127.0.0.1:0",
                peers.clone(),
            );
            config.regions_len = 3;
            config.raft_pool_size = 1;
            config.runtime_worker_threads = 1;
            // Quick elections, but not so quick that two loaded cores running three nodes
            // miss heartbeats.
            config.raft_tick_interval = Duration::from_millis(30);
            config.kv.value_bytes_max = 1024;
            configs.insert(store_id, config);
        }
        // A worker thread of its own, so that client connections are served between calls
        // and close promptly when a node shuts down (a node waits for them, bounded).
        let client_runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("a runtime");
        let mut cluster = TestCluster {
            configs,
            nodes: BTreeMap::new(),
            raft_addresses,
            kv_addresses,
            client_runtime,
            _dir: dir,
        };
        for (store_id, (raft, kv)) in listeners {
            cluster.start_node(store_id, raft, kv);
        }
        cluster
    }

    fn start_node(&mut self, store_id: u64, raft: TcpListener, kv: TcpListener) {
        let node = Node::start_on(self.configs[&store_id].clone(), raft, kv).expect("the node starts");
        self.nodes.insert(store_id, node);
    }

    fn restart_all(&mut self) {
        for (_, node) in std::mem::take(&mut self.nodes) {
            node.shutdown();
        }
        for store_id in 1..=3u64 {
            let (raft, kv) = (rebind(self.raft_addresses[&store_id]), rebind(self.kv_addresses[&store_id]));
            self.start_node(store_id, raft, kv);
        }
    }

    fn client(&self, store_id: u64) -> KvClient<Channel> {
        let endpoint = format!("http://{}", self.kv_addresses[&store_id]);
        self.client_runtime
            .block_on(KvClient::connect(endpoint))
            .expect("the KV service accepts a connection")
    }

    fn run<T>(&self, future: impl std::future::Future<Output = T>) -> T {
        self.client_runtime.block_on(future)
    }

    /// Retries `call` on every node until one answers without a retryable error (not
    /// leader, busy, dropped); returns that node and its answer.
    fn on_leader<T>(&self, mut call: impl FnMut(&mut KvClient<Channel>) -> Result<T, KvError>) -> (u64, T) {
        let deadline = Instant::now() + WAIT;
        loop {
            for store_id in 1..=3u64 {
                match call(&mut self.client(store_id)) {
                    Ok(answer) => return (store_id, answer),
                    Err(error) if Instant::now() >= deadline => panic!("no node answered: {error:?}"),
                    Err(_) => {}
                }
            }
            thread::sleep(Duration::from_millis(50));
        }
    }

    fn put(&self, key: &[u8], value: &[u8]) -> u64 {
        self.on_leader(|client| {
            let request = PutRequest { context: None, key: key.to_vec(), value: value.to_vec() };
            let response = self.run(client.put(request)).expect("a put is answered").into_inner();
            response.error.map_or(Ok(()), Err)
        })
        .0
    }

    fn get(&self, key: &[u8]) -> (u64, Option<Vec<u8>>) {
        self.on_leader(|client| {
            let request = GetRequest { context: None, key: key.to_vec() };
            let response = self.run(client.get(request)).expect("a get is answered").into_inner();
            response.error.map_or(Ok(response.value), Err)
        })
    }
}

impl Drop for TestCluster {
    fn drop(&mut self) {
        for (_, node) in std::mem::take(&mut self.nodes) {
            node.shutdown();
        }
    }
}

/// A key in region 1, 2 or 3 (which split the key space at 0x5555 and 0xaaaa).
fn key(region: u8, suffix: &str) -> Vec<u8> {
    let mut key = vec![[0x10, 0x60, 0xc0][usize::from(region - 1)]];
    key.extend_from_slice(suffix.as_bytes());
    key
}

#[test]
fn put_get_scan_delete_and_batch_put_through_grpc() {
    let cluster = TestCluster::start();
    cluster.put(&key(1, "a"), b"one");
    assert_eq!(cluster.get(&key(1, "a")).1.as_deref(), Some(&b"one"[..]));
    assert_eq!(cluster.get(&key(1, "missing")).1, None);

    // A batch across all three regions: split per region, every part written.
    let pairs: Vec<KvPair> = (1..=3u8)
        .flat_map(|region| {
            (0..3).map(move |i| KvPair { key: key(region, &format!("b{i}")), value: vec![region, i] })
        })
        .collect();
    // Regions may have their leaders on different nodes: each node writes the parts it
    // leads and names the keys of the others, which a client sends on to another node.
    let mut pending = pairs.clone();
    let deadline = Instant::now() + WAIT;
    for store_id in (1..=3u64).cycle() {
        let response = cluster
            .run(cluster.client(store_id).batch_put(BatchPutRequest { pairs: pending.clone() }))
            .expect("a batch put is answered")
            .into_inner();
        let failed_keys: Vec<Vec<u8>> = response.failed.into_iter().flat_map(|part| part.keys).collect();
        pending.retain(|pair| failed_keys.contains(&pair.key));
        if pending.is_empty() {
            break;
        }
        assert!(Instant::now() < deadline, "keys still unwritten: {pending:x?}");
        thread::sleep(Duration::from_millis(20));
    }
    for pair in &pairs {
        assert_eq!(cluster.get(&pair.key).1.as_ref(), Some(&pair.value), "key {:x?}", pair.key);
    }

    // A scan of region 2 stops at the limit, then at the region's end, and says where to go on.
    let (_, first) = cluster.on_leader(|client| {
        let request = ScanRequest { context: None, start_key: key(2, ""), end_key: Vec::new(), limit: 2 };
        let response = cluster.run(client.scan(request)).expect("a scan is answered").into_inner();
        response.error.clone().map_or(Ok(response), Err)
    });
    let keys: Vec<Vec<u8>> = first.pairs.iter().map(|p| p.key.clone()).collect();
    assert_eq!(keys, vec![key(2, "b0"), key(2, "b1")]);
    let mut after_b1 = key(2, "b1");
    after_b1.push(0);
    assert_eq!(first.next_start_key, Some(after_b1.clone()));
    let (_, second) = cluster.on_leader(|client| {
        let request =
            ScanRequest { context: None, start_key: after_b1.clone(), end_key: Vec::new(), limit: 10 };
        let response = cluster.run(client.scan(request)).expect("a scan is answered").into_inner();
        response.error.clone().map_or(Ok(response), Err)
    });
    assert_eq!(second.pairs.iter().map(|p| p.key.clone()).collect::<Vec<_>>(), vec![key(2, "b2")]);
    assert_eq!(second.next_start_key, Some(vec![0xaa, 0xaa]), "region 2 ends at 0xaaaa");
    // The last region's scan exhausts the key space.
    let (_, last) = cluster.on_leader(|client| {
        let request =
            ScanRequest { context: None, start_key: vec![0xaa, 0xaa], end_key: Vec::new(), limit: 10 };
        let response = cluster.run(client.scan(request)).expect("a scan is answered").into_inner();
        response.error.clone().map_or(Ok(response), Err)
    });
    assert_eq!(last.pairs.len(), 3);
    assert_eq!(last.next_start_key, None);

    cluster.on_leader(|client| {
        let request = DeleteRequest { context: None, key: key(1, "a") };
        let response = cluster.run(client.delete(request)).expect("a delete is answered").into_inner();
        response.error.map_or(Ok(()), Err)
    });
    assert_eq!(cluster.get(&key(1, "a")).1, None);
}

#[test]
fn errors_are_typed() {
    let cluster = TestCluster::start();
    let k = key(2, "x");
    cluster.put(&k, b"v");

    // A get at a follower names the leader. Leadership may move between the two calls, so
    // the check is retried until the leader found stays put.
    let deadline = Instant::now() + WAIT;
    loop {
        let (leader, _) = cluster.get(&k);
        let follower = if leader == 1 { 2 } else { 1 };
        let response = cluster
            .run(cluster.client(follower).get(GetRequest { context: None, key: k.clone() }))
            .expect("a get is answered")
            .into_inner();
        match response.error.and_then(|e| e.kind) {
            Some(kv_error::Kind::NotLeader(not_leader))
                if not_leader.leader.map(|p| p.store_id) == Some(leader) =>
            {
                assert_eq!(not_leader.region_id, 2);
                break;
            }
            other => assert!(Instant::now() < deadline, "a follower's get answered {other:?}"),
        }
        thread::sleep(Duration::from_millis(50));
    }

    // An unknown region id.
    let (leader, _) = cluster.get(&k);
    let mut client = cluster.client(leader);
    let unknown =
        RegionContext { region_id: 99, region_epoch: Some(RegionEpoch { conf_ver: 1, version: 1 }) };
    let response = cluster
        .run(client.get(GetRequest { context: Some(unknown), key: k.clone() }))
        .expect("a get is answered")
        .into_inner();
    assert!(
        matches!(response.error.and_then(|e| e.kind), Some(kv_error::Kind::RegionNotFound(r)) if r.region_id == 99)
    );

    // A stale epoch is refused with the current region, at the leader (a follower would
    // answer NotLeader first, so retry until the leader answers).
    let stale = RegionContext { region_id: 2, region_epoch: Some(RegionEpoch { conf_ver: 1, version: 0 }) };
    let (_, current) = cluster.on_leader(|client| {
        let request = PutRequest { context: Some(stale), key: k.clone(), value: b"w".to_vec() };
        let response = cluster.run(client.put(request)).expect("a put is answered").into_inner();
        match response.error.clone().and_then(|e| e.kind) {
            Some(kv_error::Kind::EpochNotMatch(e)) => Ok(e.current),
            _ => Err(response.error.unwrap_or_default()),
        }
    });
    let current = current.expect("the current region");
    assert_eq!((current.id, current.start_key, current.end_key), (2, vec![0x55, 0x55], vec![0xaa, 0xaa]));
    assert_eq!(current.epoch, Some(RegionEpoch { conf_ver: 1, version: 1 }));

    // A key outside the region named by the context.
    let region_1 =
        RegionContext { region_id: 1, region_epoch: Some(RegionEpoch { conf_ver: 1, version: 1 }) };
    let (_, outside) = cluster.on_leader(|client| {
        let request = GetRequest { context: Some(region_1), key: k.clone() };
        let response = cluster.run(client.get(request)).expect("a get is answered").into_inner();
        match response.error.clone().and_then(|e| e.kind) {
            Some(kv_error::Kind::KeyNotInRegion(e)) => Ok(e),
            _ => Err(response.error.unwrap_or_default()),
        }
    });
    assert_eq!((outside.region_id, outside.key), (1, k.clone()));

    // Arguments no retry can fix fail the call itself.
    let mut client = cluster.client(1);
    let empty_key =
        cluster.run(client.put(PutRequest { context: None, key: Vec::new(), value: b"v".to_vec() }));
    assert_eq!(empty_key.expect_err("an empty key is refused").code(), Code::InvalidArgument);
    let oversized =
        cluster.run(client.put(PutRequest { context: None, key: k.clone(), value: vec![0; 1025] }));
    assert_eq!(oversized.expect_err("an oversized value is refused").code(), Code::InvalidArgument);
    let empty_in_batch = cluster.run(client.batch_put(BatchPutRequest {
        pairs: vec![
            KvPair { key: k.clone(), value: b"v".to_vec() },
            KvPair { key: Vec::new(), value: Vec::new() },
        ],
    }));
    assert_eq!(empty_in_batch.expect_err("an empty key in a batch is refused").code(), Code::InvalidArgument);
    let backwards = cluster.run(client.scan(ScanRequest {
        context: None,
        start_key: k.clone(),
        end_key: key(1, ""),
        limit: 1,
    }));
    assert_eq!(backwards.expect_err("a backwards scan is refused").code(), Code::InvalidArgument);
    // The node is still fine after all that.
    assert_eq!(cluster.get(&k).1.as_deref(), Some(&b"v"[..]));
}

#[test]
fn a_restarted_cluster_keeps_its_data() {
    let mut cluster = TestCluster::start();
    for region in 1..=3u8 {
        cluster.put(&key(region, "kept"), &[region]);
    }
    cluster.restart_all();
    for region in 1..=3u8 {
        assert_eq!(cluster.get(&key(region, "kept")).1, Some(vec![region]));
    }
    // And it takes writes again.
    cluster.put(&key(1, "after"), b"restart");
    assert_eq!(cluster.get(&key(1, "after")).1.as_deref(), Some(&b"restart"[..]));
}
