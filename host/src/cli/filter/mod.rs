//! `kinesthetic filter …`: one file per verb (`run`, `check`, `test`,
//! `new`, `bench`); the options they share, and how a run reads its input,
//! here.

mod bench;
mod check;
mod new;
mod run;
mod test;

use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use crate::config::FilterLimits;
use crate::filter::{EngineSettings, IsolationBudget, Limits, Runtime};
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
    /// Scaffold a filter (Rust, C, Python or JavaScript) that builds with
    /// one command and passes its own test.
    New {
        /// Filter name (letters, digits, `-` and `_`): the new directory.
        name: String,
        /// Parent directory of the new filter.
        #[arg(long, default_value = ".")]
        dir: PathBuf,
        /// The language: `rust` (a crate on the SDK), `c` (a C file and a
        /// `build.sh` running wit-bindgen, clang and wasm-tools), `python` (a
        /// module on the SDK's `kinesthetic_filter.py`, built by
        /// componentize-py) or `js` (a module on a copy of the SDK's
        /// `kinesthetic-filter.js`, built by componentize-js).
        #[arg(long, default_value = "rust")]
        lang: String,
        /// Path of the SDK (`filter-sdk/`; default: the SDK of the checkout
        /// this binary was built from). Not for `c`: a C filter carries its
        /// own copy of the world.
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
        } => run::run(
            &filter,
            input.as_deref(),
            &opts,
            stats,
            with_key,
            with_route,
        ),
        FilterCommand::Check {
            filter,
            memory_mib,
            engine,
        } => check::check(&filter, memory_mib, &engine),
        FilterCommand::Test {
            filter,
            input,
            expect,
            opts,
        } => test::test(&filter, &input, &expect, &opts),
        FilterCommand::New {
            name,
            dir,
            lang,
            sdk,
        } => new::new(&name, &dir, &lang, sdk),
        FilterCommand::Bench {
            filter,
            input,
            mb,
            rounds,
            opts,
        } => bench::bench(&filter, input.as_deref(), mb, rounds, &opts),
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
