//! The `kinesis` sink: a pipeline re-keys a stream into another one. Every
//! event lands on the shard its new key hashes to, once, with the stamp
//! the intake gave it (so its id is the same in both streams), on the
//! local log and on the Kinesis stand-in; kill -9 and a restart lose
//! nothing and send again at most the batch in flight per shard.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use kinesthetic::config::{Config, SinkConfig, StreamSettings};
use kinesthetic::event::Stamp;
use kinesthetic::stream::{StreamBackend, hash_key_of};

use crate::consumer::{drop_filter, pipeline};
use crate::filters;
use crate::harness::rt;
use crate::intake::{ReadEvent, read_all};
use crate::services::{kinesis_endpoint, unique_stream};

/// An event keyed by user `n % 53`; every tenth has no user and keeps the
/// key it was sent with.
fn user_event(n: usize) -> String {
    if n % 10 == 9 {
        format!(r#"{{"n":{n},"msg":"no user"}}"#)
    } else {
        format!(r#"{{"n":{n},"user":"u{}","msg":"hello"}}"#, n % 53)
    }
}

fn expected_key(line: &str, sent_key: &str) -> String {
    let v: serde_json::Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}"));
    v["user"]
        .as_str()
        .map_or_else(|| sent_key.to_owned(), str::to_owned)
}

/// Adds stream `dst` of `shards` shards and a pipeline re-keying the
/// config's stream into it by the field `user`.
fn add_rekey(c: &mut Config, dst: &str, shards: u32) {
    c.streams.insert(
        dst.to_owned(),
        StreamSettings {
            shards: Some(shards),
            ..StreamSettings::default()
        },
    );
    let mut sink = SinkConfig::kinesis(dst);
    sink.max_age_ms = Some(200);
    c.sinks.insert("by-user".into(), sink);
    let mut p = pipeline("rekey", Some("rekey"), &["by-user"]);
    p.stream = c.pipelines[0].stream.clone();
    p.params.insert("field".into(), "user".into());
    c.pipelines.push(p);
    let module = std::fs::read(filters::REKEY).unwrap_or_else(|e| panic!("{e}"));
    drop_filter(&c.filters.dir, "rekey", &module);
}

/// Checks the re-keyed stream against the source: each source event once,
/// under its expected key, on the shard whose range holds the key's hash,
/// with the source's stamp.
async fn check_rekeyed<B: StreamBackend>(
    b: &B,
    src: &[ReadEvent],
    dst_stream: &str,
    dst: &[ReadEvent],
    sent_keys: &HashMap<String, String>,
) {
    let d = b
        .describe(dst_stream)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let ranges: HashMap<&str, _> = d
        .shards
        .iter()
        .map(|s| (s.id.as_str(), s.hash_range))
        .collect();
    let stamps: HashMap<&[u8], Option<Stamp>> =
        src.iter().map(|e| (&e.data[..], e.stamp)).collect();
    let mut seen: HashMap<&[u8], usize> = HashMap::new();
    let mut per_shard: BTreeMap<&str, usize> = BTreeMap::new();
    for e in dst {
        let line = std::str::from_utf8(&e.data).unwrap_or_else(|e| panic!("{e}"));
        *seen.entry(&e.data).or_default() += 1;
        let sent = sent_keys
            .get(line)
            .unwrap_or_else(|| panic!("{line}: never sent"));
        assert_eq!(e.key, expected_key(line, sent), "{line}");
        let range = ranges
            .get(e.shard.as_str())
            .unwrap_or_else(|| panic!("{}: no such shard", e.shard));
        assert!(
            range.contains(hash_key_of(&e.key)),
            "{line} (key {}) is on {} whose range does not hold its hash",
            e.key,
            e.shard
        );
        let want = stamps
            .get(&e.data[..])
            .unwrap_or_else(|| panic!("{line}: not in the source stream"));
        assert!(want.is_some(), "{line}: unstamped in the source");
        assert_eq!(e.stamp, *want, "{line}: stamp changed on the way");
        *per_shard.entry(e.shard.as_str()).or_default() += 1;
    }
    for line in sent_keys.keys() {
        assert_eq!(
            seen.get(line.as_bytes()).copied().unwrap_or(0),
            1,
            "{line}: not once in {dst_stream}"
        );
    }
    assert!(
        per_shard.len() as u32 >= 2,
        "the keys should spread over the shards: {per_shard:?}"
    );
    eprintln!(
        "{} events re-keyed into {dst_stream}: per shard {per_shard:?}",
        dst.len()
    );
}

/// Posts `n` user events in requests of 100, each request under its own
/// key; returns every line with the key it was sent with.
async fn post_users(addr: std::net::SocketAddr, stream: &str, n: usize) -> HashMap<String, String> {
    let mut sent = HashMap::new();
    for r in 0..n.div_ceil(100) {
        let lines: Vec<String> = (r * 100..((r + 1) * 100).min(n)).map(user_event).collect();
        let key = format!("req-{r}");
        crate::consumer_aws::post_to(addr, stream, &lines, Some(&key)).await;
        for l in lines {
            sent.insert(l, key.clone());
        }
    }
    sent
}

#[test]
fn rekeying_on_the_local_log_puts_each_event_on_its_new_keys_shard_with_its_stamp() {
    let dir = crate::harness::tempdir();
    let mut c = crate::consumer::local_config(dir.path(), 2);
    add_rekey(&mut c, "by-user", 4);
    rt().block_on(async {
        let (app, b) = crate::consumer::start_with(&c).await;
        let addr = app.intake_addr.unwrap_or_else(|| panic!("no intake"));
        let sent = post_users(addr, "events", 3_000).await;
        let mut dst = Vec::new();
        let start = Instant::now();
        while dst.len() < sent.len() && start.elapsed() < Duration::from_secs(30) {
            tokio::time::sleep(Duration::from_millis(200)).await;
            dst = read_all(&b, "by-user").await;
        }
        // Nothing more comes: the pipeline's checkpoint is past all of it.
        tokio::time::sleep(Duration::from_millis(800)).await;
        let dst = read_all(&b, "by-user").await;
        let src = read_all(&b, "events").await;
        check_rekeyed(&b, &src, "by-user", &dst, &sent).await;
        app.stop().await.unwrap_or_else(|e| panic!("{e}"));
    });
}

#[test]
fn rekeying_on_the_kinesis_stand_in_puts_each_event_on_its_new_keys_shard_with_its_stamp() {
    let Some(kinesis) = kinesis_endpoint() else {
        return;
    };
    let dir = crate::harness::tempdir();
    let src_name = unique_stream("rekey-src");
    let dst_name = unique_stream("rekey-dst");
    let mut c = crate::consumer_aws::kinesis_config(dir.path(), &kinesis, &src_name, 2);
    add_rekey(&mut c, &dst_name, 3);
    rt().block_on(async {
        let (app, b) = crate::consumer_aws::start(&c).await;
        let addr = app.intake_addr.unwrap_or_else(|| panic!("no intake"));
        let sent = post_users(addr, &src_name, 2_000).await;
        let mut dst = Vec::new();
        let start = Instant::now();
        while dst.len() < sent.len() && start.elapsed() < Duration::from_secs(60) {
            tokio::time::sleep(Duration::from_millis(500)).await;
            dst = read_all(&b, &dst_name).await;
        }
        tokio::time::sleep(Duration::from_millis(1_000)).await;
        let dst = read_all(&b, &dst_name).await;
        let src = read_all(&b, &src_name).await;
        check_rekeyed(&b, &src, &dst_name, &dst, &sent).await;
        app.stop().await.unwrap_or_else(|e| panic!("{e}"));
    });
}

/// A sink naming a stream that does not exist stops the start with an
/// error that names it and says how to create it; a pipeline writing into
/// the stream it reads is refused by the configuration check.
#[test]
fn a_missing_target_stream_and_a_loop_into_the_stream_read_are_refused() {
    let dir = crate::harness::tempdir();
    let mut c = crate::consumer::local_config(dir.path(), 1);
    c.sinks
        .insert("by-user".into(), SinkConfig::kinesis("no-such-stream"));
    c.pipelines.push(pipeline("rekey", None, &["by-user"]));
    rt().block_on(async {
        c.validate("test").unwrap_or_else(|e| panic!("{e}"));
        let b = kinesthetic::app::backend(&c)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let r = kinesthetic::app::launch(
            &c,
            kinesthetic::app::Telemetry::new(),
            kinesthetic::app::Parts {
                intake: Some(b.clone()),
                consumer: Some(b.clone()),
                spool: None,
                create: Some(b.clone()),
            },
        )
        .await;
        let e = r.err().unwrap_or_else(|| panic!("started")).to_string();
        assert!(
            e.contains("\"no-such-stream\" does not exist") && e.contains("stream create"),
            "{e}"
        );
    });
    let mut c = crate::consumer::local_config(dir.path(), 1);
    c.sinks.insert("loop".into(), SinkConfig::kinesis("events"));
    c.pipelines.push(pipeline("loop", None, &["loop"]));
    let e = c
        .validate("test")
        .err()
        .unwrap_or_else(|| panic!("a loop was accepted"))
        .to_string();
    assert!(e.contains("which this pipeline reads"), "{e}");
}

/// `kinesthetic serve` killed with SIGKILL twice while it re-keys, then
/// restarted: every acknowledged event is in the re-keyed stream, with
/// its stamp, and what a restart sent again is at most about the batch
/// each source shard had in flight.
#[test]
fn kill_9_during_rekeying_loses_nothing_and_repeats_at_most_a_batch_per_shard() {
    use crate::consumer_process::{post_until, sigterm, spawn, write_config};
    let dir = crate::harness::tempdir();
    let module = std::fs::read(filters::REKEY).unwrap_or_else(|e| panic!("{e}"));
    drop_filter(&dir.path().join("filters"), "rekey", &module);
    let errors = std::fs::read(filters::ERRORS_ONLY).unwrap_or_else(|e| panic!("{e}"));
    drop_filter(&dir.path().join("filters"), "errors-only", &errors);
    // Keyed by `msg` (`m-N`): every event gets a key of its own.
    let config = write_config(
        dir.path(),
        "[streams.by-msg]\nshards = 3\n\
         [sinks.rekeyed]\ntype = \"kinesis\"\nstream = \"by-msg\"\nmax_age_ms = 100\n\
         [[pipelines]]\nname = \"rekey\"\nstream = \"events\"\nfilter = \"rekey\"\n\
         sinks = [\"rekeyed\"]\nparams = { field = \"msg\" }\n",
    );
    let mut acked: Vec<String> = Vec::new();
    let mut posting = Duration::ZERO;
    rt().block_on(async {
        for (round, run_ms) in [900u64, 1300].into_iter().enumerate() {
            let (mut child, addr) = spawn("serve", &config, &[], "intake on http://");
            let t = Instant::now();
            let stop = t + Duration::from_millis(run_ms);
            let more = post_until(addr, stop, round * 1_000_000).await;
            posting += t.elapsed();
            assert!(!more.is_empty(), "round {round}: nothing acked");
            acked.extend(more);
            child.kill().unwrap_or_else(|e| panic!("{e}"));
            let _ = child.wait();
        }
        let (child, _addr) = spawn("serve", &config, &[], "intake on http://");
        let mut child = crate::consumer_process::Reap(child);
        let data = dir.path().join("data");
        let opts = kinesthetic::stream::local::LocalOptions::default();
        let count_in = |name: &'static str| {
            let data = data.clone();
            let opts = opts.clone();
            async move {
                let log = kinesthetic::stream::local::LocalLog::open_read_only(&data, opts)
                    .unwrap_or_else(|e| panic!("{e}"));
                read_all(&log, name).await
            }
        };
        let want = acked.len();
        let start = Instant::now();
        loop {
            let got = count_in("by-msg").await;
            let distinct: std::collections::HashSet<&[u8]> =
                got.iter().map(|e| &e.data[..]).collect();
            if acked.iter().all(|l| distinct.contains(l.as_bytes())) {
                break;
            }
            assert!(
                start.elapsed() < Duration::from_secs(60),
                "{} of {want} acked events re-keyed after 60 s",
                distinct.len()
            );
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
        sigterm(&child.0);
        let status = child.0.wait().unwrap_or_else(|e| panic!("{e}"));
        assert!(status.success(), "{status}");
        let src = count_in("events").await;
        let dst = count_in("by-msg").await;
        let stamps: HashMap<&[u8], Option<Stamp>> =
            src.iter().map(|e| (&e.data[..], e.stamp)).collect();
        let mut copies: HashMap<&[u8], usize> = HashMap::new();
        for e in &dst {
            let line = String::from_utf8_lossy(&e.data);
            let v: serde_json::Value =
                serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(Some(e.key.as_str()), v["msg"].as_str(), "{line}");
            assert_eq!(
                stamps.get(&e.data[..]).copied().flatten(),
                e.stamp,
                "{line}: stamp"
            );
            *copies.entry(&e.data).or_default() += 1;
        }
        let again: usize = copies.values().map(|n| n - 1).sum();
        // A batch holds 100 ms of a shard's records: what a restart can
        // send again is the batch in flight per source shard (2) per kill
        // (2); each is bounded here by 100 ms of all the traffic, twice
        // over for a posting rate that is not even.
        let per_100ms = want * 100 / posting.as_millis().max(1) as usize;
        let bound = 2 * 2 * 2 * (per_100ms + 100);
        eprintln!(
            "{want} events acked over 2 kills, {} re-keyed, {again} sent again (bound {bound}: \
             2 kills × 2 shards × 2 × ≈{per_100ms} events)",
            dst.len()
        );
        assert!(again <= bound, "{again} events sent again, over {bound}");
    });
}
