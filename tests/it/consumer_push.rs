//! The `http` push sink against a receiver that fails, times out, answers
//! 429 with Retry-After and refuses a batch with 400: every batch is
//! delivered once per idempotency key, in shard order, with its headers;
//! the refused one is in the dead-letter sink with the answer; a Firehose
//! receiver gets Firehose's envelope.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use base64::Engine;
use kinesthetic::config::{PushFormat, SinkConfig};
use serde_json::Value;

use crate::consumer::{local_config, pipeline, post, start, wait_until};
use crate::harness::rt;

/// One POST the receiver saw.
#[derive(Debug, Clone)]
struct Seen {
    at: Instant,
    headers: HeaderMap,
    lines: Vec<String>,
    status: u16,
}

#[derive(Clone, Default)]
struct Receiver {
    seen: Arc<Mutex<Vec<Seen>>>,
    firehose: bool,
    /// Answers 200 to everything.
    always_ok: bool,
}

impl Receiver {
    /// Serves on 127.0.0.1; the URL. The first request gets 500, the
    /// second is answered after 2 s (past the sink's timeout), the third
    /// gets 429 with `Retry-After: 1`; a batch holding a line with
    /// `"reject":true` gets 400.
    async fn start(&self) -> String {
        let me = self.clone();
        let handler = move |headers: HeaderMap, body: Bytes| {
            let me = me.clone();
            async move { me.answer(headers, body).await }
        };
        let app = axum::Router::new().fallback(handler);
        let l = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let addr = l.local_addr().unwrap_or_else(|e| panic!("{e}"));
        tokio::spawn(async move {
            let _ = axum::serve(l, app).await;
        });
        format!("http://{addr}/ingest")
    }

    async fn answer(&self, headers: HeaderMap, body: Bytes) -> axum::response::Response {
        let (lines, request_id) = if self.firehose {
            let v: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
            let b64 = base64::engine::general_purpose::STANDARD;
            let lines = v["records"]
                .as_array()
                .map(|rs| {
                    rs.iter()
                        .filter_map(|r| b64.decode(r["data"].as_str()?).ok())
                        .map(|d| String::from_utf8_lossy(&d).trim_end().to_owned())
                        .collect()
                })
                .unwrap_or_default();
            (lines, v["requestId"].as_str().map(str::to_owned))
        } else {
            let text = String::from_utf8_lossy(&body).into_owned();
            (text.lines().map(str::to_owned).collect::<Vec<_>>(), None)
        };
        let n = {
            let seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
            seen.len()
        };
        let status = if self.firehose || self.always_ok {
            200
        } else if n == 0 {
            500
        } else if n == 2 {
            429
        } else if lines.iter().any(|l| l.contains("\"reject\":true")) {
            400
        } else {
            200
        };
        self.seen
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(Seen {
                at: Instant::now(),
                headers,
                lines,
                status,
            });
        if n == 1 && !self.firehose && !self.always_ok {
            tokio::time::sleep(Duration::from_secs(2)).await;
        }
        match status {
            429 => (
                StatusCode::TOO_MANY_REQUESTS,
                [("retry-after", "1")],
                "slow down",
            )
                .into_response(),
            400 => (StatusCode::BAD_REQUEST, "bad event: reject is not allowed").into_response(),
            500 => (StatusCode::INTERNAL_SERVER_ERROR, "oops").into_response(),
            _ if self.firehose => axum::Json(serde_json::json!({
                "requestId": request_id,
                "timestamp": 1
            }))
            .into_response(),
            _ => (StatusCode::OK, "ok").into_response(),
        }
    }

    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

fn header(h: &HeaderMap, name: &str) -> String {
    h.get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned()
}

/// The dead-letter entries kept for refused batches under `root`.
fn rejected_entries(root: &Path) -> Vec<Value> {
    fn walk(d: &Path, out: &mut Vec<Value>) {
        for e in std::fs::read_dir(d).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() {
                walk(&p, out);
            } else if p.to_string_lossy().contains("/rejected/")
                && p.extension().is_some_and(|x| x == "ndjson")
            {
                let text = std::fs::read_to_string(&p).unwrap_or_default();
                out.extend(text.lines().filter_map(|l| serde_json::from_str(l).ok()));
            }
        }
    }
    let mut out = Vec::new();
    walk(root, &mut out);
    out
}

#[test]
fn push_retries_keeps_order_and_dead_letters_a_refused_batch() {
    rt().block_on(async {
        let dir = crate::harness::tempdir();
        let receiver = Receiver::default();
        let url = receiver.start().await;
        let mut c = local_config(dir.path(), 2);
        let mut push = SinkConfig::http(url);
        push.timeout_ms = 500;
        push.retry_max_ms = 200;
        push.auth_value = Some("Bearer s3cret-token".into());
        c.sinks.insert("push".into(), push);
        c.pipelines.push(pipeline("push", None, &["push"]));
        let app = start(&c).await;
        let addr = app.intake_addr.unwrap_or_else(|| panic!("no intake"));
        let mut sent = Vec::new();
        for round in 0..8 {
            let lines: Vec<String> = (0..50)
                .map(|i| {
                    let n = round * 50 + i;
                    if n == 333 {
                        format!("{{\"n\":{n},\"reject\":true}}")
                    } else {
                        format!("{{\"n\":{n}}}")
                    }
                })
                .collect();
            sent.extend(lines.iter().cloned());
            // Without a key, each request goes whole to the next shard.
            post(addr, &lines, None).await;
            tokio::time::sleep(Duration::from_millis(150)).await;
        }
        let dead_root = dir.path().join("archive/dead");
        wait_until(
            Duration::from_secs(60),
            "every line pushed or dead-lettered",
            || {
                let pushed: usize = receiver
                    .seen()
                    .iter()
                    .filter(|s| s.status == 200)
                    .map(|s| s.lines.len())
                    .sum();
                pushed + rejected_entries(&dead_root).len() >= sent.len()
            },
        )
        .await;
        app.stop().await.unwrap_or_else(|e| panic!("{e}"));

        let seen = receiver.seen();
        let ok: Vec<&Seen> = seen.iter().filter(|s| s.status == 200).collect();
        // A batch sent again carries the same key and the same lines, so a
        // receiver that keeps one per key has each once. Only the attempt
        // the sink timed out on (the receiver took it, answered too late)
        // may arrive twice.
        let mut by_key: HashMap<String, Vec<&Seen>> = HashMap::new();
        for s in &ok {
            by_key
                .entry(header(&s.headers, "idempotency-key"))
                .or_default()
                .push(s);
        }
        for (k, copies) in &by_key {
            for c in copies {
                assert_eq!(c.lines, copies[0].lines, "{k}: two batches under one key");
            }
        }
        let twice: Vec<&String> = by_key
            .iter()
            .filter(|(_, c)| c.len() > 1)
            .map(|(k, _)| k)
            .collect();
        assert!(twice.len() <= 1, "{twice:?} delivered more than once");
        let unique: HashSet<String> = by_key.keys().cloned().collect();
        let refused: Vec<&Seen> = seen.iter().filter(|s| s.status == 400).collect();
        assert_eq!(refused.len(), 1, "the refused batch was sent again");
        let refused_key = header(&refused[0].headers, "idempotency-key");
        for s in seen.iter().filter(|s| s.status != 200 && s.status != 400) {
            let k = header(&s.headers, "idempotency-key");
            assert!(
                unique.contains(&k) || k == refused_key,
                "attempt {k} ({}) never delivered",
                s.status
            );
        }
        // Retry-After: the attempt after the 429 waited at least 1 s.
        let throttled = &seen[2];
        assert_eq!(throttled.status, 429);
        let k = header(&throttled.headers, "idempotency-key");
        let next = seen[3..]
            .iter()
            .find(|s| header(&s.headers, "idempotency-key") == k)
            .unwrap_or_else(|| panic!("the 429 batch was not sent again"));
        assert!(
            next.at.duration_since(throttled.at) >= Duration::from_millis(950),
            "sent again after {:?}",
            next.at.duration_since(throttled.at)
        );
        // The timed-out attempt was sent again (same key, delivered).
        let timed_out = header(&seen[1].headers, "idempotency-key");
        assert!(by_key.get(&timed_out).is_some_and(|c| c.len() == 2));
        // Every line once, pushed (one copy per key) or dead-lettered.
        let mut count: HashMap<String, usize> = HashMap::new();
        for copies in by_key.values() {
            for l in &copies[0].lines {
                *count.entry(l.clone()).or_default() += 1;
            }
        }
        let dead = rejected_entries(&dead_root);
        for e in &dead {
            assert_eq!(e["reason"], "rejected");
            let error = e["error"].as_str().unwrap_or_default();
            assert!(
                error.contains("400") && error.contains("bad event"),
                "{error}"
            );
            *count
                .entry(e["line"].as_str().unwrap_or_default().to_owned())
                .or_default() += 1;
        }
        assert_eq!(dead.len(), refused[0].lines.len());
        assert!(
            dead.iter()
                .any(|e| e["line"].as_str().unwrap_or("").contains("reject"))
        );
        for l in &sent {
            assert_eq!(count.get(l), Some(&1), "{l}");
        }
        assert_eq!(count.len(), sent.len());
        // Per shard, batches in order and without overlap; headers agree
        // with the body.
        let mut per_shard: BTreeMap<String, Vec<(u128, u128)>> = BTreeMap::new();
        for s in by_key.values().map(|c| c[0]).chain(refused.iter().copied()) {
            let h = &s.headers;
            assert_eq!(header(h, "authorization"), "Bearer s3cret-token");
            assert_eq!(header(h, "kinesthetic-stream"), "events");
            assert_eq!(header(h, "kinesthetic-pipeline"), "push");
            assert_eq!(header(h, "content-type"), "application/x-ndjson");
            assert_eq!(
                header(h, "kinesthetic-line-count"),
                s.lines.len().to_string()
            );
            assert!(header(h, "kinesthetic-first-event-id").contains('-'));
            assert!(header(h, "kinesthetic-last-event-id").contains('-'));
            let seq = |n: &str| {
                header(h, n)
                    .parse::<u128>()
                    .unwrap_or_else(|_| panic!("{n}"))
            };
            per_shard
                .entry(header(h, "kinesthetic-shard"))
                .or_default()
                .push((
                    seq("kinesthetic-first-sequence"),
                    seq("kinesthetic-last-sequence"),
                ));
        }
        assert_eq!(per_shard.len(), 2, "{per_shard:?}");
        // In the order delivered (the refused one sits where it was sent).
        let mut order: BTreeMap<String, Vec<(u128, u128)>> = BTreeMap::new();
        let mut once = HashSet::new();
        for s in seen
            .iter()
            .filter(|s| s.status == 200 || s.status == 400)
            .filter(|s| once.insert(header(&s.headers, "idempotency-key")))
        {
            let h = &s.headers;
            let seq = |n: &str| header(h, n).parse::<u128>().unwrap_or(0);
            order
                .entry(header(h, "kinesthetic-shard"))
                .or_default()
                .push((
                    seq("kinesthetic-first-sequence"),
                    seq("kinesthetic-last-sequence"),
                ));
        }
        for (shard, batches) in &order {
            for w in batches.windows(2) {
                assert!(w[0].1 < w[1].0, "{shard}: {w:?} out of order");
            }
        }
    });
}

#[test]
fn a_firehose_receiver_gets_firehose_requests() {
    rt().block_on(async {
        let dir = crate::harness::tempdir();
        let receiver = Receiver {
            firehose: true,
            ..Receiver::default()
        };
        let url = receiver.start().await;
        let mut c = local_config(dir.path(), 1);
        let mut push = SinkConfig::http(url);
        push.format = PushFormat::Firehose;
        push.auth_value = Some("access-key-123".into());
        c.sinks.insert("push".into(), push);
        c.pipelines.push(pipeline("push", None, &["push"]));
        let app = start(&c).await;
        let addr = app.intake_addr.unwrap_or_else(|| panic!("no intake"));
        let lines: Vec<String> = (0..30).map(|n| format!("{{\"n\":{n}}}")).collect();
        post(addr, &lines, None).await;
        wait_until(Duration::from_secs(30), "30 records pushed", || {
            receiver.seen().iter().map(|s| s.lines.len()).sum::<usize>() >= 30
        })
        .await;
        app.stop().await.unwrap_or_else(|e| panic!("{e}"));
        let seen = receiver.seen();
        let got: Vec<String> = seen.iter().flat_map(|s| s.lines.clone()).collect();
        assert_eq!(got, lines);
        for s in &seen {
            let h = &s.headers;
            assert_eq!(header(h, "x-amz-firehose-access-key"), "access-key-123");
            assert_eq!(header(h, "content-type"), "application/json");
            assert_eq!(
                header(h, "x-amz-firehose-request-id"),
                header(h, "idempotency-key")
            );
        }
    });
}

/// `kinesthetic serve` killed with SIGKILL twice while it pushes, then
/// restarted: every acknowledged event reaches the receiver, and a batch
/// pushed again after a restart has the key and the lines it had before,
/// so a receiver keeping one batch per key has every event once.
#[test]
fn kill_9_during_pushes_repeats_only_under_the_same_keys() {
    use crate::consumer_process::{post_until, sigterm, spawn, write_config};
    let dir = crate::harness::tempdir();
    rt().block_on(async {
        let receiver = Receiver {
            always_ok: true,
            ..Receiver::default()
        };
        let url = receiver.start().await;
        let config = write_config(
            dir.path(),
            &format!(
                "[sinks.push]\ntype = \"http\"\nurl = \"{url}\"\n\
                 [[pipelines]]\nname = \"push\"\nstream = \"events\"\nsinks = [\"push\"]\n"
            ),
        );
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
        let (child, _addr) = spawn("serve", &config, &[], "intake on http://");
        // Killed if the test fails before it stops it: an orphan would
        // keep the test's output open.
        let mut child = crate::consumer_process::Reap(child);
        let delivered = |r: &Receiver| -> HashSet<String> {
            r.seen().iter().flat_map(|s| s.lines.clone()).collect()
        };
        wait_until(Duration::from_secs(60), "every acked event pushed", || {
            let got = delivered(&receiver);
            acked.iter().all(|l| got.contains(l))
        })
        .await;
        sigterm(&child.0);
        let status = child.0.wait().unwrap_or_else(|e| panic!("{e}"));
        assert!(status.success(), "{status}");

        let seen = receiver.seen();
        let mut by_key: HashMap<String, Vec<&Seen>> = HashMap::new();
        for s in &seen {
            by_key
                .entry(header(&s.headers, "idempotency-key"))
                .or_default()
                .push(s);
        }
        let again = by_key.values().filter(|c| c.len() > 1).count();
        for (k, copies) in &by_key {
            for c in copies {
                assert_eq!(
                    c.lines, copies[0].lines,
                    "{k}: another batch under the same key"
                );
            }
        }
        let mut count: HashMap<&String, usize> = HashMap::new();
        for copies in by_key.values() {
            for l in &copies[0].lines {
                *count.entry(l).or_default() += 1;
            }
        }
        for l in &acked {
            assert_eq!(count.get(l), Some(&1), "{l}");
        }
        eprintln!(
            "{} events acked over 2 kills: {} POSTs, {} batches, {again} of them pushed again \
             after a restart under the same key",
            acked.len(),
            seen.len(),
            by_key.len()
        );
    });
}
