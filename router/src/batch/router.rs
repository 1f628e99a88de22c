//! Addressing FSMs: which mailbox a message for address `addr` goes to.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, PoisonError, RwLock};

use crossbeam_channel::Sender;
use thiserror::Error;

use super::fsm::Fsm;
use super::mailbox::{Mailbox, Scheduled, SendError};
use super::stats::BatchStats;

/// One entry of the scheduler queue: an FSM that has work to do.
pub(crate) enum Task<N: Fsm, C: Fsm> {
    Normal(Scheduled<N>),
    Control(Scheduled<C>),
}

/// `register` found a mailbox at the address already; the FSM is given back untouched.
#[derive(Error)]
#[error("address {addr} already has a mailbox")]
pub struct AddressInUse<N> {
    pub addr: u64,
    pub fsm: Box<N>,
}

impl<N> fmt::Debug for AddressInUse<N> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AddressInUse").field("addr", &self.addr).finish_non_exhaustive()
    }
}

struct Shared<N: Fsm, C: Fsm> {
    /// A `RwLock<HashMap>` rather than a sharded map: sends, by far the most frequent
    /// operation, only take the read lock and hold it for one non-blocking channel push,
    /// so they do not exclude one another; the write lock is taken only when a region's
    /// peer is created or destroyed. If profiles ever show the lock's cache line bouncing
    /// between many cores, shard the map by address.
    normals: RwLock<HashMap<u64, Mailbox<N>>>,
    control: Mailbox<C>,
    /// The scheduler queue. It is unbounded on purpose and yet bounded in fact: an FSM is
    /// queued only by the party that flipped it IDLE -> NOTIFIED, so the queue never holds
    /// more entries than there are FSMs.
    scheduler: Sender<Task<N, C>>,
    mailbox_len_max: usize,
    stats: Arc<BatchStats>,
}

/// Sends messages to the FSMs of one batch system: normal FSMs by address, plus the one
/// control FSM. Cheap to clone and shared by every thread that sends (transport, clients,
/// the FSMs themselves).
pub struct BatchRouter<N: Fsm, C: Fsm> {
    shared: Arc<Shared<N, C>>,
}

impl<N: Fsm, C: Fsm> Clone for BatchRouter<N, C> {
    fn clone(&self) -> Self {
        BatchRouter { shared: self.shared.clone() }
    }
}

impl<N: Fsm, C: Fsm> fmt::Debug for BatchRouter<N, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BatchRouter")
            .field("normals_len", &self.len())
            .field("mailbox_len_max", &self.shared.mailbox_len_max)
            .finish_non_exhaustive()
    }
}

impl<N: Fsm, C: Fsm> BatchRouter<N, C> {
    pub(crate) fn new(
        control: Box<C>,
        scheduler: Sender<Task<N, C>>,
        mailbox_len_max: usize,
        stats: Arc<BatchStats>,
    ) -> Self {
        BatchRouter {
            shared: Arc::new(Shared {
                normals: RwLock::new(HashMap::new()),
                control: Mailbox::new(control, mailbox_len_max),
                scheduler,
                mailbox_len_max,
                stats,
            }),
        }
    }

    /// Gives `fsm` a mailbox at `addr`. It stays idle until its first message.
    pub fn register(&self, addr: u64, fsm: Box<N>) -> Result<(), AddressInUse<N>> {
        let mut normals = self.write_normals();
        if normals.contains_key(&addr) {
            return Err(AddressInUse { addr, fsm });
        }
        normals.insert(addr, Mailbox::new(fsm, self.shared.mailbox_len_max));
        Ok(())
    }

    /// Removes and closes the mailbox at `addr`; returns whether there was one. An idle FSM
    /// is dropped at once, a scheduled one when its poller releases it; queued messages are
    /// dropped with it.
    pub fn close(&self, addr: u64) -> bool {
        let removed = self.write_normals().remove(&addr);
        match removed {
            Some(mailbox) => {
                mailbox.close();
                true
            }
            None => false,
        }
    }

    /// Queues `message` for the FSM at `addr` without blocking.
    pub fn send(&self, addr: u64, message: N::Message) -> Result<(), SendError<N::Message>> {
        let result =
            self.deliver(addr, message, |mailbox, message, schedule| mailbox.try_send(message, schedule));
        self.count_full(result)
    }

    /// Hands `message` to the mailbox at `addr` (looked up under the map's read lock)
    /// through `push`, which gets this router's way of scheduling the FSM.
    fn deliver(
        &self,
        addr: u64,
        message: N::Message,
        push: impl FnOnce(&Mailbox<N>, N::Message, &dyn Fn(Scheduled<N>)) -> Result<(), SendError<N::Message>>,
    ) -> Result<(), SendError<N::Message>> {
        let normals = self.shared.normals.read().unwrap_or_else(PoisonError::into_inner);
        let Some(mailbox) = normals.get(&addr) else {
            return Err(SendError::UnknownAddress(message));
        };
        push(mailbox, message, &|scheduled| self.schedule(Task::Normal(scheduled)))
    }

    /// `send` for many messages under one look-up lock; `refused` gets each message that was
    /// not queued, with the reason. It runs under that (read) lock, so it must not register
    /// or close mailboxes.
    pub fn send_all(
        &self,
        messages: impl IntoIterator<Item = (u64, N::Message)>,
        mut refused: impl FnMut(SendError<N::Message>),
    ) {
        let normals = self.shared.normals.read().unwrap_or_else(PoisonError::into_inner);
        for (addr, message) in messages {
            let result = match normals.get(&addr) {
                Some(mailbox) => {
                    mailbox.try_send(message, |scheduled| self.schedule(Task::Normal(scheduled)))
                }
                None => Err(SendError::UnknownAddress(message)),
            };
            if let Err(e) = self.count_full(result) {
                refused(e);
            }
        }
    }

    /// Queues `message` for the FSM at `addr` even if its mailbox is full. For completions
    /// of work the FSM handed out (their number is bounded by that work, which went through
    /// bounded queues): dropping one would leave the FSM waiting forever.
    pub fn force_send(&self, addr: u64, message: N::Message) -> Result<(), SendError<N::Message>> {
        self.deliver(addr, message, |mailbox, message, schedule| mailbox.force_send(message, schedule))
    }

    /// `send` for news the FSM may take late: the message wakes the FSM only once more such
    /// quiet messages wait than the FSM said it can hold (`Fsm::quiet_messages_held_max`);
    /// until then they are handled, in order, with the FSM's next message.
    pub fn send_quiet(&self, addr: u64, message: N::Message) -> Result<(), SendError<N::Message>> {
        let result = self
            .deliver(addr, message, |mailbox, message, schedule| mailbox.try_send_quiet(message, schedule));
        self.count_full(result)
    }

    /// `force_send`, quietly (see `send_quiet`): for completions the FSM may take late.
    pub fn force_send_quiet(&self, addr: u64, message: N::Message) -> Result<(), SendError<N::Message>> {
        self.deliver(addr, message, |mailbox, message, schedule| mailbox.force_send_quiet(message, schedule))
    }

    /// Queues `message` for the control FSM without blocking.
    pub fn send_control(&self, message: C::Message) -> Result<(), SendError<C::Message>> {
        let result = self.shared.control.try_send(message, |scheduled| {
            self.schedule(Task::Control(scheduled));
        });
        self.count_full(result)
    }

    /// Sends `make()` to every normal FSM (the store's tick). Returns how many mailboxes
    /// were full; those FSMs miss this message.
    pub fn broadcast_normal(&self, mut make: impl FnMut() -> N::Message) -> usize {
        let normals = self.shared.normals.read().unwrap_or_else(PoisonError::into_inner);
        let mut full = 0;
        for mailbox in normals.values() {
            let result = mailbox.try_send(make(), |scheduled| {
                self.schedule(Task::Normal(scheduled));
            });
            if let Err(SendError::Full(_)) = self.count_full(result) {
                full += 1;
            }
        }
        full
    }

    /// Number of registered normal FSMs.
    pub fn len(&self) -> usize {
        self.shared.normals.read().unwrap_or_else(PoisonError::into_inner).len()
    }

    /// Whether no normal FSM is registered.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Messages waiting for the FSM at `addr`, if there is one.
    pub fn mailbox_len(&self, addr: u64) -> Option<usize> {
        self.shared.normals.read().unwrap_or_else(PoisonError::into_inner).get(&addr).map(Mailbox::len)
    }

    /// The counters of this batch system.
    pub fn stats(&self) -> &Arc<BatchStats> {
        &self.shared.stats
    }

    /// Closes every mailbox, control included. Called at shutdown: FSMs usually hold a
    /// router clone to send messages, so a parked FSM keeps the router alive which keeps
    /// its mailbox alive; closing drops the FSMs and breaks that cycle.
    pub(crate) fn close_all(&self) {
        let normals = std::mem::take(&mut *self.write_normals());
        for mailbox in normals.values() {
            mailbox.close();
        }
        self.shared.control.close();
    }

    pub(crate) fn schedule(&self, task: Task<N, C>) {
        // Sending fails only once every poller and the system are gone; the task then holds
        // the last reference to its FSM, which is dropped here like every other FSM at
        // shutdown.
        let _ = self.shared.scheduler.send(task);
    }

    fn count_full<M>(&self, result: Result<(), SendError<M>>) -> Result<(), SendError<M>> {
        if let Err(SendError::Full(_)) = &result {
            self.shared.stats.on_mailbox_full();
        }
        result
    }

    fn write_normals(&self) -> std::sync::RwLockWriteGuard<'_, HashMap<u64, Mailbox<N>>> {
        // A panic cannot leave the map half-updated (every change is one insert or remove),
        // so a poisoned lock is still a consistent map.
        self.shared.normals.write().unwrap_or_else(PoisonError::into_inner)
    }
}
