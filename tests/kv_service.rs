//! Three nodes in one process over real gRPC on loopback: the KV service end to end, its
//! typed errors, and a whole-cluster restart on the same data directories.

use std::collections::BTreeMap;
use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpListener};
use std::thread;
use std::time::{Duration, Instant};

use tempfile::TempDir;
use tessera::kv::kvservicepb::kv_client::KvClient;
use tessera::proto::kvpb::{
    kv_error, BatchPutRequest, DeleteRequest, GetRequest, KvError, KvPair, LocateKeyRequest, PutRequest,
    RegionContext, ScanRequest, StatusRequest,
};
use tessera::proto::storepb::RegionEpoch;
use tessera::{Client, ClientConfig, ClientError, Node, NodeConfig};
use tessera_transport::raw_codec::RawCodec;
use tonic::codegen::http::uri::PathAndQuery;
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
        TestCluster::start_with(|_| {})
    }

    /// Starts the cluster with `adjust` applied to each node's config.
    fn start_with(adjust: impl Fn(&mut NodeConfig)) -> TestCluster {
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
            adjust(&mut config);
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

/// The leader of `region_id` as node 1 sees it, once one is known.
fn leader_store(cluster: &TestCluster, region_id: u64) -> u64 {
    let deadline = Instant::now() + WAIT;
    loop {
        let status =
            cluster.nodes[&1].with_store(|store| store.peer_status(region_id, Duration::from_secs(1)));
        if let Some(Some(status)) = status {
            if let Some(leader) = status.region.peers.iter().find(|peer| peer.id == status.leader_id) {
                return leader.store_id;
            }
        }
        assert!(Instant::now() < deadline, "region {region_id} elects no leader");
        thread::sleep(Duration::from_millis(20));
    }
}

fn connect_client(cluster: &TestCluster) -> Client {
    let endpoints: Vec<String> = cluster.kv_addresses.values().map(ToString::to_string).collect();
    cluster.run(Client::connect(&endpoints, ClientConfig::default())).expect("the client connects")
}

#[test]
fn the_client_routes_by_region_follows_the_leader_and_scans_across_regions() {
    let cluster = TestCluster::start();
    let client = connect_client(&cluster);
    assert_eq!(client.store_ids(), vec![1, 2, 3]);

    for region in 1..=3u8 {
        for i in 0..4 {
            cluster.run(client.put(&key(region, &format!("k{i}")), &[region, i])).expect("a put succeeds");
        }
    }
    let lookups = client.stats().region_lookups;
    assert!(lookups <= 3, "one lookup per region, then the cache: {lookups}");
    assert_eq!(cluster.run(client.get(&key(2, "k1"))).unwrap(), Some(vec![2, 1]));
    assert_eq!(cluster.run(client.get(&key(2, "absent"))).unwrap(), None);
    assert_eq!(client.stats().region_lookups, lookups, "cached regions are not looked up again");

    // A scan from region 1 into region 3, limited to stop inside region 3.
    let pairs = cluster.run(client.scan(&key(1, "k2"), &[], 8)).expect("a scan succeeds");
    let keys: Vec<Vec<u8>> = pairs.iter().map(|(key, _)| key.clone()).collect();
    let expected: Vec<Vec<u8>> = [(1, 2), (1, 3), (2, 0), (2, 1), (2, 2), (2, 3), (3, 0), (3, 1)]
        .iter()
        .map(|&(region, i)| key(region, &format!("k{i}")))
        .collect();
    assert_eq!(keys, expected);
    let everything = cluster.run(client.scan(b"", &[], 100)).expect("a full scan succeeds");
    assert_eq!(everything.len(), 12);

    // A batch over every region, then a delete.
    let batch: Vec<(Vec<u8>, Vec<u8>)> =
        (1..=3u8).map(|region| (key(region, "batch"), vec![region; 3])).collect();
    cluster.run(client.batch_put(batch.clone())).expect("a batch succeeds");
    for (key, value) in &batch {
        assert_eq!(cluster.run(client.get(key)).unwrap().as_ref(), Some(value));
    }
    cluster.run(client.delete(&key(3, "batch"))).expect("a delete succeeds");
    assert_eq!(cluster.run(client.get(&key(3, "batch"))).unwrap(), None);

    // Leadership moves: the cached leader answers NotLeader and the client follows.
    let old_leader = leader_store(&cluster, 1);
    let new_leader = if old_leader == 1 { 2 } else { 1 };
    let deadline = Instant::now() + WAIT;
    while leader_store(&cluster, 1) != new_leader {
        cluster.nodes[&old_leader].with_store(|store| store.transfer_leader(1, 1000 + new_leader));
        assert!(Instant::now() < deadline, "leadership of region 1 does not move");
        thread::sleep(Duration::from_millis(50));
    }
    let redirects = client.stats().redirects;
    cluster.run(client.put(&key(1, "moved"), b"m")).expect("a put after the transfer succeeds");
    assert!(client.stats().redirects > redirects, "the old leader's NotLeader was followed");
    assert_eq!(cluster.run(client.get(&key(1, "moved"))).unwrap().as_deref(), Some(&b"m"[..]));
}

/// A scan over more bytes than one gRPC message holds (4 MiB by default) comes back in
/// parts: each store read stops at the store's `scan_bytes_max` (2 MiB) and says where to
/// go on, and the client follows until it has every pair.
#[test]
fn a_scan_of_large_values_comes_back_in_parts() {
    let cluster = TestCluster::start_with(|config| config.kv.value_bytes_max = 1 << 20);
    let client = connect_client(&cluster);
    let value = vec![0x5a; 512 << 10];
    let pairs: Vec<(Vec<u8>, Vec<u8>)> =
        (0..24).map(|i| (key(2, &format!("big{i:02}")), value.clone())).collect();
    cluster.run(client.batch_put(pairs.clone())).expect("the batch is written");
    let scanned = cluster.run(client.scan(&key(2, "big"), &key(3, ""), 100)).expect("the scan succeeds");
    assert_eq!(scanned.len(), pairs.len(), "12 MiB of pairs, all returned");
    assert!(scanned.iter().zip(&pairs).all(|(got, want)| got == want), "in key order, intact");
}

#[test]
fn the_client_rides_out_a_stopped_leader_and_refuses_what_no_retry_fixes() {
    let mut cluster = TestCluster::start();
    let client = connect_client(&cluster);
    cluster.run(client.put(&key(2, "before"), b"1")).expect("a put succeeds");
    let leader = leader_store(&cluster, 2);
    cluster.nodes.remove(&leader).expect("the leader's node").shutdown();
    // The cached leader is gone: the client tries the other peers until one is elected.
    cluster.run(client.put(&key(2, "after"), b"2")).expect("a put with the leader stopped succeeds");
    assert_eq!(cluster.run(client.get(&key(2, "before"))).unwrap().as_deref(), Some(&b"1"[..]));
    assert!(client.stats().retries > 0, "the stopped node cost at least one retry");

    let invalid = |error: ClientError| matches!(error, ClientError::InvalidArgument(_));
    assert!(invalid(cluster.run(client.put(b"", b"v")).unwrap_err()), "an empty key");
    assert!(invalid(cluster.run(client.put(&key(1, "big"), &[0; 1025])).unwrap_err()), "an oversized value");
    assert!(invalid(cluster.run(client.scan(&key(2, ""), &key(1, ""), 1)).unwrap_err()), "a backwards scan");

    // Nobody at all: connecting fails with the reason.
    let closed = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().to_string();
    let config = ClientConfig { connect_timeout: Duration::from_millis(200), ..ClientConfig::default() };
    let error = cluster.run(Client::connect(&[closed], config)).unwrap_err();
    assert!(matches!(error, ClientError::NoEndpoint(_)), "{error}");
}

#[test]
fn status_and_locate_key_describe_the_store_and_the_region_of_a_key() {
    let cluster = TestCluster::start();
    let mut kv = cluster.client(2);
    let status = cluster.run(kv.status(StatusRequest {})).expect("status is answered").into_inner();
    assert_eq!((status.store_id, status.regions_len), (2, 3));
    // Node 2's peer may learn of the leader a moment after node 1's: ask until it knows
    // the leader node 1 knows.
    let leader = leader_store(&cluster, 3);
    let deadline = Instant::now() + WAIT;
    let answer = loop {
        let answer = cluster
            .run(kv.locate_key(LocateKeyRequest { key: key(3, "x") }))
            .expect("locate_key is answered")
            .into_inner();
        if answer.leader.is_some_and(|peer| peer.store_id == leader) || Instant::now() >= deadline {
            break answer;
        }
        thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(answer.error, None);
    let region = answer.region.expect("the region");
    assert_eq!((region.id, region.start_key, region.end_key), (3, vec![0xaa, 0xaa], vec![]));
    assert_eq!(region.peers.len(), 3);
    assert_eq!(answer.leader.map(|peer| peer.store_id), Some(leader));
}

#[test]
fn garbage_on_the_kv_port_is_refused_and_the_node_keeps_serving() {
    let cluster = TestCluster::start();
    let address = cluster.kv_addresses[&1];
    // Bytes that are not HTTP/2 at all: the connection is closed.
    let mut stream = std::net::TcpStream::connect(address).expect("a connection");
    stream.set_read_timeout(Some(WAIT)).unwrap();
    stream.write_all(&[0xde; 4096]).expect("the bytes are sent");
    let mut answer = Vec::new();
    // Closed, either cleanly or with a reset (the node hangs up with our bytes unread); a
    // read timeout would mean it kept the connection open on garbage.
    match stream.read_to_end(&mut answer) {
        Ok(_) => {}
        Err(error) => assert_eq!(error.kind(), std::io::ErrorKind::ConnectionReset, "{error}"),
    }
    // A well-formed call whose message is not a PutRequest: refused with a status.
    let endpoint = format!("http://{address}");
    let channel = cluster.run(Channel::from_shared(endpoint).unwrap().connect()).expect("a channel");
    let outcome = cluster.run(async move {
        let mut grpc = tonic::client::Grpc::new(channel);
        grpc.ready().await.expect("the channel is ready");
        // 0xff is field 31 with wire type 7, which does not exist.
        let path = PathAndQuery::from_static("/kvservicepb.Kv/Put");
        grpc.unary(tonic::Request::new(vec![0xff; 32]), path, RawCodec).await
    });
    let status = outcome.expect_err("garbage is refused");
    assert_eq!(status.code(), Code::Internal, "tonic answers an undecodable message so: {status:?}");
    // And the node still serves.
    cluster.put(&key(1, "after-garbage"), b"ok");
    assert_eq!(cluster.get(&key(1, "after-garbage")).1.as_deref(), Some(&b"ok"[..]));
}

/// One HTTP/1.1 request on a fresh connection; the status line and the body.
fn http(address: SocketAddr, request: &str) -> (String, String) {
    let mut stream = std::net::TcpStream::connect(address).expect("a connection to /metrics");
    stream.set_read_timeout(Some(WAIT)).unwrap();
    stream.write_all(request.as_bytes()).expect("the request is sent");
    let mut response = String::new();
    stream.read_to_string(&mut response).expect("a response");
    let (head, body) = response.split_once("\r\n\r\n").expect("a head and a body");
    (head.lines().next().unwrap_or_default().to_string(), body.to_string())
}

#[test]
fn metrics_are_served_in_prometheus_text_format() {
    let cluster = TestCluster::start_with(|config| {
        if config.store_id == 1 {
            config.metrics_address = Some("127.0.0.1:0".to_string());
        }
    });
    let address = cluster.nodes[&1].metrics_address().expect("node 1 serves metrics");
    assert_eq!(cluster.nodes[&2].metrics_address(), None);
    let client = connect_client(&cluster);
    for i in 0..20u8 {
        cluster.run(client.put(&key(1, &format!("m{i}")), &[i])).expect("a put succeeds");
    }

    // A malformed request is counted too.
    assert!(cluster.run(client.put(b"", b"v")).is_err(), "an empty key is refused");

    let (status, body) = http(address, "GET /metrics HTTP/1.1\r\nHost: tessera\r\n\r\n");
    assert_eq!(status, "HTTP/1.1 200 OK");
    let lines = body.lines().map(|line| Ok(line.to_string()));
    let scrape = prometheus_parse::Scrape::parse(lines).expect("the page parses as Prometheus text");
    let samples = |name: &str| scrape.samples.iter().filter(|s| s.metric == name).collect::<Vec<_>>();

    // Every layer reports, under tessera_ names.
    for prefix in ["tessera_store_", "tessera_router_", "tessera_transport_", "tessera_kv_"] {
        assert!(scrape.samples.iter().any(|s| s.metric.starts_with(prefix)), "no {prefix} metric");
    }
    let foreign: Vec<&str> =
        scrape.samples.iter().map(|s| s.metric.as_str()).filter(|m| !m.starts_with("tessera_")).collect();
    assert!(foreign.is_empty(), "metrics outside the tessera_ namespace: {foreign:?}");
    let puts: f64 = samples("tessera_kv_requests_total")
        .iter()
        .filter(|s| s.labels.get("method") == Some("put") && s.labels.get("result") == Some("ok"))
        .map(|s| match s.value {
            prometheus_parse::Value::Counter(value) => value,
            ref other => panic!("tessera_kv_requests_total is not a counter: {other:?}"),
        })
        .sum();
    assert!(puts >= 20.0, "20 puts counted, saw {puts}");
    let refused = samples("tessera_kv_requests_total")
        .iter()
        .any(|s| s.labels.get("method") == Some("put") && s.labels.get("result") == Some("invalid_argument"));
    assert!(refused, "the refused put is counted");
    // Counters are typed as such and end in _total.
    for sample in &scrape.samples {
        if let prometheus_parse::Value::Counter(_) = sample.value {
            assert!(sample.metric.ends_with("_total"), "counter {} lacks _total", sample.metric);
        }
    }
    // Durations are histograms in seconds, with buckets.
    let durations = samples("tessera_kv_request_duration_seconds");
    assert!(
        durations
            .iter()
            .any(|s| matches!(&s.value, prometheus_parse::Value::Histogram(buckets) if buckets.len() > 5)),
        "the request duration is a histogram with buckets"
    );

    // Anything but GET /metrics is refused, and the page is still served afterwards.
    assert_eq!(http(address, "GET / HTTP/1.1\r\n\r\n").0, "HTTP/1.1 404 Not Found");
    assert_eq!(http(address, "POST /metrics HTTP/1.1\r\n\r\n").0, "HTTP/1.1 405 Method Not Allowed");
    assert_eq!(http(address, "garbage\r\n\r\n").0, "HTTP/1.1 400 Bad Request");
    assert_eq!(http(address, "GET /metrics HTTP/1.0\r\n\r\n").0, "HTTP/1.1 200 OK");
}

#[test]
fn a_store_down_when_the_client_connected_is_learned_when_a_leader_hint_names_it() {
    let mut cluster = TestCluster::start();
    cluster.nodes.remove(&3).expect("node 3").shutdown();
    let client = connect_client(&cluster);
    assert_eq!(client.store_ids(), vec![1, 2], "node 3 did not answer");
    cluster.run(client.put(&key(1, "before"), b"1")).expect("a put succeeds without node 3");

    // Node 3 comes back and takes the lead of region 1; only it can serve the region's writes.
    let (raft, kv) = (rebind(cluster.raft_addresses[&3]), rebind(cluster.kv_addresses[&3]));
    cluster.start_node(3, raft, kv);
    let deadline = Instant::now() + WAIT;
    while leader_store(&cluster, 1) != 3 {
        let leader = leader_store(&cluster, 1);
        cluster.nodes[&leader].with_store(|store| store.transfer_leader(1, 1003));
        assert!(Instant::now() < deadline, "leadership of region 1 does not move to node 3");
        thread::sleep(Duration::from_millis(50));
    }
    cluster.run(client.put(&key(1, "after"), b"2")).expect("a put led by the returned node succeeds");
    assert_eq!(client.store_ids(), vec![1, 2, 3], "the hint naming store 3 made the client ask again");
}
