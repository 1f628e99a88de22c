//! The file `tessera node --config` reads: one node of a static cluster, in TOML.
//!
//! ```toml
//! store_id = 1
//! data_dir = "/var/lib/tessera/1"
//! raft_address = "10.0.0.1:20160"
//! kv_address = "0.0.0.0:20170"
//! metrics_address = "0.0.0.0:20180"
//! regions_len = 3
//!
//! [[peers]]
//! store_id = 1
//! raft_address = "10.0.0.1:20160"
//!
//! [[peers]]
//! store_id = 2
//! raft_address = "10.0.0.2:20160"
//! ```

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tessera::NodeConfig;

/// A node's config file. Keys it does not know are refused, so that a misspelt key fails
/// loudly instead of leaving its default in place.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeFile {
    /// This node's store id: unique in the cluster, in 1..1000.
    pub store_id: u64,
    /// Where the store keeps its data. Give the same directory on restart to keep the data.
    pub data_dir: PathBuf,
    /// The address the Raft transport listens on, and by which the other nodes reach it:
    /// the same as this store's entry in `peers`.
    pub raft_address: String,
    /// The address clients reach the KV service on.
    pub kv_address: String,
    /// Where `GET /metrics` serves Prometheus text format (for instance "0.0.0.0:20180");
    /// not served when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metrics_address: Option<String>,
    /// How many regions the cluster starts with, the key space split evenly. Every node of
    /// the cluster must have the same number. One when absent.
    #[serde(default = "default_regions_len")]
    pub regions_len: u64,
    /// One Raft tick, in milliseconds; elections and heartbeats are counted in ticks. The
    /// store's default when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub raft_tick_interval_ms: Option<u64>,
    /// Ticks without a leader before a follower campaigns, and between a leader's
    /// heartbeats. The store's defaults (10 and 2) when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub raft_election_ticks: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub raft_heartbeat_ticks: Option<usize>,
    /// Threads stepping Raft peers (and fsyncing their writes); the store's default (2)
    /// when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub raft_pool_size: Option<usize>,
    /// Threads applying committed entries; the store's default (1) when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub apply_pool_size: Option<usize>,
    /// Threads of the async runtime under the gRPC servers and the outbound links; 2 when
    /// absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runtime_worker_threads: Option<usize>,
    /// Every store of the cluster with its Raft address, this one included. Every node of the
    /// cluster must list the same stores.
    pub peers: Vec<PeerEntry>,
}

/// One store of the cluster, in `peers`. (A table keyed by store id would read better, but
/// TOML keys are strings, and an array of tables keeps the ids numbers.)
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PeerEntry {
    /// The store's id.
    pub store_id: u64,
    /// The store's Raft address.
    pub raft_address: String,
}

fn default_regions_len() -> u64 {
    1
}

impl NodeFile {
    pub fn parse(text: &str) -> Result<NodeFile, String> {
        let file: NodeFile = toml::from_str(text).map_err(|error| error.to_string())?;
        let mut seen = BTreeMap::new();
        for peer in &file.peers {
            if seen.insert(peer.store_id, ()).is_some() {
                return Err(format!("peers lists store {} twice", peer.store_id));
            }
        }
        Ok(file)
    }

    pub fn to_toml(&self) -> String {
        toml::to_string(self).expect("a node file always serializes")
    }

    /// The node's config: the file's keys over `NodeConfig::new`'s defaults. `Node::start`
    /// checks the rest (ids in range, this store among the peers with the same address).
    pub fn node_config(&self) -> NodeConfig {
        let peers = self.peers.iter().map(|peer| (peer.store_id, peer.raft_address.clone())).collect();
        let mut config = NodeConfig::new(
            self.store_id,
            self.data_dir.clone(),
            self.raft_address.clone(),
            self.kv_address.clone(),
            peers,
        );
        config.regions_len = self.regions_len;
        config.metrics_address = self.metrics_address.clone();
        if let Some(tick_interval_ms) = self.raft_tick_interval_ms {
            config.raft_tick_interval = Duration::from_millis(tick_interval_ms);
        }
        let keep_default = |value: Option<usize>, default: &mut usize| *default = value.unwrap_or(*default);
        keep_default(self.raft_election_ticks, &mut config.raft_election_ticks);
        keep_default(self.raft_heartbeat_ticks, &mut config.raft_heartbeat_ticks);
        keep_default(self.raft_pool_size, &mut config.raft_pool_size);
        keep_default(self.apply_pool_size, &mut config.apply_pool_size);
        keep_default(self.runtime_worker_threads, &mut config.runtime_worker_threads);
        config
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = r#"
store_id = 2
data_dir = "/var/lib/tessera/2"
raft_address = "10.0.0.2:20160"
kv_address = "0.0.0.0:20170"
metrics_address = "127.0.0.1:20180"
regions_len = 3
raft_pool_size = 1
raft_election_ticks = 20

[[peers]]
store_id = 1
raft_address = "10.0.0.1:20160"

[[peers]]
store_id = 2
raft_address = "10.0.0.2:20160"
"#;

    #[test]
    fn a_sample_file_maps_to_a_node_config() {
        let file = NodeFile::parse(SAMPLE).expect("the sample parses");
        let config = file.node_config();
        assert_eq!((config.store_id, config.regions_len), (2, 3));
        assert_eq!(config.data_dir, PathBuf::from("/var/lib/tessera/2"));
        assert_eq!(
            (config.raft_address.as_str(), config.kv_address.as_str()),
            ("10.0.0.2:20160", "0.0.0.0:20170")
        );
        assert_eq!(config.peers.get(&1).map(String::as_str), Some("10.0.0.1:20160"));
        assert_eq!(config.metrics_address.as_deref(), Some("127.0.0.1:20180"));
        assert_eq!((config.raft_pool_size, config.raft_election_ticks), (1, 20));
        let defaults = NodeConfig::new(2, "/x", "a:1", "a:2", BTreeMap::new());
        assert_eq!(
            (config.apply_pool_size, config.raft_heartbeat_ticks, config.runtime_worker_threads),
            (defaults.apply_pool_size, defaults.raft_heartbeat_ticks, defaults.runtime_worker_threads),
            "keys left out keep the defaults"
        );
        // What --print-config prints reads back as the same file.
        assert_eq!(NodeFile::parse(&file.to_toml()), Ok(file));
    }

    #[test]
    fn bad_files_are_refused() {
        let misspelt = SAMPLE.replace("regions_len", "region_len");
        assert!(NodeFile::parse(&misspelt).unwrap_err().contains("region_len"));
        let without_store_id = SAMPLE.replace("store_id = 2\ndata_dir", "data_dir");
        assert!(NodeFile::parse(&without_store_id).unwrap_err().contains("store_id"));
        let twice = format!("{SAMPLE}\n[[peers]]\nstore_id = 1\nraft_address = \"10.0.0.3:20160\"\n");
        assert_eq!(NodeFile::parse(&twice), Err("peers lists store 1 twice".to_string()));
        assert!(NodeFile::parse("store_id = \"one\"").is_err());
    }
}
