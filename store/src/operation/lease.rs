//! Keeping the leader lease honest when ticks go missing.
//!
//! The core counts the lease in the leader's ticks: it holds until `election_ticks -
//! lease_margin_ticks` ticks after a heartbeat round that a quorum acknowledged. Those
//! ticks come from the store timer through the peer's bounded mailbox, and they can go
//! missing: a full mailbox drops one, and a timer thread that gets no CPU skips them. A
//! leader that lost ticks counts time too slowly, so its lease would outlive the followers'
//! promise not to elect anyone else (they count in their own ticks, on time), and a lease
//! read could return a value a newer leader has already overwritten.
//!
//! So a leader measures its ticks against the real clock: from a starting instant, the n-th
//! tick must have arrived by `n + 0.5` intervals (the first may come a whole interval after
//! the start, and half an interval is slack for a tick that waits behind other messages);
//! late ticks add up, since it counts from the start. When a tick is overdue, it gives up
//! the lease
//! (`RawNode::expire_lease`, which also keeps rounds sent before from renewing it) and
//! measures again from now. Leases are then only taken from rounds sent while its ticks kept
//! pace, and reads go through a heartbeat round (ReadIndex) meanwhile. The check runs on
//! every tick and before every read, so a timer that stopped altogether is caught too.
//!
//! The slack uses up half a tick of the core's `lease_margin_ticks`, which is otherwise left
//! for clock drift between machines.

use std::time::{Duration, Instant};

use super::PollContext;
use crate::peer::Peer;

/// How late a leader's tick may be, in ticks, before its lease is given up.
const TICK_LATE_MAX: f64 = 0.5;

/// Ticks counted since an instant.
#[derive(Debug)]
pub(crate) struct TickClock {
    since: Instant,
    ticks: u64,
}

impl TickClock {
    pub fn new() -> TickClock {
        TickClock { since: Instant::now(), ticks: 0 }
    }

    /// Counts from `now` again.
    pub fn restart(&mut self, now: Instant) {
        self.since = now;
        self.ticks = 0;
    }

    pub fn on_tick(&mut self) {
        self.ticks += 1;
    }

    /// Whether the next tick is overdue: the n-th counts as late after `n + TICK_LATE_MAX`
    /// intervals from the start.
    fn lags(&self, now: Instant, tick_interval: Duration) -> bool {
        let next_tick = (self.ticks + 1) as f64;
        now.saturating_duration_since(self.since) > tick_interval.mul_f64(next_tick + TICK_LATE_MAX)
    }
}

impl Peer {
    /// Gives up the lease if this leader's ticks fell behind the real clock (see the module
    /// docs). Followers only restart their clock: they hold no lease, and a clock that
    /// starts at their last tick bounds the lease they may take as a new leader.
    pub(crate) fn check_tick_clock(&mut self, ctx: &PollContext<'_>) {
        if !ctx.store.config.raft_lease_reads {
            return;
        }
        let now = Instant::now();
        if !self.is_leader() {
            self.tick_clock.restart(now);
            return;
        }
        if self.tick_clock.lags(now, ctx.store.config.raft_tick_interval) {
            self.raw.expire_lease();
            self.tick_clock.restart(now);
            metrics::counter!("tessera_store_leases_expired_for_lost_ticks_total").increment(1);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_clock_lags_once_a_tick_is_half_an_interval_overdue() {
        let interval = Duration::from_millis(100);
        let start = Instant::now();
        let at = |ms| start + Duration::from_millis(ms);
        let mut clock = TickClock { since: start, ticks: 0 };
        // The first tick may take a whole interval, and half of one more.
        assert!(!clock.lags(at(150), interval));
        assert!(clock.lags(at(151), interval));
        clock.on_tick();
        clock.on_tick();
        assert!(!clock.lags(at(350), interval));
        assert!(clock.lags(at(351), interval));
        // Late ticks add up: two ticks by 300 ms leave the third due by 350 ms, however
        // punctual each one looked against the one before.
        clock.restart(at(400));
        assert!(!clock.lags(at(550), interval));
    }
}
