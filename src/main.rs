//! The `tessera` binary. The command line lives in `cli`; each subcommand's work lives in a
//! module of its own (`bench`, `local`, `serve_node`).

mod bench;
mod cli;
mod local;
mod node_file;
mod serve_node;

fn main() -> std::process::ExitCode {
    cli::main()
}
