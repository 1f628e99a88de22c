//! Membership changes (single changes and joint consensus) and leadership transfer: checks
//! on proposal, the switch to a new configuration when one applies, and the automatic
//! leave of a joint one.

use prost::Message as _;
use tessera_proto::raftpb::{
    ConfChange, ConfChangeSingle, ConfChangeTransition, ConfChangeV2, ConfState, Entry, EntryType, Message,
    MessageType,
};

use super::{Raft, StateRole};
use crate::confchange::{self, Changer, ConfChangeError};
use crate::errors::{Error, Result};
use crate::storage::Storage;
use crate::NONE;

impl<S: Storage> Raft<S> {
    /// Checks the membership changes among proposed entries before they enter the log:
    /// one at a time, and only ones the current configuration can take. Returns the
    /// position of the change among the entries, if there is one.
    pub(super) fn check_conf_change_proposal(&self, entries: &[Entry]) -> Result<Option<usize>> {
        let mut found = None;
        for (offset, entry) in entries.iter().enumerate() {
            let Some(cc) = decode_conf_change(entry)? else { continue };
            if found.is_some() || self.pending_conf_index > self.raft_log.applied {
                // The configuration this change would apply to is not final yet.
                return Err(ConfChangeError::Pending.into());
            }
            // Dry-run the change against the current configuration: what is refused now
            // would be refused at apply time too, since nothing else is pending.
            self.next_config(&cc)?;
            found = Some(offset);
        }
        Ok(found)
    }

    /// The configuration after `cc`, or why `cc` is refused.
    fn next_config(&self, cc: &ConfChangeV2) -> Result<confchange::NextConfig> {
        let changer = Changer::new(&self.trk, self.raft_log.last_index());
        let next = if is_leave_joint(cc) {
            changer.leave_joint()
        } else if let Some(auto_leave) = enter_joint(cc) {
            changer.enter_joint(auto_leave, &cc.changes)
        } else {
            changer.simple(&cc.changes)
        };
        Ok(next?)
    }

    /// Applies a committed membership change and returns the new configuration. Called by
    /// the application when it applies the entry, so that the configuration in force is
    /// always the one the applied log describes.
    pub(crate) fn apply_conf_change(&mut self, cc: &ConfChangeV2) -> Result<ConfState> {
        let (config, progress) = self.next_config(cc)?;
        Ok(self.switch_to_config(config, progress))
    }

    fn switch_to_config(
        &mut self,
        config: crate::tracker::TrackerConfig,
        progress: std::collections::BTreeMap<u64, crate::tracker::Progress>,
    ) -> ConfState {
        self.trk.config = config;
        self.trk.progress = progress;
        let conf_state = self.trk.conf_state();
        let membership = self.trk.progress.get(&self.id).map(|pr| pr.is_learner);
        self.is_learner = membership == Some(true);
        if self.role != StateRole::Leader {
            return conf_state;
        }
        if membership != Some(false) && self.step_down_on_removal {
            // This leader was removed or demoted, and steps down now: a removed leader that
            // keeps heartbeating can wedge the group.
            self.become_follower(self.term, NONE);
            return conf_state;
        }
        // A removed or demoted leader that keeps leading (until a new leader emerges, which
        // demote-then-remove sequences rely on) is still the one that commits: it counts the
        // new quorum like any leader. Skipping this left a demoted leader whose remaining
        // voters already held its last entries with a commit index that nothing would move
        // again (no new acknowledgement changes a match index that is already there).
        if self.lead_transferee != NONE && !self.trk.config.voters.contains(self.lead_transferee) {
            // The transfer target was removed or demoted: it can no longer be elected.
            self.abort_leader_transfer();
        }
        // The quorum changed: reads waiting for a round may be confirmed already, the
        // commit index may move, and new peers need probing.
        self.recount_rounds();
        if self.maybe_commit() {
            self.release_postponed_reads();
            self.broadcast_commit();
        } else {
            let mut cursor = NONE;
            while let Some(id) = self.next_peer(cursor) {
                self.maybe_send_append(id, false);
                cursor = id;
            }
        }
        conf_state
    }

    /// The application applied entries up to `index`.
    pub(crate) fn applied_to(&mut self, index: u64) {
        self.raft_log.applied_to(index);
        self.maybe_auto_leave_joint();
    }

    /// A leader whose joint configuration asks to be left automatically proposes leaving
    /// once the configuration is applied. Checked on every apply and every heartbeat, so a
    /// refused attempt (during a transfer) or a leader change does not leave it stuck.
    pub(super) fn maybe_auto_leave_joint(&mut self) {
        if self.role != StateRole::Leader
            || !self.trk.config.auto_leave
            || self.raft_log.applied < self.pending_conf_index
        {
            return;
        }
        // An empty ConfChangeV2 means "leave the joint configuration"; it encodes to zero
        // bytes, so the uncommitted-size limit never refuses it.
        let entry = Entry { entry_type: EntryType::EntryConfChangeV2 as i32, ..Default::default() };
        let m = Message {
            msg_type: MessageType::MsgPropose as i32,
            from: self.id,
            entries: vec![entry],
            ..Default::default()
        };
        // Refused during a transfer; retried at the next apply or heartbeat.
        let _ = self.step(m);
    }

    // ---- leadership transfer ---------------------------------------------------------

    pub(super) fn send_timeout_now(&mut self, to: u64) {
        // From here on, `to` may win an election at any time, bypassing vote leases.
        self.transfer_started_this_term = true;
        self.send(Message { msg_type: MessageType::MsgTimeoutNow as i32, to, ..Default::default() });
    }

    pub(crate) fn abort_leader_transfer(&mut self) {
        self.lead_transferee = NONE;
    }
}

/// The membership change an entry carries, as a ConfChangeV2, or None for a normal entry.
pub(crate) fn decode_conf_change(entry: &Entry) -> Result<Option<ConfChangeV2>> {
    let malformed = |e: prost::DecodeError| Error::ConfChange(ConfChangeError::Malformed(e.to_string()));
    match entry.entry_type() {
        EntryType::EntryNormal => Ok(None),
        EntryType::EntryConfChange => {
            let cc = ConfChange::decode(entry.data.as_ref()).map_err(malformed)?;
            Ok(Some(ConfChangeV2 {
                transition: ConfChangeTransition::Auto as i32,
                changes: vec![ConfChangeSingle { change_type: cc.change_type, node_id: cc.node_id }],
                context: cc.context,
            }))
        }
        EntryType::EntryConfChangeV2 => {
            Ok(Some(ConfChangeV2::decode(entry.data.as_ref()).map_err(malformed)?))
        }
    }
}

/// An empty ConfChangeV2 (context aside) asks to leave the joint configuration.
pub fn is_leave_joint(cc: &ConfChangeV2) -> bool {
    cc.changes.is_empty() && cc.transition() == ConfChangeTransition::Auto
}

/// Whether `cc` enters a joint configuration, and if so whether it is left automatically.
/// Joint consensus is used when asked for explicitly, or when more than one change is made.
pub fn enter_joint(cc: &ConfChangeV2) -> Option<bool> {
    let transition = cc.transition();
    if transition == ConfChangeTransition::Auto && cc.changes.len() <= 1 {
        return None;
    }
    Some(matches!(transition, ConfChangeTransition::Auto | ConfChangeTransition::JointImplicit))
}
