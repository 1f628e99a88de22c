//! Taking a Ready and finishing it: the core's storage work, with async storage writes, is
//! three kinds of messages. Appends (entries, hard state, a snapshot) go into the round's
//! write batch and their completions wait for the round's fsync; committed entries go to
//! the apply FSM and their completions come back with its answer; the rest are messages to
//! other peers, sent at once because they do not depend on this store's disk (ARCHITECTURE
//! write path, step 3).

use tessera_proto::raftpb::Message;
use tessera_proto::storepb::{PeerState, RegionLocalState};
use tessera_raft::{LOCAL_APPEND_THREAD, LOCAL_APPLY_THREAD};

use super::PollContext;
use crate::error::StoreError;
use crate::keys::{self, CF_META};
use crate::msg::{ApplyMsg, ApplyTask};
use crate::peer::{InstalledSnapshot, Life, Peer};

impl Peer {
    /// Takes the peer's Ready, if it has one, and starts its work.
    pub(crate) fn collect_ready(&mut self, ctx: &mut PollContext<'_>) {
        if std::mem::take(&mut self.round.ticked) {
            self.check_tick_clock(ctx);
        }
        self.take_ready(ctx);
        // A lease read, or one whose index was already applied, is served in this round.
        self.serve_reads(ctx);
        if let Some(stepped) = self.snapshot_stepped.take() {
            let installed = self.round.installed_snapshot.as_ref().is_some_and(|i| i.snapshot == stepped);
            if !installed {
                let _ = ctx.store.snapshots.remove_received(&stepped);
            }
        }
    }

    fn take_ready(&mut self, ctx: &mut PollContext<'_>) {
        if self.life != Life::Alive {
            return;
        }
        if self.raw.store_mut().take_snapshot_request() {
            self.request_snapshot_generation(ctx);
        }
        for stale in self.raw.store_mut().take_stale_snapshots() {
            let _ = ctx.store.snapshots.remove_generated(&stale);
        }
        // Committed entries that could not be handed to the apply FSM yet: taking another
        // Ready would only queue more.
        if !self.apply_backlog.is_empty() || !self.raw.has_ready() {
            return;
        }
        let mut rd = self.raw.ready();
        if let Some(soft_state) = &rd.soft_state {
            // Debug, not info: a store with thousands of regions sees many of these at start.
            tracing::debug!(
                store_id = ctx.store.store_id,
                region_id = self.region_id,
                role = ?soft_state.role,
                leader_id = soft_state.leader_id,
                term = self.raw.raft().term(),
                "raft role or leader changed"
            );
        }
        for m in rd.messages.drain(..) {
            match m.to {
                LOCAL_APPEND_THREAD => self.persist_append(ctx, m),
                LOCAL_APPLY_THREAD => self.queue_apply(m),
                _ => self.send_raft_message(ctx, m),
            }
        }
        self.on_read_states(std::mem::take(&mut rd.read_states));
    }

    /// Adds the core's append work to the round's batch.
    fn persist_append(&mut self, ctx: &mut PollContext<'_>, m: Message) {
        // Entries, a snapshot, or a new term or vote must be on disk before anyone hears of
        // them. A commit index alone is not written at all: Raft keeps it volatile (after a
        // restart the leader tells it again, and `PeerStorage::load` raises a lagging one to
        // the applied index); the Raft state record carries whatever it was at its last
        // write, which may be long ago. Its
        // completions still wait for the end of the round, like every other. The Raft state
        // record itself is written only when the log cannot tell a restart what it says
        // (`PeerStorage::write_raft_state_if_needed`).
        let writes_log = m.snapshot.is_some() || !m.entries.is_empty();
        if let Some(snapshot) = m.snapshot {
            let snapshot = *snapshot;
            let metadata = snapshot.metadata.clone().unwrap_or_default();
            tracing::info!(
                store_id = ctx.store.store_id,
                region_id = self.region_id,
                index = metadata.index,
                term = metadata.term,
                "installing a snapshot"
            );
            let descriptor = match ctx.store.snapshots.apply_to_batch(ctx.batch, &snapshot) {
                Ok(descriptor) => descriptor,
                // The file was checked when the message arrived; losing it since then is a
                // disk failure, and the core already adopted the snapshot.
                Err(e) => ctx.store.stop_fatally(format!(
                    "region {}: cannot install snapshot at {}: {e}",
                    self.region_id, metadata.index
                )),
            };
            let region = descriptor.region.unwrap_or_default();
            let conf_state = metadata.conf_state.clone().unwrap_or_default();
            let record = RegionLocalState {
                region: Some(region.clone()),
                state: PeerState::Normal as i32,
                conf_state: Some(conf_state.clone()),
                peer_id: self.meta.id,
            };
            ctx.batch.put_msg(CF_META, &keys::region_state_key(self.region_id), &record);
            self.raw.store_mut().install_snapshot(
                ctx.batch,
                region.clone(),
                conf_state,
                metadata.index,
                metadata.term,
            );
            self.round.installed_snapshot =
                Some(InstalledSnapshot { region, index: metadata.index, term: metadata.term, snapshot });
        }
        let storage = self.raw.store_mut();
        storage.append(ctx.batch, &m.entries);
        if m.term != 0 {
            storage.set_hard_state(tessera_proto::raftpb::HardState {
                term: m.term,
                vote: m.vote,
                commit: m.commit,
            });
        }
        let wrote_state = storage.write_raft_state_if_needed(ctx.batch);
        if writes_log || wrote_state {
            self.round.needs_sync = true;
            self.round.wrote = true;
        }
        self.round.after_persist.extend(m.responses);
    }

    /// Turns the core's apply work into a task for the apply FSM, with the proposals that
    /// wait for those entries.
    fn queue_apply(&mut self, m: Message) {
        let Some(last_index) = m.entries.last().map(|e| e.index) else { return };
        self.log_bytes_since_compaction += m.entries.iter().map(|e| e.data.len() as u64 + 16).sum::<u64>();
        let mut proposals = Vec::new();
        while self.proposals.front().is_some_and(|p| p.index <= last_index) {
            let proposal = self.proposals.pop_front().expect("checked");
            metrics::histogram!("tessera_store_propose_to_commit_duration_seconds")
                .record(proposal.proposed_at.elapsed());
            proposals.push(proposal);
        }
        let task = ApplyTask { entries: m.entries, proposals, responses: m.responses };
        self.apply_backlog.push_back(task);
    }

    /// After the round's write is synced: deliver what waited for durability, hand the
    /// committed entries to the apply FSM.
    pub(crate) fn finish_round(&mut self, ctx: &mut PollContext<'_>) {
        if let Some(installed) = self.round.installed_snapshot.take() {
            self.on_snapshot_installed(ctx, installed);
        }
        let id = self.meta.id;
        for m in std::mem::take(&mut self.round.after_persist) {
            if m.to == id {
                if let Err(e) = self.raw.step(m) {
                    panic!("invariant: region {} steps its own storage completion: {e}", self.region_id);
                }
            } else {
                self.send_raft_message(ctx, m);
            }
        }
        self.round.wrote = false;
        self.round.needs_sync = false;
        self.round.urgent_heartbeat_received = false;
        if self.life == Life::Destroyed {
            self.finish_destroy(ctx);
            return;
        }
        self.dispatch_apply_backlog(ctx);
    }

    /// Sends queued apply tasks in order until the apply mailbox is full.
    pub(crate) fn dispatch_apply_backlog(&mut self, ctx: &mut PollContext<'_>) {
        while let Some(task) = self.apply_backlog.pop_front() {
            match ctx.store.apply_router.send(self.region_id, ApplyMsg::Apply(Box::new(task))) {
                Ok(()) => self.apply_tasks_in_flight += 1,
                Err(crate::batch::SendError::Full(ApplyMsg::Apply(task))) => {
                    metrics::counter!("tessera_store_apply_mailbox_full_total").increment(1);
                    self.apply_backlog.push_front(*task);
                    return;
                }
                Err(e) => {
                    // The apply FSM is gone: the peer is being destroyed.
                    if let ApplyMsg::Apply(task) = e.into_message() {
                        for proposal in task.proposals {
                            proposal.callback.invoke(Err(StoreError::RegionNotFound(self.region_id)));
                        }
                    }
                }
            }
        }
    }

    /// Whether the peer has work no message will announce: a Ready it can take. (Apply
    /// tasks waiting for room in the apply mailbox are not such work: the apply FSM's
    /// answer to the tasks ahead of them wakes the peer.)
    pub(crate) fn needs_another_round(&self) -> bool {
        self.life == Life::Alive && self.apply_backlog.is_empty() && self.raw.has_ready()
    }
}
