//! Reading one shard as typed batches: iterators, de-aggregation, stamps.
//!
//! A [`ShardReader`] turns `GetRecords` answers into [`Batch`]es: every KPL
//! aggregated record becomes its events (with their stamps), every plain
//! record from any other producer one event (stamped with
//! [`unstamped`](crate::event::unstamped)). An expired iterator is renewed
//! from the last record read; throttling is reported so the caller can back
//! off without holding anything.

use std::time::Duration;

use bytes::Bytes;

use crate::event::{Batch, BatchContext, SequenceNumber, ShardId, unstamped};
use crate::retry::Backoff;
use crate::stream::kpl::{self, KplError};
use crate::stream::{ShardIterator, StartPosition, StreamBackend, StreamError};

/// A record whose KPL body has a valid checksum but cannot be decoded: it
/// is not passed on as events, and must go somewhere it is seen (the
/// pipelines' dead-letter sink, `tail`'s stderr).
#[derive(Debug, Clone)]
pub struct Undecodable {
    pub sequence: SequenceNumber,
    pub partition_key: String,
    pub arrival_ms: i64,
    pub data: Bytes,
    pub error: KplError,
}

/// What one read gave.
#[derive(Debug)]
pub enum Read {
    /// Records (the batch may be empty when the stream answered with none
    /// while not caught up: read again at once).
    Records {
        batch: Box<Batch>,
        undecodable: Vec<Undecodable>,
    },
    /// Nothing new: the shard is read up to its tip. Read again after the
    /// poll interval.
    CaughtUp,
    /// The stream throttled the read: wait this long before the next.
    Throttled(Duration),
    /// A closed shard, read to its end: no record will ever follow.
    End,
}

/// Reads one shard from a start position, in order, as batches.
#[derive(Debug)]
pub struct ShardReader<B: StreamBackend> {
    backend: B,
    stream: String,
    shard: ShardId,
    /// Where a new iterator starts: the start position until a record is
    /// read, then just after the last record read.
    resume: StartPosition,
    iterator: Option<ShardIterator>,
    limit: u32,
    /// The records asked for in the next read: fewer than `limit` when
    /// records are big, so that a read is about `read_bytes`.
    next_limit: u32,
    read_bytes: usize,
    /// Most lines per batch: a read is cut into batches at record
    /// boundaries (a record with more lines is a batch of its own).
    max_lines: usize,
    /// Batches of the last read not yet handed out.
    queue: std::collections::VecDeque<(Batch, Vec<Undecodable>)>,
    ended: bool,
    millis_behind: i64,
    throttled: u32,
    backoff: Backoff,
    /// The shard's hash range, when known: see [`ShardReader::with_range`].
    range: Option<crate::stream::HashRange>,
}

/// About how many bytes a read asks for (Kinesis serves 2 MB/s per shard
/// and reader, so bigger reads would not be faster there).
pub const DEFAULT_READ_BYTES: usize = 2 << 20;

/// Kinesis's most records per `GetRecords`.
pub const MAX_RECORDS_PER_READ: u32 = 10_000;

impl<B: StreamBackend> ShardReader<B> {
    /// A reader of `shard` from `from`, asking for at most `limit` records
    /// per read (1 to 10,000).
    pub fn new(
        backend: B,
        stream: impl Into<String>,
        shard: ShardId,
        from: StartPosition,
        limit: u32,
    ) -> Self {
        Self {
            backend,
            stream: stream.into(),
            shard,
            resume: from,
            iterator: None,
            limit: limit.clamp(1, MAX_RECORDS_PER_READ),
            next_limit: limit.clamp(1, MAX_RECORDS_PER_READ),
            read_bytes: DEFAULT_READ_BYTES,
            max_lines: usize::MAX,
            queue: std::collections::VecDeque::new(),
            ended: false,
            millis_behind: 0,
            throttled: 0,
            backoff: Backoff::new(Duration::from_millis(200), Duration::from_secs(10)),
            range: None,
        }
    }

    /// Asks for about this many bytes per read (records are counted, not
    /// bytes: the count follows the records' average size).
    pub fn with_read_bytes(mut self, n: usize) -> Self {
        self.read_bytes = n.max(1);
        self
    }

    /// Cuts reads into batches of at most `n` lines (at record boundaries).
    pub fn with_max_lines(mut self, n: usize) -> Self {
        self.max_lines = n.max(1);
        self
    }

    /// Drops, as the KCL does, an aggregated record with a sub-record
    /// whose hash lies outside `range` (the shard's): a producer that met
    /// a reshard sent its events again, to the right shard.
    pub fn with_range(mut self, range: crate::stream::HashRange) -> Self {
        self.range = Some(range);
        self
    }

    pub fn shard(&self) -> &ShardId {
        &self.shard
    }

    /// How far behind the shard's tip the last read was, as the stream said.
    pub fn millis_behind(&self) -> i64 {
        self.millis_behind
    }

    /// Reads the next records. Errors are the stream's, other than an
    /// expired iterator (renewed here) and throttling ([`Read::Throttled`]).
    pub async fn read(&mut self) -> Result<Read, StreamError> {
        if let Some((batch, undecodable)) = self.queue.pop_front() {
            return Ok(Read::Records {
                batch: Box::new(batch),
                undecodable,
            });
        }
        if self.ended {
            return Ok(Read::End);
        }
        let mut renewed = false;
        let out = loop {
            let it = match self.iterator.take() {
                Some(it) => it,
                None => match self
                    .backend
                    .shard_iterator(&self.stream, self.shard.as_str(), &self.resume)
                    .await
                {
                    Ok(it) => it,
                    Err(StreamError::Throttled(m)) => return Ok(self.throttle(&m)),
                    Err(e) => return Err(e),
                },
            };
            match self.backend.get_records(&it, self.next_limit).await {
                Ok(out) => break out,
                // Iterators expire (Kinesis: after 5 minutes): a new one
                // from just after the last record read. Once; a second
                // failure in a row is the stream's error.
                Err(StreamError::BadIterator(m)) if !renewed => {
                    tracing::debug!(stream = %self.stream, shard = %self.shard, reason = %m, "renewing the shard iterator");
                    renewed = true;
                }
                Err(StreamError::Throttled(m)) => {
                    // Keep the iterator: it is still good after the wait.
                    self.iterator = Some(it);
                    return Ok(self.throttle(&m));
                }
                Err(e) => return Err(e),
            }
        };
        self.throttled = 0;
        self.millis_behind = out.millis_behind_latest;
        if out.records.is_empty() {
            return Ok(match out.next_iterator {
                None => {
                    self.ended = true;
                    Read::End
                }
                Some(next) => {
                    self.iterator = Some(next);
                    if out.millis_behind_latest == 0 {
                        Read::CaughtUp
                    } else {
                        Read::Records {
                            batch: Box::new(Batch::new(self.context(None, None))),
                            undecodable: Vec::new(),
                        }
                    }
                }
            });
        }
        match out.next_iterator {
            None => self.ended = true,
            Some(next) => self.iterator = Some(next),
        }
        let last = out.records.last().map(|r| r.sequence.clone());
        let bytes: usize = out.records.iter().map(|r| r.data.len()).sum();
        // Size the next read from these records: a read of 1,000 KPL
        // records of 1 MiB would hold 10 MB per shard and pipeline.
        let average = (bytes / out.records.len().max(1)).max(1);
        self.next_limit = u32::try_from(self.read_bytes / average)
            .unwrap_or(u32::MAX)
            .clamp(1, self.limit);
        let (stream, shard, max_lines, range) = (
            self.stream.clone(),
            self.shard.clone(),
            self.max_lines,
            self.range,
        );
        // De-aggregation checks an MD5 per record: big reads go to the
        // blocking pool, so shards decode in parallel and the async
        // workers stay free.
        let batches = if bytes >= DECODE_OFF_THREAD_BYTES {
            tokio::task::spawn_blocking(move || {
                decode(&stream, &shard, range, out.records, max_lines)
            })
            .await
            .map_err(|e| StreamError::Service(format!("decode task failed: {e}")))??
        } else {
            decode(&stream, &shard, range, out.records, max_lines)?
        };
        self.queue.extend(batches);
        if let Some(last) = last {
            self.resume = StartPosition::AfterSequence(last);
        }
        Ok(match self.queue.pop_front() {
            Some((batch, undecodable)) => Read::Records {
                batch: Box::new(batch),
                undecodable,
            },
            None => Read::Records {
                batch: Box::new(Batch::new(self.context(None, None))),
                undecodable: Vec::new(),
            },
        })
    }

    fn context(&self, first: Option<SequenceNumber>, last: Option<SequenceNumber>) -> BatchContext {
        BatchContext {
            stream: self.stream.clone(),
            shard: self.shard.clone(),
            first_sequence: first.unwrap_or_default(),
            last_sequence: last.unwrap_or_default(),
        }
    }

    fn throttle(&mut self, message: &str) -> Read {
        self.throttled = self.throttled.saturating_add(1);
        let wait = self.backoff.delay(self.throttled);
        tracing::debug!(stream = %self.stream, shard = %self.shard, %message, ?wait, "read throttled; backing off");
        Read::Throttled(wait)
    }
}

/// Reads of at least this many bytes are decoded on the blocking pool.
const DECODE_OFF_THREAD_BYTES: usize = 256 << 10;

/// The batches of one read: every record's events (KPL de-aggregated, or
/// the plain record), cut into batches of at most `max_lines` lines at
/// record boundaries.
fn decode(
    stream: &str,
    shard: &ShardId,
    range: Option<crate::stream::HashRange>,
    records: Vec<crate::stream::StreamRecord>,
    max_lines: usize,
) -> Result<Vec<(Batch, Vec<Undecodable>)>, StreamError> {
    let new_batch = || {
        Batch::new(BatchContext {
            stream: stream.to_owned(),
            shard: shard.clone(),
            ..BatchContext::default()
        })
    };
    let mut out = Vec::new();
    let mut batch = new_batch();
    let mut undecodable = Vec::new();
    let finish = |mut batch: Batch, undecodable: Vec<Undecodable>, out: &mut Vec<_>| {
        let ends = (
            batch.records().first().map(|r| r.sequence.clone()),
            batch.records().last().map(|r| r.sequence.clone()),
        );
        if let (Some(f), Some(l)) = ends {
            batch.context.first_sequence = f;
            batch.context.last_sequence = l;
        }
        out.push((batch, undecodable));
    };
    for rec in records {
        if let (Some(range), Some(span)) = (range, kpl::hash_span(&rec.data))
            && !range.holds(span)
            && kpl::is_aggregated(&rec.data)
        {
            tracing::warn!(%stream, %shard, sequence = %rec.sequence, "an aggregated record with events outside the shard's hash range is skipped (as the KCL does): its producer met a reshard and sent them again");
            batch.end_record(rec.sequence, rec.arrival_ms);
            continue;
        }
        match kpl::events_of(&rec.data, &rec.partition_key) {
            Ok(events) => {
                for (sub, e) in events.into_iter().enumerate() {
                    let stamp = e.stamp.unwrap_or_else(|| {
                        unstamped(shard, &rec.sequence, sub as u32, rec.arrival_ms)
                    });
                    if batch
                        .push(&e.data, stamp, e.partition_key.as_bytes())
                        .is_err()
                    {
                        // A read is at most 10 MB (Kinesis) and keys are
                        // bounded per record: 4 GiB cannot be reached.
                        return Err(StreamError::Service(format!(
                            "shard {shard}: a read of more than 4 GiB"
                        )));
                    }
                }
            }
            Err(error) => {
                tracing::warn!(%stream, %shard, sequence = %rec.sequence, %error, "record cannot be de-aggregated");
                undecodable.push(Undecodable {
                    sequence: rec.sequence.clone(),
                    partition_key: rec.partition_key.clone(),
                    arrival_ms: rec.arrival_ms,
                    data: rec.data.clone(),
                    error,
                });
            }
        }
        batch.end_record(rec.sequence, rec.arrival_ms);
        if batch.len() >= max_lines {
            let full = std::mem::replace(&mut batch, new_batch());
            finish(full, std::mem::take(&mut undecodable), &mut out);
        }
    }
    if !batch.records().is_empty() {
        finish(batch, undecodable, &mut out);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{EventId, Stamp};
    use crate::stream::{HashRange, StreamRecord, hash_key_of, kpl::Aggregator};

    /// A record whose events hash into both halves of the key space is
    /// skipped whole by a reader of the lower half (as the KCL skips it),
    /// its sequence number still passed; one within the range is read.
    #[test]
    fn records_with_events_outside_the_shard_are_skipped_whole() {
        let keys: Vec<String> = (0..20).map(|i| format!("k{i}")).collect();
        let half = 1u128 << 127;
        let low: Vec<&String> = keys.iter().filter(|k| hash_key_of(k) < half).collect();
        assert!(low.len() > 1 && low.len() < keys.len());
        let record = |keys: &[&String], seq: u64| {
            let mut a = Aggregator::new(1 << 20);
            for (i, k) in keys.iter().enumerate() {
                let stamp = Stamp {
                    id: EventId {
                        listener: 1,
                        counter: i as u64,
                    },
                    received_ms: 5,
                };
                assert!(a.try_push(k, b"{}", stamp));
            }
            let agg = a.finish();
            StreamRecord {
                sequence: SequenceNumber::parse(&seq.to_string()).unwrap_or_else(|e| panic!("{e}")),
                partition_key: agg.partition_key,
                data: agg.data,
                arrival_ms: 5,
            }
        };
        let all: Vec<&String> = keys.iter().collect();
        let records = vec![record(&all, 1), record(&low, 2)];
        let range = HashRange {
            start: 0,
            end: half - 1,
        };
        let shard = ShardId::new("shardId-000000000000");
        let out = decode("s", &shard, Some(range), records.clone(), usize::MAX)
            .unwrap_or_else(|e| panic!("{e}"));
        let lines: usize = out.iter().map(|(b, _)| b.len()).sum();
        assert_eq!(lines, low.len(), "only the record within the range is read");
        let ends: usize = out.iter().map(|(b, _)| b.records().len()).sum();
        assert_eq!(
            ends, 2,
            "both records are passed (checkpoints move past them)"
        );
        // Without a range (or for the whole key space), both are read.
        let out = decode("s", &shard, None, records, usize::MAX).unwrap_or_else(|e| panic!("{e}"));
        let lines: usize = out.iter().map(|(b, _)| b.len()).sum();
        assert_eq!(lines, keys.len() + low.len());
    }
}
