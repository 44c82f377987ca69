//! Sinks: where a pipeline's output goes.
//!
//! Every sink is fed like an archive of objects — time-stamped, compressed
//! NDJSON files — in a directory ([`dir`]) or an S3 bucket ([`s3`]), or
//! batches POSTed to a consumer's endpoint ([`http`]), or batches of
//! events re-keyed into another stream ([`kinesis`]), all behind
//! [`ObjectStore`]. [`archive::ArchiveWriter`] buffers one shard's
//! lines for one sink and cuts them into objects at boundaries a restart
//! reproduces; the dead-letter sink is such an archive whose lines say why
//! each entry is there ([`dead_letter`]).

pub mod archive;
pub mod dead_letter;
pub mod dir;
pub mod http;
pub mod index;
pub mod kinesis;
pub mod s3;
pub mod util;

use std::fmt;
use std::sync::Arc;

use bytes::Bytes;
use futures::future::BoxFuture;

use crate::config::{SinkConfig, SinkKind};

/// One object to store, with the metadata that says what made it.
#[derive(Debug, Clone)]
pub struct Object {
    pub body: Bytes,
    /// `application/x-ndjson`.
    pub content_type: &'static str,
    /// `gzip`, `zstd`, or none.
    pub content_encoding: Option<&'static str>,
    /// Name–value pairs (S3 user metadata; a `.meta.json` beside a file).
    pub metadata: Vec<(&'static str, String)>,
}

/// Why a write failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum SinkError {
    #[error("{sink}: cannot write {key}: {message}")]
    Write {
        sink: String,
        key: String,
        message: String,
    },
    #[error("sink {sink}: {message}")]
    Setup { sink: String, message: String },
    /// Worth trying again, not before `after` if the receiver said so
    /// (`Retry-After`).
    #[error("{sink}: cannot deliver {key}: {message}")]
    Retry {
        sink: String,
        key: String,
        message: String,
        after: Option<std::time::Duration>,
    },
    /// Refused for a reason retrying will not fix (an HTTP 4xx other than
    /// 408 and 429), or retried past the sink's budget: the batch goes to
    /// the dead-letter sink.
    #[error("{sink}: {key} refused: {message}")]
    Rejected {
        sink: String,
        key: String,
        message: String,
    },
}

/// An object read back from an archive: its stored bytes and metadata
/// (`content-encoding` among them when it is compressed).
#[derive(Debug, Clone)]
pub struct Stored {
    pub body: Bytes,
    pub metadata: std::collections::BTreeMap<String, String>,
}

/// A place that keeps objects by key; writing a key again replaces it.
/// A write returns once the object is durable.
pub trait ObjectStore: Send + Sync + fmt::Debug {
    fn put<'a>(&'a self, key: &'a str, object: &'a Object) -> BoxFuture<'a, Result<(), SinkError>>;

    /// The keys of the objects under `prefix`, sorted. Archives (dir, s3)
    /// can be read back; other sinks cannot.
    fn list<'a>(&'a self, prefix: &'a str) -> BoxFuture<'a, Result<Vec<String>, SinkError>> {
        let _ = prefix;
        Box::pin(async move {
            Err(SinkError::Setup {
                sink: self.location(),
                message: "only a dir or s3 sink can be read back".into(),
            })
        })
    }

    /// A shard's worker starts writing to this store (the index sink
    /// waits for the shards being read).
    fn shard_started(&self, shard: &crate::event::ShardId) {
        let _ = shard;
    }

    /// A shard was read to its end and delivered.
    fn shard_finished(&self, shard: &crate::event::ShardId) {
        let _ = shard;
    }

    /// One object, as [`ObjectStore::list`] named it.
    fn get<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<Stored, SinkError>> {
        let _ = key;
        Box::pin(async move {
            Err(SinkError::Setup {
                sink: self.location(),
                message: "only a dir or s3 sink can be read back".into(),
            })
        })
    }

    /// Where the objects go, for logs and status (`dir /x`, `s3://bucket`).
    fn location(&self) -> String;
}

/// What a `kinesis` sink writes with: the process's writer of the
/// stream backend (none in a process that only reads the local log) and
/// the producer's metrics and record size.
/// Also what an `index` sink runs with: where the process's indexes are
/// listed (for the admin API), and the stop and the tasks of the process.
#[derive(Debug, Clone, Default)]
pub struct StreamWriter {
    pub backend: Option<crate::stream::any::AnyBackend>,
    pub metrics: Option<crate::intake::metrics::Metrics>,
    pub record_max_bytes: Option<usize>,
    pub indexes: index::Indexes,
    pub cancel: tokio_util::sync::CancellationToken,
    pub tracker: tokio_util::task::TaskTracker,
}

/// The store a sink's configuration names.
pub async fn open_store(
    name: &str,
    config: &SinkConfig,
    writer: &StreamWriter,
) -> Result<Arc<dyn ObjectStore>, SinkError> {
    Ok(match config.kind {
        SinkKind::Dir => {
            let path = config.path.clone().ok_or_else(|| SinkError::Setup {
                sink: name.to_owned(),
                message: "a dir sink needs a path".into(),
            })?;
            Arc::new(dir::DirStore::open(name, &path, config.fsync)?)
        }
        SinkKind::S3 => Arc::new(s3::S3Store::connect(name, config).await?),
        SinkKind::Http => Arc::new(http::HttpStore::new(name, config)?),
        SinkKind::Kinesis => {
            let backend = writer.backend.clone().ok_or_else(|| SinkError::Setup {
                sink: name.to_owned(),
                message: "writing into a stream of the local log needs the process that writes \
                          the log: run the pipeline in `kinesthetic serve` (a `consume` process \
                          reads the log read-only)"
                    .into(),
            })?;
            let metrics = writer.metrics.clone().unwrap_or_else(|| {
                crate::intake::metrics::Metrics::register(
                    &mut prometheus_client::registry::Registry::default(),
                )
            });
            let record_max_bytes = writer
                .record_max_bytes
                .unwrap_or(crate::intake::producer::ProducerConfig::default().record_max_bytes);
            let store =
                kinesis::KinesisStore::new(name, config, backend, metrics, record_max_bytes)?;
            store.check().await?;
            Arc::new(store)
        }
        SinkKind::Index => {
            let stream = config.stream.clone().unwrap_or_default();
            Arc::new(index::IndexStore::open(
                name,
                config,
                &stream,
                &writer.indexes,
                &writer.cancel,
                &writer.tracker,
            )?)
        }
    })
}
