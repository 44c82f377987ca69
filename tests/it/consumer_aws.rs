//! The consumer against the stand-ins: Kinesis (kinesis-local) → consumer →
//! S3 (moto), through the official AWS SDK, and resharding under load on
//! the Kinesis stand-in.

use std::collections::BTreeMap;
use std::time::Duration;

use aws_sdk_s3::Client as S3;
use kinesthetic::app::{self, Parts, Telemetry};
use kinesthetic::config::{BackendKind, Compression, Config, SinkConfig, SinkKind, StreamSettings};
use kinesthetic::sink::ObjectStore;
use kinesthetic::sink::util::compress::decompress;
use kinesthetic::stream::StreamBackend;
use kinesthetic::stream::any::AnyBackend;

use crate::consumer::{
    Obj, archived_lines, check_objects, drop_filter, each_once, event, line_counts, pipeline,
    read_dir_archive, reduced, sha256_of, wait_until,
};
use crate::filters;
use crate::harness::rt;
use crate::services::{kinesis_endpoint, s3_endpoint, unique_stream};

pub(crate) async fn s3_client(endpoint: &str) -> S3 {
    let shared = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .endpoint_url(endpoint)
        .region(aws_config::Region::new("us-east-1"))
        .test_credentials()
        .load()
        .await;
    S3::from_conf(
        aws_sdk_s3::config::Builder::from(&shared)
            .force_path_style(true)
            .build(),
    )
}

/// A bucket of its own (`PREFIX-…`, lower case).
async fn bucket(s3: &S3, prefix: &str) -> String {
    let name = unique_stream(prefix).to_ascii_lowercase().replace('_', "-");
    let name: String = name.chars().take(63).collect();
    s3.create_bucket()
        .bucket(&name)
        .send()
        .await
        .unwrap_or_else(|e| panic!("create bucket {name}: {e:?}"));
    name
}

/// Every object under `prefix`, read back with its metadata.
async fn read_s3(s3: &S3, bucket: &str, prefix: &str) -> Vec<Obj> {
    let mut out = Vec::new();
    let mut token = None;
    loop {
        let page = s3
            .list_objects_v2()
            .bucket(bucket)
            .prefix(prefix)
            .set_continuation_token(token)
            .send()
            .await
            .unwrap_or_else(|e| panic!("list: {e:?}"));
        for o in page.contents() {
            let key = o.key().unwrap_or_default().to_owned();
            let got = s3
                .get_object()
                .bucket(bucket)
                .key(&key)
                .send()
                .await
                .unwrap_or_else(|e| panic!("get {key}: {e:?}"));
            let mut meta: BTreeMap<String, String> = got
                .metadata()
                .map(|m| m.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
                .unwrap_or_default();
            if let Some(e) = got.content_encoding() {
                meta.insert("content-encoding".into(), e.to_owned());
            }
            let body = got
                .body
                .collect()
                .await
                .unwrap_or_else(|e| panic!("read {key}: {e}"))
                .into_bytes();
            let text =
                decompress(&body, Compression::Gzip).unwrap_or_else(|e| panic!("{key}: {e}"));
            out.push(Obj {
                key: key
                    .strip_prefix(prefix)
                    .unwrap_or(&key)
                    .trim_start_matches('/')
                    .to_owned(),
                lines: text
                    .split(|&b| b == b'\n')
                    .filter(|l| !l.is_empty())
                    .map(<[u8]>::to_vec)
                    .collect(),
                meta,
                modified: std::time::UNIX_EPOCH,
            });
        }
        match page.next_continuation_token() {
            Some(t) => token = Some(t.to_owned()),
            None => break,
        }
    }
    out.sort_by(|a, b| a.key.cmp(&b.key));
    out
}

fn s3_sink(endpoint: &str, bucket: &str, prefix: &str) -> SinkConfig {
    let mut s = SinkConfig::dir("unused");
    s.kind = SinkKind::S3;
    s.path = None;
    s.bucket = Some(bucket.to_owned());
    s.endpoint = Some(endpoint.to_owned());
    s.prefix = prefix.to_owned();
    s.max_age_ms = Some(500);
    s
}

/// A config on the Kinesis stand-in: stream `events`… named `stream`.
pub(crate) fn kinesis_config(
    dir: &std::path::Path,
    kinesis: &str,
    stream: &str,
    shards: u32,
) -> Config {
    let mut c = crate::consumer::local_config(dir, shards);
    c.stream.backend = BackendKind::Kinesis;
    c.stream.kinesis.endpoint = Some(kinesis.to_owned());
    c.consumer.poll_interval_ms = 100;
    c.streams.clear();
    c.streams.insert(
        stream.to_owned(),
        StreamSettings {
            shards: Some(shards),
            ..StreamSettings::default()
        },
    );
    for p in &mut c.pipelines {
        p.stream = stream.to_owned();
    }
    c
}

pub(crate) async fn start(c: &Config) -> (app::App, AnyBackend) {
    c.validate("test").unwrap_or_else(|e| panic!("{e}"));
    let b = app::backend(c).await.unwrap_or_else(|e| panic!("{e}"));
    let t = Telemetry::new();
    let spool = app::spool_for(&b, c, &t.metrics)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let spool = spool.unwrap_or_else(|| panic!("the spool is on by default"));
    let app = app::launch(
        c,
        t,
        Parts {
            intake: Some(spool.clone()),
            consumer: Some(b.clone()),
            spool: Some(spool),
            create: Some(b.clone()),
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    (app, b)
}

pub(crate) async fn post_to(
    addr: std::net::SocketAddr,
    stream: &str,
    lines: &[String],
    key: Option<&str>,
) {
    let mut req = reqwest::Client::new()
        .post(format!("http://{addr}/v1/streams/{stream}/events"))
        .body(lines.join("\n"));
    if let Some(k) = key {
        req = req.header("X-Partition-Key", k);
    }
    let r = req.send().await.unwrap_or_else(|e| panic!("post: {e}"));
    let status = r.status();
    assert!(
        status.is_success(),
        "{status}: {}",
        r.text().await.unwrap_or_default()
    );
}

#[test]
fn kinesis_to_s3_raw_and_filtered_archives_with_metadata() {
    let (Some(kinesis), Some(s3_url)) = (kinesis_endpoint(), s3_endpoint()) else {
        return;
    };
    let dir = crate::harness::tempdir();
    let stream = unique_stream("consume");
    rt().block_on(async {
        let s3 = s3_client(&s3_url).await;
        let b = bucket(&s3, "archive").await;
        let mut c = kinesis_config(dir.path(), &kinesis, &stream, 2);
        c.sinks.insert("raw".into(), s3_sink(&s3_url, &b, "raw"));
        c.sinks
            .insert("filtered".into(), s3_sink(&s3_url, &b, "filtered/{filter}"));
        let mut errors = pipeline("errors", Some("errors-only"), &["filtered"]);
        errors.stream = stream.clone();
        c.pipelines.push(errors);
        let module = std::fs::read(filters::ERRORS_ONLY).unwrap_or_else(|e| panic!("{e}"));
        drop_filter(&c.filters.dir, "errors-only", &module);
        let sha = sha256_of(std::path::Path::new(filters::ERRORS_ONLY));
        let (app, _b) = start(&c).await;
        let addr = app.intake_addr.unwrap_or_else(|| panic!("no intake"));
        let mut sent = Vec::new();
        let mut errs = Vec::new();
        for r in 0..4 {
            let lines: Vec<String> = (r * 250..(r + 1) * 250)
                .map(|n| {
                    if n % 10 == 1 {
                        errs.push(n);
                    }
                    event(n, n % 10 == 1)
                })
                .collect();
            post_to(addr, &stream, &lines, None).await;
            sent.extend(lines);
        }
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        let (raw, filtered) = loop {
            let raw = read_s3(&s3, &b, "raw/").await;
            let filtered = read_s3(&s3, &b, "filtered/errors-only/").await;
            let n = |v: &[Obj]| v.iter().map(|o| o.lines.len()).sum::<usize>();
            if n(&raw) >= sent.len() && n(&filtered) >= errs.len() {
                break (raw, filtered);
            }
            assert!(
                std::time::Instant::now() < deadline,
                "waited for the archives: {} of {} raw, {} of {} filtered",
                n(&raw),
                sent.len(),
                n(&filtered),
                errs.len()
            );
            tokio::time::sleep(Duration::from_millis(300)).await;
        };
        let counts = line_counts(&raw);
        assert_eq!(counts.len(), sent.len());
        for l in &sent {
            assert_eq!(counts.get(l.as_bytes()), Some(&1), "{l}");
        }
        check_objects(&raw, &stream, "none");
        let f = line_counts(&filtered);
        for n in &errs {
            assert_eq!(f.get(&reduced(*n)), Some(&1), "m-{n}");
        }
        check_objects(&filtered, &stream, &sha);
        // Kinesis sequence numbers (56 digits) are in the keys as they are.
        assert!(
            raw.iter().all(|o| o.meta("first-sequence").len() > 40),
            "{:?}",
            raw[0].meta
        );
        app.stop().await.unwrap_or_else(|e| panic!("{e}"));
    });
}

#[test]
fn s3_objects_above_the_threshold_go_up_in_parts() {
    let Some(s3_url) = s3_endpoint() else {
        return;
    };
    rt().block_on(async {
        let s3 = s3_client(&s3_url).await;
        let b = bucket(&s3, "multipart").await;
        let mut cfg = s3_sink(&s3_url, &b, "");
        cfg.multipart_threshold_bytes = 5 << 20;
        let store = kinesthetic::sink::s3::S3Store::connect("big", &cfg)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let body: Vec<u8> = (0..(12u32 << 20)).map(|i| (i % 251) as u8).collect();
        let object = kinesthetic::sink::Object {
            body: bytes::Bytes::from(body.clone()),
            content_type: "application/x-ndjson",
            content_encoding: None,
            metadata: vec![("line-count", "7".into())],
        };
        store
            .put("a/b.ndjson", &object)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let got = s3
            .get_object()
            .bucket(&b)
            .key("a/b.ndjson")
            .send()
            .await
            .unwrap_or_else(|e| panic!("{e:?}"));
        assert_eq!(
            got.metadata()
                .and_then(|m| m.get("line-count"))
                .map(String::as_str),
            Some("7")
        );
        // A multipart object's ETag ends in -PARTS.
        assert!(
            got.e_tag()
                .is_some_and(|t| t.trim_matches('"').ends_with("-2")),
            "{:?}",
            got.e_tag()
        );
        let bytes = got
            .body
            .collect()
            .await
            .unwrap_or_else(|e| panic!("{e}"))
            .into_bytes();
        assert!(
            bytes.as_ref() == body.as_slice(),
            "the body came back changed"
        );
        // A missing bucket is refused at start, naming it.
        let mut missing = cfg.clone();
        missing.bucket = Some("no-such-bucket-kinesthetic".into());
        let e = kinesthetic::sink::s3::S3Store::connect("gone", &missing)
            .await
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(
            e.contains("no-such-bucket-kinesthetic") && e.contains("does not exist"),
            "{e}"
        );
    });
}

#[test]
fn resharding_the_kinesis_stand_in_under_load_loses_nothing() {
    let Some(kinesis) = kinesis_endpoint() else {
        return;
    };
    let dir = crate::harness::tempdir();
    let stream = unique_stream("reshard-consume");
    let c = kinesis_config(dir.path(), &kinesis, &stream, 2);
    rt().block_on(async {
        let (app, b) = start(&c).await;
        let addr = app.intake_addr.unwrap_or_else(|| panic!("no intake"));
        let s = stream.clone();
        let writer = tokio::spawn(async move {
            let mut sent = Vec::new();
            for round in 0..60 {
                let key = format!("user-{}", round % 20);
                let lines: Vec<String> = (0..50).map(|i| format!("{key} r{round} e{i}")).collect();
                post_to(addr, &s, &lines, Some(&key)).await;
                sent.extend(lines);
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            sent
        });
        tokio::time::sleep(Duration::from_millis(1000)).await;
        kinesthetic::stream::reshard::reshard(&b, &stream, 3, Duration::from_secs(60), |_| {})
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let sent = writer.await.unwrap_or_else(|e| panic!("{e}"));
        let raw = dir.path().join("archive/raw");
        wait_until(Duration::from_secs(90), "every event archived", || {
            archived_lines(&raw) >= sent.len()
        })
        .await;
        let objs = read_dir_archive(&raw);
        each_once(&objs, &sent);
        let d = b.describe(&stream).await.unwrap_or_else(|e| panic!("{e}"));
        assert!(d.shards.len() > 2, "not resharded: {d:?}");
        // Children's objects come after their ancestors' last one.
        crate::consumer::parents_first(&objs, &d);
        app.stop().await.unwrap_or_else(|e| panic!("{e}"));
    });
}
