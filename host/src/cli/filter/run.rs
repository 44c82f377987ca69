//! `kinesthetic filter run`: a filter over a file or stdin, batch by batch
//! on fresh instances as the pipeline runs it, poison lines isolated. The
//! batch loop is shared with `filter test`.

use std::io::{BufRead, BufWriter, Write};
use std::path::Path;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::Context;

use super::{RunOpts, open_input};
use crate::event::Batch;
use crate::filter::{Input, LoadedFilter, Params, Ran, run_batch};

pub(super) fn run(
    filter: &Path,
    input: Option<&Path>,
    opts: &RunOpts,
    stats: bool,
    with_key: bool,
    with_route: bool,
) -> anyhow::Result<ExitCode> {
    let runtime = opts.runtime()?;
    let f = runtime.load_file(filter)?;
    let reader = open_input(input)?;
    let mut out = BufWriter::new(std::io::stdout().lock());
    let show = Show {
        key: with_key,
        route: with_route,
    };
    let summary = run_stream(&f, reader, opts, &mut |line| show.write(&mut out, line))?;
    out.flush()?;
    if stats {
        summary.print_stats();
    }
    Ok(summary.exit_code())
}

/// One output line as the CLI prints it.
pub(crate) struct Line<'a> {
    pub(super) bytes: &'a [u8],
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
pub(super) struct Summary {
    pub(super) lines_in: u64,
    bytes_in: u64,
    pub(super) lines_out: u64,
    jobs: u64,
    pub(super) failures: u64,
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
pub(super) fn run_stream(
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
