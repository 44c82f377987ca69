//! Poison isolation: when a batch fails, bisect it with fresh instances to
//! find the line(s) that make it fail, keeping the other lines' output.
//!
//! Bisection is bounded three ways ([`IsolationBudget`]): failing jobs that
//! may split further, wall-clock time, and an early give-up when every
//! probe fails the way the batch did (a filter that fails every line gains
//! nothing from bisection and would cost a deadline per probe).

use std::collections::VecDeque;
use std::fmt;
use std::ops::Range;
use std::time::{Duration, Instant};

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
    /// Set when isolation stopped before every line was run or isolated:
    /// the lines it did not isolate are poison with `isolated: false`.
    pub gave_up: Option<GaveUp>,
}

/// Why isolation stopped early.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GaveUp {
    /// Every one of `probes` single lines spread over the batch failed the
    /// way the whole batch did: the failure is not one line's, so the batch
    /// failed by its cause.
    Uniform { probes: usize },
    /// The batch's isolation time budget ran out.
    Time { budget_ms: u64 },
}

impl fmt::Display for GaveUp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            GaveUp::Uniform { probes } => write!(
                f,
                "isolation gave up: {probes} single lines spread over the batch all failed \
                 like the batch, so the failure is not one line's"
            ),
            GaveUp::Time { budget_ms } => write!(
                f,
                "isolation gave up: its time budget of {budget_ms} ms per batch ran out"
            ),
        }
    }
}

/// How far the isolation of one failed batch may go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IsolationBudget {
    /// Failing jobs that may be split further (0: no isolation; the batch
    /// is reported as failed, every line poison).
    pub max_failed_jobs: usize,
    /// Wall-clock time isolation may take after the batch's own job; once
    /// spent, no further part is run.
    pub time: Duration,
    /// Before bisecting, run this many single lines spread over the batch,
    /// and give up when every one fails with the batch's kind of cause
    /// (0: never).
    pub uniform_probes: usize,
}

/// Single lines, spread over a failed batch, that must all fail as the
/// batch did before isolation gives up without bisecting.
pub const UNIFORM_PROBES: usize = 3;

/// Isolation time per batch, in job deadlines, by default.
pub const ISOLATION_DEADLINES: u32 = 20;

impl IsolationBudget {
    /// The default for jobs run with `limits`: [`ISOLATION_BUDGET`] failing
    /// jobs, [`ISOLATION_DEADLINES`] deadlines of time (at least 1 s), and
    /// [`UNIFORM_PROBES`] single-line probes.
    pub fn for_limits(limits: &Limits) -> Self {
        let deadline = Duration::from_millis(limits.deadline_ms);
        Self {
            max_failed_jobs: ISOLATION_BUDGET,
            time: (deadline * ISOLATION_DEADLINES).max(Duration::from_secs(1)),
            uniform_probes: UNIFORM_PROBES,
        }
    }

    /// This budget with a time of `ms` milliseconds.
    pub fn with_time_ms(self, ms: u64) -> Self {
        Self {
            time: Duration::from_millis(ms),
            ..self
        }
    }
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

    /// Why isolation stopped early, if it did.
    pub fn gave_up(&self) -> Option<GaveUp> {
        match self {
            Ran::Whole(_) => None,
            Ran::Isolated { isolation, .. } => isolation.gave_up,
        }
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
/// instances (within `budget`; see [`isolate_failed`]) so that the good lines' output is kept and the
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
    budget: &IsolationBudget,
) -> Result<Ran, JobError> {
    match filter.run(input, params, limits) {
        Ok(o) => Ok(Ran::Whole(o)),
        Err(e) if !is_line_dependent(&e.cause) => Err(e),
        Err(e) => {
            let isolation = isolate_failed(filter, input, params, limits, budget, e.clone())?;
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
    budget: &IsolationBudget,
) -> Result<Isolation, JobError> {
    Ok(match run_batch(filter, input, params, limits, budget)? {
        Ran::Whole(o) => Isolation {
            jobs: 1,
            lines: o.lines(input).map(|l| OwnedLine::of(l, 0)).collect(),
            ..Isolation::default()
        },
        Ran::Isolated { mut isolation, .. } => {
            isolation.jobs += 1;
            isolation
        }
    })
}

/// [`isolate`] for a batch that has just failed with `failure`: the batch
/// is not run again. Every failing job that is split, the first included,
/// is charged to `budget.max_failed_jobs`; once it is spent, the ranges not
/// yet run are run once each and not split (so at most about twice
/// `max_failed_jobs` jobs fail; a deadline costs a whole deadline per job).
/// Isolation gives up ([`Isolation::gave_up`]) when single lines spread
/// over the batch all fail as the batch did (see [`IsolationBudget`]), or
/// when its time runs out: the lines not run or not isolated by then are
/// poison, not isolated, with the error of the part they were in.
pub fn isolate_failed(
    filter: &LoadedFilter,
    input: &Input,
    params: &Params,
    limits: &Limits,
    budget: &IsolationBudget,
    failure: JobError,
) -> Result<Isolation, JobError> {
    let start = Instant::now();
    let mut out = Isolation::default();
    let max_failed_jobs = budget.max_failed_jobs;
    let mut failed_budget = max_failed_jobs.saturating_sub(1);
    // Ranges of the original batch, each with the error of the part it came
    // from, tried level by level (breadth first), so that a spent budget
    // leaves small ranges all over the batch rather than the whole right
    // half; the output is put back in input order at the end.
    let mut queue: VecDeque<(Range<usize>, JobError)> = VecDeque::new();
    let split =
        |queue: &mut VecDeque<(Range<usize>, JobError)>, range: Range<usize>, e: JobError| {
            let mid = range.start + range.len() / 2;
            queue.push_back((range.start..mid, e.clone()));
            queue.push_back((mid..range.end, e));
        };
    if input.len() <= 1 || max_failed_jobs == 0 {
        for i in 0..input.len() {
            out.poison.push(Poison {
                index: i as u32,
                error: failure.clone(),
                isolated: input.len() <= 1,
            });
        }
        return Ok(out);
    }
    if let Some(probes) =
        uniform_failure(filter, input, params, limits, budget, &failure, &mut out)?
    {
        out.gave_up = Some(GaveUp::Uniform { probes });
        for i in 0..input.len() {
            out.poison.push(Poison {
                index: i as u32,
                error: failure.clone(),
                isolated: false,
            });
        }
        return Ok(out);
    }
    split(&mut queue, 0..input.len(), failure);
    while let Some((range, parent)) = queue.pop_front() {
        if start.elapsed() >= budget.time {
            out.gave_up = Some(GaveUp::Time {
                budget_ms: budget.time.as_millis() as u64,
            });
            queue.push_front((range, parent));
            for (range, e) in queue.drain(..) {
                for i in range {
                    out.poison.push(Poison {
                        index: i as u32,
                        error: e.clone(),
                        isolated: false,
                    });
                }
            }
            break;
        }
        // Every range is run once, even with the failing-job budget spent,
        // so that no good line is lost; that budget only stops the splitting.
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
                    split(&mut queue, range, e);
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

/// Before bisecting, runs `budget.uniform_probes` single lines spread
/// evenly over the batch: when every one fails with the batch's kind of
/// cause, the failure is not one line's (a filter that loops or traps on
/// every line) and bisecting would cost a failing job per part for
/// nothing. `Some(probes)` then; `None` when a probe passed or failed
/// otherwise (poison lines are rare, so a probe almost always passes and
/// costs one short job). Probes' output is not kept: bisection runs those
/// lines again.
fn uniform_failure(
    filter: &LoadedFilter,
    input: &Input,
    params: &Params,
    limits: &Limits,
    budget: &IsolationBudget,
    failure: &JobError,
    out: &mut Isolation,
) -> Result<Option<usize>, JobError> {
    let n = budget.uniform_probes;
    // Too few lines for probes to save anything over bisecting them.
    if n == 0 || input.len() < 4 * n {
        return Ok(None);
    }
    let kind = std::mem::discriminant(&failure.cause);
    for k in 0..n {
        // The middles of n equal parts.
        let i = (2 * k + 1) * input.len() / (2 * n);
        out.jobs += 1;
        match filter.run(&input.slice(i..i + 1), params, limits) {
            Ok(_) => return Ok(None),
            Err(e) if !is_line_dependent(&e.cause) => return Err(e),
            Err(e) if std::mem::discriminant(&e.cause) != kind => return Ok(None),
            Err(_) => {}
        }
    }
    Ok(Some(n))
}
