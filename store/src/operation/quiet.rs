//! What may wait for a peer's next message instead of waking it.
//!
//! Waking a peer costs a scheduling round trip (a push on the scheduler queue, a poller
//! taking it, a round, a release); with a thousand active regions that is paid several times
//! per write, so the store sends two kinds of news quietly (`BatchRouter::send_quiet`): they
//! wait in the mailbox, in order, and are handled before the peer's next message, unless more
//! of them wait than the peer said it can hold when it was last released. The two kinds:
//! - Ticks the Raft node would not act on (`RawNode::ticks_before_due`): a follower that hears
//!   its leader acts on no tick before its election timeout, a leader on none before its next
//!   heartbeat or quorum check. Handed over late but in order, before anything else reaches
//!   the peer, they leave the node exactly where ticking on time would have (the core's
//!   contract, checked seed by seed by the simulation's held-ticks runs). So most followers
//!   of a busy region are never woken by ticks, and leaders once per heartbeat.
//! - The apply FSM's reports that moved nothing but the applied index (`operation/applied.rs`).
//!
//! The peer holds none while it waits for something a quiet message brings or must act on
//! every tick: reads waiting for an apply or a heartbeat round, a snapshot waiting for the
//! apply FSM, committed entries waiting for room in the apply mailbox, proposals of a peer
//! that lost its leadership (they are answered on ticks), or a peer on its way out. A leader
//! also wakes for its periodic log GC check. Hibernation's idle count is kept by the ticks
//! too, but only as a heuristic: it may ask the followers to rest a tick late.

use crate::peer::{Life, Peer};

/// The most quiet messages a peer holds, whatever its Raft node says. A learner, or a peer
/// waiting for its snapshot, never acts on a tick: cut off from its leader, it would hold
/// ticks until its mailbox filled, refusing real messages behind them. At 100 ms ticks this
/// wakes such a peer every few seconds, and costs it a few KiB of queue.
const QUIET_MESSAGES_HELD_MAX: usize = 32;

impl Peer {
    /// How many quiet messages may wait before one wakes this peer (see the module docs).
    pub(crate) fn quiet_messages_held_max(&self) -> usize {
        if self.life != Life::Alive || self.wants_applied_reports() {
            return 0;
        }
        let leading = self.is_leader();
        if !self.proposals.is_empty() && !leading {
            return 0;
        }
        let mut held_max = self.raw.ticks_before_due().min(QUIET_MESSAGES_HELD_MAX);
        if leading {
            let gc_ticks_left = self.log_gc_check_ticks.saturating_sub(self.log_gc_elapsed_ticks + 1);
            held_max = held_max.min(gc_ticks_left);
        }
        held_max
    }
}
