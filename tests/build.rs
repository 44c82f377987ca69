//! Builds the example filters on demand (wasmtime's test-programs pattern)
//! and tells the tests where they are: `OUT_DIR/filters.rs` holds
//! `pub const ERRORS_ONLY: &str = "/abs/…/errors-only.wasm";` and so on for
//! every filter, plus `FILTERS_DIR`.
//!
//! A failed build fails this script with the reason (a missing tool says how
//! to install it). Where the C, Python or JavaScript toolchain is missing,
//! its filters are skipped with a warning and their constants are `""`;
//! their tests skip, saying why (`harness::built`). With `CI=true` a missing
//! toolchain fails the build: CI must be loud.
#![allow(clippy::print_stdout, clippy::print_stderr)] // a build script talks to cargo on stdout, reports on stderr

use std::fmt::Write as _;
use std::path::PathBuf;

fn main() {
    if let Err(e) = generate() {
        eprintln!("error: cannot build the example filters: {e}");
        std::process::exit(1);
    }
}

fn generate() -> Result<(), String> {
    let out = PathBuf::from(std::env::var_os("OUT_DIR").ok_or("OUT_DIR is not set")?);
    for path in xtask::filter_sources() {
        println!("cargo:rerun-if-changed={}", path.display());
    }
    // The filters are built into a fresh target directory only when
    // CARGO_TARGET_DIR changes.
    println!("cargo:rerun-if-env-changed=CARGO_TARGET_DIR");
    // Whether the C toolchain is found, and whether it must be.
    println!("cargo:rerun-if-env-changed=PATH");
    println!("cargo:rerun-if-env-changed=CI");
    // Where the Python and JavaScript toolchains are (`cargo xtask
    // install-tools`).
    println!("cargo:rerun-if-env-changed=KINESTHETIC_TOOLS_DIR");

    let dir = out.join("filters");
    // A filter skipped in an earlier run must not linger in the directory.
    let _ = std::fs::remove_dir_all(&dir);
    let (built, skipped) = xtask::build_filters_with_skips(&dir)?;
    let mut code = String::new();
    for s in &skipped {
        println!(
            "cargo:warning=the {} example filter `{}` is not built, and its tests skip: {}",
            s.language, s.name, s.reason
        );
        let _ = writeln!(
            code,
            "/// The `{}` example filter: not built here.\npub const {}: &str = \"\";",
            s.name,
            s.name.to_uppercase().replace('-', "_"),
        );
    }
    let _ = writeln!(
        code,
        "/// Filters not built here, and why.\npub const SKIPPED: &[(&str, &str)] = &{:?};",
        skipped
            .iter()
            .map(|s| (s.name.as_str(), s.reason.as_str()))
            .collect::<Vec<_>>()
    );
    for f in &built {
        let _ = writeln!(
            code,
            "/// The `{}` example filter ({}).\npub const {}: &str = {:?};",
            f.name,
            f.language,
            f.name.to_uppercase().replace('-', "_"),
            f.path.display().to_string()
        );
    }
    let _ = writeln!(
        code,
        "/// The directory holding every example filter as `NAME.wasm`.\n\
         pub const FILTERS_DIR: &str = {:?};",
        dir.display().to_string()
    );
    std::fs::write(out.join("filters.rs"), code)
        .map_err(|e| format!("cannot write filters.rs: {e}"))
}
