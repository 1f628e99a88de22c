//! The pollers: threads that take ready FSMs in batches and run them through a handler.

use std::fmt;
use std::sync::Arc;
use std::thread::{self, JoinHandle};

use crossbeam_channel::{Receiver, Sender, TryRecvError};

use super::config::{BatchConfig, ConfigError};
use super::fsm::Fsm;
use super::mailbox::{Inbox, MailboxCore, Scheduled};
use super::router::{BatchRouter, Task};
use super::stats::BatchStats;

/// What a handler wants done with an FSM once its round ends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HandleResult {
    /// Park the FSM until its next message (it is queued again at once if messages arrived
    /// meanwhile or are left over from the per-round cap).
    Release,
    /// Queue the FSM again even if its mailbox is empty: it has work that no message will
    /// announce (say, a Ready that is not finished yet). It goes to the back of the queue so
    /// that other FSMs get their turn first.
    Reschedule,
}

/// The user's side of a poll round. One handler per poller thread, so it may keep buffers
/// (such as the round's write batch) without locks.
///
/// A round is: `begin`, `handle_control` if the control FSM is in the round, `handle_normal`
/// for each normal FSM, then `end` exactly once, after every FSM of the round was handled
/// and before any of them is released to another poller.
pub trait PollHandler<N: Fsm, C: Fsm> {
    /// A round starts with `fsms_len` FSMs, control included.
    fn begin(&mut self, fsms_len: usize) {
        let _ = fsms_len;
    }

    /// Handles the control FSM with the messages of `inbox`.
    fn handle_control(&mut self, control: &mut C, inbox: &mut Inbox<'_, C::Message>) -> HandleResult;

    /// Handles one normal FSM with the messages of `inbox`.
    fn handle_normal(&mut self, normal: &mut N, inbox: &mut Inbox<'_, N::Message>) -> HandleResult;

    /// Ends the round. `normals` are the round's normal FSMs, in the order they were
    /// handled, and `results` what `handle_normal` returned for each: the store writes all
    /// their Readies in one batch and syncs once here, then sends what waited for
    /// durability. Completing that work can give an FSM more to do (its own append
    /// confirmed may commit entries), so the handler may turn a `Release` into a
    /// `Reschedule` here.
    fn end(&mut self, normals: &mut [Box<N>], results: &mut [HandleResult]) {
        let _ = (normals, results);
    }
}

/// The poller threads of one batch system. Dropping it shuts the pollers down.
pub struct BatchSystem<N: Fsm, C: Fsm> {
    config: BatchConfig,
    router: BatchRouter<N, C>,
    scheduler: Receiver<Task<N, C>>,
    /// Dropped to stop the pollers: a disconnected channel wakes every poller blocked on it
    /// at once, whatever the number of pollers or of tasks in the queue.
    shutdown: Option<Sender<()>>,
    shutdown_signal: Receiver<()>,
    pollers: Vec<JoinHandle<()>>,
}

impl<N: Fsm, C: Fsm> fmt::Debug for BatchSystem<N, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BatchSystem")
            .field("config", &self.config)
            .field("pollers_len", &self.pollers.len())
            .finish_non_exhaustive()
    }
}

impl<N: Fsm, C: Fsm> BatchSystem<N, C> {
    /// Creates a batch system around its control FSM. No thread runs until `spawn`, so
    /// FSMs can be registered and messages queued through `router()` first.
    pub fn new(config: &BatchConfig, control: Box<C>) -> Result<Self, ConfigError> {
        Self::with_name("batch", config, control)
    }

    /// `new`, with `name` as the `system` label of its metrics.
    pub fn with_name(name: &'static str, config: &BatchConfig, control: Box<C>) -> Result<Self, ConfigError> {
        config.validate()?;
        let (scheduler_sender, scheduler) = crossbeam_channel::unbounded();
        let (shutdown, shutdown_signal) = crossbeam_channel::bounded(0);
        let stats = Arc::new(BatchStats::new(name));
        let router = BatchRouter::new(control, scheduler_sender, config.mailbox_len_max, stats);
        Ok(BatchSystem {
            config: config.clone(),
            router,
            scheduler,
            shutdown: Some(shutdown),
            shutdown_signal,
            pollers: Vec::new(),
        })
    }

    /// The router that feeds this system; clone it for every sender.
    pub fn router(&self) -> &BatchRouter<N, C> {
        &self.router
    }

    /// Starts `pool_size` poller threads named `{name_prefix}-{index}`, each with the
    /// handler `build_handler(index)` returns.
    ///
    /// Panics if the pollers were already started: one system has one pool.
    pub fn spawn<H, B>(&mut self, name_prefix: &str, mut build_handler: B) -> std::io::Result<()>
    where
        H: PollHandler<N, C> + Send + 'static,
        B: FnMut(usize) -> H,
    {
        assert!(self.pollers.is_empty() && self.shutdown.is_some(), "a batch system spawns its pollers once");
        for index in 0..self.config.pool_size {
            let poller = Poller {
                handler: build_handler(index),
                router: self.router.clone(),
                scheduler: self.scheduler.clone(),
                shutdown_signal: self.shutdown_signal.clone(),
                batch_fsms_max: self.config.batch_fsms_max,
                messages_per_fsm_max: self.config.messages_per_fsm_max,
            };
            let handle =
                thread::Builder::new().name(format!("{name_prefix}-{index}")).spawn(move || poller.run())?;
            self.pollers.push(handle);
        }
        Ok(())
    }

    /// The counters of this system.
    pub fn stats(&self) -> &Arc<BatchStats> {
        self.router.stats()
    }

    /// Stops the pollers after their current round, joins them, then drops every FSM:
    /// queued ones and parked ones (their mailboxes are closed, so later sends fail with
    /// `Disconnected`). Idempotent.
    ///
    /// Panics if a poller panicked, because that broke an invariant of some handler or of
    /// the system, unless the current thread is already panicking.
    pub fn shutdown(&mut self) {
        if self.shutdown.take().is_none() {
            return;
        }
        let mut poller_panicked = false;
        for poller in self.pollers.drain(..) {
            poller_panicked |= poller.join().is_err();
        }
        self.router.close_all();
        // FSMs still queued were NOTIFIED, so closing did not drop them: drop them here.
        while let Ok(task) = self.scheduler.try_recv() {
            drop(task);
        }
        if poller_panicked && !thread::panicking() {
            panic!("a batch system poller panicked");
        }
    }
}

impl<N: Fsm, C: Fsm> Drop for BatchSystem<N, C> {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// One poller thread's state.
struct Poller<N: Fsm, C: Fsm, H> {
    handler: H,
    router: BatchRouter<N, C>,
    scheduler: Receiver<Task<N, C>>,
    shutdown_signal: Receiver<()>,
    batch_fsms_max: usize,
    messages_per_fsm_max: usize,
}

/// The FSMs of one round, kept in parallel vectors so that `end` gets the FSMs as one
/// slice. Allocated once per poller and reused round after round.
struct Round<N: Fsm, C: Fsm> {
    control: Option<Scheduled<C>>,
    control_result: HandleResult,
    normals: Vec<Box<N>>,
    normal_cores: Vec<Arc<MailboxCore<N>>>,
    normal_results: Vec<HandleResult>,
}

impl<N: Fsm, C: Fsm> Round<N, C> {
    fn len(&self) -> usize {
        self.normals.len() + usize::from(self.control.is_some())
    }

    fn push(&mut self, task: Task<N, C>) {
        match task {
            Task::Normal(Scheduled { fsm, core }) => {
                self.normals.push(fsm);
                self.normal_cores.push(core);
            }
            Task::Control(scheduled) => {
                assert!(self.control.is_none(), "the control FSM is scheduled at most once");
                self.control = Some(scheduled);
            }
        }
    }
}

impl<N: Fsm, C: Fsm, H: PollHandler<N, C>> Poller<N, C, H> {
    fn run(mut self) {
        let mut round = Round {
            control: None,
            control_result: HandleResult::Release,
            normals: Vec::with_capacity(self.batch_fsms_max),
            normal_cores: Vec::with_capacity(self.batch_fsms_max),
            normal_results: Vec::with_capacity(self.batch_fsms_max),
        };
        while self.maybe_fetch(&mut round) {
            self.handle_round(&mut round);
            self.release_round(&mut round);
        }
    }

    /// Fills `round` with up to `batch_fsms_max` FSMs: waits for the first, then takes only
    /// what is already queued, so that a lone FSM is not delayed waiting for company.
    /// Returns false once the system shuts down.
    fn maybe_fetch(&self, round: &mut Round<N, C>) -> bool {
        // Checked before every round, so that a poller with a steady stream of work still
        // stops promptly.
        if let Err(TryRecvError::Disconnected) = self.shutdown_signal.try_recv() {
            return false;
        }
        let first = crossbeam_channel::select! {
            recv(self.scheduler) -> task => task,
            recv(self.shutdown_signal) -> _ => return false,
        };
        let Ok(first) = first else {
            return false;
        };
        round.push(first);
        while round.len() < self.batch_fsms_max {
            match self.scheduler.try_recv() {
                Ok(task) => round.push(task),
                Err(_) => break,
            }
        }
        true
    }

    fn handle_round(&mut self, round: &mut Round<N, C>) {
        self.handler.begin(round.len());
        let (mut messages_len, mut quiet_len) = (0, 0);
        if let Some(control) = round.control.as_mut() {
            let mut inbox = Inbox::new(&control.core.queue, self.messages_per_fsm_max);
            round.control_result = self.handler.handle_control(&mut control.fsm, &mut inbox);
            messages_len += inbox.received();
            quiet_len += inbox.quiet_received();
        }
        for (fsm, core) in round.normals.iter_mut().zip(&round.normal_cores) {
            let mut inbox = Inbox::new(&core.queue, self.messages_per_fsm_max);
            let result = self.handler.handle_normal(fsm, &mut inbox);
            messages_len += inbox.received();
            quiet_len += inbox.quiet_received();
            round.normal_results.push(result);
        }
        self.handler.end(&mut round.normals, &mut round.normal_results);
        self.router.stats().on_round_end(round.len(), messages_len, quiet_len);
    }

    fn release_round(&self, round: &mut Round<N, C>) {
        if let Some(Scheduled { fsm, core }) = round.control.take() {
            release(fsm, core, round.control_result, |scheduled| {
                self.router.schedule(Task::Control(scheduled));
            });
        }
        let fsms =
            round.normals.drain(..).zip(round.normal_cores.drain(..)).zip(round.normal_results.drain(..));
        for ((fsm, core), result) in fsms {
            release(fsm, core, result, |scheduled| {
                self.router.schedule(Task::Normal(scheduled));
            });
        }
    }
}

/// Gives one FSM back after its round, as its handler asked.
fn release<F: Fsm>(
    fsm: Box<F>,
    core: Arc<MailboxCore<F>>,
    result: HandleResult,
    schedule: impl FnOnce(Scheduled<F>),
) {
    if fsm.is_stopped() || core.is_closed() {
        core.close();
        drop(fsm);
        return;
    }
    match result {
        HandleResult::Release => core.release(fsm, schedule),
        HandleResult::Reschedule => schedule(Scheduled { fsm, core }),
    }
}
