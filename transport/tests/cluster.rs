//! Stores replicating over real gRPC on loopback: writes, snapshots, a store restarted at
//! its address, and a store whose server is gone (a partition) and comes back.

mod common;

use std::sync::atomic::Ordering;
use std::time::Duration;

use common::{GrpcCluster, WAIT};
use tessera_router::StoreLink;
use tessera_store::cluster::{key_in_region, wait_until};

fn key(name: &str) -> Vec<u8> {
    key_in_region(1, name)
}

#[test]
fn three_stores_replicate_over_grpc() {
    let mut cluster = GrpcCluster::new(3, |_| {});
    cluster.start_all();
    for i in 0..20 {
        cluster.must_put(&key(&format!("k{i}")), format!("v{i}").as_bytes());
    }
    for store_id in 1..=3 {
        for i in 0..20 {
            let (k, v) = (key(&format!("k{i}")), format!("v{i}"));
            assert!(cluster.wait_for_value(store_id, &k, v.as_bytes(), WAIT), "store {store_id} has k{i}");
        }
    }
    // The messages went as batches with coalesced heartbeats, through the gRPC link.
    let leader = cluster.leader_store(WAIT).unwrap();
    let stats = cluster.outbound(leader).stats();
    assert!(stats.batches_sent > 0 && stats.heartbeats_coalesced > 0, "{stats:?}");
    assert_eq!(stats.batches_failed, 0, "{stats:?}");
}

#[test]
fn a_store_that_missed_compacted_entries_catches_up_by_snapshot_over_grpc() {
    let mut cluster = GrpcCluster::new(3, |config| {
        config.log_gc_count_threshold = 20;
        config.log_gc_check_ticks = 2;
        config.log_gc_lag_max = 10;
        // Small chunks, so that the snapshot crosses the network in many of them.
        config.snapshot.chunk_bytes = 512;
    });
    cluster.transport.snapshot_chunk_bytes = 256;
    cluster.start_all();
    cluster.must_put(&key("first"), b"x");
    let leader = cluster.leader_store(WAIT).unwrap();
    let lagging = (1..=3).find(|id| *id != leader).unwrap();
    cluster.stop_store(lagging);
    for i in 0..100 {
        cluster.must_put(&key(&format!("k{i:03}")), b"v");
    }
    let compacted = wait_until(WAIT, || cluster.store(leader).peer_status(1, WAIT).unwrap().first_index > 30);
    assert!(compacted, "the leader compacts its log past what the stopped store has");
    // Counted over both other stores, in case leadership moves meanwhile.
    let snapshots_sent = |cluster: &GrpcCluster| -> u64 {
        let others = (1..=3).filter(|id| *id != lagging);
        others.map(|id| cluster.store(id).stats().snapshots_sent.load(Ordering::Relaxed)).sum()
    };
    let sent_before = snapshots_sent(&cluster);
    cluster.start_store(lagging);
    for i in 0..100 {
        assert!(cluster.wait_for_value(lagging, &key(&format!("k{i:03}")), b"v", WAIT), "k{i:03} arrives");
    }
    assert!(cluster.wait_for_value(lagging, &key("first"), b"x", WAIT));
    // The sender counts its snapshot once the receiver's answer is back, which may be after
    // the data shows on the receiver.
    let counted = wait_until(WAIT, || {
        cluster.store(leader).stats().snapshots_sent.load(Ordering::Relaxed) > sent_before
    });
    assert!(counted, "the leader sent a snapshot");
    // The receiver counts its install just after the write that made the data visible.
    let installed =
        wait_until(WAIT, || cluster.store(lagging).stats().snapshots_applied.load(Ordering::Relaxed) >= 1);
    assert!(installed, "the lagging store installed a snapshot");
    // Replication goes on by log after the snapshot.
    cluster.must_put(&key("after"), b"y");
    assert!(cluster.wait_for_value(lagging, &key("after"), b"y", WAIT));
}

#[test]
fn a_store_restarted_at_its_address_is_reconnected_and_catches_up() {
    let mut cluster = GrpcCluster::new(3, |_| {});
    cluster.start_all();
    cluster.must_put(&key("a"), b"1");
    let leader = cluster.leader_store(WAIT).unwrap();
    let follower = (1..=3).find(|id| *id != leader).unwrap();
    // The others hold open streams to it when it goes away.
    cluster.stop_store(follower);
    cluster.must_put(&key("b"), b"2");
    cluster.start_store(follower);
    cluster.must_put(&key("c"), b"3");
    for (k, v) in [("a", b"1"), ("b", b"2"), ("c", b"3")] {
        assert!(cluster.wait_for_value(follower, &key(k), v, WAIT), "the restarted store has {k}");
    }
    assert!(cluster.link(leader).reachable(follower));

    // The leader too: the others elect another, and it catches up as a follower.
    cluster.stop_store(leader);
    cluster.must_put(&key("d"), b"4");
    cluster.start_store(leader);
    for store_id in 1..=3 {
        assert!(cluster.wait_for_value(store_id, &key("d"), b"4", WAIT), "store {store_id} has d");
    }
}

#[test]
fn a_store_whose_server_is_gone_is_unreachable_until_it_comes_back() {
    let mut cluster = GrpcCluster::new(3, |_| {});
    cluster.start_all();
    cluster.must_put(&key("a"), b"1");
    let leader = cluster.leader_store(WAIT).unwrap();
    let cut_off = (1..=3).find(|id| *id != leader).unwrap();
    let other = (1..=3).find(|id| *id != leader && *id != cut_off).unwrap();
    assert!(cluster.link(leader).reachable(cut_off));

    // Its server closes: connections to it are refused from now on.
    cluster.stop_server(cut_off);
    for store_id in [leader, other] {
        assert!(
            wait_until(WAIT, || !cluster.link(store_id).reachable(cut_off)),
            "store {store_id} sees store {cut_off} unreachable"
        );
    }
    let unreachable_before = cluster.outbound(leader).stats().messages_unreachable;
    // The majority goes on without it, and the leader's messages to it are refused at once.
    cluster.must_put(&key("b"), b"2");
    assert!(cluster.wait_for_value(other, &key("b"), b"2", WAIT));
    assert!(wait_until(WAIT, || cluster.outbound(leader).stats().messages_unreachable > unreachable_before));
    assert_eq!(cluster.store(cut_off).get_local(&key("b")).unwrap(), None, "nothing reaches it");

    // Healing: the server is back at the same address; the others reconnect on their own.
    cluster.start_server(cut_off);
    for store_id in [leader, other] {
        assert!(
            wait_until(WAIT, || cluster.link(store_id).reachable(cut_off)),
            "store {store_id} reconnects to store {cut_off}"
        );
    }
    assert!(cluster.wait_for_value(cut_off, &key("b"), b"2", WAIT), "the healed store catches up");
    cluster.must_put(&key("c"), b"3");
    assert!(cluster.wait_for_value(cut_off, &key("c"), b"3", Duration::from_secs(10)));
}
