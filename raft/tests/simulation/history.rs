//! The whole-run record the safety invariants are checked against: who led each term,
//! which entry was seen at each (index, term), which entries a leader committed on a
//! quorum of its configuration, the one sequence of applied entries, and the one
//! configuration each applied membership change produced.
//!
//! Every check panics with a message that names the invariant; the runner catches the
//! panic and prints the seed.

use std::collections::{BTreeMap, HashMap};

use tessera_raft::raftpb::{ConfState, Entry};
use tessera_raft::StorageError;

/// FNV-1a: a stable, dependency-free hash for entry payloads.
pub fn data_hash(data: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in data {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// Mixes one applied entry into the state hash (SplitMix64's finalizer over the inputs).
fn chain(prev: u64, index: u64, term: u64, data_hash: u64) -> u64 {
    let mut z =
        prev ^ index.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ term.rotate_left(17) ^ data_hash.rotate_left(41);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// A node's state machine, reduced to what safety needs: how many entries it applied and
/// a hash chain over them (index, term and payload). Two state machines with the same
/// index and hash applied the same sequence.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StateMachine {
    pub index: u64,
    pub hash: u64,
}

impl StateMachine {
    pub fn apply(&mut self, e: &Entry) {
        assert_eq!(e.index, self.index + 1, "invariant: the state machine applies entries in order");
        self.hash = chain(self.hash, e.index, e.term, data_hash(&e.data));
        self.index = e.index;
    }

    /// The snapshot payload: the state machine itself.
    pub fn encode(&self) -> Vec<u8> {
        let mut data = self.index.to_le_bytes().to_vec();
        data.extend_from_slice(&self.hash.to_le_bytes());
        data
    }

    /// Reads a snapshot payload; the empty payload is the empty state of a new group.
    pub fn decode(data: &[u8]) -> StateMachine {
        if data.is_empty() {
            return StateMachine::default();
        }
        assert_eq!(data.len(), 16, "snapshot payload is not a simulated state machine: {data:?}");
        StateMachine {
            index: u64::from_le_bytes(data[..8].try_into().expect("8 bytes")),
            hash: u64::from_le_bytes(data[8..].try_into().expect("8 bytes")),
        }
    }
}

/// An entry some node applied; the first node to apply an index fixes it for everyone.
#[derive(Clone, Copy, Debug)]
struct AppliedEntry {
    term: u64,
    data_hash: u64,
    /// The state hash after applying it.
    state_hash: u64,
    /// The highest term any node had when the entry was first applied. The entry was
    /// committed in this term or earlier, so every leader of a higher term must have it.
    max_term_at_apply: u64,
}

#[derive(Debug, Default)]
pub struct History {
    /// `applied[i - 1]` is the entry at index `i`.
    applied: Vec<AppliedEntry>,
    /// Every (index, term) ever seen in a log, with its payload hash and the term of the
    /// entry before it. Log matching holds exactly when each pair has one identity: then
    /// two logs that agree on (index, term) agree on the whole prefix, by induction.
    entry_ids: HashMap<(u64, u64), (u64, u64)>,
    /// Term -> the node that led it.
    leaders: BTreeMap<u64, u64>,
    /// The highest term any node ever had.
    pub max_term: u64,
    /// Index -> term of every entry a leader was seen committing, after checking that a
    /// quorum of its configuration held it durably.
    commits_checked: HashMap<u64, u64>,
    /// Index -> the configuration in force after applying the entry there, for the
    /// group's initial configuration and every applied membership change (refused ones
    /// included: they leave the configuration as it was, on every node alike).
    confs: BTreeMap<u64, ConfState>,
}

impl History {
    /// The history of a group that starts, like a TiKV region, from a snapshot at `index`
    /// of term `term` that holds `conf`: its state machine has "applied" `index` empty
    /// entries. Nodes created later start with an empty log, which the leader can only
    /// fill with a snapshot, whose configuration then tells them the membership.
    pub fn bootstrap(index: u64, term: u64, conf: ConfState) -> (History, StateMachine) {
        let mut history = History { max_term: term, ..History::default() };
        let mut sm = StateMachine::default();
        for i in 1..=index {
            let e = Entry { index: i, term, ..Entry::default() };
            sm.apply(&e);
            history.applied.push(AppliedEntry {
                term,
                data_hash: data_hash(&e.data),
                state_hash: sm.hash,
                max_term_at_apply: term,
            });
            history.commits_checked.insert(i, term);
        }
        history.confs.insert(index, conf);
        (history, sm)
    }

    pub fn leader_count(&self) -> usize {
        self.leaders.len()
    }

    pub fn applied_len(&self) -> u64 {
        self.applied.len() as u64
    }

    pub fn note_term(&mut self, term: u64) {
        self.max_term = self.max_term.max(term);
    }

    /// Election safety: at most one leader per term, over the whole run.
    pub fn record_leader(&mut self, term: u64, id: u64) {
        self.note_term(term);
        let leader = *self.leaders.entry(term).or_insert(id);
        assert_eq!(leader, id, "election safety violated: nodes {leader} and {id} both led term {term}");
    }

    /// Log matching, one entry at a time: (index, term) always names the same payload and
    /// follows the same term. `prev_term` is None when the previous entry is unknown.
    pub fn check_entry(&mut self, node: u64, e: &Entry, prev_term: Option<u64>) {
        let id = (data_hash(&e.data), prev_term.unwrap_or(u64::MAX));
        match self.entry_ids.get_mut(&(e.index, e.term)) {
            None => {
                self.entry_ids.insert((e.index, e.term), id);
            }
            Some(seen) => {
                assert_eq!(
                    seen.0, id.0,
                    "log matching violated: node {node} holds a different payload at index {} term {}",
                    e.index, e.term
                );
                if seen.1 == u64::MAX {
                    seen.1 = id.1;
                } else if id.1 != u64::MAX {
                    assert_eq!(
                        seen.1, id.1,
                        "log matching violated: node {node} has index {} term {} after an entry of term {} \
                         (seen after term {} elsewhere)",
                        e.index, e.term, id.1, seen.1
                    );
                }
            }
        }
    }

    /// Whether nobody has applied `index` yet.
    pub fn is_new(&self, index: u64) -> bool {
        index > self.applied.len() as u64
    }

    pub fn applied_term(&self, index: u64) -> Option<u64> {
        self.applied.get((index as usize).checked_sub(1)?).map(|a| a.term)
    }

    /// Leader completeness: node `node`, leader of `term`, must hold every applied entry
    /// that was committed before `term`. Checks the applied indexes after `checked` (a
    /// leader's log only grows while it leads, so earlier ones need no second look) and
    /// returns how far it checked. `term_at` reads the leader's log.
    pub fn check_leader_log(
        &self,
        node: u64,
        term: u64,
        checked: u64,
        term_at: impl Fn(u64) -> Result<u64, StorageError>,
    ) -> u64 {
        for (offset, a) in self.applied.iter().enumerate().skip(checked as usize) {
            if term <= a.max_term_at_apply {
                // The entry may have been committed in this very term or later.
                continue;
            }
            let index = offset as u64 + 1;
            match term_at(index) {
                Ok(t) if t == a.term => {}
                // Compacted entries were applied here, and applying checked them.
                Err(StorageError::Compacted) => {}
                other => panic!(
                    "leader completeness violated: node {node} leads term {term} but has {other:?} at index {index}, \
                     where an entry of term {} was committed before term {term}",
                    a.term
                ),
            }
        }
        self.applied.len() as u64
    }

    /// Commit durability, checked the moment leader `leader` of `term` advances its commit
    /// index over `index` (holding an entry of `entry_term` there): a majority of the
    /// voters of its configuration `conf` must hold the entry durably (`holds` says who
    /// does), and in a joint configuration a majority of each half. The leader's
    /// configuration at that moment is exactly the one it counted acknowledgements in:
    /// configurations take effect when applied, and the simulation looks right after
    /// every call into a node, including each `apply_conf_change`.
    pub fn check_commit(
        &mut self,
        leader: u64,
        term: u64,
        index: u64,
        entry_term: u64,
        conf: &ConfState,
        holds: impl Fn(u64) -> bool,
    ) {
        for half in [&conf.voters, &conf.voters_outgoing] {
            if half.is_empty() {
                continue;
            }
            let holders = half.iter().filter(|id| holds(**id)).count();
            assert!(
                holders > half.len() / 2,
                "commit durability violated: leader {leader} of term {term} commits index {index} (term \
                 {entry_term}), which only {holders} of the voters {half:?} hold durably (configuration {conf:?})"
            );
        }
        self.commits_checked.insert(index, entry_term);
    }

    /// State-machine safety: node `node` applies `e` on top of `sm`. An entry nobody
    /// applied before must have been seen committed (see `check_commit`).
    pub fn on_apply(&mut self, node: u64, sm: &mut StateMachine, e: &Entry) {
        let before = *sm;
        sm.apply(e);
        if self.is_new(e.index) {
            assert_eq!(e.index, self.applied.len() as u64 + 1, "invariant: applied history has no gap");
            assert_eq!(
                self.commits_checked.get(&e.index),
                Some(&e.term),
                "commit durability violated: node {node} applies index {} term {} that no leader was seen \
                 committing on a quorum of its configuration",
                e.index,
                e.term
            );
            let prev_hash = self.applied.last().map_or(0, |a| a.state_hash);
            assert_eq!(
                before.hash, prev_hash,
                "invariant: node {node}'s state matched the history before applying"
            );
            self.applied.push(AppliedEntry {
                term: e.term,
                data_hash: data_hash(&e.data),
                state_hash: sm.hash,
                max_term_at_apply: self.max_term,
            });
            return;
        }
        let a = self.applied[(e.index - 1) as usize];
        assert!(
            a.term == e.term && a.data_hash == data_hash(&e.data),
            "state machine safety violated: node {node} applies index {} term {}, but term {} with another payload \
             was applied there before",
            e.index,
            e.term,
            a.term
        );
        assert_eq!(
            a.state_hash, sm.hash,
            "state machine safety violated: node {node}'s state diverged at {}",
            e.index
        );
    }

    /// A node re-applies an entry its state machine already holds (after a restart whose
    /// durable commit index lagged its state): it must be the same entry.
    pub fn check_reapplied(&self, node: u64, e: &Entry) {
        let a = self.applied.get((e.index - 1) as usize).unwrap_or_else(|| {
            panic!("invariant: node {node} re-applies index {} that nobody applied", e.index)
        });
        assert!(
            a.term == e.term && a.data_hash == data_hash(&e.data),
            "state machine safety violated: node {node} re-applies index {} term {}, but term {} was applied there",
            e.index,
            e.term,
            a.term
        );
    }

    /// A state installed from a snapshot or reloaded after a restart must be a prefix of
    /// the applied history.
    pub fn check_state(&self, node: u64, sm: &StateMachine, what: &str) {
        if sm.index == 0 {
            assert_eq!(
                sm.hash, 0,
                "state machine safety violated: node {node}'s {what} is empty with a hash"
            );
            return;
        }
        let a = self.applied.get((sm.index - 1) as usize).unwrap_or_else(|| {
            panic!(
                "state machine safety violated: node {node}'s {what} is at index {} nobody applied",
                sm.index
            )
        });
        assert_eq!(
            a.state_hash, sm.hash,
            "state machine safety violated: node {node}'s {what} at index {} differs from the applied history",
            sm.index
        );
    }

    /// Configuration safety: every node that applies the membership change at `index`
    /// ends up with the same configuration `conf`.
    pub fn on_conf_applied(&mut self, node: u64, index: u64, conf: &ConfState) {
        match self.confs.get(&index) {
            None => {
                self.confs.insert(index, conf.clone());
            }
            Some(seen) => assert_eq!(
                seen, conf,
                "configuration safety violated: node {node} has configuration {conf:?} after applying index \
                 {index}, where another node had {seen:?}"
            ),
        }
    }

    /// The configuration in force once everything up to `index` is applied; none before
    /// the group's initial snapshot (the state of a node created empty).
    pub fn conf_at(&self, index: u64) -> ConfState {
        self.confs.range(..=index).next_back().map(|(_, conf)| conf.clone()).unwrap_or_default()
    }

    /// Whether a node has applied the membership change at `index` already.
    pub fn has_conf_at(&self, index: u64) -> bool {
        self.confs.contains_key(&index)
    }

    /// The newest configuration any node applied, and the index of its change.
    pub fn latest_conf(&self) -> (u64, &ConfState) {
        let (index, conf) =
            self.confs.iter().next_back().expect("invariant: the initial configuration is recorded");
        (*index, conf)
    }
}
