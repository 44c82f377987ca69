//! The HTTP intake: `POST /v1/streams/{stream}/events`.
//!
//! A request's events are decoded, keyed, routed to shards, stamped and
//! handed to the stream's producer; the response is sent once they are
//! written (durable acknowledgement).

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use axum::Json;
use axum::Router;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use bytes::Bytes;
use serde::Serialize;
use tokio::sync::Mutex;

use super::decode::{self, DecodeError};
use super::metrics::{Metrics, OutcomeLabel};
use super::producer::{
    self, Budget, Decoding, Group, ProduceError, ProducerConfig, ProducerHandle, Reservation,
    Stamped,
};
use super::route::ShardMap;
use super::stamp::{Listener, now_ms};
use crate::config::{IntakeConfig, StreamSettings, TokenConfig};
use crate::event::EventId;

/// Memory an accepted event costs besides its bytes, until it is written:
/// its span, its place in a shard group, its key and stamp. Counted in the
/// buffer budget, so a body of tiny lines is bounded like a big one.
pub const EVENT_OVERHEAD_BYTES: usize = 128;

/// Bodies above this size (and every compressed one) are decoded on the
/// blocking pool rather than on an async worker.
const HEAVY_BODY_BYTES: usize = 1 << 20;
use crate::stream::kpl::Aggregator;
use crate::stream::{StreamBackend, StreamError, hash_key_of};

/// Longest partition key Kinesis accepts (Unicode characters).
pub use crate::stream::kpl::MAX_KEY_CHARS;

/// Everything the handlers share. Cheap to clone.
pub struct Intake<B: StreamBackend> {
    inner: Arc<Inner<B>>,
}

impl<B: StreamBackend> Clone for Intake<B> {
    fn clone(&self) -> Self {
        Self {
            inner: Arc::clone(&self.inner),
        }
    }
}

struct Inner<B> {
    backend: B,
    listener: Listener,
    config: IntakeConfig,
    producer: ProducerConfig,
    streams: HashMap<String, StreamSettings>,
    metrics: Metrics,
    budget: Budget,
    open: Mutex<HashMap<String, Arc<OpenStream>>>,
    tasks: tokio_util::task::TaskTracker,
    shutdown: tokio_util::sync::CancellationToken,
}

/// A stream this intake writes to: its producer and current shard map.
struct OpenStream {
    handle: ProducerHandle,
    map: Arc<RwLock<ShardMap>>,
    key_field: Option<String>,
}

/// How often, on average, the shard map of an open stream is refreshed.
/// Kinesis allows 20 DescribeStreamSummary calls a second per account,
/// shared by every client: 100 listener-stream pairs at this pace make 3.3
/// a second. The first wait is drawn from [0, it], the others from ±50 %
/// of it, so streams opened together do not ask together; a throttled ask
/// doubles the wait, up to [`SHARD_REFRESH_MAX`].
pub const SHARD_REFRESH: Duration = Duration::from_secs(30);
const SHARD_REFRESH_MAX: Duration = Duration::from_secs(300);

/// A wait drawn uniformly from [base/2, 3·base/2].
fn jittered(base: Duration) -> Duration {
    base.mul_f64(0.5 + rand::random::<f64>())
}

impl<B: StreamBackend> Intake<B> {
    pub fn new(
        backend: B,
        listener: Listener,
        config: IntakeConfig,
        streams: HashMap<String, StreamSettings>,
        metrics: Metrics,
    ) -> Self {
        let producer = ProducerConfig {
            record_max_bytes: config.record_max_bytes,
            linger: Duration::from_millis(config.linger_ms),
            put_timeout: Duration::from_millis(config.put_timeout_ms),
            ..ProducerConfig::default()
        };
        let budget = Budget::new(config.buffer_bytes);
        Self {
            inner: Arc::new(Inner {
                backend,
                listener,
                config,
                producer,
                streams,
                metrics,
                budget,
                open: Mutex::new(HashMap::new()),
                tasks: tokio_util::task::TaskTracker::new(),
                shutdown: tokio_util::sync::CancellationToken::new(),
            }),
        }
    }

    pub fn listener(&self) -> &Listener {
        &self.inner.listener
    }

    pub fn metrics(&self) -> &Metrics {
        &self.inner.metrics
    }

    /// The router of the intake API.
    pub fn router(&self) -> Router {
        Router::new()
            .route(
                "/v1/streams/{stream}/events",
                post(post_events::<B>).fallback(
                    |State(intake): State<Intake<B>>, method: axum::http::Method| async move {
                        intake.inner.metrics.reject("method_not_allowed");
                        (
                            StatusCode::METHOD_NOT_ALLOWED,
                            [(axum::http::header::ALLOW, "POST")],
                            Json(serde_json::json!({
                                "error": format!("{method} is not allowed here: events are sent with POST")
                            })),
                        )
                    },
                ),
            )
            .route("/healthz", get(|| async { "ok" }))
            .fallback(|State(intake): State<Intake<B>>| async move {
                intake.inner.metrics.reject("no_such_endpoint");
                (
                    StatusCode::NOT_FOUND,
                    Json(serde_json::json!({
                        "error": "no such endpoint: events go to POST /v1/streams/{stream}/events"
                    })),
                )
            })
            .with_state(self.clone())
            .layer(tower_http::trace::TraceLayer::new_for_http())
    }

    /// Stops the producers after writing everything they were given. Call
    /// after the server stopped taking requests.
    pub async fn drain(&self) {
        self.inner.shutdown.cancel();
        self.inner.open.lock().await.clear();
        self.inner.tasks.close();
        self.inner.tasks.wait().await;
    }

    /// The stream's producer, started on first use.
    async fn open(&self, stream: &str) -> Result<Arc<OpenStream>, IntakeError> {
        if let Some(s) = self.inner.open.lock().await.get(stream) {
            return Ok(Arc::clone(s));
        }
        if self.inner.shutdown.is_cancelled() {
            return Err(IntakeError::ShuttingDown);
        }
        crate::stream::name::check(stream).map_err(IntakeError::BadRequest)?;
        // Described without the lock: a slow or missing stream must not
        // hold up requests to the others.
        let d = match self.inner.backend.describe(stream).await {
            Ok(d) => d,
            Err(StreamError::NoSuchStream(_)) => {
                return Err(IntakeError::NoSuchStream(stream.to_owned()));
            }
            Err(StreamError::BadInput(m)) => {
                return Err(IntakeError::BadRequest(format!(
                    "stream {}: {m}",
                    crate::stream::name::shown(stream)
                )));
            }
            // Unreachable or throttled: the client may retry.
            Err(e) => return Err(IntakeError::Unavailable(e.to_string())),
        };
        let map = ShardMap::from_description(&d).map_err(|e| IntakeError::Stream(e.to_string()))?;
        let mut open = self.inner.open.lock().await;
        // Another request may have opened it meanwhile.
        if let Some(s) = open.get(stream) {
            return Ok(Arc::clone(s));
        }
        if self.inner.shutdown.is_cancelled() {
            return Err(IntakeError::ShuttingDown);
        }
        let map = Arc::new(RwLock::new(map));
        // The producer re-routes what a reshard sends elsewhere, and keeps
        // the map fresh for the requests after (not behind the spool: its
        // shipper does that for itself).
        let producer_map = (self.inner.backend.put_target() != "spool").then(|| Arc::clone(&map));
        let (handle, task) = producer::spawn(
            self.inner.backend.clone(),
            stream.to_owned(),
            self.inner.producer.clone(),
            self.inner.metrics.clone(),
            producer_map,
        );
        self.inner.tasks.spawn(async move {
            let _ = task.await;
        });
        let s = Arc::new(OpenStream {
            handle,
            map,
            key_field: self
                .inner
                .streams
                .get(stream)
                .and_then(|s| s.partition_key_field.clone()),
        });
        // Follow reshards: refresh the shard map while the stream is open.
        let weak = Arc::downgrade(&s);
        let backend = self.inner.backend.clone();
        let name = stream.to_owned();
        let stop = self.inner.shutdown.clone();
        self.inner.tasks.spawn(async move {
            let mut every = SHARD_REFRESH;
            let mut wait = SHARD_REFRESH.mul_f64(rand::random::<f64>());
            loop {
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tokio::time::sleep(wait) => {}
                }
                let Some(s) = weak.upgrade() else { return };
                let described = backend.describe(&name).await;
                every = match &described {
                    Err(StreamError::Throttled(_)) => (every * 2).min(SHARD_REFRESH_MAX),
                    _ => SHARD_REFRESH,
                };
                wait = jittered(every);
                match described.and_then(|d| ShardMap::from_description(&d)) {
                    Ok(m) => {
                        if let Ok(mut cur) = s.map.write()
                            && !cur.same_shards(&m)
                        {
                            tracing::info!(stream = %name, shards = m.len(), "shard map changed");
                            *cur = m;
                        }
                    }
                    Err(e) => {
                        tracing::warn!(stream = %name, error = %e, "cannot refresh the shard map")
                    }
                }
            }
        });
        open.insert(stream.to_owned(), Arc::clone(&s));
        Ok(s)
    }

    fn authorize(&self, headers: &HeaderMap, stream: &str) -> Result<(), IntakeError> {
        let tokens: &[TokenConfig] = &self.inner.config.tokens;
        if tokens.is_empty() {
            return Ok(());
        }
        // The scheme is case-insensitive (RFC 9110 §11.1).
        let presented = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().split_once(' '))
            .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
            .map(|(_, token)| token.trim())
            .ok_or(IntakeError::Unauthorized)?;
        let t = tokens
            .iter()
            .find(|t| constant_time_eq(t.token.as_bytes(), presented.as_bytes()))
            .ok_or(IntakeError::Unauthorized)?;
        if t.streams.iter().any(|s| s == "*" || s == stream) {
            Ok(())
        } else {
            Err(IntakeError::Forbidden(stream.to_owned()))
        }
    }
}

/// Reads a body of at most `max` bytes: refused at once when its declared
/// length is over, or as soon as what arrives is.
/// Reads the body, with `reservation` covering what it holds (the declared
/// length up front); a pause of `body_timeout_ms` between two pieces of it
/// ends the request with 408, so a client that declares a length and stops
/// short does not hold its memory.
async fn read_body(
    body: axum::body::Body,
    headers: &HeaderMap,
    config: &IntakeConfig,
    budget: &Budget,
    reservation: &mut Reservation,
    gauge: &prometheus_client::metrics::gauge::Gauge,
) -> Result<Bytes, IntakeError> {
    use futures::StreamExt;
    let max = config.max_body_bytes;
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > max as u64) {
        return Err(IntakeError::BodyTooLarge(max));
    }
    let declared = declared.map_or(0, |n| n as usize);
    if !budget.resize(reservation, declared) {
        return Err(IntakeError::Busy);
    }
    // What is reserved shows at once, a body still arriving included.
    gauge.set(budget.used_bytes() as i64);
    let mut buf = bytes::BytesMut::with_capacity(declared);
    let mut frames = body.into_data_stream();
    let pause = Duration::from_millis(config.body_timeout_ms);
    loop {
        let next = tokio::time::timeout(pause, frames.next())
            .await
            .map_err(|_| IntakeError::BodyTimeout(config.body_timeout_ms))?;
        let Some(chunk) = next else { break };
        let chunk =
            chunk.map_err(|e| IntakeError::BadRequest(format!("cannot read the body: {e}")))?;
        if buf.len() + chunk.len() > max {
            return Err(IntakeError::BodyTooLarge(max));
        }
        if buf.len() + chunk.len() > declared
            && !budget.resize(reservation, (buf.len() + chunk.len()).max(buf.capacity()))
        {
            return Err(IntakeError::Busy);
        }
        if buf.len() + chunk.len() > declared {
            gauge.set(budget.used_bytes() as i64);
        }
        buf.extend_from_slice(&chunk);
    }
    Ok(buf.freeze())
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The answer to an accepted request.
#[derive(Debug, Serialize)]
pub struct Accepted {
    pub accepted: usize,
    pub first_id: String,
    pub last_id: String,
}

async fn post_events<B: StreamBackend>(
    State(intake): State<Intake<B>>,
    Path(stream): Path<String>,
    headers: HeaderMap,
    body: axum::body::Body,
) -> Result<Json<Accepted>, IntakeError> {
    let m = intake.inner.metrics.clone();
    let start = std::time::Instant::now();
    let result = accept(&intake, &stream, &headers, body).await;
    if let Err(e) = &result {
        m.reject(e.reason());
    }
    let outcome = if result.is_ok() {
        "accepted"
    } else {
        "rejected"
    };
    m.request_latency
        .get_or_create(&OutcomeLabel { outcome })
        .observe(start.elapsed().as_secs_f64());
    result.map(Json)
}

async fn accept<B: StreamBackend>(
    intake: &Intake<B>,
    stream: &str,
    headers: &HeaderMap,
    body: axum::body::Body,
) -> Result<Accepted, IntakeError> {
    let received_ms = now_ms();
    // Everything the headers decide comes before the body is read: a
    // refused client's upload is never buffered.
    intake.authorize(headers, stream)?;
    let h = RequestHeaders::read(headers)?;
    let open = intake.open(stream).await?;
    // The gauge follows the budget on every way out of here, refusals
    // after the reservation included (declared first, dropped last).
    let _gauge = BufferGauge(intake);
    let (events, reservation, decoding) = read_and_decode(intake, &open, &h, headers, body).await?;
    let map = open
        .map
        .read()
        .map_err(|_| IntakeError::Stream("shard map lock poisoned".into()))?
        .clone();
    let groups = keys_and_shards(intake, &open, &map, h.key.as_deref(), &events)?;
    let n = events.len();
    let block = intake.inner.listener.reserve(n as u64);
    let (out, bytes) = stamp(&events, groups, &map, block, received_ms);
    let r = open.handle.submit(out, reservation, decoding).await;
    intake.update_buffer_gauge();
    r?;
    intake
        .inner
        .metrics
        .bytes_accepted
        .get_or_create(&Metrics::stream(stream))
        .inc_by(bytes as u64);
    Ok(Accepted {
        accepted: n,
        first_id: block.to_string(),
        last_id: EventId {
            listener: block.listener,
            counter: block.counter + n as u64 - 1,
        }
        .to_string(),
    })
}

/// What a request's headers say about its body.
struct RequestHeaders {
    format: decode::Format,
    encoding: decode::Encoding,
    /// `X-Partition-Key`, checked.
    key: Option<String>,
}

impl RequestHeaders {
    fn read(headers: &HeaderMap) -> Result<Self, IntakeError> {
        let text = |name: header::HeaderName| -> Result<Option<&str>, IntakeError> {
            headers
                .get(&name)
                .map(|v| {
                    v.to_str()
                        .map_err(|_| IntakeError::BadRequest(format!("header {name} is not ASCII")))
                })
                .transpose()
        };
        let format = decode::format_of(text(header::CONTENT_TYPE)?)?;
        let encoding = decode::encoding_of(text(header::CONTENT_ENCODING)?)?;
        let key = match headers.get("x-partition-key") {
            None => None,
            Some(v) => Some(
                check_key(
                    v.to_str().map_err(|_| {
                        IntakeError::BadRequest("X-Partition-Key is not ASCII".into())
                    })?,
                    "X-Partition-Key",
                )?
                .to_owned(),
            ),
        };
        Ok(Self {
            format,
            encoding,
            key,
        })
    }
}

/// Sets the buffer gauge from the budget when dropped: on every way out of
/// a request.
struct BufferGauge<'a, B: StreamBackend>(&'a Intake<B>);

impl<B: StreamBackend> Drop for BufferGauge<'_, B> {
    fn drop(&mut self) {
        self.0.update_buffer_gauge();
    }
}

impl<B: StreamBackend> Intake<B> {
    fn update_buffer_gauge(&self) {
        let i = &self.inner;
        i.metrics.buffer_bytes.set(i.budget.used_bytes() as i64);
    }
}

/// Reads the body and splits it into events, holding their memory in the
/// shared buffer: the declared length first, then what arrives, then what
/// decompression makes, then each event's bookkeeping. Many bodies at once
/// get 503s, not the process killed for want of memory. The producer is
/// told a request is being decoded from the end of its body on (its write
/// cycle may linger for it).
async fn read_and_decode<B: StreamBackend>(
    intake: &Intake<B>,
    open: &OpenStream,
    h: &RequestHeaders,
    headers: &HeaderMap,
    body: axum::body::Body,
) -> Result<(decode::Events, Reservation, Decoding), IntakeError> {
    let config = &intake.inner.config;
    let budget = intake.inner.budget.clone();
    let mut reservation = budget.try_reserve(0).ok_or(IntakeError::Busy)?;
    let body = read_body(
        body,
        headers,
        config,
        &budget,
        &mut reservation,
        &intake.inner.metrics.buffer_bytes,
    )
    .await?;
    let decoding = open.handle.decoding();
    let max_event = Aggregator::max_event_len(config.record_max_bytes, MAX_KEY_CHARS * 4);
    let (max_decoded, max_events) = (config.max_decoded_bytes, config.max_events_per_request);
    let (format, encoding) = (h.format, h.encoding);
    let heavy = encoding != decode::Encoding::Identity || body.len() > HEAVY_BODY_BYTES;
    let work = move || -> (Result<decode::Events, DecodeError>, Reservation) {
        let mut reservation = reservation;
        let held = body.len();
        let events = decode::decompress_within(encoding, body, max_decoded, &mut |bytes| {
            budget.resize(&mut reservation, held + bytes)
        })
        .and_then(|body| decode::split_at_most(format, body, max_event, max_events));
        (events, reservation)
    };
    // Decompressing or splitting a big body takes milliseconds: off the
    // async workers, so that other requests are not held up meanwhile.
    let (events, mut reservation) = if heavy {
        tokio::task::spawn_blocking(work)
            .await
            .map_err(|e| IntakeError::Stream(format!("decoding task failed: {e}")))?
    } else {
        work()
    };
    let events = events?;
    // An event costs its bytes and its bookkeeping (span, group, stamp):
    // a body of tiny lines is not cheap.
    let cost = events.buffer_len() + events.len() * EVENT_OVERHEAD_BYTES;
    if !intake.inner.budget.resize(&mut reservation, cost) {
        return Err(IntakeError::Busy);
    }
    intake.update_buffer_gauge();
    Ok((events, reservation, decoding))
}

/// One shard's events of a request: (index in the body, partition key).
type ShardEvents = Vec<(usize, Arc<str>)>;

/// Each event's partition key and the shard it goes to: the header's key,
/// else the configured JSON field's, else a key of the listener's that
/// hashes into the next shard in turn, where the whole request goes.
/// Returns, per shard of `map`, its events (index, key) in body order.
fn keys_and_shards<B: StreamBackend>(
    intake: &Intake<B>,
    open: &OpenStream,
    map: &ShardMap,
    header_key: Option<&str>,
    events: &decode::Events,
) -> Result<Vec<ShardEvents>, IntakeError> {
    let header_key: Option<Arc<str>> = header_key.map(Arc::from);
    let turn = map.next_in_turn();
    let spread_key = map.spread_key(turn, &format!("{:x}", intake.inner.listener.id()));
    let mut groups: Vec<ShardEvents> = vec![Vec::new(); map.len()];
    for (i, line) in events.iter().enumerate() {
        let (key, shard) = if let Some(k) = &header_key {
            (Arc::clone(k), map.index_of(hash_key_of(k)))
        } else if let Some(k) = match open.key_field.as_deref() {
            None => None,
            Some(f) => key_of(line, f)
                .map_err(|m| IntakeError::BadRequest(format!("event {}: {m}", i + 1)))?,
        } {
            let k = check_key(&k, "partition key field").map_err(|e| match e {
                IntakeError::BadRequest(m) => {
                    IntakeError::BadRequest(format!("event {}: {m}", i + 1))
                }
                other => other,
            })?;
            let shard = map.index_of(hash_key_of(k));
            (Arc::from(k), shard)
        } else {
            (Arc::clone(&spread_key), turn)
        };
        groups[shard].push((i, key));
    }
    Ok(groups)
}

/// Stamps the events with the request's block of counters (so its first
/// and last ids bracket exactly its events), handed out in consecutive runs
/// per shard group, so a KPL record carries one stamp tag per run instead
/// of one per event. Returns the groups and the events' bytes.
fn stamp(
    events: &decode::Events,
    groups: Vec<ShardEvents>,
    map: &ShardMap,
    block: EventId,
    received_ms: i64,
) -> (Vec<Group>, usize) {
    let mut bytes = 0usize;
    let mut next = block.counter;
    let mut out = Vec::new();
    for (shard, members) in groups.into_iter().enumerate() {
        if members.is_empty() {
            continue;
        }
        let first = next;
        next += members.len() as u64;
        let evs = members
            .into_iter()
            .enumerate()
            .map(|(j, (i, key))| {
                let data = events.get_bytes(i);
                bytes += data.len();
                Stamped {
                    key,
                    data,
                    stamp: crate::event::Stamp {
                        id: EventId {
                            listener: block.listener,
                            counter: first + j as u64,
                        },
                        received_ms,
                    },
                }
            })
            .collect();
        out.push(Group {
            explicit_hash_key: map.targets()[shard].range.start,
            events: evs,
        });
    }
    (out, bytes)
}

/// A top-level JSON field's value as a partition key: a string's text, or
/// any other value's JSON text. `Ok(None)` when absent or null, or when the
/// line is not a JSON object (plain text); an error when the line starts as
/// an object but cannot be read up to the field (invalid, or nested deeper
/// than the JSON reader goes), so that the event is not silently spread.
fn key_of(line: &[u8], field: &str) -> Result<Option<String>, String> {
    let looks_like_object = line.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'{');
    for m in kinesthetic_filter::json::members(line) {
        match m {
            Ok((k, v)) if k.eq_str(field) => {
                if v.is_null() {
                    return Ok(None);
                }
                return Ok(match v.as_str() {
                    Some(s) => Some(s.into_owned()),
                    None => std::str::from_utf8(v.raw()).ok().map(str::to_owned),
                });
            }
            Ok(_) => {}
            Err(e) if looks_like_object => {
                return Err(format!(
                    "cannot read the partition key field `{field}`: {e}"
                ));
            }
            Err(_) => return Ok(None),
        }
    }
    Ok(None)
}

fn check_key<'a>(k: &'a str, what: &str) -> Result<&'a str, IntakeError> {
    crate::stream::key::check(k).map_err(|e| IntakeError::BadRequest(format!("{what} {e}")))?;
    Ok(k)
}

/// Why a request was refused. The client gets a precise message for its own
/// mistakes, and a plain one for ours (the detail is logged).
#[derive(Debug, thiserror::Error)]
pub enum IntakeError {
    #[error("{0}")]
    Decode(#[from] DecodeError),
    #[error("{0}")]
    BadRequest(String),
    #[error("the body is larger than {0} bytes")]
    BodyTooLarge(usize),
    #[error("the body stopped arriving: nothing for {0} ms")]
    BodyTimeout(u64),
    #[error("stream {} does not exist", crate::stream::name::shown(.0))]
    NoSuchStream(String),
    #[error(
        "missing or unknown bearer token: send `Authorization: Bearer TOKEN` with a token from \
         the intake's [[intake.tokens]]"
    )]
    Unauthorized,
    #[error("this token may not write to stream {}", crate::stream::name::shown(.0))]
    Forbidden(String),
    #[error("the intake's buffer is full; retry later")]
    Busy,
    #[error("the intake is shutting down; retry on another listener")]
    ShuttingDown,
    #[error("{0}")]
    Produce(#[from] ProduceError),
    #[error("{0}")]
    Stream(String),
    #[error("the stream cannot be reached now: {0}")]
    Unavailable(String),
}

impl IntakeError {
    pub fn status(&self) -> StatusCode {
        match self {
            Self::Decode(e) => StatusCode::from_u16(e.status()).unwrap_or(StatusCode::BAD_REQUEST),
            Self::BadRequest(_) => StatusCode::BAD_REQUEST,
            Self::BodyTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            Self::BodyTimeout(_) => StatusCode::REQUEST_TIMEOUT,
            Self::NoSuchStream(_) => StatusCode::NOT_FOUND,
            Self::Unauthorized => StatusCode::UNAUTHORIZED,
            Self::Forbidden(_) => StatusCode::FORBIDDEN,
            Self::Busy | Self::ShuttingDown | Self::Unavailable(_) => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            Self::Produce(ProduceError::Refused(_)) | Self::Stream(_) => {
                StatusCode::INTERNAL_SERVER_ERROR
            }
            Self::Produce(_) => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    /// The metric label of this rejection.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::Decode(e) => match e.status() {
                413 => "too_large",
                503 => "busy",
                415 => "unsupported",
                _ => "malformed",
            },
            Self::BadRequest(_) => "bad_request",
            Self::BodyTooLarge(_) => "too_large",
            Self::BodyTimeout(_) => "body_timeout",
            Self::NoSuchStream(_) => "no_such_stream",
            Self::Unauthorized => "unauthorized",
            Self::Forbidden(_) => "forbidden",
            Self::Busy => "busy",
            Self::ShuttingDown => "shutting_down",
            Self::Produce(_) | Self::Stream(_) | Self::Unavailable(_) => "stream_error",
        }
    }
}

impl IntoResponse for IntakeError {
    fn into_response(self) -> Response {
        let status = self.status();
        let message = match &self {
            _ if status == StatusCode::INTERNAL_SERVER_ERROR => {
                tracing::error!(error = %self, "intake request failed");
                "internal error (see the intake's log)".to_owned()
            }
            // The stream's own words can name local paths or hosts: they go
            // to the log, and the client is told what to do.
            Self::Unavailable(_) | Self::Produce(_) => {
                tracing::warn!(error = %self, "intake request refused: the stream is unavailable");
                match &self {
                    Self::Produce(ProduceError::Timeout { secs, .. }) => format!(
                        "the stream did not take the events within {secs} s; nothing was \
                         accepted: retry later (the intake's log says why)"
                    ),
                    Self::Produce(ProduceError::Shutdown) => {
                        "the intake is shutting down; retry on another listener".to_owned()
                    }
                    Self::Produce(ProduceError::Full(_)) => {
                        "the intake's spool is full: the stream has been unreachable for a \
                         while; nothing was accepted: retry later (the intake's log says why)"
                            .to_owned()
                    }
                    _ => "the stream cannot be reached now; nothing was accepted: retry later \
                          (the intake's log says why)"
                        .to_owned(),
                }
            }
            _ => self.to_string(),
        };
        let mut r = (status, Json(serde_json::json!({ "error": message }))).into_response();
        if status == StatusCode::SERVICE_UNAVAILABLE {
            r.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        if status == StatusCode::UNAUTHORIZED {
            // RFC 6750: a 401 names the scheme it wants.
            r.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"kinesthetic\""),
            );
        }
        r
    }
}
