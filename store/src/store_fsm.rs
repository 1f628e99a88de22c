//! The store's control FSM: store-level work. It decides whether a message for a region
//! this store does not host should create a peer, and it keeps track of which other stores
//! are alive (store heartbeats, one message per store pair every few ticks), so that
//! resting regions whose leader's store went down wake up to elect another.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::{Arc, PoisonError};

use tessera_proto::raftpb::ConfState;
use tessera_proto::serverpb::{ExtraMessage, ExtraMessageType, RaftMessage};
use tessera_proto::storepb::{ApplyState, PeerState, Region, RegionLocalState};

use crate::apply::ApplyFsm;
use crate::context::{StoreContext, StoreStats};
use crate::fsm::PeerFsm;
use crate::keys::{self, CF_META};
use crate::msg::PeerMsg;
use crate::operation::{carries_range, may_create_peer};
use crate::peer::Peer;

#[derive(Debug, Default)]
pub(crate) struct StoreFsmState {
    /// Messages for unknown regions that were dropped (stale, not from a leader or
    /// candidate, or for a tombstone).
    pub messages_dropped: u64,
    ticks: u64,
    /// The other stores that host peers of our regions, refreshed with the gauges.
    peer_stores: BTreeSet<u64>,
    /// The tick each of those stores was last heard from (or first known).
    last_heard_tick: HashMap<u64, u64>,
    /// Stores taken as down; each is reported to the peers once, until heard from again.
    stores_down: HashSet<u64>,
    /// The regions the sweep of resting peers has yet to visit in this period, and how many
    /// it visits per tick.
    sweep_pending: Vec<u64>,
    sweep_per_tick: usize,
    /// The engine's WAL sync count as last added to `tessera_store_wal_syncs_total`.
    wal_syncs_reported: u64,
}

/// Store-level gauges are refreshed every this many ticks.
const GAUGE_REFRESH_TICKS: u64 = 10;

/// The message that tells `to_store_id` that `from_store_id` is alive: region 0, which no
/// region has, so the receiving store's control FSM gets it.
fn store_heartbeat(from_store_id: u64, to_store_id: u64) -> RaftMessage {
    RaftMessage {
        region_id: 0,
        from_peer: Some(tessera_proto::storepb::Peer { store_id: from_store_id, ..Default::default() }),
        to_peer: Some(tessera_proto::storepb::Peer { store_id: to_store_id, ..Default::default() }),
        extra: Some(ExtraMessage {
            extra_type: ExtraMessageType::StoreHeartbeat as i32,
            ..Default::default()
        }),
        ..Default::default()
    }
}

impl StoreFsmState {
    /// Periodic store-level work: the gauges that no single event updates.
    pub fn on_tick(&mut self, ctx: &Arc<StoreContext>) {
        self.ticks += 1;
        if self.ticks % GAUGE_REFRESH_TICKS == 1 {
            // RocksDB counts its own log syncs; the counter follows it by increments, so
            // that the stores of one process add up.
            let wal_syncs = ctx.engine.wal_syncs();
            metrics::counter!("tessera_store_wal_syncs_total")
                .increment(wal_syncs.saturating_sub(self.wal_syncs_reported));
            self.wal_syncs_reported = wal_syncs;
            let (regions, initialized) = {
                let meta = ctx.meta();
                self.peer_stores = meta
                    .regions
                    .values()
                    .flat_map(|region| region.peers.iter().map(|peer| peer.store_id))
                    .filter(|store_id| *store_id != ctx.store_id)
                    .collect();
                (meta.regions.len(), meta.ranges.len())
            };
            metrics::gauge!("tessera_store_regions").set(regions as f64);
            metrics::gauge!("tessera_store_regions_initialized").set(initialized as f64);
        }
        if ctx.config.hibernate_regions {
            self.watch_stores(ctx);
            self.sweep_resting_peers(ctx);
        }
        // The heartbeats the regions' ticks produced leave together, one batch per store.
        ctx.transport.flush_heartbeats();
    }

    /// Sends this store's heartbeat to every store it shares regions with, and reports the
    /// stores that stopped sending theirs to the peers (only resting peers led from there
    /// act on it).
    fn watch_stores(&mut self, ctx: &Arc<StoreContext>) {
        if self.ticks.is_multiple_of(ctx.config.store_heartbeat_ticks as u64) {
            for store_id in &self.peer_stores {
                let _ = ctx.transport.send(store_heartbeat(ctx.store_id, *store_id));
            }
        }
        let ticks = self.ticks;
        self.last_heard_tick.retain(|store_id, _| self.peer_stores.contains(store_id));
        for store_id in &self.peer_stores {
            let last_heard = *self.last_heard_tick.entry(*store_id).or_insert(ticks);
            if ticks - last_heard >= ctx.config.store_down_ticks as u64 && self.stores_down.insert(*store_id)
            {
                StoreStats::add(&ctx.stats.stores_found_down, 1);
                metrics::counter!("tessera_store_peer_stores_down_total").increment(1);
                let store_id = *store_id;
                ctx.raft_router.broadcast_normal(|| PeerMsg::StoreDown(store_id));
            }
        }
    }

    /// Has every resting peer check its membership once per `resting_peer_check_ticks`
    /// (`Peer::maybe_check_membership_at_rest`); awake peers check on their own ticks. The regions
    /// are listed when a period starts and visited a slice per tick, so that the questions
    /// spread over the period; a region created meanwhile waits for the next one.
    fn sweep_resting_peers(&mut self, ctx: &Arc<StoreContext>) {
        let period = ctx.config.resting_peer_check_ticks as u64;
        if self.sweep_pending.is_empty() && self.ticks.is_multiple_of(period) {
            self.sweep_pending = ctx.meta().regions.keys().copied().collect();
            self.sweep_per_tick = self.sweep_pending.len().div_ceil(period as usize);
        }
        if self.sweep_pending.is_empty() {
            return;
        }
        let slice =
            self.sweep_pending.split_off(self.sweep_pending.len().saturating_sub(self.sweep_per_tick));
        let resting: Vec<u64> = {
            let ticking = ctx.ticking.lock().unwrap_or_else(PoisonError::into_inner);
            slice.into_iter().filter(|region_id| !ticking.contains(region_id)).collect()
        };
        for region_id in resting {
            // A full mailbox drops the question (counted); the next period asks again.
            if ctx.raft_router.send(region_id, PeerMsg::CheckMembershipAtRest).is_err() {
                metrics::counter!("tessera_store_resting_membership_checks_dropped_total").increment(1);
            }
        }
    }

    /// Another store's heartbeat: it is alive.
    fn on_store_heartbeat(&mut self, from_store_id: u64) {
        self.last_heard_tick.insert(from_store_id, self.ticks);
        self.stores_down.remove(&from_store_id);
    }

    pub fn on_unknown_region_message(&mut self, ctx: &Arc<StoreContext>, msg: Box<RaftMessage>) {
        let is_store_heartbeat =
            msg.extra.as_ref().is_some_and(|e| e.extra_type() == ExtraMessageType::StoreHeartbeat);
        if is_store_heartbeat {
            let to_store = msg.to_peer.as_ref().map_or(0, |p| p.store_id);
            match msg.from_peer.as_ref().map(|p| p.store_id) {
                Some(from_store) if msg.region_id == 0 && to_store == ctx.store_id && from_store != 0 => {
                    self.on_store_heartbeat(from_store)
                }
                _ => metrics::counter!("tessera_store_messages_malformed_total").increment(1),
            }
            return;
        }
        if !self.maybe_create_peer(ctx, &msg) {
            crate::operation::discard_snapshot_file(ctx, &msg);
            self.messages_dropped += 1;
            metrics::counter!("tessera_store_unknown_region_messages_dropped_total").increment(1);
            return;
        }
        // Delivered through the mailbox, after the registration: the peer steps it first.
        let region_id = msg.region_id;
        if let Err(e) = ctx.raft_router.send(region_id, PeerMsg::Raft(msg)) {
            if let PeerMsg::Raft(msg) = e.into_message() {
                crate::operation::discard_snapshot_file(ctx, &msg);
            }
        }
    }

    /// Creates an uninitialized peer for `msg` if every check passes. Returns whether the
    /// region now has a mailbox.
    fn maybe_create_peer(&mut self, ctx: &Arc<StoreContext>, msg: &RaftMessage) -> bool {
        let region_id = msg.region_id;
        let Some(to_peer) = msg.to_peer else { return false };
        if to_peer.store_id != ctx.store_id || to_peer.id == 0 || region_id == 0 || msg.is_tombstone {
            return false;
        }
        if ctx.meta().regions.contains_key(&region_id) {
            // Created meanwhile (or being destroyed): its mailbox decides.
            return true;
        }
        let Some(message) = msg.message.as_ref() else { return false };
        let from_id = msg.from_peer.as_ref().map_or(0, |p| p.id);
        if !may_create_peer(message.msg_type())
            || message.to != to_peer.id
            || message.from != from_id
            || from_id == 0
        {
            return false;
        }
        let record: Option<RegionLocalState> =
            match ctx.engine.get_msg(CF_META, &keys::region_state_key(region_id)) {
                Ok(record) => record,
                Err(_) => return false,
            };
        if let Some(record) = &record {
            if record.state == PeerState::Tombstone as i32 {
                let removed = record.region.as_ref().and_then(|r| r.epoch).unwrap_or_default();
                let theirs = msg.region_epoch.unwrap_or_default();
                let removed_peer_id = record.peer_id;
                // A message from the membership that removed us, or from before it, or to
                // the removed peer itself: never bring it back (LESSONS.md #21).
                if theirs.conf_ver <= removed.conf_ver || to_peer.id <= removed_peer_id {
                    return false;
                }
            } else {
                // A live record without a peer: only possible while the store loads.
                return false;
            }
        }
        // A region's range can only be claimed by one peer on a store. A message from a
        // region that overlaps one we host is from a membership one of the two has left
        // (LESSONS.md #17). Its appends, snapshots and vote requests create no peer here.
        // A heartbeat carries no range and still creates one, which owns no keys: the
        // guard of the data is the same check on the snapshot that would give it some
        // (`Peer::accepts_snapshot`).
        if carries_range(message.msg_type()) {
            let claimed = Region {
                id: region_id,
                start_key: msg.start_key.clone(),
                end_key: msg.end_key.clone(),
                ..Default::default()
            };
            let overlapping = ctx.meta().overlapping(&claimed, region_id);
            if let Some(hosted) = overlapping.first() {
                StoreStats::add(&ctx.stats.peer_creations_refused_overlap, 1);
                metrics::counter!("tessera_store_peer_creations_refused_overlap_total").increment(1);
                // Debug: a leader retries every heartbeat while the overlap lasts, and the
                // counter tells an operator it does.
                tracing::debug!(
                    store_id = ctx.store_id,
                    region_id,
                    hosted_region_id = *hosted,
                    "no peer created: the message's range overlaps a hosted region"
                );
                return false;
            }
        }
        let region = Region { id: region_id, ..Default::default() };
        let peer = match Peer::new(&ctx.config, Arc::clone(&ctx.engine), region.clone(), to_peer) {
            Ok(peer) => peer,
            Err(_) => return false,
        };
        let apply = ApplyFsm::new(to_peer.id, region.clone(), ConfState::default(), ApplyState::default(), 0);
        if ctx.apply_router.register(region_id, Box::new(apply)).is_err() {
            return false;
        }
        if ctx.raft_router.register(region_id, Box::new(PeerFsm { peer })).is_err() {
            ctx.apply_router.close(region_id);
            return false;
        }
        ctx.set_ticking(region_id, true);
        ctx.meta().set_uninitialized(region);
        StoreStats::add(&ctx.stats.peers_created, 1);
        metrics::counter!("tessera_store_peers_created_total").increment(1);
        tracing::info!(
            store_id = ctx.store_id,
            region_id,
            peer_id = to_peer.id,
            from_peer_id = from_id,
            "peer created from a message of its region"
        );
        metrics::gauge!("tessera_store_regions").set(ctx.raft_router.len() as f64);
        true
    }
}
