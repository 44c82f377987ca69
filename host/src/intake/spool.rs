//! The spool: durable acknowledgements when the stream is Kinesis.
//!
//! [`Spooled`] stands in front of a remote backend. A put goes to the local
//! log in the spool directory (fsynced; the intake answers then), and a
//! shipper task per stream sends the spooled records on to the remote
//! stream, in order, re-sending only failed entries, for as long as it
//! takes. Its progress is a checkpoint file; after a restart it resumes
//! there (records shipped just before a crash may be sent twice: event ids
//! tell them apart). When more than `max_backlog_bytes` wait to be shipped,
//! puts are refused as throttled, so the intake answers 503 rather than
//! accept what it could not keep.

use std::collections::{HashMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use tokio_util::sync::CancellationToken;

use super::metrics::Metrics;
use super::producer::{Packer, ProducerConfig, Queues, SharedMap, write_routed};
use super::route::ShardMap;
use crate::stream::kpl::{self, Aggregated, Aggregator, Decoded};
use crate::stream::local::LocalLog;
use crate::stream::{
    GetRecordsOutput, PutEntry, PutOutcome, SequenceNumber, ShardIterator, StartPosition,
    StreamBackend, StreamDescription, StreamError,
};

const MAGIC: &[u8; 3] = b"KS1";
const SPOOL_SHARD: &str = "shardId-000000000000";

/// A remote backend whose puts go through a local spool.
pub struct Spooled<B: StreamBackend> {
    inner: Arc<Inner<B>>,
}

impl<B: StreamBackend> Clone for Spooled<B> {
    fn clone(&self) -> Self {
        Self {
            inner: Arc::clone(&self.inner),
        }
    }
}

struct Inner<B> {
    remote: B,
    spool: LocalLog,
    dir: PathBuf,
    config: ProducerConfig,
    metrics: Metrics,
    max_backlog_bytes: u64,
    streams: Mutex<HashMap<String, Arc<Shipper>>>,
    /// The descriptions last kept on disk, per stream.
    known: Mutex<HashMap<String, StreamDescription>>,
    stop: CancellationToken,
    tasks: tokio_util::task::TaskTracker,
}

struct Shipper {
    spooled: AtomicU64,
    shipped: AtomicU64,
    /// Bytes on disk when the spool was reopened (an upper bound of what
    /// was left unshipped then), until the shipper first catches up.
    carried: AtomicU64,
    wake: tokio::sync::Notify,
}

impl Shipper {
    /// Bytes spooled and not yet shipped.
    fn backlog(&self) -> u64 {
        (self.spooled.load(Ordering::Relaxed) + self.carried.load(Ordering::Relaxed))
            .saturating_sub(self.shipped.load(Ordering::Relaxed))
    }

    /// The shipper read nothing more after noting `spooled_before` (the
    /// count before its read): everything spooled up to then is shipped.
    /// A put counted after that note may not have been read yet, so it
    /// stays in the backlog.
    fn caught_up(&self, spooled_before: u64) {
        // What was carried over from before a restart was shipped too, and
        // counted in `shipped` as it went: set, not raised, or a later
        // outage would admit the limit plus everything carried before.
        self.carried.store(0, Ordering::Relaxed);
        self.shipped.store(spooled_before, Ordering::Relaxed);
    }
}

/// Bytes of the files under `dir`, recursively.
fn bytes_under(dir: &Path) -> u64 {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return 0;
    };
    rd.flatten()
        .map(|e| match e.metadata() {
            Ok(m) if m.is_dir() => bytes_under(&e.path()),
            Ok(m) => m.len(),
            Err(_) => 0,
        })
        .sum()
}

impl<B: StreamBackend> std::fmt::Debug for Spooled<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Spooled")
            .field("dir", &self.inner.dir)
            .finish_non_exhaustive()
    }
}

/// The last shard map seen of a stream, kept beside its spool as JSON.
mod known_shards {
    use std::path::Path;

    use serde::{Deserialize, Serialize};

    use crate::stream::{HashRange, SequenceNumber, ShardInfo, StreamDescription, StreamStatus};

    #[derive(Serialize, Deserialize)]
    struct Known {
        stream: String,
        retention_hours: u32,
        shards: Vec<Shard>,
    }

    #[derive(Serialize, Deserialize)]
    struct Shard {
        id: String,
        parent: Option<String>,
        adjacent_parent: Option<String>,
        start: String,
        end: String,
        starting_sequence: String,
        ending_sequence: Option<String>,
    }

    pub(super) fn write(path: &Path, d: &StreamDescription) -> std::io::Result<()> {
        let k = Known {
            stream: d.name.clone(),
            retention_hours: d.retention_hours,
            shards: d
                .shards
                .iter()
                .map(|s| Shard {
                    id: s.id.clone(),
                    parent: s.parent.clone(),
                    adjacent_parent: s.adjacent_parent.clone(),
                    start: s.hash_range.start.to_string(),
                    end: s.hash_range.end.to_string(),
                    starting_sequence: s.starting_sequence.as_str().to_owned(),
                    ending_sequence: s.ending_sequence.as_ref().map(|q| q.as_str().to_owned()),
                })
                .collect(),
        };
        let text = serde_json::to_vec_pretty(&k).map_err(std::io::Error::other)?;
        crate::fsutil::write_atomic(path, &text)
    }

    /// `None` when there is none, or it does not read back whole (it is
    /// only a fallback: the error that called for it is reported).
    pub(super) fn read(path: &Path) -> Option<StreamDescription> {
        let text = std::fs::read(path).ok()?;
        let k: Known = match serde_json::from_slice(&text) {
            Ok(k) => k,
            Err(e) => {
                tracing::warn!(file = %path.display(), error = %e, "the kept shard map cannot be read");
                return None;
            }
        };
        let mut shards = Vec::with_capacity(k.shards.len());
        for s in k.shards {
            shards.push(ShardInfo {
                id: s.id,
                parent: s.parent,
                adjacent_parent: s.adjacent_parent,
                hash_range: HashRange {
                    start: s.start.parse().ok()?,
                    end: s.end.parse().ok()?,
                },
                starting_sequence: SequenceNumber::parse(&s.starting_sequence).ok()?,
                ending_sequence: match s.ending_sequence {
                    Some(q) => Some(SequenceNumber::parse(&q).ok()?),
                    None => None,
                },
            });
        }
        let d = StreamDescription {
            name: k.stream,
            status: StreamStatus::Active,
            retention_hours: k.retention_hours,
            shards,
        };
        let any_open = d.open_shards().next().is_some();
        any_open.then_some(d)
    }
}

/// Bytes [`encode`] and the spool's partition key add to an entry, with room
/// to spare.
const SPOOL_ENTRY_OVERHEAD: usize = 64;

fn encode(e: &PutEntry) -> Bytes {
    let mut b = BytesMut::with_capacity(3 + 16 + 2 + e.partition_key.len() + e.data.len());
    b.put_slice(MAGIC);
    b.put_u128(e.hash_key());
    b.put_u16(e.partition_key.len() as u16);
    b.put_slice(e.partition_key.as_bytes());
    b.put_slice(&e.data);
    b.freeze()
}

fn decode(data: &Bytes) -> Option<(u128, String, Bytes)> {
    if data.len() < 21 || &data[..3] != MAGIC {
        return None;
    }
    let ehk = u128::from_be_bytes(data[3..19].try_into().ok()?);
    let klen = u16::from_be_bytes([data[19], data[20]]) as usize;
    let key = std::str::from_utf8(data.get(21..21 + klen)?)
        .ok()?
        .to_owned();
    Some((ehk, key, data.slice(21 + klen..)))
}

/// Merges runs of small records bound for one shard into records of up to
/// `limit` bytes, keeping every event, its stamp and the order. Records over
/// half the limit, and any that cannot be read back as stamped KPL, go on
/// as they are.
fn repack(q: VecDeque<Aggregated>, limit: usize) -> VecDeque<Aggregated> {
    if q.len() < 2 {
        return q;
    }
    fn flush(agg: &mut Aggregator, out: &mut VecDeque<Aggregated>) {
        if !agg.is_empty() {
            let mut a = agg.finish();
            // Counted when they were spooled.
            a.events = 0;
            a.stamp_bytes = 0;
            out.push_back(a);
        }
    }
    let mut out = VecDeque::with_capacity(q.len());
    let mut agg = Aggregator::new(limit);
    for r in q {
        // Full records go on untouched, without even being read.
        let decoded = (r.data.len() <= limit / 2).then(|| kpl::decode(&r.data));
        let events = match decoded {
            Some(Ok(Decoded::Aggregated(ev)))
                if ev
                    .iter()
                    .all(|e| e.stamp.is_some() && e.explicit_hash_key.is_none()) =>
            {
                ev
            }
            _ => {
                flush(&mut agg, &mut out);
                out.push_back(r);
                continue;
            }
        };
        for (i, e) in events.iter().enumerate() {
            let Some(stamp) = e.stamp else { continue };
            if agg.try_push(&e.partition_key, &e.data, stamp) {
                continue;
            }
            flush(&mut agg, &mut out);
            if !agg.try_push(&e.partition_key, &e.data, stamp) {
                // Cannot happen (the record was at most half the limit);
                // never lose events: send this record as it was (its first
                // events may then arrive twice; their ids tell).
                tracing::error!(
                    event = i,
                    "spool: an event does not fit a record of its own size; record sent as it was"
                );
                out.push_back(r.clone());
                break;
            }
        }
    }
    flush(&mut agg, &mut out);
    out
}

impl<B: StreamBackend> Spooled<B> {
    /// Spools into `dir` (a local log of its own) in front of `remote`.
    pub fn open(
        remote: B,
        dir: &Path,
        config: ProducerConfig,
        metrics: Metrics,
        max_backlog_bytes: u64,
    ) -> Result<Self, StreamError> {
        let spool = LocalLog::open(
            dir,
            crate::stream::local::LocalOptions {
                // Never by age: unshipped records are kept however long the
                // stream is away (the backlog limit bounds them), and shipped
                // segments are deleted as soon as they are shipped.
                retention: Some(Duration::MAX),
                // Shipped space is freed a whole segment at a time: keep
                // segments a small part of the backlog limit.
                segment_bytes: (max_backlog_bytes / 8).clamp(1 << 20, 64 << 20),
                // Each spooled record carries its destination (`encode`):
                // a record and a call Kinesis would take must fit too.
                entry_overhead: SPOOL_ENTRY_OVERHEAD,
                ..Default::default()
            },
        )?;
        Ok(Self {
            inner: Arc::new(Inner {
                remote,
                spool,
                dir: dir.to_owned(),
                config,
                metrics,
                max_backlog_bytes,
                streams: Mutex::new(HashMap::new()),
                known: Mutex::new(HashMap::new()),
                stop: CancellationToken::new(),
                tasks: tokio_util::task::TaskTracker::new(),
            }),
        })
    }

    /// Starts shipping every stream that has a spool (after a restart).
    pub async fn resume(&self) -> Result<(), StreamError> {
        for name in self.inner.spool.list_streams().await? {
            self.shipper(&name).await?;
        }
        Ok(())
    }

    /// Damaged places found in the spool's segments (skipped and kept
    /// aside), as a counter to register.
    pub fn quarantined(&self) -> prometheus_client::metrics::counter::Counter {
        self.inner.spool.quarantined()
    }

    /// Bytes spooled and not yet shipped, per stream.
    pub fn backlog(&self) -> Vec<(String, u64)> {
        self.inner
            .streams
            .lock()
            .map(|m| m.iter().map(|(k, s)| (k.clone(), s.backlog())).collect())
            .unwrap_or_default()
    }

    /// Stops the shippers (what is spooled stays for the next start).
    pub async fn close(&self) {
        self.inner.stop.cancel();
        self.inner.tasks.close();
        self.inner.tasks.wait().await;
    }

    fn known_shards_path(&self, stream: &str) -> PathBuf {
        self.inner.dir.join(format!("{stream}.shards.json"))
    }

    /// Keeps `d` on disk when its shards changed since last kept.
    async fn remember(&self, d: &StreamDescription) {
        let changed = self
            .inner
            .known
            .lock()
            .map(|mut k| {
                if k.get(&d.name) == Some(d) {
                    false
                } else {
                    k.insert(d.name.clone(), d.clone());
                    true
                }
            })
            .unwrap_or(false);
        if !changed {
            return;
        }
        let path = self.known_shards_path(&d.name);
        let d2 = d.clone();
        let r = tokio::task::spawn_blocking(move || known_shards::write(&path, &d2)).await;
        if let Ok(Err(e)) | Err(e) = r.map_err(std::io::Error::other) {
            tracing::warn!(stream = %d.name, error = %e, "cannot keep the shard map beside the spool");
            if let Ok(mut k) = self.inner.known.lock() {
                k.remove(&d.name);
            }
        }
    }

    fn checkpoint_path(&self, stream: &str) -> PathBuf {
        self.inner.dir.join(format!("{stream}.shipped"))
    }

    async fn shipper(&self, stream: &str) -> Result<Arc<Shipper>, StreamError> {
        if let Some(s) = self
            .inner
            .streams
            .lock()
            .ok()
            .and_then(|m| m.get(stream).cloned())
        {
            return Ok(s);
        }
        // A spool reopened with records in it: count them in the backlog,
        // or each restart during an outage would admit another full limit.
        let carried = match self.inner.spool.create_stream(stream, 1).await {
            Ok(()) => 0,
            Err(StreamError::StreamExists(_)) => {
                let dir = self.inner.spool.dir().join(stream);
                tokio::task::spawn_blocking(move || bytes_under(&dir))
                    .await
                    .unwrap_or(0)
            }
            Err(e) => return Err(e),
        };
        let s = Arc::new(Shipper {
            spooled: AtomicU64::new(0),
            shipped: AtomicU64::new(0),
            carried: AtomicU64::new(carried),
            wake: tokio::sync::Notify::new(),
        });
        let mut map = self
            .inner
            .streams
            .lock()
            .map_err(|_| StreamError::Service("spool lock poisoned".into()))?;
        if let Some(existing) = map.get(stream) {
            return Ok(Arc::clone(existing));
        }
        map.insert(stream.to_owned(), Arc::clone(&s));
        drop(map);
        let this = self.clone();
        let name = stream.to_owned();
        let shipper = Arc::clone(&s);
        self.inner
            .tasks
            .spawn(async move { this.ship(name, shipper).await });
        Ok(s)
    }

    fn read_checkpoint(&self, stream: &str) -> Option<SequenceNumber> {
        let text = std::fs::read_to_string(self.checkpoint_path(stream)).ok()?;
        SequenceNumber::parse(text.trim()).ok()
    }

    /// Writes the checkpoint durably, off the async workers (two fsyncs).
    async fn write_checkpoint(&self, stream: &str, seq: &SequenceNumber) -> std::io::Result<()> {
        let path = self.checkpoint_path(stream);
        let text = seq.as_str().to_owned();
        tokio::task::spawn_blocking(move || crate::fsutil::write_atomic(&path, text.as_bytes()))
            .await
            .map_err(std::io::Error::other)?
    }

    /// Ships a stream's spool to the remote, in order, until stopped.
    async fn ship(self, stream: String, s: Arc<Shipper>) {
        let spool = &self.inner.spool;
        // Failures in a row, and the wait after the next one.
        let backoff =
            crate::retry::Backoff::new(Duration::from_millis(100), Duration::from_secs(30));
        let mut failures = 0u32;
        let mut iterator: Option<ShardIterator> = None;
        // The remote's shards, described when shipping starts and kept
        // fresh by the writes (a record landing elsewhere refreshes it).
        let mut map: Option<SharedMap> = None;
        loop {
            if self.inner.stop.is_cancelled() {
                return;
            }
            let it = match iterator.take() {
                Some(it) => it,
                None => {
                    let from = match self.read_checkpoint(&stream) {
                        Some(seq) => StartPosition::AfterSequence(seq),
                        None => StartPosition::TrimHorizon,
                    };
                    match spool.shard_iterator(&stream, SPOOL_SHARD, &from).await {
                        Ok(it) => it,
                        Err(e) => {
                            tracing::warn!(stream, error = %e, "spool: cannot read");
                            failures += 1;
                            tokio::time::sleep(backoff.delay(failures)).await;
                            continue;
                        }
                    }
                }
            };
            // A put is counted once its records are in the spool: what is
            // counted now, this read sees.
            let spooled_before = s.spooled.load(Ordering::Relaxed);
            let batch = match spool.get_records(&it, 500).await {
                Ok(b) => b,
                Err(e) => {
                    tracing::warn!(stream, error = %e, "spool: cannot read");
                    failures += 1;
                    tokio::time::sleep(backoff.delay(failures)).await;
                    continue;
                }
            };
            if batch.records.is_empty() {
                if batch.millis_behind_latest == 0 {
                    s.caught_up(spooled_before);
                }
                iterator = batch.next_iterator;
                tokio::select! {
                    _ = self.inner.stop.cancelled() => return,
                    _ = s.wake.notified() => {}
                    _ = tokio::time::sleep(Duration::from_millis(200)) => {}
                }
                continue;
            }
            // Routed by the stream's shards as they are now, not as they
            // were when spooled (the stream may have been resharded during
            // the outage): a record whose events all fall in one shard goes
            // as it is, the others are split by shard.
            if map.is_none() {
                map = match self.describe(&stream).await {
                    Ok(d) => ShardMap::from_description(&d)
                        .ok()
                        .map(|m| Arc::new(std::sync::RwLock::new(m))),
                    Err(e) => {
                        tracing::warn!(stream, error = %e, "spool: the stream cannot be described; shipping by the hash keys spooled");
                        None
                    }
                };
            }
            let limit = self.inner.config.record_max_bytes;
            let mut packer = Packer::new(limit);
            let current = map.as_ref().and_then(|m| m.read().ok().map(|m| m.clone()));
            let mut bytes = 0u64;
            for r in &batch.records {
                bytes += r.data.len() as u64;
                let Some((ehk, key, data)) = decode(&r.data) else {
                    tracing::error!(stream, sequence = %r.sequence, "spool: a record that is not ours; skipped");
                    continue;
                };
                let record = Aggregated {
                    data,
                    partition_key: key,
                    events: 0,
                    stamp_bytes: 0,
                };
                let Some(m) = &current else {
                    packer.push_record(ehk, record);
                    continue;
                };
                let span = kpl::hash_span(&record.data).unwrap_or((ehk, ehk));
                match m.targets().get(m.index_of(span.0)) {
                    Some(t) if t.range.holds(span) => packer.push_record(t.range.start, record),
                    _ => {
                        if let Err(e) = packer.push_events_of(&record, m) {
                            tracing::error!(stream, sequence = %r.sequence, error = %e, "spool: a record that cannot be split by shard; sent as spooled");
                            packer.push_record(ehk, record);
                        }
                    }
                }
            }
            // A backlog is often many small records (cycles of a few
            // events each); Kinesis counts records, so fill them up again.
            let queues: Queues = packer
                .finish()
                .into_iter()
                .map(|(k, q)| {
                    // Counted when they were spooled.
                    let q = q.into_iter().map(|mut r| {
                        r.events = 0;
                        r.stamp_bytes = 0;
                        r
                    });
                    (k, repack(q.collect(), limit))
                })
                .collect();
            let last = batch.records.last().map(|r| r.sequence.clone());
            let mut queues: Queues = queues;
            // Until the stream has taken all of it. After a refusal, only
            // what it did not take goes again: re-reading the batch from
            // the checkpoint would send the rest twice.
            loop {
                let write = write_routed(
                    &self.inner.remote,
                    &stream,
                    &self.inner.config,
                    &self.inner.metrics,
                    queues,
                    None,
                    map.as_ref(),
                    None,
                );
                let done = tokio::select! {
                    r = write => r,
                    _ = self.inner.stop.cancelled() => return,
                };
                match done {
                    Ok(()) => break,
                    Err(u) => {
                        let records: usize = u.queues.values().map(VecDeque::len).sum();
                        tracing::error!(
                            stream,
                            error = %u.error,
                            records,
                            "spool: the stream refused records; retrying those it did not take"
                        );
                        queues = u.queues;
                        failures += 1;
                        tokio::select! {
                            _ = self.inner.stop.cancelled() => return,
                            _ = tokio::time::sleep(backoff.delay(failures)) => {}
                        }
                    }
                }
            }
            failures = 0;
            if let Some(seq) = last {
                match self.write_checkpoint(&stream, &seq).await {
                    Ok(()) => {
                        // Whole segments now shipped free their space.
                        if let Err(e) = spool.trim_through(&stream, SPOOL_SHARD, &seq).await {
                            tracing::warn!(stream, error = %e, "spool: cannot delete shipped segments");
                        }
                    }
                    Err(e) => {
                        tracing::error!(stream, error = %e, "spool: cannot write the checkpoint")
                    }
                }
            }
            s.shipped.fetch_add(bytes, Ordering::Relaxed);
            iterator = batch.next_iterator;
            let backlog = s.backlog();
            self.inner
                .metrics
                .spool_bytes
                .get_or_create(&Metrics::stream(&stream))
                .set(backlog as i64);
        }
    }
}

impl<B: StreamBackend> StreamBackend for Spooled<B> {
    fn keeps_order_within_put(&self) -> bool {
        // Puts go to the local spool.
        true
    }

    fn put_target(&self) -> &'static str {
        "spool"
    }

    async fn create_stream(&self, name: &str, shards: u32) -> Result<(), StreamError> {
        self.inner.remote.create_stream(name, shards).await
    }

    async fn delete_stream(&self, name: &str) -> Result<(), StreamError> {
        self.inner.remote.delete_stream(name).await
    }

    async fn list_streams(&self) -> Result<Vec<String>, StreamError> {
        self.inner.remote.list_streams().await
    }

    /// The remote's description, remembered beside the spool; while the
    /// remote cannot answer (an outage, throttling), the last one
    /// remembered, so that a restart during an outage still takes events.
    async fn describe(&self, name: &str) -> Result<StreamDescription, StreamError> {
        match self.inner.remote.describe(name).await {
            Ok(d) => {
                self.remember(&d).await;
                Ok(d)
            }
            Err(e @ (StreamError::NoSuchStream(_) | StreamError::BadInput(_))) => Err(e),
            Err(e) => {
                let path = self.known_shards_path(name);
                let known = tokio::task::spawn_blocking(move || known_shards::read(&path))
                    .await
                    .ok()
                    .flatten();
                match known {
                    Some(d) if d.name == name => {
                        tracing::warn!(
                            stream = name,
                            error = %e,
                            shards = d.open_shards().count(),
                            "the stream cannot be described; spooling with the shard map last seen"
                        );
                        Ok(d)
                    }
                    _ => Err(e),
                }
            }
        }
    }

    /// Writes to the spool; answers once fsynced there.
    async fn put_records(
        &self,
        stream: &str,
        entries: &[PutEntry],
    ) -> Result<Vec<PutOutcome>, StreamError> {
        // Refuse what Kinesis would, before it is acknowledged: the shipper
        // could never deliver it.
        crate::stream::limits::check_put(entries, 0)
            .map_err(|m| StreamError::BadInput(format!("Kinesis would refuse this put: {m}")))?;
        let s = self.shipper(stream).await?;
        let backlog = s.backlog();
        if backlog > self.inner.max_backlog_bytes {
            return Err(StreamError::Full(format!(
                "the spool of {stream:?} holds {backlog} bytes not yet shipped (limit {})",
                self.inner.max_backlog_bytes
            )));
        }
        let spooled: Vec<PutEntry> = entries
            .iter()
            .map(|e| PutEntry {
                partition_key: "spool".into(),
                explicit_hash_key: None,
                data: encode(e),
            })
            .collect();
        let bytes: u64 = spooled.iter().map(|e| e.data.len() as u64).sum();
        let out = self.inner.spool.put_records(stream, &spooled).await?;
        s.spooled.fetch_add(bytes, Ordering::Relaxed);
        // The depth rises as records are spooled, not only when shipping
        // ends: during an outage the shipper's call does not end.
        self.inner
            .metrics
            .spool_bytes
            .get_or_create(&Metrics::stream(stream))
            .set(s.backlog() as i64);
        s.wake.notify_one();
        Ok(out)
    }

    async fn shard_iterator(
        &self,
        stream: &str,
        shard: &str,
        from: &StartPosition,
    ) -> Result<ShardIterator, StreamError> {
        self.inner.remote.shard_iterator(stream, shard, from).await
    }

    async fn get_records(
        &self,
        iterator: &ShardIterator,
        limit: u32,
    ) -> Result<GetRecordsOutput, StreamError> {
        self.inner.remote.get_records(iterator, limit).await
    }

    async fn split_shard(&self, stream: &str, shard: &str, at: u128) -> Result<(), StreamError> {
        self.inner.remote.split_shard(stream, shard, at).await
    }

    async fn merge_shards(&self, stream: &str, a: &str, b: &str) -> Result<(), StreamError> {
        self.inner.remote.merge_shards(stream, a, b).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::event::{EventId, Stamp};

    /// A record of `n` stamped events from counter `first`, as the producer
    /// packs them.
    fn record(first: u64, n: u64, key: &str) -> Aggregated {
        let mut a = Aggregator::new(1 << 20);
        for c in first..first + n {
            let stamp = Stamp {
                id: EventId {
                    listener: 7,
                    counter: c,
                },
                received_ms: 1_000 + c as i64 / 3,
            };
            assert!(a.try_push(key, format!("event {c}").as_bytes(), stamp));
        }
        a.finish()
    }

    fn events(q: &VecDeque<Aggregated>) -> Vec<(String, Vec<u8>, Option<Stamp>)> {
        q.iter()
            .flat_map(|r| kpl::events_of(&r.data, &r.partition_key).unwrap_or_default())
            .map(|e| (e.partition_key, e.data.to_vec(), e.stamp))
            .collect()
    }

    #[test]
    fn repack_fills_records_and_keeps_every_event_stamp_and_order() {
        let limit = 4096;
        let mut q: VecDeque<Aggregated> = (0..60)
            .map(|i| record(i * 3, 3, if i % 2 == 0 { "a" } else { "b" }))
            .collect();
        let want = events(&q);
        let out = repack(q.clone(), limit);
        assert!(
            out.len() < q.len() / 4,
            "{} records from {}",
            out.len(),
            q.len()
        );
        assert!(out.iter().all(|r| r.data.len() <= limit));
        assert_eq!(events(&out), want);

        // A large record and a plain one go on untouched, in their place.
        q.truncate(4);
        q.insert(2, record(1000, 200, "big"));
        q.push_back(Aggregated {
            data: Bytes::from_static(b"plain, not KPL"),
            partition_key: "p".into(),
            events: 0,
            stamp_bytes: 0,
        });
        q.push_back(record(2000, 2, "a"));
        let want = events(&q);
        let out = repack(q.clone(), limit);
        assert_eq!(events(&out), want);
        assert!(
            out.iter().any(|r| r.data == q[2].data),
            "the big record was rewritten"
        );
        assert!(out.iter().any(|r| &r.data[..] == b"plain, not KPL"));
        assert_eq!(out.len(), 5, "[0,1] merged, big, [2,3] merged, plain, last");
    }

    #[test]
    fn spool_records_keep_the_hash_key_and_partition_key() {
        let e = PutEntry {
            partition_key: "user-7".into(),
            explicit_hash_key: Some(42),
            data: Bytes::from_static(b"\xf3\x89record"),
        };
        let d = decode(&encode(&e));
        assert_eq!(
            d,
            Some((
                42,
                "user-7".to_owned(),
                Bytes::from_static(b"\xf3\x89record")
            ))
        );
        assert_eq!(decode(&Bytes::from_static(b"plain")), None);
    }
}
