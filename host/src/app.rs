//! Wires the components and owns the process's lifetime: one
//! `CancellationToken` tells the intake, the spool's shippers, the consumer
//! and the admin server to stop, and one `TaskTracker` waits for them —
//! within `consumer.shutdown_timeout_ms`, so a stalled upload or a slow
//! sink cannot hold a stop for ever.
//!
//! On a stop the intake stops taking requests, answers those in flight and
//! writes what it accepted; the consumer's workers finish the batch in hand
//! and the write in flight and checkpoint what is written (what was only
//! buffered is read again at the next start); then the admin server goes.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use prometheus_client::registry::Registry;
use serde_json::json;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::admin::{self, AdminState};
use crate::config::{BackendKind, Config, parse_listener_id};
use crate::consumer::checkpoint::LocalCheckpoints;
use crate::consumer::metrics::ConsumerMetrics;
use crate::consumer::status::StatusBoard;
use crate::consumer::{Consumer, ConsumerParts, ConsumerSettings};
use crate::filter::{EngineSettings, Registry as FilterRegistry, Runtime};
use crate::intake::metrics::Metrics;
use crate::intake::server::Intake;
use crate::intake::spool::Spooled;
use crate::intake::stamp::Listener;
use crate::pipeline::Sinks;
use crate::stream::StreamBackend;
use crate::stream::any::AnyBackend;
use crate::stream::kinesis::KinesisBackend;
use crate::stream::local::{LocalLog, LocalOptions};

/// Open connections to the admin listener at most (its own cap, apart
/// from the intake's, so it stays reachable when the intake is saturated).
const ADMIN_MAX_CONNECTIONS: usize = 64;

#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error(
        "cannot listen on {addr} ({what}): {error}; {}",
        bind_hint(what, error)
    )]
    Bind {
        what: &'static str,
        addr: SocketAddr,
        error: std::io::Error,
    },
    #[error(transparent)]
    Stream(#[from] crate::stream::StreamError),
    #[error(transparent)]
    Sink(#[from] crate::sink::SinkError),
    #[error(transparent)]
    Checkpoint(#[from] crate::consumer::checkpoint::CheckpointError),
    #[error("filters: {0}")]
    Filters(String),
}

fn local_options(config: &Config) -> LocalOptions {
    LocalOptions {
        fsync: config.stream.fsync,
        segment_bytes: config.stream.segment_bytes,
        retention: Some(Duration::from_secs(
            config.stream.retention_hours.saturating_mul(3600),
        )),
        retention_bytes: config.stream.retention_bytes,
        ..LocalOptions::default()
    }
}

/// The configured stream backend, for writing (the local log is locked:
/// one writer per directory).
pub async fn backend(config: &Config) -> Result<AnyBackend, AppError> {
    Ok(match config.stream.backend {
        BackendKind::Local => AnyBackend::Local(LocalLog::open(
            &config.stream.data_dir,
            local_options(config),
        )?),
        BackendKind::Kinesis => {
            AnyBackend::Kinesis(KinesisBackend::connect(&config.stream.kinesis).await)
        }
    })
}

/// The configured stream backend, for reading only: a local log another
/// process writes (`kinesthetic intake` beside `kinesthetic consume`).
pub async fn reader_backend(config: &Config) -> Result<AnyBackend, AppError> {
    Ok(match config.stream.backend {
        BackendKind::Local => AnyBackend::Local(LocalLog::open_read_only(
            &config.stream.data_dir,
            local_options(config),
        )?),
        BackendKind::Kinesis => {
            AnyBackend::Kinesis(KinesisBackend::connect(&config.stream.kinesis).await)
        }
    })
}

/// The intake's backend as configured: the local log, Kinesis, or Kinesis
/// behind the spool.
pub async fn intake_backend(
    config: &Config,
    metrics: &Metrics,
) -> Result<(AnyBackend, Option<Spooled<AnyBackend>>), AppError> {
    let b = backend(config).await?;
    let spool = spool_for(&b, config, metrics).await?;
    Ok((b, spool))
}

/// The spool in front of Kinesis, when configured.
pub async fn spool_for(
    b: &AnyBackend,
    config: &Config,
    metrics: &Metrics,
) -> Result<Option<Spooled<AnyBackend>>, AppError> {
    if config.stream.backend == BackendKind::Kinesis && config.intake.spool {
        let producer = crate::intake::producer::ProducerConfig {
            record_max_bytes: config.intake.record_max_bytes,
            ..Default::default()
        };
        let s = Spooled::open(
            b.clone(),
            &config.stream.data_dir.join("spool"),
            producer,
            metrics.clone(),
            config.intake.spool_max_bytes,
        )?;
        s.resume().await?;
        return Ok(Some(s));
    }
    Ok(None)
}

/// The metrics registry and the components' metrics in it.
#[derive(Debug)]
pub struct Telemetry {
    pub registry: Registry,
    pub metrics: Metrics,
    pub consumer: ConsumerMetrics,
}

impl Telemetry {
    pub fn new() -> Self {
        let mut registry = Registry::default();
        let metrics = Metrics::register(&mut registry);
        let consumer = ConsumerMetrics::register(&mut registry);
        Self {
            registry,
            metrics,
            consumer,
        }
    }
}

impl Default for Telemetry {
    fn default() -> Self {
        Self::new()
    }
}

/// What the configuration names that `backend` does not have: a
/// `[streams.NAME]` section, a token's or a pipeline's stream that does not
/// exist. Requests to such a stream get 404 and pipelines wait until it is
/// created, so `serve` says so at start (a stream may be created later, so
/// it is not an error). A near miss in letter case is named.
pub async fn unknown_stream_warnings<B: StreamBackend>(
    backend: &B,
    config: &Config,
) -> Vec<String> {
    let mut named: Vec<(String, String)> = config
        .streams
        .iter()
        .filter(|(_, s)| s.shards.is_none())
        .map(|(name, _)| (name.clone(), format!("[streams.{name}]")))
        .collect();
    for (i, token) in config.intake.tokens.iter().enumerate() {
        for name in token.streams.iter().filter(|s| s.as_str() != "*") {
            named.push((
                name.clone(),
                format!("intake.tokens[{i}].streams ({name:?})"),
            ));
        }
    }
    for (i, p) in config.pipelines.iter().enumerate() {
        named.push((p.stream.clone(), format!("pipelines[{i}].stream")));
    }
    if named.is_empty() {
        return Vec::new();
    }
    let existing = match backend.list_streams().await {
        Ok(existing) => existing,
        Err(e) => {
            return vec![format!(
                "cannot list the streams to check the configuration's stream names: {e}"
            )];
        }
    };
    named
        .into_iter()
        .filter(|(name, _)| !existing.contains(name))
        .map(|(name, place)| {
            let hint = existing
                .iter()
                .find(|e| e.eq_ignore_ascii_case(&name))
                .map(|e| format!("; did you mean {e:?}? (names are case-sensitive)"))
                .unwrap_or_default();
            format!(
                "{place} names stream {name:?}, which does not exist: its requests get 404 \
                 and its pipelines wait until it is created{hint}"
            )
        })
        .collect()
}

/// Creates the streams the configuration gives a shard count
/// (`[streams.NAME] shards = N`) when they do not exist.
pub async fn create_streams<B: StreamBackend>(
    backend: &B,
    config: &Config,
) -> Result<(), AppError> {
    for (name, s) in &config.streams {
        let Some(shards) = s.shards else { continue };
        match backend.create_stream(name, shards).await {
            Ok(()) => tracing::info!(stream = %name, shards, "stream created"),
            Err(crate::stream::StreamError::StreamExists(_)) => {
                if let Ok(d) = backend.describe(name).await {
                    let open = d.open_shards().count();
                    if open != shards as usize {
                        tracing::warn!(
                            "stream {name:?} exists with {open} open shard(s); the {shards} the \
                             configuration asks for only apply when it is created (to change it: \
                             kinesthetic stream reshard {name} --shards {shards})"
                        );
                    }
                }
                continue;
            }
            Err(e) => return Err(e.into()),
        }
        crate::stream::reshard::wait_active(backend, name, Duration::from_secs(120)).await?;
    }
    Ok(())
}

/// Which parts a process runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Roles {
    pub intake: bool,
    pub consumer: bool,
}

/// A running process: its addresses, and how to stop it.
#[derive(Debug)]
pub struct App {
    pub intake_addr: Option<SocketAddr>,
    pub admin_addr: SocketAddr,
    pub listener_id: Option<u64>,
    pub filters_dir: Option<std::path::PathBuf>,
    cancel: CancellationToken,
    tracker: TaskTracker,
    shutdown_timeout: Duration,
    spool: Option<Spooled<AnyBackend>>,
    status: Option<StatusBoard>,
}

/// What [`launch`] starts.
#[derive(Debug)]
pub struct Parts<B: StreamBackend> {
    /// The intake's backend (the stream, or the spool in front of it).
    pub intake: Option<B>,
    /// The consumer's backend.
    pub consumer: Option<AnyBackend>,
    /// The spool, stopped last.
    pub spool: Option<Spooled<AnyBackend>>,
    /// Creates the streams the configuration gives a shard count, once the
    /// listeners are bound (a writer of the stream).
    pub create: Option<AnyBackend>,
}

/// What to do about a listener that cannot bind; `what` ends with the
/// config key ("the intake, intake.listen").
fn bind_hint(what: &str, error: &std::io::Error) -> String {
    let key = what.rsplit(", ").next().unwrap_or(what);
    let flag = if key.starts_with("admin") {
        "--admin"
    } else {
        "--listen"
    };
    match error.kind() {
        std::io::ErrorKind::AddrInUse => format!(
            "another process listens there (`ss -ltnp` names it): stop it, or give another \
             address with {flag} or {key}"
        ),
        std::io::ErrorKind::AddrNotAvailable => format!(
            "this machine has no such address: use 127.0.0.1 (this machine only) or 0.0.0.0 \
             (every interface) in {flag} or {key}"
        ),
        std::io::ErrorKind::PermissionDenied => format!(
            "ports below 1024 need privileges: give a port from 1024 up with {flag} or {key}"
        ),
        _ => format!("check {flag} or {key}"),
    }
}

async fn bind(what: &'static str, addr: SocketAddr) -> Result<(TcpListener, SocketAddr), AppError> {
    let l = TcpListener::bind(addr)
        .await
        .map_err(|error| AppError::Bind { what, addr, error })?;
    let a = l
        .local_addr()
        .map_err(|error| AppError::Bind { what, addr, error })?;
    Ok((l, a))
}

/// Starts what `parts` names, and the admin server.
pub async fn launch<B: StreamBackend>(
    config: &Config,
    telemetry: Telemetry,
    parts: Parts<B>,
) -> Result<App, AppError> {
    let cancel = CancellationToken::new();
    let tracker = TaskTracker::new();
    // Listeners first: nothing is created or started when a port is taken.
    let intake_l = match &parts.intake {
        Some(_) => Some(bind("the intake, intake.listen", config.intake.listen).await?),
        None => None,
    };
    let (admin_l, admin_addr) = bind("the admin API, admin.listen", config.admin.listen).await?;
    if let Some(b) = &parts.create {
        create_streams(b, config).await?;
    }

    let Telemetry {
        mut registry,
        metrics,
        consumer: consumer_metrics,
    } = telemetry;
    // A kinesis sink's writes count with the intake's, by stream.
    let intake_metrics = metrics.clone();
    // Damage found in the local log's and the spool's segments.
    let mut logs = Vec::new();
    if let Some(AnyBackend::Local(l)) = parts.create.as_ref().or(parts.consumer.as_ref()) {
        logs.push(("stream", l.quarantined()));
    }
    if let Some(s) = &parts.spool {
        logs.push(("spool", s.quarantined()));
    }
    for (log, counter) in logs {
        registry
            .sub_registry_with_label(("log".into(), log.into()))
            .register(
                "kinesthetic_local_log_quarantined",
                "Damaged places found in segments: skipped, their bytes kept under DIR/.quarantine/",
                counter,
            );
    }
    let mut admin_state = AdminState::new(Arc::new(registry));
    let indexes = crate::sink::index::Indexes::default();
    admin_state.indexes = indexes.clone();
    let mut roles = serde_json::Map::new();

    let mut intake_addr = None;
    let mut listener_id = None;
    if let (Some(backend), Some((intake_l, addr))) = (parts.intake, intake_l) {
        for warning in unknown_stream_warnings(&backend, config).await {
            tracing::warn!("{warning}");
        }
        let id = config
            .intake
            .listener_id
            .as_deref()
            .and_then(|s| parse_listener_id(s).ok());
        let listener = Listener::new(id);
        let lid = listener.id();
        let streams: HashMap<_, _> = config
            .streams
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let intake = Intake::new(backend, listener, config.intake.clone(), streams, metrics);
        tracing::info!(intake_addr = %addr, listener = format!("{lid:016x}"), "intake listening");
        roles.insert(
            "intake".into(),
            json!({"listen": addr.to_string(), "listener_id": format!("{lid:016x}")}),
        );
        let token = cancel.clone();
        let limits = crate::net::ServeLimits {
            max_connections: config.intake.max_connections,
            header_timeout: Duration::from_millis(config.intake.header_timeout_ms),
        };
        tracker.spawn(async move {
            crate::net::serve(
                intake_l,
                intake.router(),
                limits,
                "intake",
                token.cancelled_owned(),
            )
            .await;
            // No more requests: write what the producers hold.
            intake.drain().await;
            tracing::info!("intake stopped; buffers drained");
        });
        intake_addr = Some(addr);
        listener_id = Some(lid);
    }

    let mut status = None;
    let mut filters_dir = None;
    if let Some(backend) = parts.consumer {
        let board = StatusBoard::default();
        let registry = start_filters(config, &cancel, &tracker).await?;
        filters_dir = registry.as_ref().map(|r| r.dir().to_owned());
        let writer = crate::sink::StreamWriter {
            backend: parts.create.clone(),
            metrics: Some(intake_metrics.clone()),
            record_max_bytes: Some(config.intake.record_max_bytes),
            indexes: indexes.clone(),
            cancel: cancel.clone(),
            tracker: tracker.clone(),
        };
        let sinks = Sinks::open(config, &writer).await?;
        let store = LocalCheckpoints::open(&config.checkpoint_dir(), config.stream.fsync)?;
        let consumer = Consumer::new(ConsumerParts {
            backend,
            store,
            settings: ConsumerSettings::from(&config.consumer),
            registry: registry.clone(),
            sinks,
            metrics: consumer_metrics,
            status: board.clone(),
            cancel: cancel.clone(),
            tracker: tracker.clone(),
        });
        for p in &config.pipelines {
            consumer.start(p)?;
        }
        if let Some(auto) = &config.filters.auto {
            consumer.auto_pipelines(auto.clone(), &config.pipelines);
        }
        roles.insert(
            "consumer".into(),
            json!({
                "pipelines": config.pipelines.iter().map(|p| p.name.clone()).collect::<Vec<_>>(),
                "filters_dir": filters_dir.as_ref().map(|d| d.display().to_string()),
                "automatic_pipelines": config.filters.auto.as_ref().map(|a| json!({"stream": a.stream, "sinks": a.sinks})),
                "checkpoints": config.checkpoint_dir().display().to_string(),
            }),
        );
        admin_state.status = Some(board.clone());
        admin_state.filters = registry;
        status = Some(board);
    }

    admin_state.roles = Arc::new(serde_json::Value::Object(roles));
    let started = Arc::clone(&admin_state.started);
    let admin = admin::router(admin_state);
    let admin_done = CancellationToken::new();
    let admin_stop = admin_done.clone();
    // The admin server outlives the others' stop (metrics stay readable
    // while they drain): it stops when the tracker is done. Its own
    // connection cap keeps it reachable when the intake is saturated.
    tokio::spawn(crate::net::serve(
        admin_l,
        admin,
        crate::net::ServeLimits {
            max_connections: ADMIN_MAX_CONNECTIONS,
            header_timeout: Duration::from_secs(10),
        },
        "admin",
        admin_stop.cancelled_owned(),
    ));
    {
        let tracker = tracker.clone();
        let cancel = cancel.clone();
        tokio::spawn(async move {
            cancel.cancelled().await;
            tracker.close();
            tracker.wait().await;
            admin_done.cancel();
        });
    }
    started.store(true, Ordering::Release);
    tracing::info!(%admin_addr, "admin API listening");
    Ok(App {
        intake_addr,
        admin_addr,
        listener_id,
        filters_dir,
        cancel,
        tracker,
        shutdown_timeout: Duration::from_millis(config.consumer.shutdown_timeout_ms),
        spool: parts.spool,
        status,
    })
}

/// The filters directory's registry, loaded and watched, when any pipeline
/// can use a filter.
async fn start_filters(
    config: &Config,
    cancel: &CancellationToken,
    tracker: &TaskTracker,
) -> Result<Option<Arc<FilterRegistry>>, AppError> {
    let wanted =
        config.filters.auto.is_some() || config.pipelines.iter().any(|p| p.filter.is_some());
    if !wanted {
        return Ok(None);
    }
    let dir = &config.filters.dir;
    std::fs::create_dir_all(dir)
        .map_err(|e| AppError::Filters(format!("cannot create {}: {e}", dir.display())))?;
    let fuel = config.pipelines.iter().any(|p| p.limits.fuel.is_some())
        || config
            .filters
            .auto
            .as_ref()
            .is_some_and(|a| a.limits.fuel.is_some());
    let cache_dir = match &config.filters.cache_dir {
        Some(d) if d.as_os_str().is_empty() => None,
        Some(d) => Some(d.clone()),
        None => std::env::var_os("HOME").map(|h| Path::new(&h).join(".cache/kinesthetic/modules")),
    };
    let runtime = Runtime::new(EngineSettings {
        fuel,
        cache_dir,
        ..EngineSettings::default()
    })
    .map_err(|e| AppError::Filters(e.to_string()))?;
    let registry = Arc::new(FilterRegistry::new(runtime, dir.clone()));
    // The first load before any pipeline starts, so the modules already
    // there serve the first batches.
    let r = Arc::clone(&registry);
    let report = tokio::task::spawn_blocking(move || r.reload())
        .await
        .map_err(|e| AppError::Filters(e.to_string()))?;
    tracing::info!(dir = %dir.display(), loaded = ?report.loaded, failed = report.failed.len(), "filters directory watched");
    let r = Arc::clone(&registry);
    let token = cancel.clone();
    tracker.spawn(async move {
        if let Err(e) = r.watch(Duration::from_millis(200), token).await {
            tracing::error!(error = %e, "cannot watch the filters directory; filters dropped there are not picked up");
        }
    });
    Ok(Some(registry))
}

impl App {
    /// The token that stops everything (a signal handler cancels it).
    pub fn token(&self) -> CancellationToken {
        self.cancel.clone()
    }

    pub fn status(&self) -> Option<&StatusBoard> {
        self.status.as_ref()
    }

    /// Stops and waits (bounded by the shutdown timeout).
    pub async fn stop(self) -> Result<(), AppError> {
        self.cancel.cancel();
        self.wait().await
    }

    /// Waits until stopped (the token cancelled), then for the parts to
    /// finish, at most the shutdown timeout.
    pub async fn wait(self) -> Result<(), AppError> {
        self.cancel.cancelled().await;
        self.tracker.close();
        if tokio::time::timeout(self.shutdown_timeout, self.tracker.wait())
            .await
            .is_err()
        {
            tracing::warn!(
                timeout_ms = self.shutdown_timeout.as_millis() as u64,
                "shutdown timed out: exiting with work in flight (what was not checkpointed \
                 is read again at the next start)"
            );
        }
        if let Some(s) = self.spool {
            s.close().await;
        }
        Ok(())
    }
}

/// A running intake (the intake and admin roles only): its addresses, and
/// how to stop it.
#[derive(Debug)]
pub struct Running {
    pub intake_addr: SocketAddr,
    pub admin_addr: SocketAddr,
    pub listener_id: u64,
    app: App,
}

impl Running {
    /// Stops taking requests, drains the buffers into the stream, and waits.
    pub async fn stop(self) -> Result<(), AppError> {
        self.app.stop().await
    }

    /// Waits until the servers stop (after the token is cancelled).
    pub async fn wait(self) -> Result<(), AppError> {
        self.app.wait().await
    }

    pub fn token(&self) -> CancellationToken {
        self.app.token()
    }
}

/// Starts the intake (and its admin endpoint) on `backend`.
pub async fn start_intake<B: StreamBackend>(
    backend: B,
    config: &Config,
) -> Result<Running, AppError> {
    start_intake_with(backend, config, Telemetry::new()).await
}

/// [`start_intake`] with metrics made beforehand (shared with a spool).
pub async fn start_intake_with<B: StreamBackend>(
    backend: B,
    config: &Config,
    telemetry: Telemetry,
) -> Result<Running, AppError> {
    let app = launch(
        config,
        telemetry,
        Parts {
            intake: Some(backend),
            consumer: None,
            spool: None,
            create: None,
        },
    )
    .await?;
    Ok(Running {
        intake_addr: app.intake_addr.unwrap_or(app.admin_addr),
        admin_addr: app.admin_addr,
        listener_id: app.listener_id.unwrap_or_default(),
        app,
    })
}
