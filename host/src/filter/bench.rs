//! Throughput and per-job overhead measurements shared by
//! `kinesthetic filter bench` and `cargo xtask bench filter`.

use std::time::{Duration, Instant};

use super::error::JobError;
use super::job::Input;
use super::limits::Limits;
use super::module::{LoadedFilter, Params};

/// Bytes processed in some time.
#[derive(Debug, Clone, Copy)]
pub struct Throughput {
    pub bytes: u64,
    pub lines: u64,
    pub lines_out: u64,
    pub jobs: u64,
    pub elapsed: Duration,
}

impl Throughput {
    /// Megabytes (10^6 bytes) per second.
    pub fn mb_per_s(&self) -> f64 {
        self.bytes as f64 / 1e6 / self.elapsed.as_secs_f64().max(1e-9)
    }

    /// Microseconds per job.
    pub fn us_per_job(&self) -> f64 {
        self.elapsed.as_secs_f64() * 1e6 / self.jobs.max(1) as f64
    }
}

/// Runs every input once, each on a fresh instance (the production path).
pub fn fresh(
    filter: &LoadedFilter,
    inputs: &[Input],
    params: &Params,
    limits: &Limits,
) -> Result<Throughput, JobError> {
    let mut t = Throughput::zero();
    let start = Instant::now();
    for input in inputs {
        let out = filter.run(input, params, limits)?;
        t.add(input, out.len());
    }
    t.elapsed = start.elapsed();
    Ok(t)
}

/// Runs every input once through one reused instance.
pub fn warm(
    filter: &LoadedFilter,
    inputs: &[Input],
    params: &Params,
    limits: &Limits,
) -> Result<Throughput, JobError> {
    let mut instance = filter.warm(params, limits)?;
    let mut t = Throughput::zero();
    let start = Instant::now();
    for input in inputs {
        let out = instance.run(input)?;
        t.add(input, out.len());
    }
    t.elapsed = start.elapsed();
    Ok(t)
}

/// Median and 99th percentile of a set of durations.
#[derive(Debug, Clone, Copy)]
pub struct Percentiles {
    pub median: Duration,
    pub p99: Duration,
    pub samples: usize,
}

/// Per-job overhead: Store + instantiate + init + filter + drop on `tiny`.
pub fn overhead(
    filter: &LoadedFilter,
    tiny: &Input,
    params: &Params,
    limits: &Limits,
    samples: usize,
) -> Result<Percentiles, JobError> {
    // Warm caches and the allocator's slots first.
    for _ in 0..samples.min(200) {
        filter.run(tiny, params, limits)?;
    }
    let mut times = Vec::with_capacity(samples);
    for _ in 0..samples.max(1) {
        let t = Instant::now();
        filter.run(tiny, params, limits)?;
        times.push(t.elapsed());
    }
    times.sort();
    Ok(Percentiles {
        median: times[times.len() / 2],
        p99: times[(times.len() * 99 / 100).min(times.len() - 1)],
        samples: times.len(),
    })
}

impl Throughput {
    pub fn zero() -> Self {
        Self {
            bytes: 0,
            lines: 0,
            lines_out: 0,
            jobs: 0,
            elapsed: Duration::ZERO,
        }
    }

    fn add(&mut self, input: &Input, out: usize) {
        self.bytes += input.byte_len() as u64;
        self.lines += input.len() as u64;
        self.lines_out += out as u64;
        self.jobs += 1;
    }
}

/// Where the time of a job goes.
#[derive(Debug, Clone, Copy)]
pub struct Phases {
    /// Median time of each phase, named by [`PHASES`].
    pub medians: [Duration; 5],
    /// The job's linear memory at its largest, in bytes.
    pub memory_bytes: u64,
}

/// Median time of each phase of a job: new store, instantiate, init,
/// filter, drop; and the memory the job used.
pub fn phases(
    filter: &LoadedFilter,
    input: &Input,
    params: &Params,
    limits: &Limits,
    samples: usize,
) -> Result<Phases, JobError> {
    let mut all: [Vec<Duration>; 5] = Default::default();
    let mut memory_bytes = 0;
    for _ in 0..samples.max(1) {
        let (p, peak) = filter.time_phases(input, params, limits)?;
        memory_bytes = memory_bytes.max(peak);
        for (v, d) in all.iter_mut().zip(p) {
            v.push(d);
        }
    }
    Ok(Phases {
        medians: all.map(|mut v| {
            v.sort();
            v[v.len() / 2]
        }),
        memory_bytes,
    })
}

/// The least a fresh instance must spend after a job: zeroing the memory the
/// job used, so that the next job cannot read it. Median time of `memset` on a
/// resident buffer of `bytes`, the way the pooling allocator resets a slot.
pub fn zeroing_floor(bytes: usize, samples: usize) -> Duration {
    let mut buf = vec![1u8; bytes.max(1)];
    let mut times = Vec::with_capacity(samples.max(1));
    for i in 0..samples.max(1) {
        // Dirty the buffer as a job would, then time only the zeroing.
        buf[i % bytes.max(1)] = 1;
        buf.iter_mut().step_by(4096).for_each(|b| *b = 1);
        let t = std::time::Instant::now();
        buf.fill(0);
        std::hint::black_box(&mut buf);
        times.push(t.elapsed());
    }
    times.sort();
    times[times.len() / 2]
}

/// Names of the phases returned by [`phases`].
pub const PHASES: [&str; 5] = ["new store", "instantiate", "init", "filter", "drop"];
