//! `tessera bench`: its arguments, their validation, and the run.

use std::time::Duration;

use anyhow::Context as _;
use clap::{Args, ValueEnum};

use crate::bench::closed_loop::{self, StopAt, Workload};
use crate::bench::etcd;
use crate::bench::report::{Report, RunDescription};
use crate::bench::KvTarget;

/// How often the run prints a progress line.
const PROGRESS_INTERVAL: Duration = Duration::from_secs(1);

/// How long a client pauses after a failed request (see `Workload::error_backoff`).
const ERROR_BACKOFF: Duration = Duration::from_millis(10);

/// Far above the concurrency that saturates one store; past it, a typo would mostly measure
/// the load generator's own scheduling.
const CONCURRENCY_MAX: usize = 10_000;

/// One value buffer is allocated for the run; far above any store's request limit (etcd's is
/// 1.5 MiB by default), and low enough that a typo cannot abort the process on allocation.
const VALUE_BYTES_MAX: usize = 64 << 20;

/// The arguments as typed. `into_config` checks them; nothing else reads them.
#[derive(Debug, Clone, Args)]
pub struct BenchArgs {
    /// The kind of store at the endpoints.
    #[arg(long, value_enum)]
    pub target: TargetKind,
    /// The store's client endpoints, as comma-separated host:port. Clients are spread over
    /// them round-robin.
    #[arg(long, value_delimiter = ',')]
    pub endpoints: Vec<String>,
    /// Clients, each with one request in flight at a time.
    #[arg(long, default_value_t = 16)]
    pub concurrency: usize,
    /// Distinct keys; every request picks one uniformly.
    #[arg(long, default_value_t = 100_000)]
    pub key_space: u64,
    /// The size of every written value, in bytes.
    #[arg(long, default_value_t = 128)]
    pub value_bytes: usize,
    /// The share of reads among requests, from 0.0 (writes only) to 1.0 (reads only).
    // Negative numbers are let through to `into_config`, whose error names the valid range;
    // clap alone would call `-0.1` an unknown flag.
    #[arg(long, default_value_t = 0.0, allow_negative_numbers = true)]
    pub read_ratio: f64,
    /// Run for this long (e.g. 30s, 500ms, 2m; a bare number is seconds). Give this or --ops.
    #[arg(long, value_parser = parse_duration)]
    pub duration: Option<Duration>,
    /// Run until this many requests have been sent. Give this or --duration.
    #[arg(long)]
    pub ops: Option<u64>,
    /// A request without an answer after this long counts as a timeout error.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub request_timeout: Duration,
    /// Seeds the clients' choices of keys and of reads or writes.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Print the final report as one JSON object on stdout (progress still goes to stderr).
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum TargetKind {
    /// Tessera, through its client (puts and linearizable gets routed by region).
    Tessera,
    /// etcd v3, through its gRPC KV API (Put and linearizable Range).
    Etcd,
}

impl TargetKind {
    fn name(self) -> &'static str {
        match self {
            TargetKind::Tessera => "tessera",
            TargetKind::Etcd => "etcd",
        }
    }
}

/// Checked arguments: everything a run needs, and nothing that can make it panic.
#[derive(Debug, Clone)]
pub struct BenchConfig {
    pub target: TargetKind,
    /// host:port, without a scheme.
    pub endpoints: Vec<String>,
    pub concurrency: usize,
    pub workload: Workload,
    pub json: bool,
}

/// What is wrong with the arguments, phrased for the person who typed them.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ConfigError {
    #[error("--concurrency must be at least 1")]
    ZeroConcurrency,
    #[error("--concurrency must be at most {CONCURRENCY_MAX}, got {0}")]
    TooManyClients(usize),
    #[error("--value-bytes must be at most {VALUE_BYTES_MAX} (64 MiB), got {0}")]
    ValueTooLarge(usize),
    #[error("--key-space must be at least 1")]
    ZeroKeySpace,
    #[error("--read-ratio must be between 0.0 and 1.0, got {0}")]
    ReadRatioOutOfRange(f64),
    #[error("give either --duration or --ops, not both")]
    BothStopRules,
    #[error("give --duration or --ops to say when the run ends")]
    NoStopRule,
    #[error("--duration must be longer than zero")]
    ZeroDuration,
    #[error("--ops must be at least 1")]
    ZeroOps,
    #[error("--request-timeout must be longer than zero")]
    ZeroRequestTimeout,
    #[error("--endpoints is empty; give at least one host:port")]
    NoEndpoints,
    #[error("endpoint {endpoint:?} is not host:port: {reason}")]
    BadEndpoint { endpoint: String, reason: &'static str },
}

impl BenchArgs {
    pub fn into_config(self) -> Result<BenchConfig, ConfigError> {
        if self.concurrency == 0 {
            return Err(ConfigError::ZeroConcurrency);
        }
        if self.concurrency > CONCURRENCY_MAX {
            return Err(ConfigError::TooManyClients(self.concurrency));
        }
        if self.value_bytes > VALUE_BYTES_MAX {
            return Err(ConfigError::ValueTooLarge(self.value_bytes));
        }
        if self.key_space == 0 {
            return Err(ConfigError::ZeroKeySpace);
        }
        // Written so that NaN fails too.
        if !(0.0..=1.0).contains(&self.read_ratio) {
            return Err(ConfigError::ReadRatioOutOfRange(self.read_ratio));
        }
        let stop = match (self.duration, self.ops) {
            (Some(_), Some(_)) => return Err(ConfigError::BothStopRules),
            (None, None) => return Err(ConfigError::NoStopRule),
            (Some(duration), None) if duration.is_zero() => return Err(ConfigError::ZeroDuration),
            (Some(duration), None) => StopAt::Elapsed(duration),
            (None, Some(0)) => return Err(ConfigError::ZeroOps),
            (None, Some(ops)) => StopAt::Ops(ops),
        };
        if self.request_timeout.is_zero() {
            return Err(ConfigError::ZeroRequestTimeout);
        }
        let endpoints =
            self.endpoints.iter().map(|endpoint| parse_endpoint(endpoint)).collect::<Result<Vec<_>, _>>()?;
        if endpoints.is_empty() {
            return Err(ConfigError::NoEndpoints);
        }
        Ok(BenchConfig {
            target: self.target,
            endpoints,
            concurrency: self.concurrency,
            workload: Workload {
                key_space: self.key_space,
                value_bytes: self.value_bytes,
                read_ratio: self.read_ratio,
                stop,
                request_timeout: self.request_timeout,
                error_backoff: ERROR_BACKOFF,
                seed: self.seed,
            },
            json: self.json,
        })
    }
}

/// Accepts `host:port`, and `http://host:port` because that is how etcd users write
/// endpoints. TLS is not supported, so `https://` is refused rather than silently downgraded.
fn parse_endpoint(endpoint: &str) -> Result<String, ConfigError> {
    let bad = |reason| ConfigError::BadEndpoint { endpoint: endpoint.to_string(), reason };
    let trimmed = endpoint.trim();
    if trimmed.starts_with("https://") {
        return Err(bad("TLS (https) is not supported"));
    }
    let host_port = trimmed.strip_prefix("http://").unwrap_or(trimmed);
    let host_port = host_port.strip_suffix('/').unwrap_or(host_port);
    if host_port.is_empty() {
        return Err(bad("it is empty"));
    }
    let (host, port) = host_port.rsplit_once(':').ok_or_else(|| bad("it has no port"))?;
    if host.is_empty() {
        return Err(bad("it has no host"));
    }
    match port.parse::<u16>() {
        Ok(port) if port > 0 => Ok(host_port.to_string()),
        _ => Err(bad("the port is not a number from 1 to 65535")),
    }
}

/// Parses `500ms`, `30s`, `2m`, or a bare number of seconds.
fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let (number, unit_ms) = if let Some(number) = text.strip_suffix("ms") {
        (number, 1)
    } else if let Some(number) = text.strip_suffix('s') {
        (number, 1_000)
    } else if let Some(number) = text.strip_suffix('m') {
        (number, 60_000)
    } else {
        (text, 1_000)
    };
    let count: u64 =
        number.parse().map_err(|_| format!("{text:?} is not a duration like 500ms, 30s or 2m"))?;
    let duration_ms = count.checked_mul(unit_ms).ok_or_else(|| format!("{text:?} is too long"))?;
    Ok(Duration::from_millis(duration_ms))
}

/// Connects to the target, runs the closed loop, and prints the report.
pub fn run(config: BenchConfig) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let report = runtime.block_on(async {
        match config.target {
            TargetKind::Etcd => {
                let clients = etcd::connect(&config.endpoints, config.concurrency)
                    .await
                    .context("connecting to etcd")?;
                anyhow::Ok(run_clients(clients, &config).await)
            }
            TargetKind::Tessera => {
                let clients = crate::bench::tessera::connect(&config.endpoints, config.concurrency)
                    .await
                    .context("connecting to Tessera")?;
                anyhow::Ok(run_clients(clients, &config).await)
            }
        }
    })?;
    if config.json {
        println!("{}", report.to_json());
    } else {
        print!("{}", report.to_text());
    }
    if report.reads_ok + report.writes_ok == 0 {
        anyhow::bail!("no request succeeded");
    }
    Ok(())
}

async fn run_clients<T: KvTarget>(clients: Vec<T>, config: &BenchConfig) -> Report {
    let stop = match config.workload.stop {
        StopAt::Elapsed(duration) => format!("for {:.1} s", duration.as_secs_f64()),
        StopAt::Ops(ops) => format!("for {ops} requests"),
    };
    eprintln!(
        "bench: {} clients against {} at {} {stop}",
        config.concurrency,
        config.target.name(),
        config.endpoints.join(","),
    );
    let outcome = closed_loop::run(clients, config.workload.clone(), Some(PROGRESS_INTERVAL)).await;
    let run = RunDescription {
        target: config.target.name().to_string(),
        endpoint_count: config.endpoints.len(),
        concurrency: config.concurrency,
        key_space: config.workload.key_space,
        value_bytes: config.workload.value_bytes,
        read_ratio: config.workload.read_ratio,
    };
    Report::new(run, &outcome)
}

#[cfg(test)]
mod tests {
    use clap::{CommandFactory, Parser};

    use super::*;
    use crate::cli::{Cli, Command};

    /// Parses `tessera bench <args>` and validates it.
    fn config(args: &[&str]) -> Result<BenchConfig, ConfigError> {
        let cli = Cli::try_parse_from(["tessera", "bench"].iter().chain(args))
            .unwrap_or_else(|error| panic!("clap refused {args:?}: {error}"));
        let Command::Bench(bench_args) = cli.command else { panic!("`tessera bench` parsed as {cli:?}") };
        bench_args.into_config()
    }

    const VALID: [&str; 6] = ["--target", "etcd", "--endpoints", "127.0.0.1:2379", "--ops", "10"];

    fn with(extra: &[&'static str]) -> Vec<&'static str> {
        VALID.iter().chain(extra).copied().collect()
    }

    #[test]
    fn the_command_line_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn defaults_and_a_full_command_line() {
        let defaults = config(&VALID).unwrap();
        assert_eq!(defaults.concurrency, 16);
        assert_eq!(defaults.workload.key_space, 100_000);
        assert_eq!(defaults.workload.value_bytes, 128);
        assert_eq!(defaults.workload.read_ratio, 0.0);
        assert_eq!(defaults.workload.stop, StopAt::Ops(10));
        assert!(!defaults.json);

        let full = config(&[
            "--target",
            "etcd",
            "--endpoints",
            "http://10.0.0.1:2379,10.0.0.2:2379,[::1]:2379",
            "--concurrency",
            "128",
            "--key-space",
            "5",
            "--value-bytes",
            "1024",
            "--read-ratio",
            "0.9",
            "--duration",
            "30s",
            "--request-timeout",
            "500ms",
            "--json",
        ])
        .unwrap();
        assert_eq!(full.target, TargetKind::Etcd);
        assert_eq!(full.endpoints, ["10.0.0.1:2379", "10.0.0.2:2379", "[::1]:2379"]);
        assert_eq!(full.concurrency, 128);
        assert_eq!(full.workload.key_space, 5);
        assert_eq!(full.workload.value_bytes, 1_024);
        assert_eq!(full.workload.read_ratio, 0.9);
        assert_eq!(full.workload.stop, StopAt::Elapsed(Duration::from_secs(30)));
        assert_eq!(full.workload.request_timeout, Duration::from_millis(500));
        assert!(full.json);
    }

    #[test]
    fn bad_numbers_are_errors() {
        assert_eq!(config(&with(&["--concurrency", "0"])).unwrap_err(), ConfigError::ZeroConcurrency);
        assert_eq!(
            config(&with(&["--concurrency", "10001"])).unwrap_err(),
            ConfigError::TooManyClients(10_001)
        );
        assert_eq!(
            config(&with(&["--value-bytes", "67108865"])).unwrap_err(),
            ConfigError::ValueTooLarge(67_108_865)
        );
        assert!(config(&with(&["--value-bytes", "0"])).is_ok(), "empty values are values");
        assert_eq!(config(&with(&["--key-space", "0"])).unwrap_err(), ConfigError::ZeroKeySpace);
        for ratio in ["1.01", "-0.1", "inf"] {
            let error = config(&with(&["--read-ratio", ratio])).unwrap_err();
            assert!(matches!(error, ConfigError::ReadRatioOutOfRange(_)), "{ratio}: {error}");
        }
        let error = config(&with(&["--read-ratio", "NaN"])).unwrap_err();
        assert!(matches!(error, ConfigError::ReadRatioOutOfRange(_)), "NaN: {error}");
        assert_eq!(config(&with(&["--request-timeout", "0s"])).unwrap_err(), ConfigError::ZeroRequestTimeout);
    }

    #[test]
    fn exactly_one_of_duration_and_ops() {
        let base = ["--target", "etcd", "--endpoints", "127.0.0.1:2379"];
        let both: Vec<_> = base.iter().chain(&["--ops", "5", "--duration", "1s"]).copied().collect();
        assert_eq!(config(&both).unwrap_err(), ConfigError::BothStopRules);
        assert_eq!(config(&base).unwrap_err(), ConfigError::NoStopRule);
        let zero_ops: Vec<_> = base.iter().chain(&["--ops", "0"]).copied().collect();
        assert_eq!(config(&zero_ops).unwrap_err(), ConfigError::ZeroOps);
        let zero_duration: Vec<_> = base.iter().chain(&["--duration", "0"]).copied().collect();
        assert_eq!(config(&zero_duration).unwrap_err(), ConfigError::ZeroDuration);
    }

    #[test]
    fn endpoints_must_be_given_and_be_host_port() {
        assert_eq!(config(&["--target", "etcd", "--ops", "1"]).unwrap_err(), ConfigError::NoEndpoints);
        for (endpoints, reason) in [
            ("", "it is empty"),
            ("127.0.0.1:2379,,127.0.0.1:2380", "it is empty"),
            ("localhost", "it has no port"),
            (":2379", "it has no host"),
            ("localhost:http", "the port is not a number from 1 to 65535"),
            ("localhost:0", "the port is not a number from 1 to 65535"),
            ("https://localhost:2379", "TLS (https) is not supported"),
        ] {
            let args = ["--target", "etcd", "--ops", "1", "--endpoints", endpoints];
            match config(&args).unwrap_err() {
                ConfigError::BadEndpoint { reason: got, .. } => assert_eq!(got, reason, "{endpoints:?}"),
                other => panic!("{endpoints:?}: {other}"),
            }
        }
    }

    #[test]
    fn clap_refuses_what_is_not_a_value_of_the_right_type() {
        for args in [
            with(&["--concurrency", "-1"]),
            with(&["--read-ratio", "half"]),
            ["--target", "tikv", "--endpoints", "a:1", "--ops", "1"].to_vec(),
            ["--target", "etcd", "--endpoints", "a:1", "--duration", "10h"].to_vec(),
        ] {
            let argv = ["tessera", "bench"].iter().chain(&args).copied();
            assert!(Cli::try_parse_from(argv).is_err(), "{args:?}");
        }
    }

    #[test]
    fn durations_parse_with_and_without_a_unit() {
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("7"), Ok(Duration::from_secs(7)));
        assert!(parse_duration("1.5s").is_err());
        assert!(parse_duration("s").is_err());
        assert!(parse_duration("99999999999999999999m").is_err());
    }
}
