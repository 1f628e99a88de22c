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

    /// How many quiet messages (`BatchRouter::send_quiet`, `force_send_quiet`) may wait in
    /// the mailbox before one wakes the FSM, asked each time a poller releases it: 0 while
    /// it waits for the news such messages carry, more while it can take them with its next
    /// message (a peer holds as many ticks as it would not act on). The default, 0, makes
    /// quiet messages wake like any other.
    fn quiet_messages_held_max(&self) -> usize {
        0
    }
}
