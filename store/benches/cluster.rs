//! The store under closed-loop write load: three stores in one process, each on its own
//! RocksDB in a temporary directory (every raft round written with one synced write),
//! connected by the in-memory network, with 1, 64 and 1,024 regions and 16 B and 1 KiB
//! values.
//!
//! For each combination a fresh cluster starts, every region elects a leader (spread
//! round-robin over the stores) and takes one warm-up write, the idle cluster is watched for
//! a second (the fixed cost of hosting the regions), then a fixed number of writer threads
//! run for a fixed time. Each writer proposes straight to a region's leader store, waits for
//! the answer, and proposes again, to the next of its regions: the regions are dealt out
//! round-robin, so with more regions than writers every region takes writes (the goal is
//! about active regions), and with fewer, writers share a region. The
//! bench reports committed writes per second, latency percentiles, fsyncs per write and per
//! second per store (RocksDB's count of its write-ahead log's syncs: two pollers' synced
//! writes that meet in one RocksDB write group share one), raft rounds, synced writes per
//! round, and CPU time per write, then checks two goals of the
//! store's design: fsyncs per store do not grow with the number of regions (one synced
//! write per raft round, whatever the number of peers in it), and the store's CPU per write
//! with 1,024 regions is within 1.2x of one region's.
//!
//! CPU time is user + system time in clock ticks (the tick rate comes from `AT_CLKTCK` in
//! `/proc/self/auxv`). The process's comes from `/proc/self/stat` and covers every thread:
//! the writers, the stores, the in-memory network (which delivers on the sending poller's
//! thread) and RocksDB's background threads. Each writer also reads its own thread's
//! (`/proc/thread-self/schedstat`, in nanoseconds); the store's CPU is the process's without the writers'. The
//! goal is checked on the store's: the writers stand in for clients. Writers sleep until
//! their answer arrives (a callback unparks them) rather than wait on a channel, whose
//! receive spins and yields first: with a thousand writers on two cores that spinning was
//! most of the clients' CPU, and varied with latency.
//!
//! Run: `cargo bench --workspace --bench cluster` (with `-p`, RocksDB compiles again; see
//! the README).
//! Environment:
//! - `BENCH_SECONDS`: the measured time per combination (default 5);
//! - `BENCH_PASSES`: how many times every combination runs (default 3): for each value
//!   size, one pass over the region counts after another. Each goal's ratio compares the
//!   region counts of one pass, and its verdict goes by the median of that ratio over the
//!   passes, because CPU time per write on a shared machine moves by a quarter from one
//!   run to the next;
//! - `BENCH_WRITERS`: concurrent writers in total (default 128);
//! - `BENCH_EVERY_REGION`: 1 (default) deals every region to a writer as above; 0 binds
//!   writer w to region w % regions + 1 alone, so that with more regions than writers the
//!   others rest in hibernation (the figures before 2026-12-08 were taken so);
//! - `BENCH_REGIONS`: region counts, comma-separated (default `1,64,1024`);
//! - `BENCH_VALUES`: value sizes in bytes, comma-separated (default `16,1024`);
//! - `BENCH_RAFT_POLLERS`, `BENCH_APPLY_POLLERS`: poller threads per store (default: the
//!   store's defaults, 2 and 1).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Barrier, Mutex, PoisonError};
use std::thread;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use proc_stats::{clock_ticks_per_second, process_cpu_ticks, process_rss_bytes, thread_cpu_ns};
use tessera_store::cluster::{initial_peer_id, key_in_region, Cluster};
use tessera_store::proto::serverpb::{CmdType, RaftCmdRequest, Request, RequestHeader};
use tessera_store::proto::storepb::RegionEpoch;
use tessera_store::{Callback, CmdResponse, Store, StoreConfig, StoreError, StoreResult};

#[path = "common/proc_stats.rs"]
mod proc_stats;

const STORES_LEN: u64 = 3;

/// Slower than the test harness's 10 ms: with 1,024 regions every tick is a message to
/// every peer, and a production store ticks at 100 ms to 1 s. Ticks at 10 ms would measure
/// the timer, not the writes.
const RAFT_TICK_INTERVAL: Duration = Duration::from_millis(100);

/// How long one write may wait for its answer before the writer counts a timeout and moves
/// on. Far above any latency a healthy store shows, so a timeout means a stall.
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);

/// How long finding a leader, or electing every region's first one, may take.
const LEADER_TIMEOUT: Duration = Duration::from_secs(30);

/// Threads that elect and warm up regions in parallel: enough to overlap the synced
/// round trips of many regions, few enough to leave the stores the cores.
const WARM_UP_THREADS_MAX: usize = 16;

/// The goals: with many regions, CPU per write at most this many times one region's, and
/// fsyncs per second per store at most this many times one region's.
const CPU_PER_WRITE_RATIO_GOAL: f64 = 1.2;
const FSYNC_RATE_RATIO_GOAL: f64 = 1.2;

/// How long the bench watches the warmed-up cluster with no writes, to tell the fixed
/// cost of hosting the regions (ticks, heartbeats) from the cost of writing.
const IDLE_WINDOW: Duration = Duration::from_secs(1);

/// Latencies are recorded in microseconds, from 1 µs up to a minute, at 3 significant
/// digits.
const LATENCY_US_MAX: u64 = 60_000_000;

fn main() {
    let settings = match Settings::from_env() {
        Ok(settings) => settings,
        Err(e) => {
            eprintln!("cluster bench: {e}");
            std::process::exit(2);
        }
    };
    let clock_ticks_per_second = clock_ticks_per_second();
    eprintln!(
        "cluster bench: {} stores, {} writers ({}), {} passes of {:.1} s per case, regions {:?}, values \
         {:?} B, raft tick {} ms, {} raft and {} apply pollers per store, CPU from /proc/self/stat at \
         {clock_ticks_per_second} ticks/s",
        STORES_LEN,
        settings.writers_len,
        settings.writers_spread(),
        settings.passes_len,
        settings.duration.as_secs_f64(),
        settings.regions_lens,
        settings.value_lens,
        RAFT_TICK_INTERVAL.as_millis(),
        settings.raft_pollers_len,
        settings.apply_pollers_len,
    );
    // For each value size, passes run every region count once each, one pass after
    // another, so that whatever slows the machine down for a while (a busy neighbour, a
    // slow disk) falls on every region count alike; the goals compare cases of one pass.
    let mut results = Vec::new();
    for &value_len in &settings.value_lens {
        for pass in 1..=settings.passes_len {
            for &regions_len in &settings.regions_lens {
                let result = run_case(&settings, pass, regions_len, value_len);
                eprintln!(
                    "  done: pass {pass}, {regions_len} regions, {}: {:.0} writes/s, {} errors",
                    value_label(value_len),
                    result.writes_per_second(),
                    result.errors.total()
                );
                results.push(result);
            }
        }
    }
    print!("{}", report(&settings, &results, clock_ticks_per_second));
}

/// What to run, from the environment.
#[derive(Debug)]
struct Settings {
    duration: Duration,
    writers_len: usize,
    /// Whether every region takes writes (each writer cycles over its share), or only as
    /// many as there are writers.
    every_region: bool,
    regions_lens: Vec<u64>,
    value_lens: Vec<usize>,
    raft_pollers_len: usize,
    apply_pollers_len: usize,
    passes_len: usize,
}

impl Settings {
    /// How the writers are spread over the regions, for the report.
    fn writers_spread(&self) -> &'static str {
        if self.every_region {
            "every region written"
        } else {
            "one region per writer"
        }
    }

    fn from_env() -> Result<Settings, String> {
        let seconds: f64 = env_parse("BENCH_SECONDS", 5.0)?;
        if !(seconds > 0.0 && seconds.is_finite()) {
            return Err(format!("BENCH_SECONDS must be a positive number of seconds, not {seconds}"));
        }
        let writers_len: usize = env_parse("BENCH_WRITERS", 128)?;
        if writers_len == 0 {
            return Err("BENCH_WRITERS must be at least 1".into());
        }
        let every_region = match env_parse("BENCH_EVERY_REGION", 1u8)? {
            0 => false,
            1 => true,
            other => return Err(format!("BENCH_EVERY_REGION must be 0 or 1, not {other}")),
        };
        let regions_lens: Vec<u64> = env_list("BENCH_REGIONS", &[1, 64, 1024])?;
        if regions_lens.contains(&0) {
            return Err("BENCH_REGIONS: a cluster needs at least one region".into());
        }
        let value_lens: Vec<usize> = env_list("BENCH_VALUES", &[16, 1024])?;
        let defaults = StoreConfig::new(1, "");
        let raft_pollers_len: usize = env_parse("BENCH_RAFT_POLLERS", defaults.raft_batch.pool_size)?;
        let apply_pollers_len: usize = env_parse("BENCH_APPLY_POLLERS", defaults.apply_batch.pool_size)?;
        if raft_pollers_len == 0 || apply_pollers_len == 0 {
            return Err("BENCH_RAFT_POLLERS and BENCH_APPLY_POLLERS must be at least 1".into());
        }
        let passes_len: usize = env_parse("BENCH_PASSES", 3)?;
        if passes_len == 0 {
            return Err("BENCH_PASSES must be at least 1".into());
        }
        Ok(Settings {
            duration: Duration::from_secs_f64(seconds),
            writers_len,
            every_region,
            regions_lens,
            value_lens,
            raft_pollers_len,
            apply_pollers_len,
            passes_len,
        })
    }
}

fn env_parse<T: std::str::FromStr>(name: &str, default: T) -> Result<T, String> {
    match std::env::var(name) {
        Ok(text) => text.trim().parse().map_err(|_| format!("{name}={text:?} is not a valid number")),
        Err(_) => Ok(default),
    }
}

fn env_list<T: std::str::FromStr + Copy + Ord>(name: &str, default: &[T]) -> Result<Vec<T>, String> {
    let mut list = match std::env::var(name) {
        Ok(text) => text
            .split(',')
            .map(|item| item.trim().parse().map_err(|_| format!("{name}={text:?}: {item:?} is not a number")))
            .collect::<Result<Vec<T>, String>>()?,
        Err(_) => default.to_vec(),
    };
    if list.is_empty() {
        return Err(format!("{name} lists nothing to run"));
    }
    // Sorted so that the report's goal checks compare the fewest regions with the most.
    list.sort_unstable();
    list.dedup();
    Ok(list)
}

/// Where a writer sends its region's writes.
#[derive(Clone, Copy, Debug)]
struct Route {
    store_id: u64,
    epoch: RegionEpoch,
}

/// Failed writes, by kind. None of them counts as a committed write or has its latency
/// recorded.
#[derive(Debug, Default)]
struct ErrorCounts {
    not_leader: u64,
    busy: u64,
    timeouts: u64,
    other: u64,
    /// The first unexpected error, as evidence.
    first_other: Option<String>,
}

impl ErrorCounts {
    fn total(&self) -> u64 {
        self.not_leader + self.busy + self.timeouts + self.other
    }

    fn merge(&mut self, other: ErrorCounts) {
        self.not_leader += other.not_leader;
        self.busy += other.busy;
        self.timeouts += other.timeouts;
        self.other += other.other;
        if self.first_other.is_none() {
            self.first_other = other.first_other;
        }
    }
}

/// What one writer did.
#[derive(Debug)]
struct WriterOutcome {
    writes: u64,
    latency_us: Histogram<u64>,
    errors: ErrorCounts,
    /// The writer thread's own CPU time over its run.
    cpu_ns: u64,
}

/// A store's counters at one instant; the bench reports the differences.
#[derive(Clone, Copy, Debug, Default)]
struct StoreCounters {
    /// The raft pollers' synced writes (at most one per round), and the fsyncs of the
    /// write-ahead log that RocksDB did for them: concurrent synced writes (two pollers
    /// ending rounds together) can share one.
    synced_writes: u64,
    wal_syncs: u64,
    raft_rounds: u64,
    /// Peers (and control FSMs) the raft pollers handled, summed over rounds: each is one
    /// time a peer was scheduled and stepped.
    raft_fsms: u64,
    /// Messages the raft pollers took out of mailboxes, and of those the quiet ones (ticks a
    /// peer would not act on, apply reports of the applied index alone).
    raft_messages: u64,
    raft_quiet_messages: u64,
    /// Apply FSMs the apply pollers handled, summed over rounds.
    apply_fsms: u64,
    peers_written: u64,
    messages_sent: u64,
    entries_applied: u64,
    apply_writes: u64,
}

impl StoreCounters {
    fn read(cluster: &Cluster, store_id: u64) -> StoreCounters {
        let store = cluster.store(store_id);
        let stats = store.stats();
        StoreCounters {
            synced_writes: stats.synced_writes.load(Ordering::Relaxed),
            wal_syncs: store.wal_syncs(),
            raft_rounds: store.raft_batch_stats().poll_rounds(),
            raft_fsms: store.raft_batch_stats().fsms_handled(),
            raft_messages: store.raft_batch_stats().messages_handled(),
            raft_quiet_messages: store.raft_batch_stats().quiet_messages_handled(),
            apply_fsms: store.apply_batch_stats().fsms_handled(),
            peers_written: stats.peers_written.load(Ordering::Relaxed),
            messages_sent: stats.messages_sent.load(Ordering::Relaxed),
            entries_applied: stats.entries_applied.load(Ordering::Relaxed),
            apply_writes: stats.apply_writes.load(Ordering::Relaxed),
        }
    }

    fn since(self, earlier: StoreCounters) -> StoreCounters {
        StoreCounters {
            synced_writes: self.synced_writes - earlier.synced_writes,
            wal_syncs: self.wal_syncs - earlier.wal_syncs,
            raft_rounds: self.raft_rounds - earlier.raft_rounds,
            raft_fsms: self.raft_fsms - earlier.raft_fsms,
            raft_messages: self.raft_messages - earlier.raft_messages,
            raft_quiet_messages: self.raft_quiet_messages - earlier.raft_quiet_messages,
            apply_fsms: self.apply_fsms - earlier.apply_fsms,
            peers_written: self.peers_written - earlier.peers_written,
            messages_sent: self.messages_sent - earlier.messages_sent,
            entries_applied: self.entries_applied - earlier.entries_applied,
            apply_writes: self.apply_writes - earlier.apply_writes,
        }
    }
}

fn read_all(cluster: &Cluster) -> Vec<StoreCounters> {
    (1..=STORES_LEN).map(|id| StoreCounters::read(cluster, id)).collect()
}

/// One combination's measurements, over the window from the writers' start to the last
/// writer's end.
#[derive(Debug)]
struct CaseResult {
    /// Which pass over the cases this was, from 1.
    pass: usize,
    regions_len: u64,
    value_len: usize,
    elapsed: Duration,
    writes: u64,
    latency_us: Histogram<u64>,
    errors: ErrorCounts,
    /// Per store, in store id order.
    stores: Vec<StoreCounters>,
    cpu_ticks: u64,
    /// Of `cpu_ticks`, what the writer threads (the clients) spent, in nanoseconds.
    client_cpu_ns: u64,
    /// How many regions each store led when the writers started.
    leaders_per_store: Vec<u64>,
    /// Time to start the three stores (open RocksDB, load every region), one after another.
    start_all: Duration,
    /// Time to elect every region's leader, balance leaders and take the warm-up writes.
    warm_up: Duration,
    /// The process's resident memory at the end of the window, all three stores included.
    /// The allocator keeps what earlier cases freed, so after a bigger case this shows the
    /// bigger case's footprint; a case run alone shows its own.
    rss_bytes: u64,
    /// Process CPU over `IDLE_WINDOW` with the cluster warmed up and no writer running.
    idle_cpu_ticks: u64,
}

impl CaseResult {
    fn seconds(&self) -> f64 {
        self.elapsed.as_secs_f64()
    }

    fn writes_per_second(&self) -> f64 {
        self.writes as f64 / self.seconds()
    }

    /// RocksDB's count of its log's sync operations: one per synced write group.
    fn fsyncs(&self) -> u64 {
        self.stores.iter().map(|s| s.wal_syncs).sum()
    }

    fn synced_writes(&self) -> u64 {
        self.stores.iter().map(|s| s.synced_writes).sum()
    }

    fn synced_writes_per_second_per_store(&self) -> f64 {
        self.synced_writes() as f64 / self.seconds() / self.stores.len() as f64
    }

    fn fsyncs_per_write(&self) -> f64 {
        self.fsyncs() as f64 / self.writes.max(1) as f64
    }

    fn fsyncs_per_second_per_store(&self) -> f64 {
        self.fsyncs() as f64 / self.seconds() / self.stores.len() as f64
    }

    fn rounds_per_second_per_store(&self) -> f64 {
        self.stores.iter().map(|s| s.raft_rounds).sum::<u64>() as f64
            / self.seconds()
            / self.stores.len() as f64
    }

    fn cpu_us_per_write(&self, clock_ticks_per_second: u64) -> f64 {
        self.us_per_write(self.cpu_ticks, clock_ticks_per_second)
    }

    /// The process's CPU but the writer threads': the stores, the in-memory network and
    /// RocksDB's background threads.
    fn store_cpu_us_per_write(&self, clock_ticks_per_second: u64) -> f64 {
        let client_us = self.client_cpu_ns as f64 / 1e3 / self.writes.max(1) as f64;
        (self.cpu_us_per_write(clock_ticks_per_second) - client_us).max(0.0)
    }

    fn us_per_write(&self, ticks: u64, clock_ticks_per_second: u64) -> f64 {
        ticks as f64 * 1e6 / clock_ticks_per_second as f64 / self.writes.max(1) as f64
    }

    fn latency_ms(&self, quantile: f64) -> f64 {
        self.latency_us.value_at_quantile(quantile) as f64 / 1_000.0
    }
}

fn run_case(settings: &Settings, pass: usize, regions_len: u64, value_len: usize) -> CaseResult {
    let mut cluster = Cluster::new(STORES_LEN, regions_len, STORES_LEN, |config| {
        config.raft_tick_interval = RAFT_TICK_INTERVAL;
        config.raft_batch.pool_size = settings.raft_pollers_len;
        config.apply_batch.pool_size = settings.apply_pollers_len;
    });
    let start_started = Instant::now();
    cluster.start_all();
    let start_all = start_started.elapsed();
    let warm_up_started = Instant::now();
    // Spread leaders over the stores, as a placement driver would balance them: one store
    // leading every region would measure that store's leader path and leave the others to
    // follow.
    for region_id in 1..=regions_len {
        let _ = cluster.store(intended_leader_store(region_id)).campaign(region_id);
    }
    let all_regions: Vec<u64> = (1..=regions_len).collect();
    let mut routes = warm_up(&cluster, &all_regions);
    // The stores start one after another, and while the later ones load their regions the
    // first one's peers may time out and win elections before they hear of the campaigns
    // above. Hand those regions over once, then find their leaders again.
    let misplaced: Vec<u64> = routes
        .iter()
        .filter(|(id, route)| route.store_id != intended_leader_store(**id))
        .map(|(id, _)| *id)
        .collect();
    for &region_id in &misplaced {
        let target = initial_peer_id(region_id, intended_leader_store(region_id));
        let _ = cluster.store(routes[&region_id].store_id).transfer_leader(region_id, target);
    }
    routes.extend(warm_up(&cluster, &misplaced));
    let warm_up = warm_up_started.elapsed();
    let idle_cpu_before = process_cpu_ticks();
    thread::sleep(IDLE_WINDOW);
    let idle_cpu_ticks = process_cpu_ticks() - idle_cpu_before;
    let mut leaders_per_store = vec![0; STORES_LEN as usize];
    for route in routes.values() {
        leaders_per_store[(route.store_id - 1) as usize] += 1;
    }

    let stop = AtomicBool::new(false);
    let start = Barrier::new(settings.writers_len + 1);
    let (outcomes, elapsed, stores, cpu_ticks, rss_bytes) = thread::scope(|scope| {
        let handles: Vec<_> = (0..settings.writers_len)
            .map(|writer| {
                let targets: Vec<(u64, Route)> = writer_regions(settings, writer, regions_len)
                    .into_iter()
                    .map(|region_id| (region_id, routes[&region_id]))
                    .collect();
                let (cluster, stop, start) = (&cluster, &stop, &start);
                thread::Builder::new()
                    .name(format!("writer-{writer}"))
                    .spawn_scoped(scope, move || {
                        start.wait();
                        run_writer(cluster, writer, targets, value_len, stop)
                    })
                    .expect("the OS starts a writer thread")
            })
            .collect();
        start.wait();
        let started = Instant::now();
        let counters_before = read_all(&cluster);
        let cpu_before = process_cpu_ticks();
        thread::sleep(settings.duration);
        stop.store(true, Ordering::Relaxed);
        let outcomes: Vec<WriterOutcome> =
            handles.into_iter().map(|h| h.join().expect("a writer thread does not panic")).collect();
        // The window closes when the last writer has its last answer, so every write counted
        // and all the work done for it fall inside it.
        let elapsed = started.elapsed();
        let cpu_ticks = process_cpu_ticks() - cpu_before;
        let rss_bytes = process_rss_bytes();
        let stores: Vec<StoreCounters> = read_all(&cluster)
            .into_iter()
            .zip(counters_before)
            .map(|(after, before)| after.since(before))
            .collect();
        (outcomes, elapsed, stores, cpu_ticks, rss_bytes)
    });
    for store_id in 1..=STORES_LEN {
        if let Some(reason) = cluster.store(store_id).fatal_error() {
            eprintln!("  store {store_id} stopped fatally: {reason}");
        }
    }
    // Stops the stores and removes their directories before the next case starts.
    drop(cluster);

    let mut latency_us = new_latency_histogram();
    let mut errors = ErrorCounts::default();
    let mut writes = 0;
    let mut client_cpu_ns = 0;
    for outcome in outcomes {
        writes += outcome.writes;
        client_cpu_ns += outcome.cpu_ns;
        latency_us.add(&outcome.latency_us).expect("histograms of equal bounds merge");
        errors.merge(outcome.errors);
    }
    CaseResult {
        pass,
        regions_len,
        value_len,
        elapsed,
        writes,
        latency_us,
        errors,
        stores,
        cpu_ticks,
        client_cpu_ns,
        leaders_per_store,
        start_all,
        warm_up,
        rss_bytes,
        idle_cpu_ticks,
    }
}

/// The store whose peer should lead `region_id`: round-robin over the stores.
fn intended_leader_store(region_id: u64) -> u64 {
    (region_id - 1) % STORES_LEN + 1
}

/// Waits for each region's leader by writing one key to it (through the harness, which
/// follows leader changes), then asks the leader for the region's epoch.
fn warm_up(cluster: &Cluster, region_ids: &[u64]) -> BTreeMap<u64, Route> {
    let threads_len = region_ids.len().min(WARM_UP_THREADS_MAX);
    thread::scope(|scope| {
        let handles: Vec<_> = (0..threads_len)
            .map(|first| {
                scope.spawn(move || {
                    let mut routes = Vec::new();
                    for &region_id in region_ids.iter().skip(first).step_by(threads_len) {
                        let key = key_in_region(region_id, "warm-up");
                        if let Err(e) = cluster.put(region_id, &key, b"warm-up", LEADER_TIMEOUT) {
                            panic!(
                                "region {region_id} takes no warm-up write within {LEADER_TIMEOUT:?}: {e}"
                            );
                        }
                        routes.push((region_id, find_route(cluster, region_id)));
                    }
                    routes
                })
            })
            .collect();
        handles.into_iter().flat_map(|h| h.join().expect("a warm-up thread does not panic")).collect()
    })
}

/// The region's leader store and its epoch as the leader knows it.
fn find_route(cluster: &Cluster, region_id: u64) -> Route {
    let deadline = Instant::now() + LEADER_TIMEOUT;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let store_id = cluster
            .leader_store(region_id, left)
            .unwrap_or_else(|| panic!("region {region_id} has no leader within {LEADER_TIMEOUT:?}"));
        // The leader may have lost its lease between the two questions; ask again.
        if let Some(status) = cluster.store(store_id).peer_status(region_id, left).filter(|s| s.is_leader) {
            return Route { store_id, epoch: status.region.epoch.unwrap_or_default() };
        }
        assert!(
            Instant::now() < deadline,
            "region {region_id} has no stable leader within {LEADER_TIMEOUT:?}"
        );
    }
}

/// The regions writer `writer` writes, in turn: its round-robin share of all of them when
/// every region takes writes and there are more regions than writers, else one.
fn writer_regions(settings: &Settings, writer: usize, regions_len: u64) -> Vec<u64> {
    let writers_len = settings.writers_len as u64;
    let first = writer as u64 % regions_len + 1;
    if settings.every_region && regions_len > writers_len {
        (first..=regions_len).step_by(settings.writers_len).collect()
    } else {
        vec![first]
    }
}

/// One closed-loop writer: proposes to `targets` in turn, waits for each answer, and
/// repeats until `stop`; follows each region's leader and epoch as the answers tell them.
fn run_writer(
    cluster: &Cluster,
    writer: usize,
    mut targets: Vec<(u64, Route)>,
    value_len: usize,
    stop: &AtomicBool,
) -> WriterOutcome {
    let cpu_before = thread_cpu_ns();
    let mut outcome = WriterOutcome {
        writes: 0,
        latency_us: new_latency_histogram(),
        errors: ErrorCounts::default(),
        cpu_ns: 0,
    };
    let mut value = Value::new(writer as u64, value_len);
    let turns = targets.len();
    for seq in 0u64.. {
        if stop.load(Ordering::Relaxed) {
            break;
        }
        let (region_id, route) = &mut targets[seq as usize % turns];
        let region_id = *region_id;
        // Every attempt takes a new key, so a write that timed out but applies later never
        // overwrites a later one.
        let key = key_in_region(region_id, &format!("w{writer}-{seq}"));
        let request = RaftCmdRequest {
            header: Some(RequestHeader { region_id, region_epoch: Some(route.epoch) }),
            requests: vec![Request {
                cmd_type: CmdType::Put as i32,
                key,
                value: value.next(),
                end_key: Vec::new(),
            }],
            admin: None,
        };
        let started = Instant::now();
        let answer = propose_parked(cluster.store(route.store_id), request, WRITE_TIMEOUT);
        match answer {
            Ok(Ok(_)) => {
                outcome.latency_us.saturating_record(started.elapsed().as_micros() as u64);
                outcome.writes += 1;
            }
            Ok(Err(StoreError::NotLeader { .. })) => {
                outcome.errors.not_leader += 1;
                *route = find_route(cluster, region_id);
            }
            Ok(Err(StoreError::ServerIsBusy(_))) => {
                outcome.errors.busy += 1;
                // Backing off is what a client is told to do; without it the writer would
                // spin on the full queue.
                thread::sleep(Duration::from_millis(1));
            }
            Ok(Err(e)) => {
                outcome.errors.other += 1;
                if outcome.errors.first_other.is_none() {
                    outcome.errors.first_other = Some(format!("writer {writer}, region {region_id}: {e}"));
                }
                if let StoreError::EpochNotMatch { current } = e {
                    route.epoch = current.epoch.unwrap_or_default();
                }
            }
            Err(TimedOut) => outcome.errors.timeouts += 1,
        }
    }
    outcome.cpu_ns = thread_cpu_ns() - cpu_before;
    outcome
}

#[derive(Debug)]
struct TimedOut;

/// Proposes and sleeps until the answer: the callback stores it and unparks the writer.
/// (A channel's receive spins and yields before it sleeps; with a thousand writers on two
/// cores that spinning would be most of the clients' CPU and would vary with latency.)
fn propose_parked(
    store: &Store,
    request: RaftCmdRequest,
    timeout: Duration,
) -> Result<StoreResult<CmdResponse>, TimedOut> {
    let deadline = Instant::now() + timeout;
    let answer: Arc<Mutex<Option<StoreResult<CmdResponse>>>> = Arc::default();
    let writer = thread::current();
    let slot = answer.clone();
    store.propose(
        request,
        Callback::new(move |result| {
            *slot.lock().unwrap_or_else(PoisonError::into_inner) = Some(result);
            writer.unpark();
        }),
    );
    loop {
        if let Some(result) = answer.lock().unwrap_or_else(PoisonError::into_inner).take() {
            return Ok(result);
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(TimedOut);
        }
        // Wakes on the unpark, at the deadline, or spuriously; the loop tells them apart.
        thread::park_timeout(left);
    }
}

fn new_latency_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, LATENCY_US_MAX, 3).expect("valid histogram bounds")
}

/// Value bytes that do not compress: RocksDB compresses blocks with lz4, and a repeated
/// value would make 1 KiB writes cost the disk almost nothing.
#[derive(Debug)]
struct Value {
    state: u64,
    len: usize,
}

impl Value {
    fn new(seed: u64, len: usize) -> Value {
        // Any odd, nonzero state works for xorshift; the constant spreads small seeds.
        Value { state: (seed + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1, len }
    }

    fn next(&mut self) -> bytes::Bytes {
        let mut bytes = Vec::with_capacity(self.len + 8);
        while bytes.len() < self.len {
            self.state ^= self.state << 13;
            self.state ^= self.state >> 7;
            self.state ^= self.state << 17;
            bytes.extend_from_slice(&self.state.to_le_bytes());
        }
        bytes.truncate(self.len);
        bytes.into()
    }
}

fn value_label(value_len: usize) -> String {
    if value_len >= 1024 && value_len.is_multiple_of(1024) {
        format!("{} KiB", value_len / 1024)
    } else {
        format!("{value_len} B")
    }
}

fn pass(ok: bool) -> &'static str {
    if ok {
        "PASS"
    } else {
        "MISS"
    }
}

/// The report: the main table, a table of the store's internals, then the goal checks.
fn report(settings: &Settings, results: &[CaseResult], clock_ticks_per_second: u64) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "\n{} stores on RocksDB (fsync per raft round), {} raft and {} apply pollers per store, {} \
         closed-loop writers ({}), {:.1} s per case.",
        STORES_LEN,
        settings.raft_pollers_len,
        settings.apply_pollers_len,
        settings.writers_len,
        settings.writers_spread(),
        settings.duration.as_secs_f64()
    );
    let _ = writeln!(
        out,
        "CPU is user + sys time at {clock_ticks_per_second} ticks/s. Process: all of it (/proc/self/stat). \
         Store: the process's but the writer threads' own (each reads /proc/thread-self/schedstat), so the \
         stores, the in-memory network and RocksDB's background threads. Fsyncs are RocksDB's count of its \
         write-ahead log's syncs; each raft round makes at most one synced write, and synced writes that \
         meet in one RocksDB write group share a sync.\n"
    );
    let _ = writeln!(
        out,
        "| pass | regions | value | writes/s | p50 | p99 | fsyncs/write | fsyncs/s/store | process CPU µs/write | \
         store CPU µs/write |"
    );
    let _ = writeln!(out, "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for r in results {
        let _ = writeln!(
            out,
            "| {} | {} | {} | {:.0} | {:.2} ms | {:.2} ms | {:.3} | {:.0} | {:.1} | {:.1} |",
            r.pass,
            r.regions_len,
            value_label(r.value_len),
            r.writes_per_second(),
            r.latency_ms(0.50),
            r.latency_ms(0.99),
            r.fsyncs_per_write(),
            r.fsyncs_per_second_per_store(),
            r.cpu_us_per_write(clock_ticks_per_second),
            r.store_cpu_us_per_write(clock_ticks_per_second),
        );
    }

    let _ = writeln!(
        out,
        "\nDetails. Three figures are per store, in store id order. {} \
         Idle CPU is the process's CPU (100% = one core) over {} s with no writes, after warm-up. \
         RSS is the process's at the end of the case; the allocator keeps memory earlier cases \
         freed, so only the first case, or a case run alone, shows its own footprint.\n",
        if settings.every_region {
            "Writer w writes regions w + 1, w + 1 + writers, ... in turn, so every region takes \
             writes; with fewer regions than writers, writers share them."
        } else {
            "Writer w writes region w % regions + 1 alone, so with more regions than writers the \
             others only tick and heartbeat, or rest."
        },
        IDLE_WINDOW.as_secs_f64()
    );
    let _ = writeln!(
        out,
        "| pass | regions | value | written regions | writes | leaders | start | warm-up | RSS | idle CPU | rounds/s/store | synced writes/round | fsyncs/synced write | fsyncs/s | \
         peers/synced write | msgs/write | raft FSMs/write | raft inbox msgs/write | of them quiet | apply FSMs/write | applied/write | p99.9 | max | errors (not leader/busy/timeout/other) |"
    );
    let _ = writeln!(
        out,
        "|---:|---:|---:|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|"
    );
    for r in results {
        let seconds = r.seconds();
        let rounds: u64 = r.stores.iter().map(|s| s.raft_rounds).sum();
        let peers_written: u64 = r.stores.iter().map(|s| s.peers_written).sum();
        let messages: u64 = r.stores.iter().map(|s| s.messages_sent).sum();
        let applied: u64 = r.stores.iter().map(|s| s.entries_applied).sum();
        let per_write = |f: fn(&StoreCounters) -> u64| {
            r.stores.iter().map(f).sum::<u64>() as f64 / r.writes.max(1) as f64
        };
        let fsyncs_per_second: Vec<String> =
            r.stores.iter().map(|s| format!("{:.0}", s.wal_syncs as f64 / seconds)).collect();
        let leaders: Vec<String> = r.leaders_per_store.iter().map(u64::to_string).collect();
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} | {} | {:.2} s | {:.2} s | {} MiB | {:.0}% | {:.0} | {:.3} | {:.3} | {} | {:.1} | {:.2} | {:.2} | {:.2} | {:.2} | {:.2} | {:.2} | {:.2} ms | {:.2} ms | {}/{}/{}/{} |",
            r.pass,
            r.regions_len,
            value_label(r.value_len),
            if settings.every_region { r.regions_len } else { r.regions_len.min(settings.writers_len as u64) },
            r.writes,
            leaders.join("/"),
            r.start_all.as_secs_f64(),
            r.warm_up.as_secs_f64(),
            r.rss_bytes >> 20,
            r.idle_cpu_ticks as f64 / clock_ticks_per_second as f64 / IDLE_WINDOW.as_secs_f64() * 100.0,
            r.rounds_per_second_per_store(),
            r.synced_writes() as f64 / rounds.max(1) as f64,
            r.fsyncs() as f64 / r.synced_writes().max(1) as f64,
            fsyncs_per_second.join("/"),
            peers_written as f64 / r.synced_writes().max(1) as f64,
            messages as f64 / r.writes.max(1) as f64,
            per_write(|s| s.raft_fsms),
            per_write(|s| s.raft_messages),
            per_write(|s| s.raft_quiet_messages),
            per_write(|s| s.apply_fsms),
            applied as f64 / r.writes.max(1) as f64,
            r.latency_ms(0.999),
            r.latency_us.max() as f64 / 1_000.0,
            r.errors.not_leader,
            r.errors.busy,
            r.errors.timeouts,
            r.errors.other,
        );
    }
    for r in results {
        if let Some(first) = &r.errors.first_other {
            let _ = writeln!(
                out,
                "\nFirst unexpected error in pass {} with {} regions, {}: {first}",
                r.pass,
                r.regions_len,
                value_label(r.value_len)
            );
        }
    }

    let _ = writeln!(
        out,
        "\nGoals (each ratio compares cases of one pass; a verdict takes the median of its ratio over the passes):\n"
    );
    for &value_len in &settings.value_lens {
        let of_value: Vec<&CaseResult> = results.iter().filter(|r| r.value_len == value_len).collect();
        let label = value_label(value_len);
        // At most one synced write per raft round on every store, in every case. (Fsyncs
        // may be fewer, when synced writes share a write group, or a few more: RocksDB also
        // syncs a log it closes when a memtable fills.)
        let within_rounds =
            of_value.iter().all(|r| r.stores.iter().all(|s| s.synced_writes <= s.raft_rounds));
        let passes: Vec<PassRatios> = (1..=settings.passes_len)
            .filter_map(|pass| {
                let of_pass: Vec<&CaseResult> = of_value.iter().copied().filter(|r| r.pass == pass).collect();
                PassRatios::of(&of_pass, clock_ticks_per_second)
            })
            .collect();
        let Some(first) = passes.first() else { continue };
        if first.fewest_regions_len == first.most_regions_len {
            let _ = writeln!(
                out,
                "- {label}: only {} regions measured, no growth to check. At most one synced write per raft \
                 round on every store: {}.",
                first.fewest_regions_len,
                pass(within_rounds)
            );
            continue;
        }
        let listed = |ratio: fn(&PassRatios) -> f64| -> String {
            passes.iter().map(|p| format!("{:.2}x", ratio(p))).collect::<Vec<_>>().join(", ")
        };
        let fsync_ratio = median(passes.iter().map(|p| p.fsync_rate_ratio_max).collect());
        let synced_ratio = median(passes.iter().map(|p| p.synced_rate_ratio_max).collect());
        let _ = writeln!(
            out,
            "- {label}, fsyncs per second per store, the highest of any region count over {} regions', by \
             pass: {}; median {fsync_ratio:.2}x (goal: at most {FSYNC_RATE_RATIO_GOAL}x; synced writes before \
             RocksDB merges them: median {synced_ratio:.2}x); at most one synced write per raft round on every \
             store: {} -> {}",
            first.fewest_regions_len,
            listed(|p| p.fsync_rate_ratio_max),
            if within_rounds { "yes" } else { "no" },
            pass(fsync_ratio <= FSYNC_RATE_RATIO_GOAL && within_rounds)
        );
        // The goal is the store's: the writers stand in for clients, which a store does
        // not pay for. The whole process's ratio is printed beside it.
        let cpu_ratio = median(passes.iter().map(|p| p.store_cpu_ratio).collect());
        let process_ratio = median(passes.iter().map(|p| p.process_cpu_ratio).collect());
        let _ = writeln!(
            out,
            "- {label}, store CPU per write, {} regions against {}, by pass: {}; median {cpu_ratio:.2}x (goal: at \
             most {CPU_PER_WRITE_RATIO_GOAL}x; the whole process's median: {process_ratio:.2}x) -> {}",
            first.most_regions_len,
            first.fewest_regions_len,
            listed(|p| p.store_cpu_ratio),
            pass(cpu_ratio <= CPU_PER_WRITE_RATIO_GOAL)
        );
    }
    out
}

/// The goals' ratios within one pass: the most regions (and, for fsyncs, every count)
/// against the fewest.
struct PassRatios {
    fewest_regions_len: u64,
    most_regions_len: u64,
    /// The highest fsync rate per store of any region count, over the fewest regions', and
    /// the same for synced writes (before RocksDB merges concurrent ones).
    fsync_rate_ratio_max: f64,
    synced_rate_ratio_max: f64,
    store_cpu_ratio: f64,
    process_cpu_ratio: f64,
}

impl PassRatios {
    /// `of_pass` is one pass's cases of one value size, in region count order.
    fn of(of_pass: &[&CaseResult], clock_ticks_per_second: u64) -> Option<PassRatios> {
        let (fewest, most) = (of_pass.first()?, of_pass.last()?);
        let base_rate = fewest.fsyncs_per_second_per_store();
        let fsync_rate_ratio_max =
            of_pass.iter().map(|r| r.fsyncs_per_second_per_store() / base_rate).fold(1.0, f64::max);
        let base_synced_rate = fewest.synced_writes_per_second_per_store();
        let synced_rate_ratio_max = of_pass
            .iter()
            .map(|r| r.synced_writes_per_second_per_store() / base_synced_rate)
            .fold(1.0, f64::max);
        Some(PassRatios {
            fewest_regions_len: fewest.regions_len,
            most_regions_len: most.regions_len,
            fsync_rate_ratio_max,
            synced_rate_ratio_max,
            store_cpu_ratio: most.store_cpu_us_per_write(clock_ticks_per_second)
                / fewest.store_cpu_us_per_write(clock_ticks_per_second),
            process_cpu_ratio: most.cpu_us_per_write(clock_ticks_per_second)
                / fewest.cpu_us_per_write(clock_ticks_per_second),
        })
    }
}

/// The median of `values` (the mean of the middle two for an even count); not empty.
fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    let middle = values.len() / 2;
    if values.len().is_multiple_of(2) {
        (values[middle - 1] + values[middle]) / 2.0
    } else {
        values[middle]
    }
}
