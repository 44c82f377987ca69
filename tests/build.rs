//! Builds the example filters on demand (wasmtime's test-programs pattern)
//! and tells the tests where they are: `OUT_DIR/filters.rs`.
#![allow(clippy::print_stderr)] // a build script reports on stderr

use std::fmt::Write as _;
use std::path::PathBuf;

fn main() {
    let out = PathBuf::from(std::env::var_os("OUT_DIR").unwrap_or_default());
    let root = xtask::root();
    for dir in ["example-filters", "filter-sdk/src", "filter-sdk/wit", "wit"] {
        println!("cargo:rerun-if-changed={}", root.join(dir).display());
    }
    let built = match xtask::build_filters(&out.join("filters")) {
        Ok(b) => b,
        Err(e) => {
            // Loud on purpose: the tests need every filter.
            eprintln!("cannot build the example filters: {e}");
            std::process::exit(1);
        }
    };
    let mut code = String::new();
    for f in &built {
        let _ = writeln!(
            code,
            "pub const {}: &str = {:?};",
            f.name.to_uppercase().replace('-', "_"),
            f.path.display().to_string()
        );
    }
    let _ = writeln!(
        code,
        "pub const FILTERS_DIR: &str = {:?};",
        out.join("filters").display().to_string()
    );
    if let Err(e) = std::fs::write(out.join("filters.rs"), code) {
        eprintln!("cannot write filters.rs: {e}");
        std::process::exit(1);
    }
}
