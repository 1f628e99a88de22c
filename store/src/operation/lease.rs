//! Keeping the leader lease honest when ticks go missing.
//!
//! The core counts the lease in the leader's ticks: a heartbeat round sent at tick `c` that a
//! quorum acknowledged lets the leader answer reads until it has counted tick `c + L`, with
//! `L = election_ticks - lease_margin_ticks`. The followers' side of the bargain is counted
//! in their own ticks: a follower that heard the leader refuses to vote until it counts
//! `election_ticks` more, which takes at least `election_ticks - 1` intervals of real time
//! after the heartbeat reached it (its first tick may come at once). So the lease is sound
//! while the leader's count keeps pace with the real clock: it must not believe fewer
//! intervals passed than did. Ticks can go missing on the way: a full mailbox drops one, and
//! a timer thread that gets no CPU fires late.
//!
//! So a leader measures its ticks against the real clock. Every tick carries the time the
//! store timer fired it, and the timer fires at least an interval apart by those times.
//! The clock counts the ticks fired after a reference tick; the `n`-th must have been counted
//! by `n + TICK_LATE_MAX` intervals after the reference. When one is overdue (checked once the
//! ticks a round handles are all in, and before every read, so a timer that stopped
//! altogether is caught too), the leader gives up the lease (`RawNode::expire_lease`, which
//! also keeps rounds sent before from renewing it) and takes its last tick as the new
//! reference. The bound this gives: a read answered at `now` under a round sent at `s` has
//! `now - s <= (L + TICK_LATE_MAX)` intervals, since the round's tick `c` fired before `s`
//! and the count at `now` is at most `c + L - 1`. That stays below the followers'
//! `election_ticks - 1` intervals as long as `TICK_LATE_MAX < lease_margin_ticks - 1`; the
//! rest of the margin is left for clock drift.
//!
//! Two details keep the count from running ahead of real time, which would void that bound:
//! - the reference is always a tick's fire time, never the instant of a restart: the next
//!   tick could come at once and count as a whole interval, and ticks queued behind a
//!   stalled poller (ten at once after a second) would each count as an interval after the
//!   restart. Counted from their own fire times they stand for exactly the time that passed,
//!   which is also why ticks a peer held in its mailbox (`operation/quiet.rs`) and handles
//!   together count right, and why the clock is checked only after the last of them: a check
//!   between two of them would compare an old count with the time now. Until the first
//!   tick there is no reference, and no lease is trusted;
//! - a tick fired at or before the reference is not counted, and neither is the wake-up tick
//!   a store sends every peer at start, which no timer fired.

use std::time::{Duration, Instant};

use super::PollContext;
use crate::peer::Peer;

/// How late a leader's tick may be, in ticks, before its lease is given up. Must stay below
/// `lease_margin_ticks - 1` (the core's default margin is 2).
const TICK_LATE_MAX: f64 = 0.5;

/// A leader's ticks counted against the real clock.
#[derive(Debug, Default)]
pub(crate) struct TickClock {
    /// The reference: the fire time of a tick handled earlier, or none before the first.
    since: Option<Instant>,
    /// Ticks handled that were fired after `since`.
    ticks: u64,
    /// The fire time of the newest tick handled.
    last_fired: Option<Instant>,
}

impl TickClock {
    pub fn new() -> TickClock {
        TickClock::default()
    }

    /// Counts from the newest tick handled again.
    pub fn restart(&mut self) {
        self.since = self.last_fired;
        self.ticks = 0;
    }

    /// A tick handled; `fired_at` is `None` for a tick no timer fired, which is not counted
    /// (counting fewer ticks than the core only gives the lease up sooner).
    pub fn on_tick(&mut self, fired_at: Option<Instant>) {
        let Some(fired_at) = fired_at else { return };
        match self.since {
            None => self.since = Some(fired_at),
            Some(since) if fired_at > since => self.ticks += 1,
            Some(_) => {}
        }
        self.last_fired = Some(self.last_fired.map_or(fired_at, |last| last.max(fired_at)));
    }

    /// Whether the next tick is overdue: the `n`-th counts as late after `n +
    /// TICK_LATE_MAX` intervals from the reference. Without a reference, always.
    fn lags(&self, now: Instant, tick_interval: Duration) -> bool {
        let Some(since) = self.since else { return true };
        let next_tick = (self.ticks + 1) as f64;
        // In seconds, not through `Duration::mul_f64`, which panics past its range.
        now.saturating_duration_since(since).as_secs_f64()
            > tick_interval.as_secs_f64() * (next_tick + TICK_LATE_MAX)
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
        if !self.is_leader() {
            self.tick_clock.restart();
            return;
        }
        if self.tick_clock.lags(Instant::now(), ctx.store.config.raft_tick_interval) {
            self.raw.expire_lease();
            self.tick_clock.restart();
            metrics::counter!("tessera_store_leases_expired_for_lost_ticks_total").increment(1);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const INTERVAL: Duration = Duration::from_millis(100);

    /// A clock whose reference is a tick fired at `start`.
    fn clock_from(start: Instant) -> TickClock {
        let mut clock = TickClock::new();
        clock.on_tick(Some(start));
        clock
    }

    #[test]
    fn the_bound_fits_in_the_cores_lease_margin() {
        let margin = tessera_raft::Config::new(1).lease_margin_ticks as f64;
        assert!(TICK_LATE_MAX < margin - 1.0, "the lease would outlive the followers' promise");
    }

    #[test]
    fn a_clock_lags_once_a_tick_is_half_an_interval_overdue() {
        let start = Instant::now();
        let at = |ms| start + Duration::from_millis(ms);
        let mut clock = clock_from(start);
        // The first tick after the reference may take a whole interval, and half of one more.
        assert!(!clock.lags(at(150), INTERVAL));
        assert!(clock.lags(at(151), INTERVAL));
        clock.on_tick(Some(at(100)));
        clock.on_tick(Some(at(200)));
        assert!(!clock.lags(at(350), INTERVAL));
        assert!(clock.lags(at(351), INTERVAL));
        // A dropped tick (300 ms) is not made up by the next one: three ticks counted by
        // 400 ms leave the fourth due by 450 ms, however punctual the 400 ms tick looked.
        clock.on_tick(Some(at(400)));
        assert!(!clock.lags(at(450), INTERVAL));
        assert!(clock.lags(at(451), INTERVAL));
        // A restart takes the newest tick as the reference.
        clock.restart();
        assert!(!clock.lags(at(550), INTERVAL));
        assert!(clock.lags(at(551), INTERVAL));
    }

    #[test]
    fn without_a_timer_tick_no_lease_is_trusted() {
        let start = Instant::now();
        let mut clock = TickClock::new();
        assert!(clock.lags(start, INTERVAL));
        // The store's wake-up tick at start was fired by no timer.
        clock.on_tick(None);
        assert!(clock.lags(start, INTERVAL));
        clock.restart();
        assert!(clock.lags(start, INTERVAL));
        clock.on_tick(Some(start));
        assert!(!clock.lags(start + Duration::from_millis(150), INTERVAL));
    }

    #[test]
    fn ticks_queued_behind_a_stall_count_from_when_they_fired() {
        let start = Instant::now();
        let at = |ms| start + Duration::from_millis(ms);
        let mut clock = clock_from(start);
        // The poller stalls for a second: ten ticks wait in the mailbox. The first one
        // handled is late, and the lease is given up with the clock restarted.
        clock.on_tick(Some(at(100)));
        let now = at(1_050);
        assert!(clock.lags(now, INTERVAL));
        clock.restart();
        // The other nine are handled at once. They fired an interval apart after the
        // reference, so they stand for the time that passed; counted from the restart at
        // 1,050 ms instead, they would let the next tick be late until 2,100 ms.
        for fired in 2..=10 {
            clock.on_tick(Some(at(fired * 100)));
        }
        assert!(!clock.lags(now, INTERVAL));
        assert!(clock.lags(at(1_151), INTERVAL), "the 1,100 ms tick is due by 1,150 ms");
    }

    #[test]
    fn a_restart_between_ticks_counts_from_the_last_tick_not_from_now() {
        let start = Instant::now();
        let at = |ms| start + Duration::from_millis(ms);
        let mut clock = clock_from(start);
        // A wake at 190 ms restarts the clock; the next tick fires at 200 ms. Had the
        // reference been 190 ms, that tick would count as a whole interval after 10 ms, and
        // the one after it could be 2.4 intervals late before the clock noticed.
        clock.on_tick(Some(at(100)));
        clock.restart();
        clock.on_tick(Some(at(200)));
        assert!(!clock.lags(at(350), INTERVAL));
        assert!(clock.lags(at(351), INTERVAL), "the 300 ms tick is due by 350 ms, not by 440 ms");
    }
}
