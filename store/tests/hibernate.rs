//! Idle regions rest: no ticks, no heartbeats; a write wakes exactly its region; a dead
//! store wakes only the regions it led; heartbeats between stores are coalesced; and a
//! resting leader cut off from its followers does not keep a lease or commit anything.

use std::sync::atomic::Ordering;
use std::thread;
use std::time::{Duration, Instant};

use tessera_store::cluster::{key_in_region, put_command, wait_until, Cluster};
use tessera_store::StoreError;

const WAIT: Duration = Duration::from_secs(60);

fn ticks(cluster: &Cluster, store_id: u64) -> u64 {
    cluster.store(store_id).stats().peer_ticks.load(Ordering::Relaxed)
}

fn wakeups(cluster: &Cluster, store_id: u64) -> u64 {
    cluster.store(store_id).stats().wakeups.load(Ordering::Relaxed)
}

fn heartbeats_sent(cluster: &Cluster, store_id: u64) -> u64 {
    cluster.transport(store_id).outbound_stats().heartbeats_coalesced
}

/// Waits until no region ticks on any running store.
fn all_resting(cluster: &Cluster, timeout: Duration) -> bool {
    wait_until(timeout, || {
        cluster.running_store_ids().iter().all(|id| cluster.store(*id).ticking_regions_len() == 0)
    })
}

/// The regions whose leader is on `store_id`, as that store sees them.
fn led_by(cluster: &Cluster, store_id: u64, regions: u64) -> Vec<u64> {
    (1..=regions)
        .filter(|region_id| {
            cluster
                .store(store_id)
                .peer_status(*region_id, Duration::from_secs(5))
                .is_some_and(|s| s.is_leader)
        })
        .collect()
}

/// The number of regions of the large test: 10,000 by default (the figure);
/// `TESSERA_HIBERNATE_REGIONS` changes it.
fn regions_len() -> u64 {
    std::env::var("TESSERA_HIBERNATE_REGIONS").ok().and_then(|v| v.parse().ok()).unwrap_or(10_000)
}

#[test]
fn idle_regions_rest_a_write_wakes_its_region_and_a_dead_store_wakes_only_what_it_led() {
    let regions = regions_len();
    let started = Instant::now();
    // A slow tick: 30,000 peers share two cores with the rest of the suite, and a tick that
    // outpaces them would measure elections lost to a busy machine, not hibernation.
    let mut cluster = Cluster::new(3, regions, 3, |config| {
        config.raft_tick_interval = Duration::from_millis(200);
    });
    cluster.start_all();
    assert!(all_resting(&cluster, Duration::from_secs(240)), "every region comes to rest");
    eprintln!("{regions} regions on 3 stores at rest after {:?}", started.elapsed());
    // The first store up tends to win every first election; spread the leaders (region r
    // to store r % 3 + 1) so that killing a store later leaves regions it did not lead.
    for store_id in 1..=3 {
        for region_id in led_by(&cluster, store_id, regions) {
            let target = region_id % 3 + 1;
            if target != store_id {
                let to_peer_id = tessera_store::cluster::initial_peer_id(region_id, target);
                cluster.store(store_id).transfer_leader(region_id, to_peer_id).unwrap();
            }
        }
    }
    assert!(all_resting(&cluster, Duration::from_secs(240)), "every region rests after the transfers");
    eprintln!("leaders spread and at rest again after {:?}", started.elapsed());

    // At rest: no peer ticks, no heartbeats, over several election timeouts. A heartbeat
    // sent by the last tick before a region came to rest may still be on its way, and its
    // answers count too: first wait until the counts stand still for a second.
    let counts = || -> Vec<(u64, u64)> {
        (1..=3).map(|id| (ticks(&cluster, id), heartbeats_sent(&cluster, id))).collect()
    };
    let mut before = counts();
    let quiet = wait_until(WAIT, || {
        thread::sleep(Duration::from_secs(1));
        let now = counts();
        std::mem::replace(&mut before, now) == before
    });
    assert!(quiet, "the stores fall quiet once every region rests");
    thread::sleep(Duration::from_secs(3));
    assert_eq!(before, counts(), "(peer ticks, heartbeats) per store while every region rests");

    // A write wakes its region's peers and nothing else, and the region rests again.
    let wakeups_before: Vec<u64> = (1..=3).map(|id| wakeups(&cluster, id)).collect();
    let region_id = regions / 2 + 1;
    cluster.must_put(region_id, &key_in_region(region_id, "k"), b"v");
    assert!(cluster.wait_for_value(3, &key_in_region(region_id, "k"), Some(b"v"), WAIT));
    for id in 1..=3 {
        assert!(cluster.store(id).ticking_regions_len() <= 1, "store {id} ticks only the written region");
    }
    assert!(all_resting(&cluster, WAIT), "the written region rests again");
    let woken: u64 = (1..=3).map(|id| wakeups(&cluster, id) - wakeups_before[id as usize - 1]).sum();
    assert!((1..=3).contains(&woken), "one wakeup per peer of the written region at most, saw {woken}");

    // Killing store 3 wakes the regions it led (their followers must elect) and no other.
    let led_by_3 = led_by(&cluster, 3, regions);
    assert!(!led_by_3.is_empty() && (led_by_3.len() as u64) < regions, "leaders are spread over the stores");
    let wakeups_before: Vec<u64> = (1..=2).map(|id| wakeups(&cluster, id)).collect();
    cluster.stop_store(3);
    for region_id in led_by_3.iter().step_by((led_by_3.len() / 20).max(1)) {
        let leader = cluster.leader_store(*region_id, WAIT);
        assert!(matches!(leader, Some(1 | 2)), "region {region_id} elects a leader on a live store");
    }
    assert!(all_resting(&cluster, WAIT), "with store 3 dead, the regions come to rest again");
    let woken: u64 = (1..=2).map(|id| wakeups(&cluster, id) - wakeups_before[id as usize - 1]).sum();
    let needed = 2 * led_by_3.len() as u64;
    assert!(
        woken >= led_by_3.len() as u64 && woken <= needed + needed / 10,
        "woke {woken} peers for {} regions led by the dead store",
        led_by_3.len()
    );
    // The survivors still take writes in a region store 3 did not lead.
    let other = (1..=regions).find(|r| !led_by_3.contains(r)).unwrap();
    cluster.must_put(other, &key_in_region(other, "after"), b"v");
}

/// Batches and messages per tick from store 1 to store 2 in a cluster of `regions` awake
/// regions (hibernation off, so every region heartbeats).
fn traffic_per_tick(regions: u64) -> (f64, f64, u64) {
    let tick = Duration::from_millis(50);
    let mut cluster = Cluster::new(3, regions, 3, |config| {
        config.raft_tick_interval = tick;
        config.hibernate_regions = false;
    });
    cluster.start_all();
    for region_id in (1..=regions).step_by(50) {
        assert!(cluster.leader_store(region_id, WAIT).is_some());
    }
    thread::sleep(Duration::from_secs(1));
    let batches_before = cluster.network.batches_between(1, 2);
    let messages_before = cluster.network.delivered_between(1, 2);
    let heartbeats_before = heartbeats_sent(&cluster, 1);
    let started = Instant::now();
    thread::sleep(tick * 40);
    let ticks = started.elapsed().as_secs_f64() / tick.as_secs_f64();
    let batches = (cluster.network.batches_between(1, 2) - batches_before) as f64;
    let messages = (cluster.network.delivered_between(1, 2) - messages_before) as f64;
    let heartbeats = heartbeats_sent(&cluster, 1) - heartbeats_before;
    (batches / ticks, messages / ticks, heartbeats)
}

/// With regions awake, the heartbeats of many regions between two stores travel in a few
/// batches per tick: ten times the regions is ten times the messages, but not ten times
/// the batches (what the gRPC transport sends as one request each).
#[test]
fn heartbeats_of_many_regions_travel_as_a_few_batches_per_store_pair() {
    let (batches_100, messages_100, _) = traffic_per_tick(100);
    let (batches_1000, messages_1000, heartbeats_1000) = traffic_per_tick(1_000);
    eprintln!("store 1 -> 2 per tick: 100 regions {batches_100:.1} batches, {messages_100:.0} messages; 1,000 regions {batches_1000:.1} batches, {messages_1000:.0} messages");
    assert!(messages_1000 > 5.0 * messages_100, "heartbeats grow with regions");
    assert!(
        heartbeats_1000 > 1_000,
        "heartbeats and responses were coalesced into records: {heartbeats_1000}"
    );
    assert!(
        batches_1000 < 3.0 * batches_100.max(1.0),
        "batches per tick must not grow with regions: {batches_100:.1} -> {batches_1000:.1}"
    );
    assert!(messages_1000 / batches_1000 > 10.0, "a batch carries many regions' messages");
}

/// A resting leader cut off from its followers: they notice its store is silent, wake and
/// elect a new leader; a write sent to the old one wakes it but cannot commit, and it steps
/// down (check-quorum counts again once it ticks). No write is lost or doubled.
#[test]
fn a_resting_leader_cut_off_from_its_followers_steps_down_without_committing() {
    let mut cluster = Cluster::new(3, 1, 3, |config| {
        config.raft_tick_interval = Duration::from_millis(20);
    });
    cluster.start_all();
    cluster.must_put(1, &key_in_region(1, "a"), b"1");
    assert!(all_resting(&cluster, WAIT));
    let old_leader = cluster.leader_store(1, WAIT).unwrap();
    let status = cluster.store(old_leader).peer_status(1, Duration::from_secs(5)).unwrap();
    assert!(status.hibernating);
    cluster.network.isolate(old_leader);
    // The followers find the leader's store silent, wake and elect among themselves.
    let new_leader = wait_until(WAIT, || {
        cluster.running_store_ids().into_iter().filter(|id| *id != old_leader).any(|id| {
            cluster
                .store(id)
                .peer_status(1, Duration::from_secs(5))
                .is_some_and(|s| s.is_leader && s.term > status.term)
        })
    });
    assert!(new_leader, "the followers elect a new leader");
    // The old leader, woken by a write, cannot commit it, and check-quorum (counting again
    // now that it ticks) makes it step down.
    let answer = cluster.store(old_leader).propose_and_wait(put_command(
        1,
        Some(status.region.epoch.unwrap()),
        &key_in_region(1, "lost"),
        b"x",
    ));
    let stepped_down = wait_until(WAIT, || {
        cluster.store(old_leader).peer_status(1, Duration::from_secs(5)).is_some_and(|s| !s.is_leader)
    });
    assert!(stepped_down, "the cut-off leader steps down");
    assert!(answer.try_recv().is_err(), "its write is not acknowledged while it is cut off");
    cluster.must_put(1, &key_in_region(1, "b"), b"2");
    cluster.network.heal();
    // Back in touch, it learns the new leader's log, which replaced its entry.
    match answer.recv_timeout(WAIT).expect("the proposal is answered once the entry is replaced") {
        Err(StoreError::ProposalDropped(_)) => {}
        other => panic!("the cut-off leader's write must not succeed: {other:?}"),
    }
    for store_id in 1..=3 {
        assert!(cluster.wait_for_value(store_id, &key_in_region(1, "b"), Some(b"2"), WAIT));
        assert_eq!(cluster.store(store_id).get_local(&key_in_region(1, "lost")).unwrap(), None);
    }
}
