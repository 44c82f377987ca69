//! Amazon Kinesis through the official AWS SDK for Rust.
//!
//! Credentials and region come from the standard chain (environment, profile,
//! SSO, instance role…). An endpoint override (`--endpoint`, the config, or
//! `AWS_ENDPOINT_URL_KINESIS`) points it at a stand-in; with an override and
//! no credentials in the environment, fixed dummy credentials are used, since
//! stand-ins accept any.

use std::time::Duration;

use aws_sdk_kinesis::Client;
use aws_sdk_kinesis::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_kinesis::primitives::{Blob, DateTime};
use aws_sdk_kinesis::types::{PutRecordsRequestEntry, ShardIteratorType, StreamStatus as KStatus};
use bytes::Bytes;
use serde::Deserialize;

use super::{
    GetRecordsOutput, HashRange, PutEntry, PutOutcome, SequenceNumber, ShardInfo, ShardIterator,
    StartPosition, StreamBackend, StreamDescription, StreamError, StreamRecord, StreamStatus,
};

/// How to reach Kinesis.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct KinesisSettings {
    /// AWS region; else the standard chain (`AWS_REGION`, profile…), else
    /// `us-east-1` when an endpoint override is set.
    pub region: Option<String>,
    /// Endpoint override, e.g. `http://127.0.0.1:4568` for a stand-in.
    pub endpoint: Option<String>,
    /// How long one attempt of a call may take, in milliseconds (default
    /// [`DEFAULT_ATTEMPT_TIMEOUT_MS`]); a call, its retries included, may take
    /// three times as long. An endpoint that accepts connections and never
    /// answers then fails the call instead of holding it for ever.
    pub attempt_timeout_ms: Option<u64>,
}

/// One attempt of a Kinesis call, at most (a GetRecords of 10 MB fits).
pub const DEFAULT_ATTEMPT_TIMEOUT_MS: u64 = 10_000;

/// Establishing a connection, at most.
const CONNECT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(3);

impl KinesisSettings {
    /// The SDK timeouts these settings give.
    fn timeouts(&self) -> aws_config::timeout::TimeoutConfig {
        let attempt = std::time::Duration::from_millis(
            self.attempt_timeout_ms
                .unwrap_or(DEFAULT_ATTEMPT_TIMEOUT_MS)
                .max(1),
        );
        aws_config::timeout::TimeoutConfig::builder()
            .connect_timeout(CONNECT_TIMEOUT.min(attempt))
            .operation_attempt_timeout(attempt)
            .operation_timeout(attempt * 3)
            .build()
    }
}

/// The Kinesis backend. Cheap to clone (the SDK client is).
#[derive(Debug, Clone)]
pub struct KinesisBackend {
    client: Client,
}

impl KinesisBackend {
    pub async fn connect(settings: &KinesisSettings) -> Self {
        let loaded = crate::aws::load(
            settings.region.as_deref(),
            settings.endpoint.as_deref(),
            "AWS_ENDPOINT_URL_KINESIS",
            Some(settings.timeouts()),
        )
        .await;
        let conf = aws_sdk_kinesis::config::Builder::from(&loaded.config);
        Self {
            client: Client::from_conf(conf.build()),
        }
    }

    /// A backend on a client configured by the caller (interceptors, a
    /// custom HTTP client…).
    pub fn from_client(client: Client) -> Self {
        Self { client }
    }

    /// The SDK client, for the Kinesis sink.
    pub fn client(&self) -> &Client {
        &self.client
    }
}

/// Maps an SDK error to ours by the service's error code. `shards` are the
/// shard ids the request named: a ResourceNotFound whose message names one
/// of them is about that shard, any other is about the stream. (Matching the
/// message for the word "shard" would take a stream called `shard-x` for a
/// shard.)
fn map_err<E, R>(stream: &str, shards: &[&str], e: SdkError<E, R>) -> StreamError
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    R: std::fmt::Debug,
{
    let code = e.code().unwrap_or("").to_owned();
    let message = e.message().unwrap_or("").to_owned();
    match code.as_str() {
        "ResourceNotFoundException" => match shards.iter().find(|s| message.contains(**s)) {
            Some(shard) => StreamError::NoSuchShard {
                stream: stream.to_owned(),
                shard: (*shard).to_owned(),
            },
            None => StreamError::NoSuchStream(stream.to_owned()),
        },
        "ResourceInUseException" => StreamError::Service(format!(
            "stream {stream:?} is in use (it exists already, or is being changed): {message}"
        )),
        "ProvisionedThroughputExceededException" | "LimitExceededException" => {
            StreamError::Throttled(format!("{code}: {message}"))
        }
        "ExpiredIteratorException" => StreamError::BadIterator(message),
        "InvalidArgumentException" => StreamError::BadInput(message),
        "" => StreamError::Service(format!("Kinesis request failed: {}", aws_error_chain(&e))),
        _ => StreamError::Service(format!("{code}: {message}")),
    }
}

/// GetRecords names no stream, only the iterator, so its errors are
/// about the iterator: expired, malformed (the stand-in answers a bare HTTP
/// 500 to a garbage one), or pointing at a stream or shard that is gone.
/// Throttling and transport failures keep their own kinds.
fn get_records_error<E, R>(iterator: &str, e: SdkError<E, R>) -> StreamError
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    R: std::fmt::Debug,
{
    let about_iterator = match e.code() {
        Some("ExpiredIteratorException" | "InvalidArgumentException")
        | Some("ResourceNotFoundException") => true,
        None => matches!(e, SdkError::ServiceError(_) | SdkError::ResponseError(_)),
        Some(_) => false,
    };
    if !about_iterator {
        return map_err("", &[], e);
    }
    let detail = match (e.code(), e.message()) {
        (Some(code), Some(message)) => format!("{code}: {message}"),
        (Some(code), None) => code.to_owned(),
        _ => aws_error_chain(&e),
    };
    let shown: String = iterator.chars().take(32).collect();
    let more = if shown.len() < iterator.len() {
        "…"
    } else {
        ""
    };
    StreamError::BadIterator(format!("{shown:?}{more} ({detail})"))
}

fn aws_error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

/// Kinesis's PutRecords limits, checked before sending: the stand-in does
/// not enforce them, and Kinesis's own refusal names no entry.
fn check_put(stream: &str, entries: &[PutEntry]) -> Result<(), StreamError> {
    super::limits::check_put(entries, 0)
        .map_err(|m| StreamError::BadInput(format!("PutRecords into {stream:?}: {m}")))
}

/// Our status for Kinesis's; `None` for one we do not know (the SDK fills
/// a missing required field with an empty value rather than failing).
fn status_of(s: &KStatus) -> Option<StreamStatus> {
    match s {
        KStatus::Creating => Some(StreamStatus::Creating),
        KStatus::Deleting => Some(StreamStatus::Deleting),
        KStatus::Updating => Some(StreamStatus::Updating),
        KStatus::Active => Some(StreamStatus::Active),
        _ => None,
    }
}

fn parse_u128(what: &str, s: &str) -> Result<u128, StreamError> {
    s.parse()
        .map_err(|_| StreamError::Service(format!("Kinesis returned a bad {what}: {s:?}")))
}

fn seq(s: &str) -> Result<SequenceNumber, StreamError> {
    SequenceNumber::parse(s)
        .map_err(|_| StreamError::Service(format!("Kinesis returned a bad sequence number: {s:?}")))
}

impl KinesisBackend {
    async fn list_shards(&self, stream: &str) -> Result<Vec<ShardInfo>, StreamError> {
        let mut out = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let req = self.client.list_shards();
            let req = match &token {
                Some(t) => req.next_token(t),
                None => req.stream_name(stream),
            };
            let resp = req.send().await.map_err(|e| map_err(stream, &[], e))?;
            for s in resp.shards() {
                let range = s.hash_key_range().ok_or_else(|| {
                    StreamError::Service(format!("shard {} has no hash key range", s.shard_id()))
                })?;
                let seqs = s.sequence_number_range().ok_or_else(|| {
                    StreamError::Service(format!("shard {} has no sequence range", s.shard_id()))
                })?;
                out.push(ShardInfo {
                    id: s.shard_id().to_owned(),
                    parent: s.parent_shard_id().map(str::to_owned),
                    adjacent_parent: s.adjacent_parent_shard_id().map(str::to_owned),
                    hash_range: HashRange {
                        start: parse_u128("hash key", range.starting_hash_key())?,
                        end: parse_u128("hash key", range.ending_hash_key())?,
                    },
                    starting_sequence: seq(seqs.starting_sequence_number())?,
                    ending_sequence: seqs.ending_sequence_number().map(seq).transpose()?,
                });
            }
            token = resp.next_token().map(str::to_owned);
            if token.is_none() {
                return Ok(out);
            }
        }
    }
}

/// Whether a LimitExceeded message is about a shard count (over the
/// account's quota, or outside what a stream may have), not about
/// concurrent requests.
fn over_shard_limit(message: &str) -> bool {
    let m = message.to_ascii_lowercase();
    m.contains("shard count") || m.contains("shard limit") || m.contains("must be between")
}

impl StreamBackend for KinesisBackend {
    async fn max_open_shards(&self, stream: &str) -> Result<Option<u32>, StreamError> {
        // The account's quota, less what other streams hold open. A
        // backend without DescribeLimits answers nothing to check against.
        let limits = match self.client.describe_limits().send().await {
            Ok(l) => l,
            Err(e) => {
                tracing::debug!(error = %aws_error_chain(&e), "DescribeLimits failed; no shard quota to check");
                return Ok(None);
            }
        };
        let mine = self.describe(stream).await?.open_shards().count() as i64;
        let left = i64::from(limits.shard_limit()) - i64::from(limits.open_shard_count()) + mine;
        Ok(Some(u32::try_from(left.max(0)).unwrap_or(u32::MAX)))
    }

    async fn create_stream(&self, name: &str, shards: u32) -> Result<(), StreamError> {
        // Refused here: the stand-in answers LimitExceeded to 0, which the
        // retry below would take for contention and retry for seconds.
        if shards == 0 {
            return Err(StreamError::BadInput(format!(
                "stream {name:?} needs at least 1 shard, not 0"
            )));
        }
        let shards = i32::try_from(shards)
            .map_err(|_| StreamError::BadInput(format!("{shards} shards is too many")))?;
        // Stand-ins answer LimitExceeded to concurrent creates; retry briefly.
        let backoff = crate::retry::Backoff::new(Duration::from_millis(50), Duration::from_secs(5));
        for attempt in 0.. {
            let r = self
                .client
                .create_stream()
                .stream_name(name)
                .shard_count(shards)
                .send()
                .await;
            match r {
                Ok(_) => return Ok(()),
                Err(e) if e.code() == Some("ResourceInUseException") => {
                    return Err(StreamError::StreamExists(name.to_owned()));
                }
                // A shard count over a limit is no contention: retrying
                // cannot help.
                Err(e)
                    if e.code() == Some("LimitExceededException")
                        && e.message().is_some_and(over_shard_limit) =>
                {
                    return Err(StreamError::BadInput(format!(
                        "stream {name:?} with {shards} shards: {}",
                        e.message().unwrap_or_default()
                    )));
                }
                Err(e) if e.code() == Some("LimitExceededException") && attempt < 8 => {
                    tokio::time::sleep(backoff.delay(attempt + 1)).await;
                }
                Err(e) => return Err(map_err(name, &[], e)),
            }
        }
        Ok(())
    }

    async fn delete_stream(&self, name: &str) -> Result<(), StreamError> {
        self.client
            .delete_stream()
            .stream_name(name)
            .enforce_consumer_deletion(true)
            .send()
            .await
            .map_err(|e| map_err(name, &[], e))?;
        Ok(())
    }

    async fn list_streams(&self) -> Result<Vec<String>, StreamError> {
        let mut out: Vec<String> = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let mut req = self.client.list_streams();
            // Pages follow NextToken; without one (the stand-in, and older
            // Kinesis answers), the older ExclusiveStartStreamName.
            if let Some(t) = &token {
                req = req.next_token(t);
            } else if let Some(last) = out.last() {
                req = req.exclusive_start_stream_name(last);
            }
            let resp = req.send().await.map_err(|e| map_err("", &[], e))?;
            let names = resp.stream_names();
            out.extend(names.iter().cloned());
            token = resp.next_token().map(str::to_owned);
            if !resp.has_more_streams() || (token.is_none() && names.is_empty()) {
                out.sort();
                out.dedup();
                return Ok(out);
            }
        }
    }

    async fn describe(&self, name: &str) -> Result<StreamDescription, StreamError> {
        let resp = self
            .client
            .describe_stream_summary()
            .stream_name(name)
            .send()
            .await
            .map_err(|e| map_err(name, &[], e))?;
        let summary = resp.stream_description_summary().ok_or_else(|| {
            StreamError::Service(format!(
                "DescribeStreamSummary of {name:?} returned nothing"
            ))
        })?;
        let status = status_of(summary.stream_status()).ok_or_else(|| {
            StreamError::Service(format!(
                "DescribeStreamSummary of {name:?} returned an unknown status {:?}",
                summary.stream_status().as_str()
            ))
        })?;
        let retention_hours = u32::try_from(summary.retention_period_hours())
            .ok()
            .filter(|h| *h > 0)
            .ok_or_else(|| {
                StreamError::Service(format!(
                    "DescribeStreamSummary of {name:?} returned a retention of {} hours",
                    summary.retention_period_hours()
                ))
            })?;
        let shards = if status == StreamStatus::Creating {
            Vec::new()
        } else {
            self.list_shards(name).await?
        };
        if matches!(status, StreamStatus::Active | StreamStatus::Updating)
            && !shards.iter().any(|s| s.ending_sequence.is_none())
        {
            return Err(StreamError::Service(format!(
                "ListShards of {name:?} returned no open shard for an {status:?} stream"
            )));
        }
        Ok(StreamDescription {
            name: name.to_owned(),
            status,
            retention_hours,
            shards,
        })
    }

    async fn put_records(
        &self,
        stream: &str,
        entries: &[PutEntry],
    ) -> Result<Vec<PutOutcome>, StreamError> {
        check_put(stream, entries)?;
        if entries.is_empty() {
            return Ok(Vec::new());
        }
        let mut records = Vec::with_capacity(entries.len());
        for e in entries {
            let mut b = PutRecordsRequestEntry::builder()
                .data(Blob::new(e.data.to_vec()))
                .partition_key(&e.partition_key);
            if let Some(h) = e.explicit_hash_key {
                b = b.explicit_hash_key(h.to_string());
            }
            records
                .push(b.build().map_err(|err| {
                    StreamError::BadInput(format!("bad PutRecords entry: {err}"))
                })?);
        }
        let resp = self
            .client
            .put_records()
            .stream_name(stream)
            .set_records(Some(records))
            .send()
            .await
            .map_err(|e| map_err(stream, &[], e))?;
        let results = resp.records();
        if results.len() != entries.len() {
            return Err(StreamError::Service(format!(
                "PutRecords answered {} results for {} entries",
                results.len(),
                entries.len()
            )));
        }
        results
            .iter()
            .map(
                |r| match (r.error_code(), r.sequence_number(), r.shard_id()) {
                    (Some(code), _, _) => Ok(PutOutcome::Failed {
                        code: code.to_owned(),
                        message: r.error_message().unwrap_or("").to_owned(),
                    }),
                    (None, Some(s), Some(shard)) => Ok(PutOutcome::Written {
                        shard: shard.to_owned(),
                        sequence: seq(s)?,
                    }),
                    _ => Err(StreamError::Service(
                        "PutRecords result has neither an error nor a sequence number".into(),
                    )),
                },
            )
            .collect()
    }

    async fn shard_iterator(
        &self,
        stream: &str,
        shard: &str,
        from: &StartPosition,
    ) -> Result<ShardIterator, StreamError> {
        let req = self
            .client
            .get_shard_iterator()
            .stream_name(stream)
            .shard_id(shard);
        let req = match from {
            StartPosition::TrimHorizon => req.shard_iterator_type(ShardIteratorType::TrimHorizon),
            StartPosition::Latest => req.shard_iterator_type(ShardIteratorType::Latest),
            StartPosition::AtSequence(s) => req
                .shard_iterator_type(ShardIteratorType::AtSequenceNumber)
                .starting_sequence_number(s.as_str()),
            StartPosition::AfterSequence(s) => req
                .shard_iterator_type(ShardIteratorType::AfterSequenceNumber)
                .starting_sequence_number(s.as_str()),
            StartPosition::AtTimestamp(ms) => req
                .shard_iterator_type(ShardIteratorType::AtTimestamp)
                .timestamp(DateTime::from_millis(*ms)),
        };
        let resp = req.send().await.map_err(|e| map_err(stream, &[shard], e))?;
        resp.shard_iterator()
            .map(|s| ShardIterator(s.to_owned()))
            .ok_or_else(|| StreamError::Service("GetShardIterator returned no iterator".into()))
    }

    async fn get_records(
        &self,
        iterator: &ShardIterator,
        limit: u32,
    ) -> Result<GetRecordsOutput, StreamError> {
        let resp = self
            .client
            .get_records()
            .shard_iterator(&iterator.0)
            .limit(i32::try_from(limit.clamp(1, 10_000)).unwrap_or(10_000))
            .send()
            .await
            .map_err(|e| get_records_error(&iterator.0, e))?;
        // Kinesis always says how far behind the reader is; an answer
        // without it is not one (an empty `{}` would otherwise read as the
        // end of a closed shard, and a reader would move on to its children).
        let Some(millis_behind_latest) = resp.millis_behind_latest() else {
            return Err(StreamError::Service(format!(
                "GetRecords answered without MillisBehindLatest for iterator {}…",
                iterator.0.chars().take(16).collect::<String>()
            )));
        };
        let mut records = Vec::with_capacity(resp.records().len());
        for r in resp.records() {
            records.push(StreamRecord {
                sequence: seq(r.sequence_number())?,
                partition_key: r.partition_key().unwrap_or_default().to_owned(),
                data: Bytes::copy_from_slice(r.data().as_ref()),
                arrival_ms: r
                    .approximate_arrival_timestamp()
                    .and_then(|t| t.to_millis().ok())
                    .unwrap_or(0),
            });
        }
        Ok(GetRecordsOutput {
            records,
            next_iterator: resp
                .next_shard_iterator()
                .map(|s| ShardIterator(s.to_owned())),
            millis_behind_latest,
        })
    }

    async fn split_shard(
        &self,
        stream: &str,
        shard: &str,
        new_starting_hash_key: u128,
    ) -> Result<(), StreamError> {
        self.client
            .split_shard()
            .stream_name(stream)
            .shard_to_split(shard)
            .new_starting_hash_key(new_starting_hash_key.to_string())
            .send()
            .await
            .map_err(|e| map_err(stream, &[shard], e))?;
        Ok(())
    }

    async fn merge_shards(
        &self,
        stream: &str,
        shard: &str,
        adjacent: &str,
    ) -> Result<(), StreamError> {
        self.client
            .merge_shards()
            .stream_name(stream)
            .shard_to_merge(shard)
            .adjacent_shard_to_merge(adjacent)
            .send()
            .await
            .map_err(|e| map_err(stream, &[shard, adjacent], e))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinesis_sequence_numbers_parse_and_order() {
        // Kinesis writes 56 digits, beyond 128 bits.
        let long = "49680641593397821290997226117868362540844834788908990466";
        let a = seq(long).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(a.as_str(), long);
        assert_eq!(a.as_u128(), None);
        let b = seq("49680641593397821290997226117868362540844834788908990467")
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(a < b);
        assert!(seq("9223372036854775807").is_ok_and(|c| c < a));
        assert!(seq(&"9".repeat(SequenceNumber::MAX_DIGITS + 1)).is_err());
        assert!(seq("12a").is_err());
    }
}
