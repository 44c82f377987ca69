//! `kinesthetic`: the command-line entry point.

mod cli;

use std::process::ExitCode;

fn main() -> ExitCode {
    kinesthetic::malloc::limit_retained_memory();
    cli::main()
}
