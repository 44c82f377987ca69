//! Poison isolation: when a batch fails, bisect it with fresh instances to
//! find the line(s) that make it fail, keeping the other lines' output.

use super::error::{Cause, JobError};
use super::job::{Input, OutLine, Output};
use super::limits::Limits;
use super::module::{LoadedFilter, Params};

/// One emitted line, owned (isolation re-runs parts of the batch, so its
/// output cannot borrow from one job's answer).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OwnedLine {
    /// Index of the input line in the original batch.
    pub index: u32,
    pub bytes: Vec<u8>,
    /// Whether the filter replaced the line's bytes.
    pub replaced: bool,
    pub key: Vec<u8>,
    /// Whether the filter set a new key.
    pub rekeyed: bool,
    pub route: Option<String>,
}

impl OwnedLine {
    fn of(l: OutLine<'_>, offset: usize) -> Self {
        Self {
            index: (offset + l.index as usize) as u32,
            bytes: l.bytes.to_vec(),
            replaced: l.replaced,
            key: l.key.to_vec(),
            rekeyed: l.rekeyed,
            route: l.route.map(str::to_owned),
        }
    }

    /// This line, borrowed as a job's answer lends it.
    pub fn as_out_line(&self) -> OutLine<'_> {
        OutLine {
            index: self.index,
            bytes: &self.bytes,
            replaced: self.replaced,
            key: &self.key,
            rekeyed: self.rekeyed,
            route: self.route.as_deref(),
        }
    }
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

/// Failing jobs a batch's isolation may split further by default (the CLI
/// and the pipelines): a deadline costs a whole deadline per failing job.
pub const ISOLATION_BUDGET: usize = 64;

/// What running one batch through a filter gave: see [`run_batch`].
#[derive(Debug, Clone)]
pub enum Ran {
    /// The batch passed whole: the job's answer (kept lines are not copied).
    Whole(Output),
    /// The batch failed with `failure` and was bisected with fresh
    /// instances: the good lines' output, in order, and the poison lines.
    /// No poison at all means every part passed on its own: the failure
    /// needs several lines together, or the batch's size.
    Isolated {
        failure: JobError,
        isolation: Isolation,
    },
}

impl Ran {
    /// The emitted lines in input order; `input` is the batch that ran.
    pub fn lines<'a>(&'a self, input: &'a Input) -> Box<dyn Iterator<Item = OutLine<'a>> + 'a> {
        match self {
            Ran::Whole(out) => Box::new(out.lines(input)),
            Ran::Isolated { isolation, .. } => {
                Box::new(isolation.lines.iter().map(OwnedLine::as_out_line))
            }
        }
    }

    /// The poison lines (none when the batch passed whole).
    pub fn poison(&self) -> &[Poison] {
        match self {
            Ran::Whole(_) => &[],
            Ran::Isolated { isolation, .. } => &isolation.poison,
        }
    }

    /// Whether the batch failed (whole or in some lines).
    pub fn failed(&self) -> bool {
        matches!(self, Ran::Isolated { .. })
    }

    /// Jobs run: 1, or the batch's job plus isolation's.
    pub fn jobs(&self) -> usize {
        match self {
            Ran::Whole(_) => 1,
            Ran::Isolated { isolation, .. } => 1 + isolation.jobs,
        }
    }
}

/// Runs one batch through `filter` on a fresh instance; when the job fails
/// for a reason that can depend on the lines, bisects the batch with fresh
/// instances (at most `max_failed_jobs` failing jobs split further; see
/// [`isolate_failed`]) so that the good lines' output is kept and the
/// poison lines are named. The one way the CLI, the tests and the
/// pipelines run a batch.
///
/// A failure that does not depend on the lines (`init` failed, the
/// instance could not be created) is returned as the error: every batch
/// would fail alike.
pub fn run_batch(
    filter: &LoadedFilter,
    input: &Input,
    params: &Params,
    limits: &Limits,
    max_failed_jobs: usize,
) -> Result<Ran, JobError> {
    match filter.run(input, params, limits) {
        Ok(o) => Ok(Ran::Whole(o)),
        Err(e) if !is_line_dependent(&e.cause) => Err(e),
        Err(e) => {
            let isolation =
                isolate_failed(filter, input, params, limits, max_failed_jobs, e.clone())?;
            Ok(Ran::Isolated {
                failure: e,
                isolation,
            })
        }
    }
}

/// [`run_batch`], with the output always owned: the good lines and the
/// poison of a batch (`jobs` counts every job run).
pub fn isolate(
    filter: &LoadedFilter,
    input: &Input,
    params: &Params,
    limits: &Limits,
    max_failed_jobs: usize,
) -> Result<Isolation, JobError> {
    Ok(
        match run_batch(filter, input, params, limits, max_failed_jobs)? {
            Ran::Whole(o) => Isolation {
                jobs: 1,
                lines: o.lines(input).map(|l| OwnedLine::of(l, 0)).collect(),
                ..Isolation::default()
            },
            Ran::Isolated { mut isolation, .. } => {
                isolation.jobs += 1;
                isolation
            }
        },
    )
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
                    out.lines.push(OwnedLine::of(l, range.start));
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
