//! The configuration file: one TOML document, validated before anything
//! starts. Every key is documented in `kinesthetic.example.toml`.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::stream::kinesis::KinesisSettings;

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub stream: StreamConfig,
    pub intake: IntakeConfig,
    pub admin: AdminConfig,
    pub consumer: ConsumerConfig,
    pub filters: FiltersConfig,
    /// Per-stream settings, by stream name.
    pub streams: BTreeMap<String, StreamSettings>,
    /// Named sinks, for `pipelines` to write to.
    pub sinks: BTreeMap<String, SinkConfig>,
    pub pipelines: Vec<PipelineConfig>,
}

/// Which stream implementation to use.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BackendKind {
    /// The embedded log in `data_dir` (no AWS account needed).
    #[default]
    Local,
    /// Amazon Kinesis (or a stand-in at `kinesis.endpoint`).
    Kinesis,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StreamConfig {
    pub backend: BackendKind,
    /// Directory of the local log (streams and the intake's spool).
    pub data_dir: PathBuf,
    pub kinesis: KinesisSettings,
    /// fsync every write of the local log (durable acknowledgements).
    pub fsync: bool,
    /// Local log: a shard's segment file is closed beyond this size.
    pub segment_bytes: u64,
    /// Local log: keep records this many hours.
    pub retention_hours: u64,
    /// Local log: keep at most this many bytes per shard (whole segments go).
    pub retention_bytes: Option<u64>,
}

impl Default for StreamConfig {
    fn default() -> Self {
        Self {
            backend: BackendKind::Local,
            data_dir: PathBuf::from("kinesthetic-data"),
            kinesis: KinesisSettings::default(),
            fsync: true,
            segment_bytes: 64 << 20,
            retention_hours: 24,
            retention_bytes: None,
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StreamSettings {
    /// Top-level JSON field whose value is an event's partition key (when the
    /// request has no `X-Partition-Key`); events without it are spread.
    pub partition_key_field: Option<String>,
    /// Create the stream with this many shards at start when it does not
    /// exist (a stream that exists is left as it is, whatever its shards).
    pub shards: Option<u32>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct IntakeConfig {
    #[serde(deserialize_with = "crate::net::deserialize_listen")]
    pub listen: SocketAddr,
    /// This listener's unique id (decimal or `0x…` hex); random when unset.
    pub listener_id: Option<String>,
    /// Largest request body as sent (compressed or not).
    pub max_body_bytes: usize,
    /// Largest body after decompression.
    pub max_decoded_bytes: usize,
    /// Most events in one request (each costs bookkeeping memory besides
    /// its bytes, so a body of tiny lines is bounded too).
    pub max_events_per_request: usize,
    /// Accepted but unwritten event bytes, over all streams; beyond it
    /// requests get 503 with Retry-After.
    pub buffer_bytes: usize,
    /// Largest aggregated Kinesis record (bytes; Kinesis allows 1 MiB).
    pub record_max_bytes: usize,
    /// How long a write cycle may wait for requests still being decoded.
    pub linger_ms: u64,
    /// Give up writing a request's events after this long (503).
    pub put_timeout_ms: u64,
    /// A request whose body pauses this long between two pieces gets 408
    /// (its memory is freed).
    pub body_timeout_ms: u64,
    /// A request's headers (and an idle kept-alive connection's next
    /// request) must arrive within this long, or the connection is closed.
    pub header_timeout_ms: u64,
    /// Open connections at most; more are closed at once (the admin
    /// listener has its own, so it stays reachable).
    pub max_connections: usize,
    /// Kinesis streams only: acknowledge once events are fsynced in the
    /// spool (`DATA_DIR/spool`) and ship them on in the background, so the
    /// intake keeps accepting while Kinesis is slow or unreachable.
    pub spool: bool,
    /// Bytes spooled but not yet shipped, per stream, before 503s.
    pub spool_max_bytes: u64,
    /// Bearer tokens; when empty, no authentication.
    pub tokens: Vec<TokenConfig>,
}

impl Default for IntakeConfig {
    fn default() -> Self {
        let p = crate::intake::producer::ProducerConfig::default();
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            listener_id: None,
            max_body_bytes: 16 << 20,
            max_decoded_bytes: 64 << 20,
            max_events_per_request: 500_000,
            buffer_bytes: 256 << 20,
            record_max_bytes: p.record_max_bytes,
            linger_ms: p.linger.as_millis() as u64,
            put_timeout_ms: p.put_timeout.as_millis() as u64,
            body_timeout_ms: 30_000,
            header_timeout_ms: 30_000,
            max_connections: 1024,
            spool: true,
            spool_max_bytes: 1 << 30,
            tokens: Vec::new(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenConfig {
    pub token: String,
    /// Streams this token may write to; `["*"]` for all.
    pub streams: Vec<String>,
}

/// The admin listener: metrics, health, status, filters.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AdminConfig {
    /// `/metrics`, `/healthz`, `/readyz`, `/v1/status`, `/v1/filters`.
    #[serde(deserialize_with = "crate::net::deserialize_listen")]
    pub listen: SocketAddr,
}

impl Default for AdminConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 9090)),
        }
    }
}

/// Where a consumer starts in a shard it has no checkpoint for.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum InitialPosition {
    /// The oldest record still in the stream: nothing is missed.
    #[default]
    TrimHorizon,
    /// Only records written after the consumer starts.
    Latest,
}

/// Which checkpoint store the consumer uses.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CheckpointStoreKind {
    /// JSON files under `dir` (atomic rename): one consumer host per directory.
    #[default]
    Local,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CheckpointConfig {
    pub store: CheckpointStoreKind,
    /// Directory of the local store (default: `DATA_DIR/checkpoints`).
    pub dir: Option<PathBuf>,
}

/// The consumer: how shards are read and when it gives up on a stop.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ConsumerConfig {
    /// How long a reader that has caught up with its shard waits before
    /// reading again. Kinesis allows 5 reads a second per shard, shared by
    /// every pipeline reading it.
    pub poll_interval_ms: u64,
    /// Most records per read (Kinesis: 1 to 10,000).
    pub max_records: u32,
    /// Most lines per filter job (a batch never splits a stream record).
    pub batch_lines: usize,
    /// Where a pipeline starts in a shard it has no checkpoint for.
    pub initial_position: InitialPosition,
    /// How often the stream's shards are listed, to follow a reshard.
    pub shard_refresh_ms: u64,
    /// On SIGTERM: longest wait for in-flight batches and writes before
    /// the process exits anyway (what was not checkpointed is read again).
    pub shutdown_timeout_ms: u64,
    pub checkpoints: CheckpointConfig,
}

impl Default for ConsumerConfig {
    fn default() -> Self {
        Self {
            poll_interval_ms: 200,
            max_records: 1000,
            batch_lines: 1000,
            initial_position: InitialPosition::TrimHorizon,
            shard_refresh_ms: 5000,
            shutdown_timeout_ms: 10_000,
            checkpoints: CheckpointConfig::default(),
        }
    }
}

/// Every filter module dropped into the filters directory that no
/// `[[pipelines]]` entry names becomes a pipeline of its own (named after
/// the module) over `stream`, writing to `sinks`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AutoPipelines {
    pub stream: String,
    pub sinks: Vec<String>,
    #[serde(default)]
    pub on_error: ErrorPolicy,
    #[serde(default)]
    pub limits: FilterLimits,
}

impl AutoPipelines {
    /// The automatic pipeline of the module `filter` (no params).
    pub fn pipeline_for(&self, filter: &str) -> PipelineConfig {
        PipelineConfig {
            name: filter.to_owned(),
            stream: self.stream.clone(),
            filter: Some(filter.to_owned()),
            params: BTreeMap::new(),
            limits: self.limits,
            on_error: self.on_error,
            sinks: self.sinks.clone(),
            routes: BTreeMap::new(),
            dead_letter: None,
        }
    }
}

/// The filters directory, watched for modules (`NAME.wasm`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FiltersConfig {
    pub dir: PathBuf,
    /// Directory of precompiled modules (default:
    /// `~/.cache/kinesthetic/modules`; `""` for none).
    pub cache_dir: Option<PathBuf>,
    pub auto: Option<AutoPipelines>,
}

impl Default for FiltersConfig {
    fn default() -> Self {
        Self {
            dir: PathBuf::from("filters"),
            cache_dir: None,
            auto: None,
        }
    }
}

/// What a pipeline does with a batch its filter fails on.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ErrorPolicy {
    /// Isolate the poison lines, deliver the rest, and write each poison
    /// line with its error to the dead-letter sink.
    #[default]
    DeadLetter,
    /// Retry the whole batch (with backoff) until it passes, holding the
    /// shard's checkpoint: a new filter version is picked up on a retry.
    Retry,
    /// Isolate the poison lines, deliver the rest, and count and log the
    /// poison lines without keeping them.
    Skip,
}

impl ErrorPolicy {
    /// As the configuration writes it.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorPolicy::DeadLetter => "dead-letter",
            ErrorPolicy::Retry => "retry",
            ErrorPolicy::Skip => "skip",
        }
    }
}

/// Limits of every filter job of a pipeline.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FilterLimits {
    pub memory_mib: u64,
    pub deadline_ms: u64,
    /// A deterministic instruction budget per job (costs 20–30 % of
    /// throughput for every filter of the process).
    pub fuel: Option<u64>,
    /// Time the isolation of one failed batch (bisection with fresh
    /// instances) may take (default: 20 deadlines, at least 1 s); past it
    /// the lines not isolated go to the error policy as failed.
    pub isolation_ms: Option<u64>,
}

impl Default for FilterLimits {
    fn default() -> Self {
        Self {
            memory_mib: 64,
            deadline_ms: 1000,
            fuel: None,
            isolation_ms: None,
        }
    }
}

impl FilterLimits {
    pub fn to_limits(self) -> crate::filter::Limits {
        crate::filter::Limits {
            memory_bytes: self.memory_mib << 20,
            deadline_ms: self.deadline_ms,
            fuel: self.fuel,
            ..crate::filter::Limits::default()
        }
    }

    /// How far isolating a failed batch may go.
    pub fn isolation(self) -> crate::filter::IsolationBudget {
        let b = crate::filter::IsolationBudget::for_limits(&self.to_limits());
        match self.isolation_ms {
            Some(ms) => b.with_time_ms(ms),
            None => b,
        }
    }
}

/// A stream → (filter) → sinks flow, with its own checkpoints.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PipelineConfig {
    pub name: String,
    pub stream: String,
    /// A module in the filters directory (`NAME.wasm`); none: a raw pipeline.
    #[serde(default)]
    pub filter: Option<String>,
    /// Parameters for the filter's `init`.
    #[serde(default)]
    pub params: BTreeMap<String, String>,
    #[serde(default)]
    pub limits: FilterLimits,
    #[serde(default)]
    pub on_error: ErrorPolicy,
    /// Where lines go (those without a route, or with a route not listed).
    pub sinks: Vec<String>,
    /// Lines the filter routed to a name listed here go to these sinks.
    #[serde(default)]
    pub routes: BTreeMap<String, Vec<String>>,
    /// The sink for `on_error = "dead-letter"` (default: a directory sink
    /// in `DATA_DIR/dead-letter`).
    #[serde(default)]
    pub dead_letter: Option<String>,
}

/// What a sink is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SinkKind {
    /// Files on a local disk, laid out like the S3 keys.
    Dir,
    /// An S3 bucket (or a stand-in at `endpoint`).
    S3,
    /// POSTed to a consumer's HTTP endpoint, batch by batch, each with an
    /// `Idempotency-Key`.
    Http,
    /// Written into another stream (the local log or Kinesis), each line
    /// with the partition key its filter set (or its own), its stamp kept.
    Kinesis,
    /// Every shard's lines merged in receive-time order into one stream,
    /// kept in a directory, served on the admin API and pushed to `url`.
    Index,
}

/// How an `http` sink sends a batch.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PushFormat {
    /// The batch's lines as the body (`application/x-ndjson`, compressed
    /// as `compression` says).
    #[default]
    Ndjson,
    /// Amazon Data Firehose's HTTP endpoint delivery request: a JSON
    /// envelope with `requestId`, `timestamp` and base64 `records`.
    Firehose,
}

/// How archive objects are compressed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Compression {
    #[default]
    Gzip,
    Zstd,
    None,
}

impl Compression {
    /// The file name extension the default key template ends in.
    pub fn extension(self) -> &'static str {
        match self {
            Compression::Gzip => ".ndjson.gz",
            Compression::Zstd => ".ndjson.zst",
            Compression::None => ".ndjson",
        }
    }
}

/// A named sink: an archive of time-stamped objects in a directory or S3.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SinkConfig {
    #[serde(rename = "type")]
    pub kind: SinkKind,
    /// dir: the root directory.
    #[serde(default)]
    pub path: Option<PathBuf>,
    /// dir: fsync every object and its directory before it counts as written.
    #[serde(default = "yes")]
    pub fsync: bool,
    /// s3: the bucket.
    #[serde(default)]
    pub bucket: Option<String>,
    /// s3: the region (default: the AWS environment, else us-east-1).
    #[serde(default)]
    pub region: Option<String>,
    /// s3: an endpoint override (a stand-in; also AWS_ENDPOINT_URL_S3).
    #[serde(default)]
    pub endpoint: Option<String>,
    /// s3: objects larger than this go up in parts (multipart upload).
    #[serde(default = "default_multipart")]
    pub multipart_threshold_bytes: u64,
    /// `{prefix}` in the key template; may use `{pipeline}` and `{filter}`.
    #[serde(default)]
    pub prefix: String,
    /// Default: `{prefix}/{stream}/{yyyy}/{MM}/{dd}/{HH}/{stream}-{shard}-{first_seq}-{last_seq}`
    /// and the compression's extension (`.ndjson.gz`).
    #[serde(default)]
    pub key_template: Option<String>,
    /// `gzip` (default), `zstd` or `none` (the default for http).
    #[serde(default)]
    pub compression: Option<Compression>,
    /// An object (a batch, for http) is closed before it would grow past
    /// this many bytes of lines. Default 64 MiB; 1 MiB for http.
    #[serde(default)]
    pub max_bytes: Option<u64>,
    /// An object holds records that reached the stream within this long of
    /// its first one. Default 60 s; 100 ms for http.
    #[serde(default)]
    pub max_age_ms: Option<u64>,
    /// Longest wait between two attempts of a failing write (writes are
    /// retried until they succeed, holding the checkpoint).
    #[serde(default = "default_retry_max")]
    pub retry_max_ms: u64,
    /// http: the consumer's endpoint (`http://` or `https://`).
    #[serde(default)]
    pub url: Option<String>,
    /// http: `ndjson` (default) or `firehose`.
    #[serde(default)]
    pub format: PushFormat,
    /// http: the header that carries `auth_value` or `$auth_env`
    /// (default `Authorization`; `X-Amz-Firehose-Access-Key` for firehose).
    #[serde(default)]
    pub auth_header: Option<String>,
    /// http: the header's value (prefer `auth_env`: it stays out of files).
    #[serde(default)]
    pub auth_value: Option<String>,
    /// http: the environment variable holding the header's value.
    #[serde(default)]
    pub auth_env: Option<String>,
    /// http: one POST's deadline.
    #[serde(default = "default_push_timeout")]
    pub timeout_ms: u64,
    /// http: how long a batch is retried (connection errors, timeouts,
    /// 408, 429, 5xx) before it goes to the dead-letter sink.
    #[serde(default = "default_retry_budget")]
    pub retry_budget_ms: u64,
    /// http: POSTs in flight at most, over all shards (a shard's next
    /// batch always waits for its previous one).
    #[serde(default = "default_in_flight")]
    pub max_in_flight: usize,
    /// kinesis: the stream the lines are written into (on the same backend
    /// as the one read).
    #[serde(default)]
    pub stream: Option<String>,
    /// index: how long a shard that has staged nothing holds the merge
    /// back (default 1000 ms); then its lines, if any come, are late.
    #[serde(default)]
    pub idle_grace_ms: Option<u64>,
    /// index: bytes of pending lines held in memory across the shards
    /// (default 16 MiB); the rest waits in the staging files.
    #[serde(default)]
    pub memory_bytes: Option<u64>,
}

fn default_push_timeout() -> u64 {
    10_000
}
fn default_retry_budget() -> u64 {
    3_600_000
}
fn default_in_flight() -> usize {
    16
}

fn yes() -> bool {
    true
}
fn default_multipart() -> u64 {
    16 << 20
}
fn default_max_bytes() -> u64 {
    64 << 20
}
fn default_max_age() -> u64 {
    60_000
}
fn default_retry_max() -> u64 {
    30_000
}

impl SinkConfig {
    /// A directory sink with the defaults.
    pub fn dir(path: impl Into<PathBuf>) -> Self {
        Self {
            kind: SinkKind::Dir,
            path: Some(path.into()),
            fsync: true,
            bucket: None,
            region: None,
            endpoint: None,
            multipart_threshold_bytes: default_multipart(),
            prefix: String::new(),
            key_template: None,
            compression: None,
            max_bytes: None,
            max_age_ms: None,
            retry_max_ms: default_retry_max(),
            url: None,
            format: PushFormat::Ndjson,
            auth_header: None,
            auth_value: None,
            auth_env: None,
            timeout_ms: default_push_timeout(),
            retry_budget_ms: default_retry_budget(),
            max_in_flight: default_in_flight(),
            stream: None,
            idle_grace_ms: None,
            memory_bytes: None,
        }
    }

    /// An index sink in `dir` with the defaults (no push).
    pub fn index(dir: impl Into<PathBuf>) -> Self {
        let mut c = Self::dir(dir);
        c.kind = SinkKind::Index;
        c
    }

    /// See the field.
    pub fn idle_grace_ms(&self) -> u64 {
        self.idle_grace_ms.unwrap_or(1_000)
    }

    /// See the field.
    pub fn memory_bytes(&self) -> u64 {
        self.memory_bytes.unwrap_or(16 << 20)
    }

    /// An http push sink to `url` with the defaults: batches of at most
    /// 1 MiB or 100 ms of records, uncompressed.
    pub fn http(url: impl Into<String>) -> Self {
        let mut c = Self::dir("unused");
        c.kind = SinkKind::Http;
        c.path = None;
        c.url = Some(url.into());
        c
    }

    /// A sink re-keying lines into `stream`, with the defaults: batches of
    /// at most 4 MiB or 500 ms of records.
    pub fn kinesis(stream: impl Into<String>) -> Self {
        let mut c = Self::dir("unused");
        c.kind = SinkKind::Kinesis;
        c.path = None;
        c.stream = Some(stream.into());
        c
    }

    /// See the field: the kind's default unless set.
    pub fn compression(&self) -> Compression {
        self.compression.unwrap_or(match self.kind {
            SinkKind::Http | SinkKind::Kinesis | SinkKind::Index => Compression::None,
            _ => Compression::Gzip,
        })
    }

    /// See the field: the kind's default unless set.
    pub fn max_bytes(&self) -> u64 {
        self.max_bytes.unwrap_or(match self.kind {
            SinkKind::Http | SinkKind::Index => 1 << 20,
            // Enough events that each target shard's records are packed
            // full (≈ 1,000 events of 200 B per shard of 4).
            SinkKind::Kinesis => 4 << 20,
            _ => default_max_bytes(),
        })
    }

    /// See the field: the kind's default unless set.
    pub fn max_age_ms(&self) -> u64 {
        self.max_age_ms.unwrap_or(match self.kind {
            SinkKind::Http | SinkKind::Index => 100,
            SinkKind::Kinesis => 500,
            _ => default_max_age(),
        })
    }

    /// The key template in force.
    pub fn template(&self) -> String {
        self.key_template.clone().unwrap_or_else(|| {
            format!(
                "{{prefix}}/{{stream}}/{{yyyy}}/{{MM}}/{{dd}}/{{HH}}/{{stream}}-{{shard}}-{{first_seq}}-{{last_seq}}{}",
                self.compression().extension()
            )
        })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {error}")]
    Read { path: String, error: std::io::Error },
    #[error("{path}: {message}")]
    Parse { path: String, message: String },
    #[error("{path}: {key}: {message}")]
    Invalid {
        path: String,
        key: String,
        message: String,
    },
}

impl Config {
    /// Reads and validates a configuration file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|error| ConfigError::Read {
            path: path.display().to_string(),
            error,
        })?;
        Self::parse(&text, &path.display().to_string())
    }

    /// Parses and validates a configuration text; `origin` names it in errors.
    pub fn parse(text: &str, origin: &str) -> Result<Config, ConfigError> {
        let c: Config = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: origin.to_owned(),
            message: plain_types(&e.to_string()),
        })?;
        c.validate(origin)?;
        Ok(c)
    }

    pub fn validate(&self, origin: &str) -> Result<(), ConfigError> {
        let bad = |key: &str, message: String| ConfigError::Invalid {
            path: origin.to_owned(),
            key: key.to_owned(),
            message,
        };
        if self.stream.segment_bytes < 4096 {
            return Err(bad(
                "stream.segment_bytes",
                format!("{} is too small (at least 4096)", self.stream.segment_bytes),
            ));
        }
        if self.stream.retention_hours == 0 {
            return Err(bad("stream.retention_hours", "must be at least 1".into()));
        }
        if let Some(ms) = self.stream.kinesis.attempt_timeout_ms
            && !(100..=600_000).contains(&ms)
        {
            return Err(bad(
                "stream.kinesis.attempt_timeout_ms",
                format!("{ms}: expected 100 to 600000 (milliseconds)"),
            ));
        }
        let i = &self.intake;
        if let Some(id) = &i.listener_id {
            let n = parse_listener_id(id).map_err(|m| bad("intake.listener_id", m))?;
            if n == crate::event::UNSTAMPED_LISTENER {
                return Err(bad(
                    "intake.listener_id",
                    "0 is reserved for events no intake stamped (records of other producers)"
                        .into(),
                ));
            }
        }
        // Kinesis counts a record's partition key toward its 1 MiB, and a
        // record's key is its first event's (up to 256 characters, 4 bytes
        // each in UTF-8): above this, a full record with a long key is
        // refused; below the floor, no event with a long key fits at all.
        let key_room = crate::stream::kpl::MAX_KEY_CHARS * 4;
        let most = crate::stream::limits::RECORD_MAX_BYTES - key_room;
        if !(4096..=most).contains(&i.record_max_bytes) {
            return Err(bad(
                "intake.record_max_bytes",
                format!(
                    "{} is outside 4096..={most}: Kinesis takes {} bytes per record, its \
                     partition key included, and {key_room} are kept for a key of 256 characters",
                    i.record_max_bytes,
                    crate::stream::limits::RECORD_MAX_BYTES
                ),
            ));
        }
        if i.max_body_bytes == 0 {
            return Err(bad(
                "intake.max_body_bytes",
                "0 would refuse every request: give the largest body to accept, in bytes \
                 (default 16777216, 16 MiB)"
                    .into(),
            ));
        }
        if i.max_decoded_bytes < i.max_body_bytes {
            return Err(bad(
                "intake.max_decoded_bytes",
                format!("must be at least max_body_bytes ({})", i.max_body_bytes),
            ));
        }
        if i.max_events_per_request == 0 {
            return Err(bad(
                "intake.max_events_per_request",
                "must be at least 1".into(),
            ));
        }
        let largest = i.max_decoded_bytes.saturating_add(
            i.max_events_per_request
                .saturating_mul(crate::intake::server::EVENT_OVERHEAD_BYTES),
        );
        // In the budget's own units: it counts whole KiB, rounding a
        // request up and the buffer down.
        let unit = crate::intake::producer::BUDGET_UNIT;
        if i.buffer_bytes / unit < largest.div_ceil(unit) {
            return Err(bad(
                "intake.buffer_bytes",
                format!(
                    "{} cannot hold one request of max_decoded_bytes ({}) with \
                     max_events_per_request ({}) events of {} bytes of bookkeeping each ({largest})",
                    i.buffer_bytes,
                    i.max_decoded_bytes,
                    i.max_events_per_request,
                    crate::intake::server::EVENT_OVERHEAD_BYTES
                ),
            ));
        }
        if i.linger_ms > MAX_LINGER_MS {
            return Err(bad(
                "intake.linger_ms",
                format!(
                    "{} ms: at most {MAX_LINGER_MS} (a write cycle waits this long for requests still being decoded)",
                    i.linger_ms
                ),
            ));
        }
        for (key, ms) in [
            ("intake.body_timeout_ms", i.body_timeout_ms),
            ("intake.header_timeout_ms", i.header_timeout_ms),
        ] {
            if !(100..=3_600_000).contains(&ms) {
                return Err(bad(
                    key,
                    format!(
                        "{ms}: expected 100 to 3600000 (milliseconds; a slow client holds its memory this long)"
                    ),
                ));
            }
        }
        if !(1..=1_000_000).contains(&i.max_connections) {
            return Err(bad(
                "intake.max_connections",
                format!(
                    "{}: expected 1 to 1000000 (keep it under the process's open-file limit, `ulimit -n`)",
                    i.max_connections
                ),
            ));
        }
        for (n, t) in i.tokens.iter().enumerate() {
            let key = format!("intake.tokens[{n}].token");
            if t.token.chars().count() < 16 {
                return Err(bad(&key, "tokens must be at least 16 characters".into()));
            }
            // What a client can present in `Authorization: Bearer …`.
            if let Some(c) = t.token.chars().find(|c| !c.is_ascii_graphic()) {
                return Err(bad(
                    &key,
                    format!(
                        "{c:?} cannot be sent in an Authorization header: use visible ASCII \
                         without spaces"
                    ),
                ));
            }
            if let Some(m) = i.tokens[..n].iter().position(|o| o.token == t.token) {
                return Err(bad(&key, format!("the same token as intake.tokens[{m}]")));
            }
            if t.streams.is_empty() {
                return Err(bad(
                    &format!("intake.tokens[{n}].streams"),
                    "list the streams this token may write to, or [\"*\"]".into(),
                ));
            }
            for s in &t.streams {
                if s != "*" && !crate::stream::name::is_valid(s) {
                    return Err(bad(
                        &format!("intake.tokens[{n}].streams"),
                        format!(
                            "{s:?} is not a stream name ({}), nor \"*\" for all",
                            crate::stream::name::RULE
                        ),
                    ));
                }
            }
        }
        for (name, s) in &self.streams {
            crate::stream::name::check(name).map_err(|m| bad(&format!("streams.{name}"), m))?;
            if s.partition_key_field.as_deref() == Some("") {
                return Err(bad(
                    &format!("streams.{name}.partition_key_field"),
                    "must not be empty".into(),
                ));
            }
            if let Some(n) = s.shards
                && !(1..=crate::stream::local::MAX_SHARDS).contains(&n)
            {
                return Err(bad(
                    &format!("streams.{name}.shards"),
                    format!(
                        "{n}: a stream has 1 to {} shards",
                        crate::stream::local::MAX_SHARDS
                    ),
                ));
            }
        }
        self.validate_consumer(origin)
    }

    fn validate_consumer(&self, origin: &str) -> Result<(), ConfigError> {
        let bad = |key: &str, message: String| ConfigError::Invalid {
            path: origin.to_owned(),
            key: key.to_owned(),
            message,
        };
        let c = &self.consumer;
        if !(10..=60_000).contains(&c.poll_interval_ms) {
            return Err(bad(
                "consumer.poll_interval_ms",
                format!("{} ms: expected 10 to 60000", c.poll_interval_ms),
            ));
        }
        if !(1..=10_000).contains(&c.max_records) {
            return Err(bad(
                "consumer.max_records",
                format!(
                    "{}: expected 1 to 10000 (Kinesis's limit per read)",
                    c.max_records
                ),
            ));
        }
        if !(1..=1_000_000).contains(&c.batch_lines) {
            return Err(bad(
                "consumer.batch_lines",
                format!("{}: expected 1 to 1000000", c.batch_lines),
            ));
        }
        if c.shard_refresh_ms < 100 {
            return Err(bad(
                "consumer.shard_refresh_ms",
                format!("{} ms: at least 100", c.shard_refresh_ms),
            ));
        }
        if c.shutdown_timeout_ms == 0 {
            return Err(bad(
                "consumer.shutdown_timeout_ms",
                "must be at least 1 ms".into(),
            ));
        }
        for (name, k) in &self.sinks {
            let key = |f: &str| format!("sinks.{name}.{f}");
            if !is_name(name) {
                return Err(bad(
                    &format!("sinks.{name}"),
                    format!("{name:?} is not a sink name (1 to 64 of A-Z a-z 0-9 _ . -)"),
                ));
            }
            if k.kind != SinkKind::Kinesis && k.stream.is_some() {
                return Err(bad(&key("stream"), "only for type = \"kinesis\"".into()));
            }
            if k.kind != SinkKind::Index {
                for (f, set) in [
                    ("idle_grace_ms", k.idle_grace_ms.is_some()),
                    ("memory_bytes", k.memory_bytes.is_some()),
                ] {
                    if set {
                        return Err(bad(&key(f), "only for type = \"index\"".into()));
                    }
                }
            }
            if !matches!(k.kind, SinkKind::Http | SinkKind::Index) {
                for (f, set) in [
                    ("url", k.url.is_some()),
                    ("auth_header", k.auth_header.is_some()),
                    ("auth_value", k.auth_value.is_some()),
                    ("auth_env", k.auth_env.is_some()),
                ] {
                    if set {
                        return Err(bad(&key(f), "only for type = \"http\"".into()));
                    }
                }
            }
            match k.kind {
                SinkKind::Dir => {
                    if k.path.as_ref().is_none_or(|p| p.as_os_str().is_empty()) {
                        return Err(bad(&key("path"), "a dir sink needs a path".into()));
                    }
                    for (f, set) in [
                        ("bucket", k.bucket.is_some()),
                        ("region", k.region.is_some()),
                        ("endpoint", k.endpoint.is_some()),
                    ] {
                        if set {
                            return Err(bad(&key(f), "only for type = \"s3\"".into()));
                        }
                    }
                }
                SinkKind::Http => {
                    let url = k.url.as_deref().unwrap_or("");
                    if !(url.starts_with("http://") || url.starts_with("https://"))
                        || reqwest::Url::parse(url).is_err()
                    {
                        return Err(bad(
                            &key("url"),
                            format!("{url:?}: an http sink needs a url, http:// or https://"),
                        ));
                    }
                    for (f, set) in [
                        ("path", k.path.is_some()),
                        ("bucket", k.bucket.is_some()),
                        ("region", k.region.is_some()),
                        ("endpoint", k.endpoint.is_some()),
                    ] {
                        if set {
                            return Err(bad(&key(f), "not for type = \"http\"".into()));
                        }
                    }
                    if k.auth_value.is_some() && k.auth_env.is_some() {
                        return Err(bad(
                            &key("auth_env"),
                            "give auth_value or auth_env, not both".into(),
                        ));
                    }
                    if k.format == PushFormat::Firehose && k.compression() != Compression::None {
                        return Err(bad(
                            &key("compression"),
                            "format = \"firehose\" sends JSON: set compression = \"none\"".into(),
                        ));
                    }
                    if !(100..=600_000).contains(&k.timeout_ms) {
                        return Err(bad(
                            &key("timeout_ms"),
                            format!("{}: expected 100 to 600000 (milliseconds)", k.timeout_ms),
                        ));
                    }
                    if k.max_in_flight == 0 {
                        return Err(bad(&key("max_in_flight"), "at least 1".into()));
                    }
                }
                SinkKind::Index => {
                    if let Some(url) = k.url.as_deref()
                        && (!(url.starts_with("http://") || url.starts_with("https://"))
                            || reqwest::Url::parse(url).is_err())
                    {
                        return Err(bad(
                            &key("url"),
                            format!("{url:?}: the index pushes to an http:// or https:// url"),
                        ));
                    }
                    for (f, set) in [
                        ("bucket", k.bucket.is_some()),
                        ("region", k.region.is_some()),
                        ("endpoint", k.endpoint.is_some()),
                        ("key_template", k.key_template.is_some()),
                    ] {
                        if set {
                            return Err(bad(&key(f), "not for type = \"index\"".into()));
                        }
                    }
                    if k.compression() != Compression::None {
                        return Err(bad(
                            &key("compression"),
                            "an index keeps lines uncompressed: leave compression out".into(),
                        ));
                    }
                    if !(0..=600_000).contains(&k.idle_grace_ms()) {
                        return Err(bad(
                            &key("idle_grace_ms"),
                            format!("{}: expected 0 to 600000 (milliseconds)", k.idle_grace_ms()),
                        ));
                    }
                    if k.memory_bytes() < 1 << 20 {
                        return Err(bad(
                            &key("memory_bytes"),
                            format!("{}: at least 1048576 (1 MiB)", k.memory_bytes()),
                        ));
                    }
                }
                SinkKind::Kinesis => {
                    match k.stream.as_deref() {
                        None => {
                            return Err(bad(
                                &key("stream"),
                                "a kinesis sink needs the stream to write into".into(),
                            ));
                        }
                        Some(s) => {
                            crate::stream::name::check(s).map_err(|m| bad(&key("stream"), m))?;
                        }
                    }
                    for (f, set) in [
                        ("path", k.path.is_some()),
                        ("bucket", k.bucket.is_some()),
                        ("region", k.region.is_some()),
                        ("endpoint", k.endpoint.is_some()),
                        ("key_template", k.key_template.is_some()),
                    ] {
                        if set {
                            return Err(bad(&key(f), "not for type = \"kinesis\"".into()));
                        }
                    }
                    if k.compression() != Compression::None {
                        return Err(bad(
                            &key("compression"),
                            "a kinesis sink writes records, not files: leave compression out"
                                .into(),
                        ));
                    }
                }
                SinkKind::S3 => {
                    match k.bucket.as_deref() {
                        None | Some("") => {
                            return Err(bad(&key("bucket"), "an s3 sink needs a bucket".into()));
                        }
                        Some(b) if !is_bucket_name(b) => {
                            return Err(bad(
                                &key("bucket"),
                                format!("{b:?} is not an S3 bucket name (3 to 63 of a-z 0-9 . -)"),
                            ));
                        }
                        Some(_) => {}
                    }
                    if k.path.is_some() {
                        return Err(bad(&key("path"), "only for type = \"dir\"".into()));
                    }
                    if k.multipart_threshold_bytes < 5 << 20 {
                        return Err(bad(
                            &key("multipart_threshold_bytes"),
                            format!(
                                "{}: at least 5242880 (S3's smallest part)",
                                k.multipart_threshold_bytes
                            ),
                        ));
                    }
                }
            }
            let template = k.template();
            crate::sink::util::template::KeyTemplate::parse(&template)
                .map_err(|m| bad(&key("key_template"), m))?;
            if k.key_template.is_some() {
                let ext = k.compression().extension();
                let ends_like = [".gz", ".zst", ".ndjson"]
                    .iter()
                    .find(|e| template.ends_with(*e));
                if let Some(e) = ends_like
                    && !ext.ends_with(e)
                {
                    return Err(bad(
                        &key("key_template"),
                        format!(
                            "ends in {e:?} but compression is {:?}: end it in {ext:?}",
                            k.compression()
                        ),
                    ));
                }
            }
            if k.max_bytes() < 1024 || k.max_bytes() > 5 << 30 {
                return Err(bad(
                    &key("max_bytes"),
                    format!("{}: expected 1024 to 5 GiB", k.max_bytes()),
                ));
            }
            // An http batch is held in memory uncompressed until it is sent.
            if matches!(k.kind, SinkKind::Http | SinkKind::Kinesis | SinkKind::Index)
                && k.max_bytes() > 64 << 20
            {
                return Err(bad(
                    &key("max_bytes"),
                    format!(
                        "{}: at most 64 MiB for an http or kinesis sink (a batch is held in memory)",
                        k.max_bytes()
                    ),
                ));
            }
            if !(10..=86_400_000).contains(&k.max_age_ms()) {
                return Err(bad(
                    &key("max_age_ms"),
                    format!("{} ms: expected 10 to 86400000 (a day)", k.max_age_ms()),
                ));
            }
            if k.retry_max_ms < 100 {
                return Err(bad(&key("retry_max_ms"), "at least 100 ms".into()));
            }
            if let Some(bad_char) = k.prefix.chars().find(|c| c.is_control()) {
                return Err(bad(
                    &key("prefix"),
                    format!("{bad_char:?} cannot be part of a key"),
                ));
            }
        }
        let sink_exists = |key: String, name: &str| {
            if self.sinks.contains_key(name) {
                Ok(())
            } else {
                let known: Vec<&str> = self.sinks.keys().map(String::as_str).collect();
                Err(bad(
                    &key,
                    format!(
                        "names sink {name:?}, which is not defined (defined: {})",
                        if known.is_empty() {
                            "none; add a [sinks.NAME] section".to_owned()
                        } else {
                            known.join(", ")
                        }
                    ),
                ))
            }
        };
        for (i, p) in self.pipelines.iter().enumerate() {
            let key = |f: &str| format!("pipelines[{i}].{f}");
            if !is_name(&p.name) {
                return Err(bad(
                    &key("name"),
                    format!(
                        "{:?} is not a pipeline name (1 to 64 of A-Z a-z 0-9 _ . -)",
                        p.name
                    ),
                ));
            }
            if let Some(j) = self.pipelines[..i].iter().position(|o| o.name == p.name) {
                return Err(bad(
                    &key("name"),
                    format!("{:?} is also the name of pipelines[{j}]", p.name),
                ));
            }
            crate::stream::name::check(&p.stream).map_err(|m| bad(&key("stream"), m))?;
            if let Some(f) = &p.filter
                && !is_name(f)
            {
                return Err(bad(
                    &key("filter"),
                    format!(
                        "{f:?} is not a filter name: the file stem of a module in the filters \
                         directory (1 to 64 of A-Z a-z 0-9 _ . -), without .wasm"
                    ),
                ));
            }
            if p.filter.is_none() && !p.params.is_empty() {
                return Err(bad(
                    &key("params"),
                    "a pipeline without a filter takes no params".into(),
                ));
            }
            if p.sinks.is_empty() {
                return Err(bad(&key("sinks"), "name at least one sink".into()));
            }
            for s in &p.sinks {
                sink_exists(key("sinks"), s)?;
            }
            for (route, sinks) in &p.routes {
                if let Err(e) = kinesthetic_filter::rules::check_route(route) {
                    return Err(bad(&key("routes"), format!("route name {route:?} {e}")));
                }
                for s in sinks {
                    sink_exists(key(&format!("routes.{route}")), s)?;
                }
            }
            if let Some(d) = &p.dead_letter {
                sink_exists(key("dead_letter"), d)?;
                if let Some(k) = self.sinks.get(d)
                    && matches!(k.kind, SinkKind::Http | SinkKind::Kinesis | SinkKind::Index)
                {
                    return Err(bad(
                        &key("dead_letter"),
                        format!(
                            "{d:?} is {} sink: a dead-letter sink keeps what could not be delivered; use a dir or s3 sink",
                            if k.kind == SinkKind::Http {
                                "an http"
                            } else {
                                "a kinesis"
                            }
                        ),
                    ));
                }
            }
            // Writing into the stream read would read its own output.
            let mine = p.sinks.iter().chain(p.routes.values().flatten());
            for s in mine {
                if let Some(k) = self.sinks.get(s)
                    && k.kind == SinkKind::Kinesis
                    && k.stream.as_deref() == Some(p.stream.as_str())
                {
                    return Err(bad(
                        &key("sinks"),
                        format!(
                            "sink {s:?} writes into stream {:?}, which this pipeline reads: every line would come back to it; write into another stream",
                            p.stream
                        ),
                    ));
                }
            }
            validate_limits(&p.limits).map_err(|(f, m)| bad(&key(&format!("limits.{f}")), m))?;
        }
        // Two pipelines writing one sink must not write the same keys: the
        // keys are made of the stream, shard and sequence range, which they
        // share when they read one stream.
        let mut users: BTreeMap<&str, Vec<String>> = BTreeMap::new();
        for p in &self.pipelines {
            let mut mine: Vec<&str> = p.sinks.iter().map(String::as_str).collect();
            mine.extend(p.routes.values().flatten().map(String::as_str));
            if p.on_error == ErrorPolicy::DeadLetter {
                mine.push(p.dead_letter.as_deref().unwrap_or("dead-letter"));
            }
            mine.sort_unstable();
            mine.dedup();
            for s in mine {
                users
                    .entry(s)
                    .or_default()
                    .push(format!("pipelines {:?}", p.name));
            }
        }
        if let Some(a) = &self.filters.auto {
            for s in &a.sinks {
                users
                    .entry(s.as_str())
                    .or_default()
                    .extend(std::iter::repeat_n("the automatic pipelines".to_owned(), 2));
            }
        }
        for (sink, who) in &users {
            let Some(k) = self.sinks.get(*sink) else {
                continue;
            };
            // An http batch's idempotency key names its pipeline already.
            if k.kind == SinkKind::Index && who.len() > 1 {
                return Err(bad(
                    &format!("sinks.{sink}"),
                    format!(
                        "an index merges the shards of one pipeline; {} write to it: give each its own index",
                        who.join(" and ")
                    ),
                ));
            }
            // A kinesis sink writes records, not keys.
            if who.len() < 2
                || matches!(k.kind, SinkKind::Http | SinkKind::Kinesis | SinkKind::Index)
            {
                continue;
            }
            let text = format!("{}{}", k.prefix, k.template());
            let distinct = text.contains("{pipeline}")
                || (text.contains("{filter}") && {
                    let labels: Vec<&str> = self
                        .pipelines
                        .iter()
                        .filter(|p| who.contains(&format!("pipelines {:?}", p.name)))
                        .map(|p| p.filter.as_deref().unwrap_or("raw"))
                        .collect();
                    let mut d = labels.clone();
                    d.sort_unstable();
                    d.dedup();
                    d.len() == labels.len()
                });
            if !distinct {
                let mut names = who.clone();
                names.dedup();
                return Err(bad(
                    &format!("sinks.{sink}"),
                    format!(
                        "is written by {}: their objects would get the same keys and overwrite \
                         each other; put {{pipeline}} in its prefix or key_template",
                        names.join(" and ")
                    ),
                ));
            }
        }
        if let Some(a) = &self.filters.auto {
            crate::stream::name::check(&a.stream).map_err(|m| bad("filters.auto.stream", m))?;
            if a.sinks.is_empty() {
                return Err(bad("filters.auto.sinks", "name at least one sink".into()));
            }
            for s in &a.sinks {
                sink_exists("filters.auto.sinks".to_owned(), s)?;
            }
            validate_limits(&a.limits)
                .map_err(|(f, m)| bad(&format!("filters.auto.limits.{f}"), m))?;
        }
        Ok(())
    }

    /// What `kinesthetic serve` runs with no configuration file: the local
    /// log in `data_dir` with a stream `events` of 4 shards, a raw archive
    /// of every batch under `data_dir/archive/raw`, and every module dropped
    /// into `./filters` a pipeline over `events` writing to
    /// `data_dir/archive/filtered/FILTER/`.
    pub fn embedded(data_dir: &Path) -> Config {
        let mut c = Config::default();
        c.stream.data_dir = data_dir.to_owned();
        c.streams.insert(
            EMBEDDED_STREAM.to_owned(),
            StreamSettings {
                shards: Some(4),
                ..StreamSettings::default()
            },
        );
        let archive = data_dir.join("archive");
        let mut raw = SinkConfig::dir(archive.join("raw"));
        raw.max_age_ms = Some(EMBEDDED_MAX_AGE_MS);
        let mut filtered = SinkConfig::dir(archive.join("filtered"));
        filtered.prefix = "{filter}".to_owned();
        filtered.max_age_ms = Some(EMBEDDED_MAX_AGE_MS);
        c.sinks.insert("raw".to_owned(), raw);
        c.sinks.insert("filtered".to_owned(), filtered);
        c.pipelines.push(PipelineConfig {
            name: "raw".to_owned(),
            stream: EMBEDDED_STREAM.to_owned(),
            filter: None,
            params: BTreeMap::new(),
            limits: FilterLimits::default(),
            on_error: ErrorPolicy::default(),
            sinks: vec!["raw".to_owned()],
            routes: BTreeMap::new(),
            dead_letter: None,
        });
        c.filters.auto = Some(AutoPipelines {
            stream: EMBEDDED_STREAM.to_owned(),
            sinks: vec!["filtered".to_owned()],
            on_error: ErrorPolicy::default(),
            limits: FilterLimits::default(),
        });
        c
    }

    /// The checkpoint directory of the local store.
    pub fn checkpoint_dir(&self) -> PathBuf {
        self.consumer
            .checkpoints
            .dir
            .clone()
            .unwrap_or_else(|| self.stream.data_dir.join("checkpoints"))
    }
}

/// The stream of the embedded default.
pub const EMBEDDED_STREAM: &str = "events";

/// The embedded default's archives close an object every 5 s (a config
/// file's default is 60 s).
pub const EMBEDDED_MAX_AGE_MS: u64 = 5_000;

impl FilterLimits {
    /// The rule for limits, whoever gives them (a pipeline's config, or
    /// `filter run/test/bench`): `Err((key, message))`.
    pub fn check(&self) -> Result<(), (&'static str, String)> {
        validate_limits(self)
    }
}

fn validate_limits(l: &FilterLimits) -> Result<(), (&'static str, String)> {
    if !(1..=4096).contains(&l.memory_mib) {
        return Err((
            "memory_mib",
            format!(
                "{}: expected 1 to 4096 (a Wasm memory is at most 4 GiB)",
                l.memory_mib
            ),
        ));
    }
    if !(1..=600_000).contains(&l.deadline_ms) {
        return Err((
            "deadline_ms",
            format!("{}: expected 1 to 600000", l.deadline_ms),
        ));
    }
    if l.fuel == Some(0) {
        return Err(("fuel", "must be at least 1 (or left out)".into()));
    }
    if let Some(ms) = l.isolation_ms
        && !(1..=3_600_000).contains(&ms)
    {
        return Err((
            "isolation_ms",
            format!("{ms}: expected 1 to 3600000 (or left out for 20 deadlines)"),
        ));
    }
    Ok(())
}

/// Sink, pipeline and filter names: they become file and metric names.
pub fn is_name(s: &str) -> bool {
    (1..=64).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
        && !s.starts_with('.')
}

/// S3's bucket naming rule (the common subset).
fn is_bucket_name(s: &str) -> bool {
    (3..=63).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'.' | b'-'))
        && s.starts_with(|c: char| c.is_ascii_alphanumeric())
        && s.ends_with(|c: char| c.is_ascii_alphanumeric())
}

/// Longest `intake.linger_ms`.
const MAX_LINGER_MS: u64 = 10_000;

/// Serde names Rust types in its messages ("expected usize"); a config's
/// reader wants what to write instead.
fn plain_types(message: &str) -> String {
    let mut m = message.to_owned();
    for (rust, plain) in [
        (
            "expected usize",
            "expected a whole number, 0 or more (e.g. 1048576)",
        ),
        (
            "expected u64",
            "expected a whole number, 0 or more (e.g. 1048576)",
        ),
        (
            "expected u32",
            "expected a whole number from 0 to 4294967295",
        ),
        ("expected u16", "expected a whole number from 0 to 65535"),
        ("expected u8", "expected a whole number from 0 to 255"),
        ("expected i64", "expected a whole number"),
        ("expected f64", "expected a number"),
        ("expected a boolean", "expected true or false"),
    ] {
        m = m.replace(rust, plain);
    }
    m
}

/// Parses a listener id: decimal, or hex with a `0x` prefix.
pub fn parse_listener_id(s: &str) -> Result<u64, String> {
    let r = match s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
        Some(hex) => u64::from_str_radix(hex, 16),
        None => s.parse(),
    };
    r.map_err(|_| format!("{s:?} is not a 64-bit number (decimal, or hex with 0x)"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_typos_are_named() {
        assert!(Config::parse("", "t.toml").is_ok());
        let e = Config::parse("[intake]\nlisten_addr = \"1.2.3.4:1\"\n", "t.toml")
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(e.contains("t.toml") && e.contains("listen_addr"), "{e}");
        let e = Config::parse("[intake]\nrecord_max_bytes = 2000000\n", "t.toml")
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(e.contains("intake.record_max_bytes"), "{e}");
        let e = Config::parse("[intake]\nlistener_id = \"zz\"\n", "t.toml")
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(e.contains("intake.listener_id") && e.contains("zz"), "{e}");
        let e = Config::parse("[stream]\nbackend = \"s3\"\n", "t.toml")
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(e.contains("s3"), "{e}");
    }

    #[test]
    fn the_example_file_is_valid_and_says_the_defaults() {
        let text = include_str!("../../kinesthetic.example.toml");
        let c = Config::parse(text, "kinesthetic.example.toml").unwrap_or_else(|e| panic!("{e}"));
        let d = Config::default();
        assert_eq!(c.intake.record_max_bytes, d.intake.record_max_bytes);
        assert_eq!(c.intake.max_body_bytes, d.intake.max_body_bytes);
        assert_eq!(c.intake.buffer_bytes, d.intake.buffer_bytes);
        assert_eq!(c.intake.linger_ms, d.intake.linger_ms);
        assert_eq!(c.intake.spool_max_bytes, d.intake.spool_max_bytes);
        assert_eq!(c.stream.segment_bytes, d.stream.segment_bytes);
        assert_eq!(c.stream.retention_hours, d.stream.retention_hours);
        assert_eq!(c.intake.listen, d.intake.listen);
        assert_eq!(c.admin, d.admin);
        assert_eq!(c.consumer, d.consumer);
        assert_eq!(c.filters, d.filters);
        // The embedded default, as the file writes it out, is what `serve`
        // runs with no file.
        let block = text
            .split("# The embedded default, written out:\n")
            .nth(1)
            .unwrap_or_default();
        let uncommented: String = block
            .lines()
            .map(|l| l.strip_prefix("# ").unwrap_or(l))
            .map(|l| format!("{l}\n"))
            .collect();
        let e = Config::parse(&uncommented, "the embedded block").unwrap_or_else(|e| panic!("{e}"));
        let want = Config::embedded(std::path::Path::new("kinesthetic-data"));
        assert_eq!(e.sinks, want.sinks);
        assert_eq!(e.pipelines, want.pipelines);
        assert_eq!(e.filters.auto, want.filters.auto);
        assert_eq!(e.streams, want.streams);
    }

    #[test]
    fn pipelines_and_sinks_are_checked() {
        let sinks = "[sinks.a]\ntype = \"dir\"\npath = \"/tmp/x\"\n";
        let ok = format!("{sinks}[[pipelines]]\nname = \"p\"\nstream = \"s\"\nsinks = [\"a\"]\n");
        assert!(Config::parse(&ok, "t.toml").is_ok());
        let cases: &[(&str, &[&str])] = &[
            (
                "[[pipelines]]\nname = \"p\"\nstream = \"s\"\nsinks = [\"nope\"]\n",
                &["pipelines[0].sinks", "\"nope\"", "not defined"],
            ),
            (
                "[[pipelines]]\nname = \"p\"\nstream = \"s\"\nsinks = [\"a\"]\n\
                 [[pipelines]]\nname = \"p\"\nstream = \"s\"\nsinks = [\"a\"]\n",
                &["pipelines[1].name", "pipelines[0]"],
            ),
            (
                "[[pipelines]]\nname = \"p\"\nstream = \"s\"\nsinks = []\n",
                &["pipelines[0].sinks", "at least one"],
            ),
            (
                "[[pipelines]]\nname = \"p\"\nstream = \"s\"\nsinks = [\"a\"]\nfilter = \"x.wasm/\"\n",
                &["pipelines[0].filter", "without .wasm"],
            ),
            (
                "[[pipelines]]\nname = \"p\"\nstream = \"s\"\nsinks = [\"a\"]\non_error = \"explode\"\n",
                &["explode"],
            ),
            (
                "[[pipelines]]\nname = \"p\"\nstream = \"s\"\nsinks = [\"a\"]\nlimits = { memory_mib = 0 }\n",
                &["pipelines[0].limits.memory_mib"],
            ),
            (
                "[stream.kinesis]\nattempt_timeout_ms = 5\n",
                &["stream.kinesis.attempt_timeout_ms", "100 to 600000"],
            ),
            (
                "[[pipelines]]\nname = \"p\"\nstream = \"s\"\nsinks = [\"a\"]\nlimits = { isolation_ms = 0 }\n",
                &["pipelines[0].limits.isolation_ms", "1 to 3600000"],
            ),
            (
                "[[pipelines]]\nname = \"p\"\nstream = \"s\"\nsinks = [\"a\"]\nroutes = { hot = [\"b\"] }\n",
                &["pipelines[0].routes.hot", "\"b\""],
            ),
            (
                "[[pipelines]]\nname = \"p\"\nstream = \"s\"\nsinks = [\"a\"]\nparams = { k = \"v\" }\n",
                &["pipelines[0].params", "without a filter"],
            ),
        ];
        for (text, wants) in cases {
            let text = format!("{sinks}{text}");
            let e = match Config::parse(&text, "t.toml") {
                Ok(_) => panic!("accepted: {text:?}"),
                Err(e) => e.to_string(),
            };
            for w in *wants {
                assert!(e.contains(w), "{text:?}: {w:?} not in {e:?}");
            }
        }
        let sink_cases: &[(&str, &[&str])] = &[
            ("[sinks.a]\ntype = \"dir\"\n", &["sinks.a.path"]),
            ("[sinks.a]\ntype = \"s3\"\n", &["sinks.a.bucket"]),
            (
                "[sinks.a]\ntype = \"s3\"\nbucket = \"Bad_Bucket\"\n",
                &["sinks.a.bucket", "Bad_Bucket"],
            ),
            ("[sinks.a]\ntype = \"ftp\"\n", &["ftp"]),
            (
                "[sinks.a]\ntype = \"dir\"\npath = \"x\"\nkey_template = \"{stream}/{first_seq}\"\n",
                &["sinks.a.key_template", "{shard}"],
            ),
            (
                "[sinks.a]\ntype = \"dir\"\npath = \"x\"\nkey_template = \"{shard}/{first_seq}/{day}\"\n",
                &["sinks.a.key_template", "{day}"],
            ),
            (
                "[sinks.a]\ntype = \"dir\"\npath = \"x\"\ncompression = \"zstd\"\nkey_template = \"{shard}-{first_seq}.ndjson.gz\"\n",
                &["sinks.a.key_template", ".ndjson.zst"],
            ),
            (
                "[sinks.a]\ntype = \"dir\"\npath = \"x\"\nmax_age_ms = 5\n",
                &["sinks.a.max_age_ms"],
            ),
            (
                "[sinks.a]\ntype = \"dir\"\npath = \"x\"\nbucket = \"b\"\n",
                &["sinks.a.bucket", "s3"],
            ),
            (
                "[sinks.a]\ntype = \"dir\"\npath = \"x\"\ncolour = 1\n",
                &["colour"],
            ),
            (
                "[consumer]\nmax_records = 20000\n",
                &["consumer.max_records", "10000"],
            ),
            (
                "[consumer]\npoll_interval_ms = 0\n",
                &["consumer.poll_interval_ms"],
            ),
            (
                "[filters.auto]\nstream = \"s\"\nsinks = [\"zz\"]\n",
                &["filters.auto.sinks", "\"zz\""],
            ),
            (
                "[intake]\nlistener_id = \"0\"\n",
                &["intake.listener_id", "reserved"],
            ),
            ("[streams.s]\nshards = 0\n", &["streams.s.shards"]),
            (
                "[sinks.a]\ntype = \"dir\"\npath = \"x\"\n\
                 [[pipelines]]\nname = \"p\"\nstream = \"s\"\nsinks = [\"a\"]\n\
                 [[pipelines]]\nname = \"q\"\nstream = \"s\"\nsinks = [\"a\"]\n",
                &["sinks.a", "\"p\"", "\"q\"", "{pipeline}"],
            ),
        ];
        for (text, wants) in sink_cases {
            let e = match Config::parse(text, "t.toml") {
                Ok(_) => panic!("accepted: {text:?}"),
                Err(e) => e.to_string(),
            };
            for w in *wants {
                assert!(e.contains(w), "{text:?}: {w:?} not in {e:?}");
            }
        }
    }

    /// Every malformed case names the file and what is wrong with it.
    #[test]
    fn malformed_files_are_refused_naming_file_and_key() {
        let cases: &[(&str, &[&str])] = &[
            // Syntax: the line is named.
            ("[intake]\nlinger_ms = \n", &["t.toml", "line 2"]),
            ("[intake\n", &["t.toml", "line 1"]),
            // Wrong type.
            ("[intake]\nlinger_ms = \"fast\"\n", &["t.toml", "linger_ms"]),
            ("[stream]\nfsync = \"yes\"\n", &["t.toml", "fsync"]),
            // Unknown section.
            ("[intakes]\n", &["t.toml", "intakes"]),
            // Values out of range.
            (
                "[stream]\nsegment_bytes = 10\n",
                &["stream.segment_bytes", "4096"],
            ),
            (
                "[stream]\nretention_hours = 0\n",
                &["stream.retention_hours"],
            ),
            (
                "[intake]\nmax_body_bytes = 100\nmax_decoded_bytes = 10\n",
                &["intake.max_decoded_bytes"],
            ),
            (
                "[intake]\nmax_body_bytes = 0\n",
                &["intake.max_body_bytes", "16777216"],
            ),
            (
                "[intake]\nmax_body_bytes = \"big\"\n",
                &["max_body_bytes", "expected a whole number"],
            ),
            (
                "[intake]\nlisten = \"localhost\"\n",
                &["listen", "has no port", "0.0.0.0:8080"],
            ),
            (
                "[admin]\nlisten = \"metrics.example.com:9090\"\n",
                &["listen", "not a host name"],
            ),
            (
                "[intake]\nbuffer_bytes = 1000\n",
                &["intake.buffer_bytes", "cannot hold one request"],
            ),
            (
                "[intake]\nmax_events_per_request = 0\n",
                &["intake.max_events_per_request"],
            ),
            (
                // 64 MiB of body fits; with 2 M events of bookkeeping it does not.
                "[intake]\nbuffer_bytes = 134217728\nmax_events_per_request = 2000000\n",
                &["intake.buffer_bytes", "max_events_per_request (2000000)"],
            ),
            (
                "[[intake.tokens]]\ntoken = \"short\"\nstreams = [\"*\"]\n",
                &["intake.tokens[0].token", "16"],
            ),
            (
                "[[intake.tokens]]\ntoken = \"long-enough-token-123\"\nstreams = []\n",
                &["intake.tokens[0].streams"],
            ),
            (
                "[streams.logs]\npartition_key_field = \"\"\n",
                &["streams.logs.partition_key_field"],
            ),
            // The budget counts whole KiB: a largest request of 1,128 bytes
            // takes 2 units, and a buffer of 1,128 bytes holds 1.
            (
                "[intake]\nmax_body_bytes = 1000\nmax_decoded_bytes = 1000\n\
                 max_events_per_request = 1\nbuffer_bytes = 1128\n",
                &["intake.buffer_bytes", "cannot hold one request"],
            ),
            (
                "[intake]\nlinger_ms = 60000\n",
                &["intake.linger_ms", "at most"],
            ),
            // Limits that would let a slow or idle client hold memory or
            // a file descriptor for ever, or that refuse every connection.
            // A full record and its partition key must fit in 1 MiB.
            (
                "[intake]\nrecord_max_bytes = 1048576\n",
                &["intake.record_max_bytes", "partition key included"],
            ),
            (
                "[intake]\nrecord_max_bytes = 2000\n",
                &["intake.record_max_bytes", "4096..="],
            ),
            (
                "[intake]\nbody_timeout_ms = 0\n",
                &["intake.body_timeout_ms", "100 to 3600000"],
            ),
            (
                "[intake]\nheader_timeout_ms = 86400000\n",
                &["intake.header_timeout_ms", "100 to 3600000"],
            ),
            (
                "[intake]\nmax_connections = 0\n",
                &["intake.max_connections", "ulimit -n"],
            ),
            // Tokens a client could never present, or listed twice.
            (
                "[[intake.tokens]]\ntoken = \"trailing-space-token \"\nstreams = [\"*\"]\n",
                &["intake.tokens[0].token", "' '", "visible ASCII"],
            ),
            (
                "[[intake.tokens]]\ntoken = \"ééééééééé\"\nstreams = [\"*\"]\n",
                &["intake.tokens[0].token", "16 characters"],
            ),
            (
                "[[intake.tokens]]\ntoken = \"same-token-1234567\"\nstreams = [\"a\"]\n\
                 [[intake.tokens]]\ntoken = \"same-token-1234567\"\nstreams = [\"b\"]\n",
                &["intake.tokens[1].token", "intake.tokens[0]"],
            ),
            (
                "[[intake.tokens]]\ntoken = \"long-enough-token-123\"\nstreams = [\"logs*\"]\n",
                &["intake.tokens[0].streams", "\"logs*\"", "not a stream name"],
            ),
            // http sinks: a url that is one, no archive keys, one auth
            // source, JSON bodies for Firehose, not a dead-letter sink.
            ("[sinks.p]\ntype = \"http\"\n", &["sinks.p.url", "http://"]),
            (
                "[sinks.p]\ntype = \"http\"\nurl = \"ftp://x/\"\n",
                &["sinks.p.url"],
            ),
            (
                "[sinks.p]\ntype = \"http\"\nurl = \"http://x/\"\npath = \"d\"\n",
                &["sinks.p.path", "not for type = \"http\""],
            ),
            (
                "[sinks.p]\ntype = \"http\"\nurl = \"http://x/\"\nauth_value = \"a\"\nauth_env = \"B\"\n",
                &["sinks.p.auth_env", "not both"],
            ),
            (
                "[sinks.p]\ntype = \"http\"\nurl = \"http://x/\"\nformat = \"firehose\"\ncompression = \"gzip\"\n",
                &["sinks.p.compression", "firehose"],
            ),
            (
                "[sinks.p]\ntype = \"dir\"\npath = \"d\"\nurl = \"http://x/\"\n",
                &["sinks.p.url", "only for type = \"http\""],
            ),
            (
                "[sinks.p]\ntype = \"http\"\nurl = \"http://x/\"\n\
                 [[pipelines]]\nname = \"a\"\nstream = \"s\"\nsinks = [\"p\"]\ndead_letter = \"p\"\n",
                &["pipelines[0].dead_letter", "http sink"],
            ),
            // A stream section whose name can never match a stream.
            (
                "[streams.\"bad name!\"]\npartition_key_field = \"u\"\n",
                &["streams.bad name!", "not a stream name"],
            ),
        ];
        for (text, wants) in cases {
            let e = match Config::parse(text, "t.toml") {
                Ok(_) => panic!("accepted: {text:?}"),
                Err(e) => e.to_string(),
            };
            for w in *wants {
                assert!(e.contains(w), "{text:?}: {w:?} not in {e:?}");
            }
        }
        let missing = Config::load(Path::new("/no/such/kinesthetic.toml"))
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(missing.contains("/no/such/kinesthetic.toml"), "{missing}");
    }

    #[test]
    fn localhost_is_a_listen_address() {
        let c = Config::parse("[intake]\nlisten = \"localhost:8080\"\n", "t.toml");
        let c = c.map_err(|e| e.to_string());
        assert_eq!(
            c.map(|c| c.intake.listen.to_string()),
            Ok("127.0.0.1:8080".to_owned())
        );
    }

    #[test]
    fn listener_ids_parse_in_both_bases() {
        assert_eq!(parse_listener_id("42"), Ok(42));
        assert_eq!(parse_listener_id("0xff"), Ok(255));
        assert!(parse_listener_id("-1").is_err());
    }
}
