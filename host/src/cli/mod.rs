//! Command-line interface (clap). Output for people goes to stdout/stderr
//! here, and only here.
#![allow(clippy::print_stdout, clippy::print_stderr)]

mod filter;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Kinesthetic moves event streams through Amazon Kinesis and runs user code
/// on them in sandboxed WebAssembly filters.
#[derive(Debug, Parser)]
#[command(name = "kinesthetic", version, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Develop, check, test and benchmark Wasm filters.
    #[command(subcommand)]
    Filter(filter::FilterCommand),
    /// Write a seeded synthetic NDJSON log data set to stdout (≈ 700 B a
    /// line, 10 % `"level":"error"`).
    Datagen {
        /// Approximate size in megabytes (10^6 bytes).
        #[arg(long, default_value_t = 20)]
        mb: usize,
        /// Seed of the generator; the same seed gives the same bytes.
        #[arg(long, default_value_t = 1)]
        seed: u64,
    },
}

pub(crate) fn main() -> ExitCode {
    let cli = Cli::parse();
    kinesthetic::telemetry::init("info");
    let result = match cli.command {
        Command::Filter(cmd) => filter::run(cmd),
        Command::Datagen { mb, seed } => datagen(mb, seed),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn datagen(mb: usize, seed: u64) -> anyhow::Result<ExitCode> {
    use std::io::Write;
    let data = kinesthetic::datagen::ndjson_logs(seed, mb * 1_000_000);
    let mut out = std::io::stdout().lock();
    match out.write_all(&data).and_then(|()| out.flush()) {
        Ok(()) => Ok(ExitCode::SUCCESS),
        // A closed pipe (`| head`) is not an error for a generator.
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(ExitCode::SUCCESS),
        Err(e) => Err(e.into()),
    }
}
