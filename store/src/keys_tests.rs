use std::fmt::Write as _;

use prost::Message as _;
use tessera_proto::raftpb::{ConfState, Entry, EntryType, HardState};
use tessera_proto::storepb::{
    ApplyState, Peer, PeerRole, PeerState, RaftLocalState, Region, RegionEpoch, RegionLocalState,
};

use super::*;

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Every byte string the store writes below Raft, rendered one per line. The golden file
/// is the format: a diff in it is a change of what is on disk, to be made on purpose only.
fn render_encodings() -> String {
    let mut out = String::new();
    let mut line = |name: &str, bytes: &[u8]| writeln!(out, "{name}: {}", hex(bytes)).unwrap();
    line("raft_log_key(7, 42)", &raft_log_key(7, 42));
    line("raft_log_key(u64::MAX, 1)", &raft_log_key(u64::MAX, 1));
    line("raft_state_key(7)", &raft_state_key(7));
    line("region_state_key(7)", &region_state_key(7));
    line("apply_state_key(7)", &apply_state_key(7));
    let meta = region_meta_range();
    line("region_meta_range start", &meta.start);
    line("region_meta_range end", &meta.end);
    line("data_key(\"k1\")", &data_key(b"k1"));
    line("data_key(\"\")", &data_key(b""));
    let range = data_range(b"a", b"");
    line("data_range(\"a\", \"\") start", &range.start);
    line("data_range(\"a\", \"\") end", &range.end);

    let entry = Entry {
        entry_type: EntryType::EntryNormal as i32,
        term: 3,
        index: 42,
        data: b"put k1 v1".to_vec().into(),
        context: Default::default(),
    };
    line("Entry", &entry.encode_to_vec());
    let raft_state = RaftLocalState {
        hard_state: Some(HardState { term: 3, vote: 2, commit: 41 }),
        last_index: 42,
        last_term: 3,
    };
    line("RaftLocalState", &raft_state.encode_to_vec());
    let region = Region {
        id: 7,
        start_key: b"a".to_vec(),
        end_key: b"m".to_vec(),
        epoch: Some(RegionEpoch { conf_ver: 2, version: 5 }),
        peers: vec![
            Peer { id: 71, store_id: 1, role: PeerRole::Voter as i32 },
            Peer { id: 72, store_id: 2, role: PeerRole::Learner as i32 },
        ],
    };
    let conf_state = ConfState { voters: vec![71], learners: vec![72], ..Default::default() };
    let region_state = RegionLocalState {
        region: Some(region),
        state: PeerState::Tombstone as i32,
        conf_state: Some(conf_state),
        peer_id: 71,
    };
    line("RegionLocalState", &region_state.encode_to_vec());
    let apply_state = ApplyState { applied_index: 40, truncated_index: 10, truncated_term: 2 };
    line("ApplyState", &apply_state.encode_to_vec());
    out
}

#[test]
fn encodings_match_the_golden_file() {
    // The crate's directory from the test runner, not the compiler: a shared build directory
    // may hold this test compiled in another checkout (see raft's scenario tests).
    let crate_dir =
        std::env::var("CARGO_MANIFEST_DIR").unwrap_or_else(|_| env!("CARGO_MANIFEST_DIR").to_string());
    let path = format!("{crate_dir}/testdata/encodings.txt");
    let got = render_encodings();
    if std::env::var_os("REWRITE").is_some() {
        std::fs::write(&path, &got).expect("golden file is writable");
        return;
    }
    let want = std::fs::read_to_string(&path).expect("golden file exists (REWRITE=1 creates it)");
    assert_eq!(got, want, "on-disk encodings changed; if on purpose, rerun with REWRITE=1 and say so");
}

#[test]
fn keys_of_one_region_sort_together_and_by_index() {
    let mut keys = vec![
        raft_log_key(2, 1).to_vec(),
        raft_state_key(1).to_vec(),
        raft_log_key(1, 256).to_vec(),
        raft_log_key(1, 255).to_vec(),
        raft_state_key(2).to_vec(),
    ];
    keys.sort();
    assert_eq!(
        keys,
        vec![
            raft_log_key(1, 255).to_vec(),
            raft_log_key(1, 256).to_vec(),
            raft_state_key(1).to_vec(),
            raft_log_key(2, 1).to_vec(),
            raft_state_key(2).to_vec(),
        ]
    );
    let range = raft_log_range(1, 10, 20);
    assert!(range.contains(&raft_log_key(1, 10)) && range.contains(&raft_log_key(1, 19)));
    assert!(!range.contains(&raft_log_key(1, 20)) && !range.contains(&raft_log_key(1, 9)));
}

#[test]
fn keys_decode_to_what_they_encode() {
    assert_eq!(decode_raft_log_key(&raft_log_key(7, 42)), Some((7, 42)));
    assert_eq!(decode_raft_log_key(&raft_state_key(7)), None);
    assert_eq!(decode_raft_log_key(b"garbage"), None);
    assert_eq!(decode_region_state_key(&region_state_key(9)), Some(9));
    assert_eq!(decode_region_state_key(&apply_state_key(9)), None);
    assert_eq!(user_key(&data_key(b"k")), Some(&b"k"[..]));
    assert_eq!(user_key(b"k"), None);
    let meta = region_meta_range();
    assert!(
        meta.start[..] <= region_state_key(u64::MAX)[..] && region_state_key(u64::MAX)[..] < meta.end[..]
    );
}

#[test]
fn data_range_covers_exactly_the_region() {
    let range = data_range(b"b", b"d");
    assert!(range.contains(&data_key(b"b")) && range.contains(&data_key(b"c\xff\xff")));
    assert!(!range.contains(&data_key(b"d")) && !range.contains(&data_key(b"a")));
    let unbounded = data_range(b"", b"");
    assert!(unbounded.contains(&data_key(b"")) && unbounded.contains(&data_key(b"\xff\xff\xff")));
    assert!(!unbounded.contains(&vec![DATA_PREFIX + 1]));
}
