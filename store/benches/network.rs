//! What replication costs between stores as regions grow, idle and under writes: three
//! stores in one process (real RocksDB, fsync on) on the in-memory network, with 1, 1,000
//! and 10,000 regions (each on all three stores, leaders spread round-robin).
//!
//! For each region count a fresh cluster starts and settles until every region rests
//! (hibernation). Then:
//! - idle: for `BENCH_IDLE_SECONDS`, the batches (one request each on a real network),
//!   messages and encoded bytes between stores per second, the process's CPU time as a
//!   share of one core (divided by three for one store), and the resident memory the
//!   regions added (from before the cluster started) per store, how much of it RocksDB
//!   holds (memtables and block cache), and the rest per region;
//! - writes: `BENCH_WRITES` writes from 16 client threads to regions drawn round-robin,
//!   each to its region's leader, and the batches, messages and bytes between stores per
//!   committed write (waking and resting again included).
//!
//! Run: `cargo bench --workspace --bench network` (with `-p`, RocksDB compiles again; see
//! the README).
//! Environment: `BENCH_REGIONS` (comma-separated, default `1,1000,10000`),
//! `BENCH_IDLE_SECONDS` (default 10), `BENCH_WRITES` (default 2000).

use std::sync::atomic::{AtomicU64, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use proc_stats::{clock_ticks_per_second, process_cpu_ticks, process_rss_bytes};
use tessera_store::cluster::{initial_peer_id, key_in_region, wait_until, Cluster};

#[path = "common/proc_stats.rs"]
mod proc_stats;

const STORES_LEN: u64 = 3;
const RAFT_TICK_INTERVAL: Duration = Duration::from_millis(100);
const SETTLE_TIMEOUT: Duration = Duration::from_secs(300);
const CLIENT_THREADS: u64 = 16;

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name).ok().and_then(|v| v.trim().parse().ok()).unwrap_or(default)
}

/// Batches, messages and encoded bytes between every ordered pair of stores so far.
fn traffic(cluster: &Cluster) -> (u64, u64, u64) {
    let mut totals = (0, 0, 0);
    for from in 1..=STORES_LEN {
        for to in (1..=STORES_LEN).filter(|to| *to != from) {
            totals.0 += cluster.network.batches_between(from, to);
            totals.1 += cluster.network.delivered_between(from, to);
            totals.2 += cluster.network.batch_bytes_between(from, to);
        }
    }
    totals
}

fn all_resting(cluster: &Cluster) -> bool {
    wait_until(SETTLE_TIMEOUT, || (1..=STORES_LEN).all(|id| cluster.store(id).ticking_regions_len() == 0))
}

fn main() {
    let regions_lens: Vec<u64> = std::env::var("BENCH_REGIONS")
        .ok()
        .map(|v| v.split(',').filter_map(|r| r.trim().parse().ok()).collect())
        .unwrap_or_else(|| vec![1, 1_000, 10_000]);
    let idle = Duration::from_secs_f64(env_or("BENCH_IDLE_SECONDS", 10.0));
    let writes: u64 = env_or("BENCH_WRITES", 2_000);
    let ticks_per_second = clock_ticks_per_second() as f64;
    println!(
        "| regions | idle batches/s | idle msgs/s | idle bytes/s | idle CPU per store (% of a core) | RSS added per store | of which RocksDB | per region beside RocksDB | batches/write | msgs/write | bytes/write |"
    );
    println!("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for regions in regions_lens {
        let rss_before = process_rss_bytes();
        let mut cluster = Cluster::new(STORES_LEN, regions, STORES_LEN, |config| {
            config.raft_tick_interval = RAFT_TICK_INTERVAL;
        });
        cluster.start_all();
        assert!(all_resting(&cluster), "{regions} regions come to rest");
        // Leaders spread round-robin, as a placement driver would balance them.
        for store_id in 1..=STORES_LEN {
            for region_id in 1..=regions {
                let target = (region_id - 1) % STORES_LEN + 1;
                let leads = cluster
                    .store(store_id)
                    .peer_status(region_id, Duration::from_secs(5))
                    .is_some_and(|s| s.is_leader);
                if leads && target != store_id {
                    let _ = cluster
                        .store(store_id)
                        .transfer_leader(region_id, initial_peer_id(region_id, target));
                }
            }
        }
        assert!(all_resting(&cluster), "{regions} regions rest after the leader transfers");
        thread::sleep(Duration::from_secs(2));

        let before = traffic(&cluster);
        let cpu_before = process_cpu_ticks();
        let started = Instant::now();
        thread::sleep(idle);
        let seconds = started.elapsed().as_secs_f64();
        let cpu_share = (process_cpu_ticks() - cpu_before) as f64 / ticks_per_second / seconds;
        let after = traffic(&cluster);
        let rss_per_store = process_rss_bytes().saturating_sub(rss_before) as f64 / STORES_LEN as f64;
        let engine_per_store = (1..=STORES_LEN).map(|id| cluster.store(id).engine_memory_bytes()).sum::<u64>()
            as f64
            / STORES_LEN as f64;
        let beside_engine_per_region = (rss_per_store - engine_per_store).max(0.0) / regions as f64;

        let written = AtomicU64::new(0);
        let next = AtomicU64::new(0);
        let before_writes = traffic(&cluster);
        thread::scope(|scope| {
            for _ in 0..CLIENT_THREADS {
                scope.spawn(|| loop {
                    let n = next.fetch_add(1, Ordering::Relaxed);
                    if n >= writes {
                        return;
                    }
                    let region_id = n % regions + 1;
                    let key = key_in_region(region_id, &format!("w{n}"));
                    if cluster.put(region_id, &key, b"0123456789abcdef", Duration::from_secs(30)).is_ok() {
                        written.fetch_add(1, Ordering::Relaxed);
                    }
                });
            }
        });
        // Let the written regions rest again: their last heartbeats and rest requests
        // belong to the writes' cost.
        assert!(all_resting(&cluster), "{regions} regions rest after the writes");
        let after_writes = traffic(&cluster);
        let committed = written.load(Ordering::Relaxed).max(1) as f64;
        let per_write = |i: usize| {
            let pick = |t: (u64, u64, u64)| [t.0, t.1, t.2][i] as f64;
            (pick(after_writes) - pick(before_writes)) / committed
        };
        let idle_rate = |i: usize| {
            let pick = |t: (u64, u64, u64)| [t.0, t.1, t.2][i] as f64;
            (pick(after) - pick(before)) / seconds
        };
        println!(
            "| {regions} | {:.1} | {:.1} | {:.0} | {:.2} | {:.1} MiB | {:.1} MiB | {:.1} KiB | {:.2} | {:.2} | {:.0} |",
            idle_rate(0),
            idle_rate(1),
            idle_rate(2),
            cpu_share * 100.0 / STORES_LEN as f64,
            rss_per_store / (1 << 20) as f64,
            engine_per_store / (1 << 20) as f64,
            beside_engine_per_region / 1024.0,
            per_write(0),
            per_write(1),
            per_write(2),
        );
        drop(cluster);
    }
}
