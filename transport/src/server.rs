//! The server side: [`RaftServer`] accepts other stores' streams and hands what arrives to
//! this store's [`RaftReceiver`].
//!
//! A `Raft` stream carries batches: each is checked (it must come from one other store, the
//! same for the whole stream, and be addressed to this one), its heartbeat records are
//! expanded, and its messages go to the receiver in one call, which never blocks. A
//! `Snapshot` stream is one snapshot: the receiver stages it with blocking file IO, so it
//! runs on tokio's blocking pool and pulls chunks from the stream through a small bounded
//! channel; the stream is read only as fast as the data is written.

use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;
use std::time::Duration;

use ::metrics::counter;
use bytes::Bytes;
use tessera_proto::serverpb::{RaftMessageBatch, SnapshotChunk};
use tessera_router::{expand_batch, RaftReceiver, SnapshotChunks};
use thiserror::Error;
use tokio::runtime::Handle;
use tokio::sync::{mpsc, watch, OwnedSemaphorePermit, Semaphore};
use tonic::transport::server::TcpIncoming;
use tonic::transport::Server;
use tonic::{Code, Request, Response, Status, Streaming};

use crate::config::{ConfigError, TransportConfig};
use crate::metrics::{self, count_rejected, Rejection};
use crate::serving::{stop_requested, tokio_listener, ServingTask};
use crate::transportpb::raft_transport_server::{RaftTransport, RaftTransportServer};
use crate::transportpb::Done;

/// How long `shutdown` waits for open streams to wind down before it cuts them.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(2);

#[derive(Debug, Error)]
pub enum ServerError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("transport server listener: {0}")]
    Listener(#[from] std::io::Error),
}

/// A running transport server of one store. Stop it with `shutdown` (or by dropping it,
/// which does not wait).
#[derive(Debug)]
pub struct RaftServer {
    local_addr: SocketAddr,
    // Dropping it stops the server without waiting.
    task: ServingTask,
}

impl RaftServer {
    /// Serves store `store_id` on `listener` (already bound: tests bind port 0 and read the
    /// port back with `local_addr`), delivering to `receiver`, on `runtime`.
    pub fn start(
        config: &TransportConfig,
        store_id: u64,
        listener: TcpListener,
        receiver: Arc<dyn RaftReceiver>,
        runtime: Handle,
    ) -> Result<RaftServer, ServerError> {
        config.validate()?;
        let local_addr = listener.local_addr()?;
        let incoming = TcpIncoming::from(tokio_listener(listener, &runtime)?).with_nodelay(Some(true));
        let (snapshot_receive_concurrency_max, snapshot_chunks_in_flight_max, snapshot_chunk_timeout) = (
            config.snapshot_receive_concurrency_max,
            config.snapshot_chunks_in_flight_max,
            config.snapshot_chunk_timeout,
        );
        let (message_bytes_max, keepalive_interval) = (config.message_bytes_max, config.keepalive_interval);
        let task = ServingTask::spawn(&runtime, move |stopped| {
            let service = RaftService {
                store_id,
                receiver,
                snapshot_receives: Arc::new(Semaphore::new(snapshot_receive_concurrency_max)),
                snapshot_receive_concurrency_max,
                snapshot_chunks_in_flight_max,
                snapshot_chunk_timeout,
                stopped: stopped.clone(),
            };
            let service = RaftTransportServer::new(service)
                .max_decoding_message_size(message_bytes_max)
                .max_encoding_message_size(message_bytes_max);
            let serve = Server::builder()
                .http2_keepalive_interval(Some(keepalive_interval))
                .http2_keepalive_timeout(Some(keepalive_interval))
                .serve_with_incoming_shutdown(service, incoming, stop_requested(stopped));
            async move {
                if let Err(error) = serve.await {
                    tracing::error!(store_id, %error, "the transport server stopped on an error");
                }
            }
        });
        Ok(RaftServer { local_addr, task })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Stops accepting, ends every open stream (their senders see `UNAVAILABLE` and
    /// reconnect elsewhere or later) and waits until the listener is closed, so the address
    /// can be bound again at once. Call it from outside the runtime.
    pub fn shutdown(self) {
        self.task.shutdown(SHUTDOWN_GRACE);
    }
}

struct RaftService {
    store_id: u64,
    receiver: Arc<dyn RaftReceiver>,
    snapshot_receives: Arc<Semaphore>,
    snapshot_receive_concurrency_max: usize,
    snapshot_chunks_in_flight_max: usize,
    snapshot_chunk_timeout: Duration,
    stopped: watch::Receiver<bool>,
}

impl RaftService {
    /// The next snapshot chunk, waiting at most `snapshot_chunk_timeout` for it.
    async fn next_chunk(
        &self,
        stream: &mut Streaming<SnapshotChunk>,
    ) -> Result<Option<SnapshotChunk>, Status> {
        match tokio::time::timeout(self.snapshot_chunk_timeout, self.next(stream)).await {
            Ok(next) => next,
            Err(_) => Err(Status::deadline_exceeded(format!(
                "no snapshot chunk for {} ms (snapshot_chunk_timeout)",
                self.snapshot_chunk_timeout.as_millis()
            ))),
        }
    }

    /// The next message of `stream`, or `UNAVAILABLE` once the server is stopping: a stream
    /// that never ends by itself must not hold the shutdown up.
    async fn next<T>(&self, stream: &mut Streaming<T>) -> Result<Option<T>, Status> {
        let mut stopped = self.stopped.clone();
        tokio::select! {
            next = stream.message() => next.map_err(refusal_of_oversized),
            _ = stopped.wait_for(|stop| *stop) => {
                Err(Status::unavailable(format!("store {} is shutting down its transport", self.store_id)))
            }
        }
    }

    /// Whether `batch` may come in on a stream whose sender is `sender` (None before the
    /// first batch).
    fn check_routing(&self, batch: &RaftMessageBatch, sender: Option<u64>) -> Result<(), Status> {
        let from = batch.from_store_id;
        let problem = if batch.to_store_id != self.store_id {
            Some(format!("batch for store {} reached store {}", batch.to_store_id, self.store_id))
        } else if from == 0 || from == self.store_id {
            Some(format!("batch claims to come from store {from}"))
        } else if sender.is_some_and(|sender| sender != from) {
            Some(format!("stream of store {} carried a batch of store {from}", sender.unwrap_or(0)))
        } else {
            None
        };
        match problem {
            Some(problem) => {
                count_rejected(Rejection::WrongStore);
                Err(Status::invalid_argument(problem))
            }
            None => Ok(()),
        }
    }
}

/// tonic refuses a message over the decoding limit with `OUT_OF_RANGE`; it is counted and
/// answered as `RESOURCE_EXHAUSTED`, the code gRPC uses for a message that is too large.
fn refusal_of_oversized(status: Status) -> Status {
    if status.code() == Code::OutOfRange {
        count_rejected(Rejection::Oversized);
        return Status::resource_exhausted(status.message().to_string());
    }
    status
}

#[tonic::async_trait]
impl RaftTransport for RaftService {
    async fn raft(&self, request: Request<Streaming<RaftMessageBatch>>) -> Result<Response<Done>, Status> {
        let mut stream = request.into_inner();
        let mut sender = None;
        while let Some(batch) = self.next(&mut stream).await? {
            self.check_routing(&batch, sender)?;
            sender = Some(batch.from_store_id);
            let messages = expand_batch(batch);
            counter!("tessera_transport_batches_received_total").increment(1);
            counter!("tessera_transport_messages_received_total").increment(messages.len() as u64);
            self.receiver.receive_batch(messages);
        }
        Ok(Response::new(Done {}))
    }

    async fn snapshot(&self, request: Request<Streaming<SnapshotChunk>>) -> Result<Response<Done>, Status> {
        let Ok(permit) = Arc::clone(&self.snapshot_receives).try_acquire_owned() else {
            metrics::snapshots_received("limit").increment(1);
            return Err(Status::resource_exhausted(format!(
                "store {} is receiving {} snapshots already (snapshot_receive_concurrency_max)",
                self.store_id, self.snapshot_receive_concurrency_max
            )));
        };
        // A guard, not an increment and a decrement: the client may cancel the call, which
        // drops this future at its await and would skip a decrement written after it.
        let _receiving = metrics::GaugeGuard::raise(metrics::snapshot_receives());
        let outcome = self.receive_snapshot(request.into_inner(), permit).await;
        let result = match &outcome {
            Ok(_) => "ok",
            Err(status) if status.code() == Code::FailedPrecondition => "refused",
            Err(_) => "failed",
        };
        metrics::snapshots_received(result).increment(1);
        outcome
    }
}

impl RaftService {
    /// Streams the chunks to the store's receiver on a blocking thread. `permit` (one of
    /// the concurrent receives) goes with that thread: should the call be cancelled, the
    /// thread still runs until it sees the stream end, and the limit must count it until
    /// then.
    async fn receive_snapshot(
        &self,
        mut stream: Streaming<SnapshotChunk>,
        permit: OwnedSemaphorePermit,
    ) -> Result<Response<Done>, Status> {
        let first = self
            .next_chunk(&mut stream)
            .await?
            .ok_or_else(|| Status::invalid_argument("the snapshot stream ended before its first chunk"))?;
        let Some(msg) = first.message else {
            return Err(Status::invalid_argument("the first snapshot chunk carries no Raft message"));
        };
        let to_store_id = msg.to_peer.as_ref().map_or(0, |peer| peer.store_id);
        if to_store_id != self.store_id {
            count_rejected(Rejection::WrongStore);
            return Err(Status::invalid_argument(format!(
                "snapshot for store {to_store_id} reached store {}",
                self.store_id
            )));
        }
        let (chunk_tx, chunk_rx) = mpsc::channel(self.snapshot_chunks_in_flight_max);
        let receiver = Arc::clone(&self.receiver);
        let staging = tokio::task::spawn_blocking(move || {
            let _permit = permit;
            receiver.receive_snapshot(msg, &mut StreamedChunks { chunks: chunk_rx, ended: false })
        });
        let mut stream_error = None;
        let mut pending = (!first.data.is_empty()).then_some(first.data);
        loop {
            let piece = match pending.take() {
                Some(data) => Piece::Data(data),
                None => match self.next_chunk(&mut stream).await {
                    Ok(Some(SnapshotChunk { message: None, data })) if data.is_empty() => Piece::End,
                    Ok(Some(SnapshotChunk { message: None, data })) => Piece::Data(data),
                    Ok(Some(SnapshotChunk { message: Some(_), .. })) => {
                        let status =
                            Status::invalid_argument("a snapshot chunk after the first carries a message");
                        stream_error = Some(status);
                        Piece::Failed("the stream was malformed".into())
                    }
                    Ok(None) => {
                        let reason = "the snapshot stream ended without its end marker";
                        stream_error = Some(Status::invalid_argument(reason));
                        Piece::Failed(reason.into())
                    }
                    Err(status) => {
                        let reason = format!("the stream failed: {}", status.message());
                        stream_error = Some(status);
                        Piece::Failed(reason)
                    }
                },
            };
            let last = !matches!(piece, Piece::Data(_));
            if let Piece::Data(data) = &piece {
                counter!("tessera_transport_snapshot_received_bytes_total").increment(data.len() as u64);
            }
            // A send fails once the receiver stopped pulling: it refused the snapshot (or
            // took it without its tail); its answer below says which.
            if chunk_tx.send(piece).await.is_err() || last {
                break;
            }
        }
        drop(chunk_tx);
        let staged = staging.await;
        if let Some(status) = stream_error {
            return Err(status);
        }
        match staged {
            Ok(Ok(())) => Ok(Response::new(Done {})),
            Ok(Err(reason)) => Err(Status::failed_precondition(format!("snapshot refused: {reason}"))),
            Err(join_error) => Err(Status::internal(format!("the snapshot receiver failed: {join_error}"))),
        }
    }
}

/// What the network side hands the blocking receiver.
#[derive(Debug)]
enum Piece {
    Data(Bytes),
    /// The sender's end marker (an empty chunk) arrived: the data is complete.
    End,
    /// The stream broke; the receiver must discard what it staged.
    Failed(String),
}

/// The receiver's view of a snapshot stream. Only the sender's end marker ends the data: a
/// stream that ends without it, or a channel closed without `End`, means the transfer broke
/// off, and a truncated file must never pass for a whole one.
struct StreamedChunks {
    chunks: mpsc::Receiver<Piece>,
    ended: bool,
}

impl SnapshotChunks for StreamedChunks {
    fn next_chunk(&mut self) -> Result<Option<Bytes>, String> {
        if self.ended {
            return Ok(None);
        }
        match self.chunks.blocking_recv() {
            Some(Piece::Data(data)) => Ok(Some(data)),
            Some(Piece::End) => {
                self.ended = true;
                Ok(None)
            }
            Some(Piece::Failed(reason)) => Err(reason),
            None => Err("the snapshot stream broke off".into()),
        }
    }
}
