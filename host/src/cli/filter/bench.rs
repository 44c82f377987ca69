//! `kinesthetic filter bench`: MB/s with a fresh instance per batch (as
//! production runs), with one warm instance (the reference), and the
//! per-job overhead.

use std::path::Path;
use std::process::ExitCode;

use anyhow::{Context, bail};

use super::RunOpts;
use crate::event::{Batch, batches_of};
use crate::filter::{Input, bench};

pub(super) fn bench(
    filter: &Path,
    input: Option<&Path>,
    mb: usize,
    rounds: usize,
    opts: &RunOpts,
) -> anyhow::Result<ExitCode> {
    let runtime = opts.runtime()?;
    let f = runtime.load_file(filter)?;
    let data = match input {
        Some(p) => std::fs::read(p).with_context(|| format!("cannot read {}", p.display()))?,
        None => crate::datagen::ndjson_logs(1, mb * 1_000_000),
    };
    // Lines as the intake (and `run`) splits them.
    let events = || crate::event::events_of_body(&data).map(|(_, e)| e);
    if events().next().is_none() {
        bail!(
            "no lines to measure in {}",
            input.map_or("the generated data (--mb 0)".to_owned(), |p| p
                .display()
                .to_string())
        );
    }
    let inputs: Vec<Input> = batches_of(events(), opts.batch_lines, 1, 0, 0)?
        .into_iter()
        .map(Input::from)
        .collect();
    let tiny: Input = batches_of(events().take(1), 1, 1, 0, 0)?
        .into_iter()
        .next()
        .map(Input::from)
        .unwrap_or_else(|| Input::from(Batch::default()));
    let limits = opts.limits();
    let params = opts.params.clone();
    let best = |mut run: Box<dyn FnMut() -> anyhow::Result<bench::Throughput> + '_>| {
        let mut best: Option<bench::Throughput> = None;
        for _ in 0..rounds.max(1) {
            let t = run()?;
            if best.is_none_or(|b| t.elapsed < b.elapsed) {
                best = Some(t);
            }
        }
        best.context("no rounds")
    };
    let fresh = best(Box::new(|| {
        Ok(bench::fresh(&f, &inputs, &params, &limits)?)
    }))?;
    let warm = best(Box::new(|| Ok(bench::warm(&f, &inputs, &params, &limits)?)))?;
    let over = bench::overhead(&f, &tiny, &params, &limits, 20_000)?;
    println!(
        "filter {} ({} bytes, sha256 {}), {} lines in {} batches of ≤ {} lines, {:.1} MB, best of {}",
        f.name(),
        f.info().size,
        &f.sha256()[..12],
        fresh.lines,
        fresh.jobs,
        opts.batch_lines,
        fresh.bytes as f64 / 1e6,
        rounds.max(1)
    );
    println!(
        "  fresh instance per batch : {:>9.1} MB/s  {:>8.1} µs/batch  ({} lines out)",
        fresh.mb_per_s(),
        fresh.us_per_job(),
        fresh.lines_out
    );
    println!(
        "  one warm instance        : {:>9.1} MB/s  {:>8.1} µs/batch",
        warm.mb_per_s(),
        warm.us_per_job()
    );
    println!(
        "  fresh ÷ warm             : {:>9.3}",
        fresh.mb_per_s() / warm.mb_per_s()
    );
    println!(
        "  per-job overhead (1 line): median {:.2} µs, p99 {:.2} µs over {} jobs",
        over.median.as_secs_f64() * 1e6,
        over.p99.as_secs_f64() * 1e6,
        over.samples
    );
    for (what, input, n) in [
        ("1-line job", &tiny, 2_000),
        ("full batch", inputs.first().unwrap_or(&tiny), 100),
    ] {
        if input.is_empty() {
            continue;
        }
        let p = bench::phases(&f, input, &params, &limits, n)?;
        let parts: Vec<String> = bench::PHASES
            .iter()
            .zip(p.medians)
            .map(|(name, d)| format!("{name} {:.1}", d.as_secs_f64() * 1e6))
            .collect();
        println!(
            "  phases, {what} (µs, medians): {} · memory {} KiB",
            parts.join(" · "),
            p.memory_bytes >> 10
        );
    }
    Ok(ExitCode::SUCCESS)
}
