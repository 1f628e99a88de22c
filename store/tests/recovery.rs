//! Recovery from records a crash can leave behind.

use std::sync::Arc;
use std::time::Duration;

use tessera_proto::raftpb::ConfState;
use tessera_proto::storepb::{Peer, PeerState, Region, RegionEpoch, RegionLocalState};
use tessera_router::InMemoryNetwork;
use tessera_store::engine::Engine;
use tessera_store::keys::{self, CF_DEFAULT, CF_META};
use tessera_store::{bootstrap, Store, StoreConfig};

/// A peer whose removal was applied (its region record no longer lists it) but whose
/// destruction had not happened when the process died: the restart finishes it, and the
/// peer does not come back.
#[test]
fn a_removed_peer_whose_destruction_was_interrupted_is_destroyed_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let config = StoreConfig::new(1, dir.path());
    let region = Region {
        id: 7,
        start_key: b"a".to_vec(),
        end_key: b"m".to_vec(),
        epoch: Some(RegionEpoch { conf_ver: 1, version: 1 }),
        peers: vec![Peer { id: 71, store_id: 1, role: 0 }, Peer { id: 72, store_id: 2, role: 0 }],
    };
    bootstrap(&config, std::slice::from_ref(&region)).unwrap();
    {
        // What the apply thread writes when it applies the removal of peer 71, plus data.
        let engine = Arc::new(Engine::open(&dir.path().join("db"), &config.engine).unwrap());
        let mut batch = engine.write_batch();
        let mut after = region.clone();
        after.peers.retain(|p| p.id != 71);
        after.epoch = Some(RegionEpoch { conf_ver: 2, version: 1 });
        let record = RegionLocalState {
            region: Some(after),
            state: PeerState::Normal as i32,
            conf_state: Some(ConfState { voters: vec![72], ..Default::default() }),
            peer_id: 71,
        };
        batch.put_msg(CF_META, &keys::region_state_key(7), &record);
        batch.put(CF_DEFAULT, &keys::data_key(b"c"), b"stale");
        batch.put(CF_DEFAULT, &keys::data_key(b"x"), b"other region");
        engine.write(batch, true).unwrap();
    }
    let network = InMemoryNetwork::new();
    let store = Store::start(config.clone(), Arc::new(network.transport(1))).expect("the store starts");
    assert!(store.region_ids().is_empty(), "the removed peer is not loaded");
    let record = store.region_record(7).unwrap().unwrap();
    assert_eq!(record.state, PeerState::Tombstone as i32);
    assert_eq!(record.peer_id, 71);
    assert_eq!(store.get_local(b"c").unwrap(), None, "its data is gone");
    assert_eq!(store.get_local(b"x").unwrap().as_deref(), Some(&b"other region"[..]));
    assert!(store.peer_status(7, Duration::from_millis(100)).is_none());
    store.stop();
    // And a second start finds a plain tombstone.
    let store = Store::start(config, Arc::new(network.transport(1))).expect("the store starts again");
    assert!(store.region_ids().is_empty());
    store.stop();
    network.shutdown();
}

fn one_store_region(id: u64, start: &[u8], end: &[u8]) -> Region {
    Region {
        id,
        start_key: start.to_vec(),
        end_key: end.to_vec(),
        epoch: Some(RegionEpoch { conf_ver: 1, version: 1 }),
        peers: vec![Peer { id: id * 1000 + 1, store_id: 1, ..Default::default() }],
    }
}

/// A store is bootstrapped once: a restart with another initial split (a node whose config
/// changed) writes nothing beside the regions the store holds, which would overlap them.
#[test]
fn bootstrapping_a_store_that_holds_regions_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let config = StoreConfig::new(1, dir.path());
    bootstrap(&config, &[one_store_region(1, b"", b"")]).unwrap();
    let split = [one_store_region(1, b"", b"m"), one_store_region(2, b"m", b"")];
    bootstrap(&config, &split).unwrap();
    let network = InMemoryNetwork::new();
    let store =
        Store::start(config, Arc::new(network.transport(1))).expect("the store starts as first bootstrapped");
    assert_eq!(store.region_ids(), vec![1]);
    assert_eq!(store.region_record(1).unwrap().unwrap().region.unwrap().end_key, Vec::<u8>::new());
    store.stop();
}

#[test]
fn bootstrap_refuses_regions_that_overlap_each_other() {
    let dir = tempfile::tempdir().unwrap();
    let config = StoreConfig::new(1, dir.path());
    let overlapping = [one_store_region(1, b"", b"m"), one_store_region(2, b"k", b"")];
    let error = bootstrap(&config, &overlapping).unwrap_err();
    assert!(error.to_string().contains("overlaps region 1"), "{error}");
}
