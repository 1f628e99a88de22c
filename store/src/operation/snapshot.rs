//! Snapshots on the peer's side. Sending: the core asks its storage, the peer asks its apply
//! FSM to generate one at the applied index (off this thread), and a snapshot thread
//! streams it to the follower. Receiving: the data arrives through the transport into a
//! staging file, the core accepts the message, and the poller installs data and records in
//! one write (`ready.rs`); then the apply FSM and the store's range index follow.

use std::sync::Arc;
use std::thread;

use tessera_proto::raftpb::Snapshot;
use tessera_proto::serverpb::RaftMessage;
use tessera_raft::SnapshotStatus;

use super::PollContext;
use crate::context::StoreStats;
use crate::msg::{ApplyMsg, InstalledState, PeerMsg};
use crate::peer::{InstalledSnapshot, Peer};

impl Peer {
    pub(crate) fn request_snapshot_generation(&mut self, ctx: &mut PollContext<'_>) {
        if ctx.store.apply_router.force_send(self.region_id, ApplyMsg::GenerateSnapshot).is_err() {
            // Try again on the core's next request.
            self.raw.store_mut().on_snapshot_generated(Err("apply mailbox unavailable".into()));
        }
    }

    pub(crate) fn on_snapshot_generated(
        &mut self,
        ctx: &mut PollContext<'_>,
        result: Result<Snapshot, String>,
    ) {
        if let Some(stale) = self.raw.store_mut().on_snapshot_generated(result) {
            let _ = ctx.store.snapshots.remove_generated(&stale);
        }
    }

    /// Streams a snapshot to a follower on its own thread, within the store's limit of
    /// concurrent sends; the outcome comes back as `PeerMsg::SnapshotSent`.
    pub(crate) fn send_snapshot(&mut self, ctx: &mut PollContext<'_>, msg: RaftMessage) {
        let to_peer_id = msg.to_peer.as_ref().map_or(0, |p| p.id);
        let snapshot = super::message::snapshot_of(&msg).cloned().unwrap_or_default();
        let Some(guard) = ctx.store.snapshots.try_acquire_send() else {
            // At the limit: the follower stays in snapshot state until told, so tell it
            // failed at once; the leader asks for a new snapshot later.
            let _ = ctx.store.snapshots.remove_generated(&snapshot);
            self.raw.report_snapshot(to_peer_id, SnapshotStatus::Failure);
            return;
        };
        let snapshots = Arc::clone(&ctx.store.snapshots);
        let transport = Arc::clone(&ctx.store.transport);
        let router = ctx.store.raft_router.clone();
        let stats = Arc::clone(&ctx.store.stats);
        let region_id = self.region_id;
        let spawned = thread::Builder::new().name(format!("snap-send-{region_id}")).spawn(move || {
            let _guard = guard;
            let succeeded = match snapshots.open_chunks(&snapshot) {
                Ok(mut chunks) => transport.send_snapshot(msg, &mut chunks).is_ok(),
                Err(_) => false,
            };
            let _ = snapshots.remove_generated(&snapshot);
            if succeeded {
                StoreStats::add(&stats.snapshots_sent, 1);
            }
            // The peer may be gone meanwhile; nothing else to tell then.
            let _ = router.force_send(region_id, PeerMsg::SnapshotSent { to_peer_id, succeeded });
        });
        if spawned.is_err() {
            self.raw.report_snapshot(to_peer_id, SnapshotStatus::Failure);
        }
    }

    pub(crate) fn on_snapshot_sent(&mut self, to_peer_id: u64, succeeded: bool) {
        let status = if succeeded { SnapshotStatus::Finish } else { SnapshotStatus::Failure };
        self.raw.report_snapshot(to_peer_id, status);
    }

    /// After the write that installed a snapshot: the staging file goes, the apply FSM
    /// jumps to the snapshot's state, and the store indexes the region's range.
    pub(crate) fn on_snapshot_installed(&mut self, ctx: &mut PollContext<'_>, installed: InstalledSnapshot) {
        let _ = ctx.store.snapshots.remove_received(&installed.snapshot);
        self.region = installed.region.clone();
        self.refresh_peer_cache();
        ctx.store.meta().set_region(installed.region.clone());
        let apply_state = *self.raw.store().apply_state();
        let conf_state =
            installed.snapshot.metadata.as_ref().and_then(|m| m.conf_state.clone()).unwrap_or_default();
        let msg = ApplyMsg::SnapshotInstalled(Box::new(InstalledState {
            region: installed.region,
            apply_state,
            conf_state,
        }));
        if ctx.store.apply_router.force_send(self.region_id, msg).is_err() {
            ctx.store.stop_fatally(format!(
                "region {}: the apply FSM cannot learn of the snapshot installed at {}",
                self.region_id, installed.index
            ));
        }
        StoreStats::add(&ctx.store.stats.snapshots_applied, 1);
        let _ = installed.term;
    }
}
