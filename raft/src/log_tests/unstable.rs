//! The unstable tail of the log: entries and a snapshot not yet durable.

use super::*;

#[test]
fn unstable_first_last_and_term() {
    let u = Unstable::new(5);
    assert_eq!((u.maybe_first_index(), u.maybe_last_index(), u.maybe_term(4)), (None, None, None));

    let u = unstable_with(5, &[ent(5, 1), ent(6, 2)]);
    assert_eq!(u.maybe_first_index(), None, "without a snapshot storage knows the first index");
    assert_eq!(u.maybe_last_index(), Some(6));
    assert_eq!((u.maybe_term(5), u.maybe_term(6)), (Some(1), Some(2)));
    assert_eq!((u.maybe_term(4), u.maybe_term(7)), (None, None));

    let mut u = Unstable::new(1);
    u.restore(snapshot(4, 3));
    assert_eq!((u.maybe_first_index(), u.maybe_last_index()), (Some(5), Some(4)));
    assert_eq!((u.maybe_term(4), u.maybe_term(3), u.maybe_term(5)), (Some(3), None, None));
    u.truncate_and_append(&[ent(5, 3)]);
    assert_eq!((u.maybe_last_index(), u.maybe_term(5)), (Some(5), Some(3)));
}

#[test]
fn unstable_truncate_and_append_continuation() {
    let mut u = unstable_with(5, &[ent(5, 1), ent(6, 1)]);
    u.truncate_and_append(&[ent(7, 1), ent(8, 2)]);
    assert_eq!(u.offset, 5);
    assert_eq!(ids(&u.entries), vec![(5, 1), (6, 1), (7, 1), (8, 2)]);
    // An empty append is a no-op.
    u.truncate_and_append(&[]);
    assert_eq!(u.entries.len(), 4);
}

#[test]
fn unstable_truncate_and_append_replaces_everything() {
    // The new entries start at or before the offset: the whole tail goes, and the entries
    // overwrite stored ones too when they are persisted.
    let mut u = unstable_with(5, &[ent(5, 1), ent(6, 1)]);
    u.accept_in_progress();
    u.truncate_and_append(&[ent(5, 2), ent(6, 2), ent(7, 2)]);
    assert_eq!((u.offset, u.offset_in_progress), (5, 5));
    assert_eq!(ids(&u.entries), vec![(5, 2), (6, 2), (7, 2)]);
    assert_eq!(u.next_entries().len(), 3, "all of it must be persisted again");

    let mut u = unstable_with(5, &[ent(5, 1), ent(6, 1)]);
    u.truncate_and_append(&[ent(3, 2)]);
    assert_eq!((u.offset, u.offset_in_progress), (3, 3));
    assert_eq!(ids(&u.entries), vec![(3, 2)]);
}

#[test]
fn unstable_truncate_and_append_truncates_the_middle() {
    let mut u = unstable_with(5, &[ent(5, 1), ent(6, 1), ent(7, 1)]);
    u.accept_in_progress();
    assert_eq!(u.offset_in_progress, 8);
    u.truncate_and_append(&[ent(6, 2), ent(7, 2)]);
    assert_eq!(u.offset, 5);
    assert_eq!(ids(&u.entries), vec![(5, 1), (6, 2), (7, 2)]);
    // Only the surviving entry 5 is still being written; 6 and 7 must be handed out anew.
    assert_eq!(u.offset_in_progress, 6);
    assert_eq!(ids(u.next_entries()), vec![(6, 2), (7, 2)]);

    // Truncating after the in-progress point leaves it alone.
    let mut u = unstable_with(5, &[ent(5, 1)]);
    u.accept_in_progress();
    u.truncate_and_append(&[ent(6, 1), ent(7, 1), ent(8, 1)]);
    u.truncate_and_append(&[ent(8, 2)]);
    assert_eq!(u.offset_in_progress, 6);
    assert_eq!(ids(u.next_entries()), vec![(6, 1), (7, 1), (8, 2)]);
}

#[test]
fn unstable_next_entries_and_accept_in_progress() {
    let mut u = unstable_with(5, &[ent(5, 1), ent(6, 1)]);
    assert_eq!(ids(u.next_entries()), vec![(5, 1), (6, 1)]);
    u.accept_in_progress();
    assert!(u.next_entries().is_empty(), "handed out once, not again");
    u.truncate_and_append(&[ent(7, 1)]);
    assert_eq!(ids(u.next_entries()), vec![(7, 1)]);
    // Accepting with nothing new changes nothing.
    u.accept_in_progress();
    u.accept_in_progress();
    assert_eq!(u.offset_in_progress, 8);
    assert!(u.next_entries().is_empty());

    // The snapshot is handed out once as well.
    let mut u = Unstable::new(1);
    u.restore(snapshot(9, 2));
    assert!(u.next_snapshot().is_some());
    u.accept_in_progress();
    assert!(u.next_snapshot().is_none());
    assert!(u.snapshot.is_some(), "still pending until persisted");
}

#[test]
fn unstable_stable_to() {
    let mut u = unstable_with(5, &[ent(5, 1), ent(6, 1), ent(7, 2)]);
    u.accept_in_progress();
    u.stable_to(6, 1);
    assert_eq!((u.offset, u.offset_in_progress), (7, 8));
    assert_eq!(ids(&u.entries), vec![(7, 2)]);
    // Already stable, or not in the log at all: ignored.
    u.stable_to(5, 1);
    u.stable_to(9, 2);
    assert_eq!((u.offset, ids(&u.entries)), (7, vec![(7, 2)]));
    u.stable_to(7, 2);
    assert_eq!((u.offset, u.offset_in_progress), (8, 8));
    assert!(u.entries.is_empty());
}

#[test]
fn last_stable_term_is_known_until_it_may_be_overwritten() {
    // Storage holds 1..=3 of term 1; 4 and 5 of term 2 are unstable.
    let mut log = log_with(&ents(1, 3, 1), &[ent(4, 2), ent(5, 2)]);
    assert_eq!(log.unstable.last_stable, None);
    log.unstable.accept_in_progress();
    log.store.wl().append(&[ent(4, 2), ent(5, 2)]).unwrap();
    log.unstable.stable_to(5, 2);
    assert_eq!(log.unstable.last_stable, Some((5, 2)));
    // The storage is not asked: make it disagree to prove the answer comes from the cache.
    log.store.wl().append(&[ent(5, 7)]).unwrap();
    assert_eq!(log.term(5).ok(), Some(2));
    // A new leader overwrites from 6 on: the entry at 5 stays, and so does its term.
    log.append(&[ent(6, 3)]);
    assert_eq!(log.unstable.last_stable, Some((5, 2)));
    // Overwriting from 4 on may replace the entry at 5: forgotten, storage answers again.
    log.append(&[ent(4, 4)]);
    assert_eq!(log.unstable.last_stable, None);
    assert_eq!(log.term(3).ok(), Some(1));
    // A snapshot replaces the whole log.
    log.unstable.stable_to(4, 4);
    assert_eq!(log.unstable.last_stable, Some((4, 4)));
    log.restore(snapshot(10, 5));
    assert_eq!(log.unstable.last_stable, None);
    assert_eq!(log.term(10).ok(), Some(5));
}

#[test]
fn unstable_stable_to_pulls_in_progress_forward() {
    // Persisted entries that were never marked in progress (a write of an earlier Ready
    // confirmed after a restart, say) still move the in-progress point.
    let mut u = unstable_with(5, &[ent(5, 1), ent(6, 1), ent(7, 1)]);
    u.stable_to(5, 1);
    assert_eq!((u.offset, u.offset_in_progress), (6, 6));
    assert_eq!(ids(u.next_entries()), vec![(6, 1), (7, 1)]);
}

#[test]
fn unstable_stable_to_ignores_an_overwritten_entry() {
    // The async-writes ABA race: entries 5 and 6 of term 1 are handed to the writer, then a
    // new leader replaces 6 with an entry of term 2 before the write is confirmed. The
    // confirmation of (6, term 1) must not mark the new entry 6 stable.
    let mut u = unstable_with(5, &[ent(5, 1), ent(6, 1)]);
    u.accept_in_progress();
    u.truncate_and_append(&[ent(6, 2)]);
    u.stable_to(6, 1);
    assert_eq!(u.offset, 5, "nothing became stable");
    assert_eq!(ids(&u.entries), vec![(5, 1), (6, 2)]);
    // Entry 5 was untouched by the overwrite, so confirming it is fine.
    u.stable_to(5, 1);
    assert_eq!(u.offset, 6);
    assert_eq!(ids(&u.entries), vec![(6, 2)]);
    // The second write confirms the new entry.
    u.stable_to(6, 2);
    assert!(u.entries.is_empty());
    assert_eq!(u.offset, 7);
}

#[test]
fn unstable_stable_to_ignores_the_snapshot_index() {
    let mut u = Unstable::new(1);
    u.restore(snapshot(4, 3));
    u.truncate_and_append(&[ent(5, 3)]);
    u.stable_to(4, 3);
    assert_eq!(u.offset, 5);
    assert!(u.snapshot.is_some(), "the snapshot is confirmed by stable_snapshot_to only");
    assert_eq!(u.entries.len(), 1);
}

#[test]
fn unstable_stable_snapshot_to() {
    let mut u = Unstable::new(1);
    u.restore(snapshot(4, 3));
    u.accept_in_progress();
    u.stable_snapshot_to(3);
    assert!(u.snapshot.is_some(), "a different index confirms another snapshot");
    assert!(u.snapshot_in_progress);
    u.stable_snapshot_to(4);
    assert!(u.snapshot.is_none());
    assert!(!u.snapshot_in_progress);
    assert_eq!(u.maybe_first_index(), None);
}

#[test]
fn unstable_restore_replaces_everything() {
    let mut u = unstable_with(5, &[ent(5, 1), ent(6, 1)]);
    u.accept_in_progress();
    u.restore(snapshot(10, 4));
    assert_eq!((u.offset, u.offset_in_progress), (11, 11));
    assert!(u.entries.is_empty());
    assert!(!u.snapshot_in_progress);
    assert_eq!(u.next_snapshot().and_then(|s| s.metadata.as_ref()).map(|m| m.index), Some(10));
}

#[test]
#[should_panic(expected = "unstable slice")]
fn unstable_slice_out_of_range_panics() {
    let u = unstable_with(5, &[ent(5, 1), ent(6, 1)]);
    let _ = u.slice(5, 8);
}
