//! The log from the bottom up: the unstable tail, the `RaftLog` that joins it to storage,
//! and `MemStorage` itself.

use prost::Message as _;
use tessera_proto::raftpb::{ConfState, Entry, HardState, Snapshot, SnapshotMetadata};

use crate::errors::StorageError;
use crate::log_unstable::Unstable;
use crate::raft_log::RaftLog;
use crate::storage::{MemStorage, Storage};

mod storage;
mod unstable;

fn ent(index: u64, term: u64) -> Entry {
    Entry { index, term, ..Default::default() }
}

/// An entry with `len` bytes of payload, for the size limits.
fn ent_data(index: u64, term: u64, len: usize) -> Entry {
    Entry { index, term, data: vec![b'x'; len].into(), ..Default::default() }
}

/// Entries `first..=last`, all of `term`.
fn ents(first: u64, last: u64, term: u64) -> Vec<Entry> {
    (first..=last).map(|i| ent(i, term)).collect()
}

fn ids(entries: &[Entry]) -> Vec<(u64, u64)> {
    entries.iter().map(|e| (e.index, e.term)).collect()
}

fn snapshot(index: u64, term: u64) -> Snapshot {
    Snapshot {
        data: Default::default(),
        metadata: Some(Box::new(SnapshotMetadata {
            conf_state: Some(ConfState { voters: vec![1, 2, 3], ..Default::default() }),
            index,
            term,
        })),
    }
}

fn storage_with(entries: &[Entry]) -> MemStorage {
    let storage = MemStorage::new();
    storage.wl().append(entries).expect("entries start at 1");
    storage
}

/// A log whose storage holds `stored` and whose unstable tail holds `unstable`.
fn log_with(stored: &[Entry], unstable: &[Entry]) -> RaftLog<MemStorage> {
    let mut log = RaftLog::new(storage_with(stored), u64::MAX).expect("memory storage answers");
    log.append(unstable);
    log
}

/// `Unstable` with entries from `offset` on, none of them handed out yet.
fn unstable_with(offset: u64, entries: &[Entry]) -> Unstable {
    let mut u = Unstable::new(offset);
    u.truncate_and_append(entries);
    u
}

// ---------------------------------------------------------------------------------------
// RaftLog: terms and positions

#[test]
fn raft_log_new_starts_after_the_storage_snapshot() {
    let storage = storage_with(&ents(1, 6, 1));
    storage.wl().compact(4).expect("in range");
    let log = RaftLog::new(storage, u64::MAX).expect("memory storage answers");
    assert_eq!((log.first_index(), log.last_index()), (4, 6));
    assert_eq!((log.committed, log.applying, log.applied), (3, 3, 3));
    assert_eq!((log.unstable.offset, log.persisted_index()), (7, 6));
}

#[test]
fn raft_log_term_on_compacted_and_unavailable() {
    let storage = storage_with(&[ent(1, 1), ent(2, 1), ent(3, 2), ent(4, 2), ent(5, 3)]);
    storage.wl().compact(3).expect("in range");
    let mut log = RaftLog::new(storage, u64::MAX).expect("memory storage answers");
    log.append(&[ent(6, 3), ent(7, 4)]);
    assert_eq!(log.first_index(), 3);
    assert!(matches!(log.term(1), Err(StorageError::Compacted)));
    assert_eq!(log.term(2).ok(), Some(1), "the last compacted entry keeps its term");
    assert_eq!(log.term(3).ok(), Some(2));
    assert_eq!(log.term(5).ok(), Some(3));
    assert_eq!(log.term(7).ok(), Some(4), "read from the unstable tail");
    assert!(matches!(log.term(8), Err(StorageError::Unavailable)));
    assert_eq!((log.term_or_zero(1), log.term_or_zero(8), log.last_term()), (0, 0, 4));
    assert!(log.match_term(2, 1));
    assert!(!log.match_term(2, 2));
    assert!(!log.match_term(8, 0), "an unknown entry matches nothing, not even term 0");
}

#[test]
fn raft_log_term_prefers_the_unstable_overwrite() {
    // Unstable entries that overwrite a stored tail hide the stored ones.
    let mut log = log_with(&ents(1, 5, 1), &[]);
    log.append(&[ent(4, 2)]);
    assert_eq!(log.last_index(), 4);
    assert_eq!((log.term(3).ok(), log.term(4).ok()), (Some(1), Some(2)));
    assert!(matches!(log.term(5), Err(StorageError::Unavailable)));
    assert_eq!(ids(&log.all_entries()), vec![(1, 1), (2, 1), (3, 1), (4, 2)]);
}

#[test]
fn raft_log_is_up_to_date() {
    let log = log_with(&[ent(1, 1), ent(2, 2)], &[ent(3, 3)]);
    // (candidate last index, candidate last term, expected)
    let cases = [
        (2, 4, true),  // higher term wins with a shorter log
        (3, 4, true),  //
        (4, 4, true),  //
        (2, 3, false), // same term, shorter log
        (3, 3, true),  // same term, same length
        (4, 3, true),  // same term, longer log
        (9, 2, false), // lower term loses with any length
        (0, 0, false), //
    ];
    for (index, term, want) in cases {
        assert_eq!(log.is_up_to_date(index, term), want, "candidate ({index}, term {term})");
    }
}

#[test]
fn raft_log_find_conflict() {
    let log = log_with(&[ent(1, 1), ent(2, 2), ent(3, 3)], &[]);
    let cases: Vec<(Vec<Entry>, u64)> = vec![
        (vec![], 0),
        // All present.
        (vec![ent(1, 1), ent(2, 2), ent(3, 3)], 0),
        (vec![ent(2, 2), ent(3, 3)], 0),
        (vec![ent(3, 3)], 0),
        // Present, then new.
        (vec![ent(2, 2), ent(3, 3), ent(4, 4), ent(5, 4)], 4),
        (vec![ent(4, 4)], 4),
        // A different term at an existing index.
        (vec![ent(1, 4), ent(2, 4)], 1),
        (vec![ent(2, 1), ent(3, 4), ent(4, 4)], 2),
        (vec![ent(3, 1), ent(4, 2)], 3),
    ];
    for (entries, want) in cases {
        assert_eq!(log.find_conflict(&entries), want, "entries {:?}", ids(&entries));
    }
}

#[test]
fn raft_log_find_conflict_by_term() {
    // Terms by index: 1:1 2:1 3:2 4:2 5:4 6:4
    let log = log_with(&[ent(1, 1), ent(2, 1), ent(3, 2), ent(4, 2)], &[ent(5, 4), ent(6, 4)]);
    let cases = [
        ((6, 4), (6, 4)),
        ((6, 5), (6, 4)),
        ((6, 3), (4, 2)),
        ((6, 2), (4, 2)),
        ((6, 1), (2, 1)),
        ((3, 1), (2, 1)),
        ((6, 0), (0, 0)),
        // Past our last index: no known term there, keep the hint as it is.
        ((9, 4), (9, 0)),
    ];
    for ((index, term), want) in cases {
        assert_eq!(log.find_conflict_by_term(index, term), want, "hint ({index}, term {term})");
    }

    // With the beginning compacted: the walk stops at the compacted boundary.
    let storage = storage_with(&[ent(1, 1), ent(2, 1), ent(3, 2), ent(4, 2), ent(5, 4)]);
    storage.wl().compact(3).expect("in range");
    let log = RaftLog::new(storage, u64::MAX).expect("memory storage answers");
    assert_eq!(log.find_conflict_by_term(5, 1), (2, 1), "the boundary's term is known");
    assert_eq!(log.find_conflict_by_term(5, 0), (1, 0), "below it, the term is unknown");
}

// ---------------------------------------------------------------------------------------
// RaftLog::maybe_append

#[test]
fn raft_log_maybe_append() {
    let previous = [ent(1, 1), ent(2, 2), ent(3, 3)];
    // (prev index, prev term, leader commit, entries, expected result, expected last index,
    //  expected commit); the appended entries' terms are checked too.
    #[allow(clippy::type_complexity)]
    let cases: Vec<(u64, u64, u64, Vec<Entry>, Option<u64>, u64, u64)> = vec![
        // The previous entry does not match: rejected, nothing changes.
        (3, 2, 3, vec![ent(4, 4)], None, 3, 1),
        // The previous entry is past our log: rejected.
        (4, 4, 3, vec![ent(5, 4)], None, 3, 1),
        // A heartbeat-like append: commit moves, bounded by what the message proves.
        (3, 3, 3, vec![], Some(3), 3, 3),
        (3, 3, 4, vec![], Some(3), 3, 3),
        (2, 2, 3, vec![], Some(2), 3, 2),
        // New entries at the end.
        (3, 3, 3, vec![ent(4, 4)], Some(4), 4, 3),
        (3, 3, 4, vec![ent(4, 4)], Some(4), 4, 4),
        (3, 3, 5, vec![ent(4, 4), ent(5, 4)], Some(5), 5, 5),
        // Entries we already have: the longer log stays (a stale message must not cut it).
        (0, 0, 3, vec![ent(1, 1)], Some(1), 3, 1),
        (1, 1, 3, vec![ent(2, 2)], Some(2), 3, 2),
        // A conflict replaces the uncommitted tail.
        (1, 1, 1, vec![ent(2, 4)], Some(2), 2, 1),
        (1, 1, 1, vec![ent(2, 4), ent(3, 4), ent(4, 4)], Some(4), 4, 1),
        (2, 2, 1, vec![ent(3, 4), ent(4, 4)], Some(4), 4, 1),
    ];
    for (index, log_term, commit, entries, want, want_last, want_commit) in cases {
        let mut log = log_with(&previous, &[]);
        log.commit_to(1);
        let got = log.maybe_append(index, log_term, commit, entries.clone());
        let context = format!("append after ({index}, {log_term}) commit {commit} {:?}", ids(&entries));
        assert_eq!(got, want, "{context}");
        assert_eq!(log.last_index(), want_last, "{context}");
        assert_eq!(log.committed, want_commit, "{context}");
        if want.is_some() {
            for e in &entries {
                assert_eq!(log.term(e.index).ok(), Some(e.term), "{context}: entry {}", e.index);
            }
        }
    }
}

#[test]
#[should_panic(expected = "conflicts with the committed log")]
fn raft_log_maybe_append_conflicting_with_committed_panics() {
    let mut log = log_with(&[ent(1, 1), ent(2, 2), ent(3, 3)], &[]);
    log.commit_to(2);
    log.maybe_append(1, 1, 3, vec![ent(2, 4)]);
}

#[test]
#[should_panic(expected = "overwrite committed entries")]
fn raft_log_append_below_commit_panics() {
    let mut log = log_with(&[ent(1, 1), ent(2, 2)], &[]);
    log.commit_to(2);
    log.append(&[ent(2, 3)]);
}

// ---------------------------------------------------------------------------------------
// RaftLog: reading ranges

#[test]
fn raft_log_slice_across_storage_and_unstable() {
    // Stored 1..=5, unstable 6..=9, every entry the same encoded size.
    let stored: Vec<Entry> = (1..=5).map(|i| ent_data(i, 1, 10)).collect();
    let unstable: Vec<Entry> = (6..=9).map(|i| ent_data(i, 2, 10)).collect();
    let log = log_with(&stored, &unstable);
    let size = stored[0].encoded_len() as u64;
    let slice = |low, high, bytes_max| {
        let got = log.slice(low, high, bytes_max).expect("in range");
        got.iter().map(|e| e.index).collect::<Vec<_>>()
    };
    assert_eq!(slice(3, 8, None), vec![3, 4, 5, 6, 7]);
    assert_eq!(slice(6, 10, None), vec![6, 7, 8, 9]);
    assert_eq!(slice(1, 4, None), vec![1, 2, 3]);
    assert_eq!(slice(4, 4, None), Vec::<u64>::new());
    // Byte limits: whole entries, at least one.
    assert_eq!(slice(3, 8, Some(0)), vec![3]);
    assert_eq!(slice(3, 8, Some(2 * size)), vec![3, 4]);
    assert_eq!(slice(3, 8, Some(2 * size + size - 1)), vec![3, 4]);
    assert_eq!(slice(3, 8, Some(3 * size)), vec![3, 4, 5], "the limit falls on the boundary");
    assert_eq!(slice(3, 8, Some(4 * size)), vec![3, 4, 5, 6], "the limit spans the boundary");
    assert_eq!(slice(3, 8, Some(100 * size)), vec![3, 4, 5, 6, 7]);
    assert_eq!(slice(7, 10, Some(size)), vec![7]);
    assert_eq!(slice(7, 10, Some(0)), vec![7]);
    // Reading from the end or past it.
    assert_eq!(log.entries(9, None).expect("in range").len(), 1);
    assert!(log.entries(10, None).expect("past the end is empty").is_empty());
}

#[test]
fn raft_log_slice_of_compacted_entries_fails() {
    let storage = storage_with(&ents(1, 5, 1));
    storage.wl().compact(3).expect("in range");
    let log = RaftLog::new(storage, u64::MAX).expect("memory storage answers");
    assert!(matches!(log.slice(2, 4, None), Err(StorageError::Compacted)));
    assert!(matches!(log.entries(1, None), Err(StorageError::Compacted)));
    assert_eq!(ids(&log.slice(3, 6, None).expect("in range")), vec![(3, 1), (4, 1), (5, 1)]);
}

#[test]
#[should_panic(expected = "beyond last index")]
fn raft_log_slice_past_last_index_panics() {
    let log = log_with(&ents(1, 3, 1), &[]);
    let _ = log.slice(2, 5, None);
}

// ---------------------------------------------------------------------------------------
// RaftLog: commit and apply

#[test]
fn raft_log_next_committed_entries_with_and_without_unstable() {
    // Stored 1..=3, unstable 4..=6, committed 5.
    let mut log = log_with(&ents(1, 3, 1), &ents(4, 6, 1));
    log.commit_to(5);
    let indexes = |entries: Vec<Entry>| entries.iter().map(|e| e.index).collect::<Vec<_>>();
    // Synchronous writes persist a Ready before applying it: unstable committed entries go.
    assert!(log.has_next_committed_entries(true));
    assert_eq!(indexes(log.next_committed_entries(true)), vec![1, 2, 3, 4, 5]);
    // Asynchronous writes apply only what is durable.
    assert_eq!(indexes(log.next_committed_entries(false)), vec![1, 2, 3]);

    log.accept_applying(3);
    assert!(!log.has_next_committed_entries(false), "4 and 5 are not durable yet");
    assert!(log.next_committed_entries(false).is_empty());
    assert_eq!(indexes(log.next_committed_entries(true)), vec![4, 5]);

    // The application persists 4..=6 and confirms up to 5.
    log.store.wl().append(&ents(4, 6, 1)).expect("contiguous");
    log.stable_to(5, 1);
    assert_eq!(indexes(log.next_committed_entries(false)), vec![4, 5]);
    log.accept_applying(5);
    assert!(!log.has_next_committed_entries(true));
    log.applied_to(5);
    assert_eq!((log.applied, log.applying), (5, 5));
}

#[test]
fn raft_log_next_committed_entries_paginates_by_bytes() {
    let stored: Vec<Entry> = (1..=4).map(|i| ent_data(i, 1, 100)).collect();
    let size = stored[0].encoded_len() as u64;
    let storage = storage_with(&stored);
    let mut log = RaftLog::new(storage, 2 * size).expect("memory storage answers");
    log.append(&[ent_data(5, 1, 100), ent_data(6, 1, 100)]);
    log.commit_to(6);
    let mut pages = Vec::new();
    while log.has_next_committed_entries(true) {
        let page: Vec<u64> = log.next_committed_entries(true).iter().map(|e| e.index).collect();
        log.accept_applying(*page.last().expect("a page holds at least one entry"));
        pages.push(page);
    }
    assert_eq!(pages, vec![vec![1, 2], vec![3, 4], vec![5, 6]]);
    // The application confirms the applying in one go; nothing is handed out again.
    log.applied_to(6);
    assert!(log.next_committed_entries(true).is_empty());
}

#[test]
fn raft_log_oversized_committed_entry_is_still_handed_out() {
    let mut log = RaftLog::new(storage_with(&[ent_data(1, 1, 500), ent_data(2, 1, 1)]), 10)
        .expect("memory storage answers");
    log.commit_to(2);
    assert_eq!(ids(&log.next_committed_entries(true)), vec![(1, 1)]);
}

#[test]
fn raft_log_commit_and_maybe_commit() {
    let mut log = log_with(&[ent(1, 1), ent(2, 1)], &[ent(3, 2)]);
    log.commit_to(2);
    log.commit_to(1);
    assert_eq!(log.committed, 2, "the commit index never moves back");
    // A leader commits by counting replicas only for an entry of its own term.
    assert!(!log.maybe_commit(3, 1));
    assert!(!log.maybe_commit(2, 1), "not above the commit index");
    assert!(log.maybe_commit(3, 2));
    assert_eq!(log.committed, 3);
}

#[test]
#[should_panic(expected = "beyond last index")]
fn raft_log_commit_to_beyond_last_index_panics() {
    let mut log = log_with(&ents(1, 3, 1), &[]);
    log.commit_to(4);
}

#[test]
#[should_panic(expected = "applying")]
fn raft_log_accept_applying_beyond_commit_panics() {
    let mut log = log_with(&ents(1, 3, 1), &[]);
    log.commit_to(2);
    log.accept_applying(3);
}

#[test]
#[should_panic(expected = "applied index")]
fn raft_log_applied_beyond_commit_panics() {
    let mut log = log_with(&ents(1, 3, 1), &[]);
    log.commit_to(2);
    log.applied_to(3);
}

#[test]
fn raft_log_restore_from_a_snapshot() {
    let mut log = log_with(&ents(1, 3, 1), &ents(4, 5, 1));
    log.commit_to(3);
    log.restore(snapshot(10, 4));
    assert_eq!((log.first_index(), log.last_index(), log.committed), (11, 10, 10));
    assert_eq!(log.term(10).ok(), Some(4));
    assert!(matches!(log.term(9), Err(StorageError::Compacted)));
    // The unstable offset moves past the snapshot; the pending snapshot itself is what
    // holds back applying until it is persisted.
    assert_eq!(log.persisted_index(), 10);
    assert!(log.next_unstable_snapshot().is_some());
    assert!(log.next_unstable_entries().is_empty());
    // Nothing is applied until the snapshot is.
    assert!(!log.has_next_committed_entries(true));
    assert_eq!(log.snapshot(0, 2).ok().and_then(|s| s.metadata).map(|m| m.index), Some(10));
    // Entries follow the snapshot.
    log.append(&[ent(11, 4)]);
    assert!(log.maybe_append(11, 4, 11, Vec::new()).is_some());
    assert_eq!((log.last_index(), log.committed), (11, 11));
    log.stable_snapshot_to(10);
    assert!(log.next_unstable_snapshot().is_none());
}

// ---------------------------------------------------------------------------------------
// The ABA race of asynchronous writes, through a RawNode.

mod async_writes {
    use std::collections::VecDeque;

    use tessera_proto::raftpb::{Entry, HardState, Message, MessageType};

    use super::ent;
    use crate::storage::{MemStorage, Storage};
    use crate::{Config, RawNode, LOCAL_APPEND_THREAD};

    /// Node 2 of a five-node group, writing asynchronously.
    fn follower() -> (RawNode<MemStorage>, MemStorage) {
        let storage = MemStorage::new_with_voters(&[1, 2, 3, 4, 5]);
        let config = Config { async_storage_writes: true, ..Config::new(2) };
        (RawNode::new(&config, storage.clone()).expect("valid config"), storage)
    }

    fn append_from(from: u64, term: u64, commit: u64, entries: Vec<Entry>) -> Message {
        Message {
            msg_type: MessageType::MsgAppend as i32,
            from,
            to: 2,
            term,
            index: 0,
            log_term: 0,
            commit,
            entries,
            ..Default::default()
        }
    }

    /// Takes the node's Ready and returns its one append-thread message (the write).
    fn take_write(node: &mut RawNode<MemStorage>) -> Message {
        let rd = node.ready();
        let mut writes: Vec<Message> =
            rd.messages.into_iter().filter(|m| m.msg_type() == MessageType::MsgStorageAppend).collect();
        assert_eq!(writes.len(), 1, "one write per Ready");
        let write = writes.remove(0);
        assert_eq!(write.to, LOCAL_APPEND_THREAD);
        write
    }

    /// Performs a write on the storage, as the append thread would, and steps the
    /// completions addressed to the node itself.
    fn complete(node: &mut RawNode<MemStorage>, storage: &MemStorage, write: Message) {
        let mut store = storage.wl();
        store.append(&write.entries).expect("contiguous");
        if write.term != 0 {
            store.set_hard_state(HardState { term: write.term, vote: write.vote, commit: write.commit });
        }
        drop(store);
        for response in write.responses {
            if response.to == 2 {
                node.step(response).expect("a local completion");
            }
        }
    }

    /// Every index the node believes durable is on disk with the term of the node's log,
    /// which is `want` as (index, term) pairs.
    fn assert_durable_prefix_matches(node: &RawNode<MemStorage>, storage: &MemStorage, want: &[(u64, u64)]) {
        let log = node.raft().raft_log();
        let have: Vec<(u64, u64)> = log.all_entries().iter().map(|e| (e.index, e.term)).collect();
        assert_eq!(have, want, "the node's log");
        for &(index, term) in want.iter().take_while(|(index, _)| *index <= log.persisted_index()) {
            assert_eq!(
                storage.term(index).ok(),
                Some(term),
                "index {index} is marked durable but storage disagrees (persisted up to {})",
                log.persisted_index()
            );
        }
    }

    /// A write of term 1 completes after a term-2 leader overwrote its entries and a term-3
    /// leader wrote them back: its confirmation names an (index, term) that exists again,
    /// yet the term-2 write still in the pipeline will overwrite it on disk. It must not
    /// mark anything stable.
    #[test]
    fn a_confirmation_from_an_older_term_does_not_mark_entries_stable() {
        let (mut node, storage) = follower();
        node.step(append_from(1, 1, 0, vec![ent(1, 1), ent(2, 1)])).expect("leader 1");
        let w1 = take_write(&mut node);
        node.step(append_from(3, 2, 0, vec![ent(1, 2)])).expect("leader 3");
        let w2 = take_write(&mut node);
        node.step(append_from(1, 3, 2, vec![ent(1, 1), ent(2, 1), ent(3, 3)])).expect("leader 1 again");
        let w3 = take_write(&mut node);
        assert_eq!(node.raft().raft_log().committed, 2);

        let log = [(1, 1), (2, 1), (3, 3)];
        complete(&mut node, &storage, w1);
        assert_durable_prefix_matches(&node, &storage, &log);
        complete(&mut node, &storage, w2);
        // Storage now holds only (1, term 2): nothing may be applied from it.
        assert_durable_prefix_matches(&node, &storage, &log);
        while node.has_ready() {
            let rd = node.ready();
            assert!(
                rd.messages.iter().all(|m| m.msg_type() != MessageType::MsgStorageApply),
                "nothing durable is committed yet"
            );
        }

        complete(&mut node, &storage, w3);
        assert_durable_prefix_matches(&node, &storage, &log);
        assert_eq!(node.raft().raft_log().persisted_index(), 3);
        let rd = node.ready();
        let apply = rd.messages.iter().find(|m| m.msg_type() == MessageType::MsgStorageApply).expect("apply");
        let applied: Vec<(u64, u64)> = apply.entries.iter().map(|e| (e.index, e.term)).collect();
        assert_eq!(applied, vec![(1, 1), (2, 1)]);
    }

    /// The confirmation of a write issued before a term change is ignored; the write that
    /// the term change itself causes (the new hard state) must then vouch for the entries,
    /// or they would stay unstable, and unapplied, until the next append.
    #[test]
    fn entries_written_before_a_term_change_still_become_stable() {
        let (mut node, storage) = follower();
        node.step(append_from(1, 1, 2, vec![ent(1, 1), ent(2, 1)])).expect("leader 1");
        let w1 = take_write(&mut node);
        let heartbeat = Message {
            msg_type: MessageType::MsgHeartbeat as i32,
            from: 3,
            to: 2,
            term: 2,
            ..Default::default()
        };
        node.step(heartbeat).expect("leader 3");
        let w2 = take_write(&mut node);
        assert!(w2.entries.is_empty(), "only the new term is written");
        complete(&mut node, &storage, w1);
        complete(&mut node, &storage, w2);
        assert_eq!(node.raft().raft_log().persisted_index(), 2);
        assert_durable_prefix_matches(&node, &storage, &[(1, 1), (2, 1)]);
        let rd = node.ready();
        let apply = rd.messages.iter().find(|m| m.msg_type() == MessageType::MsgStorageApply).expect("apply");
        assert_eq!(apply.entries.len(), 2);
    }

    /// A tiny xorshift generator, so a failing case replays from its seed.
    struct TestRng(u64);

    impl TestRng {
        fn below(&mut self, bound: u64) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0 % bound
        }
    }

    /// Handles Readys until there are none: writes queue up for the append thread, entries
    /// to apply are applied at once, messages to the leaders are dropped.
    fn handle_readies(node: &mut RawNode<MemStorage>, writes: &mut VecDeque<Message>) {
        while node.has_ready() {
            let rd = node.ready();
            for m in rd.messages {
                match m.msg_type() {
                    MessageType::MsgStorageAppend => writes.push_back(m),
                    MessageType::MsgStorageApply => {
                        for response in m.responses {
                            node.step(response).expect("a local completion");
                        }
                    }
                    _ => {}
                }
            }
        }
    }

    /// What storage will hold once the queued writes are done, as (index, term) pairs.
    fn log_after_writes(storage: &MemStorage, writes: &VecDeque<Message>) -> Vec<(u64, u64)> {
        let (first, last) = (storage.first_index().expect("answers"), storage.last_index().expect("answers"));
        let stored = storage.entries(first, last + 1, None).expect("the stored log is readable");
        let mut log: Vec<(u64, u64)> = stored.iter().map(|e| (e.index, e.term)).collect();
        for write in writes {
            if let Some(head) = write.entries.first() {
                log.retain(|(index, _)| *index < head.index);
                log.extend(write.entries.iter().map(|e| (e.index, e.term)));
            }
        }
        log
    }

    /// The node's log must be what its writes leave on disk, and whatever it believes
    /// durable must be on disk already, with that term.
    fn check(node: &RawNode<MemStorage>, storage: &MemStorage, writes: &VecDeque<Message>, seed: u64) {
        let want = log_after_writes(storage, writes);
        let log = node.raft().raft_log();
        let have: Vec<(u64, u64)> = log.all_entries().iter().map(|e| (e.index, e.term)).collect();
        assert_eq!(have, want, "seed {seed}: the node's log against its writes");
        for &(index, term) in want.iter().take_while(|(index, _)| *index <= log.persisted_index()) {
            assert_eq!(
                storage.term(index).ok(),
                Some(term),
                "seed {seed}: durable index {index} is not on disk"
            );
        }
    }

    /// Leaders of rising terms, each with a log that keeps the committed prefix of the
    /// logs before it, send node 2 appends from random points of their logs, while the
    /// node's writes complete in order but late. Overwrites, including ones that restore an
    /// earlier (index, term), race the writes.
    #[test]
    fn random_overwrites_racing_writes_keep_the_durable_prefix_on_disk() {
        for seed in 1..=300u64 {
            eprintln!("seed {seed}");
            let mut rng = TestRng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
            let (mut node, storage) = follower();
            let (mut term, mut committed) = (1u64, 0usize);
            // Logs as the terms of indexes 1, 2, ...
            let mut leader_log: Vec<u64> = Vec::new();
            let mut known_logs: Vec<Vec<u64>> = vec![Vec::new()];
            let mut writes = VecDeque::new();
            for _ in 0..40 {
                match rng.below(3) {
                    0 => {
                        // A new leader, whose log is a prefix of a known one (never shorter
                        // than the committed prefix) and maybe some entries of its own.
                        term += 1;
                        let base = &known_logs[rng.below(known_logs.len() as u64) as usize];
                        let cut = committed + rng.below((base.len() - committed) as u64 + 1) as usize;
                        leader_log = base[..cut].to_vec();
                        leader_log.extend(std::iter::repeat_n(term, rng.below(3) as usize));
                    }
                    1 => {
                        leader_log.push(term);
                        if rng.below(2) == 0 {
                            committed = committed.max(rng.below(leader_log.len() as u64 + 1) as usize);
                            let prefix = leader_log[..committed].to_vec();
                            known_logs.retain(|l| l.len() >= committed && l[..committed] == prefix[..]);
                        }
                    }
                    _ => {}
                }
                known_logs.push(leader_log.clone());

                let prev = rng.below(leader_log.len() as u64 + 1) as usize;
                let entries = (prev..leader_log.len()).map(|i| ent(i as u64 + 1, leader_log[i])).collect();
                let mut append =
                    append_from(if term % 2 == 0 { 3 } else { 1 }, term, committed as u64, entries);
                append.index = prev as u64;
                append.log_term = if prev == 0 { 0 } else { leader_log[prev - 1] };
                node.step(append).expect("from a leader");
                handle_readies(&mut node, &mut writes);
                check(&node, &storage, &writes, seed);

                for _ in 0..rng.below(3) {
                    let Some(write) = writes.pop_front() else { break };
                    complete(&mut node, &storage, write);
                    handle_readies(&mut node, &mut writes);
                    check(&node, &storage, &writes, seed);
                }
            }
            // Once every write is done, everything is durable and everything committed is
            // applied: a confirmation that was ignored does not strand entries.
            while let Some(write) = writes.pop_front() {
                complete(&mut node, &storage, write);
                handle_readies(&mut node, &mut writes);
            }
            check(&node, &storage, &writes, seed);
            let log = node.raft().raft_log();
            assert_eq!(log.persisted_index(), log.last_index(), "seed {seed}: all written, all durable");
            assert_eq!(log.applied, log.committed, "seed {seed}: all committed entries applied");
        }
    }
}

#[test]
fn mem_storage_compact_never_relabels_the_snapshot() {
    // Compaction past the latest snapshot used to move the snapshot's index while keeping
    // its data, so a lagging follower would receive old state under a newer index.
    let storage = storage_with(&ents(1, 6, 1));
    storage.wl().create_snapshot(2, None, b"state@2".to_vec()).expect("in the log");
    storage.wl().compact(5).expect("in range");
    let snap = storage.snapshot(0, 2).expect("available");
    let meta = snap.metadata.expect("metadata");
    assert_eq!((meta.index, meta.term, snap.data.to_vec()), (2, 1, b"state@2".to_vec()));
    assert_eq!(storage.first_index().ok(), Some(5));
    assert_eq!(storage.term(4).ok(), Some(1), "the compacted boundary keeps its term");
    // A later snapshot may sit on the compacted boundary, not below it.
    assert!(matches!(storage.wl().create_snapshot(3, None, Vec::new()), Err(StorageError::Compacted)));
    storage.wl().create_snapshot(4, None, b"state@4".to_vec()).expect("the boundary");
}
