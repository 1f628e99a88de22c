//! What the batch system schedules: a finite state machine that consumes messages.

/// A state machine driven by the messages of its mailbox: a peer, an apply delegate or the
/// store's control FSM. The batch system only moves it between its mailbox and the pollers;
/// what it does with a message is the `PollHandler`'s business.
///
/// An FSM is owned by exactly one place at a time (its idle mailbox, the scheduler queue or
/// one poller), which is why it must be `Send` and is moved as a `Box`: moving a pointer is
/// cheap whatever the size of the peer behind it.
pub trait Fsm: Send + 'static {
    /// What its mailbox carries.
    type Message: Send + 'static;

    /// Whether the FSM has finished for good (a destroyed peer). The poller that holds it
    /// then closes its mailbox and drops it instead of releasing it; later sends fail with
    /// `Disconnected` until the owner calls `BatchRouter::close` for its address.
    fn is_stopped(&self) -> bool {
        false
    }

    /// Whether a quiet message (`BatchRouter::force_send_quiet`) should wake the FSM now,
    /// asked each time a poller releases it: true while it waits for the news such
    /// messages carry, false while it can take them with its next message. The default
    /// makes quiet messages wake like any other.
    fn wakes_for_quiet_messages(&self) -> bool {
        true
    }
}
