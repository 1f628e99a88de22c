//! The `tessera` binary. The command line lives in `cli`; each subcommand's work lives in a
//! module of its own (`bench`, `local`; `node` to come).

mod bench;
mod cli;
mod local;

fn main() -> std::process::ExitCode {
    cli::main()
}
