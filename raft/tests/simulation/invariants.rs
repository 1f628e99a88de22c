//! The safety invariants the simulation checks after every step: election safety, log
//! matching, leader completeness and state-machine safety, over the nodes' logs and disks.

use tessera_raft::raftpb::Entry;
use tessera_raft::{describe, StateRole, Storage, StorageError};

use super::{Sim, FULL_CHECK_INTERVAL_STEPS};

impl Sim {
    // ---- invariants --------------------------------------------------------------------

    /// After every operation on a node: election safety, the highest term and commit
    /// index seen, completed transfers, and commit durability when a leader commits.
    pub(super) fn observe(&mut self, i: usize) {
        let node = &self.nodes[i];
        let Some(raw) = &node.raw else { return };
        let raft = raw.raft();
        let committed = raft.raft_log().committed;
        let term = raft.term();
        self.history.note_term(term);
        self.commit_max = self.commit_max.max(committed);
        if raft.role() != StateRole::Leader {
            let node = &mut self.nodes[i];
            node.commit_checked = node.commit_checked.max(committed);
            return;
        }
        self.history.record_leader(term, node.id);
        let transfer_won = node.timeout_now_term == term;
        if committed > node.commit_checked {
            // Checked right after the call that committed, so the configuration is the
            // one the leader counted acknowledgements in.
            let conf = raft.tracker().conf_state();
            let log = raft.raft_log();
            let newly_committed: Vec<(u64, u64)> = (node.commit_checked + 1..=committed)
                .map(|index| (index, log.term(index).expect("a leader holds what it commits")))
                .collect();
            let leader = node.id;
            let nodes = &self.nodes;
            for (index, entry_term) in newly_committed {
                self.history.check_commit(leader, term, index, entry_term, &conf, |id| {
                    nodes.get((id - 1) as usize).is_some_and(|n| match n.disk.term(index) {
                        Ok(t) => t == entry_term,
                        // A snapshot past the index holds the entry in its state.
                        Err(StorageError::Compacted) => true,
                        Err(_) => false,
                    })
                });
            }
        }
        let node = &mut self.nodes[i];
        node.commit_checked = node.commit_checked.max(committed);
        if transfer_won {
            node.timeout_now_term = 0;
            self.stats.transfers_completed += 1;
        }
    }

    /// After every step.
    pub(super) fn check_all(&mut self) {
        for i in 0..self.nodes.len() {
            self.observe(i);
        }
        for node in &mut self.nodes {
            let Some(raw) = &node.raw else { continue };
            let raft = raw.raft();
            let log = raft.raft_log();
            let id = node.id;
            self.history.note_term(raft.term());
            assert!(
                log.committed >= node.committed_seen,
                "invariant violated: node {id}'s commit index went back from {} to {}",
                node.committed_seen,
                log.committed
            );
            node.committed_seen = log.committed;
            assert!(
                log.applied <= log.committed,
                "invariant violated: node {id} applied {} beyond its commit index {}",
                log.applied,
                log.committed
            );
            let unstable = &log.unstable.entries;
            for (k, e) in unstable.iter().enumerate() {
                let prev_term = if k == 0 { log.term(e.index - 1).ok() } else { Some(unstable[k - 1].term) };
                self.history.check_entry(id, e, prev_term);
            }
            if raft.role() == StateRole::Leader {
                let term = raft.term();
                self.history.record_leader(term, id);
                let checked = if node.leader_checked.0 == term { node.leader_checked.1 } else { 0 };
                let checked = self.history.check_leader_log(id, term, checked, |index| log.term(index));
                node.leader_checked = (term, checked);
            }
        }
        if self.now_step.is_multiple_of(FULL_CHECK_INTERVAL_STEPS) {
            self.check_logs_fully();
        }
    }

    /// Log matching over a node's whole durable log.
    pub(super) fn check_disk_log(&mut self, i: usize) {
        let disk = &self.nodes[i].disk;
        let first = disk.first_index().expect("MemStorage answers");
        let last = disk.last_index().expect("MemStorage answers");
        let entries = disk.entries(first, last + 1, None).expect("the disk log is readable");
        let mut prev_term = disk.term(first - 1).ok();
        for e in &entries {
            self.history.check_entry(i as u64 + 1, e, prev_term);
            prev_term = Some(e.term);
        }
    }

    /// The durable logs, then the literal log matching property between every two live
    /// logs (durable and unstable): where they agree on a term, they agree on everything
    /// before.
    pub(super) fn check_logs_fully(&mut self) {
        for i in 0..self.nodes.len() {
            self.check_disk_log(i);
        }
        let logs: Vec<(u64, Vec<Entry>)> = self
            .nodes
            .iter()
            .filter_map(|n| {
                let log = n.raw.as_ref()?.raft().raft_log();
                Some((n.id, log.all_entries()))
            })
            .collect();
        for (a, (id_a, log_a)) in logs.iter().enumerate() {
            for (id_b, log_b) in &logs[a + 1..] {
                check_pair(*id_a, log_a, *id_b, log_b);
            }
        }
    }
}

/// Log matching between two logs: find the highest index where both have an entry of the
/// same term; every entry both hold up to there must be identical.
pub fn check_pair(id_a: u64, a: &[Entry], id_b: u64, b: &[Entry]) {
    let (Some(fa), Some(fb)) = (a.first(), b.first()) else { return };
    let low = fa.index.max(fb.index);
    let high = a.last().expect("non-empty").index.min(b.last().expect("non-empty").index);
    let at = |log: &'_ [Entry], first: u64, index: u64| -> Entry { log[(index - first) as usize].clone() };
    let Some(agree) = (low..=high).rev().find(|&i| at(a, fa.index, i).term == at(b, fb.index, i).term) else {
        return;
    };
    for i in low..=agree {
        let (ea, eb) = (at(a, fa.index, i), at(b, fb.index, i));
        assert!(
            ea == eb,
            "log matching violated: nodes {id_a} and {id_b} agree on the term at index {agree} but differ at {i}: {} vs {}",
            describe::describe_entry(&ea),
            describe::describe_entry(&eb)
        );
    }
}
