//! One pipeline over one shard: read a batch, run it through a fresh
//! filter job, offer each record's lines to every sink, write the objects
//! the sinks cut, and move the checkpoint once every sink has what came
//! before it.
//!
//! A batch runs on one filter version from start to end (the version is
//! taken once per batch). When the filter file is removed the worker stops
//! taking batches, holding its checkpoint, until a file of that name is
//! back. On a stop it finishes the batch in hand and the write in flight,
//! checkpoints what is written, and leaves the rest to be read again: a
//! buffer is never cut early by a stop, so the objects a restart writes are
//! the ones an uninterrupted run would have written.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use super::{PipelineSpec, SinkSpec};
use crate::config::ErrorPolicy;
use crate::consumer::checkpoint::{
    Checkpoint, CheckpointError, CheckpointStore, Lease, SinkPosition,
};
use crate::consumer::metrics::{
    ConsumerMetrics, DeadLabel, FailureLabel, PipelineLabel, ShardLabel, SinkLabel, failure_kind,
};
use crate::consumer::reader::{Read, ShardReader, Undecodable};
use crate::consumer::status::StatusBoard;
use crate::event::{Batch, SequenceNumber};
use crate::filter::{
    Input, JobError, LoadedFilter, OutLine, Ran, Registry, is_line_dependent, run_batch,
};
use crate::retry::Backoff;
use crate::sink::SinkError;
use crate::sink::archive::{ArchiveLine, ArchiveWriter, Origin, Sealed};
use crate::sink::dead_letter::{Entry, Reason};
use crate::stream::StreamBackend;

/// How a worker ended.
#[derive(Debug)]
pub enum Finished {
    /// The shard is closed and all of it is delivered (checkpoint at its
    /// end): the lease as written.
    ShardEnd(Box<Lease>),
    /// Asked to stop.
    Stopped,
}

#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    #[error(transparent)]
    Checkpoint(#[from] CheckpointError),
    #[error("{0}")]
    Setup(String),
}

/// What a worker needs besides its shard.
#[derive(Debug, Clone)]
pub struct WorkerContext<C: CheckpointStore> {
    pub store: C,
    pub registry: Option<Arc<Registry>>,
    pub metrics: ConsumerMetrics,
    pub status: StatusBoard,
    pub poll: Duration,
    pub cancel: CancellationToken,
}

/// Writes a lease, counting it.
async fn persist<C: CheckpointStore>(
    ctx: &WorkerContext<C>,
    label: &ShardLabel,
    lease: &mut Lease,
) -> Result<(), CheckpointError> {
    *lease = ctx.store.put(lease).await?;
    ctx.metrics.checkpoints.get_or_create(label).inc();
    Ok(())
}

/// One pipeline reading one shard.
pub struct ShardWorker<B: StreamBackend, C: CheckpointStore> {
    spec: Arc<PipelineSpec>,
    ctx: WorkerContext<C>,
    reader: ShardReader<B>,
    lease: Lease,
    /// One per sink of the spec, in order; then the dead-letter sink.
    writers: Vec<ArchiveWriter>,
    label: ShardLabel,
    /// The checkpoint as last written.
    written: Checkpoint,
    last_write: Instant,
    /// Records waiting since (for the checkpoint-age gauge).
    waiting_since: Option<Instant>,
    module: Option<Arc<str>>,
}

impl<B: StreamBackend, C: CheckpointStore> std::fmt::Debug for ShardWorker<B, C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ShardWorker")
            .field("pipeline", &self.spec.name)
            .field("shard", &self.lease.shard)
            .finish_non_exhaustive()
    }
}

/// Checkpoints without sink activity are written at most this often.
const CHECKPOINT_EVERY: Duration = Duration::from_secs(1);

impl<B: StreamBackend, C: CheckpointStore> ShardWorker<B, C> {
    /// A worker for `lease`'s shard, reading with `reader` (which starts
    /// just after the lease's checkpoint).
    pub fn new(
        spec: Arc<PipelineSpec>,
        ctx: WorkerContext<C>,
        reader: ShardReader<B>,
        lease: Lease,
    ) -> Result<Self, WorkerError> {
        let origin = Origin {
            pipeline: spec.name.clone(),
            filter: spec.filter_label().to_owned(),
            stream: spec.stream.clone(),
            shard: lease.shard.clone(),
        };
        let start = match &lease.checkpoint {
            Checkpoint::After(s) => Some(s.clone()),
            _ => None,
        };
        let mut writers = Vec::new();
        for s in spec.sinks.iter().chain(spec.dead_letter.iter()) {
            let pos = lease.sinks.get(&s.name).cloned().unwrap_or_default();
            writers.push(writer(s, &origin, pos, start.clone())?);
        }
        let label = ConsumerMetrics::shard(&spec.name, lease.shard.as_str());
        Ok(Self {
            written: lease.checkpoint.clone(),
            spec,
            ctx,
            reader,
            lease,
            writers,
            label,
            last_write: Instant::now(),
            waiting_since: None,
            module: None,
        })
    }

    fn status(&self, f: impl FnOnce(&mut crate::consumer::status::ShardStatus)) {
        self.ctx
            .status
            .update_shard(&self.spec.name, self.lease.shard.as_str(), f);
    }

    fn set_state(&self, state: &str) {
        self.status(|s| {
            if s.state != state {
                s.state = state.to_owned();
            }
        });
    }

    /// Runs until the shard is delivered to its end, or `cancel`.
    pub async fn run(mut self) -> Result<Finished, WorkerError> {
        let backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(30));
        let mut errors = 0u32;
        self.publish_checkpoint();
        loop {
            if self.ctx.cancel.is_cancelled() {
                self.checkpoint_positions().await?;
                self.set_state("stopped");
                return Ok(Finished::Stopped);
            }
            let filter = match self.current_filter() {
                Ok(f) => f,
                Err(()) => {
                    self.set_state("waiting-for-filter");
                    self.sleep(self.ctx.poll.max(Duration::from_millis(200)))
                        .await;
                    continue;
                }
            };
            let read = tokio::select! {
                _ = self.ctx.cancel.cancelled() => continue,
                r = self.reader.read() => r,
            };
            self.ctx
                .metrics
                .millis_behind
                .get_or_create(&self.label)
                .set(self.reader.millis_behind());
            match read {
                Err(e) => {
                    errors = errors.saturating_add(1);
                    self.ctx
                        .metrics
                        .read_errors
                        .get_or_create(&self.label)
                        .inc();
                    let wait = backoff.delay(errors);
                    tracing::warn!(pipeline = %self.spec.name, shard = %self.lease.shard, error = %e, ?wait, "read failed; retrying");
                    self.status(|s| s.last_error = Some(format!("read: {e}")));
                    self.sleep(wait).await;
                }
                Ok(Read::Throttled(wait)) => self.sleep(wait).await,
                Ok(Read::CaughtUp) => {
                    errors = 0;
                    self.set_state("reading");
                    self.status(|s| s.millis_behind_latest = 0);
                    self.idle_flush().await?;
                    self.checkpoint_positions().await?;
                    self.update_age();
                    // Wake for the next object due rather than a whole
                    // poll later (read once more first: it closes then).
                    let now = crate::intake::stamp::now_ms();
                    let wait = self
                        .writers
                        .iter()
                        .filter_map(|w| w.due_in(now))
                        .min()
                        .map_or(self.ctx.poll, |d| d.min(self.ctx.poll));
                    self.sleep(wait).await;
                }
                Ok(Read::End) => {
                    self.finish_shard().await?;
                    return Ok(Finished::ShardEnd(Box::new(self.lease)));
                }
                Ok(Read::Records { batch, undecodable }) => {
                    errors = 0;
                    self.set_state("reading");
                    let behind = self.reader.millis_behind();
                    self.status(|s| s.millis_behind_latest = behind);
                    if !self.process(*batch, undecodable, filter).await? {
                        // Stopped while retrying: nothing of the batch is
                        // checkpointed, so it is read again on restart.
                        continue;
                    }
                    if self.last_write.elapsed() >= CHECKPOINT_EVERY {
                        self.checkpoint_positions().await?;
                    }
                    self.update_age();
                }
            }
        }
    }

    async fn sleep(&self, d: Duration) {
        tokio::select! {
            _ = self.ctx.cancel.cancelled() => {}
            _ = tokio::time::sleep(d) => {}
        }
    }

    /// The filter for the next batch: `Ok(None)` for a raw pipeline,
    /// `Err(())` while the module is missing.
    #[allow(clippy::result_unit_err)]
    fn current_filter(&self) -> Result<Option<Arc<LoadedFilter>>, ()> {
        let Some(name) = &self.spec.filter else {
            return Ok(None);
        };
        match self.ctx.registry.as_ref().and_then(|r| r.get(name)) {
            Some(f) => Ok(Some(f)),
            None => Err(()),
        }
    }

    /// Runs the filter over `batch`: the answer, or `None` when stopped
    /// while the policy retried.
    async fn run_filter(
        &mut self,
        mut filter: Arc<LoadedFilter>,
        input: Input,
    ) -> Result<Option<(Input, Ran, Arc<LoadedFilter>)>, WorkerError> {
        let spec = Arc::clone(&self.spec);
        let backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(30));
        let mut attempt = 0u32;
        let mut input = input;
        loop {
            let f = Arc::clone(&filter);
            let (params, limits) = (spec.params.clone(), spec.limits);
            // `retry` runs the batch whole until it passes: no isolation.
            let budget = match spec.on_error {
                ErrorPolicy::Retry => None,
                _ => Some(spec.isolation),
            };
            let t = Instant::now();
            let joined = tokio::task::spawn_blocking(move || {
                let r = match budget {
                    None => f.run(&input, &params, &limits).map(Ran::Whole),
                    Some(b) => run_batch(&f, &input, &params, &limits, &b),
                };
                (input, r)
            })
            .await;
            let (back, result) =
                joined.map_err(|e| WorkerError::Setup(format!("filter job: {e}")))?;
            input = back;
            self.ctx
                .metrics
                .job_seconds
                .get_or_create(&PipelineLabel {
                    pipeline: spec.name.clone(),
                })
                .observe(t.elapsed().as_secs_f64());
            let failure: JobError = match result {
                Ok(ran) => {
                    if let Ran::Isolated { failure, .. } = &ran {
                        self.count_failure(failure);
                        match ran.gave_up() {
                            None => {
                                tracing::warn!(pipeline = %spec.name, shard = %self.lease.shard, error = %failure, poison = ran.poison().len(), jobs = ran.jobs(), "batch failed; isolated the failing lines")
                            }
                            Some(g) => {
                                tracing::warn!(pipeline = %spec.name, shard = %self.lease.shard, error = %failure, poison = ran.poison().len(), jobs = ran.jobs(), "batch failed; {g}; the lines not isolated go to the error policy as failed")
                            }
                        }
                    }
                    return Ok(Some((input, ran, filter)));
                }
                Err(e) => e,
            };
            // The policy retries, or the failure is not the lines' (init,
            // instantiation): every batch would fail alike, so the batch
            // waits (holding the checkpoint) for a fix, e.g. a new version.
            self.count_failure(&failure);
            attempt = attempt.saturating_add(1);
            let wait = backoff.delay(attempt);
            let why = if is_line_dependent(&failure.cause) {
                "batch failed; retrying it (on_error = \"retry\")"
            } else {
                "the filter fails every batch alike; the shard waits and retries (fix the \
                 pipeline's params, or drop a new version of the filter)"
            };
            tracing::warn!(pipeline = %spec.name, shard = %self.lease.shard, error = %failure, attempt, ?wait, "{why}");
            self.set_state("retrying");
            self.status(|s| s.last_error = Some(failure.to_string()));
            self.sleep(wait).await;
            if self.ctx.cancel.is_cancelled() {
                return Ok(None);
            }
            // A new version may have been dropped meanwhile: take it (the
            // whole batch runs on it).
            if let Ok(Some(f)) = self.current_filter() {
                filter = f;
            }
        }
    }

    fn count_failure(&self, e: &JobError) {
        self.ctx
            .metrics
            .filter_failures
            .get_or_create(&FailureLabel {
                pipeline: self.spec.name.clone(),
                kind: failure_kind(&e.cause),
            })
            .inc();
    }

    /// One batch through the filter and into the sinks. `false` when
    /// stopped before it was delivered.
    async fn process(
        &mut self,
        batch: Batch,
        undecodable: Vec<Undecodable>,
        filter: Option<Arc<LoadedFilter>>,
    ) -> Result<bool, WorkerError> {
        if batch.records().is_empty() {
            return Ok(true);
        }
        let m = &self.ctx.metrics;
        m.records
            .get_or_create(&self.label)
            .inc_by(batch.records().len() as u64);
        m.events
            .get_or_create(&self.label)
            .inc_by(batch.len() as u64);
        m.bytes
            .get_or_create(&self.label)
            .inc_by(batch.byte_len() as u64);
        if self.waiting_since.is_none() {
            self.waiting_since = Some(Instant::now());
        }
        let input = Input::from(batch);
        let (input, ran, filter) = match filter {
            None => (input, None, None),
            Some(f) => match self.run_filter(f, input).await? {
                None => return Ok(false),
                Some((input, ran, f)) => (input, Some(ran), Some(f)),
            },
        };
        let module: Option<Arc<str>> = filter.as_ref().map(|f| Arc::from(f.sha256()));
        if module != self.module {
            if let Some(m) = &module {
                self.status(|s| s.module_sha256 = Some(m.to_string()));
            }
            self.module = module.clone();
        }
        let lines: Vec<OutLine<'_>> = match &ran {
            Some(r) => r.lines(&input).collect(),
            None => (0..input.len())
                .map(|i| OutLine {
                    index: i as u32,
                    bytes: input.line(i),
                    replaced: false,
                    key: input.key(i),
                    rekeyed: false,
                    route: None,
                })
                .collect(),
        };
        let poison = ran.as_ref().map_or(&[][..], Ran::poison);
        let gave_up = ran.as_ref().and_then(Ran::gave_up);
        self.ctx
            .metrics
            .lines_out
            .get_or_create(&self.label)
            .inc_by(lines.len() as u64);
        let lines_in = input.len() as u64;
        let lines_out = lines.len() as u64;
        self.status(|s| {
            s.records += input.records().len() as u64;
            s.lines_in += lines_in;
            s.lines_out += lines_out;
        });
        if !poison.is_empty() && self.spec.on_error == ErrorPolicy::Skip {
            self.ctx
                .metrics
                .dead_letters
                .get_or_create(&DeadLabel {
                    pipeline: self.spec.name.clone(),
                    reason: "skipped",
                })
                .inc_by(poison.len() as u64);
            for p in poison {
                tracing::warn!(pipeline = %self.spec.name, shard = %self.lease.shard, line = p.index, error = %p.error, "poison line skipped (on_error = \"skip\")");
            }
        }
        let dead = self.spec.dead_letter.is_some();
        let n_sinks = self.spec.sinks.len();
        let (mut li, mut pi) = (0usize, 0usize);
        for rec in input.records() {
            let end = rec.end_line;
            let from = li;
            while li < lines.len() && lines[li].index < end {
                li += 1;
            }
            let rec_lines = &lines[from..li];
            for w in 0..n_sinks {
                if self.writers[w]
                    .position()
                    .is_some_and(|p| rec.sequence <= *p)
                {
                    continue;
                }
                let spec = &self.spec;
                let input = &input;
                let chosen = rec_lines
                    .iter()
                    .filter(move |l| spec.targets(l.route).contains(&w))
                    .map(move |l| {
                        let st = input.stamp(l.index as usize);
                        ArchiveLine {
                            bytes: l.bytes,
                            id: st.id,
                            received_ms: st.received_ms,
                            key: l.key,
                        }
                    });
                let sealed = self.writers[w].offer(rec, chosen, module.as_ref());
                self.settle(w, sealed).await?;
            }
            // Dead letters of this record: its poison lines, or the whole
            // record when it could not be de-aggregated.
            let pfrom = pi;
            while pi < poison.len() && poison[pi].index < end {
                pi += 1;
            }
            if dead {
                let w = n_sinks;
                if self.writers[w]
                    .position()
                    .is_some_and(|p| rec.sequence <= *p)
                {
                    continue;
                }
                let mut entries: Vec<(Vec<u8>, crate::event::Stamp)> = Vec::new();
                for p in &poison[pfrom..pi] {
                    let i = p.index as usize;
                    let error = match gave_up {
                        Some(g) if !p.isolated => format!("{} ({g})", p.error),
                        _ => p.error.to_string(),
                    };
                    let e = Entry {
                        reason: Reason::Filter,
                        error: &error,
                        pipeline: &self.spec.name,
                        filter: self.spec.filter_label(),
                        module_sha256: module.as_deref(),
                        stream: &self.spec.stream,
                        shard: &self.lease.shard,
                        sequence: &rec.sequence,
                        stamp: Some(input.stamp(i)),
                        partition_key: input.key(i),
                        line: input.line(i),
                        isolated: p.isolated,
                    };
                    entries.push((e.to_json(), input.stamp(i)));
                }
                for u in undecodable.iter().filter(|u| u.sequence == rec.sequence) {
                    let error = u.error.to_string();
                    let stamp =
                        crate::event::unstamped(&self.lease.shard, &u.sequence, 0, u.arrival_ms);
                    let e = Entry {
                        reason: Reason::Undecodable,
                        error: &error,
                        pipeline: &self.spec.name,
                        filter: self.spec.filter_label(),
                        module_sha256: module.as_deref(),
                        stream: &self.spec.stream,
                        shard: &self.lease.shard,
                        sequence: &u.sequence,
                        stamp: None,
                        partition_key: u.partition_key.as_bytes(),
                        line: &u.data,
                        isolated: true,
                    };
                    entries.push((e.to_json(), stamp));
                }
                let poisoned = (pi - pfrom) as u64;
                for (reason, n) in [
                    ("filter", poisoned),
                    ("undecodable", entries.len() as u64 - poisoned),
                ] {
                    if n > 0 {
                        self.ctx
                            .metrics
                            .dead_letters
                            .get_or_create(&DeadLabel {
                                pipeline: self.spec.name.clone(),
                                reason,
                            })
                            .inc_by(n);
                        self.status(|s| s.dead_letters += n);
                    }
                }
                let chosen = entries.iter().map(|(j, st)| ArchiveLine {
                    bytes: j,
                    id: st.id,
                    received_ms: st.received_ms,
                    key: b"",
                });
                let sealed = self.writers[w].offer(rec, chosen, module.as_ref());
                self.settle(w, sealed).await?;
            } else if !undecodable.is_empty() {
                for u in undecodable.iter().filter(|u| u.sequence == rec.sequence) {
                    tracing::error!(pipeline = %self.spec.name, shard = %self.lease.shard, sequence = %u.sequence, error = %u.error, bytes = u.data.len(), "record cannot be de-aggregated and this pipeline has no dead-letter sink: it goes to no sink");
                }
            }
        }
        Ok(true)
    }

    /// After an offer to sink `w`: writes the object it closed, and
    /// compresses the lines waiting in its open one when there are enough.
    async fn settle(&mut self, w: usize, sealed: Option<Sealed>) -> Result<(), WorkerError> {
        if let Some(sealed) = sealed {
            self.write_sealed(w, sealed).await?;
        }
        if self.writers[w].wants_pack() {
            self.writers[w]
                .pack()
                .await
                .map_err(|e| WorkerError::Setup(e.to_string()))?;
        }
        Ok(())
    }

    /// Writes an object a sink cut: the cut is recorded first (a restart
    /// cuts there again), then the object, then the sink's new position.
    async fn write_sealed(&mut self, w: usize, sealed: Sealed) -> Result<(), WorkerError> {
        let name = self.writers[w].sink().to_owned();
        let entry = self.lease.sinks.entry(name.clone()).or_default();
        entry.pending = Some(sealed.cut.clone());
        persist(&self.ctx, &self.label, &mut self.lease).await?;
        let label = SinkLabel {
            pipeline: self.spec.name.clone(),
            sink: name.clone(),
        };
        let retries = self.ctx.metrics.sink_retries.get_or_create(&label).clone();
        let bytes = loop {
            match self.writers[w]
                .write(&sealed, |_| {
                    retries.inc();
                })
                .await
            {
                Ok(bytes) => break bytes,
                Err(SinkError::Rejected { message, .. }) => {
                    if self.dead_letter_batch(w, &sealed, &message).await {
                        break 0;
                    }
                    // Nowhere to put it: held (the checkpoint waits), and
                    // tried again after the longest backoff.
                    tracing::error!(pipeline = %self.spec.name, sink = %name, key = %sealed.key, error = %message, "batch refused and this pipeline has no dead-letter sink: trying again later");
                    retries.inc();
                    tokio::select! {
                        () = self.ctx.cancel.cancelled() => {
                            return Err(WorkerError::Setup(format!("stopped while {message}")));
                        }
                        () = tokio::time::sleep(Duration::from_secs(30)) => {}
                    }
                }
                Err(e) => return Err(WorkerError::Setup(e.to_string())),
            }
        };
        let m = &self.ctx.metrics;
        m.sink_writes.get_or_create(&label).inc();
        m.sink_bytes.get_or_create(&label).inc_by(bytes);
        m.sink_lines.get_or_create(&label).inc_by(sealed.lines);
        self.status(|s| s.objects += 1);
        tracing::debug!(pipeline = %self.spec.name, sink = %name, key = %sealed.key, lines = sealed.lines, bytes, "object written");
        self.lease.sinks.insert(
            name,
            SinkPosition {
                after: Some(sealed.after.clone()),
                pending: None,
            },
        );
        self.checkpoint_positions_force().await
    }

    /// Keeps a batch sink `w` refused in the dead-letter sink, one entry
    /// per line saying why, as one object beside the dead-letter
    /// sink's own (`rejected/SINK/KEY.ndjson`, so a batch refused again
    /// replaces it). `false` when the pipeline has no dead-letter sink.
    async fn dead_letter_batch(&mut self, w: usize, sealed: &Sealed, why: &str) -> bool {
        let n_sinks = self.spec.sinks.len();
        if self.spec.dead_letter.is_none() || w >= n_sinks || self.writers.len() <= n_sinks {
            return false;
        }
        let sink = self.writers[w].sink().to_owned();
        let meta = |name: &str| {
            sealed
                .metadata
                .iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| v.clone())
        };
        let module = meta("module-sha256").filter(|m| m != "none");
        let first = meta("first-sequence")
            .and_then(|s| SequenceNumber::parse(&s).ok())
            .unwrap_or_default();
        let mut body = Vec::new();
        let mut lines = 0u64;
        for line in self.writers[w].lines_of(sealed) {
            let line = &line[..];
            let e = Entry {
                reason: Reason::Rejected,
                error: why,
                pipeline: &self.spec.name,
                filter: self.spec.filter_label(),
                module_sha256: module.as_deref(),
                stream: &self.spec.stream,
                shard: &self.lease.shard,
                sequence: &first,
                stamp: None,
                partition_key: b"",
                line,
                isolated: false,
            };
            body.extend_from_slice(&e.to_json());
            body.push(b'\n');
            lines += 1;
        }
        let dl = &self.writers[n_sinks];
        let key = {
            let prefix = dl.prefix().trim_matches('/');
            let rest = format!(
                "rejected/{sink}/{}.ndjson",
                sealed.key.trim_start_matches('/')
            );
            if prefix.is_empty() {
                rest
            } else {
                format!("{prefix}/{rest}")
            }
        };
        let object = crate::sink::Object {
            body: bytes::Bytes::from(body),
            content_type: "application/x-ndjson",
            content_encoding: None,
            metadata: sealed.metadata.clone(),
        };
        dl.put_aside(&key, &object).await;
        tracing::warn!(pipeline = %self.spec.name, %sink, %key, lines, error = %why, "batch refused: kept in the dead-letter sink");
        self.ctx
            .metrics
            .dead_letters
            .get_or_create(&DeadLabel {
                pipeline: self.spec.name.clone(),
                reason: "rejected",
            })
            .inc_by(lines);
        self.status(|s| s.dead_letters += lines);
        true
    }

    /// The checkpoint every sink allows: the smallest of their positions.
    fn allowed(&self) -> Option<SequenceNumber> {
        let mut min: Option<&SequenceNumber> = None;
        for w in &self.writers {
            let p = w.position()?;
            if min.is_none_or(|m| p < m) {
                min = Some(p);
            }
        }
        min.cloned()
    }

    /// Writes the checkpoint if it moved (at most once a second).
    async fn checkpoint_positions(&mut self) -> Result<(), WorkerError> {
        let moved = self
            .allowed()
            .is_some_and(|a| self.written != Checkpoint::After(a));
        if moved
            && (self.last_write.elapsed() >= CHECKPOINT_EVERY || self.ctx.cancel.is_cancelled())
        {
            self.checkpoint_positions_force().await?;
        }
        Ok(())
    }

    async fn checkpoint_positions_force(&mut self) -> Result<(), WorkerError> {
        for w in &self.writers {
            let e = self.lease.sinks.entry(w.sink().to_owned()).or_default();
            e.after = w.position().cloned();
            e.pending = w.pending().cloned();
        }
        if let Some(a) = self.allowed() {
            self.lease.checkpoint = Checkpoint::After(a);
        }
        persist(&self.ctx, &self.label, &mut self.lease).await?;
        self.written = self.lease.checkpoint.clone();
        self.last_write = Instant::now();
        if self.writers.iter().all(|w| w.buffered_bytes() == 0) {
            self.waiting_since = None;
        }
        self.publish_checkpoint();
        Ok(())
    }

    fn publish_checkpoint(&self) {
        let text = match &self.lease.checkpoint {
            Checkpoint::Start => "start".to_owned(),
            Checkpoint::After(s) => s.to_string(),
            Checkpoint::ShardEnd => "shard-end".to_owned(),
        };
        let ms = self.lease.updated_ms;
        self.status(|s| {
            s.checkpoint = text;
            s.checkpoint_ms = ms;
        });
    }

    fn update_age(&self) {
        let age = self
            .waiting_since
            .map_or(0, |t| t.elapsed().as_secs() as i64);
        self.ctx
            .metrics
            .checkpoint_age
            .get_or_create(&self.label)
            .set(age);
    }

    /// A caught-up reader closes the objects whose window has passed.
    async fn idle_flush(&mut self) -> Result<(), WorkerError> {
        let now = crate::intake::stamp::now_ms();
        for w in 0..self.writers.len() {
            if self.writers[w].due(now)
                && let Some(sealed) = self.writers[w].seal()
            {
                self.write_sealed(w, sealed).await?;
            }
        }
        Ok(())
    }

    /// The shard is closed and read: close every object, then checkpoint
    /// its end (its children may start).
    async fn finish_shard(&mut self) -> Result<(), WorkerError> {
        for w in 0..self.writers.len() {
            if let Some(sealed) = self.writers[w].seal() {
                self.write_sealed(w, sealed).await?;
            }
        }
        self.lease.checkpoint = Checkpoint::ShardEnd;
        // Every sink is named, even on an empty shard: a lease with sink
        // positions says this pipeline read the shard (its children then
        // continue it from their first record).
        for w in &self.writers {
            let e = self.lease.sinks.entry(w.sink().to_owned()).or_default();
            e.after = w.position().cloned();
            e.pending = None;
        }
        persist(&self.ctx, &self.label, &mut self.lease).await?;
        for w in &self.writers {
            w.finished();
        }
        self.written = Checkpoint::ShardEnd;
        self.publish_checkpoint();
        self.set_state("finished");
        self.ctx
            .metrics
            .checkpoint_age
            .get_or_create(&self.label)
            .set(0);
        tracing::info!(pipeline = %self.spec.name, shard = %self.lease.shard, "shard read to its end and delivered");
        Ok(())
    }
}

fn writer(
    s: &SinkSpec,
    origin: &Origin,
    pos: SinkPosition,
    checkpoint: Option<SequenceNumber>,
) -> Result<ArchiveWriter, WorkerError> {
    // A sink without a position of its own (added to the pipeline since)
    // starts at the pipeline's checkpoint.
    let after = pos.after.or(checkpoint);
    ArchiveWriter::new(
        &s.name,
        &s.config,
        Arc::clone(&s.store),
        origin.clone(),
        after,
        pos.pending,
    )
    .map_err(|e| WorkerError::Setup(e.to_string()))
}
