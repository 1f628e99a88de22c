//! The key layout of a store's one RocksDB.
//!
//! Every key is big-endian and fixed-width up to its variable tail, so that the keys of one
//! region sort together and each kind of record of a region is one contiguous range: a
//! region's log is deleted with one range delete, and all regions are loaded with one scan.
//!
//! - CF `raft`: `[0x01][region_id][0x01][index]` -> `Entry`;
//!   `[0x01][region_id][0x02]` -> `RaftLocalState`, whose `last_index` is a lower bound
//!   of the log's end: plain appends do not rewrite it, and loading seeks the end
//!   (`PeerStorage::load`). Builds from before that rule trust it as the end, so a store
//!   written by this one must not be opened by them.
//! - CF `meta`: `[0x01][region_id][0x01]` -> `RegionLocalState`;
//!   `[0x01][region_id][0x02]` -> `ApplyState`.
//! - CF `default`: `z` followed by the user key, so that a region's data is the contiguous
//!   range `[z + start_key, z + end_key)` and a split or merge moves nothing.
//!
//! These bytes are on disk: `keys_tests.rs` pins them, and changing one is a format change.

use std::ops::Range;

/// User data.
pub const CF_DEFAULT: &str = "default";
/// Raft logs and Raft state of every region.
pub const CF_RAFT: &str = "raft";
/// Region records and apply states.
pub const CF_META: &str = "meta";
/// Every column family, in the order they are opened.
pub const ALL_CFS: [&str; 3] = [CF_DEFAULT, CF_RAFT, CF_META];

const REGION_PREFIX: u8 = 0x01;
const RAFT_LOG_SUFFIX: u8 = 0x01;
const RAFT_STATE_SUFFIX: u8 = 0x02;
const REGION_STATE_SUFFIX: u8 = 0x01;
const APPLY_STATE_SUFFIX: u8 = 0x02;
/// The first byte of every user-data key. A byte of our own in front of user keys leaves
/// room for other kinds of records in CF `default` later without touching user data.
pub const DATA_PREFIX: u8 = b'z';

/// `[0x01][region_id]`: the 9 bytes every record of a region starts with.
const REGION_KEY_LEN: usize = 9;
pub const RAFT_LOG_KEY_LEN: usize = REGION_KEY_LEN + 1 + 8;
pub const REGION_RECORD_KEY_LEN: usize = REGION_KEY_LEN + 1;

fn region_record_key(region_id: u64, suffix: u8) -> [u8; REGION_RECORD_KEY_LEN] {
    let mut key = [0u8; REGION_RECORD_KEY_LEN];
    key[0] = REGION_PREFIX;
    key[1..9].copy_from_slice(&region_id.to_be_bytes());
    key[9] = suffix;
    key
}

/// The key of a region's log entry at `index` (CF raft).
pub fn raft_log_key(region_id: u64, index: u64) -> [u8; RAFT_LOG_KEY_LEN] {
    let mut key = [0u8; RAFT_LOG_KEY_LEN];
    key[..REGION_RECORD_KEY_LEN].copy_from_slice(&region_record_key(region_id, RAFT_LOG_SUFFIX));
    key[REGION_RECORD_KEY_LEN..].copy_from_slice(&index.to_be_bytes());
    key
}

/// The region and index a log key names, or None if `key` is not a log key.
pub fn decode_raft_log_key(key: &[u8]) -> Option<(u64, u64)> {
    if key.len() != RAFT_LOG_KEY_LEN || key[0] != REGION_PREFIX || key[9] != RAFT_LOG_SUFFIX {
        return None;
    }
    let region_id = u64::from_be_bytes(key[1..9].try_into().expect("eight bytes"));
    let index = u64::from_be_bytes(key[10..].try_into().expect("eight bytes"));
    Some((region_id, index))
}

/// The keys of a region's log entries `[low, high)` (CF raft), for scans and range deletes.
pub fn raft_log_range(region_id: u64, low: u64, high: u64) -> Range<[u8; RAFT_LOG_KEY_LEN]> {
    raft_log_key(region_id, low)..raft_log_key(region_id, high)
}

/// The key of a region's `RaftLocalState` (CF raft).
pub fn raft_state_key(region_id: u64) -> [u8; REGION_RECORD_KEY_LEN] {
    region_record_key(region_id, RAFT_STATE_SUFFIX)
}

/// The key of a region's `RegionLocalState` (CF meta).
pub fn region_state_key(region_id: u64) -> [u8; REGION_RECORD_KEY_LEN] {
    region_record_key(region_id, REGION_STATE_SUFFIX)
}

/// The key of a region's `ApplyState` (CF meta).
pub fn apply_state_key(region_id: u64) -> [u8; REGION_RECORD_KEY_LEN] {
    region_record_key(region_id, APPLY_STATE_SUFFIX)
}

/// Which region a `region_state_key` names, or None for any other key.
pub fn decode_region_state_key(key: &[u8]) -> Option<u64> {
    if key.len() != REGION_RECORD_KEY_LEN || key[0] != REGION_PREFIX || key[9] != REGION_STATE_SUFFIX {
        return None;
    }
    Some(u64::from_be_bytes(key[1..9].try_into().expect("eight bytes")))
}

/// Every region record in CF meta, for the scan that loads all regions at start.
pub fn region_meta_range() -> Range<[u8; 1]> {
    [REGION_PREFIX]..[REGION_PREFIX + 1]
}

/// The key under which a user key is stored (CF default).
pub fn data_key(user_key: &[u8]) -> Vec<u8> {
    let mut key = Vec::with_capacity(1 + user_key.len());
    key.push(DATA_PREFIX);
    key.extend_from_slice(user_key);
    key
}

/// The user key of a stored data key, or None if `key` is not a data key.
pub fn user_key(key: &[u8]) -> Option<&[u8]> {
    key.strip_prefix(&[DATA_PREFIX])
}

/// The stored keys of a region whose user range is `[start_key, end_key)`; an empty
/// `end_key` means the end of the key space.
pub fn data_range(start_key: &[u8], end_key: &[u8]) -> Range<Vec<u8>> {
    let end = if end_key.is_empty() { vec![DATA_PREFIX + 1] } else { data_key(end_key) };
    data_key(start_key)..end
}

#[cfg(test)]
#[path = "keys_tests.rs"]
mod tests;
