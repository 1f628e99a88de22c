//! The apply FSM's answer: what it applied, and what that changed beyond the data.

use super::PollContext;
use crate::msg::{AppliedConfChange, ApplyResult, ExecResult};
use crate::peer::{Life, Peer};

impl Peer {
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
