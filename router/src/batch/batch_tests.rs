use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};

use super::*;

/// How long a test waits for work it expects before it declares the work lost.
const WAIT: Duration = Duration::from_secs(5);

#[derive(Debug, PartialEq, Eq)]
enum Msg {
    Value { sender: usize, seq: usize },
    Stop,
}

/// A normal FSM that only remembers whether it was told to stop. It holds a clone of a
/// sender that its test watches: the channel disconnects once every such FSM is dropped.
struct Node {
    id: u64,
    stopped: bool,
    /// How many more times the handler asks for `Reschedule` without a message.
    reschedules_len: usize,
    /// If set, the handler reports entering this FSM on the first channel and then waits
    /// on the second, so a test can act while a poller holds the FSM.
    gate: Option<(Sender<()>, Receiver<()>)>,
    /// Its answer to `quiet_messages_held_max`, or, if `quiet_held_cycle` is set, the
    /// cycle's entry for the number of messages it handled so far (so the answer changes
    /// from one release to the next).
    quiet_held_max: usize,
    quiet_held_cycle: Option<Vec<usize>>,
    /// Messages handled so far.
    handled: usize,
    /// Like `gate`, but in the round's end, after every inbox of the round was drained.
    end_gate: Option<(Sender<()>, Receiver<()>)>,
    _alive: Sender<()>,
    _router: Option<BatchRouter<Node, Control>>,
}

impl Fsm for Node {
    type Message = Msg;

    fn is_stopped(&self) -> bool {
        self.stopped
    }

    fn quiet_messages_held_max(&self) -> usize {
        match &self.quiet_held_cycle {
            Some(cycle) => cycle[self.handled % cycle.len()],
            None => self.quiet_held_max,
        }
    }
}

struct Control;

impl Fsm for Control {
    type Message = u64;
}

#[derive(Debug, PartialEq, Eq)]
enum Event {
    Handled { id: u64, sender: usize, seq: usize },
    Control(u64),
}

/// What a handler saw of one round.
#[derive(Debug, Default)]
struct Round {
    fsms_len: usize,
    normal_ids: Vec<u64>,
    inbox_lens: Vec<usize>,
    ended_with: Vec<u64>,
}

/// A handler that reports every message as an event and every round as a `Round`.
struct Recorder {
    events: Sender<Event>,
    rounds: Arc<Mutex<Vec<Round>>>,
    current: Option<Round>,
    /// One flag per FSM id, set from the FSM's `handle_normal` until the end of its round:
    /// another poller handling the FSM in that span would mean it was released too early.
    in_use: Arc<Vec<AtomicBool>>,
    _alive: Sender<()>,
}

impl PollHandler<Node, Control> for Recorder {
    fn begin(&mut self, fsms_len: usize) {
        assert!(self.current.is_none(), "begin twice without end");
        self.current = Some(Round { fsms_len, ..Round::default() });
    }

    fn handle_control(&mut self, _: &mut Control, inbox: &mut Inbox<'_, u64>) -> HandleResult {
        for value in inbox.by_ref() {
            self.events.send(Event::Control(value)).unwrap();
        }
        let round = self.current.as_mut().expect("handle_control inside a round");
        round.inbox_lens.push(inbox.received());
        HandleResult::Release
    }

    fn handle_normal(&mut self, node: &mut Node, inbox: &mut Inbox<'_, Msg>) -> HandleResult {
        let in_use = &self.in_use[node.id as usize];
        assert!(!in_use.swap(true, Ordering::SeqCst), "FSM {} handled by two pollers at once", node.id);
        if let Some((entered, proceed)) = &node.gate {
            entered.send(()).unwrap();
            proceed.recv_timeout(WAIT).unwrap();
        }
        // Leave room for another poller to collide with this one, if it could.
        thread::yield_now();
        for message in inbox.by_ref() {
            node.handled += 1;
            match message {
                Msg::Value { sender, seq } => {
                    let event = Event::Handled { id: node.id, sender, seq };
                    self.events.send(event).unwrap();
                }
                Msg::Stop => node.stopped = true,
            }
        }
        let round = self.current.as_mut().expect("handle_normal inside a round");
        round.normal_ids.push(node.id);
        round.inbox_lens.push(inbox.received());
        if node.reschedules_len > 0 {
            node.reschedules_len -= 1;
            return HandleResult::Reschedule;
        }
        HandleResult::Release
    }

    fn end(&mut self, normals: &mut [Box<Node>], _results: &mut [HandleResult]) {
        let mut round = self.current.take().expect("end inside a round");
        round.ended_with = normals.iter().map(|node| node.id).collect();
        for node in normals.iter() {
            if let Some((entered, proceed)) = &node.end_gate {
                entered.send(()).unwrap();
                proceed.recv_timeout(WAIT).unwrap();
            }
        }
        for node in normals.iter() {
            self.in_use[node.id as usize].store(false, Ordering::SeqCst);
        }
        self.rounds.lock().unwrap().push(round);
    }
}

struct Harness {
    router: BatchRouter<Node, Control>,
    system: BatchSystem<Node, Control>,
    events: Receiver<Event>,
    events_sender: Sender<Event>,
    rounds: Arc<Mutex<Vec<Round>>>,
    /// Disconnects once every FSM and handler of the test is dropped.
    alive: Receiver<()>,
    alive_sender: Option<Sender<()>>,
}

const FSMS_LEN_MAX: usize = 64;

impl Harness {
    fn new(
        pool_size: usize,
        batch_fsms_max: usize,
        messages_per_fsm_max: usize,
        mailbox_len_max: usize,
    ) -> Harness {
        let config = BatchConfig { pool_size, batch_fsms_max, messages_per_fsm_max, mailbox_len_max };
        let system = BatchSystem::new(&config, Box::new(Control)).unwrap();
        let router = system.router().clone();
        let (events_sender, events) = crossbeam_channel::unbounded();
        let (alive_sender, alive) = crossbeam_channel::bounded(0);
        Harness {
            router,
            system,
            events,
            events_sender,
            rounds: Arc::default(),
            alive,
            alive_sender: Some(alive_sender),
        }
    }

    fn node(&self, id: u64) -> Box<Node> {
        assert!((id as usize) < FSMS_LEN_MAX);
        Box::new(Node {
            id,
            stopped: false,
            reschedules_len: 0,
            gate: None,
            quiet_held_max: usize::MAX,
            quiet_held_cycle: None,
            handled: 0,
            end_gate: None,
            _alive: self.alive_sender.clone().unwrap(),
            _router: None,
        })
    }

    fn register(&self, ids: std::ops::Range<u64>) {
        for id in ids {
            self.router.register(id, self.node(id)).unwrap();
        }
    }

    fn spawn(&mut self) {
        let in_use: Arc<Vec<AtomicBool>> =
            Arc::new((0..FSMS_LEN_MAX).map(|_| AtomicBool::new(false)).collect());
        let events = self.events_sender.clone();
        let rounds = self.rounds.clone();
        let alive = self.alive_sender.clone().unwrap();
        self.system
            .spawn("test-poller", |_| Recorder {
                events: events.clone(),
                rounds: rounds.clone(),
                current: None,
                in_use: in_use.clone(),
                _alive: alive.clone(),
            })
            .unwrap();
    }

    /// Waits for `len` events, or fails naming how many arrived.
    fn collect(&self, len: usize) -> Vec<Event> {
        let deadline = Instant::now() + WAIT;
        let mut events = Vec::with_capacity(len);
        while events.len() < len {
            match self.events.recv_deadline(deadline) {
                Ok(event) => events.push(event),
                Err(_) => panic!(
                    "only {} of {len} messages handled after {WAIT:?}: lost wakeup or dropped message",
                    events.len()
                ),
            }
        }
        events
    }

    fn assert_no_more_events(&self) {
        let extra = self.events.recv_timeout(Duration::from_millis(5));
        assert!(extra.is_err(), "unexpected event {extra:?}");
    }

    /// Shuts the system down and returns the rounds it recorded.
    fn shutdown(&mut self) -> Vec<Round> {
        self.system.shutdown();
        let rounds = std::mem::take(&mut *self.rounds.lock().unwrap());
        assert_eq!(rounds.len() as u64, self.router.stats().poll_rounds());
        for round in &rounds {
            assert_eq!(round.normal_ids, round.ended_with, "end sees exactly the round's normal FSMs");
            assert_eq!(round.inbox_lens.len(), round.fsms_len);
        }
        rounds
    }
}

/// Sends, waiting out full mailboxes the way a well-behaved client backs off.
fn send_retrying(router: &BatchRouter<Node, Control>, addr: u64, mut message: Msg) {
    let deadline = Instant::now() + WAIT;
    loop {
        match router.send(addr, message) {
            Ok(()) => return,
            Err(SendError::Full(back)) if Instant::now() < deadline => {
                message = back;
                thread::yield_now();
            }
            Err(error) => panic!("send to {addr} failed: {error:?}"),
        }
    }
}

/// Sends `messages_len` values to each FSM in `ids` from each of `senders_len` threads.
fn send_from_threads(
    router: &BatchRouter<Node, Control>,
    ids: std::ops::Range<u64>,
    senders_len: usize,
    messages_len: usize,
) {
    thread::scope(|scope| {
        for sender in 0..senders_len {
            let ids = ids.clone();
            scope.spawn(move || {
                for seq in 0..messages_len {
                    for id in ids.clone() {
                        send_retrying(router, id, Msg::Value { sender, seq });
                    }
                }
            });
        }
    });
}

/// Checks that each (FSM, sender) pair got `0..messages_len` exactly once, in order.
fn assert_each_once_in_order(events: &[Event], messages_len: usize) {
    let mut seqs: HashMap<(u64, usize), Vec<usize>> = HashMap::new();
    for event in events {
        let Event::Handled { id, sender, seq } = event else {
            panic!("unexpected {event:?}");
        };
        seqs.entry((*id, *sender)).or_default().push(*seq);
    }
    let expected: Vec<usize> = (0..messages_len).collect();
    for (key, got) in seqs {
        assert_eq!(got, expected, "messages of (fsm, sender) {key:?}");
    }
}

#[test]
fn every_message_arrives_once_and_in_order_from_many_senders() {
    let mut harness = Harness::new(2, 4, 8, 16);
    harness.register(0..8);
    harness.spawn();
    let (senders_len, messages_len) = (4, 250);
    send_from_threads(&harness.router, 0..8, senders_len, messages_len);
    let events = harness.collect(8 * senders_len * messages_len);
    assert_each_once_in_order(&events, messages_len);
    harness.assert_no_more_events();
    harness.shutdown();
}

#[test]
fn no_fsm_is_handled_by_two_pollers_at_once() {
    let mut harness = Harness::new(3, 2, 1, 8);
    harness.register(0..4);
    harness.spawn();
    send_from_threads(&harness.router, 0..4, 3, 200);
    harness.collect(4 * 3 * 200);
    harness.shutdown();
}

#[test]
fn a_round_respects_the_message_and_fsm_caps() {
    let mut harness = Harness::new(2, 3, 2, 16);
    harness.register(0..10);
    for id in 0..10 {
        for seq in 0..9 {
            harness.router.send(id, Msg::Value { sender: 0, seq }).unwrap();
        }
    }
    harness.spawn();
    let events = harness.collect(10 * 9);
    assert_each_once_in_order(&events, 9);
    let rounds = harness.shutdown();
    for round in &rounds {
        assert!(round.fsms_len <= 3, "round of {} FSMs", round.fsms_len);
        assert!(
            round.inbox_lens.iter().all(|len| *len <= 2),
            "inboxes {:?} exceed messages_per_fsm_max",
            round.inbox_lens
        );
    }
    // Nine messages at two per round: every FSM comes back at least five times.
    let handled_len: usize = rounds.iter().map(|round| round.normal_ids.len()).sum();
    assert!(handled_len >= 10 * 5, "only {handled_len} FSM handlings");
}

#[test]
fn rounds_batch_several_fsms_and_end_once_each() {
    let mut harness = Harness::new(2, 8, 4, 4);
    harness.register(0..32);
    for id in 0..32 {
        harness.router.send(id, Msg::Value { sender: 0, seq: 0 }).unwrap();
    }
    harness.spawn();
    harness.collect(32);
    let rounds = harness.shutdown();
    let round_fsms_max = rounds.iter().map(|round| round.fsms_len).max().unwrap();
    assert!(round_fsms_max > 1 && round_fsms_max <= 8, "largest round had {round_fsms_max} FSMs");
    let stats = harness.router.stats();
    assert_eq!(stats.round_fsms_max(), round_fsms_max as u64);
    // One message each, so each FSM is handled once and then parked.
    assert_eq!(stats.fsms_handled(), 32);
    assert_eq!(stats.messages_handled(), 32);
}

#[test]
fn a_full_mailbox_refuses_counts_and_drops_nothing() {
    let mut harness = Harness::new(2, 4, 8, 4);
    harness.register(0..1);
    // No poller runs yet, so the mailbox can only fill up.
    for seq in 0..4 {
        harness.router.send(0, Msg::Value { sender: 0, seq }).unwrap();
    }
    let refused = harness.router.send(0, Msg::Value { sender: 0, seq: 4 });
    assert_eq!(refused, Err(SendError::Full(Msg::Value { sender: 0, seq: 4 })));
    assert_eq!(harness.router.stats().mailbox_full(), 1);
    assert_eq!(harness.router.mailbox_len(0), Some(4));

    harness.spawn();
    let events = harness.collect(4);
    assert_each_once_in_order(&events, 4);
    harness.router.send(0, Msg::Value { sender: 1, seq: 0 }).unwrap();
    let events = harness.collect(1);
    assert_eq!(events, [Event::Handled { id: 0, sender: 1, seq: 0 }]);
    harness.shutdown();
}

#[test]
fn unknown_closed_and_control_addresses() {
    let mut harness = Harness::new(2, 4, 8, 4);
    let refused = harness.router.send(99, Msg::Stop).unwrap_err();
    assert!(matches!(refused, SendError::UnknownAddress(_)));
    assert_eq!(refused.into_message(), Msg::Stop);

    harness.register(1..3);
    let in_use = harness.router.register(1, harness.node(1)).unwrap_err();
    assert_eq!(in_use.addr, 1);
    harness.spawn();

    harness.router.send_control(7).unwrap();
    assert_eq!(harness.collect(1), [Event::Control(7)]);

    // An FSM that stops is dropped by its poller; its address answers Disconnected until
    // its owner closes it.
    harness.router.send(1, Msg::Stop).unwrap();
    let deadline = Instant::now() + WAIT;
    loop {
        match harness.router.send(1, Msg::Value { sender: 0, seq: 0 }) {
            Err(SendError::Disconnected(_)) => break,
            Ok(()) | Err(SendError::Full(_)) if Instant::now() < deadline => {
                thread::sleep(Duration::from_millis(1));
            }
            other => panic!("a stopped FSM still answers {other:?}"),
        }
    }
    assert!(harness.router.close(1));
    assert!(!harness.router.close(1));
    assert!(matches!(harness.router.send(1, Msg::Stop), Err(SendError::UnknownAddress(_))));
    // The address is free again.
    harness.router.register(1, harness.node(1)).unwrap();
    harness.router.send(1, Msg::Value { sender: 3, seq: 0 }).unwrap();
    // Messages sent to the stopped FSM before the check saw Disconnected may have been
    // handled; only the last one matters here.
    let deadline = Instant::now() + WAIT;
    loop {
        match harness.events.recv_deadline(deadline) {
            Ok(Event::Handled { id: 1, sender: 3, seq: 0 }) => break,
            Ok(_) => continue,
            Err(_) => panic!("the re-registered FSM got no message"),
        }
    }
    assert_eq!(harness.router.len(), 2);
    harness.shutdown();
}

#[test]
fn a_rescheduled_fsm_comes_back_without_a_message() {
    let mut harness = Harness::new(2, 4, 4, 4);
    let mut node = harness.node(0);
    node.reschedules_len = 3;
    harness.router.register(0, node).unwrap();
    harness.spawn();
    harness.router.send(0, Msg::Value { sender: 0, seq: 0 }).unwrap();
    harness.collect(1);
    let stats = harness.router.stats().clone();
    let deadline = Instant::now() + WAIT;
    while stats.fsms_handled() < 4 {
        assert!(Instant::now() < deadline, "rescheduled FSM was not handled again");
        thread::sleep(Duration::from_millis(1));
    }
    // Then it parks: nothing handles it again.
    thread::sleep(Duration::from_millis(5));
    assert_eq!(stats.fsms_handled(), 4);
    harness.shutdown();
}

#[test]
fn closing_an_idle_fsm_drops_it_at_once() {
    let harness = Harness::new(1, 1, 1, 1);
    let (alive_sender, alive) = crossbeam_channel::bounded::<()>(0);
    let node = Box::new(Node {
        id: 5,
        stopped: false,
        reschedules_len: 0,
        gate: None,
        quiet_held_max: usize::MAX,
        quiet_held_cycle: None,
        handled: 0,
        end_gate: None,
        _alive: alive_sender,
        _router: None,
    });
    harness.router.register(5, node).unwrap();
    assert!(harness.router.close(5));
    assert_eq!(alive.try_recv(), Err(crossbeam_channel::TryRecvError::Disconnected));
}

#[test]
fn closing_an_fsm_held_by_a_poller_drops_it_on_release() {
    let mut harness = Harness::new(1, 1, 1, 4);
    let (alive_sender, alive) = crossbeam_channel::bounded::<()>(0);
    let (entered_sender, entered) = crossbeam_channel::bounded(1);
    let (proceed, proceed_receiver) = crossbeam_channel::bounded(1);
    let mut node = harness.node(5);
    node._alive = alive_sender;
    node.gate = Some((entered_sender, proceed_receiver));
    harness.router.register(5, node).unwrap();
    harness.spawn();
    harness.router.send(5, Msg::Value { sender: 0, seq: 0 }).unwrap();
    entered.recv_timeout(WAIT).unwrap();
    assert!(harness.router.close(5));
    // The poller still holds it, so it is still alive.
    assert_eq!(alive.try_recv(), Err(crossbeam_channel::TryRecvError::Empty));
    proceed.send(()).unwrap();
    assert_eq!(harness.collect(1), [Event::Handled { id: 5, sender: 0, seq: 0 }]);
    assert_eq!(alive.recv_timeout(WAIT), Err(RecvTimeoutError::Disconnected));
    harness.shutdown();
}

#[test]
fn a_quiet_message_waits_for_the_next_waking_one_and_goes_first() {
    let mut harness = Harness::new(1, 4, 8, 8);
    harness.register(0..1);
    harness.spawn();
    // Released once, so that the mailbox knows the FSM takes quiet news late (before its
    // first release a mailbox assumes it does not).
    release_once(&harness, 0);
    // Quiet messages wake nobody. (They count toward the mailbox's length, but like forced
    // sends they are not refused for it: they are bounded by the work they answer.)
    for seq in 0..6 {
        harness.router.force_send_quiet(0, Msg::Value { sender: 1, seq }).unwrap();
    }
    thread::sleep(Duration::from_millis(20));
    harness.assert_no_more_events();
    assert_eq!(harness.router.stats().poll_rounds(), 1);
    // The next ordinary message takes them along, in order, in one round.
    harness.router.send(0, Msg::Value { sender: 0, seq: 1 }).unwrap();
    let events = harness.collect(7);
    let expected: Vec<Event> = (0..6)
        .map(|seq| Event::Handled { id: 0, sender: 1, seq })
        .chain([Event::Handled { id: 0, sender: 0, seq: 1 }])
        .collect();
    assert_eq!(events, expected);
    // No message was handled twice, and nothing woke the FSM again.
    thread::sleep(Duration::from_millis(20));
    harness.assert_no_more_events();
    let stats = harness.router.stats();
    assert_eq!(
        (stats.messages_handled(), stats.quiet_messages_handled()),
        (8, 6),
        "the quiet ones are counted"
    );
    let rounds = harness.shutdown();
    assert_eq!(rounds.len(), 2, "one round for the waking message and the quiet ones before it");
    assert_eq!(harness.router.force_send_quiet(9, Msg::Stop), Err(SendError::UnknownAddress(Msg::Stop)));
}

#[test]
fn a_quiet_message_sent_during_a_round_does_not_reschedule_the_fsm() {
    let mut harness = Harness::new(1, 1, 8, 4);
    let (entered_sender, entered) = crossbeam_channel::bounded(1);
    let (proceed, proceed_receiver) = crossbeam_channel::bounded(1);
    let mut node = harness.node(3);
    node.end_gate = Some((entered_sender, proceed_receiver));
    harness.router.register(3, node).unwrap();
    harness.spawn();
    harness.router.send(3, Msg::Value { sender: 0, seq: 0 }).unwrap();
    entered.recv_timeout(WAIT).unwrap();
    // The poller drained the FSM's inbox and holds it in the round's end when a quiet message
    // arrives: the release must park the FSM with it rather than queue the FSM again (that
    // second round is what quiet saves).
    harness.router.force_send_quiet(3, Msg::Value { sender: 1, seq: 0 }).unwrap();
    proceed.send(()).unwrap();
    assert_eq!(harness.collect(1), [Event::Handled { id: 3, sender: 0, seq: 0 }]);
    // A second round would stop at the end gate, and nothing handles the quiet message.
    assert!(entered.recv_timeout(Duration::from_millis(50)).is_err(), "the FSM was scheduled again");
    harness.assert_no_more_events();
    assert_eq!(harness.router.stats().poll_rounds(), 1);
    assert_eq!(harness.router.mailbox_len(3), Some(1));
    // The next waking message takes it along, first.
    harness.router.send(3, Msg::Value { sender: 0, seq: 1 }).unwrap();
    entered.recv_timeout(WAIT).unwrap();
    proceed.send(()).unwrap();
    assert_eq!(
        harness.collect(2)[..],
        [Event::Handled { id: 3, sender: 1, seq: 0 }, Event::Handled { id: 3, sender: 0, seq: 1 }]
    );
    harness.shutdown();
}

#[test]
fn a_quiet_message_wakes_an_fsm_that_waits_for_it() {
    let mut harness = Harness::new(2, 4, 8, 4);
    let mut node = harness.node(4);
    node.quiet_held_max = 0;
    harness.router.register(4, node).unwrap();
    harness.spawn();
    release_once(&harness, 4);
    harness.router.force_send_quiet(4, Msg::Value { sender: 1, seq: 0 }).unwrap();
    assert_eq!(harness.collect(1), [Event::Handled { id: 4, sender: 1, seq: 0 }]);
    harness.shutdown();
}

#[test]
fn quiet_messages_wake_an_fsm_once_more_wait_than_it_holds() {
    let mut harness = Harness::new(1, 4, 8, 8);
    let mut node = harness.node(6);
    node.quiet_held_max = 2;
    harness.router.register(6, node).unwrap();
    harness.spawn();
    release_once(&harness, 6);
    // Two are held (the bounded send counts toward the mailbox like any other)...
    harness.router.send_quiet(6, Msg::Value { sender: 1, seq: 0 }).unwrap();
    harness.router.force_send_quiet(6, Msg::Value { sender: 1, seq: 1 }).unwrap();
    thread::sleep(Duration::from_millis(20));
    harness.assert_no_more_events();
    // ... the third wakes the FSM, which takes all three in order.
    harness.router.send_quiet(6, Msg::Value { sender: 1, seq: 2 }).unwrap();
    let events = harness.collect(3);
    assert_each_once_in_order(&events, 3);
    harness.shutdown();
}

/// However many quiet messages an FSM says it can hold, a mailbox that they fill wakes it:
/// a full mailbox refuses ordinary sends, and nobody else would ever empty it.
#[test]
fn quiet_messages_that_fill_the_mailbox_wake_the_fsm() {
    let mut harness = Harness::new(1, 4, 8, 3);
    harness.register(0..1);
    harness.spawn();
    release_once(&harness, 0);
    for seq in 0..2 {
        harness.router.send_quiet(0, Msg::Value { sender: 1, seq }).unwrap();
    }
    thread::sleep(Duration::from_millis(20));
    harness.assert_no_more_events();
    harness.router.send_quiet(0, Msg::Value { sender: 1, seq: 2 }).unwrap();
    assert_each_once_in_order(&harness.collect(3), 3);
    harness.shutdown();
}

#[test]
fn a_bounded_quiet_send_is_refused_by_a_full_mailbox() {
    let harness = Harness::new(1, 1, 1, 2);
    harness.register(0..1);
    harness.router.send_quiet(0, Msg::Value { sender: 0, seq: 0 }).unwrap();
    harness.router.send(0, Msg::Value { sender: 0, seq: 1 }).unwrap();
    let refused = harness.router.send_quiet(0, Msg::Value { sender: 0, seq: 2 });
    assert_eq!(refused, Err(SendError::Full(Msg::Value { sender: 0, seq: 2 })));
    assert_eq!(harness.router.stats().mailbox_full(), 1);
}

/// Quiet senders racing pollers that release FSMs saying, from one release to the next, that
/// they hold 3, 0 or 5 quiet messages: once the senders stop and the pollers go quiet, no
/// FSM is parked with more quiet messages than it said it holds (a lost wakeup would leave
/// more), and nothing is lost or handled twice.
#[test]
fn no_quiet_wakeup_is_lost_while_pollers_release() {
    const CYCLE: [usize; 3] = [3, 0, 5];
    let mut harness = Harness::new(2, 2, 1, 8);
    for id in 0..2 {
        let mut node = harness.node(id);
        node.quiet_held_cycle = Some(CYCLE.to_vec());
        harness.router.register(id, node).unwrap();
    }
    harness.spawn();
    let (senders_len, messages_len) = (4, 2000);
    thread::scope(|scope| {
        for sender in 0..senders_len {
            let router = &harness.router;
            scope.spawn(move || {
                for seq in 0..messages_len {
                    for id in 0..2 {
                        router.force_send_quiet(id, Msg::Value { sender, seq }).unwrap();
                    }
                }
            });
        }
    });
    let sent = senders_len * messages_len;
    // Everything the pollers will do on their own, they do within a short while.
    let mut events = Vec::new();
    while let Ok(event) = harness.events.recv_timeout(Duration::from_millis(200)) {
        events.push(event);
    }
    for id in 0..2u64 {
        let handled = events.iter().filter(|e| matches!(e, Event::Handled { id: i, .. } if *i == id)).count();
        let queued = harness.router.mailbox_len(id).unwrap();
        assert_eq!(handled + queued, sent, "FSM {id}: every message is handled or queued");
        // The FSM was last released after handling `handled` messages, so it holds at most
        // what its cycle says for that count.
        let held_max = CYCLE[handled % CYCLE.len()];
        assert!(
            queued <= held_max,
            "FSM {id} parked with {queued} quiet messages, holding at most {held_max}"
        );
    }
    // One ordinary message each takes the held ones along.
    for id in 0..2 {
        send_retrying(&harness.router, id, Msg::Value { sender: senders_len, seq: 0 });
    }
    let rest = 2 * sent + 2 - events.len();
    events.extend(harness.collect(rest));
    let quiet: Vec<Event> = events
        .into_iter()
        .filter(|event| !matches!(event, Event::Handled { sender, .. } if *sender == senders_len))
        .collect();
    assert_each_once_in_order(&quiet, messages_len);
    harness.shutdown();
}

/// Waits until the system has completed `rounds` rounds (and so released their FSMs).
/// Sends FSM `id` one ordinary message and waits until the poller has handled it and
/// released the FSM, so that its mailbox has heard how many quiet messages it holds (before
/// its first release a mailbox assumes none).
fn release_once(harness: &Harness, id: u64) {
    harness.router.send(id, Msg::Value { sender: 0, seq: 0 }).unwrap();
    harness.collect(1);
    wait_for_rounds(harness, 1);
}

fn wait_for_rounds(harness: &Harness, rounds: u64) {
    let deadline = Instant::now() + WAIT;
    while harness.router.stats().poll_rounds() < rounds {
        assert!(Instant::now() < deadline, "{rounds} rounds did not complete");
        thread::sleep(Duration::from_millis(1));
    }
    // The count goes up in the round's end, just before the release.
    thread::sleep(Duration::from_millis(5));
}

#[test]
fn no_wakeup_is_lost_while_pollers_release() {
    // Two FSMs, one message per round, tiny mailboxes: senders keep hitting FSMs at the
    // moment their poller parks them.
    let mut harness = Harness::new(2, 2, 1, 4);
    harness.register(0..2);
    harness.spawn();
    let (senders_len, messages_len) = (4, 2000);
    send_from_threads(&harness.router, 0..2, senders_len, messages_len);
    let events = harness.collect(2 * senders_len * messages_len);
    assert_each_once_in_order(&events, messages_len);
    harness.shutdown();
}

#[test]
fn shutdown_joins_pollers_and_drops_every_fsm() {
    let mut harness = Harness::new(2, 4, 4, 8);
    // FSMs that hold the router form a cycle through their own mailboxes; shutdown must
    // break it.
    for id in 0..6 {
        let mut node = harness.node(id);
        node._router = Some(harness.router.clone());
        harness.router.register(id, node).unwrap();
    }
    harness.spawn();
    for id in 0..6 {
        harness.router.send(id, Msg::Value { sender: 0, seq: 0 }).unwrap();
    }
    harness.collect(6);
    harness.system.shutdown();
    assert!(matches!(harness.router.send(0, Msg::Stop), Err(SendError::UnknownAddress(_))));
    assert!(matches!(harness.router.send_control(1), Err(SendError::Disconnected(_))));
    harness.alive_sender = None;
    // Every handler (dropped when its thread ended) and every FSM is gone.
    assert_eq!(harness.alive.recv_timeout(WAIT), Err(RecvTimeoutError::Disconnected));
}

#[test]
fn config_rejects_zero_limits() {
    assert_eq!(BatchConfig::default().validate(), Ok(()));
    let zeroed = [
        ("pool_size", BatchConfig { pool_size: 0, ..BatchConfig::default() }),
        ("batch_fsms_max", BatchConfig { batch_fsms_max: 0, ..BatchConfig::default() }),
        ("messages_per_fsm_max", BatchConfig { messages_per_fsm_max: 0, ..BatchConfig::default() }),
        ("mailbox_len_max", BatchConfig { mailbox_len_max: 0, ..BatchConfig::default() }),
    ];
    for (field, config) in zeroed {
        assert_eq!(config.validate(), Err(ConfigError::Zero { field }));
        let created = BatchSystem::<Node, Control>::new(&config, Box::new(Control));
        assert_eq!(created.err(), Some(ConfigError::Zero { field }));
    }
}
