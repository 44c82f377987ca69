//! The `kinesthetic` CLI (as `kinesthetic-cli`) for the integration tests to
//! run as a process (`CARGO_BIN_EXE_kinesthetic` exists only for a package's
//! own binaries): the library's CLI, not a second compile of its source.

fn main() -> std::process::ExitCode {
    kinesthetic::malloc::limit_retained_memory();
    kinesthetic::cli::main()
}
