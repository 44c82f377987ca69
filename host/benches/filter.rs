//! `cargo xtask bench filter` (or `cargo bench -p kinesthetic --bench filter`):
//! the figures of the filter runtime, side by side in one run.
//!
//! * MB/s per core of `errors-only` as Wasm, fresh instance per 1,000-line batch
//! * MB/s of the same Rust code compiled natively
//! * MB/s with one reused warm instance
//! * per-job overhead (Store + instantiate + init + call + drop, tiny batch)
//! * the same filter in the other languages built here (every `errors-only-*`
//!   of the build: Python, JavaScript): fresh MB/s, µs per batch, a 1-line
//!   job's µs, memory per instance, ratio to Rust
//! * per language, the resident memory each live instance adds and what the
//!   pool keeps per slot after it, with the module's data copied into each
//!   instance and mapped copy-on-write
//!
//! Data: a seeded ≈ 200 MB NDJSON log set (`BENCH_MB` to change the size).
#![allow(clippy::print_stdout, clippy::print_stderr)]

mod common;

use common::rss_now;
use std::time::Instant;

use kinesthetic::event::{batches_of, split_lines};
use kinesthetic::filter::{EngineSettings, Input, Limits, Runtime, bench};

fn main() -> anyhow::Result<()> {
    let mb: usize = std::env::var("BENCH_MB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200);
    let rounds: usize = std::env::var("BENCH_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3);
    let root = std::path::PathBuf::from(
        std::env::var_os("CARGO_MANIFEST_DIR").unwrap_or_else(|| env!("CARGO_MANIFEST_DIR").into()),
    )
    .join("..");
    let out_dir = std::env::var_os("CARGO_TARGET_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| root.join("target"))
        .join("filters");
    eprintln!("building the example filters into {} …", out_dir.display());
    let built = xtask::build_filters(&out_dir).map_err(anyhow::Error::msg)?;
    let wasm = built
        .iter()
        .find(|f| f.name == "errors-only")
        .map(|f| f.path.clone())
        .ok_or_else(|| anyhow::anyhow!("errors-only was not built"))?;

    eprintln!("generating {mb} MB of NDJSON logs (seed 1) …");
    let data = kinesthetic::datagen::ndjson_logs(1, mb * 1_000_000);
    let lines: Vec<&[u8]> = split_lines(&data).collect();
    let avg = data.len() as f64 / lines.len() as f64;

    // Native: the same Rust code, compiled for this machine.
    let mut native_best = f64::MAX;
    let mut native_kept = 0;
    for _ in 0..rounds {
        let mut out = Vec::with_capacity(1 << 16);
        let mut kept = 0usize;
        let t = Instant::now();
        for l in &lines {
            out.clear();
            kept += usize::from(errors_only::errors_only_line(l, &mut out));
        }
        native_best = native_best.min(t.elapsed().as_secs_f64());
        native_kept = kept;
    }
    let native_mbs = data.len() as f64 / 1e6 / native_best;

    // Engine levers can be varied for experiments.
    let mut settings = EngineSettings::default();
    if let Some(v) = std::env::var("BENCH_KEEP_RESIDENT")
        .ok()
        .and_then(|v| v.parse().ok())
    {
        settings.keep_resident_bytes = v;
    }
    if let Ok(v) = std::env::var("BENCH_COW") {
        settings.memory_init_cow = v == "1";
    }
    eprintln!("engine: {settings:?}");
    let runtime = Runtime::new(settings.clone())?;
    let filter = runtime.load_file(&wasm)?;
    let inputs: Vec<Input> = batches_of(lines.iter().copied(), 1000, 1, 0, 0)?
        .into_iter()
        .map(Input::from)
        .collect();
    let tiny: Input = batches_of(lines.iter().copied().take(1), 1, 1, 0, 0)?
        .into_iter()
        .map(Input::from)
        .next()
        .ok_or_else(|| anyhow::anyhow!("no data"))?;
    let limits = Limits::default();
    let params = Vec::new();
    let (fresh, warm) = fresh_and_warm(&filter, &inputs, &params, &limits, rounds)?;
    if fresh.lines_out != native_kept as u64 {
        anyhow::bail!(
            "Wasm kept {} lines but native kept {native_kept}: not the same code?",
            fresh.lines_out
        );
    }
    let jobs: usize = std::env::var("BENCH_JOBS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20_000);
    let over = bench::overhead(&filter, &tiny, &params, &limits, jobs)?;
    let tiny_phases = bench::phases(&filter, &tiny, &params, &limits, 5_000)?;
    let big_phases = bench::phases(&filter, &inputs[0], &params, &limits, 300)?;

    println!(
        "errors-only over {:.1} MB, {} lines (avg {avg:.0} B), {} kept; 1,000-line batches; best of {rounds}; one core",
        data.len() as f64 / 1e6,
        lines.len(),
        native_kept
    );
    println!("  {:<38} {:>10} {:>12}", "", "MB/s", "µs/batch");
    println!(
        "  {:<38} {:>10.1} {:>12.1}",
        "native (same Rust code)",
        native_mbs,
        native_best * 1e6 / inputs.len() as f64
    );
    println!(
        "  {:<38} {:>10.1} {:>12.1}",
        "Wasm, fresh instance per batch",
        fresh.mb_per_s(),
        fresh.us_per_job()
    );
    println!(
        "  {:<38} {:>10.1} {:>12.1}",
        "Wasm, one warm instance",
        warm.mb_per_s(),
        warm.us_per_job()
    );
    println!(
        "  Wasm fresh ÷ native : {:.3}   (target ≥ 0.75)",
        fresh.mb_per_s() / native_mbs
    );
    println!(
        "  Wasm fresh ÷ warm   : {:.3}   (target ≥ 0.90)",
        fresh.mb_per_s() / warm.mb_per_s()
    );
    println!(
        "  Wasm fresh MB/s     : {:.0}   (target ≥ 2,000)",
        fresh.mb_per_s()
    );
    println!(
        "  per-job overhead    : median {:.2} µs, p99 {:.2} µs over {} jobs   (target median ≤ 10 µs)",
        over.median.as_secs_f64() * 1e6,
        over.p99.as_secs_f64() * 1e6,
        over.samples
    );
    let fmt = |p: bench::Phases| {
        let mut s = bench::PHASES
            .iter()
            .zip(p.medians)
            .map(|(n, d)| format!("{n} {:.1}", d.as_secs_f64() * 1e6))
            .collect::<Vec<_>>()
            .join(" · ");
        s.push_str(&format!(" · memory {} KiB", p.memory_bytes >> 10));
        s
    };
    println!(
        "  phases, 1-line job (µs, medians)     : {}",
        fmt(tiny_phases)
    );
    println!(
        "  phases, 1,000-line job (µs, medians) : {}",
        fmt(big_phases)
    );
    // What isolation costs at least: the next job must not see this job's
    // bytes, so the memory it used is zeroed (or unmapped and faulted in
    // again, which is slower). Compare with the warm instance, which skips it.
    let used = usize::try_from(big_phases.memory_bytes).unwrap_or(usize::MAX);
    let floor = bench::zeroing_floor(used, 300);
    let warm_us = warm.us_per_job();
    let floor_us = floor.as_secs_f64() * 1e6;
    println!(
        "  isolation floor     : zeroing the {} KiB a 1,000-line job used takes {floor_us:.1} µs (memset); \
         fresh ÷ warm can reach at most {:.3} at this warm speed",
        used >> 10,
        warm_us / (warm_us + floor_us)
    );
    // A fresh instance also pays what a 1-line job pays besides its call:
    // new store, instantiate, init, drop.
    let fixed_us: f64 = [0, 1, 2, 4]
        .iter()
        .map(|&i| tiny_phases.medians[i].as_secs_f64() * 1e6)
        .sum();
    println!(
        "                        with a 1-line job's fixed cost too ({fixed_us:.1} µs: store, instantiate, init, drop), \
         at most {:.3}",
        warm_us / (warm_us + floor_us + fixed_us)
    );

    // The lever the floor points at: no memory growth at all. When the
    // module's initial memory already holds a 1,000-line job, wasmtime never
    // opens pages at `memory.grow` and never closes them again (mprotect) at
    // the next instantiation. But then every job, a 1-line one too, resets
    // all of that memory. `BENCH_PRESIZED=0` skips this part.
    if std::env::var("BENCH_PRESIZED").as_deref() != Ok("0") {
        let page = 64usize << 10;
        let bytes = used.div_ceil(page) * page;
        let flag = format!("link-arg=--initial-memory={bytes}");
        eprintln!("building errors-only with -C {flag} …");
        let path =
            xtask::build_rust_variant("errors-only", "presized", &["-C".into(), flag.clone()])
                .map_err(anyhow::Error::msg)?;
        let variant = runtime.load_file(&path)?;
        let (vfresh, vwarm) = fresh_and_warm(&variant, &inputs, &params, &limits, rounds)?;
        if vfresh.lines_out != fresh.lines_out {
            anyhow::bail!(
                "the presized build kept {} lines, the regular one {}",
                vfresh.lines_out,
                fresh.lines_out
            );
        }
        let vover = bench::overhead(&variant, &tiny, &params, &limits, jobs)?;
        let vbig = bench::phases(&variant, &inputs[0], &params, &limits, 300)?;
        println!(
            "  lever, measured     : initial memory presized to {} KiB at link time (-C {flag}); a 1,000-line job then uses {} KiB",
            bytes >> 10,
            vbig.memory_bytes >> 10
        );
        println!(
            "                        fresh {:.1} MB/s, warm {:.1} MB/s, fresh ÷ warm {:.3}; \
             but per-job overhead median {:.2} µs: every job, a 1-line one too, resets all {} KiB",
            vfresh.mb_per_s(),
            vwarm.mb_per_s(),
            vfresh.mb_per_s() / vwarm.mb_per_s(),
            vover.median.as_secs_f64() * 1e6,
            bytes >> 10
        );
    }

    // The same filter in the other languages built here (every
    // `errors-only-*`: Python, JavaScript), on the first 20 batches of the
    // same data, beside the Rust one measured the same way.
    // `BENCH_LANGUAGES=0` skips this part.
    if std::env::var("BENCH_LANGUAGES").as_deref() != Ok("0") {
        let few = &inputs[..inputs.len().min(20)];
        println!(
            "errors-only by language, over the first {} batches; fresh instance per batch; best of {rounds}",
            few.len()
        );
        println!(
            "  {:<10} {:>9} {:>11} {:>13} {:>14} {:>10}",
            "", "MB/s", "µs/batch", "job µs (1 l.)", "memory/inst.", "× Rust"
        );
        let mut rust_mbs = f64::NAN;
        let others = built.iter().filter(|f| f.name.starts_with("errors-only-"));
        for f in
            std::iter::once((&wasm, "rust")).chain(others.map(|f| (&f.path, f.language.as_str())))
        {
            let lf = runtime.load_file(f.0)?;
            let (fr, _) = fresh_and_warm(&lf, few, &params, &limits, rounds)?;
            if fr.lines_out != fresh_lines(few, &filter, &params, &limits)? {
                anyhow::bail!("{}: another output than the Rust errors-only", f.1);
            }
            let tiny = bench::phases(&lf, &tiny, &params, &limits, 200)?;
            let job_us: f64 = tiny.medians.iter().map(|d| d.as_secs_f64() * 1e6).sum();
            let mbs = fr.mb_per_s();
            if f.1 == "rust" {
                rust_mbs = mbs;
            }
            println!(
                "  {:<10} {:>9.1} {:>11.0} {:>13.0} {:>11} KiB {:>10.3}",
                f.1,
                mbs,
                fr.us_per_job(),
                job_us,
                tiny.memory_bytes >> 10,
                mbs / rust_mbs
            );
        }

        // What a live instance holds resident, by language, with the
        // module's data copied into each instance's memory and mapped
        // copy-on-write from one image (the default): `LIVE` instances held at
        // once (each after init and one batch, as a running job), against
        // the process's resident set before them, in a runtime of its own.
        const LIVE: usize = 16;
        println!(
            "live instances: {LIVE} held at once, each after init and one 1,000-line batch; \
             resident memory each adds (VmRSS), what the pool keeps per slot after they end, \
             and a 1-line job's µs"
        );
        println!(
            "  {:<10} {:>24} {:>24} {:>21}",
            "", "copied", "copy-on-write (default)", "job µs copied / CoW"
        );
        let others = built.iter().filter(|f| f.name.starts_with("errors-only-"));
        for f in
            std::iter::once((&wasm, "rust")).chain(others.map(|f| (&f.path, f.language.as_str())))
        {
            let mut cells = Vec::new();
            let mut jobs_us = Vec::new();
            for cow in [false, true] {
                let rt = Runtime::new(EngineSettings {
                    memory_init_cow: cow,
                    ..settings.clone()
                })?;
                let lf = rt.load_file(f.0)?;
                let (live, kept) = live_instance_bytes(&lf, &inputs[0], &params, &limits, LIVE)?;
                cells.push(format!(
                    "{:>7.1} MiB, {:>5.1} kept",
                    live as f64 / f64::from(1 << 20),
                    kept as f64 / f64::from(1 << 20)
                ));
                let tiny = bench::phases(&lf, &tiny, &params, &limits, 200)?;
                jobs_us.push(
                    tiny.medians
                        .iter()
                        .map(|d| d.as_secs_f64() * 1e6)
                        .sum::<f64>(),
                );
            }
            println!(
                "  {:<10} {:>24} {:>24} {:>10.0} / {:<8.0}",
                f.1, cells[0], cells[1], jobs_us[0], jobs_us[1]
            );
        }
    }
    Ok(())
}

/// Resident bytes each of `n` live instances of `filter` adds (each after
/// init and one run of `input`, all held at once), and what stays resident
/// per instance once they are dropped (the pool keeps slots' memory).
fn live_instance_bytes(
    filter: &kinesthetic::filter::LoadedFilter,
    input: &Input,
    params: &kinesthetic::filter::Params,
    limits: &Limits,
    n: usize,
) -> anyhow::Result<(u64, u64)> {
    let before = rss_now();
    let mut live = Vec::with_capacity(n);
    for _ in 0..n {
        let mut w = filter.warm(params, limits)?;
        w.run(input)?;
        live.push(w);
    }
    let during = rss_now();
    drop(live);
    let after = rss_now();
    let per = |b: u64| b.saturating_sub(before) / n as u64;
    Ok((per(during), per(after)))
}

/// Lines the Rust `errors-only` keeps of `inputs`.
fn fresh_lines(
    inputs: &[Input],
    filter: &kinesthetic::filter::LoadedFilter,
    params: &kinesthetic::filter::Params,
    limits: &Limits,
) -> anyhow::Result<u64> {
    Ok(bench::fresh(filter, inputs, params, limits)?.lines_out)
}

/// The best of `rounds` runs over `inputs`, fresh instances and one warm
/// instance alternating (so that both see the machine in the same state).
fn fresh_and_warm(
    filter: &kinesthetic::filter::LoadedFilter,
    inputs: &[Input],
    params: &kinesthetic::filter::Params,
    limits: &Limits,
    rounds: usize,
) -> anyhow::Result<(bench::Throughput, bench::Throughput)> {
    let mut fresh: Option<bench::Throughput> = None;
    let mut warm: Option<bench::Throughput> = None;
    for _ in 0..rounds {
        let f = bench::fresh(filter, inputs, params, limits)?;
        if fresh.is_none_or(|b| f.elapsed < b.elapsed) {
            fresh = Some(f);
        }
        let w = bench::warm(filter, inputs, params, limits)?;
        if warm.is_none_or(|b| w.elapsed < b.elapsed) {
            warm = Some(w);
        }
    }
    match (fresh, warm) {
        (Some(f), Some(w)) => Ok((f, w)),
        _ => anyhow::bail!("no rounds"),
    }
}
