//! The Wasm filter runtime: engine, loaded filters, jobs, registry.
//!
//! Only this module names wasmtime types.

pub mod bench;
mod bindings;
mod error;
mod isolate;
mod job;
mod limits;
mod module;
mod registry;
mod runtime;
pub mod toolchain;

pub use error::{Cause, JobError, LoadError};
pub use isolate::{
    GaveUp, ISOLATION_BUDGET, ISOLATION_DEADLINES, Isolation, IsolationBudget, OwnedLine, Poison,
    Ran, UNIFORM_PROBES, is_line_dependent, isolate, isolate_failed, run_batch,
};
pub use job::{Input, OutLine, Output};
pub use limits::{EngineSettings, Limits};
pub use module::{FilterInfo, LOGS_PER_SECOND, LoadedFilter, LogStats, Params, WarmInstance};
pub use registry::{FilterSet, Registry, ReloadReport};
pub use runtime::{EngineError, Runtime};
