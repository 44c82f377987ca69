//! The `kinesis` sink: a pipeline's lines written into another stream,
//! each with the partition key its filter set (or the one it came with),
//! packed in KPL records by the intake's own producer code, its stamp kept
//! so that its event id is the same in both streams.
//!
//! The sink is an [`ArchiveWriter`](super::archive::ArchiveWriter) like the
//! others: its batches are cut at the boundaries a restart reproduces, and
//! the shard's checkpoint moves once a batch is acknowledged, so a restart
//! sends again at most the one batch per shard that was in flight. A batch
//! body holds event frames ([`frame`]): the stamp, the key and the line.

use std::sync::Arc;

use bytes::{Buf, BufMut, Bytes};
use futures::future::BoxFuture;
use tokio::sync::OnceCell;

use super::archive::ArchiveLine;
use super::{Object, ObjectStore, SinkError};
use crate::config::SinkConfig;
use crate::event::{EventId, Stamp};
use crate::intake::metrics::Metrics;
use crate::intake::producer::{Packer, ProducerConfig, SharedMap, write_routed};
use crate::intake::route::ShardMap;
use crate::stream::any::AnyBackend;
use crate::stream::kpl::{Aggregator, MAX_KEY_CHARS};
use crate::stream::{StreamBackend, StreamError};

/// Bytes of a frame besides its key and line: listener, counter, receive
/// time, key length (u16) and line length (u32), little-endian.
const FRAME_FIXED: usize = 8 + 8 + 8 + 2 + 4;

/// Bytes [`frame`] adds to a batch for `l`.
pub fn frame_len(l: &ArchiveLine<'_>) -> usize {
    FRAME_FIXED + l.key.len() + l.bytes.len()
}

/// Appends `l` to a batch body.
pub fn frame(out: &mut Vec<u8>, l: &ArchiveLine<'_>) {
    out.reserve(frame_len(l));
    out.put_u64_le(l.id.listener);
    out.put_u64_le(l.id.counter);
    out.put_i64_le(l.received_ms);
    // Keys are at most 256 characters (1 KiB); lines at most a batch.
    out.put_u16_le(u16::try_from(l.key.len()).unwrap_or(u16::MAX));
    out.put_u32_le(u32::try_from(l.bytes.len()).unwrap_or(u32::MAX));
    out.put_slice(l.key);
    out.put_slice(l.bytes);
}

/// One event of a batch body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Framed {
    pub stamp: Stamp,
    pub key: Bytes,
    pub data: Bytes,
}

/// A batch body that is not a sequence of whole frames.
#[derive(Debug, thiserror::Error)]
#[error("batch body damaged at byte {at}: {what}")]
pub struct BadFrame {
    pub at: usize,
    pub what: &'static str,
}

/// The events of a batch body, in order.
pub fn unframe(body: &Bytes) -> Result<Vec<Framed>, BadFrame> {
    let mut out = Vec::new();
    let mut b = body.clone();
    while b.has_remaining() {
        let at = body.len() - b.remaining();
        if b.remaining() < FRAME_FIXED {
            return Err(BadFrame {
                at,
                what: "a frame's header is cut off",
            });
        }
        let listener = b.get_u64_le();
        let counter = b.get_u64_le();
        let received_ms = b.get_i64_le();
        let key_len = usize::from(b.get_u16_le());
        let len = b.get_u32_le() as usize;
        if b.remaining() < key_len.saturating_add(len) {
            return Err(BadFrame {
                at,
                what: "a frame's key or line is cut off",
            });
        }
        let key = b.split_to(key_len);
        let data = b.split_to(len);
        out.push(Framed {
            stamp: Stamp {
                id: EventId { listener, counter },
                received_ms,
            },
            key,
            data,
        });
    }
    Ok(out)
}

/// Writes batches into one stream.
#[derive(Debug)]
pub struct KinesisStore {
    sink: String,
    stream: String,
    backend: AnyBackend,
    producer: ProducerConfig,
    metrics: Metrics,
    /// The target's shards, described at the first write and refreshed by
    /// the writes when a reshard shows.
    map: OnceCell<SharedMap>,
}

impl KinesisStore {
    /// A sink writing into `config.stream` on `backend`.
    pub fn new(
        name: &str,
        config: &SinkConfig,
        backend: AnyBackend,
        metrics: Metrics,
        record_max_bytes: usize,
    ) -> Result<Self, SinkError> {
        let stream = config.stream.clone().ok_or_else(|| SinkError::Setup {
            sink: name.to_owned(),
            message: "a kinesis sink needs the stream to write into".into(),
        })?;
        Ok(Self {
            sink: name.to_owned(),
            stream,
            backend,
            producer: ProducerConfig {
                record_max_bytes,
                ..ProducerConfig::default()
            },
            metrics,
            map: OnceCell::new(),
        })
    }

    /// Checks that the target stream exists, so that a typo in its name
    /// stops the start instead of holding every shard's checkpoint.
    /// Other failures (the service unreachable) only warn: the writes wait
    /// for it.
    pub async fn check(&self) -> Result<(), SinkError> {
        match self.backend.describe(&self.stream).await {
            Ok(_) => Ok(()),
            Err(StreamError::NoSuchStream(_)) => Err(SinkError::Setup {
                sink: self.sink.clone(),
                message: format!(
                    "stream {:?} does not exist: create it (`kinesthetic stream create {} --shards N`, or `[streams.{}] shards = N` in the configuration)",
                    self.stream, self.stream, self.stream
                ),
            }),
            Err(e) => {
                tracing::warn!(sink = %self.sink, stream = %self.stream, error = %e, "cannot describe the stream this sink writes into; its writes will wait for it");
                Ok(())
            }
        }
    }

    async fn map(&self, key: &str) -> Result<SharedMap, SinkError> {
        self.map
            .get_or_try_init(|| async {
                let d = self.backend.describe(&self.stream).await?;
                let m = ShardMap::from_description(&d)?;
                Ok::<_, StreamError>(Arc::new(std::sync::RwLock::new(m)))
            })
            .await
            .cloned()
            .map_err(|e| SinkError::Retry {
                sink: self.sink.clone(),
                key: key.to_owned(),
                message: format!("cannot describe stream {:?}: {e}", self.stream),
                after: None,
            })
    }

    async fn write(&self, key: &str, body: &Bytes) -> Result<(), SinkError> {
        let events = unframe(body).map_err(|e| SinkError::Write {
            sink: self.sink.clone(),
            key: key.to_owned(),
            message: e.to_string(),
        })?;
        let refuse = |message: String| SinkError::Rejected {
            sink: self.sink.clone(),
            key: key.to_owned(),
            message,
        };
        let limit = self.producer.record_max_bytes;
        // Checked before anything is written: a refused batch goes whole
        // to the dead-letter sink, none of it written here.
        let mut keyed = Vec::with_capacity(events.len());
        for e in &events {
            let k = std::str::from_utf8(&e.key)
                .ok()
                .filter(|k| !k.is_empty() && k.chars().count() <= MAX_KEY_CHARS)
                .ok_or_else(|| {
                    refuse(format!(
                        "event {}: its partition key {:?} is not 1 to {MAX_KEY_CHARS} characters of UTF-8",
                        e.stamp.id,
                        String::from_utf8_lossy(&e.key)
                    ))
                })?;
            let most = Aggregator::max_event_len(limit, k.len());
            if e.data.len() > most {
                return Err(refuse(format!(
                    "event {}: {} bytes, and a Kinesis record holds at most {most} with its key",
                    e.stamp.id,
                    e.data.len()
                )));
            }
            keyed.push(k);
        }
        let map = self.map(key).await?;
        let snapshot = map
            .read()
            .map_err(|_| refuse("the shard map is poisoned".into()))?
            .clone();
        let mut packer = Packer::new(limit);
        for (e, k) in events.iter().zip(keyed) {
            packer
                .push_event(&snapshot, k, &e.data, e.stamp)
                .map_err(|e| refuse(e.to_string()))?;
        }
        write_routed(
            &self.backend,
            &self.stream,
            &self.producer,
            &self.metrics,
            packer.finish(),
            None,
            Some(&map),
            None,
        )
        .await
        .map_err(|u| SinkError::Write {
            sink: self.sink.clone(),
            key: key.to_owned(),
            message: format!("into stream {:?}: {}", self.stream, u.error),
        })
    }
}

impl ObjectStore for KinesisStore {
    fn put<'a>(&'a self, key: &'a str, object: &'a Object) -> BoxFuture<'a, Result<(), SinkError>> {
        Box::pin(self.write(key, &object.body))
    }

    fn location(&self) -> String {
        format!("stream {}", self.stream)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line<'a>(bytes: &'a [u8], key: &'a [u8], counter: u64) -> ArchiveLine<'a> {
        ArchiveLine {
            bytes,
            id: EventId {
                listener: 7,
                counter,
            },
            received_ms: 1_700_000_000_000 + counter as i64,
            key,
        }
    }

    #[test]
    fn frames_carry_stamp_key_and_line_and_round_trip() {
        let mut body = Vec::new();
        let lines = [
            line(b"{\"a\":1}", b"user-1", 1),
            line(b"", b"k", 2),
            line(&[0, 10, 255], b"\xc3\xa9", 3),
        ];
        for l in &lines {
            frame(&mut body, l);
        }
        assert_eq!(body.len(), lines.iter().map(frame_len).sum::<usize>());
        let back = unframe(&Bytes::from(body)).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(back.len(), 3);
        for (l, f) in lines.iter().zip(&back) {
            assert_eq!(&f.data[..], l.bytes);
            assert_eq!(&f.key[..], l.key);
            assert_eq!(f.stamp.id, l.id);
            assert_eq!(f.stamp.received_ms, l.received_ms);
        }
    }

    #[test]
    fn a_cut_off_body_is_an_error_that_says_where() {
        let mut body = Vec::new();
        frame(&mut body, &line(b"first", b"k", 1));
        let whole = body.len();
        frame(&mut body, &line(b"second line", b"k", 2));
        for cut in [whole + 3, body.len() - 1] {
            let e = unframe(&Bytes::copy_from_slice(&body[..cut]))
                .err()
                .unwrap_or_else(|| panic!("cut at {cut} accepted"));
            assert_eq!(e.at, whole, "{e}");
        }
    }
}
