//! Tracing set-up for the binary.

use tracing_subscriber::EnvFilter;

/// Logs to stderr; `RUST_LOG` overrides `default_directive` (e.g. `info`).
pub fn init(default_directive: &str) {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_directive));
    use std::io::IsTerminal;
    // Colours only for a person at a terminal, not in files or pipes.
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .try_init();
}
