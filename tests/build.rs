//! Builds the example filters on demand (wasmtime's test-programs pattern)
//! and tells the tests where they are: `OUT_DIR/filters.rs` holds
//! `pub const ERRORS_ONLY: &str = "/abs/…/errors-only.wasm";` and so on for
//! every filter, plus `FILTERS_DIR`.
//!
//! A failed build fails this script with the reason (a missing tool says how
//! to install it): the tests need every filter, so CI must be loud.
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

    let dir = out.join("filters");
    let built = xtask::build_filters(&dir)?;
    let mut code = String::new();
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
