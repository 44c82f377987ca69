//! The `kinesthetic` CLI (as `kinesthetic-cli`), built from the host's own sources inside this test
//! crate so the integration tests can run it as a process
//! (`CARGO_BIN_EXE_kinesthetic` exists only for a package's own binaries).

#[path = "../../../host/src/cli/mod.rs"]
mod cli;

fn main() -> std::process::ExitCode {
    kinesthetic::malloc::limit_retained_memory();
    cli::main()
}
