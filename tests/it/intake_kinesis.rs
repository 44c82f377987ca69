//! The intake against the Kinesis stand-in, through the spool: events are
//! acknowledged once spooled, shipped in order, and survive the stand-in
//! being unreachable (a TCP proxy in between refuses every connection).

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use axum::response::IntoResponse;

use kinesthetic::app::{Telemetry, start_intake_with};
use kinesthetic::config::{Config, StreamSettings};
use kinesthetic::intake::producer::ProducerConfig;
use kinesthetic::intake::spool::Spooled;
use kinesthetic::stream::StreamBackend;
use kinesthetic::stream::kinesis::{KinesisBackend, KinesisSettings};
use serde_json::Value;

use crate::intake::read_all;
use crate::services::{kinesis_endpoint, unique_stream};

use crate::harness::{metric, rt, scrape};

/// An HTTP proxy in front of the stand-in that can be switched off: while
/// off, every request is answered 503 ServiceUnavailable without reaching
/// Kinesis. It works per request, so each call either reached Kinesis and
/// got its answer, or did not reach it at all (a TCP cut in the middle of a
/// call would leave it unknown whether Kinesis wrote the records, and the
/// retry could then write them twice).
struct Proxy {
    addr: std::net::SocketAddr,
    up: Arc<AtomicBool>,
    refused: Arc<std::sync::atomic::AtomicU64>,
}

impl Proxy {
    async fn start(upstream: String) -> Proxy {
        use axum::body::Bytes;
        use axum::http::{HeaderMap, Method, StatusCode, Uri};
        let up = Arc::new(AtomicBool::new(true));
        let refused = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let client = reqwest::Client::new();
        let (up2, refused2) = (Arc::clone(&up), Arc::clone(&refused));
        let handler = move |method: Method, uri: Uri, headers: HeaderMap, body: Bytes| {
            let (up, refused, client) = (Arc::clone(&up2), Arc::clone(&refused2), client.clone());
            let url = format!("{}{}", upstream.trim_end_matches('/'), uri);
            async move {
                let unavailable = |why: String| {
                    (
                        StatusCode::SERVICE_UNAVAILABLE,
                        [("content-type", "application/x-amz-json-1.1")],
                        format!("{{\"__type\":\"ServiceUnavailable\",\"message\":\"{why}\"}}"),
                    )
                        .into_response()
                };
                if !up.load(Ordering::SeqCst) {
                    refused.fetch_add(1, Ordering::SeqCst);
                    return unavailable("the test proxy is off".into());
                }
                let mut req = client.request(method, &url).body(body);
                for (k, v) in &headers {
                    if k != "host" && k != "content-length" {
                        req = req.header(k, v);
                    }
                }
                match req.send().await {
                    Ok(resp) => {
                        let status = resp.status();
                        let mut h = HeaderMap::new();
                        for (k, v) in resp.headers() {
                            if k != "content-length"
                                && k != "transfer-encoding"
                                && k != "connection"
                            {
                                h.insert(k.clone(), v.clone());
                            }
                        }
                        let b = resp.bytes().await.unwrap_or_default();
                        (status, h, b).into_response()
                    }
                    Err(e) => unavailable(e.to_string().replace('"', "'")),
                }
            }
        };
        // Kinesis takes 5 MiB of data per call, about 7 MB as JSON: far
        // over axum's default body limit of 2 MB.
        let app = axum::Router::new()
            .fallback(handler)
            .layer(axum::extract::DefaultBodyLimit::max(16 << 20));
        let l = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .unwrap_or_else(|e| panic!("proxy bind: {e}"));
        let addr = l.local_addr().unwrap_or_else(|e| panic!("{e}"));
        tokio::spawn(async move {
            let _ = axum::serve(l, app).await;
        });
        Proxy { addr, up, refused }
    }

    fn set_up(&self, up: bool) {
        self.up.store(up, Ordering::SeqCst);
    }

    /// Requests refused while off (proof that the outage was seen).
    fn refused(&self) -> u64 {
        self.refused.load(Ordering::SeqCst)
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

pub(crate) async fn kinesis(url: &str) -> KinesisBackend {
    KinesisBackend::connect(&KinesisSettings {
        region: None,
        endpoint: Some(url.to_owned()),
        ..KinesisSettings::default()
    })
    .await
}

fn config(stream: &str) -> Config {
    let mut c = Config::default();
    c.intake.listen = "127.0.0.1:0".parse().unwrap_or_else(|e| panic!("{e}"));
    c.admin.listen = c.intake.listen;
    c.streams.insert(
        stream.to_owned(),
        StreamSettings {
            partition_key_field: Some("user".into()),
            ..StreamSettings::default()
        },
    );
    c
}

fn producer() -> ProducerConfig {
    ProducerConfig {
        retry_max: Duration::from_secs(1),
        ..ProducerConfig::default()
    }
}

/// A new stream of `shards` shards on the stand-in, ACTIVE.
async fn new_stream(direct: &KinesisBackend, prefix: &str, shards: u32) -> String {
    let stream = unique_stream(prefix);
    direct
        .create_stream(&stream, shards)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    kinesthetic::stream::reshard::wait_active(direct, &stream, Duration::from_secs(30))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    stream
}

/// `remote` behind a spool in `dir` holding at most `max_backlog` bytes.
fn spool(
    remote: KinesisBackend,
    dir: &std::path::Path,
    telemetry: &Telemetry,
    max_backlog: u64,
) -> Spooled<KinesisBackend> {
    Spooled::open(
        remote,
        dir,
        producer(),
        telemetry.metrics.clone(),
        max_backlog,
    )
    .unwrap_or_else(|e| panic!("{e}"))
}

async fn wait_shipped<B: StreamBackend>(s: &Spooled<B>, within: Duration) {
    let start = Instant::now();
    loop {
        let backlog: u64 = s.backlog().iter().map(|(_, b)| b).sum();
        if backlog == 0 {
            return;
        }
        assert!(
            start.elapsed() < within,
            "spool still holds {backlog} bytes after {within:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[test]
fn an_unreachable_kinesis_loses_nothing_and_keeps_order() {
    let Some(endpoint) = kinesis_endpoint() else {
        return;
    };
    let outage = std::env::var("KINESTHETIC_OUTAGE_SECS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(60u64);
    rt().block_on(async move {
        let direct = kinesis(&endpoint).await;
        let proxy = Proxy::start(endpoint.clone()).await;
        let via = kinesis(&proxy.url()).await;
        let stream = new_stream(&direct, "outage", 2).await;
        let dir = crate::harness::tempdir();
        let telemetry = Telemetry::new();
        let spooled = spool(via, dir.path(), &telemetry, 1 << 30);
        let running = start_intake_with(spooled.clone(), &config(&stream), telemetry)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let url = format!("http://{}/v1/streams/{stream}/events", running.intake_addr);
        let client = reqwest::Client::new();
        let mut acked: HashMap<String, Vec<u64>> = HashMap::new();
        let mut n = 0u64;
        let post = async |n: &mut u64, acked: &mut HashMap<String, Vec<u64>>| {
            let body: String = (0..100)
                .map(|i| {
                    *n += 1;
                    format!(
                        "{{\"user\":\"u{}\",\"n\":{n},\"pad\":\"{}\"}}\n",
                        i % 5,
                        "x".repeat(100)
                    )
                })
                .collect();
            let first = *n - 99;
            let resp = client
                .post(&url)
                .body(body)
                .send()
                .await
                .unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(
                resp.status().as_u16(),
                200,
                "the intake must keep accepting into the spool"
            );
            for k in first..=*n {
                acked
                    .entry(format!("u{}", (k - first) % 5))
                    .or_default()
                    .push(k);
            }
        };
        let phase = |secs: u64| Instant::now() + Duration::from_secs(secs);
        let end = phase(2);
        while Instant::now() < end {
            post(&mut n, &mut acked).await;
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        proxy.set_up(false);
        let end = phase(outage);
        while Instant::now() < end {
            post(&mut n, &mut acked).await;
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let during: u64 = spooled.backlog().iter().map(|(_, b)| b).sum();
        assert!(
            during > 0,
            "nothing waited in the spool: the outage was not real"
        );
        assert!(
            proxy.refused() > 0,
            "Kinesis was never called during the outage"
        );
        // The spool depth is visible while the shipper's call is stuck.
        let m = scrape(running.admin_addr).await;
        let gauge = metric(&m, "kinesthetic_intake_spool_bytes{");
        assert!(
            gauge > 0.0,
            "spool depth gauge is {gauge} during the outage:\n{m}"
        );
        assert!(
            m.contains(&format!(
                "kinesthetic_intake_put_calls_total{{stream=\"{stream}\",to=\"spool\"}}"
            )),
            "intake writes into the spool are not counted apart:\n{m}"
        );
        proxy.set_up(true);
        for _ in 0..10 {
            post(&mut n, &mut acked).await;
        }
        wait_shipped(&spooled, Duration::from_secs(180)).await;
        running.stop().await.unwrap_or_else(|e| panic!("{e}"));
        spooled.close().await;

        let got = read_all(&direct, &stream).await;
        let ids: HashSet<_> = got.iter().filter_map(|e| e.stamp.map(|s| s.id)).collect();
        assert_eq!(ids.len(), got.len(), "an event reached the stream twice");
        assert_eq!(
            got.len() as u64,
            n,
            "acknowledged {n}, the stream has {}",
            got.len()
        );
        let mut per_user: HashMap<String, Vec<u64>> = HashMap::new();
        for e in &got {
            let v: Value = serde_json::from_slice(&e.data).unwrap_or(Value::Null);
            per_user
                .entry(e.key.clone())
                .or_default()
                .push(v["n"].as_u64().unwrap_or(0));
        }
        for (user, want) in &acked {
            assert_eq!(per_user.get(user), Some(want), "order of {user}");
        }
        direct
            .delete_stream(&stream)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
    });
}

#[test]
fn a_full_spool_answers_503_and_accepts_nothing_it_cannot_keep() {
    let Some(endpoint) = kinesis_endpoint() else {
        return;
    };
    rt().block_on(async move {
        let direct = kinesis(&endpoint).await;
        let proxy = Proxy::start(endpoint.clone()).await;
        let via = kinesis(&proxy.url()).await;
        let stream = new_stream(&direct, "full", 1).await;
        let dir = crate::harness::tempdir();
        let telemetry = Telemetry::new();
        let spooled = spool(via, dir.path(), &telemetry, 20_000);
        let mut c = config(&stream);
        c.intake.put_timeout_ms = 1500;
        let running = start_intake_with(spooled.clone(), &c, telemetry)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let url = format!("http://{}/v1/streams/{stream}/events", running.intake_addr);
        let client = reqwest::Client::new();
        // Unreachable before the stream was ever opened: 503, not an error of ours.
        proxy.set_up(false);
        let resp = client
            .post(&url)
            .body("{}\n")
            .send()
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(resp.status().as_u16(), 503);
        proxy.set_up(true);
        let resp = client
            .post(&url)
            .body("{\"user\":\"u\"}\n")
            .send()
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(resp.status().as_u16(), 200);
        let mut accepted = 1u64;
        proxy.set_up(false);
        let mut refused = None;
        for i in 0..20 {
            let body: String = (0..50)
                .map(|j| format!("{{\"user\":\"u\",\"i\":{i},\"j\":{j}}}\n"))
                .collect();
            let sent = Instant::now();
            let resp = client
                .post(&url)
                .body(body)
                .send()
                .await
                .unwrap_or_else(|e| panic!("{e}"));
            match resp.status().as_u16() {
                200 => accepted += 50,
                503 => {
                    refused = resp
                        .headers()
                        .get("retry-after")
                        .map(|v| v.to_str().unwrap_or("").to_owned());
                    // Said at once, not after waiting out put_timeout for a
                    // spool that cannot empty meanwhile.
                    let waited = sent.elapsed();
                    let v: serde_json::Value =
                        serde_json::from_slice(&resp.bytes().await.unwrap_or_default())
                            .unwrap_or_default();
                    let msg = v["error"].as_str().unwrap_or_default();
                    assert!(msg.contains("spool is full"), "{msg}");
                    assert!(
                        waited < Duration::from_millis(1500),
                        "a full spool answered after {waited:?}, the put_timeout"
                    );
                    break;
                }
                s => panic!("status {s}"),
            }
        }
        assert_eq!(
            refused.as_deref(),
            Some("1"),
            "a full spool must answer 503 with Retry-After"
        );
        proxy.set_up(true);
        wait_shipped(&spooled, Duration::from_secs(60)).await;
        running.stop().await.unwrap_or_else(|e| panic!("{e}"));
        spooled.close().await;
        let got = read_all(&direct, &stream).await;
        assert_eq!(
            got.len() as u64,
            accepted,
            "every accepted event, and only those"
        );
        direct
            .delete_stream(&stream)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
    });
}

/// Fails chosen entries of real PutRecords calls: removes them from the
/// request before it is sent (so Kinesis never writes them) and puts a
/// ProvisionedThroughputExceeded result in their place in the response,
/// exactly what a throttled shard answers.
#[derive(Debug, Default)]
struct FailEntries {
    calls: std::sync::Mutex<u64>,
    removed: std::sync::Mutex<std::collections::VecDeque<(usize, Vec<usize>)>>,
    injected: std::sync::atomic::AtomicU64,
}

mod fault {
    use aws_sdk_kinesis::config::interceptors::{
        BeforeSerializationInterceptorContextMut, FinalizerInterceptorContextMut,
    };
    use aws_sdk_kinesis::config::{ConfigBag, Intercept, RuntimeComponents};
    use aws_sdk_kinesis::operation::put_records::{PutRecordsInput, PutRecordsOutput};
    use aws_sdk_kinesis::types::PutRecordsResultEntry;
    use std::sync::Arc;
    use std::sync::atomic::Ordering;

    type BoxError = Box<dyn std::error::Error + Send + Sync>;

    #[derive(Debug, Clone)]
    pub(super) struct Interceptor(pub(super) Arc<super::FailEntries>);

    impl Intercept for Interceptor {
        fn name(&self) -> &'static str {
            "FailEntries"
        }

        fn modify_before_serialization(
            &self,
            ctx: &mut BeforeSerializationInterceptorContextMut<'_>,
            _rc: &RuntimeComponents,
            _cfg: &mut ConfigBag,
        ) -> Result<(), BoxError> {
            let Some(input) = ctx.input_mut().downcast_mut::<PutRecordsInput>() else {
                return Ok(());
            };
            let mut calls = self.0.calls.lock().map_err(|_| "poisoned")?;
            *calls += 1;
            let records = input.records.take().unwrap_or_default();
            let n = records.len();
            // Every other call, fail every odd entry (when there are several).
            let fail = |i: usize| *calls % 2 == 1 && n > 1 && i % 2 == 1;
            let removed: Vec<usize> = (0..n).filter(|&i| fail(i)).collect();
            let kept = records
                .into_iter()
                .enumerate()
                .filter(|(i, _)| !fail(*i))
                .map(|(_, r)| r)
                .collect();
            input.records = Some(kept);
            self.0
                .removed
                .lock()
                .map_err(|_| "poisoned")?
                .push_back((n, removed));
            Ok(())
        }

        fn modify_before_completion(
            &self,
            ctx: &mut FinalizerInterceptorContextMut<'_>,
            _rc: &RuntimeComponents,
            _cfg: &mut ConfigBag,
        ) -> Result<(), BoxError> {
            let Some(Ok(out)) = ctx.output_or_error_mut() else {
                return Ok(());
            };
            let Some(out) = out.downcast_mut::<PutRecordsOutput>() else {
                return Ok(());
            };
            let (n, removed) = self
                .0
                .removed
                .lock()
                .map_err(|_| "poisoned")?
                .pop_front()
                .ok_or("a response without its request")?;
            let mut real = out.records().to_vec().into_iter();
            let mut results = Vec::with_capacity(n);
            for i in 0..n {
                if removed.contains(&i) {
                    results.push(
                        PutRecordsResultEntry::builder()
                            .error_code("ProvisionedThroughputExceededException")
                            .error_message("Rate exceeded for shard (injected)")
                            .build(),
                    );
                } else {
                    results.push(real.next().ok_or("fewer results than entries")?);
                }
            }
            let failed = results.iter().filter(|r| r.error_code().is_some()).count();
            self.0
                .injected
                .fetch_add(removed.len() as u64, Ordering::SeqCst);
            *out = PutRecordsOutput::builder()
                .set_records(Some(results))
                .failed_record_count(failed as i32)
                .build()?;
            Ok(())
        }
    }
}

#[test]
fn failed_entries_of_real_put_records_calls_are_resent_alone() {
    let Some(endpoint) = kinesis_endpoint() else {
        return;
    };
    rt().block_on(async move {
        let direct = kinesis(&endpoint).await;
        let stream = new_stream(&direct, "faults", 4).await;
        let faults = Arc::new(FailEntries::default());
        let conf = direct
            .client()
            .config()
            .to_builder()
            .interceptor(fault::Interceptor(Arc::clone(&faults)))
            .build();
        let faulty = KinesisBackend::from_client(aws_sdk_kinesis::Client::from_conf(conf));
        let dir = crate::harness::tempdir();
        let telemetry = Telemetry::new();
        let spooled = spool(faulty, dir.path(), &telemetry, 1 << 30);
        let running = start_intake_with(spooled.clone(), &config(&stream), telemetry)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let url = format!("http://{}/v1/streams/{stream}/events", running.intake_addr);
        let client = reqwest::Client::new();
        let mut n = 0u64;
        for _ in 0..30 {
            let body: String = (0..200)
                .map(|i| {
                    n += 1;
                    format!("{{\"user\":\"u{}\",\"n\":{n}}}\n", i % 16)
                })
                .collect();
            let resp = client
                .post(&url)
                .body(body)
                .send()
                .await
                .unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(resp.status().as_u16(), 200);
        }
        wait_shipped(&spooled, Duration::from_secs(120)).await;
        running.stop().await.unwrap_or_else(|e| panic!("{e}"));
        spooled.close().await;
        assert!(
            faults.injected.load(Ordering::SeqCst) > 0,
            "no entry was failed: the test proves nothing"
        );
        let got = read_all(&direct, &stream).await;
        let ids: HashSet<_> = got.iter().filter_map(|e| e.stamp.map(|s| s.id)).collect();
        assert_eq!(ids.len(), got.len(), "a retry wrote an event twice");
        assert_eq!(got.len() as u64, n, "events lost");
        let mut last: HashMap<String, u64> = HashMap::new();
        for e in &got {
            let v: Value = serde_json::from_slice(&e.data).unwrap_or(Value::Null);
            let k = v["n"].as_u64().unwrap_or(0);
            let prev = last.insert(e.key.clone(), k).unwrap_or(0);
            assert!(k > prev, "{}: {k} after {prev}", e.key);
        }
        direct
            .delete_stream(&stream)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
    });
}

/// A restart while Kinesis is away: the stream cannot be described, and
/// the spool still takes its events, routed by the shard map it kept; they
/// are shipped once Kinesis is back.
#[test]
fn a_restart_during_an_outage_spools_with_the_shard_map_last_seen() {
    let Some(endpoint) = kinesis_endpoint() else {
        return;
    };
    rt().block_on(async move {
        let direct = kinesis(&endpoint).await;
        let proxy = Proxy::start(endpoint.clone()).await;
        let stream = new_stream(&direct, "restart-outage", 2).await;
        let dir = crate::harness::tempdir();
        let post = async |addr: std::net::SocketAddr, from: u64| {
            let body: String = (from..from + 50)
                .map(|n| format!("{{\"user\":\"u{}\",\"n\":{n}}}\n", n % 7))
                .collect();
            reqwest::Client::new()
                .post(format!("http://{addr}/v1/streams/{stream}/events"))
                .body(body)
                .send()
                .await
                .map(|r| r.status().as_u16())
                .unwrap_or(0)
        };
        // A first run sees the stream and keeps its shard map.
        {
            let telemetry = Telemetry::new();
            let spooled = spool(kinesis(&proxy.url()).await, dir.path(), &telemetry, 1 << 30);
            let running = start_intake_with(spooled.clone(), &config(&stream), telemetry)
                .await
                .unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(post(running.intake_addr, 0).await, 200);
            wait_shipped(&spooled, Duration::from_secs(60)).await;
            running.stop().await.unwrap_or_else(|e| panic!("{e}"));
            spooled.close().await;
        }
        // Kinesis goes away; the intake restarts.
        proxy.set_up(false);
        let telemetry = Telemetry::new();
        let spooled = spool(kinesis(&proxy.url()).await, dir.path(), &telemetry, 1 << 30);
        spooled.resume().await.unwrap_or_else(|e| panic!("{e}"));
        let running = start_intake_with(spooled.clone(), &config(&stream), telemetry)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        for i in 1..4 {
            assert_eq!(
                post(running.intake_addr, i * 50).await,
                200,
                "refused during the outage after a restart"
            );
        }
        assert!(proxy.refused() > 0, "Kinesis was never called");
        let during: u64 = spooled.backlog().iter().map(|(_, b)| b).sum();
        assert!(during > 0, "nothing waited in the spool");
        proxy.set_up(true);
        wait_shipped(&spooled, Duration::from_secs(120)).await;
        running.stop().await.unwrap_or_else(|e| panic!("{e}"));
        spooled.close().await;

        // Every event once, each in a shard whose range holds its key.
        let got = read_all(&direct, &stream).await;
        let mut ns: Vec<u64> = got
            .iter()
            .filter_map(|e| serde_json::from_slice::<Value>(&e.data).ok()?["n"].as_u64())
            .collect();
        ns.sort_unstable();
        assert_eq!(ns, (0..200).collect::<Vec<u64>>());
        let d = direct
            .describe(&stream)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        for e in &got {
            let h = kinesthetic::stream::hash_key_of(&e.key);
            let shard = d.shards.iter().find(|s| s.id == e.shard);
            assert!(
                shard.is_some_and(|s| s.hash_range.contains(h)),
                "{:?} of key {} stored in {}",
                String::from_utf8_lossy(&e.data),
                e.key,
                e.shard
            );
        }
        direct
            .delete_stream(&stream)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
    });
}
