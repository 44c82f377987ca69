//! One shard's lines for one archive sink, cut into objects.
//!
//! Where an object ends must be the same every time the same records are
//! read — after a restart, or a replay — so that writing it again replaces
//! the same key instead of adding an object that holds some lines twice.
//! So the rules look only at the records:
//!
//! * an object holds the records that reached the stream within `max_age`
//!   of its first record's arrival (the stream's arrival time, a property
//!   of the record): a record arriving later starts the next object;
//! * an object is closed before it would pass `max_bytes` of lines;
//! * an object holds the output of one filter version (a swap cuts);
//! * a closed shard's end closes its last object.
//!
//! A reader that has caught up with its shard also closes an object once
//! its window has passed on the clock (no record can still join it). Every
//! cut is recorded in the checkpoint store before its object is written
//! ([`Cut`]), and a restart cuts exactly there again, whatever decided it.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::util::compress::{compress, content_encoding};
use super::util::template::{KeyParts, KeyTemplate};
use super::{Object, ObjectStore, SinkError};
use crate::config::{Compression, SinkConfig};
use crate::consumer::checkpoint::Cut;
use crate::event::{EventId, RecordSpan, SequenceNumber, ShardId};
use crate::retry::Backoff;

/// How long after an object's window ends (on the clock) a caught-up
/// reader closes it: a record put just before the window's end may become
/// readable a little after it.
pub const WINDOW_SLACK: Duration = Duration::from_millis(100);

/// Who writes: the pipeline, its filter and the shard.
#[derive(Debug, Clone)]
pub struct Origin {
    pub pipeline: String,
    /// The filter's name, or `raw`.
    pub filter: String,
    pub stream: String,
    pub shard: ShardId,
}

/// The object being filled.
#[derive(Debug, Clone)]
struct Open {
    first_seq: SequenceNumber,
    first_arrival_ms: i64,
    first_id: EventId,
    first_received_ms: i64,
    opened: Instant,
    module: Option<Arc<str>>,
}

/// An object cut and ready to write.
#[derive(Debug, Clone)]
pub struct Sealed {
    pub key: String,
    pub cut: Cut,
    /// The sink's position once the object is written: the last record
    /// before the cut (it may have had no lines for this sink).
    pub after: SequenceNumber,
    pub lines: u64,
    pub body: Bytes,
    pub metadata: Vec<(&'static str, String)>,
}

/// One shard's buffer for one archive sink.
#[derive(Debug)]
pub struct ArchiveWriter {
    sink: String,
    store: Arc<dyn ObjectStore>,
    template: KeyTemplate,
    prefix: String,
    compression: Compression,
    max_bytes: usize,
    max_age_ms: i64,
    retry: Backoff,
    origin: Origin,
    body: Vec<u8>,
    lines: u64,
    open: Option<Open>,
    last_lines: Option<(SequenceNumber, EventId)>,
    /// The last record offered before the open object's first one.
    before_open: Option<SequenceNumber>,
    last_fed: Option<SequenceNumber>,
    /// From the checkpoint: an object cut before a restart, cut again here.
    pending: Option<Cut>,
}

/// One line for an archive: its bytes and its event's stamp.
#[derive(Debug, Clone, Copy)]
pub struct ArchiveLine<'a> {
    pub bytes: &'a [u8],
    pub id: EventId,
    pub received_ms: i64,
}

impl ArchiveWriter {
    /// A writer resuming after `after` (the sink's position in the
    /// checkpoint), cutting `pending` again if a restart interrupted it.
    pub fn new(
        sink: &str,
        config: &SinkConfig,
        store: Arc<dyn ObjectStore>,
        origin: Origin,
        after: Option<SequenceNumber>,
        pending: Option<Cut>,
    ) -> Result<Self, SinkError> {
        let template =
            KeyTemplate::parse(&config.template()).map_err(|message| SinkError::Setup {
                sink: sink.to_owned(),
                message,
            })?;
        let prefix =
            super::util::template::render_prefix(&config.prefix, &origin.pipeline, &origin.filter);
        Ok(Self {
            sink: sink.to_owned(),
            store,
            template,
            prefix,
            compression: config.compression,
            max_bytes: usize::try_from(config.max_bytes).unwrap_or(usize::MAX),
            max_age_ms: i64::try_from(config.max_age_ms).unwrap_or(i64::MAX),
            retry: Backoff::new(
                Duration::from_millis(100),
                Duration::from_millis(config.retry_max_ms),
            ),
            origin,
            body: Vec::new(),
            lines: 0,
            open: None,
            last_lines: None,
            before_open: None,
            last_fed: after,
            pending,
        })
    }

    pub fn sink(&self) -> &str {
        &self.sink
    }

    /// Every record up to this one is written (or had nothing here).
    pub fn position(&self) -> Option<&SequenceNumber> {
        if self.open.is_some() {
            self.before_open.as_ref()
        } else {
            self.last_fed.as_ref()
        }
    }

    /// The object a restart must cut again, until it is.
    pub fn pending(&self) -> Option<&Cut> {
        self.pending.as_ref()
    }

    /// Bytes of lines waiting in the open object.
    pub fn buffered_bytes(&self) -> usize {
        self.body.len()
    }

    /// Offers the next record of the shard with its lines for this sink
    /// (maybe none) and the module that made them. Returns the object the
    /// record closes, which must be written before the next offer.
    pub fn offer<'a>(
        &mut self,
        record: &RecordSpan,
        lines: impl IntoIterator<Item = ArchiveLine<'a>> + Clone,
        module: Option<&Arc<str>>,
    ) -> Option<Sealed> {
        let bytes: usize = lines.clone().into_iter().map(|l| l.bytes.len() + 1).sum();
        let has_lines = lines.clone().into_iter().next().is_some();
        let sealed = if self.must_cut_before(record, has_lines, bytes, module) {
            self.seal()
        } else {
            None
        };
        let mut it = lines.into_iter().peekable();
        if let Some(first) = it.peek() {
            if self.open.is_none() {
                self.before_open = self.last_fed.clone();
                self.open = Some(Open {
                    first_seq: record.sequence.clone(),
                    first_arrival_ms: record.arrival_ms,
                    first_id: first.id,
                    first_received_ms: first.received_ms,
                    opened: Instant::now(),
                    module: module.cloned(),
                });
            }
            let mut last = first.id;
            for l in it {
                self.body.extend_from_slice(l.bytes);
                self.body.push(b'\n');
                self.lines += 1;
                last = l.id;
            }
            self.last_lines = Some((record.sequence.clone(), last));
        }
        self.last_fed = Some(record.sequence.clone());
        sealed
    }

    fn must_cut_before(
        &mut self,
        record: &RecordSpan,
        has_lines: bool,
        bytes: usize,
        module: Option<&Arc<str>>,
    ) -> bool {
        if let Some(p) = &self.pending {
            if record.sequence <= p.last {
                // Inside the object a restart interrupted: no rule cuts it.
                return false;
            }
            self.pending = None;
            return self.open.is_some();
        }
        let Some(open) = &self.open else {
            return false;
        };
        record.arrival_ms >= open.first_arrival_ms.saturating_add(self.max_age_ms)
            || (has_lines && self.body.len() + bytes > self.max_bytes)
            || (has_lines && open.module.as_deref() != module.map(|m| &**m))
    }

    /// Whether a caught-up reader should close the open object now: its
    /// window has passed on the clock (by the stream's arrival time, or by
    /// this process's clock since it opened, whichever comes first), or it
    /// is the object a restart interrupted, complete again.
    pub fn due(&self, now_ms: i64) -> bool {
        let Some(open) = &self.open else {
            return false;
        };
        if let Some(p) = &self.pending {
            return self.last_lines.as_ref().is_some_and(|(s, _)| *s >= p.last);
        }
        let slack = WINDOW_SLACK.as_millis() as i64;
        now_ms >= open.first_arrival_ms + self.max_age_ms + slack
            || open.opened.elapsed() >= Duration::from_millis(self.max_age_ms as u64) + WINDOW_SLACK
    }

    /// Closes the open object (if any) and returns it for writing.
    pub fn seal(&mut self) -> Option<Sealed> {
        let open = self.open.take()?;
        self.pending = None;
        let (last_seq, last_id) = self
            .last_lines
            .take()
            .unwrap_or((open.first_seq.clone(), open.first_id));
        let key = self.template.render(&KeyParts {
            prefix: &self.prefix,
            stream: &self.origin.stream,
            shard: &self.origin.shard,
            first_seq: &open.first_seq,
            last_seq: &last_seq,
            pipeline: &self.origin.pipeline,
            filter: &self.origin.filter,
            received_ms: open.first_received_ms,
        });
        let lines = std::mem::take(&mut self.lines);
        let metadata = vec![
            ("pipeline", self.origin.pipeline.clone()),
            ("filter", self.origin.filter.clone()),
            (
                "module-sha256",
                open.module.as_deref().unwrap_or("none").to_owned(),
            ),
            ("stream", self.origin.stream.clone()),
            ("shard", self.origin.shard.to_string()),
            ("first-sequence", open.first_seq.to_string()),
            ("last-sequence", last_seq.to_string()),
            ("line-count", lines.to_string()),
            ("first-event-id", open.first_id.to_string()),
            ("last-event-id", last_id.to_string()),
        ];
        let after = self.last_fed.clone().unwrap_or_else(|| last_seq.clone());
        Some(Sealed {
            key,
            cut: Cut {
                first: open.first_seq,
                last: last_seq,
            },
            after,
            lines,
            body: Bytes::from(std::mem::take(&mut self.body)),
            metadata,
        })
    }

    /// Compresses and writes `s`, retrying with backoff until it is stored
    /// (the shard's checkpoint waits meanwhile; nothing is dropped).
    /// `on_retry` is told of every failed attempt. Returns the bytes stored.
    pub async fn write(
        &self,
        s: &Sealed,
        mut on_retry: impl FnMut(&SinkError),
    ) -> Result<u64, SinkError> {
        let how = self.compression;
        let body = s.body.clone();
        let compressed = tokio::task::spawn_blocking(move || compress(&body, how))
            .await
            .map_err(|e| e.to_string())
            .and_then(|r| r.map_err(|e| e.to_string()))
            .map_err(|message| SinkError::Write {
                sink: self.sink.clone(),
                key: s.key.clone(),
                message: format!("cannot compress: {message}"),
            })?;
        let object = Object {
            body: Bytes::from(compressed),
            content_type: "application/x-ndjson",
            content_encoding: content_encoding(how),
            metadata: s.metadata.clone(),
        };
        let size = object.body.len() as u64;
        let mut attempt = 0u32;
        loop {
            match self.store.put(&s.key, &object).await {
                Ok(()) => return Ok(size),
                Err(e) => {
                    attempt = attempt.saturating_add(1);
                    let wait = self.retry.delay(attempt);
                    tracing::warn!(sink = %self.sink, key = %s.key, error = %e, attempt, ?wait, "object write failed; retrying");
                    on_retry(&e);
                    tokio::time::sleep(wait).await;
                }
            }
        }
    }

    pub fn location(&self) -> String {
        self.store.location()
    }
}
