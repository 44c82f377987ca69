//! `cargo xtask bench intake`: the intake's figures, each beside its
//! baseline in the same run.
//!
//! 1. Throughput: 200-byte events, 1,000 per request, several concurrent
//!    connections, into the local log with durable (fsynced) acks, against a
//!    bare axum handler that only reads and counts the same bodies.
//! 2. Packing: events per Kinesis record and stamp overhead, read from the
//!    intake's own metrics after run 1 (1-shard stream).
//! 3. Kinesis path (when `KINESIS_ENDPOINT` names a stand-in): events/s with
//!    packing vs. one record per event.
//!
//! Environment: `BENCH_SECS` (per run, default 5), `BENCH_CONNS` (default 16),
//! `BENCH_LINGER_MS` (overrides `intake.linger_ms`).
//!
//! Beside run 1: the disk's durable-append rate (probed before the runs and
//! after; the faster counts), MD5's rate on one core, and the CPU this
//! process kept busy during the intake run (intake and load generator).
#![allow(clippy::print_stdout, clippy::print_stderr)]

mod common;

use common::{cores, cpu_seconds, env_num, md5_rate, metric};

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use axum::Router;
use axum::routing::post;
use bytes::Bytes;
use kinesthetic::app::start_intake;
use kinesthetic::config::Config;
use kinesthetic::stream::kinesis::{KinesisBackend, KinesisSettings};
use kinesthetic::stream::local::{LocalLog, LocalOptions};
use kinesthetic::stream::{PutEntry, StreamBackend};

const EVENTS_PER_REQUEST: usize = 1000;
const EVENT_BYTES: usize = 200;

/// A 1,000-event NDJSON body of 200-byte JSON events (seeded, varied).
fn body(seed: u64) -> Bytes {
    let mut s = String::with_capacity(EVENTS_PER_REQUEST * (EVENT_BYTES + 1));
    let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    for i in 0..EVENTS_PER_REQUEST {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let head = format!(
            "{{\"ts\":{},\"user\":\"u{}\",\"level\":\"{}\",\"msg\":\"",
            1_764_000_000_000u64 + i as u64,
            x % 10_000,
            ["info", "warn", "error"][(x % 3) as usize]
        );
        s.push_str(&head);
        let pad = EVENT_BYTES - head.len() - 2;
        for j in 0..pad {
            s.push((b'a' + ((x >> (j % 60)) % 26) as u8) as char);
        }
        s.push_str("\"}");
        s.push('\n');
    }
    Bytes::from(s)
}

struct Load {
    requests: u64,
    events: u64,
    bytes: u64,
    secs: f64,
}

/// Posts bodies from `conns` concurrent connections for `secs` seconds.
async fn load(url: String, conns: usize, secs: u64) -> anyhow::Result<Load> {
    let bodies: Arc<Vec<Bytes>> = Arc::new((0..16).map(body).collect());
    let requests = Arc::new(AtomicU64::new(0));
    let bytes = Arc::new(AtomicU64::new(0));
    let deadline = Instant::now() + Duration::from_secs(secs);
    let start = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for c in 0..conns {
        let (url, bodies, requests, bytes) = (
            url.clone(),
            Arc::clone(&bodies),
            Arc::clone(&requests),
            Arc::clone(&bytes),
        );
        tasks.spawn(async move {
            let client = reqwest::Client::builder().http1_only().build()?;
            let mut i = c;
            while Instant::now() < deadline {
                let b = bodies[i % bodies.len()].clone();
                let n = b.len() as u64;
                let resp = client
                    .post(&url)
                    .header("content-type", "application/x-ndjson")
                    .body(b)
                    .send()
                    .await?;
                anyhow::ensure!(resp.status().is_success(), "HTTP {}", resp.status());
                let _ = resp.bytes().await?;
                requests.fetch_add(1, Ordering::Relaxed);
                bytes.fetch_add(n, Ordering::Relaxed);
                i += conns;
            }
            anyhow::Ok(())
        });
    }
    while let Some(r) = tasks.join_next().await {
        r??;
    }
    let requests = requests.load(Ordering::Relaxed);
    Ok(Load {
        requests,
        events: requests * EVENTS_PER_REQUEST as u64,
        bytes: bytes.load(Ordering::Relaxed),
        secs: start.elapsed().as_secs_f64(),
    })
}

/// The baseline: an axum handler that reads the body and counts its lines.
async fn bare_server() -> anyhow::Result<(String, tokio::task::JoinHandle<()>)> {
    let app = Router::new().route(
        "/v1/streams/{stream}/events",
        post(|body: Bytes| async move {
            let n = body.iter().filter(|&&b| b == b'\n').count();
            axum::Json(serde_json::json!({ "accepted": n }))
        }),
    );
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = l.local_addr()?;
    let task = tokio::spawn(async move {
        let _ = axum::serve(l, app).await;
    });
    Ok((format!("http://{addr}/v1/streams/bench/events"), task))
}

/// What the disk under `dir` makes durable per second: 1 MiB appends, each
/// followed by `fdatasync` (what a group commit of the local log does), for
/// `secs` seconds, in MB/s.
fn durable_write_rate(dir: &std::path::Path, secs: f64) -> anyhow::Result<f64> {
    use std::io::Write;
    let path = dir.join("disk-probe");
    let mut f = std::fs::File::create(&path)?;
    let chunk = vec![0x5au8; 1 << 20];
    let start = Instant::now();
    let mut n = 0u64;
    while start.elapsed().as_secs_f64() < secs {
        f.write_all(&chunk)?;
        f.sync_data()?;
        n += chunk.len() as u64;
    }
    let rate = n as f64 / 1e6 / start.elapsed().as_secs_f64();
    drop(f);
    std::fs::remove_file(&path)?;
    Ok(rate)
}

/// What the local log alone makes durable per second: puts of one 1 MiB
/// record each, one after the other (each acknowledged after its fsync),
/// for `secs` seconds, in MB/s: the intake's write path without HTTP,
/// stamping or packing.
async fn log_put_rate(secs: f64) -> anyhow::Result<f64> {
    let dir = tempfile::tempdir()?;
    let log = LocalLog::open(dir.path(), LocalOptions::default())?;
    log.create_stream("probe", 1).await?;
    let entry = PutEntry {
        partition_key: "k".into(),
        explicit_hash_key: None,
        data: Bytes::from(vec![0x5au8; (1 << 20) - 64]),
    };
    let start = Instant::now();
    let mut n = 0u64;
    while start.elapsed().as_secs_f64() < secs {
        log.put_records("probe", std::slice::from_ref(&entry))
            .await?;
        n += entry.data.len() as u64;
    }
    Ok(n as f64 / 1e6 / start.elapsed().as_secs_f64())
}

fn report(what: &str, l: &Load) {
    println!(
        "  {what:<44} {:>10.0} {:>9.1} {:>8.0}",
        l.events as f64 / l.secs,
        l.bytes as f64 / 1e6 / l.secs,
        l.requests as f64 / l.secs
    );
}

fn main() -> anyhow::Result<()> {
    let secs = env_num("BENCH_SECS", 5);
    let conns = env_num("BENCH_CONNS", 16) as usize;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(async move {
        println!(
            "intake: {EVENT_BYTES}-byte events, {EVENTS_PER_REQUEST} per request, {conns} connections, {secs} s per run, same process"
        );
        println!(
            "  {:<44} {:>10} {:>9} {:>8}",
            "", "events/s", "MB/s", "req/s"
        );
        // The disk first, with nothing else running (and again after the
        // intake's run, whose writeback may still slow it): the faster of
        // the two is the figure the intake is held to.
        let probe_dir = tempfile::tempdir()?;
        let disk_before = durable_write_rate(probe_dir.path(), 2.0)?;
        let log_alone = log_put_rate(2.0).await?;
        println!(
            "  the local log alone: {log_alone:.0} MB/s durable (1 MiB puts one after another, \
             each acknowledged after its fsync; the disk probe just before: {disk_before:.0})"
        );
        let (bare_url, bare_task) = bare_server().await?;
        let bare = load(bare_url, conns, secs).await?;
        bare_task.abort();
        report("bare axum handler (read + count lines)", &bare);

        let dir = tempfile::tempdir()?;
        let log = LocalLog::open(dir.path(), LocalOptions::default())?;
        log.create_stream("bench", 1).await?;
        let mut c = Config::default();
        if let Ok(v) = std::env::var("BENCH_LINGER_MS") {
            c.intake.linger_ms = v.parse()?;
        }
        c.intake.listen = "127.0.0.1:0".parse()?;
        c.admin.listen = c.intake.listen;
        let running = start_intake(log.clone(), &c).await?;
        let url = format!("http://{}/v1/streams/bench/events", running.intake_addr);
        let cpu_before = cpu_seconds();
        let intake = load(url, conns, secs).await?;
        let busy = (cpu_seconds() - cpu_before) / intake.secs / cores() as f64;
        report("intake -> local log, fsynced acks", &intake);
        let m = reqwest::get(format!("http://{}/metrics", running.admin_addr))
            .await?
            .text()
            .await?;
        running.stop().await?;
        let ratio = intake.bytes as f64 / intake.secs / (bare.bytes as f64 / bare.secs);
        println!(
            "  intake ÷ bare: {ratio:.3}   (the old target ≥ 0.7, restated by issue 15 against \
             the disk below: both limits show it is beyond this machine)"
        );
        let md5 = md5_rate();
        let need = 0.7 * bare.bytes as f64 / bare.secs / 1e6;
        println!(
            "  limit 1: the KPL trailer's MD5 covers every byte, {md5:.0} MB/s on one core here; \
             0.7 × bare = {need:.0} MB/s would take {:.2} of the {} cores for MD5 alone, \
             beside the HTTP stack and the load generator",
            need / md5,
            std::thread::available_parallelism().map_or(1, |n| n.get())
        );
        let disk_after = durable_write_rate(dir.path(), 2.0)?;
        let disk = disk_before.max(disk_after);
        let of_disk = intake.bytes as f64 / intake.secs / 1e6 / disk.max(1e-9);
        println!(
            "  limit 2: the disk under the log makes {disk:.0} MB/s durable (1 MiB appends, each \
             fdatasynced, 2 s, nothing else running; {disk_before:.0} before the runs, \
             {disk_after:.0} after); 0.7 × bare = {need:.0} MB/s is {:.1}× that",
            need / disk.max(1e-9),
        );
        println!(
            "  intake ÷ the disk's durable-append rate: {of_disk:.2}   (target ≥ 0.8) {}",
            if of_disk >= 0.8 { "met" } else { "MISSED" }
        );
        let mb = intake.bytes as f64 / 1e6;
        println!(
            "  limit 3: the CPU: during the intake run this process (intake and load generator) \
             kept {:.0} % of the {} cores busy, {:.2} core-seconds per 100 MB taken; at that cost \
             0.8 × the disk ({:.0} MB/s) needs {:.2} cores",
            100.0 * busy,
            cores(),
            100.0 * busy * cores() as f64 * intake.secs / mb.max(1e-9),
            0.8 * disk,
            busy * cores() as f64 * intake.secs / mb.max(1e-9) * 0.8 * disk
        );

        let records = metric(&m, "kinesthetic_intake_put_records_total");
        let events = metric(&m, "kinesthetic_intake_events_accepted_total");
        let payload = metric(&m, "kinesthetic_intake_bytes_accepted_total");
        let record_bytes = metric(&m, "kinesthetic_intake_record_bytes_total");
        let stamp_bytes = metric(&m, "kinesthetic_intake_stamp_bytes_total");
        let calls = metric(&m, "kinesthetic_intake_put_calls_total");
        println!(
            "packing (1-shard stream, from the intake's metrics): {events:.0} events in {records:.0} records \
             over {calls:.0} PutRecords calls"
        );
        println!(
            "  events per record: {:.0}   (target ≥ 950)",
            events / records.max(1.0)
        );
        println!(
            "  stamp overhead: {:.3} % of payload ({stamp_bytes:.0} B for {payload:.0} B)   (target ≤ 3 %); all KPL overhead {:.3} %",
            stamp_bytes / payload.max(1.0) * 100.0,
            (record_bytes - payload) / payload.max(1.0) * 100.0
        );

        match std::env::var("KINESIS_ENDPOINT") {
            Ok(endpoint) if !endpoint.is_empty() => kinesis(&endpoint, conns, secs).await?,
            _ => println!("Kinesis path: skipped (set KINESIS_ENDPOINT to a stand-in, e.g. cargo xtask services up)"),
        }
        anyhow::Ok(())
    })
}

/// Events/s into the Kinesis stand-in: through the intake (packed) vs. one
/// record per event with PutRecords of 500.
async fn kinesis(endpoint: &str, conns: usize, secs: u64) -> anyhow::Result<()> {
    let k = KinesisBackend::connect(&KinesisSettings {
        region: None,
        endpoint: Some(endpoint.to_owned()),
        ..KinesisSettings::default()
    })
    .await;
    let name = format!("bench-{}", std::process::id());
    k.create_stream(&name, 1).await?;
    kinesthetic::stream::reshard::wait_active(&k, &name, Duration::from_secs(60)).await?;
    println!("Kinesis path ({endpoint}, stream {name}, 1 shard):");

    // One record per event.
    let b = body(99);
    let events: Vec<Bytes> = b
        .split(|&c| c == b'\n')
        .filter(|l| !l.is_empty())
        .map(Bytes::copy_from_slice)
        .collect();
    let start = Instant::now();
    let mut sent = 0u64;
    while start.elapsed() < Duration::from_secs(secs) {
        let entries: Vec<PutEntry> = events
            .iter()
            .take(500)
            .map(|e| PutEntry {
                partition_key: "k".into(),
                explicit_hash_key: None,
                data: e.clone(),
            })
            .collect();
        let out = k.put_records(&name, &entries).await?;
        sent += out
            .iter()
            .filter(|o| matches!(o, kinesthetic::stream::PutOutcome::Written { .. }))
            .count() as u64;
    }
    let plain = sent as f64 / start.elapsed().as_secs_f64();
    println!(
        "  {:<44} {plain:>10.0} events/s",
        "one record per event (PutRecords of 500)"
    );

    // What the stand-in takes at most, in bytes: records as big as the
    // intake packs, sent directly. Packing cannot beat this ceiling.
    let big = Bytes::from(vec![b'x'; Config::default().intake.record_max_bytes]);
    let start = Instant::now();
    let mut big_bytes = 0u64;
    while start.elapsed() < Duration::from_secs(secs) {
        let entry = PutEntry {
            partition_key: "k".into(),
            explicit_hash_key: None,
            data: big.clone(),
        };
        let out = k.put_records(&name, std::slice::from_ref(&entry)).await?;
        if out
            .iter()
            .all(|o| matches!(o, kinesthetic::stream::PutOutcome::Written { .. }))
        {
            big_bytes += big.len() as u64;
        }
    }
    let ceiling_mbs = big_bytes as f64 / 1e6 / start.elapsed().as_secs_f64();

    // Packed, through the intake.
    let mut c = Config::default();
    c.intake.listen = "127.0.0.1:0".parse()?;
    c.admin.listen = c.intake.listen;
    let running = start_intake(k.clone(), &c).await?;
    let url = format!("http://{}/v1/streams/{name}/events", running.intake_addr);
    let packed = load(url, conns, secs).await?;
    running.stop().await?;
    let packed_rate = packed.events as f64 / packed.secs;
    println!(
        "  {:<44} {packed_rate:>10.0} events/s",
        "intake, KPL-packed"
    );
    println!(
        "  packed ÷ one per event: {:.0}×",
        packed_rate / plain.max(1.0)
    );
    // Each event is EVENT_BYTES plus its newline-free share of the record.
    let ceiling_events = ceiling_mbs * 1e6 / EVENT_BYTES as f64;
    println!(
        "  the stand-in's own limit: {ceiling_mbs:.2} MB/s of {} KiB records sent directly = {ceiling_events:.0} \
         events/s of {EVENT_BYTES} B; the packed intake reaches {:.0} % of it, and one record per event \
         {:.1} % (so no packing can win by more than {:.0}× here)",
        big.len() >> 10,
        100.0 * packed_rate / ceiling_events.max(1.0),
        100.0 * plain / ceiling_events.max(1.0),
        ceiling_events / plain.max(1.0)
    );
    let of_ceiling = packed_rate / ceiling_events.max(1.0);
    println!(
        "  packed ÷ the stand-in's byte ceiling: {of_ceiling:.2}   (target ≥ 0.9) {}",
        if of_ceiling >= 0.9 { "met" } else { "MISSED" }
    );
    k.delete_stream(&name).await?;
    Ok(())
}
