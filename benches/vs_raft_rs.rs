//! Tessera's Raft core against tikv/raft-rs (the `raft` crate 0.7), side by side.
//!
//! Both sides do the same work per operation: a three-node group in one thread, each node
//! over its own in-memory storage, every message delivered in-process, and every Ready
//! handled by the full contract (persist entries and hard state, send, apply, advance).
//! raft-rs logs into `slog::Discard`, so logging costs it next to nothing.
//!
//! Workloads: propose-to-commit of 16 B and 1 KiB entries, one proposal per round and 64
//! per round (batched into one Ready), and a ReadIndex loop on the leader. Throughput is in
//! operations (entries or reads) per second. Run: `cargo bench --bench vs_raft_rs`.

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use std::time::Duration;

/// Every node compacts its log up to its applied index once this many entries have been
/// applied since the last compaction, on both sides alike, so memory stays bounded and the
/// measurement is of consensus, not of ever-growing vectors.
const COMPACT_EVERY_ENTRIES: u64 = 4096;

/// One side of the comparison: a settled three-node group with node 1 leading.
trait Group {
    fn name() -> &'static str;
    fn new() -> Self;
    /// Proposes `count` entries of `data` on the leader, then runs the group until all of
    /// them are applied on the leader.
    fn propose_and_commit(&mut self, data: &[u8], count: usize);
    /// Asks the leader for a read index and runs the group until it is confirmed.
    fn read_index(&mut self);
}

mod tessera {
    use tessera_raft::raftpb::Message;
    use tessera_raft::{Config, MemStorage, RawNode, StateRole};

    pub struct Group {
        nodes: Vec<RawNode<MemStorage>>,
        storages: Vec<MemStorage>,
        compacted: [u64; 3],
        applied_on_leader: usize,
        reads_on_leader: usize,
        inbox: Vec<Message>,
    }

    impl Group {
        fn run(&mut self) {
            loop {
                for i in 0..self.nodes.len() {
                    let node = &mut self.nodes[i];
                    if !node.has_ready() {
                        continue;
                    }
                    let mut rd = node.ready();
                    self.inbox.append(&mut rd.messages);
                    {
                        let mut store = self.storages[i].wl();
                        store.append(&rd.entries).unwrap();
                        if let Some(hs) = rd.hard_state {
                            store.set_hard_state(hs);
                        }
                    }
                    self.inbox.append(&mut rd.persisted_messages);
                    if i == 0 {
                        self.applied_on_leader +=
                            rd.committed_entries.iter().filter(|e| !e.data.is_empty()).count();
                        self.reads_on_leader += rd.read_states.len();
                    }
                    if let Some(last) = rd.committed_entries.last() {
                        if last.index >= self.compacted[i] + super::COMPACT_EVERY_ENTRIES {
                            self.storages[i].wl().compact(last.index).unwrap();
                            self.compacted[i] = last.index;
                        }
                    }
                    node.advance(rd);
                }
                if self.inbox.is_empty() {
                    return;
                }
                // Stepping produces no messages (Readys do), so the emptied inbox is
                // reused as is and the harness allocates nothing per round.
                let mut delivering = std::mem::take(&mut self.inbox);
                for m in delivering.drain(..) {
                    let to = (m.to - 1) as usize;
                    self.nodes[to].step(m).unwrap();
                }
                self.inbox = delivering;
            }
        }
    }

    impl super::Group for Group {
        fn name() -> &'static str {
            "tessera"
        }

        fn new() -> Self {
            let storages: Vec<MemStorage> = (0..3).map(|_| MemStorage::new_with_voters(&[1, 2, 3])).collect();
            let nodes = (0..3)
                .map(|i| {
                    let config = Config { inflight_msgs_max: 256, ..Config::new(i as u64 + 1) };
                    RawNode::new(&config, storages[i].clone()).unwrap()
                })
                .collect();
            let mut group = Group {
                nodes,
                storages,
                compacted: [0; 3],
                applied_on_leader: 0,
                reads_on_leader: 0,
                inbox: Vec::new(),
            };
            group.nodes[0].campaign().unwrap();
            group.run();
            assert_eq!(group.nodes[0].raft().role(), StateRole::Leader);
            group
        }

        fn propose_and_commit(&mut self, data: &[u8], count: usize) {
            let target = self.applied_on_leader + count;
            for _ in 0..count {
                self.nodes[0].propose(data.to_vec()).unwrap();
            }
            self.run();
            assert_eq!(self.applied_on_leader, target);
        }

        fn read_index(&mut self) {
            let target = self.reads_on_leader + 1;
            self.nodes[0].read_index(b"read".to_vec()).unwrap();
            self.run();
            assert_eq!(self.reads_on_leader, target);
        }
    }
}

mod raft_rs {
    use raft::eraftpb::Message;
    use raft::storage::MemStorage;
    use raft::{Config, RawNode, StateRole};
    use slog::o;

    pub struct Group {
        nodes: Vec<RawNode<MemStorage>>,
        storages: Vec<MemStorage>,
        compacted: [u64; 3],
        applied_on_leader: usize,
        reads_on_leader: usize,
        inbox: Vec<Message>,
    }

    impl Group {
        fn apply(&mut self, i: usize, entries: &[raft::eraftpb::Entry]) {
            if i == 0 {
                self.applied_on_leader += entries.iter().filter(|e| !e.data.is_empty()).count();
            }
            if let Some(last) = entries.last() {
                if last.index >= self.compacted[i] + super::COMPACT_EVERY_ENTRIES {
                    self.storages[i].wl().compact(last.index).unwrap();
                    self.compacted[i] = last.index;
                }
            }
        }

        fn run(&mut self) {
            loop {
                for i in 0..self.nodes.len() {
                    if !self.nodes[i].has_ready() {
                        continue;
                    }
                    let mut rd = self.nodes[i].ready();
                    self.inbox.append(&mut rd.take_messages());
                    {
                        let mut store = self.storages[i].wl();
                        store.append(rd.entries()).unwrap();
                        if let Some(hs) = rd.hs() {
                            store.set_hardstate(hs.clone());
                        }
                    }
                    self.inbox.append(&mut rd.take_persisted_messages());
                    if i == 0 {
                        self.reads_on_leader += rd.read_states().len();
                    }
                    let committed = rd.take_committed_entries();
                    self.apply(i, &committed);
                    let mut light = self.nodes[i].advance(rd);
                    if let Some(commit) = light.commit_index() {
                        self.storages[i].wl().mut_hard_state().commit = commit;
                    }
                    self.inbox.append(&mut light.take_messages());
                    let committed = light.take_committed_entries();
                    self.apply(i, &committed);
                    self.nodes[i].advance_apply();
                }
                if self.inbox.is_empty() {
                    return;
                }
                // Stepping produces no messages (Readys do), so the emptied inbox is
                // reused as is and the harness allocates nothing per round.
                let mut delivering = std::mem::take(&mut self.inbox);
                for m in delivering.drain(..) {
                    let to = (m.to - 1) as usize;
                    self.nodes[to].step(m).unwrap();
                }
                self.inbox = delivering;
            }
        }
    }

    impl super::Group for Group {
        fn name() -> &'static str {
            "raft-rs"
        }

        fn new() -> Self {
            let logger = slog::Logger::root(slog::Discard, o!());
            let storages: Vec<MemStorage> =
                (0..3).map(|_| MemStorage::new_with_conf_state((vec![1, 2, 3], vec![]))).collect();
            let nodes = (0..3)
                .map(|i| {
                    let config = Config {
                        id: i as u64 + 1,
                        max_inflight_msgs: 256,
                        max_size_per_msg: 1024 * 1024,
                        ..Default::default()
                    };
                    RawNode::new(&config, storages[i].clone(), &logger).unwrap()
                })
                .collect();
            let mut group = Group {
                nodes,
                storages,
                compacted: [0; 3],
                applied_on_leader: 0,
                reads_on_leader: 0,
                inbox: Vec::new(),
            };
            group.nodes[0].campaign().unwrap();
            group.run();
            assert_eq!(group.nodes[0].raft.state, StateRole::Leader);
            group
        }

        fn propose_and_commit(&mut self, data: &[u8], count: usize) {
            let target = self.applied_on_leader + count;
            for _ in 0..count {
                self.nodes[0].propose(Vec::new(), data.to_vec()).unwrap();
            }
            self.run();
            assert_eq!(self.applied_on_leader, target);
        }

        fn read_index(&mut self) {
            let target = self.reads_on_leader + 1;
            self.nodes[0].read_index(b"read".to_vec());
            self.run();
            assert_eq!(self.reads_on_leader, target);
        }
    }
}

fn propose<G: Group>(c: &mut Criterion, size: usize, batch: usize) {
    let mut group = c.benchmark_group(format!("propose_commit_{size}B_batch{batch}"));
    group.throughput(Throughput::Elements(batch as u64));
    let data = vec![7u8; size];
    let mut cluster = G::new();
    group.bench_function(BenchmarkId::from_parameter(G::name()), |b| {
        b.iter(|| cluster.propose_and_commit(&data, batch));
    });
    group.finish();
}

fn read<G: Group>(c: &mut Criterion) {
    let mut group = c.benchmark_group("read_index");
    group.throughput(Throughput::Elements(1));
    let mut cluster = G::new();
    cluster.propose_and_commit(b"x", 1);
    group.bench_function(BenchmarkId::from_parameter(G::name()), |b| b.iter(|| cluster.read_index()));
    group.finish();
}

fn workloads(c: &mut Criterion) {
    for (size, batch) in [(16, 1), (1024, 1), (16, 64), (1024, 64)] {
        propose::<tessera::Group>(c, size, batch);
        propose::<raft_rs::Group>(c, size, batch);
    }
    read::<tessera::Group>(c);
    read::<raft_rs::Group>(c);
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .sample_size(20);
    targets = workloads
}
criterion_main!(benches);
