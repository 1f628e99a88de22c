//! Client commands: checked against the region (leader, epoch, keys, queue limit), then
//! proposed; the callback waits in the peer until the entry is handed to the apply FSM.

use prost::Message as _;
use tessera_proto::raftpb::{ConfChangeSingle, ConfChangeTransition, ConfChangeType, ConfChangeV2};
use tessera_proto::serverpb::{admin_request, AdminRequest, CmdType, RaftCmdRequest};
use tessera_raft::confchange::ConfChangeError;
use tessera_raft::{Error as RaftError, ProposalDropReason};

use super::PollContext;
use crate::error::{server_is_busy, BusyCause, StoreError, StoreResult};
use crate::msg::{Callback, Proposal};
use crate::peer::{Life, Peer};
use tessera_proto::storepb::{Region, RegionEpoch};

/// Whether `key` lies in the region's range.
pub(crate) fn key_in_region(key: &[u8], region: &Region) -> bool {
    key >= region.start_key.as_slice() && (region.end_key.is_empty() || key < region.end_key.as_slice())
}

/// Checks that `key` lies in the region's range.
pub(crate) fn check_key_in_region(key: &[u8], region: &Region) -> StoreResult<()> {
    if key_in_region(key, region) {
        return Ok(());
    }
    Err(StoreError::KeyNotInRegion {
        key: key.to_vec(),
        region_id: region.id,
        start_key: region.start_key.clone(),
        end_key: region.end_key.clone(),
    })
}

/// Checks a client's epoch against the region: data commands and reads against the
/// range's version, membership changes against both parts (ARCHITECTURE.md invariant 6).
pub(crate) fn check_region_epoch(
    theirs: Option<RegionEpoch>,
    region: &Region,
    is_change_peer: bool,
) -> StoreResult<()> {
    let theirs = theirs.unwrap_or_default();
    let ours = region.epoch.unwrap_or_default();
    let stale = theirs.version != ours.version || (is_change_peer && theirs.conf_ver != ours.conf_ver);
    if stale {
        return Err(StoreError::EpochNotMatch { current: Box::new(region.clone()) });
    }
    Ok(())
}

/// Checks a command's epoch (see `check_region_epoch`).
pub(crate) fn check_epoch(request: &RaftCmdRequest, region: &Region) -> StoreResult<()> {
    let is_change_peer = matches!(
        request.admin.as_ref().and_then(|a| a.cmd.as_ref()),
        Some(admin_request::Cmd::ChangePeer(_))
    );
    check_region_epoch(request.header.as_ref().and_then(|h| h.region_epoch), region, is_change_peer)
}

/// Refuses a client request at a peer that is not the region's live leader.
pub(crate) fn check_leader(peer: &Peer) -> StoreResult<()> {
    if peer.life != Life::Alive {
        return Err(StoreError::RegionNotFound(peer.region_id));
    }
    if !peer.is_leader() {
        return Err(StoreError::NotLeader { region_id: peer.region_id, leader: peer.leader() });
    }
    Ok(())
}

/// Checks the data requests of a command: present, with keys inside the region.
pub(crate) fn check_requests(request: &RaftCmdRequest, region: &Region) -> StoreResult<()> {
    if request.requests.is_empty() {
        return Err(StoreError::InvalidCommand("a command needs at least one request".into()));
    }
    for r in &request.requests {
        if r.key.is_empty() {
            return Err(StoreError::InvalidCommand("empty key".into()));
        }
        let cmd_type = CmdType::try_from(r.cmd_type)
            .map_err(|_| StoreError::InvalidCommand(format!("unknown command type {}", r.cmd_type)))?;
        let mut keys = vec![r.key.as_slice()];
        if cmd_type == CmdType::DeleteRange {
            if r.end_key.is_empty() || r.end_key <= r.key {
                return Err(StoreError::InvalidCommand("delete-range needs start < end".into()));
            }
            // The end is exclusive: it may equal the region's end.
            if (region.end_key.is_empty() || r.end_key > region.end_key) && !region.end_key.is_empty() {
                keys.push(r.end_key.as_slice());
            }
        }
        for key in keys {
            check_key_in_region(key, region)?;
        }
    }
    Ok(())
}

fn dropped(region_id: u64, error: RaftError, leader: Option<tessera_proto::storepb::Peer>) -> StoreError {
    match error {
        RaftError::ProposalDropped(ProposalDropReason::UncommittedSizeExceeded) => server_is_busy(
            BusyCause::UncommittedBytes,
            format!("region {region_id}: too many uncommitted bytes"),
        ),
        RaftError::ProposalDropped(
            ProposalDropReason::TransferringLeader
            | ProposalDropReason::NoLeader
            | ProposalDropReason::NotAMember,
        ) => StoreError::NotLeader { region_id, leader },
        // Another change waits to apply, or a joint configuration to be left (which its
        // leader does on its own): the same command succeeds once that applied, so the
        // client retries. A new leader counts its whole log as pending until it applied it.
        RaftError::ConfChange(e @ (ConfChangeError::Pending | ConfChangeError::AlreadyJoint)) => {
            StoreError::ProposalDropped(format!("region {region_id}: {e}"))
        }
        RaftError::ConfChange(e) => StoreError::InvalidCommand(e.to_string()),
        other => StoreError::ProposalDropped(other.to_string()),
    }
}

impl Peer {
    /// Proposes a client command; `callback` hears the outcome exactly once.
    pub(crate) fn propose(&mut self, ctx: &mut PollContext<'_>, request: RaftCmdRequest, callback: Callback) {
        match self.try_propose(ctx, request) {
            Ok((index, term)) => {
                // Proposals at or past this index were in a log tail that another leader
                // replaced while this peer was not leading: they will never apply, and
                // leaving them would break the queue's index order.
                while self.proposals.back().is_some_and(|p| p.index >= index) {
                    let stale = self.proposals.pop_back().expect("checked");
                    stale.callback.invoke(Err(StoreError::replaced(stale.index, stale.term)));
                }
                let proposed_at = std::time::Instant::now();
                self.proposals.push_back(Proposal { index, term, callback, proposed_at });
            }
            Err(e) => callback.invoke(Err(e)),
        }
    }

    /// Answers the proposals whose entries are no longer in the log as proposed (another
    /// leader replaced them, or the log was cut before them), so that they neither wait for
    /// traffic that may never come nor hold room in the bounded queue. Called on ticks.
    pub(crate) fn drop_replaced_proposals(&mut self) {
        if self.proposals.is_empty() {
            return;
        }
        let raft_log = self.raw.raft().raft_log();
        let is_replaced = |p: &Proposal| match raft_log.term(p.index) {
            Ok(term) => term != p.term,
            // Beyond the log: cut off. Compacted: applied already, answered by apply.
            Err(tessera_raft::StorageError::Unavailable) => true,
            Err(_) => false,
        };
        if !self.proposals.iter().any(is_replaced) {
            return;
        }
        let (kept, dropped): (Vec<Proposal>, Vec<Proposal>) =
            self.proposals.drain(..).partition(|p| !is_replaced(p));
        self.proposals.extend(kept);
        for p in dropped {
            p.callback.invoke(Err(StoreError::replaced(p.index, p.term)));
        }
    }

    fn try_propose(&mut self, ctx: &mut PollContext<'_>, request: RaftCmdRequest) -> StoreResult<(u64, u64)> {
        check_leader(self)?;
        check_epoch(&request, &self.region)?;
        if self.proposals.len() >= ctx.store.config.proposals_per_peer_max {
            return Err(server_is_busy(
                BusyCause::ProposalsWaiting,
                format!("region {}: {} proposals are waiting", self.region_id, self.proposals.len()),
            ));
        }
        let result = match request.admin.as_ref().and_then(|a| a.cmd.as_ref()) {
            Some(admin_request::Cmd::ChangePeer(_)) => self.propose_conf_change(request)?,
            Some(admin_request::Cmd::CompactLog(_)) => {
                return Err(StoreError::InvalidCommand(
                    "log compaction is proposed by the store itself".into(),
                ))
            }
            None => {
                check_requests(&request, &self.region)?;
                self.raw.propose(request.encode_to_vec())
            }
        };
        result.map_err(|e| dropped(self.region_id, e, self.leader()))?;
        metrics::counter!("tessera_store_proposals_total").increment(1);
        Ok((self.raw.raft().raft_log().last_index(), self.raw.raft().term()))
    }

    /// Proposes the store's own log compaction (no callback).
    pub(crate) fn propose_compact_log(&mut self, request: RaftCmdRequest) -> bool {
        self.raw.propose(request.encode_to_vec()).is_ok()
    }

    /// Checks and proposes a membership change. The outer result refuses the command
    /// before it reaches the core; the inner one is the core's answer.
    fn propose_conf_change(&mut self, request: RaftCmdRequest) -> StoreResult<Result<(), RaftError>> {
        let Some(AdminRequest { cmd: Some(admin_request::Cmd::ChangePeer(change)) }) = request.admin.as_ref()
        else {
            unreachable!("checked by the caller");
        };
        if change.changes.is_empty() {
            return Err(StoreError::InvalidCommand("a membership change needs at least one change".into()));
        }
        let mut changes = Vec::with_capacity(change.changes.len());
        for c in &change.changes {
            let peer = c.peer.as_ref().filter(|p| p.id != 0 && p.store_id != 0).ok_or_else(|| {
                StoreError::InvalidCommand("a membership change names a peer with its id and store".into())
            })?;
            let change_type = ConfChangeType::try_from(c.change_type)
                .map_err(|_| StoreError::InvalidCommand(format!("unknown change type {}", c.change_type)))?;
            if self.region.peers.iter().any(|p| p.id != peer.id && p.store_id == peer.store_id)
                && change_type != ConfChangeType::RemoveNode
            {
                return Err(StoreError::InvalidCommand(format!(
                    "store {} already hosts a peer of region {}",
                    peer.store_id, self.region_id
                )));
            }
            if peer.id == self.meta.id
                && matches!(change_type, ConfChangeType::RemoveNode | ConfChangeType::AddLearnerNode)
            {
                // A leader that applies its own removal can wedge the group (see the core's
                // `Config::step_down_on_removal`): move leadership first, then the client
                // retries at the new leader.
                self.transfer_leadership_away();
                return Ok(Err(RaftError::ProposalDropped(ProposalDropReason::TransferringLeader)));
            }
            changes.push(ConfChangeSingle { change_type: change_type as i32, node_id: peer.id });
        }
        let cc = ConfChangeV2 { transition: ConfChangeTransition::Auto as i32, changes, context: Vec::new() };
        Ok(self.raw.propose_conf_change(request.encode_to_vec(), cc))
    }

    /// Hands leadership to the most caught-up other voter.
    pub(crate) fn transfer_leadership_away(&mut self) {
        let tracker = self.raw.raft().tracker();
        let voters = tracker.config.voters.ids();
        let target = tracker
            .progress
            .iter()
            .filter(|(id, pr)| **id != self.meta.id && voters.contains(id) && !pr.is_learner)
            .max_by_key(|(_, pr)| pr.matched)
            .map(|(id, _)| *id);
        if let Some(target) = target {
            let _ = self.raw.transfer_leader(target);
        }
    }
}
