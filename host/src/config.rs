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
    /// Per-stream settings, by stream name.
    pub streams: BTreeMap<String, StreamSettings>,
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
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct IntakeConfig {
    pub listen: SocketAddr,
    /// Prometheus metrics and health checks.
    pub admin_listen: SocketAddr,
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
            admin_listen: SocketAddr::from(([127, 0, 0, 1], 9090)),
            listener_id: None,
            max_body_bytes: 16 << 20,
            max_decoded_bytes: 64 << 20,
            max_events_per_request: 500_000,
            buffer_bytes: 256 << 20,
            record_max_bytes: p.record_max_bytes,
            linger_ms: p.linger.as_millis() as u64,
            put_timeout_ms: p.put_timeout.as_millis() as u64,
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
            message: e.to_string(),
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
        let i = &self.intake;
        if let Some(id) = &i.listener_id {
            parse_listener_id(id).map_err(|m| bad("intake.listener_id", m))?;
        }
        if !(1024..=crate::stream::kpl::KINESIS_RECORD_MAX).contains(&i.record_max_bytes) {
            return Err(bad(
                "intake.record_max_bytes",
                format!(
                    "{} is outside 1024..={} (Kinesis's record limit)",
                    i.record_max_bytes,
                    crate::stream::kpl::KINESIS_RECORD_MAX
                ),
            ));
        }
        if i.max_body_bytes == 0 || i.max_decoded_bytes < i.max_body_bytes {
            return Err(bad(
                "intake.max_decoded_bytes",
                format!(
                    "must be at least max_body_bytes ({}) and not 0",
                    i.max_body_bytes
                ),
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
                if s != "*" && !is_stream_name(s) {
                    return Err(bad(
                        &format!("intake.tokens[{n}].streams"),
                        format!(
                            "{s:?} is not a stream name (1 to 128 of A-Z a-z 0-9 _ . -), nor \"*\" for all"
                        ),
                    ));
                }
            }
        }
        for (name, s) in &self.streams {
            if !is_stream_name(name) {
                return Err(bad(
                    &format!("streams.{name}"),
                    format!("{name:?} is not a stream name (1 to 128 of A-Z a-z 0-9 _ . -)"),
                ));
            }
            if s.partition_key_field.as_deref() == Some("") {
                return Err(bad(
                    &format!("streams.{name}.partition_key_field"),
                    "must not be empty".into(),
                ));
            }
        }
        Ok(())
    }
}

/// Longest `intake.linger_ms`.
const MAX_LINGER_MS: u64 = 10_000;

/// Kinesis's rule for stream names.
fn is_stream_name(s: &str) -> bool {
    (1..=128).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
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
    fn listener_ids_parse_in_both_bases() {
        assert_eq!(parse_listener_id("42"), Ok(42));
        assert_eq!(parse_listener_id("0xff"), Ok(255));
        assert!(parse_listener_id("-1").is_err());
    }
}
