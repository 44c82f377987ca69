//! The producer loop of one stream: packs stamped events into KPL records
//! per destination shard and writes them with PutRecords, retrying only the
//! entries that failed.
//!
//! It works in cycles (group commit): it takes every submission waiting,
//! packs them, writes them, then answers each submission. Requests that
//! arrive meanwhile form the next cycle, so the batch grows with the load and
//! a lone client never waits for a timer. When other requests are still
//! being decoded, a cycle lingers (at most `linger`) for them to fill its
//! records.
//!
//! Cycles are sent in order. On Kinesis the next is sent when the last is
//! written; on the local log, as soon as the last is in the log writer's
//! queue ([`StreamBackend::place_put`]), so the writer always has the next
//! cycle at hand and cycles queued together share one fsync: the disk, not
//! the round trip between writer and producer, sets the pace.
//!
//! Order per partition key: a PutRecords call carries at most one record per
//! destination shard, so a failed entry is re-sent before anything after it
//! for that shard (Kinesis does not order the entries of one call when some
//! fail).

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, oneshot};
use tokio::time::Instant;

use super::metrics::Metrics;
use crate::event::Stamp;
use crate::stream::kpl::{Aggregated, Aggregator, Unsealed};
use crate::stream::{PutEntry, PutOutcome, StreamBackend, StreamError};

/// Packing and writing settings of a producer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProducerConfig {
    /// Largest aggregated record, bytes (Kinesis allows 1 MiB with the key).
    pub record_max_bytes: usize,
    /// Largest PutRecords call: records and bytes.
    pub put_max_records: usize,
    pub put_max_bytes: usize,
    /// How long a cycle may wait for requests still being decoded.
    pub linger: Duration,
    /// Backoff between retries of failed entries: base and cap (jittered).
    pub retry_base: Duration,
    pub retry_max: Duration,
    /// Give up on a cycle (its requests get 503) after this long.
    pub put_timeout: Duration,
}

impl Default for ProducerConfig {
    fn default() -> Self {
        Self {
            // 1 MiB minus room for the largest partition key (256 B) and
            // then some: close to, and safely under, the Kinesis limit.
            record_max_bytes: crate::stream::limits::RECORD_MAX_BYTES - 4096,
            put_max_records: crate::stream::limits::PUT_MAX_ENTRIES,
            put_max_bytes: crate::stream::limits::PUT_MAX_BYTES,
            linger: Duration::from_millis(50),
            retry_base: Duration::from_millis(100),
            retry_max: Duration::from_secs(5),
            put_timeout: Duration::from_secs(60),
        }
    }
}

/// One event, stamped, with its partition key.
#[derive(Debug, Clone)]
pub struct Stamped {
    pub key: Arc<str>,
    pub data: Bytes,
    pub stamp: Stamp,
}

/// Events bound for one shard, aimed at it by an explicit hash key.
#[derive(Debug, Clone)]
pub struct Group {
    pub explicit_hash_key: u128,
    pub events: Vec<Stamped>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProduceError {
    #[error("the stream did not take the events within {secs} s: {last}")]
    Timeout { secs: u64, last: String },
    #[error("the stream refused the events: {0}")]
    Refused(String),
    #[error("the intake is shutting down")]
    Shutdown,
    /// The spool in front of the stream holds its limit: refused at once.
    #[error("{0}")]
    Full(String),
}

/// The intake's bounded buffer: bytes accepted but not yet written, shared
/// by every stream of a listener.
#[derive(Debug, Clone)]
pub struct Budget {
    sem: Arc<Semaphore>,
    max_bytes: usize,
}

/// A share of the buffer, held until the events are written.
#[derive(Debug)]
pub struct Reservation {
    _permit: OwnedSemaphorePermit,
    bytes: usize,
}

/// The buffer budget counts in units of this many bytes.
pub const BUDGET_UNIT: usize = 1024;
const UNIT: usize = BUDGET_UNIT;

impl Budget {
    pub fn new(max_bytes: usize) -> Self {
        let units = (max_bytes / UNIT).clamp(1, Semaphore::MAX_PERMITS);
        Self {
            sem: Arc::new(Semaphore::new(units)),
            max_bytes,
        }
    }

    /// Reserves room for `bytes`, or `None` when the buffer is full.
    pub fn try_reserve(&self, bytes: usize) -> Option<Reservation> {
        let units = u32::try_from(bytes.div_ceil(UNIT).max(1)).ok()?;
        let permit = Arc::clone(&self.sem).try_acquire_many_owned(units).ok()?;
        Some(Reservation {
            _permit: permit,
            bytes,
        })
    }

    /// Makes `r` cover `bytes` (taking more room, or giving back what is
    /// beyond it); `false`, with `r` unchanged, when the buffer is too full
    /// to grow it.
    pub fn resize(&self, r: &mut Reservation, bytes: usize) -> bool {
        let Ok(want) = u32::try_from(bytes.div_ceil(UNIT).max(1)) else {
            return false;
        };
        let have = r._permit.num_permits();
        let want = want as usize;
        if want > have {
            let Ok(extra) = Arc::clone(&self.sem).try_acquire_many_owned((want - have) as u32)
            else {
                return false;
            };
            r._permit.merge(extra);
        } else if want < have {
            drop(r._permit.split(have - want));
        }
        r.bytes = bytes;
        true
    }

    /// Bytes reserved now.
    pub fn used_bytes(&self) -> usize {
        let total = (self.max_bytes / UNIT).clamp(1, Semaphore::MAX_PERMITS);
        (total - self.sem.available_permits()) * UNIT
    }

    pub fn max_bytes(&self) -> usize {
        self.max_bytes
    }
}

struct Submission {
    groups: Vec<Group>,
    bytes: usize,
    done: oneshot::Sender<Result<(), ProduceError>>,
    _reservation: Reservation,
}

/// Sends events to a stream's producer loop. Cheap to clone.
#[derive(Debug, Clone)]
pub struct ProducerHandle {
    tx: mpsc::Sender<Submission>,
    decoding: Arc<AtomicUsize>,
    decoded: Arc<tokio::sync::Notify>,
}

/// Marks a request as being decoded, so the producer lingers for it.
#[derive(Debug)]
pub struct Decoding(Arc<AtomicUsize>, Arc<tokio::sync::Notify>);

impl Drop for Decoding {
    fn drop(&mut self) {
        // The last one out wakes a lingering cycle: a request refused while
        // decoding submits nothing, and the cycle must not wait out its
        // linger for it.
        if self.0.fetch_sub(1, Ordering::Relaxed) == 1 {
            self.1.notify_one();
        }
    }
}

impl ProducerHandle {
    pub fn decoding(&self) -> Decoding {
        self.decoding.fetch_add(1, Ordering::Relaxed);
        Decoding(Arc::clone(&self.decoding), Arc::clone(&self.decoded))
    }

    /// Hands events over and waits until they are written (durable).
    pub async fn submit(
        &self,
        groups: Vec<Group>,
        reservation: Reservation,
        decoding: Decoding,
    ) -> Result<(), ProduceError> {
        let (done, wait) = oneshot::channel();
        let bytes = reservation.bytes;
        self.tx
            .send(Submission {
                groups,
                bytes,
                done,
                _reservation: reservation,
            })
            .await
            .map_err(|_| ProduceError::Shutdown)?;
        drop(decoding);
        wait.await.map_err(|_| ProduceError::Shutdown)?
    }
}

/// Starts the producer loop of `stream` on the current runtime; it ends when
/// every handle is dropped, after writing what it was given.
pub fn spawn<B: StreamBackend>(
    backend: B,
    stream: String,
    config: ProducerConfig,
    metrics: Metrics,
    map: Option<SharedMap>,
) -> (ProducerHandle, tokio::task::JoinHandle<()>) {
    let (tx, rx) = mpsc::channel(1024);
    let decoding = Arc::new(AtomicUsize::new(0));
    let decoded = Arc::new(tokio::sync::Notify::new());
    let p = Producer {
        backend,
        stream,
        config,
        metrics,
        map,
        decoding: Arc::clone(&decoding),
        decoded: Arc::clone(&decoded),
    };
    let task = tokio::spawn(p.run(rx));
    (
        ProducerHandle {
            tx,
            decoding,
            decoded,
        },
        task,
    )
}

/// A stream's shard map, shared by whoever routes events by it (the
/// intake) and whoever writes by it (the producer, the spool's shipper),
/// which refreshes it when a record lands on another shard than predicted.
pub type SharedMap = Arc<std::sync::RwLock<super::route::ShardMap>>;

struct Producer<B> {
    backend: B,
    stream: String,
    config: ProducerConfig,
    metrics: Metrics,
    /// Routes by this map, and re-routes what a reshard sends elsewhere
    /// (`None` when writing to the spool, whose shipper does that).
    map: Option<SharedMap>,
    decoding: Arc<AtomicUsize>,
    /// Woken when no request is being decoded any more.
    decoded: Arc<tokio::sync::Notify>,
}

impl<B: StreamBackend> Producer<B> {
    async fn run(self, mut rx: mpsc::Receiver<Submission>) {
        let this = Arc::new(self);
        // The last cycle sent, and word of when its records have their
        // place in the backend's write order. The next cycle is collected
        // and packed meanwhile (MD5 included, overlapping the write's I/O),
        // and sent only once the last has its place (the local log: in its
        // writer's queue, so both may share an fsync) or, where the backend
        // cannot place puts, is written: order is kept either way.
        let mut last: Option<(tokio::task::JoinHandle<()>, oneshot::Receiver<()>)> = None;
        // Cycles sent and not yet written, awaited before returning.
        let mut writing: Vec<tokio::task::JoinHandle<()>> = Vec::new();
        while let Some(first) = rx.recv().await {
            let mut bytes = first.bytes;
            let mut cycle = vec![first];
            while let Ok(s) = rx.try_recv() {
                bytes += s.bytes;
                cycle.push(s);
            }
            if !this.config.linger.is_zero() && bytes < this.config.record_max_bytes {
                let deadline = Instant::now() + this.config.linger;
                while bytes < this.config.record_max_bytes
                    && this.decoding.load(Ordering::Relaxed) > 0
                {
                    tokio::select! {
                        r = tokio::time::timeout_at(deadline, rx.recv()) => match r {
                            Ok(Some(s)) => {
                                bytes += s.bytes;
                                cycle.push(s);
                            }
                            Ok(None) | Err(_) => break,
                        },
                        // Decoding ended without a submission: look again.
                        () = this.decoded.notified() => {}
                    }
                }
            }
            // MD5s run on the blocking pool, in parallel with each other
            // and with the previous cycle's write.
            let (sealing, needs) = match this.pack(&mut cycle) {
                Ok((s, n)) => (Ok(s), n),
                Err(e) => (Err(e), Vec::new()),
            };
            if let Some((previous, placed)) = last.take() {
                if placed.await.is_ok() {
                    writing.retain(|w| !w.is_finished());
                    writing.push(previous);
                } else {
                    let _ = previous.await;
                }
            }
            let (tell, placed) = oneshot::channel();
            let p = Arc::clone(&this);
            let task = tokio::spawn(async move {
                let packed = match sealing {
                    Ok(s) => sealed(s).await,
                    Err(e) => Err(e),
                };
                let result = match packed {
                    Ok(queues) => {
                        let cut = queues.iter().map(|(k, q)| (*k, q.len())).collect();
                        write_routed(
                            &p.backend,
                            &p.stream,
                            &p.config,
                            &p.metrics,
                            queues,
                            Some(p.config.put_timeout),
                            p.map.as_ref(),
                            Some(tell),
                        )
                        .await
                        .map_err(|u| (u, cut))
                    }
                    Err(e) => Err((
                        Unwritten {
                            error: e,
                            queues: Queues::new(),
                            rerouted: false,
                        },
                        BTreeMap::new(),
                    )),
                };
                match result {
                    Ok(()) => {
                        for s in cycle {
                            let _ = s.done.send(Ok(()));
                        }
                    }
                    Err((unwritten, cut)) => {
                        let e = unwritten.error.clone();
                        // A request all of whose records were written
                        // succeeded, whatever became of the others; the rest
                        // get the error (some of their events may be in the
                        // stream: at least once).
                        let answered = answer(cycle, &needs, &cut, &unwritten);
                        tracing::warn!(
                            stream = %p.stream,
                            error = %e,
                            requests_failed = answered.failed,
                            requests_written = answered.written,
                            "events not written"
                        );
                    }
                }
            });
            last = Some((task, placed));
        }
        writing.extend(last.map(|(task, _)| task));
        for w in writing {
            let _ = w.await;
        }
    }

    /// Packs the cycle's events into records per explicit hash key, in order,
    /// and starts sealing each record as soon as it is full. Also returns,
    /// per submission, the records it needs: for each destination, the
    /// position (in that destination's queue) of the record holding its last
    /// event there.
    #[allow(clippy::type_complexity)]
    fn pack(
        &self,
        cycle: &mut [Submission],
    ) -> Result<(BTreeMap<u128, Vec<Sealing>>, Vec<Needs>), ProduceError> {
        let mut aggs: BTreeMap<u128, Aggregator> = BTreeMap::new();
        let mut queues: BTreeMap<u128, Vec<Sealing>> = BTreeMap::new();
        let mut needs = Vec::with_capacity(cycle.len());
        for s in cycle.iter_mut() {
            let mut n = Needs::new();
            for g in std::mem::take(&mut s.groups) {
                let a = aggs
                    .entry(g.explicit_hash_key)
                    .or_insert_with(|| Aggregator::new(self.config.record_max_bytes));
                if !g.events.is_empty() {
                    n.push((g.explicit_hash_key, usize::MAX));
                }
                for e in &g.events {
                    if a.try_push(&e.key, &e.data, e.stamp) {
                        continue;
                    }
                    queues
                        .entry(g.explicit_hash_key)
                        .or_default()
                        .push(Sealing::start(a.finish_unsealed()));
                    if !a.try_push(&e.key, &e.data, e.stamp) {
                        // The handler rejects such events before; never lose one silently.
                        return Err(ProduceError::Refused(format!(
                            "an event of {} bytes does not fit in a record of {} bytes",
                            e.data.len(),
                            self.config.record_max_bytes
                        )));
                    }
                }
                if let Some(last) = n.last_mut().filter(|l| l.1 == usize::MAX) {
                    // The record filling now: the next in its queue.
                    last.1 = queues.get(&g.explicit_hash_key).map_or(0, Vec::len);
                }
            }
            needs.push(n);
        }
        for (k, mut a) in aggs {
            if !a.is_empty() {
                queues
                    .entry(k)
                    .or_default()
                    .push(Sealing::start(a.finish_unsealed()));
            }
        }
        Ok((queues, needs))
    }
}

/// What one submission of a cycle needs written: per destination it wrote
/// to, the position of the record holding its last event there.
type Needs = Vec<(u128, usize)>;

/// How a failed cycle's submissions were answered.
struct Answered {
    written: usize,
    failed: usize,
}

/// Answers the submissions of a cycle whose write stopped with `unwritten`:
/// a submission all of whose records were written gets `Ok`, the others the
/// error. `cut`: records per destination in the cycle; the unwritten ones
/// are the last of each queue. Without `needs` (packing failed), all fail.
fn answer(
    cycle: Vec<Submission>,
    needs: &[Needs],
    cut: &BTreeMap<u128, usize>,
    unwritten: &Unwritten,
) -> Answered {
    let written_through = |k: &u128| {
        let total = cut.get(k).copied().unwrap_or(0);
        total - unwritten.queues.get(k).map_or(0, VecDeque::len).min(total)
    };
    let mut a = Answered {
        written: 0,
        failed: 0,
    };
    for (i, s) in cycle.into_iter().enumerate() {
        let all_written = !unwritten.rerouted
            && needs
                .get(i)
                .is_some_and(|n| n.iter().all(|(k, pos)| *pos < written_through(k)));
        if all_written {
            a.written += 1;
            let _ = s.done.send(Ok(()));
        } else {
            a.failed += 1;
            let _ = s.done.send(Err(unwritten.error.clone()));
        }
    }
    a
}

/// Records below this size are sealed in place: a blocking task costs
/// more than their MD5.
const SEAL_INLINE_BYTES: usize = 64 << 10;

/// A record being sealed: done already, or on the blocking pool.
enum Sealing {
    Done(Aggregated),
    Running(tokio::task::JoinHandle<Aggregated>),
}

impl Sealing {
    /// Starts sealing a record: a large one on a blocking thread, so the
    /// MD5s of a cycle run on every core, beside the rest of the packing.
    fn start(u: Unsealed) -> Self {
        if u.len() < SEAL_INLINE_BYTES {
            Sealing::Done(u.seal())
        } else {
            Sealing::Running(tokio::task::spawn_blocking(move || u.seal()))
        }
    }
}

/// The sealed records, in their order.
async fn sealed(
    sealing: BTreeMap<u128, Vec<Sealing>>,
) -> Result<BTreeMap<u128, VecDeque<Aggregated>>, ProduceError> {
    let mut queues = BTreeMap::new();
    for (k, records) in sealing {
        let mut q = VecDeque::with_capacity(records.len());
        for r in records {
            q.push_back(match r {
                Sealing::Done(a) => a,
                Sealing::Running(h) => h
                    .await
                    .map_err(|e| ProduceError::Refused(format!("sealing a record failed: {e}")))?,
            });
        }
        queues.insert(k, q);
    }
    Ok(queues)
}

/// Records per destination (explicit hash key), in order.
pub(crate) type Queues = BTreeMap<u128, VecDeque<Aggregated>>;

/// Why [`write_queues`] stopped, and the records it had not written: the
/// caller may send exactly those again, and nothing twice.
pub(crate) struct Unwritten {
    pub error: ProduceError,
    pub queues: Queues,
    /// The records were packed again for a reshard: `queues` no longer
    /// line up with the ones given, so nobody can tell which of them were
    /// written (every request of the cycle fails: at least once).
    pub rerouted: bool,
}

/// Writes queued records, one per destination per PutRecords call, in
/// order per destination, re-sending only failed entries with backoff, and
/// gives up after `timeout` (`None`: never, for the spool's shipper);
/// returns on failure what was not written. Retryable
/// failures (throttling, internal errors, I/O) are retried here; a refusal
/// (a call or an entry failing for a reason retrying will not fix soon, such
/// as a KMS key the stream cannot use) ends the call, after every entry the
/// stream did take has left its queue.
#[allow(clippy::too_many_arguments)]
pub(crate) async fn write_queues<B: StreamBackend>(
    backend: &B,
    stream: &str,
    config: &ProducerConfig,
    metrics: &Metrics,
    mut queues: Queues,
    timeout: Option<Duration>,
    map: Option<&SharedMap>,
    mut placed: Option<oneshot::Sender<()>>,
) -> Result<Rerouting, Unwritten> {
    let mut rerouting = Rerouting::default();
    // Records taken out of their queues to be re-routed go back into the
    // unwritten ones if the write stops: they were not written.
    let stop = |error: ProduceError, mut queues: Queues, rerouting: Rerouting| {
        for (k, q) in rerouting.queues {
            let rest = queues.remove(&k).unwrap_or_default();
            let mut all = q;
            all.extend(rest);
            queues.insert(k, all);
        }
        Err(Unwritten {
            error,
            queues,
            rerouted: false,
        })
    };
    let label = Metrics::put(stream, backend.put_target());
    let stream_label = Metrics::stream(stream);
    let started = Instant::now();
    let mut attempt: u32 = 0;
    while !queues.is_empty() {
        // Records in order per destination, within the call's limits: one
        // per destination unless the backend keeps order within a put.
        let per_destination = if backend.keeps_order_within_put() {
            usize::MAX
        } else {
            1
        };
        let mut entries = Vec::new();
        let mut keys: Vec<(u128, usize)> = Vec::new();
        let mut size = 0;
        'fill: for (&k, q) in &queues {
            for (i, r) in q.iter().take(per_destination).enumerate() {
                let sz = r.data.len() + r.partition_key.len();
                if entries.len() == config.put_max_records
                    || (!entries.is_empty() && size + sz > config.put_max_bytes)
                {
                    break 'fill;
                }
                entries.push(PutEntry {
                    partition_key: r.partition_key.clone(),
                    explicit_hash_key: Some(k),
                    data: r.data.clone(),
                });
                keys.push((k, i));
                size += sz;
            }
        }
        metrics.put_calls.get_or_create(&label).inc();
        let t = Instant::now();
        // A call that does not answer is cut off at the caller's deadline:
        // whether its records were written is then unknown, and the caller
        // is told they were not (at least once).
        // A call that takes all that is left, on a backend that places
        // puts, tells `placed` once it has its place.
        let whole = entries.len() == queues.values().map(VecDeque::len).sum::<usize>();
        let tell = if whole { placed.take() } else { None };
        let put = put_placing(backend, stream, &entries, tell);
        let result = match timeout {
            None => put.await,
            Some(limit) => {
                let left = limit.saturating_sub(started.elapsed());
                match tokio::time::timeout(left, put).await {
                    Ok(r) => r,
                    Err(_) => {
                        return stop(
                            ProduceError::Timeout {
                                secs: limit.as_secs(),
                                last: format!(
                                    "a PutRecords call had not answered after {} ms",
                                    t.elapsed().as_millis()
                                ),
                            },
                            queues,
                            rerouting,
                        );
                    }
                }
            }
        };
        metrics
            .put_latency
            .get_or_create(&label)
            .observe(t.elapsed().as_secs_f64());
        let failure = match result {
            Ok(outcomes) => {
                let mut failed = 0u64;
                let mut last = String::new();
                let mut refused: Option<String> = None;
                // Written entries leave their queue; a destination stops at
                // its first failure (what follows it waits, to keep order).
                let mut done: BTreeMap<u128, usize> = BTreeMap::new();
                let mut blocked: Vec<u128> = Vec::new();
                // Destinations a reshard has made stale: the rest of their
                // queue is re-routed, not sent to the same place again.
                let mut stale: Vec<u128> = Vec::new();
                // Whether a record that landed on `shard` may hold events
                // outside its range: the shard is not in the map (the map
                // is older than it), or its range does not hold them all.
                let misplaced = |r: &Aggregated, shard: &str| -> bool {
                    let Some(Ok(m)) = map.map(|m| m.read()) else {
                        return false;
                    };
                    let span = crate::stream::kpl::span_of(&r.data, &r.partition_key);
                    m.targets()
                        .iter()
                        .find(|t| t.shard == shard)
                        .is_none_or(|t| !t.range.holds(span))
                };
                for ((k, i), o) in keys.iter().zip(&outcomes) {
                    if stale.contains(k) {
                        continue;
                    }
                    match o {
                        PutOutcome::Failed { code, .. } if code == crate::stream::WRONG_SHARD => {
                            // Refused whole (the local log): nothing stored.
                            // Behind another failure of its queue, it stays
                            // queued for the next call.
                            if !blocked.contains(k) {
                                stale.push(*k);
                            }
                        }
                        PutOutcome::Written { shard, .. } if !blocked.contains(k) => {
                            debug_assert_eq!(done.get(k).copied().unwrap_or(0), *i);
                            *done.entry(*k).or_default() += 1;
                            if let Some(r) = queues.get(k).and_then(|q| q.get(*i))
                                && misplaced(r, shard)
                            {
                                // Stored where its events may not belong
                                // (Kinesis cannot refuse): checked once the
                                // map is fresh, its events sent again if some
                                // fall outside that shard; the rest of its
                                // queue is routed again.
                                rerouting.landed.push((r.clone(), shard.clone()));
                                stale.push(*k);
                            }
                        }
                        PutOutcome::Written { .. } => {
                            // Written after an earlier failure of the same
                            // destination: only a backend that does not keep
                            // order does this, and it gets one per call.
                            tracing::error!(
                                stream,
                                "a record was written after a failed one of its shard"
                            );
                        }
                        failed_outcome @ PutOutcome::Failed { code, message } => {
                            failed += 1;
                            blocked.push(*k);
                            if !failed_outcome.is_retryable() && refused.is_none() {
                                refused = Some(format!("{code}: {message}"));
                            }
                            last = format!("{code}: {message}");
                        }
                    }
                }
                for (k, n) in done {
                    if let Some(q) = queues.get_mut(&k) {
                        for r in q.drain(..n) {
                            metrics.put_records.get_or_create(&label).inc();
                            metrics
                                .record_bytes
                                .get_or_create(&label)
                                .inc_by(r.data.len() as u64);
                            metrics
                                .stamp_bytes
                                .get_or_create(&label)
                                .inc_by(r.stamp_bytes as u64);
                            metrics
                                .events_accepted
                                .get_or_create(&stream_label)
                                .inc_by(r.events as u64);
                        }
                    }
                }
                for k in stale {
                    if let Some(q) = queues.remove(&k)
                        && !q.is_empty()
                    {
                        rerouting.queues.entry(k).or_default().extend(q);
                    }
                }
                queues.retain(|_, q| !q.is_empty());
                if let Some(refusal) = refused {
                    // Entries written in this call have left their queues
                    // above: what goes back to the caller was not written.
                    metrics
                        .put_failed_entries
                        .get_or_create(&label)
                        .inc_by(failed);
                    return stop(ProduceError::Refused(refusal), queues, rerouting);
                }
                if failed > 0 {
                    metrics
                        .put_failed_entries
                        .get_or_create(&label)
                        .inc_by(failed);
                    tracing::debug!(stream = %stream, failed, "PutRecords entries failed; re-sending only those");
                    Some(last)
                } else {
                    None
                }
            }
            // The spool is full: waiting out the deadline would not empty it
            // (the stream has been away a while); the caller is told at once.
            Err(StreamError::Full(m)) => {
                return stop(ProduceError::Full(m), queues, rerouting);
            }
            Err(e) if transient(&e) => Some(e.to_string()),
            Err(e) => {
                return stop(ProduceError::Refused(e.to_string()), queues, rerouting);
            }
        };
        match failure {
            None => attempt = 0,
            Some(last) => {
                if let Some(t) = timeout
                    && started.elapsed() >= t
                {
                    return stop(
                        ProduceError::Timeout {
                            secs: t.as_secs(),
                            last,
                        },
                        queues,
                        rerouting,
                    );
                }
                attempt = attempt.saturating_add(1);
                metrics.put_retries.get_or_create(&label).inc();
                // Say so when it goes on (the spool's shipper never gives
                // up), without a line per attempt.
                if attempt == 3 || attempt.is_multiple_of(20) {
                    tracing::warn!(%stream, attempt, error = %last, "writes keep failing; retrying");
                }
                let mut wait = backoff(config, attempt);
                if let Some(t) = timeout {
                    // Wake at the deadline at the latest, to say so then.
                    wait = wait.min(t.saturating_sub(started.elapsed()));
                }
                tokio::time::sleep(wait).await;
            }
        }
    }
    Ok(rerouting)
}

/// What a write found a reshard had made stale.
#[derive(Debug, Default)]
pub(crate) struct Rerouting {
    /// Records not written (refused by the local log, or queued behind a
    /// stale destination), per destination, in order.
    pub queues: Queues,
    /// Records written, but on another shard than predicted, and where.
    pub landed: Vec<(Aggregated, String)>,
}

impl Rerouting {
    fn is_empty(&self) -> bool {
        self.queues.is_empty() && self.landed.is_empty()
    }
}

/// `put_records`, or, with `placed`, the put placed in the backend's write
/// order and `placed` told so before its outcome is awaited (when the
/// backend cannot place puts, `placed` is dropped untold).
async fn put_placing<B: StreamBackend>(
    backend: &B,
    stream: &str,
    entries: &[PutEntry],
    placed: Option<oneshot::Sender<()>>,
) -> Result<Vec<PutOutcome>, StreamError> {
    if let Some(tell) = placed
        && let Some(put) = backend.place_put(stream, entries)?
    {
        let _ = tell.send(());
        return put.outcome().await;
    }
    backend.put_records(stream, entries).await
}

/// How many times a write refreshes the map and re-routes before giving up.
const REROUTE_ROUNDS: u32 = 5;

/// [`write_queues`], then, with a shard map, the re-routing a reshard
/// calls for: the map is refreshed; records written on another shard than
/// predicted whose sub-records all lie in that shard's range stand, the
/// others have every event sent again (a KCL reader drops such a record
/// whole, as Kinesthetic's consumer does), and records not written are
/// packed again by the fresh map. Every sub-record then lies in the range
/// of the shard it is read from.
///
/// `placed` is told once the records all have their place in the backend's
/// write order (see [`StreamBackend::place_put`]), so a writer that keeps
/// order may send what follows before they are durable; dropped untold
/// when that never happens (the backend cannot place puts, or the records
/// took more than one call).
#[allow(clippy::too_many_arguments)]
pub(crate) async fn write_routed<B: StreamBackend>(
    backend: &B,
    stream: &str,
    config: &ProducerConfig,
    metrics: &Metrics,
    queues: Queues,
    timeout: Option<Duration>,
    map: Option<&SharedMap>,
    placed: Option<oneshot::Sender<()>>,
) -> Result<(), Unwritten> {
    let started = Instant::now();
    let left = |t: Duration| t.saturating_sub(started.elapsed());
    let mut r = write_queues(
        backend, stream, config, metrics, queues, timeout, map, placed,
    )
    .await?;
    let Some(map) = map else { return Ok(()) };
    for round in 0..REROUTE_ROUNDS {
        if r.is_empty() {
            return Ok(());
        }
        let fail = |error: ProduceError, r: Rerouting| Unwritten {
            error,
            queues: r.queues,
            rerouted: true,
        };
        let described = match timeout {
            Some(t) => tokio::time::timeout(left(t), backend.describe(stream))
                .await
                .unwrap_or_else(|_| Err(StreamError::Service("describe timed out".into()))),
            None => backend.describe(stream).await,
        };
        let d = match described {
            Ok(d) => d,
            Err(e) => {
                return Err(fail(
                    ProduceError::Refused(format!(
                        "the stream was resharded and cannot be described: {e}"
                    )),
                    r,
                ));
            }
        };
        let fresh = match super::route::ShardMap::from_description(&d) {
            Ok(m) => m,
            Err(e) => return Err(fail(ProduceError::Refused(e.to_string()), r)),
        };
        tracing::info!(
            stream,
            round,
            shards = fresh.len(),
            "records met a reshard: the shard map is refreshed and they are re-routed"
        );
        if let Ok(mut m) = map.write() {
            *m = fresh.clone();
        }
        let mut again: Vec<Aggregated> = Vec::new();
        for (record, shard) in std::mem::take(&mut r.landed) {
            let range = d
                .shards
                .iter()
                .find(|s| s.id == shard)
                .map(|s| s.hash_range);
            let span = crate::stream::kpl::span_of(&record.data, &record.partition_key);
            let inside = range.is_some_and(|r| r.holds(span));
            if !inside {
                metrics
                    .rerouted_records
                    .get_or_create(&Metrics::stream(stream))
                    .inc();
                tracing::warn!(
                    stream,
                    %shard,
                    events = record.events,
                    "a record landed on a shard whose range does not hold all its events: they are sent again"
                );
                again.push(record);
            }
        }
        for (_, q) in std::mem::take(&mut r.queues) {
            again.extend(q);
        }
        if again.is_empty() {
            return Ok(());
        }
        let queues = match regroup(again, &fresh, config.record_max_bytes) {
            Ok(q) => q,
            Err(e) => return Err(fail(e, Rerouting::default())),
        };
        let t = timeout.map(left);
        r = write_queues(backend, stream, config, metrics, queues, t, Some(map), None)
            .await
            .map_err(|mut u| {
                u.rerouted = true;
                u
            })?;
    }
    if r.is_empty() {
        return Ok(());
    }
    Err(Unwritten {
        error: ProduceError::Refused(format!(
            "the stream kept being resharded: records re-routed {REROUTE_ROUNDS} times"
        )),
        queues: r.queues,
        rerouted: true,
    })
}

/// The events of `records`, packed again by `map`: each to the shard whose
/// range holds its hash, in their order.
fn regroup(
    records: Vec<Aggregated>,
    map: &super::route::ShardMap,
    limit: usize,
) -> Result<Queues, ProduceError> {
    let mut p = Packer::new(limit);
    for r in records {
        p.push_events_of(&r, map)?;
    }
    Ok(p.finish())
}

/// Builds queues of records per destination, in order: whole records
/// where they can go as they are, single events packed into records.
pub(crate) struct Packer {
    limit: usize,
    aggs: BTreeMap<u128, Aggregator>,
    queues: Queues,
}

impl Packer {
    pub(crate) fn new(limit: usize) -> Self {
        Self {
            limit,
            aggs: BTreeMap::new(),
            queues: Queues::new(),
        }
    }

    fn flush(&mut self, k: u128) {
        if let Some(a) = self.aggs.get_mut(&k)
            && !a.is_empty()
        {
            self.queues.entry(k).or_default().push_back(a.finish());
        }
    }

    /// A record to destination `k` as it is, after what came before.
    pub(crate) fn push_record(&mut self, k: u128, r: Aggregated) {
        self.flush(k);
        self.queues.entry(k).or_default().push_back(r);
    }

    /// The events of `r`, each to the shard of `map` its hash falls in.
    pub(crate) fn push_events_of(
        &mut self,
        r: &Aggregated,
        map: &super::route::ShardMap,
    ) -> Result<(), ProduceError> {
        let events = crate::stream::kpl::events_of(&r.data, &r.partition_key)
            .map_err(|e| ProduceError::Refused(format!("a record to re-route: {e}")))?;
        for e in events {
            let h = match e.explicit_hash_key.as_deref().map(str::parse::<u128>) {
                Some(Ok(h)) => h,
                _ => crate::stream::hash_key_of(&e.partition_key),
            };
            let Some(k) = map.targets().get(map.index_of(h)).map(|t| t.range.start) else {
                continue;
            };
            let Some(stamp) = e.stamp else {
                // Not ours to pack (no stamp to carry): on its own.
                self.push_record(
                    k,
                    Aggregated {
                        data: e.data,
                        partition_key: e.partition_key,
                        events: 1,
                        stamp_bytes: 0,
                    },
                );
                continue;
            };
            self.push_stamped(k, &e.partition_key, &e.data, stamp)?;
        }
        Ok(())
    }

    /// One stamped event to the shard of `map` its key hashes to.
    pub(crate) fn push_event(
        &mut self,
        map: &super::route::ShardMap,
        key: &str,
        data: &[u8],
        stamp: Stamp,
    ) -> Result<(), ProduceError> {
        let h = crate::stream::hash_key_of(key);
        let Some(k) = map.targets().get(map.index_of(h)).map(|t| t.range.start) else {
            return Err(ProduceError::Refused("the stream has no open shard".into()));
        };
        self.push_stamped(k, key, data, stamp)
    }

    fn push_stamped(
        &mut self,
        k: u128,
        key: &str,
        data: &[u8],
        stamp: Stamp,
    ) -> Result<(), ProduceError> {
        let limit = self.limit;
        let a = self.aggs.entry(k).or_insert_with(|| Aggregator::new(limit));
        if a.try_push(key, data, stamp) {
            return Ok(());
        }
        let full = a.finish();
        if !a.try_push(key, data, stamp) {
            return Err(ProduceError::Refused(format!(
                "an event of {} bytes does not fit in a record of {limit} bytes",
                data.len()
            )));
        }
        self.queues.entry(k).or_default().push_back(full);
        Ok(())
    }

    pub(crate) fn finish(mut self) -> Queues {
        let keys: Vec<u128> = self.aggs.keys().copied().collect();
        for k in keys {
            self.flush(k);
        }
        self.queues
    }
}

fn transient(e: &StreamError) -> bool {
    matches!(
        e,
        StreamError::Throttled(_)
            | StreamError::Service(_)
            | StreamError::Io { .. }
            | StreamError::NotActive { .. }
    )
}

fn backoff(c: &ProducerConfig, attempt: u32) -> Duration {
    crate::retry::Backoff::new(c.retry_base, c.retry_max).delay(attempt)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// After a reshard's re-routing failed, no request of the cycle is
    /// answered written: what was re-packed cannot be traced back to them.
    #[test]
    fn a_failed_reroute_fails_every_request_of_its_cycle() {
        let budget = Budget::new(1 << 20);
        // Each request needs record 0 of its destination; both queues of
        // one record each were written, as far as the positions go.
        let needs: Vec<Needs> = vec![vec![(1, 0)], vec![(2, 0)]];
        let cut: BTreeMap<u128, usize> = [(1, 1), (2, 1)].into_iter().collect();
        for (rerouted, want_ok) in [(false, 2), (true, 0)] {
            let mut waits_now = Vec::new();
            let mut cycle_now = Vec::new();
            for _ in 0..2 {
                let (done, wait) = oneshot::channel();
                waits_now.push(wait);
                cycle_now.push(Submission {
                    groups: Vec::new(),
                    bytes: 1,
                    done,
                    _reservation: budget.try_reserve(1).unwrap_or_else(|| panic!("budget")),
                });
            }
            let u = Unwritten {
                error: ProduceError::Refused("x".into()),
                queues: Queues::new(),
                rerouted,
            };
            let a = answer(cycle_now, &needs, &cut, &u);
            assert_eq!(
                (a.written, a.failed),
                (want_ok, 2 - want_ok),
                "rerouted {rerouted}"
            );
            let ok = waits_now
                .into_iter()
                .filter_map(|mut w| w.try_recv().ok())
                .filter(Result::is_ok)
                .count();
            assert_eq!(ok, want_ok);
        }
    }

    #[test]
    fn backoff_grows_and_is_capped() {
        let c = ProducerConfig::default();
        for attempt in 1..40 {
            let d = backoff(&c, attempt);
            assert!(d >= c.retry_base, "{d:?}");
            assert!(d <= c.retry_max, "{d:?}");
        }
    }

    #[test]
    fn the_budget_refuses_when_full_and_frees_on_drop() {
        let b = Budget::new(10 * 1024);
        let r1 = b.try_reserve(6 * 1024);
        assert!(r1.is_some());
        assert!(b.try_reserve(6 * 1024).is_none(), "over budget");
        assert_eq!(b.used_bytes(), 6 * 1024);
        drop(r1);
        assert!(b.try_reserve(6 * 1024).is_some());
    }
}
