//! The batch system: many FSMs, few threads.
//!
//! Every FSM (later: one peer per region, plus the store's control FSM) lives behind a
//! bounded [`Mailbox`]. A message sent through the [`BatchRouter`] to an idle FSM moves the
//! FSM itself onto the scheduler queue; a poller thread of the [`BatchSystem`] takes up to
//! `batch_fsms_max` queued FSMs as one round, lets its [`PollHandler`] handle at most
//! `messages_per_fsm_max` messages of each, calls the handler's `end` once for the whole
//! round (where the store writes and syncs once for all its peers), and releases the FSMs:
//! parked in their mailbox again, or queued again if messages arrived meanwhile. So an FSM
//! is never handled by two threads at once, and an idle FSM costs no thread and no timer.
//!
//! The system knows nothing of Raft: the FSM types and the handler are the user's.
//!
//! One departure from ARCHITECTURE.md's batch system, where every message to an idle FSM
//! schedules it: a message sent quietly (`BatchRouter::send_quiet`) waits for the FSM's next
//! ordinary message unless more such messages wait than the FSM said it can hold. With a
//! thousand busy regions, waking a peer for a tick it would not act on, or for an apply
//! report that moved only the applied index, was a scheduling round trip several times per
//! write. The FSM decides (`Fsm::quiet_messages_held_max`, 0 by default, which keeps the
//! architecture's rule); the lost-wakeup argument that covers it is in `mailbox.rs`.
//!
//! Where it lives: ARCHITECTURE.md gives the batch system to `store` and "mailboxes" to
//! `router`, and issue 4 asks for `router/` to hold "the mailbox and routing pieces the
//! store needs". `router/` holds the transport seam so far; the mailbox cannot be separated
//! from the poller's release protocol (see `mailbox.rs`), so the whole machinery stays here
//! for now. It depends on nothing else in `store`; when per-store outbound queues move into
//! `router/`, the router's per-region map is the piece to move (or re-export), not the
//! mailbox state machine.
//!
//! Its counters (`BatchStats`) are atomics that tests read directly, and the same figures go
//! to the `metrics` crate labelled with the system's name (`BatchSystem::with_name`).
//!
//! ```
//! use tessera_router::batch::{BatchConfig, BatchSystem, Fsm, HandleResult, Inbox, PollHandler};
//!
//! struct Counter { total: u64 }
//! impl Fsm for Counter { type Message = u64; }
//!
//! struct Adder(crossbeam_channel::Sender<u64>);
//! impl PollHandler<Counter, Counter> for Adder {
//!     fn handle_control(&mut self, _: &mut Counter, _: &mut Inbox<'_, u64>) -> HandleResult {
//!         HandleResult::Release
//!     }
//!     fn handle_normal(&mut self, fsm: &mut Counter, inbox: &mut Inbox<'_, u64>) -> HandleResult {
//!         for value in inbox {
//!             fsm.total += value;
//!             self.0.send(fsm.total).unwrap();
//!         }
//!         HandleResult::Release
//!     }
//! }
//!
//! let (totals, totals_received) = crossbeam_channel::unbounded();
//! let mut system = BatchSystem::new(&BatchConfig::default(), Box::new(Counter { total: 0 })).unwrap();
//! let router = system.router().clone();
//! router.register(7, Box::new(Counter { total: 0 })).unwrap();
//! system.spawn("poller", |_| Adder(totals.clone())).unwrap();
//! router.send(7, 2).unwrap();
//! router.send(7, 3).unwrap();
//! assert_eq!(totals_received.recv().unwrap(), 2);
//! assert_eq!(totals_received.recv().unwrap(), 5);
//! system.shutdown();
//! ```

mod config;
mod fsm;
mod mailbox;
mod router;
mod stats;
mod system;

pub use config::{BatchConfig, ConfigError};
pub use fsm::Fsm;
pub use mailbox::{Inbox, SendError};
pub use router::{AddressInUse, BatchRouter};
pub use stats::BatchStats;
pub use system::{BatchSystem, HandleResult, PollHandler};

#[cfg(test)]
#[path = "batch_tests.rs"]
mod tests;
