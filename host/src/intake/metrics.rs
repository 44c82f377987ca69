//! The intake's Prometheus metrics (served on the admin port).

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StreamLabel {
    pub stream: String,
}

/// A write's stream and where it went: `to="stream"` (the stream itself)
/// or `to="spool"` (the local spool in front of a Kinesis stream; the
/// shipper's writes on to Kinesis count under `to="stream"`).
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PutLabel {
    pub stream: String,
    pub to: &'static str,
}

/// How a request ended: `accepted` or `rejected` (not per stream: a
/// client naming random streams must not grow the label set).
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabel {
    pub outcome: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabel {
    pub reason: String,
}

fn latency_histogram() -> Histogram {
    // 0.5 ms … ≈ 16 s.
    Histogram::new(exponential_buckets(0.0005, 2.0, 16))
}

/// Every intake metric; cheap to clone (each metric is an `Arc` inside).
#[derive(Debug, Clone)]
pub struct Metrics {
    pub events_accepted: Family<StreamLabel, Counter>,
    pub bytes_accepted: Family<StreamLabel, Counter>,
    pub rejections: Family<ReasonLabel, Counter>,
    pub put_calls: Family<PutLabel, Counter>,
    pub put_records: Family<PutLabel, Counter>,
    pub record_bytes: Family<PutLabel, Counter>,
    pub stamp_bytes: Family<PutLabel, Counter>,
    pub put_latency: Family<PutLabel, Histogram, fn() -> Histogram>,
    /// Request duration, receipt to answer (the durable ack included).
    pub request_latency: Family<OutcomeLabel, Histogram, fn() -> Histogram>,
    pub put_failed_entries: Family<PutLabel, Counter>,
    pub put_retries: Family<PutLabel, Counter>,
    pub buffer_bytes: Gauge,
    pub spool_bytes: Family<StreamLabel, Gauge>,
    /// Records a reshard sent to a shard not holding all their events,
    /// whose events were sent again.
    pub rerouted_records: Family<StreamLabel, Counter>,
}

impl Metrics {
    /// Creates the metrics and registers them in `registry`.
    pub fn register(registry: &mut Registry) -> Self {
        let m = Self {
            events_accepted: Family::default(),
            bytes_accepted: Family::default(),
            rejections: Family::default(),
            put_calls: Family::default(),
            put_records: Family::default(),
            record_bytes: Family::default(),
            stamp_bytes: Family::default(),
            put_latency: Family::new_with_constructor(latency_histogram as fn() -> Histogram),
            request_latency: Family::new_with_constructor(latency_histogram as fn() -> Histogram),
            put_failed_entries: Family::default(),
            put_retries: Family::default(),
            buffer_bytes: Gauge::default(),
            spool_bytes: Family::default(),
            rerouted_records: Family::default(),
        };
        let r = registry.sub_registry_with_prefix("kinesthetic_intake");
        r.register(
            "events_accepted",
            "Events accepted (acknowledged to the producer)",
            m.events_accepted.clone(),
        );
        r.register(
            "bytes_accepted",
            "Event bytes accepted",
            m.bytes_accepted.clone(),
        );
        r.register(
            "rejections",
            "Requests rejected, by reason",
            m.rejections.clone(),
        );
        r.register("put_calls", "PutRecords calls", m.put_calls.clone());
        r.register(
            "put_records",
            "Records (aggregated) written",
            m.put_records.clone(),
        );
        r.register(
            "record_bytes",
            "Bytes of the records written (events plus KPL framing and stamps)",
            m.record_bytes.clone(),
        );
        r.register(
            "stamp_bytes",
            "Bytes of the records written that carry stamps (KPL tags)",
            m.stamp_bytes.clone(),
        );
        r.register(
            "put_latency_seconds",
            "PutRecords call latency",
            m.put_latency.clone(),
        );
        r.register(
            "request_latency_seconds",
            "Request duration from receipt to answer, durable acknowledgement included",
            m.request_latency.clone(),
        );
        r.register(
            "put_failed_entries",
            "PutRecords entries that failed (and were retried if retryable)",
            m.put_failed_entries.clone(),
        );
        r.register(
            "put_retries",
            "PutRecords calls that re-sent failed entries",
            m.put_retries.clone(),
        );
        r.register(
            "buffer_bytes",
            "Event bytes accepted but not yet written",
            m.buffer_bytes.clone(),
        );
        r.register(
            "spool_bytes",
            "Bytes in the spool not yet shipped to the stream",
            m.spool_bytes.clone(),
        );
        r.register(
            "rerouted_records",
            "Records a reshard put on a shard not holding all their events (their events were sent again; readers drop such a record whole)",
            m.rerouted_records.clone(),
        );
        m
    }

    pub fn reject(&self, reason: &str) {
        self.rejections
            .get_or_create(&ReasonLabel {
                reason: reason.to_owned(),
            })
            .inc();
    }

    pub fn put(stream: &str, to: &'static str) -> PutLabel {
        PutLabel {
            stream: stream.to_owned(),
            to,
        }
    }

    pub fn stream(stream: &str) -> StreamLabel {
        StreamLabel {
            stream: stream.to_owned(),
        }
    }
}
