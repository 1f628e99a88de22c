//! `tessera local`: its arguments and their validation. The cluster and the demo live in
//! `crate::local`.

use std::path::PathBuf;
use std::time::Duration;

use clap::Args;

use crate::local::LocalConfig;

/// Enough to see every region written, few enough that the demo takes a blink.
const DEMO_KEYS_DEFAULT: u64 = 300;

/// Far more keys would only make the demo slow; it is a smoke test, not a benchmark.
const DEMO_KEYS_MAX: u64 = 100_000;

#[derive(Debug, Clone, Args)]
pub struct LocalArgs {
    /// Keep the nodes' data here (one directory per node), and find it again on the next
    /// run. Without it the data lives in a temporary directory removed on exit.
    #[arg(long)]
    pub dir: Option<PathBuf>,
    /// Stop after this many seconds instead of waiting for Ctrl-C or SIGTERM.
    #[arg(long)]
    pub duration: Option<u64>,
    /// How many keys the demo writes and reads back.
    #[arg(long, default_value_t = DEMO_KEYS_DEFAULT)]
    pub keys: u64,
    /// How many regions the cluster starts with (the key space split evenly).
    #[arg(long, default_value_t = 3)]
    pub regions: u64,
}

impl LocalArgs {
    pub fn into_config(self) -> Result<LocalConfig, String> {
        if self.keys > DEMO_KEYS_MAX {
            return Err(format!("--keys {} is above the limit of {DEMO_KEYS_MAX}", self.keys));
        }
        if self.regions == 0 {
            return Err("--regions must be at least 1".to_string());
        }
        Ok(LocalConfig {
            dir: self.dir,
            duration: self.duration.map(Duration::from_secs),
            demo_keys: self.keys,
            regions_len: self.regions,
        })
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use crate::cli::{Cli, Command};

    fn parse(args: &[&str]) -> Result<crate::local::LocalConfig, String> {
        let cli = Cli::try_parse_from(["tessera", "local"].iter().chain(args))
            .unwrap_or_else(|error| panic!("clap refused {args:?}: {error}"));
        let Command::Local(local_args) = cli.command else { panic!("`tessera local` parsed as {cli:?}") };
        local_args.into_config()
    }

    #[test]
    fn defaults_serve_until_a_signal_in_a_temporary_directory() {
        let config = parse(&[]).expect("no arguments are valid");
        assert_eq!((config.dir, config.duration), (None, None));
        assert_eq!((config.demo_keys, config.regions_len), (super::DEMO_KEYS_DEFAULT, 3));
    }

    #[test]
    fn zero_regions_and_too_many_keys_are_refused() {
        assert!(parse(&["--regions", "0"]).is_err());
        assert!(parse(&["--keys", "100001"]).is_err());
        let config = parse(&["--dir", "/tmp/x", "--duration", "3", "--keys", "0"]).expect("valid");
        assert_eq!(config.duration, Some(std::time::Duration::from_secs(3)));
    }
}
