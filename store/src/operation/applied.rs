//! The apply FSM's answer: what it applied, and what that changed beyond the data.
//!
//! A report that changed nothing but the applied index does not have to wake the peer:
//! clients hear of their writes from the apply FSM itself, and the core hands out committed
//! entries without waiting for the applied index. So the report is sent quietly
//! (`operation/quiet.rs`), to be taken with the peer's next message. That saves every store a
//! scheduling round of the peer per write. A report wakes the peer when it carries a
//! membership change or a compaction, or when the peer waits for applies
//! (`wants_applied_reports`): reads waiting for their index to apply, a snapshot waiting for
//! the apply FSM to go idle, committed entries waiting for room in the apply mailbox, or a
//! peer on its way out.

use super::PollContext;
use crate::msg::{AppliedConfChange, ApplyResult, ExecResult};
use crate::peer::{Life, Peer};

impl Peer {
    /// Whether the apply FSM's reports must wake this peer (see the module docs).
    pub(crate) fn wants_applied_reports(&self) -> bool {
        self.life != Life::Alive
            || !self.reads.is_empty()
            || self.deferred_snapshot.is_some()
            || !self.apply_backlog.is_empty()
    }

    pub(crate) fn on_applied(&mut self, ctx: &mut PollContext<'_>, result: ApplyResult) {
        self.apply_tasks_in_flight -= 1;
        if self.life == Life::Destroyed {
            return;
        }
        let ApplyResult { apply_state, exec_results, responses } = result;
        self.raw.store_mut().on_applied(apply_state.applied_index);
        for exec_result in exec_results {
            match exec_result {
                ExecResult::ConfChange(change) => {
                    let AppliedConfChange { cc, region, conf_state, removed_self } = *change;
                    self.on_conf_change_applied(ctx, &cc, region, conf_state, removed_self)
                }
                ExecResult::CompactLog { index, term } => self.on_log_compaction_applied(ctx, index, term),
            }
        }
        // The core learns the entries are applied only now, after any membership change in
        // them is in force: it must not campaign or count votes with an older configuration.
        for response in responses {
            if let Err(e) = self.raw.step(response) {
                panic!("invariant: region {} steps its own apply completion: {e}", self.region_id);
            }
        }
        if self.apply_tasks_in_flight == 0 && self.apply_backlog.is_empty() {
            if let Some(msg) = self.deferred_snapshot.take() {
                self.on_raft_message(ctx, msg);
            }
        }
    }
}
