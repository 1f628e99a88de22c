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
    println!(
        "tessera node {}: kv {}  raft {}  data in {}",
        node.store_id(),
        node.kv_address(),
        node.raft_address(),
        file.data_dir.display()
    );
    let stop_reason = runtime.block_on(stop_signals.wait(None));
    println!("stopping ({stop_reason})");
    node.shutdown();
    println!("stopped");
    Ok(())
}
