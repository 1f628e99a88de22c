//! Log GC: the leader proposes a compaction when the applied part of the log passes a
//! count or size threshold, up to what every follower already has, unless a follower is so
//! far behind that it will get a snapshot anyway. Applying the compaction records the new
//! truncated point; the peer then deletes the entries with one range delete (LESSONS.md
//! #22) and trims its entry cache.

use tessera_proto::serverpb::{
    admin_request, AdminRequest, CompactLogRequest, RaftCmdRequest, RequestHeader,
};

use super::PollContext;
use crate::context::StoreStats;
use crate::peer::Peer;

impl Peer {
    /// Called every `log_gc_check_ticks` on the leader; returns whether it proposed.
    pub(crate) fn maybe_propose_log_gc(&mut self, ctx: &mut PollContext<'_>) -> bool {
        let config = &ctx.store.config;
        let storage = self.raw.store();
        let applied = storage.apply_state().applied_index;
        let truncated = storage.apply_state().truncated_index;
        let count = applied.saturating_sub(truncated);
        if count < config.log_gc_count_threshold
            && self.log_bytes_since_compaction < config.log_gc_bytes_threshold
        {
            return false;
        }
        // Called on the leader only, whose tracker holds every follower's progress (read in
        // place: `status()` would clone the map every check).
        let progress = &self.raw.raft().tracker().progress;
        // The lowest index every follower has; a follower further behind than
        // `log_gc_lag_max` is left to a snapshot rather than holding the whole log.
        let lag_floor = applied.saturating_sub(config.log_gc_lag_max);
        let needed = progress
            .iter()
            .filter(|(id, _)| **id != self.meta.id)
            .map(|(_, pr)| pr.matched)
            .filter(|matched| *matched >= lag_floor)
            .min()
            .unwrap_or(applied);
        let compact_index = applied.min(needed);
        // Keep the last entry: a log compacted to its end has nothing for a follower to
        // match against but the truncated term, which is fine, but leaving one entry
        // makes the next append's consistency check cheap.
        let compact_index = compact_index.saturating_sub(1);
        if compact_index <= truncated || compact_index <= self.log_gc_proposed_index {
            return false;
        }
        let Ok(compact_term) = self.raw.raft().raft_log().term(compact_index) else { return false };
        let request = RaftCmdRequest {
            header: Some(RequestHeader { region_id: self.region_id, region_epoch: self.region.epoch }),
            requests: Vec::new(),
            admin: Some(AdminRequest {
                cmd: Some(admin_request::Cmd::CompactLog(CompactLogRequest { compact_index, compact_term })),
            }),
        };
        if !self.propose_compact_log(request) {
            return false;
        }
        self.log_gc_proposed_index = compact_index;
        true
    }

    /// The compaction applied: delete the entries, in the round's batch.
    pub(crate) fn on_log_compaction_applied(&mut self, ctx: &mut PollContext<'_>, index: u64, _term: u64) {
        let storage = self.raw.store_mut();
        // The persisted log may end before `index` on a follower that is still appending;
        // it then compacts what it has, and the rest on the next compaction.
        let index = index.min(storage.apply_state().applied_index);
        match storage.truncate_log_to(ctx.batch, index) {
            Ok(true) => {
                self.round.wrote = true;
                self.log_bytes_since_compaction = 0;
                StoreStats::add(&ctx.store.stats.log_compactions, 1);
                metrics::counter!("tessera_store_log_compactions_total").increment(1);
            }
            Ok(false) => {}
            Err(e) => panic!("invariant: region {} compacts entries it has: {e}", self.region_id),
        }
    }
}
