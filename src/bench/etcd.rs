//! The etcd v3 target: `Put` and single-key `Range` over etcd's gRPC KV API.

use std::time::Duration;

use bytes::Bytes;
use tonic::transport::{Channel, Endpoint};
use tonic::{Code, Status};

use super::target::{KvError, KvTarget};

/// The generated client and messages of `etcdserverpb.proto`.
#[allow(missing_debug_implementations)]
mod etcdserverpb {
    tonic::include_proto!("etcdserverpb");
}

use etcdserverpb::kv_client::KvClient;
use etcdserverpb::{PutRequest, RangeRequest};

/// How long to wait for the TCP connection to an endpoint before giving up on the run.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// How long the read that checks an endpoint before the run may take. etcd gives up on a
/// linearizable read by itself after about seven seconds without a leader; this is a bound
/// for a member that accepts connections and never answers.
const PROBE_TIMEOUT: Duration = Duration::from_secs(10);

/// One closed-loop client's handle on an etcd cluster: a generated client on the shared
/// connection to one member.
#[derive(Debug, Clone)]
pub struct EtcdClient {
    kv: KvClient<Channel>,
}

/// Connects to every endpoint and returns `client_count` clients spread over them round-robin.
///
/// All clients on one member share that member's HTTP/2 connection, as etcd's own client
/// library does; etcd forwards writes that reach a follower to the leader, so any member will
/// do. Each endpoint must also answer one linearizable read before this returns: a cluster
/// without a leader or a wrong address fails here, before the clock starts, instead of
/// filling the report with errors.
pub async fn connect(endpoints: &[String], client_count: usize) -> Result<Vec<EtcdClient>, KvError> {
    let mut members = Vec::with_capacity(endpoints.len());
    for endpoint in endpoints {
        let uri = format!("http://{endpoint}");
        let channel = Endpoint::from_shared(uri)
            .map_err(|error| KvError::Rejected(format!("endpoint {endpoint}: {error}")))?
            .connect_timeout(CONNECT_TIMEOUT)
            // Requests are small and latency is what we measure: Nagle's delay would add to it.
            .tcp_nodelay(true)
            .connect()
            .await
            .map_err(|error| {
                KvError::Unavailable(format!("endpoint {endpoint}: {}", with_sources(&error)))
            })?;
        let mut member = EtcdClient { kv: KvClient::new(channel) };
        let probe = member.get(Bytes::from_static(b"tessera-bench-probe"));
        match tokio::time::timeout(PROBE_TIMEOUT, probe).await {
            Ok(Ok(_)) => {}
            Ok(Err(error)) => return Err(KvError::Unavailable(format!("endpoint {endpoint}: {error}"))),
            Err(_) => {
                return Err(KvError::Timeout(format!(
                    "endpoint {endpoint}: no answer to a read within {} s",
                    PROBE_TIMEOUT.as_secs()
                )))
            }
        }
        members.push(member);
    }
    Ok((0..client_count).map(|client_index| members[client_index % members.len()].clone()).collect())
}

impl KvTarget for EtcdClient {
    async fn put(&mut self, key: Bytes, value: Bytes) -> Result<(), KvError> {
        self.kv.put(PutRequest { key, value }).await.map(drop).map_err(error_from_status)
    }

    async fn get(&mut self, key: Bytes) -> Result<Option<Bytes>, KvError> {
        let request = RangeRequest { key, range_end: Bytes::new(), limit: 1, serializable: false };
        let response = self.kv.range(request).await.map_err(error_from_status)?;
        Ok(response.into_inner().kvs.into_iter().next().map(|kv| kv.value))
    }
}

/// An error and its causes, joined: tonic's transport error alone only says "transport error",
/// and the cause (connection refused, no route) is what the operator needs.
fn with_sources(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        // hyper's and tonic's layers sometimes wrap an error in one with the same message.
        let cause_text = cause.to_string();
        if !text.ends_with(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

/// Sorts etcd's gRPC statuses into the report's kinds. etcd answers "no leader", "leader
/// changed" and its own internal request timeouts with `Unavailable`, and "too many requests"
/// with `ResourceExhausted`; tonic reports a broken or refused connection as `Unavailable`.
fn error_from_status(status: Status) -> KvError {
    let message = format!("{:?}: {}", status.code(), status.message());
    match status.code() {
        Code::Unavailable | Code::Cancelled | Code::Aborted => KvError::Unavailable(message),
        Code::DeadlineExceeded => KvError::Timeout(message),
        Code::ResourceExhausted => KvError::Busy(message),
        Code::InvalidArgument
        | Code::FailedPrecondition
        | Code::OutOfRange
        | Code::PermissionDenied
        | Code::Unauthenticated
        | Code::NotFound
        | Code::AlreadyExists
        | Code::Unimplemented => KvError::Rejected(message),
        Code::Ok | Code::Unknown | Code::Internal | Code::DataLoss => KvError::Server(message),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_sort_into_kinds() {
        let kind = |code, message| error_from_status(Status::new(code, message)).kind();
        assert_eq!(kind(Code::Unavailable, "etcdserver: no leader"), "unavailable");
        assert_eq!(kind(Code::ResourceExhausted, "etcdserver: too many requests"), "busy");
        assert_eq!(kind(Code::InvalidArgument, "etcdserver: request is too large"), "rejected");
        assert_eq!(kind(Code::DeadlineExceeded, "deadline"), "timeout");
        assert_eq!(kind(Code::Internal, "boom"), "server");
    }
}
