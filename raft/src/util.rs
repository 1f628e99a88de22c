//! Small helpers shared by the core and its storage.

use prost::Message as _;
use tessera_proto::raftpb::Entry;

/// Truncates `entries` so their total encoded size stays within `bytes_max`, keeping at
/// least one entry so that progress is always possible.
pub fn limit_size(entries: &mut Vec<Entry>, bytes_max: Option<u64>) {
    let Some(bytes_max) = bytes_max else { return };
    if entries.len() <= 1 {
        return;
    }
    let mut total = 0u64;
    let keep = entries
        .iter()
        .take_while(|e| {
            total += e.encoded_len() as u64;
            total <= bytes_max
        })
        .count();
    entries.truncate(keep.max(1));
}

/// The bytes of payload in entries: what flow control and the uncommitted-size limit count.
/// Only `data` counts, so that the empty entry of a new leader is free.
pub fn payload_bytes(entries: &[Entry]) -> u64 {
    entries.iter().map(|e| e.data.len() as u64).sum()
}
