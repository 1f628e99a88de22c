//! The transport's limits and timings, with defaults that suit a store on a LAN.

use std::time::Duration;

use thiserror::Error;

/// What the gRPC client and server of one store run with. `TransportConfig::default()` gives
/// the documented defaults; `validate` refuses values that could never work.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TransportConfig {
    /// The largest gRPC message (one batch, or one snapshot chunk) a server decodes and a
    /// client sends. A server refuses a larger one with a status, so a confused or hostile
    /// peer cannot make a store allocate without bound; a client splits a larger batch and
    /// drops a single message that exceeds it (Raft retries it, and the store's own
    /// `raft_msg_bytes_max` keeps appends far below it). Default 16 MiB.
    pub message_bytes_max: usize,
    /// Batches waiting for one destination's stream. A sender that outruns the network gets
    /// `Full` beyond it instead of growing memory; Raft retries. Default 1024.
    pub queue_batches_max: usize,
    /// Encoded bytes waiting for one destination's stream, the same way (a batch larger than
    /// this still goes into an empty queue). Default 64 MiB.
    pub queue_bytes_max: usize,
    /// How long a connection attempt may take before it counts as failed. Default 1 s.
    pub connect_timeout: Duration,
    /// The wait before reconnecting after the first failure; it doubles with each failure
    /// in a row up to `reconnect_backoff_max`, so a dead store costs a connection attempt
    /// every few seconds, not a busy loop. Defaults 100 ms and 3 s.
    pub reconnect_backoff_initial: Duration,
    pub reconnect_backoff_max: Duration,
    /// How often an idle connection is pinged (HTTP/2 keepalive), and how long a ping may go
    /// unanswered before the connection counts as dead: a peer that vanished without closing
    /// its sockets is noticed within twice this. Default 10 s.
    pub keepalive_interval: Duration,
    /// The size snapshot data is cut into on the wire, whatever size the store reads it in:
    /// what one chunk costs in memory on each side. It must leave room under
    /// `message_bytes_max` for the chunk's framing. Default 1 MiB.
    pub snapshot_chunk_bytes: usize,
    /// Chunks received but not yet written by the receiving store (the buffer between the
    /// network and the blocking writer). Default 4.
    pub snapshot_chunks_in_flight_max: usize,
    /// Snapshots this store sends at once. Each opens its own connection, so that a
    /// snapshot never waits behind the message stream nor holds it up. Default 4.
    pub snapshot_send_concurrency_max: usize,
    /// Snapshots this store receives at once; beyond it the server answers
    /// `RESOURCE_EXHAUSTED` and the sender retries later. Default 4.
    pub snapshot_receive_concurrency_max: usize,
    /// The longest a snapshot send may take, end to end, before the sender gives up (a
    /// receiver that hangs must not hold a snapshot thread forever). Default 10 min.
    pub snapshot_send_timeout: Duration,
    /// The longest a receiver waits for the next chunk of a snapshot before it drops the
    /// snapshot: a sender that stalls while its connection stays up (keepalive answers)
    /// must not hold one of the `snapshot_receive_concurrency_max` slots forever.
    /// Default 30 s.
    pub snapshot_chunk_timeout: Duration,
    /// Worker threads of the runtime a [`crate::TransportRuntime`] owns. The transport only
    /// moves bytes; one or two threads keep up with a store. Default 2.
    pub runtime_worker_threads: usize,
}

impl Default for TransportConfig {
    fn default() -> Self {
        TransportConfig {
            message_bytes_max: 16 << 20,
            queue_batches_max: 1024,
            queue_bytes_max: 64 << 20,
            connect_timeout: Duration::from_secs(1),
            reconnect_backoff_initial: Duration::from_millis(100),
            reconnect_backoff_max: Duration::from_secs(3),
            keepalive_interval: Duration::from_secs(10),
            snapshot_chunk_bytes: 1 << 20,
            snapshot_chunks_in_flight_max: 4,
            snapshot_send_concurrency_max: 4,
            snapshot_receive_concurrency_max: 4,
            snapshot_send_timeout: Duration::from_secs(600),
            snapshot_chunk_timeout: Duration::from_secs(30),
            runtime_worker_threads: 2,
        }
    }
}

/// Room a snapshot chunk needs beyond its data: the protobuf tag and length of the data
/// field. The first chunk carries the Raft message and no data, and is checked on its own.
const CHUNK_FRAMING_BYTES: usize = 16;

impl TransportConfig {
    /// Checks what would make the transport unable to work, naming the field.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let at_least_one = [
            ("message_bytes_max", self.message_bytes_max),
            ("queue_batches_max", self.queue_batches_max),
            ("queue_bytes_max", self.queue_bytes_max),
            ("snapshot_chunk_bytes", self.snapshot_chunk_bytes),
            ("snapshot_chunks_in_flight_max", self.snapshot_chunks_in_flight_max),
            ("snapshot_send_concurrency_max", self.snapshot_send_concurrency_max),
            ("snapshot_receive_concurrency_max", self.snapshot_receive_concurrency_max),
            ("runtime_worker_threads", self.runtime_worker_threads),
        ];
        if let Some((field, _)) = at_least_one.iter().find(|(_, value)| *value == 0) {
            return Err(ConfigError::Invalid(format!("{field} must be at least 1")));
        }
        let not_zero = [
            ("connect_timeout", self.connect_timeout),
            ("reconnect_backoff_initial", self.reconnect_backoff_initial),
            ("keepalive_interval", self.keepalive_interval),
            ("snapshot_send_timeout", self.snapshot_send_timeout),
            ("snapshot_chunk_timeout", self.snapshot_chunk_timeout),
        ];
        if let Some((field, _)) = not_zero.iter().find(|(_, value)| value.is_zero()) {
            return Err(ConfigError::Invalid(format!("{field} must not be zero")));
        }
        if self.reconnect_backoff_max < self.reconnect_backoff_initial {
            return Err(ConfigError::Invalid(
                "reconnect_backoff_max must be at least reconnect_backoff_initial".into(),
            ));
        }
        if self.snapshot_chunk_bytes.saturating_add(CHUNK_FRAMING_BYTES) > self.message_bytes_max {
            return Err(ConfigError::Invalid(format!(
                "snapshot_chunk_bytes ({}) plus {CHUNK_FRAMING_BYTES} bytes of framing must fit in \
                 message_bytes_max ({})",
                self.snapshot_chunk_bytes, self.message_bytes_max
            )));
        }
        Ok(())
    }
}

#[derive(Clone, Debug, Error, PartialEq, Eq)]
pub enum ConfigError {
    #[error("invalid transport config: {0}")]
    Invalid(String),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_defaults_are_valid() {
        assert_eq!(TransportConfig::default().validate(), Ok(()));
    }

    #[test]
    fn impossible_values_are_refused_by_name() {
        type Spoil = fn(&mut TransportConfig);
        let cases: Vec<(Spoil, &str)> = vec![
            (|c| c.queue_batches_max = 0, "queue_batches_max must be at least 1"),
            (|c| c.snapshot_receive_concurrency_max = 0, "snapshot_receive_concurrency_max"),
            (|c| c.connect_timeout = Duration::ZERO, "connect_timeout must not be zero"),
            (|c| c.reconnect_backoff_max = Duration::from_millis(1), "reconnect_backoff_max"),
            (|c| c.snapshot_chunk_bytes = c.message_bytes_max, "must fit in message_bytes_max"),
        ];
        for (spoil, expected) in cases {
            let mut config = TransportConfig::default();
            spoil(&mut config);
            let error = config.validate().unwrap_err().to_string();
            assert!(error.contains(expected), "{error:?} should mention {expected:?}");
        }
    }
}
