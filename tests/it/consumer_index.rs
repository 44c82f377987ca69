//! The `index` sink: 4 shards, their clocks skewed, one idle, merged into
//! one stream in (receive time, event id) order — every line once, through
//! `GET /v1/index/NAME` with paging, `since` an event id or a time, follow
//! mode, and the push to a consumer; kill -9 and a restart lose nothing and
//! push again only under the same idempotency keys.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::http::HeaderMap;
use futures::StreamExt;
use kinesthetic::config::SinkConfig;
use kinesthetic::event::{EventId, Stamp};
use kinesthetic::stream::kpl::Aggregator;
use kinesthetic::stream::{PutEntry, PutOutcome, StreamBackend, hash_key_of};

use crate::consumer::{local_config, pipeline, wait_until};
use crate::harness::rt;

/// One POST: its idempotency key and its lines.
type Push = (String, Vec<String>);

/// Every POST a receiver got.
#[derive(Clone, Default)]
struct Pushes(Arc<Mutex<Vec<Push>>>);

impl Pushes {
    async fn serve(&self) -> String {
        let me = self.clone();
        let handler = move |headers: HeaderMap, body: Bytes| {
            let me = me.clone();
            async move {
                let key = headers
                    .get("idempotency-key")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or_default()
                    .to_owned();
                let lines = String::from_utf8_lossy(&body)
                    .lines()
                    .map(str::to_owned)
                    .collect();
                me.0.lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .push((key, lines));
                "ok"
            }
        };
        let app = axum::Router::new().fallback(handler);
        let l = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let addr = l.local_addr().unwrap_or_else(|e| panic!("{e}"));
        tokio::spawn(async move {
            let _ = axum::serve(l, app).await;
        });
        format!("http://{addr}/merged")
    }

    fn all(&self) -> Vec<Push> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

/// A key hashing into `range`.
fn key_in(range: kinesthetic::stream::HashRange, n: usize) -> String {
    (0u64..)
        .map(|j| format!("k{n}-{j}"))
        .find(|k| range.contains(hash_key_of(k)))
        .unwrap_or_default()
}

/// GETs `/v1/index/idx?QUERY`: status, cursor header, lines.
async fn get(admin: std::net::SocketAddr, query: &str) -> (u16, String, Vec<String>) {
    let r = reqwest::get(format!("http://{admin}/v1/index/idx?{query}"))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let status = r.status().as_u16();
    let cursor = r
        .headers()
        .get("kinesthetic-cursor")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let text = r.text().await.unwrap_or_default();
    (status, cursor, text.lines().map(str::to_owned).collect())
}

#[test]
fn the_index_merges_skewed_shards_in_time_order_for_get_follow_and_push() {
    let dir = crate::harness::tempdir();
    let mut c = local_config(dir.path(), 4);
    rt().block_on(async {
        let pushes = Pushes::default();
        let url = pushes.serve().await;
        add_index(&mut c, dir.path(), url);
        let (app, b) = crate::consumer::start_with(&c).await;
        skewed(app, b, "events", &pushes, None).await;
    });
}

/// The same on the Kinesis stand-in (through the spool), with an http
/// sink beside the index: every line pushed once, each shard in order.
#[test]
fn on_the_kinesis_stand_in_the_index_merges_in_order_and_the_push_keeps_shard_order() {
    let Some(kinesis) = crate::services::kinesis_endpoint() else {
        return;
    };
    let dir = crate::harness::tempdir();
    let stream = crate::services::unique_stream("index");
    let mut c = crate::consumer_aws::kinesis_config(dir.path(), &kinesis, &stream, 4);
    rt().block_on(async {
        let pushes = Pushes::default();
        let url = pushes.serve().await;
        let plain = Pushes::default();
        let plain_url = plain.serve().await;
        add_index(&mut c, dir.path(), url);
        c.pipelines
            .last_mut()
            .unwrap_or_else(|| panic!("no pipeline"))
            .stream = stream.clone();
        c.sinks.insert("push".into(), SinkConfig::http(plain_url));
        let mut p = pipeline("push", None, &["push"]);
        p.stream = stream.clone();
        c.pipelines.push(p);
        let (app, b) = crate::consumer_aws::start(&c).await;
        skewed(app, b, &stream, &pushes, Some(&plain)).await;
    });
}

fn add_index(c: &mut kinesthetic::config::Config, dir: &std::path::Path, url: String) {
    let mut idx = SinkConfig::index(dir.join("index"));
    idx.url = Some(url);
    idx.idle_grace_ms = Some(2_000);
    c.sinks.insert("idx".into(), idx);
    c.pipelines.push(pipeline("ordered", None, &["idx"]));
}

/// Writes 1,500 lines with skewed clocks into 3 of `stream`'s 4 shards and
/// checks the index (GET, follow, push) and, given `plain`, an http sink's
/// pushes of the same stream.
async fn skewed(
    app: kinesthetic::app::App,
    b: kinesthetic::stream::any::AnyBackend,
    stream: &str,
    pushes: &Pushes,
    plain: Option<&Pushes>,
) {
    let admin = app.admin_addr;
    // A follower from the start.
    let follower = tokio::spawn(async move {
        let r = reqwest::get(format!("http://{admin}/v1/index/idx?follow=true"))
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let mut body = r.bytes_stream();
        let mut text = Vec::new();
        while let Some(chunk) = body.next().await {
            text.extend_from_slice(&chunk.unwrap_or_else(|e| panic!("{e}")));
            if text.iter().filter(|b| **b == b'\n').count() >= 1_500 {
                break;
            }
        }
        String::from_utf8_lossy(&text)
            .lines()
            .map(str::to_owned)
            .collect::<Vec<_>>()
    });
    let d = b.describe(stream).await.unwrap_or_else(|e| panic!("{e}"));
    let shards: Vec<_> = d.open_shards().cloned().collect();
    // Shard 0's clock is 2 s ahead, shard 1's 1.5 s behind, shard 2's
    // right; shard 3 gets nothing.
    let skew = [2_000i64, -1_500, 0];
    let base = kinesthetic::intake::stamp::now_ms();
    let mut expected: Vec<(i64, EventId, String)> = Vec::new();
    for round in 0..5u64 {
        for (s, shard) in shards.iter().take(3).enumerate() {
            let key = key_in(shard.hash_range, s);
            let mut agg = Aggregator::new(1 << 19);
            for i in 0..100u64 {
                let n = round * 100 + i;
                let stamp = Stamp {
                    id: EventId {
                        listener: 0x100 + s as u64,
                        counter: n,
                    },
                    received_ms: base + skew[s] + (n as i64) * 2,
                };
                let line = format!(r#"{{"shard":{s},"n":{n}}}"#);
                assert!(agg.try_push(&key, line.as_bytes(), stamp));
                expected.push((stamp.received_ms, stamp.id, line));
            }
            let out = b
                .put_records(
                    stream,
                    &[PutEntry {
                        partition_key: key.clone(),
                        explicit_hash_key: None,
                        data: agg.finish().data,
                    }],
                )
                .await
                .unwrap_or_else(|e| panic!("{e}"));
            assert!(matches!(out[0], PutOutcome::Written { .. }), "{out:?}");
        }
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
    expected.sort();
    let want: Vec<String> = expected.iter().map(|(_, _, l)| l.clone()).collect();

    // Paged GETs, following the cursor.
    let mut got: Vec<String> = Vec::new();
    let mut cursor = "0".to_owned();
    let start = Instant::now();
    while got.len() < want.len() {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "{} of {} lines in the index",
            got.len(),
            want.len()
        );
        let (status, next, lines) =
            get(admin, &format!("since={cursor}&limit=200&wait_ms=500")).await;
        assert_eq!(status, 200);
        assert!(lines.len() <= 200);
        got.extend(lines);
        cursor = next;
    }
    assert_eq!(got, want, "the index is not in (receive time, id) order");
    // Nothing more comes.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (_, _, more) = get(admin, &format!("since={cursor}")).await;
    assert!(more.is_empty(), "{more:?}");

    // `since` an event id: the lines after it; a time: from it on.
    let (_, id, _) = &expected[99];
    let (status, _, after) = get(admin, &format!("since={id}&limit=5")).await;
    assert_eq!(status, 200);
    assert_eq!(after, want[100..105]);
    let t = expected[700].0;
    let rfc =
        humantime::format_rfc3339_millis(std::time::UNIX_EPOCH + Duration::from_millis(t as u64));
    let (_, _, from_t) = get(admin, &format!("since={rfc}&limit=3")).await;
    let first = expected.iter().position(|e| e.0 >= t).unwrap_or(0);
    assert_eq!(from_t, want[first..first + 3]);

    // Follow mode saw the same stream.
    let followed = tokio::time::timeout(Duration::from_secs(10), follower)
        .await
        .unwrap_or_else(|_| panic!("the follower got less than every line"))
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(followed, want);

    // Pushed in order, each batch once.
    wait_until(Duration::from_secs(10), "every line pushed", || {
        pushes.all().iter().map(|(_, l)| l.len()).sum::<usize>() >= want.len()
    })
    .await;
    let all = pushes.all();
    let keys: HashSet<&String> = all.iter().map(|(k, _)| k).collect();
    assert_eq!(keys.len(), all.len(), "a batch pushed twice");
    let pushed: Vec<String> = all.iter().flat_map(|(_, l)| l.clone()).collect();
    assert_eq!(pushed, want, "the push is not the merged order");

    // Bad requests name what was wrong.
    for (q, code, says) in [
        ("since=yesterday", 400, "since"),
        ("limit=0", 400, "limit"),
        ("colour=red", 400, "unknown parameter"),
        (
            "since=00000000000000ff-0000000000000001",
            404,
            "not in index",
        ),
    ] {
        let r = reqwest::get(format!("http://{admin}/v1/index/idx?{q}"))
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(r.status().as_u16(), code, "{q}");
        let text = r.text().await.unwrap_or_default();
        assert!(text.contains(says), "{q}: {text}");
    }
    let r = reqwest::get(format!("http://{admin}/v1/index/nope"))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(r.status().as_u16(), 404);
    assert!(r.text().await.unwrap_or_default().contains("idx"));

    if let Some(plain) = plain {
        wait_until(
            Duration::from_secs(30),
            "every line pushed by the http sink",
            || plain.all().iter().map(|(_, l)| l.len()).sum::<usize>() >= want.len(),
        )
        .await;
        let mut by_key: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for (k, lines) in plain.all() {
            if let Some(before) = by_key.insert(k.clone(), lines.clone()) {
                assert_eq!(before, lines, "{k}: pushed again with other lines");
            }
        }
        // In the order received, each shard's lines come in its order.
        let mut last: HashMap<String, u64> = HashMap::new();
        let mut seen: HashSet<String> = HashSet::new();
        for (_, lines) in plain.all() {
            for l in lines {
                let v: serde_json::Value =
                    serde_json::from_str(&l).unwrap_or_else(|e| panic!("{e}"));
                let (shard, n) = (v["shard"].to_string(), v["n"].as_u64().unwrap_or(0));
                if seen.insert(l.clone()) {
                    let prev = last.insert(shard.clone(), n);
                    assert!(
                        prev.is_none_or(|p| p < n),
                        "shard {shard}: {n} after {prev:?}"
                    );
                }
            }
        }
        assert_eq!(seen.len(), want.len());
    }
    app.stop().await.unwrap_or_else(|e| panic!("{e}"));
}

/// `kinesthetic serve` killed with SIGKILL twice while it indexes and
/// pushes, then restarted: every acknowledged event is in the index once,
/// and a batch pushed again carries the key and the lines it had.
#[test]
fn kill_9_during_indexing_loses_nothing_and_pushes_again_only_under_the_same_keys() {
    use crate::consumer_process::{post_until, sigterm, spawn, write_config};
    let dir = crate::harness::tempdir();
    let pushes = Pushes::default();
    rt().block_on(async {
        let url = pushes.serve().await;
        let config = write_config(
            dir.path(),
            &format!(
                "[sinks.idx]\ntype = \"index\"\nurl = \"{url}\"\nidle_grace_ms = 300\n\
                 [[pipelines]]\nname = \"ordered\"\nstream = \"events\"\nsinks = [\"idx\"]\n"
            ),
        );
        let module = std::fs::read(crate::filters::ERRORS_ONLY).unwrap_or_else(|e| panic!("{e}"));
        crate::consumer::drop_filter(&dir.path().join("filters"), "errors-only", &module);
        let mut acked: Vec<String> = Vec::new();
        for (round, run_ms) in [900u64, 1300].into_iter().enumerate() {
            let (mut child, addr) = spawn("serve", &config, &[], "intake on http://");
            let stop = Instant::now() + Duration::from_millis(run_ms);
            let more = post_until(addr, stop, round * 1_000_000).await;
            assert!(!more.is_empty(), "round {round}: nothing acked");
            acked.extend(more);
            child.kill().unwrap_or_else(|e| panic!("{e}"));
            let _ = child.wait();
        }
        let (child, addrs) = crate::consumer_process::spawn_addrs(
            "serve",
            &config,
            &[],
            &["intake on http://", "admin on http://"],
        );
        let mut child = crate::consumer_process::Reap(child);
        let admin: std::net::SocketAddr = addrs[1].parse().unwrap_or_else(|e| panic!("{e}"));
        let mut got: Vec<String> = Vec::new();
        let start = Instant::now();
        while got.len() < acked.len() && start.elapsed() < Duration::from_secs(60) {
            let (_, _, lines) = get(
                admin,
                &format!("since={}&limit=100000&wait_ms=500", got.len()),
            )
            .await;
            got.extend(lines);
        }
        let mut count: HashMap<&String, usize> = HashMap::new();
        for l in &got {
            *count.entry(l).or_default() += 1;
        }
        for l in &acked {
            assert_eq!(count.get(l), Some(&1), "{l}: not once in the index");
        }
        wait_until(Duration::from_secs(30), "every acked line pushed", || {
            let seen: HashSet<String> = pushes.all().into_iter().flat_map(|(_, l)| l).collect();
            acked.iter().all(|l| seen.contains(l))
        })
        .await;
        sigterm(&child.0);
        let status = child.0.wait().unwrap_or_else(|e| panic!("{e}"));
        assert!(status.success(), "{status}");
        let all = pushes.all();
        let mut by_key: BTreeMap<&String, &Vec<String>> = BTreeMap::new();
        let mut again = 0;
        for (k, lines) in &all {
            if let Some(before) = by_key.insert(k, lines) {
                assert_eq!(before, lines, "{k}: pushed again with other lines");
                again += 1;
            }
        }
        let mut pushed: HashMap<&String, usize> = HashMap::new();
        for lines in by_key.values() {
            for l in lines.iter() {
                *pushed.entry(l).or_default() += 1;
            }
        }
        for l in &acked {
            assert_eq!(pushed.get(l), Some(&1), "{l}: not pushed once");
        }
        eprintln!(
            "{} events acked over 2 kills: {} lines in the index, {} POSTs, {again} pushed again \
             under the same key",
            acked.len(),
            got.len(),
            all.len()
        );
    });
}
