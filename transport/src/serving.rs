//! [`ServingTask`]: a server running on a tokio runtime until told to stop, for every server
//! a node runs (the Raft transport, the KV service, the metrics page).
//!
//! Each one takes a listener bound already (tests bind port 0 and read the port back),
//! serves on a task of the runtime, and stops in one of two ways: `shutdown` stops
//! accepting, lets open requests finish within a grace period, and waits until the
//! listener is closed so the address can be bound again at once; dropping it stops it
//! without waiting.

use std::future::Future;
use std::net::TcpListener;
use std::time::Duration;

use tokio::runtime::Handle;
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// Registers a bound std listener with `runtime`'s reactor, as tokio needs.
pub fn tokio_listener(listener: TcpListener, runtime: &Handle) -> std::io::Result<tokio::net::TcpListener> {
    listener.set_nonblocking(true)?;
    let _entered = runtime.enter();
    tokio::net::TcpListener::from_std(listener)
}

/// Resolves once `stopped` says stop (or its sender is gone): the shutdown signal a serve
/// loop waits on.
pub async fn stop_requested(mut stopped: watch::Receiver<bool>) {
    let _ = stopped.wait_for(|stop| *stop).await;
}

/// A server's task and the signal that stops it.
#[derive(Debug)]
pub struct ServingTask {
    stop: watch::Sender<bool>,
    task: Option<JoinHandle<()>>,
    runtime: Handle,
}

impl ServingTask {
    /// Spawns `serve` on `runtime`, giving it the receiver that says when to stop.
    pub fn spawn<Fut>(runtime: &Handle, serve: impl FnOnce(watch::Receiver<bool>) -> Fut) -> ServingTask
    where
        Fut: Future<Output = ()> + Send + 'static,
    {
        let (stop, stopped) = watch::channel(false);
        let task = runtime.spawn(serve(stopped));
        ServingTask { stop, task: Some(task), runtime: runtime.clone() }
    }

    /// Signals stop and waits up to `grace` for the server to wind down, then cuts what is
    /// left. Blocks: call it from outside the runtime.
    pub fn shutdown(mut self, grace: Duration) {
        let _ = self.stop.send(true);
        if let Some(task) = self.task.take() {
            let abort = task.abort_handle();
            let ended = self.runtime.block_on(async { tokio::time::timeout(grace, task).await });
            if ended.is_err() {
                abort.abort();
            }
        }
    }
}

impl Drop for ServingTask {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}
