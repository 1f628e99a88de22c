use thiserror::Error;

/// Why the core refused a proposal. Proposals are never dropped silently: the caller gets
/// one of these and may retry elsewhere or later.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProposalDropReason {
    /// No leader is known (an election is under way, or the node is partitioned).
    NoLeader,
    /// This node is a follower and proposal forwarding is disabled.
    ForwardingDisabled,
    /// This node is campaigning; it cannot accept proposals until a leader is known.
    Campaigning,
    /// The uncommitted tail of the log is at its size limit (`uncommitted_bytes_max`).
    UncommittedSizeExceeded,
    /// The leader is handing leadership over and accepts no new proposals meanwhile.
    TransferringLeader,
    /// The leader is no longer a member of the configuration.
    NotAMember,
    /// Reads only: `Config::reads_pending_max` reads already wait for confirmation.
    ReadsPendingExceeded,
}

/// Errors of the consensus core.
#[derive(Debug, Error)]
pub enum Error {
    #[error("invalid config: {0}")]
    ConfigInvalid(String),
    #[error("proposal dropped: {0:?}")]
    ProposalDropped(ProposalDropReason),
    #[error("local message type {0:?} cannot be stepped from outside")]
    StepLocalMessage(tessera_proto::raftpb::MessageType),
    #[error("response from unknown peer {0}")]
    StepPeerNotFound(u64),
    #[error("message has an unknown type {0}")]
    MessageTypeUnknown(i32),
    #[error("empty proposal")]
    ProposalEmpty,
    #[error("read index dropped: {0:?}")]
    ReadIndexDropped(ProposalDropReason),
    /// With lease reads, a node inside its vote lease does not campaign when asked: a
    /// leader's lease may count on it to help elect no one (`Config::read_only_option`).
    #[error("campaign refused: inside the vote lease a leader's lease may count on")]
    CampaignInVoteLease,
    #[error("membership change refused: {0}")]
    ConfChange(#[from] crate::confchange::ConfChangeError),
    #[error("storage: {0}")]
    Storage(#[from] StorageError),
}

/// Errors a `Storage` returns. The first four are part of the protocol: the core reacts to
/// them. `Other` is an I/O failure, which the core passes up.
#[derive(Debug, Error)]
pub enum StorageError {
    /// The index is below the first index: those entries were compacted into a snapshot.
    #[error("log compacted")]
    Compacted,
    /// The index is above the last index.
    #[error("log unavailable")]
    Unavailable,
    /// A snapshot older than the one stored was offered.
    #[error("snapshot out of date")]
    SnapshotOutOfDate,
    /// The snapshot is being generated; the leader retries later.
    #[error("snapshot temporarily unavailable")]
    SnapshotTemporarilyUnavailable,
    #[error("storage failure: {0}")]
    Other(Box<dyn std::error::Error + Send + Sync>),
}

pub type Result<T> = std::result::Result<T, Error>;
