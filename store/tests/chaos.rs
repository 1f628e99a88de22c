//! Randomized faults against four stores (each region has three replicas) while clients
//! write and read, then a check that everything the clients saw is linearizable and that
//! every replica ends with the same data.
//!
//! Each client owns one key per region and writes it values 1, 2, 3, ... one write at a
//! time; anyone reads any key, linearizably, from whichever store it asks (a store that
//! believes it leads, even one cut off from the others, must not answer stale). With one
//! writer per key whose values only grow, linearizability of a key's history comes down to
//! four rules, checked for every read that returned:
//! 1. it returned 0 (no value) or a value the key's writer did write;
//! 2. that write started before the read ended (no value from the future);
//! 3. no write of a greater value had succeeded before the read started (no stale value);
//! 4. it returned at least what any read that ended before it started returned (no going
//!    back in time).
//!
//! A write that failed (a timeout, a lost leader, a stopped store) may or may not have been
//! applied: the rules allow both. They assume that a failed write never takes effect after
//! a later write of its client, which holds because the store proposes only at a peer that
//! leads at the time, a region's mailbox keeps its order, and an entry of an older term is
//! never committed after one of a newer term.
//!
//! Meanwhile a fault thread isolates stores, splits the network, drops and delays messages,
//! restarts stores (two at once, losing the quorum, now and then), stalls a store's timer
//! (its ticks stop, as for a timer thread that gets no CPU), moves leaders, and moves
//! replicas between stores: by simple changes, or through a learner and a joint change
//! that promotes it and removes or demotes a voter (`move_replica`).
//!
//! When the faults stop, one more write per region commits whatever its leader's log still
//! held, so that nothing changes afterwards; then every key is read once more, which must
//! return at least its last successful write, and every store must come to hold exactly
//! those values: acknowledged writes survived, and no replica applied differently. A store
//! whose replica was moved away must come to hold nothing of the region: no data, and no
//! peer but its tombstone. Resting peers ask whether they are still members every
//! `RESTING_PEER_CHECK_TICKS` (the store's sweep), so that this check and the final
//! agreement also hold with resting regions' questions flying under faults.
//!
//! The log is compacted after a few entries, so a store that was down usually catches up
//! by snapshot; half the seeds use lease reads. The seed picks the faults (thread timing
//! still varies from run to run) and is printed when a check fails.
//!
//! The test runs three seeds of about 5 s of faults each (a fault that starts just before
//! the end runs its course: a held stall, a replica move). A longer soak:
//! `CHAOS_SEEDS=20 CHAOS_SECONDS=30 cargo nextest run --workspace -E 'test(chaos)'`
//! (`CHAOS_SEED_START` picks the first seed).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, PoisonError, RwLock};
use std::thread;
use std::time::{Duration, Instant};

use tessera_raft::rng::SeededRng as Rng;
use tessera_store::cluster::{key_in_region, put_command, wait_until, Cluster};
use tessera_store::proto::raftpb::ConfChangeType;
use tessera_store::proto::storepb::{Peer, PeerRole, PeerState, Region, RegionEpoch};
use tessera_store::{ReadQuery, ReadRequest, ReadResponse, StoreError};

/// Every region has three replicas, on three of the four stores: moving a replica to the
/// fourth and back exercises peer creation, catch-up by snapshot and destruction.
const STORES_LEN: u64 = 4;
const REPLICAS_LEN: u64 = 3;
const REGIONS_LEN: u64 = 3;
const CLIENTS_LEN: usize = 4;

/// How long a client waits for one answer before it counts the operation failed and moves
/// on. A restart needs the cluster to itself and waits for the operations in flight;
/// `Cluster::execute` may run a few seconds past this while it looks for a leader.
const OPERATION_TIMEOUT: Duration = Duration::from_millis(1500);

/// The store's sweep of resting peers, every 50 ticks (0.5 s at the harness's 10 ms ticks)
/// instead of its default 3,000 (30 s here; a node keeps five minutes), so that resting
/// peers ask under the faults too.
const RESTING_PEER_CHECK_TICKS: usize = 50;

/// How long the cluster may take to settle once the faults stop.
const SETTLE_TIMEOUT: Duration = Duration::from_secs(30);

/// `percent` out of a hundred times, from `rng`.
fn chance(rng: &mut Rng, percent: u64) -> bool {
    rng.below(100) < percent
}

/// The keys: client `client`'s key in region `region_id`.
fn key_of(client: usize, region_id: u64) -> Vec<u8> {
    key_in_region(region_id, &format!("client{client}"))
}

/// A read is checked against the epoch's version (the range) alone, which nothing here
/// changes: a replica move changes only `conf_ver`. So every read carries the epoch the
/// regions were bootstrapped with.
fn initial_epoch() -> Option<RegionEpoch> {
    Some(RegionEpoch { conf_ver: 1, version: 1 })
}

#[derive(Clone, Copy, Debug)]
struct Write {
    value: u64,
    invoked: Instant,
    completed: Instant,
    succeeded: bool,
}

#[derive(Clone, Copy, Debug)]
struct Read {
    /// 0 for no value.
    value: u64,
    invoked: Instant,
    completed: Instant,
    store_id: u64,
}

/// What the clients saw of one key.
#[derive(Debug, Default)]
struct KeyHistory {
    /// In value order, which is also the order they were issued in (one writer).
    writes: Vec<Write>,
    reads: Vec<Read>,
}

type Histories = Mutex<BTreeMap<(usize, u64), KeyHistory>>;

fn record_write(histories: &Histories, key: (usize, u64), write: Write) {
    histories.lock().unwrap_or_else(PoisonError::into_inner).entry(key).or_default().writes.push(write);
}

fn record_read(histories: &Histories, key: (usize, u64), read: Read) {
    histories.lock().unwrap_or_else(PoisonError::into_inner).entry(key).or_default().reads.push(read);
}

fn parse_value(bytes: Option<Vec<u8>>) -> u64 {
    bytes.map_or(0, |b| {
        String::from_utf8(b).ok().and_then(|s| s.parse().ok()).expect("values are decimal numbers")
    })
}

/// One read of `key`, asked of `first_store_id`, then of the leader it names. Only an
/// attempt that returned a value counts; its interval is that attempt's alone.
fn read_once(cluster: &Cluster, first_store_id: u64, region_id: u64, key: &[u8]) -> Option<Read> {
    let mut store_id = first_store_id;
    for _ in 0..2 {
        if !cluster.running_store_ids().contains(&store_id) {
            return None;
        }
        let request = ReadRequest {
            region_id,
            region_epoch: initial_epoch(),
            query: ReadQuery::Get { key: key.to_vec() },
        };
        let invoked = Instant::now();
        let answer = cluster.store(store_id).read_and_wait(request).recv_timeout(OPERATION_TIMEOUT);
        let completed = Instant::now();
        match answer {
            Ok(Ok(ReadResponse::Value(value))) => {
                return Some(Read { value: parse_value(value), invoked, completed, store_id })
            }
            Ok(Ok(other)) => panic!("a get answered {other:?}"),
            Ok(Err(StoreError::NotLeader { leader: Some(leader), .. })) => store_id = leader.store_id,
            Ok(Err(_)) | Err(_) => return None,
        }
    }
    None
}

/// A random running store, if any.
fn any_store(cluster: &Cluster, rng: &mut Rng) -> Option<u64> {
    let running = cluster.running_store_ids();
    (!running.is_empty()).then(|| running[rng.below(running.len() as u64) as usize])
}

fn run_client(cluster: &RwLock<Cluster>, histories: &Histories, client: usize, seed: u64, stop: &AtomicBool) {
    let mut rng = Rng::new(seed ^ (client as u64 + 1).wrapping_mul(0xA24B_AED4_963E_E407));
    let mut next_value = [1u64; REGIONS_LEN as usize];
    while !stop.load(Ordering::Relaxed) {
        let region_id = rng.below(REGIONS_LEN) + 1;
        // Each operation takes the cluster for itself alone, so that a restart waiting for
        // it waits for one operation at most.
        let cluster = || cluster.read().unwrap_or_else(PoisonError::into_inner);
        if chance(&mut rng, 50) {
            let value = next_value[region_id as usize - 1];
            next_value[region_id as usize - 1] += 1;
            let key = key_of(client, region_id);
            let command = put_command(region_id, None, &key, value.to_string().as_bytes());
            let invoked = Instant::now();
            let succeeded = cluster().execute(command, OPERATION_TIMEOUT).is_ok();
            let completed = Instant::now();
            record_write(histories, (client, region_id), Write { value, invoked, completed, succeeded });
            // Reading a write back at once, from any store, is what catches a cut-off
            // leader answering from its old state.
            if succeeded {
                let guard = cluster();
                let read = any_store(&guard, &mut rng).and_then(|id| read_once(&guard, id, region_id, &key));
                if let Some(read) = read {
                    record_read(histories, (client, region_id), read);
                }
            }
        } else {
            let owner = rng.below(CLIENTS_LEN as u64) as usize;
            let guard = cluster();
            let key = key_of(owner, region_id);
            if let Some(read) =
                any_store(&guard, &mut rng).and_then(|id| read_once(&guard, id, region_id, &key))
            {
                record_read(histories, (owner, region_id), read);
            }
        }
        // A pause now and then lets a region go to rest between bursts.
        if chance(&mut rng, 5) {
            thread::sleep(Duration::from_millis(rng.below(300)));
        }
    }
}

/// What the fault thread did, and the fatal errors of stores it restarted (a restart
/// would hide them from the final check).
#[derive(Debug, Default)]
struct Faults {
    done: Vec<String>,
    fatal_errors: Vec<String>,
}

/// The faults, starting for `duration` (the last one runs its course); everything is
/// healed and running when it returns.
fn run_faults(cluster: &RwLock<Cluster>, seed: u64, duration: Duration) -> Faults {
    let mut rng = Rng::new(seed);
    let mut faults = Faults::default();
    let done = &mut faults.done;
    let started = Instant::now();
    while started.elapsed() < duration {
        thread::sleep(Duration::from_millis(50 + rng.below(300)));
        // Faults pile up, but not for long: many steps start from a healed network, so that
        // every schedule has stretches in which a quorum can work.
        if chance(&mut rng, 40) {
            heal_network(&cluster.read().unwrap_or_else(PoisonError::into_inner));
            done.push("heal".into());
        }
        let store_id = rng.below(STORES_LEN) + 1;
        match rng.below(11) {
            0 | 1 => {
                cluster.read().unwrap_or_else(PoisonError::into_inner).network.isolate(store_id);
                done.push(format!("isolate {store_id}"));
            }
            2 | 3 => {
                let other = store_id % STORES_LEN + 1;
                let third = other % STORES_LEN + 1;
                cluster
                    .read()
                    .unwrap_or_else(PoisonError::into_inner)
                    .network
                    .partition(&[&[store_id, other], &[third]]);
                done.push(format!("partition {store_id},{other} | {third} | the rest"));
            }
            4 => {
                let guard = cluster.read().unwrap_or_else(PoisonError::into_inner);
                guard.network.set_drop_rate(rng.below(200_000) as u32);
                guard.network.set_delay(Duration::ZERO, Duration::from_millis(rng.below(30)));
                done.push("lossy network".into());
            }
            5 | 6 => {
                heal_network(&cluster.read().unwrap_or_else(PoisonError::into_inner));
                done.push("heal".into());
            }
            7 => {
                let mut stopped = vec![store_id];
                if chance(&mut rng, 25) {
                    stopped.push(store_id % STORES_LEN + 1);
                }
                let mut guard = cluster.write().unwrap_or_else(PoisonError::into_inner);
                for &id in &stopped {
                    if let Some(reason) = guard.store(id).fatal_error() {
                        faults.fatal_errors.push(format!("store {id}: {reason}"));
                    }
                    guard.stop_store(id);
                }
                drop(guard);
                thread::sleep(Duration::from_millis(rng.below(500)));
                let mut guard = cluster.write().unwrap_or_else(PoisonError::into_inner);
                for &id in &stopped {
                    guard.start_store(id);
                }
                done.push(format!("restart {stopped:?}"));
            }
            8 => {
                let region_id = rng.below(REGIONS_LEN) + 1;
                let guard = cluster.read().unwrap_or_else(PoisonError::into_inner);
                let Some(region) = guard.region(region_id, OPERATION_TIMEOUT) else { continue };
                let Some(target) = region.peers.get(rng.below(region.peers.len() as u64) as usize) else {
                    continue;
                };
                for id in guard.running_store_ids() {
                    let _ = guard.store(id).transfer_leader(region_id, target.id);
                }
                done.push(format!("move region {region_id}'s leader to store {}", target.store_id));
            }
            9 => {
                let region_id = rng.below(REGIONS_LEN) + 1;
                let guard = cluster.read().unwrap_or_else(PoisonError::into_inner);
                done.push(move_replica(&guard, &mut rng, region_id));
            }
            _ => {
                // A timer thread that gets no CPU: the store's ticks stop, and a leader
                // among its peers must not trust a lease its clock no longer measures. Cut
                // off as well, half the time, it hears of no newer leader either, while
                // clients still reach it.
                let stalled = Duration::from_millis(100 + rng.below(1400));
                let isolated = chance(&mut rng, 50);
                // Said in the log: a stall matters most where the store leads.
                let led = {
                    let guard = cluster.read().unwrap_or_else(PoisonError::into_inner);
                    guard.store(store_id).stall_timer(stalled);
                    if isolated {
                        guard.network.isolate(store_id);
                    }
                    let leads = |region_id: &u64| {
                        guard
                            .store(store_id)
                            .peer_status(*region_id, OPERATION_TIMEOUT)
                            .is_some_and(|s| s.is_leader)
                    };
                    (1..=REGIONS_LEN).filter(leads).count()
                };
                if isolated {
                    // No heal until the stall ends: the others elect a leader and write
                    // meanwhile, and a lease the stalled store kept would answer stale.
                    thread::sleep(stalled);
                }
                done.push(format!(
                    "stall store {store_id}'s timer for {} ms{} (leading {led} regions)",
                    stalled.as_millis(),
                    if isolated { ", isolated" } else { "" }
                ));
            }
        }
    }
    heal_network(&cluster.read().unwrap_or_else(PoisonError::into_inner));
    faults
}

/// Undoes every network fault: partitions, isolations, drops and delays.
fn heal_network(cluster: &Cluster) {
    cluster.network.heal();
    cluster.network.set_drop_rate(0);
    cluster.network.set_delay(Duration::ZERO, Duration::ZERO);
}

/// Moves a replica of `region_id` to the store without one, as a placement driver would,
/// by one of three routes picked at random:
/// 0. add a voter there, then remove a random peer (two simple changes);
/// 1. add a learner there, then in one joint change promote it and remove a random voter;
/// 2. add a learner there, then in one joint change promote it and demote a random voter,
///    then remove that learner.
///
/// Each step reads the membership again, so a region that an earlier move left halfway (a
/// change that timed out may still apply) is brought back to three voters first: a
/// surplus voter or learner is removed, or a learner is promoted. A single leftover
/// learner beside three voters is taken as this move's learner on routes 1 and 2 (which
/// may promote again a voter an earlier move demoted). Removing or demoting the
/// leader's own peer makes it hand leadership over first. Says what it did, and whether
/// each change took effect.
fn move_replica(cluster: &Cluster, rng: &mut Rng, region_id: u64) -> String {
    let route = rng.below(3);
    let mut done = Vec::new();
    let mut demoted = None;
    for _ in 0..3 {
        let Some(region) = cluster.settled_region(region_id, OPERATION_TIMEOUT * 2) else {
            done.push(format!("no leader out of a joint configuration in region {region_id}"));
            break;
        };
        let is_learner = |p: &Peer| p.role == PeerRole::Learner as i32;
        let voters: Vec<Peer> = region.peers.iter().copied().filter(|p| !is_learner(p)).collect();
        let learners: Vec<Peer> = region.peers.iter().copied().filter(is_learner).collect();
        let random_voter = |rng: &mut Rng| voters[rng.below(voters.len() as u64) as usize];
        let free_store = (1..=STORES_LEN).find(|id| region.peers.iter().all(|p| p.store_id != *id));
        let changes: Vec<(ConfChangeType, Peer)> = match (voters.len() as u64, learners.first()) {
            (v, _) if v > REPLICAS_LEN => vec![(ConfChangeType::RemoveNode, random_voter(rng))],
            (v, Some(&learner)) if v < REPLICAS_LEN => vec![(ConfChangeType::AddNode, voter(learner))],
            (_, Some(&learner)) if route == 0 || learners.len() > 1 || demoted == Some(learner.id) => {
                vec![(ConfChangeType::RemoveNode, learner)]
            }
            (_, Some(&learner)) => {
                let out = random_voter(rng);
                if route == 2 {
                    demoted = Some(out.id);
                    vec![
                        (ConfChangeType::AddNode, voter(learner)),
                        (ConfChangeType::AddLearnerNode, learner_of(out)),
                    ]
                } else {
                    vec![(ConfChangeType::AddNode, voter(learner)), (ConfChangeType::RemoveNode, out)]
                }
            }
            (_, None) if !done.is_empty() => break,
            (_, None) => {
                let Some(store_id) = free_store else { break };
                let peer = Peer { id: cluster.alloc_id(), store_id, role: PeerRole::Voter as i32 };
                if route == 0 {
                    vec![(ConfChangeType::AddNode, peer)]
                } else {
                    vec![(ConfChangeType::AddLearnerNode, learner_of(peer))]
                }
            }
        };
        // With the epoch read above: a change decided on that membership must not apply
        // to another (a removal that timed out may apply meanwhile, and promoting the
        // removed id would bring back a peer its store's tombstone refuses for good).
        let outcome = cluster.change_peers(region_id, region.epoch, &changes, OPERATION_TIMEOUT * 2);
        let described: Vec<String> = changes
            .iter()
            .map(|(change, peer)| format!("{change:?} peer {} on store {}", peer.id, peer.store_id))
            .collect();
        done.push(format!("region {region_id}: {}: {}", described.join(" + "), outcome.is_ok()));
        if outcome.is_err() {
            break;
        }
    }
    done.join(", then ")
}

fn voter(peer: Peer) -> Peer {
    Peer { role: PeerRole::Voter as i32, ..peer }
}

fn learner_of(peer: Peer) -> Peer {
    Peer { role: PeerRole::Learner as i32, ..peer }
}

/// The four rules of the module doc for one key; returns what broke them.
fn check_key(key: (usize, u64), history: &KeyHistory) -> Vec<String> {
    let mut broken = Vec::new();
    let writes = &history.writes;
    for (i, w) in writes.iter().enumerate() {
        assert_eq!(w.value, i as u64 + 1, "a client writes 1, 2, 3, ... in order");
    }
    let mut reads_by_end: Vec<&Read> = history.reads.iter().collect();
    reads_by_end.sort_by_key(|r| r.completed);
    for read in &history.reads {
        let value = read.value;
        let label = format!("{key:?} read at store {}", read.store_id);
        if value > writes.len() as u64 {
            broken.push(format!("{label}: {read:?} returned a value never written"));
            continue;
        }
        if value > 0 && writes[value as usize - 1].invoked > read.completed {
            broken.push(format!("{label}: {read:?} returned a value written only after it ended"));
        }
        if let Some(newer) =
            writes.iter().rev().find(|w| w.succeeded && w.completed < read.invoked && w.value > value)
        {
            broken.push(format!("{label}: {read:?} is stale: {newer:?} had succeeded before it started"));
        }
        if let Some(earlier) =
            reads_by_end.iter().take_while(|r| r.completed < read.invoked).find(|r| r.value > value)
        {
            broken.push(format!(
                "{label}: {read:?} went back in time: {earlier:?} had ended before it started"
            ));
        }
    }
    broken
}

fn run_seed(seed: u64, duration: Duration) {
    let lease_reads = seed % 2 == 1;
    let mut cluster = Cluster::new(STORES_LEN, REGIONS_LEN, REPLICAS_LEN, |config| {
        config.raft_lease_reads = lease_reads;
        // Compact after a few entries, so that a store that was down catches up by snapshot.
        config.log_gc_count_threshold = 20;
        config.log_gc_check_ticks = 5;
        config.log_gc_lag_max = 40;
        config.resting_peer_check_ticks = RESTING_PEER_CHECK_TICKS;
    });
    cluster.network.set_seed(seed);
    cluster.start_all();
    let cluster = RwLock::new(cluster);
    let histories = Histories::default();
    let stop = AtomicBool::new(false);
    let faults = thread::scope(|scope| {
        for client in 0..CLIENTS_LEN {
            let (cluster, histories, stop) = (&cluster, &histories, &stop);
            scope.spawn(move || run_client(cluster, histories, client, seed, stop));
        }
        let faults = run_faults(&cluster, seed, duration);
        stop.store(true, Ordering::Relaxed);
        faults
    });
    let context = format!("seed {seed} (lease reads: {lease_reads}); faults: {:?}", faults.done);
    assert!(faults.fatal_errors.is_empty(), "{context}: stores stopped fatally: {:?}", faults.fatal_errors);
    let cluster = cluster.into_inner().unwrap_or_else(PoisonError::into_inner);
    let (writes_len, reads_len) = {
        let histories = histories.lock().unwrap_or_else(PoisonError::into_inner);
        let writes =
            histories.values().map(|h| h.writes.iter().filter(|w| w.succeeded).count()).sum::<usize>();
        (writes, histories.values().map(|h| h.reads.len()).sum::<usize>())
    };
    // Enough for the checks to mean something, few enough for a loaded machine: faults
    // keep a region without a quorum for seconds at a time.
    assert!(
        writes_len >= 10 && reads_len >= 10,
        "{context}: the clients made too little progress: {writes_len} writes, {reads_len} reads"
    );

    // One more write per region: once it is applied, every entry its leader's log held
    // before it is too, and no entry another node held can be committed any more.
    for region_id in 1..=REGIONS_LEN {
        let sentinel = cluster.put(region_id, &key_in_region(region_id, "sentinel"), b"1", SETTLE_TIMEOUT);
        assert!(
            sentinel.is_ok(),
            "{context}: region {region_id} takes no write after the faults: {sentinel:?}"
        );
    }
    // Every key reads at least its last successful write.
    for client in 0..CLIENTS_LEN {
        for region_id in 1..=REGIONS_LEN {
            let key = key_of(client, region_id);
            let mut read = None;
            let settled = wait_until(SETTLE_TIMEOUT, || {
                let Some(leader) = cluster.leader_store(region_id, OPERATION_TIMEOUT) else { return false };
                read = read_once(&cluster, leader, region_id, &key);
                read.is_some()
            });
            assert!(settled, "{context}: region {region_id} serves no read after the faults");
            record_read(&histories, (client, region_id), read.expect("a read returned"));
        }
    }
    let histories = histories.into_inner().unwrap_or_else(PoisonError::into_inner);
    let broken: Vec<String> = histories.iter().flat_map(|(key, history)| check_key(*key, history)).collect();
    assert!(broken.is_empty(), "{context}: not linearizable:\n{}", broken.join("\n"));

    // Every replica holds exactly what the final reads returned, and a store that lost its
    // replica holds nothing of the region: its peer was destroyed, not left behind.
    let mut finals = BTreeMap::new();
    for region_id in 1..=REGIONS_LEN {
        let described = cluster.settled_region(region_id, SETTLE_TIMEOUT);
        let described = described.unwrap_or_else(|| {
            panic!("{context}: region {region_id} has no leader out of a joint configuration")
        });
        finals.insert(region_id, described);
    }
    for ((client, region_id), history) in &histories {
        let last = history.reads.last().expect("the final read").value;
        let region: &Region = &finals[region_id];
        for store_id in 1..=STORES_LEN {
            let hosts = region.peers.iter().any(|p| p.store_id == store_id);
            let expected = (hosts && last > 0).then(|| last.to_string().into_bytes());
            assert!(
                cluster.wait_for_value(store_id, &key_of(*client, *region_id), expected.as_deref(), SETTLE_TIMEOUT),
                "{context}: store {store_id} (a replica: {hosts}) does not come to hold {expected:?} for client \
                 {client} in region {region_id}"
            );
        }
    }
    for (region_id, region) in &finals {
        for store_id in (1..=STORES_LEN).filter(|id| region.peers.iter().all(|p| p.store_id != *id)) {
            let store = cluster.store(store_id);
            let gone = wait_until(SETTLE_TIMEOUT, || {
                let record = store.region_record(*region_id).expect("the engine reads");
                !store.region_ids().contains(region_id)
                    && record.is_none_or(|r| r.state == PeerState::Tombstone as i32)
            });
            assert!(
                gone,
                "{context}: store {store_id} keeps a peer of region {region_id}, which has none there: {:?}",
                store.peer_status(*region_id, OPERATION_TIMEOUT)
            );
        }
    }
    for store_id in 1..=STORES_LEN {
        assert_eq!(cluster.store(store_id).fatal_error(), None, "{context}");
    }
    eprintln!(
        "seed {seed}: {writes_len} writes succeeded and {reads_len} reads returned under faults: {:?}",
        faults.done
    );
}

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().map_or(default, |v| v.parse().unwrap_or_else(|_| panic!("{name}={v:?}")))
}

#[test]
fn chaos_reads_stay_linearizable_and_replicas_agree_under_faults() {
    let start = env_u64("CHAOS_SEED_START", 1);
    let seeds = env_u64("CHAOS_SEEDS", 3);
    let duration = Duration::from_secs(env_u64("CHAOS_SECONDS", 5));
    for seed in start..start + seeds {
        run_seed(seed, duration);
    }
}
