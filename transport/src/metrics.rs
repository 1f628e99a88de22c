//! The transport's metrics, named in one place. Every queue and limit has one:
//!
//! | name | kind | what |
//! |---|---|---|
//! | `tessera_transport_batches_sent_total` | counter | batches handed to a store's stream |
//! | `tessera_transport_sent_bytes_total` | counter | encoded bytes of those batches |
//! | `tessera_transport_batches_received_total` | counter | batches a server delivered to its store |
//! | `tessera_transport_messages_received_total` | counter | Raft messages in them, heartbeats expanded |
//! | `tessera_transport_queue_batches` | gauge | batches waiting for a stream, per destination |
//! | `tessera_transport_queue_bytes` | gauge | their encoded bytes, per destination |
//! | `tessera_transport_queue_full_total` | counter | batches refused because that queue was full (batches or bytes) |
//! | `tessera_transport_batches_unreachable_total` | counter | batches refused because the store was not connected |
//! | `tessera_transport_batches_dropped_total` | counter | queued batches lost when a stream broke |
//! | `tessera_transport_messages_oversized_total` | counter | single messages over `message_bytes_max`, dropped by the sender |
//! | `tessera_transport_rejected_total{reason}` | counter | input a server refused: `malformed`, `oversized`, `wrong_store` |
//! | `tessera_transport_connects_total{result}` | counter | connection attempts, `ok` or `failed` |
//! | `tessera_transport_connections` | gauge | streams up toward other stores |
//! | `tessera_transport_messages_unbound_total` | counter | messages dropped because no store was bound to the server yet |
//! | `tessera_transport_snapshots_sent_total{result}` | counter | `ok`, `refused`, `unreachable`, `limit` (this store's send limit), `failed` (reading the data failed) |
//! | `tessera_transport_snapshots_received_total{result}` | counter | `ok`, `refused` (by the store), `limit` (receive limit), `failed` (stream broke or was malformed) |
//! | `tessera_transport_snapshot_sends` / `_receives` | gauge | snapshots in flight each way |
//! | `tessera_transport_snapshot_sent_bytes_total` / `_received_bytes_total` | counter | snapshot data bytes |
//! | `tessera_transport_snapshot_send_seconds` | histogram | time to send one snapshot, accepted or not |

use ::metrics::{counter, gauge, Counter, Gauge};

/// Why a server refused input.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Rejection {
    /// It did not decode as the message the RPC carries.
    Malformed,
    /// It was larger than `message_bytes_max`.
    Oversized,
    /// Its routing names another store than the server's, or changed sender mid-stream.
    WrongStore,
}

pub(crate) fn count_rejected(reason: Rejection) {
    let reason = match reason {
        Rejection::Malformed => "malformed",
        Rejection::Oversized => "oversized",
        Rejection::WrongStore => "wrong_store",
    };
    counter!("tessera_transport_rejected_total", "reason" => reason).increment(1);
}

pub(crate) fn queue_batches(to_store_id: u64) -> Gauge {
    gauge!("tessera_transport_queue_batches", "to_store_id" => to_store_id.to_string())
}

pub(crate) fn queue_bytes(to_store_id: u64) -> Gauge {
    gauge!("tessera_transport_queue_bytes", "to_store_id" => to_store_id.to_string())
}

pub(crate) fn connections() -> Gauge {
    gauge!("tessera_transport_connections")
}

pub(crate) fn connects(ok: bool) -> Counter {
    counter!("tessera_transport_connects_total", "result" => if ok { "ok" } else { "failed" })
}

pub(crate) fn snapshots_sent(result: &'static str) -> Counter {
    counter!("tessera_transport_snapshots_sent_total", "result" => result)
}

pub(crate) fn snapshots_received(result: &'static str) -> Counter {
    counter!("tessera_transport_snapshots_received_total", "result" => result)
}

pub(crate) fn snapshot_sends() -> Gauge {
    gauge!("tessera_transport_snapshot_sends")
}

pub(crate) fn snapshot_receives() -> Gauge {
    gauge!("tessera_transport_snapshot_receives")
}

/// Raises a gauge while it lives.
pub(crate) struct GaugeGuard(Gauge);

impl GaugeGuard {
    pub(crate) fn raise(gauge: Gauge) -> GaugeGuard {
        gauge.increment(1.0);
        GaugeGuard(gauge)
    }
}

impl Drop for GaugeGuard {
    fn drop(&mut self) {
        self.0.decrement(1.0);
    }
}
