//! Linearizable reads. A read at the leader gets a read index from the core (ReadIndex: a
//! heartbeat round confirms the leadership, batched for every read of the round; or at once
//! while the leader lease holds, when `raft_lease_reads` is on). Once this peer has applied
//! up to that index, the read runs on the engine and sees every write that was acknowledged
//! before the read arrived.

use std::collections::VecDeque;
use tessera_raft::{Error as RaftError, ProposalDropReason};

use super::PollContext;
use crate::error::{server_is_busy, BusyCause, StoreError, StoreResult};
use crate::keys::{self, CF_DEFAULT};
use crate::msg::{Callback, ReadQuery, ReadRequest, ReadResponse};
use crate::operation::propose::{check_key_in_region, check_leader, check_region_epoch};
use crate::peer::Peer;

/// A read waiting for its read index, then for the apply of that index.
#[derive(Debug)]
pub(crate) struct PendingRead {
    id: u64,
    /// The term it was asked in: a read still without an index when the term changes was
    /// lost with the leadership.
    term: u64,
    request: ReadRequest,
    callback: Callback<ReadResponse>,
    index: Option<u64>,
    /// When the peer took it: read latency is measured from here.
    asked_at: std::time::Instant,
}

/// A peer's reads in flight, in the order they came (so by id).
#[derive(Debug, Default)]
pub(crate) struct Reads {
    pending: VecDeque<PendingRead>,
    next_id: u64,
    /// How many of `pending` have no read index yet: every heartbeat the leader sends asks,
    /// so it is counted rather than searched for.
    awaiting_index_len: usize,
}

impl Reads {
    pub fn is_empty(&self) -> bool {
        self.pending.is_empty()
    }

    /// Whether a read waits for its read index (a heartbeat round confirming leadership).
    pub fn awaiting_index(&self) -> bool {
        debug_assert_eq!(
            self.awaiting_index_len,
            self.pending.iter().filter(|r| r.index.is_none()).count(),
            "reads without an index are counted right"
        );
        self.awaiting_index_len > 0
    }
}

impl Peer {
    /// Starts a read: checks it, asks the core for a read index.
    pub(crate) fn read(
        &mut self,
        ctx: &mut PollContext<'_>,
        request: ReadRequest,
        callback: Callback<ReadResponse>,
    ) {
        if let Err(e) = self.check_read(ctx, &request) {
            return callback.invoke(Err(e));
        }
        // A lease counted in ticks that went missing must not answer this read.
        self.check_tick_clock(ctx);
        let id = self.reads.next_id;
        self.reads.next_id += 1;
        if let Err(e) = self.raw.read_index(id.to_be_bytes().to_vec()) {
            let error = match e {
                // The store's own bound (`proposals_per_peer_max`) is normally the lower.
                RaftError::ReadIndexDropped(ProposalDropReason::ReadsPendingExceeded) => server_is_busy(
                    BusyCause::ReadsPending,
                    format!("region {}: too many reads pending", self.region_id),
                ),
                e => StoreError::ProposalDropped(format!("read refused: {e}")),
            };
            return callback.invoke(Err(error));
        }
        let term = self.raw.raft().term();
        let asked_at = std::time::Instant::now();
        self.reads.pending.push_back(PendingRead { id, term, request, callback, index: None, asked_at });
        self.reads.awaiting_index_len += 1;
        metrics::gauge!("tessera_store_reads_pending").increment(1.0);
    }

    fn check_read(&self, ctx: &PollContext<'_>, request: &ReadRequest) -> StoreResult<()> {
        check_leader(self)?;
        check_region_epoch(request.region_epoch, &self.region, false)?;
        match &request.query {
            ReadQuery::Get { key } => {
                if key.is_empty() {
                    return Err(StoreError::InvalidCommand("empty key".into()));
                }
                check_key_in_region(key, &self.region)?;
            }
            ReadQuery::Scan { start_key, end_key, limit } => {
                if *limit == 0 {
                    return Err(StoreError::InvalidCommand("a scan needs a limit of at least 1".into()));
                }
                if !end_key.is_empty() && end_key <= start_key {
                    return Err(StoreError::InvalidCommand("a scan needs start < end".into()));
                }
                check_key_in_region(start_key, &self.region)?;
            }
        }
        if self.reads.pending.len() >= ctx.store.config.proposals_per_peer_max {
            return Err(server_is_busy(
                BusyCause::ReadsPending,
                format!("region {} has too many reads in flight", self.region_id),
            ));
        }
        Ok(())
    }

    /// The core answered read indexes: record them, then serve what is applied.
    pub(crate) fn on_read_states(&mut self, read_states: Vec<tessera_raft::ReadState>) {
        for state in read_states {
            let Ok(id_bytes) = <[u8; 8]>::try_from(state.request_ctx.as_ref()) else { continue };
            let id = u64::from_be_bytes(id_bytes);
            // Ids grow with every read and `pending` keeps their order.
            let Ok(position) = self.reads.pending.binary_search_by_key(&id, |r| r.id) else { continue };
            let read = &mut self.reads.pending[position];
            if read.index.is_none() {
                read.index = Some(state.index);
                self.reads.awaiting_index_len -= 1;
            }
        }
    }

    /// Serves every read whose index this peer has applied, and answers reads that lost
    /// their leadership before they got an index.
    pub(crate) fn serve_reads(&mut self, ctx: &mut PollContext<'_>) {
        if self.reads.pending.is_empty() {
            return;
        }
        let applied = self.raw.raft().raft_log().applied;
        let (term, leading) = (self.raw.raft().term(), self.is_leader());
        let mut waiting = VecDeque::with_capacity(self.reads.pending.len());
        for read in std::mem::take(&mut self.reads.pending) {
            match read.index {
                Some(index) if index <= applied => {
                    let result = self.run_read(ctx, &read.request.query);
                    metrics::histogram!("tessera_store_read_duration_seconds")
                        .record(read.asked_at.elapsed());
                    metrics::gauge!("tessera_store_reads_pending").decrement(1.0);
                    read.callback.invoke(result);
                }
                None if !leading || read.term != term => {
                    self.reads.awaiting_index_len -= 1;
                    metrics::counter!("tessera_store_reads_lost_leadership_total").increment(1);
                    metrics::gauge!("tessera_store_reads_pending").decrement(1.0);
                    read.callback.invoke(Err(StoreError::NotLeader {
                        region_id: self.region_id,
                        leader: self.leader(),
                    }));
                }
                _ => waiting.push_back(read),
            }
        }
        self.reads.pending = waiting;
    }

    /// The peer is going away: its reads are answered.
    pub(crate) fn drop_reads(&mut self) {
        self.reads.awaiting_index_len = 0;
        for read in self.reads.pending.drain(..) {
            metrics::gauge!("tessera_store_reads_pending").decrement(1.0);
            read.callback.invoke(Err(StoreError::RegionNotFound(self.region_id)));
        }
    }

    fn run_read(&self, ctx: &PollContext<'_>, query: &ReadQuery) -> StoreResult<ReadResponse> {
        // A read that fails is a disk failure: the store stops, as for a failed write.
        let read_failed = |e: crate::engine::EngineError| -> ! {
            ctx.store.stop_fatally(format!("region {}: a read failed: {e}", self.region_id))
        };
        match query {
            ReadQuery::Get { key } => match ctx.store.engine.get(CF_DEFAULT, &keys::data_key(key)) {
                Ok(value) => Ok(ReadResponse::Value(value)),
                Err(e) => read_failed(e),
            },
            ReadQuery::Scan { start_key, end_key, limit } => {
                let limit = (*limit).min(ctx.store.config.scan_limit_max);
                let region_end = self.region.end_key.as_slice();
                let stops_at_region_end =
                    !region_end.is_empty() && (end_key.is_empty() || end_key.as_slice() > region_end);
                let end =
                    if stops_at_region_end || end_key.is_empty() { region_end } else { end_key.as_slice() };
                let range = keys::data_range(start_key, end);
                let bytes_max = ctx.store.config.scan_bytes_max;
                let mut pairs = Vec::new();
                let mut bytes = 0u64;
                let scanned = ctx.store.engine.scan(CF_DEFAULT, &range.start, &range.end, |key, value| {
                    if let Some(user_key) = keys::user_key(key) {
                        bytes += (user_key.len() + value.len()) as u64;
                        pairs.push((user_key.to_vec(), value.to_vec()));
                    }
                    Ok(pairs.len() < limit && bytes < bytes_max)
                });
                if let Err(e) = scanned {
                    read_failed(e);
                }
                // Stopped by either cap: the client goes on after the last pair.
                let reached_limit = pairs.len() >= limit || bytes >= bytes_max;
                let reached_region_end = stops_at_region_end && !reached_limit;
                Ok(ReadResponse::Pairs { pairs, reached_region_end, reached_limit })
            }
        }
    }
}
