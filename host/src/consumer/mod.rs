//! The consumer host: for every pipeline, discover the stream's shards and
//! follow new ones, run one worker per shard (parents before children, the
//! KCL's rule, on checkpoints), and keep the checkpoints.
//!
//! * [`reader`]: one shard as typed batches (iterators, de-aggregation).
//! * [`walk`]: the resharding rules, and a whole-stream reader for `tail`.
//! * [`checkpoint`]: leases and checkpoints behind a trait (a local file
//!   store today; shaped for DynamoDB).
//! * [`metrics`], [`status`]: what `/metrics` and `/v1/status` show.

pub mod checkpoint;
pub mod metrics;
pub mod reader;
pub mod status;
pub mod walk;

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use reader::{Read, ShardReader, Undecodable};
pub use walk::{StreamWalk, Walked};

use self::checkpoint::{Checkpoint, CheckpointStore, Lease, StartAt};
use self::metrics::{ConsumerMetrics, PipelineLabel};
use self::status::StatusBoard;
use crate::config::{AutoPipelines, ConsumerConfig, InitialPosition, PipelineConfig};
use crate::event::ShardId;
use crate::filter::Registry;
use crate::pipeline::worker::{Finished, ShardWorker, WorkerContext, WorkerError};
use crate::pipeline::{PipelineSpec, Sinks};
use crate::retry::Backoff;
use crate::stream::{StartPosition, StreamBackend, StreamDescription};

/// How the consumer reads.
#[derive(Debug, Clone)]
pub struct ConsumerSettings {
    pub poll: Duration,
    pub max_records: u32,
    pub batch_lines: usize,
    pub initial: StartPosition,
    pub shard_refresh: Duration,
}

impl From<&ConsumerConfig> for ConsumerSettings {
    fn from(c: &ConsumerConfig) -> Self {
        Self {
            poll: Duration::from_millis(c.poll_interval_ms),
            max_records: c.max_records,
            batch_lines: c.batch_lines,
            initial: match c.initial_position {
                InitialPosition::TrimHorizon => StartPosition::TrimHorizon,
                InitialPosition::Latest => StartPosition::Latest,
            },
            shard_refresh: Duration::from_millis(c.shard_refresh_ms),
        }
    }
}

/// The consumer: pipelines over streams. Cheap to clone.
pub struct Consumer<B: StreamBackend, C: CheckpointStore> {
    shared: Arc<Shared<B, C>>,
}

impl<B: StreamBackend, C: CheckpointStore> Clone for Consumer<B, C> {
    fn clone(&self) -> Self {
        Self {
            shared: Arc::clone(&self.shared),
        }
    }
}

impl<B: StreamBackend, C: CheckpointStore> std::fmt::Debug for Consumer<B, C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Consumer").finish_non_exhaustive()
    }
}

/// What a [`Consumer`] is made of.
#[derive(Debug)]
pub struct ConsumerParts<B, C> {
    /// The stream backend it reads.
    pub backend: B,
    pub store: C,
    pub settings: ConsumerSettings,
    /// The filters directory, when any pipeline can use a filter.
    pub registry: Option<Arc<Registry>>,
    pub sinks: Sinks,
    pub metrics: ConsumerMetrics,
    pub status: StatusBoard,
    /// Stops every pipeline.
    pub cancel: CancellationToken,
    /// Tracks every task the consumer starts.
    pub tracker: TaskTracker,
}

struct Shared<B, C> {
    backend: B,
    store: C,
    settings: ConsumerSettings,
    registry: Option<Arc<Registry>>,
    sinks: Sinks,
    metrics: ConsumerMetrics,
    status: StatusBoard,
    cancel: CancellationToken,
    tracker: TaskTracker,
    owner: String,
    /// Pipelines started, by name.
    started: Mutex<HashSet<String>>,
}

impl<B: StreamBackend, C: CheckpointStore> Consumer<B, C> {
    pub fn new(parts: ConsumerParts<B, C>) -> Self {
        let ConsumerParts {
            backend,
            store,
            settings,
            registry,
            sinks,
            metrics,
            status,
            cancel,
            tracker,
        } = parts;
        let host = std::env::var("HOSTNAME")
            .ok()
            .or_else(|| std::fs::read_to_string("/etc/hostname").ok())
            .map(|h| h.trim().to_owned())
            .filter(|h| !h.is_empty())
            .unwrap_or_else(|| "host".to_owned());
        Self {
            shared: Arc::new(Shared {
                backend,
                store,
                settings,
                registry,
                sinks,
                metrics,
                status,
                cancel,
                tracker,
                owner: format!("{host}:{}", std::process::id()),
                started: Mutex::new(HashSet::new()),
            }),
        }
    }

    pub fn status(&self) -> &StatusBoard {
        &self.shared.status
    }

    /// Starts a pipeline (once per name).
    pub fn start(&self, config: &PipelineConfig) -> Result<(), crate::sink::SinkError> {
        {
            let mut started = self
                .shared
                .started
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            if !started.insert(config.name.clone()) {
                return Ok(());
            }
        }
        let spec = Arc::new(self.shared.sinks.pipeline(config)?);
        self.shared.status.update_pipeline(&spec.name, |p| {
            p.stream = spec.stream.clone();
            p.filter = spec.filter.clone();
            p.sinks = spec.sinks.iter().map(|s| s.name.clone()).collect();
            p.on_error = spec.on_error.as_str().to_owned();
        });
        tracing::info!(pipeline = %spec.name, stream = %spec.stream, filter = spec.filter_label(), sinks = ?spec.sinks.iter().map(|s| format!("{} ({})", s.name, s.store.location())).collect::<Vec<_>>(), "pipeline started");
        let me = self.clone();
        self.shared
            .tracker
            .spawn(async move { me.run_pipeline(spec).await });
        Ok(())
    }

    /// Makes a pipeline of every module in the filters directory that no
    /// configured pipeline names, as they appear (`[filters.auto]`).
    pub fn auto_pipelines(&self, auto: AutoPipelines, configured: &[PipelineConfig]) {
        let Some(registry) = self.shared.registry.clone() else {
            return;
        };
        let named: HashSet<String> = configured.iter().filter_map(|p| p.filter.clone()).collect();
        let names: HashSet<String> = configured.iter().map(|p| p.name.clone()).collect();
        let me = self.clone();
        let mut rx = registry.subscribe();
        let cancel = self.shared.cancel.clone();
        self.shared.tracker.spawn(async move {
            let mut warned = HashSet::new();
            loop {
                let set = rx.borrow_and_update().clone();
                for name in set.filters.keys() {
                    if named.contains(name) {
                        continue;
                    }
                    if names.contains(name) {
                        if warned.insert(name.clone()) {
                            tracing::warn!(filter = %name, "a configured pipeline has this filter's name; no automatic pipeline for it (rename the module)");
                        }
                        continue;
                    }
                    let p = auto.pipeline_for(name);
                    if let Err(e) = me.start(&p) {
                        tracing::error!(filter = %name, error = %e, "cannot start the filter's pipeline");
                    }
                }
                tokio::select! {
                    _ = cancel.cancelled() => return,
                    changed = rx.changed() => if changed.is_err() { return },
                }
            }
        });
    }

    async fn sleep(&self, d: Duration) {
        tokio::select! {
            _ = self.shared.cancel.cancelled() => {}
            _ = tokio::time::sleep(d) => {}
        }
    }

    /// Discovers the stream's shards and runs a worker per shard that may
    /// be read, until cancelled.
    async fn run_pipeline(self, spec: Arc<PipelineSpec>) {
        let s = &self.shared;
        let label = PipelineLabel {
            pipeline: spec.name.clone(),
        };
        let (done_tx, mut done_rx) =
            mpsc::unbounded_channel::<(String, Result<Finished, WorkerError>)>();
        let mut leases: Option<HashMap<String, Lease>> = None;
        let mut running: HashSet<String> = HashSet::new();
        let backoff = Backoff::new(Duration::from_millis(500), Duration::from_secs(30));
        let mut failures = 0u32;
        loop {
            if s.cancel.is_cancelled() {
                break;
            }
            let d = match s.backend.describe(&spec.stream).await {
                Ok(d) => d,
                Err(e) => {
                    failures = failures.saturating_add(1);
                    tracing::warn!(pipeline = %spec.name, stream = %spec.stream, error = %e, "cannot list the stream's shards; retrying");
                    s.status
                        .update_pipeline(&spec.name, |p| p.last_error = Some(e.to_string()));
                    self.sleep(backoff.delay(failures).max(s.settings.shard_refresh))
                        .await;
                    continue;
                }
            };
            if leases.is_none() {
                match s.store.list(&spec.name).await {
                    Ok(l) => {
                        leases = Some(l.into_iter().map(|l| (l.shard.to_string(), l)).collect());
                    }
                    Err(e) => {
                        failures = failures.saturating_add(1);
                        tracing::error!(pipeline = %spec.name, error = %e, "cannot load the checkpoints; retrying");
                        s.status
                            .update_pipeline(&spec.name, |p| p.last_error = Some(e.to_string()));
                        self.sleep(backoff.delay(failures)).await;
                        continue;
                    }
                }
            }
            failures = 0;
            s.status.update_pipeline(&spec.name, |p| {
                p.loaded = true;
                p.last_error = None;
            });
            if let Some(l) = leases.as_mut()
                && let Err(e) = self.start_ready(&spec, &d, l, &mut running, &done_tx).await
            {
                tracing::error!(pipeline = %spec.name, error = %e, "cannot start a shard; retrying");
                s.status
                    .update_pipeline(&spec.name, |p| p.last_error = Some(e.to_string()));
                leases = None;
            }
            s.metrics
                .shards_owned
                .get_or_create(&label)
                .set(running.len() as i64);
            tokio::select! {
                _ = s.cancel.cancelled() => break,
                _ = tokio::time::sleep(s.settings.shard_refresh) => {}
                done = done_rx.recv() => {
                    let Some((shard, result)) = done else { break };
                    running.remove(&shard);
                    match result {
                        Ok(Finished::ShardEnd(lease)) => {
                            if let Some(l) = leases.as_mut() {
                                l.insert(shard, *lease);
                            }
                        }
                        Ok(Finished::Stopped) => {}
                        Err(e) => {
                            tracing::error!(pipeline = %spec.name, %shard, error = %e, "shard worker failed; restarting it from its checkpoint");
                            s.status.update_shard(&spec.name, &shard, |st| {
                                st.state = "failed".into();
                                st.last_error = Some(e.to_string());
                            });
                            // Its lease moved on disk: read them all again.
                            leases = None;
                            self.sleep(Duration::from_secs(1)).await;
                        }
                    }
                }
            }
        }
        s.metrics.shards_owned.get_or_create(&label).set(0);
    }

    /// Starts a worker on every shard that may be read and is not running.
    async fn start_ready(
        &self,
        spec: &Arc<PipelineSpec>,
        d: &StreamDescription,
        leases: &mut HashMap<String, Lease>,
        running: &mut HashSet<String>,
        done: &mpsc::UnboundedSender<(String, Result<Finished, WorkerError>)>,
    ) -> Result<(), checkpoint::CheckpointError> {
        let s = &self.shared;
        let finished: HashSet<String> = leases
            .values()
            .filter(|l| l.checkpoint == Checkpoint::ShardEnd)
            .map(|l| l.shard.to_string())
            .collect();
        for shard in &d.shards {
            if finished.contains(&shard.id) || running.contains(&shard.id) {
                continue;
            }
            if !walk::parents_done(shard, d, |p| finished.contains(p)) {
                continue;
            }
            let lease = match leases.get(&shard.id) {
                Some(l) => l.clone(),
                None => {
                    let parents = walk::parents(shard).map(ShardId::from).collect();
                    let mut l =
                        Lease::new(&spec.name, &spec.stream, ShardId::new(&shard.id), parents);
                    l.owner = Some(s.owner.clone());
                    let continues = walk::parents(shard)
                        .any(|p| leases.get(p).is_some_and(|l| !l.sinks.is_empty()));
                    l.start = match walk::start_of(shard, &s.settings.initial, continues) {
                        Some(StartPosition::Latest) => {
                            Some(StartAt::Time(crate::intake::stamp::now_ms()))
                        }
                        Some(StartPosition::AtTimestamp(ms)) => Some(StartAt::Time(ms)),
                        Some(StartPosition::TrimHorizon) => Some(StartAt::TrimHorizon),
                        _ => None,
                    };
                    s.store.put(&l).await?
                }
            };
            let from = match &lease.checkpoint {
                Checkpoint::ShardEnd => continue,
                Checkpoint::After(seq) => Some(StartPosition::AfterSequence(seq.clone())),
                Checkpoint::Start => {
                    // A child continues a parent this pipeline read (its
                    // lease has sink positions); a parent skipped at LATEST
                    // was not read, so the child starts at LATEST too.
                    let continues = walk::parents(shard)
                        .any(|p| leases.get(p).is_some_and(|l| !l.sinks.is_empty()));
                    match lease.start {
                        Some(StartAt::Time(ms)) => Some(StartPosition::AtTimestamp(ms)),
                        Some(StartAt::TrimHorizon) => Some(StartPosition::TrimHorizon),
                        None => walk::start_of(shard, &s.settings.initial, continues),
                    }
                }
            };
            let Some(from) = from else {
                // A closed shard and LATEST: nothing to read; its children
                // may start.
                let mut l = lease.clone();
                l.checkpoint = Checkpoint::ShardEnd;
                let l = s.store.put(&l).await?;
                leases.insert(shard.id.clone(), l);
                continue;
            };
            leases.insert(shard.id.clone(), lease.clone());
            let reader = ShardReader::new(
                s.backend.clone(),
                spec.stream.clone(),
                ShardId::new(&shard.id),
                from,
                s.settings.max_records,
            )
            .with_range(shard.hash_range)
            .with_max_lines(s.settings.batch_lines);
            let ctx = WorkerContext {
                store: s.store.clone(),
                registry: s.registry.clone(),
                metrics: s.metrics.clone(),
                status: s.status.clone(),
                poll: s.settings.poll,
                cancel: s.cancel.clone(),
            };
            let id = shard.id.clone();
            let worker = match ShardWorker::new(Arc::clone(spec), ctx, reader, lease) {
                Ok(w) => w,
                Err(e) => {
                    tracing::error!(pipeline = %spec.name, shard = %id, error = %e, "cannot start the shard's worker");
                    continue;
                }
            };
            running.insert(id.clone());
            s.status
                .update_shard(&spec.name, &id, |st| st.state = "starting".into());
            tracing::info!(pipeline = %spec.name, shard = %id, "reading shard");
            let done = done.clone();
            s.tracker.spawn(async move {
                let r = worker.run().await;
                let _ = done.send((id, r));
            });
        }
        Ok(())
    }
}
