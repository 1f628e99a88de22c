//! A simulated network: every message is dropped, duplicated or delayed by a random number
//! of steps (which reorders them), and partitions cut links until they heal.

use tessera_raft::raftpb::Message;

use super::rng::Rng;

/// The network's fault rates; the fault phase randomizes them per seed, the healing phase
/// turns drops off.
#[derive(Clone, Copy, Debug, Default)]
pub struct NetFaults {
    pub drop_permille: u64,
    pub duplicate_permille: u64,
    /// A message is delivered 1 to `delay_steps_max + 1` steps after it was sent.
    pub delay_steps_max: u64,
}

#[derive(Clone, Copy, Debug, Default)]
pub struct NetStats {
    pub sent: u64,
    pub dropped: u64,
    pub duplicated: u64,
}

/// What became of a message handed to the network.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Sent {
    /// On its way (possibly twice).
    Queued,
    /// The sender's transport noticed the failure: the link is cut or the queue is full.
    Refused,
    /// Lost on the way without a trace, like a datagram.
    Lost,
}

#[derive(Debug)]
struct InFlight {
    deliver_at_step: u64,
    /// The node that put the message on the wire. Not always `msg.from`: a follower that
    /// forwards a proposal keeps the proposer as its `from`.
    sender: u64,
    msg: Message,
}

#[derive(Debug)]
pub struct Network {
    in_flight: Vec<InFlight>,
    pub faults: NetFaults,
    /// The partition group of each node (indexed by id - 1), or None when all links work.
    partition: Option<Vec<u8>>,
    pub stats: NetStats,
}

/// Beyond this many messages in flight the network drops new ones: everything is bounded,
/// and a runaway sender shows up as drops rather than as a slow test.
const IN_FLIGHT_MAX: usize = 20_000;

impl Network {
    pub fn new(faults: NetFaults) -> Self {
        Network { in_flight: Vec::new(), faults, partition: None, stats: NetStats::default() }
    }

    /// Whether `from` can currently reach `to`.
    pub fn connected(&self, from: u64, to: u64) -> bool {
        match &self.partition {
            None => true,
            Some(groups) => groups[(from - 1) as usize] == groups[(to - 1) as usize],
        }
    }

    pub fn is_partitioned(&self) -> bool {
        self.partition.is_some()
    }

    /// Splits the nodes into the given groups (one group number per node).
    pub fn partition(&mut self, groups: Vec<u8>) {
        self.partition = Some(groups);
    }

    pub fn heal(&mut self) {
        self.partition = None;
    }

    /// Puts a message from `sender` on the wire.
    pub fn send(&mut self, sender: u64, msg: Message, now_step: u64, rng: &mut Rng) -> Sent {
        self.stats.sent += 1;
        if !self.connected(sender, msg.to) || self.in_flight.len() >= IN_FLIGHT_MAX {
            self.stats.dropped += 1;
            return Sent::Refused;
        }
        if rng.chance(self.faults.drop_permille) {
            self.stats.dropped += 1;
            return Sent::Lost;
        }
        let copies = if rng.chance(self.faults.duplicate_permille) { 2 } else { 1 };
        self.stats.duplicated += copies - 1;
        for _ in 0..copies {
            let deliver_at_step = now_step + 1 + rng.below(self.faults.delay_steps_max + 1);
            self.in_flight.push(InFlight { deliver_at_step, sender, msg: msg.clone() });
        }
        Sent::Queued
    }

    /// Every message on the wire, delivered or not yet.
    pub fn in_flight(&self) -> impl Iterator<Item = &Message> {
        self.in_flight.iter().map(|m| &m.msg)
    }

    /// Takes the messages due at `now_step`, with their senders, in random order.
    pub fn take_due(&mut self, now_step: u64, rng: &mut Rng) -> Vec<(u64, Message)> {
        let mut due = Vec::new();
        let mut i = 0;
        while i < self.in_flight.len() {
            if self.in_flight[i].deliver_at_step <= now_step {
                let m = self.in_flight.swap_remove(i);
                due.push((m.sender, m.msg));
            } else {
                i += 1;
            }
        }
        rng.shuffle(&mut due);
        due
    }
}
