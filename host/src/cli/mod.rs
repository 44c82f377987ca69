//! Command-line interface (clap). Output for people goes to stdout/stderr
//! here, and only here.
#![allow(clippy::print_stdout, clippy::print_stderr)]

mod filter;
mod send;
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

const SERVE_EXAMPLES: &str = "\
Examples:
  # The embedded local log, a stream of 2 shards, on 127.0.0.1:8080:
  kinesthetic serve --create-stream logs:2
  curl --data-binary @events.ndjson http://127.0.0.1:8080/v1/streams/logs/events
  kinesthetic stream tail logs

  # Against Kinesis (the usual AWS environment), from a config file:
  kinesthetic serve --config kinesthetic.toml   # stream.backend = \"kinesis\"

Ctrl-C or SIGTERM stops it gracefully: requests in flight are answered and
every accepted event is written first. A second Ctrl-C or SIGTERM stops it at
once (a client that never finishes its upload would otherwise hold it).";

const SEND_EXAMPLES: &str = "\
Examples:
  kinesthetic send events.ndjson --stream logs
  zcat old.ndjson.gz | kinesthetic send - --stream logs --gzip --concurrency 8
  kinesthetic send events.ndjson --stream logs --key user-7   # one partition key

The exit code is 0 only when every event was accepted; a refused batch is
named by its line numbers in the file.";

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the intake: `POST /v1/streams/{stream}/events` on --listen,
    /// Prometheus metrics on --admin. With no config file: the local log in
    /// ./kinesthetic-data, no AWS account needed.
    #[command(after_help = SERVE_EXAMPLES)]
    Serve(ServeArgs),
    /// Create, describe, list, delete, reshard and tail streams.
    Stream(stream::StreamArgs),
    /// Post a file of events to an intake in batches.
    #[command(after_help = SEND_EXAMPLES)]
    Send(send::SendArgs),
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

pub(crate) fn main() -> ExitCode {
    let cli = Cli::parse();
    kinesthetic::telemetry::init("info");
    let result = match cli.command {
        Command::Serve(args) => serve(args),
        Command::Stream(args) => stream::run(args),
        Command::Send(args) => send::run(args),
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
    use kinesthetic::config::{BackendKind, Config};
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
        "  intake         : {} (admin {}), listener id {}",
        i.listen,
        i.admin_listen,
        i.listener_id.as_deref().unwrap_or("random at start")
    );
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
            "  stream {name:<8}: partition key {}",
            s.partition_key_field
                .as_deref()
                .map(|f| format!("from the JSON field {f:?}"))
                .unwrap_or_else(|| "from X-Partition-Key, else spread".to_owned())
        );
    }
    Ok(ExitCode::SUCCESS)
}

#[derive(Debug, clap::Args)]
struct ServeArgs {
    /// The configuration file (TOML; every key is in kinesthetic.example.toml).
    #[arg(long, short, env = "KINESTHETIC_CONFIG")]
    config: Option<std::path::PathBuf>,
    /// Intake address (overrides intake.listen).
    #[arg(long)]
    listen: Option<std::net::SocketAddr>,
    /// Admin address for /metrics and /healthz (overrides intake.admin_listen).
    #[arg(long)]
    admin: Option<std::net::SocketAddr>,
    /// Local log directory (overrides stream.data_dir).
    #[arg(long, env = "KINESTHETIC_DATA")]
    data: Option<std::path::PathBuf>,
    /// Create these streams (NAME or NAME:SHARDS) if they do not exist.
    #[arg(long = "create-stream", value_name = "NAME[:SHARDS]")]
    create: Vec<String>,
}

fn serve(args: ServeArgs) -> anyhow::Result<ExitCode> {
    use anyhow::Context;
    use kinesthetic::stream::StreamBackend;
    let mut config = match &args.config {
        Some(p) => kinesthetic::config::Config::load(p)?,
        None => kinesthetic::config::Config::default(),
    };
    if let Some(a) = args.listen {
        config.intake.listen = a;
    }
    if let Some(a) = args.admin {
        config.intake.admin_listen = a;
    }
    if let Some(d) = args.data {
        config.stream.data_dir = d;
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let telemetry = kinesthetic::app::Telemetry::new();
        let (backend, spooled) =
            kinesthetic::app::intake_backend(&config, &telemetry.metrics).await?;
        for spec in &args.create {
            let (name, shards) = match spec.split_once(':') {
                Some((n, s)) => (
                    n,
                    s.parse::<u32>()
                        .with_context(|| format!("--create-stream {spec}: bad shard count"))?,
                ),
                None => (spec.as_str(), 1),
            };
            match backend.create_stream(name, shards).await {
                Ok(()) | Err(kinesthetic::stream::StreamError::StreamExists(_)) => {}
                Err(e) => return Err(e.into()),
            }
            kinesthetic::stream::reshard::wait_active(
                &backend,
                name,
                std::time::Duration::from_secs(120),
            )
            .await?;
        }
        let running = match &spooled {
            Some(s) => kinesthetic::app::start_intake_with(s.clone(), &config, telemetry).await?,
            None => kinesthetic::app::start_intake_with(backend, &config, telemetry).await?,
        };
        eprintln!(
            "intake on http://{} (listener {:016x}), metrics on http://{}/metrics; Ctrl-C or SIGTERM stops",
            running.intake_addr, running.listener_id, running.admin_addr
        );
        let token = running.token();
        tokio::spawn(async move {
            shutdown_signal().await;
            token.cancel();
        });
        running.wait().await?;
        if let Some(s) = spooled {
            s.close().await;
        }
        Ok(ExitCode::SUCCESS)
    })
}

/// Ctrl-C (SIGINT) or SIGTERM, what service managers and Kubernetes send:
/// either starts a graceful shutdown.
async fn shutdown_signal() {
    first_signal().await;
    tracing::info!(
        "shutting down: finishing requests in flight and writing what is buffered \
         (a second Ctrl-C or SIGTERM stops at once)"
    );
    // A client that never finishes its upload would hold the drain for
    // ever: a second signal ends the process, as service managers expect.
    tokio::spawn(async {
        first_signal().await;
        tracing::warn!("second signal: stopping now; requests still in flight get no answer");
        std::process::exit(130);
    });
}

/// Ctrl-C or (on Unix) SIGTERM.
async fn first_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
                return;
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot listen for SIGTERM; only Ctrl-C stops gracefully")
            }
        }
    }
    let _ = tokio::signal::ctrl_c().await;
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
