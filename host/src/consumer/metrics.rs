//! The consumer's and the pipelines' Prometheus metrics.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ShardLabel {
    pub pipeline: String,
    pub shard: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PipelineLabel {
    pub pipeline: String,
}

/// A filter failure's kind: `trap`, `deadline`, `memory`, `fuel`,
/// `stack_overflow`, `malformed`, `rejected`, `init`, `instantiate`.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct FailureLabel {
    pub pipeline: String,
    pub kind: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SinkLabel {
    pub pipeline: String,
    pub sink: String,
}

/// Why lines went to the dead-letter sink or were skipped.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DeadLabel {
    pub pipeline: String,
    pub reason: &'static str,
}

fn job_histogram() -> Histogram {
    // 10 µs … ≈ 10 s.
    Histogram::new(exponential_buckets(0.000_01, 2.0, 21))
}

/// Every consumer metric; cheap to clone.
#[derive(Debug, Clone)]
pub struct ConsumerMetrics {
    pub records: Family<ShardLabel, Counter>,
    pub events: Family<ShardLabel, Counter>,
    pub bytes: Family<ShardLabel, Counter>,
    pub lines_out: Family<ShardLabel, Counter>,
    pub millis_behind: Family<ShardLabel, Gauge>,
    pub checkpoint_age: Family<ShardLabel, Gauge>,
    pub checkpoints: Family<ShardLabel, Counter>,
    pub read_errors: Family<ShardLabel, Counter>,
    pub job_seconds: Family<PipelineLabel, Histogram, fn() -> Histogram>,
    pub filter_failures: Family<FailureLabel, Counter>,
    pub sink_writes: Family<SinkLabel, Counter>,
    pub sink_bytes: Family<SinkLabel, Counter>,
    pub sink_lines: Family<SinkLabel, Counter>,
    pub sink_retries: Family<SinkLabel, Counter>,
    pub dead_letters: Family<DeadLabel, Counter>,
    pub shards_owned: Family<PipelineLabel, Gauge>,
}

impl ConsumerMetrics {
    pub fn register(registry: &mut Registry) -> Self {
        let m = Self {
            records: Family::default(),
            events: Family::default(),
            bytes: Family::default(),
            lines_out: Family::default(),
            millis_behind: Family::default(),
            checkpoint_age: Family::default(),
            checkpoints: Family::default(),
            read_errors: Family::default(),
            job_seconds: Family::new_with_constructor(job_histogram as fn() -> Histogram),
            filter_failures: Family::default(),
            sink_writes: Family::default(),
            sink_bytes: Family::default(),
            sink_lines: Family::default(),
            sink_retries: Family::default(),
            dead_letters: Family::default(),
            shards_owned: Family::default(),
        };
        let r = registry.sub_registry_with_prefix("kinesthetic_pipeline");
        r.register("records", "Stream records read", m.records.clone());
        r.register("events", "Events (lines) read", m.events.clone());
        r.register("bytes", "Bytes of events read", m.bytes.clone());
        r.register(
            "lines_out",
            "Lines the filter emitted (all lines for a raw pipeline)",
            m.lines_out.clone(),
        );
        r.register(
            "millis_behind_latest",
            "How far the last read was behind the shard's tip, as the stream says",
            m.millis_behind.clone(),
        );
        r.register(
            "checkpoint_age_seconds",
            "Seconds since the shard's checkpoint last moved (while records wait)",
            m.checkpoint_age.clone(),
        );
        r.register(
            "checkpoint_writes",
            "Checkpoint writes",
            m.checkpoints.clone(),
        );
        r.register(
            "read_errors",
            "Failed reads (retried)",
            m.read_errors.clone(),
        );
        r.register(
            "filter_job_seconds",
            "Time of a batch's filter job(s), isolation included",
            m.job_seconds.clone(),
        );
        r.register(
            "filter_failures",
            "Failed filter jobs by kind (traps, deadlines, memory, fuel…)",
            m.filter_failures.clone(),
        );
        r.register("sink_writes", "Objects written", m.sink_writes.clone());
        r.register(
            "sink_bytes",
            "Bytes written (compressed)",
            m.sink_bytes.clone(),
        );
        r.register("sink_lines", "Lines written", m.sink_lines.clone());
        r.register(
            "sink_retries",
            "Failed object writes (retried)",
            m.sink_retries.clone(),
        );
        r.register(
            "dead_letter_lines",
            "Lines sent to the dead-letter sink (or skipped, reason skipped)",
            m.dead_letters.clone(),
        );
        r.register(
            "shards_owned",
            "Shards this host reads",
            m.shards_owned.clone(),
        );
        m
    }

    pub fn shard(pipeline: &str, shard: &str) -> ShardLabel {
        ShardLabel {
            pipeline: pipeline.to_owned(),
            shard: shard.to_owned(),
        }
    }
}

/// The metric label of a filter failure.
pub fn failure_kind(c: &crate::filter::Cause) -> &'static str {
    use crate::filter::Cause;
    match c {
        Cause::Init(_) => "init",
        Cause::Rejected(_) => "rejected",
        Cause::Trap(_) => "trap",
        Cause::StackOverflow => "stack_overflow",
        Cause::Deadline { .. } => "deadline",
        Cause::MemoryLimit { .. } => "memory",
        Cause::OutOfFuel { .. } => "fuel",
        Cause::Malformed(_) => "malformed",
        Cause::Instantiate(_) => "instantiate",
    }
}
