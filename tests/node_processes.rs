//! Three `tessera node` processes on loopback, driven through `tessera::Client`: writes keep
//! being acknowledged while a follower and then a leader are killed with SIGKILL, and every
//! acknowledged write is readable after the restarts and after killing all three at once.
//! Also: SIGTERM stops a node cleanly (exit 0) while a client writes to it.
//!
//! SIGKILL ends the process but not the machine: the page cache survives, so these tests
//! would pass even if the store acknowledged writes it had not fsynced. That the Raft write
//! is synced before acknowledgements leave is tested in the store (`store/tests/crash.rs`
//! and the ordering tests of `store/tests/cluster.rs`, with writes that fail).

use std::collections::BTreeMap;
use std::io::{BufRead as _, BufReader};
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tessera::proto::kvpb::LocateKeyRequest;
use tessera::{Client, ClientConfig};

const STORE_IDS: [u64; 3] = [1, 2, 3];

/// How long a node may take to start, and the cluster to answer after a change.
const WAIT: Duration = Duration::from_secs(30);

/// Loopback ports that were free a moment ago. Another process may take one before the node
/// binds it; the node then fails to start and the cluster is started again on new ports.
fn free_ports(count: usize) -> Vec<u16> {
    let listeners: Vec<TcpListener> =
        (0..count).map(|_| TcpListener::bind("127.0.0.1:0").expect("a free loopback port")).collect();
    listeners.iter().map(|listener| listener.local_addr().unwrap().port()).collect()
}

/// The node processes, their config files, and the client side's runtime. Every process
/// still running is killed on drop, so a failing test leaves none behind.
struct ProcessCluster {
    dir: tempfile::TempDir,
    kv_addresses: BTreeMap<u64, String>,
    children: BTreeMap<u64, Child>,
    runtime: tokio::runtime::Runtime,
}

impl ProcessCluster {
    /// Starts three nodes, on new ports if a port was taken meanwhile.
    fn start() -> ProcessCluster {
        let mut runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("a runtime");
        for _attempt in 0..3 {
            let mut cluster = ProcessCluster {
                dir: tempfile::tempdir().expect("a temporary directory"),
                kv_addresses: BTreeMap::new(),
                children: BTreeMap::new(),
                runtime,
            };
            cluster.write_configs();
            if STORE_IDS.iter().all(|&store_id| cluster.start_node(store_id)) {
                return cluster;
            }
            cluster.kill_all();
            runtime = cluster.into_runtime();
        }
        panic!("the nodes did not start in three attempts");
    }

    fn into_runtime(mut self) -> tokio::runtime::Runtime {
        let runtime = tokio::runtime::Builder::new_current_thread().build().expect("a runtime");
        std::mem::replace(&mut self.runtime, runtime)
    }

    fn config_path(&self, store_id: u64) -> PathBuf {
        self.dir.path().join(format!("node-{store_id}.toml"))
    }

    fn write_configs(&mut self) {
        let ports = free_ports(2 * STORE_IDS.len());
        let raft_address = |store_id: u64| format!("127.0.0.1:{}", ports[(store_id as usize - 1) * 2]);
        let kv_address = |store_id: u64| format!("127.0.0.1:{}", ports[(store_id as usize - 1) * 2 + 1]);
        let peers: String = STORE_IDS
            .iter()
            .map(|&id| format!("\n[[peers]]\nstore_id = {id}\nraft_address = \"{}\"\n", raft_address(id)))
            .collect();
        for store_id in STORE_IDS {
            let data_dir = self.dir.path().join(format!("data-{store_id}"));
            let config = format!(
                "store_id = {store_id}\ndata_dir = {:?}\nraft_address = \"{}\"\nkv_address = \"{}\"\n\
                 regions_len = 3\nraft_tick_interval_ms = 50\n{peers}",
                data_dir.to_str().expect("a UTF-8 temporary path"),
                raft_address(store_id),
                kv_address(store_id),
            );
            std::fs::write(self.config_path(store_id), config).expect("the config is written");
            self.kv_addresses.insert(store_id, kv_address(store_id));
        }
    }

    /// Starts `store_id`'s node and waits for its "serving" line; false if it exited first.
    fn start_node(&mut self, store_id: u64) -> bool {
        let mut child = Command::new(env!("CARGO_BIN_EXE_tessera"))
            .args(["--log-level", "warn", "node", "--config"])
            .arg(self.config_path(store_id))
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("the binary starts");
        let ready = wait_for_line(&mut child, "tessera node");
        self.children.insert(store_id, child);
        ready
    }

    /// SIGKILL: no shutdown, no flush beyond what the node already made durable.
    fn kill(&mut self, store_id: u64) {
        if let Some(mut child) = self.children.remove(&store_id) {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    fn kill_all(&mut self) {
        for store_id in STORE_IDS {
            self.kill(store_id);
        }
    }

    fn restart(&mut self, store_id: u64) {
        // The node's own ports were freed by its death; should another process have taken
        // one meanwhile, the node fails to start, and so does the test, with the reason.
        assert!(self.start_node(store_id), "node {store_id} restarts on its data");
    }

    fn client(&self) -> Client {
        let endpoints: Vec<String> = self.kv_addresses.values().cloned().collect();
        let config = ClientConfig { operation_timeout: WAIT, ..ClientConfig::default() };
        self.runtime.block_on(Client::connect(&endpoints, config)).expect("the client connects")
    }

    /// The store leading the region of `key`, as the nodes report it, once one is known.
    fn leader_of(&self, key: &[u8]) -> u64 {
        let deadline = Instant::now() + WAIT;
        loop {
            for (store_id, address) in &self.kv_addresses {
                if !self.children.contains_key(store_id) {
                    continue;
                }
                let endpoint = format!("http://{address}");
                let answer = self.runtime.block_on(async {
                    let ask = async {
                        let mut kv =
                            tessera::kv::kvservicepb::kv_client::KvClient::connect(endpoint).await.ok()?;
                        kv.locate_key(LocateKeyRequest { key: key.to_vec() }).await.ok()
                    };
                    tokio::time::timeout(Duration::from_secs(2), ask).await.ok().flatten()
                });
                if let Some(leader) = answer.and_then(|answer| answer.into_inner().leader) {
                    if self.children.contains_key(&leader.store_id) {
                        return leader.store_id;
                    }
                }
            }
            assert!(Instant::now() < deadline, "no leader for {key:?}");
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for ProcessCluster {
    fn drop(&mut self) {
        self.kill_all();
    }
}

/// Reads the child's stdout until a line starting with `prefix`; false if it ends first or
/// `WAIT` passes (the caller then kills it). The output is read on a thread that drains it
/// to the end, so that the child never blocks on a full pipe.
fn wait_for_line(child: &mut Child, prefix: &str) -> bool {
    let stdout = child.stdout.take().expect("stdout is piped");
    let (found_sender, found) = std::sync::mpsc::channel();
    let prefix = prefix.to_string();
    std::thread::spawn(move || {
        let mut lines = BufReader::new(stdout).lines().map_while(Result::ok);
        let _ = found_sender.send(lines.by_ref().any(|line| line.starts_with(&prefix)));
        lines.for_each(drop);
    });
    found.recv_timeout(WAIT).unwrap_or(false)
}

/// A key and its value.
type Pair = (Vec<u8>, Vec<u8>);

/// Writers that put unique keys in a loop and remember which writes were acknowledged.
struct Writers {
    stop: Arc<AtomicBool>,
    acknowledged: Arc<Mutex<Vec<Pair>>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Writers {
    fn start(cluster: &ProcessCluster, client: &Client, writers: usize) -> Writers {
        let stop = Arc::new(AtomicBool::new(false));
        let acknowledged = Arc::new(Mutex::new(Vec::new()));
        let tasks = (0..writers)
            .map(|writer| {
                let (client, stop, acknowledged) = (client.clone(), stop.clone(), acknowledged.clone());
                cluster.runtime.spawn(async move {
                    let mut i = 0u64;
                    while !stop.load(Ordering::Relaxed) {
                        // Two leading bytes spread the keys over the three regions.
                        let mut key = ((writer as u16)
                            .wrapping_mul(21_845)
                            .wrapping_add((i as u16).wrapping_mul(7_919)))
                        .to_be_bytes()
                        .to_vec();
                        key.extend_from_slice(format!("w{writer}-{i}").as_bytes());
                        let value = format!("value-{writer}-{i}").into_bytes();
                        // A write that fails (its outcome unknown) is simply not counted.
                        if client.put(&key, &value).await.is_ok() {
                            acknowledged.lock().unwrap().push((key, value));
                        }
                        i += 1;
                    }
                })
            })
            .collect();
        Writers { stop, acknowledged, tasks }
    }

    fn acknowledged_len(&self) -> usize {
        self.acknowledged.lock().unwrap().len()
    }

    /// Acknowledged writes of keys below `end_key` (the first region's, for instance).
    fn acknowledged_below(&self, end_key: &[u8]) -> usize {
        self.acknowledged.lock().unwrap().iter().filter(|(key, _)| key.as_slice() < end_key).count()
    }

    /// Waits until `more` writes beyond those acknowledged now are acknowledged.
    fn wait_for_progress(&self, more: usize, what: &str) {
        self.wait_for_progress_below(&[0xff, 0xff, 0xff], more, what);
    }

    /// Waits until `more` writes of keys below `end_key` beyond those acknowledged now are.
    fn wait_for_progress_below(&self, end_key: &[u8], more: usize, what: &str) {
        let target = self.acknowledged_below(end_key) + more;
        let deadline = Instant::now() + WAIT;
        while self.acknowledged_below(end_key) < target {
            assert!(
                Instant::now() < deadline,
                "no progress {what}: {} acknowledged",
                self.acknowledged_len()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn stop(self, cluster: &ProcessCluster) -> Vec<Pair> {
        self.stop.store(true, Ordering::Relaxed);
        for task in self.tasks {
            cluster.runtime.block_on(task).expect("a writer ends");
        }
        let acknowledged = self.acknowledged.lock().unwrap();
        acknowledged.clone()
    }
}

fn assert_all_readable(cluster: &ProcessCluster, client: &Client, writes: &[Pair], when: &str) {
    for (key, value) in writes {
        let read = cluster.runtime.block_on(client.get(key)).expect("a read succeeds");
        assert_eq!(read.as_ref(), Some(value), "an acknowledged write of {key:?} is lost {when}");
    }
}

#[test]
fn acknowledged_writes_survive_kill_9_of_a_follower_a_leader_and_then_every_node() {
    let mut cluster = ProcessCluster::start();
    let client = cluster.client();
    let writers = Writers::start(&cluster, &client, 4);
    writers.wait_for_progress(50, "with all nodes up");

    // A follower of region 1 dies; the majority keeps serving region 1.
    let (probe_key, region_1_end) = ([0x00, 0x01], [0x55, 0x55]);
    let leader = cluster.leader_of(&probe_key);
    let follower = STORE_IDS.into_iter().find(|&id| id != leader).unwrap();
    cluster.kill(follower);
    writers.wait_for_progress_below(&region_1_end, 20, "in region 1 with a follower killed");
    cluster.restart(follower);
    writers.wait_for_progress(20, "after the follower restarted");

    // Now region 1's leader dies; the other two elect one and keep serving region 1.
    let leader = cluster.leader_of(&probe_key);
    cluster.kill(leader);
    writers.wait_for_progress_below(&region_1_end, 20, "in region 1 with its leader killed");
    cluster.restart(leader);
    writers.wait_for_progress(20, "after the old leader restarted");

    let acknowledged = writers.stop(&cluster);
    assert_all_readable(&cluster, &client, &acknowledged, "after the kills");

    // All three die at once; what was acknowledged is on their disks.
    cluster.kill_all();
    for store_id in STORE_IDS {
        cluster.restart(store_id);
    }
    assert_all_readable(&cluster, &client, &acknowledged, "after every node was killed");
    eprintln!("{} acknowledged writes checked; client {:?}", acknowledged.len(), client.stats());
}

#[test]
fn sigterm_stops_a_node_cleanly_while_clients_write() {
    let mut cluster = ProcessCluster::start();
    let client = cluster.client();
    let writers = Writers::start(&cluster, &client, 2);
    writers.wait_for_progress(20, "before SIGTERM");
    let mut child = cluster.children.remove(&1).expect("node 1 runs");
    // The shell's own `kill`: a minimal machine may have no /bin/kill (procps).
    let terminated = Command::new("sh").args(["-c", &format!("kill -TERM {}", child.id())]).status();
    assert!(terminated.expect("kill runs").success());
    let deadline = Instant::now() + WAIT;
    let status = loop {
        if let Some(status) = child.try_wait().expect("the node's status") {
            break status;
        }
        assert!(Instant::now() < deadline, "node 1 does not exit after SIGTERM");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(status.code(), Some(0), "a node stopped by SIGTERM exits 0");
    // The other two go on serving.
    writers.wait_for_progress(20, "after node 1 stopped");
    let acknowledged = writers.stop(&cluster);
    cluster.restart(1);
    assert_all_readable(&cluster, &client, &acknowledged, "after a SIGTERM and a restart");
}
