use std::collections::VecDeque;
use std::time::Duration;

use tessera_proto::raftpb::{Message, MessageType};
use tessera_proto::storepb::{Peer, PeerRole, RegionEpoch};

use super::format::FileSummary;
use super::*;
use crate::engine::EngineConfig;
use crate::keys::{CF_META, CF_RAFT};

const REGION_ID: u64 = 3;
const TERM: u64 = 6;
const INDEX: u64 = 42;
const DONE_TIMEOUT: Duration = Duration::from_secs(30);

type Kvs = Vec<(Vec<u8>, Vec<u8>)>;

fn open_engine(dir: &Path) -> Arc<Engine> {
    Arc::new(Engine::open(dir, &EngineConfig::default()).expect("engine opens"))
}

fn open_manager(dir: &Path, chunk_bytes: usize) -> Arc<SnapshotManager> {
    SnapshotManager::open(SnapshotConfig { chunk_bytes, ..SnapshotConfig::new(dir) }).expect("manager opens")
}

fn region(start_key: &[u8], end_key: &[u8]) -> Region {
    Region {
        id: REGION_ID,
        start_key: start_key.to_vec(),
        end_key: end_key.to_vec(),
        epoch: Some(RegionEpoch { conf_ver: 2, version: 3 }),
        peers: vec![Peer { id: 1, store_id: 1, role: PeerRole::Voter as i32 }],
    }
}

fn conf_state() -> ConfState {
    ConfState { voters: vec![1, 2, 3], ..Default::default() }
}

fn put_user_keys(engine: &Arc<Engine>, kvs: &[(&[u8], &[u8])]) {
    let mut batch = engine.write_batch();
    for (key, value) in kvs {
        batch.put(CF_DEFAULT, &keys::data_key(key), value);
    }
    engine.write(batch, false).unwrap();
}

fn numbered_kvs(prefix: &str, count: usize, value: &str) -> Kvs {
    (0..count)
        .map(|i| (format!("{prefix}{i:06}").into_bytes(), format!("{value}-{i}").into_bytes()))
        .collect()
}

fn put_kvs(engine: &Arc<Engine>, kvs: &Kvs) {
    let mut batch = engine.write_batch();
    for (key, value) in kvs {
        batch.put(CF_DEFAULT, &keys::data_key(key), value);
    }
    engine.write(batch, false).unwrap();
}

/// The user data of the engine in the user key range `[start_key, end_key)`.
fn user_data(engine: &Engine, start_key: &[u8], end_key: &[u8]) -> Kvs {
    let range = keys::data_range(start_key, end_key);
    let mut kvs = Vec::new();
    engine
        .scan(CF_DEFAULT, &range.start, &range.end, |key, value| {
            kvs.push((keys::user_key(key).unwrap().to_vec(), value.to_vec()));
            Ok(true)
        })
        .unwrap();
    kvs
}

fn generate(manager: &Arc<SnapshotManager>, engine: &Arc<Engine>, region: &Region) -> Snapshot {
    let (done_tx, done_rx) = crossbeam_channel::bounded(1);
    manager
        .spawn_generate(
            engine.clone(),
            region.clone(),
            INDEX,
            TERM,
            conf_state(),
            Box::new(move |result| done_tx.send(result).unwrap()),
        )
        .unwrap();
    done_rx.recv_timeout(DONE_TIMEOUT).expect("on_done is called").expect("generation succeeds")
}

/// What the file of `snapshot` holds, read and checked the way a receiver does.
fn file_records(manager: &SnapshotManager, kind: FileKind, snapshot: &Snapshot) -> Kvs {
    let described = describe(snapshot).unwrap();
    let mut kvs = Vec::new();
    read_records(&manager.path(kind, described.id), &described, |key, value| {
        kvs.push((key.to_vec(), value.to_vec()))
    })
    .unwrap();
    kvs
}

fn snapshot_message(snapshot: &Snapshot) -> RaftMessage {
    RaftMessage {
        region_id: REGION_ID,
        message: Some(Message {
            msg_type: MessageType::MsgSnapshot as i32,
            snapshot: Some(Box::new(snapshot.clone())),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// Chunks held in memory; counts how many were pulled.
struct MemoryChunks {
    chunks: VecDeque<Bytes>,
    pulled: usize,
}

impl MemoryChunks {
    fn new(data: &[u8], chunk_bytes: usize) -> MemoryChunks {
        let chunks = data.chunks(chunk_bytes).map(Bytes::copy_from_slice).collect();
        MemoryChunks { chunks, pulled: 0 }
    }
}

impl SnapshotChunks for MemoryChunks {
    fn next_chunk(&mut self) -> Result<Option<Bytes>, String> {
        self.pulled += 1;
        Ok(self.chunks.pop_front())
    }
}

/// Every chunk of `chunks`, checked to be at most `chunk_bytes` each.
fn drain(chunks: &mut dyn SnapshotChunks, chunk_bytes: usize) -> Vec<Bytes> {
    let mut all = Vec::new();
    while let Some(chunk) = chunks.next_chunk().unwrap() {
        assert!(!chunk.is_empty() && chunk.len() <= chunk_bytes, "a chunk of {} bytes", chunk.len());
        all.push(chunk);
    }
    all
}

fn generated_bytes(manager: &SnapshotManager, snapshot: &Snapshot) -> Vec<u8> {
    let chunk_bytes = manager.config().chunk_bytes;
    drain(&mut manager.open_chunks(snapshot).unwrap(), chunk_bytes).concat()
}

/// A data file with `kvs` as they are (in range or not, in order or not) and the snapshot
/// that describes it truthfully.
fn crafted(region: &Region, kvs: &[(&[u8], &[u8])]) -> (Snapshot, Vec<u8>) {
    let mut writer = RecordWriter::new(Vec::new(), Path::new("memory")).unwrap();
    for (key, value) in kvs {
        writer.put(key, value).unwrap();
    }
    let (data, summary) = writer.finish().unwrap();
    (describing(region, summary), data)
}

fn describing(region: &Region, summary: FileSummary) -> Snapshot {
    let descriptor = SnapshotDescriptor {
        region: Some(region.clone()),
        data_bytes: summary.data_bytes,
        data_crc32: summary.data_crc32,
        kvs_len: summary.kvs_len,
    };
    Snapshot {
        data: descriptor.encode_to_vec().into(),
        metadata: Some(Box::new(SnapshotMetadata {
            conf_state: Some(conf_state()),
            index: INDEX,
            term: TERM,
        })),
    }
}

fn file_names(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> =
        fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
    names.sort();
    names
}

fn assert_corrupt(result: Result<(), SnapshotError>, reason_part: &str) {
    match result {
        Err(SnapshotError::Corrupt { reason, .. }) => {
            assert!(reason.contains(reason_part), "reason {reason:?} lacks {reason_part:?}")
        }
        other => panic!("expected Corrupt({reason_part}), got {other:?}"),
    }
}

struct Stores {
    _dirs: Vec<tempfile::TempDir>,
    source_engine: Arc<Engine>,
    source: Arc<SnapshotManager>,
    target_engine: Arc<Engine>,
    target: Arc<SnapshotManager>,
}

fn two_stores(chunk_bytes: usize) -> Stores {
    let dirs: Vec<_> = (0..4).map(|_| tempfile::tempdir().unwrap()).collect();
    Stores {
        source_engine: open_engine(dirs[0].path()),
        source: open_manager(dirs[1].path(), chunk_bytes),
        target_engine: open_engine(dirs[2].path()),
        target: open_manager(dirs[3].path(), chunk_bytes),
        _dirs: dirs,
    }
}

/// Generates on the source, sends to the target, applies there and removes both files.
fn round_trip(stores: &Stores, region: &Region) -> SnapshotDescriptor {
    let snapshot = generate(&stores.source, &stores.source_engine, region);
    let guard = stores.source.try_acquire_send().unwrap();
    let mut chunks = stores.source.open_chunks(&snapshot).unwrap();
    stores.target.receive(&snapshot_message(&snapshot), &mut chunks).unwrap();
    drop(guard);
    stores.source.remove_generated(&snapshot).unwrap();
    assert!(stores.target.has_received(&snapshot));
    let mut batch = stores.target_engine.write_batch();
    let descriptor = stores.target.apply_to_batch(&mut batch, &snapshot).unwrap();
    stores.target_engine.write(batch, true).unwrap();
    stores.target.remove_received(&snapshot).unwrap();
    assert!(!stores.target.has_received(&snapshot));
    assert_eq!(file_names(&stores.source.config().dir), Vec::<String>::new());
    assert_eq!(file_names(&stores.target.config().dir), Vec::<String>::new());
    descriptor
}

#[test]
fn the_encoding_of_a_data_file_is_pinned() {
    let (snapshot, data) = crafted(&region(b"", b""), &[(b"a", b"1"), (b"bc", b"")]);
    let mut expected = b"TSNP\x01\x00\x00\x00".to_vec();
    expected.extend_from_slice(b"\x01\x00\x00\x00\x01\x00\x00\x00a1");
    expected.extend_from_slice(b"\x02\x00\x00\x00\x00\x00\x00\x00bc");
    assert_eq!(data, expected);
    let descriptor = describe(&snapshot).unwrap().descriptor;
    assert_eq!(descriptor.data_bytes, 28);
    assert_eq!(descriptor.data_crc32, crc32fast::hash(&expected));
    assert_eq!(descriptor.kvs_len, 2);
    assert_eq!(SnapshotId { region_id: 3, term: 6, index: 42 }, describe(&snapshot).unwrap().id);
    let dir = tempfile::tempdir().unwrap();
    let manager = open_manager(dir.path(), 1024);
    let id = SnapshotId { region_id: 3, term: 6, index: 42 };
    assert!(manager.path(FileKind::Generated, id).ends_with("gen_3_6_42.snap"));
    assert!(manager.path(FileKind::Received, id).ends_with("rcv_3_6_42.snap"));
}

#[test]
fn a_generated_file_holds_exactly_the_regions_keys() {
    let dir = tempfile::tempdir().unwrap();
    let engine = open_engine(&dir.path().join("engine"));
    let manager = open_manager(&dir.path().join("snap"), 1 << 20);
    put_user_keys(
        &engine,
        &[(b"a", b"out"), (b"b", b"in-b"), (b"c", b"in-c"), (b"m", b"in-m"), (b"n", b"out"), (b"x", b"out")],
    );
    // Records of other column families (and of CF default outside the data prefix) are
    // never snapshot data.
    let mut batch = engine.write_batch();
    batch.put(CF_RAFT, b"c", b"raft");
    batch.put(CF_META, b"zc", b"meta");
    engine.write(batch, false).unwrap();

    let snapshot = generate(&manager, &engine, &region(b"b", b"n"));
    let expected: Kvs = vec![
        (b"b".to_vec(), b"in-b".to_vec()),
        (b"c".to_vec(), b"in-c".to_vec()),
        (b"m".to_vec(), b"in-m".to_vec()),
    ];
    assert_eq!(file_records(&manager, FileKind::Generated, &snapshot), expected);
    let metadata = snapshot.metadata.as_deref().unwrap();
    assert_eq!(
        (metadata.index, metadata.term, metadata.conf_state.clone()),
        (INDEX, TERM, Some(conf_state()))
    );
    let descriptor = describe(&snapshot).unwrap().descriptor;
    assert_eq!(descriptor.region, Some(region(b"b", b"n")));
    assert_eq!(descriptor.kvs_len, 3);
    let data = generated_bytes(&manager, &snapshot);
    assert_eq!(data.len() as u64, descriptor.data_bytes);
    assert_eq!(crc32fast::hash(&data), descriptor.data_crc32);
    assert_eq!(file_names(&manager.config().dir), vec!["gen_3_6_42.snap".to_string()]);

    // A region to the end of the key space. Its snapshot has the same id (this test's
    // regions share one), and a published name is never replaced, so the first goes.
    manager.remove_generated(&snapshot).unwrap();
    let snapshot = generate(&manager, &engine, &region(b"m", b""));
    let keys: Vec<_> =
        file_records(&manager, FileKind::Generated, &snapshot).into_iter().map(|(k, _)| k).collect();
    assert_eq!(keys, vec![b"m".to_vec(), b"n".to_vec(), b"x".to_vec()]);
    assert_eq!(manager.stats().generated, 2);
}

#[test]
fn a_generation_sees_the_engine_as_of_its_spawn() {
    let dir = tempfile::tempdir().unwrap();
    let engine = open_engine(&dir.path().join("engine"));
    let manager = open_manager(&dir.path().join("snap"), 1 << 20);
    let before = numbered_kvs("k", 1_000, "old");
    put_kvs(&engine, &before);
    // The thread waits right after its view is taken, until the writes below are done.
    let (gate_tx, gate_rx) = crossbeam_channel::bounded(1);
    *manager.generate_gate.lock().unwrap() = Some(gate_rx);
    let (done_tx, done_rx) = crossbeam_channel::bounded(1);
    manager
        .spawn_generate(
            engine.clone(),
            region(b"", b""),
            INDEX,
            TERM,
            conf_state(),
            Box::new(move |result| done_tx.send(result).unwrap()),
        )
        .unwrap();
    put_kvs(&engine, &numbered_kvs("k", 1_000, "new"));
    put_kvs(&engine, &numbered_kvs("j", 100, "new"));
    let mut batch = engine.write_batch();
    batch.delete_range(CF_DEFAULT, &keys::data_key(b"k000100"), &keys::data_key(b"k000200"));
    engine.write(batch, false).unwrap();
    gate_tx.send(()).unwrap();

    let snapshot = done_rx.recv_timeout(DONE_TIMEOUT).unwrap().unwrap();
    assert_eq!(file_records(&manager, FileKind::Generated, &snapshot), before);
    assert_eq!(user_data(&engine, b"", b"").len(), 1_000);
}

#[test]
fn a_round_trip_replaces_the_target_range_and_leaves_the_rest() {
    let stores = two_stores(64);
    let region = region(b"b", b"d");
    put_user_keys(
        &stores.source_engine,
        &[(b"a", b"src-out"), (b"b", b"src-b"), (b"c1", b"src-c1"), (b"c2", b"src-c2"), (b"d", b"src-out")],
    );
    put_user_keys(
        &stores.target_engine,
        &[(b"a", b"dst-a"), (b"b", b"stale-b"), (b"bb", b"stale-bb"), (b"c9", b"stale"), (b"d", b"dst-d")],
    );
    let descriptor = round_trip(&stores, &region);
    assert_eq!(descriptor.kvs_len, 3);
    assert_eq!(descriptor.region, Some(region.clone()));
    assert_eq!(user_data(&stores.target_engine, b"b", b"d"), user_data(&stores.source_engine, b"b", b"d"));
    assert_eq!(
        user_data(&stores.target_engine, b"", b""),
        vec![
            (b"a".to_vec(), b"dst-a".to_vec()),
            (b"b".to_vec(), b"src-b".to_vec()),
            (b"c1".to_vec(), b"src-c1".to_vec()),
            (b"c2".to_vec(), b"src-c2".to_vec()),
            (b"d".to_vec(), b"dst-d".to_vec()),
        ]
    );
    let (source, target) = (stores.source.stats(), stores.target.stats());
    assert_eq!((source.generated, source.sending), (1, 0));
    assert_eq!((target.received, target.applied, target.receiving), (1, 1, 0));
}

#[test]
fn ten_thousand_keys_cross_many_chunks() {
    let chunk_bytes = 4096;
    let stores = two_stores(chunk_bytes);
    let kvs = numbered_kvs("key", 10_000, "value");
    put_kvs(&stores.source_engine, &kvs);
    put_kvs(&stores.target_engine, &numbered_kvs("key", 20_000, "stale"));

    let snapshot = generate(&stores.source, &stores.source_engine, &region(b"", b""));
    let chunks = drain(&mut stores.source.open_chunks(&snapshot).unwrap(), chunk_bytes);
    let data_bytes = describe(&snapshot).unwrap().descriptor.data_bytes;
    assert_eq!(chunks.len() as u64, data_bytes.div_ceil(chunk_bytes as u64));
    assert!(chunks.len() > 50, "{} chunks", chunks.len());

    round_trip(&stores, &region(b"", b""));
    assert_eq!(user_data(&stores.target_engine, b"", b""), kvs);
}

#[test]
fn an_empty_region_round_trips_and_clears_the_target_range() {
    let stores = two_stores(1024);
    put_user_keys(&stores.source_engine, &[(b"a", b"out"), (b"z", b"out")]);
    put_user_keys(&stores.target_engine, &[(b"a", b"keep"), (b"m", b"stale"), (b"z", b"keep")]);
    let descriptor = round_trip(&stores, &region(b"k", b"p"));
    assert_eq!((descriptor.kvs_len, descriptor.data_bytes), (0, HEADER_BYTES));
    assert_eq!(
        user_data(&stores.target_engine, b"", b""),
        vec![(b"a".to_vec(), b"keep".to_vec()), (b"z".to_vec(), b"keep".to_vec())]
    );
}

/// Generates a small snapshot on the source and returns it with its data.
fn small_snapshot(stores: &Stores) -> (Snapshot, Vec<u8>) {
    put_kvs(&stores.source_engine, &numbered_kvs("k", 100, "v"));
    let snapshot = generate(&stores.source, &stores.source_engine, &region(b"", b""));
    let data = generated_bytes(&stores.source, &snapshot);
    (snapshot, data)
}

fn receive_bytes(manager: &SnapshotManager, snapshot: &Snapshot, data: &[u8]) -> Result<(), SnapshotError> {
    manager.receive(&snapshot_message(snapshot), &mut MemoryChunks::new(data, 256))
}

#[test]
fn a_crc_mismatch_is_refused_and_leaves_nothing() {
    let stores = two_stores(256);
    let (snapshot, mut data) = small_snapshot(&stores);
    let last = data.len() - 1;
    data[last] ^= 0x01;
    assert_corrupt(receive_bytes(&stores.target, &snapshot, &data), "CRC-32");
    assert!(!stores.target.has_received(&snapshot));
    assert_eq!(file_names(&stores.target.config().dir), Vec::<String>::new());
    let stats = stores.target.stats();
    assert_eq!((stats.received, stats.receive_failed, stats.receiving), (0, 1, 0));
}

#[test]
fn truncated_data_is_refused() {
    let stores = two_stores(256);
    let (snapshot, data) = small_snapshot(&stores);
    assert_corrupt(receive_bytes(&stores.target, &snapshot, &data[..data.len() - 3]), "bytes arrived");
    assert_eq!(file_names(&stores.target.config().dir), Vec::<String>::new());
}

/// A sender that never stops.
struct EndlessChunks {
    pulled: usize,
}

impl SnapshotChunks for EndlessChunks {
    fn next_chunk(&mut self) -> Result<Option<Bytes>, String> {
        self.pulled += 1;
        Ok(Some(Bytes::from_static(&[0u8; 100])))
    }
}

#[test]
fn oversized_data_is_refused_as_soon_as_it_exceeds_the_descriptor() {
    let stores = two_stores(256);
    let (snapshot, mut data) = small_snapshot(&stores);
    data.push(0);
    assert_corrupt(receive_bytes(&stores.target, &snapshot, &data), "more than");

    let data_bytes = describe(&snapshot).unwrap().descriptor.data_bytes as usize;
    let mut endless = EndlessChunks { pulled: 0 };
    let result = stores.target.receive(&snapshot_message(&snapshot), &mut endless);
    assert_corrupt(result, "more than");
    assert_eq!(endless.pulled, data_bytes / 100 + 1);
    assert_eq!(file_names(&stores.target.config().dir), Vec::<String>::new());
}

#[test]
fn data_that_breaks_the_format_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let manager = open_manager(dir.path(), 256);
    let region = region(b"b", b"d");
    let refused = |kvs: &[(&[u8], &[u8])], reason_part: &str| {
        let (snapshot, data) = crafted(&region, kvs);
        assert_corrupt(receive_bytes(&manager, &snapshot, &data), reason_part);
    };
    refused(&[(b"a", b"v")], "outside region");
    refused(&[(b"b", b"v"), (b"d", b"v")], "outside region");
    refused(&[(b"c", b"v"), (b"b", b"v")], "does not follow");
    refused(&[(b"b", b"v"), (b"b", b"w")], "does not follow");

    let (_, mut data) = crafted(&region, &[(b"b", b"v")]);
    data[0] = b'X';
    let mut summary =
        FileSummary { data_bytes: data.len() as u64, data_crc32: crc32fast::hash(&data), kvs_len: 1 };
    assert_corrupt(receive_bytes(&manager, &describing(&region, summary), &data), "bad magic");

    // A length that claims far more than the file holds is refused before any allocation.
    let (_, mut data) = crafted(&region, &[(b"b", b"v")]);
    data[12..16].copy_from_slice(&u32::MAX.to_le_bytes());
    summary.data_crc32 = crc32fast::hash(&data);
    assert_corrupt(receive_bytes(&manager, &describing(&region, summary), &data), "claims");

    // A record count that disagrees.
    let (_, data) = crafted(&region, &[(b"b", b"v")]);
    summary = FileSummary { data_bytes: data.len() as u64, data_crc32: crc32fast::hash(&data), kvs_len: 2 };
    assert_corrupt(receive_bytes(&manager, &describing(&region, summary), &data), "records");

    // A record cut off inside its header.
    let mut data = crafted(&region, &[]).1;
    data.extend_from_slice(&[1, 0, 0]);
    summary = FileSummary { data_bytes: data.len() as u64, data_crc32: crc32fast::hash(&data), kvs_len: 0 };
    assert_corrupt(receive_bytes(&manager, &describing(&region, summary), &data), "cut off");

    assert_eq!(manager.stats().receive_failed, 8);
    assert_eq!(file_names(dir.path()), Vec::<String>::new());
}

#[test]
fn bad_descriptors_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let manager = open_manager(dir.path(), 256);
    let (snapshot, data) = crafted(&region(b"", b""), &[]);
    let refused = |msg: &RaftMessage| {
        let result = manager.receive(msg, &mut MemoryChunks::new(&data, 256));
        assert!(matches!(result, Err(SnapshotError::BadDescriptor(_))), "{result:?}");
    };
    let mut msg = snapshot_message(&snapshot);
    msg.message.as_mut().unwrap().snapshot = None;
    refused(&msg);
    let mut msg = snapshot_message(&snapshot);
    msg.region_id = REGION_ID + 1;
    refused(&msg);
    let mut garbage = snapshot.clone();
    garbage.data = Bytes::from_static(&[0xff, 0xff, 0xff]);
    refused(&snapshot_message(&garbage));
    let mut no_metadata = snapshot.clone();
    no_metadata.metadata = None;
    refused(&snapshot_message(&no_metadata));
    assert!(!manager.has_received(&garbage));
    assert!(matches!(manager.open_chunks(&garbage), Err(SnapshotError::BadDescriptor(_))));
}

/// A sender that fails after its first chunk.
struct FailingChunks {
    pulled: usize,
}

impl SnapshotChunks for FailingChunks {
    fn next_chunk(&mut self) -> Result<Option<Bytes>, String> {
        self.pulled += 1;
        match self.pulled {
            1 => Ok(Some(Bytes::from_static(b"TSNP"))),
            _ => Err("connection reset".to_string()),
        }
    }
}

#[test]
fn a_failing_sender_aborts_the_receive_and_leaves_nothing() {
    let stores = two_stores(256);
    let (snapshot, _) = small_snapshot(&stores);
    let result = stores.target.receive(&snapshot_message(&snapshot), &mut FailingChunks { pulled: 0 });
    assert!(
        matches!(&result, Err(SnapshotError::Source(reason)) if reason == "connection reset"),
        "{result:?}"
    );
    assert_eq!(file_names(&stores.target.config().dir), Vec::<String>::new());
}

#[test]
fn a_file_corrupted_after_receive_is_refused_at_apply_and_the_batch_is_untouched() {
    let stores = two_stores(256);
    let (snapshot, data) = small_snapshot(&stores);
    receive_bytes(&stores.target, &snapshot, &data).unwrap();
    let path = stores.target.path(FileKind::Received, describe(&snapshot).unwrap().id);
    let mut on_disk = fs::read(&path).unwrap();
    on_disk[20] ^= 0x40;
    fs::write(&path, &on_disk).unwrap();

    let mut batch = stores.target_engine.write_batch();
    batch.put(CF_DEFAULT, b"zother-region", b"v");
    let result = stores.target.apply_to_batch(&mut batch, &snapshot).map(|_| ());
    assert!(matches!(result, Err(SnapshotError::Corrupt { .. })), "{result:?}");
    assert_eq!(batch.len(), 1);
    assert_eq!(stores.target.stats().applied, 0);

    // A file that is gone is an error too, not an empty snapshot.
    stores.target.remove_received(&snapshot).unwrap();
    let result = stores.target.apply_to_batch(&mut batch, &snapshot).map(|_| ());
    assert!(matches!(result, Err(SnapshotError::Io { op: "opening", .. })), "{result:?}");
    assert_eq!(batch.len(), 1);
}

#[test]
fn the_same_snapshot_received_twice_is_kept_once() {
    let stores = two_stores(256);
    let (snapshot, data) = small_snapshot(&stores);
    receive_bytes(&stores.target, &snapshot, &data).unwrap();
    receive_bytes(&stores.target, &snapshot, &data).unwrap();
    assert_eq!(file_names(&stores.target.config().dir), vec!["rcv_3_6_42.snap".to_string()]);
    assert_eq!(file_records(&stores.target, FileKind::Received, &snapshot).len(), 100);
    // A later transfer of it that fails never takes the published file with it.
    *stores.target.sync_fault.lock().unwrap() = Some(crate::snapshot::SyncFault::File);
    assert!(receive_bytes(&stores.target, &snapshot, &data).is_err());
    *stores.target.sync_fault.lock().unwrap() = Some(crate::snapshot::SyncFault::Directory);
    receive_bytes(&stores.target, &snapshot, &data).expect("the published file serves it");
    assert!(stores.target.has_received(&snapshot));
    assert_eq!(file_names(&stores.target.config().dir), vec!["rcv_3_6_42.snap".to_string()]);
}

#[test]
fn concurrency_limits_refuse_and_free_up_on_drop() {
    let stores = two_stores(256);
    let (snapshot, data) = small_snapshot(&stores);
    let source = &stores.source;

    let sends: Vec<_> = (0..4).map(|_| source.try_acquire_send().expect("a free send slot")).collect();
    assert!(source.try_acquire_send().is_none());
    assert_eq!((source.stats().sending, source.stats().busy_send), (4, 1));
    drop(sends);
    assert!(source.try_acquire_send().is_some());
    assert_eq!(source.stats().sending, 0);

    let generating: Vec<_> = (0..2).map(|_| source.generate_slots.try_acquire().unwrap()).collect();
    let refused = source.spawn_generate(
        stores.source_engine.clone(),
        region(b"", b""),
        INDEX,
        TERM,
        conf_state(),
        Box::new(|_| panic!("a refused generation never calls back")),
    );
    assert!(matches!(refused, Err(SnapshotError::Busy { what: "generate", limit: 2 })), "{refused:?}");
    drop(generating);
    generate(source, &stores.source_engine, &region(b"", b""));
    assert_eq!((source.stats().busy_generate, source.stats().generating), (1, 0));

    let target = &stores.target;
    let receiving: Vec<_> = (0..4).map(|_| target.receive_slots.try_acquire().unwrap()).collect();
    let mut chunks = MemoryChunks::new(&data, 256);
    let refused = target.receive(&snapshot_message(&snapshot), &mut chunks);
    assert!(matches!(refused, Err(SnapshotError::Busy { what: "receive", limit: 4 })), "{refused:?}");
    assert_eq!(chunks.pulled, 0, "a refused receive reads nothing");
    drop(receiving);
    receive_bytes(target, &snapshot, &data).unwrap();
    let stats = target.stats();
    assert_eq!((stats.busy_receive, stats.receive_failed, stats.received, stats.receiving), (1, 0, 1, 0));
}

/// A sender that blocks until told to go on, so that receives overlap.
struct GatedChunks {
    data: MemoryChunks,
    gate: crossbeam_channel::Receiver<()>,
}

impl SnapshotChunks for GatedChunks {
    fn next_chunk(&mut self) -> Result<Option<Bytes>, String> {
        if self.data.pulled == 0 {
            self.gate.recv().map_err(|e| e.to_string())?;
        }
        self.data.next_chunk()
    }
}

#[test]
fn receives_in_flight_on_other_threads_hold_their_slots() {
    let stores = two_stores(256);
    let (snapshot, data) = small_snapshot(&stores);
    let (gate_tx, gate_rx) = crossbeam_channel::unbounded();
    let receivers: Vec<_> = (0..4)
        .map(|_| {
            let (target, snapshot) = (stores.target.clone(), snapshot.clone());
            let mut chunks = GatedChunks { data: MemoryChunks::new(&data, 256), gate: gate_rx.clone() };
            thread::spawn(move || target.receive(&snapshot_message(&snapshot), &mut chunks))
        })
        .collect();
    let deadline = Instant::now() + DONE_TIMEOUT;
    while stores.target.stats().receiving < 4 {
        assert!(Instant::now() < deadline, "the receivers never took their slots");
        thread::sleep(Duration::from_millis(1));
    }
    let refused = receive_bytes(&stores.target, &snapshot, &data);
    assert!(matches!(refused, Err(SnapshotError::Busy { .. })), "{refused:?}");
    for _ in 0..4 {
        gate_tx.send(()).unwrap();
    }
    for receiver in receivers {
        receiver.join().unwrap().unwrap();
    }
    let stats = stores.target.stats();
    assert_eq!((stats.received, stats.busy_receive, stats.receiving), (4, 1, 0));
    assert_eq!(file_names(&stores.target.config().dir), vec!["rcv_3_6_42.snap".to_string()]);
}

#[test]
fn leftovers_of_a_previous_run_are_removed_at_open() {
    let dir = tempfile::tempdir().unwrap();
    let names = [
        "gen_1_2_3.snap",
        "gen_1_2_3.snap.0.tmp",
        "rcv_1_2_3.snap.7.tmp",
        "rcv_4_5_6.snap",
        "notes.txt",
        "other.tmp",
    ];
    for name in names {
        fs::write(dir.path().join(name), b"x").unwrap();
    }
    let manager = open_manager(dir.path(), 256);
    assert_eq!(file_names(dir.path()), vec!["notes.txt", "other.tmp"]);
    assert_eq!(manager.stats().leftovers_removed, 4);

    let parent = tempfile::tempdir().unwrap();
    let missing = parent.path().join("a/b");
    open_manager(&missing, 256);
    assert!(missing.is_dir());
}

#[test]
fn a_config_without_limits_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    assert!(SnapshotConfig::new(dir.path()).validate().is_ok());
    let zeroed = [
        SnapshotConfig { chunk_bytes: 0, ..SnapshotConfig::new(dir.path()) },
        SnapshotConfig { generate_concurrency_max: 0, ..SnapshotConfig::new(dir.path()) },
        SnapshotConfig { send_concurrency_max: 0, ..SnapshotConfig::new(dir.path()) },
        SnapshotConfig { receive_concurrency_max: 0, ..SnapshotConfig::new(dir.path()) },
    ];
    for config in zeroed {
        let result = SnapshotManager::open(config).map(|_| ());
        assert!(matches!(result, Err(SnapshotError::Config(_))), "{result:?}");
    }
}

#[test]
fn a_removed_generated_file_cannot_be_sent() {
    let stores = two_stores(256);
    let (snapshot, _) = small_snapshot(&stores);
    stores.source.remove_generated(&snapshot).unwrap();
    stores.source.remove_generated(&snapshot).unwrap();
    let result = stores.source.open_chunks(&snapshot).map(|_| ());
    assert!(matches!(result, Err(SnapshotError::Io { op: "opening", .. })), "{result:?}");
}

/// A failed sync of a snapshot file, of its data or of its directory entry, fails the
/// generation or the receive and leaves no file under any name: the file is never synced
/// again or trusted (LESSONS.md #25). Once the disk syncs again, both work.
#[test]
fn a_failed_sync_fails_the_snapshot_and_leaves_no_file() {
    use crate::snapshot::SyncFault;
    for fault in [SyncFault::File, SyncFault::Directory] {
        let stores = two_stores(256);
        put_kvs(&stores.source_engine, &numbered_kvs("k", 100, "v"));
        let region = region(b"", b"");

        *stores.source.sync_fault.lock().unwrap() = Some(fault);
        let (done_tx, done_rx) = crossbeam_channel::bounded(1);
        let on_done = Box::new(move |result| done_tx.send(result).unwrap());
        stores
            .source
            .spawn_generate(stores.source_engine.clone(), region.clone(), INDEX, TERM, conf_state(), on_done)
            .unwrap();
        let generated = done_rx.recv_timeout(DONE_TIMEOUT).expect("on_done is called");
        let error = generated.expect_err("the generation fails").to_string();
        assert!(error.contains("injected sync failure"), "{fault:?}: {error}");
        assert_eq!(file_names(&stores.source.config().dir), Vec::<String>::new(), "{fault:?}");
        assert_eq!(stores.source.stats().generate_failed, 1);
        *stores.source.sync_fault.lock().unwrap() = None;
        let (snapshot, data) = small_snapshot(&stores);

        *stores.target.sync_fault.lock().unwrap() = Some(fault);
        let error =
            receive_bytes(&stores.target, &snapshot, &data).expect_err("the receive fails").to_string();
        assert!(error.contains("injected sync failure"), "{fault:?}: {error}");
        assert!(!stores.target.has_received(&snapshot), "{fault:?}");
        assert_eq!(file_names(&stores.target.config().dir), Vec::<String>::new(), "{fault:?}");
        let stats = stores.target.stats();
        assert_eq!((stats.received, stats.receive_failed, stats.receiving), (0, 1, 0));

        *stores.target.sync_fault.lock().unwrap() = None;
        receive_bytes(&stores.target, &snapshot, &data).expect("the receive works again");
        assert!(stores.target.has_received(&snapshot));
    }
}
