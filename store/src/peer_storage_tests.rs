use std::path::Path;

use tessera_proto::raftpb::EntryType;
use tessera_proto::storepb::{Peer, PeerRole, RegionEpoch};
use tessera_raft::{Config, RawNode, StateRole};

use super::*;
use crate::engine::EngineConfig;

const REGION_ID: u64 = 7;
const CACHE_BYTES: usize = 1 << 20;

fn open(dir: &Path) -> Arc<Engine> {
    Arc::new(Engine::open(dir, &EngineConfig::default()).expect("engine opens"))
}

fn region() -> Region {
    Region {
        id: REGION_ID,
        start_key: Vec::new(),
        end_key: Vec::new(),
        epoch: Some(RegionEpoch { conf_ver: 1, version: 1 }),
        peers: vec![Peer { id: 1, store_id: 1, role: PeerRole::Voter as i32 }],
    }
}

fn bootstrap(engine: &Arc<Engine>) {
    let mut batch = engine.write_batch();
    write_initial_region(&mut batch, &region(), &ConfState { voters: vec![1], ..Default::default() }, 1);
    engine.write(batch, true).unwrap();
}

/// A new engine in `dir` with the region bootstrapped, and its storage loaded.
fn bootstrapped(dir: &Path) -> (Arc<Engine>, PeerStorage) {
    let engine = open(dir);
    bootstrap(&engine);
    let storage = load(&engine, CACHE_BYTES);
    (engine, storage)
}

fn load(engine: &Arc<Engine>, cache_bytes: usize) -> PeerStorage {
    PeerStorage::load(engine.clone(), region(), cache_bytes).expect("records are consistent")
}

fn entry(index: u64, term: u64, payload: &str) -> Entry {
    Entry {
        entry_type: EntryType::EntryNormal as i32,
        index,
        term,
        data: payload.as_bytes().to_vec().into(),
        context: Default::default(),
    }
}

fn persist(engine: &Arc<Engine>, storage: &mut PeerStorage, entries: &[Entry]) {
    let mut batch = engine.write_batch();
    storage.append(&mut batch, entries);
    storage.write_raft_state(&mut batch);
    engine.write(batch, true).unwrap();
}

/// How many log entries of the region CF raft holds in `[low, high)`, read from disk
/// rather than through the storage's view of its log.
fn entries_on_disk(engine: &Arc<Engine>, low: u64, high: u64) -> usize {
    let range = keys::raft_log_range(REGION_ID, low, high);
    let mut count = 0;
    engine
        .scan(CF_RAFT, &range.start, &range.end, |_, _| {
            count += 1;
            Ok(true)
        })
        .unwrap();
    count
}

fn indexes_and_terms(entries: &[Entry]) -> Vec<(u64, u64)> {
    entries.iter().map(|e| (e.index, e.term)).collect()
}

#[test]
fn a_bootstrapped_region_starts_at_the_initial_index() {
    let dir = tempfile::tempdir().unwrap();
    let (_engine, storage) = bootstrapped(dir.path());
    assert!(storage.is_initialized());
    let state = storage.initial_state().unwrap();
    assert_eq!(state.hard_state, HardState { term: INIT_TERM, vote: 0, commit: INIT_INDEX });
    assert_eq!(state.conf_state.voters, vec![1]);
    assert_eq!((storage.first_index().unwrap(), storage.last_index().unwrap()), (INIT_INDEX + 1, INIT_INDEX));
    assert_eq!(storage.term(INIT_INDEX).unwrap(), INIT_TERM);
    assert!(matches!(storage.term(INIT_INDEX - 1), Err(StorageError::Compacted)));
    assert!(matches!(storage.entries(INIT_INDEX + 1, INIT_INDEX + 2, None), Err(StorageError::Unavailable)));
}

#[test]
fn a_region_without_records_is_uninitialized_and_empty() {
    let dir = tempfile::tempdir().unwrap();
    let engine = open(dir.path());
    let storage = load(&engine, CACHE_BYTES);
    assert!(!storage.is_initialized());
    assert_eq!(storage.initial_state().unwrap(), RaftState::default());
    assert_eq!((storage.first_index().unwrap(), storage.last_index().unwrap()), (1, 0));
    assert_eq!(storage.term(0).unwrap(), 0);
}

#[test]
fn entries_survive_a_restart_and_are_read_back_from_the_engine() {
    let dir = tempfile::tempdir().unwrap();
    {
        let (engine, mut storage) = bootstrapped(dir.path());
        persist(&engine, &mut storage, &[entry(6, 6, "a"), entry(7, 6, "b"), entry(8, 6, "c")]);
        storage.set_hard_state(HardState { term: 6, vote: 1, commit: 7 });
        persist(&engine, &mut storage, &[entry(9, 6, "d")]);
    }
    // A fresh engine and storage: nothing is cached, everything comes from RocksDB.
    let engine = open(dir.path());
    let storage = load(&engine, CACHE_BYTES);
    assert_eq!(storage.hard_state(), HardState { term: 6, vote: 1, commit: 7 });
    assert_eq!(storage.last_index().unwrap(), 9);
    let entries = storage.entries(6, 10, None).unwrap();
    assert_eq!(indexes_and_terms(&entries), vec![(6, 6), (7, 6), (8, 6), (9, 6)]);
    assert_eq!(entries[3].data, "d".as_bytes());
    assert_eq!(storage.term(8).unwrap(), 6);
}

#[test]
fn an_overwritten_tail_is_deleted_in_the_same_batch() {
    let dir = tempfile::tempdir().unwrap();
    {
        let (engine, mut storage) = bootstrapped(dir.path());
        persist(
            &engine,
            &mut storage,
            &[entry(6, 6, "a"), entry(7, 6, "b"), entry(8, 6, "c"), entry(9, 6, "d")],
        );
        // A new leader of term 7 replaces the uncommitted entries from 7 on, with fewer.
        persist(&engine, &mut storage, &[entry(7, 7, "x")]);
        assert_eq!(storage.last_index().unwrap(), 7);
        assert_eq!(indexes_and_terms(&storage.entries(6, 8, None).unwrap()), vec![(6, 6), (7, 7)]);
    }
    let engine = open(dir.path());
    let storage = load(&engine, CACHE_BYTES);
    assert_eq!(storage.last_index().unwrap(), 7);
    assert_eq!(indexes_and_terms(&storage.entries(6, 8, None).unwrap()), vec![(6, 6), (7, 7)]);
    // The stale entries 8 and 9 are gone from disk, not just hidden.
    assert_eq!(entries_on_disk(&engine, 8, 10), 0);
}

#[test]
fn a_small_entry_cache_keeps_the_tail_and_reads_the_rest_from_disk() {
    let dir = tempfile::tempdir().unwrap();
    let engine = open(dir.path());
    bootstrap(&engine);
    // Room for about two entries.
    let one_entry_bytes = entry(6, 6, "0123456789").encoded_len();
    let mut storage = load(&engine, 2 * one_entry_bytes + 1);
    let entries: Vec<Entry> = (6..16).map(|i| entry(i, 6, "0123456789")).collect();
    persist(&engine, &mut storage, &entries);
    assert_eq!(storage.cache.first_index(), Some(14), "the cache keeps the newest entries");
    assert_eq!(indexes_and_terms(&storage.entries(6, 16, None).unwrap()), indexes_and_terms(&entries));
    assert_eq!(storage.entries(12, 16, None).unwrap().len(), 4, "half from disk, half from the cache");
    // A byte budget cuts the read, from disk or cache alike, but never below one entry.
    assert_eq!(storage.entries(6, 16, Some(3 * one_entry_bytes as u64)).unwrap().len(), 3);
    assert_eq!(storage.entries(14, 16, Some(1)).unwrap().len(), 1);
    assert_eq!(storage.entries(6, 16, Some(1)).unwrap().len(), 1);
}

#[test]
fn compaction_deletes_a_prefix_and_keeps_its_last_term() {
    let dir = tempfile::tempdir().unwrap();
    {
        let (engine, mut storage) = bootstrapped(dir.path());
        let entries: Vec<Entry> = (6..=10).map(|i| entry(i, 6 + i / 8, "v")).collect();
        persist(&engine, &mut storage, &entries);
        storage.set_hard_state(HardState { term: 7, vote: 1, commit: 10 });
        let mut batch = engine.write_batch();
        storage.set_applied(&mut batch, 9);
        storage.write_raft_state(&mut batch);
        storage.compact_to(&mut batch, 8).unwrap();
        engine.write(batch, true).unwrap();
        assert_eq!(storage.first_index().unwrap(), 9);
        assert_eq!(storage.term(8).unwrap(), 7);
        assert!(matches!(storage.entries(8, 10, None), Err(StorageError::Compacted)));
    }
    let engine = open(dir.path());
    let storage = load(&engine, CACHE_BYTES);
    assert_eq!(
        storage.apply_state(),
        &ApplyState { applied_index: 9, truncated_index: 8, truncated_term: 7 }
    );
    assert_eq!((storage.first_index().unwrap(), storage.last_index().unwrap()), (9, 10));
    assert_eq!(indexes_and_terms(&storage.entries(9, 11, None).unwrap()), vec![(9, 7), (10, 7)]);
    assert!(matches!(storage.term(7), Err(StorageError::Compacted)));
}

/// An applied index ahead of the recorded commit (a commit index that moved alone is not
/// written) but inside the log: the entries were committed, so the load raises the commit.
#[test]
fn a_commit_index_behind_the_applied_index_is_raised_on_load() {
    let dir = tempfile::tempdir().unwrap();
    {
        let (engine, mut storage) = bootstrapped(dir.path());
        storage.set_hard_state(HardState { term: 6, vote: 1, commit: 5 });
        persist(&engine, &mut storage, &[entry(6, 6, "a"), entry(7, 6, "b"), entry(8, 6, "c")]);
        let mut batch = engine.write_batch();
        batch.put_msg(
            CF_META,
            &keys::apply_state_key(REGION_ID),
            &ApplyState { applied_index: 7, truncated_index: INIT_INDEX, truncated_term: INIT_TERM },
        );
        engine.write(batch, true).unwrap();
    }
    let engine = open(dir.path());
    let storage = load(&engine, CACHE_BYTES);
    assert_eq!(storage.hard_state(), HardState { term: 6, vote: 1, commit: 7 });
    assert_eq!(storage.last_index().unwrap(), 8);
}

#[test]
fn records_that_contradict_the_log_refuse_to_load() {
    let dir = tempfile::tempdir().unwrap();
    let engine = open(dir.path());
    bootstrap(&engine);
    // The Raft state claims entries that were never written.
    let mut batch = engine.write_batch();
    let claimed = RaftLocalState {
        hard_state: Some(HardState { term: 6, vote: 1, commit: 5 }),
        last_index: 9,
        last_term: 6,
    };
    batch.put_msg(CF_RAFT, &keys::raft_state_key(REGION_ID), &claimed);
    engine.write(batch, true).unwrap();
    let err = PeerStorage::load(engine.clone(), region(), CACHE_BYTES).unwrap_err();
    assert!(matches!(err, EngineError::Corrupt { .. }), "{err}");

    // An applied index beyond the commit index.
    let mut batch = engine.write_batch();
    write_initial_region(&mut batch, &region(), &ConfState { voters: vec![1], ..Default::default() }, 1);
    batch.put_msg(
        CF_META,
        &keys::apply_state_key(REGION_ID),
        &ApplyState { applied_index: 6, truncated_index: INIT_INDEX, truncated_term: INIT_TERM },
    );
    engine.write(batch, true).unwrap();
    let err = PeerStorage::load(engine.clone(), region(), CACHE_BYTES).unwrap_err();
    assert!(err.to_string().contains("applied 6 <= commit 5"), "{err}");
}

/// The core runs over a `PeerStorage` as over any storage: a one-node region elects
/// itself, commits proposals, and after a restart from disk has them all.
#[test]
fn a_raw_node_runs_over_peer_storage_and_restarts_from_it() {
    let dir = tempfile::tempdir().unwrap();
    let handle_ready = |node: &mut RawNode<PeerStorage>, engine: &Arc<Engine>, applied: &mut Vec<String>| {
        while node.has_ready() {
            let rd = node.ready();
            let mut batch = engine.write_batch();
            node.store_mut().append(&mut batch, &rd.entries);
            if let Some(hard_state) = rd.hard_state {
                node.store_mut().set_hard_state(hard_state);
            }
            node.store_mut().write_raft_state_if_needed(&mut batch);
            if let Some(last) = rd.committed_entries.last() {
                node.store_mut().set_applied(&mut batch, last.index);
            }
            engine.write(batch, rd.must_sync).unwrap();
            for e in rd.committed_entries.iter().filter(|e| !e.data.is_empty()) {
                applied.push(String::from_utf8(e.data.to_vec()).unwrap());
            }
            node.advance(rd);
        }
    };
    {
        let engine = open(dir.path());
        bootstrap(&engine);
        let mut node = RawNode::new(&Config::new(1), load(&engine, CACHE_BYTES)).unwrap();
        let mut applied = Vec::new();
        node.campaign().unwrap();
        handle_ready(&mut node, &engine, &mut applied);
        assert_eq!(node.raft().role(), StateRole::Leader);
        for value in ["a", "b", "c"] {
            node.propose(value.as_bytes().to_vec()).unwrap();
            handle_ready(&mut node, &engine, &mut applied);
        }
        assert_eq!(applied, vec!["a", "b", "c"]);
    }
    let engine = open(dir.path());
    let storage = load(&engine, CACHE_BYTES);
    let last = storage.last_index().unwrap();
    let payloads: Vec<String> = storage
        .entries(INIT_INDEX + 1, last + 1, None)
        .unwrap()
        .iter()
        .filter(|e| !e.data.is_empty())
        .map(|e| String::from_utf8(e.data.to_vec()).unwrap())
        .collect();
    assert_eq!(payloads, vec!["a", "b", "c"]);
    assert_eq!(storage.apply_state().applied_index, last);
    let config = Config { applied: last, ..Config::new(1) };
    let mut node = RawNode::new(&config, storage).unwrap();
    let mut applied = Vec::new();
    node.campaign().unwrap();
    handle_ready(&mut node, &engine, &mut applied);
    node.propose(b"d".to_vec()).unwrap();
    handle_ready(&mut node, &engine, &mut applied);
    assert_eq!(applied, vec!["d"], "nothing is applied twice after a restart");
}

/// Log GC and tail overwrites remove their entries with one range delete each, however many
/// entries go (LESSONS.md #22: a delete per index turned compaction into a write storm and
/// left tombstones for every entry).
#[test]
fn removing_many_entries_costs_a_range_delete_not_a_delete_each() {
    const ENTRIES: u64 = 10_000;
    let dir = tempfile::tempdir().unwrap();
    let (engine, mut storage) = bootstrapped(dir.path());
    let entries: Vec<Entry> = (6..6 + ENTRIES).map(|i| entry(i, 6, "v")).collect();
    persist(&engine, &mut storage, &entries);
    let last = 5 + ENTRIES;

    // A new leader replaces the second half of the log with one entry.
    let mut batch = engine.write_batch();
    let replaced_from = last - ENTRIES / 2;
    storage.append(&mut batch, &[entry(replaced_from, 7, "x")]);
    // The new entry, and one range delete for the old tail behind it.
    assert_eq!(batch.len(), 2, "overwriting {} entries", ENTRIES / 2);
    engine.write(batch, true).unwrap();
    assert_eq!(storage.last_index().unwrap(), replaced_from);

    // Compaction of all but the last few entries.
    storage.set_hard_state(HardState { term: 7, vote: 1, commit: replaced_from });
    let mut batch = engine.write_batch();
    storage.set_applied(&mut batch, replaced_from);
    let before = batch.len();
    storage.compact_to(&mut batch, replaced_from - 1).unwrap();
    // One range delete plus the apply state that records the truncation.
    assert!(batch.len() - before <= 2, "compaction wrote {} operations", batch.len() - before);
    engine.write(batch, true).unwrap();
    assert_eq!(storage.first_index().unwrap(), replaced_from);
    assert_eq!(entries_on_disk(&engine, 0, replaced_from), 0, "compacted entries are gone from disk");
}

/// Installing a snapshot touches nothing until its batch is written, and then all of it at
/// once: a crash before the write finds the old log, Raft state and apply state, one after
/// finds the snapshot's (LESSONS.md #20). The snapshot's data and the region record join the
/// same batch in `operation/ready.rs`; `snapshot_tests` covers the data's part.
#[test]
fn a_snapshot_install_is_one_write() {
    let dir = tempfile::tempdir().unwrap();
    {
        let (engine, mut storage) = bootstrapped(dir.path());
        let entries: Vec<Entry> = (6..=20).map(|i| entry(i, 6, "v")).collect();
        storage.set_hard_state(HardState { term: 6, vote: 1, commit: 12 });
        persist(&engine, &mut storage, &entries);
        let mut batch = engine.write_batch();
        storage.set_applied(&mut batch, 10);
        engine.write(batch, true).unwrap();
        let conf_state = ConfState { voters: vec![1, 2], ..Default::default() };
        // Built and dropped: a crash before the write.
        let mut batch = engine.write_batch();
        storage.install_snapshot(&mut batch, region(), conf_state, 40, 9);
        drop(batch);
    }
    {
        let engine = open(dir.path());
        let mut storage = load(&engine, CACHE_BYTES);
        assert_eq!((storage.first_index().unwrap(), storage.last_index().unwrap()), (6, 20));
        assert_eq!(entries_on_disk(&engine, 0, 100), 15);
        assert_eq!(storage.apply_state().truncated_index, 5);
        assert_eq!(storage.apply_state().applied_index, 10);
        assert_eq!(storage.hard_state(), HardState { term: 6, vote: 1, commit: 12 });
        // Built and written.
        let conf_state = ConfState { voters: vec![1, 2], ..Default::default() };
        let mut batch = engine.write_batch();
        storage.install_snapshot(&mut batch, region(), conf_state, 40, 9);
        engine.write(batch, true).unwrap();
    }
    let engine = open(dir.path());
    let storage = load(&engine, CACHE_BYTES);
    assert_eq!((storage.first_index().unwrap(), storage.last_index().unwrap()), (41, 40));
    assert_eq!(storage.term(40).unwrap(), 9);
    assert_eq!(entries_on_disk(&engine, 0, 100), 0, "the old log is gone");
    assert_eq!(
        storage.apply_state(),
        &ApplyState { applied_index: 40, truncated_index: 40, truncated_term: 9 }
    );
    let hard_state = storage.hard_state();
    assert_eq!((hard_state.term, hard_state.commit), (9, 40));
}

/// The Raft state record as it is on disk.
fn recorded_raft_state(engine: &Arc<Engine>) -> RaftLocalState {
    engine.get_msg(CF_RAFT, &keys::raft_state_key(REGION_ID)).unwrap().expect("a record")
}

/// Appends `entries` with `hard_state` as a raft poller does, writing the record only if
/// needed; returns whether it was written.
fn persist_as_a_poller(
    engine: &Arc<Engine>,
    storage: &mut PeerStorage,
    entries: &[Entry],
    hard_state: HardState,
) -> bool {
    let mut batch = engine.write_batch();
    storage.append(&mut batch, entries);
    storage.set_hard_state(hard_state);
    let wrote = storage.write_raft_state_if_needed(&mut batch);
    engine.write(batch, true).unwrap();
    wrote
}

/// A bootstrapped region whose log was extended to `last` in one append of the initial
/// term, as a poller does it, which leaves the Raft state record as bootstrapped.
fn extended_to(dir: &Path, last: u64, commit: u64) -> (Arc<Engine>, PeerStorage) {
    let (engine, mut storage) = bootstrapped(dir);
    let entries: Vec<Entry> = (INIT_INDEX + 1..=last).map(|i| entry(i, INIT_TERM, "x")).collect();
    let hard_state = HardState { term: INIT_TERM, vote: 0, commit };
    assert!(
        !persist_as_a_poller(&engine, &mut storage, &entries, hard_state),
        "a plain append wrote the record"
    );
    (engine, storage)
}

/// Plain appends, and a commit index that moves with them, leave the Raft state record
/// alone: a restart finds the log's last entry past the recorded one.
#[test]
fn plain_appends_leave_the_raft_state_record_and_a_restart_finds_the_log_end() {
    let dir = tempfile::tempdir().unwrap();
    let (engine, mut storage) = bootstrapped(dir.path());
    for index in 6..=20 {
        let hard_state = HardState { term: INIT_TERM, vote: 0, commit: index - 1 };
        let wrote = persist_as_a_poller(&engine, &mut storage, &[entry(index, INIT_TERM, "x")], hard_state);
        assert!(!wrote, "append {index} wrote the record");
    }
    assert_eq!(recorded_raft_state(&engine).last_index, INIT_INDEX);
    let reloaded = load(&engine, CACHE_BYTES);
    assert_eq!((reloaded.last_index().unwrap(), reloaded.term(20).unwrap()), (20, INIT_TERM));
    assert_eq!(reloaded.entries(6, 21, None).unwrap().len(), 15);
}

/// A new term or vote rewrites the record; so does an overwritten tail that leaves the log
/// shorter than the record says, which a restart could not otherwise tell from the log.
#[test]
fn a_new_term_and_a_shorter_overwritten_tail_rewrite_the_raft_state_record() {
    let dir = tempfile::tempdir().unwrap();
    let (engine, mut storage) = extended_to(dir.path(), 20, 8);
    // A leader of a new term makes itself heard: the new term is written, with the log's
    // end as it is now.
    let new_term = HardState { term: INIT_TERM + 1, vote: 0, commit: 8 };
    assert!(persist_as_a_poller(&engine, &mut storage, &[], new_term), "a new term is written");
    assert_eq!(recorded_raft_state(&engine).last_index, 20);
    // Its first append replaces everything after index 10 with one entry: nothing in the
    // hard state moved, but the record would now claim entries the log no longer has.
    assert!(persist_as_a_poller(&engine, &mut storage, &[entry(11, INIT_TERM + 1, "y")], new_term));
    assert_eq!(recorded_raft_state(&engine).last_index, 11);
    let reloaded = load(&engine, CACHE_BYTES);
    assert_eq!((reloaded.last_index().unwrap(), reloaded.term(11).unwrap()), (11, INIT_TERM + 1));
    assert_eq!(entries_on_disk(&engine, 12, 21), 0);
}

/// An overwritten tail that ends where the record says, with another term, rewrites the
/// record too: a restart would otherwise read the old term for the last entry and refuse
/// the log as corrupt (helper-7's case: a new leader's first entry replaces one a deposed
/// leader left at the same index).
#[test]
fn an_overwritten_tail_of_the_same_length_rewrites_the_raft_state_record() {
    let dir = tempfile::tempdir().unwrap();
    let (engine, mut storage) = bootstrapped(dir.path());
    let old_leader = HardState { term: INIT_TERM + 1, vote: 0, commit: INIT_INDEX };
    persist_as_a_poller(&engine, &mut storage, &[entry(6, INIT_TERM + 1, "lost")], old_leader);
    // A vote request of a new term raises the term: the record is written with the end.
    let new_term = HardState { term: INIT_TERM + 2, vote: 0, commit: INIT_INDEX };
    assert!(persist_as_a_poller(&engine, &mut storage, &[], new_term));
    assert_eq!(recorded_raft_state(&engine).last_index, 6);
    // The new leader's first entry replaces entry 6: same length, same hard state.
    assert!(persist_as_a_poller(&engine, &mut storage, &[entry(6, INIT_TERM + 2, "noop")], new_term));
    let reloaded = load(&engine, CACHE_BYTES);
    assert_eq!((reloaded.last_index().unwrap(), reloaded.term(6).unwrap()), (6, INIT_TERM + 2));
}

/// The log past the record must be contiguous: a stray entry above a gap is not taken as
/// the log's end.
#[test]
fn a_gap_past_the_recorded_end_refuses_to_load() {
    let dir = tempfile::tempdir().unwrap();
    let (engine, _) = bootstrapped(dir.path());
    let mut batch = engine.write_batch();
    let stray = entry(9, INIT_TERM, "stray");
    batch.put(CF_RAFT, &keys::raft_log_key(REGION_ID, 9), &stray.encode_to_vec());
    engine.write(batch, true).unwrap();
    let err = PeerStorage::load(engine.clone(), region(), CACHE_BYTES).unwrap_err();
    assert!(matches!(err, EngineError::Corrupt { .. }), "{err}");
    assert!(err.to_string().contains("gap"), "{err}");
}

/// Log GC may delete entries past the recorded end before the record is written again: a
/// reload still finds the log, and an emptied one ends at its truncated index.
#[test]
fn log_gc_past_the_recorded_end_reloads() {
    let dir = tempfile::tempdir().unwrap();
    let (engine, mut storage) = extended_to(dir.path(), 30, 30);
    let mut batch = engine.write_batch();
    storage.set_applied(&mut batch, 30);
    storage.compact_to(&mut batch, 20).unwrap();
    engine.write(batch, true).unwrap();
    let reloaded = load(&engine, CACHE_BYTES);
    assert_eq!((reloaded.first_index().unwrap(), reloaded.last_index().unwrap()), (21, 30));

    let mut batch = engine.write_batch();
    storage.compact_to(&mut batch, 30).unwrap();
    engine.write(batch, true).unwrap();
    assert_eq!(recorded_raft_state(&engine).last_index, INIT_INDEX, "the record was never rewritten");
    let reloaded = load(&engine, CACHE_BYTES);
    assert_eq!((reloaded.first_index().unwrap(), reloaded.last_index().unwrap()), (31, 30));
    assert_eq!(reloaded.term(30).unwrap(), INIT_TERM);
}
