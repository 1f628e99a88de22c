//! What a proposal can fail with. Every variant tells the client what to do next: go to
//! another store, refresh its region cache, back off, or retry.

use tessera_proto::storepb::{Peer, Region};
use thiserror::Error;

/// Which bounded queue of the store refused a request as busy: the `cause` label of
/// `tessera_store_server_busy_total`, so that an operator sees which limit to raise or
/// which load to shed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum BusyCause {
    /// The region's mailbox (`BatchConfig::mailbox_len_max`), for whatever was sent to it:
    /// a command or read, and also a status query or a leader transfer.
    MailboxFull,
    /// The leader's proposals waiting for apply (`StoreConfig::proposals_per_peer_max`).
    ProposalsWaiting,
    /// The Raft core's uncommitted log tail (`StoreConfig::raft_uncommitted_bytes_max`).
    UncommittedBytes,
    /// Reads waiting for their read index, the store's bound or the core's.
    ReadsPending,
}

impl BusyCause {
    fn label(self) -> &'static str {
        match self {
            BusyCause::MailboxFull => "mailbox_full",
            BusyCause::ProposalsWaiting => "proposals_waiting",
            BusyCause::UncommittedBytes => "uncommitted_bytes",
            BusyCause::ReadsPending => "reads_pending",
        }
    }
}

/// `StoreError::ServerIsBusy` with `detail`, counted under its cause. Every busy refusal of
/// the store goes through here, so none goes uncounted (the KV service's limit on requests
/// in flight answers busy on its own, and counts in its own metrics).
pub(crate) fn server_is_busy(cause: BusyCause, detail: String) -> StoreError {
    metrics::counter!("tessera_store_server_busy_total", "cause" => cause.label()).increment(1);
    StoreError::ServerIsBusy(detail)
}

/// Why the store did not execute a command.
#[derive(Clone, Debug, Error, PartialEq)]
pub enum StoreError {
    /// This peer is not the region's leader. `leader` is the leader it knows of, if any:
    /// the client retries there.
    #[error("region {region_id}: not the leader (leader: {leader:?})")]
    NotLeader { region_id: u64, leader: Option<Peer> },
    /// The store hosts no peer of this region (never did, or it was removed). A command the
    /// peer had accepted before it was destroyed gets it too: its outcome is then unknown
    /// (it may have been applied by the region's other peers).
    #[error("region {0} not found on this store")]
    RegionNotFound(u64),
    /// A key of the command lies outside the region's range.
    #[error("key {key:02x?} is not in region {region_id}")]
    KeyNotInRegion { key: Vec<u8>, region_id: u64, start_key: Vec<u8>, end_key: Vec<u8> },
    /// The command was routed with an epoch that is not the region's current one (the
    /// membership or the range changed). `current` is the region as this store knows it.
    #[error("region epoch does not match; current region: {current:?}")]
    EpochNotMatch { current: Box<Region> },
    /// A bounded queue on the way (a mailbox, the proposals or reads of a peer, the
    /// uncommitted log) is full. Back off. Counted by cause in
    /// `tessera_store_server_busy_total`.
    #[error("server is busy: {0}")]
    ServerIsBusy(String),
    /// The proposal was accepted but will never be applied: its log position was taken by
    /// another leader's entry, or the peer was destroyed. It may be retried.
    #[error("proposal dropped: {0}")]
    ProposalDropped(String),
    /// The command is malformed (no requests, an empty key, an admin command that cannot
    /// apply). Retrying it will not help.
    #[error("invalid command: {0}")]
    InvalidCommand(String),
    /// The store is shutting down or stopped after a fatal error. For a command it had
    /// accepted, the outcome is unknown.
    #[error("store is stopped")]
    StoreStopped,
}

impl StoreError {
    /// A proposal at `index` of `term` whose log position another leader's entry took.
    pub(crate) fn replaced(index: u64, term: u64) -> StoreError {
        StoreError::ProposalDropped(format!("entry {index} of term {term} was replaced by another leader's"))
    }
}

pub type StoreResult<T> = Result<T, StoreError>;

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use metrics_util::debugging::{DebugValue, DebuggingRecorder};

    use super::*;

    #[test]
    fn every_busy_refusal_is_counted_under_its_cause() {
        let recorder = DebuggingRecorder::new();
        let snapshotter = recorder.snapshotter();
        let causes = [
            BusyCause::MailboxFull,
            BusyCause::ProposalsWaiting,
            BusyCause::UncommittedBytes,
            BusyCause::ReadsPending,
            BusyCause::ReadsPending,
        ];
        metrics::with_local_recorder(&recorder, || {
            for cause in causes {
                let error = server_is_busy(cause, format!("{cause:?}"));
                assert_eq!(error, StoreError::ServerIsBusy(format!("{cause:?}")));
            }
        });
        let mut counted = BTreeMap::new();
        for (key, _, _, value) in snapshotter.snapshot().into_vec() {
            assert_eq!(key.key().name(), "tessera_store_server_busy_total");
            let labels: Vec<(String, String)> =
                key.key().labels().map(|l| (l.key().to_string(), l.value().to_string())).collect();
            let DebugValue::Counter(count) = value else { panic!("a counter: {value:?}") };
            counted.insert(labels, count);
        }
        let by_cause = |cause: &str, count: u64| (vec![("cause".to_string(), cause.to_string())], count);
        assert_eq!(
            counted,
            BTreeMap::from([
                by_cause("mailbox_full", 1),
                by_cause("proposals_waiting", 1),
                by_cause("uncommitted_bytes", 1),
                by_cause("reads_pending", 2),
            ])
        );
    }
}
