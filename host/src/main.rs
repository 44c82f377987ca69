//! `kinesthetic`: the command-line entry point. The CLI itself is the
//! library's `cli` module, so the integration tests run the same code.

use std::process::ExitCode;

fn main() -> ExitCode {
    kinesthetic::malloc::limit_retained_memory();
    kinesthetic::cli::main()
}
