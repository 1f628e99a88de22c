//! The closed loop: every client sends one request, waits for its answer, and only then sends
//! the next, so the offered load is the number of clients and throughput is what the store
//! sustains at that concurrency (Little's law: clients = throughput x latency).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use hdrhistogram::Histogram;
use tessera_raft::rng::SeededRng;

use super::target::{KvError, KvTarget};

/// The largest latency the histograms hold exactly; slower requests are recorded as this.
/// It is above any sensible request timeout.
const LATENCY_US_MAX: u64 = 60_000_000;

/// What every client does, and when the run ends.
#[derive(Debug, Clone)]
pub struct Workload {
    /// Keys are drawn uniformly from this many distinct keys.
    pub key_space: u64,
    /// Every write puts a value of this size.
    pub value_bytes: usize,
    /// The chance that a request is a read; the rest are writes.
    pub read_ratio: f64,
    pub stop: StopAt,
    /// A request without an answer after this long counts as a `timeout` error.
    pub request_timeout: Duration,
    /// How long a client waits after an error before its next request. Without a pause, a
    /// client facing a dead endpoint would spin on instant failures and take the CPU that the
    /// healthy clients (and, on one machine, the store itself) need.
    pub error_backoff: Duration,
    /// Seeds each client's key and operation choices, so a run's request sequence can be
    /// repeated.
    pub seed: u64,
}

/// When a run ends.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum StopAt {
    /// Clients stop sending once this much time has passed since the start.
    Elapsed(Duration),
    /// Clients stop once this many requests (successful or not) have been sent in total.
    Ops(u64),
}

/// What a run measured.
#[derive(Debug)]
pub struct Outcome {
    /// From the start until the last client's last answer.
    pub elapsed: Duration,
    /// Latencies of successful reads, in microseconds.
    pub read_latency_us: Histogram<u64>,
    /// Latencies of successful writes, in microseconds.
    pub write_latency_us: Histogram<u64>,
    /// Failed requests by `KvError::kind`.
    pub errors: BTreeMap<&'static str, ErrorTally>,
}

/// The failures of one kind.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ErrorTally {
    pub count: u64,
    /// The first failure's message, as an example of what went wrong.
    pub first_message: String,
}

/// Counters every client updates, read by the progress printer and the `Ops` stop rule.
#[derive(Debug, Default)]
struct Counters {
    ops_claimed: AtomicU64,
    ops_finished: AtomicU64,
    errors: AtomicU64,
}

/// What the clients measured so far, behind one lock. One shared pair of histograms keeps
/// memory flat in the number of clients (a histogram is about 140 KiB); the lock is held for
/// one increment per request, which is nothing next to a network round trip.
#[derive(Debug)]
struct Tally {
    read_latency_us: Histogram<u64>,
    write_latency_us: Histogram<u64>,
    errors: BTreeMap<&'static str, ErrorTally>,
}

impl Tally {
    fn record_success(&mut self, is_read: bool, latency_us: u64) {
        let histogram = if is_read { &mut self.read_latency_us } else { &mut self.write_latency_us };
        // An in-process target answers in under a microsecond; the histogram's lowest value
        // is one.
        histogram.saturating_record(latency_us.max(1));
    }

    fn record_error(&mut self, error: &KvError) {
        self.errors
            .entry(error.kind())
            .or_insert_with(|| ErrorTally { count: 0, first_message: error.to_string() })
            .count += 1;
    }
}

/// Runs one closed-loop client per element of `clients` until `workload.stop`, and prints a
/// progress line to stderr every `progress_interval` if one is given.
pub async fn run<T: KvTarget>(
    clients: Vec<T>,
    workload: Workload,
    progress_interval: Option<Duration>,
) -> Outcome {
    assert!(!clients.is_empty(), "a run needs at least one client");
    let workload = Arc::new(workload);
    let counters = Arc::new(Counters::default());
    let tally = Arc::new(Mutex::new(Tally {
        read_latency_us: new_latency_histogram(),
        write_latency_us: new_latency_histogram(),
        errors: BTreeMap::new(),
    }));
    let value = Bytes::from(vec![b'v'; workload.value_bytes]);
    let started = Instant::now();

    let tasks: Vec<_> = clients
        .into_iter()
        .enumerate()
        .map(|(client_index, client)| {
            tokio::spawn(client_loop(
                client,
                client_index as u64,
                Arc::clone(&workload),
                Arc::clone(&counters),
                Arc::clone(&tally),
                value.clone(),
                started,
            ))
        })
        .collect();
    let progress = progress_interval
        .map(|interval| tokio::spawn(print_progress(interval, Arc::clone(&counters), started)));
    for task in tasks {
        task.await.expect("a bench client panicked");
    }
    let elapsed = started.elapsed();
    if let Some(progress) = progress {
        progress.abort();
    }

    let tally =
        Arc::into_inner(tally).expect("every client has ended").into_inner().expect("no client panicked");
    Outcome {
        elapsed,
        read_latency_us: tally.read_latency_us,
        write_latency_us: tally.write_latency_us,
        errors: tally.errors,
    }
}

async fn client_loop<T: KvTarget>(
    mut client: T,
    client_index: u64,
    workload: Arc<Workload>,
    counters: Arc<Counters>,
    tally: Arc<Mutex<Tally>>,
    value: Bytes,
    started: Instant,
) {
    // Distinct streams per client: the same seed for every client would have them all hit the
    // same key at the same step.
    let mut rng = SeededRng::new(workload.seed ^ client_index.wrapping_mul(0x9e37_79b9_7f4a_7c15));
    let timeout = workload.request_timeout;
    loop {
        let may_send = match workload.stop {
            StopAt::Elapsed(duration) => started.elapsed() < duration,
            StopAt::Ops(ops) => counters.ops_claimed.fetch_add(1, Ordering::Relaxed) < ops,
        };
        if !may_send {
            break;
        }
        let key = key_for_index(rng.below(workload.key_space));
        let is_read = unit(&mut rng) < workload.read_ratio;
        let request_started = Instant::now();
        let result = if is_read {
            tokio::time::timeout(timeout, client.get(key)).await.map(|result| result.map(drop))
        } else {
            tokio::time::timeout(timeout, client.put(key, value.clone())).await
        };
        let result = result.unwrap_or_else(|_| {
            Err(KvError::Timeout(format!("no answer within {} ms", timeout.as_millis())))
        });
        let latency_us = request_started.elapsed().as_micros() as u64;
        counters.ops_finished.fetch_add(1, Ordering::Relaxed);
        match result {
            Ok(()) => tally.lock().expect("no client panicked").record_success(is_read, latency_us),
            Err(error) => {
                counters.errors.fetch_add(1, Ordering::Relaxed);
                tally.lock().expect("no client panicked").record_error(&error);
                if !workload.error_backoff.is_zero() {
                    tokio::time::sleep(workload.error_backoff).await;
                }
            }
        }
    }
}

/// Prints, every `interval`, how many requests have finished and the rate over the last
/// interval. It goes to stderr so that `--json` output on stdout stays one JSON object.
async fn print_progress(interval: Duration, counters: Arc<Counters>, started: Instant) {
    let mut ticker = tokio::time::interval_at(tokio::time::Instant::now() + interval, interval);
    let mut ops_before = 0;
    let mut tick_before = Instant::now();
    loop {
        ticker.tick().await;
        let ops = counters.ops_finished.load(Ordering::Relaxed);
        let now = Instant::now();
        let rate_ops_per_sec = (ops - ops_before) as f64 / (now - tick_before).as_secs_f64();
        eprintln!(
            "{:>6.1} s  {ops:>10} ops  {rate_ops_per_sec:>10.0} ops/s  {} errors",
            started.elapsed().as_secs_f64(),
            counters.errors.load(Ordering::Relaxed),
        );
        ops_before = ops;
        tick_before = now;
    }
}

pub fn new_latency_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, LATENCY_US_MAX, 3).expect("valid histogram bounds")
}

/// The key with index `key_index`: two bytes that scatter the keys evenly over the key
/// space (a sharded store splits it into ranges, and a workload of keys sharing one prefix
/// would all land in one of them), then a readable fixed-width name, so that every key has
/// the same size whatever the key space.
pub fn key_for_index(key_index: u64) -> Bytes {
    let scatter = (SeededRng::new(key_index).next_u64() >> 48) as u16;
    let mut key = scatter.to_be_bytes().to_vec();
    key.extend_from_slice(format!("bench-{key_index:016x}").as_bytes());
    Bytes::from(key)
}

/// A uniform float in [0, 1), from the top 53 bits of a draw (a double's precision).
fn unit(rng: &mut SeededRng) -> f64 {
    (rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;

    /// What the fake store saw, shared by all clients.
    #[derive(Debug, Default)]
    struct FakeStore {
        puts: AtomicU64,
        gets: AtomicU64,
        requests: AtomicU64,
        keys: Mutex<HashSet<Bytes>>,
    }

    /// An in-process store that answers at once, fails every `fail_every`-th request with
    /// `Busy` (counted over all clients), and never answers reads if `reads_hang`.
    #[derive(Debug, Clone)]
    struct FakeTarget {
        store: Arc<FakeStore>,
        fail_every: Option<u64>,
        reads_hang: bool,
    }

    impl FakeTarget {
        fn clients(count: usize, fail_every: Option<u64>, reads_hang: bool) -> (Vec<Self>, Arc<FakeStore>) {
            let store = Arc::new(FakeStore::default());
            let client = FakeTarget { store: Arc::clone(&store), fail_every, reads_hang };
            (vec![client; count], store)
        }

        /// Counts the request and says whether it is one to fail.
        fn record(&self, counter: &AtomicU64, key: Bytes) -> Result<(), KvError> {
            self.store.keys.lock().unwrap().insert(key);
            counter.fetch_add(1, Ordering::SeqCst);
            // One atomic sequence number per request, so that exactly one in `every` fails
            // however the clients interleave.
            let request_number = self.store.requests.fetch_add(1, Ordering::SeqCst) + 1;
            match self.fail_every {
                Some(every) if request_number.is_multiple_of(every) => {
                    Err(KvError::Busy("fake store is busy".into()))
                }
                _ => Ok(()),
            }
        }
    }

    impl KvTarget for FakeTarget {
        async fn put(&mut self, key: Bytes, value: Bytes) -> Result<(), KvError> {
            assert_eq!(value.len(), 64, "every write carries --value-bytes");
            self.record(&self.store.puts, key)
        }

        async fn get(&mut self, key: Bytes) -> Result<Option<Bytes>, KvError> {
            if self.reads_hang {
                std::future::pending::<()>().await;
            }
            self.record(&self.store.gets, key).map(|()| None)
        }
    }

    fn workload(stop: StopAt, read_ratio: f64) -> Workload {
        Workload {
            key_space: 1_000,
            value_bytes: 64,
            read_ratio,
            stop,
            request_timeout: Duration::from_secs(10),
            error_backoff: Duration::ZERO,
            seed: 7,
        }
    }

    fn ops_ok(outcome: &Outcome) -> u64 {
        outcome.read_latency_us.len() + outcome.write_latency_us.len()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn sends_exactly_the_requested_ops_with_the_requested_mix() {
        let (clients, store) = FakeTarget::clients(8, None, false);
        let outcome = run(clients, workload(StopAt::Ops(20_000), 0.3), None).await;

        let puts = store.puts.load(Ordering::SeqCst);
        let gets = store.gets.load(Ordering::SeqCst);
        assert_eq!(puts + gets, 20_000, "the store saw exactly --ops requests");
        assert_eq!(outcome.read_latency_us.len(), gets);
        assert_eq!(outcome.write_latency_us.len(), puts);
        assert!(outcome.errors.is_empty());
        // 20,000 draws at 0.3 have a standard deviation of about 0.0032: 0.02 is six of them.
        let read_share = gets as f64 / 20_000.0;
        assert!((read_share - 0.3).abs() < 0.02, "read share {read_share}");
        // Keys stay inside the key space, and a uniform draw of 20,000 reaches all 1,000.
        let keys = store.keys.lock().unwrap();
        assert_eq!(keys.len(), 1_000);
        assert!(keys.contains(&key_for_index(0)) && keys.contains(&key_for_index(999)));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn read_ratio_zero_and_one_are_all_writes_and_all_reads() {
        let (clients, store) = FakeTarget::clients(4, None, false);
        run(clients, workload(StopAt::Ops(2_000), 0.0), None).await;
        assert_eq!(store.gets.load(Ordering::SeqCst), 0);
        assert_eq!(store.puts.load(Ordering::SeqCst), 2_000);

        let (clients, store) = FakeTarget::clients(4, None, false);
        run(clients, workload(StopAt::Ops(2_000), 1.0), None).await;
        assert_eq!(store.puts.load(Ordering::SeqCst), 0);
        assert_eq!(store.gets.load(Ordering::SeqCst), 2_000);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn counts_errors_by_kind_and_leaves_them_out_of_latency() {
        let (clients, _store) = FakeTarget::clients(4, Some(10), false);
        let outcome = run(clients, workload(StopAt::Ops(10_000), 0.5), None).await;

        let busy = &outcome.errors["busy"];
        assert_eq!(busy.count, 1_000, "every tenth request fails");
        assert_eq!(busy.first_message, "busy: fake store is busy");
        assert_eq!(outcome.errors.len(), 1);
        assert_eq!(ops_ok(&outcome), 9_000);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_request_without_an_answer_counts_as_a_timeout() {
        let (clients, store) = FakeTarget::clients(2, None, true);
        let mut workload = workload(StopAt::Ops(6), 1.0);
        workload.request_timeout = Duration::from_millis(20);
        let outcome = run(clients, workload, None).await;

        assert_eq!(outcome.errors["timeout"].count, 6);
        assert_eq!(outcome.errors["timeout"].first_message, "timed out: no answer within 20 ms");
        assert_eq!(ops_ok(&outcome), 0);
        assert_eq!(store.gets.load(Ordering::SeqCst), 0);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_timed_run_stops_after_its_duration() {
        let (clients, _store) = FakeTarget::clients(4, None, false);
        let outcome = run(clients, workload(StopAt::Elapsed(Duration::from_millis(200)), 0.5), None).await;

        assert!(outcome.elapsed >= Duration::from_millis(200));
        // Generous: the loop only has to notice the deadline, but CI machines are slow.
        assert!(outcome.elapsed < Duration::from_secs(5), "took {:?}", outcome.elapsed);
        assert!(ops_ok(&outcome) > 0);
    }

    #[test]
    fn the_same_seed_draws_the_same_keys_and_bounds_hold() {
        let mut first = SeededRng::new(42);
        let mut second = SeededRng::new(42);
        for _ in 0..1_000 {
            let key_index = first.below(10);
            assert_eq!(key_index, second.below(10));
            assert!(key_index < 10);
            let drawn = unit(&mut first);
            assert_eq!(drawn, unit(&mut second));
            assert!((0.0..1.0).contains(&drawn));
        }
        assert!(key_for_index(255).ends_with(b"bench-00000000000000ff"));
        assert_eq!(key_for_index(255), key_for_index(255), "a key index always names the same key");
    }

    #[test]
    fn keys_scatter_over_the_key_space() {
        // A thousand keys over four quarters of the key space (as four regions split it).
        let mut quarters = [0u32; 4];
        for key_index in 0..1_000 {
            quarters[usize::from(key_for_index(key_index)[0] >> 6)] += 1;
        }
        assert!(quarters.iter().all(|&count| (200..300).contains(&count)), "{quarters:?}");
    }
}
