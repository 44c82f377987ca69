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

/// Lines wait uncompressed up to this many bytes per open object; then they
/// are compressed as one member of the object (gzip members and zstd frames
/// concatenate into one valid stream), so an open object holds about its
/// compressed size in memory, not its lines'.
pub const PACK_BYTES: usize = 256 << 10;

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
    /// Compressed members, then the last lines, not yet compressed.
    pub packed: Bytes,
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
    /// How long a write is retried before it is refused (http), or for
    /// ever (`None`: an archive holds the checkpoint until it is stored).
    retry_budget: Option<Duration>,
    /// Whether lines are compressed as they wait (archives); an http batch
    /// keeps them as they are, so a refused one can be dead-lettered line
    /// by line.
    packs: bool,
    /// Whether the body holds event frames (a kinesis sink: each line with
    /// its stamp and partition key, [`super::kinesis::frame`]) rather than
    /// NDJSON lines.
    frames: bool,
    origin: Origin,
    /// Lines not yet compressed.
    body: Vec<u8>,
    /// Compressed members of the open object.
    packed: Vec<u8>,
    /// Bytes of lines (with their newlines) in the open object.
    line_bytes: usize,
    lines: u64,
    open: Option<Open>,
    last_lines: Option<(SequenceNumber, EventId)>,
    /// The last record offered before the open object's first one.
    before_open: Option<SequenceNumber>,
    last_fed: Option<SequenceNumber>,
    /// From the checkpoint: an object cut before a restart, cut again here.
    pending: Option<Cut>,
}

/// One line for an archive: its bytes, its event's stamp and its
/// partition key (kept only by a kinesis sink).
#[derive(Debug, Clone, Copy)]
pub struct ArchiveLine<'a> {
    pub bytes: &'a [u8],
    pub id: EventId,
    pub received_ms: i64,
    pub key: &'a [u8],
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
        store.shard_started(&origin.shard);
        Ok(Self {
            sink: sink.to_owned(),
            store,
            template,
            prefix,
            compression: config.compression(),
            max_bytes: usize::try_from(config.max_bytes()).unwrap_or(usize::MAX),
            max_age_ms: i64::try_from(config.max_age_ms()).unwrap_or(i64::MAX),
            retry: Backoff::new(
                Duration::from_millis(100),
                Duration::from_millis(config.retry_max_ms),
            ),
            retry_budget: (config.kind == crate::config::SinkKind::Http)
                .then(|| Duration::from_millis(config.retry_budget_ms)),
            packs: !matches!(
                config.kind,
                crate::config::SinkKind::Http
                    | crate::config::SinkKind::Kinesis
                    | crate::config::SinkKind::Index
            ),
            frames: matches!(
                config.kind,
                crate::config::SinkKind::Kinesis | crate::config::SinkKind::Index
            ),
            origin,
            body: Vec::new(),
            packed: Vec::new(),
            line_bytes: 0,
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

    /// Bytes of lines waiting in the open object (uncompressed).
    pub fn buffered_bytes(&self) -> usize {
        self.line_bytes
    }

    /// Bytes the open object takes in memory now.
    pub fn memory_bytes(&self) -> usize {
        self.body.capacity() + self.packed.capacity()
    }

    /// Whether enough lines wait to be compressed ([`Self::pack`]).
    pub fn wants_pack(&self) -> bool {
        self.packs && self.body.len() >= PACK_BYTES
    }

    /// Compresses the whole members of the lines waiting
    /// ([`member_ends`](super::util::compress::member_ends)), on a blocking
    /// thread; the rest keeps waiting.
    pub async fn pack(&mut self) -> Result<(), SinkError> {
        let raw = std::mem::take(&mut self.body);
        let how = self.compression;
        let done = tokio::task::spawn_blocking(move || {
            super::util::compress::compress_members(&raw, PACK_BYTES, how).map(|(m, rest)| {
                let mut left = Vec::with_capacity(PACK_BYTES + (64 << 10));
                left.extend_from_slice(&raw[rest..]);
                (m, left)
            })
        })
        .await
        .map_err(|e| e.to_string())
        .and_then(|r| r.map_err(|e| e.to_string()))
        .map_err(|message| SinkError::Write {
            sink: self.sink.clone(),
            key: "(open object)".into(),
            message: format!("cannot compress: {message}"),
        })?;
        let (members, left) = done;
        self.packed.extend_from_slice(&members);
        self.body = left;
        Ok(())
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
        let frames = self.frames;
        let size = move |l: &ArchiveLine<'_>| {
            if frames {
                super::kinesis::frame_len(l)
            } else {
                l.bytes.len() + 1
            }
        };
        let bytes: usize = lines.clone().into_iter().map(|l| size(&l)).sum();
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
                if frames {
                    super::kinesis::frame(&mut self.body, &l);
                } else {
                    self.body.extend_from_slice(l.bytes);
                    self.body.push(b'\n');
                }
                self.line_bytes += size(&l);
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
            || (has_lines && self.line_bytes + bytes > self.max_bytes)
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

    /// How long until [`Self::due`] holds by the clock (`None`: nothing
    /// open), so a caught-up reader can wake for it instead of waiting out
    /// its poll interval.
    pub fn due_in(&self, now_ms: i64) -> Option<Duration> {
        let open = self.open.as_ref()?;
        if self.due(now_ms) {
            return Some(Duration::ZERO);
        }
        let slack = WINDOW_SLACK.as_millis() as i64;
        let by_arrival = open.first_arrival_ms + self.max_age_ms + slack - now_ms;
        let by_clock = (Duration::from_millis(self.max_age_ms as u64) + WINDOW_SLACK)
            .saturating_sub(open.opened.elapsed());
        Some(Duration::from_millis(by_arrival.max(0) as u64).min(by_clock))
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
        self.line_bytes = 0;
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
            // The time in the key; a replay renders the key again from it.
            ("first-received-ms", open.first_received_ms.to_string()),
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
            packed: Bytes::from(std::mem::take(&mut self.packed)),
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
        let (packed, body) = (s.packed.clone(), s.body.clone());
        let compressed = tokio::task::spawn_blocking(move || {
            compress(&body, how).map(|tail| {
                let mut all = Vec::with_capacity(packed.len() + tail.len());
                all.extend_from_slice(&packed);
                all.extend_from_slice(&tail);
                all
            })
        })
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
        let started = Instant::now();
        let mut attempt = 0u32;
        loop {
            match self.store.put(&s.key, &object).await {
                Ok(()) => return Ok(size),
                Err(e @ SinkError::Rejected { .. }) => return Err(e),
                Err(e) => {
                    attempt = attempt.saturating_add(1);
                    let backoff = self.retry.delay(attempt);
                    let wait = match &e {
                        SinkError::Retry { after: Some(a), .. } => *a,
                        _ => backoff,
                    };
                    if let Some(budget) = self.retry_budget
                        && started.elapsed() + wait > budget
                    {
                        return Err(SinkError::Rejected {
                            sink: self.sink.clone(),
                            key: s.key.clone(),
                            message: format!(
                                "not delivered within the retry budget ({} s, {attempt} attempts): {e}",
                                budget.as_secs()
                            ),
                        });
                    }
                    tracing::warn!(sink = %self.sink, key = %s.key, error = %e, attempt, ?wait, "object write failed; retrying");
                    on_retry(&e);
                    tokio::time::sleep(wait).await;
                }
            }
        }
    }

    /// Stores `object` under `key` as it is, retrying until it is stored:
    /// the dead-letter sink keeps a refused batch this way, beside its
    /// own objects.
    pub async fn put_aside(&self, key: &str, object: &Object) {
        let mut attempt = 0u32;
        while let Err(e) = self.store.put(key, object).await {
            attempt = attempt.saturating_add(1);
            let wait = self.retry.delay(attempt);
            tracing::warn!(sink = %self.sink, %key, error = %e, attempt, ?wait, "dead-letter write failed; retrying");
            tokio::time::sleep(wait).await;
        }
    }

    /// The lines of a sealed object, one by one (a kinesis sink's frames
    /// decoded): what a refused batch puts in the dead-letter sink.
    pub fn lines_of(&self, s: &Sealed) -> Vec<Vec<u8>> {
        if self.frames {
            super::kinesis::unframe(&s.body)
                .map(|events| events.into_iter().map(|e| e.data.to_vec()).collect())
                .unwrap_or_else(|_| vec![s.body.to_vec()])
        } else {
            s.body
                .split(|b| *b == b'\n')
                .filter(|l| !l.is_empty())
                .map(<[u8]>::to_vec)
                .collect()
        }
    }

    /// The prefix this sink's keys start with (`{prefix}` rendered).
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    pub fn location(&self) -> String {
        self.store.location()
    }

    /// The shard is read to its end and everything is written.
    pub fn finished(&self) {
        self.store.shard_finished(&self.origin.shard);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::SinkConfig;

    #[derive(Debug)]
    struct Nowhere;

    impl ObjectStore for Nowhere {
        fn put<'a>(
            &'a self,
            _key: &'a str,
            _object: &'a Object,
        ) -> futures::future::BoxFuture<'a, Result<(), SinkError>> {
            Box::pin(async { Ok(()) })
        }

        fn location(&self) -> String {
            "nowhere".into()
        }
    }

    /// A receiver that is always busy.
    #[derive(Debug)]
    struct Busy;

    impl ObjectStore for Busy {
        fn put<'a>(
            &'a self,
            key: &'a str,
            _object: &'a Object,
        ) -> futures::future::BoxFuture<'a, Result<(), SinkError>> {
            Box::pin(async move {
                Err(SinkError::Retry {
                    sink: "t".into(),
                    key: key.into(),
                    message: "HTTP 503".into(),
                    after: None,
                })
            })
        }

        fn location(&self) -> String {
            "busy".into()
        }
    }

    /// An http batch is retried within its budget, then refused (to the
    /// dead-letter sink); an archive would be retried for ever.
    #[test]
    fn an_http_batch_is_refused_once_its_retry_budget_is_spent() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap_or_else(|e| panic!("{e}"));
        let mut c = SinkConfig::http("http://127.0.0.1:9/");
        c.retry_budget_ms = 400;
        c.retry_max_ms = 100;
        let mut w = writer_on(&c, Arc::new(Busy), None);
        assert!(
            w.offer(&rec(1, 0), [line(b"a", 1)].into_iter(), None)
                .is_none()
        );
        let sealed = w.seal().unwrap_or_else(|| panic!("open"));
        assert!(!w.wants_pack(), "http batches are not packed");
        let mut attempts = 0;
        let started = Instant::now();
        let r = rt.block_on(w.write(&sealed, |_| attempts += 1));
        match r {
            Err(SinkError::Rejected { message, .. }) => {
                assert!(
                    message.contains("retry budget") && message.contains("503"),
                    "{message}"
                )
            }
            other => panic!("{other:?}"),
        }
        assert!(attempts >= 2, "{attempts} attempts");
        assert!(started.elapsed() < Duration::from_secs(2));
    }

    fn writer(max_bytes: u64, pending: Option<Cut>) -> ArchiveWriter {
        let mut c = SinkConfig::dir("unused");
        c.max_age_ms = Some(1000);
        c.max_bytes = Some(max_bytes);
        writer_on(&c, Arc::new(Nowhere), pending)
    }

    /// A writer of sink `t` for pipeline `p` on `s`/shard 0, into `store`.
    fn writer_on(
        c: &SinkConfig,
        store: Arc<dyn ObjectStore>,
        pending: Option<Cut>,
    ) -> ArchiveWriter {
        ArchiveWriter::new(
            "t",
            c,
            store,
            Origin {
                pipeline: "p".into(),
                filter: "raw".into(),
                stream: "s".into(),
                shard: ShardId::new("shardId-000000000000"),
            },
            None,
            pending,
        )
        .unwrap_or_else(|e| panic!("{e}"))
    }

    fn rec(seq: u128, arrival_ms: i64) -> RecordSpan {
        RecordSpan {
            sequence: SequenceNumber::from_u128(seq),
            arrival_ms,
            end_line: 0,
        }
    }

    fn line(bytes: &[u8], counter: u64) -> ArchiveLine<'_> {
        ArchiveLine {
            key: b"k",
            bytes,
            id: EventId {
                listener: 1,
                counter,
            },
            received_ms: 0,
        }
    }

    /// Offers records `(seq, arrival, lines)`; returns the cuts `(first, last)`.
    fn feed(w: &mut ArchiveWriter, recs: &[(u128, i64, usize)]) -> Vec<(u128, u128)> {
        let mut cuts = Vec::new();
        let body = b"0123456789".repeat(10);
        for &(seq, at, n) in recs {
            let lines: Vec<ArchiveLine<'_>> = (0..n).map(|i| line(&body, i as u64)).collect();
            if let Some(s) = w.offer(&rec(seq, at), lines.iter().copied(), None) {
                cuts.push((
                    s.cut.first.as_u128().unwrap_or(0),
                    s.cut.last.as_u128().unwrap_or(0),
                ));
            }
        }
        cuts
    }

    #[test]
    fn objects_hold_the_records_of_one_arrival_window() {
        let mut w = writer(1 << 20, None);
        let cuts = feed(
            &mut w,
            &[
                (1, 0, 1),
                (2, 500, 1),
                (3, 999, 0),
                (4, 1000, 1),
                (5, 1999, 1),
                (6, 2500, 1),
            ],
        );
        // 4 arrives 1000 ms after 1: a new object; 6 after 4's window.
        assert_eq!(cuts, [(1, 2), (4, 5)]);
        // The sink's position: before the open object (6), all is written.
        assert_eq!(w.position().and_then(SequenceNumber::as_u128), Some(5));
        let s = w.seal().unwrap_or_else(|| panic!("an object is open"));
        assert_eq!((s.lines, s.after.as_u128()), (1, Some(6)));
        assert_eq!(w.position().and_then(SequenceNumber::as_u128), Some(6));
        assert!(w.seal().is_none());
    }

    #[test]
    fn objects_close_before_passing_max_bytes_and_on_a_new_module() {
        // Each line is 101 bytes with its newline: three fit in 350.
        let mut w = writer(350, None);
        let cuts = feed(
            &mut w,
            &[(1, 0, 2), (2, 1, 1), (3, 2, 1), (4, 3, 3), (5, 4, 1)],
        );
        assert_eq!(cuts, [(1, 2), (3, 3), (4, 4)]);
        let mut w = writer(1 << 20, None);
        let (a, b): (Arc<str>, Arc<str>) = (Arc::from("aaa"), Arc::from("bbb"));
        let body = b"x".to_vec();
        assert!(w.offer(&rec(1, 0), [line(&body, 1)], Some(&a)).is_none());
        let s = w.offer(&rec(2, 1), [line(&body, 2)], Some(&b));
        let s = s.unwrap_or_else(|| panic!("a new module cuts"));
        assert!(s.metadata.contains(&("module-sha256", "aaa".to_owned())));
        // A record without lines for this sink does not cut on the module.
        assert!(w.offer(&rec(3, 2), [], Some(&a)).is_none());
    }

    #[test]
    fn a_cut_made_before_a_restart_is_made_again_exactly() {
        // Before the restart the object [1, 2] was cut (say, by the clock).
        let pending = Cut {
            first: SequenceNumber::from_u128(1),
            last: SequenceNumber::from_u128(2),
        };
        let recs = [(1, 0, 1), (2, 10, 1), (3, 20, 1), (4, 30, 1)];
        let mut w = writer(1 << 20, Some(pending.clone()));
        assert!(!w.due(0), "no object yet");
        let cuts = feed(&mut w, &recs[..2]);
        assert!(cuts.is_empty());
        // Caught up right after 2: the interrupted object is due at once.
        assert!(w.due(0), "the pending object is complete");
        let cuts = feed(&mut w, &recs[2..]);
        assert_eq!(cuts, [(1, 2)], "cut exactly where it was");
        assert!(w.pending().is_none());
        // Without it, the same records would make one object.
        let mut w = writer(1 << 20, None);
        assert!(feed(&mut w, &recs).is_empty());
        // Inside a pending cut no rule cuts (here: a new arrival window).
        let mut w = writer(
            1 << 20,
            Some(Cut {
                first: SequenceNumber::from_u128(1),
                last: SequenceNumber::from_u128(3),
            }),
        );
        assert_eq!(
            feed(
                &mut w,
                &[(1, 0, 1), (2, 5000, 1), (3, 9000, 1), (4, 9001, 1)]
            ),
            [(1, 3)]
        );
    }

    #[test]
    fn an_open_object_is_due_once_its_window_passed() {
        let mut w = writer(1 << 20, None);
        assert!(!w.due(i64::MAX), "nothing open");
        feed(&mut w, &[(1, 10_000, 1)]);
        assert!(!w.due(10_500));
        assert!(!w.due(11_000), "the slack is not over");
        assert!(w.due(11_000 + WINDOW_SLACK.as_millis() as i64));
        // It says how long until then (by the records' arrival here).
        let wait = w.due_in(10_600).unwrap_or_default();
        assert!(
            wait <= Duration::from_millis(500) && wait >= Duration::from_millis(400),
            "{wait:?}"
        );
        assert_eq!(w.due_in(11_100), Some(Duration::ZERO));
    }

    #[derive(Debug, Default)]
    struct Keep(std::sync::Mutex<Vec<(String, Object)>>);

    impl ObjectStore for Keep {
        fn put<'a>(
            &'a self,
            key: &'a str,
            object: &'a Object,
        ) -> futures::future::BoxFuture<'a, Result<(), SinkError>> {
            if let Ok(mut v) = self.0.lock() {
                v.push((key.to_owned(), object.clone()));
            }
            Box::pin(async { Ok(()) })
        }

        fn location(&self) -> String {
            "memory".into()
        }
    }

    #[test]
    fn a_big_object_is_compressed_as_it_fills_and_reads_back_whole() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap_or_else(|e| panic!("{e}"));
        for how in [Compression::Gzip, Compression::Zstd, Compression::None] {
            let keep = Arc::new(Keep::default());
            let mut c = SinkConfig::dir("unused");
            c.compression = Some(how);
            let mut w = ArchiveWriter::new(
                "t",
                &c,
                keep.clone(),
                Origin {
                    pipeline: "p".into(),
                    filter: "raw".into(),
                    stream: "s".into(),
                    shard: ShardId::new("shardId-000000000000"),
                },
                None,
                None,
            )
            .unwrap_or_else(|e| panic!("{e}"));
            let mut want = Vec::new();
            let mut packs = 0;
            for i in 0..100_000u64 {
                let l = format!(
                    "{{\"n\":{i},\"pad\":\"{}\"}}",
                    "x".repeat(40 + (i % 13) as usize)
                );
                want.extend_from_slice(l.as_bytes());
                want.push(b'\n');
                let r = rec(u128::from(i) + 1, 0);
                assert!(w.offer(&r, [line(l.as_bytes(), i)], None).is_none());
                if w.wants_pack() {
                    rt.block_on(w.pack()).unwrap_or_else(|e| panic!("{e}"));
                    packs += 1;
                }
            }
            assert!(packs >= 1, "{how:?}: never packed");
            if how != Compression::None {
                assert!(
                    w.memory_bytes() < want.len() / 2,
                    "{how:?}: {} bytes held",
                    w.memory_bytes()
                );
            }
            assert_eq!(w.buffered_bytes(), want.len());
            let s = w.seal().unwrap_or_else(|| panic!("open"));
            rt.block_on(w.write(&s, |_| {}))
                .unwrap_or_else(|e| panic!("{e}"));
            let got = keep
                .0
                .lock()
                .map(|v| v[0].1.body.clone())
                .unwrap_or_default();
            let text = super::super::util::compress::decompress(&got, how)
                .unwrap_or_else(|e| panic!("{how:?}: {e}"));
            assert!(text == want, "{how:?}: the object does not read back whole");
        }
    }
}
