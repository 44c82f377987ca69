//! `kinesthetic serve`, `intake` and `consume`: the long-running roles.

use std::path::PathBuf;
use std::process::ExitCode;

use crate::app::{self, Parts, Telemetry};
use crate::config::{BackendKind, Config, StreamSettings};
use anyhow::{Context, bail};

pub(crate) const SERVE_EXAMPLES: &str = "\
With no --config it runs the embedded default: the local log in
./kinesthetic-data with a stream `events` of 4 shards, the intake on
127.0.0.1:8080, the admin API on 127.0.0.1:9090, a raw archive of every batch
in ./kinesthetic-data/archive/raw/, and every filter module dropped into
./filters run as a pipeline over `events`, writing to
./kinesthetic-data/archive/filtered/FILTER/ (removing the file stops it;
replacing it swaps versions between batches).

Examples:
  kinesthetic serve
  curl --data-binary @events.ndjson http://127.0.0.1:8080/v1/streams/events/events
  cp errors-only.wasm filters/             # a pipeline starts
  curl -s http://127.0.0.1:9090/v1/status  # pipelines, shards, checkpoints, filters

  kinesthetic serve --config kinesthetic.toml   # every key: kinesthetic.example.toml

Ctrl-C or SIGTERM stops it gracefully: requests in flight are answered and
written, batches in flight finish and are checkpointed, within
consumer.shutdown_timeout_ms (10 s). A second Ctrl-C or SIGTERM stops it at
once (exit code 130).";

pub(crate) const INTAKE_EXAMPLES: &str = "\
Examples:
  kinesthetic intake --config kinesthetic.toml
  kinesthetic intake --config kinesthetic.toml --listen 127.0.0.1:8081 --admin 127.0.0.1:9091";

pub(crate) const CONSUME_EXAMPLES: &str = "\
Examples:
  kinesthetic consume --config kinesthetic.toml
  # beside `kinesthetic intake` on the same local log (read-only here):
  kinesthetic consume --data kinesthetic-data --admin 127.0.0.1:9091";

/// Which roles a process runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Role {
    All,
    Intake,
    Consume,
}

#[derive(Debug, clap::Args)]
pub(crate) struct ServeArgs {
    /// The configuration file (TOML; every key is in kinesthetic.example.toml).
    /// Without it: the embedded default (see below).
    #[arg(long, short, env = "KINESTHETIC_CONFIG")]
    config: Option<PathBuf>,
    /// Intake address (overrides intake.listen).
    #[arg(long, value_parser = crate::net::parse_listen)]
    listen: Option<std::net::SocketAddr>,
    /// Admin address for /metrics, /healthz, /readyz, /v1/status and
    /// /v1/filters (overrides admin.listen).
    #[arg(long, value_parser = crate::net::parse_listen)]
    admin: Option<std::net::SocketAddr>,
    /// Data directory: the local log, checkpoints, the spool, and the
    /// embedded default's archives (overrides stream.data_dir).
    #[arg(long, env = "KINESTHETIC_DATA")]
    data: Option<PathBuf>,
    /// The filters directory to watch (overrides filters.dir).
    #[arg(long)]
    filters: Option<PathBuf>,
    /// Create these streams (NAME or NAME:SHARDS) if they do not exist.
    #[arg(long = "create-stream", value_name = "NAME[:SHARDS]")]
    create: Vec<String>,
}

/// The configuration file, or the embedded default in `data` (or its
/// default directory); `data` also overrides the file's data directory.
pub(crate) fn file_or_embedded(
    file: Option<&std::path::Path>,
    data: Option<&std::path::Path>,
) -> anyhow::Result<Config> {
    let mut config = match file {
        Some(p) => Config::load(p)?,
        None => Config::embedded(data.unwrap_or(&Config::default().stream.data_dir)),
    };
    if let Some(d) = data {
        config.stream.data_dir = d.to_owned();
    }
    Ok(config)
}

fn config_of(args: &ServeArgs) -> anyhow::Result<Config> {
    let mut config = file_or_embedded(args.config.as_deref(), args.data.as_deref())?;
    if let Some(a) = args.listen {
        config.intake.listen = a;
    }
    if let Some(a) = args.admin {
        config.admin.listen = a;
    }
    if let Some(d) = &args.filters {
        config.filters.dir = d.clone();
    }
    for spec in &args.create {
        let (name, shards) = match spec.split_once(':') {
            Some((n, s)) => (
                n,
                s.parse::<u32>().ok().filter(|n| *n >= 1).with_context(|| {
                    format!("--create-stream {spec}: the shard count must be a number from 1")
                })?,
            ),
            None => (spec.as_str(), 1),
        };
        config
            .streams
            .entry(name.to_owned())
            .or_insert_with(StreamSettings::default)
            .shards = Some(shards);
    }
    let origin = args
        .config
        .as_ref()
        .map_or("the command line".to_owned(), |p| p.display().to_string());
    config.validate(&origin)?;
    Ok(config)
}

pub(crate) fn run(args: ServeArgs, role: Role) -> anyhow::Result<ExitCode> {
    let config = config_of(&args)?;
    let data = &config.stream.data_dir;
    if data.exists() && !data.is_dir() {
        bail!(
            "{} is a file, not a directory: the data directory holds the local log, the spool \
             and checkpoints; name another path (--data, or stream.data_dir in the config)",
            data.display()
        );
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let telemetry = Telemetry::new();
        let intake = role != Role::Consume;
        let consume = role != Role::Intake;
        // One writer of the local log per directory: a consumer beside a
        // separate intake process reads it read-only.
        let writer = if intake || config.stream.backend == BackendKind::Kinesis {
            Some(app::backend(&config).await?)
        } else {
            None
        };
        let reader = match &writer {
            Some(w) => w.clone(),
            None => app::reader_backend(&config).await?,
        };
        let spool = match (&writer, intake) {
            (Some(w), true) => app::spool_for(w, &config, &telemetry.metrics).await?,
            _ => None,
        };
        fn parts<B: crate::stream::StreamBackend>(
            intake: Option<B>,
            consumer: Option<crate::stream::any::AnyBackend>,
            spool: &Option<crate::intake::spool::Spooled<crate::stream::any::AnyBackend>>,
            create: &Option<crate::stream::any::AnyBackend>,
        ) -> Parts<B> {
            Parts {
                intake,
                consumer,
                spool: spool.clone(),
                create: create.clone(),
            }
        }
        let consumer = consume.then(|| reader.clone());
        let app = match (&spool, intake) {
            (Some(s), true) => {
                let p = parts(Some(s.clone()), consumer, &spool, &writer);
                app::launch(&config, telemetry, p).await?
            }
            (None, true) => {
                let p = parts(writer.clone(), consumer, &spool, &writer);
                app::launch(&config, telemetry, p).await?
            }
            (_, false) => {
                let p = parts::<crate::stream::any::AnyBackend>(None, consumer, &spool, &writer);
                app::launch(&config, telemetry, p).await?
            }
        };
        print_banner(&config, &app, args.config.is_none());
        let token = app.token();
        tokio::spawn(async move {
            shutdown_signal().await;
            token.cancel();
        });
        app.wait().await?;
        Ok(ExitCode::SUCCESS)
    })
}

/// Says where everything is and how to stop.
fn print_banner(config: &Config, app: &app::App, embedded: bool) {
    let mut lines = Vec::new();
    if let Some(a) = app.intake_addr {
        lines.push(format!(
            "intake on http://{a} (listener {:016x}): POST /v1/streams/STREAM/events",
            app.listener_id.unwrap_or_default()
        ));
    }
    lines.push(format!(
        "admin on http://{}: /v1/status /v1/filters /metrics /healthz /readyz",
        app.admin_addr
    ));
    if app.status().is_some() {
        for p in &config.pipelines {
            let sinks: Vec<String> = p
                .sinks
                .iter()
                .map(|s| sink_place(config, s, &p.name, p.filter.as_deref().unwrap_or("raw")))
                .collect();
            lines.push(format!(
                "pipeline {}: stream {} → {}{}",
                p.name,
                p.stream,
                p.filter
                    .as_deref()
                    .map(|f| format!("filter {f} → "))
                    .unwrap_or_default(),
                sinks.join(", ")
            ));
        }
        if let (Some(auto), Some(dir)) = (&config.filters.auto, &app.filters_dir) {
            let sinks: Vec<String> = auto
                .sinks
                .iter()
                .map(|s| sink_place(config, s, "FILTER", "FILTER"))
                .collect();
            lines.push(format!(
                "filters: drop FILTER.wasm into {}/ → a pipeline over stream {} → {}",
                dir.display(),
                auto.stream,
                sinks.join(", ")
            ));
        }
        lines.push(format!(
            "checkpoints in {}",
            config.checkpoint_dir().display()
        ));
    }
    if embedded {
        lines.push("(the embedded default: no config file, no AWS account)".to_owned());
    }
    lines.push("Ctrl-C or SIGTERM stops (a second one at once)".to_owned());
    lines.extend(exposure_warnings(config, app));
    eprintln!("{}", lines.join("\n"));
}

/// Listeners reachable from other machines without authentication.
fn exposure_warnings(config: &Config, app: &app::App) -> Vec<String> {
    let mut w = Vec::new();
    if let Some(a) = app.intake_addr
        && !a.ip().is_loopback()
        && config.intake.tokens.is_empty()
    {
        w.push(format!(
            "warning: the intake listens on {a}, beyond this machine, with no tokens: anyone \
             who reaches it can write to every stream. Add [[intake.tokens]] to the config \
             (token = \"…\", streams = [\"*\"]), or listen on 127.0.0.1"
        ));
    }
    if !app.admin_addr.ip().is_loopback() {
        w.push(format!(
            "warning: the admin API listens on {}, beyond this machine; it has no \
             authentication and serves status, metrics and every index's lines. Listen on \
             127.0.0.1 (--admin, admin.listen) unless a proxy guards it",
            app.admin_addr
        ));
    }
    w
}

/// Where a sink's objects go, for people.
fn sink_place(config: &Config, sink: &str, pipeline: &str, filter: &str) -> String {
    use crate::config::SinkKind;
    let Some(s) = config.sinks.get(sink) else {
        return sink.to_owned();
    };
    let prefix = s
        .prefix
        .replace("{pipeline}", pipeline)
        .replace("{filter}", filter);
    match s.kind {
        SinkKind::Dir => {
            let mut p = s.path.clone().unwrap_or_default();
            if !prefix.is_empty() {
                p = p.join(prefix);
            }
            format!("{}/", p.display())
        }
        SinkKind::S3 => format!("s3://{}/{}", s.bucket.as_deref().unwrap_or("?"), prefix),
        SinkKind::Http => format!("POST {}", s.url.as_deref().unwrap_or("?")),
        SinkKind::Kinesis => format!("stream {}", s.stream.as_deref().unwrap_or("?")),
        SinkKind::Index => format!(
            "index (GET /v1/index/NAME){}",
            s.url
                .as_deref()
                .map(|u| format!(", pushed to {u}"))
                .unwrap_or_default()
        ),
    }
}

/// Ctrl-C (SIGINT) or SIGTERM, what service managers and Kubernetes send:
/// either starts a graceful shutdown.
async fn shutdown_signal() {
    first_signal().await;
    tracing::info!(
        "shutting down: finishing requests and batches in flight (a second Ctrl-C or \
         SIGTERM stops at once)"
    );
    // A client that never finishes its upload would hold the drain for
    // ever: a second signal ends the process, as service managers expect.
    tokio::spawn(async {
        first_signal().await;
        tracing::warn!(
            "second signal: stopping now; work in flight is read again at the next start"
        );
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
