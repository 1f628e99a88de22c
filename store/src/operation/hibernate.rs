//! Hibernation: a region with nothing to do stops ticking and stops its heartbeats, so that
//! thousands of idle regions cost a store nearly nothing (ARCHITECTURE.md, "Hibernation").
//!
//! How a region goes to rest. Its leader, once it has been quiet for
//! `hibernate_idle_ticks` (no proposals waiting, nothing to apply or persist, no snapshot,
//! transfer or joint configuration under way, everything committed and applied, and every
//! follower it hears from holding its whole log), asks its followers to rest at its
//! `(term, last index)`. A follower agrees only if it follows that leader in that term and
//! has the same log, committed and applied; it then rests at once. The leader rests when a
//! quorum of voters (itself included) agreed and every follower that is not agreeing is
//! one it no longer hears from: a dead store does not keep its regions awake.
//!
//! What wakes a resting peer: any Raft message from another peer, a client command, a
//! campaign or transfer request, and the news that the store of its leader is down (the
//! control FSM tracks store heartbeats, one per store pair and tick). A message to a
//! resting follower from its awake leader wakes it; a leader's proposal wakes its
//! followers through the appends it sends.
//!
//! The rules that keep Raft's guarantees across a rest:
//! - Leader lease: ticks stop while a peer rests, but time does not, so a lease counted in
//!   ticks would outlive its meaning. Going to rest and waking both expire the lease, and
//!   heartbeat rounds started before the rest cannot renew it
//!   (`RawNode::expire_lease`); a woken leader answers lease reads only after a round that
//!   a quorum acknowledged after it woke.
//! - Check-quorum: a resting leader does not count ticks, so it neither steps down nor
//!   accumulates silence while resting; on waking it counts from where it stopped and steps
//!   down an election timeout later if no quorum answers. Nothing it does meanwhile can
//!   commit without that quorum.
//! - Vote lease: a resting follower's election clock stops too, so after waking it keeps
//!   refusing votes until it has ticked a full election timeout without its leader. That
//!   only delays a new election (never speeds one up), which is the safe direction.

use std::collections::BTreeSet;

use tessera_proto::serverpb::{ExtraMessage, ExtraMessageType};
use tessera_proto::storepb::Peer as PeerMeta;
use tessera_raft::quorum::VoteResult;

use super::PollContext;
use crate::context::StoreStats;
use crate::peer::{Life, Peer};

/// A peer's rest, and its leader's request for one.
#[derive(Debug, Default)]
pub(crate) struct Hibernation {
    pub asleep: bool,
    /// Leader: consecutive ticks with nothing to do.
    idle_ticks: usize,
    /// Leader: the `(term, last index)` it asked its followers to rest at, and those that
    /// agreed.
    asked: Option<(u64, u64)>,
    agreed: BTreeSet<u64>,
}

impl Peer {
    /// Whether this peer leads a region with nothing to do. Returns its last index then.
    /// (A pending Ready does not count: with everything committed and applied it holds only
    /// messages, such as the heartbeats of the tick that asks.)
    fn quiet_leader_index(&self) -> Option<u64> {
        let raft = self.raw.raft();
        let log = raft.raft_log();
        let last = log.last_index();
        let quiet = self.life == Life::Alive
            && self.is_leader()
            && self.proposals.is_empty()
            && self.reads.is_empty()
            && self.apply_backlog.is_empty()
            && self.apply_tasks_in_flight == 0
            && self.deferred_snapshot.is_none()
            && raft.lead_transferee() == 0
            && self.removed_peers.is_empty()
            && !raft.tracker().config.voters.is_joint()
            && log.committed == last
            && log.applied == last;
        if !quiet {
            return None;
        }
        // Every follower we hear from has the whole log; one we do not hear from (its store
        // is down or cut off) does not hold the region awake.
        let caught_up = raft
            .tracker()
            .progress
            .iter()
            .all(|(id, pr)| *id == self.meta.id || pr.matched == last || !pr.recent_active);
        caught_up.then_some(last)
    }

    /// The hibernation part of a tick: a quiet leader asks its followers to rest, again every
    /// heartbeat interval until they agree; any activity starts the count over.
    pub(crate) fn hibernation_tick(&mut self, ctx: &mut PollContext<'_>) {
        if !ctx.store.config.hibernate_regions {
            return;
        }
        let Some(last) = self.quiet_leader_index() else {
            self.hibernation.idle_ticks = 0;
            self.hibernation.asked = None;
            self.hibernation.agreed.clear();
            return;
        };
        self.hibernation.idle_ticks += 1;
        let idle_ticks_min = ctx.store.config.hibernate_idle_ticks;
        if self.hibernation.idle_ticks < idle_ticks_min {
            return;
        }
        let term = self.raw.raft().term();
        if self.hibernation.asked != Some((term, last)) {
            self.hibernation.asked = Some((term, last));
            self.hibernation.agreed.clear();
        }
        if !(self.hibernation.idle_ticks - idle_ticks_min)
            .is_multiple_of(ctx.store.config.raft_heartbeat_ticks)
        {
            return;
        }
        if self.raw.raft().tracker().progress.len() == 1 {
            // A region of one voter needs nobody's agreement.
            self.rest(ctx);
            return;
        }
        let followers: Vec<u64> =
            self.raw.raft().tracker().progress.keys().copied().filter(|id| *id != self.meta.id).collect();
        for to in followers {
            self.send_extra(ctx, to, ExtraMessageType::HibernateRequest, term, last);
        }
    }

    /// A hibernation message from another peer of the region.
    pub(crate) fn on_extra_message(
        &mut self,
        ctx: &mut PollContext<'_>,
        from: PeerMeta,
        extra: ExtraMessage,
    ) {
        match extra.extra_type() {
            ExtraMessageType::HibernateRequest => self.on_hibernate_request(ctx, from, extra),
            ExtraMessageType::HibernateAgree => self.on_hibernate_agree(ctx, from.id, extra),
            // From a member, or from a peer whose membership is not older than ours: nothing
            // to say. (A peer our newer membership leaves out got a tombstone before this.)
            // But a member asks because it heard from no leader for long, and a resting
            // leader says nothing: a learner, which never campaigns, or a peer still waiting
            // for its snapshot would wait until something else woke the region. So a
            // resting leader wakes and heartbeats again. A resting follower passes the
            // question on to its leader, as its own: a peer that never initialized asks
            // only the peers that wrote to it, and the one that led then may have handed
            // leadership over while it was cut off. (Waking the follower instead would only
            // start an election.)
            ExtraMessageType::MembershipCheck => {
                let from_member = self.region.peers.iter().any(|p| p.id == from.id);
                if !from_member || !self.hibernation.asleep {
                    return;
                }
                if self.is_leader() {
                    // Counted: a member whose leader's messages cannot reach it (a link that
                    // works one way) asks every `stale_peer_check_ticks`, and each question
                    // costs its region a wake and a rest.
                    metrics::counter!("tessera_store_regions_woken_by_membership_check_total").increment(1);
                    self.wake(ctx);
                } else if let Some(leader) = self.leader().filter(|l| l.id != from.id && l.id != self.meta.id)
                {
                    metrics::counter!("tessera_store_membership_checks_passed_to_leader_total").increment(1);
                    self.send_extra(ctx, leader.id, ExtraMessageType::MembershipCheck, 0, 0);
                }
            }
            // A resting peer's routine question: a member that leaves it out answered with a
            // tombstone before this; one that lists it has nothing to say, and rests on.
            ExtraMessageType::RestingMembershipCheck => {}
            ExtraMessageType::ExtraNone | ExtraMessageType::StoreHeartbeat => {
                metrics::counter!("tessera_store_messages_malformed_total").increment(1);
            }
        }
    }

    /// A follower agrees to rest if it has exactly the leader's log, all of it committed
    /// and applied, and nothing else to do.
    fn on_hibernate_request(&mut self, ctx: &mut PollContext<'_>, from: PeerMeta, extra: ExtraMessage) {
        if !ctx.store.config.hibernate_regions {
            return;
        }
        let raft = self.raw.raft();
        let log = raft.raft_log();
        let agrees = self.life == Life::Alive
            && !self.is_leader()
            && raft.leader_id() == from.id
            && raft.term() == extra.term
            && log.last_index() == extra.index
            && log.committed == extra.index
            && log.applied == extra.index
            && self.apply_backlog.is_empty()
            && self.apply_tasks_in_flight == 0
            && self.deferred_snapshot.is_none();
        if !agrees {
            return;
        }
        self.peer_cache.learn(from);
        self.send_extra(ctx, from.id, ExtraMessageType::HibernateAgree, extra.term, extra.index);
        self.rest(ctx);
    }

    fn on_hibernate_agree(&mut self, ctx: &mut PollContext<'_>, from_id: u64, extra: ExtraMessage) {
        if self.hibernation.asleep || self.hibernation.asked != Some((extra.term, extra.index)) {
            return;
        }
        // The request may be stale by now: rest only if the region is still as quiet.
        if self.quiet_leader_index() != Some(extra.index) || self.raw.raft().term() != extra.term {
            return;
        }
        self.hibernation.agreed.insert(from_id);
        let raft = self.raw.raft();
        let agreed = &self.hibernation.agreed;
        let me = self.meta.id;
        let quorum =
            raft.tracker().config.voters.vote_result(|id| (id == me || agreed.contains(&id)).then_some(true))
                == VoteResult::Won;
        let others_silent = raft
            .tracker()
            .progress
            .iter()
            .all(|(id, pr)| *id == me || agreed.contains(id) || !pr.recent_active);
        if quorum && others_silent {
            self.rest(ctx);
        }
    }

    /// Stops ticking: the store timer skips this region until it wakes.
    fn rest(&mut self, ctx: &mut PollContext<'_>) {
        self.set_asleep(ctx, true);
    }

    /// Ticks again. Called for anything that may need the region's clock.
    pub(crate) fn wake(&mut self, ctx: &mut PollContext<'_>) {
        self.hibernation.idle_ticks = 0;
        self.hibernation.asked = None;
        self.hibernation.agreed.clear();
        self.set_asleep(ctx, false);
    }

    /// Going to rest and waking are the same change both ways: the lease expires (see the
    /// module docs), the store timer skips or ticks the region, and the change is counted.
    fn set_asleep(&mut self, ctx: &mut PollContext<'_>, asleep: bool) {
        if self.hibernation.asleep == asleep {
            return;
        }
        self.hibernation.asleep = asleep;
        self.raw.expire_lease();
        // Ticks stop while resting; the clock counts again from the last tick.
        self.tick_clock.restart();
        ctx.store.set_ticking(self.region_id, !asleep);
        if asleep {
            StoreStats::add(&ctx.store.stats.hibernations, 1);
            metrics::counter!("tessera_store_region_hibernations_total").increment(1);
        } else {
            StoreStats::add(&ctx.store.stats.wakeups, 1);
            metrics::counter!("tessera_store_region_wakeups_total").increment(1);
        }
    }

    /// Whether a message to a resting peer needs its clock. The heartbeats of an awake
    /// leader to a resting follower that has its whole log, and the answers to them, do
    /// not: waking on those would undo every rest that a leader's last heartbeat crosses.
    pub(crate) fn message_wakes(&self, message: &tessera_proto::raftpb::Message) -> bool {
        use tessera_proto::raftpb::MessageType;
        let raft = self.raw.raft();
        let same_term = message.term == raft.term();
        match message.msg_type() {
            MessageType::MsgHeartbeat => {
                !(same_term
                    && message.from == raft.leader_id()
                    && message.commit <= raft.raft_log().committed)
            }
            MessageType::MsgHeartbeatResponse => !(same_term && self.is_leader()),
            _ => true,
        }
    }

    /// The store of `store_id` stopped answering: a resting follower whose leader lives
    /// there wakes, so that it can elect another leader. Others rest on.
    pub(crate) fn on_store_down(&mut self, ctx: &mut PollContext<'_>, store_id: u64) {
        if self.hibernation.asleep && self.leader().is_some_and(|leader| leader.store_id == store_id) {
            self.wake(ctx);
        }
    }
}
