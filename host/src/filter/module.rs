//! A loaded filter: compiled, validated, pre-linked; runs one job per batch
//! on a fresh instance.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use wasmtime::component::{Component, HasSelf, Linker, types::ComponentItem};
use wasmtime::{ResourceLimiter, Store, Trap};

use super::bindings::{Filter, FilterImports, FilterPre, kinesthetic::filter::types as wit};
use super::error::{Cause, JobError, LoadError, chain};
use super::job::{Input, Output};
use super::limits::Limits;
use super::runtime::Runtime;

/// WASI interfaces some toolchains import just to link (Rust's `wasm32-wasip2`
/// standard library imports `wasi:cli/*` and `wasi:io/*`, unless the filter
/// SDK defines them inside the filter). The host satisfies them with stubs
/// that trap when called: a filter still gets no files, network,
/// environment or clocks.
const STUBBED_PREFIXES: &[&str] = &["wasi:cli/", "wasi:io/", "wasi:clocks/", "wasi:random/"];

/// The seed of `wasi:random/insecure-seed@0.2.x`, the one WASI interface the
/// host implements: Rust's `HashMap` asks it for the key of its hasher, and
/// without it every `HashMap::new()` in a filter trapped. The seed is fixed,
/// so a filter's output never depends on the run (hash iteration order
/// included); a batch's size and the deadline bound what crafted colliding
/// keys could cost.
const FIXED_SEED: (u64, u64) = (0x6b69_6e65_7374_6865, 0x7469_632d_7365_6564);

/// Whether the import `name` (with its version) is the interface the host
/// answers with [`FIXED_SEED`]: `wasi:random/insecure-seed`, version 0.2.x.
fn is_insecure_seed(name: &str) -> bool {
    name.strip_prefix("wasi:random/insecure-seed@0.2.")
        .is_some_and(|patch| patch.bytes().all(|b| b.is_ascii_digit()) && !patch.is_empty())
}

/// Parameters passed to a filter's `init`.
pub type Params = Vec<(String, String)>;

/// What `kinesthetic filter check` prints about a module.
#[derive(Debug, Clone)]
pub struct FilterInfo {
    pub name: String,
    pub sha256: String,
    pub size: usize,
    pub exports: Vec<String>,
    pub imports: Vec<String>,
    /// Imports satisfied by trapping stubs.
    pub stubbed_imports: Vec<String>,
    /// The largest memory any of its core instances starts with, in bytes
    /// (`None`: not known before instantiation). Above a job's memory cap,
    /// every job fails.
    pub initial_memory_bytes: Option<u64>,
}

/// Counts of a filter's log lines, across jobs.
#[derive(Debug, Default)]
pub struct LogStats {
    pub forwarded: AtomicU64,
    pub suppressed: AtomicU64,
    /// Rate limit across jobs: the current one-second window and its count,
    /// for errors and for the other levels apart, so that a flood of
    /// `println!` cannot hide the message of a panic.
    window: [AtomicU64; 2],
    in_window: [AtomicU64; 2],
    /// Suppressed lines not yet reported, and the second of the last report:
    /// the report is rate-limited too (one a second per filter at most).
    unreported: AtomicU64,
    reported_at: AtomicU64,
}

fn unix_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Log lines one filter may send per second, across all its jobs.
pub const LOGS_PER_SECOND: u64 = 200;

impl LogStats {
    /// Takes one line from this second's budget of its kind (errors, or
    /// the other levels).
    fn admit(&self, error: bool) -> bool {
        let k = usize::from(error);
        let now = unix_secs();
        if self.window[k].swap(now, Ordering::Relaxed) != now {
            self.in_window[k].store(0, Ordering::Relaxed);
        }
        self.in_window[k].fetch_add(1, Ordering::Relaxed) < LOGS_PER_SECOND
    }

    /// Suppressed lines not reported yet (to report them at the end of a run).
    pub fn take_unreported(&self) -> u64 {
        self.unreported.swap(0, Ordering::Relaxed)
    }

    /// Counts a job's suppressed lines; returns how many to report now, at
    /// most once a second (the rest wait for a later report).
    fn suppress(&self, n: u64) -> Option<u64> {
        self.suppressed.fetch_add(n, Ordering::Relaxed);
        self.unreported.fetch_add(n, Ordering::Relaxed);
        let now = unix_secs();
        if self.reported_at.swap(now, Ordering::Relaxed) == now {
            return None;
        }
        Some(self.unreported.swap(0, Ordering::Relaxed)).filter(|&n| n > 0)
    }
}

/// A compiled, validated filter. Share it with `Arc`; every job gets a fresh
/// instance, so jobs of one filter run concurrently.
pub struct LoadedFilter {
    runtime: Runtime,
    name: Arc<str>,
    sha256: Arc<str>,
    pre: FilterPre<HostState>,
    info: FilterInfo,
    logs: Arc<LogStats>,
}

impl std::fmt::Debug for LoadedFilter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoadedFilter")
            .field("name", &self.name)
            .field("sha256", &self.sha256)
            .finish_non_exhaustive()
    }
}

impl LoadedFilter {
    pub(crate) fn link(
        runtime: Runtime,
        name: &str,
        sha256: String,
        size: usize,
        component: Component,
    ) -> Result<Self, LoadError> {
        let engine = runtime.engine();
        let ty = component.component_type();
        let mut imports = Vec::new();
        let mut stubbed = Vec::new();
        for (import, _) in ty.imports(engine) {
            imports.push(import.to_owned());
            let ours = import == "log" || import.starts_with("kinesthetic:filter/types@");
            if ours || is_insecure_seed(import) {
                continue;
            }
            if STUBBED_PREFIXES.iter().any(|p| import.starts_with(p)) {
                stubbed.push(import.to_owned());
            } else {
                return Err(LoadError::ForbiddenImport {
                    name: name.to_owned(),
                    import: import.to_owned(),
                });
            }
        }
        let exports: Vec<String> = ty
            .exports(engine)
            .map(|(n, item)| match item.ty {
                ComponentItem::ComponentFunc(_) => format!("{n}: func"),
                _ => n.to_owned(),
            })
            .collect();

        let engine_err = |e: wasmtime::Error| LoadError::Engine {
            name: name.to_owned(),
            message: chain(&e),
        };
        let mut linker: Linker<HostState> = Linker::new(engine);
        Filter::add_to_linker::<_, HasSelf<_>>(&mut linker, |s| s).map_err(engine_err)?;
        // Under the exact name imported: the trapping stubs below would
        // otherwise take that name before a semver-compatible one is tried.
        for import in imports.iter().filter(|i| is_insecure_seed(i)) {
            linker
                .instance(import)
                .and_then(|mut i| i.func_wrap("insecure-seed", |_, (): ()| Ok((FIXED_SEED,))))
                .map_err(engine_err)?;
        }
        linker
            .define_unknown_imports_as_traps(&component)
            .map_err(engine_err)?;
        let pre = linker
            .instantiate_pre(&component)
            .map_err(|e| LoadError::WrongWorld {
                name: name.to_owned(),
                message: chain(&e),
            })?;
        let pre = FilterPre::new(pre).map_err(|e| LoadError::WrongWorld {
            name: name.to_owned(),
            message: chain(&e),
        })?;
        let initial_memory_bytes = component.resources_required().map(|r| {
            r.max_initial_memory_size
                .unwrap_or(0)
                .saturating_mul(64 << 10)
        });
        let name: Arc<str> = Arc::from(name);
        let info = FilterInfo {
            initial_memory_bytes,
            name: name.to_string(),
            sha256: sha256.clone(),
            size,
            exports,
            imports,
            stubbed_imports: stubbed,
        };
        Ok(Self {
            runtime,
            name,
            sha256: Arc::from(sha256),
            pre,
            info,
            logs: Arc::default(),
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// SHA-256 of the module's bytes, hex.
    pub fn sha256(&self) -> &str {
        &self.sha256
    }

    pub fn info(&self) -> &FilterInfo {
        &self.info
    }

    pub fn log_stats(&self) -> &LogStats {
        &self.logs
    }

    fn error(&self, cause: Cause) -> JobError {
        JobError {
            filter: self.name.to_string(),
            sha256: self.sha256.to_string(),
            cause,
        }
    }

    fn new_store(&self, limits: &Limits) -> Result<Store<HostState>, JobError> {
        let state = HostState {
            memory_cap: limits.memory_bytes,
            overrun: None,
            peak_memory: 0,
            filter: Arc::clone(&self.name),
            logs_left: limits.logs_per_job,
            errors_left: limits.logs_per_job,
            logs_suppressed: 0,
            stats: Arc::clone(&self.logs),
        };
        let mut store = Store::new(self.runtime.engine(), state);
        store.limiter(|s| s as &mut dyn ResourceLimiter);
        store.set_epoch_deadline(limits.deadline_ms.max(1));
        store.epoch_deadline_trap();
        if self.runtime.settings().fuel {
            store
                .set_fuel(limits.fuel.unwrap_or(u64::MAX))
                .map_err(|e| self.error(Cause::Instantiate(chain(&e))))?;
        } else if limits.fuel.is_some() {
            return Err(self.error(Cause::Instantiate(
                "a fuel budget is set but the engine does not count fuel (enable it in the engine settings)".into(),
            )));
        }
        Ok(store)
    }

    /// Runs one job: fresh instance → `init(params)` → `filter(input)` → drop.
    pub fn run(&self, input: &Input, params: &Params, limits: &Limits) -> Result<Output, JobError> {
        let mut store = self.new_store(limits)?;
        let result = self.run_in(&mut store, input, params, limits);
        store.data().finish_logs();
        result
    }

    fn run_in(
        &self,
        store: &mut Store<HostState>,
        input: &Input,
        params: &Params,
        limits: &Limits,
    ) -> Result<Output, JobError> {
        let instance = self.pre.instantiate(&mut *store).map_err(|e| {
            self.before_filter(
                self.classify(store, limits, e, Cause::Instantiate),
                Cause::Instantiate,
            )
        })?;
        match instance.call_init(&mut *store, params) {
            Ok(Ok(())) => {}
            Ok(Err(msg)) => return Err(self.error(Cause::Init(msg))),
            Err(e) => {
                return Err(
                    self.before_filter(self.classify(store, limits, e, Cause::Trap), Cause::Init)
                );
            }
        }
        self.call_filter(store, &instance, input, limits)
    }

    /// A failure before `filter` is called (a memory cap met while
    /// instantiating, a trap or deadline in `init`) does not depend on the
    /// batch's lines: it is reported as the phase's error, so that nobody
    /// bisects the batch looking for a poison line.
    fn before_filter(&self, e: JobError, phase: fn(String) -> Cause) -> JobError {
        match e.cause {
            Cause::Init(_) | Cause::Instantiate(_) => e,
            other => self.error(phase(other.to_string())),
        }
    }

    fn call_filter(
        &self,
        store: &mut Store<HostState>,
        instance: &Filter,
        input: &Input,
        limits: &Limits,
    ) -> Result<Output, JobError> {
        let out = match instance.call_filter(&mut *store, &input.wit) {
            Ok(Ok(out)) => out,
            Ok(Err(msg)) => return Err(self.error(Cause::Rejected(msg))),
            Err(e) => return Err(self.classify(store, limits, e, Cause::Trap)),
        };
        Output::validate(&out, input.len()).map_err(|m| self.error(Cause::Malformed(m)))?;
        Ok(Output {
            wit: out,
            module_sha256: Arc::clone(&self.sha256),
            filter: Arc::clone(&self.name),
        })
    }

    fn classify(
        &self,
        store: &Store<HostState>,
        limits: &Limits,
        e: wasmtime::Error,
        other: fn(String) -> Cause,
    ) -> JobError {
        if let Some(wanted) = store.data().overrun {
            return self.error(Cause::MemoryLimit {
                limit: limits.memory_bytes,
                wanted,
            });
        }
        let cause = match e.downcast_ref::<Trap>() {
            Some(Trap::Interrupt) => Cause::Deadline {
                ms: limits.deadline_ms,
            },
            Some(Trap::OutOfFuel) => Cause::OutOfFuel {
                fuel: limits.fuel.unwrap_or(u64::MAX),
            },
            Some(Trap::StackOverflow) => Cause::StackOverflow,
            // The trap's own words ("out of bounds memory access", "wasm
            // `unreachable` instruction executed" for a Rust panic), without
            // the backtrace, which goes to the debug log.
            Some(Trap::MemoryOutOfBounds) => {
                tracing::debug!(filter = %self.name, error = ?e, "trap");
                other(format!(
                    "{} (a filter whose shadow stack in linear memory overflowed, e.g. from deep \
                     recursion, ends this way too: link it with a bigger -zstack-size)",
                    Trap::MemoryOutOfBounds
                ))
            }
            Some(Trap::UnreachableCodeReached) => {
                tracing::debug!(filter = %self.name, error = ?e, "trap");
                other(format!(
                    "{} (a Rust filter's panic ends this way: its message is in the log, \
                     logged by the filter at error level)",
                    Trap::UnreachableCodeReached
                ))
            }
            Some(trap) => {
                tracing::debug!(filter = %self.name, error = ?e, "trap");
                other(trap.to_string())
            }
            None => {
                let cause = e.root_cause().to_string();
                // wasmtime's words for a call to a stub of
                // `define_unknown_imports_as_traps`.
                match cause
                    .strip_prefix("unknown import: `")
                    .and_then(|rest| rest.split_once('`'))
                {
                    Some((import, _)) => other(format!(
                        "called `{import}`, which the host does not provide: filters get no \
                         files, network, environment or clocks"
                    )),
                    None => other(cause),
                }
            }
        };
        self.error(cause)
    }

    /// Times the phases of one job separately (for `filter bench`):
    /// new store, instantiate, init, filter, drop.
    pub fn time_phases(
        &self,
        input: &Input,
        params: &Params,
        limits: &Limits,
    ) -> Result<([std::time::Duration; 5], u64), JobError> {
        use std::time::Instant;
        let t0 = Instant::now();
        let mut store = self.new_store(limits)?;
        let t1 = Instant::now();
        let instance = self
            .pre
            .instantiate(&mut store)
            .map_err(|e| self.classify(&store, limits, e, Cause::Instantiate))?;
        let t2 = Instant::now();
        match instance.call_init(&mut store, params) {
            Ok(Ok(())) => {}
            Ok(Err(msg)) => return Err(self.error(Cause::Init(msg))),
            Err(e) => return Err(self.classify(&store, limits, e, Cause::Trap)),
        }
        let t3 = Instant::now();
        self.call_filter(&mut store, &instance, input, limits)?;
        let t4 = Instant::now();
        let peak = store.data().peak_memory;
        drop(store);
        let t5 = Instant::now();
        Ok(([t1 - t0, t2 - t1, t3 - t2, t4 - t3, t5 - t4], peak))
    }

    /// A reusable instance for measuring warm throughput (`filter bench`).
    /// Production jobs always use [`LoadedFilter::run`].
    pub fn warm(&self, params: &Params, limits: &Limits) -> Result<WarmInstance<'_>, JobError> {
        let mut store = self.new_store(limits)?;
        let instance = self
            .pre
            .instantiate(&mut store)
            .map_err(|e| self.classify(&store, limits, e, Cause::Instantiate))?;
        match instance.call_init(&mut store, params) {
            Ok(Ok(())) => {}
            Ok(Err(msg)) => return Err(self.error(Cause::Init(msg))),
            Err(e) => return Err(self.classify(&store, limits, e, Cause::Trap)),
        }
        Ok(WarmInstance {
            filter: self,
            store,
            instance,
            limits: *limits,
        })
    }
}

/// One instance kept across batches; only for benchmarks.
pub struct WarmInstance<'a> {
    filter: &'a LoadedFilter,
    store: Store<HostState>,
    instance: Filter,
    limits: Limits,
}

impl WarmInstance<'_> {
    pub fn run(&mut self, input: &Input) -> Result<Output, JobError> {
        self.store
            .set_epoch_deadline(self.limits.deadline_ms.max(1));
        // Each batch gets the whole budget, as a fresh instance would.
        if self.filter.runtime.settings().fuel {
            self.store
                .set_fuel(self.limits.fuel.unwrap_or(u64::MAX))
                .map_err(|e| self.filter.error(Cause::Instantiate(chain(&e))))?;
        }
        self.filter
            .call_filter(&mut self.store, &self.instance, input, &self.limits)
    }
}

/// Per-store state: limits and the log budget of one job.
pub(crate) struct HostState {
    memory_cap: u64,
    overrun: Option<u64>,
    /// Largest linear memory any core instance of this job grew to.
    peak_memory: u64,
    filter: Arc<str>,
    logs_left: u32,
    errors_left: u32,
    logs_suppressed: u64,
    stats: Arc<LogStats>,
}

impl HostState {
    fn finish_logs(&self) {
        if self.logs_suppressed > 0
            && let Some(n) = self.stats.suppress(self.logs_suppressed)
        {
            tracing::warn!(
                filter = %self.filter,
                suppressed = n,
                "filter log lines suppressed since the last report (limits: logs_per_job, and LOGS_PER_SECOND per filter; reported once a second at most)"
            );
        }
    }
}

/// Longest filter log message passed on, in bytes.
const MAX_LOG_MESSAGE: usize = 1024;

impl FilterImports for HostState {
    fn log(&mut self, level: wit::Level, message: String) {
        // Errors (a panic's message among them) have a budget of their own.
        let error = matches!(level, wit::Level::Error);
        let left = if error {
            &mut self.errors_left
        } else {
            &mut self.logs_left
        };
        if *left == 0 || !self.stats.admit(error) {
            self.logs_suppressed += 1;
            return;
        }
        *left -= 1;
        self.stats.forwarded.fetch_add(1, Ordering::Relaxed);
        let mut msg = message.as_str();
        if msg.len() > MAX_LOG_MESSAGE {
            let mut end = MAX_LOG_MESSAGE;
            while !msg.is_char_boundary(end) {
                end -= 1;
            }
            msg = &msg[..end];
        }
        let filter = &*self.filter;
        match level {
            wit::Level::Trace => tracing::trace!(target: "filter", filter, "{msg}"),
            wit::Level::Debug => tracing::debug!(target: "filter", filter, "{msg}"),
            wit::Level::Info => tracing::info!(target: "filter", filter, "{msg}"),
            wit::Level::Warn => tracing::warn!(target: "filter", filter, "{msg}"),
            wit::Level::Error => tracing::error!(target: "filter", filter, "{msg}"),
        }
    }
}

impl wit::Host for HostState {}

impl ResourceLimiter for HostState {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired as u64 > self.memory_cap {
            self.overrun = Some(desired as u64);
            wasmtime::bail!(
                "memory cap of {} bytes exceeded (wanted {desired})",
                self.memory_cap
            );
        }
        self.peak_memory = self.peak_memory.max(desired as u64);
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(desired <= 100_000)
    }
}
