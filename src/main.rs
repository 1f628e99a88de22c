//! The `tessera` binary. The command line lives in `cli`; each subcommand's work lives in a
//! module of its own (`bench` today; `node` and `local` to come).

mod bench;
mod cli;

fn main() -> std::process::ExitCode {
    cli::main()
}
