//! The apply side: one apply FSM per region, run by apply pollers. A round applies the
//! committed entries of many regions into one write batch, with each region's apply state
//! in the same batch (ARCHITECTURE.md invariant 4), writes it without sync (the Raft log is
//! durable and replay is idempotent), then answers the proposers and tells each peer what
//! it applied.
//!
//! The pipeline per entry: decode, check (epoch, keys), stage into the batch, record side
//! effects (membership, log compaction) for the peer, and acknowledge after the write.

use std::sync::Arc;
use std::time::Instant;

use prost::Message as _;
use tessera_proto::raftpb::{ConfChangeType, ConfState, Entry, EntryType};
use tessera_proto::serverpb::{admin_request, ChangePeer, CmdType, RaftCmdRequest};
use tessera_proto::storepb::{ApplyState, PeerRole, PeerState, Region, RegionLocalState};

use crate::batch::{Fsm, HandleResult, Inbox, PollHandler};
use crate::context::{StoreContext, StoreStats};
use crate::engine::WriteBatch;
use crate::error::{StoreError, StoreResult};
use crate::keys::{self, CF_DEFAULT, CF_META};
use crate::msg::{
    AppliedConfChange, ApplyMsg, ApplyResult, ApplyTask, Callback, CmdResponse, ExecResult, InstalledState,
    PeerMsg,
};
use crate::operation::{check_epoch, check_requests};

/// One region's state machine on this store.
#[derive(Debug)]
pub(crate) struct ApplyFsm {
    region_id: u64,
    peer_id: u64,
    region: Region,
    conf_state: ConfState,
    apply_state: ApplyState,
    /// The term of the entry at the applied index, which a snapshot taken now carries.
    applied_term: u64,
    /// Set by `GenerateSnapshot`; the generation starts after the round's write.
    generate_snapshot: bool,
    /// Set by `Destroy`: the FSM stops after the round.
    stopped: bool,
}

impl Fsm for ApplyFsm {
    type Message = ApplyMsg;

    fn is_stopped(&self) -> bool {
        self.stopped
    }
}

impl ApplyFsm {
    pub fn new(
        peer_id: u64,
        region: Region,
        conf_state: ConfState,
        apply_state: ApplyState,
        applied_term: u64,
    ) -> Self {
        ApplyFsm {
            region_id: region.id,
            peer_id,
            region,
            conf_state,
            apply_state,
            applied_term,
            generate_snapshot: false,
            stopped: false,
        }
    }
}

/// The apply system has no store-level work; its control FSM only exists because the
/// batch system has one.
#[derive(Debug)]
pub(crate) struct ApplyControlFsm;

impl Fsm for ApplyControlFsm {
    type Message = ();
}

/// An acknowledgement to send after the round's write.
type Ack = (Callback, StoreResult<CmdResponse>);

pub(crate) struct ApplyPoller {
    ctx: Arc<StoreContext>,
    batch: WriteBatch,
    acks: Vec<Ack>,
    results: Vec<(u64, ApplyResult)>,
    entries_applied: u64,
}

impl ApplyPoller {
    pub fn new(ctx: Arc<StoreContext>) -> Self {
        let batch = ctx.engine.write_batch();
        ApplyPoller { ctx, batch, acks: Vec::new(), results: Vec::new(), entries_applied: 0 }
    }
}

impl PollHandler<ApplyFsm, ApplyControlFsm> for ApplyPoller {
    fn handle_control(&mut self, _: &mut ApplyControlFsm, inbox: &mut Inbox<'_, ()>) -> HandleResult {
        for () in inbox {}
        HandleResult::Release
    }

    fn handle_normal(&mut self, fsm: &mut ApplyFsm, inbox: &mut Inbox<'_, ApplyMsg>) -> HandleResult {
        for msg in inbox {
            if fsm.stopped {
                // After `Destroy`, only late tasks can arrive; their proposals are answered.
                if let ApplyMsg::Apply(task) = msg {
                    for p in task.proposals {
                        self.acks.push((p.callback, Err(StoreError::RegionNotFound(fsm.region_id))));
                    }
                }
                continue;
            }
            match msg {
                ApplyMsg::Apply(task) => {
                    let result =
                        fsm.apply_task(&mut self.batch, *task, &mut self.acks, &mut self.entries_applied);
                    self.results.push((fsm.region_id, result));
                }
                ApplyMsg::SnapshotInstalled(installed) => {
                    let InstalledState { region, apply_state, conf_state } = *installed;
                    fsm.applied_term = apply_state.truncated_term;
                    fsm.region = region;
                    fsm.apply_state = apply_state;
                    fsm.conf_state = conf_state;
                }
                ApplyMsg::GenerateSnapshot => fsm.generate_snapshot = true,
                ApplyMsg::Destroy => fsm.stopped = true,
            }
        }
        HandleResult::Release
    }

    fn end(&mut self, fsms: &mut [Box<ApplyFsm>], _results: &mut [HandleResult]) {
        let delay_us = self.ctx.apply_delay_us.load(std::sync::atomic::Ordering::Relaxed);
        if delay_us > 0 && !self.batch.is_empty() {
            std::thread::sleep(std::time::Duration::from_micros(delay_us));
        }
        if !self.batch.is_empty() {
            let started = Instant::now();
            let batch = std::mem::replace(&mut self.batch, self.ctx.engine.write_batch());
            if let Err(e) = self.ctx.engine.write(batch, false) {
                self.ctx.stop_fatally(format!("apply write failed: {e}"));
            }
            StoreStats::add(&self.ctx.stats.apply_writes, 1);
            metrics::histogram!("tessera_store_apply_write_duration_seconds").record(started.elapsed());
        }
        StoreStats::add(&self.ctx.stats.entries_applied, self.entries_applied);
        metrics::counter!("tessera_store_entries_applied_total").increment(self.entries_applied);
        self.entries_applied = 0;
        // Clients hear of success only now that the data is written (invariant 2).
        for (callback, result) in self.acks.drain(..) {
            callback.invoke(result);
        }
        for (region_id, result) in self.results.drain(..) {
            // A membership change or a compaction is acted on at once; a report of nothing
            // but the applied index may wait (`operation/applied.rs`).
            let wakes = !result.exec_results.is_empty();
            let report = PeerMsg::Applied(Box::new(result));
            // A peer that is gone has nobody to tell.
            let _ = if wakes {
                self.ctx.raft_router.force_send(region_id, report)
            } else {
                self.ctx.raft_router.force_send_quiet(region_id, report)
            };
        }
        for fsm in fsms.iter_mut() {
            if fsm.generate_snapshot && !fsm.stopped {
                fsm.generate_snapshot = false;
                self.start_generation(fsm);
            }
            if fsm.stopped {
                let _ = self.ctx.raft_router.force_send(fsm.region_id, PeerMsg::ApplyStopped);
            }
        }
    }
}

impl ApplyPoller {
    /// Starts a snapshot of the region as of now: `spawn_generate` returns once its
    /// consistent view is taken, and this thread writes nothing for the region until then.
    fn start_generation(&self, fsm: &ApplyFsm) {
        let router = self.ctx.raft_router.clone();
        let region_id = fsm.region_id;
        let on_done = Box::new(
            move |result: Result<tessera_proto::raftpb::Snapshot, crate::snapshot::SnapshotError>| {
                let result = result.map_err(|e| e.to_string());
                let _ = router.force_send(region_id, PeerMsg::SnapshotGenerated(Box::new(result)));
            },
        );
        let spawned = self.ctx.snapshots.spawn_generate(
            Arc::clone(&self.ctx.engine),
            fsm.region.clone(),
            fsm.apply_state.applied_index,
            fsm.applied_term,
            fsm.conf_state.clone(),
            on_done,
        );
        if let Err(e) = spawned {
            let _ = self
                .ctx
                .raft_router
                .force_send(region_id, PeerMsg::SnapshotGenerated(Box::new(Err(e.to_string()))));
        }
    }
}

impl ApplyFsm {
    fn apply_task(
        &mut self,
        batch: &mut WriteBatch,
        task: ApplyTask,
        acks: &mut Vec<Ack>,
        entries_applied: &mut u64,
    ) -> ApplyResult {
        let mut proposals = task.proposals.into_iter().peekable();
        let mut exec_results = Vec::new();
        for entry in &task.entries {
            let mut outcome = Ok(());
            if entry.index > self.apply_state.applied_index {
                outcome = self.apply_entry(batch, entry, &mut exec_results);
                self.apply_state.applied_index = entry.index;
                self.applied_term = entry.term;
                *entries_applied += 1;
            }
            // Proposals before this index lost their place to another leader's entries.
            while let Some(p) = proposals.next_if(|p| p.index < entry.index) {
                acks.push((p.callback, Err(StoreError::replaced(p.index, p.term))));
            }
            if let Some(p) = proposals.next_if(|p| p.index == entry.index) {
                metrics::histogram!("tessera_store_propose_to_apply_duration_seconds")
                    .record(p.proposed_at.elapsed());
                let result = if p.term == entry.term {
                    outcome.clone().map(|()| CmdResponse { index: entry.index, term: entry.term })
                } else {
                    Err(StoreError::replaced(p.index, p.term))
                };
                acks.push((p.callback, result));
            }
        }
        for p in proposals {
            acks.push((p.callback, Err(StoreError::replaced(p.index, p.term))));
        }
        batch.put_msg(CF_META, &keys::apply_state_key(self.region_id), &self.apply_state);
        ApplyResult { apply_state: self.apply_state, exec_results, responses: task.responses }
    }

    /// Applies one committed entry. The error, if any, is the command's answer; the entry
    /// counts as applied either way, on every replica alike.
    fn apply_entry(
        &mut self,
        batch: &mut WriteBatch,
        entry: &Entry,
        exec_results: &mut Vec<ExecResult>,
    ) -> StoreResult<()> {
        match entry.entry_type() {
            EntryType::EntryNormal => {
                if entry.data.is_empty() {
                    // A new leader's empty entry.
                    return Ok(());
                }
                let request = RaftCmdRequest::decode(entry.data.clone()).unwrap_or_else(|e| {
                    panic!("invariant: region {} entry {} holds a command: {e}", self.region_id, entry.index)
                });
                self.apply_command(batch, &request, exec_results)
            }
            EntryType::EntryConfChange | EntryType::EntryConfChangeV2 => {
                self.apply_conf_change(batch, entry, exec_results);
                Ok(())
            }
        }
    }

    fn apply_command(
        &mut self,
        batch: &mut WriteBatch,
        request: &RaftCmdRequest,
        exec_results: &mut Vec<ExecResult>,
    ) -> StoreResult<()> {
        if let Some(admin_request::Cmd::CompactLog(compact)) =
            request.admin.as_ref().and_then(|a| a.cmd.as_ref())
        {
            if compact.compact_index > self.apply_state.truncated_index
                && compact.compact_index <= self.apply_state.applied_index
            {
                self.apply_state.truncated_index = compact.compact_index;
                self.apply_state.truncated_term = compact.compact_term;
                exec_results.push(ExecResult::CompactLog {
                    index: compact.compact_index,
                    term: compact.compact_term,
                });
            }
            return Ok(());
        }
        // Checked again here: the region may have changed between proposal and apply.
        check_epoch(request, &self.region)?;
        check_requests(request, &self.region)?;
        for r in &request.requests {
            match CmdType::try_from(r.cmd_type).expect("checked by check_requests") {
                CmdType::Put => batch.put(CF_DEFAULT, &keys::data_key(&r.key), &r.value),
                CmdType::Delete => batch.delete(CF_DEFAULT, &keys::data_key(&r.key)),
                CmdType::DeleteRange => {
                    let end = if self.region.end_key.is_empty() || r.end_key < self.region.end_key {
                        r.end_key.as_slice()
                    } else {
                        self.region.end_key.as_slice()
                    };
                    let range = keys::data_range(&r.key, end);
                    batch.delete_range(CF_DEFAULT, &range.start, &range.end);
                }
            }
        }
        Ok(())
    }

    fn apply_conf_change(
        &mut self,
        batch: &mut WriteBatch,
        entry: &Entry,
        exec_results: &mut Vec<ExecResult>,
    ) {
        let cc = tessera_raft::conf_change_of(entry).ok().flatten().unwrap_or_else(|| {
            panic!("invariant: region {} entry {} holds a conf change", self.region_id, entry.index)
        });
        let conf_state =
            tessera_raft::confchange::next_conf_state(&self.conf_state, &cc).unwrap_or_else(|e| {
                panic!("invariant: region {} conf change at {} applies: {e}", self.region_id, entry.index)
            });
        let named_peers = if entry.context.is_empty() {
            Vec::new()
        } else {
            match RaftCmdRequest::decode(entry.context.as_slice())
                .unwrap_or_default()
                .admin
                .and_then(|a| a.cmd)
            {
                Some(admin_request::Cmd::ChangePeer(change)) => change.changes,
                _ => Vec::new(),
            }
        };
        let region = region_after_conf_change(&self.region, &named_peers, &conf_state);
        let removed_self = !conf_state_names(&conf_state, self.peer_id);
        let record = RegionLocalState {
            region: Some(region.clone()),
            state: PeerState::Normal as i32,
            conf_state: Some(conf_state.clone()),
            peer_id: self.peer_id,
        };
        batch.put_msg(CF_META, &keys::region_state_key(self.region_id), &record);
        self.region = region.clone();
        self.conf_state = conf_state.clone();
        exec_results.push(ExecResult::ConfChange(Box::new(AppliedConfChange {
            cc,
            region,
            conf_state,
            removed_self,
        })));
    }
}

/// Whether `conf_state` counts peer `id` in any role, outgoing voters of a joint
/// configuration included.
fn conf_state_names(conf_state: &ConfState, id: u64) -> bool {
    conf_state.voters.contains(&id)
        || conf_state.learners.contains(&id)
        || conf_state.voters_outgoing.contains(&id)
        || conf_state.learners_next.contains(&id)
}

/// The region's peers once a conf change applied: the peers it names join (or change role)
/// with the addresses it gives, and membership and roles then follow `conf_state`, the
/// configuration in force. A removed voter stays while a joint configuration still counts
/// it as outgoing: dropped earlier, its own store's messages would be answered with a
/// tombstone and destroy it while the outgoing half's quorum may need it. It goes with the
/// leave-joint entry.
pub(crate) fn region_after_conf_change(
    region: &Region,
    named: &[ChangePeer],
    conf_state: &ConfState,
) -> Region {
    let mut region = region.clone();
    for change in named {
        let Some(peer) = change.peer else { continue };
        if change.change_type == ConfChangeType::RemoveNode as i32 {
            continue;
        }
        region.peers.retain(|p| p.id != peer.id);
        region.peers.push(peer);
    }
    region.peers.retain(|p| conf_state_names(conf_state, p.id));
    for peer in &mut region.peers {
        peer.role =
            if conf_state.learners.contains(&peer.id) { PeerRole::Learner } else { PeerRole::Voter } as i32;
    }
    region.peers.sort_by_key(|p| p.id);
    let mut epoch = region.epoch.unwrap_or_default();
    epoch.conf_ver += 1;
    region.epoch = Some(epoch);
    region
}

#[cfg(test)]
mod tests {
    use tessera_proto::storepb::{Peer, RegionEpoch};

    use super::*;

    fn voter(id: u64) -> Peer {
        Peer { id, store_id: id, role: PeerRole::Voter as i32 }
    }

    fn change(change_type: ConfChangeType, peer: Peer) -> ChangePeer {
        ChangePeer { change_type: change_type as i32, peer: Some(peer) }
    }

    fn ids(region: &Region) -> Vec<u64> {
        region.peers.iter().map(|p| p.id).collect()
    }

    /// Replacing voter 3 by voter 4 in one request goes through a joint configuration:
    /// voter 3 stays in the region (outgoing, still counted) until the leave-joint entry.
    #[test]
    fn a_voter_removed_in_a_joint_change_stays_until_the_joint_configuration_is_left() {
        let region = Region {
            id: 1,
            peers: vec![voter(1), voter(2), voter(3)],
            epoch: Some(RegionEpoch { conf_ver: 1, version: 1 }),
            ..Default::default()
        };
        let named = [change(ConfChangeType::AddNode, voter(4)), change(ConfChangeType::RemoveNode, voter(3))];
        let joint = ConfState { voters: vec![1, 2, 4], voters_outgoing: vec![1, 2, 3], ..Default::default() };
        let entered = region_after_conf_change(&region, &named, &joint);
        assert_eq!(ids(&entered), vec![1, 2, 3, 4]);
        assert_eq!(entered.epoch.unwrap().conf_ver, 2);

        let left = ConfState { voters: vec![1, 2, 4], ..Default::default() };
        let after = region_after_conf_change(&entered, &[], &left);
        assert_eq!(ids(&after), vec![1, 2, 4]);
        assert_eq!(after.epoch.unwrap().conf_ver, 3);
    }

    /// A simple removal and a learner's addition: the peers and roles follow the new
    /// configuration, with the addresses the request gives.
    #[test]
    fn simple_changes_follow_the_configuration() {
        let region = Region { id: 1, peers: vec![voter(1), voter(2), voter(3)], ..Default::default() };
        let removed = region_after_conf_change(
            &region,
            &[change(ConfChangeType::RemoveNode, voter(3))],
            &ConfState { voters: vec![1, 2], ..Default::default() },
        );
        assert_eq!(ids(&removed), vec![1, 2]);
        let learner = Peer { id: 5, store_id: 9, role: PeerRole::Learner as i32 };
        let added = region_after_conf_change(
            &removed,
            &[change(ConfChangeType::AddLearnerNode, learner)],
            &ConfState { voters: vec![1, 2], learners: vec![5], ..Default::default() },
        );
        assert_eq!(ids(&added), vec![1, 2, 5]);
        assert_eq!(added.peers[2], learner);
    }
}
