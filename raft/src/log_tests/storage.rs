//! `MemStorage`: the in-memory `Storage` the tests and examples run on.

use super::*;

#[test]
fn mem_storage_starts_empty() {
    let storage = MemStorage::new_with_voters(&[1, 2]);
    assert_eq!((storage.first_index().ok(), storage.last_index().ok()), (Some(1), Some(0)));
    assert_eq!(storage.term(0).ok(), Some(0));
    assert!(matches!(storage.term(1), Err(StorageError::Unavailable)));
    let state = storage.initial_state().expect("memory storage answers");
    assert_eq!(state.hard_state, HardState::default());
    assert_eq!(state.conf_state.voters, vec![1, 2]);
    assert!(storage.entries(1, 1, None).expect("empty range").is_empty());
}

#[test]
fn mem_storage_append_overwrites_a_tail() {
    let storage = storage_with(&ents(1, 5, 1));
    storage.wl().append(&[ent(3, 2), ent(4, 2)]).expect("overlaps the log");
    assert_eq!(storage.last_index().ok(), Some(4), "the old entry 5 is gone");
    assert_eq!(ids(&storage.entries(1, 5, None).expect("in range")), vec![(1, 1), (2, 1), (3, 2), (4, 2)]);
    // Appending exactly at the end extends.
    storage.wl().append(&[ent(5, 2)]).expect("contiguous");
    assert_eq!(storage.last_index().ok(), Some(5));
    // A gap is refused and changes nothing.
    assert!(matches!(storage.wl().append(&[ent(7, 2)]), Err(StorageError::Other(_))));
    assert_eq!(storage.last_index().ok(), Some(5));
    // An empty append is fine.
    storage.wl().append(&[]).expect("nothing to do");
}

#[test]
fn mem_storage_append_skips_compacted_entries() {
    let storage = storage_with(&ents(1, 5, 1));
    storage.wl().compact(4).expect("in range");
    // Entries 2 and 3 are compacted: skipped; 4 overwrites; 6 extends.
    storage.wl().append(&[ent(2, 1), ent(3, 1), ent(4, 2), ent(5, 2), ent(6, 2)]).expect("overlaps");
    assert_eq!(storage.first_index().ok(), Some(4));
    assert_eq!(ids(&storage.entries(4, 7, None).expect("in range")), vec![(4, 2), (5, 2), (6, 2)]);
    // Entirely below the first index: nothing happens.
    storage.wl().append(&[ent(1, 1), ent(2, 1)]).expect("skipped");
    assert_eq!(storage.last_index().ok(), Some(6));
}

#[test]
fn mem_storage_compact() {
    let storage = storage_with(&[ent(1, 1), ent(2, 1), ent(3, 2), ent(4, 3), ent(5, 3)]);
    storage.wl().compact(3).expect("in range");
    assert_eq!((storage.first_index().ok(), storage.last_index().ok()), (Some(3), Some(5)));
    assert_eq!(storage.term(2).ok(), Some(1), "the compacted boundary keeps its term");
    assert!(matches!(storage.term(1), Err(StorageError::Compacted)));
    assert!(matches!(storage.entries(2, 4, None), Err(StorageError::Compacted)));
    // Compacting to or below the first index is a no-op.
    storage.wl().compact(3).expect("no-op");
    storage.wl().compact(1).expect("no-op");
    assert_eq!(storage.first_index().ok(), Some(3));
    // Past last index + 1 is refused.
    assert!(matches!(storage.wl().compact(7), Err(StorageError::Unavailable)));
    // Compacting everything keeps the last entry's term.
    storage.wl().compact(6).expect("all of it");
    assert_eq!((storage.first_index().ok(), storage.last_index().ok()), (Some(6), Some(5)));
    assert_eq!(storage.term(5).ok(), Some(3));
    assert!(matches!(storage.term(6), Err(StorageError::Unavailable)));
    // The log continues after the compacted point.
    storage.wl().append(&[ent(6, 4)]).expect("contiguous");
    assert_eq!(storage.term(6).ok(), Some(4));
}

#[test]
fn mem_storage_entries_with_size_limit() {
    let entries: Vec<Entry> = (1..=5).map(|i| ent_data(i, 1, 20)).collect();
    let size = entries[0].encoded_len() as u64;
    let storage = storage_with(&entries);
    let count = |low, high, bytes_max| storage.entries(low, high, bytes_max).expect("in range").len();
    assert_eq!(count(1, 6, None), 5);
    assert_eq!(count(1, 6, Some(u64::MAX)), 5);
    assert_eq!(count(1, 6, Some(0)), 1, "at least one entry");
    assert_eq!(count(1, 6, Some(size)), 1);
    assert_eq!(count(1, 6, Some(3 * size)), 3);
    assert_eq!(count(1, 6, Some(3 * size + 1)), 3);
    assert_eq!(count(2, 4, Some(10 * size)), 2);
    assert!(matches!(storage.entries(1, 7, None), Err(StorageError::Unavailable)));
}

#[test]
fn mem_storage_create_snapshot() {
    let storage = storage_with(&[ent(1, 1), ent(2, 1), ent(3, 2), ent(4, 2), ent(5, 3)]);
    let cs = ConfState { voters: vec![1, 2, 3], ..Default::default() };
    storage.wl().create_snapshot(3, Some(cs.clone()), b"state@3".to_vec()).expect("in the log");
    let snap = storage.snapshot(4, 2).expect("available");
    let meta = snap.metadata.expect("metadata");
    assert_eq!((meta.index, meta.term), (3, 2));
    assert_eq!(meta.conf_state, Some(cs.clone()));
    assert_eq!(snap.data, b"state@3".to_vec());
    assert_eq!(storage.initial_state().expect("answers").conf_state, cs);
    // The entries after the snapshot are intact and still readable.
    assert_eq!(storage.last_index().ok(), Some(5));
    assert_eq!(
        (storage.term(3).ok(), storage.term(4).ok(), storage.term(5).ok()),
        (Some(2), Some(2), Some(3))
    );
    let first = storage.first_index().expect("answers");
    assert!(first <= 4, "entries after the snapshot must stay in the log (first index {first})");
    assert_eq!(ids(&storage.entries(4, 6, None).expect("in range")), vec![(4, 2), (5, 3)]);
    // Snapshots only move forward, and only over entries the log has.
    assert!(matches!(
        storage.wl().create_snapshot(3, None, Vec::new()),
        Err(StorageError::SnapshotOutOfDate)
    ));
    assert!(matches!(
        storage.wl().create_snapshot(2, None, Vec::new()),
        Err(StorageError::SnapshotOutOfDate)
    ));
    assert!(matches!(storage.wl().create_snapshot(6, None, Vec::new()), Err(StorageError::Unavailable)));
    // A later snapshot without a configuration keeps the previous one.
    storage.wl().create_snapshot(5, None, b"state@5".to_vec()).expect("in the log");
    let meta = storage.snapshot(0, 2).expect("available").metadata.expect("metadata");
    assert_eq!((meta.index, meta.term, meta.conf_state), (5, 3, Some(cs)));
}

#[test]
fn mem_storage_apply_snapshot() {
    let storage = storage_with(&ents(1, 3, 1));
    storage.wl().set_hard_state(HardState { term: 1, vote: 2, commit: 2 });
    storage.wl().apply_snapshot(snapshot(10, 4)).expect("newer");
    assert_eq!((storage.first_index().ok(), storage.last_index().ok()), (Some(11), Some(10)));
    assert_eq!(storage.term(10).ok(), Some(4));
    let hs = *storage.rl().hard_state();
    assert_eq!(hs, HardState { term: 4, vote: 2, commit: 10 }, "term and commit catch up");
    assert_eq!(storage.initial_state().expect("answers").conf_state.voters, vec![1, 2, 3]);
    // An older snapshot is refused and changes nothing.
    assert!(matches!(storage.wl().apply_snapshot(snapshot(8, 4)), Err(StorageError::SnapshotOutOfDate)));
    assert_eq!(storage.first_index().ok(), Some(11));
    // The log continues after the snapshot.
    storage.wl().append(&[ent(11, 4)]).expect("contiguous");
    assert_eq!(storage.last_index().ok(), Some(11));
}

#[test]
fn mem_storage_snapshot_temporarily_unavailable_once() {
    let storage = storage_with(&ents(1, 3, 1));
    storage.wl().trigger_snapshot_unavailable();
    assert!(matches!(storage.snapshot(1, 2), Err(StorageError::SnapshotTemporarilyUnavailable)));
    assert!(storage.snapshot(1, 2).is_ok(), "only the next call fails");
}

#[test]
fn mem_storage_clones_share_one_log() {
    let storage = MemStorage::new();
    let other = storage.clone();
    storage.wl().append(&ents(1, 2, 1)).expect("contiguous");
    other.wl().set_commit(2);
    assert_eq!(other.last_index().ok(), Some(2));
    assert_eq!(storage.rl().hard_state().commit, 2);
}
