//! Tracing set-up for the binary.

use tracing_subscriber::EnvFilter;

/// Logs to stderr; `RUST_LOG` overrides `default_directive` (e.g. `info`).
pub fn init(default_directive: &str) {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_directive));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}
