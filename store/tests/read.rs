//! Linearizable reads through the store: ReadIndex (and the leader lease when enabled),
//! typed errors, scans bounded by the region, and no stale answer from a cut-off leader.

use std::time::Duration;

use crossbeam_channel::RecvTimeoutError;

use tessera_store::cluster::{key_in_region, put_command, wait_until, Cluster};
use tessera_store::proto::storepb::RegionEpoch;
use tessera_store::{ReadQuery, ReadRequest, ReadResponse, StoreError, StoreResult};

const WAIT: Duration = Duration::from_secs(20);

fn read_at(cluster: &Cluster, store_id: u64, region_id: u64, query: ReadQuery) -> StoreResult<ReadResponse> {
    let region_epoch = cluster.region(region_id, WAIT).and_then(|r| r.epoch);
    cluster
        .store(store_id)
        .read_and_wait(ReadRequest { region_id, region_epoch, query })
        .recv_timeout(WAIT)
        .expect("every read is answered")
}

fn get(key: &[u8]) -> ReadQuery {
    ReadQuery::Get { key: key.to_vec() }
}

#[test]
fn reads_at_the_leader_see_every_acknowledged_write() {
    for lease_reads in [false, true] {
        let mut cluster = Cluster::new(3, 2, 3, |config| config.raft_lease_reads = lease_reads);
        cluster.start_all();
        for i in 0..20 {
            let key = key_in_region(1, &format!("k{i:02}"));
            cluster.must_put(1, &key, format!("v{i}").as_bytes());
            let leader = cluster.leader_store(1, WAIT).unwrap();
            let value = read_at(&cluster, leader, 1, get(&key)).unwrap();
            assert_eq!(
                value,
                ReadResponse::Value(Some(format!("v{i}").into_bytes())),
                "lease reads: {lease_reads}"
            );
        }
        let leader = cluster.leader_store(1, WAIT).unwrap();
        let missing = read_at(&cluster, leader, 1, get(&key_in_region(1, "absent"))).unwrap();
        assert_eq!(missing, ReadResponse::Value(None));
    }
}

#[test]
fn scans_are_ordered_limited_and_stop_at_the_region_end() {
    let mut cluster = Cluster::new(3, 2, 3, |_| {});
    cluster.start_all();
    for i in 0..10 {
        cluster.must_put(1, &key_in_region(1, &format!("s{i}")), b"1");
    }
    cluster.must_put(2, &key_in_region(2, "other"), b"2");
    let leader = cluster.leader_store(1, WAIT).unwrap();
    let region = cluster.region(1, WAIT).unwrap();
    let scan = |start: &[u8], end: &[u8], limit| {
        read_at(
            &cluster,
            leader,
            1,
            ReadQuery::Scan { start_key: start.to_vec(), end_key: end.to_vec(), limit },
        )
        .unwrap()
    };
    let ReadResponse::Pairs { pairs, reached_region_end, .. } = scan(&key_in_region(1, "s"), &[], 4) else {
        panic!("a scan answers pairs")
    };
    let keys: Vec<Vec<u8>> = pairs.iter().map(|(k, _)| k.clone()).collect();
    let expected: Vec<Vec<u8>> = (0..4).map(|i| key_in_region(1, &format!("s{i}"))).collect();
    assert_eq!((keys, reached_region_end), (expected, false), "the first 4, in order");
    // An open end stops at the region's end: region 2's key is not returned.
    let ReadResponse::Pairs { pairs, reached_region_end, .. } = scan(&region.start_key, &[], 100) else {
        panic!()
    };
    assert_eq!(pairs.len(), 10);
    assert!(reached_region_end, "the client goes on in the next region");
    let ReadResponse::Pairs { pairs, reached_region_end, .. } =
        scan(&key_in_region(1, "s3"), &key_in_region(1, "s6"), 100)
    else {
        panic!()
    };
    assert_eq!((pairs.len(), reached_region_end), (3, false), "[s3, s6)");
}

#[test]
fn bad_reads_get_typed_errors() {
    let mut cluster = Cluster::new(3, 2, 3, |_| {});
    cluster.start_all();
    cluster.must_put(1, &key_in_region(1, "a"), b"1");
    let leader = cluster.leader_store(1, WAIT).unwrap();
    let follower = (1..=3).find(|id| *id != leader).unwrap();
    match read_at(&cluster, follower, 1, get(&key_in_region(1, "a"))) {
        Err(StoreError::NotLeader { leader: Some(hint), .. }) => assert_eq!(hint.store_id, leader),
        other => panic!("a follower refuses with the leader's address: {other:?}"),
    }
    assert!(matches!(
        read_at(&cluster, leader, 1, get(&key_in_region(2, "x"))),
        Err(StoreError::KeyNotInRegion { .. })
    ));
    assert!(matches!(read_at(&cluster, leader, 1, get(b"")), Err(StoreError::InvalidCommand(_))));
    let zero_limit = ReadQuery::Scan { start_key: key_in_region(1, "a"), end_key: Vec::new(), limit: 0 };
    assert!(matches!(read_at(&cluster, leader, 1, zero_limit), Err(StoreError::InvalidCommand(_))));
    let backwards =
        ReadQuery::Scan { start_key: key_in_region(1, "b"), end_key: key_in_region(1, "a"), limit: 5 };
    assert!(matches!(read_at(&cluster, leader, 1, backwards), Err(StoreError::InvalidCommand(_))));
    let stale = ReadRequest {
        region_id: 1,
        region_epoch: Some(RegionEpoch { conf_ver: 1, version: 99 }),
        query: get(&key_in_region(1, "a")),
    };
    let answer = cluster.store(leader).read_and_wait(stale).recv_timeout(WAIT).unwrap();
    assert!(matches!(answer, Err(StoreError::EpochNotMatch { .. })), "{answer:?}");
    let unknown = ReadRequest { region_id: 77, region_epoch: None, query: get(b"k") };
    let answer = cluster.store(leader).read_and_wait(unknown).recv_timeout(WAIT).unwrap();
    assert_eq!(answer, Err(StoreError::RegionNotFound(77)));
}

/// Reads waiting for their index count against `proposals_per_peer_max`: beyond it a read
/// is refused at once with `ServerIsBusy` instead of queueing without bound. The leader is
/// cut off, so the first reads cannot be confirmed and wait.
#[test]
fn reads_beyond_the_peers_limit_are_refused_as_busy() {
    let mut cluster = Cluster::new(3, 1, 3, |config| {
        config.proposals_per_peer_max = 2;
        // Slow enough that the cut-off leader keeps leading (check-quorum steps it down
        // after an election timeout) while the test reads.
        config.raft_tick_interval = Duration::from_millis(200);
    });
    cluster.start_all();
    cluster.store(1).campaign(1).unwrap();
    cluster.must_put(1, &key_in_region(1, "a"), b"1");
    let leader = cluster.leader_store(1, WAIT).unwrap();
    let epoch = cluster.region(1, WAIT).unwrap().epoch;
    let read = || {
        cluster.store(leader).read_and_wait(ReadRequest {
            region_id: 1,
            region_epoch: epoch,
            query: get(&key_in_region(1, "a")),
        })
    };
    cluster.network.isolate(leader);
    let waiting = [read(), read()];
    let refused = read().recv_timeout(WAIT).expect("the third read is answered at once");
    assert!(matches!(&refused, Err(StoreError::ServerIsBusy(why)) if why.contains("reads")), "{refused:?}");
    cluster.network.heal();
    for answer in waiting {
        let answered =
            answer.recv_timeout(WAIT).expect("a waiting read is answered once the leader hears again");
        // Nobody wrote since "1": a read that is answered must say so.
        match answered {
            Ok(value) => assert_eq!(value, ReadResponse::Value(Some(b"1".to_vec()))),
            Err(e) => assert!(matches!(e, StoreError::NotLeader { .. }), "{e:?}"),
        }
    }
}

#[test]
fn a_read_wakes_a_resting_region() {
    let mut cluster = Cluster::new(3, 1, 3, |_| {});
    cluster.start_all();
    cluster.must_put(1, &key_in_region(1, "a"), b"1");
    assert!(wait_until(WAIT, || (1..=3).all(|id| cluster.store(id).ticking_regions_len() == 0)));
    let leader = cluster.leader_store(1, WAIT).unwrap();
    assert_eq!(
        read_at(&cluster, leader, 1, get(&key_in_region(1, "a"))).unwrap(),
        ReadResponse::Value(Some(b"1".to_vec()))
    );
}

/// ReadIndex's point: a leader that lost its quorum must not answer from its own state,
/// which a new leader may already have overwritten.
#[test]
fn a_leader_cut_off_from_its_quorum_answers_no_read() {
    let mut cluster = Cluster::new(3, 1, 3, |_| {});
    cluster.start_all();
    cluster.must_put(1, &key_in_region(1, "a"), b"old");
    let old_leader = cluster.leader_store(1, WAIT).unwrap();
    let epoch = cluster.region(1, WAIT).unwrap().epoch;
    cluster.network.isolate(old_leader);
    let answer = cluster.store(old_leader).read_and_wait(ReadRequest {
        region_id: 1,
        region_epoch: epoch,
        query: get(&key_in_region(1, "a")),
    });
    // The others elect a leader and overwrite the value.
    let new_leader_elected = wait_until(WAIT, || {
        (1..=3)
            .filter(|id| *id != old_leader)
            .any(|id| cluster.store(id).peer_status(1, WAIT).is_some_and(|s| s.is_leader))
    });
    assert!(new_leader_elected);
    cluster.must_put(1, &key_in_region(1, "a"), b"new");
    match answer.recv_timeout(WAIT).expect("the cut-off leader answers once it steps down") {
        Err(StoreError::NotLeader { .. }) => {}
        other => panic!("a cut-off leader must not serve the read: {other:?}"),
    }
}

/// The heartbeat round of a read (and its answers) leaves with the poll round, not with the
/// tick that carries the coalesced heartbeats: with a 2 s tick, reads still take far less
/// than a tick.
#[test]
fn a_read_does_not_wait_for_the_tick() {
    let tick = Duration::from_secs(2);
    let mut cluster = Cluster::new(3, 1, 3, |config| config.raft_tick_interval = tick);
    cluster.start_all();
    cluster.store(1).campaign(1).unwrap();
    assert!(wait_until(WAIT, || cluster.store(1).peer_status(1, WAIT).is_some_and(|s| s.is_leader)));
    cluster.must_put(1, &key_in_region(1, "a"), b"1");
    for _ in 0..5 {
        let started = std::time::Instant::now();
        assert_eq!(
            read_at(&cluster, 1, 1, get(&key_in_region(1, "a"))).unwrap(),
            ReadResponse::Value(Some(b"1".to_vec()))
        );
        assert!(started.elapsed() < tick / 2, "a read took {:?}, a tick is {tick:?}", started.elapsed());
    }
}

/// A read whose index is committed but not yet applied waits for the apply FSM's report,
/// which a peer otherwise takes quietly with its next message (`operation/quiet.rs`): while a
/// read waits, the report must wake the peer. Applies are slowed so that each read's index
/// (the write just before it, committed) is still being applied when the read's heartbeat
/// round comes back. With a 2 s tick, a missed wake-up would leave the read waiting for the
/// next heartbeat, seconds later.
#[test]
fn a_read_waiting_for_an_apply_is_woken_by_its_report() {
    let tick = Duration::from_secs(2);
    let apply_delay = Duration::from_millis(200);
    let mut cluster = Cluster::new(3, 1, 3, |config| config.raft_tick_interval = tick);
    cluster.start_all();
    cluster.store(1).campaign(1).unwrap();
    assert!(wait_until(WAIT, || cluster.store(1).peer_status(1, WAIT).is_some_and(|s| s.is_leader)));
    let key = key_in_region(1, "a");
    cluster.must_put(1, &key, b"0");
    let epoch = cluster.region(1, WAIT).unwrap().epoch;
    cluster.store(1).slow_applies(Some(apply_delay));
    for i in 1..=5u32 {
        let value = i.to_string();
        let written = cluster.store(1).propose_and_wait(put_command(1, epoch, &key, value.as_bytes()));
        // Long enough for the write to commit (a round trip on the in-memory network), short
        // of its apply.
        std::thread::sleep(apply_delay / 4);
        let started = std::time::Instant::now();
        let read = cluster.store(1).read_and_wait(ReadRequest {
            region_id: 1,
            region_epoch: epoch,
            query: get(&key),
        });
        let answer = read.recv_timeout(WAIT).expect("every read is answered").unwrap();
        let took = started.elapsed();
        written.recv_timeout(WAIT).expect("every write is answered").unwrap();
        // Almost always the write had committed when the read came, and the read waited for
        // its apply; on a slow machine it may have come first and read the value before.
        let seen = [Some((i - 1).to_string().into_bytes()), Some(value.into_bytes())];
        assert!(matches!(&answer, ReadResponse::Value(v) if seen.contains(v)), "read {i}: {answer:?}");
        assert!(took < tick / 2, "read {i} took {took:?}, a tick is {tick:?}");
    }
}

#[test]
fn region_for_key_finds_the_hosting_region() {
    let mut cluster = Cluster::new(3, 3, 3, |_| {});
    cluster.start_all();
    let store = cluster.store(1);
    for region_id in 1..=3 {
        let found = store.region_for_key(&key_in_region(region_id, "k")).map(|r| r.id);
        assert_eq!(found, Some(region_id));
    }
    assert_eq!(store.region_for_key(b"").map(|r| r.id), Some(1), "the first region starts at the empty key");
    assert_eq!(store.region_for_key(&[0xff; 8]).map(|r| r.id), Some(3), "the last region is open-ended");
}

/// A scan asking for more than the store's `scan_limit_max` gets that many pairs and says it
/// stopped at the limit, so that a client does not take the range for exhausted.
#[test]
fn a_scan_capped_by_the_store_says_it_stopped_at_the_limit() {
    let mut cluster = Cluster::new(3, 1, 3, |config| config.scan_limit_max = 3);
    cluster.start_all();
    for i in 0..5 {
        cluster.must_put(1, &key_in_region(1, &format!("c{i}")), b"1");
    }
    let leader = cluster.leader_store(1, WAIT).unwrap();
    let query = ReadQuery::Scan { start_key: key_in_region(1, "c"), end_key: Vec::new(), limit: 100 };
    let ReadResponse::Pairs { pairs, reached_region_end, reached_limit } =
        read_at(&cluster, leader, 1, query).unwrap()
    else {
        panic!("a scan answers pairs")
    };
    assert_eq!((pairs.len(), reached_limit, reached_region_end), (3, true, false));
    let query = ReadQuery::Scan { start_key: key_in_region(1, "c3"), end_key: Vec::new(), limit: 100 };
    let ReadResponse::Pairs { pairs, reached_limit, .. } = read_at(&cluster, leader, 1, query).unwrap()
    else {
        panic!("a scan answers pairs")
    };
    assert_eq!((pairs.len(), reached_limit), (2, false), "the rest, and no more");
}

/// A scan stops once its pairs hold `scan_bytes_max` bytes (after the pair that reaches it,
/// so that it always moves on), and says it stopped at the limit.
#[test]
fn a_scan_stops_at_the_stores_byte_limit() {
    let mut cluster = Cluster::new(3, 1, 3, |config| config.scan_bytes_max = 250);
    cluster.start_all();
    let value = [7u8; 100];
    for i in 0..5 {
        cluster.must_put(1, &key_in_region(1, &format!("b{i}")), &value);
    }
    let leader = cluster.leader_store(1, WAIT).unwrap();
    let scan = |start: &str| {
        let query = ReadQuery::Scan { start_key: key_in_region(1, start), end_key: Vec::new(), limit: 100 };
        let ReadResponse::Pairs { pairs, reached_limit, .. } = read_at(&cluster, leader, 1, query).unwrap()
        else {
            panic!("a scan answers pairs")
        };
        (pairs.into_iter().map(|(key, _)| key).collect::<Vec<_>>(), reached_limit)
    };
    // Three pairs of more than 100 bytes each pass 250; the third is the one that reaches it.
    let expected: Vec<Vec<u8>> = (0..3).map(|i| key_in_region(1, &format!("b{i}"))).collect();
    assert_eq!(scan("b"), (expected, true));
    let rest: Vec<Vec<u8>> = (3..5).map(|i| key_in_region(1, &format!("b{i}"))).collect();
    assert_eq!(scan("b3"), (rest, false), "the rest, under the limit");
}

/// A leader whose ticks go missing gives up its lease. Its store's timer is starved (every
/// tick skipped) and it is cut off; the others elect a new leader and overwrite a value.
/// The old leader's tick count stands still, so a lease counted in its ticks alone would
/// never end and would answer with the old value. It must not: it finds its ticks behind
/// the real clock, drops the lease, and the read waits for a heartbeat round it cannot win.
#[test]
fn a_leader_whose_ticks_go_missing_gives_up_its_lease() {
    let mut cluster = Cluster::new(3, 1, 3, |config| config.raft_lease_reads = true);
    cluster.start_all();
    let key = key_in_region(1, "a");
    cluster.must_put(1, &key, b"old");
    let old_leader = cluster.leader_store(1, WAIT).unwrap();
    assert_eq!(
        read_at(&cluster, old_leader, 1, get(&key)).unwrap(),
        ReadResponse::Value(Some(b"old".to_vec()))
    );
    let epoch = cluster.region(1, WAIT).unwrap().epoch;
    cluster.store(old_leader).stall_timer(WAIT);
    cluster.network.isolate(old_leader);
    let mut new_leader = None;
    assert!(wait_until(WAIT, || {
        new_leader = (1..=3)
            .filter(|id| *id != old_leader)
            .find(|id| cluster.store(*id).peer_status(1, WAIT).is_some_and(|s| s.is_leader));
        new_leader.is_some()
    }));
    let overwrite = cluster.store(new_leader.unwrap()).propose_and_wait(put_command(1, epoch, &key, b"new"));
    assert!(overwrite.recv_timeout(WAIT).unwrap().is_ok(), "the new leader takes the write");

    let answer = cluster.store(old_leader).read_and_wait(ReadRequest {
        region_id: 1,
        region_epoch: epoch,
        query: get(&key),
    });
    match answer.recv_timeout(Duration::from_millis(500)) {
        Err(RecvTimeoutError::Timeout) => {}
        other => panic!("the old leader answered from a lease it no longer holds: {other:?}"),
    }
    // Once its timer and network are back, it learns of the new leader and refuses.
    cluster.store(old_leader).stall_timer(Duration::ZERO);
    cluster.network.heal();
    match answer.recv_timeout(WAIT).expect("the old leader answers once it steps down") {
        Err(StoreError::NotLeader { .. }) => {}
        other => panic!("the old leader must not serve the read: {other:?}"),
    }
}
