//! Replay: archived objects run again through a pipeline's filter into its
//! sinks — the backfill after a filter changed, once the stream no longer
//! holds the records.
//!
//! Each object read gives one object per sink its output lines go to,
//! under the key the sink's template renders from the object's stream,
//! shard, sequence range and first receive time: the key the live pipeline
//! gives an object of those records, so a replay into the same archive
//! replaces objects instead of adding copies, and replaying a raw archive
//! through a raw pipeline writes objects byte for byte like the originals
//! (lines are compressed in members a function of the lines alone,
//! [`member_ends`](crate::sink::util::compress::member_ends)).
//!
//! An archive keeps lines, not their partition keys, so a replayed line has
//! none. Its stamp's receive time is the object's first; its id is the
//! object's first or last event id for its first and last line, and the
//! counters between when those are consecutive counters of one listener;
//! otherwise lines between get ids that only number them (listener 0).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;

use super::PipelineSpec;
use crate::config::{Compression, SinkKind};
use crate::event::{Batch, BatchContext, EventId, SequenceNumber, ShardId, Stamp};
use crate::filter::{Input, LoadedFilter, Ran, run_batch};
use crate::retry::Backoff;
use crate::sink::archive::PACK_BYTES;
use crate::sink::util::compress::{compress, content_encoding, decompress, encode_object};
use crate::sink::util::template::{KeyParts, KeyTemplate, render_prefix};
use crate::sink::{Object, ObjectStore, SinkError};

/// Which archived objects to replay.
#[derive(Debug, Clone, Default)]
pub struct Selection {
    /// Objects of this stream (their `stream` metadata).
    pub stream: String,
    /// Only keys starting with this.
    pub prefix: String,
    /// Objects whose first event was received at or after this (ms).
    pub since_ms: Option<i64>,
    /// … and before this (ms).
    pub until_ms: Option<i64>,
}

/// What a replay did.
#[derive(Debug, Clone, Default)]
pub struct Replayed {
    pub listed: u64,
    pub objects_read: u64,
    pub objects_written: u64,
    pub lines_in: u64,
    pub lines_out: u64,
    /// Lines the filter failed on (isolated): not written anywhere; the
    /// archive still holds them.
    pub poison: u64,
    /// Objects of another stream or outside the time range.
    pub not_selected: u64,
    /// Objects that could not be replayed, and why.
    pub skipped: Vec<(String, String)>,
}

/// Told of each object as it is done.
#[derive(Debug, Clone)]
pub enum Progress<'a> {
    /// The objects to look at.
    Listed(u64),
    /// One object done (replayed, not selected or skipped).
    Object { key: &'a str, lines_out: u64 },
}

#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    #[error(transparent)]
    Sink(#[from] SinkError),
    #[error("{0}")]
    Setup(String),
}

/// Lines per filter job (as a shard's read would give at most).
const JOB_LINES: usize = 10_000;

/// One archived object, decoded.
struct Source {
    stream: String,
    shard: ShardId,
    first_seq: SequenceNumber,
    last_seq: SequenceNumber,
    first_received_ms: i64,
    first_id: Option<EventId>,
    last_id: Option<EventId>,
    lines: Bytes,
}

/// Replays the objects of `source` that `selection` picks through
/// `filter` (`None`: a raw pipeline) into the sinks of `spec`.
pub async fn replay(
    source: &dyn ObjectStore,
    selection: &Selection,
    spec: &PipelineSpec,
    filter: Option<Arc<LoadedFilter>>,
    progress: &mut (dyn FnMut(Progress<'_>) + Send),
) -> Result<Replayed, ReplayError> {
    for s in &spec.sinks {
        if s.config.kind == SinkKind::Index {
            return Err(ReplayError::Setup(format!(
                "sink {:?} is an index: it merges live shards; replay into dir, s3 or http sinks",
                s.name
            )));
        }
        if s.config.kind == SinkKind::Kinesis {
            return Err(ReplayError::Setup(format!(
                "sink {:?} writes into a stream: an archive keeps lines, not their partition keys, so a replay cannot re-key them; replay into dir, s3 or http sinks",
                s.name
            )));
        }
    }
    let templates = spec
        .sinks
        .iter()
        .map(|s| {
            KeyTemplate::parse(&s.config.template())
                .map_err(|m| ReplayError::Setup(format!("sink {:?}: {m}", s.name)))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let keys = source.list(&selection.prefix).await?;
    let mut done = Replayed {
        listed: keys.len() as u64,
        ..Replayed::default()
    };
    progress(Progress::Listed(done.listed));
    for key in &keys {
        let stored = match source.get(key).await {
            Ok(s) => s,
            Err(e) => {
                done.skipped.push((key.clone(), e.to_string()));
                progress(Progress::Object { key, lines_out: 0 });
                continue;
            }
        };
        let src = match decode(&stored.metadata, stored.body) {
            Ok(s) => s,
            Err(why) => {
                done.skipped.push((key.clone(), why));
                progress(Progress::Object { key, lines_out: 0 });
                continue;
            }
        };
        let t = src.first_received_ms;
        if src.stream != selection.stream
            || selection.since_ms.is_some_and(|s| t < s)
            || selection.until_ms.is_some_and(|u| t >= u)
        {
            done.not_selected += 1;
            progress(Progress::Object { key, lines_out: 0 });
            continue;
        }
        done.objects_read += 1;
        let out = run(&src, spec, filter.as_ref()).await?;
        done.lines_in += out.lines_in;
        done.poison += out.poison;
        let mut lines_out = 0;
        for (w, lines) in out.per_sink.iter().enumerate() {
            if lines.is_empty() {
                continue;
            }
            lines_out += lines.len() as u64;
            let sink = &spec.sinks[w];
            let module = filter.as_ref().map(|f| f.sha256().to_owned());
            let object = build(
                &src,
                spec,
                sink.config.kind,
                sink.config.compression(),
                lines,
                module,
            )
            .map_err(|e| ReplayError::Setup(format!("cannot compress: {e}")))?;
            let prefix = render_prefix(&sink.config.prefix, &spec.name, spec.filter_label());
            let out_key = templates[w].render(&KeyParts {
                prefix: &prefix,
                stream: &src.stream,
                shard: &src.shard,
                first_seq: &src.first_seq,
                last_seq: &src.last_seq,
                pipeline: &spec.name,
                filter: spec.filter_label(),
                received_ms: src.first_received_ms,
            });
            put(sink.store.as_ref(), &out_key, &object).await?;
            done.objects_written += 1;
        }
        done.lines_out += lines_out;
        progress(Progress::Object { key, lines_out });
    }
    Ok(done)
}

fn decode(meta: &BTreeMap<String, String>, body: Bytes) -> Result<Source, String> {
    let field = |name: &str| {
        meta.get(name)
            .cloned()
            .ok_or_else(|| format!("no {name:?} in its metadata (not an object of a Kinesthetic archive, or written before replay existed)"))
    };
    let seq = |name: &str| {
        field(name).and_then(|s| SequenceNumber::parse(&s).map_err(|e| format!("{name}: {}", e.0)))
    };
    let first_received_ms = field("first-received-ms")?
        .parse::<i64>()
        .map_err(|e| format!("first-received-ms: {e}"))?;
    let how = match meta.get("content-encoding").map(String::as_str) {
        None | Some("") | Some("identity") => Compression::None,
        Some("gzip") => Compression::Gzip,
        Some("zstd") => Compression::Zstd,
        Some(other) => {
            return Err(format!(
                "content-encoding {other:?} is not gzip, zstd or none"
            ));
        }
    };
    let lines = decompress(&body, how).map_err(|e| format!("cannot decompress ({how:?}): {e}"))?;
    Ok(Source {
        stream: field("stream")?,
        shard: ShardId::new(field("shard")?),
        first_seq: seq("first-sequence")?,
        last_seq: seq("last-sequence")?,
        first_received_ms,
        first_id: meta
            .get("first-event-id")
            .and_then(|s| s.parse::<EventId>().ok()),
        last_id: meta
            .get("last-event-id")
            .and_then(|s| s.parse::<EventId>().ok()),
        lines: Bytes::from(lines),
    })
}

/// The lines of an object body: split at each newline, the last one's
/// newline ending the body (an empty line between two is a line).
fn split(body: &[u8]) -> Vec<&[u8]> {
    let mut lines: Vec<&[u8]> = body.split(|b| *b == b'\n').collect();
    if lines.last().is_some_and(|l| l.is_empty()) {
        lines.pop();
    }
    lines
}

struct Output {
    lines_in: u64,
    poison: u64,
    /// Per sink of the spec: (line, stamp).
    per_sink: Vec<Vec<(Vec<u8>, Stamp)>>,
}

async fn run(
    src: &Source,
    spec: &PipelineSpec,
    filter: Option<&Arc<LoadedFilter>>,
) -> Result<Output, ReplayError> {
    let lines = split(&src.lines);
    let n = lines.len() as u64;
    let consecutive = match (src.first_id, src.last_id) {
        (Some(f), Some(l)) => {
            f.listener == l.listener
                && l.counter.checked_sub(f.counter) == Some(n.saturating_sub(1))
        }
        _ => false,
    };
    // The first and last lines' ids are in the metadata; the ones between
    // follow from them when they are consecutive.
    let last = lines.len().saturating_sub(1);
    let stamp = |i: usize| Stamp {
        id: match (consecutive, src.first_id, src.last_id) {
            (true, Some(f), _) => EventId {
                listener: f.listener,
                counter: f.counter + i as u64,
            },
            (_, Some(f), _) if i == 0 => f,
            (_, _, Some(l)) if i == last => l,
            _ => EventId {
                listener: crate::event::UNSTAMPED_LISTENER,
                counter: i as u64,
            },
        },
        received_ms: src.first_received_ms,
    };
    let mut per_sink: Vec<Vec<(Vec<u8>, Stamp)>> = vec![Vec::new(); spec.sinks.len()];
    let mut poison = 0u64;
    for (c, chunk) in lines.chunks(JOB_LINES).enumerate() {
        let base = c * JOB_LINES;
        let mut batch = Batch::new(BatchContext {
            stream: src.stream.clone(),
            shard: src.shard.clone(),
            first_sequence: src.first_seq.clone(),
            last_sequence: src.last_seq.clone(),
        });
        for (i, line) in chunk.iter().enumerate() {
            batch
                .push(line, stamp(base + i), b"")
                .map_err(|e| ReplayError::Setup(e.to_string()))?;
        }
        batch.end_record(src.last_seq.clone(), src.first_received_ms);
        let input = Input::from(batch);
        let ran = match filter {
            None => None,
            Some(f) => {
                let (f, params, limits, budget) = (
                    Arc::clone(f),
                    spec.params.clone(),
                    spec.limits,
                    spec.isolation,
                );
                let (input2, r) = tokio::task::spawn_blocking(move || {
                    let r = run_batch(&f, &input, &params, &limits, &budget);
                    (input, r)
                })
                .await
                .map_err(|e| ReplayError::Setup(format!("filter job: {e}")))?;
                let ran: Ran = r.map_err(|e| {
                    ReplayError::Setup(format!(
                        "the filter fails on every batch ({e}): fix the pipeline's params or the filter"
                    ))
                })?;
                poison += ran.poison().len() as u64;
                Some((input2, ran))
            }
        };
        match &ran {
            None => {
                for (i, line) in chunk.iter().enumerate() {
                    for &w in spec.targets(None) {
                        per_sink[w].push((line.to_vec(), stamp(base + i)));
                    }
                }
            }
            Some((input, ran)) => {
                for l in ran.lines(input) {
                    for &w in spec.targets(l.route) {
                        per_sink[w].push((l.bytes.to_vec(), input.stamp(l.index as usize)));
                    }
                }
            }
        }
    }
    Ok(Output {
        lines_in: n,
        poison,
        per_sink,
    })
}

/// The object a sink gets, as the live pipeline's archive writer builds it.
fn build(
    src: &Source,
    spec: &PipelineSpec,
    kind: SinkKind,
    how: Compression,
    lines: &[(Vec<u8>, Stamp)],
    module: Option<String>,
) -> std::io::Result<Object> {
    let mut body = Vec::with_capacity(lines.iter().map(|(l, _)| l.len() + 1).sum());
    for (l, _) in lines {
        body.extend_from_slice(l);
        body.push(b'\n');
    }
    let stored = if kind == SinkKind::Http {
        compress(&body, how)?
    } else {
        encode_object(&body, PACK_BYTES, how)?
    };
    let id = |i: usize| {
        lines
            .get(i)
            .map(|(_, s)| s.id.to_string())
            .unwrap_or_default()
    };
    let metadata = vec![
        ("pipeline", spec.name.clone()),
        ("filter", spec.filter_label().to_owned()),
        ("module-sha256", module.unwrap_or_else(|| "none".into())),
        ("stream", src.stream.clone()),
        ("shard", src.shard.to_string()),
        ("first-sequence", src.first_seq.to_string()),
        ("last-sequence", src.last_seq.to_string()),
        ("line-count", lines.len().to_string()),
        ("first-event-id", id(0)),
        ("last-event-id", id(lines.len().saturating_sub(1))),
        ("first-received-ms", src.first_received_ms.to_string()),
    ];
    Ok(Object {
        body: Bytes::from(stored),
        content_type: "application/x-ndjson",
        content_encoding: content_encoding(how),
        metadata,
    })
}

/// Writes with a few retries: a replay is run by hand, and says what
/// failed rather than waiting for ever.
async fn put(store: &dyn ObjectStore, key: &str, object: &Object) -> Result<(), SinkError> {
    let backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(5));
    let mut attempt = 0u32;
    loop {
        match store.put(key, object).await {
            Ok(()) => return Ok(()),
            Err(e @ SinkError::Rejected { .. }) => return Err(e),
            Err(e) if attempt >= 5 => return Err(e),
            Err(e) => {
                attempt += 1;
                let wait = match &e {
                    SinkError::Retry { after: Some(a), .. } => *a,
                    _ => backoff.delay(attempt),
                };
                tracing::warn!(%key, error = %e, attempt, ?wait, "replay write failed; retrying");
                tokio::time::sleep(wait).await;
            }
        }
    }
}
