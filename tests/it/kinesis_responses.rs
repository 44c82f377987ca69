//! Malformed Kinesis answers, through the real AWS SDK: a tiny HTTP server
//! on 127.0.0.1 speaks the Kinesis JSON protocol with crafted bodies (the
//! well-formed path is tested against the stand-in in `stream_kinesis`).
//! Every case must end in a precise error, never a panic or a silent loss.

use std::sync::{Arc, Mutex};

use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use kinesthetic::stream::kinesis::{KinesisBackend, KinesisSettings};
use kinesthetic::stream::{PutEntry, StreamBackend, StreamError};

use crate::harness::rt;

/// What the server answers to every request: status and body.
type Answer = Arc<Mutex<(u16, String)>>;

async fn fake_kinesis() -> (KinesisBackend, Answer) {
    let answer: Answer = Arc::new(Mutex::new((200, "{}".into())));
    let a = Arc::clone(&answer);
    let app = axum::Router::new().fallback(move |headers: HeaderMap| {
        let a = Arc::clone(&a);
        async move {
            assert!(
                headers
                    .get("x-amz-target")
                    .and_then(|v| v.to_str().ok())
                    .is_some_and(|t| t.starts_with("Kinesis_20131202.")),
                "not a Kinesis request: {headers:?}"
            );
            let (status, body) = a.lock().map(|g| g.clone()).unwrap_or_default();
            (
                StatusCode::from_u16(status).unwrap_or(StatusCode::OK),
                [("content-type", "application/x-amz-json-1.1")],
                body,
            )
                .into_response()
        }
    });
    let l = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let addr = l.local_addr().unwrap_or_else(|e| panic!("{e}"));
    tokio::spawn(async move {
        let _ = axum::serve(l, app).await;
    });
    let b = KinesisBackend::connect(&KinesisSettings {
        region: Some("us-east-1".into()),
        endpoint: Some(format!("http://{addr}")),
        ..KinesisSettings::default()
    })
    .await;
    (b, answer)
}

fn entries(n: usize) -> Vec<PutEntry> {
    (0..n)
        .map(|i| PutEntry {
            partition_key: format!("k{i}"),
            explicit_hash_key: None,
            data: format!("event {i}").into_bytes().into(),
        })
        .collect()
}

#[test]
fn malformed_kinesis_answers_are_precise_errors() {
    rt().block_on(async {
        let (b, answer) = fake_kinesis().await;
        let set = |status: u16, body: &str| {
            if let Ok(mut g) = answer.lock() {
                *g = (status, body.to_owned());
            }
        };
        let shard = r#""ShardId":"shardId-000000000000""#;

        // Fewer results than entries: which ones were written is unknown.
        set(200, &format!(r#"{{"FailedRecordCount":0,"Records":[{{"SequenceNumber":"1",{shard}}}]}}"#));
        match b.put_records("s", &entries(2)).await {
            Err(StreamError::Service(m)) => assert!(m.contains("1 results for 2 entries"), "{m}"),
            other => panic!("short answer: {other:?}"),
        }
        // A result with neither an error nor a sequence number.
        set(200, r#"{"FailedRecordCount":0,"Records":[{}]}"#);
        match b.put_records("s", &entries(1)).await {
            Err(StreamError::Service(m)) => assert!(m.contains("neither an error nor a sequence"), "{m}"),
            other => panic!("empty result: {other:?}"),
        }
        // A sequence number that is not one.
        set(200, &format!(r#"{{"FailedRecordCount":0,"Records":[{{"SequenceNumber":"12x",{shard}}}]}}"#));
        match b.put_records("s", &entries(1)).await {
            Err(StreamError::Service(m)) => assert!(m.contains("\"12x\""), "{m}"),
            other => panic!("bad sequence number: {other:?}"),
        }
        // Not JSON at all, with 200.
        set(200, "<html>gateway</html>");
        match b.put_records("s", &entries(1)).await {
            Err(StreamError::Service(m)) => assert!(!m.is_empty(), "{m}"),
            other => panic!("not JSON: {other:?}"),
        }
        // A failure without a body (the SDK retries, then gives up).
        set(500, "");
        assert!(
            matches!(b.put_records("s", &entries(1)).await, Err(StreamError::Service(_))),
            "HTTP 500"
        );
        // A service error by code: throttling is told apart.
        set(
            400,
            r#"{"__type":"ProvisionedThroughputExceededException","message":"Rate exceeded"}"#,
        );
        match b.put_records("s", &entries(1)).await {
            Err(StreamError::Throttled(m)) => assert!(m.contains("Rate exceeded"), "{m}"),
            other => panic!("throttled: {other:?}"),
        }
        // GetRecords: an empty answer is not the end of a shard; a record
        // without its sequence number is refused.
        use kinesthetic::stream::ShardIterator;
        let it = ShardIterator("AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA".into());
        set(200, "{}");
        match b.get_records(&it, 10).await {
            Err(StreamError::Service(m)) => assert!(m.contains("MillisBehindLatest"), "{m}"),
            other => panic!("empty GetRecords: {other:?}"),
        }
        set(
            200,
            r#"{"MillisBehindLatest":0,"NextShardIterator":"x","Records":[{"Data":"eA==","PartitionKey":"k"}]}"#,
        );
        match b.get_records(&it, 10).await {
            Err(StreamError::Service(m)) => assert!(m.contains("bad sequence number"), "{m}"),
            other => panic!("record without a sequence number: {other:?}"),
        }
        // Describe: a summary missing, a shard without its hash key range,
        // a hash key that is not a number.
        set(200, "{}");
        match b.describe("s").await {
            Err(StreamError::Service(m)) => assert!(m.contains("unknown status"), "{m}"),
            other => panic!("no summary: {other:?}"),
        }
        let summary = r#""StreamDescriptionSummary":{"StreamName":"s","StreamARN":"arn:aws:kinesis:us-east-1:000000000000:stream/s","StreamStatus":"ACTIVE","RetentionPeriodHours":24,"StreamCreationTimestamp":1764000000,"EnhancedMonitoring":[],"OpenShardCount":1}"#;
        set(200, &format!(r#"{{{summary},"Shards":[]}}"#));
        match b.describe("s").await {
            Err(StreamError::Service(m)) => assert!(m.contains("no open shard"), "{m}"),
            other => panic!("no shards: {other:?}"),
        }
        set(
            200,
            &format!(
                r#"{{{summary},"Shards":[{{{shard},"SequenceNumberRange":{{"StartingSequenceNumber":"1"}}}}]}}"#
            ),
        );
        match b.describe("s").await {
            Err(StreamError::Service(m)) => assert!(m.contains("no hash key range"), "{m}"),
            other => panic!("no hash key range: {other:?}"),
        }
        set(
            200,
            &format!(
                r#"{{{summary},"Shards":[{{{shard},"HashKeyRange":{{"StartingHashKey":"0","EndingHashKey":"lots"}},"SequenceNumberRange":{{"StartingSequenceNumber":"1"}}}}]}}"#
            ),
        );
        match b.describe("s").await {
            Err(StreamError::Service(m)) => assert!(m.contains("lots"), "{m}"),
            other => panic!("bad hash key: {other:?}"),
        }
    });
}

/// An endpoint that accepts connections and never answers: every call
/// fails within its attempt timeouts (3 attempts), instead of holding its
/// caller for ever.
#[test]
fn a_kinesis_endpoint_that_never_answers_fails_calls_in_bounded_time() {
    rt().block_on(async {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let addr = l.local_addr().unwrap_or_else(|e| panic!("{e}"));
        // Accept and hold every connection, reading nothing.
        tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((sock, _)) = l.accept().await {
                held.push(sock);
            }
        });
        let b = KinesisBackend::connect(&KinesisSettings {
            region: Some("us-east-1".into()),
            endpoint: Some(format!("http://{addr}")),
            attempt_timeout_ms: Some(300),
        })
        .await;
        let guard = std::time::Duration::from_secs(20);
        let describe = tokio::time::timeout(guard, b.describe("s")).await;
        assert!(
            matches!(describe, Ok(Err(_))),
            "describe against a hung endpoint: {describe:?}"
        );
        let put = tokio::time::timeout(guard, b.put_records("s", &entries(1))).await;
        assert!(
            matches!(put, Ok(Err(_))),
            "put against a hung endpoint: {put:?}"
        );
    });
}
