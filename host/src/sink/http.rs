//! The `http` push sink: each batch (an "object" the archive writer cut,
//! so its bounds are the same after a restart or a replay) is POSTed to a
//! consumer's endpoint, with an `Idempotency-Key` derived from the
//! pipeline, stream, shard and sequence range: a batch sent again carries
//! the same key, and the receiver can tell.
//!
//! Headers: `Idempotency-Key`, `Kinesthetic-Pipeline`, `Kinesthetic-Stream`,
//! `Kinesthetic-Shard`, `Kinesthetic-First-Sequence`,
//! `Kinesthetic-Last-Sequence`, `Kinesthetic-First-Event-Id`,
//! `Kinesthetic-Last-Event-Id`, `Kinesthetic-Line-Count`,
//! `Kinesthetic-Module-Sha256`, and the configured auth header (its value
//! is never logged).
//!
//! Connection errors, timeouts, 408, 429 and 5xx are retried (honouring
//! `Retry-After`); any other answer but 2xx refuses the batch, which goes to
//! the dead-letter sink with the status and the start of the body. With
//! `format = "firehose"` the request and the answer are those of Amazon Data
//! Firehose's HTTP endpoint delivery, so receivers written for it work
//! unchanged.

use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use futures::future::BoxFuture;
use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use sha2::{Digest, Sha256};
use tokio::sync::Semaphore;

use super::{Object, ObjectStore, SinkError};
use crate::config::{PushFormat, SinkConfig};

/// Bytes of a refusing answer's body kept for the dead-letter entry.
const EXCERPT: usize = 512;

/// Longest `Retry-After` honoured.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(600);

pub struct HttpStore {
    sink: String,
    url: reqwest::Url,
    client: reqwest::Client,
    format: PushFormat,
    auth: Option<(HeaderName, HeaderValue)>,
    slots: Arc<Semaphore>,
}

impl std::fmt::Debug for HttpStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the auth value.
        f.debug_struct("HttpStore")
            .field("sink", &self.sink)
            .field("url", &self.url.as_str())
            .field("format", &self.format)
            .finish_non_exhaustive()
    }
}

/// The key a batch is sent under: the same for the same records, whoever
/// sends them and however often.
pub fn idempotency_key(
    pipeline: &str,
    stream: &str,
    shard: &str,
    first: &str,
    last: &str,
) -> String {
    let mut h = Sha256::new();
    for part in [pipeline, stream, shard, first, last] {
        h.update(part.as_bytes());
        h.update([0u8]);
    }
    hex::encode(&h.finalize()[..16])
}

impl HttpStore {
    pub fn new(sink: &str, config: &SinkConfig) -> Result<Self, SinkError> {
        let setup = |message: String| SinkError::Setup {
            sink: sink.to_owned(),
            message,
        };
        let url = config
            .url
            .as_deref()
            .ok_or_else(|| setup("an http sink needs a url".into()))
            .and_then(|u| reqwest::Url::parse(u).map_err(|e| setup(format!("url {u:?}: {e}"))))?;
        let value = match (&config.auth_value, &config.auth_env) {
            (Some(v), _) => Some(v.clone()),
            (None, Some(var)) => Some(std::env::var(var).map_err(|_| {
                setup(format!(
                    "auth_env names {var:?}, which is not set in the environment"
                ))
            })?),
            (None, None) => None,
        };
        let auth = match value {
            None => None,
            Some(v) => {
                let default = match config.format {
                    PushFormat::Firehose => "X-Amz-Firehose-Access-Key",
                    PushFormat::Ndjson => "Authorization",
                };
                let name = config.auth_header.as_deref().unwrap_or(default);
                let name = HeaderName::from_bytes(name.as_bytes())
                    .map_err(|_| setup(format!("auth_header {name:?} is not a header name")))?;
                let mut value = HeaderValue::from_str(&v)
                    .map_err(|_| setup("the auth value cannot be sent in a header".into()))?;
                value.set_sensitive(true);
                Some((name, value))
            }
        };
        let client = reqwest::Client::builder()
            .timeout(Duration::from_millis(config.timeout_ms))
            .connect_timeout(Duration::from_millis(config.timeout_ms.min(5_000)))
            .build()
            .map_err(|e| setup(format!("HTTP client: {e}")))?;
        Ok(Self {
            sink: sink.to_owned(),
            url,
            client,
            format: config.format,
            auth,
            slots: Arc::new(Semaphore::new(config.max_in_flight.max(1))),
        })
    }

    async fn send(&self, key: &str, object: &Object) -> Result<(), SinkError> {
        let meta = |name: &str| {
            object
                .metadata
                .iter()
                .find(|(k, _)| *k == name)
                .map_or("", |(_, v)| v.as_str())
        };
        let idem = idempotency_key(
            meta("pipeline"),
            meta("stream"),
            meta("shard"),
            meta("first-sequence"),
            meta("last-sequence"),
        );
        let mut headers = HeaderMap::new();
        let mut put = |name: &'static str, value: &str| {
            if let Ok(v) = HeaderValue::from_str(value) {
                headers.insert(HeaderName::from_static(name), v);
            }
        };
        put("idempotency-key", &idem);
        for (name, field) in [
            ("kinesthetic-pipeline", "pipeline"),
            ("kinesthetic-filter", "filter"),
            ("kinesthetic-stream", "stream"),
            ("kinesthetic-shard", "shard"),
            ("kinesthetic-first-sequence", "first-sequence"),
            ("kinesthetic-last-sequence", "last-sequence"),
            ("kinesthetic-first-event-id", "first-event-id"),
            ("kinesthetic-last-event-id", "last-event-id"),
            ("kinesthetic-line-count", "line-count"),
            ("kinesthetic-module-sha256", "module-sha256"),
        ] {
            put(name, meta(field));
        }
        let body = match self.format {
            PushFormat::Ndjson => {
                put("content-type", object.content_type);
                if let Some(e) = object.content_encoding {
                    put("content-encoding", e);
                }
                object.body.clone()
            }
            PushFormat::Firehose => {
                put("content-type", "application/json");
                put("x-amz-firehose-request-id", &idem);
                put("x-amz-firehose-protocol-version", "1.0");
                let b64 = base64::engine::general_purpose::STANDARD;
                let records: Vec<serde_json::Value> = object
                    .body
                    .split(|b| *b == b'\n')
                    .filter(|l| !l.is_empty())
                    .map(|l| {
                        // Firehose records carry their own newline.
                        let mut line = l.to_vec();
                        line.push(b'\n');
                        serde_json::json!({ "data": b64.encode(line) })
                    })
                    .collect();
                let envelope = serde_json::json!({
                    "requestId": idem,
                    "timestamp": std::time::SystemTime::now()
                        .duration_since(std::time::UNIX_EPOCH)
                        .map_or(0, |d| d.as_millis() as u64),
                    "records": records,
                });
                bytes::Bytes::from(serde_json::to_vec(&envelope).map_err(|e| {
                    SinkError::Rejected {
                        sink: self.sink.clone(),
                        key: key.to_owned(),
                        message: format!("cannot build the Firehose request: {e}"),
                    }
                })?)
            }
        };
        if let Some((name, value)) = &self.auth {
            headers.insert(name.clone(), value.clone());
        }
        let retry = |message: String, after: Option<Duration>| SinkError::Retry {
            sink: self.sink.clone(),
            key: key.to_owned(),
            message,
            after,
        };
        let _slot = self
            .slots
            .acquire()
            .await
            .map_err(|_| retry("the sink is closing".into(), None))?;
        let resp = self
            .client
            .post(self.url.clone())
            .headers(headers)
            .body(body)
            .send()
            .await
            .map_err(|e| {
                let what = if e.is_timeout() {
                    "timed out"
                } else if e.is_connect() {
                    "cannot connect"
                } else {
                    "request failed"
                };
                retry(
                    format!("POST {}: {what}: {}", self.url, error_chain(&e)),
                    None,
                )
            })?;
        let status = resp.status();
        let after = resp
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(|s| Duration::from_secs(s).min(MAX_RETRY_AFTER));
        let text = resp.bytes().await.unwrap_or_default();
        let excerpt = String::from_utf8_lossy(&text[..text.len().min(EXCERPT)]).into_owned();
        if status.is_success() {
            if self.format == PushFormat::Firehose {
                let answered = serde_json::from_slice::<serde_json::Value>(&text)
                    .ok()
                    .and_then(|v| v["requestId"].as_str().map(str::to_owned));
                if answered.as_deref() != Some(idem.as_str()) {
                    return Err(retry(
                        format!(
                            "POST {}: HTTP {status} without requestId {idem:?} in its answer: {excerpt}",
                            self.url
                        ),
                        None,
                    ));
                }
            }
            return Ok(());
        }
        let code = status.as_u16();
        let message = format!("POST {}: HTTP {status}: {excerpt}", self.url);
        if code == 408 || code == 429 || status.is_server_error() {
            Err(retry(message, after))
        } else {
            Err(SinkError::Rejected {
                sink: self.sink.clone(),
                key: key.to_owned(),
                message,
            })
        }
    }
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut source = e.source();
    while let Some(inner) = source {
        s.push_str(": ");
        s.push_str(&inner.to_string());
        source = inner.source();
    }
    s
}

impl ObjectStore for HttpStore {
    fn put<'a>(&'a self, key: &'a str, object: &'a Object) -> BoxFuture<'a, Result<(), SinkError>> {
        Box::pin(self.send(key, object))
    }

    fn location(&self) -> String {
        format!("POST {}", self.url)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_idempotency_key_depends_on_every_part_and_nothing_else() {
        let k = idempotency_key("p", "s", "shardId-000000000000", "1", "9");
        assert_eq!(
            k,
            idempotency_key("p", "s", "shardId-000000000000", "1", "9")
        );
        assert_eq!(k.len(), 32);
        for other in [
            idempotency_key("q", "s", "shardId-000000000000", "1", "9"),
            idempotency_key("p", "t", "shardId-000000000000", "1", "9"),
            idempotency_key("p", "s", "shardId-000000000001", "1", "9"),
            idempotency_key("p", "s", "shardId-000000000000", "2", "9"),
            idempotency_key("p", "s", "shardId-000000000000", "1", "8"),
            // Parts do not run into each other.
            idempotency_key("p", "s", "shardId-000000000000", "19", ""),
        ] {
            assert_ne!(k, other);
        }
    }
}
