//! A tiny replicated key-value store on the Raft core: the counterpart of etcd's
//! raftexample, for those who embed only the core.
//!
//! Three nodes run on threads, connected by channels. Each runs the canonical driver loop:
//! tick on a timer, step incoming messages, and for each Ready: send `messages`, persist,
//! send `persisted_messages`, apply committed entries, advance. The main thread writes
//! keys, adds a fourth node with a membership change, and reads linearizably from a
//! follower. Run it with `cargo run -p tessera-raft --example kv`.

use std::collections::{BTreeMap, HashMap};
use std::sync::mpsc::{channel, Receiver, RecvTimeoutError, Sender};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use tessera_raft::raftpb::{ConfChangeSingle, ConfChangeType, ConfChangeV2, EntryType, Message};
use tessera_raft::{conf_change_of, Config, MemStorage, RawNode, StateRole};

const TICK_INTERVAL: Duration = Duration::from_millis(10);

/// Where a read's answer goes.
type ReadReply = Sender<Result<Option<String>, String>>;

/// What a node thread receives: a peer's message, or a client's request.
enum Input {
    Raft(Box<Message>),
    Put { key: String, value: String, reply: Sender<Result<(), String>> },
    Read { key: String, reply: ReadReply },
    AddVoter { id: u64, reply: Sender<Result<(), String>> },
    Stop,
}

/// The mailboxes of every node, shared by all threads; a real system has a transport here.
#[derive(Clone)]
struct Network {
    mailboxes: std::sync::Arc<std::sync::Mutex<HashMap<u64, Sender<Input>>>>,
}

impl Network {
    fn send(&self, m: Message) {
        if let Some(mailbox) = self.mailboxes.lock().unwrap().get(&m.to) {
            // A stopped node drops its mail, as a crashed one would.
            let _ = mailbox.send(Input::Raft(Box::new(m)));
        }
    }
}

/// One node: the Raft state machine, its storage, and the applied key-value map.
struct Node {
    raft: RawNode<MemStorage>,
    storage: MemStorage,
    kv: BTreeMap<String, String>,
    network: Network,
    /// Writes waiting to apply, by the unique request id carried in the entry's context.
    pending_writes: HashMap<Vec<u8>, Sender<Result<(), String>>>,
    /// Reads waiting for their ReadState, by request id.
    pending_reads: HashMap<Vec<u8>, (String, ReadReply)>,
    /// Reads confirmed at an index, waiting for the apply to reach it.
    confirmed_reads: Vec<(u64, String, ReadReply)>,
    next_request_id: u64,
}

impl Node {
    fn request_id(&mut self) -> Vec<u8> {
        self.next_request_id += 1;
        format!("{}:{}", self.raft.raft().id(), self.next_request_id).into_bytes()
    }

    fn handle_input(&mut self, input: Input) -> bool {
        match input {
            Input::Raft(m) => {
                let _ = self.raft.step(*m);
            }
            Input::Put { key, value, reply } => {
                let id = self.request_id();
                let entry = tessera_raft::raftpb::Entry {
                    data: format!("{key}={value}").into_bytes().into(),
                    context: id.clone(),
                    ..Default::default()
                };
                match self.raft.propose_entries(vec![entry]) {
                    Ok(()) => {
                        self.pending_writes.insert(id, reply);
                    }
                    Err(e) => {
                        let _ = reply.send(Err(e.to_string()));
                    }
                }
            }
            Input::Read { key, reply } => {
                let id = self.request_id();
                match self.raft.read_index(id.clone()) {
                    Ok(()) => {
                        self.pending_reads.insert(id, (key, reply));
                    }
                    Err(e) => {
                        let _ = reply.send(Err(e.to_string()));
                    }
                }
            }
            Input::AddVoter { id, reply } => {
                let change = ConfChangeSingle { change_type: ConfChangeType::AddNode as i32, node_id: id };
                let cc = ConfChangeV2 { changes: vec![change], ..Default::default() };
                let request = self.request_id();
                match self.raft.propose_conf_change(request.clone(), cc) {
                    Ok(()) => {
                        self.pending_writes.insert(request, reply);
                    }
                    Err(e) => {
                        let _ = reply.send(Err(e.to_string()));
                    }
                }
            }
            Input::Stop => return false,
        }
        true
    }

    /// The canonical way to consume a Ready, in order.
    fn handle_ready(&mut self) {
        if !self.raft.has_ready() {
            return;
        }
        let rd = self.raft.ready();
        // 1. Messages that do not wait for our disk (e.g. the leader's appends).
        for m in rd.messages.iter().cloned() {
            self.network.send(m);
        }
        // 2. Persist, in one write: snapshot, entries, hard state.
        {
            let mut store = self.storage.wl();
            if let Some(snapshot) = &rd.snapshot {
                store.apply_snapshot(snapshot.clone()).expect("snapshot applies");
            }
            store.append(&rd.entries).expect("entries append");
            if let Some(hs) = &rd.hard_state {
                store.set_hard_state(*hs);
            }
        }
        // 3. Messages that promise durability (votes, append acknowledgements).
        for m in rd.persisted_messages.iter().cloned() {
            self.network.send(m);
        }
        // Confirmed reads wait for the apply to catch up with their index.
        for rs in &rd.read_states {
            if let Some((key, reply)) = self.pending_reads.remove(rs.request_ctx.as_ref()) {
                self.confirmed_reads.push((rs.index, key, reply));
            }
        }
        // 4. Apply committed entries.
        let mut applied = 0;
        for entry in &rd.committed_entries {
            applied = entry.index;
            if entry.entry_type() == EntryType::EntryNormal {
                if let Some((key, value)) =
                    std::str::from_utf8(&entry.data).ok().and_then(|s| s.split_once('='))
                {
                    self.kv.insert(key.to_string(), value.to_string());
                }
            } else {
                let cc = conf_change_of(entry).expect("a committed change decodes").expect("a change");
                match self.raft.apply_conf_change(&cc) {
                    Ok(cs) => self.storage.wl().set_conf_state(cs),
                    Err(e) => eprintln!("membership change refused at apply: {e}"),
                }
            }
            if let Some(reply) = self.pending_writes.remove(&entry.context) {
                let _ = reply.send(Ok(()));
            }
        }
        // 5. Advance.
        self.raft.advance(rd);
        let applied = applied.max(self.raft.raft().raft_log().applied);
        let kv = &self.kv;
        self.confirmed_reads.retain(|(index, key, reply)| {
            if *index > applied {
                return true;
            }
            let _ = reply.send(Ok(kv.get(key).cloned()));
            false
        });
    }

    /// The driver loop: wait for input or the next tick, then handle the Ready. The role
    /// and leader are published after every turn so that clients can find the leader.
    fn run(mut self, inbox: Receiver<Input>, status: std::sync::Arc<std::sync::Mutex<(StateRole, u64)>>) {
        let mut next_tick = Instant::now() + TICK_INTERVAL;
        loop {
            let timeout = next_tick.saturating_duration_since(Instant::now());
            match inbox.recv_timeout(timeout) {
                Ok(input) => {
                    if !self.handle_input(input) {
                        return;
                    }
                    // Drain what else is queued, so one Ready serves a batch of inputs.
                    while let Ok(input) = inbox.try_recv() {
                        if !self.handle_input(input) {
                            return;
                        }
                    }
                }
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => return,
            }
            if Instant::now() >= next_tick {
                self.raft.tick();
                next_tick += TICK_INTERVAL;
            }
            self.handle_ready();
            *status.lock().unwrap() = (self.raft.raft().role(), self.raft.raft().leader_id());
        }
    }
}

struct Cluster {
    network: Network,
    threads: Vec<JoinHandle<()>>,
    status: HashMap<u64, std::sync::Arc<std::sync::Mutex<(StateRole, u64)>>>,
}

impl Cluster {
    fn start_node(&mut self, id: u64, voters: &[u64]) {
        let storage = MemStorage::new_with_voters(voters);
        let config = Config { pre_vote: true, check_quorum: true, ..Config::new(id) };
        let raft = RawNode::new(&config, storage.clone()).expect("valid config");
        let (tx, rx) = channel();
        self.network.mailboxes.lock().unwrap().insert(id, tx);
        let node = Node {
            raft,
            storage,
            kv: BTreeMap::new(),
            network: self.network.clone(),
            pending_writes: HashMap::new(),
            pending_reads: HashMap::new(),
            confirmed_reads: Vec::new(),
            next_request_id: 0,
        };
        let status = std::sync::Arc::new(std::sync::Mutex::new((StateRole::Follower, 0)));
        self.status.insert(id, status.clone());
        self.threads.push(thread::spawn(move || node.run(rx, status)));
    }

    fn mailbox(&self, id: u64) -> Sender<Input> {
        self.network.mailboxes.lock().unwrap()[&id].clone()
    }

    fn leader(&self) -> u64 {
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            for (id, status) in &self.status {
                if status.lock().unwrap().0 == StateRole::Leader {
                    return *id;
                }
            }
            thread::sleep(TICK_INTERVAL);
        }
        panic!("no leader within 10 s");
    }

    /// Sends a request to the leader, retrying while leadership settles.
    fn request<T>(&self, make: impl Fn(Sender<Result<T, String>>) -> Input) -> T {
        for _ in 0..50 {
            let (tx, rx) = channel();
            let _ = self.mailbox(self.leader()).send(make(tx));
            match rx.recv_timeout(Duration::from_secs(2)) {
                Ok(Ok(value)) => return value,
                Ok(Err(e)) => eprintln!("retrying after: {e}"),
                Err(_) => eprintln!("retrying after a timeout"),
            }
            thread::sleep(TICK_INTERVAL * 5);
        }
        panic!("request failed 50 times");
    }

    fn stop(self) {
        for mailbox in self.network.mailboxes.lock().unwrap().values() {
            let _ = mailbox.send(Input::Stop);
        }
        for thread in self.threads {
            thread.join().expect("node thread ends cleanly");
        }
    }
}

fn main() {
    let network = Network { mailboxes: Default::default() };
    let mut cluster = Cluster { network, threads: Vec::new(), status: HashMap::new() };
    for id in 1..=3 {
        cluster.start_node(id, &[1, 2, 3]);
    }
    let leader = cluster.leader();
    println!("node {leader} leads");

    for i in 0..5 {
        cluster.request(|reply| Input::Put { key: format!("k{i}"), value: format!("v{i}"), reply });
    }
    println!("wrote k0..k4");

    // Start node 4 with the initial configuration, then add it through the log.
    cluster.start_node(4, &[1, 2, 3]);
    cluster.request(|reply| Input::AddVoter { id: 4, reply });
    println!("node 4 joined as a voter");
    cluster.request(|reply| Input::Put { key: "k5".to_string(), value: "after-join".to_string(), reply });

    // A linearizable read from a follower: it asks the leader for a read index, waits until
    // it has applied that far, and then reads its own copy.
    let follower = (1..=4).find(|id| *id != cluster.leader()).expect("a follower exists");
    let (tx, rx) = channel();
    cluster.mailbox(follower).send(Input::Read { key: "k5".to_string(), reply: tx }).unwrap();
    let value = rx.recv_timeout(Duration::from_secs(5)).expect("read answered").expect("read succeeds");
    println!("node {follower} reads k5 = {value:?}");
    assert_eq!(value.as_deref(), Some("after-join"), "a linearizable read sees the acknowledged write");
    cluster.stop();
}
