//! What may wait for a peer's next message instead of waking it.
//!
//! Waking a peer costs a scheduling round trip (a push on the scheduler queue, a poller
//! taking it, a round, a release); with a thousand active regions that is paid several times
//! per write, so the store sends two kinds of news quietly (`BatchRouter::send_quiet`): they
//! wait in the mailbox, in order, and are handled before the peer's next message, unless more
//! of them wait than the peer said it can hold when it was last released. The two kinds:
//! - Ticks the Raft node would not act on (`RawNode::ticks_before_due`): a follower that hears
//!   its leader acts on no tick before its election timeout, a leader on none before its next
//!   heartbeat or quorum check. Handed over late but in order, before anything else reaches
//!   the peer, they leave the node exactly where ticking on time would have (the core's
//!   contract, checked seed by seed by the simulation's held-ticks runs). So most followers
//!   of a busy region are never woken by ticks, and leaders once per heartbeat.
//! - The apply FSM's reports that moved nothing but the applied index (`operation/applied.rs`).
//!
//! The peer holds none while it waits for something a quiet message brings or must act on
//! every tick: reads waiting for an apply or a heartbeat round, a snapshot waiting for the
//! apply FSM, committed entries waiting for room in the apply mailbox, proposals of a peer
//! that lost its leadership (they are answered on ticks), or a peer on its way out. A leader
//! also wakes for its periodic log GC check. Hibernation's idle count is kept by the ticks
//! too, but only as a heuristic: it may ask the followers to rest a tick late. So is the
//! stale-peer check (`operation/stale_peer.rs`): a peer cut off from its leader may ask its
//! members up to `QUIET_MESSAGES_HELD_MAX` ticks late.

use crate::peer::{Life, Peer};

/// The most quiet messages a peer holds, whatever its Raft node says. A learner, or a peer
/// waiting for its snapshot, never acts on a tick: cut off from its leader, it would hold
/// ticks until its mailbox filled, refusing real messages behind them. At 100 ms ticks this
/// wakes such a peer every few seconds, and costs it a few KiB of queue.
const QUIET_MESSAGES_HELD_MAX: usize = 32;

impl Peer {
    /// How many quiet messages may wait before one wakes this peer (see the module docs).
    pub(crate) fn quiet_messages_held_max(&self) -> usize {
        if self.life != Life::Alive || self.wants_applied_reports() {
            return 0;
        }
        let leading = self.is_leader();
        if !self.proposals.is_empty() && !leading {
            return 0;
        }
        let mut held_max = self.raw.ticks_before_due().min(QUIET_MESSAGES_HELD_MAX);
        if leading {
            let gc_ticks_left = self.log_gc_check_ticks.saturating_sub(self.log_gc_elapsed_ticks + 1);
            held_max = held_max.min(gc_ticks_left);
        }
        held_max
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use tessera_proto::raftpb::ConfState;
    use tessera_proto::storepb::{Peer as PeerMeta, PeerRole, Region, RegionEpoch};

    use super::*;
    use crate::config::StoreConfig;
    use crate::engine::{Engine, EngineConfig};
    use crate::msg::{ApplyTask, Callback, Proposal};
    use crate::peer_storage::write_initial_region;

    /// Peer 1 of a region of three, as a store loads it: a voter, or a learner beside two
    /// voters.
    fn peer(dir: &std::path::Path, learner: bool) -> Peer {
        let engine = Arc::new(Engine::open(dir, &EngineConfig::default()).unwrap());
        let meta = |id, role: PeerRole| PeerMeta { id, store_id: id, role: role as i32 };
        let own_role = if learner { PeerRole::Learner } else { PeerRole::Voter };
        let region = Region {
            id: 1,
            epoch: Some(RegionEpoch { conf_ver: 1, version: 1 }),
            peers: vec![meta(1, own_role), meta(2, PeerRole::Voter), meta(3, PeerRole::Voter)],
            ..Default::default()
        };
        let conf_state = if learner {
            ConfState { voters: vec![2, 3], learners: vec![1], ..Default::default() }
        } else {
            ConfState { voters: vec![1, 2, 3], ..Default::default() }
        };
        let mut batch = engine.write_batch();
        write_initial_region(&mut batch, &region, &conf_state, 1);
        engine.write(batch, true).unwrap();
        Peer::new(&StoreConfig::new(1, dir), engine, region, meta(1, own_role)).unwrap()
    }

    #[test]
    fn a_follower_holds_the_ticks_its_node_would_not_act_on() {
        let dir = tempfile::tempdir().unwrap();
        let mut follower = peer(dir.path(), false);
        let due = follower.raw.ticks_before_due();
        assert!(due > 0, "a fresh follower has ticks before its election timeout");
        assert_eq!(follower.quiet_messages_held_max(), due.min(QUIET_MESSAGES_HELD_MAX));
        // Each tick brings the election closer; the last one before it is held no more.
        for _ in 0..due {
            follower.raw.tick();
        }
        assert_eq!(follower.quiet_messages_held_max(), 0, "the next tick starts an election");
    }

    #[test]
    fn a_learner_never_acts_on_a_tick_but_holds_no_more_than_the_cap() {
        let dir = tempfile::tempdir().unwrap();
        let learner = peer(dir.path(), true);
        assert_eq!(learner.raw.ticks_before_due(), usize::MAX);
        assert_eq!(learner.quiet_messages_held_max(), QUIET_MESSAGES_HELD_MAX);
    }

    #[test]
    fn a_peer_that_waits_for_news_holds_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let mut follower = peer(dir.path(), false);
        assert!(follower.quiet_messages_held_max() > 0);
        // Committed entries waiting for room in the apply mailbox wait for an apply report.
        let task = ApplyTask { entries: Vec::new(), proposals: Vec::new(), responses: Vec::new() };
        follower.apply_backlog.push_back(task);
        assert_eq!(follower.quiet_messages_held_max(), 0);
        follower.apply_backlog.clear();
        // A peer that lost its leadership answers its replaced proposals on ticks.
        let proposal = Proposal {
            index: 6,
            term: 5,
            callback: Callback::new(|_| {}),
            proposed_at: std::time::Instant::now(),
        };
        follower.proposals.push_back(proposal);
        assert_eq!(follower.quiet_messages_held_max(), 0);
        follower.proposals.clear();
        // A peer on its way out waits for its apply FSM.
        follower.life = Life::Destroying;
        assert_eq!(follower.quiet_messages_held_max(), 0);
    }
}
