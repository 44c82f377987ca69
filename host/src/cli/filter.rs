//! `kinesthetic filter …`: run, check, test, scaffold and benchmark filters.

use std::io::{BufRead, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use crate::config::FilterLimits;
use crate::event::{Batch, batches_of, split_lines};
use crate::filter::{
    EngineSettings, Input, IsolationBudget, Limits, LoadedFilter, Params, Ran, Runtime, bench,
    run_batch,
};
use anyhow::{Context, bail};
use clap::{Args, Subcommand};

#[derive(Debug, Subcommand)]
pub(crate) enum FilterCommand {
    /// Run a filter over lines from a file or stdin; kept lines go to stdout.
    ///
    /// Lines are split as the intake splits a body (`\n` or `\r\n` ends a
    /// line and is not part of it; blank lines are skipped, but counted in
    /// line numbers) and batched (`--batch-lines`), each batch on a fresh
    /// instance, exactly as the pipeline runs them. When a batch fails, it is bisected
    /// to find the failing line(s): the other lines' output is still
    /// written, and each poison line is reported on stderr with its line
    /// number. The exit code is 1 if any line or batch failed.
    ///
    /// Example: kinesthetic filter run grep.wasm --param pattern=sshd /var/log/auth.log
    Run {
        /// The filter component (`.wasm`).
        filter: PathBuf,
        /// Input file (one event a line); stdin when absent or `-`.
        input: Option<PathBuf>,
        #[command(flatten)]
        opts: RunOpts,
        /// Print lines in/out, MB/s and µs per job to stderr at the end.
        #[arg(long)]
        stats: bool,
        /// Prefix each output line with its partition key and a tab.
        #[arg(long)]
        with_key: bool,
        /// Prefix each output line with its route (or `-`) and a tab.
        #[arg(long)]
        with_route: bool,
    },
    /// Validate a component against the filter world; print its exports,
    /// imports, size and SHA-256.
    Check {
        /// The filter component (`.wasm`).
        filter: PathBuf,
        /// The memory cap its jobs will run under, in MiB (a pipeline's
        /// `limits.memory_mib`): a module that starts with more fails every
        /// job, so check refuses it.
        #[arg(long, default_value_t = 64)]
        memory_mib: u64,
        #[command(flatten)]
        engine: EngineOpts,
    },
    /// Run a filter over an input file and compare with the expected output;
    /// print a diff and exit 1 when they differ.
    Test {
        /// The filter component (`.wasm`).
        filter: PathBuf,
        /// Input lines.
        #[arg(long)]
        input: PathBuf,
        /// Expected output lines.
        #[arg(long)]
        expect: PathBuf,
        #[command(flatten)]
        opts: RunOpts,
    },
    /// Scaffold a Rust filter crate that builds with one command and passes
    /// its own test.
    New {
        /// Crate name (letters, digits, `-` and `_`).
        name: String,
        /// Parent directory of the new crate.
        #[arg(long, default_value = ".")]
        dir: PathBuf,
        /// Path of the `kinesthetic-filter` SDK crate (default: the SDK of
        /// the checkout this binary was built from).
        #[arg(long)]
        sdk: Option<PathBuf>,
    },
    /// Measure a filter: MB/s with a fresh instance per batch (production),
    /// with one warm instance (reference), and the per-job overhead.
    Bench {
        /// The filter component (`.wasm`).
        filter: PathBuf,
        /// Input lines; default: a generated NDJSON log data set.
        input: Option<PathBuf>,
        /// Size of the generated data set in MB when no input is given.
        #[arg(long, default_value_t = 50)]
        mb: usize,
        /// Repeat the measurement this many times and keep the best.
        #[arg(long, default_value_t = 3)]
        rounds: usize,
        #[command(flatten)]
        opts: RunOpts,
    },
}

#[derive(Debug, Args)]
pub(crate) struct RunOpts {
    /// A parameter for the filter's `init`, as KEY=VALUE (repeatable).
    #[arg(long = "param", short = 'p', value_parser = parse_param)]
    params: Vec<(String, String)>,
    /// Lines per batch (one fresh instance per batch).
    #[arg(long, default_value_t = 1000)]
    batch_lines: usize,
    /// Memory cap per instance, in MiB.
    #[arg(long, default_value_t = 64)]
    memory_mib: u64,
    /// Deadline per batch, in milliseconds.
    #[arg(long, default_value_t = 1000)]
    deadline_ms: u64,
    /// Deterministic instruction budget per batch (enables fuel counting,
    /// which costs 20–30 % of throughput).
    #[arg(long)]
    fuel: Option<u64>,
    /// Time the isolation of one failed batch (bisection with fresh
    /// instances) may take, in milliseconds; past it, the lines not yet
    /// isolated are reported as failed [default: 20 deadlines, at least 1 s].
    #[arg(long)]
    isolation_ms: Option<u64>,
    #[command(flatten)]
    engine: EngineOpts,
}

#[derive(Debug, Args)]
pub(crate) struct EngineOpts {
    /// Directory of precompiled modules [default: ~/.cache/kinesthetic/modules].
    #[arg(long, env = "KINESTHETIC_CACHE_DIR")]
    cache_dir: Option<PathBuf>,
    /// Do not read or write precompiled modules.
    #[arg(long)]
    no_cache: bool,
}

fn parse_param(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_owned(), v.to_owned())),
        _ => Err(format!("expected KEY=VALUE, got `{s}`")),
    }
}

impl RunOpts {
    /// The limits as a pipeline's `[pipelines.limits]` would give them.
    fn filter_limits(&self) -> FilterLimits {
        FilterLimits {
            memory_mib: self.memory_mib,
            deadline_ms: self.deadline_ms,
            fuel: self.fuel,
            isolation_ms: self.isolation_ms,
        }
    }

    fn limits(&self) -> Limits {
        self.filter_limits().to_limits()
    }

    fn isolation(&self) -> IsolationBudget {
        self.filter_limits().isolation()
    }

    /// Checks the options by the rules a pipeline's config is checked by,
    /// then makes the engine.
    fn runtime(&self) -> anyhow::Result<Runtime> {
        self.filter_limits()
            .check()
            .map_err(|(key, m)| anyhow::anyhow!("--{} {m}", key.replace('_', "-")))?;
        if self.batch_lines == 0 {
            bail!(
                "--batch-lines 0: a batch holds at least 1 line (the pipeline's default is 1000)"
            );
        }
        let mut seen = std::collections::BTreeMap::new();
        for (k, v) in &self.params {
            if let Some(first) = seen.insert(k.as_str(), v.as_str()) {
                bail!(
                    "--param {k} is given twice ({k}={first} and {k}={v}): a filter's `init` \
                     gets one value per key; give it once"
                );
            }
        }
        self.engine.runtime(self.fuel.is_some())
    }
}

impl EngineOpts {
    fn runtime(&self, fuel: bool) -> anyhow::Result<Runtime> {
        let cache_dir = if self.no_cache {
            None
        } else {
            self.cache_dir.clone().or_else(|| {
                std::env::var_os("HOME")
                    .map(|h| PathBuf::from(h).join(".cache/kinesthetic/modules"))
            })
        };
        Ok(Runtime::new(EngineSettings {
            fuel,
            cache_dir,
            ..EngineSettings::default()
        })?)
    }
}

pub(crate) fn run(cmd: FilterCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        FilterCommand::Run {
            filter,
            input,
            opts,
            stats,
            with_key,
            with_route,
        } => {
            let runtime = opts.runtime()?;
            let f = runtime.load_file(&filter)?;
            let reader = open_input(input.as_deref())?;
            let mut out = BufWriter::new(std::io::stdout().lock());
            let show = Show {
                key: with_key,
                route: with_route,
            };
            let summary = run_stream(&f, reader, &opts, &mut |line| show.write(&mut out, line))?;
            out.flush()?;
            if stats {
                summary.print_stats();
            }
            Ok(summary.exit_code())
        }
        FilterCommand::Check {
            filter,
            memory_mib,
            engine,
        } => {
            let limits = FilterLimits {
                memory_mib,
                ..FilterLimits::default()
            };
            limits
                .check()
                .map_err(|(key, m)| anyhow::anyhow!("--{} {m}", key.replace('_', "-")))?;
            let runtime = engine.runtime(false)?;
            let f = runtime.load_file(&filter)?;
            let info = f.info();
            let cap = memory_mib << 20;
            if let Some(initial) = info.initial_memory_bytes.filter(|b| *b > cap) {
                bail!(
                    "{}: the module starts with {:.1} MiB of memory, above the {memory_mib} MiB \
                     cap every job runs under, so every job would fail. Raise the cap (--memory-mib \
                     here, limits.memory_mib in the pipeline) to at least {} MiB, or build the \
                     module with less initial memory",
                    filter.display(),
                    initial as f64 / (1 << 20) as f64,
                    initial.div_ceil(1 << 20)
                );
            }
            println!("filter:  {}", info.name);
            println!("file:    {}", filter.display());
            println!("size:    {} bytes", info.size);
            println!("sha256:  {}", info.sha256);
            println!("world:   kinesthetic:filter/filter@0.1.0 (ok)");
            match info.initial_memory_bytes {
                Some(b) => println!(
                    "memory:  starts with {:.1} MiB (cap {memory_mib} MiB: ok)",
                    b as f64 / (1 << 20) as f64
                ),
                None => println!("memory:  not known before it runs (cap {memory_mib} MiB)"),
            }
            println!("exports:");
            for e in &info.exports {
                println!("  {e}");
            }
            println!("imports:");
            for i in &info.imports {
                let note = if info.stubbed_imports.contains(i) {
                    "  (stub: traps if called)"
                } else if i.starts_with("wasi:random/insecure-seed@") {
                    "  (a fixed seed, for HashMap)"
                } else {
                    ""
                };
                println!("  {i}{note}");
            }
            Ok(ExitCode::SUCCESS)
        }
        FilterCommand::Test {
            filter,
            input,
            expect,
            opts,
        } => {
            let runtime = opts.runtime()?;
            let f = runtime.load_file(&filter)?;
            let reader = open_input(Some(&input))?;
            let mut got: Vec<Vec<u8>> = Vec::new();
            let summary = run_stream(&f, reader, &opts, &mut |line| {
                got.push(line.bytes.to_vec());
                Ok(())
            })?;
            let expected = std::fs::read(&expect)
                .with_context(|| format!("cannot read expected output {}", expect.display()))?;
            // One line per output line, LF or CRLF (the filter's own output
            // never ends in the CR of its input: the input is split first).
            let want: Vec<&[u8]> = split_lines(&expected)
                .map(|l| l.strip_suffix(b"\r").unwrap_or(l))
                .collect();
            let got_refs: Vec<&[u8]> = got.iter().map(Vec::as_slice).collect();
            let diff = line_diff(&want, &got_refs);
            if diff.is_empty() && summary.failures == 0 {
                eprintln!(
                    "ok: {} lines in, {} lines out, as expected",
                    summary.lines_in, summary.lines_out
                );
                return Ok(ExitCode::SUCCESS);
            }
            if !diff.is_empty() {
                eprintln!(
                    "FAILED: output differs from {} (- expected, + actual):",
                    expect.display()
                );
                eprint!("{diff}");
            }
            if summary.failures > 0 {
                eprintln!("FAILED: {} line(s) or batch(es) failed", summary.failures);
            }
            Ok(ExitCode::FAILURE)
        }
        FilterCommand::New { name, dir, sdk } => {
            let path = scaffold(&name, &dir, sdk)?;
            eprintln!("created {}", path.display());
            eprintln!("  test:  cd {} && cargo test", path.display());
            eprintln!(
                "  build: cd {} && cargo build --release --target wasm32-wasip2",
                path.display()
            );
            // Where cargo will put the module: under CARGO_TARGET_DIR when
            // it is set (relative to the crate, as cargo reads it), else in
            // the crate's own target/.
            let target = match std::env::var_os("CARGO_TARGET_DIR") {
                Some(t) if !t.is_empty() => path.join(t),
                _ => path.join("target"),
            };
            eprintln!(
                "  run:   kinesthetic filter run {} --param needle=error INPUT",
                target
                    .join("wasm32-wasip2/release")
                    .join(format!("{}.wasm", name.replace('-', "_")))
                    .display()
            );
            Ok(ExitCode::SUCCESS)
        }
        FilterCommand::Bench {
            filter,
            input,
            mb,
            rounds,
            opts,
        } => bench_cmd(&filter, input.as_deref(), mb, rounds, &opts),
    }
}

fn open_input(path: Option<&Path>) -> anyhow::Result<Box<dyn BufRead>> {
    Ok(match path {
        None => Box::new(std::io::stdin().lock()),
        Some(p) if p == Path::new("-") => Box::new(std::io::stdin().lock()),
        Some(p) => Box::new(std::io::BufReader::with_capacity(
            1 << 20,
            std::fs::File::open(p).with_context(|| format!("cannot open input {}", p.display()))?,
        )),
    })
}

/// One output line as the CLI prints it.
pub(crate) struct Line<'a> {
    bytes: &'a [u8],
    key: &'a [u8],
    route: Option<&'a str>,
}

struct Show {
    key: bool,
    route: bool,
}

impl Show {
    fn write(&self, out: &mut impl Write, line: Line<'_>) -> std::io::Result<()> {
        // Keys come from anywhere (other producers too): escaped, so that
        // one cannot forge a line or a column.
        if self.key {
            out.write_all(crate::stream::key::printable(line.key).as_bytes())?;
            out.write_all(b"\t")?;
        }
        if self.route {
            let route = line
                .route
                .map_or("-".into(), |r| crate::stream::key::printable(r.as_bytes()));
            out.write_all(route.as_bytes())?;
            out.write_all(b"\t")?;
        }
        out.write_all(line.bytes)?;
        out.write_all(b"\n")
    }
}

#[derive(Debug, Default)]
struct Summary {
    lines_in: u64,
    bytes_in: u64,
    lines_out: u64,
    jobs: u64,
    failures: u64,
    job_time: Duration,
    wall: Duration,
}

impl Summary {
    fn exit_code(&self) -> ExitCode {
        if self.failures > 0 {
            ExitCode::FAILURE
        } else {
            ExitCode::SUCCESS
        }
    }

    fn print_stats(&self) {
        let secs = self.job_time.as_secs_f64().max(1e-9);
        eprintln!(
            "lines in: {}  lines out: {}  bytes in: {}  jobs: {}  failed: {}",
            self.lines_in, self.lines_out, self.bytes_in, self.jobs, self.failures
        );
        eprintln!(
            "filter: {:.1} MB/s  {:.1} µs per job  (wall {:.3} s incl. reading and writing)",
            self.bytes_in as f64 / 1e6 / secs,
            secs * 1e6 / self.jobs.max(1) as f64,
            self.wall.as_secs_f64()
        );
    }
}

/// Reads lines, runs them batch by batch, isolates poison lines.
fn run_stream(
    f: &LoadedFilter,
    mut reader: Box<dyn BufRead>,
    opts: &RunOpts,
    emit: &mut dyn FnMut(Line<'_>) -> std::io::Result<()>,
) -> anyhow::Result<Summary> {
    let limits = opts.limits();
    let isolation = opts.isolation();
    let params: Params = opts.params.clone();
    let batch_lines = opts.batch_lines.max(1);
    let start = Instant::now();
    let received_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0);
    let mut s = Summary::default();
    let mut buf = Vec::new();
    let mut eof = false;
    // Line numbers in the input (blank lines count, as in an editor).
    let mut file_line = 0u64;
    let mut numbers: Vec<u64> = Vec::with_capacity(batch_lines);
    while !eof {
        // Read up to `batch_lines` lines, split as the intake splits a
        // body: the terminator (`\n` or `\r\n`) is not part of the event,
        // and blank lines are skipped.
        let mut batch = Batch::default();
        numbers.clear();
        while batch.len() < batch_lines {
            buf.clear();
            let n = reader
                .read_until(b'\n', &mut buf)
                .context("cannot read input")?;
            if n == 0 {
                eof = true;
                break;
            }
            file_line += 1;
            let Some(line) = crate::event::event_of_line(&buf) else {
                continue;
            };
            numbers.push(file_line);
            let stamp = crate::event::Stamp {
                id: crate::event::EventId {
                    listener: 0,
                    counter: s.lines_in + batch.len() as u64 + 1,
                },
                received_ms,
            };
            batch.push(line, stamp, b"")?;
        }
        if batch.is_empty() {
            break;
        }
        s.lines_in += batch.len() as u64;
        s.bytes_in += batch.byte_len() as u64;
        let input = Input::from(batch);
        let t = Instant::now();
        let ran = run_batch(f, &input, &params, &limits, &isolation);
        s.job_time += t.elapsed();
        let ran = ran?;
        s.jobs += ran.jobs() as u64;
        let (first, last) = (
            numbers.first().copied().unwrap_or(0),
            numbers.last().copied().unwrap_or(0),
        );
        // (When isolation gave up, the reports of the lines say so.)
        if let Ran::Isolated { failure, .. } = &ran
            && ran.gave_up().is_none()
        {
            eprintln!(
                "lines {first}-{last}: {failure}; isolated the failing line(s) with fresh instances"
            );
        }
        for l in ran.lines(&input) {
            s.lines_out += 1;
            emit(Line {
                bytes: l.bytes,
                key: l.key,
                route: l.route,
            })?;
        }
        if ran.failed() && ran.poison().is_empty() {
            // Every part passed alone: the failure needs several lines
            // together, or the batch's size (deadline, memory).
            s.failures += 1;
            eprintln!(
                "lines {first}-{last}: the batch failed, but every part of it passed on its own: \
                 the failure depends on several lines together or on the batch's size \
                 (deadline, memory cap); the parts' output was written"
            );
        }
        // One report per isolated line; lines not isolated are reported as
        // runs (a whole batch when isolation gave up at once).
        let poison = ran.poison();
        let line_no = |i: u32| numbers.get(i as usize).copied().unwrap_or(0);
        let mut k = 0;
        while k < poison.len() {
            let p = &poison[k];
            let mut end = k + 1;
            if !p.isolated {
                while end < poison.len()
                    && !poison[end].isolated
                    && poison[end].index == poison[end - 1].index + 1
                    && poison[end].error == p.error
                {
                    end += 1;
                }
            }
            s.failures += (end - k) as u64;
            let note = match ran.gave_up() {
                _ if p.isolated => String::new(),
                Some(g) => format!(" (not isolated: {g})"),
                None => " (not isolated: bisection budget spent)".to_owned(),
            };
            let (first, last) = (line_no(p.index), line_no(poison[end - 1].index));
            if first == last {
                eprintln!("line {first}: {}{note}", p.error);
            } else {
                eprintln!("lines {first}-{last}: {}{note}", p.error);
            }
            k = end;
        }
    }
    let unreported = f.log_stats().take_unreported();
    if unreported > 0 {
        tracing::warn!(
            filter = %f.name(),
            suppressed = unreported,
            "filter log lines suppressed since the last report"
        );
    }
    s.wall = start.elapsed();
    Ok(s)
}

/// A readable line diff (`-` expected only, `+` actual only), by the
/// `similar` crate's Patience diff (with a deadline, so a huge input
/// cannot hang the test: then the diff is coarser, never wrong).
fn line_diff(want: &[&[u8]], got: &[&[u8]]) -> String {
    use similar::{Algorithm, DiffOp, capture_diff_slices_deadline};
    use std::fmt::Write as _;
    let mut out = String::new();
    if want == got {
        return out;
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    let ops = capture_diff_slices_deadline(Algorithm::Patience, want, got, Some(deadline));
    for op in ops {
        let (old, new) = match op {
            DiffOp::Equal { .. } => continue,
            DiffOp::Delete {
                old_index, old_len, ..
            } => (old_index..old_index + old_len, 0..0),
            DiffOp::Insert {
                new_index, new_len, ..
            } => (0..0, new_index..new_index + new_len),
            DiffOp::Replace {
                old_index,
                old_len,
                new_index,
                new_len,
            } => (
                old_index..old_index + old_len,
                new_index..new_index + new_len,
            ),
        };
        for i in old {
            let _ = writeln!(out, "-{} (expected line {})", shown(want[i]), i + 1);
        }
        for j in new {
            let _ = writeln!(out, "+{} (actual line {})", shown(got[j]), j + 1);
        }
    }
    out
}

/// A line as the diff shows it: UTF-8 text as is; invalid bytes and
/// control characters (a `\r` would hide the line) escaped.
fn shown(line: &[u8]) -> String {
    match std::str::from_utf8(line) {
        Ok(t) if !t.chars().any(char::is_control) => t.to_owned(),
        _ => line.escape_ascii().to_string(),
    }
}

fn bench_cmd(
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

/// Writes a new filter crate; returns its directory.
fn scaffold(name: &str, dir: &Path, sdk: Option<PathBuf>) -> anyhow::Result<PathBuf> {
    if name.is_empty()
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        || !name.starts_with(|c: char| c.is_ascii_alphabetic())
    {
        bail!(
            "invalid crate name `{name}`: use letters, digits, `-` and `_`, starting with a letter"
        );
    }
    // Names cargo refuses too: a keyword is no crate name, and a crate named
    // like a crate it depends on shadows it (`export_filter!` expands to
    // `::core::…` and `::kinesthetic_filter::…` paths).
    const RESERVED: &[&str] = &[
        "core",
        "std",
        "alloc",
        "test",
        "proc_macro",
        "kinesthetic_filter",
        "wit_bindgen",
        "as",
        "async",
        "await",
        "break",
        "const",
        "continue",
        "crate",
        "dyn",
        "else",
        "enum",
        "extern",
        "false",
        "fn",
        "for",
        "gen",
        "if",
        "impl",
        "in",
        "let",
        "loop",
        "match",
        "mod",
        "move",
        "mut",
        "pub",
        "ref",
        "return",
        "self",
        "static",
        "struct",
        "super",
        "trait",
        "true",
        "try",
        "type",
        "unsafe",
        "use",
        "where",
        "while",
        "yield",
        "abstract",
        "become",
        "box",
        "do",
        "final",
        "macro",
        "override",
        "priv",
        "typeof",
        "unsized",
        "virtual",
    ];
    let ident = name.replace('-', "_");
    if RESERVED.contains(&ident.as_str()) {
        bail!(
            "invalid crate name `{name}`: it is a Rust keyword or the name of a crate the filter \
             uses; choose another"
        );
    }
    let root = dir.join(name);
    if root.exists() {
        bail!(
            "{} already exists; choose another name or --dir",
            root.display()
        );
    }
    let sdk = match sdk {
        Some(p) => p,
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join("../filter-sdk"),
    };
    let sdk = sdk
        .canonicalize()
        .with_context(|| format!("SDK not found at {} (pass --sdk PATH)", sdk.display()))?;
    let ty: String = ident
        .split('_')
        .map(|w| {
            let mut c = w.chars();
            c.next()
                .map(|f| f.to_ascii_uppercase().to_string() + c.as_str())
                .unwrap_or_default()
        })
        .collect();
    let files = [
        (
            "Cargo.toml",
            format!(
                r#"[package]
name = "{name}"
version = "0.1.0"
edition = "2024"

[lib]
crate-type = ["cdylib", "rlib"]

[dependencies]
kinesthetic-filter = {{ path = "{sdk}" }}

[profile.release]
opt-level = 3
lto = true
codegen-units = 1
panic = "abort"
strip = true

# Stand-alone: not part of any enclosing workspace.
[workspace]
"#,
                sdk = sdk.display()
            ),
        ),
        (
            ".cargo/config.toml",
            concat!(
                "# simd128: the SDK's fast JSON scanner. stack-size: a 32 KiB shadow\n",
                "# stack keeps the guest's memory at one 64 KiB page, and every byte of\n",
                "# it is reset between batches. Raise it if the filter recurses deeply\n",
                "# (an overflow shows as an out-of-bounds memory access).\n",
                "[target.wasm32-wasip2]\n",
                "rustflags = [\"-C\", \"target-feature=+simd128\", ",
                "\"-C\", \"link-arg=-zstack-size=32768\"]\n"
            )
            .to_owned(),
        ),
        (".gitignore", "/target\n".to_owned()),
        (
            "src/lib.rs",
            format!(
                r#"//! `{name}`: a Kinesthetic filter. Keeps the lines that contain the
//! parameter `needle`.
//!
//! Test natively:  cargo test
//! Build:          cargo build --release --target wasm32-wasip2
//! Run:            kinesthetic filter run target/wasm32-wasip2/release/{ident}.wasm --param needle=error INPUT
//!                 (with CARGO_TARGET_DIR set, the module is in $CARGO_TARGET_DIR/wasm32-wasip2/release/)

use kinesthetic_filter::{{Emit, Filter, Line, Params, export_filter}};

pub struct {ty} {{
    needle: Vec<u8>,
}}

impl Filter for {ty} {{
    fn init(params: &Params) -> Result<Self, String> {{
        let needle = params.require("needle")?;
        Ok(Self {{ needle: needle.as_bytes().to_vec() }})
    }}

    fn line(&mut self, line: &Line<'_>, emit: &mut Emit<'_>) {{
        let bytes = line.bytes();
        if bytes.windows(self.needle.len().max(1)).any(|w| w == self.needle.as_slice()) {{
            emit.keep();
        }}
    }}
}}

export_filter!({ty});

#[cfg(test)]
mod tests {{
    use super::*;
    use kinesthetic_filter::testing;

    #[test]
    fn keeps_lines_with_the_needle() {{
        let out = testing::run::<{ty}>(&[("needle", "error")], &[b"an error", b"all fine", b"error!"])
            .expect("filter runs");
        let kept: Vec<_> = out.iter().map(|o| o.bytes.as_slice()).collect();
        assert_eq!(kept, [&b"an error"[..], b"error!"]);
    }}

    #[test]
    fn needle_is_required() {{
        let err = testing::run::<{ty}>(&[], &[b"x"]).expect_err("init must fail");
        assert!(err.contains("needle"), "{{err}}");
    }}
}}
"#
            ),
        ),
    ];
    for (rel, text) in files {
        let p = root.join(rel);
        if let Some(parent) = p.parent() {
            std::fs::create_dir_all(parent)
                .with_context(|| format!("cannot create {}", parent.display()))?;
        }
        std::fs::write(&p, text).with_context(|| format!("cannot write {}", p.display()))?;
    }
    Ok(root)
}

#[cfg(test)]
mod tests {
    use super::line_diff;

    #[test]
    fn diff_shows_bytes_that_would_not_show() {
        // A carriage return, and two invalid bytes that would both print as
        // U+FFFD: escaped, so the two sides differ visibly.
        let d = line_diff(&[b"a\r", b"\xff"], &[b"a", b"\xfe"]);
        assert!(d.contains("-a\\r (expected line 1)"), "{d}");
        assert!(
            d.contains("-\\xff (expected line 2)") && d.contains("+\\xfe (actual line 2)"),
            "{d}"
        );
        let d = line_diff(&[b"\xd0\xba\xd0\xbb"], &[b"x"]);
        assert!(
            d.contains("-кл (expected line 1)"),
            "UTF-8 text stays readable: {d}"
        );
    }

    #[test]
    fn diff_shows_missing_and_extra_lines() {
        let d = line_diff(&[b"a", b"b", b"c"], &[b"a", b"x", b"c"]);
        assert!(d.contains("-b (expected line 2)"), "{d}");
        assert!(d.contains("+x (actual line 2)"), "{d}");
        assert!(line_diff(&[b"a"], &[b"a"]).is_empty());
    }
}
