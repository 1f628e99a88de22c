//! Peers removed while they were cut off (LESSONS.md #21).
//!
//! A removed peer learns of its removal from the conf change it applies, or, if it missed
//! that entry, from a member that hears from it: a member whose membership is newer than the
//! sender's and leaves the sender out answers any message with a tombstone
//! (`operation/message.rs`). A removed voter is heard from when it campaigns. A removed
//! learner never campaigns and the leader no longer writes to it, so nothing would ever be
//! said: hence this check. A peer that has heard from no leader for
//! `stale_peer_check_ticks` asks the other members of the region it knows, and asks again
//! every as many ticks while it still hears from none.
//!
//! What it does not cover: a peer whose known members have all left their stores (nobody
//! answers; the placement driver would have to), and a peer resting in hibernation, which
//! takes no ticks (it was asleep when cut off, so its region woke without it). Both would
//! need the leader that applies a removal to keep telling the removed peer until it
//! confirms. Held ticks (`operation/quiet.rs`) may delay a check by up to 32 ticks.

use tessera_proto::serverpb::{ExtraMessage, ExtraMessageType, RaftMessage};

use super::PollContext;
use crate::context::StoreStats;
use crate::peer::Peer;

/// Whether a peer that has heard from no leader for `leader_missing_ticks` ticks asks its
/// members now: once the threshold is reached, and every `check_ticks` after it.
pub(crate) fn membership_check_due(leader_missing_ticks: usize, check_ticks: usize) -> bool {
    leader_missing_ticks >= check_ticks && leader_missing_ticks.is_multiple_of(check_ticks)
}

impl Peer {
    /// Called on every tick: asks the region's other members whether this peer is still
    /// one of them when no leader has been heard from for long. Returns whether it asked.
    pub(crate) fn maybe_check_membership(&mut self, ctx: &mut PollContext<'_>) -> bool {
        if self.is_leader() || !self.is_initialized() {
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
        for member in self.region.peers.iter().filter(|p| p.id != self.meta.id) {
            let msg = RaftMessage {
                region_id: self.region_id,
                from_peer: Some(self.meta),
                to_peer: Some(*member),
                region_epoch: self.region.epoch,
                extra: Some(ExtraMessage {
                    extra_type: ExtraMessageType::MembershipCheck as i32,
                    ..Default::default()
                }),
                ..Default::default()
            };
            if ctx.store.transport.send(msg).is_ok() {
                StoreStats::add(&ctx.store.stats.messages_sent, 1);
            }
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_check_is_due_at_the_threshold_and_every_threshold_after() {
        let due: Vec<usize> = (0..=160).filter(|&ticks| membership_check_due(ticks, 50)).collect();
        assert_eq!(due, vec![50, 100, 150]);
    }
}
