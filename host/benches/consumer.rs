//! `cargo xtask bench consumer` (or `cargo bench -p kinesthetic --bench consumer`):
//! the consumer's figures, each beside what bounds it, measured in one run.
//!
//! 1. **Throughput.** `BENCH_MB` (100) MB of seeded NDJSON logs are loaded
//!    straight into a 4-shard stream of the local log as KPL aggregated
//!    records (one writer per shard's hash range, ≤ 500 records and ≤ 5 MiB
//!    per put; the loading skips fsync, it is not what is measured). Then
//!    the app is launched with only the consumer: one pipeline, `errors-only`,
//!    into a directory sink (objects of ≤ 256 KiB, fsynced; fsynced checkpoints:
//!    the product's defaults), and timed from the launch until the status
//!    board has counted every line in (polled every 10 ms). Beside it, on the
//!    same data in the same run: the filter's fresh-instance MB/s (1,000-line
//!    batches, one core), MD5 MB/s on one core and on every core at once
//!    (the de-aggregator checks each record's digest: every byte), and what
//!    the machine's cores could do at most; the process's CPU time and the
//!    filter jobs' time (its metrics) say where the time went.
//! 2. **Latency.** Intake and consumer in-process; a sender posts 50 error
//!    events every 10 ms (5,000/s) for `BENCH_SECS` (20) s, each carrying its
//!    send time (µs) in `msg`, which `errors-only` keeps; the filtered archive
//!    closes objects after 1 s (`max_age_ms = 1000`); a watcher lists it
//!    every 5 ms and reads each new object once: event → object visible, per
//!    line. On the local log (4 shards, fsynced acks) and, when
//!    `KINESIS_ENDPOINT` names a stand-in, on Kinesis (2 shards, through the
//!    spool). `BENCH_POLL_MS` overrides `consumer.poll_interval_ms` (default:
//!    the product's).
//! 3. **RSS** of the real binary, `kinesthetic serve --config FILE`: idle, a
//!    few seconds after start in the embedded default's shape (a raw
//!    pipeline, `errors-only` in the filters directory as an automatic
//!    pipeline), with a cold and then a warm module cache; and its peak
//!    (VmHWM) with four pipelines (raw, errors-only, grep, redact) while
//!    `BENCH_CONNS` (4) connections post 1 MB bodies as fast as they can for
//!    `BENCH_SECS`.
//!
//!    `BENCH_IDLE_SECS` (3): the wait before the idle reading.
//!
//! 2b. **Push latency.** The same load and filter into an `http` sink (its
//!    defaults: batches of ≤ 1 MiB or 100 ms of records) POSTing to a
//!    receiver in this process: event → line received, per line; on the
//!    local log and, with `KINESIS_ENDPOINT`, on the Kinesis stand-in.
//!    Before the stand-in run, the stand-in alone: one small record put
//!    every 10 ms and read by GetRecords at the consumer's poll interval
//!    (3 s to warm it, shown and not counted, then `BENCH_SECS`): put →
//!    returned, the floor under any polling consumer, printed beside the
//!    push figure. A stand-in just started answers its first seconds slowly
//!    (a push run on a cold one measured p99 1.1–1.6 s, the next one 0.24 s).
//!
//! 2c. **Re-key.** `BENCH_REKEY_EVENTS` (200,000) events of 200 B loaded
//!    into 4 shards, re-keyed by the `rekey` filter through a `kinesis` sink
//!    (its defaults) into another 4-shard stream of the local log: events
//!    per record written (the intake's packing figure), beside how many
//!    such events one record can hold, and events/s.
//!
//! 2d. **Index.** `BENCH_INDEX_EVENTS` (200,000) events of 200 B preloaded:
//!    into 1 shard pushed by an http sink to a receiver here (the baseline),
//!    and into 4 shards merged by an index sink; each timed from launch to
//!    the last line. Then a burst of 10 × the index's `memory_bytes` (4 MiB)
//!    on 3 shards while the 4th, read and not idle, has staged nothing (so
//!    every line waits): the peak of pending lines in memory (`/v1/status`)
//!    beside the configured bound.
//!
//! `BENCH_THROUGHPUT=0`, `BENCH_LATENCY=0`, `BENCH_PUSH=0`, `BENCH_REKEY=0`,
//! `BENCH_INDEX=0`, `BENCH_RSS=0` skip a part. The
//! figures share the machine with whatever else runs: run it on a quiet one.
#![allow(clippy::print_stdout, clippy::print_stderr)]

mod common;

use common::{cores, cpu_seconds, env_num, md5_rate, metric, rss_now};

use std::collections::{BTreeMap, HashSet};
use std::io::BufRead;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context, anyhow, bail, ensure};
use bytes::Bytes;
use kinesthetic::app::{self, App, Parts, Telemetry};
use kinesthetic::config::{
    BackendKind, Compression, Config, EMBEDDED_MAX_AGE_MS, PipelineConfig, SinkConfig,
    StreamSettings,
};
use kinesthetic::consumer::status::StatusBoard;
use kinesthetic::event::{EventId, Stamp, batches_of, split_lines};
use kinesthetic::filter::{EngineSettings, Input, Limits, Runtime, bench};
use kinesthetic::sink::util::compress::decompress;
use kinesthetic::stream::any::AnyBackend;
use kinesthetic::stream::kpl::Aggregator;
use kinesthetic::stream::local::{LocalLog, LocalOptions};
use kinesthetic::stream::{PutEntry, PutOutcome, StreamBackend};

/// The stream of the throughput and local latency runs.
const STREAM: &str = "events";
/// Kinesis's limits on one put.
const PUT_ENTRIES: usize = 500;
const PUT_BYTES: usize = 5 << 20;
/// The latency run's load: `EVENTS_PER_TICK` events every `TICK`.
const EVENTS_PER_TICK: usize = 50;
const TICK: Duration = Duration::from_millis(10);
/// The latency run's buffer age.
const AGE_MS: u64 = 1000;

/// A part runs unless its variable is `0`.
fn enabled(name: &str) -> bool {
    std::env::var(name).as_deref() != Ok("0")
}

fn met(ok: bool) -> &'static str {
    if ok { "met" } else { "MISSED" }
}

fn now_us() -> i64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX))
}

/// The example filters this bench runs.
struct Filters {
    errors_only: PathBuf,
    grep: PathBuf,
    redact: PathBuf,
    rekey: PathBuf,
}

fn build_filters() -> anyhow::Result<Filters> {
    let out_dir = xtask::target_dir().join("filters");
    eprintln!("building the example filters into {} …", out_dir.display());
    let built = xtask::build_filters(&out_dir).map_err(anyhow::Error::msg)?;
    let find = |name: &str| {
        built
            .iter()
            .find(|f| f.name == name)
            .map(|f| f.path.clone())
            .ok_or_else(|| anyhow!("{name} was not built"))
    };
    Ok(Filters {
        errors_only: find("errors-only")?,
        grep: find("grep")?,
        redact: find("redact")?,
        rekey: find("rekey")?,
    })
}

/// Copies `module` into the filters directory `dir` as `NAME.wasm`.
fn drop_filter(dir: &Path, name: &str, module: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir)?;
    std::fs::copy(module, dir.join(format!("{name}.wasm")))
        .with_context(|| format!("copying {}", module.display()))?;
    Ok(())
}

fn main() -> anyhow::Result<()> {
    // As the binary does: the in-process figures pay what it pays.
    kinesthetic::malloc::limit_retained_memory();
    let secs = env_num("BENCH_SECS", 20);
    let filters = build_filters()?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    if enabled("BENCH_THROUGHPUT") {
        let mb = usize::try_from(env_num("BENCH_MB", 100))?;
        throughput(&rt, &filters, mb)?;
    }
    if enabled("BENCH_LATENCY") {
        latency(&rt, &filters, secs)?;
    }
    if enabled("BENCH_PUSH") {
        push_latency(&rt, &filters, secs)?;
    }
    if enabled("BENCH_REKEY") {
        let n = usize::try_from(env_num("BENCH_REKEY_EVENTS", 200_000))?;
        rekey(&rt, &filters, n)?;
    }
    if enabled("BENCH_INDEX") {
        let n = usize::try_from(env_num("BENCH_INDEX_EVENTS", 200_000))?;
        index(&rt, n)?;
    }
    if enabled("BENCH_RSS") {
        rss(&rt, &filters, secs)?;
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// 1. Throughput
// ---------------------------------------------------------------------------

fn throughput(rt: &tokio::runtime::Runtime, filters: &Filters, mb: usize) -> anyhow::Result<()> {
    eprintln!("generating {mb} MB of NDJSON logs (seed 1) …");
    let data = kinesthetic::datagen::ndjson_logs(1, mb * 1_000_000);
    let lines: Vec<&[u8]> = split_lines(&data).collect();
    let bytes: u64 = lines.iter().map(|l| l.len() as u64).sum();
    let dir = tempfile::tempdir()?;
    let c = throughput_config(dir.path());
    drop_filter(&c.filters.dir, "errors-only", &filters.errors_only)?;

    eprintln!("measuring the filter alone (fresh instances, 1,000-line batches) …");
    let fresh = filter_fresh(&filters.errors_only, &c, &lines)?;
    let md5 = md5_rate();
    let md5_all = md5_rate_on(cores());

    eprintln!("loading the stream (KPL records, no fsync) …");
    let log = LocalLog::open(
        &c.stream.data_dir,
        LocalOptions {
            fsync: false,
            ..LocalOptions::default()
        },
    )?;
    let loaded = rt.block_on(load_kpl(&log, 4, &lines))?;
    eprintln!("consuming …");
    let run = rt.block_on(consume_all(&c, AnyBackend::Local(log), lines.len() as u64))?;

    let mbs = bytes as f64 / 1e6 / run.elapsed.as_secs_f64();
    let fresh_mbs = fresh.mb_per_s();
    let ratio = mbs / fresh_mbs;
    let n = cores();
    // Every byte is digested once (de-aggregation) and filtered once.
    let both = 1.0 / (1.0 / md5_all + 1.0 / (fresh_mbs * n as f64));
    println!(
        "consumer throughput : {mbs:.1} MB/s  filter fresh {fresh_mbs:.1} MB/s/core  ratio {ratio:.3} \
         (target ≥ 0.5) {} — ceilings: MD5 {md5:.0} MB/s/core ({md5_all:.0} MB/s on {n} cores at \
         once), filter fresh × {n} cores {:.0} MB/s, MD5 + filter on {n} cores {both:.0} MB/s",
        met(ratio >= 0.5),
        fresh_mbs * n as f64,
    );
    let wall = run.elapsed.as_secs_f64();
    println!(
        "  {:.1} MB of event bytes, {} lines, in {} KPL records on {} shards of the local log \
         (loaded without fsync); consumed in {wall:.3} s from launch (launch itself {:.3} s: \
         listeners, module from the cache), {:.0} lines/s",
        bytes as f64 / 1e6,
        lines.len(),
        loaded.records,
        loaded.shards,
        run.launch.as_secs_f64(),
        lines.len() as f64 / wall
    );
    println!(
        "  one pipeline, errors-only → dir sink (objects ≤ 256 KiB, fsynced), poll {} ms; \
         kept {} lines in {} objects (the filter alone kept {}){}",
        c.consumer.poll_interval_ms,
        run.lines_out,
        run.objects,
        fresh.lines_out,
        if run.lines_out == fresh.lines_out {
            ""
        } else {
            "  ← NOT THE SAME"
        }
    );
    let md5_s = bytes as f64 / 1e6 / md5;
    let filter_s = bytes as f64 / 1e6 / fresh_mbs;
    println!(
        "  where the time went: {:.2} core-s of CPU in {wall:.3} s ({:.2} of {n} cores busy); \
         MD5 of every byte ≈ {md5_s:.2} core-s, the filter alone ≈ {filter_s:.2} core-s; \
         filter jobs' wall time summed over the shards {:.2} s; consumer ÷ (MD5 + filter on \
         {n} cores) {:.3}",
        run.cpu,
        run.cpu / wall,
        run.jobs,
        mbs / both
    );
    let need = 0.5 * fresh_mbs;
    println!(
        "  the target needs {need:.0} MB/s; MD5 alone on {n} cores gives {md5_all:.0} MB/s and \
         MD5 + filter {both:.0} MB/s, so it is {} here while every byte is digested",
        if need <= both {
            "reachable"
        } else {
            "out of reach"
        }
    );
    Ok(())
}

fn throughput_config(dir: &Path) -> Config {
    let mut c = Config::default();
    let any: SocketAddr = SocketAddr::from(([127, 0, 0, 1], 0));
    c.stream.data_dir = dir.join("data");
    c.intake.listen = any;
    c.admin.listen = any;
    c.consumer.poll_interval_ms = 10;
    c.filters.dir = dir.join("filters");
    c.filters.cache_dir = Some(dir.join("cache"));
    let mut sink = SinkConfig::dir(dir.join("archive"));
    sink.max_age_ms = Some(3_600_000);
    sink.max_bytes = Some(256 << 10);
    c.sinks.insert("filtered".into(), sink);
    c.pipelines.push(pipeline(
        "errors",
        STREAM,
        Some("errors-only"),
        &[],
        "filtered",
    ));
    c
}

fn pipeline(
    name: &str,
    stream: &str,
    filter: Option<&str>,
    params: &[(&str, &str)],
    sink: &str,
) -> PipelineConfig {
    PipelineConfig {
        name: name.into(),
        stream: stream.into(),
        filter: filter.map(str::to_owned),
        params: params
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect(),
        limits: Default::default(),
        on_error: Default::default(),
        sinks: vec![sink.to_owned()],
        routes: BTreeMap::new(),
        dead_letter: None,
    }
}

/// The filter's fresh-instance throughput on `lines` (1,000-line batches),
/// best of two, with the engine the consumer uses (same module cache).
fn filter_fresh(module: &Path, c: &Config, lines: &[&[u8]]) -> anyhow::Result<bench::Throughput> {
    let runtime = Runtime::new(EngineSettings {
        cache_dir: c.filters.cache_dir.clone(),
        ..EngineSettings::default()
    })?;
    let filter = runtime.load_file(module)?;
    let inputs: Vec<Input> = batches_of(lines.iter().copied(), 1000, 1, 0, 0)?
        .into_iter()
        .map(Input::from)
        .collect();
    let (params, limits) = (Vec::new(), Limits::default());
    let a = bench::fresh(&filter, &inputs, &params, &limits)?;
    let b = bench::fresh(&filter, &inputs, &params, &limits)?;
    Ok(if a.elapsed <= b.elapsed { a } else { b })
}

/// MD5 throughput of `threads` threads at once (summed), MB/s: what the
/// machine's cores really give together (a VM's vCPUs may give less than
/// one core each when all are busy).
fn md5_rate_on(threads: usize) -> f64 {
    let handles: Vec<_> = (0..threads).map(|_| std::thread::spawn(md5_rate)).collect();
    handles.into_iter().filter_map(|h| h.join().ok()).sum()
}

struct Loaded {
    shards: usize,
    records: usize,
}

/// Creates `STREAM` with `shards` shards and writes `lines` into it, a
/// contiguous share per shard, as KPL aggregated records aimed at the shard
/// by an explicit hash key inside its range.
async fn load_kpl(log: &LocalLog, shards: u32, lines: &[&[u8]]) -> anyhow::Result<Loaded> {
    log.create_stream(STREAM, shards).await?;
    let description = log.describe(STREAM).await?;
    let open: Vec<_> = description.open_shards().cloned().collect();
    ensure!(!open.is_empty(), "the stream has no open shard");
    let share = lines.len().div_ceil(open.len()).max(1);
    let limit = Config::default().intake.record_max_bytes;
    let received_ms = now_us() / 1000;
    let mut records = 0;
    for (i, (shard, part)) in open.iter().zip(lines.chunks(share)).enumerate() {
        // A key hashing into the shard's range: the local log refuses a
        // record with an event outside it (as a KCL reader would drop it).
        let key = (0u64..)
            .map(|j| format!("bench-{i}-{j}"))
            .find(|k| {
                shard
                    .hash_range
                    .contains(kinesthetic::stream::hash_key_of(k))
            })
            .unwrap_or_default();
        let first_counter = (i * share) as u64;
        let entries: Vec<PutEntry> = aggregate(part, &key, first_counter, received_ms, limit)?
            .into_iter()
            .map(|data| PutEntry {
                partition_key: key.clone(),
                explicit_hash_key: Some(shard.hash_range.start),
                data,
            })
            .collect();
        records += entries.len();
        for group in put_groups(entries) {
            let out = log.put_records(STREAM, &group).await?;
            if let Some(failed) = out
                .iter()
                .find(|o| !matches!(o, PutOutcome::Written { .. }))
            {
                bail!("a put failed: {failed:?}");
            }
        }
    }
    Ok(Loaded {
        shards: open.len(),
        records,
    })
}

/// `lines` as sealed KPL records of at most `limit` bytes, stamped with
/// consecutive counters (so only each record's first event carries a tag).
fn aggregate(
    lines: &[&[u8]],
    key: &str,
    first_counter: u64,
    received_ms: i64,
    limit: usize,
) -> anyhow::Result<Vec<Bytes>> {
    let mut agg = Aggregator::new(limit);
    let mut out = Vec::new();
    for (counter, line) in (first_counter..).zip(lines) {
        let stamp = Stamp {
            id: EventId {
                listener: 0xbe0c,
                counter,
            },
            received_ms,
        };
        if !agg.try_push(key, line, stamp) {
            ensure!(!agg.is_empty(), "a {}-byte line fits no record", line.len());
            out.push(agg.finish().data);
            ensure!(agg.try_push(key, line, stamp), "a line fits no record");
        }
    }
    if !agg.is_empty() {
        out.push(agg.finish().data);
    }
    Ok(out)
}

/// Groups entries into puts Kinesis would take: ≤ 500 entries, ≤ 5 MiB.
fn put_groups(entries: Vec<PutEntry>) -> Vec<Vec<PutEntry>> {
    let mut groups = Vec::new();
    let mut group: Vec<PutEntry> = Vec::new();
    let mut size = 0;
    for e in entries {
        let n = e.data.len() + e.partition_key.len();
        if !group.is_empty() && (group.len() == PUT_ENTRIES || size + n > PUT_BYTES) {
            groups.push(std::mem::take(&mut group));
            size = 0;
        }
        size += n;
        group.push(e);
    }
    if !group.is_empty() {
        groups.push(group);
    }
    groups
}

struct Consumed {
    elapsed: Duration,
    launch: Duration,
    lines_out: u64,
    objects: u64,
    /// CPU time of this process meanwhile (every thread), seconds.
    cpu: f64,
    /// The pipeline's filter jobs, seconds (its metrics).
    jobs: f64,
}

/// Sums of every shard of every pipeline: (lines in, lines out, objects).
fn totals(board: &StatusBoard) -> (u64, u64, u64) {
    board
        .snapshot()
        .values()
        .flat_map(|p| p.shards.values())
        .fold((0, 0, 0), |(i, o, n), s| {
            (i + s.lines_in, o + s.lines_out, n + s.objects)
        })
}

/// Launches the consumer alone on `backend` and waits until it has taken
/// in `lines` lines.
async fn consume_all(c: &Config, backend: AnyBackend, lines: u64) -> anyhow::Result<Consumed> {
    c.validate("bench")?;
    let cpu = cpu_seconds();
    let start = Instant::now();
    let app = app::launch(
        c,
        Telemetry::new(),
        Parts::<AnyBackend> {
            intake: None,
            consumer: Some(backend),
            spool: None,
            create: None,
        },
    )
    .await?;
    let launch = start.elapsed();
    let board = app
        .status()
        .cloned()
        .ok_or_else(|| anyhow!("no consumer"))?;
    let limit = Duration::from_secs(600);
    let elapsed = loop {
        let (lines_in, _, _) = totals(&board);
        if lines_in >= lines {
            break start.elapsed();
        }
        if start.elapsed() > limit {
            app.stop().await?;
            bail!("the consumer took in {lines_in} of {lines} lines in {limit:?}");
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    let cpu = cpu_seconds() - cpu;
    let (_, lines_out, objects) = totals(&board);
    let metrics = reqwest::get(format!("http://{}/metrics", app.admin_addr))
        .await?
        .text()
        .await?;
    let jobs = metric(&metrics, "kinesthetic_pipeline_filter_job_seconds_sum");
    app.stop().await?;
    Ok(Consumed {
        elapsed,
        launch,
        lines_out,
        objects,
        cpu,
        jobs,
    })
}

// ---------------------------------------------------------------------------
// 2. Latency
// ---------------------------------------------------------------------------

fn latency(rt: &tokio::runtime::Runtime, filters: &Filters, secs: u64) -> anyhow::Result<()> {
    let local = rt.block_on(latency_run(None, filters, secs))?;
    local.print("local log", 250);
    match std::env::var("KINESIS_ENDPOINT") {
        Ok(url) if !url.is_empty() => {
            let k = rt.block_on(latency_run(Some(&url), filters, secs))?;
            k.print(
                &format!("Kinesis stand-in at {url}, through the spool"),
                1000,
            );
        }
        _ => println!(
            "latency, Kinesis : skipped (set KINESIS_ENDPOINT to a stand-in, e.g. cargo xtask services up)"
        ),
    }
    Ok(())
}

/// A latency run's config: `errors-only` → a dir sink closing objects
/// after `AGE_MS`, on the local log (4 shards) or Kinesis (2 shards).
fn latency_config(dir: &Path, kinesis: Option<(&str, &str)>) -> Config {
    let mut c = Config::default();
    let any: SocketAddr = SocketAddr::from(([127, 0, 0, 1], 0));
    c.stream.data_dir = dir.join("data");
    c.intake.listen = any;
    c.admin.listen = any;
    if let Some(ms) = std::env::var("BENCH_POLL_MS")
        .ok()
        .and_then(|v| v.parse().ok())
    {
        c.consumer.poll_interval_ms = ms;
    }
    c.filters.dir = dir.join("filters");
    c.filters.cache_dir = Some(dir.join("cache"));
    let (stream, shards) = match kinesis {
        Some((endpoint, stream)) => {
            c.stream.backend = BackendKind::Kinesis;
            c.stream.kinesis.endpoint = Some(endpoint.to_owned());
            (stream, 2)
        }
        None => (STREAM, 4),
    };
    c.streams.insert(
        stream.to_owned(),
        StreamSettings {
            shards: Some(shards),
            ..StreamSettings::default()
        },
    );
    let mut sink = SinkConfig::dir(dir.join("archive"));
    sink.max_age_ms = Some(AGE_MS);
    c.sinks.insert("filtered".into(), sink);
    c.pipelines.push(pipeline(
        "errors",
        stream,
        Some("errors-only"),
        &[],
        "filtered",
    ));
    c
}

/// Starts intake + consumer as `kinesthetic serve` would: on Kinesis the
/// intake writes through the spool.
async fn launch_full(c: &Config) -> anyhow::Result<(App, AnyBackend)> {
    c.validate("bench")?;
    let b = app::backend(c).await?;
    let t = Telemetry::new();
    let app = match app::spool_for(&b, c, &t.metrics).await? {
        Some(spool) => {
            let parts = Parts {
                intake: Some(spool.clone()),
                consumer: Some(b.clone()),
                spool: Some(spool),
                create: Some(b.clone()),
            };
            app::launch(c, t, parts).await?
        }
        None => {
            let parts = Parts::<AnyBackend> {
                intake: Some(b.clone()),
                consumer: Some(b.clone()),
                spool: None,
                create: Some(b.clone()),
            };
            app::launch(c, t, parts).await?
        }
    };
    Ok((app, b))
}

struct LatencyRun {
    shards: u32,
    poll_ms: u64,
    secs: u64,
    sent: Sent,
    seen: Watched,
}

impl LatencyRun {
    fn print(&self, what: &str, slack_ms: u64) {
        let (p50, p99, max) = self.seen.percentiles_ms();
        let l = &self.seen.latencies_us;
        let target = (AGE_MS + slack_ms) as f64;
        let missing = self.sent.events.saturating_sub(self.seen.distinct);
        println!(
            "latency, {what} : p50 {p50:.0} ms  p99 {p99:.0} ms  max {max:.0} ms over {} lines \
             (target p99 ≤ age {AGE_MS} + {slack_ms} = {target:.0} ms) {}; missing {missing}",
            l.len(),
            met(p99 <= target && missing == 0)
        );
        println!(
            "  {} events sent ({} events/s for {} s, {} per request every {} ms; {} requests \
             failed, {} events in them), {} seen, {} duplicates; {} objects; {} shards, \
             consumer.poll_interval_ms {}",
            self.sent.events,
            (EVENTS_PER_TICK as u128 * 1000 / TICK.as_millis()),
            self.secs,
            EVENTS_PER_TICK,
            TICK.as_millis(),
            self.sent.failed_requests,
            self.sent.failed_events,
            self.seen.distinct,
            self.seen.duplicates,
            self.seen.objects,
            self.shards,
            self.poll_ms
        );
    }
}

async fn latency_run(
    kinesis: Option<&str>,
    filters: &Filters,
    secs: u64,
) -> anyhow::Result<LatencyRun> {
    let dir = tempfile::tempdir()?;
    let name = format!(
        "bench-latency-{}-{}",
        std::process::id(),
        now_us() / 1000 % 1_000_000_000
    );
    let c = latency_config(dir.path(), kinesis.map(|k| (k, name.as_str())));
    let stream = c.pipelines[0].stream.clone();
    drop_filter(&c.filters.dir, "errors-only", &filters.errors_only)?;
    eprintln!(
        "latency run on {} for {secs} s …",
        kinesis.unwrap_or("the local log")
    );
    let (app, backend) = launch_full(&c).await?;
    let result = latency_load(&app, &c, &stream, secs).await;
    app.stop().await?;
    if kinesis.is_some() {
        backend.delete_stream(&stream).await?;
    }
    let (sent, seen) = result?;
    Ok(LatencyRun {
        shards: c.streams.get(&stream).and_then(|s| s.shards).unwrap_or(0),
        poll_ms: c.consumer.poll_interval_ms,
        secs,
        sent,
        seen,
    })
}

/// Sends the steady load with the watcher running, then waits (at most
/// age + 15 s) until every event accepted was seen.
async fn latency_load(
    app: &App,
    c: &Config,
    stream: &str,
    secs: u64,
) -> anyhow::Result<(Sent, Watched)> {
    let board = app
        .status()
        .cloned()
        .ok_or_else(|| anyhow!("no consumer"))?;
    wait_ready(&board).await?;
    let root = c
        .sinks
        .get("filtered")
        .and_then(|s| s.path.clone())
        .ok_or_else(|| anyhow!("no sink path"))?;
    let stop = Arc::new(AtomicBool::new(false));
    let seen = Arc::new(AtomicU64::new(0));
    let watcher = {
        let (stop, seen) = (Arc::clone(&stop), Arc::clone(&seen));
        std::thread::spawn(move || watch(&root, &stop, &seen))
    };
    let addr = app.intake_addr.ok_or_else(|| anyhow!("no intake"))?;
    let url = format!("http://{addr}/v1/streams/{stream}/events");
    let sent = send_steady(&url, secs).await;
    if let Ok(s) = &sent {
        let want = s.events - s.failed_events;
        let until = Instant::now() + Duration::from_millis(AGE_MS) + Duration::from_secs(15);
        while seen.load(Ordering::Relaxed) < want && Instant::now() < until {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    stop.store(true, Ordering::Relaxed);
    let watched = watcher
        .join()
        .map_err(|_| anyhow!("the watcher panicked"))??;
    Ok((sent?, watched))
}

/// Waits until every pipeline has loaded its shards and checkpoints.
async fn wait_ready(board: &StatusBoard) -> anyhow::Result<()> {
    let start = Instant::now();
    loop {
        let snap = board.snapshot();
        if !snap.is_empty() && snap.values().all(|p| p.loaded && !p.shards.is_empty()) {
            return Ok(());
        }
        ensure!(
            start.elapsed() < Duration::from_secs(60),
            "the pipelines did not start in 60 s"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

struct Sent {
    events: u64,
    failed_requests: u64,
    failed_events: u64,
}

/// One request of `n` error events numbered from `seq`, each carrying the
/// send time in µs: `msg` = `SEQ SEND_US`.
fn latency_body(seq: u64, n: usize) -> String {
    let sent = now_us();
    let mut body = String::with_capacity(n * 120);
    for i in seq..seq + n as u64 {
        body.push_str(&format!(
            r#"{{"ts":"2026-12-05T08:00:00Z","level":"error","status":503,"service":"bench","msg":"{i} {sent}"}}"#
        ));
        body.push('\n');
    }
    body
}

/// `EVENTS_PER_TICK` events every `TICK` for `secs` seconds, each request
/// on its own task so that a slow answer does not slow the rate.
async fn send_steady(url: &str, secs: u64) -> anyhow::Result<Sent> {
    let client = reqwest::Client::new();
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let mut tasks = tokio::task::JoinSet::new();
    let end = Instant::now() + Duration::from_secs(secs);
    let mut seq = 0u64;
    while Instant::now() < end {
        tick.tick().await;
        let body = latency_body(seq, EVENTS_PER_TICK);
        seq += EVENTS_PER_TICK as u64;
        let req = client.post(url).body(body);
        tasks.spawn(async move {
            let ok = match req.send().await {
                Ok(r) => r.status().is_success(),
                Err(_) => false,
            };
            if !ok {
                eprintln!("a latency request failed");
            }
            ok
        });
    }
    let mut failed = 0u64;
    while let Some(r) = tasks.join_next().await {
        if !r? {
            failed += 1;
        }
    }
    Ok(Sent {
        events: seq,
        failed_requests: failed,
        failed_events: failed * EVENTS_PER_TICK as u64,
    })
}

struct Watched {
    latencies_us: Vec<i64>,
    distinct: u64,
    duplicates: u64,
    objects: u64,
}

impl Watched {
    /// p50, p99 and max of the latencies, in ms (NaN when there are none).
    fn percentiles_ms(&self) -> (f64, f64, f64) {
        let mut l = self.latencies_us.clone();
        l.sort_unstable();
        let pct = |p: f64| -> f64 {
            if l.is_empty() {
                return f64::NAN;
            }
            let i = ((p * l.len() as f64).ceil() as usize).clamp(1, l.len()) - 1;
            l[i] as f64 / 1000.0
        };
        let max = l.last().map_or(f64::NAN, |&v| v as f64 / 1000.0);
        (pct(0.50), pct(0.99), max)
    }
}

/// Lists `root` every 5 ms until `stop`, reading each new object once:
/// per line, the time it became visible minus its send time.
fn watch(root: &Path, stop: &AtomicBool, seen_count: &AtomicU64) -> anyhow::Result<Watched> {
    let mut known: HashSet<PathBuf> = HashSet::new();
    let mut seen: HashSet<u64> = HashSet::new();
    let mut w = Watched {
        latencies_us: Vec::new(),
        distinct: 0,
        duplicates: 0,
        objects: 0,
    };
    loop {
        let last = stop.load(Ordering::Relaxed);
        let mut found = Vec::new();
        list_objects(root, &mut found);
        let visible = now_us();
        for path in found {
            if !known.insert(path.clone()) {
                continue;
            }
            w.objects += 1;
            let body = std::fs::read(&path)?;
            let text = decompress(&body, Compression::Gzip)?;
            for line in split_lines(&text) {
                let (seq, sent) =
                    sent_of(line).ok_or_else(|| anyhow!("{}: unexpected line", path.display()))?;
                w.latencies_us.push(visible - sent);
                if !seen.insert(seq) {
                    w.duplicates += 1;
                }
            }
        }
        w.distinct = seen.len() as u64;
        seen_count.store(w.distinct, Ordering::Relaxed);
        if last {
            return Ok(w);
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Every `*.ndjson.gz` under `dir` (temporary files start with `.`).
fn list_objects(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let p = e.path();
        let name = e.file_name();
        let name = name.to_string_lossy();
        if e.file_type().is_ok_and(|t| t.is_dir()) {
            list_objects(&p, out);
        } else if name.ends_with(".ndjson.gz") && !name.starts_with('.') {
            out.push(p);
        }
    }
}

/// `(seq, send_us)` from an output line's `"msg":"SEQ SEND_US"`.
fn sent_of(line: &[u8]) -> Option<(u64, i64)> {
    let text = std::str::from_utf8(line).ok()?;
    let msg = text.split(r#""msg":""#).nth(1)?.split('"').next()?;
    let (seq, sent) = msg.split_once(' ')?;
    Some((seq.parse().ok()?, sent.parse().ok()?))
}

// ---------------------------------------------------------------------------
// 2b. Push latency
// ---------------------------------------------------------------------------

/// Event → an HTTP consumer: the latency run's load and filter, with the
/// `http` sink's defaults (batches of ≤ 1 MiB or 100 ms of records) and
/// `consumer.poll_interval_ms` as configured, into a receiver in this
/// process that notes each line's arrival.
fn push_latency(rt: &tokio::runtime::Runtime, filters: &Filters, secs: u64) -> anyhow::Result<()> {
    let local = rt.block_on(push_latency_run(filters, secs, None))?;
    local.print_push("local log", 250);
    match std::env::var("KINESIS_ENDPOINT") {
        Ok(url) if !url.is_empty() => {
            // A stand-in just started (or just used by a test run) answers
            // its first seconds of traffic slowly; that is the stand-in's,
            // not ours. Warm it with a short run, shown, not counted.
            let poll_ms = Config::default().consumer.poll_interval_ms;
            let cold = rt.block_on(stand_in_floor(&url, poll_ms, 3))?;
            let (c50, c99, cmax) = cold.percentiles_ms();
            println!(
                "latency, the stand-in alone, warm-up (not counted): p50 {c50:.0} ms  p99 {c99:.0} ms  \
                 max {cmax:.0} ms over {} records",
                cold.latencies_us.len()
            );
            let floor = rt.block_on(stand_in_floor(&url, poll_ms, secs))?;
            let (f50, f99, fmax) = floor.percentiles_ms();
            println!(
                "latency, the stand-in alone: PutRecords → GetRecords polled every {poll_ms} ms, \
                 p50 {f50:.0} ms  p99 {f99:.0} ms  max {fmax:.0} ms over {} records (the floor \
                 under any consumer that polls at this interval)",
                floor.latencies_us.len()
            );
            let k = rt.block_on(push_latency_run(filters, secs, Some(&url)))?;
            k.print_push(
                &format!("Kinesis stand-in at {url}, through the spool"),
                1000,
            );
            let (_, p99, _) = k.seen.percentiles_ms();
            println!(
                "  p99 beside the stand-in's own p99: {:.2}× ({:.0} ms above it)",
                p99 / f99,
                p99 - f99
            );
        }
        _ => println!(
            "latency, push, Kinesis : skipped (set KINESIS_ENDPOINT to a stand-in, e.g. cargo xtask services up)"
        ),
    }
    Ok(())
}

/// A receiver in this process that POSTs reach: `handler` answers every
/// path. Returns its URL and the task serving it (abort it when done).
async fn receiver<H, T>(handler: H) -> anyhow::Result<(String, tokio::task::JoinHandle<()>)>
where
    H: axum::handler::Handler<T, ()>,
    T: 'static,
{
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}/ingest", listener.local_addr()?);
    let server = tokio::spawn(async move {
        let app = axum::Router::new().fallback(axum::routing::post(handler));
        let _ = axum::serve(listener, app).await;
    });
    Ok((url, server))
}

/// The stand-in's own latency, without Kinesthetic: one small record put
/// every 10 ms into a 1-shard stream for `secs`, read by one reader that
/// calls GetRecords every `poll_ms` when a call returned nothing (the
/// consumer's rule): put → record returned, per record, through the same
/// SDK client the product uses.
async fn stand_in_floor(endpoint: &str, poll_ms: u64, secs: u64) -> anyhow::Result<Watched> {
    use kinesthetic::stream::StartPosition;
    let mut c = Config::default();
    c.stream.backend = BackendKind::Kinesis;
    c.stream.kinesis.endpoint = Some(endpoint.to_owned());
    let b = app::backend(&c).await?;
    let name = format!(
        "bench-floor-{}-{}",
        std::process::id(),
        now_us() / 1000 % 1_000_000_000
    );
    b.create_stream(&name, 1).await?;
    let d = b.describe(&name).await?;
    let shard = d
        .shards
        .first()
        .map(|s| s.id.clone())
        .ok_or_else(|| anyhow!("{name}: no shard"))?;
    let mut it = b
        .shard_iterator(&name, &shard, &StartPosition::TrimHorizon)
        .await?;
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (b, name, stop) = (b.clone(), name.clone(), Arc::clone(&stop));
        tokio::spawn(async move {
            let mut sent = 0u64;
            let mut tick = tokio::time::interval(Duration::from_millis(10));
            while !stop.load(Ordering::Relaxed) {
                tick.tick().await;
                let e = PutEntry {
                    partition_key: "k".into(),
                    explicit_hash_key: None,
                    data: Bytes::from(now_us().to_string()),
                };
                if b.put_records(&name, &[e]).await.is_ok() {
                    sent += 1;
                }
            }
            sent
        })
    };
    let mut w = Watched {
        latencies_us: Vec::new(),
        distinct: 0,
        duplicates: 0,
        objects: 0,
    };
    let until = Instant::now() + Duration::from_secs(secs);
    while Instant::now() < until {
        let r = b.get_records(&it, 10_000).await?;
        let now = now_us();
        for rec in &r.records {
            if let Some(sent) = std::str::from_utf8(&rec.data)
                .ok()
                .and_then(|t| t.parse::<i64>().ok())
            {
                w.latencies_us.push(now - sent);
                w.distinct += 1;
            }
        }
        let empty = r.records.is_empty();
        match r.next_iterator {
            Some(next) => it = next,
            None => break,
        }
        if empty {
            tokio::time::sleep(Duration::from_millis(poll_ms)).await;
        }
    }
    stop.store(true, Ordering::Relaxed);
    let _ = writer.await;
    b.delete_stream(&name).await?;
    Ok(w)
}

impl LatencyRun {
    fn print_push(&self, what: &str, target_ms: u64) {
        let (p50, p99, max) = self.seen.percentiles_ms();
        let l = &self.seen.latencies_us;
        let missing = self.sent.events.saturating_sub(self.seen.distinct);
        println!(
            "latency, push to an HTTP consumer, {what} : p50 {p50:.0} ms  p99 {p99:.0} ms  max \
             {max:.0} ms over {} lines (target p99 ≤ {target_ms} ms) {}; missing {missing}",
            l.len(),
            met(p99 <= target_ms as f64 && missing == 0)
        );
        println!(
            "  {} events sent, {} requests failed; {} received once, {} twice; {} POSTs; {} shards, \
             consumer.poll_interval_ms {}, http max_age_ms {}",
            self.sent.events,
            self.sent.failed_requests,
            self.seen.distinct,
            self.seen.duplicates,
            self.seen.objects,
            self.shards,
            self.poll_ms,
            SinkConfig::http("http://x/").max_age_ms()
        );
    }
}

async fn push_latency_run(
    filters: &Filters,
    secs: u64,
    kinesis: Option<&str>,
) -> anyhow::Result<LatencyRun> {
    #[derive(Default)]
    struct Got {
        seen: HashSet<u64>,
        latencies_us: Vec<i64>,
        duplicates: u64,
        posts: u64,
    }
    let got = Arc::new(Mutex::new(Got::default()));
    let handler = {
        let got = Arc::clone(&got);
        move |body: axum::body::Bytes| {
            let got = Arc::clone(&got);
            async move {
                let now = now_us();
                let mut g = got.lock().unwrap_or_else(|e| e.into_inner());
                g.posts += 1;
                for line in body.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
                    if let Some((seq, sent)) = sent_of(line) {
                        if g.seen.insert(seq) {
                            g.latencies_us.push(now - sent);
                        } else {
                            g.duplicates += 1;
                        }
                    }
                }
                "ok"
            }
        }
    };
    let (url, server) = receiver(handler).await?;
    let dir = tempfile::tempdir()?;
    let name = format!(
        "bench-push-{}-{}",
        std::process::id(),
        now_us() / 1000 % 1_000_000_000
    );
    let mut c = latency_config(dir.path(), kinesis.map(|k| (k, name.as_str())));
    c.sinks.insert("filtered".into(), SinkConfig::http(url));
    let stream = c.pipelines[0].stream.clone();
    drop_filter(&c.filters.dir, "errors-only", &filters.errors_only)?;
    eprintln!(
        "push latency run on {} for {secs} s …",
        kinesis.unwrap_or("the local log")
    );
    let (app, backend) = launch_full(&c).await?;
    let board = app
        .status()
        .cloned()
        .ok_or_else(|| anyhow!("no consumer"))?;
    wait_ready(&board).await?;
    let addr = app.intake_addr.ok_or_else(|| anyhow!("no intake"))?;
    let sent = send_steady(&format!("http://{addr}/v1/streams/{stream}/events"), secs).await?;
    let want = sent.events - sent.failed_events;
    let until = Instant::now() + Duration::from_secs(15);
    while (got.lock().map(|g| g.seen.len() as u64).unwrap_or(0)) < want && Instant::now() < until {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    app.stop().await?;
    server.abort();
    if kinesis.is_some() {
        backend.delete_stream(&stream).await?;
    }
    let g = std::mem::take(&mut *got.lock().unwrap_or_else(|e| e.into_inner()));
    Ok(LatencyRun {
        shards: c.streams.get(&stream).and_then(|s| s.shards).unwrap_or(0),
        poll_ms: c.consumer.poll_interval_ms,
        secs,
        sent,
        seen: Watched {
            distinct: g.seen.len() as u64,
            latencies_us: g.latencies_us,
            duplicates: g.duplicates,
            objects: g.posts,
        },
    })
}

// ---------------------------------------------------------------------------
// 2c. Re-keying into another stream
// ---------------------------------------------------------------------------

/// The stream the re-key run writes into.
const REKEYED: &str = "by-user";

/// Event `n` of the re-key run: 200 bytes of JSON, one of 10,007 users.
fn event_200(n: usize) -> Vec<u8> {
    let head = format!(r#"{{"user":"u{}","n":{n},"pad":""#, n % 10_007);
    let mut e = head.into_bytes();
    let tail = br#""}"#;
    e.resize(200 - tail.len(), b'x');
    e.extend_from_slice(tail);
    e
}

fn rekey(rt: &tokio::runtime::Runtime, filters: &Filters, n: usize) -> anyhow::Result<()> {
    let lines: Vec<Vec<u8>> = (0..n).map(event_200).collect();
    let refs: Vec<&[u8]> = lines.iter().map(Vec::as_slice).collect();
    let dir = tempfile::tempdir()?;
    let mut c = Config::default();
    let any: SocketAddr = SocketAddr::from(([127, 0, 0, 1], 0));
    c.stream.data_dir = dir.path().join("data");
    c.intake.listen = any;
    c.admin.listen = any;
    c.consumer.poll_interval_ms = 10;
    c.filters.dir = dir.path().join("filters");
    c.filters.cache_dir = Some(dir.path().join("cache"));
    let sink = SinkConfig::kinesis(REKEYED);
    let (max_bytes, max_age) = (sink.max_bytes(), sink.max_age_ms());
    c.sinks.insert("rekeyed".into(), sink);
    c.pipelines.push(pipeline(
        "rekey",
        STREAM,
        Some("rekey"),
        &[("field", "user")],
        "rekeyed",
    ));
    drop_filter(&c.filters.dir, "rekey", &filters.rekey)?;
    c.validate("bench")?;
    eprintln!("re-key run: loading {n} events of 200 B into 4 shards …");
    let run = rt.block_on(async {
        let log = LocalLog::open(&c.stream.data_dir, LocalOptions::default())?;
        let loaded = load_kpl(&log, 4, &refs).await?;
        log.create_stream(REKEYED, 4).await?;
        let b = AnyBackend::Local(log.clone());
        eprintln!("re-keying …");
        let start = Instant::now();
        let app = app::launch(
            &c,
            Telemetry::new(),
            Parts::<AnyBackend> {
                intake: None,
                consumer: Some(b.clone()),
                spool: None,
                create: Some(b.clone()),
            },
        )
        .await?;
        let url = format!("http://{}/metrics", app.admin_addr);
        let limit = Duration::from_secs(600);
        let elapsed = loop {
            let text = reqwest::get(&url).await?.text().await?;
            let written = metric(&text, "kinesthetic_pipeline_sink_lines_total");
            if written >= n as f64 {
                break start.elapsed();
            }
            if start.elapsed() > limit {
                app.stop().await?;
                bail!("{written} of {n} events re-keyed in {limit:?}");
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        };
        app.stop().await?;
        // Read it back: events per record, and every event on its key's shard.
        let d = log.describe(REKEYED).await?;
        let (mut records, mut events, mut misplaced, mut smallest) = (0u64, 0u64, 0u64, u64::MAX);
        let mut sizes = Vec::new();
        for s in &d.shards {
            let mut it = log
                .shard_iterator(
                    REKEYED,
                    &s.id,
                    &kinesthetic::stream::StartPosition::TrimHorizon,
                )
                .await?;
            loop {
                let r = log.get_records(&it, 10_000).await?;
                for rec in &r.records {
                    let evs = kinesthetic::stream::kpl::events_of(&rec.data, &rec.partition_key)?;
                    records += 1;
                    events += evs.len() as u64;
                    smallest = smallest.min(evs.len() as u64);
                    sizes.push(rec.data.len());
                    misplaced += evs
                        .iter()
                        .filter(|e| {
                            !s.hash_range
                                .contains(kinesthetic::stream::hash_key_of(&e.partition_key))
                        })
                        .count() as u64;
                }
                match r.next_iterator {
                    Some(next) if !r.records.is_empty() => it = next,
                    _ => break,
                }
            }
        }
        anyhow::Ok((loaded, elapsed, records, events, misplaced, smallest, sizes))
    })?;
    let (loaded, elapsed, records, events, misplaced, smallest, sizes) = run;
    let per_record = events as f64 / records.max(1) as f64;
    let limit = Config::default().intake.record_max_bytes;
    let full = sizes.iter().filter(|s| **s * 10 >= limit * 9).count();
    // The ceiling: events of this size (with key and stamp) one record holds.
    let mut agg = Aggregator::new(limit);
    let mut fits = 0u64;
    for (i, line) in refs.iter().enumerate() {
        let key = format!("u{}", i % 10_007);
        let stamp = Stamp {
            id: EventId {
                listener: 0xbe0c,
                counter: i as u64,
            },
            received_ms: now_us() / 1000,
        };
        if !agg.try_push(&key, line, stamp) {
            break;
        }
        fits += 1;
    }
    println!(
        "re-key, events per record : {per_record:.0} at 200 B (target ≥ 950) {} — {events} events \
         in {records} records on 4 shards ({full} of them ≥ 90 % full, the smallest holding \
         {smallest}); a record holds at most {fits} such events; {misplaced} events on a shard \
         not holding their key",
        met(per_record >= 950.0 && events == n as u64 && misplaced == 0)
    );
    println!(
        "  {n} events read from {} KPL records on {} shards, re-keyed by `user` (10,007 users) \
         in {:.2} s ({:.0} events/s, {:.1} MB/s of events) through the kinesis sink's defaults \
         (batches of ≤ {} MiB or {} ms of records), local log with fsync",
        loaded.records,
        loaded.shards,
        elapsed.as_secs_f64(),
        n as f64 / elapsed.as_secs_f64(),
        n as f64 * 200.0 / 1e6 / elapsed.as_secs_f64(),
        max_bytes >> 20,
        max_age
    );
    Ok(())
}

// ---------------------------------------------------------------------------
// 2d. The index
// ---------------------------------------------------------------------------

/// A config on the local log in `dir` with stream `STREAM` (created by the
/// loader) and a raw pipeline into sink `out`.
fn sink_config(dir: &Path, out: SinkConfig) -> Config {
    let mut c = Config::default();
    let any: SocketAddr = SocketAddr::from(([127, 0, 0, 1], 0));
    c.stream.data_dir = dir.join("data");
    c.intake.listen = any;
    c.admin.listen = any;
    c.consumer.poll_interval_ms = 10;
    c.filters.dir = dir.join("filters");
    c.sinks.insert("out".into(), out);
    c.pipelines.push(pipeline("out", STREAM, None, &[], "out"));
    c
}

/// Writes events `range` into `shards` (event n into shard n % shards,
/// received at `base + n / 10` ms, id (0xbe0c, n)), packed per shard.
async fn load_stamped(
    log: &LocalLog,
    shards: &[kinesthetic::stream::ShardInfo],
    only: Option<&[usize]>,
    range: std::ops::Range<usize>,
    base: i64,
) -> anyhow::Result<u64> {
    let limit = Config::default().intake.record_max_bytes;
    let mut bytes = 0u64;
    for (i, shard) in shards.iter().enumerate() {
        if only.is_some_and(|o| !o.contains(&i)) {
            continue;
        }
        let key = (0u64..)
            .map(|j| format!("idx-{i}-{j}"))
            .find(|k| {
                shard
                    .hash_range
                    .contains(kinesthetic::stream::hash_key_of(k))
            })
            .unwrap_or_default();
        let mut agg = Aggregator::new(limit);
        let mut entries = Vec::new();
        for n in range.clone().filter(|n| n % shards.len() == i) {
            let line = event_200(n);
            bytes += line.len() as u64;
            let stamp = Stamp {
                id: EventId {
                    listener: 0xbe0c,
                    counter: n as u64,
                },
                received_ms: base + (n / 10) as i64,
            };
            if !agg.try_push(&key, &line, stamp) {
                entries.push(agg.finish().data);
                ensure!(agg.try_push(&key, &line, stamp), "an event fits no record");
            }
        }
        if !agg.is_empty() {
            entries.push(agg.finish().data);
        }
        let entries: Vec<PutEntry> = entries
            .into_iter()
            .map(|data| PutEntry {
                partition_key: key.clone(),
                explicit_hash_key: None,
                data,
            })
            .collect();
        for group in put_groups(entries) {
            let out = log.put_records(STREAM, &group).await?;
            ensure!(
                out.iter().all(|o| matches!(o, PutOutcome::Written { .. })),
                "a put failed: {out:?}"
            );
        }
    }
    Ok(bytes)
}

/// The index's entry in `/v1/status`.
async fn index_status(admin: SocketAddr) -> anyhow::Result<serde_json::Value> {
    let text = reqwest::get(format!("http://{admin}/v1/status"))
        .await?
        .text()
        .await?;
    let v: serde_json::Value = serde_json::from_str(&text)?;
    Ok(v["indexes"]["out"].clone())
}

fn launch_consumer(
    c: &Config,
    log: &LocalLog,
) -> impl std::future::Future<Output = anyhow::Result<App>> {
    let b = AnyBackend::Local(log.clone());
    let c = c.clone();
    async move {
        c.validate("bench")?;
        Ok(app::launch(
            &c,
            Telemetry::new(),
            Parts::<AnyBackend> {
                intake: None,
                consumer: Some(b.clone()),
                spool: None,
                create: Some(b),
            },
        )
        .await?)
    }
}

fn index(rt: &tokio::runtime::Runtime, n: usize) -> anyhow::Result<()> {
    let base = now_us() / 1000;
    // Baseline: one shard pushed to a receiver in this process.
    let push = rt.block_on(async {
        let got = Arc::new(AtomicU64::new(0));
        let handler = {
            let got = Arc::clone(&got);
            move |body: axum::body::Bytes| {
                let got = Arc::clone(&got);
                async move {
                    let lines = body.iter().filter(|b| **b == b'\n').count() as u64;
                    got.fetch_add(lines, Ordering::Relaxed);
                    "ok"
                }
            }
        };
        let (url, server) = receiver(handler).await?;
        let dir = tempfile::tempdir()?;
        let c = sink_config(dir.path(), SinkConfig::http(url));
        let log = LocalLog::open(&c.stream.data_dir, LocalOptions::default())?;
        log.create_stream(STREAM, 1).await?;
        let shards: Vec<_> = log.describe(STREAM).await?.open_shards().cloned().collect();
        eprintln!("index bench: {n} events of 200 B into 1 shard, pushed …");
        load_stamped(&log, &shards, None, 0..n, base).await?;
        let start = Instant::now();
        let app = launch_consumer(&c, &log).await?;
        while got.load(Ordering::Relaxed) < n as u64 {
            ensure!(start.elapsed() < Duration::from_secs(600), "push too slow");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let t = start.elapsed();
        app.stop().await?;
        server.abort();
        anyhow::Ok(t)
    })?;
    // The index over 4 shards.
    let (merged, peak, limit) = rt.block_on(async {
        let dir = tempfile::tempdir()?;
        let c = sink_config(dir.path(), SinkConfig::index(dir.path().join("index")));
        let limit = c.sinks["out"].memory_bytes();
        let log = LocalLog::open(&c.stream.data_dir, LocalOptions::default())?;
        log.create_stream(STREAM, 4).await?;
        let shards: Vec<_> = log.describe(STREAM).await?.open_shards().cloned().collect();
        eprintln!("index bench: {n} events of 200 B into 4 shards, merged …");
        load_stamped(&log, &shards, None, 0..n, base).await?;
        let start = Instant::now();
        let app = launch_consumer(&c, &log).await?;
        let mut peak = 0u64;
        loop {
            let s = index_status(app.admin_addr).await?;
            peak = peak.max(s["pending_in_memory_bytes"].as_u64().unwrap_or(0));
            if s["lines"].as_u64().unwrap_or(0) >= n as u64 {
                break;
            }
            ensure!(
                start.elapsed() < Duration::from_secs(600),
                "index too slow: {s}"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let t = start.elapsed();
        app.stop().await?;
        anyhow::Ok((t, peak, limit))
    })?;
    let push_rate = n as f64 / push.as_secs_f64();
    let merged_rate = n as f64 / merged.as_secs_f64();
    let ratio = merged_rate / push_rate;
    println!(
        "index, merged throughput : {merged_rate:.0} events/s over 4 shards vs {push_rate:.0} \
         events/s pushed from 1 shard, ratio {ratio:.2} (target ≥ 0.5) {} — {n} events of 200 B \
         preloaded, timed from launch to the last line merged (pushed); peak pending in memory \
         {:.1} MiB of {:.0} MiB",
        met(ratio >= 0.5),
        peak as f64 / 1048576.0,
        limit as f64 / 1048576.0
    );
    // A burst of 10× the index's memory on three shards while the fourth,
    // read and not idle, has staged nothing: every line must wait.
    let (burst_bytes, peak, staged_peak, limit, rss_growth, all) = rt.block_on(async {
        let dir = tempfile::tempdir()?;
        let mut sink = SinkConfig::index(dir.path().join("index"));
        sink.memory_bytes = Some(4 << 20);
        sink.idle_grace_ms = Some(600_000);
        let limit = sink.memory_bytes();
        let c = sink_config(dir.path(), sink);
        let log = LocalLog::open(&c.stream.data_dir, LocalOptions::default())?;
        log.create_stream(STREAM, 4).await?;
        let shards: Vec<_> = log.describe(STREAM).await?.open_shards().cloned().collect();
        let burst = (10 * limit as usize / 200) * 4 / 3;
        eprintln!("index bench: a burst of {burst} events (10 × memory_bytes on 3 shards) …");
        let rss0 = rss_now();
        let start = Instant::now();
        let app = launch_consumer(&c, &log).await?;
        let bytes = load_stamped(&log, &shards, Some(&[0, 1, 2]), 0..burst, base).await?;
        let (mut peak, mut staged_peak, mut rss_peak) = (0u64, 0u64, 0u64);
        // Until the three shards are staged (the fourth holds them all).
        loop {
            let s = index_status(app.admin_addr).await?;
            peak = peak.max(s["pending_in_memory_bytes"].as_u64().unwrap_or(0));
            let staged = s["staged_bytes"].as_u64().unwrap_or(0);
            staged_peak = staged_peak.max(staged);
            rss_peak = rss_peak.max(rss_now());
            if staged >= bytes {
                break;
            }
            ensure!(
                start.elapsed() < Duration::from_secs(600),
                "staging too slow: {s}"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        // The fourth shard's line comes after all of theirs: they all go.
        load_stamped(
            &log,
            &shards,
            Some(&[3]),
            burst..burst + 4,
            base + 1_000_000,
        )
        .await?;
        let all = loop {
            let s = index_status(app.admin_addr).await?;
            peak = peak.max(s["pending_in_memory_bytes"].as_u64().unwrap_or(0));
            rss_peak = rss_peak.max(rss_now());
            let lines = s["lines"].as_u64().unwrap_or(0);
            // The fourth shard's own line waits in turn for the others
            // (live, not idle) to pass its time: it is not counted.
            let want = (0..burst).filter(|n| n % 4 != 3).count() as u64;
            if lines >= want {
                break lines;
            }
            ensure!(
                start.elapsed() < Duration::from_secs(600),
                "merge too slow: {s}"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        };
        app.stop().await?;
        anyhow::Ok((
            bytes,
            peak,
            staged_peak,
            limit,
            rss_peak.saturating_sub(rss0),
            all,
        ))
    })?;
    println!(
        "index, memory under a burst : peak pending in memory {:.1} MiB, configured {:.0} MiB {} \
         — {:.0} MB of lines (10 × the memory) on 3 shards held back by a 4th that had staged \
         nothing (idle grace 10 min): {:.0} MB waited in the staging files; then {all} lines \
         merged; process RSS grew {:.0} MiB",
        peak as f64 / 1048576.0,
        limit as f64 / 1048576.0,
        // A shard's read may end past its share by one frame (≤ 4 KiB
        // read at least, 4 shards).
        met(peak <= limit + 4 * (8 << 10)),
        burst_bytes as f64 / 1e6,
        staged_peak as f64 / 1e6,
        rss_growth as f64 / 1048576.0
    );
    Ok(())
}

// ---------------------------------------------------------------------------
// 3. RSS of the binary
// ---------------------------------------------------------------------------

fn rss(rt: &tokio::runtime::Runtime, filters: &Filters, secs: u64) -> anyhow::Result<()> {
    let idle_secs = env_num("BENCH_IDLE_SECS", 3);
    let dir = tempfile::tempdir()?;
    let config = embedded_like_config(dir.path(), filters)?;
    let cold = idle_rss(&config, idle_secs)?;
    // The same directory again: the module comes from the cache now.
    let warm = idle_rss(&config, idle_secs)?;
    println!(
        "RSS idle            : {:.1} MiB with a warm module cache, {:.1} MiB with a cold one \
         (compiling errors-only) (target ≤ 64 MiB) {} — {idle_secs} s after start; raw pipeline \
         + errors-only as an automatic pipeline, 4 shards",
        mib(warm),
        mib(cold),
        met(warm.max(cold) <= 64 << 20)
    );

    let dir = tempfile::tempdir()?;
    let config = four_pipelines_config(dir.path(), filters)?;
    let load = rt.block_on(rss_under_load(&config, secs))?;
    println!(
        "RSS under load      : peak VmHWM {:.1} MiB (target ≤ 256 MiB) {} — highest VmRSS \
         sampled {:.1} MiB; raw + errors-only + grep + redact while {} connections posted \
         {:.1} MB/s ({:.0} events/s, {} requests refused with 503) for {secs} s; lines \
         taken in per pipeline: {}",
        mib(load.hwm),
        met(load.hwm <= 256 << 20),
        mib(load.max_rss),
        load.conns,
        load.bytes as f64 / 1e6 / load.secs,
        load.events as f64 / load.secs,
        load.refused,
        load.lines_in
    );
    let rate = load.bytes as f64 / 1e6 / load.secs;
    let window = EMBEDDED_MAX_AGE_MS as f64 / 1000.0;
    println!(
        "  what it holds: open archive objects, compressed as they fill (a pipeline that keeps \
         every line, raw or redact, takes in ≈ {:.0} MB of lines per {window:.0} s window at \
         {rate:.0} MB/s); about 2 MB read ahead per shard and pipeline (16 here); glibc's mmap \
         threshold fixed at {} KiB (kinesthetic::malloc)",
        rate * window,
        kinesthetic::malloc::MMAP_THRESHOLD >> 10
    );
    Ok(())
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1 << 20) as f64
}

/// A TOML string (the paths of this bench are plain).
fn quoted(p: &Path) -> String {
    format!("{:?}", p.display().to_string())
}

/// The embedded default's shape, on free ports, in `dir`.
fn embedded_like_config(dir: &Path, filters: &Filters) -> anyhow::Result<PathBuf> {
    let data = dir.join("data");
    let filters_dir = dir.join("filters");
    drop_filter(&filters_dir, "errors-only", &filters.errors_only)?;
    let text = format!(
        r#"[stream]
data_dir = {data}
[intake]
listen = "127.0.0.1:0"
[admin]
listen = "127.0.0.1:0"
[filters]
dir = {filters}
cache_dir = {cache}
[filters.auto]
stream = "events"
sinks = ["filtered"]
[streams.events]
shards = 4
[sinks.raw]
type = "dir"
path = {raw}
max_age_ms = {age}
[sinks.filtered]
type = "dir"
path = {filtered}
prefix = "{{filter}}"
max_age_ms = {age}
[[pipelines]]
name = "raw"
stream = "events"
sinks = ["raw"]
"#,
        data = quoted(&data),
        filters = quoted(&filters_dir),
        cache = quoted(&dir.join("cache")),
        raw = quoted(&data.join("archive/raw")),
        filtered = quoted(&data.join("archive/filtered")),
        age = EMBEDDED_MAX_AGE_MS,
    );
    let path = dir.join("kinesthetic.toml");
    std::fs::write(&path, text)?;
    Ok(path)
}

/// Four pipelines over `events`: raw, errors-only, grep, redact.
fn four_pipelines_config(dir: &Path, filters: &Filters) -> anyhow::Result<PathBuf> {
    let data = dir.join("data");
    let filters_dir = dir.join("filters");
    drop_filter(&filters_dir, "errors-only", &filters.errors_only)?;
    drop_filter(&filters_dir, "grep", &filters.grep)?;
    drop_filter(&filters_dir, "redact", &filters.redact)?;
    let mut text = format!(
        r#"[stream]
data_dir = {data}
[intake]
listen = "127.0.0.1:0"
[admin]
listen = "127.0.0.1:0"
[filters]
dir = {filters}
cache_dir = {cache}
[streams.events]
shards = 4
[sinks.archive]
type = "dir"
path = {archive}
prefix = "{{pipeline}}"
max_age_ms = {age}
"#,
        data = quoted(&data),
        filters = quoted(&filters_dir),
        cache = quoted(&dir.join("cache")),
        archive = quoted(&data.join("archive")),
        age = EMBEDDED_MAX_AGE_MS,
    );
    for (name, filter, params) in [
        ("raw", None, ""),
        ("errors", Some("errors-only"), ""),
        (
            "grep",
            Some("grep"),
            r#"params = { pattern = "eu-west-1a" }"#,
        ),
        ("redact", Some("redact"), ""),
    ] {
        text.push_str(&format!(
            "[[pipelines]]\nname = \"{name}\"\nstream = \"events\"\nsinks = [\"archive\"]\n{}{params}\n",
            filter.map_or(String::new(), |f| format!("filter = \"{f}\"\n"))
        ));
    }
    let path = dir.join("kinesthetic.toml");
    std::fs::write(&path, text)?;
    Ok(path)
}

/// `kinesthetic serve --config FILE`, started and listening.
struct Server {
    child: Child,
    intake: SocketAddr,
    admin: SocketAddr,
    /// Its stderr so far (the last lines), for errors.
    log: Arc<Mutex<Vec<String>>>,
}

impl Server {
    fn start(config: &Path) -> anyhow::Result<Server> {
        let mut child = Command::new(env!("CARGO_BIN_EXE_kinesthetic"))
            .arg("serve")
            .arg("--config")
            .arg(config)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .context("starting kinesthetic serve")?;
        let stderr = child
            .stderr
            .take()
            .ok_or_else(|| anyhow!("no stderr from serve"))?;
        let log = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        {
            let log = Arc::clone(&log);
            std::thread::spawn(move || read_stderr(stderr, &tx, &log));
        }
        let mut server = Server {
            child,
            intake: SocketAddr::from(([0, 0, 0, 0], 0)),
            admin: SocketAddr::from(([0, 0, 0, 0], 0)),
            log,
        };
        let (mut intake, mut admin) = (None, None);
        while intake.is_none() || admin.is_none() {
            match rx.recv_timeout(Duration::from_secs(60)) {
                Ok(Banner::Intake(a)) => intake = Some(a),
                Ok(Banner::Admin(a)) => admin = Some(a),
                Err(_) => bail!("kinesthetic serve did not start:\n{}", server.stderr_tail()),
            }
        }
        server.intake = intake.ok_or_else(|| anyhow!("no intake address"))?;
        server.admin = admin.ok_or_else(|| anyhow!("no admin address"))?;
        Ok(server)
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn stderr_tail(&self) -> String {
        self.log.lock().map(|l| l.join("\n")).unwrap_or_default()
    }

    /// `(VmRSS, VmHWM)` in bytes.
    fn memory(&self) -> anyhow::Result<(u64, u64)> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid()))?;
        let field = |name: &str| -> anyhow::Result<u64> {
            let kb: u64 = status
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .and_then(|v| v.split_whitespace().next())
                .and_then(|v| v.parse().ok())
                .ok_or_else(|| anyhow!("no {name} in /proc/PID/status"))?;
            Ok(kb << 10)
        };
        Ok((field("VmRSS:")?, field("VmHWM:")?))
    }

    /// SIGTERM, then waits for the graceful stop (at most 30 s).
    fn stop(mut self) -> anyhow::Result<()> {
        let pid = self.pid().to_string();
        let status = Command::new("kill").args(["-TERM", &pid]).status()?;
        ensure!(status.success(), "kill -TERM {pid} failed");
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(30) {
            if let Some(exit) = self.child.try_wait()? {
                ensure!(
                    exit.success(),
                    "kinesthetic serve exited with {exit}:\n{}",
                    self.stderr_tail()
                );
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        bail!("kinesthetic serve did not stop within 30 s of SIGTERM")
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        // Only when still running (an error path): our own child, by handle.
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

enum Banner {
    Intake(SocketAddr),
    Admin(SocketAddr),
}

/// Reads serve's stderr to its end: the banner's addresses go to `tx`,
/// the last 50 lines are kept in `log`.
fn read_stderr(
    stderr: std::process::ChildStderr,
    tx: &std::sync::mpsc::Sender<Banner>,
    log: &Mutex<Vec<String>>,
) {
    // `intake on http://ADDR (listener …)`, `admin on http://ADDR: /v1/status …`
    let addr_after = |line: &str, prefix: &str| -> Option<SocketAddr> {
        let rest = line.split(prefix).nth(1)?;
        let addr: String = rest
            .chars()
            .take_while(|c| c.is_ascii_hexdigit() || matches!(c, '.' | ':' | '[' | ']'))
            .collect();
        addr.trim_end_matches(':').parse().ok()
    };
    for line in std::io::BufReader::new(stderr).lines() {
        let Ok(line) = line else { break };
        if let Some(a) = addr_after(&line, "intake on http://") {
            let _ = tx.send(Banner::Intake(a));
        }
        if let Some(a) = addr_after(&line, "admin on http://") {
            let _ = tx.send(Banner::Admin(a));
        }
        if let Ok(mut l) = log.lock() {
            l.push(line);
            if l.len() > 50 {
                l.remove(0);
            }
        }
    }
}

/// VmRSS `secs` seconds after start (then stopped with SIGTERM).
fn idle_rss(config: &Path, secs: u64) -> anyhow::Result<u64> {
    let server = Server::start(config)?;
    std::thread::sleep(Duration::from_secs(secs));
    let (rss, _) = server.memory()?;
    server.stop()?;
    Ok(rss)
}

struct UnderLoad {
    hwm: u64,
    max_rss: u64,
    conns: usize,
    events: u64,
    bytes: u64,
    refused: u64,
    secs: f64,
    lines_in: String,
}

/// Starts the server on `config`, posts as fast as `BENCH_CONNS`
/// connections can for `secs`, sampling VmRSS every 100 ms; VmHWM at the
/// end.
async fn rss_under_load(config: &Path, secs: u64) -> anyhow::Result<UnderLoad> {
    let server = Server::start(config)?;
    let conns = usize::try_from(env_num("BENCH_CONNS", 4))?;
    let url = format!("http://{}/v1/streams/events/events", server.intake);
    let max_rss = Arc::new(AtomicU64::new(0));
    let done = Arc::new(AtomicBool::new(false));
    let pid = server.pid();
    let sampler = {
        let (max_rss, done) = (Arc::clone(&max_rss), Arc::clone(&done));
        std::thread::spawn(move || {
            while !done.load(Ordering::Relaxed) {
                if let Some(rss) = vm_rss(pid) {
                    max_rss.fetch_max(rss, Ordering::Relaxed);
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        })
    };
    let load = flood(&url, conns, secs).await;
    // Let the consumer catch up a little while still sampling.
    tokio::time::sleep(Duration::from_secs(2)).await;
    done.store(true, Ordering::Relaxed);
    let _ = sampler.join();
    let (_, hwm) = server.memory()?;
    let lines_in = lines_in_per_pipeline(server.admin)
        .await
        .unwrap_or_default();
    server.stop()?;
    let load = load?;
    Ok(UnderLoad {
        hwm,
        max_rss: max_rss.load(Ordering::Relaxed),
        conns,
        events: load.events,
        bytes: load.bytes,
        refused: load.refused,
        secs: load.secs,
        lines_in,
    })
}

fn vm_rss(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()?;
    Some(kb << 10)
}

/// `name lines_in` of every pipeline, from `/v1/status`.
async fn lines_in_per_pipeline(admin: SocketAddr) -> anyhow::Result<String> {
    let text = reqwest::get(format!("http://{admin}/v1/status"))
        .await?
        .text()
        .await?;
    let v: serde_json::Value = serde_json::from_str(&text)?;
    let pipelines = v["pipelines"]
        .as_object()
        .ok_or_else(|| anyhow!("no pipelines in /v1/status"))?;
    Ok(pipelines
        .iter()
        .map(|(name, p)| {
            let n: u64 = p["shards"]
                .as_object()
                .map(|s| s.values().filter_map(|s| s["lines_in"].as_u64()).sum())
                .unwrap_or(0);
            format!("{name} {n}")
        })
        .collect::<Vec<_>>()
        .join(", "))
}

struct Flood {
    events: u64,
    bytes: u64,
    refused: u64,
    secs: f64,
}

/// ≈ 1 MB bodies of generated logs, from `conns` connections, for `secs`.
async fn flood(url: &str, conns: usize, secs: u64) -> anyhow::Result<Flood> {
    let data = kinesthetic::datagen::ndjson_logs(2, 16_000_000);
    let bodies: Arc<Vec<(Bytes, u64)>> = Arc::new(bodies_of(&data, 1_000_000));
    let events = Arc::new(AtomicU64::new(0));
    let bytes = Arc::new(AtomicU64::new(0));
    let refused = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let end = start + Duration::from_secs(secs);
    let mut tasks = tokio::task::JoinSet::new();
    for c in 0..conns {
        let (url, bodies) = (url.to_owned(), Arc::clone(&bodies));
        let (events, bytes, refused) = (
            Arc::clone(&events),
            Arc::clone(&bytes),
            Arc::clone(&refused),
        );
        tasks.spawn(async move {
            let client = reqwest::Client::new();
            let mut i = c;
            while Instant::now() < end {
                let (body, n) = &bodies[i % bodies.len()];
                i += conns;
                let r = client
                    .post(&url)
                    .header("content-type", "application/x-ndjson")
                    .body(body.clone())
                    .send()
                    .await?;
                let status = r.status();
                let _ = r.bytes().await?;
                if status.is_success() {
                    events.fetch_add(*n, Ordering::Relaxed);
                    bytes.fetch_add(body.len() as u64, Ordering::Relaxed);
                } else if status.as_u16() == 503 {
                    refused.fetch_add(1, Ordering::Relaxed);
                    tokio::time::sleep(Duration::from_millis(50)).await;
                } else {
                    bail!("HTTP {status}");
                }
            }
            anyhow::Ok(())
        });
    }
    while let Some(r) = tasks.join_next().await {
        r??;
    }
    Ok(Flood {
        events: events.load(Ordering::Relaxed),
        bytes: bytes.load(Ordering::Relaxed),
        refused: refused.load(Ordering::Relaxed),
        secs: start.elapsed().as_secs_f64(),
    })
}

/// `data` cut at line ends into bodies of about `size` bytes, with their
/// line counts.
fn bodies_of(data: &[u8], size: usize) -> Vec<(Bytes, u64)> {
    let mut out = Vec::new();
    let mut rest = data;
    while !rest.is_empty() {
        let cut = rest
            .get(size..)
            .and_then(|tail| tail.iter().position(|&b| b == b'\n'))
            .map_or(rest.len(), |i| size + i + 1);
        let (body, tail) = rest.split_at(cut);
        let lines = body.iter().filter(|&&b| b == b'\n').count() as u64;
        out.push((Bytes::copy_from_slice(body), lines));
        rest = tail;
    }
    out
}
