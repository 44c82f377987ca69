//! Per-filter limits and engine-wide settings.

use serde::Deserialize;

/// Limits applied to every job (one fresh instance) of a filter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// Linear memory cap per instance, in bytes.
    pub memory_bytes: u64,
    /// Wall-clock deadline per job (init + filter), in milliseconds.
    pub deadline_ms: u64,
    /// Deterministic instruction budget per job; needs `EngineSettings::fuel`.
    pub fuel: Option<u64>,
    /// Log lines a single job may send to the host before the rest are counted
    /// and suppressed. Errors (a panic's message among them) count apart,
    /// with a budget of the same size, so other lines cannot crowd them out.
    pub logs_per_job: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            memory_bytes: 64 << 20,
            deadline_ms: 1_000,
            fuel: None,
            logs_per_job: 20,
        }
    }
}

/// Settings of the shared engine; part of the precompiled-module cache key.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EngineSettings {
    /// Count fuel in every job (costs 20–30 % of throughput).
    pub fuel: bool,
    /// Bytes of each linear memory kept resident (zeroed with memset) between
    /// instances instead of being returned to the kernel and faulted in again.
    pub keep_resident_bytes: usize,
    /// Map a module's initial memory copy-on-write from one image, instead
    /// of copying it into every instance. On by default: equal for a small
    /// Rust filter, and a componentize-py filter's 12 MiB image then costs
    /// a live instance 9 MiB resident instead of 12 and a job 1.8 ms
    /// instead of 2.3 (`cargo xtask bench filter`, "live instances").
    pub memory_init_cow: bool,
    /// Maximum concurrently live instances (pooling allocator slots).
    pub max_instances: u32,
    /// Wasm call stack limit in bytes.
    pub max_wasm_stack: usize,
    /// Directory for precompiled modules (`None`: no on-disk cache).
    pub cache_dir: Option<std::path::PathBuf>,
}

impl Default for EngineSettings {
    fn default() -> Self {
        Self {
            fuel: false,
            keep_resident_bytes: 16 << 20,
            memory_init_cow: true,
            max_instances: 64,
            max_wasm_stack: 512 << 10,
            cache_dir: None,
        }
    }
}
