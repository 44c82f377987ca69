//! The consumer end to end on the local log: producer → intake → stream →
//! consumer → filter → raw and filtered archives in directories, checked
//! by reading the archives back.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use kinesthetic::app::{self, App, Parts, Telemetry};
use kinesthetic::config::{
    Config, ErrorPolicy, FilterLimits, PipelineConfig, SinkConfig, StreamSettings,
};
use kinesthetic::sink::util::compress::decompress;
use kinesthetic::stream::any::AnyBackend;
use serde_json::Value;

use crate::filters;
use crate::harness::{metric, rt, scrape};

/// One archive object read back.
#[derive(Debug, Clone)]
pub(crate) struct Obj {
    pub(crate) key: String,
    pub(crate) lines: Vec<Vec<u8>>,
    pub(crate) meta: BTreeMap<String, String>,
    pub(crate) modified: std::time::SystemTime,
}

impl Obj {
    pub(crate) fn meta(&self, k: &str) -> &str {
        self.meta.get(k).map_or("", String::as_str)
    }
}

/// Every object of a directory sink (files ending in `.ndjson.gz`,
/// `.ndjson.zst` or `.ndjson`, with their `.meta.json`), sorted by key.
pub(crate) fn read_dir_archive(root: &Path) -> Vec<Obj> {
    fn walk(dir: &Path, root: &Path, out: &mut Vec<Obj>) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                walk(&p, root, out);
                continue;
            }
            let name = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
            let how = if name.ends_with(".ndjson.gz") {
                kinesthetic::config::Compression::Gzip
            } else if name.ends_with(".ndjson.zst") {
                kinesthetic::config::Compression::Zstd
            } else if name.ends_with(".ndjson") {
                kinesthetic::config::Compression::None
            } else {
                continue;
            };
            let body = std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
            let text = decompress(&body, how).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
            let meta_path = PathBuf::from(format!("{}.meta.json", p.display()));
            let meta: BTreeMap<String, String> = std::fs::read(&meta_path)
                .ok()
                .and_then(|b| serde_json::from_slice(&b).ok())
                .unwrap_or_else(|| panic!("{} has no metadata file", p.display()));
            let lines = text
                .split(|&b| b == b'\n')
                .filter(|l| !l.is_empty())
                .map(<[u8]>::to_vec)
                .collect();
            out.push(Obj {
                key: p.strip_prefix(root).unwrap_or(&p).display().to_string(),
                lines,
                meta,
                modified: e
                    .metadata()
                    .and_then(|m| m.modified())
                    .unwrap_or(std::time::UNIX_EPOCH),
            });
        }
    }
    let mut out = Vec::new();
    walk(root, root, &mut out);
    out.sort_by(|a, b| a.key.cmp(&b.key));
    out
}

/// Every line of an archive with how many objects hold it.
pub(crate) fn line_counts(objs: &[Obj]) -> HashMap<Vec<u8>, usize> {
    let mut m = HashMap::new();
    for o in objs {
        for l in &o.lines {
            *m.entry(l.clone()).or_insert(0) += 1;
        }
    }
    m
}

/// Lines in every object of a directory sink.
pub(crate) fn archived_lines(root: &Path) -> usize {
    read_dir_archive(root).iter().map(|o| o.lines.len()).sum()
}

/// Every line sent is in exactly one object, and nothing else is.
#[track_caller]
pub(crate) fn each_once(objs: &[Obj], sent: &[String]) {
    let counts = line_counts(objs);
    assert_eq!(counts.len(), sent.len());
    for l in sent {
        assert_eq!(counts.get(l.as_bytes()), Some(&1), "{l}");
    }
}

/// Polls `f` until it is true, at most `limit`; panics with `what` after.
pub(crate) async fn wait_until(limit: Duration, what: &str, mut f: impl FnMut() -> bool) {
    let start = Instant::now();
    while !f() {
        if start.elapsed() > limit {
            panic!("waited {limit:?} for {what}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A config on the local log in `dir`: stream `events` of `shards` shards, a
/// raw archive (`dir/archive/raw`) and a filtered one
/// (`dir/archive/filtered/FILTER`), objects closed after 300 ms.
pub(crate) fn local_config(dir: &Path, shards: u32) -> Config {
    let mut c = Config::default();
    let any: std::net::SocketAddr = "127.0.0.1:0".parse().unwrap_or_else(|e| panic!("{e}"));
    c.stream.data_dir = dir.join("data");
    c.intake.listen = any;
    c.admin.listen = any;
    c.consumer.poll_interval_ms = 20;
    c.consumer.shard_refresh_ms = 200;
    c.consumer.shutdown_timeout_ms = 5_000;
    c.filters.dir = dir.join("filters");
    c.filters.cache_dir = Some(dir.join("cache"));
    c.streams.insert(
        "events".into(),
        StreamSettings {
            shards: Some(shards),
            ..StreamSettings::default()
        },
    );
    let mut raw = SinkConfig::dir(dir.join("archive/raw"));
    raw.max_age_ms = Some(300);
    let mut filtered = SinkConfig::dir(dir.join("archive/filtered"));
    filtered.prefix = "{filter}".into();
    filtered.max_age_ms = Some(300);
    let mut dead = SinkConfig::dir(dir.join("archive/dead"));
    dead.prefix = "{pipeline}".into();
    dead.max_age_ms = Some(300);
    c.sinks.insert("raw".into(), raw);
    c.sinks.insert("filtered".into(), filtered);
    c.sinks.insert("dead".into(), dead);
    c.pipelines.push(pipeline("raw", None, &["raw"]));
    c
}

pub(crate) fn pipeline(name: &str, filter: Option<&str>, sinks: &[&str]) -> PipelineConfig {
    PipelineConfig {
        name: name.into(),
        stream: "events".into(),
        filter: filter.map(str::to_owned),
        params: BTreeMap::new(),
        limits: FilterLimits::default(),
        on_error: ErrorPolicy::DeadLetter,
        sinks: sinks.iter().map(|s| (*s).to_owned()).collect(),
        routes: BTreeMap::new(),
        dead_letter: Some("dead".into()),
    }
}

/// Starts intake + consumer + admin on `config`'s local log.
pub(crate) async fn start(config: &Config) -> App {
    start_with(config).await.0
}

/// [`start`], also returning the stream backend it writes (the same log:
/// a second writer of the directory would be refused).
pub(crate) async fn start_with(config: &Config) -> (App, AnyBackend) {
    config.validate("test").unwrap_or_else(|e| panic!("{e}"));
    let b = app::backend(config).await.unwrap_or_else(|e| panic!("{e}"));
    let app = app::launch(
        config,
        Telemetry::new(),
        Parts::<AnyBackend> {
            intake: Some(b.clone()),
            consumer: Some(b.clone()),
            spool: None,
            create: Some(b.clone()),
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    (app, b)
}

/// An event `errors-only` keeps (`error` and status ≥ 500) or drops.
pub(crate) fn event(n: usize, error: bool) -> String {
    if error {
        format!(
            r#"{{"ts":"2026-12-05T08:00:00Z","level":"error","status":503,"service":"api","msg":"m-{n}","user":{{"id":{n}}}}}"#
        )
    } else {
        format!(
            r#"{{"ts":"2026-12-05T08:00:00Z","level":"info","status":200,"service":"api","msg":"m-{n}"}}"#
        )
    }
}

/// What `errors-only` makes of an error event.
pub(crate) fn reduced(n: usize) -> Vec<u8> {
    format!(r#"{{"ts":"2026-12-05T08:00:00Z","service":"api","msg":"m-{n}"}}"#).into_bytes()
}

/// Posts `lines` to the intake at `addr`, stream `events`; panics unless
/// they are all accepted.
pub(crate) async fn post(addr: std::net::SocketAddr, lines: &[String], key: Option<&str>) {
    let body = lines.join("\n");
    let mut req = reqwest::Client::new()
        .post(format!("http://{addr}/v1/streams/events/events"))
        .body(body);
    if let Some(k) = key {
        req = req.header("X-Partition-Key", k);
    }
    let r = req.send().await.unwrap_or_else(|e| panic!("post: {e}"));
    let status = r.status();
    let text = r.text().await.unwrap_or_default();
    assert!(status.is_success(), "{status}: {text}");
}

async fn get_json(url: String) -> (u16, Value) {
    let r = reqwest::get(&url)
        .await
        .unwrap_or_else(|e| panic!("GET {url}: {e}"));
    let status = r.status().as_u16();
    let text = r.text().await.unwrap_or_default();
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

/// The SHA-256 of a file, hex.
pub(crate) fn sha256_of(path: &Path) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(
        std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display())),
    ))
}

/// Copies a module into the filters directory under `name`, by a rename
/// (as deployment tools do), so the watcher never sees half a file.
pub(crate) fn drop_filter(dir: &Path, name: &str, bytes: &[u8]) {
    std::fs::create_dir_all(dir).unwrap_or_else(|e| panic!("{e}"));
    let tmp = dir.join(format!(".{name}.tmp"));
    std::fs::write(&tmp, bytes).unwrap_or_else(|e| panic!("{e}"));
    std::fs::rename(&tmp, dir.join(format!("{name}.wasm"))).unwrap_or_else(|e| panic!("{e}"));
}

/// The same component with a custom section appended: another SHA-256,
/// the same behaviour (a new "version" for hot-drop tests).
pub(crate) fn new_version(bytes: &[u8], tag: &str) -> Vec<u8> {
    let name = b"kinesthetic-test-version";
    let mut payload = vec![name.len() as u8];
    payload.extend_from_slice(name);
    payload.extend_from_slice(tag.as_bytes());
    let mut out = bytes.to_vec();
    out.push(0); // custom section
    out.push(u8::try_from(payload.len()).unwrap_or_else(|e| panic!("{e}")));
    out.extend_from_slice(&payload);
    out
}

/// Checks the archive's objects: deterministic keys that match their
/// metadata, counts that match their lines.
#[track_caller]
pub(crate) fn check_objects(objs: &[Obj], stream: &str, module: &str) {
    for o in objs {
        let file = o.key.rsplit('/').next().unwrap_or("");
        let want = format!(
            "{stream}-{}-{}-{}.ndjson.gz",
            o.meta("shard"),
            o.meta("first-sequence"),
            o.meta("last-sequence")
        );
        assert_eq!(file, want, "{o:?}");
        assert_eq!(o.meta("line-count"), o.lines.len().to_string(), "{}", o.key);
        assert_eq!(o.meta("module-sha256"), module, "{}", o.key);
        assert_eq!(o.meta("stream"), stream);
        assert_eq!(o.meta("content-encoding"), "gzip");
        let seq = |k: &str| {
            kinesthetic::event::SequenceNumber::parse(o.meta(k))
                .unwrap_or_else(|e| panic!("{}: {k}: {e}", o.key))
        };
        assert!(seq("first-sequence") <= seq("last-sequence"), "{}", o.key);
        // events/YYYY/MM/DD/HH/FILE
        let parts: Vec<&str> = o.key.split('/').collect();
        assert!(parts.len() >= 6, "{}", o.key);
        let n = parts.len();
        assert_eq!(parts[n - 6], stream, "{}", o.key);
        assert!(
            parts[n - 5].len() == 4 && parts[n - 4].len() == 2,
            "{}",
            o.key
        );
        let id = o.meta("first-event-id");
        assert!(id.len() == 33 && id.as_bytes()[16] == b'-', "{id}");
    }
}

#[test]
fn local_log_to_raw_and_filtered_archives_with_metadata_and_status() {
    let dir = crate::harness::tempdir();
    let mut c = local_config(dir.path(), 2);
    c.pipelines
        .push(pipeline("errors", Some("errors-only"), &["filtered"]));
    let module = std::fs::read(filters::ERRORS_ONLY).unwrap_or_else(|e| panic!("{e}"));
    drop_filter(&c.filters.dir, "errors-only", &module);
    let sha = sha256_of(Path::new(filters::ERRORS_ONLY));
    rt().block_on(async {
        let app = start(&c).await;
        let addr = app.intake_addr.unwrap_or_else(|| panic!("no intake"));
        let mut sent: Vec<String> = Vec::new();
        let mut errors = Vec::new();
        for r in 0..8 {
            let lines: Vec<String> = (r * 250..(r + 1) * 250)
                .map(|n| {
                    let e = n % 10 == 3;
                    if e {
                        errors.push(n);
                    }
                    event(n, e)
                })
                .collect();
            post(addr, &lines, None).await;
            sent.extend(lines);
        }
        let raw = dir.path().join("archive/raw");
        let filtered = dir.path().join("archive/filtered/errors-only");
        wait_until(
            Duration::from_secs(30),
            "every line in the archives",
            || archived_lines(&raw) == sent.len() && archived_lines(&filtered) == errors.len(),
        )
        .await;
        let raw_objs = read_dir_archive(&raw);
        let counts = line_counts(&raw_objs);
        assert_eq!(counts.len(), sent.len());
        for l in &sent {
            assert_eq!(counts.get(l.as_bytes()), Some(&1), "{l}");
        }
        check_objects(&raw_objs, "events", "none");
        let f_objs = read_dir_archive(&filtered);
        let f_counts = line_counts(&f_objs);
        for n in &errors {
            assert_eq!(f_counts.get(&reduced(*n)), Some(&1), "m-{n}");
        }
        check_objects(&f_objs, "events", &sha);
        // Both shards were used, and events are stamped by this listener.
        let shards: std::collections::HashSet<&str> =
            raw_objs.iter().map(|o| o.meta("shard")).collect();
        assert_eq!(shards.len(), 2, "{shards:?}");
        let listener = format!("{:016x}", app.listener_id.unwrap_or_default());
        assert!(
            raw_objs
                .iter()
                .all(|o| o.meta("first-event-id").starts_with(&listener))
        );

        // The admin API says what runs.
        let admin = app.admin_addr;
        let (code, ready) = get_json(format!("http://{admin}/readyz")).await;
        assert_eq!(
            (code, &ready["ready"]),
            (200, &Value::Bool(true)),
            "{ready}"
        );
        let (_, status) = get_json(format!("http://{admin}/v1/status")).await;
        let p = &status["pipelines"]["errors"];
        assert_eq!(p["filter"], "errors-only", "{status}");
        assert_eq!(p["stream"], "events");
        for s in ["shardId-000000000000", "shardId-000000000001"] {
            let shard = &p["shards"][s];
            assert_eq!(shard["module_sha256"], sha.as_str(), "{shard}");
            assert!(
                shard["checkpoint"]
                    .as_str()
                    .is_some_and(|c| c.parse::<u128>().is_ok()),
                "{shard}"
            );
        }
        assert_eq!(status["filters"][0]["sha256"], sha.as_str(), "{status}");
        let (_, f) = get_json(format!("http://{admin}/v1/filters")).await;
        assert_eq!(f["filters"][0]["name"], "errors-only", "{f}");
        let m = scrape(admin).await;
        assert_eq!(
            metric(&m, "kinesthetic_pipeline_events_total{pipeline=\"raw\""),
            sent.len() as f64,
            "{m}"
        );
        assert_eq!(
            metric(
                &m,
                "kinesthetic_pipeline_lines_out_total{pipeline=\"errors\""
            ),
            errors.len() as f64
        );
        assert!(
            metric(
                &m,
                "kinesthetic_pipeline_sink_writes_total{pipeline=\"errors\",sink=\"filtered\""
            ) >= 2.0
        );
        assert!(
            m.contains("kinesthetic_pipeline_filter_job_seconds_bucket"),
            "{m}"
        );
        app.stop().await.unwrap_or_else(|e| panic!("{e}"));

        // A restart resumes from the checkpoints: nothing is written again.
        let before = read_dir_archive(&raw).len();
        let app = start(&c).await;
        tokio::time::sleep(Duration::from_millis(1500)).await;
        let addr = app.intake_addr.unwrap_or_else(|| panic!("no intake"));
        post(addr, &[event(100_000, true)], None).await;
        wait_until(Duration::from_secs(20), "the new event archived", || {
            archived_lines(&raw) == sent.len() + 1
        })
        .await;
        assert_eq!(read_dir_archive(&raw).len(), before + 1);
        app.stop().await.unwrap_or_else(|e| panic!("{e}"));
    });
}

#[test]
fn a_poison_line_goes_to_the_dead_letter_sink_and_the_rest_is_delivered() {
    let dir = crate::harness::tempdir();
    let mut c = local_config(dir.path(), 1);
    let mut p = pipeline("chaos", Some("chaos"), &["filtered"]);
    p.params.insert("mode".into(), "poison".into());
    c.pipelines.push(p);
    let module = std::fs::read(filters::CHAOS).unwrap_or_else(|e| panic!("{e}"));
    drop_filter(&c.filters.dir, "chaos", &module);
    let sha = sha256_of(Path::new(filters::CHAOS));
    rt().block_on(async {
        let app = start(&c).await;
        let addr = app.intake_addr.unwrap_or_else(|| panic!("no intake"));
        let lines: Vec<String> = (0..300)
            .map(|n| {
                if n % 97 == 5 {
                    format!("line {n} POISON")
                } else {
                    format!("line {n}")
                }
            })
            .collect();
        post(addr, &lines, None).await;
        let good = lines.iter().filter(|l| !l.contains("POISON")).count();
        let bad = lines.len() - good;
        let filtered = dir.path().join("archive/filtered/chaos");
        let dead = dir.path().join("archive/dead/chaos");
        wait_until(
            Duration::from_secs(30),
            "good lines and dead letters",
            || {
                let (a, b) = (archived_lines(&filtered), archived_lines(&dead));

                a == good && b == bad
            },
        )
        .await;
        let kept = line_counts(&read_dir_archive(&filtered));
        for l in lines.iter().filter(|l| !l.contains("POISON")) {
            assert_eq!(kept.get(l.as_bytes()), Some(&1), "{l}");
        }
        let dead_objs = read_dir_archive(&dead);
        let mut poisoned: Vec<String> = Vec::new();
        for o in &dead_objs {
            assert_eq!(o.meta("module-sha256"), sha);
            for l in &o.lines {
                let v: Value = serde_json::from_slice(l).unwrap_or(Value::Null);
                assert_eq!(v["reason"], "filter", "{v}");
                assert_eq!(v["pipeline"], "chaos");
                assert_eq!(v["module_sha256"], sha.as_str());
                assert_eq!(v["stream"], "events");
                assert_eq!(v["shard"], "shardId-000000000000");
                assert_eq!(v["isolated"], true);
                assert!(
                    v["sequence"]
                        .as_str()
                        .is_some_and(|s| s.parse::<u128>().is_ok()),
                    "{v}"
                );
                assert!(v["event_id"].as_str().is_some_and(|s| s.len() == 33), "{v}");
                let err = v["error"].as_str().unwrap_or("");
                assert!(err.contains("trapped") && err.contains("chaos"), "{err}");
                poisoned.push(v["line"].as_str().unwrap_or("").to_owned());
            }
        }
        poisoned.sort();
        let mut want: Vec<String> = lines
            .iter()
            .filter(|l| l.contains("POISON"))
            .cloned()
            .collect();
        want.sort();
        assert_eq!(poisoned, want);
        let m = scrape(app.admin_addr).await;
        assert!(
            metric(
                &m,
                "kinesthetic_pipeline_filter_failures_total{pipeline=\"chaos\",kind=\"trap\""
            ) >= 1.0,
            "{m}"
        );
        assert_eq!(
            metric(
                &m,
                "kinesthetic_pipeline_dead_letter_lines_total{pipeline=\"chaos\",reason=\"filter\""
            ),
            bad as f64
        );
        app.stop().await.unwrap_or_else(|e| panic!("{e}"));
    });
}

/// A filter that hangs on every line: isolation gives up after a few
/// probes (not ≈ 130 deadline-long jobs per 1,000 lines), the batch goes to
/// the dead letter as failed by that cause, and the shard moves on.
#[test]
fn a_filter_failing_every_line_is_dead_lettered_fast_and_the_shard_moves_on() {
    let dir = crate::harness::tempdir();
    let mut c = local_config(dir.path(), 1);
    let mut p = pipeline("chaos", Some("chaos"), &["filtered"]);
    p.params.insert("mode".into(), "loop".into());
    p.limits.deadline_ms = 200;
    c.pipelines.push(p);
    let module = std::fs::read(filters::CHAOS).unwrap_or_else(|e| panic!("{e}"));
    drop_filter(&c.filters.dir, "chaos", &module);
    rt().block_on(async {
        let app = start(&c).await;
        let addr = app.intake_addr.unwrap_or_else(|| panic!("no intake"));
        let lines: Vec<String> = (0..1500).map(|n| format!("line {n}")).collect();
        post(addr, &lines, None).await;
        let dead = dir.path().join("archive/dead/chaos");
        // Bisecting 1,500 lines at 200 ms per failing job took > 40 s.
        wait_until(Duration::from_secs(20), "every line dead-lettered", || {
            archived_lines(&dead) == lines.len()
        })
        .await;
        let mut seen: Vec<String> = Vec::new();
        for o in read_dir_archive(&dead) {
            for l in &o.lines {
                let v: Value = serde_json::from_slice(l).unwrap_or(Value::Null);
                assert_eq!(v["reason"], "filter", "{v}");
                assert_eq!(v["isolated"], false, "{v}");
                let err = v["error"].as_str().unwrap_or("");
                assert!(
                    err.contains("deadline of 200 ms") && err.contains("isolation gave up"),
                    "{err}"
                );
                seen.push(v["line"].as_str().unwrap_or("").to_owned());
            }
        }
        seen.sort();
        let mut want = lines.clone();
        want.sort();
        assert_eq!(seen, want);
        assert_eq!(
            archived_lines(&dir.path().join("archive/filtered/chaos")),
            0
        );
        app.stop().await.unwrap_or_else(|e| panic!("{e}"));
    });
}

#[test]
fn records_of_other_producers_are_archived_and_a_broken_one_is_a_dead_letter() {
    use kinesthetic::stream::{PutEntry, StreamBackend};
    let dir = crate::harness::tempdir();
    let c = local_config(dir.path(), 1);
    rt().block_on(async {
        let (app, b) = start_with(&c).await;
        // A plain record (any producer), and a KPL record whose checksum is
        // right but whose body is not a protobuf message.
        let body = b"\x0a\xff\xff\xff\xff\x0f".to_vec();
        let mut broken = vec![0xF3, 0x89, 0x9A, 0xC2];
        broken.extend_from_slice(&body);
        {
            use md5::Digest;
            broken.extend_from_slice(&md5::Md5::digest(&body));
        }
        let out = b
            .put_records(
                "events",
                &[
                    PutEntry {
                        partition_key: "other".into(),
                        explicit_hash_key: None,
                        data: bytes::Bytes::from_static(b"hello from elsewhere"),
                    },
                    PutEntry {
                        partition_key: "broken".into(),
                        explicit_hash_key: None,
                        data: bytes::Bytes::from(broken.clone()),
                    },
                ],
            )
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(
            out.iter()
                .all(|o| matches!(o, kinesthetic::stream::PutOutcome::Written { .. }))
        );
        let raw = dir.path().join("archive/raw");
        let dead = dir.path().join("archive/dead/raw");
        wait_until(
            Duration::from_secs(20),
            "the plain record and the dead letter",
            || !read_dir_archive(&raw).is_empty() && !read_dir_archive(&dead).is_empty(),
        )
        .await;
        let objs = read_dir_archive(&raw);
        assert_eq!(objs.len(), 1);
        assert_eq!(objs[0].lines, vec![b"hello from elsewhere".to_vec()]);
        // Not stamped by an intake: listener 0, the same id on every read.
        assert!(
            objs[0]
                .meta("first-event-id")
                .starts_with("0000000000000000-"),
            "{:?}",
            objs[0].meta
        );
        let d = read_dir_archive(&dead);
        let v: Value = serde_json::from_slice(&d[0].lines[0]).unwrap_or(Value::Null);
        assert_eq!(v["reason"], "undecodable", "{v}");
        assert_eq!(v["partition_key"], "broken");
        assert_eq!(v["line_hex"], hex::encode(&broken));
        assert!(
            v["error"].as_str().is_some_and(|e| e.contains("protobuf")),
            "{v}"
        );
        app.stop().await.unwrap_or_else(|e| panic!("{e}"));
    });
}

#[test]
fn a_new_filter_version_swaps_between_batches_and_objects_say_which_made_them() {
    let dir = crate::harness::tempdir();
    let mut c = local_config(dir.path(), 2);
    c.filters.auto = Some(kinesthetic::config::AutoPipelines {
        stream: "events".into(),
        sinks: vec!["filtered".into()],
        on_error: ErrorPolicy::DeadLetter,
        limits: FilterLimits::default(),
    });
    let v1 = std::fs::read(filters::ERRORS_ONLY).unwrap_or_else(|e| panic!("{e}"));
    let v2 = new_version(&v1, "two");
    let sha = |b: &[u8]| {
        use sha2::Digest;
        hex::encode(sha2::Sha256::digest(b))
    };
    let (sha1, sha2) = (sha(&v1), sha(&v2));
    assert_ne!(sha1, sha2);
    rt().block_on(async {
        let app = start(&c).await;
        let addr = app.intake_addr.unwrap_or_else(|| panic!("no intake"));
        // Dropped while running: an automatic pipeline starts.
        drop_filter(&c.filters.dir, "errors-only", &v1);
        let filtered = dir.path().join("archive/filtered/errors-only");
        // Events keep coming while the version is swapped.
        let writer = tokio::spawn(async move {
            let mut n = 0;
            for round in 0..40 {
                let lines: Vec<String> = (n..n + 50).map(|i| event(i, true)).collect();
                n += 50;
                post(addr, &lines, None).await;
                tokio::time::sleep(Duration::from_millis(if round < 20 { 50 } else { 30 })).await;
            }
            n
        });
        tokio::time::sleep(Duration::from_millis(1200)).await;
        drop_filter(&c.filters.dir, "errors-only", &v2);
        let total = writer.await.unwrap_or_else(|e| panic!("{e}"));
        wait_until(
            Duration::from_secs(30),
            "every event in the filtered archive",
            || archived_lines(&filtered) >= total,
        )
        .await;
        let objs = read_dir_archive(&filtered);
        let counts = line_counts(&objs);
        for n in 0..total {
            assert_eq!(counts.get(&reduced(n)), Some(&1), "m-{n}");
        }
        // Per shard, in sequence order: every v1 object comes before every
        // v2 object (a batch, and an object, is made by one version), and
        // v2 made the last ones.
        let mut by_shard: BTreeMap<String, Vec<(u128, String)>> = BTreeMap::new();
        for o in &objs {
            let first: u128 = o.meta("first-sequence").parse().unwrap_or(0);
            by_shard
                .entry(o.meta("shard").to_owned())
                .or_default()
                .push((first, o.meta("module-sha256").to_owned()));
        }
        let mut saw_v2 = false;
        for (shard, mut list) in by_shard {
            list.sort();
            let hashes: Vec<&str> = list.iter().map(|(_, h)| h.as_str()).collect();
            let first_v2 = hashes
                .iter()
                .position(|h| *h == sha2)
                .unwrap_or(hashes.len());
            assert!(
                hashes[..first_v2].iter().all(|h| *h == sha1),
                "{shard}: {hashes:?}"
            );
            assert!(
                hashes[first_v2..].iter().all(|h| *h == sha2),
                "{shard}: {hashes:?}"
            );
            saw_v2 |= first_v2 < hashes.len();
        }
        assert!(saw_v2, "no object made by the new version");
        assert!(
            objs.iter().any(|o| o.meta("module-sha256") == sha1),
            "no object made by the first version"
        );
        // Removing the file pauses the pipeline (holding its checkpoint).
        std::fs::remove_file(c.filters.dir.join("errors-only.wasm"))
            .unwrap_or_else(|e| panic!("{e}"));
        wait_until(
            Duration::from_secs(10),
            "the pipeline to wait for its filter",
            || {
                app.status().is_some_and(|s| {
                    s.snapshot().get("errors-only").is_some_and(|p| {
                        p.shards.values().all(|sh| sh.state == "waiting-for-filter")
                    })
                })
            },
        )
        .await;
        post(addr, &[event(999_999, true)], None).await;
        tokio::time::sleep(Duration::from_millis(800)).await;
        assert!(!line_counts(&read_dir_archive(&filtered)).contains_key(&reduced(999_999)));
        // Back: the waiting event is delivered.
        drop_filter(&c.filters.dir, "errors-only", &v2);
        wait_until(Duration::from_secs(20), "the held event delivered", || {
            line_counts(&read_dir_archive(&filtered)).contains_key(&reduced(999_999))
        })
        .await;
        app.stop().await.unwrap_or_else(|e| panic!("{e}"));
    });
}

#[test]
fn resharding_under_load_loses_nothing_and_reads_parents_first() {
    let dir = crate::harness::tempdir();
    let c = local_config(dir.path(), 2);
    rt().block_on(async {
        let (app, b) = start_with(&c).await;
        let addr = app.intake_addr.unwrap_or_else(|| panic!("no intake"));
        let writer = tokio::spawn(async move {
            let mut sent = Vec::new();
            for round in 0..120 {
                let key = format!("user-{}", round % 40);
                let lines: Vec<String> = (0..40).map(|i| format!("{key} r{round} e{i}")).collect();
                post(addr, &lines, Some(&key)).await;
                sent.extend(lines);
                tokio::time::sleep(Duration::from_millis(25)).await;
            }
            sent
        });
        tokio::time::sleep(Duration::from_millis(800)).await;
        kinesthetic::stream::reshard::reshard(&b, "events", 3, Duration::from_secs(30), |_| {})
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        tokio::time::sleep(Duration::from_millis(1200)).await;
        kinesthetic::stream::reshard::reshard(&b, "events", 1, Duration::from_secs(30), |_| {})
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let sent = writer.await.unwrap_or_else(|e| panic!("{e}"));
        let raw = dir.path().join("archive/raw");
        wait_until(Duration::from_secs(30), "every event archived", || {
            archived_lines(&raw) >= sent.len()
        })
        .await;
        let objs = read_dir_archive(&raw);
        each_once(&objs, &sent);
        // A child's objects are all written after its parents' last one
        // (it starts only once they are read to their end and checkpointed).
        use kinesthetic::stream::StreamBackend;
        let d = b.describe("events").await.unwrap_or_else(|e| panic!("{e}"));
        assert!(d.shards.len() >= 5, "{d:?}");
        let checked = parents_first(&objs, &d);
        assert!(
            checked >= 3,
            "too few ancestor/descendant pairs with objects: {checked}: {:?} {:?}",
            d.shards
                .iter()
                .map(|s| (&s.id, &s.parent, &s.adjacent_parent))
                .collect::<Vec<_>>(),
            objs.iter()
                .map(|o| (o.meta("shard"), o.lines.len()))
                .collect::<Vec<_>>()
        );
        // Per key, the order of the posts survives the reshards: a key's
        // lines, object by object in the order they were written.
        let mut ordered = objs.clone();
        ordered.sort_by_key(|o| o.modified);
        let mut last: HashMap<String, (usize, usize)> = HashMap::new();
        for o in &ordered {
            for l in &o.lines {
                let t = String::from_utf8_lossy(l).into_owned();
                let mut parts = t.split(' ');
                let key = parts.next().unwrap_or("").to_owned();
                let round: usize = parts.next().and_then(|r| r[1..].parse().ok()).unwrap_or(0);
                let i: usize = parts.next().and_then(|r| r[1..].parse().ok()).unwrap_or(0);
                if let Some(prev) = last.get(&key) {
                    assert!(*prev < (round, i), "{key}: {prev:?} then {round} {i}");
                }
                last.insert(key, (round, i));
            }
        }
        app.stop().await.unwrap_or_else(|e| panic!("{e}"));
    });
}

#[test]
fn on_error_retry_holds_the_shard_until_a_new_version_passes_and_skip_drops_only_the_poison() {
    let dir = crate::harness::tempdir();
    let mut c = local_config(dir.path(), 1);
    let mut retry = pipeline("retry", Some("stubborn"), &["filtered"]);
    retry.params.insert("mode".into(), "poison".into());
    retry.on_error = ErrorPolicy::Retry;
    retry.dead_letter = None;
    let mut skip = pipeline("skip", Some("chaos"), &["filtered"]);
    skip.params.insert("mode".into(), "poison".into());
    skip.on_error = ErrorPolicy::Skip;
    skip.dead_letter = None;
    c.pipelines.push(retry);
    c.pipelines.push(skip);
    let chaos = std::fs::read(filters::CHAOS).unwrap_or_else(|e| panic!("{e}"));
    drop_filter(&c.filters.dir, "chaos", &chaos);
    drop_filter(&c.filters.dir, "stubborn", &chaos);
    rt().block_on(async {
        let app = start(&c).await;
        let addr = app.intake_addr.unwrap_or_else(|| panic!("no intake"));
        let lines: Vec<String> = (0..100)
            .map(|n| {
                if n == 42 {
                    format!("{} POISON", event(n, true))
                } else {
                    event(n, n % 2 == 0)
                }
            })
            .collect();
        post(addr, &lines, None).await;
        let skipped = dir.path().join("archive/filtered/chaos");
        wait_until(Duration::from_secs(20), "the skip pipeline's lines", || {
            archived_lines(&skipped) == 99
        })
        .await;
        let kept = line_counts(&read_dir_archive(&skipped));
        assert!(!kept.keys().any(|l| l.windows(6).any(|w| w == b"POISON")));
        let m = scrape(app.admin_addr).await;
        assert_eq!(
            metric(
                &m,
                "kinesthetic_pipeline_dead_letter_lines_total{pipeline=\"skip\",reason=\"skipped\""
            ),
            1.0,
            "{m}"
        );
        assert!(
            read_dir_archive(&dir.path().join("archive/dead")).is_empty(),
            "skip writes no dead letters"
        );
        // retry: the batch fails again and again; nothing is delivered and
        // the checkpoint stays.
        let stubborn = dir.path().join("archive/filtered/stubborn");
        wait_until(Duration::from_secs(10), "retries", || {
            app.status().is_some_and(|s| {
                s.snapshot()
                    .get("retry")
                    .and_then(|p| p.shards.get("shardId-000000000000").cloned())
                    .is_some_and(|sh| sh.state == "retrying" && sh.checkpoint == "start")
            })
        })
        .await;
        assert!(read_dir_archive(&stubborn).is_empty());
        // A new version under the same name (errors-only) passes: the whole
        // batch goes through it.
        let v2 = std::fs::read(filters::ERRORS_ONLY).unwrap_or_else(|e| panic!("{e}"));
        drop_filter(&c.filters.dir, "stubborn", &v2);
        wait_until(
            Duration::from_secs(30),
            "the retried batch delivered",
            || archived_lines(&stubborn) == 49,
        )
        .await;
        let objs = read_dir_archive(&stubborn);
        let sha = sha256_of(Path::new(filters::ERRORS_ONLY));
        assert!(objs.iter().all(|o| o.meta("module-sha256") == sha));
        let got = line_counts(&objs);
        for n in (0..100).filter(|n| n % 2 == 0 && *n != 42) {
            assert!(got.contains_key(&reduced(n)), "m-{n}");
        }
        let m = scrape(app.admin_addr).await;
        assert!(
            metric(
                &m,
                "kinesthetic_pipeline_filter_failures_total{pipeline=\"retry\",kind=\"trap\""
            ) >= 2.0
        );
        app.stop().await.unwrap_or_else(|e| panic!("{e}"));
    });
}

/// A local log whose reads fail on demand: an expired iterator, or
/// throttling, as Kinesis answers.
#[derive(Clone)]
struct Faulty {
    inner: kinesthetic::stream::local::LocalLog,
    expire: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    throttle: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    /// `describe` fails with an I/O error naming a local path.
    unreachable: std::sync::Arc<std::sync::atomic::AtomicBool>,
    iterators: std::sync::Arc<std::sync::Mutex<Vec<kinesthetic::stream::StartPosition>>>,
}

impl Faulty {
    /// A local log in `dir` with a stream `name` of one shard, no faults yet.
    async fn open(dir: &Path, name: &str) -> Faulty {
        use kinesthetic::stream::StreamBackend;
        let log = kinesthetic::stream::local::LocalLog::open(dir, Default::default())
            .unwrap_or_else(|e| panic!("{e}"));
        log.create_stream(name, 1)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        Faulty {
            inner: log,
            expire: Default::default(),
            throttle: Default::default(),
            unreachable: Default::default(),
            iterators: Default::default(),
        }
    }
}

impl kinesthetic::stream::StreamBackend for Faulty {
    async fn create_stream(&self, n: &str, s: u32) -> Result<(), kinesthetic::stream::StreamError> {
        self.inner.create_stream(n, s).await
    }
    async fn delete_stream(&self, n: &str) -> Result<(), kinesthetic::stream::StreamError> {
        self.inner.delete_stream(n).await
    }
    async fn list_streams(&self) -> Result<Vec<String>, kinesthetic::stream::StreamError> {
        self.inner.list_streams().await
    }
    async fn describe(
        &self,
        n: &str,
    ) -> Result<kinesthetic::stream::StreamDescription, kinesthetic::stream::StreamError> {
        if self.unreachable.load(std::sync::atomic::Ordering::SeqCst) {
            return Err(kinesthetic::stream::StreamError::Io {
                path: "/srv/secret/kinesthetic-data/events/meta.json".into(),
                error: std::io::Error::other("disk on fire"),
            });
        }
        self.inner.describe(n).await
    }
    async fn put_records(
        &self,
        s: &str,
        e: &[kinesthetic::stream::PutEntry],
    ) -> Result<Vec<kinesthetic::stream::PutOutcome>, kinesthetic::stream::StreamError> {
        self.inner.put_records(s, e).await
    }
    async fn shard_iterator(
        &self,
        s: &str,
        sh: &str,
        f: &kinesthetic::stream::StartPosition,
    ) -> Result<kinesthetic::stream::ShardIterator, kinesthetic::stream::StreamError> {
        if let Ok(mut v) = self.iterators.lock() {
            v.push(f.clone());
        }
        self.inner.shard_iterator(s, sh, f).await
    }
    async fn get_records(
        &self,
        i: &kinesthetic::stream::ShardIterator,
        l: u32,
    ) -> Result<kinesthetic::stream::GetRecordsOutput, kinesthetic::stream::StreamError> {
        use kinesthetic::stream::StreamError;
        use std::sync::atomic::Ordering;
        if self
            .expire
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok()
        {
            return Err(StreamError::BadIterator("Iterator expired".into()));
        }
        if self
            .throttle
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok()
        {
            return Err(StreamError::Throttled("Rate exceeded for shard".into()));
        }
        self.inner.get_records(i, l).await
    }
    async fn split_shard(
        &self,
        s: &str,
        sh: &str,
        k: u128,
    ) -> Result<(), kinesthetic::stream::StreamError> {
        self.inner.split_shard(s, sh, k).await
    }
    async fn merge_shards(
        &self,
        s: &str,
        a: &str,
        b: &str,
    ) -> Result<(), kinesthetic::stream::StreamError> {
        self.inner.merge_shards(s, a, b).await
    }
}

#[test]
fn a_reader_renews_an_expired_iterator_after_its_last_record_and_backs_off_when_throttled() {
    use kinesthetic::consumer::{Read, ShardReader};
    use kinesthetic::event::ShardId;
    use kinesthetic::stream::{PutEntry, StartPosition, StreamBackend};
    use std::sync::atomic::Ordering;
    let dir = crate::harness::tempdir();
    rt().block_on(async {
        let b = Faulty::open(dir.path(), "s").await;
        let put = |from: usize, n: usize| {
            let b = b.clone();
            async move {
                let entries: Vec<PutEntry> = (from..from + n)
                    .map(|i| PutEntry {
                        partition_key: "k".into(),
                        explicit_hash_key: None,
                        data: bytes::Bytes::from(format!("r{i}")),
                    })
                    .collect();
                b.put_records("s", &entries)
                    .await
                    .unwrap_or_else(|e| panic!("{e}"));
            }
        };
        put(0, 10).await;
        let mut r = ShardReader::new(
            b.clone(),
            "s",
            ShardId::new("shardId-000000000000"),
            StartPosition::TrimHorizon,
            100,
        )
        .with_max_lines(4);
        let mut got = Vec::new();
        // Cut at record boundaries into batches of at most 4 lines.
        loop {
            match r.read().await.unwrap_or_else(|e| panic!("{e}")) {
                Read::Records { batch, .. } => {
                    assert!(batch.len() <= 4, "{}", batch.len());
                    got.extend(batch.lines().map(<[u8]>::to_vec));
                }
                Read::CaughtUp => break,
                other => panic!("{other:?}"),
            }
        }
        assert_eq!(got.len(), 10);
        // The iterator expires: renewed just after the last record read.
        b.expire.store(1, Ordering::SeqCst);
        put(10, 3).await;
        let Read::Records { batch, .. } = r.read().await.unwrap_or_else(|e| panic!("{e}")) else {
            panic!("records expected")
        };
        let lines: Vec<Vec<u8>> = batch.lines().map(<[u8]>::to_vec).collect();
        assert_eq!(lines, [b"r10".to_vec(), b"r11".to_vec(), b"r12".to_vec()]);
        let its = b.iterators.lock().map(|v| v.clone()).unwrap_or_default();
        assert_eq!(its.len(), 2, "{its:?}");
        assert!(matches!(its[1], StartPosition::AfterSequence(_)), "{its:?}");
        // Throttled: the reader says how long to wait, and goes on after.
        b.throttle.store(1, Ordering::SeqCst);
        match r.read().await.unwrap_or_else(|e| panic!("{e}")) {
            Read::Throttled(d) => assert!(d >= Duration::from_millis(200), "{d:?}"),
            other => panic!("{other:?}"),
        }
        assert!(matches!(r.read().await, Ok(Read::CaughtUp)));
        // Expired twice in a row: the stream's error, not a loop.
        b.expire.store(2, Ordering::SeqCst);
        assert!(r.read().await.is_err());
    });
}

#[test]
fn from_latest_a_new_pipeline_skips_the_past_and_follows_a_reshard() {
    use kinesthetic::config::InitialPosition;
    let dir = crate::harness::tempdir();
    let c = local_config(dir.path(), 2);
    rt().block_on(async {
        let (app, _) = start_with(&c).await;
        let addr = app.intake_addr.unwrap_or_else(|| panic!("no intake"));
        let old: Vec<String> = (0..50).map(|i| format!("old {i}")).collect();
        post(addr, &old, None).await;
        app.stop().await.unwrap_or_else(|e| panic!("{e}"));
        // A second pipeline, new, from LATEST.
        let mut c2 = c.clone();
        c2.consumer.initial_position = InitialPosition::Latest;
        let mut mirror = SinkConfig::dir(dir.path().join("archive/mirror"));
        mirror.max_age_ms = Some(300);
        c2.sinks.insert("mirror".into(), mirror);
        c2.pipelines.push(pipeline("mirror", None, &["mirror"]));
        let (app, b) = start_with(&c2).await;
        let addr = app.intake_addr.unwrap_or_else(|| panic!("no intake"));
        // Wait until its shards are read (their position is LATEST).
        wait_until(
            Duration::from_secs(10),
            "the mirror pipeline reading",
            || {
                app.status().is_some_and(|s| {
                    s.snapshot().get("mirror").is_some_and(|p| {
                        p.shards.len() == 2 && p.shards.values().all(|sh| sh.state == "reading")
                    })
                })
            },
        )
        .await;
        let new1: Vec<String> = (0..50).map(|i| format!("new {i}")).collect();
        post(addr, &new1, Some("k1")).await;
        kinesthetic::stream::reshard::reshard(&b, "events", 4, Duration::from_secs(30), |_| {})
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let new2: Vec<String> = (50..100).map(|i| format!("new {i}")).collect();
        post(addr, &new2, Some("k1")).await;
        let mirror = dir.path().join("archive/mirror");
        let st = app.status().cloned();
        let deadline = Instant::now() + Duration::from_secs(20);
        while archived_lines(&mirror) < 100 {
            assert!(
                Instant::now() < deadline,
                "the new events not mirrored: {:?} {:#?}",
                line_counts(&read_dir_archive(&mirror)).len(),
                st.as_ref().map(|s| s.snapshot().get("mirror").cloned())
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
        let got = line_counts(&read_dir_archive(&mirror));
        assert_eq!(
            got.len(),
            100,
            "{:?}",
            got.keys().take(5).collect::<Vec<_>>()
        );
        assert!(got.keys().all(|l| l.starts_with(b"new ")));
        // The raw pipeline (its checkpoints from before) has them all: it
        // was stopped with them buffered, and reads them again.
        let raw = dir.path().join("archive/raw");
        wait_until(
            Duration::from_secs(20),
            "the old events in the raw archive",
            || {
                let raw = line_counts(&read_dir_archive(&raw));
                old.iter().all(|l| raw.get(l.as_bytes()) == Some(&1))
            },
        )
        .await;
        app.stop().await.unwrap_or_else(|e| panic!("{e}"));
    });
}

#[test]
fn a_503_says_what_to_do_and_keeps_the_backend_detail_in_the_log() {
    let dir = crate::harness::tempdir();
    rt().block_on(async {
        let b = Faulty::open(dir.path(), "events").await;
        b.unreachable
            .store(true, std::sync::atomic::Ordering::SeqCst);
        let mut c = Config::default();
        c.intake.listen = "127.0.0.1:0".parse().unwrap_or_else(|e| panic!("{e}"));
        c.admin.listen = c.intake.listen;
        let r = kinesthetic::app::start_intake(b, &c)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let resp = reqwest::Client::new()
            .post(format!("http://{}/v1/streams/events/events", r.intake_addr))
            .body("x")
            .send()
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(resp.status().as_u16(), 503);
        assert!(resp.headers().contains_key("retry-after"));
        let body = resp.text().await.unwrap_or_default();
        assert!(body.contains("retry later"), "{body}");
        assert!(
            !body.contains("/srv/secret") && !body.contains("fire"),
            "{body}"
        );
        r.stop().await.unwrap_or_else(|e| panic!("{e}"));
    });
}

/// Checks that every shard's objects were all written after those of its
/// ancestors (parents, their parents…): a child starts once its parents
/// are read to their end and checkpointed. Returns the pairs checked.
#[track_caller]
pub(crate) fn parents_first(objs: &[Obj], d: &kinesthetic::stream::StreamDescription) -> usize {
    let when = |shard: &str| -> Vec<std::time::SystemTime> {
        objs.iter()
            .filter(|o| o.meta("shard") == shard)
            .map(|o| o.modified)
            .collect()
    };
    let parents_of = |id: &str| -> Vec<String> {
        d.shards
            .iter()
            .find(|s| s.id == id)
            .map(|s| {
                s.parent
                    .iter()
                    .chain(s.adjacent_parent.iter())
                    .cloned()
                    .collect()
            })
            .unwrap_or_default()
    };
    let mut checked = 0;
    for s in &d.shards {
        let Some(first_child) = when(&s.id).into_iter().min() else {
            continue;
        };
        let mut todo = parents_of(&s.id);
        while let Some(p) = todo.pop() {
            if let Some(last_parent) = when(&p).into_iter().max() {
                assert!(
                    last_parent <= first_child,
                    "{} before its ancestor {p}",
                    s.id
                );
                checked += 1;
            }
            todo.extend(parents_of(&p));
        }
    }
    checked
}
