//! The command line: one clap subcommand per thing the binary does. A subcommand's arguments
//! and their validation live in a file of their own here; its work lives elsewhere, so that
//! this module stays about parsing and reporting errors.

use std::process::ExitCode;

use clap::error::ErrorKind;
use clap::{CommandFactory, Parser, Subcommand};

pub mod bench;
pub mod local;
pub mod node;

#[derive(Debug, Parser)]
#[command(name = "tessera", version, about = "Tessera, a multi-Raft storage engine.")]
pub struct Cli {
    /// What to log to stderr, one line per event: a level (error, warn, info, debug, trace)
    /// or per-module directives such as `info,tessera_store=debug`. The TESSERA_LOG
    /// environment variable says the same when this flag is absent; the default is `info`.
    #[arg(long, global = true)]
    pub log_level: Option<String>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Load a key-value store with closed-loop clients and report throughput and latency.
    Bench(bench::BenchArgs),
    /// Run a three-node cluster in this process on loopback, write and read back a few keys,
    /// and serve until Ctrl-C, SIGTERM or `--duration`.
    Local(local::LocalArgs),
    /// Run one node of a static cluster from a TOML config file, until Ctrl-C or SIGTERM.
    Node(node::NodeArgs),
}

/// Parses the command line and runs the subcommand. Invalid arguments exit with clap's usage
/// error (status 2); a failure while running prints its cause chain and exits with status 1.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Err(error) = init_logging(cli.log_level.as_deref()) {
        let mut command = Cli::command();
        command.error(ErrorKind::ValueValidation, error).exit();
    }
    let result = match cli.command {
        Command::Bench(args) => match args.into_config() {
            Ok(config) => bench::run(config),
            Err(error) => usage_error("bench", error),
        },
        Command::Local(args) => match args.into_config() {
            Ok(config) => crate::local::run(config),
            Err(error) => usage_error("local", error),
        },
        Command::Node(args) => args.effective_file().and_then(|file| {
            if args.print_config {
                print!("{}", file.to_toml());
                Ok(())
            } else {
                crate::serve_node::run(file)
            }
        }),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

/// Installs the log subscriber: events as single lines on stderr, filtered by `--log-level`,
/// else by `TESSERA_LOG`, else at `info`.
fn init_logging(flag: Option<&str>) -> Result<(), String> {
    let directives = match flag {
        Some(directives) => directives.to_string(),
        None => std::env::var("TESSERA_LOG").unwrap_or_else(|_| "info".to_string()),
    };
    let filter = tracing_subscriber::EnvFilter::try_new(&directives)
        .map_err(|error| format!("log level {directives:?}: {error}"))?;
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .try_init()
        .map_err(|error| error.to_string())
}

/// Exits as clap does for arguments it refuses itself (message, the subcommand's usage,
/// status 2), for the checks that need more than one argument or more than a type.
fn usage_error(subcommand: &str, error: impl std::fmt::Display) -> ! {
    let mut command = Cli::command();
    // Building fills in the subcommand's full usage line (`tessera bench ...`).
    command.build();
    let subcommand = command.find_subcommand_mut(subcommand).expect("the subcommand is defined");
    subcommand.error(ErrorKind::ValueValidation, error).exit()
}
