//! Counters of a batch system: plain atomics that tests and tools read directly, and the same
//! figures recorded through the `metrics` crate, labelled with the system's name.

use std::sync::atomic::{AtomicU64, Ordering};

/// Counters shared by the router and the pollers of one batch system.
///
/// Relaxed atomics are enough: each counter is read on its own, and nothing is synchronized
/// through them.
#[derive(Debug, Default)]
pub struct BatchStats {
    poll_rounds: AtomicU64,
    fsms_handled: AtomicU64,
    round_fsms_max: AtomicU64,
    messages_handled: AtomicU64,
    quiet_messages_handled: AtomicU64,
    mailbox_full: AtomicU64,
    /// The `system` label of its metrics ("raft", "apply").
    system: &'static str,
}

impl BatchStats {
    pub(crate) fn new(system: &'static str) -> Self {
        BatchStats { system, ..Default::default() }
    }

    /// Rounds completed by all pollers (each one called the round-end hook once).
    pub fn poll_rounds(&self) -> u64 {
        self.poll_rounds.load(Ordering::Relaxed)
    }

    /// FSMs handled over all rounds, control included. Divided by `poll_rounds` it is the
    /// mean batch size, which says how many FSMs share one fsync.
    pub fn fsms_handled(&self) -> u64 {
        self.fsms_handled.load(Ordering::Relaxed)
    }

    /// The largest number of FSMs seen in one round.
    pub fn round_fsms_max(&self) -> u64 {
        self.round_fsms_max.load(Ordering::Relaxed)
    }

    /// Messages taken out of mailboxes by handlers.
    pub fn messages_handled(&self) -> u64 {
        self.messages_handled.load(Ordering::Relaxed)
    }

    /// Of those, the messages that were sent quietly and waited for another to wake their
    /// FSM (or woke it once more of them waited than it holds).
    pub fn quiet_messages_handled(&self) -> u64 {
        self.quiet_messages_handled.load(Ordering::Relaxed)
    }

    /// Sends refused because the mailbox was full (each one a `ServerIsBusy` upstream).
    pub fn mailbox_full(&self) -> u64 {
        self.mailbox_full.load(Ordering::Relaxed)
    }

    pub(crate) fn on_round_end(&self, fsms_len: usize, messages_len: usize, quiet_len: usize) {
        let fsms_len = fsms_len as u64;
        self.poll_rounds.fetch_add(1, Ordering::Relaxed);
        self.fsms_handled.fetch_add(fsms_len, Ordering::Relaxed);
        self.round_fsms_max.fetch_max(fsms_len, Ordering::Relaxed);
        self.messages_handled.fetch_add(messages_len as u64, Ordering::Relaxed);
        self.quiet_messages_handled.fetch_add(quiet_len as u64, Ordering::Relaxed);
        metrics::counter!("tessera_batch_poll_rounds_total", "system" => self.system).increment(1);
        metrics::histogram!("tessera_batch_fsms_per_round", "system" => self.system).record(fsms_len as f64);
        metrics::counter!("tessera_batch_messages_handled_total", "system" => self.system)
            .increment(messages_len as u64);
        metrics::counter!("tessera_batch_quiet_messages_handled_total", "system" => self.system)
            .increment(quiet_len as u64);
    }

    pub(crate) fn on_mailbox_full(&self) {
        self.mailbox_full.fetch_add(1, Ordering::Relaxed);
        metrics::counter!("tessera_batch_mailbox_full_total", "system" => self.system).increment(1);
    }
}
