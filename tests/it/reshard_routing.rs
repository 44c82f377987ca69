//! Routing through splits and merges under load: every sub-record of every
//! record lies in the hash range of the shard it is stored in (the local
//! log refuses the others, and the producer re-routes them), or, on
//! Kinesis, which cannot refuse, a record that landed elsewhere is skipped
//! by readers as the KCL skips it and its events are sent again. Either
//! way every acknowledged event is read once, in order per key. The spool's
//! shipper routes by the shards as they are when it ships.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use kinesthetic::app::{Running, Telemetry, start_intake, start_intake_with};
use kinesthetic::config::{Config, StreamSettings};
use kinesthetic::stream::local::{LocalLog, LocalOptions};
use kinesthetic::stream::{StartPosition, StreamBackend, hash_key_of, kpl, reshard};
use serde_json::Value;

use crate::harness::rt;
use crate::intake_kinesis::kinesis;
use crate::services::{kinesis_endpoint, unique_stream};

fn config(stream: &str) -> Config {
    let mut c = Config::default();
    c.intake.listen = "127.0.0.1:0".parse().unwrap_or_else(|e| panic!("{e}"));
    c.admin.listen = c.intake.listen;
    c.intake.spool = false;
    c.streams.insert(
        stream.to_owned(),
        StreamSettings {
            partition_key_field: Some("user".into()),
            ..StreamSettings::default()
        },
    );
    c
}

/// What a stream holds, read shard by shard (parents first).
#[derive(Debug, Default)]
struct Read {
    /// `n` of every event a KCL-like reader keeps, per key, in read order.
    kept: HashMap<String, Vec<u64>>,
    /// Records with a sub-record outside their shard's range.
    outside: usize,
    /// Events in those records.
    outside_events: usize,
    records: usize,
}

async fn read<B: StreamBackend>(b: &B, stream: &str) -> Read {
    let d = b
        .describe(stream)
        .await
        .unwrap_or_else(|e| panic!("describe: {e}"));
    let mut out = Read::default();
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
                out.records += 1;
                let events = kpl::events_of(&rec.data, &rec.partition_key)
                    .unwrap_or_else(|e| panic!("decode: {e}"));
                let inside = events
                    .iter()
                    .all(|e| s.hash_range.contains(hash_key_of(&e.partition_key)));
                if !inside {
                    out.outside += 1;
                    out.outside_events += events.len();
                    continue;
                }
                for e in events {
                    let v: Value = serde_json::from_slice(&e.data).unwrap_or(Value::Null);
                    out.kept
                        .entry(e.partition_key)
                        .or_default()
                        .push(v["n"].as_u64().unwrap_or(u64::MAX));
                }
            }
            if !(r.records.is_empty() && r.millis_behind_latest == 0) {
                it = r.next_iterator;
            }
        }
    }
    out
}

/// Posts batches of events of 40 keys from `clients` clients until `stop`;
/// returns the `n` acknowledged per key, in the order posted.
async fn post_until(url: String, clients: u64, stop: Instant) -> HashMap<String, Vec<u64>> {
    let mut tasks = tokio::task::JoinSet::new();
    for c in 0..clients {
        let url = url.clone();
        tasks.spawn(async move {
            let client = reqwest::Client::new();
            let mut acked: HashMap<String, Vec<u64>> = HashMap::new();
            let mut n = c << 40;
            while Instant::now() < stop {
                // Each client has keys of its own, so its order per key is
                // the order it posted in.
                let lines: Vec<(String, u64)> = (0..100)
                    .map(|i| {
                        n += 1;
                        (format!("c{c}-u{}", i % 10), n)
                    })
                    .collect();
                let body: String = lines
                    .iter()
                    .map(|(u, n)| format!("{{\"user\":\"{u}\",\"n\":{n}}}\n"))
                    .collect();
                match client.post(&url).body(body).send().await {
                    Ok(r) if r.status().as_u16() == 200 => {
                        for (u, n) in lines {
                            acked.entry(u).or_default().push(n);
                        }
                    }
                    Ok(r) => panic!("status {}", r.status()),
                    Err(e) => panic!("{e}"),
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            acked
        });
    }
    let mut all = HashMap::new();
    while let Some(t) = tasks.join_next().await {
        all.extend(t.unwrap_or_else(|e| panic!("{e}")));
    }
    all
}

/// Every acknowledged event is kept once, in order per key.
fn check(acked: &HashMap<String, Vec<u64>>, got: &Read) {
    let total: usize = acked.values().map(Vec::len).sum();
    let kept: usize = got.kept.values().map(Vec::len).sum();
    for (key, want) in acked {
        let have = got.kept.get(key).cloned().unwrap_or_default();
        let set: HashSet<u64> = have.iter().copied().collect();
        assert_eq!(set.len(), have.len(), "{key}: an event read twice");
        let missing = want.iter().filter(|n| !set.contains(n)).count();
        assert_eq!(missing, 0, "{key}: {missing} acknowledged events not read");
        assert_eq!(&have, want, "{key}: out of order");
    }
    assert_eq!(kept, total, "events read that nobody acknowledged");
}

async fn stop(r: Running) {
    r.stop().await.unwrap_or_else(|e| panic!("{e}"));
}

#[test]
fn splits_and_merges_under_load_on_the_local_log() {
    rt().block_on(async {
        let dir = crate::harness::tempdir();
        let log =
            LocalLog::open(dir.path(), LocalOptions::default()).unwrap_or_else(|e| panic!("{e}"));
        log.create_stream("s", 2)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let r = start_intake(log.clone(), &config("s"))
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let url = format!("http://{}/v1/streams/s/events", r.intake_addr);
        let load = tokio::spawn(post_until(url, 4, Instant::now() + Duration::from_secs(4)));
        tokio::time::sleep(Duration::from_millis(500)).await;
        // 2 → 4 → 2 while the clients post.
        for target in [4, 2] {
            reshard::reshard(&log, "s", target, Duration::from_secs(10), |_| {})
                .await
                .unwrap_or_else(|e| panic!("reshard to {target}: {e}"));
            tokio::time::sleep(Duration::from_millis(700)).await;
        }
        let acked = load.await.unwrap_or_else(|e| panic!("{e}"));
        stop(r).await;
        let got = read(&log, "s").await;
        let total: usize = acked.values().map(Vec::len).sum();
        eprintln!(
            "local log, 2 → 4 → 2 under load: {total} events acknowledged in {} records, \
             {} records outside their shard's range",
            got.records, got.outside
        );
        assert!(total > 5_000, "only {total} events posted");
        assert_eq!(got.outside, 0, "records stored outside their shard's range");
        check(&acked, &got);
    });
}

/// The review's reproduction: 12,000 events through the intake while the
/// stand-in is resharded 2 → 4 left 5,000 of them in sub-records outside
/// their shard's range, which a KCL reader drops.
#[test]
fn a_reshard_under_load_on_the_kinesis_stand_in_loses_nothing_to_a_kcl_reader() {
    let Some(endpoint) = kinesis_endpoint() else {
        return;
    };
    rt().block_on(async move {
        let k = kinesis(&endpoint).await;
        let stream = unique_stream("reroute");
        k.create_stream(&stream, 2)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        reshard::wait_active(&k, &stream, Duration::from_secs(30))
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let r = start_intake_with(k.clone(), &config(&stream), Telemetry::new())
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let url = format!("http://{}/v1/streams/{stream}/events", r.intake_addr);
        let load = tokio::spawn(post_until(url, 3, Instant::now() + Duration::from_secs(5)));
        tokio::time::sleep(Duration::from_millis(800)).await;
        reshard::reshard(&k, &stream, 4, Duration::from_secs(30), |_| {})
            .await
            .unwrap_or_else(|e| panic!("reshard: {e}"));
        let acked = load.await.unwrap_or_else(|e| panic!("{e}"));
        stop(r).await;
        let got = read(&k, &stream).await;
        let total: usize = acked.values().map(Vec::len).sum();
        eprintln!(
            "Kinesis stand-in, 2 → 4 under load: {total} events acknowledged; {} records \
             landed outside their shard's range ({} events, which a KCL reader skips)",
            got.outside, got.outside_events
        );
        assert!(total > 5_000, "only {total} events posted");
        check(&acked, &got);
        k.delete_stream(&stream)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
    });
}

/// Spooled while the stream is away, shipped after it was resharded: the
/// shipper routes by the shards as they are then, so nothing lands outside
/// its shard's range at all.
#[test]
fn the_spool_ships_by_the_shards_as_they_are_when_it_ships() {
    use kinesthetic::intake::producer::ProducerConfig;
    use kinesthetic::intake::spool::Spooled;
    let Some(endpoint) = kinesis_endpoint() else {
        return;
    };
    rt().block_on(async move {
        let direct = kinesis(&endpoint).await;
        let stream = unique_stream("spool-reroute");
        direct
            .create_stream(&stream, 2)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        reshard::wait_active(&direct, &stream, Duration::from_secs(30))
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let dir = crate::harness::tempdir();
        // A first run sees the stream (2 shards), then stops with nothing
        // shipped of what it took: the remote is a closed port.
        let telemetry = Telemetry::new();
        let open = |url: String, telemetry: &Telemetry| {
            let metrics = telemetry.metrics.clone();
            let dir = dir.path().to_owned();
            async move {
                Spooled::open(
                    kinesis(&url).await,
                    &dir,
                    ProducerConfig::default(),
                    metrics,
                    1 << 30,
                )
                .unwrap_or_else(|e| panic!("{e}"))
            }
        };
        let spooled = open(endpoint.clone(), &telemetry).await;
        // Learn the map (and keep it beside the spool), then lose Kinesis.
        spooled
            .describe(&stream)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        spooled.close().await;
        drop(spooled);
        let dead = "http://127.0.0.1:9".to_owned();
        let telemetry = Telemetry::new();
        let away = open(dead, &telemetry).await;
        let mut c = config(&stream);
        c.intake.spool = true;
        let r = start_intake_with(away.clone(), &c, telemetry)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let url = format!("http://{}/v1/streams/{stream}/events", r.intake_addr);
        // The first request opens the stream (a describe that fails, then
        // the kept map): not part of the timed load.
        let warm = reqwest::Client::new()
            .post(&url)
            .body("{\"user\":\"warm\",\"n\":0}\n")
            .send()
            .await
            .map(|r| r.status().as_u16())
            .unwrap_or(0);
        assert_eq!(warm, 200, "refused while Kinesis is away");
        let mut acked = post_until(url, 2, Instant::now() + Duration::from_secs(2)).await;
        acked.insert("warm".into(), vec![0]);
        stop(r).await;
        away.close().await;
        drop(away);
        // Resharded meanwhile.
        reshard::reshard(&direct, &stream, 4, Duration::from_secs(30), |_| {})
            .await
            .unwrap_or_else(|e| panic!("reshard: {e}"));
        // Kinesis is back: the spool ships.
        let telemetry = Telemetry::new();
        let back = open(endpoint.clone(), &telemetry).await;
        back.resume().await.unwrap_or_else(|e| panic!("{e}"));
        let start = Instant::now();
        while back.backlog().iter().map(|(_, b)| b).sum::<u64>() > 0 {
            assert!(start.elapsed() < Duration::from_secs(120), "never shipped");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        back.close().await;
        let got = read(&direct, &stream).await;
        let total: usize = acked.values().map(Vec::len).sum();
        eprintln!(
            "spool shipped after a 2 → 4 reshard: {total} events, {} records outside their \
             shard's range",
            got.outside
        );
        assert!(total > 1_000, "only {total} events posted");
        assert_eq!(got.outside, 0);
        check(&acked, &got);
        direct
            .delete_stream(&stream)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
    });
}
