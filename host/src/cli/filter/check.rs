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
    // Read once more for its custom sections: a module refused below is
    // still named by its toolchain, with that toolchain's cure.
    let toolchain = std::fs::read(filter)
        .ok()
        .and_then(|b| crate::filter::toolchain::identify(&b));
    let f = match runtime.load_file(filter) {
        Ok(f) => f,
        Err(e @ crate::filter::LoadError::ForbiddenImport { .. }) => match &toolchain {
            Some(t) => bail!("{e}\nbuilt by {t}: {}", t.about_wasi()),
            None => return Err(e.into()),
        },
        Err(e) => return Err(e.into()),
    };
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
    match &toolchain {
        Some(t) => println!("built:   {t}"),
        None => println!("built:   by a toolchain that left no sign of itself"),
    }
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
    let wasi = info
        .imports
        .iter()
        .filter(|i| i.starts_with("wasi:"))
        .count();
    match (&toolchain, wasi) {
        (_, 0) => println!("imports: (no WASI: only the world's own)"),
        (Some(t), n) => println!(
            "imports: ({n} of WASI, each a stub the host provides; {})",
            t.about_wasi()
        ),
        (None, n) => println!("imports: ({n} of WASI, each a stub the host provides)"),
    }
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
