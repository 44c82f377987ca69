//! Typed errors of the filter runtime.

use std::fmt;

/// Why one job (one batch through one filter) failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cause {
    /// The filter's `init` returned an error (usually bad or missing params).
    Init(String),
    /// The filter's `filter` returned an error for this batch.
    Rejected(String),
    /// The guest trapped (panic, unreachable, out-of-bounds access, …).
    Trap(String),
    /// The guest exhausted its call stack (unbounded recursion?).
    StackOverflow,
    /// The job ran past its deadline.
    Deadline { ms: u64 },
    /// The guest tried to grow its memory past the cap.
    MemoryLimit { limit: u64, wanted: u64 },
    /// The job used up its fuel budget.
    OutOfFuel { fuel: u64 },
    /// The answer broke the world's contract (index out of range, …).
    Malformed(String),
    /// The instance could not be created.
    Instantiate(String),
}

impl fmt::Display for Cause {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Cause::Init(m) => write!(f, "init failed: {m}"),
            Cause::Rejected(m) => write!(f, "filter returned an error: {m}"),
            Cause::Trap(m) => write!(f, "trapped: {m}"),
            Cause::StackOverflow => {
                write!(f, "trapped: call stack exhausted (unbounded recursion?)")
            }
            Cause::Deadline { ms } => write!(f, "deadline of {ms} ms exceeded"),
            Cause::MemoryLimit { limit, wanted } => write!(
                f,
                "memory cap of {} exceeded (the guest asked for {})",
                human_bytes(*limit),
                human_bytes(*wanted)
            ),
            Cause::OutOfFuel { fuel } => write!(f, "fuel budget of {fuel} exhausted"),
            Cause::Malformed(m) => write!(f, "malformed answer: {m}"),
            Cause::Instantiate(m) => write!(f, "cannot instantiate: {m}"),
        }
    }
}

/// A job failed: names the filter, its module hash and the cause.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("filter `{filter}` (sha256 {}): {cause}", short_hash(.sha256))]
pub struct JobError {
    pub filter: String,
    pub sha256: String,
    pub cause: Cause,
}

/// A module could not be loaded as a filter.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("cannot read filter `{}`: {error}", .path.display())]
    Read {
        path: std::path::PathBuf,
        error: std::io::Error,
    },
    #[error("filter `{name}` is not a WebAssembly file (no `\\0asm` magic)")]
    NotWasm { name: String },
    #[error(
        "filter `{name}` is truncated: {len} bytes, shorter than a WebAssembly header (8 bytes); \
         a file still being written?"
    )]
    Truncated { name: String, len: usize },
    #[error(
        "filter `{name}` is a core WebAssembly module, not a component; build it for \
         wasm32-wasip2 or wrap it with `wasm-tools component new`"
    )]
    CoreModule { name: String },
    #[error("filter `{name}` does not compile: {message}")]
    Compile { name: String, message: String },
    #[error(
        "filter `{name}` imports `{import}`, which the host does not provide \
         (filters get only the `log` import)"
    )]
    ForbiddenImport { name: String, import: String },
    #[error(
        "filter `{name}` does not implement the kinesthetic:filter world \
         (it needs exports `init` and `filter`): {message}"
    )]
    WrongWorld { name: String, message: String },
    #[error("filter `{name}`: {message}")]
    Engine { name: String, message: String },
}

pub(crate) fn short_hash(hash: &str) -> &str {
    hash.get(..12).unwrap_or(hash)
}

pub(crate) fn human_bytes(n: u64) -> String {
    const MIB: u64 = 1 << 20;
    if n >= MIB && n.is_multiple_of(MIB) {
        format!("{} MiB", n / MIB)
    } else if n >= MIB {
        format!("{:.1} MiB", n as f64 / MIB as f64)
    } else {
        format!("{n} bytes")
    }
}

/// Renders a wasmtime error with its whole chain on one line.
pub(crate) fn chain(e: &wasmtime::Error) -> String {
    let mut out = String::new();
    for (i, c) in e.chain().enumerate() {
        if i > 0 {
            out.push_str(": ");
        }
        out.push_str(&c.to_string());
    }
    out
}
