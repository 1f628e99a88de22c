//! A bounded mailbox that also parks its FSM while the FSM has nothing to do.
//!
//! The state machine of a mailbox, in one atomic byte:
//! - `IDLE`: the mailbox holds the boxed FSM in its slot; no thread works on it.
//! - `NOTIFIED`: the FSM left the slot; it waits in the scheduler queue or a poller owns it.
//! - `DROPPED`: the mailbox is closed; the FSM is dropped by whoever holds it.
//!
//! A sender pushes its message first and then tries `IDLE -> NOTIFIED`; only the sender
//! that wins that swap takes the FSM out of the slot and queues it. A poller releasing the
//! FSM puts it back into the slot, swaps `NOTIFIED -> IDLE`, and only then looks at the
//! channel again: a message pushed before the swap was seen by a sender that lost its own
//! swap, so the poller must catch it; a message pushed after the swap wins its sender the
//! next `IDLE -> NOTIFIED`. Either way exactly one party schedules the FSM, so no message
//! waits in a mailbox whose FSM is idle and no FSM is queued twice.
//!
//! That argument is a store-then-load on each side (the sender stores a message and loads
//! the status, the poller stores the status and loads the queue's length), which only holds
//! if both sides agree on one order of those operations: hence `SeqCst` on the status, and
//! the queue behind a mutex, whose lock is a read-modify-write that orders the poller's look
//! at the queue after any push that completed before the sender's status swap.
//!
//! The queue is a `VecDeque` behind a mutex rather than a channel: an idle mailbox then
//! holds no buffer at all (a drained queue gives its buffer back), where a channel keeps a
//! block of slots per mailbox. A store has two mailboxes per region and thousands of idle
//! regions.
//!
//! A message may also be queued quietly (`send_quiet`, `force_send_quiet`): for news the
//! FSM can take late (a tick the peer would not act on, an apply thread's report that
//! nothing but the applied index moved), since waking a peer for it costs a whole
//! scheduling round trip, which with thousands of active regions is paid per write. Quiet
//! messages wake the FSM only once more of them wait than the FSM said it can hold when it
//! was last released (`Fsm::quiet_messages_held_max`, cached in the mailbox as
//! `quiet_held_max`); until then they are handled, in order, with the FSM's next message.
//! The lost-wakeup argument covers them the same way: a quiet sender pushes, then loads
//! `quiet_held_max` and, if the quiet messages queued with its own exceed it, tries `IDLE
//! -> NOTIFIED`; the releasing poller stores `quiet_held_max`, swaps `NOTIFIED -> IDLE`,
//! then counts the queue against the new limit. A sender that loaded the old limit pushed
//! before the poller's store, so the poller's count includes its message; one that loaded
//! the new limit schedules the FSM itself unless the poller already did. The limit never
//! reaches the mailbox's capacity, so that a mailbox full of held messages, which refuses
//! every ordinary send, always has its FSM scheduled to empty it.

use std::collections::VecDeque;
use std::fmt;
use std::sync::atomic::{AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use thiserror::Error;

use super::fsm::Fsm;

const IDLE: u8 = 0;
const NOTIFIED: u8 = 1;
const DROPPED: u8 = 2;

/// Why a message was not delivered. Each variant gives the message back, so the caller can
/// answer `ServerIsBusy`, route it elsewhere or drop it knowingly.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum SendError<M> {
    /// The mailbox holds `mailbox_len_max` messages already.
    #[error("mailbox is full")]
    Full(M),
    /// The FSM stopped or its mailbox was closed.
    #[error("mailbox is closed")]
    Disconnected(M),
    /// No mailbox is registered at this address. The store sends such a message to its
    /// control FSM, which decides whether to create a peer for it.
    #[error("no mailbox at this address")]
    UnknownAddress(M),
}

impl<M> SendError<M> {
    /// The message that was not delivered.
    pub fn into_message(self) -> M {
        match self {
            SendError::Full(message)
            | SendError::Disconnected(message)
            | SendError::UnknownAddress(message) => message,
        }
    }
}

/// The buffer a drained queue may keep: enough for a steady trickle of messages without
/// reallocating, small beside a region's other state.
const QUEUE_CAPACITY_KEPT_MAX: usize = 8;

/// One queued message, and whether it was sent to wake the FSM.
struct Queued<M> {
    message: M,
    wakes: bool,
}

/// The pending messages, in order, with the number of those that wake.
struct Pending<M> {
    messages: VecDeque<Queued<M>>,
    waking_len: usize,
}

impl<M> Pending<M> {
    fn quiet_len(&self) -> usize {
        self.messages.len() - self.waking_len
    }
}

/// An FSM's pending messages, in order.
pub(crate) struct MessageQueue<M> {
    pending: Mutex<Pending<M>>,
}

impl<M> fmt::Debug for MessageQueue<M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MessageQueue").field("len", &self.len()).finish()
    }
}

impl<M> MessageQueue<M> {
    fn new() -> Self {
        MessageQueue { pending: Mutex::new(Pending { messages: VecDeque::new(), waking_len: 0 }) }
    }

    fn lock(&self) -> MutexGuard<'_, Pending<M>> {
        // No code panics while holding the lock (push, pop, len), so a poisoned queue is
        // whole.
        self.pending.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub(crate) fn len(&self) -> usize {
        self.lock().messages.len()
    }

    /// Whether the queue should wake the FSM: a waking message waits, or more quiet ones
    /// than `quiet_held_max`.
    fn should_wake(&self, quiet_held_max: usize) -> bool {
        let pending = self.lock();
        pending.waking_len > 0 || pending.quiet_len() > quiet_held_max
    }

    /// Takes the oldest message, quiet or not, and whether it was sent to wake; a queue that
    /// this empties gives back a large buffer.
    fn pop(&self) -> Option<(M, bool)> {
        let mut pending = self.lock();
        let Queued { message, wakes } = pending.messages.pop_front()?;
        if wakes {
            pending.waking_len -= 1;
        }
        if pending.messages.is_empty() && pending.messages.capacity() > QUEUE_CAPACITY_KEPT_MAX {
            pending.messages = VecDeque::new();
        }
        Some((message, wakes))
    }
}

/// What a mailbox and the scheduler share: the state, the parked FSM and the queue.
pub(crate) struct MailboxCore<F: Fsm> {
    status: AtomicU8,
    /// Holds the FSM exactly while the status is `IDLE` (and briefly while a releasing
    /// poller or a closing owner is about to change the status). A mutex rather than a
    /// lock-free cell because the workspace forbids `unsafe`; it is never contended for
    /// long, since the status decides who may touch it.
    slot: Mutex<Option<Box<F>>>,
    pub(crate) queue: MessageQueue<F::Message>,
    /// How many quiet messages may wait before one wakes the FSM: its answer to
    /// `quiet_messages_held_max` when it was last released, below `len_max` (see the module
    /// docs).
    quiet_held_max: AtomicUsize,
    /// The mailbox's capacity for ordinary and bounded quiet sends.
    len_max: usize,
}

/// An FSM out of its mailbox: in the scheduler queue or in a poller's round.
pub(crate) struct Scheduled<F: Fsm> {
    pub(crate) fsm: Box<F>,
    pub(crate) core: Arc<MailboxCore<F>>,
}

impl<F: Fsm> MailboxCore<F> {
    fn take_fsm(&self) -> Option<Box<F>> {
        self.slot.lock().unwrap_or_else(PoisonError::into_inner).take()
    }

    fn park_fsm(&self, fsm: Box<F>) {
        let mut slot = self.slot.lock().unwrap_or_else(PoisonError::into_inner);
        assert!(slot.is_none(), "a mailbox parks at most one FSM");
        *slot = Some(fsm);
    }

    /// Schedules the FSM if it is idle; does nothing if it is already scheduled or dropped.
    fn notify(self: &Arc<Self>, schedule: impl FnOnce(Scheduled<F>)) {
        if self.status.compare_exchange(IDLE, NOTIFIED, Ordering::SeqCst, Ordering::SeqCst).is_ok() {
            let fsm = self.take_fsm().expect("an IDLE mailbox holds its FSM in the slot");
            schedule(Scheduled { fsm, core: self.clone() });
        }
    }

    /// Gives the FSM back after a round: parks it, or queues it again if messages arrived
    /// while it was being handled, or drops it if the mailbox was closed meanwhile.
    pub(crate) fn release(self: &Arc<Self>, fsm: Box<F>, schedule: impl FnOnce(Scheduled<F>)) {
        let quiet_held_max = fsm.quiet_messages_held_max().min(self.len_max.saturating_sub(1));
        self.quiet_held_max.store(quiet_held_max, Ordering::SeqCst);
        // Park before the status says IDLE, so that a sender that wins IDLE -> NOTIFIED
        // always finds the FSM in the slot.
        self.park_fsm(fsm);
        match self.status.compare_exchange(NOTIFIED, IDLE, Ordering::SeqCst, Ordering::SeqCst) {
            Ok(_) => {
                // The lost-wakeup check: see the module comment.
                if self.queue.should_wake(quiet_held_max) {
                    self.notify(schedule);
                }
            }
            Err(DROPPED) => drop(self.take_fsm()),
            Err(status) => panic!("a released FSM was NOTIFIED, found status {status}"),
        }
    }

    pub(crate) fn is_closed(&self) -> bool {
        self.status.load(Ordering::SeqCst) == DROPPED
    }

    /// Marks the mailbox closed. An idle FSM is dropped now; a scheduled one by the poller
    /// that releases it.
    pub(crate) fn close(&self) {
        if self.status.swap(DROPPED, Ordering::SeqCst) == IDLE {
            drop(self.take_fsm());
        }
    }
}

/// The sending side of one FSM's bounded mailbox. Cheap to clone; all clones reach the same
/// FSM.
///
/// The capacity is enforced by `try_send` only, so that the owner of a mailbox can still
/// `force_send` a completion it must not lose (the answer to work it handed out, whose
/// number that work already bounds) when ordinary traffic filled it.
pub struct Mailbox<F: Fsm> {
    core: Arc<MailboxCore<F>>,
    mailbox_len_max: usize,
}

impl<F: Fsm> Clone for Mailbox<F> {
    fn clone(&self) -> Self {
        Mailbox { core: self.core.clone(), mailbox_len_max: self.mailbox_len_max }
    }
}

impl<F: Fsm> fmt::Debug for Mailbox<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Mailbox")
            .field("status", &self.core.status.load(Ordering::Relaxed))
            .field("len", &self.len())
            .finish()
    }
}

impl<F: Fsm> Mailbox<F> {
    /// A mailbox of capacity `mailbox_len_max` that parks `fsm`, idle.
    pub(crate) fn new(fsm: Box<F>, mailbox_len_max: usize) -> Self {
        Mailbox {
            core: Arc::new(MailboxCore {
                status: AtomicU8::new(IDLE),
                slot: Mutex::new(Some(fsm)),
                queue: MessageQueue::new(),
                // Until its first release the FSM has not said; waking is the safe answer.
                quiet_held_max: AtomicUsize::new(0),
                len_max: mailbox_len_max,
            }),
            mailbox_len_max,
        }
    }

    /// Messages waiting in the mailbox.
    pub fn len(&self) -> usize {
        self.core.queue.len()
    }

    /// Whether the mailbox was closed (its FSM stopped or was removed).
    pub fn is_closed(&self) -> bool {
        self.core.is_closed()
    }

    /// Queues `message` without blocking and schedules the FSM if it was idle; refuses it
    /// when `mailbox_len_max` messages wait.
    ///
    /// A message that races with `close` may be queued just after the close; it is then
    /// dropped with the mailbox, exactly as if it had been sent a moment later and refused.
    pub(crate) fn try_send(
        &self,
        message: F::Message,
        schedule: impl FnOnce(Scheduled<F>),
    ) -> Result<(), SendError<F::Message>> {
        self.send_if(message, schedule, |len| len < self.mailbox_len_max)
    }

    /// Queues `message` whatever the mailbox holds. Only for messages whose number is
    /// bounded by other means (see the type's docs).
    pub(crate) fn force_send(
        &self,
        message: F::Message,
        schedule: impl FnOnce(Scheduled<F>),
    ) -> Result<(), SendError<F::Message>> {
        self.send_if(message, schedule, |_| true)
    }

    /// `try_send`, quietly: the message wakes the FSM only once more quiet messages wait
    /// than the FSM can hold (see the module docs).
    pub(crate) fn try_send_quiet(
        &self,
        message: F::Message,
        schedule: impl FnOnce(Scheduled<F>),
    ) -> Result<(), SendError<F::Message>> {
        let quiet_len = self.push(message, false, |len| len < self.mailbox_len_max)?;
        self.wake_for_quiet(quiet_len, schedule);
        Ok(())
    }

    /// `force_send`, quietly (see `try_send_quiet`). Bounded like `force_send`'s messages,
    /// by the work it answers.
    pub(crate) fn force_send_quiet(
        &self,
        message: F::Message,
        schedule: impl FnOnce(Scheduled<F>),
    ) -> Result<(), SendError<F::Message>> {
        let quiet_len = self.push(message, false, |_| true)?;
        self.wake_for_quiet(quiet_len, schedule);
        Ok(())
    }

    /// Queues `message` if the mailbox is open and `has_room` says yes to its length (both
    /// checked with the push under one lock); returns how many quiet messages wait then.
    fn push(
        &self,
        message: F::Message,
        wakes: bool,
        has_room: impl FnOnce(usize) -> bool,
    ) -> Result<usize, SendError<F::Message>> {
        if self.is_closed() {
            return Err(SendError::Disconnected(message));
        }
        let mut pending = self.core.queue.lock();
        if !has_room(pending.messages.len()) {
            return Err(SendError::Full(message));
        }
        pending.messages.push_back(Queued { message, wakes });
        if wakes {
            pending.waking_len += 1;
        }
        Ok(pending.quiet_len())
    }

    /// Schedules the FSM if `quiet_len` quiet messages are more than it can hold.
    fn wake_for_quiet(&self, quiet_len: usize, schedule: impl FnOnce(Scheduled<F>)) {
        if quiet_len > self.core.quiet_held_max.load(Ordering::SeqCst) {
            self.core.notify(schedule);
        }
    }

    /// Queues a waking `message` (see `push`), then schedules the FSM if it was idle.
    fn send_if(
        &self,
        message: F::Message,
        schedule: impl FnOnce(Scheduled<F>),
        has_room: impl FnOnce(usize) -> bool,
    ) -> Result<(), SendError<F::Message>> {
        self.push(message, true, has_room)?;
        self.core.notify(schedule);
        Ok(())
    }

    pub(crate) fn close(&self) {
        self.core.close();
    }
}

/// The messages one FSM may handle in this round: at most `messages_per_fsm_max`, taken
/// from its mailbox without blocking. Handlers iterate over it; what they leave stays
/// queued for a later round.
#[derive(Debug)]
pub struct Inbox<'a, M> {
    queue: &'a MessageQueue<M>,
    remaining: usize,
    received: usize,
    quiet_received: usize,
}

impl<'a, M> Inbox<'a, M> {
    pub(crate) fn new(queue: &'a MessageQueue<M>, messages_max: usize) -> Self {
        Inbox { queue, remaining: messages_max, received: 0, quiet_received: 0 }
    }

    /// Messages taken from this inbox so far.
    pub fn received(&self) -> usize {
        self.received
    }

    /// Of those, the ones that were sent quietly.
    pub fn quiet_received(&self) -> usize {
        self.quiet_received
    }
}

impl<M> Iterator for Inbox<'_, M> {
    type Item = M;

    fn next(&mut self) -> Option<M> {
        if self.remaining == 0 {
            return None;
        }
        let (message, wakes) = self.queue.pop()?;
        self.remaining -= 1;
        self.received += 1;
        self.quiet_received += usize::from(!wakes);
        Some(message)
    }
}
