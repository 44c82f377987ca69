//! Poison isolation: when a batch fails, bisect it with fresh instances to
//! find the line(s) that make it fail, keeping the other lines' output.

use super::error::{Cause, JobError};
use super::job::Input;
use super::limits::Limits;
use super::module::{LoadedFilter, Params};

/// One emitted line, owned (isolation re-runs parts of the batch, so its
/// output cannot borrow from one job's answer).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OwnedLine {
    /// Index of the input line in the original batch.
    pub index: u32,
    pub bytes: Vec<u8>,
    pub key: Vec<u8>,
    pub route: Option<String>,
}

/// A line that failed on its own (or could not be isolated further).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Poison {
    /// Index of the input line in the original batch.
    pub index: u32,
    pub error: JobError,
    /// `false` when the job budget ran out before this line was isolated:
    /// the error is that of a group of lines, run together, that includes
    /// this one.
    pub isolated: bool,
}

/// Result of [`isolate`]: the good lines' output, in order, and the poison.
#[derive(Debug, Clone, Default)]
pub struct Isolation {
    pub lines: Vec<OwnedLine>,
    pub poison: Vec<Poison>,
    /// Jobs run, including the failed ones.
    pub jobs: usize,
}

/// Whether a failure can depend on the lines of the batch. Init errors and
/// instantiation failures fail every batch alike: bisecting cannot help.
pub fn is_line_dependent(cause: &Cause) -> bool {
    !matches!(cause, Cause::Init(_) | Cause::Instantiate(_))
}

/// Runs `input` through `filter`, bisecting on failure with fresh instances.
///
/// At most `max_failed_jobs` failing jobs are split further (a deadline
/// costs a whole deadline each); past that, each range still to try is run
/// once more, whole: its output is kept if it passes, and if it fails its
/// lines are reported as poison with `isolated: false` and that range's
/// error. If the failure does not depend on the lines (see
/// [`is_line_dependent`]), the error is returned.
pub fn isolate(
    filter: &LoadedFilter,
    input: &Input,
    params: &Params,
    limits: &Limits,
    max_failed_jobs: usize,
) -> Result<Isolation, JobError> {
    match filter.run(input, params, limits) {
        Ok(o) => Ok(Isolation {
            jobs: 1,
            lines: o
                .lines(input)
                .map(|l| OwnedLine {
                    index: l.index,
                    bytes: l.bytes.to_vec(),
                    key: l.key.to_vec(),
                    route: l.route.map(str::to_owned),
                })
                .collect(),
            ..Isolation::default()
        }),
        Err(e) if !is_line_dependent(&e.cause) => Err(e),
        Err(e) => {
            let mut out = isolate_failed(filter, input, params, limits, max_failed_jobs, e)?;
            out.jobs += 1;
            Ok(out)
        }
    }
}

/// [`isolate`] for a batch that has just failed with `failure`: the batch
/// is not run again. Every failing job that is split, the first included,
/// is charged to `max_failed_jobs`; once it is spent, the ranges not yet run
/// are run once each and not split (so at most about twice
/// `max_failed_jobs` jobs fail; a deadline costs a whole deadline per job).
pub fn isolate_failed(
    filter: &LoadedFilter,
    input: &Input,
    params: &Params,
    limits: &Limits,
    max_failed_jobs: usize,
    failure: JobError,
) -> Result<Isolation, JobError> {
    let mut out = Isolation::default();
    let mut failed_budget = max_failed_jobs.saturating_sub(1);
    let last = failure;
    // Ranges of the original batch, tried level by level (breadth first),
    // so that a spent budget leaves small ranges all over the batch rather
    // than the whole right half; the output is put back in input order at
    // the end.
    let mut queue: std::collections::VecDeque<std::ops::Range<usize>> = Default::default();
    let split = |queue: &mut std::collections::VecDeque<std::ops::Range<usize>>,
                 range: std::ops::Range<usize>| {
        let mid = range.start + range.len() / 2;
        queue.push_back(range.start..mid);
        queue.push_back(mid..range.end);
    };
    if input.len() <= 1 || max_failed_jobs == 0 {
        for i in 0..input.len() {
            out.poison.push(Poison {
                index: i as u32,
                error: last.clone(),
                isolated: input.len() <= 1,
            });
        }
        return Ok(out);
    }
    split(&mut queue, 0..input.len());
    while let Some(range) = queue.pop_front() {
        // Every range is run once, even with the budget spent, so that no
        // good line is lost; the budget only stops the splitting.
        let part = input.slice(range.clone());
        out.jobs += 1;
        match filter.run(&part, params, limits) {
            Ok(o) => {
                for l in o.lines(&part) {
                    out.lines.push(OwnedLine {
                        index: (range.start + l.index as usize) as u32,
                        bytes: l.bytes.to_vec(),
                        key: l.key.to_vec(),
                        route: l.route.map(str::to_owned),
                    });
                }
            }
            Err(e) if !is_line_dependent(&e.cause) => return Err(e),
            Err(e) => {
                if range.len() > 1 && failed_budget > 0 {
                    failed_budget -= 1;
                    split(&mut queue, range);
                } else {
                    let isolated = range.len() <= 1;
                    for i in range {
                        out.poison.push(Poison {
                            index: i as u32,
                            error: e.clone(),
                            isolated,
                        });
                    }
                }
            }
        }
    }
    // Each line has at most one output: a stable sort restores input order.
    out.lines.sort_by_key(|l| l.index);
    out.poison.sort_by_key(|p| p.index);
    Ok(out)
}
