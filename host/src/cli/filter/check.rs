//! `kinesthetic filter check`: a component checked against the filter
//! world and the memory cap its jobs will run under; its exports, imports,
//! size and hash printed.

use std::path::Path;
use std::process::ExitCode;

use anyhow::bail;

use super::EngineOpts;
use crate::config::FilterLimits;

pub(super) fn check(
    filter: &Path,
    memory_mib: u64,
    engine: &EngineOpts,
) -> anyhow::Result<ExitCode> {
    let limits = FilterLimits {
        memory_mib,
        ..FilterLimits::default()
    };
    limits
        .check()
        .map_err(|(key, m)| anyhow::anyhow!("--{} {m}", key.replace('_', "-")))?;
    let runtime = engine.runtime(false)?;
    let f = runtime.load_file(filter)?;
    let info = f.info();
    let cap = memory_mib << 20;
    if let Some(initial) = info.initial_memory_bytes.filter(|b| *b > cap) {
        bail!(
            "{}: the module starts with {:.1} MiB of memory, above the {memory_mib} MiB \
                 cap every job runs under, so every job would fail. Raise the cap (--memory-mib \
                 here, limits.memory_mib in the pipeline) to at least {} MiB, or build the \
                 module with less initial memory",
            filter.display(),
            initial as f64 / (1 << 20) as f64,
            initial.div_ceil(1 << 20)
        );
    }
    println!("filter:  {}", info.name);
    println!("file:    {}", filter.display());
    println!("size:    {} bytes", info.size);
    println!("sha256:  {}", info.sha256);
    println!("world:   kinesthetic:filter/filter@0.1.0 (ok)");
    match info.initial_memory_bytes {
        Some(b) => println!(
            "memory:  starts with {:.1} MiB (cap {memory_mib} MiB: ok)",
            b as f64 / (1 << 20) as f64
        ),
        None => println!("memory:  not known before it runs (cap {memory_mib} MiB)"),
    }
    println!("exports:");
    for e in &info.exports {
        println!("  {e}");
    }
    println!("imports:");
    for i in &info.imports {
        let note = if info.stubbed_imports.contains(i) {
            "  (stub: traps if called)"
        } else if i.starts_with("wasi:random/insecure-seed@") {
            "  (a fixed seed, for HashMap)"
        } else {
            ""
        };
        println!("  {i}{note}");
    }
    Ok(ExitCode::SUCCESS)
}
