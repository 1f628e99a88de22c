//! Membership changes, once applied: the Raft node switches configuration, the peer and
//! the store learn the new region, and a peer that was removed destroys itself.

use tessera_proto::raftpb::{ConfChangeV2, ConfState};
use tessera_proto::storepb::Region;

use super::PollContext;
use crate::peer::Peer;

impl Peer {
    pub(crate) fn on_conf_change_applied(
        &mut self,
        ctx: &mut PollContext<'_>,
        cc: &ConfChangeV2,
        region: Region,
        conf_state: ConfState,
        removed_self: bool,
    ) {
        let applied = match self.raw.apply_conf_change(cc) {
            Ok(applied) => applied,
            Err(e) => panic!(
                "invariant: region {} applies the membership change its apply thread applied: {e}",
                self.region_id
            ),
        };
        assert_eq!(
            applied, conf_state,
            "invariant: region {}: the core and the apply thread agree on the configuration",
            self.region_id
        );
        let before = std::mem::replace(&mut self.region, region.clone());
        self.note_removed_peers(ctx, &before, &region);
        self.refresh_peer_cache();
        self.raw.store_mut().set_region(region.clone(), conf_state);
        if removed_self {
            self.start_destroy(ctx);
            return;
        }
        ctx.store.meta().set_region(region);
        metrics::counter!("tessera_store_conf_changes_applied_total").increment(1);
    }
}
