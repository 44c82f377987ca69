//! Wires the components together and owns shutdown: a `CancellationToken`
//! tells every server to stop taking requests, in-flight requests finish,
//! and the producers write what they were given before the process exits.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::response::IntoResponse;
use axum::routing::get;
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::config::{BackendKind, Config, parse_listener_id};
use crate::intake::metrics::Metrics;
use crate::intake::server::Intake;
use crate::intake::spool::Spooled;
use crate::intake::stamp::Listener;
use crate::stream::StreamBackend;
use crate::stream::any::AnyBackend;
use crate::stream::kinesis::KinesisBackend;
use crate::stream::local::{LocalLog, LocalOptions};

#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error("cannot listen on {addr}: {error}")]
    Bind {
        addr: SocketAddr,
        error: std::io::Error,
    },
    #[error(transparent)]
    Stream(#[from] crate::stream::StreamError),
    #[error("server error: {0}")]
    Serve(String),
}

/// The configured stream backend.
pub async fn backend(config: &Config) -> Result<AnyBackend, AppError> {
    Ok(match config.stream.backend {
        BackendKind::Local => {
            let opts = LocalOptions {
                fsync: config.stream.fsync,
                segment_bytes: config.stream.segment_bytes,
                retention: Some(std::time::Duration::from_secs(
                    config.stream.retention_hours.saturating_mul(3600),
                )),
                retention_bytes: config.stream.retention_bytes,
                entry_overhead: 0,
            };
            AnyBackend::Local(LocalLog::open(&config.stream.data_dir, opts)?)
        }
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
        return Ok((b, Some(s)));
    }
    Ok((b, None))
}

/// A running intake: its addresses, and how to stop it.
#[derive(Debug)]
pub struct Running {
    pub intake_addr: SocketAddr,
    pub admin_addr: SocketAddr,
    pub listener_id: u64,
    stop: CancellationToken,
    task: JoinHandle<Result<(), AppError>>,
}

impl Running {
    /// Stops taking requests, drains the buffers into the stream, and waits.
    pub async fn stop(self) -> Result<(), AppError> {
        self.stop.cancel();
        self.wait().await
    }

    /// Waits until the servers stop (after the token is cancelled).
    pub async fn wait(self) -> Result<(), AppError> {
        self.task
            .await
            .map_err(|e| AppError::Serve(format!("the intake task failed: {e}")))?
    }

    pub fn token(&self) -> CancellationToken {
        self.stop.clone()
    }
}

/// The metrics registry and the intake's metrics in it.
#[derive(Debug)]
pub struct Telemetry {
    pub registry: Registry,
    pub metrics: Metrics,
}

impl Telemetry {
    pub fn new() -> Self {
        let mut registry = Registry::default();
        let metrics = Metrics::register(&mut registry);
        Self { registry, metrics }
    }
}

impl Default for Telemetry {
    fn default() -> Self {
        Self::new()
    }
}

/// What the configuration names that `backend` does not have: a
/// `[streams.NAME]` section or a token's stream that does not exist. Requests
/// to such a stream get 404 until it is created, so `serve` says so at start
/// (a stream may be created later, so it is not an error). A near miss in
/// letter case is named.
pub async fn unknown_stream_warnings<B: StreamBackend>(
    backend: &B,
    config: &Config,
) -> Vec<String> {
    let mut named: Vec<(String, String)> = config
        .streams
        .keys()
        .map(|name| (name.clone(), format!("[streams.{name}]")))
        .collect();
    for (i, token) in config.intake.tokens.iter().enumerate() {
        for name in token.streams.iter().filter(|s| s.as_str() != "*") {
            named.push((
                name.clone(),
                format!("intake.tokens[{i}].streams ({name:?})"),
            ));
        }
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
                 until it is created{hint}"
            )
        })
        .collect()
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
    let bind = |addr: SocketAddr| async move {
        TcpListener::bind(addr)
            .await
            .map_err(|error| AppError::Bind { addr, error })
    };
    let intake_l = bind(config.intake.listen).await?;
    let admin_l = bind(config.intake.admin_listen).await?;
    let intake_addr = intake_l.local_addr().map_err(|error| AppError::Bind {
        addr: config.intake.listen,
        error,
    })?;
    let admin_addr = admin_l.local_addr().map_err(|error| AppError::Bind {
        addr: config.intake.admin_listen,
        error,
    })?;

    for warning in unknown_stream_warnings(&backend, config).await {
        tracing::warn!("{warning}");
    }

    let Telemetry { registry, metrics } = telemetry;
    let registry = Arc::new(registry);
    let id = config
        .intake
        .listener_id
        .as_deref()
        .and_then(|s| parse_listener_id(s).ok());
    let listener = Listener::new(id);
    let listener_id = listener.id();
    let streams: HashMap<_, _> = config
        .streams
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let intake = Intake::new(backend, listener, config.intake.clone(), streams, metrics);
    let stop = CancellationToken::new();

    let admin = Router::new()
        .route(
            "/metrics",
            get(move || {
                let registry = Arc::clone(&registry);
                async move {
                    let mut body = String::new();
                    match prometheus_client::encoding::text::encode(&mut body, &registry) {
                        Ok(()) => (
                            [(
                                axum::http::header::CONTENT_TYPE,
                                "application/openmetrics-text; version=1.0.0; charset=utf-8",
                            )],
                            body,
                        )
                            .into_response(),
                        Err(_) => axum::http::StatusCode::INTERNAL_SERVER_ERROR.into_response(),
                    }
                }
            }),
        )
        .route("/healthz", get(|| async { "ok" }));
    tracing::info!(%intake_addr, %admin_addr, listener = format!("{listener_id:016x}"), "intake listening");

    let token = stop.clone();
    let task = tokio::spawn(async move {
        let admin_stop = token.clone();
        let admin_task = tokio::spawn(async move {
            axum::serve(admin_l, admin)
                .with_graceful_shutdown(admin_stop.cancelled_owned())
                .await
        });
        let served = axum::serve(intake_l, intake.router())
            .with_graceful_shutdown(token.clone().cancelled_owned())
            .await;
        // No more requests: write what the producers hold.
        intake.drain().await;
        token.cancel();
        let _ = admin_task.await;
        tracing::info!("intake stopped; buffers drained");
        served.map_err(|e| AppError::Serve(e.to_string()))
    });
    Ok(Running {
        intake_addr,
        admin_addr,
        listener_id,
        stop,
        task,
    })
}
