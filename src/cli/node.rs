//! `tessera node`: one node of a static cluster, from a config file and flags over it.

use std::path::PathBuf;

use anyhow::Context as _;
use clap::Args;

use crate::node_file::{NodeFile, PeerEntry};

/// `STORE_ID=RAFT_ADDRESS`, as `--peer` takes it.
fn parse_peer(text: &str) -> Result<PeerEntry, String> {
    let (store_id, raft_address) =
        text.split_once('=').ok_or_else(|| format!("{text:?} is not STORE_ID=RAFT_ADDRESS"))?;
    let store_id = store_id.trim().parse().map_err(|_| format!("{store_id:?} is not a store id"))?;
    Ok(PeerEntry { store_id, raft_address: raft_address.trim().to_string() })
}

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
    /// Overrides the file's `regions_len`.
    #[arg(long)]
    pub regions_len: Option<u64>,
    /// Overrides the file's `raft_tick_interval_ms`.
    #[arg(long)]
    pub raft_tick_interval_ms: Option<u64>,
    /// Overrides the file's `raft_election_ticks`.
    #[arg(long)]
    pub raft_election_ticks: Option<usize>,
    /// Overrides the file's `raft_heartbeat_ticks`.
    #[arg(long)]
    pub raft_heartbeat_ticks: Option<usize>,
    /// Overrides the file's `raft_pool_size`.
    #[arg(long)]
    pub raft_pool_size: Option<usize>,
    /// Overrides the file's `apply_pool_size`.
    #[arg(long)]
    pub apply_pool_size: Option<usize>,
    /// Overrides the file's `runtime_worker_threads`.
    #[arg(long)]
    pub runtime_worker_threads: Option<usize>,
    /// Replaces the file's `peers`: one `STORE_ID=RAFT_ADDRESS` per store, this one
    /// included (repeat the flag, or separate with commas).
    #[arg(long = "peer", value_delimiter = ',', value_parser = parse_peer)]
    pub peers: Vec<PeerEntry>,
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
        if let Some(regions_len) = self.regions_len {
            file.regions_len = regions_len;
        }
        let overrides = [
            (&mut file.raft_election_ticks, self.raft_election_ticks),
            (&mut file.raft_heartbeat_ticks, self.raft_heartbeat_ticks),
            (&mut file.raft_pool_size, self.raft_pool_size),
            (&mut file.apply_pool_size, self.apply_pool_size),
            (&mut file.runtime_worker_threads, self.runtime_worker_threads),
        ];
        for (key, flag) in overrides {
            if flag.is_some() {
                *key = flag;
            }
        }
        if self.raft_tick_interval_ms.is_some() {
            file.raft_tick_interval_ms = self.raft_tick_interval_ms;
        }
        if !self.peers.is_empty() {
            file.peers = self.peers.clone();
            // The same check as for the file's own list.
            NodeFile::parse(&file.to_toml()).map_err(|error| anyhow::anyhow!("--peer: {error}"))?;
        }
        Ok(file)
    }
}
