//! Criterion benchmarks of the Raft core, all in memory and in one thread:
//!
//! 1. `propose_commit`: proposals committed and applied by a 3-node group whose nodes follow
//!    the full synchronous Ready contract (send, persist to `MemStorage`, send persisted
//!    messages, apply, advance), with messages delivered in-process. Reported in
//!    elements/s, one element being one entry.
//! 2. `leader_ready_advance`: one `ready()`/`advance()` cycle of a leader that holds one new
//!    proposal, the followers' acknowledgements being stepped outside the timed part.
//! 3. `follower_tick`: one `tick()` of an idle follower.
//!
//! Run with `cargo bench -p tessera-raft`; a run takes about a minute.

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use tessera_raft::raftpb::{Entry, Message, MessageType};
use tessera_raft::{Config, MemStorage, RawNode, Ready, StateRole};

/// Storage is compacted once this many entries were applied past the last compaction, so
/// that a long measurement does not grow the in-memory logs without bound.
const COMPACT_EVERY_ENTRIES: u64 = 4096;

/// Follows the synchronous Ready contract for one node: persist, then apply. Returns the
/// index of the last committed entry handed out, if any. The caller sends the messages.
fn persist_and_apply(storage: &MemStorage, rd: &Ready, apply_checksum: &mut u64) -> Option<u64> {
    let mut store = storage.wl();
    if let Some(snapshot) = &rd.snapshot {
        store.apply_snapshot(snapshot.clone()).expect("a newer snapshot");
    }
    store.append(&rd.entries).expect("contiguous entries");
    if let Some(hs) = &rd.hard_state {
        store.set_hard_state(*hs);
    }
    drop(store);
    // "Apply": fold the payload into a checksum, so the work cannot be optimized away.
    for e in &rd.committed_entries {
        *apply_checksum = apply_checksum.wrapping_mul(31).wrapping_add(e.data.len() as u64 ^ e.index);
    }
    rd.committed_entries.last().map(|e| e.index)
}

/// A 3-node group in one thread; node `id` lives at `nodes[id - 1]`.
struct Cluster {
    nodes: Vec<RawNode<MemStorage>>,
    storages: Vec<MemStorage>,
    applied: Vec<u64>,
    compacted: u64,
    inbox: Vec<Message>,
    apply_checksum: u64,
}

impl Cluster {
    /// Three nodes with node 1 elected leader and everything delivered.
    fn new() -> Cluster {
        let ids = [1u64, 2, 3];
        let storages: Vec<MemStorage> = ids.iter().map(|_| MemStorage::new_with_voters(&ids)).collect();
        let nodes = ids
            .iter()
            .zip(&storages)
            .map(|(&id, storage)| RawNode::new(&Config::new(id), storage.clone()).expect("valid config"))
            .collect();
        let mut cluster = Cluster {
            nodes,
            storages,
            applied: vec![0; 3],
            compacted: 0,
            inbox: Vec::new(),
            apply_checksum: 0,
        };
        cluster.nodes[0].campaign().expect("node 1 campaigns");
        cluster.stabilize();
        assert_eq!(cluster.nodes[0].raft().role(), StateRole::Leader, "node 1 won the election");
        cluster
    }

    /// Handles Readys and delivers messages until the group is quiet.
    fn stabilize(&mut self) {
        loop {
            for i in 0..self.nodes.len() {
                if !self.nodes[i].has_ready() {
                    continue;
                }
                let mut rd = self.nodes[i].ready();
                self.inbox.append(&mut rd.messages);
                if let Some(index) = persist_and_apply(&self.storages[i], &rd, &mut self.apply_checksum) {
                    self.applied[i] = index;
                }
                self.inbox.append(&mut rd.persisted_messages);
                self.nodes[i].advance(rd);
            }
            if self.inbox.is_empty() {
                return;
            }
            for m in std::mem::take(&mut self.inbox) {
                let to = (m.to - 1) as usize;
                self.nodes[to].step(m).expect("a member's message");
            }
        }
    }

    /// Proposes `entries` on the leader, in one call, and runs the group until every node
    /// applied them.
    fn commit_batch(&mut self, entries: Vec<Entry>) {
        let want = self.nodes[0].raft().raft_log().last_index() + entries.len() as u64;
        self.nodes[0].propose_entries(entries).expect("the leader accepts");
        self.finish_round(want);
    }

    /// Proposes each payload with its own `propose` call, then runs one round.
    fn commit_each(&mut self, payloads: &[Vec<u8>]) {
        let want = self.nodes[0].raft().raft_log().last_index() + payloads.len() as u64;
        for data in payloads {
            self.nodes[0].propose(data.clone()).expect("the leader accepts");
        }
        self.finish_round(want);
    }

    fn finish_round(&mut self, want_applied: u64) {
        self.stabilize();
        assert!(
            self.applied.iter().all(|&a| a == want_applied),
            "applied {:?}, want {want_applied}",
            self.applied
        );
        if want_applied - self.compacted >= COMPACT_EVERY_ENTRIES {
            // Every node applied everything: keep only the last entry.
            for storage in &self.storages {
                storage.wl().compact(want_applied).expect("applied entries are in the log");
            }
            self.compacted = want_applied;
        }
    }
}

fn payloads(size: usize, count: usize) -> Vec<Vec<u8>> {
    (0..count).map(|i| vec![i as u8; size]).collect()
}

fn bench_propose_commit(c: &mut Criterion) {
    let mut group = c.benchmark_group("propose_commit_3_nodes");
    for size in [16usize, 1024] {
        let label = if size >= 1024 { format!("{}KiB", size / 1024) } else { format!("{size}B") };

        group.throughput(Throughput::Elements(1));
        let mut cluster = Cluster::new();
        let one = payloads(size, 1);
        group.bench_function(BenchmarkId::new(label.clone(), "1_per_round"), |b| {
            b.iter(|| cluster.commit_each(&one))
        });

        group.throughput(Throughput::Elements(64));
        let mut cluster = Cluster::new();
        let batch = payloads(size, 64);
        group.bench_function(BenchmarkId::new(label.clone(), "64_per_round_one_call"), |b| {
            b.iter(|| {
                let entries = batch
                    .iter()
                    .map(|data| Entry { data: data.clone().into(), ..Default::default() })
                    .collect();
                cluster.commit_batch(entries)
            })
        });

        let mut cluster = Cluster::new();
        group.bench_function(BenchmarkId::new(label, "64_per_round_64_calls"), |b| {
            b.iter(|| cluster.commit_each(&batch))
        });
        black_box(cluster.apply_checksum);
    }
    group.finish();
}

/// A leader of a 3-node group whose followers exist only as acknowledgements: after each
/// cycle both followers are made to acknowledge everything, so the next Ready carries one
/// new entry, the previous entry now committed, and the appends for the followers.
fn bench_leader_ready_advance(c: &mut Criterion) {
    let mut cluster = Cluster::new();
    let storage = cluster.storages[0].clone();
    let mut leader = cluster.nodes.remove(0);
    let term = leader.raft().term();
    let data = vec![7u8; 16];
    let mut checksum = 0u64;
    let mut compacted = 0u64;
    c.bench_function("leader_ready_advance_one_proposal", |b| {
        b.iter_custom(|iters| {
            let mut elapsed = Duration::ZERO;
            for _ in 0..iters {
                leader.propose(data.clone()).expect("the leader accepts");
                let start = Instant::now();
                let rd = leader.ready();
                persist_and_apply(&storage, &rd, &mut checksum);
                leader.advance(black_box(rd));
                elapsed += start.elapsed();

                let last = leader.raft().raft_log().last_index();
                for from in [2, 3] {
                    let ack = Message {
                        msg_type: MessageType::MsgAppendResponse as i32,
                        from,
                        to: 1,
                        term,
                        index: last,
                        ..Default::default()
                    };
                    leader.step(ack).expect("a member's acknowledgement");
                }
                let applied = leader.raft().raft_log().applied;
                if applied - compacted >= COMPACT_EVERY_ENTRIES {
                    storage.wl().compact(applied).expect("applied entries are in the log");
                    compacted = applied;
                }
            }
            elapsed
        })
    });
    black_box(checksum);
}

/// An idle follower: ticks that find nothing to do. A heartbeat from the leader, stepped
/// outside the timed part after every chunk of ticks, keeps it from campaigning.
fn bench_follower_tick(c: &mut Criterion) {
    const TICKS_PER_CHUNK: u64 = 1000;
    let ids = [1u64, 2, 3];
    let storage = MemStorage::new_with_voters(&ids);
    // A long election timeout, so that no chunk of ticks reaches it.
    let config = Config { election_ticks: 1_000_000, ..Config::new(2) };
    let mut follower = RawNode::new(&config, storage.clone()).expect("valid config");
    let heartbeat =
        Message { msg_type: MessageType::MsgHeartbeat as i32, from: 1, to: 2, term: 1, ..Default::default() };
    let mut checksum = 0u64;
    let mut reset = |follower: &mut RawNode<MemStorage>| {
        follower.step(heartbeat.clone()).expect("the leader's heartbeat");
        while follower.has_ready() {
            let rd = follower.ready();
            persist_and_apply(&storage, &rd, &mut checksum);
            follower.advance(rd);
        }
    };
    reset(&mut follower);
    c.bench_function("follower_tick_idle", |b| {
        b.iter_custom(|iters| {
            let mut elapsed = Duration::ZERO;
            let mut left = iters;
            while left > 0 {
                let chunk = left.min(TICKS_PER_CHUNK);
                let start = Instant::now();
                for _ in 0..chunk {
                    follower.tick();
                }
                elapsed += start.elapsed();
                left -= chunk;
                reset(&mut follower);
            }
            assert_eq!(follower.raft().role(), StateRole::Follower, "an idle follower stays a follower");
            elapsed
        })
    });
}

fn config() -> Criterion {
    Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .sample_size(20)
}

criterion_group! {
    name = benches;
    config = config();
    targets = bench_propose_commit, bench_leader_ready_advance, bench_follower_tick
}
criterion_main!(benches);
