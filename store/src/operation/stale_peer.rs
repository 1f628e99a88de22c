//! Peers removed while they were cut off (LESSONS.md #21).
//!
//! Two ways, one from each side. The leader that applies a removal tells the removed peer
//! with a tombstone, every election timeout, `removed_peer_tombstones` times
//! (`RemovedPeers`): a message reaches a peer even while it rests in hibernation, and most
//! cut-offs are short. The region does not rest meanwhile. And the removed peer asks,
//! awake or resting, as below.
//!
//! A removed peer learns of its removal from the conf change it applies, or, if it missed
//! that entry, from a member that hears from it: a member whose membership is newer than the
//! sender's and leaves the sender out answers any message with a tombstone
//! (`operation/message.rs`). A removed voter is heard from when it campaigns. A removed
//! learner never campaigns and the leader no longer writes to it, so nothing would ever be
//! said: hence this check. A peer that has heard from no leader for
//! `stale_peer_check_ticks` asks the other members of the region it knows, and asks again
//! every as many ticks while it still hears from none. A resting leader that a member asks
//! wakes (`operation/hibernate.rs`): the member heard from no leader because the region
//! rests, and a learner or a peer still waiting for its snapshot would wait on. A resting
//! follower passes a member's question on to its leader (waking itself would only start an
//! election): an uninitialized peer asks only the peers that wrote to it, and the one that
//! led then may have handed leadership over while it was cut off.
//!
//! A resting peer takes no ticks, so it never runs that check: one that stayed cut off
//! longer than the leader kept telling it, or past a change of leader (the list is the
//! leader's memory, not persisted), would rest forever. So the store sweeps its resting
//! peers, a slice per tick, and each asks once every `resting_peer_check_ticks` (3,000 by
//! default, five minutes at 100 ms ticks) with a question that wakes no member
//! (`maybe_check_membership_at_rest`). That costs each resting region about six small
//! messages per period (three replicas asking two members each).
//!
//! What none covers: a peer whose known members have all left their stores (it needs
//! removal records kept with the region until the removed peer confirms, or the placement
//! driver). Held ticks (`operation/quiet.rs`) may delay a check by up to
//! `QUIET_MESSAGES_HELD_MAX` ticks. A peer that never initialized (created by its leader's
//! first message, its snapshot not yet in) knows no membership, so it asks the peers that
//! wrote to it instead; if all of those are gone from their stores, nobody answers and it
//! asks on, every `stale_peer_check_ticks`. Nor does the check cover a peer created by a
//! heartbeat of a region whose range overlaps one the store hosts (`store_fsm.rs`) while it
//! is still a member: it never initializes, since its snapshots are refused.

use tessera_proto::serverpb::ExtraMessageType;
use tessera_proto::storepb::{Peer as PeerMeta, Region};

use super::PollContext;
use crate::peer::{Life, Peer};

/// The most removed peers a leader keeps telling; older ones are forgotten first.
const REMOVED_PEERS_MAX: usize = 16;

/// The peers a leader still tells of their removal, with how many tombstones each has left.
/// Only a leader keeps them: the list is its memory, handed to nobody.
#[derive(Debug, Default)]
pub(crate) struct RemovedPeers {
    peers: Vec<(PeerMeta, usize)>,
    elapsed_ticks: usize,
}

impl RemovedPeers {
    /// Records, `tombstones` times over, the peers `before` names and `after` does not,
    /// other than this one; forgets any that `after` names (an id back in the region).
    pub(crate) fn note_removals(&mut self, before: &Region, after: &Region, self_id: u64, tombstones: usize) {
        let in_after = |id: u64| after.peers.iter().any(|p| p.id == id);
        self.peers.retain(|(p, _)| !in_after(p.id));
        if tombstones == 0 {
            return;
        }
        for peer in &before.peers {
            if peer.id != self_id && !in_after(peer.id) {
                self.peers.retain(|(p, _)| p.id != peer.id);
                self.peers.push((*peer, tombstones));
            }
        }
        if self.peers.len() > REMOVED_PEERS_MAX {
            let excess = self.peers.len() - REMOVED_PEERS_MAX;
            self.peers.drain(..excess);
            metrics::counter!("tessera_store_removed_peers_forgotten_total").increment(excess as u64);
        }
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.peers.is_empty()
    }

    /// Forgets every peer: this replica no longer leads.
    fn clear(&mut self) {
        self.peers.clear();
        self.elapsed_ticks = 0;
    }

    /// Counts a tick; every `interval_ticks`, returns the peers to tell now and counts one
    /// tombstone off each.
    fn due(&mut self, interval_ticks: usize) -> Vec<PeerMeta> {
        if self.peers.is_empty() {
            return Vec::new();
        }
        self.elapsed_ticks += 1;
        if self.elapsed_ticks < interval_ticks {
            return Vec::new();
        }
        self.elapsed_ticks = 0;
        let due = self.peers.iter().map(|(peer, _)| *peer).collect();
        for (_, left) in &mut self.peers {
            *left -= 1;
        }
        self.peers.retain(|(_, left)| *left > 0);
        due
    }
}

/// Whether a peer that has heard from no leader for `leader_missing_ticks` ticks asks its
/// members now: once the threshold is reached, and every `check_ticks` after it.
pub(crate) fn membership_check_due(leader_missing_ticks: usize, check_ticks: usize) -> bool {
    leader_missing_ticks >= check_ticks && leader_missing_ticks.is_multiple_of(check_ticks)
}

impl Peer {
    /// Called on every tick: a leader tells the peers its region removed, every election
    /// timeout, until each has had its tombstones. Returns whether it told any now.
    pub(crate) fn maybe_tell_removed_peers(&mut self, ctx: &mut PollContext<'_>) -> bool {
        if !self.is_leader() {
            self.removed_peers.clear();
            return false;
        }
        let due = self.removed_peers.due(ctx.store.config.raft_election_ticks);
        let mut told = false;
        for peer in due {
            // Defensive: an id back in the region is a member again.
            if self.region.peers.iter().any(|p| p.id == peer.id) {
                continue;
            }
            self.send_tombstone(ctx, peer);
            metrics::counter!("tessera_store_removed_peer_tombstones_sent_total").increment(1);
            told = true;
        }
        told
    }

    /// Called when a membership change applied: a leader records the peers it removed.
    pub(crate) fn note_removed_peers(&mut self, ctx: &PollContext<'_>, before: &Region, after: &Region) {
        if self.is_leader() {
            let tombstones = ctx.store.config.removed_peer_tombstones;
            self.removed_peers.note_removals(before, after, self.meta.id, tombstones);
        }
    }

    /// Called on every tick: asks the region's other members whether this peer is still
    /// one of them when no leader has been heard from for long. Returns whether it asked.
    /// An uninitialized peer knows no members: it asks the peers that wrote to it (its peer
    /// cache), each of which listed it when it wrote. One that no longer lists it answers
    /// with a tombstone, which the peer obeys if it comes from a membership at least as new
    /// as any that wrote to it (`Peer::conf_ver_heard`); a peer that still lists it says
    /// nothing.
    pub(crate) fn maybe_check_membership(&mut self, ctx: &mut PollContext<'_>) -> bool {
        if self.is_leader() {
            return false;
        }
        // The core counts ticks since it last heard from a leader (an append, a heartbeat or
        // a snapshot); a voter's count restarts when it campaigns, and its vote requests
        // reach the members anyway.
        let leader_missing_ticks = self.raw.raft().election_elapsed();
        if !membership_check_due(leader_missing_ticks, ctx.store.config.stale_peer_check_ticks) {
            return false;
        }
        metrics::counter!("tessera_store_membership_checks_total").increment(1);
        // Debug, not info: a store cut off from many regions asks for each of them, over
        // and over; the counter says how often.
        tracing::debug!(
            store_id = ctx.store.store_id,
            region_id = self.region_id,
            peer_id = self.meta.id,
            leader_missing_ticks,
            "no leader heard from for long: asking the members whether this peer is still one"
        );
        let members: Vec<u64> = if self.is_initialized() {
            self.other_members()
        } else {
            self.peer_cache.ids().filter(|id| *id != self.meta.id).collect()
        };
        for member in members {
            self.send_extra(ctx, member, ExtraMessageType::MembershipCheck, 0, 0);
        }
        true
    }

    /// The store's sweep reached this peer (`StoreFsmState::sweep_resting_peers`). A resting
    /// peer takes no ticks, so `maybe_check_membership` never runs for it: it asks the other
    /// members here instead, with a question that wakes none of them. One that leaves it out
    /// answers with a tombstone. Leaders ask too: a resting leader cut off while the others
    /// elected another and removed it still believes it leads. Returns whether it asked.
    pub(crate) fn maybe_check_membership_at_rest(&mut self, ctx: &mut PollContext<'_>) -> bool {
        if !self.hibernation.asleep || !self.is_initialized() || self.life != Life::Alive {
            return false;
        }
        metrics::counter!("tessera_store_resting_membership_checks_total").increment(1);
        for member in self.other_members() {
            self.send_extra(ctx, member, ExtraMessageType::RestingMembershipCheck, 0, 0);
        }
        true
    }

    /// The ids of the region's peers other than this one.
    fn other_members(&self) -> Vec<u64> {
        self.region.peers.iter().map(|p| p.id).filter(|id| *id != self.meta.id).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn region_of(ids: &[u64]) -> Region {
        Region {
            peers: ids.iter().map(|&id| PeerMeta { id, store_id: id, role: 0 }).collect(),
            ..Default::default()
        }
    }

    #[test]
    fn removed_peers_are_told_every_interval_a_bounded_number_of_times() {
        let mut removed = RemovedPeers::default();
        removed.note_removals(&region_of(&[1, 2, 3, 4]), &region_of(&[1, 2, 3]), 1, 10);
        // Our own removal is not ours to announce.
        removed.note_removals(&region_of(&[1, 2, 3]), &region_of(&[2, 3]), 1, 10);
        let mut told = Vec::new();
        for _ in 0..12 * 10 {
            told.push(removed.due(10).iter().map(|p| p.id).collect::<Vec<_>>());
        }
        let sends: Vec<_> = told.iter().enumerate().filter(|(_, ids)| !ids.is_empty()).collect();
        assert_eq!(sends.len(), 10);
        assert!(sends.iter().all(|(_, ids)| **ids == vec![4]));
        assert_eq!(sends[0].0, 9, "the first after one interval");
        assert_eq!(sends[1].0 - sends[0].0, 10);
        assert!(removed.is_empty());
    }

    #[test]
    fn a_peer_back_in_the_region_is_forgotten_and_none_is_kept_when_told_none() {
        let mut removed = RemovedPeers::default();
        removed.note_removals(&region_of(&[1, 2, 3, 4]), &region_of(&[1, 2, 3]), 1, 10);
        removed.note_removals(&region_of(&[1, 2, 3]), &region_of(&[1, 2, 3, 4]), 1, 10);
        assert!(removed.is_empty());
        removed.note_removals(&region_of(&[1, 2, 3, 4]), &region_of(&[1, 2, 3]), 1, 0);
        assert!(removed.is_empty());
    }

    #[test]
    fn a_leader_tells_at_most_the_newest_removed_peers() {
        let mut removed = RemovedPeers::default();
        let all: Vec<u64> = (1..=40).collect();
        removed.note_removals(&region_of(&all), &region_of(&[1]), 1, 10);
        assert_eq!(removed.peers.len(), REMOVED_PEERS_MAX);
        assert_eq!(removed.peers[0].0.id, 40 - REMOVED_PEERS_MAX as u64 + 1);
    }

    #[test]
    fn a_check_is_due_at_the_threshold_and_every_threshold_after() {
        let due: Vec<usize> = (0..=160).filter(|&ticks| membership_check_due(ticks, 50)).collect();
        assert_eq!(due, vec![50, 100, 150]);
    }
}
