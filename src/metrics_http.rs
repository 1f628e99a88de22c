//! `GET /metrics`: every metric the process records, in Prometheus text format.
//!
//! ```text
//! store, router, transport, KV service --metrics::counter!/gauge!/histogram!-->
//!     the process's Prometheus recorder (installed once, by the first node that serves)
//! scraper --GET /metrics--> MetricsServer --PrometheusHandle::render--> text
//! ```
//!
//! The `metrics` crate has one recorder per process. A node installs the Prometheus one when
//! its config asks for a metrics address; an application that installed a recorder of its own
//! leaves the address unset and exports through its recorder instead. Several nodes in one
//! process (`tessera local`, tests) share the recorder, so their figures add up.
//!
//! The HTTP side is deliberately small: HTTP/1.x, one request per connection, `GET
//! /metrics` and nothing else. That is what Prometheus and curl send; it avoids pulling an
//! HTTP server framework into the build for one page.

use std::net::{SocketAddr, TcpListener};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use tessera_transport::{stop_requested, tokio_listener, ServingTask};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::sync::{watch, Semaphore};

/// Most bytes of a request read before it is refused: a scrape's request is a few hundred.
const REQUEST_BYTES_MAX: usize = 8 << 10;

/// How long one connection may take to send its request and receive the page.
const CONNECTION_TIMEOUT: Duration = Duration::from_secs(10);

/// Connections served at once; more wait to be accepted.
const CONNECTIONS_MAX: usize = 16;

/// How often histograms' old samples are folded away (the recorder needs it called).
const UPKEEP_INTERVAL: Duration = Duration::from_secs(5);

/// Buckets for durations, in seconds: 100 µs to about 13 s, doubling.
fn seconds_buckets() -> Vec<f64> {
    (0..18).map(|i| 1e-4 * f64::from(1u32 << i)).collect()
}

/// Buckets for sizes, in bytes: 64 B to 64 MiB, quadrupling.
fn bytes_buckets() -> Vec<f64> {
    (0..11).map(|i| 64.0 * 4f64.powi(i)).collect()
}

/// Buckets for counts (peers per round, entries per batch): 1 to 4096, doubling.
fn count_buckets() -> Vec<f64> {
    (0..13).map(|i| f64::from(1u32 << i)).collect()
}

static HANDLE: OnceLock<Result<PrometheusHandle, String>> = OnceLock::new();

/// The process's Prometheus recorder, installed on first use. Fails when another recorder
/// was installed first.
pub fn prometheus_handle() -> Result<PrometheusHandle, String> {
    HANDLE
        .get_or_init(|| {
            let recorder = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), &seconds_buckets())
                .and_then(|builder| {
                    builder.set_buckets_for_metric(Matcher::Suffix("_bytes".into()), &bytes_buckets())
                })
                .and_then(|builder| builder.set_buckets(&count_buckets()))
                .map_err(|error| format!("metric buckets: {error}"))?
                .build_recorder();
            let handle = recorder.handle();
            metrics::set_global_recorder(recorder).map_err(|_| {
                "another metrics recorder is installed in this process; leave the metrics address unset \
                 and export through that recorder"
                    .to_string()
            })?;
            Ok(handle)
        })
        .clone()
}

/// The running `/metrics` server. Dropping it stops it.
#[derive(Debug)]
pub struct MetricsServer {
    address: SocketAddr,
    _serving: ServingTask,
    // A task of its own, so that upkeep goes on while every connection slot is busy.
    _upkeep: ServingTask,
}

impl MetricsServer {
    /// Serves `handle` on `listener` with tasks of `runtime`.
    pub fn start(
        listener: TcpListener,
        handle: PrometheusHandle,
        runtime: &tokio::runtime::Handle,
    ) -> std::io::Result<MetricsServer> {
        let address = listener.local_addr()?;
        let listener = tokio_listener(listener, runtime)?;
        let upkeep_handle = handle.clone();
        Ok(MetricsServer {
            address,
            _serving: ServingTask::spawn(runtime, move |stopped| serve(listener, handle, stopped)),
            _upkeep: ServingTask::spawn(runtime, move |stopped| upkeep(upkeep_handle, stopped)),
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.address
    }
}

/// Folds histograms' old samples away every `UPKEEP_INTERVAL`, as the recorder needs.
async fn upkeep(handle: PrometheusHandle, stopped: watch::Receiver<bool>) {
    let mut interval = tokio::time::interval(UPKEEP_INTERVAL);
    let stop = stop_requested(stopped);
    tokio::pin!(stop);
    loop {
        tokio::select! {
            _ = interval.tick() => handle.run_upkeep(),
            () = &mut stop => return,
        }
    }
}

async fn serve(listener: tokio::net::TcpListener, handle: PrometheusHandle, stopped: watch::Receiver<bool>) {
    let permits = Arc::new(Semaphore::new(CONNECTIONS_MAX));
    let stop = stop_requested(stopped);
    tokio::pin!(stop);
    loop {
        // A permit first, so that at most CONNECTIONS_MAX connections are open at once.
        let permit = tokio::select! {
            permit = Arc::clone(&permits).acquire_owned() => permit.expect("the semaphore is never closed"),
            () = &mut stop => return,
        };
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = &mut stop => return,
        };
        let Ok((stream, _)) = accepted else { continue };
        let handle = handle.clone();
        tokio::spawn(async move {
            let _ = tokio::time::timeout(CONNECTION_TIMEOUT, answer(stream, &handle)).await;
            drop(permit);
        });
    }
}

/// Reads one request and writes its answer; the connection closes after it.
async fn answer(mut stream: tokio::net::TcpStream, handle: &PrometheusHandle) -> std::io::Result<()> {
    let mut request = Vec::with_capacity(512);
    let mut chunk = [0u8; 1024];
    while !request.windows(4).any(|window| window == b"\r\n\r\n") {
        if request.len() > REQUEST_BYTES_MAX {
            return respond(&mut stream, "431 Request Header Fields Too Large", "request too large\n").await;
        }
        let read = stream.read(&mut chunk).await?;
        if read == 0 {
            return Ok(());
        }
        request.extend_from_slice(&chunk[..read]);
    }
    let request_line = request.split(|&byte| byte == b'\r').next().unwrap_or_default();
    let mut parts = request_line.split(|&byte| byte == b' ');
    let (method, target, version) = (parts.next(), parts.next(), parts.next());
    match (method, target, version) {
        (Some(b"GET"), Some(target), Some(version)) if version.starts_with(b"HTTP/1.") => {
            // A query string (`?name[]=...`) is allowed and ignored: the page is the whole set.
            let path = target.split(|&byte| byte == b'?').next().unwrap_or_default();
            if path == b"/metrics" {
                respond(&mut stream, "200 OK", &handle.render()).await
            } else {
                respond(&mut stream, "404 Not Found", "only /metrics is served here\n").await
            }
        }
        (Some(_), Some(_), Some(version)) if version.starts_with(b"HTTP/1.") => {
            respond(&mut stream, "405 Method Not Allowed", "only GET is served here\n").await
        }
        _ => respond(&mut stream, "400 Bad Request", "not an HTTP/1 request\n").await,
    }
}

async fn respond(stream: &mut tokio::net::TcpStream, status: &str, body: &str) -> std::io::Result<()> {
    let head = format!(
        "HTTP/1.1 {status}\r\nContent-Type: text/plain; version=0.0.4; charset=utf-8\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await?;
    stream.write_all(body.as_bytes()).await?;
    stream.shutdown().await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_cover_their_ranges_in_increasing_order() {
        for buckets in [seconds_buckets(), bytes_buckets(), count_buckets()] {
            assert!(buckets.windows(2).all(|pair| pair[0] < pair[1]));
        }
        assert!(seconds_buckets()[0] <= 1e-4 && *seconds_buckets().last().unwrap() >= 10.0);
        assert!(*bytes_buckets().last().unwrap() >= 64.0 * 1024.0 * 1024.0);
    }
}
