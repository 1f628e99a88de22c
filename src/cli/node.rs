//! `tessera node`: one node of a static cluster, from a config file and flags over it.

use std::path::PathBuf;

use anyhow::Context as _;
use clap::Args;

use crate::node_file::NodeFile;

#[derive(Debug, Clone, Args)]
pub struct NodeArgs {
    /// The node's config file (TOML; see `--print-config` for its keys).
    #[arg(long)]
    pub config: PathBuf,
    /// Overrides the file's `store_id`.
    #[arg(long)]
    pub store_id: Option<u64>,
    /// Overrides the file's `data_dir`.
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Overrides the file's `raft_address`.
    #[arg(long)]
    pub raft_address: Option<String>,
    /// Overrides the file's `kv_address`.
    #[arg(long)]
    pub kv_address: Option<String>,
    /// Overrides the file's `metrics_address` (where GET /metrics is served).
    #[arg(long)]
    pub metrics_address: Option<String>,
    /// Print the effective config (the file with the flags applied) as TOML and exit.
    #[arg(long)]
    pub print_config: bool,
}

impl NodeArgs {
    /// Reads the file and applies the flags over it.
    pub fn effective_file(&self) -> anyhow::Result<NodeFile> {
        let text = std::fs::read_to_string(&self.config)
            .with_context(|| format!("reading {}", self.config.display()))?;
        let mut file =
            NodeFile::parse(&text).map_err(|error| anyhow::anyhow!("{}: {error}", self.config.display()))?;
        if let Some(store_id) = self.store_id {
            file.store_id = store_id;
        }
        if let Some(data_dir) = &self.data_dir {
            file.data_dir = data_dir.clone();
        }
        if let Some(raft_address) = &self.raft_address {
            file.raft_address = raft_address.clone();
        }
        if let Some(kv_address) = &self.kv_address {
            file.kv_address = kv_address.clone();
        }
        if let Some(metrics_address) = &self.metrics_address {
            file.metrics_address = Some(metrics_address.clone());
        }
        Ok(file)
    }
}
