//! `tessera local`: a three-node cluster in this process on loopback, a short demo workload
//! through the KV service, then serving until told to stop.
//!
//! Every listener is bound (port 0) before any node starts, so that each node's config can
//! name the real Raft addresses of all three. The demo is an ordinary client
//! ([`tessera::Client`]) given the three KV addresses.

use std::collections::BTreeMap;
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use tessera::{Client, ClientConfig, Node, NodeConfig};

/// The cluster's size: the smallest that survives the loss of a node.
const STORE_IDS: [u64; 3] = [1, 2, 3];

/// How long the demo keeps retrying one key (elections after a start take a moment) before
/// it calls the cluster unhealthy.
const KEY_DEADLINE: Duration = Duration::from_secs(20);

/// The demo prints a progress line every this many percent of its keys.
const PROGRESS_PERCENT_STEP: u64 = 20;

/// What `tessera local` runs, as `cli::local` validated it.
#[derive(Debug, Clone)]
pub struct LocalConfig {
    /// The parent of the nodes' data directories; a temporary one when absent.
    pub dir: Option<PathBuf>,
    /// Serve this long after the demo; until a signal when absent.
    pub duration: Option<Duration>,
    pub demo_keys: u64,
    pub regions_len: u64,
}

/// Starts the cluster, runs the demo, serves until stopped, and shuts every node down.
pub fn run(config: LocalConfig) -> anyhow::Result<()> {
    // The client side of the demo and the signal listeners; the nodes run their own.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    // Listening starts before the nodes do: a signal during start-up or the demo then waits
    // for its turn instead of killing the process with the nodes half written.
    let mut stop_signals = runtime.block_on(async { StopSignals::listen() })?;

    let temporary_dir;
    let dir = match &config.dir {
        Some(dir) => {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
            dir.clone()
        }
        None => {
            temporary_dir = tempfile::Builder::new()
                .prefix("tessera-local-")
                .tempdir()
                .context("creating a temporary directory")?;
            temporary_dir.path().to_path_buf()
        }
    };

    let nodes = start_cluster(&dir, config.regions_len)?;
    println!(
        "tessera local: {} nodes, {} regions, data in {}",
        nodes.len(),
        config.regions_len,
        dir.display()
    );
    for node in nodes.values() {
        println!("  node {}: kv {}  raft {}", node.store_id(), node.kv_address(), node.raft_address());
    }
    if let Some(address) = nodes.values().find_map(Node::metrics_address) {
        println!("  metrics (all three nodes): http://{address}/metrics");
    }

    let kv_addresses: BTreeMap<u64, SocketAddr> =
        nodes.iter().map(|(&store_id, node)| (store_id, node.kv_address())).collect();
    let demo_result = runtime.block_on(run_demo(&kv_addresses, config.demo_keys));
    let stop_reason = match &demo_result {
        Ok(summary) => {
            println!("{summary}");
            match config.duration {
                Some(duration) => {
                    println!("serving for {} s (or until Ctrl-C or SIGTERM)", duration.as_secs())
                }
                None => println!("serving until Ctrl-C or SIGTERM"),
            }
            runtime.block_on(stop_signals.wait(config.duration))
        }
        Err(_) => "the demo failed",
    };

    println!("stopping ({stop_reason})");
    // Nodes are shut down outside any runtime (`Node::shutdown` blocks on its own), and
    // after the demo's clients are gone, which the nodes would otherwise wait for.
    for (_, node) in nodes {
        node.shutdown();
    }
    println!("stopped");
    demo_result.map(|_| ())
}

/// Binds all six listeners, then starts the nodes on them.
fn start_cluster(dir: &Path, regions_len: u64) -> anyhow::Result<BTreeMap<u64, Node>> {
    let bind = || TcpListener::bind("127.0.0.1:0").context("binding a loopback port");
    let mut listeners = BTreeMap::new();
    for store_id in STORE_IDS {
        listeners.insert(store_id, (bind()?, bind()?));
    }
    let mut peers = BTreeMap::new();
    for (&store_id, (raft_listener, _)) in &listeners {
        peers.insert(store_id, raft_listener.local_addr()?.to_string());
    }
    let mut nodes = BTreeMap::new();
    for (store_id, (raft_listener, kv_listener)) in listeners {
        let mut config = NodeConfig::new(
            store_id,
            dir.join(format!("node-{store_id}")),
            peers[&store_id].clone(),
            kv_listener.local_addr()?.to_string(),
            peers.clone(),
        );
        config.regions_len = regions_len;
        // Three nodes share one machine: one thread each where the defaults assume a
        // machine per node.
        config.raft_pool_size = 1;
        config.apply_pool_size = 1;
        config.runtime_worker_threads = 1;
        // The nodes share this process and so its metrics: one page serves them all.
        if store_id == STORE_IDS[0] {
            config.metrics_address = Some("127.0.0.1:0".to_string());
        }
        let node = Node::start_on(config, raft_listener, kv_listener)
            .with_context(|| format!("starting node {store_id}"))?;
        nodes.insert(store_id, node);
    }
    Ok(nodes)
}

/// Ctrl-C and SIGTERM, listened for from creation on.
#[derive(Debug)]
pub struct StopSignals {
    interrupt: tokio::signal::unix::Signal,
    terminate: tokio::signal::unix::Signal,
}

impl StopSignals {
    /// Must run inside the runtime that later waits on the signals.
    pub fn listen() -> anyhow::Result<StopSignals> {
        use tokio::signal::unix::{signal, SignalKind};
        Ok(StopSignals {
            interrupt: signal(SignalKind::interrupt()).context("listening for Ctrl-C")?,
            terminate: signal(SignalKind::terminate()).context("listening for SIGTERM")?,
        })
    }

    /// Waits for a signal, or for `duration` when given; says which came.
    pub async fn wait(&mut self, duration: Option<Duration>) -> &'static str {
        let elapsed = async {
            match duration {
                Some(duration) => tokio::time::sleep(duration).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = self.interrupt.recv() => "Ctrl-C",
            _ = self.terminate.recv() => "SIGTERM",
            () = elapsed => "--duration elapsed",
        }
    }
}

/// The demo's `i`-th key: a two-byte prefix spreads the keys evenly over the key space, and
/// so over every region, the way the cluster's initial regions split it.
fn demo_key(i: u64, keys_len: u64) -> Vec<u8> {
    let prefix = u16::try_from(i * 65_536 / keys_len).expect("i < keys_len keeps the prefix below 65536");
    let mut key = prefix.to_be_bytes().to_vec();
    key.extend_from_slice(format!("demo-{i:06}").as_bytes());
    key
}

fn demo_value(i: u64) -> Vec<u8> {
    format!("value-{i}").into_bytes()
}

/// Writes `keys_len` keys, reads every one back, and returns a one-line summary; an error
/// when a key cannot be written or reads back wrong.
async fn run_demo(kv_addresses: &BTreeMap<u64, SocketAddr>, keys_len: u64) -> anyhow::Result<String> {
    let endpoints: Vec<String> = kv_addresses.values().map(ToString::to_string).collect();
    // Elections right after the start take a moment; the client waits them out.
    let config = ClientConfig { operation_timeout: KEY_DEADLINE, ..ClientConfig::default() };
    let client = Client::connect(&endpoints, config).await.context("connecting to the nodes")?;
    let started = Instant::now();
    println!("demo: writing {keys_len} keys");
    for i in 0..keys_len {
        client
            .put(&demo_key(i, keys_len), &demo_value(i))
            .await
            .with_context(|| format!("writing demo key {i}"))?;
        print_progress("put", i + 1, keys_len);
    }
    println!("demo: reading {keys_len} keys back");
    for i in 0..keys_len {
        let value =
            client.get(&demo_key(i, keys_len)).await.with_context(|| format!("reading demo key {i}"))?;
        if value.as_deref() != Some(&demo_value(i)[..]) {
            bail!("demo key {i} read back {value:?}, not what was written");
        }
        print_progress("get", i + 1, keys_len);
    }
    let stats = client.stats();
    Ok(format!(
        "demo: ok: wrote {keys_len} keys and read all {keys_len} back in {:.2} s ({} region lookups, {} redirects to a leader, {} retries)",
        started.elapsed().as_secs_f64(),
        stats.region_lookups,
        stats.redirects,
        stats.retries,
    ))
}

fn print_progress(operation: &str, done: u64, total: u64) {
    let step = (total * PROGRESS_PERCENT_STEP / 100).max(1);
    if done.is_multiple_of(step) || done == total {
        println!("demo: {operation} {done}/{total}");
    }
}
