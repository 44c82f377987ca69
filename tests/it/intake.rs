//! The HTTP intake end to end: a real server on 127.0.0.1:0 writing to the
//! local log, driven by a real HTTP client, checked by reading the stream.

use std::collections::{HashMap, HashSet};
use std::io::Write;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use kinesthetic::app::{Running, start_intake};
use kinesthetic::config::{Config, StreamSettings, TokenConfig};
use kinesthetic::stream::local::{LocalLog, LocalOptions};
use kinesthetic::stream::{
    GetRecordsOutput, PutEntry, PutOutcome, ShardIterator, StartPosition, StreamBackend,
    StreamDescription, StreamError, hash_key_of, kpl,
};
use serde_json::Value;

use crate::harness::{metric, rt, scrape};

fn config() -> Config {
    let mut c = Config::default();
    c.intake.listen = "127.0.0.1:0".parse().unwrap_or_else(|e| panic!("{e}"));
    c.admin.listen = c.intake.listen;
    c
}

async fn local(dir: &std::path::Path, streams: &[(&str, u32)]) -> LocalLog {
    let log = LocalLog::open(dir, LocalOptions::default()).unwrap_or_else(|e| panic!("{e}"));
    for (name, shards) in streams {
        log.create_stream(name, *shards)
            .await
            .unwrap_or_else(|e| panic!("create {name}: {e}"));
    }
    log
}

/// One event as read back: shard, partition key, bytes, stamp.
#[derive(Debug, Clone)]
pub(crate) struct ReadEvent {
    pub(crate) shard: String,
    pub(crate) key: String,
    pub(crate) data: Vec<u8>,
    pub(crate) stamp: Option<kinesthetic::event::Stamp>,
}

/// Every event of a stream, shard by shard (parents first), de-aggregated.
pub(crate) async fn read_all<B: StreamBackend>(b: &B, stream: &str) -> Vec<ReadEvent> {
    let d = b
        .describe(stream)
        .await
        .unwrap_or_else(|e| panic!("describe {stream}: {e}"));
    let mut out = Vec::new();
    for s in &d.shards {
        let mut it = Some(
            b.shard_iterator(stream, &s.id, &StartPosition::TrimHorizon)
                .await
                .unwrap_or_else(|e| panic!("iterator: {e}")),
        );
        while let Some(cur) = it.take() {
            let r = b
                .get_records(&cur, 10_000)
                .await
                .unwrap_or_else(|e| panic!("get_records: {e}"));
            for rec in &r.records {
                for e in kpl::events_of(&rec.data, &rec.partition_key)
                    .unwrap_or_else(|e| panic!("decode: {e}"))
                {
                    out.push(ReadEvent {
                        shard: s.id.clone(),
                        key: e.partition_key,
                        data: e.data.to_vec(),
                        stamp: e.stamp,
                    });
                }
            }
            if !(r.records.is_empty() && r.millis_behind_latest == 0) {
                it = r.next_iterator;
            }
        }
    }
    out
}

/// `c` with stream `s` keyed by its events' `user` field.
fn keyed_by_user(mut c: Config) -> Config {
    c.streams.insert(
        "s".into(),
        StreamSettings {
            partition_key_field: Some("user".into()),
            ..StreamSettings::default()
        },
    );
    c
}

fn url(r: &Running, stream: &str) -> String {
    format!("http://{}/v1/streams/{stream}/events", r.intake_addr)
}

async fn post(
    r: &Running,
    stream: &str,
    headers: &[(&str, &str)],
    body: Vec<u8>,
) -> (u16, Value, reqwest::header::HeaderMap) {
    let mut req = reqwest::Client::new().post(url(r, stream)).body(body);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = req.send().await.unwrap_or_else(|e| panic!("POST: {e}"));
    let status = resp.status().as_u16();
    let h = resp.headers().clone();
    let text = resp.text().await.unwrap_or_default();
    let v = serde_json::from_str(&text).unwrap_or(Value::String(text));
    (status, v, h)
}

fn ndjson(lines: &[&[u8]]) -> Vec<u8> {
    let mut b = Vec::new();
    for l in lines {
        b.extend_from_slice(l);
        b.push(b'\n');
    }
    b
}

fn id_of(s: &kinesthetic::event::Stamp) -> String {
    s.id.to_string()
}

#[test]
fn ndjson_events_are_stamped_packed_and_kept_byte_for_byte() {
    rt().block_on(async {
        let dir = crate::harness::tempdir();
        let log = local(dir.path(), &[("logs", 1)]).await;
        let mut c = config();
        c.intake.listener_id = Some("0xabc".into());
        let r = start_intake(log.clone(), &c)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let lines: Vec<&[u8]> = vec![
            br#"{"a":1}"#,
            b"plain text, not JSON",
            b"\xff\xfe not UTF-8",
            br#"  {"spaces" :  "kept"}  "#,
        ];
        let (status, v, _) = post(&r, "logs", &[], ndjson(&lines)).await;
        assert_eq!(status, 200, "{v}");
        assert_eq!(v["accepted"], 4);
        let got = read_all(&log, "logs").await;
        assert_eq!(got.len(), 4);
        for (g, want) in got.iter().zip(&lines) {
            assert_eq!(&g.data, want);
            let st = g.stamp.unwrap_or_else(|| panic!("event without stamp"));
            assert_eq!(st.id.listener, 0xabc);
        }
        // Consecutive counters, ids as answered.
        let stamps: Vec<_> = got.iter().filter_map(|g| g.stamp).collect();
        for w in stamps.windows(2) {
            assert_eq!(w[0].id.counter + 1, w[1].id.counter);
            assert_eq!(w[0].received_ms, w[1].received_ms);
        }
        assert_eq!(v["first_id"], id_of(&stamps[0]));
        assert_eq!(v["last_id"], id_of(&stamps[3]));
        // CRLF endings and blank lines.
        let (status, v, _) = post(&r, "logs", &[], b"x\r\n\r\ny\n\n".to_vec()).await;
        assert_eq!((status, &v["accepted"]), (200, &Value::from(2)), "{v}");
        let got = read_all(&log, "logs").await;
        assert_eq!(got[4].data, b"x");
        assert_eq!(got[5].data, b"y");
        // What `curl --data-binary @events.ndjson` sends: taken as NDJSON,
        // never form-decoded.
        let (status, v, _) = post(
            &r,
            "logs",
            &[("content-type", "application/x-www-form-urlencoded")],
            b"a=1&b=%20+c\n{\"k\":\"v\"}\n".to_vec(),
        )
        .await;
        assert_eq!((status, &v["accepted"]), (200, &Value::from(2)), "{v}");
        let got = read_all(&log, "logs").await;
        assert_eq!(got[6].data, b"a=1&b=%20+c");
        assert_eq!(got[7].data, br#"{"k":"v"}"#);
        // The intake's metrics tell the same story.
        let m = scrape(r.admin_addr).await;
        let value = |name: &str| metric(&m, name);
        let payload: usize = got.iter().map(|g| g.data.len()).sum();
        assert_eq!(
            value("kinesthetic_intake_events_accepted_total{stream=\"logs\"}"),
            8.0,
            "{m}"
        );
        assert_eq!(
            value("kinesthetic_intake_bytes_accepted_total{stream=\"logs\"}"),
            payload as f64,
            "{m}"
        );
        assert_eq!(
            value("kinesthetic_intake_put_calls_total{stream=\"logs\",to=\"stream\"}"),
            3.0,
            "{m}"
        );
        assert_eq!(
            value("kinesthetic_intake_put_records_total{stream=\"logs\",to=\"stream\"}"),
            3.0,
            "{m}"
        );
        assert_eq!(
            value("kinesthetic_intake_put_failed_entries_total"),
            0.0,
            "{m}"
        );
        assert_eq!(
            value("kinesthetic_intake_put_latency_seconds_count{stream=\"logs\",to=\"stream\"}"),
            3.0,
            "{m}"
        );
        assert_eq!(value("kinesthetic_intake_buffer_bytes"), 0.0, "{m}");
        assert_eq!(
            value("kinesthetic_intake_request_latency_seconds_count{outcome=\"accepted\"}"),
            3.0,
            "{m}"
        );
        r.stop().await.unwrap_or_else(|e| panic!("{e}"));
    });
}

#[test]
fn json_arrays_gzip_and_zstd_bodies_are_accepted() {
    rt().block_on(async {
        let dir = crate::harness::tempdir();
        let log = local(dir.path(), &[("s", 1)]).await;
        let r = start_intake(log.clone(), &config())
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let (status, v, _) = post(
            &r,
            "s",
            &[("content-type", "application/json")],
            br#"[ {"a" : 1, "b": [1, 2 ]} , "str" , 3.50 ]"#.to_vec(),
        )
        .await;
        assert_eq!(status, 200, "{v}");
        assert_eq!(v["accepted"], 3);
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(b"g1\ng2\n").unwrap_or_else(|e| panic!("{e}"));
        let gz = gz.finish().unwrap_or_else(|e| panic!("{e}"));
        let (status, v, _) = post(&r, "s", &[("content-encoding", "gzip")], gz).await;
        assert_eq!(status, 200, "{v}");
        let zs = zstd::encode_all(&b"z1\nz2\nz3\n"[..], 3).unwrap_or_else(|e| panic!("{e}"));
        let (status, v, _) = post(&r, "s", &[("content-encoding", "zstd")], zs).await;
        assert_eq!(status, 200, "{v}");
        let got: Vec<Vec<u8>> = read_all(&log, "s")
            .await
            .into_iter()
            .map(|e| e.data)
            .collect();
        let want: Vec<&[u8]> = vec![
            br#"{"a":1,"b":[1,2]}"#,
            br#""str""#,
            b"3.50",
            b"g1",
            b"g2",
            b"z1",
            b"z2",
            b"z3",
        ];
        assert_eq!(got, want);
        r.stop().await.unwrap_or_else(|e| panic!("{e}"));
    });
}

#[test]
fn bad_requests_get_precise_errors_and_write_nothing() {
    rt().block_on(async {
        let dir = crate::harness::tempdir();
        let log = local(dir.path(), &[("s", 1)]).await;
        let mut c = config();
        c.intake.max_body_bytes = 100_000;
        c.intake.max_decoded_bytes = 200_000;
        c.intake.buffer_bytes = 1 << 20;
        c.intake.record_max_bytes = 10_000;
        let r = start_intake(log.clone(), &c)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let check = |status: u16, v: &Value, want_status: u16, want: &str| {
            assert_eq!(status, want_status, "{v}");
            let msg = v["error"].as_str().unwrap_or_default();
            assert!(msg.contains(want), "{want:?} not in {msg:?}");
        };
        let (s, v, _) = post(&r, "nope", &[], b"x\n".to_vec()).await;
        check(s, &v, 404, "\"nope\"");
        let (s, v, _) = post(&r, "s", &[], Vec::new()).await;
        check(s, &v, 400, "");
        let (s, v, _) = post(
            &r,
            "s",
            &[("content-type", "application/json")],
            b"[1, 2,, 3]".to_vec(),
        )
        .await;
        check(s, &v, 400, "byte");
        let (s, v, _) = post(&r, "s", &[], vec![b'x'; 150_000]).await;
        check(s, &v, 413, "100000");
        // The line an editor shows (blank lines count) and the limit.
        let mut body = ndjson(&[&b"ok"[..]; 16]);
        body.extend_from_slice(b"\n\r\n");
        body.extend_from_slice(&[b'y'; 20_000]);
        body.push(b'\n');
        let (s, v, _) = post(&r, "s", &[], body).await;
        check(s, &v, 413, "line 19 is 20000 bytes");
        let limit = v["error"].as_str().unwrap_or_default();
        assert!(
            limit.contains("limit is ") && limit.contains(" bytes"),
            "{limit}"
        );
        // A name no stream can have: the client's mistake, not a retry.
        let (s, v, _) = post(&r, "a@b", &[], b"x\n".to_vec()).await;
        check(s, &v, 400, "not a stream name");
        let (s, v, _) = post(&r, "s", &[("content-encoding", "br")], b"x".to_vec()).await;
        check(s, &v, 415, "br");
        let (s, v, _) = post(&r, "s", &[("content-type", "image/png")], b"x".to_vec()).await;
        check(s, &v, 415, "image/png");
        let (s, v, _) = post(
            &r,
            "s",
            &[("content-encoding", "gzip")],
            b"not gzip".to_vec(),
        )
        .await;
        check(s, &v, 400, "gzip");
        let bomb =
            zstd::encode_all(&vec![0u8; 5_000_000][..], 19).unwrap_or_else(|e| panic!("{e}"));
        let (s, v, _) = post(&r, "s", &[("content-encoding", "zstd")], bomb).await;
        check(s, &v, 413, "");
        let long_key = "k".repeat(300);
        let (s, v, _) = post(&r, "s", &[("x-partition-key", &long_key)], b"x\n".to_vec()).await;
        check(s, &v, 400, "256");
        assert!(
            read_all(&log, "s").await.is_empty(),
            "a refused request wrote events"
        );
        // The rejections are counted.
        let metrics = scrape(r.admin_addr).await;
        assert!(
            metrics.contains("kinesthetic_intake_rejections_total{reason=\"too_large\"} 3"),
            "{metrics}"
        );
        r.stop().await.unwrap_or_else(|e| panic!("{e}"));
    });
}

#[test]
fn bearer_tokens_limit_streams() {
    rt().block_on(async {
        let dir = crate::harness::tempdir();
        let log = local(dir.path(), &[("a", 1), ("b", 1)]).await;
        let mut c = config();
        c.intake.tokens = vec![
            TokenConfig {
                token: "token-for-stream-a-only".into(),
                streams: vec!["a".into()],
            },
            TokenConfig {
                token: "token-for-every-stream!".into(),
                streams: vec!["*".into()],
            },
        ];
        let r = start_intake(log.clone(), &c)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let auth = |t: &str| format!("Bearer {t}");
        let (s, _, _) = post(&r, "a", &[], b"x\n".to_vec()).await;
        assert_eq!(s, 401);
        let (s, _, _) = post(
            &r,
            "a",
            &[("authorization", &auth("wrong-token-wrong-token"))],
            b"x\n".to_vec(),
        )
        .await;
        assert_eq!(s, 401);
        let (s, _, _) = post(
            &r,
            "a",
            &[("authorization", &auth("token-for-stream-a-only"))],
            b"x\n".to_vec(),
        )
        .await;
        assert_eq!(s, 200);
        let (s, v, _) = post(
            &r,
            "b",
            &[("authorization", &auth("token-for-stream-a-only"))],
            b"x\n".to_vec(),
        )
        .await;
        assert_eq!(s, 403, "{v}");
        let (s, _, _) = post(
            &r,
            "b",
            &[("authorization", &auth("token-for-every-stream!"))],
            b"x\n".to_vec(),
        )
        .await;
        assert_eq!(s, 200);
        // The scheme is case-insensitive; the token is not.
        let (s, _, _) = post(
            &r,
            "a",
            &[("authorization", "bearer token-for-stream-a-only")],
            b"x\n".to_vec(),
        )
        .await;
        assert_eq!(s, 200);
        let (s, _, _) = post(
            &r,
            "a",
            &[("authorization", "Bearer TOKEN-FOR-STREAM-A-ONLY")],
            b"x\n".to_vec(),
        )
        .await;
        assert_eq!(s, 401);
        let (s, _, _) = post(
            &r,
            "a",
            &[("authorization", "Basic token-for-stream-a-only")],
            b"x\n".to_vec(),
        )
        .await;
        assert_eq!(s, 401);
        assert_eq!(read_all(&log, "a").await.len(), 2);
        assert_eq!(read_all(&log, "b").await.len(), 1);
        r.stop().await.unwrap_or_else(|e| panic!("{e}"));
    });
}

/// The intake's router over the local log, without a socket: one request
/// through it (`oneshot`), answered with its status, JSON and headers.
async fn oneshot(
    log: &LocalLog,
    c: &Config,
    req: axum::http::Request<axum::body::Body>,
) -> (u16, Value, axum::http::HeaderMap) {
    use tower::ServiceExt;
    let intake = kinesthetic::intake::server::Intake::new(
        log.clone(),
        kinesthetic::intake::stamp::Listener::new(Some(7)),
        c.intake.clone(),
        c.streams.clone().into_iter().collect(),
        kinesthetic::app::Telemetry::new().metrics,
    );
    let Ok(resp) = intake.router().oneshot(req).await;
    let (status, headers) = (resp.status().as_u16(), resp.headers().clone());
    let bytes = axum::body::to_bytes(resp.into_body(), 1 << 20)
        .await
        .unwrap_or_default();
    let v = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    intake.drain().await;
    (status, v, headers)
}

fn request(stream: &str, auth: Option<&str>) -> axum::http::Request<axum::body::Body> {
    let mut r = axum::http::Request::post(format!("/v1/streams/{stream}/events"));
    if let Some(a) = auth {
        r = r.header("authorization", a);
    }
    r.body(axum::body::Body::from("x\n"))
        .unwrap_or_else(|e| panic!("{e}"))
}

/// A stream name that breaks Kinesis's rule is refused with the rule, and
/// one of 5,000 characters is not echoed whole (nor is a missing one); a
/// 401 names its scheme (RFC 6750) and what to send. Through the router
/// alone: no socket needed.
#[test]
fn bad_stream_names_and_missing_tokens_get_replies_that_say_what_to_do() {
    rt().block_on(async {
        let dir = crate::harness::tempdir();
        let log = local(dir.path(), &[("a", 1)]).await;
        let c = config();
        for (name, want) in [("x".repeat(5000), 400), ("y".repeat(100), 404)] {
            let (s, v, _) = oneshot(&log, &c, request(&name, None)).await;
            assert_eq!(s, want, "{v}");
            let e = v["error"].as_str().unwrap_or_default();
            assert!(e.len() < 200 && e.contains(" bytes)"), "{e}");
        }
        let (_, v, _) = oneshot(&log, &c, request(&"x".repeat(5000), None)).await;
        assert!(
            v["error"]
                .as_str()
                .is_some_and(|e| e.contains("A-Z a-z 0-9 _ . -")),
            "{v}"
        );
        let mut with_tokens = config();
        with_tokens.intake.tokens = vec![TokenConfig {
            token: "token-for-stream-a-only".into(),
            streams: vec!["a".into()],
        }];
        let (s, v, h) = oneshot(&log, &with_tokens, request("a", None)).await;
        assert_eq!(s, 401);
        assert_eq!(
            h.get("www-authenticate").and_then(|v| v.to_str().ok()),
            Some("Bearer realm=\"kinesthetic\"")
        );
        assert!(
            v["error"]
                .as_str()
                .is_some_and(|e| e.contains("Authorization: Bearer TOKEN")),
            "{v}"
        );
        let auth = Some("Bearer token-for-stream-a-only");
        assert_eq!(oneshot(&log, &with_tokens, request("a", auth)).await.0, 200);
        assert_eq!(
            read_all(&log, "a").await.len(),
            1,
            "only the authorized request"
        );
    });
}

#[test]
fn partition_keys_route_events_to_their_shards() {
    rt().block_on(async {
        let dir = crate::harness::tempdir();
        let log = local(dir.path(), &[("s", 4)]).await;
        let c = keyed_by_user(config());
        let r = start_intake(log.clone(), &c)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        // By JSON field; a missing field spreads.
        let body: Vec<u8> = (0..200)
            .map(|i| format!("{{\"user\":\"u{}\",\"n\":{i}}}\n", i % 37))
            .chain(std::iter::once("{\"no_user\":1}\n".to_owned()))
            .collect::<String>()
            .into_bytes();
        let (s, v, _) = post(&r, "s", &[], body).await;
        assert_eq!(s, 200, "{v}");
        // By header.
        let (s, _, _) = post(
            &r,
            "s",
            &[("x-partition-key", "fixed")],
            ndjson(&[b"h1", b"h2"]),
        )
        .await;
        assert_eq!(s, 200);
        let d: StreamDescription = log.describe("s").await.unwrap_or_else(|e| panic!("{e}"));
        let range_of: HashMap<String, _> = d
            .shards
            .iter()
            .map(|s| (s.id.clone(), s.hash_range))
            .collect();
        let got = read_all(&log, "s").await;
        assert_eq!(got.len(), 203);
        let mut per_user: HashMap<String, Vec<i64>> = HashMap::new();
        for e in &got {
            // Every key, spread ones included: a KPL de-aggregator (the
            // KCL's) drops a whole record holding an event whose key hashes
            // outside the shard it was read from.
            {
                assert!(
                    range_of[&e.shard].contains(hash_key_of(&e.key)),
                    "{} in {}",
                    e.key,
                    e.shard
                );
            }
            if let Ok(v) = serde_json::from_slice::<Value>(&e.data)
                && let (Some(u), Some(n)) = (v["user"].as_str(), v["n"].as_i64())
            {
                assert_eq!(e.key, u);
                per_user.entry(u.to_owned()).or_default().push(n);
            }
        }
        // Order per key is kept.
        for ns in per_user.values() {
            assert!(ns.windows(2).all(|w| w[0] < w[1]), "{ns:?}");
        }
        assert_eq!(per_user.len(), 37);
        // Spread requests rotate over the shards, a whole request at a time.
        let before: HashSet<String> = got.iter().map(|e| e.shard.clone()).collect();
        let mut c2 = config();
        c2.intake.listener_id = Some("7".into());
        let r2 = start_intake(log.clone(), &c2)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        for _ in 0..4 {
            let (s, _, _) = post(&r2, "s", &[], ndjson(&[b"a", b"b", b"c"])).await;
            assert_eq!(s, 200);
        }
        let spread: Vec<ReadEvent> = read_all(&log, "s")
            .await
            .into_iter()
            .filter(|e| e.stamp.is_some_and(|s| s.id.listener == 7))
            .collect();
        let shards: HashSet<&str> = spread.iter().map(|e| e.shard.as_str()).collect();
        assert_eq!(spread.len(), 12);
        for e in &spread {
            assert!(
                range_of[&e.shard].contains(hash_key_of(&e.key)),
                "spread key {} in {}",
                e.key,
                e.shard
            );
        }
        assert_eq!(shards.len(), 4, "4 requests over 4 shards: {shards:?}");
        assert!(!before.is_empty());
        r.stop().await.unwrap_or_else(|e| panic!("{e}"));
        r2.stop().await.unwrap_or_else(|e| panic!("{e}"));
    });
}

/// Keys that would forge lines where keys are printed (a newline or tab,
/// from the header or the JSON field), or that the JSON reader cannot reach
/// (nested past its depth), are refused with a 400 that says why, and
/// nothing of the request is written.
#[test]
fn forging_or_unreadable_partition_keys_are_refused() {
    rt().block_on(async {
        let dir = crate::harness::tempdir();
        let log = local(dir.path(), &[("s", 4)]).await;
        let c = keyed_by_user(config());
        let r = start_intake(log.clone(), &c)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let refused = |s: u16, v: &Value, want: &[&str]| {
            assert_eq!(s, 400, "{v}");
            let msg = v["error"].as_str().unwrap_or_default();
            for w in want {
                assert!(msg.contains(w), "{w:?} not in {msg:?}");
            }
        };
        let (s, v, _) = post(&r, "s", &[("x-partition-key", "a\tb")], b"x\n".to_vec()).await;
        refused(s, &v, &["X-Partition-Key", "U+0009", "control character"]);
        let body = b"{\"user\":\"ok\"}\n{\"user\":\"evil\\n0000000000000000-1 2026 forged\"}\n";
        let (s, v, _) = post(&r, "s", &[], body.to_vec()).await;
        refused(s, &v, &["event 2", "U+000A"]);
        // The field after a member nested deeper than the reader goes.
        let deep = format!(
            "{{\"a\":{}1{},\"user\":\"u\"}}\n",
            "[".repeat(200),
            "]".repeat(200)
        );
        let (s, v, _) = post(&r, "s", &[], deep.into_bytes()).await;
        refused(s, &v, &["event 1", "partition key field `user`"]);
        // Plain text lines have no field: spread, not refused.
        let (s, v, _) = post(&r, "s", &[], b"plain text\n".to_vec()).await;
        assert_eq!(s, 200, "{v}");
        let got = read_all(&log, "s").await;
        assert_eq!(got.len(), 1, "only the plain line was written");
        r.stop().await.unwrap_or_else(|e| panic!("{e}"));
    });
}

#[test]
fn two_listeners_writing_concurrently_never_share_an_event_id() {
    rt().block_on(async {
        let dir = crate::harness::tempdir();
        let log = local(dir.path(), &[("s", 2)]).await;
        let a = start_intake(log.clone(), &config())
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let b = start_intake(log.clone(), &config())
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert_ne!(a.listener_id, b.listener_id);
        let mut tasks = tokio::task::JoinSet::new();
        for (i, target) in [url(&a, "s"), url(&b, "s")]
            .into_iter()
            .cycle()
            .take(40)
            .enumerate()
        {
            tasks.spawn(async move {
                let body: String = (0..250)
                    .map(|j| format!("{{\"req\":{i},\"j\":{j}}}\n"))
                    .collect();
                let resp = reqwest::Client::new()
                    .post(&target)
                    .body(body)
                    .send()
                    .await
                    .unwrap_or_else(|e| panic!("{e}"));
                assert_eq!(resp.status().as_u16(), 200);
            });
        }
        while let Some(t) = tasks.join_next().await {
            t.unwrap_or_else(|e| panic!("{e}"));
        }
        let got = read_all(&log, "s").await;
        assert_eq!(got.len(), 40 * 250);
        let ids: HashSet<_> = got.iter().filter_map(|e| e.stamp.map(|s| s.id)).collect();
        assert_eq!(ids.len(), 40 * 250, "event ids collided");
        a.stop().await.unwrap_or_else(|e| panic!("{e}"));
        b.stop().await.unwrap_or_else(|e| panic!("{e}"));
    });
}

/// The `StreamBackend` methods a test wrapper passes straight on to its
/// `inner` local log: all but `put_records` (and `describe`, given
/// `all_but_describe`).
macro_rules! delegate_to_inner {
    () => {
        async fn describe(&self, n: &str) -> Result<StreamDescription, StreamError> {
            self.inner.describe(n).await
        }
        delegate_to_inner!(all_but_describe);
    };
    (all_but_describe) => {
        async fn create_stream(&self, n: &str, s: u32) -> Result<(), StreamError> {
            self.inner.create_stream(n, s).await
        }
        async fn delete_stream(&self, n: &str) -> Result<(), StreamError> {
            self.inner.delete_stream(n).await
        }
        async fn list_streams(&self) -> Result<Vec<String>, StreamError> {
            self.inner.list_streams().await
        }
        async fn shard_iterator(
            &self,
            s: &str,
            sh: &str,
            f: &StartPosition,
        ) -> Result<ShardIterator, StreamError> {
            self.inner.shard_iterator(s, sh, f).await
        }
        async fn get_records(
            &self,
            i: &ShardIterator,
            l: u32,
        ) -> Result<GetRecordsOutput, StreamError> {
            self.inner.get_records(i, l).await
        }
        async fn split_shard(&self, s: &str, sh: &str, k: u128) -> Result<(), StreamError> {
            self.inner.split_shard(s, sh, k).await
        }
        async fn merge_shards(&self, s: &str, a: &str, b: &str) -> Result<(), StreamError> {
            self.inner.merge_shards(s, a, b).await
        }
    };
}

/// A backend around the local log whose puts fail some entries the first
/// time (as Kinesis does under throttling) and count what is sent.
#[derive(Clone)]
struct Flaky {
    inner: LocalLog,
    calls: Arc<AtomicUsize>,
    entries: Arc<AtomicUsize>,
    sent: Arc<std::sync::Mutex<Vec<Vec<u8>>>>,
}

impl StreamBackend for Flaky {
    delegate_to_inner!();
    async fn put_records(&self, s: &str, e: &[PutEntry]) -> Result<Vec<PutOutcome>, StreamError> {
        let call = self.calls.fetch_add(1, Ordering::SeqCst);
        self.entries.fetch_add(e.len(), Ordering::SeqCst);
        // Every other call, fail the odd entries; write the rest.
        let fail = |i: usize| call.is_multiple_of(2) && i % 2 == 1;
        let pass: Vec<PutEntry> = e
            .iter()
            .enumerate()
            .filter(|(i, _)| !fail(*i))
            .map(|(_, x)| x.clone())
            .collect();
        if let Ok(mut sent) = self.sent.lock() {
            sent.extend(pass.iter().map(|p| p.data.to_vec()));
        }
        let mut written = self.inner.put_records(s, &pass).await?.into_iter();
        Ok((0..e.len())
            .map(|i| {
                if fail(i) {
                    PutOutcome::Failed {
                        code: "ProvisionedThroughputExceededException".into(),
                        message: "Rate exceeded for shard".into(),
                    }
                } else {
                    written.next().unwrap_or(PutOutcome::Failed {
                        code: "InternalFailure".into(),
                        message: "missing".into(),
                    })
                }
            })
            .collect())
    }
}

#[test]
fn failed_entries_alone_are_resent_and_nothing_is_lost_or_doubled() {
    rt().block_on(async {
        let dir = crate::harness::tempdir();
        let log = local(dir.path(), &[("s", 8)]).await;
        let flaky = Flaky {
            inner: log.clone(),
            calls: Arc::default(),
            entries: Arc::default(),
            sent: Arc::default(),
        };
        let mut c = config();
        c.intake.record_max_bytes = 4096;
        c.streams.insert(
            "s".into(),
            StreamSettings {
                partition_key_field: Some("user".into()),
                ..StreamSettings::default()
            },
        );
        let r = start_intake(flaky.clone(), &c)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let body: String = (0..2000)
            .map(|i| format!("{{\"user\":\"u{i}\",\"pad\":\"{}\"}}\n", "p".repeat(50)))
            .collect();
        let (s, v, _) = post(&r, "s", &[], body.into_bytes()).await;
        assert_eq!(s, 200, "{v}");
        let got = read_all(&log, "s").await;
        assert_eq!(got.len(), 2000, "events lost or doubled");
        let ids: HashSet<_> = got.iter().filter_map(|e| e.stamp.map(|s| s.id)).collect();
        assert_eq!(ids.len(), 2000);
        // Each record was written exactly once: no duplicate from a retry.
        let sent = flaky.sent.lock().map(|s| s.clone()).unwrap_or_default();
        let distinct: HashSet<&Vec<u8>> = sent.iter().collect();
        assert_eq!(
            distinct.len(),
            sent.len(),
            "a written record was sent again"
        );
        // Retries re-sent only the failed entries: entries sent = records
        // + failures, and there were failures.
        let entries = flaky.entries.load(Ordering::SeqCst);
        assert!(
            entries > sent.len(),
            "no entry failed: the test proves nothing"
        );
        assert!(
            entries < 2 * sent.len() + 8,
            "{entries} entries for {} records",
            sent.len()
        );
        r.stop().await.unwrap_or_else(|e| panic!("{e}"));
    });
}

/// The local log, with every put held until the gate opens: a stuck
/// stream, so requests are still in the intake when it is told to stop.
#[derive(Clone)]
struct Slow {
    inner: LocalLog,
    gate: tokio::sync::watch::Receiver<bool>,
    puts: Arc<AtomicUsize>,
}

impl StreamBackend for Slow {
    fn keeps_order_within_put(&self) -> bool {
        true
    }
    delegate_to_inner!();
    async fn put_records(&self, s: &str, e: &[PutEntry]) -> Result<Vec<PutOutcome>, StreamError> {
        self.puts.fetch_add(1, Ordering::SeqCst);
        let mut gate = self.gate.clone();
        let _ = gate.wait_for(|open| *open).await;
        self.inner.put_records(s, e).await
    }
}

#[test]
fn shutdown_drains_every_acknowledged_event_into_the_stream() {
    rt().block_on(async {
        let dir = crate::harness::tempdir();
        let log = local(dir.path(), &[("s", 2)]).await;
        let (open, gate) = tokio::sync::watch::channel(false);
        let slow = Slow {
            inner: log.clone(),
            gate,
            puts: Arc::default(),
        };
        let r = start_intake(slow.clone(), &config())
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let target = url(&r, "s");
        let bodies: Vec<String> = (0..30)
            .map(|i| (0..300).map(|j| format!("{i}-{j}\n")).collect())
            .collect();
        // What the buffer holds once every request is in (1 KiB units):
        // each body's bytes and its 300 events' bookkeeping.
        let overhead = 300 * kinesthetic::intake::server::EVENT_OVERHEAD_BYTES;
        let all_in: usize = bodies
            .iter()
            .map(|b| (b.len() + overhead).div_ceil(1024) * 1024)
            .sum();
        let mut tasks = tokio::task::JoinSet::new();
        for (i, body) in bodies.into_iter().enumerate() {
            let target = target.clone();
            tasks.spawn(async move {
                let resp = reqwest::Client::new()
                    .post(&target)
                    .body(body)
                    .send()
                    .await
                    .unwrap_or_else(|e| panic!("request {i}: {e}"));
                let status = resp.status().as_u16();
                let b = resp.bytes().await.unwrap_or_default();
                let v: Value = serde_json::from_slice(&b).unwrap_or(Value::Null);
                (status, v["accepted"].as_u64().unwrap_or(0))
            });
        }
        // Every request is in the buffer and none is written: the stream
        // is stuck.
        let start = std::time::Instant::now();
        loop {
            let m = scrape(r.admin_addr).await;
            let buffered = metric(&m, "kinesthetic_intake_buffer_bytes ") as usize;
            if buffered == all_in {
                break;
            }
            assert!(
                start.elapsed().as_secs() < 20,
                "{buffered} of {all_in} bytes buffered"
            );
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        assert!(read_all(&log, "s").await.is_empty());
        // Stop while they wait; the stream comes back a moment later.
        let stopping = tokio::spawn(r.stop());
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        assert!(
            !stopping.is_finished(),
            "the stop did not wait for the buffered events"
        );
        let _ = open.send(true);
        stopping
            .await
            .unwrap_or_else(|e| panic!("{e}"))
            .unwrap_or_else(|e| panic!("{e}"));
        // Every request taken before the stop is answered 200, none is cut
        // off, and what they were told is in the stream.
        let mut acked = 0;
        while let Some(t) = tasks.join_next().await {
            let (status, n) = t.unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(
                status, 200,
                "a request in flight at the stop was not completed"
            );
            acked += n;
        }
        assert_eq!(acked, 30 * 300);
        assert_eq!(read_all(&log, "s").await.len() as u64, acked);
    });
}

/// A stream whose puts never answer: each request gets its 503 once
/// `put_timeout` has passed (within a second of it), saying so, and gives
/// its share of the buffer back. (Before, the write cycle waited for ever
/// and held the buffer until the whole listener answered 503.)
#[test]
fn a_put_that_never_answers_is_cut_off_at_put_timeout() {
    rt().block_on(async {
        let dir = crate::harness::tempdir();
        let log = local(dir.path(), &[("s", 2)]).await;
        let (_never, gate) = tokio::sync::watch::channel(false);
        let slow = Slow {
            inner: log.clone(),
            gate,
            puts: Arc::default(),
        };
        let mut c = config();
        c.intake.put_timeout_ms = 1000;
        let r = start_intake(slow.clone(), &c)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let client = reqwest::Client::builder()
            .timeout(std::time::Duration::from_secs(15))
            .build()
            .unwrap_or_else(|e| panic!("{e}"));
        for round in 0..2 {
            let sent = std::time::Instant::now();
            let resp = client
                .post(url(&r, "s"))
                .body(format!("round {round}\n"))
                .send()
                .await
                .unwrap_or_else(|e| panic!("round {round}: no answer: {e}"));
            let waited = sent.elapsed();
            assert_eq!(resp.status().as_u16(), 503);
            let v: Value = serde_json::from_slice(&resp.bytes().await.unwrap_or_default())
                .unwrap_or(Value::Null);
            let msg = v["error"].as_str().unwrap_or_default();
            assert!(msg.contains("within 1 s"), "{msg}");
            assert!(
                waited < std::time::Duration::from_millis(2000),
                "answered after {waited:?} with a 1 s put_timeout"
            );
        }
        let m = scrape(r.admin_addr).await;
        assert_eq!(metric(&m, "kinesthetic_intake_buffer_bytes "), 0.0, "{m}");
        assert!(slow.puts.load(Ordering::SeqCst) >= 2);
        assert!(read_all(&log, "s").await.is_empty());
        r.stop().await.unwrap_or_else(|e| panic!("{e}"));
    });
}

/// Starts `kinesthetic serve` on the local log in `data` with the stream
/// `create` (NAME or NAME:SHARDS), on ports of its own; returns the process
/// and the intake's address, once it listens.
fn spawn_serve(data: &std::path::Path, create: &str) -> (std::process::Child, String) {
    use std::io::BufRead;
    let mut child = crate::harness::cli()
        .args(["serve", "--listen", "127.0.0.1:0", "--admin", "127.0.0.1:0"])
        .args(["--create-stream", create, "--data"])
        .arg(data)
        .arg("--filters")
        .arg(data.join("filters"))
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("serve: {e}"));
    let stderr = child.stderr.take().unwrap_or_else(|| panic!("no stderr"));
    let mut lines = std::io::BufReader::new(stderr).lines();
    let addr = loop {
        let line = lines
            .next()
            .unwrap_or_else(|| panic!("serve exited before listening"))
            .unwrap_or_else(|e| panic!("{e}"));
        if let Some(rest) = line.split("intake on http://").nth(1) {
            break rest
                .split_whitespace()
                .next()
                .unwrap_or_default()
                .to_owned();
        }
    };
    // Keep reading its log, so that it never blocks on a full pipe.
    std::thread::spawn(move || for _ in lines {});
    (child, addr)
}

#[test]
fn kill_9_mid_load_loses_no_acknowledged_event() {
    let dir = crate::harness::tempdir();
    let (mut child, addr) = spawn_serve(dir.path(), "s:2");
    let url = format!("http://{addr}/v1/streams/s/events");
    let acked: Vec<String> = rt().block_on(async {
        let mut tasks = tokio::task::JoinSet::new();
        for c in 0..6 {
            let url = url.clone();
            tasks.spawn(async move {
                let client = reqwest::Client::new();
                let mut acked = Vec::new();
                for r in 0.. {
                    let body: String = (0..200).map(|i| format!("c{c}-r{r}-e{i}\n")).collect();
                    match client.post(&url).body(body).send().await {
                        Ok(resp) if resp.status().as_u16() == 200 => {
                            acked.extend((0..200).map(|i| format!("c{c}-r{r}-e{i}")));
                        }
                        _ => break,
                    }
                }
                acked
            });
        }
        tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
        // SIGKILL: no shutdown, no flush, possibly a torn write.
        child.kill().unwrap_or_else(|e| panic!("kill: {e}"));
        let _ = child.wait();
        let mut all = Vec::new();
        while let Some(t) = tasks.join_next().await {
            all.extend(t.unwrap_or_default());
        }
        all
    });
    assert!(
        acked.len() > 1000,
        "only {} events acknowledged before the kill",
        acked.len()
    );
    rt().block_on(async {
        let log = LocalLog::open(dir.path(), LocalOptions::default())
            .unwrap_or_else(|e| panic!("reopen: {e}"));
        let got: HashSet<Vec<u8>> = read_all(&log, "s")
            .await
            .into_iter()
            .map(|e| e.data)
            .collect();
        let lost: Vec<&String> = acked
            .iter()
            .filter(|a| !got.contains(a.as_bytes()))
            .collect();
        assert!(
            lost.is_empty(),
            "{} acknowledged events lost, e.g. {:?}",
            lost.len(),
            lost.first()
        );
        // And the log takes writes again after recovery.
        log.put_records(
            "s",
            &[PutEntry {
                partition_key: "k".into(),
                explicit_hash_key: None,
                data: bytes::Bytes::from_static(b"after"),
            }],
        )
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    });
}

#[test]
fn the_send_tool_posts_a_file_in_batches_and_reports() {
    rt().block_on(async {
        let dir = crate::harness::tempdir();
        let log = local(dir.path().join("data").as_path(), &[("s", 2)]).await;
        let r = start_intake(log.clone(), &config())
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let file = dir.path().join("events.ndjson");
        let body: String = (0..1234).map(|i| format!("{{\"i\":{i}}}\n")).collect();
        std::fs::write(&file, body).unwrap_or_else(|e| panic!("{e}"));
        let base = format!("http://{}", r.intake_addr);
        let (file1, base1) = (file.clone(), base.clone());
        let send = move |extra: &[&str], stream: &str| {
            let (file, base) = (&file1, &base1);
            crate::harness::cli()
                .arg("send")
                .arg(file)
                .args([
                    "--url",
                    base,
                    "--stream",
                    stream,
                    "--batch",
                    "100",
                    "--concurrency",
                    "4",
                    "--quiet",
                ])
                .args(extra)
                .output()
                .unwrap_or_else(|e| panic!("{e}"))
        };
        let (a, b) = tokio::task::spawn_blocking(move || (send(&[], "s"), send(&["--gzip"], "s")))
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        for o in [&a, &b] {
            let err = String::from_utf8_lossy(&o.stderr);
            assert!(o.status.success(), "{err}");
            assert!(
                err.contains("sent 1234 events")
                    && err.contains("1234 accepted")
                    && err.contains("13 requests"),
                "{err}"
            );
        }
        assert_eq!(read_all(&log, "s").await.len(), 2 * 1234);
        // Line numbers in errors count blank lines, as an editor does.
        let file2 = dir.path().join("gaps.ndjson");
        std::fs::write(&file2, "\n\n{\"a\":1}\n{\"a\":2}\n\n{\"a\":3}\n")
            .unwrap_or_else(|e| panic!("{e}"));
        let base2 = base.clone();
        let o = tokio::task::spawn_blocking(move || {
            crate::harness::cli()
                .arg("send")
                .arg(&file2)
                .args(["--url", &base2, "--stream", "missing", "--quiet"])
                .output()
                .unwrap_or_else(|e| panic!("{e}"))
        })
        .await
        .unwrap_or_else(|e| panic!("{e}"));
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(!o.status.success());
        assert!(
            err.contains("lines 3..6") && err.contains("404") && err.contains("missing"),
            "{err}"
        );
        // From stdin, streamed.
        let base3 = base.clone();
        let o = tokio::task::spawn_blocking(move || {
            use std::io::Write;
            let mut child = crate::harness::cli()
                .args([
                    "send", "-", "--url", &base3, "--stream", "s", "--batch", "7", "--quiet",
                ])
                .stdin(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap_or_else(|e| panic!("{e}"));
            if let Some(mut si) = child.stdin.take() {
                for i in 0..50 {
                    let _ = writeln!(si, "stdin-{i}");
                }
            }
            child.wait_with_output().unwrap_or_else(|e| panic!("{e}"))
        })
        .await
        .unwrap_or_else(|e| panic!("{e}"));
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(o.status.success(), "{err}");
        assert!(
            err.contains("sent 50 events") && err.contains("8 requests"),
            "{err}"
        );
        assert_eq!(read_all(&log, "s").await.len(), 2 * 1234 + 50);
        r.stop().await.unwrap_or_else(|e| panic!("{e}"));
    });
}

/// Bytes of segment files under `dir`, recursively.
fn segment_bytes_under(dir: &std::path::Path) -> u64 {
    let mut total = 0;
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        if p.is_dir() {
            total += segment_bytes_under(&p);
        } else if p.extension().is_some_and(|x| x == "seg") {
            total += e.metadata().map_or(0, |m| m.len());
        }
    }
    total
}

#[test]
fn the_spool_frees_what_it_has_shipped() {
    use kinesthetic::app::{Telemetry, start_intake_with};
    use kinesthetic::intake::producer::ProducerConfig;
    use kinesthetic::intake::spool::Spooled;
    rt().block_on(async {
        let remote_dir = crate::harness::tempdir();
        let spool_dir = crate::harness::tempdir();
        let remote = local(remote_dir.path(), &[("s", 1)]).await;
        let telemetry = Telemetry::new();
        // An 8 MiB backlog limit: 1 MiB spool segments.
        let spooled = Spooled::open(
            remote.clone(),
            spool_dir.path(),
            ProducerConfig::default(),
            telemetry.metrics.clone(),
            8 << 20,
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let r = start_intake_with(spooled.clone(), &config(), telemetry)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let line = "x".repeat(150);
        let body: String = (0..1000).map(|j| format!("{j}{line}\n")).collect();
        let client = reqwest::Client::new();
        let mut sent = 0u64;
        for _ in 0..40 {
            let resp = client
                .post(url(&r, "s"))
                .body(body.clone())
                .send()
                .await
                .unwrap_or_else(|e| panic!("{e}"));
            // 503 when the backlog is full: wait for the shipper and go on.
            if resp.status().as_u16() == 503 {
                tokio::time::sleep(std::time::Duration::from_millis(200)).await;
                continue;
            }
            assert_eq!(resp.status().as_u16(), 200);
            sent += 1000;
        }
        let start = std::time::Instant::now();
        while spooled.backlog().iter().map(|(_, b)| b).sum::<u64>() > 0 {
            assert!(start.elapsed().as_secs() < 60, "the spool never emptied");
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        let got = read_all(&remote, "s").await;
        assert_eq!(
            got.len() as u64,
            sent,
            "every accepted event reaches the stream"
        );
        assert!(sent * 150 > 4 << 20, "only {sent} events spooled");
        // What stays is at most the segment being appended to and the one
        // the checkpoint falls in.
        let left = segment_bytes_under(spool_dir.path());
        assert!(
            left <= 2 << 20,
            "{left} bytes of shipped segments are still on disk"
        );
        // Writes into the spool and on to the stream are counted apart, and
        // the depth gauge is back to 0.
        let m = scrape(r.admin_addr).await;
        let value = |name: &str| metric(&m, name);
        assert!(
            value("kinesthetic_intake_put_calls_total{stream=\"s\",to=\"spool\"}") > 0.0,
            "{m}"
        );
        assert!(
            value("kinesthetic_intake_put_calls_total{stream=\"s\",to=\"stream\"}") > 0.0,
            "{m}"
        );
        assert_eq!(
            value("kinesthetic_intake_spool_bytes{stream=\"s\"}"),
            0.0,
            "{m}"
        );
        assert_eq!(
            value("kinesthetic_intake_events_accepted_total{stream=\"s\"}"),
            sent as f64,
            "{m}"
        );
        r.stop().await.unwrap_or_else(|e| panic!("{e}"));
        spooled.close().await;
    });
}

#[test]
fn sigterm_stops_serve_gracefully_with_every_event_written() {
    use std::io::BufRead;
    let dir = crate::harness::tempdir();
    let mut child = crate::harness::cli()
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--admin",
            "127.0.0.1:0",
            "--create-stream",
            "s:1",
            "--data",
        ])
        .arg(dir.path())
        .arg("--filters")
        .arg(dir.path().join("filters"))
        .env("RUST_LOG", "info")
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("serve: {e}"));
    let stderr = child.stderr.take().unwrap_or_else(|| panic!("no stderr"));
    let mut lines = std::io::BufReader::new(stderr).lines();
    let addr = loop {
        let line = lines
            .next()
            .unwrap_or_else(|| panic!("serve exited before listening"))
            .unwrap_or_else(|e| panic!("{e}"));
        if let Some(rest) = line.split("intake on http://").nth(1) {
            break rest
                .split_whitespace()
                .next()
                .unwrap_or_default()
                .to_owned();
        }
    };
    let rest = std::thread::spawn(move || lines.map_while(Result::ok).collect::<Vec<_>>());
    let url = format!("http://{addr}/v1/streams/s/events");
    let acked = rt().block_on(async {
        let client = reqwest::Client::new();
        let mut acked = 0u64;
        for r in 0..20 {
            let body: String = (0..100).map(|i| format!("r{r}-e{i}\n")).collect();
            let resp = client
                .post(&url)
                .body(body)
                .send()
                .await
                .unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(resp.status().as_u16(), 200);
            acked += 100;
        }
        acked
    });
    let status = std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap_or_else(|e| panic!("kill: {e}"));
    assert!(status.success());
    let start = std::time::Instant::now();
    let exit = loop {
        if let Some(s) = child.try_wait().unwrap_or_else(|e| panic!("{e}")) {
            break s;
        }
        assert!(
            start.elapsed().as_secs() < 20,
            "serve did not stop within 20 s of SIGTERM"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    assert!(exit.success(), "serve exited with {exit} after SIGTERM");
    let log_lines = rest.join().unwrap_or_default().join("\n");
    assert!(
        log_lines.contains("shutting down"),
        "no shutdown line in:\n{log_lines}"
    );
    assert!(
        !log_lines.contains("\u{1b}["),
        "colour codes in piped logs:\n{log_lines}"
    );
    // The lock is released and every acknowledged event is there.
    rt().block_on(async {
        let log = LocalLog::open(dir.path(), LocalOptions::default())
            .unwrap_or_else(|e| panic!("reopen after a clean stop: {e}"));
        assert_eq!(read_all(&log, "s").await.len() as u64, acked);
    });
}

/// After an outage, the spool's backlog of small records reaches the
/// stream in few, full records: every event once, in order, stamped.
#[test]
fn the_spool_ships_a_backlog_of_small_requests_in_full_records() {
    use kinesthetic::app::{Telemetry, start_intake_with};
    use kinesthetic::intake::producer::ProducerConfig;
    use kinesthetic::intake::spool::Spooled;
    rt().block_on(async {
        let remote_dir = crate::harness::tempdir();
        let spool_dir = crate::harness::tempdir();
        let log = local(remote_dir.path(), &[("s", 1)]).await;
        let (open, gate) = tokio::sync::watch::channel(false);
        let remote = Slow {
            inner: log.clone(),
            gate,
            puts: Arc::default(),
        };
        let telemetry = Telemetry::new();
        let spooled = Spooled::open(
            remote.clone(),
            spool_dir.path(),
            ProducerConfig::default(),
            telemetry.metrics.clone(),
            64 << 20,
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let mut c = config();
        c.intake.linger_ms = 0;
        let r = start_intake_with(spooled.clone(), &c, telemetry)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        // 300 one-event requests, one after another: 300 spool records.
        let client = reqwest::Client::new();
        for i in 0..300 {
            let resp = client
                .post(url(&r, "s"))
                .body(format!("{{\"i\":{i}}}\n"))
                .send()
                .await
                .unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(resp.status().as_u16(), 200);
        }
        assert!(
            read_all(&log, "s").await.is_empty(),
            "the stream was not away"
        );
        let _ = open.send(true);
        let start = std::time::Instant::now();
        while spooled.backlog().iter().map(|(_, b)| b).sum::<u64>() > 0 {
            assert!(start.elapsed().as_secs() < 60, "the spool never emptied");
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        let got = read_all(&log, "s").await;
        let want: Vec<Vec<u8>> = (0..300)
            .map(|i| format!("{{\"i\":{i}}}").into_bytes())
            .collect();
        assert_eq!(
            got.iter().map(|e| e.data.clone()).collect::<Vec<_>>(),
            want,
            "every event once, in order"
        );
        let stamps: Vec<_> = got.iter().filter_map(|e| e.stamp).collect();
        assert_eq!(stamps.len(), 300);
        assert!(stamps.windows(2).all(|w| w[0].id.counter < w[1].id.counter));
        // Records in the stream: the shipper's first (taken before the
        // stream came back) plus a few full ones, not 300.
        let mut records = 0;
        let mut it = log
            .shard_iterator("s", "shardId-000000000000", &StartPosition::TrimHorizon)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        loop {
            let out = log
                .get_records(&it, 10_000)
                .await
                .unwrap_or_else(|e| panic!("{e}"));
            records += out.records.len();
            match out.next_iterator {
                Some(n) if !out.records.is_empty() => it = n,
                _ => break,
            }
        }
        assert!(records <= 10, "{records} records for 300 small requests");
        r.stop().await.unwrap_or_else(|e| panic!("{e}"));
        spooled.close().await;
    });
}

/// The local log, refusing some puts the way Kinesis can for reasons a
/// retry does not fix at once: one call for a stream that is gone (deleted
/// and re-created), and one call in which every entry but the first fails
/// on the stream's KMS key. Records what it did write.
#[derive(Clone)]
struct Refusing {
    inner: LocalLog,
    calls: Arc<AtomicUsize>,
    sent: Arc<std::sync::Mutex<Vec<Vec<u8>>>>,
}

impl StreamBackend for Refusing {
    delegate_to_inner!();
    async fn put_records(&self, s: &str, e: &[PutEntry]) -> Result<Vec<PutOutcome>, StreamError> {
        let call = self.calls.fetch_add(1, Ordering::SeqCst);
        if call == 2 {
            return Err(StreamError::NoSuchStream(s.to_owned()));
        }
        let take = if call == 5 { 1 } else { e.len() };
        let mut out = self.inner.put_records(s, &e[..take]).await?;
        if let Ok(mut sent) = self.sent.lock() {
            sent.extend(e[..take].iter().map(|x| x.data.to_vec()));
        }
        out.extend((take..e.len()).map(|_| PutOutcome::Failed {
            code: "KMSAccessDeniedException".into(),
            message: "the stream cannot use its key".into(),
        }));
        Ok(out)
    }
}

#[test]
fn after_a_refusal_the_spool_resends_only_what_the_stream_did_not_take() {
    use kinesthetic::app::{Telemetry, start_intake_with};
    use kinesthetic::intake::producer::ProducerConfig;
    use kinesthetic::intake::spool::Spooled;
    rt().block_on(async {
        let remote_dir = crate::harness::tempdir();
        let spool_dir = crate::harness::tempdir();
        let log = local(remote_dir.path(), &[("s", 4)]).await;
        let remote = Refusing {
            inner: log.clone(),
            calls: Arc::default(),
            sent: Arc::default(),
        };
        let telemetry = Telemetry::new();
        // Small records, so that one spooled batch takes many calls and the
        // refusals land in the middle of one.
        let producer = ProducerConfig {
            record_max_bytes: 4096,
            ..ProducerConfig::default()
        };
        let spooled = Spooled::open(
            remote.clone(),
            spool_dir.path(),
            producer,
            telemetry.metrics.clone(),
            64 << 20,
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let mut c = config();
        c.intake.record_max_bytes = 4096;
        c.streams.insert(
            "s".into(),
            StreamSettings {
                partition_key_field: Some("user".into()),
                ..StreamSettings::default()
            },
        );
        let r = start_intake_with(spooled.clone(), &c, telemetry)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let body: String = (0..2000)
            .map(|i| {
                format!(
                    "{{\"user\":\"u{}\",\"i\":{i},\"pad\":\"{}\"}}\n",
                    i % 40,
                    "p".repeat(60)
                )
            })
            .collect();
        let (status, v, _) = post(&r, "s", &[], body.into_bytes()).await;
        assert_eq!(status, 200, "{v}");
        let start = std::time::Instant::now();
        while spooled.backlog().iter().map(|(_, b)| b).sum::<u64>() > 0 {
            assert!(start.elapsed().as_secs() < 60, "the spool never emptied");
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        assert!(
            remote.calls.load(Ordering::SeqCst) > 6,
            "the refusals never happened: the test proves nothing"
        );
        let got = read_all(&log, "s").await;
        assert_eq!(got.len(), 2000, "events lost or doubled");
        let ids: HashSet<_> = got.iter().filter_map(|e| e.stamp.map(|s| s.id)).collect();
        assert_eq!(ids.len(), 2000);
        // In order per partition key.
        let mut last: HashMap<String, u64> = HashMap::new();
        for e in &got {
            let v: Value = serde_json::from_slice(&e.data).unwrap_or_else(|e| panic!("{e}"));
            let i = v["i"].as_u64().unwrap_or_default();
            if let Some(prev) = last.insert(e.key.clone(), i) {
                assert!(prev < i, "{}: {i} after {prev}", e.key);
            }
        }
        // No record the stream had taken was sent again.
        let sent = remote.sent.lock().map(|s| s.clone()).unwrap_or_default();
        let distinct: HashSet<&Vec<u8>> = sent.iter().collect();
        assert_eq!(
            distinct.len(),
            sent.len(),
            "a written record was sent again"
        );
        r.stop().await.unwrap_or_else(|e| panic!("{e}"));
        spooled.close().await;
    });
}

/// The spool wraps each record with its destination; a record and a call
/// at Kinesis's exact limits must still go into it.
#[test]
fn the_spool_takes_records_and_calls_at_kinesis_limits() {
    use kinesthetic::app::Telemetry;
    use kinesthetic::intake::producer::ProducerConfig;
    use kinesthetic::intake::spool::Spooled;
    rt().block_on(async {
        let remote_dir = crate::harness::tempdir();
        let spool_dir = crate::harness::tempdir();
        let log = local(remote_dir.path(), &[("s", 1)]).await;
        let spooled = Spooled::open(
            log.clone(),
            spool_dir.path(),
            ProducerConfig::default(),
            Telemetry::new().metrics,
            64 << 20,
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let entry = |len: usize, key: &str| PutEntry {
            partition_key: key.to_owned(),
            explicit_hash_key: None,
            data: bytes::Bytes::from(vec![b'x'; len - key.len()]),
        };
        // One record of exactly 1 MiB with its key.
        let one = spooled
            .put_records("s", &[entry(1 << 20, "k")])
            .await
            .unwrap_or_else(|e| panic!("a 1 MiB record: {e}"));
        assert_eq!(one.len(), 1);
        // A call of exactly 5 MiB in 6 entries.
        let mut six: Vec<PutEntry> = (0..5).map(|i| entry(900_000, &format!("k{i}"))).collect();
        six.push(entry(5 * (1 << 20) - 5 * 900_000, "k5"));
        let total: usize = six
            .iter()
            .map(|e| e.data.len() + e.partition_key.len())
            .sum();
        assert_eq!(total, 5 << 20);
        spooled
            .put_records("s", &six)
            .await
            .unwrap_or_else(|e| panic!("a 5 MiB call: {e}"));
        // Beyond the limits is still refused.
        let over = spooled.put_records("s", &[entry((1 << 20) + 1, "k")]).await;
        assert!(matches!(over, Err(StreamError::BadInput(_))), "{over:?}");
        spooled.close().await;
    });
}

/// What a spool holds when it is reopened counts in its backlog: during a
/// long outage, each restart must not admit another full limit.
#[test]
fn a_reopened_spool_counts_what_it_already_holds() {
    use kinesthetic::app::Telemetry;
    use kinesthetic::intake::producer::ProducerConfig;
    use kinesthetic::intake::spool::Spooled;
    rt().block_on(async {
        let remote_dir = crate::harness::tempdir();
        let spool_dir = crate::harness::tempdir();
        let log = local(remote_dir.path(), &[("s", 1)]).await;
        let (open, gate) = tokio::sync::watch::channel(false);
        let remote = Slow {
            inner: log.clone(),
            gate,
            puts: Arc::default(),
        };
        const LIMIT: u64 = 4 << 20;
        let spool = || {
            Spooled::open(
                remote.clone(),
                spool_dir.path(),
                ProducerConfig::default(),
                Telemetry::new().metrics,
                LIMIT,
            )
            .unwrap_or_else(|e| panic!("{e}"))
        };
        let put = |s: Spooled<Slow>, i: usize| async move {
            let entry = PutEntry {
                partition_key: format!("k{i}"),
                explicit_hash_key: None,
                data: bytes::Bytes::from(vec![b'a' + (i % 26) as u8; (1 << 20) - 64]),
            };
            s.put_records("s", &[entry]).await
        };
        // The stream is away: fill the spool up to its limit.
        let first = spool();
        let mut accepted = 0;
        loop {
            match put(first.clone(), accepted).await {
                Ok(_) => accepted += 1,
                Err(StreamError::Full(_)) => break,
                Err(e) => panic!("{e}"),
            }
            assert!(accepted < 20, "the limit never applied");
        }
        assert!(accepted >= 4, "{accepted} MiB accepted");
        first.close().await;
        drop(first);

        // Reopened, with the stream still away: full already.
        let second = spool();
        second.resume().await.unwrap_or_else(|e| panic!("{e}"));
        let backlog: u64 = second.backlog().iter().map(|(_, b)| b).sum();
        assert!(backlog >= LIMIT, "backlog after reopening: {backlog}");
        let refused = put(second.clone(), 99).await;
        assert!(matches!(refused, Err(StreamError::Full(_))), "{refused:?}");

        // The stream comes back: the backlog drains to zero, every record
        // once.
        let _ = open.send(true);
        let start = std::time::Instant::now();
        while second.backlog().iter().map(|(_, b)| b).sum::<u64>() > 0 {
            assert!(start.elapsed().as_secs() < 60, "the spool never emptied");
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        let got = read_all(&log, "s").await;
        assert_eq!(got.len(), accepted, "records lost or doubled");

        // A second outage, after the restart: the same limit again, not
        // the limit plus what was carried over and shipped before.
        let _ = open.send(false);
        let mut again = 0;
        loop {
            match put(second.clone(), 100 + again).await {
                Ok(_) => again += 1,
                Err(StreamError::Full(_)) => break,
                Err(e) => panic!("{e}"),
            }
            assert!(again < 20, "the limit never applied");
        }
        assert!(
            again <= accepted,
            "{again} MiB taken in the second outage, {accepted} in the first"
        );
        let _ = open.send(true);
        second.close().await;
    });
}

/// A body of tiny lines is bounded by its event count, not only its bytes:
/// each event costs bookkeeping memory, and a few KB of gzip can hold
/// millions of lines.
#[test]
fn too_many_events_in_one_request_get_413_before_costing_memory() {
    rt().block_on(async {
        let dir = crate::harness::tempdir();
        let log = local(dir.path(), &[("s", 1)]).await;
        let mut c = config();
        c.intake.max_events_per_request = 1000;
        let r = start_intake(log.clone(), &c)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let lines = |n: usize| "a\n".repeat(n).into_bytes();
        let (s, v, _) = post(&r, "s", &[], lines(1000)).await;
        assert_eq!(s, 200, "{v}");
        let (s, v, _) = post(&r, "s", &[], lines(1001)).await;
        assert_eq!(s, 413, "{v}");
        let msg = v["error"].as_str().unwrap_or_default();
        assert!(msg.contains("more than 1000 events"), "{msg}");
        let (s, v, _) = post(
            &r,
            "s",
            &[("content-type", "application/json")],
            format!("[{}1]", "1,".repeat(1000)).into_bytes(),
        )
        .await;
        assert_eq!(s, 413, "{v}");
        // 4 M lines in 8 MB, gzipped to a few KB: refused at the limit, fast.
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        gz.write_all(&lines(4_000_000))
            .unwrap_or_else(|e| panic!("{e}"));
        let body = gz.finish().unwrap_or_else(|e| panic!("{e}"));
        assert!(body.len() < 100_000, "{} bytes", body.len());
        let t = std::time::Instant::now();
        let (s, v, _) = post(&r, "s", &[("content-encoding", "gzip")], body).await;
        assert_eq!(s, 413, "{v}");
        assert!(t.elapsed().as_secs() < 10, "took {:?}", t.elapsed());
        assert_eq!(
            read_all(&log, "s").await.len(),
            1000,
            "only the first request"
        );
        r.stop().await.unwrap_or_else(|e| panic!("{e}"));
    });
}

/// `send` started before the intake is up retries until it is (as it
/// retries a 503), sends every line once, and sums up the accepted ids as
/// one merged range, with the file's first and last lines' ids.
#[test]
fn send_waits_for_an_intake_that_is_not_up_yet() {
    rt().block_on(async {
        let dir = crate::harness::tempdir();
        let log = local(dir.path().join("data").as_path(), &[("s", 2)]).await;
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .unwrap_or_else(|e| panic!("{e}"));
        let file = dir.path().join("events.ndjson");
        let body: String = (0..2000).map(|i| format!("{{\"i\":{i}}}\n")).collect();
        std::fs::write(&file, body).unwrap_or_else(|e| panic!("{e}"));
        let url = format!("http://127.0.0.1:{port}");
        let send = tokio::task::spawn_blocking(move || {
            crate::harness::cli()
                .arg("send")
                .arg(&file)
                .args(["--url", &url, "--stream", "s", "--batch", "100"])
                .args(["--concurrency", "4", "--quiet"])
                .output()
                .unwrap_or_else(|e| panic!("{e}"))
        });
        tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
        let mut c = config();
        c.intake.listen = std::net::SocketAddr::from(([127, 0, 0, 1], port));
        let r = start_intake(log.clone(), &c)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let o = send.await.unwrap_or_else(|e| panic!("{e}"));
        let err = String::from_utf8_lossy(&o.stderr).into_owned();
        assert!(o.status.success(), "{err}");
        assert!(
            err.contains("2000 accepted") && err.contains("requests retried"),
            "{err}"
        );
        let events = read_all(&log, "s").await;
        assert_eq!(events.len(), 2000, "every line once");
        // One range of ids, from the smallest counter to the largest.
        let ids: Vec<String> = events
            .iter()
            .map(|e| e.stamp.map(|s| s.id.to_string()).unwrap_or_default())
            .collect();
        let (lo, hi) = (
            ids.iter().min().cloned().unwrap_or_default(),
            ids.iter().max().cloned().unwrap_or_default(),
        );
        let line = err
            .lines()
            .find(|l| l.starts_with("event ids: "))
            .unwrap_or_else(|| panic!("no id summary: {err}"));
        assert!(
            line.starts_with(&format!("event ids: {lo}..{hi}; ")),
            "{line}"
        );
        r.stop().await.unwrap_or_else(|e| panic!("{e}"));
    });
}

/// A refused batch stops `send`, but the batches already in flight finish,
/// and the summary says which lines the stream has, which were refused (with
/// the file's line number, not the request's) and which were not sent.
#[test]
fn send_reports_every_line_range_after_a_refusal() {
    rt().block_on(async {
        let dir = crate::harness::tempdir();
        let log = local(dir.path().join("data").as_path(), &[("s", 1)]).await;
        let r = start_intake(log.clone(), &config())
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let file = dir.path().join("events.ndjson");
        let mut body = String::new();
        for i in 1..=200 {
            if i == 45 {
                body.push_str(&format!(
                    "{{\"i\":{i},\"pad\":\"{}\"}}\n",
                    "p".repeat(1_100_000)
                ));
            } else {
                body.push_str(&format!("{{\"i\":{i}}}\n"));
            }
        }
        std::fs::write(&file, body).unwrap_or_else(|e| panic!("{e}"));
        let url = format!("http://{}", r.intake_addr);
        let o = tokio::task::spawn_blocking(move || {
            crate::harness::cli()
                .arg("send")
                .arg(&file)
                .args(["--url", &url, "--stream", "s", "--batch", "10", "--quiet"])
                .output()
                .unwrap_or_else(|e| panic!("{e}"))
        })
        .await
        .unwrap_or_else(|e| panic!("{e}"));
        let err = String::from_utf8_lossy(&o.stderr).into_owned();
        assert_eq!(o.status.code(), Some(1), "{err}");
        assert!(err.contains("lines 41..50: refused"), "{err}");
        // One range for the four batches before it, not one per request.
        assert!(err.contains("accepted: lines 1..40"), "{err}");
        assert!(
            err.contains("line 5 of the request is line 45 of the file"),
            "{err}"
        );
        // What the summary says was accepted is exactly what the stream has.
        let accepted: Vec<(u64, u64)> = err
            .lines()
            .find_map(|l| l.strip_prefix("accepted: lines "))
            .map(|l| {
                l.split(" (")
                    .next()
                    .unwrap_or_default()
                    .split(", ")
                    .filter_map(|r| {
                        let (a, b) = r.split_once("..")?;
                        Some((a.parse().ok()?, b.parse().ok()?))
                    })
                    .collect()
            })
            .unwrap_or_default();
        assert!(!accepted.is_empty(), "{err}");
        let mut want: Vec<u64> = accepted.iter().flat_map(|&(a, b)| a..=b).collect();
        want.sort_unstable();
        let mut got: Vec<u64> = read_all(&log, "s")
            .await
            .iter()
            .filter_map(|e| serde_json::from_slice::<Value>(&e.data).ok())
            .filter_map(|v| v["i"].as_u64())
            .collect();
        got.sort_unstable();
        assert_eq!(got, want, "{err}");
        assert!(!got.contains(&45));
        r.stop().await.unwrap_or_else(|e| panic!("{e}"));
    });
}

/// The local log refusing every entry for the upper half of the hash space
/// (shard 1 of 2), the way Kinesis refuses entries whose KMS key it cannot
/// use; its first put waits for the gate.
#[derive(Clone)]
struct HalfRefusing {
    inner: LocalLog,
    gate: tokio::sync::watch::Receiver<bool>,
    puts: Arc<AtomicUsize>,
    refused: Arc<AtomicUsize>,
}

impl StreamBackend for HalfRefusing {
    delegate_to_inner!();
    async fn put_records(&self, s: &str, e: &[PutEntry]) -> Result<Vec<PutOutcome>, StreamError> {
        if self.puts.fetch_add(1, Ordering::SeqCst) == 0 {
            let mut gate = self.gate.clone();
            let _ = gate.wait_for(|open| *open).await;
        }
        let upper = |x: &PutEntry| x.hash_key() >= 1u128 << 127;
        let taken: Vec<PutEntry> = e.iter().filter(|x| !upper(x)).cloned().collect();
        let mut written = if taken.is_empty() {
            Vec::new()
        } else {
            self.inner.put_records(s, &taken).await?
        }
        .into_iter();
        let mut out = Vec::with_capacity(e.len());
        for x in e {
            if upper(x) {
                self.refused.fetch_add(1, Ordering::SeqCst);
                out.push(PutOutcome::Failed {
                    code: "KMSAccessDeniedException".into(),
                    message: "the stream cannot use its key".into(),
                });
            } else if let Some(o) = written.next() {
                out.push(o);
            }
        }
        Ok(out)
    }
}

/// Without a spool, a write refused for one shard fails the requests that
/// had events for that shard, and only those: a request written whole in
/// the same cycle is told so (before, it got the error, and its retry
/// doubled its events).
#[test]
fn a_refused_shard_fails_only_the_requests_that_wrote_to_it() {
    use kinesthetic::stream::hash::hash_key_of;
    rt().block_on(async {
        let dir = crate::harness::tempdir();
        let log = local(dir.path(), &[("s", 2)]).await;
        let (open, gate) = tokio::sync::watch::channel(false);
        let backend = HalfRefusing {
            inner: log.clone(),
            gate,
            puts: Arc::default(),
            refused: Arc::default(),
        };
        let r = start_intake(backend.clone(), &config())
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let key = |upper: bool| {
            (0..)
                .map(|i| format!("k{i}"))
                .find(|k| (hash_key_of(k) >= 1u128 << 127) == upper)
                .unwrap_or_default()
        };
        let (low, high) = (key(false), key(true));
        let send = |name: &'static str, key: String| {
            let target = url(&r, "s");
            tokio::spawn(async move {
                let body: String = (0..5).map(|i| format!("{name}-{i}\n")).collect();
                let resp = reqwest::Client::new()
                    .post(&target)
                    .header("x-partition-key", key)
                    .body(body)
                    .send()
                    .await
                    .unwrap_or_else(|e| panic!("{name}: {e}"));
                resp.status().as_u16()
            })
        };
        let wait_buffered = |requests: usize| {
            let admin = r.admin_addr;
            async move {
                let start = std::time::Instant::now();
                // Each 5-event request holds at least 1 KiB of the buffer.
                while (metric(&scrape(admin).await, "kinesthetic_intake_buffer_bytes ") as usize)
                    < requests * 1024
                {
                    assert!(start.elapsed().as_secs() < 20, "requests never arrived");
                    tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                }
                // Past decoding and the producer's linger.
                tokio::time::sleep(std::time::Duration::from_millis(300)).await;
            }
        };
        // `a` is held in the first write; `x` is packed behind it; `b` (to
        // shard 0) and `c` (to shard 1) then wait together: one cycle.
        let a = send("a", low.clone());
        wait_buffered(1).await;
        let x = send("x", low.clone());
        wait_buffered(2).await;
        let b = send("b", low);
        let c = send("c", high);
        wait_buffered(4).await;
        let _ = open.send(true);
        let status = |h: tokio::task::JoinHandle<u16>| async move {
            h.await.unwrap_or_else(|e| panic!("{e}"))
        };
        let (a, x, b, c) = (
            status(a).await,
            status(x).await,
            status(b).await,
            status(c).await,
        );
        assert!(
            backend.refused.load(Ordering::SeqCst) > 0,
            "nothing was refused: the test proves nothing"
        );
        assert_eq!((a, x), (200, 200));
        assert_eq!(b, 200, "a request written whole was told it failed");
        assert_eq!(c, 500, "a refused request was told it succeeded");
        let got: Vec<String> = read_all(&log, "s")
            .await
            .iter()
            .map(|e| String::from_utf8_lossy(&e.data).into_owned())
            .collect();
        for name in ["a", "x", "b"] {
            let n = got.iter().filter(|l| l.starts_with(name)).count();
            assert_eq!(n, 5, "{name}: {n} events of 5 in {got:?}");
        }
        assert!(!got.iter().any(|l| l.starts_with('c')), "{got:?}");
        r.stop().await.unwrap_or_else(|e| panic!("{e}"));
    });
}

/// `send` sends every line the intake would take as an event (whitespace
/// is an event; only blank lines are skipped, as the intake skips them),
/// and a stream name that is not one reaches the intake as a name.
#[test]
fn send_skips_exactly_the_lines_the_intake_skips_and_escapes_the_name() {
    rt().block_on(async {
        let dir = crate::harness::tempdir();
        let log = local(dir.path().join("data").as_path(), &[("s", 1)]).await;
        let r = start_intake(log.clone(), &config())
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let text = b"a\n   \n\tb\t\n\r\n\nc\r\n".to_vec();
        let file = dir.path().join("ws.txt");
        std::fs::write(&file, &text).unwrap_or_else(|e| panic!("{e}"));
        let base = format!("http://{}/", r.intake_addr);
        let run = move |file: std::path::PathBuf, stream: &'static str, base: String| {
            tokio::task::spawn_blocking(move || {
                crate::harness::cli()
                    .arg("send")
                    .arg(&file)
                    .args(["--url", &base, "--stream", stream, "--quiet"])
                    .output()
                    .unwrap_or_else(|e| panic!("{e}"))
            })
        };
        let o = run(file.clone(), "s", base.clone())
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let sent: Vec<Vec<u8>> = read_all(&log, "s")
            .await
            .into_iter()
            .map(|e| e.data.to_vec())
            .collect();
        // The same bytes posted directly: what the intake makes of them.
        let (status, v, _) = post(&r, "s", &[], text).await;
        assert_eq!(status, 200, "{v}");
        let all: Vec<Vec<u8>> = read_all(&log, "s")
            .await
            .into_iter()
            .map(|e| e.data.to_vec())
            .collect();
        assert_eq!(sent.len() * 2, all.len(), "send: {sent:?}, all: {all:?}");
        assert_eq!(sent[..], all[sent.len()..]);
        assert_eq!(
            sent,
            vec![
                b"a".to_vec(),
                b"   ".to_vec(),
                b"\tb\t".to_vec(),
                b"c".to_vec()
            ]
        );
        for bad in ["s?x=1", "a/b", "s#f"] {
            let o = run(file.clone(), bad, base.clone())
                .await
                .unwrap_or_else(|e| panic!("{e}"));
            let err = String::from_utf8_lossy(&o.stderr);
            assert!(!o.status.success(), "{bad}: {err}");
            assert!(
                err.contains("400") && err.contains("is not a stream name"),
                "{bad}: {err}"
            );
        }
        assert_eq!(
            read_all(&log, "s").await.len(),
            all.len(),
            "a bad name wrote somewhere"
        );
        r.stop().await.unwrap_or_else(|e| panic!("{e}"));
    });
}

/// A body that sends one chunk and then never ends: a client still
/// uploading.
fn endless_body() -> reqwest::Body {
    let first =
        futures::stream::once(async { Ok::<_, std::io::Error>(bytes::Bytes::from_static(b"x\n")) });
    reqwest::Body::wrap_stream(futures::StreamExt::chain(first, futures::stream::pending()))
}

/// What the headers decide is answered before the body is read: a client
/// without a valid token, or for a stream that does not exist, or with a
/// declared length over the limit, never gets its upload buffered (and is
/// not held until it ends).
#[test]
fn refusals_the_headers_decide_come_before_the_body_is_read() {
    rt().block_on(async {
        let dir = crate::harness::tempdir();
        let log = local(dir.path(), &[("logs", 1)]).await;
        let mut c = config();
        c.intake.tokens = vec![TokenConfig {
            token: "logs-only-token-1234".into(),
            streams: vec!["logs".into()],
        }];
        let r = start_intake(log.clone(), &c)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let client = reqwest::Client::builder()
            .timeout(std::time::Duration::from_secs(10))
            .build()
            .unwrap_or_else(|e| panic!("{e}"));
        let cases: [(&str, Option<&str>, u16); 3] = [
            ("logs", None, 401),
            ("nope", Some("Bearer logs-only-token-1234"), 403),
            ("logs", Some("bearer wrong-token-123456789"), 401),
        ];
        for (stream, auth, want) in cases {
            let mut req = client.post(url(&r, stream)).body(endless_body());
            if let Some(a) = auth {
                req = req.header("authorization", a);
            }
            let resp = req
                .send()
                .await
                .unwrap_or_else(|e| panic!("{stream} {auth:?}: no answer while uploading: {e}"));
            assert_eq!(resp.status().as_u16(), want, "{stream} {auth:?}");
        }
        // Over the limit by its declared length: 413 before any byte.
        let resp = client
            .post(url(&r, "logs"))
            .header("authorization", "Bearer logs-only-token-1234")
            .header("content-length", (c.intake.max_body_bytes + 1).to_string())
            .body(endless_body())
            .send()
            .await
            .unwrap_or_else(|e| panic!("no answer to an oversized upload: {e}"));
        assert_eq!(resp.status().as_u16(), 413);
        // A wrong path is answered in JSON too.
        let resp = client
            .post(format!("http://{}/v1/streams/logs", r.intake_addr))
            .body("x\n")
            .send()
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(resp.status().as_u16(), 404);
        let v: Value =
            serde_json::from_slice(&resp.bytes().await.unwrap_or_default()).unwrap_or(Value::Null);
        assert!(
            v["error"]
                .as_str()
                .is_some_and(|e| e.contains("/v1/streams/{stream}/events")),
            "{v}"
        );
        // Another method on the events path: 405 with `Allow: POST`, in JSON.
        let resp = client
            .put(url(&r, "logs"))
            .body("x\n")
            .send()
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(resp.status().as_u16(), 405);
        assert_eq!(
            resp.headers().get("allow").and_then(|v| v.to_str().ok()),
            Some("POST")
        );
        let v: Value =
            serde_json::from_slice(&resp.bytes().await.unwrap_or_default()).unwrap_or(Value::Null);
        assert!(
            v["error"]
                .as_str()
                .is_some_and(|e| e.contains("PUT is not allowed")),
            "{v}"
        );
        // Both are counted as rejections.
        let metrics = scrape(r.admin_addr).await;
        for reason in ["no_such_endpoint", "method_not_allowed"] {
            assert!(
                metrics.contains(&format!(
                    "kinesthetic_intake_rejections_total{{reason=\"{reason}\"}} 1"
                )),
                "{reason}: {metrics}"
            );
        }
        r.stop().await.unwrap_or_else(|e| panic!("{e}"));
    });
}

/// The request's event ids are one block: first_id and last_id bracket
/// every event of the request, whichever shards its keys go to; and the
/// buffer gauge is back at 0 after a refusal past the reservation.
#[test]
fn a_request_gets_one_block_of_ids_and_the_gauge_follows_refusals() {
    rt().block_on(async {
        let dir = crate::harness::tempdir();
        let log = local(dir.path(), &[("s", 4)]).await;
        let c = keyed_by_user(config());
        let r = start_intake(log.clone(), &c)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let body: String = (0..40)
            .map(|i| format!("{{\"user\":\"u{}\",\"n\":{i}}}\n", i % 13))
            .collect();
        let (status, v, _) = post(&r, "s", &[], body.into_bytes()).await;
        assert_eq!(status, 200, "{v}");
        let counter = |id: &str| {
            u64::from_str_radix(id.rsplit('-').next().unwrap_or_default(), 16)
                .unwrap_or_else(|e| panic!("{id}: {e}"))
        };
        let (first, last) = (
            counter(v["first_id"].as_str().unwrap_or_default()),
            counter(v["last_id"].as_str().unwrap_or_default()),
        );
        assert_eq!(last - first + 1, 40, "{v}");
        let got = read_all(&log, "s").await;
        let shards: HashSet<u128> = got
            .iter()
            .map(|e| kinesthetic::stream::hash::hash_key_of(&e.key) >> 126)
            .collect();
        assert!(
            shards.len() > 1,
            "all keys in one shard: the test proves nothing"
        );
        for e in &got {
            let id = e.stamp.map(|s| s.id.counter).unwrap_or_default();
            assert!(
                (first..=last).contains(&id),
                "{id} outside {first}..={last}"
            );
        }
        // A refusal after the reservation (a key field too long).
        let long = format!("{{\"user\":\"{}\"}}\n", "k".repeat(300));
        let (status, v, _) = post(&r, "s", &[], long.into_bytes()).await;
        assert_eq!(status, 400, "{v}");
        let m = scrape(r.admin_addr).await;
        assert_eq!(metric(&m, "kinesthetic_intake_buffer_bytes "), 0.0, "{m}");
        r.stop().await.unwrap_or_else(|e| panic!("{e}"));
    });
}

/// A write cycle lingers for requests still being decoded; when one of
/// them is refused instead (here a large gzip'd JSON array, malformed at its
/// end), the cycle goes on at once rather than waiting out its linger.
#[test]
fn a_request_refused_while_decoding_does_not_hold_the_cycle() {
    rt().block_on(async {
        let dir = crate::harness::tempdir();
        let log = local(dir.path(), &[("s", 1)]).await;
        let mut c = config();
        c.intake.linger_ms = 10_000;
        let r = start_intake(log.clone(), &c)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let mut text = String::from("[");
        for i in 0..400_000 {
            text.push_str(&format!("{{\"i\":{i}}},"));
        }
        text.push(']'); // `,]`: malformed at the very end
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(text.as_bytes())
            .unwrap_or_else(|e| panic!("{e}"));
        let bad_body = gz.finish().unwrap_or_else(|e| panic!("{e}"));
        let target = url(&r, "s");
        let started = std::time::Instant::now();
        let bad = tokio::spawn(async move {
            let resp = reqwest::Client::new()
                .post(&target)
                .header("content-type", "application/json")
                .header("content-encoding", "gzip")
                .body(bad_body)
                .send()
                .await
                .unwrap_or_else(|e| panic!("{e}"));
            (resp.status().as_u16(), started.elapsed())
        });
        // The bad one is being decoded (it takes a while) when the good one
        // comes; checked below.
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        let t = std::time::Instant::now();
        let good_sent = started.elapsed();
        let (status, v, _) = post(&r, "s", &[], b"good\n".to_vec()).await;
        let good_took = t.elapsed();
        assert_eq!(status, 200, "{v}");
        let (bad_status, bad_took) = bad.await.unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(bad_status, 400);
        assert!(
            bad_took > good_sent,
            "the bad request was refused ({bad_took:?}) before the good one came ({good_sent:?}): \
             the test proves nothing"
        );
        // Answered about when the bad one was refused, not after 10 s.
        assert!(
            good_took.as_secs_f64() < bad_took.as_secs_f64() + 3.0 && good_took.as_secs() < 8,
            "the good request took {good_took:?}; the bad one was refused after {bad_took:?}"
        );
        r.stop().await.unwrap_or_else(|e| panic!("{e}"));
    });
}

/// A client that never finishes its upload holds a graceful stop; a second
/// SIGTERM stops the process at once (exit code 130), as service managers
/// expect.
#[cfg(unix)]
#[test]
fn a_second_signal_stops_serve_at_once() {
    use std::io::Write;
    let dir = crate::harness::tempdir();
    let (mut child, addr) = spawn_serve(dir.path(), "s");
    // An upload that has begun and will never end.
    let mut slow = std::net::TcpStream::connect(&addr).unwrap_or_else(|e| panic!("{e}"));
    write!(
        slow,
        "POST /v1/streams/s/events HTTP/1.1\r\nHost: x\r\nContent-Length: 1000000\r\n\r\nabc"
    )
    .unwrap_or_else(|e| panic!("{e}"));
    std::thread::sleep(std::time::Duration::from_millis(300));
    let pid = child.id();
    let term = || {
        std::process::Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status()
            .unwrap_or_else(|e| panic!("kill: {e}"));
    };
    term();
    std::thread::sleep(std::time::Duration::from_millis(1000));
    assert!(
        child.try_wait().unwrap_or_else(|e| panic!("{e}")).is_none(),
        "the first signal did not wait for the request in flight"
    );
    term();
    let start = std::time::Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap_or_else(|e| panic!("{e}")) {
            break s;
        }
        if start.elapsed().as_secs() > 20 {
            let _ = child.kill();
            panic!("a second SIGTERM did not stop serve");
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    assert_eq!(status.code(), Some(130), "{status:?}");
    drop(slow);
}

#[test]
fn serve_names_configured_streams_that_do_not_exist() {
    let dir = crate::harness::tempdir();
    let log = LocalLog::open(dir.path(), LocalOptions::default()).unwrap_or_else(|e| panic!("{e}"));
    let text = "[[intake.tokens]]\ntoken = \"t0ken-0123456789abcdef\"\n\
                streams = [\"logs\", \"metrics\", \"*\"]\n\
                [streams.Logs]\npartition_key_field = \"user\"\n\
                [streams.logs]\npartition_key_field = \"user\"\n";
    let config =
        kinesthetic::config::Config::parse(text, "k.toml").unwrap_or_else(|e| panic!("{e}"));
    let warnings = rt().block_on(async {
        log.create_stream("logs", 1)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        kinesthetic::app::unknown_stream_warnings(&log, &config).await
    });
    assert_eq!(warnings.len(), 2, "{warnings:#?}");
    assert!(
        warnings[0].starts_with("[streams.Logs] names stream \"Logs\", which does not exist")
            && warnings[0].contains("did you mean \"logs\"?"),
        "{warnings:#?}"
    );
    assert!(
        warnings[1].starts_with("intake.tokens[0].streams (\"metrics\")")
            && !warnings[1].contains("did you mean"),
        "{warnings:#?}"
    );
}

/// A stream split under the intake: the local log refuses the first
/// records aimed by the old map, the producer refreshes it and re-routes
/// them, and what is posted after goes to the children by their ranges
/// (the timed refresh alone comes every 30 s on average). No event is
/// stored outside its shard's range, before or after.
#[test]
fn a_split_under_the_intake_is_followed_at_once() {
    rt().block_on(async {
        let dir = crate::harness::tempdir();
        let log = local(dir.path(), &[("s", 1)]).await;
        let c = keyed_by_user(config());
        let r = start_intake(log.clone(), &c)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let body = |batch: &str| -> Vec<u8> {
            (0..200)
                .map(|i| format!("{{\"user\":\"u{}\",\"batch\":\"{batch}\"}}\n", i % 50))
                .collect::<String>()
                .into_bytes()
        };
        assert_eq!(post(&r, "s", &[], body("before")).await.0, 200);
        let parent = "shardId-000000000000";
        log.split_shard("s", parent, 1u128 << 127)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        // Aimed by the old map: refused, re-routed.
        assert_eq!(post(&r, "s", &[], body("during")).await.0, 200);
        tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
        assert_eq!(post(&r, "s", &[], body("after")).await.0, 200);

        let d = log.describe("s").await.unwrap_or_else(|e| panic!("{e}"));
        let got = read_all(&log, "s").await;
        let mut outside: HashMap<String, usize> = HashMap::new();
        for e in &got {
            let range = d
                .shards
                .iter()
                .find(|s| s.id == e.shard)
                .map(|s| s.hash_range)
                .unwrap_or_else(|| panic!("no shard {}", e.shard));
            if !range.contains(hash_key_of(&e.key)) {
                let v: Value = serde_json::from_slice(&e.data).unwrap_or(Value::Null);
                *outside
                    .entry(v["batch"].as_str().unwrap_or("?").to_owned())
                    .or_default() += 1;
            }
        }
        eprintln!("events outside their shard's range, per batch: {outside:?}");
        assert_eq!(got.len(), 600);
        assert!(outside.is_empty(), "{outside:?}");
        r.stop().await.unwrap_or_else(|e| panic!("{e}"));
    });
}

/// A backend that counts describe calls.
#[derive(Clone)]
struct CountingDescribes {
    inner: LocalLog,
    describes: Arc<AtomicUsize>,
}

impl StreamBackend for CountingDescribes {
    delegate_to_inner!(all_but_describe);
    async fn describe(&self, n: &str) -> Result<StreamDescription, StreamError> {
        self.describes.fetch_add(1, Ordering::SeqCst);
        self.inner.describe(n).await
    }
    async fn put_records(&self, s: &str, e: &[PutEntry]) -> Result<Vec<PutOutcome>, StreamError> {
        self.inner.put_records(s, e).await
    }
}

/// Kinesis allows 20 DescribeStreamSummary calls a second per account,
/// shared by every client. One intake writing to 100 streams keeps well
/// under it once they are open (one describe each to open them).
#[test]
fn shard_map_refreshes_of_100_streams_stay_far_under_the_describe_limit() {
    rt().block_on(async {
        let dir = crate::harness::tempdir();
        let names: Vec<String> = (0..100).map(|i| format!("s{i}")).collect();
        let log = local(
            dir.path(),
            &names.iter().map(|n| (n.as_str(), 1)).collect::<Vec<_>>(),
        )
        .await;
        let b = CountingDescribes {
            inner: log,
            describes: Arc::default(),
        };
        let r = start_intake(b.clone(), &config())
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        for n in &names {
            assert_eq!(post(&r, n, &[], b"{\"a\":1}\n".to_vec()).await.0, 200);
        }
        let opened = b.describes.load(Ordering::SeqCst);
        let window = std::time::Duration::from_secs(6);
        tokio::time::sleep(window).await;
        let polled = b.describes.load(Ordering::SeqCst) - opened;
        let rate = polled as f64 / window.as_secs_f64();
        eprintln!(
            "100 streams: {opened} describes to open them, then {polled} in {window:?} \
             ({rate:.1}/s; Kinesis allows 20/s per account)"
        );
        assert!(opened <= 110, "{opened} describes to open 100 streams");
        assert!(rate <= 7.0, "{rate:.1} describes a second");
        r.stop().await.unwrap_or_else(|e| panic!("{e}"));
    });
}

/// Seen as a new user starting `serve`: a taken port names the listener and
/// what to do, and creates nothing; an existing stream with another shard
/// count, and an intake open beyond this machine without tokens, are
/// warned about with the fix.
#[test]
fn serve_says_what_to_do_about_ports_shards_and_exposure() {
    use std::io::BufRead;
    let dir = crate::harness::tempdir();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap_or_else(|e| panic!("{e}"));
    let port = taken.local_addr().map(|a| a.port()).unwrap_or_default();
    let data = dir.path().join("data");
    let o = crate::harness::cli()
        .args(["serve", "--listen", &format!("127.0.0.1:{port}")])
        .args(["--admin", "127.0.0.1:0", "--create-stream", "s:2", "--data"])
        .arg(&data)
        .output()
        .unwrap_or_else(|e| panic!("{e}"));
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(
        err.contains(&format!(
            "cannot listen on 127.0.0.1:{port} (the intake, intake.listen)"
        )) && err.contains("another process listens there")
            && err.contains("--listen or intake.listen"),
        "{err}"
    );
    assert!(
        !data.join("s").exists(),
        "the stream was created though serve did not start"
    );
    drop(taken);
    // The stream exists with 1 shard; serve asks for 3, on every interface,
    // with no tokens.
    std::fs::create_dir_all(&data).unwrap_or_else(|e| panic!("{e}"));
    rt().block_on(async {
        drop(local(&data, &[("s", 1)]).await);
    });
    let mut child = crate::harness::cli()
        .args(["serve", "--listen", "0.0.0.0:0", "--admin", "127.0.0.1:0"])
        .args(["--create-stream", "s:3", "--data"])
        .arg(&data)
        .arg("--filters")
        .arg(dir.path().join("filters"))
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("serve: {e}"));
    let stderr = child.stderr.take().unwrap_or_else(|| panic!("no stderr"));
    let mut seen = String::new();
    for line in std::io::BufReader::new(stderr).lines() {
        let line = line.unwrap_or_default();
        seen.push_str(&line);
        seen.push('\n');
        // The exposure warning ends the banner.
        if line.starts_with("warning: the intake") {
            break;
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    assert!(
        seen.contains("exists with 1 open shard(s)")
            && seen.contains("kinesthetic stream reshard s --shards 3"),
        "{seen}"
    );
    assert!(
        seen.contains("warning: the intake listens on 0.0.0.0:")
            && seen.contains("with no tokens")
            && seen.contains("[[intake.tokens]]"),
        "{seen}"
    );
}
