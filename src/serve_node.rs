//! `tessera node`'s work: one node, served until Ctrl-C or SIGTERM.

use anyhow::Context as _;
use tessera::Node;

use crate::local::StopSignals;
use crate::node_file::NodeFile;

pub fn run(file: NodeFile) -> anyhow::Result<()> {
    // The signal listeners only; the node runs a runtime of its own.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let mut stop_signals = runtime.block_on(async { StopSignals::listen() })?;
    let node = Node::start(file.node_config()).with_context(|| format!("starting node {}", file.store_id))?;
    let metrics = node.metrics_address().map(|address| format!("  metrics http://{address}/metrics"));
    println!(
        "tessera node {}: kv {}  raft {}{}  data in {}",
        node.store_id(),
        node.kv_address(),
        node.raft_address(),
        metrics.unwrap_or_default(),
        file.data_dir.display()
    );
    tracing::info!(store_id = node.store_id(), kv = %node.kv_address(), raft = %node.raft_address(), "node serving");
    let stop_reason = runtime.block_on(stop_signals.wait(None));
    println!("stopping ({stop_reason})");
    tracing::info!(store_id = node.store_id(), reason = stop_reason, "node stopping");
    node.shutdown();
    println!("stopped");
    Ok(())
}
