//! Command-line interface (clap). Output for people goes to stdout/stderr
//! here, and only here.
#![allow(clippy::print_stdout, clippy::print_stderr)]

mod filter;
mod replay;
mod send;
mod serve;
mod stream;

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

const SEND_EXAMPLES: &str = "\
Examples:
  kinesthetic send events.ndjson --stream logs
  zcat old.ndjson.gz | kinesthetic send - --stream logs --gzip --concurrency 8
  kinesthetic send events.ndjson --stream logs --key user-7   # one partition key

The exit code is 0 only when every event was accepted; a refused batch is
named by its line numbers in the file.";

#[derive(Debug, Subcommand)]
enum Command {
    /// Run everything in one process: the intake, the consumer (pipelines,
    /// filters, archives) and the admin API. With no config file: the
    /// embedded default on the local log in ./kinesthetic-data, no AWS
    /// account needed.
    #[command(after_help = serve::SERVE_EXAMPLES)]
    Serve(serve::ServeArgs),
    /// Run only the intake (and the admin API): scale listeners apart from
    /// consumers.
    #[command(after_help = serve::INTAKE_EXAMPLES)]
    Intake(serve::ServeArgs),
    /// Run only the consumer (and the admin API): pipelines over streams
    /// another process writes.
    #[command(after_help = serve::CONSUME_EXAMPLES)]
    Consume(serve::ServeArgs),
    /// Create, describe, list, delete, reshard and tail streams.
    Stream(stream::StreamArgs),
    /// Post a file of events to an intake in batches.
    #[command(after_help = SEND_EXAMPLES)]
    Send(send::SendArgs),
    /// Run archived objects through a pipeline's filter into its sinks
    /// again: the backfill after a filter changed.
    #[command(after_help = replay::REPLAY_EXAMPLES)]
    Replay(replay::ReplayArgs),
    /// Develop, check, test and benchmark Wasm filters.
    #[command(subcommand)]
    Filter(filter::FilterCommand),
    /// Check a configuration file without starting anything.
    #[command(subcommand)]
    Config(ConfigCommand),
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

/// Parses the command line and runs it: the `kinesthetic` binary.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    crate::telemetry::init("info");
    let result = match cli.command {
        Command::Serve(args) => serve::run(args, serve::Role::All),
        Command::Intake(args) => serve::run(args, serve::Role::Intake),
        Command::Consume(args) => serve::run(args, serve::Role::Consume),
        Command::Stream(args) => stream::run(args),
        Command::Send(args) => send::run(args),
        Command::Replay(args) => replay::run(args),
        Command::Filter(cmd) => filter::run(cmd),
        Command::Config(ConfigCommand::Check { file }) => config_check(&file),
        Command::Datagen { mb, seed } => datagen(mb, seed),
    };
    match result {
        Ok(code) => code,
        // The reader went away (`| head`): what it wanted was written.
        Err(e) if broken_pipe(&e) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Whether writing to stdout failed because its reader closed the pipe (a
/// bare I/O error, as a write to stdout gives; a broken connection deep in
/// an HTTP client's error chain is a real failure).
fn broken_pipe(e: &anyhow::Error) -> bool {
    e.downcast_ref::<std::io::Error>()
        .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
}

#[derive(Debug, Subcommand)]
enum ConfigCommand {
    /// Parse and validate a configuration file as `serve` would, and print
    /// what it sets up. On an error: exit code 1 and the file, the key and
    /// what was expected.
    #[command(
        after_help = "Example:\n  kinesthetic config check kinesthetic.toml && kinesthetic serve --config kinesthetic.toml"
    )]
    Check {
        /// The TOML file (every key is in kinesthetic.example.toml).
        #[arg(env = "KINESTHETIC_CONFIG")]
        file: std::path::PathBuf,
    },
}

fn config_check(file: &std::path::Path) -> anyhow::Result<ExitCode> {
    use crate::config::{BackendKind, Config};
    let c = Config::load(file)?;
    let mib = |b: u64| format!("{:.0} MiB", b as f64 / f64::from(1u32 << 20));
    println!("{}: valid", file.display());
    match c.stream.backend {
        BackendKind::Local => println!(
            "  stream backend : the local log in {} (fsync {}, segments of {}, retention {} h{})",
            c.stream.data_dir.display(),
            if c.stream.fsync {
                "on"
            } else {
                "OFF: acknowledgements are not durable"
            },
            mib(c.stream.segment_bytes),
            c.stream.retention_hours,
            c.stream
                .retention_bytes
                .map(|b| format!(" or {} per shard", mib(b)))
                .unwrap_or_default()
        ),
        BackendKind::Kinesis => println!(
            "  stream backend : Kinesis (region {}, endpoint {}){}",
            c.stream
                .kinesis
                .region
                .as_deref()
                .unwrap_or("from the AWS environment"),
            c.stream.kinesis.endpoint.as_deref().unwrap_or("AWS's"),
            if c.intake.spool {
                format!(
                    ", spooled in {} (up to {} per stream)",
                    c.stream.data_dir.join("spool").display(),
                    mib(c.intake.spool_max_bytes)
                )
            } else {
                ", no spool: a request waits for Kinesis".to_owned()
            }
        ),
    }
    let i = &c.intake;
    println!(
        "  intake         : {}, listener id {}",
        i.listen,
        i.listener_id.as_deref().unwrap_or("random at start")
    );
    println!("  admin          : {}", c.admin.listen);
    println!(
        "  limits         : body {}, decoded {}, {} events a request, buffer {}, records of {} bytes, linger {} ms",
        mib(i.max_body_bytes as u64),
        mib(i.max_decoded_bytes as u64),
        i.max_events_per_request,
        mib(i.buffer_bytes as u64),
        i.record_max_bytes,
        i.linger_ms
    );
    if i.tokens.is_empty() {
        println!("  auth           : none (any client may write to any stream)");
    } else {
        for (n, t) in i.tokens.iter().enumerate() {
            // The token itself is a secret: not even part of it is printed.
            println!(
                "  auth           : token {} of {} may write to {}",
                n + 1,
                i.tokens.len(),
                t.streams.join(", ")
            );
        }
    }
    for (name, s) in &c.streams {
        println!(
            "  stream {name:<8}: partition key {}{}",
            s.partition_key_field
                .as_deref()
                .map(|f| format!("from the JSON field {f:?}"))
                .unwrap_or_else(|| "from X-Partition-Key, else spread".to_owned()),
            s.shards
                .map(|n| format!("; created with {n} shard(s) if missing"))
                .unwrap_or_default()
        );
    }
    for (name, s) in &c.sinks {
        let place = match s.kind {
            crate::config::SinkKind::Dir => format!(
                "dir {}",
                s.path
                    .as_deref()
                    .unwrap_or(std::path::Path::new("?"))
                    .display()
            ),
            crate::config::SinkKind::S3 => format!(
                "s3://{}{}",
                s.bucket.as_deref().unwrap_or("?"),
                s.endpoint
                    .as_deref()
                    .map(|e| format!(" at {e}"))
                    .unwrap_or_default()
            ),
            crate::config::SinkKind::Http => {
                format!("POST {} ({:?})", s.url.as_deref().unwrap_or("?"), s.format)
            }
            crate::config::SinkKind::Index => format!(
                "index in {}{}",
                s.path
                    .as_deref()
                    .map_or("DATA_DIR/index/NAME".to_owned(), |p| p
                        .display()
                        .to_string()),
                s.url
                    .as_deref()
                    .map(|u| format!(", pushed to {u}"))
                    .unwrap_or_default()
            ),
            crate::config::SinkKind::Kinesis => format!(
                "stream {} (re-keyed by the filter)",
                s.stream.as_deref().unwrap_or("?")
            ),
        };
        println!(
            "  sink {name:<10}: {place}, keys {}, {:?}, objects of at most {} or {} s",
            s.template(),
            s.compression(),
            mib(s.max_bytes()),
            s.max_age_ms() as f64 / 1000.0
        );
    }
    for p in &c.pipelines {
        println!(
            "  pipeline {}: stream {} → {} → {} (on error: {}){}",
            p.name,
            p.stream,
            p.filter
                .as_deref()
                .map(|f| format!("filter {f}"))
                .unwrap_or_else(|| "no filter (raw)".to_owned()),
            p.sinks.join(", "),
            p.on_error.as_str(),
            if p.routes.is_empty() {
                String::new()
            } else {
                format!(
                    "; routes: {}",
                    p.routes
                        .iter()
                        .map(|(r, s)| format!("{r} → {}", s.join(", ")))
                        .collect::<Vec<_>>()
                        .join("; ")
                )
            }
        );
    }
    if let Some(a) = &c.filters.auto {
        println!(
            "  filters        : every module in {} without a pipeline → stream {} → {}",
            c.filters.dir.display(),
            a.stream,
            a.sinks.join(", ")
        );
    }
    if !c.pipelines.is_empty() || c.filters.auto.is_some() {
        println!(
            "  consumer       : poll {} ms, {} records a read, {} lines a job, from {:?}, checkpoints in {}",
            c.consumer.poll_interval_ms,
            c.consumer.max_records,
            c.consumer.batch_lines,
            c.consumer.initial_position,
            c.checkpoint_dir().display()
        );
    }
    Ok(ExitCode::SUCCESS)
}

fn datagen(mb: usize, seed: u64) -> anyhow::Result<ExitCode> {
    use std::io::Write;
    let data = crate::datagen::ndjson_logs(seed, mb * 1_000_000);
    let mut out = std::io::stdout().lock();
    match out.write_all(&data).and_then(|()| out.flush()) {
        Ok(()) => Ok(ExitCode::SUCCESS),
        // A closed pipe (`| head`) is not an error for a generator.
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(ExitCode::SUCCESS),
        Err(e) => Err(e.into()),
    }
}
