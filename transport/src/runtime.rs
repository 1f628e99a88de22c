//! The tokio runtime under the transport, for processes that have none: the store runs on
//! OS threads, and only the transport needs async IO.

use std::time::Duration;

use tokio::runtime::{Handle, Runtime};

/// How long dropping a runtime waits for its tasks (connection and stream tasks end as
/// soon as they are cancelled; this only bounds a task stuck in a blocking call).
const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(5);

/// A small multi-thread runtime owned by whoever runs the transport. Servers and links take
/// a [`Handle`], so a process that already has a runtime passes its own instead.
#[derive(Debug)]
pub struct TransportRuntime {
    runtime: Option<Runtime>,
}

impl TransportRuntime {
    /// A runtime with `worker_threads` workers, named after `name` (a store id, say).
    pub fn new(name: &str, worker_threads: usize) -> std::io::Result<TransportRuntime> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(worker_threads.max(1))
            .thread_name(format!("transport-{name}"))
            .enable_all()
            .build()?;
        Ok(TransportRuntime { runtime: Some(runtime) })
    }

    pub fn handle(&self) -> Handle {
        self.runtime.as_ref().expect("invariant: the runtime lives until drop").handle().clone()
    }
}

impl Drop for TransportRuntime {
    fn drop(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_timeout(SHUTDOWN_TIMEOUT);
        }
    }
}
