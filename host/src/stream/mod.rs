//! Streams: the [`StreamBackend`] trait and its two implementations —
//! [`kinesis`] (Amazon Kinesis through the AWS SDK) and [`local`] (the
//! embedded log, the default and the intake's spool) — plus [`kpl`], the
//! KPL aggregation format used to pack many events into one record.
//!
//! Only this module (and the Kinesis sink) names aws-sdk-kinesis types; the
//! rest of the host speaks the types below.

pub mod any;
pub mod hash;
pub mod key;
pub mod kinesis;
pub mod kpl;
pub mod limits;
pub mod local;
pub mod name;
pub mod reshard;

use std::fmt;
use std::future::Future;

use bytes::Bytes;

pub use crate::event::{BadSequenceNumber, SequenceNumber, ShardId};
pub use hash::{HashRange, hash_key_of};

/// Lifecycle of a stream, as Kinesis reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamStatus {
    Creating,
    Active,
    Updating,
    Deleting,
}

impl fmt::Display for StreamStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Creating => "CREATING",
            Self::Active => "ACTIVE",
            Self::Updating => "UPDATING",
            Self::Deleting => "DELETING",
        })
    }
}

/// One shard: its hash-key range, its parents, and whether it still takes
/// writes (open) or was closed by a split or merge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShardInfo {
    pub id: String,
    pub parent: Option<String>,
    pub adjacent_parent: Option<String>,
    pub hash_range: HashRange,
    pub starting_sequence: SequenceNumber,
    /// Set once the shard is closed; no record after it will ever appear.
    pub ending_sequence: Option<SequenceNumber>,
}

impl ShardInfo {
    pub fn is_open(&self) -> bool {
        self.ending_sequence.is_none()
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamDescription {
    pub name: String,
    pub status: StreamStatus,
    pub retention_hours: u32,
    /// Every shard still within retention, open and closed, parents first.
    pub shards: Vec<ShardInfo>,
}

impl StreamDescription {
    pub fn open_shards(&self) -> impl Iterator<Item = &ShardInfo> {
        self.shards.iter().filter(|s| s.is_open())
    }
}

/// One record to put. `explicit_hash_key` overrides the hash of the
/// partition key (the packer sets it to aim an aggregated record at the
/// shard its events belong to).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PutEntry {
    pub partition_key: String,
    pub explicit_hash_key: Option<u128>,
    pub data: Bytes,
}

impl PutEntry {
    /// The hash key that decides the destination shard.
    pub fn hash_key(&self) -> u128 {
        self.explicit_hash_key
            .unwrap_or_else(|| hash_key_of(&self.partition_key))
    }
}

/// The outcome of one entry of a put: written, or failed with the service's
/// error code (only these entries are retried).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PutOutcome {
    Written {
        shard: String,
        sequence: SequenceNumber,
    },
    Failed {
        code: String,
        message: String,
    },
}

impl PutOutcome {
    /// Worth retrying: throttling or a transient service failure.
    pub fn is_retryable(&self) -> bool {
        matches!(self, Self::Failed { code, .. }
            if code == "ProvisionedThroughputExceededException"
                || code == "InternalFailure"
                || code == "ServiceUnavailable"
                || code == "KMSThrottlingException")
    }
}

/// The code of a put entry the local log refuses, nothing of it stored,
/// because some of its sub-records hash outside the shard it would land on
/// (its explicit hash key was chosen from a shard map made before a
/// reshard): the producer refreshes its map and re-routes the events.
/// Later entries of the same put bound for that shard are refused with it,
/// so the events of a key keep their order.
pub const WRONG_SHARD: &str = "KinesthesticWrongShard";

/// Where a reader starts in a shard.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StartPosition {
    TrimHorizon,
    Latest,
    AtSequence(SequenceNumber),
    AfterSequence(SequenceNumber),
    /// Milliseconds since the Unix epoch.
    AtTimestamp(i64),
}

/// An opaque, backend-specific cursor into a shard.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShardIterator(pub String);

/// One record read from a shard.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamRecord {
    pub sequence: SequenceNumber,
    pub partition_key: String,
    pub data: Bytes,
    /// When the stream accepted it, milliseconds since the Unix epoch.
    pub arrival_ms: i64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GetRecordsOutput {
    pub records: Vec<StreamRecord>,
    /// `None` once a closed shard has been read to its end.
    pub next_iterator: Option<ShardIterator>,
    pub millis_behind_latest: i64,
}

#[derive(Debug, thiserror::Error)]
pub enum StreamError {
    #[error("stream {0:?} does not exist")]
    NoSuchStream(String),
    #[error("stream {0:?} already exists")]
    StreamExists(String),
    #[error("shard {shard:?} does not exist in stream {stream:?}")]
    NoSuchShard { stream: String, shard: String },
    #[error("stream {stream:?} is {status}, not ACTIVE")]
    NotActive {
        stream: String,
        status: StreamStatus,
    },
    #[error("shard iterator expired or unknown: {0}")]
    BadIterator(String),
    #[error("{0}")]
    BadInput(String),
    #[error("throttled: {0}")]
    Throttled(String),
    /// A buffer in front of the stream (the spool) holds its limit: a
    /// retry within a request's deadline would not help.
    #[error("full: {0}")]
    Full(String),
    // The cause is in the message and not a `source`, so a chain printer
    // (`{:#}`) does not say it twice.
    #[error("I/O error on {path}: {error}")]
    Io { path: String, error: std::io::Error },
    #[error("{0}")]
    Service(String),
}

impl From<BadSequenceNumber> for StreamError {
    fn from(e: BadSequenceNumber) -> Self {
        Self::BadInput(e.to_string())
    }
}

/// What every stream implementation offers: the subset of the Kinesis API
/// Kinesthetic needs, with Kinesis's semantics.
pub trait StreamBackend: Clone + Send + Sync + 'static {
    fn create_stream(
        &self,
        name: &str,
        shards: u32,
    ) -> impl Future<Output = Result<(), StreamError>> + Send;

    fn delete_stream(&self, name: &str) -> impl Future<Output = Result<(), StreamError>> + Send;

    fn list_streams(&self) -> impl Future<Output = Result<Vec<String>, StreamError>> + Send;

    fn describe(
        &self,
        name: &str,
    ) -> impl Future<Output = Result<StreamDescription, StreamError>> + Send;

    /// Puts up to 500 records; one outcome per entry, in order.
    fn put_records(
        &self,
        stream: &str,
        entries: &[PutEntry],
    ) -> impl Future<Output = Result<Vec<PutOutcome>, StreamError>> + Send;

    fn shard_iterator(
        &self,
        stream: &str,
        shard: &str,
        from: &StartPosition,
    ) -> impl Future<Output = Result<ShardIterator, StreamError>> + Send;

    fn get_records(
        &self,
        iterator: &ShardIterator,
        limit: u32,
    ) -> impl Future<Output = Result<GetRecordsOutput, StreamError>> + Send;

    /// Splits an open shard in two at `new_starting_hash_key`.
    fn split_shard(
        &self,
        stream: &str,
        shard: &str,
        new_starting_hash_key: u128,
    ) -> impl Future<Output = Result<(), StreamError>> + Send;

    /// Merges two open shards with adjacent hash ranges.
    fn merge_shards(
        &self,
        stream: &str,
        shard: &str,
        adjacent: &str,
    ) -> impl Future<Output = Result<(), StreamError>> + Send;

    /// Whether the entries of one put that go to one shard are written in
    /// order, all or none (the local log). Kinesis may fail some entries of
    /// a put and write later ones, so a writer that keeps order sends it at
    /// most one record per shard per call.
    fn keeps_order_within_put(&self) -> bool {
        false
    }

    /// The most open shards `stream` may have, when the backend knows: the
    /// local log's own limit, or what the account's shard quota leaves it.
    /// A reshard checks its target against it before its first step.
    fn max_open_shards(
        &self,
        _stream: &str,
    ) -> impl Future<Output = Result<Option<u32>, StreamError>> + Send {
        async { Ok(None) }
    }

    /// Where a put lands, for the writers' metrics: `"stream"`, or
    /// `"spool"` for the intake's spool in front of a stream.
    fn put_target(&self) -> &'static str {
        "stream"
    }

    /// Takes a put's place in the backend's write order now, and returns
    /// what waits for its outcome — where the backend can: puts placed one
    /// after another are written in that order, though their outcomes are
    /// awaited later, so a writer may place the next before the previous is
    /// durable (the local log then makes both durable with one fsync).
    /// `None`: the backend cannot (on Kinesis the order is that in which
    /// HTTP calls arrive); call [`put_records`](Self::put_records).
    fn place_put(
        &self,
        _stream: &str,
        _entries: &[PutEntry],
    ) -> Result<Option<PlacedPut>, StreamError> {
        Ok(None)
    }
}

/// A put that has its place in the backend's write order (see
/// [`StreamBackend::place_put`]); [`outcome`](Self::outcome) waits for it.
#[derive(Debug)]
pub struct PlacedPut {
    reply: tokio::sync::oneshot::Receiver<Result<Vec<PutOutcome>, StreamError>>,
}

impl PlacedPut {
    pub fn new(
        reply: tokio::sync::oneshot::Receiver<Result<Vec<PutOutcome>, StreamError>>,
    ) -> Self {
        PlacedPut { reply }
    }

    /// One outcome per entry, in order, once the put is written (durable,
    /// on the local log).
    pub async fn outcome(self) -> Result<Vec<PutOutcome>, StreamError> {
        self.reply
            .await
            .map_err(|_| StreamError::Service("the writer stopped before answering a put".into()))?
    }
}
