//! `cargo xtask …`: build automation in Rust.
#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::path::PathBuf;
use std::process::{Command, ExitCode};

use xtask::{WASM_TOOLS_VERSION, WIT_BINDGEN_VERSION, build_filters, root, target_dir};

const USAGE: &str = "usage: cargo xtask <command>

commands:
  build-filters [--out DIR]   build every example filter (Rust and C) into DIR
                              (default: $CARGO_TARGET_DIR/filters or target/filters)
  install-tools               install what the builds and tests need: the
                              wasm32-wasip2 target, Debian's clang/lld/wasi-libc,
                              wit-bindgen-cli and wasm-tools (pinned)
  bench filter                the filter runtime's figures (BENCH_MB=200 by default)
  demo                        build, generate 50 MB of logs, run errors-only over them";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let result = match args.as_slice() {
        ["build-filters"] => filters(target_dir().join("filters")),
        ["build-filters", "--out", dir] => filters(PathBuf::from(dir)),
        ["install-tools"] => install_tools(),
        ["bench", "filter"] => bench_filter(),
        ["demo"] => demo(),
        _ => {
            eprintln!("{USAGE}");
            return ExitCode::from(2);
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xtask: {e}");
            ExitCode::FAILURE
        }
    }
}

fn filters(out: PathBuf) -> Result<(), String> {
    for f in build_filters(&out)? {
        let size = std::fs::metadata(&f.path).map(|m| m.len()).unwrap_or(0);
        println!(
            "{:<12} {:<5} {:>8} bytes  {}",
            f.name,
            f.language,
            size,
            f.path.display()
        );
    }
    Ok(())
}

fn status(cmd: &mut Command) -> Result<(), String> {
    eprintln!("+ {cmd:?}");
    let s = cmd
        .status()
        .map_err(|e| format!("cannot run {:?}: {e}", cmd.get_program()))?;
    if s.success() {
        Ok(())
    } else {
        Err(format!("{:?} failed: {s}", cmd.get_program()))
    }
}

fn version_of(tool: &str) -> Option<String> {
    let out = Command::new(tool).arg("--version").output().ok()?;
    Some(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn install_tools() -> Result<(), String> {
    status(Command::new("rustup").args(["target", "add", "wasm32-wasip2"]))?;
    let have_c = version_of("clang").is_some()
        && version_of("wasm-ld").is_some()
        && PathBuf::from("/usr/include/wasm32-wasi/stdlib.h").exists();
    if !have_c {
        status(Command::new("apt-get").args(["update", "-qq"]))?;
        status(Command::new("apt-get").args([
            "install",
            "-y",
            "-qq",
            "clang",
            "lld",
            "wasi-libc",
            "libclang-rt-dev-wasm32",
        ]))?;
    }
    for (tool, krate, version) in [
        ("wit-bindgen", "wit-bindgen-cli", WIT_BINDGEN_VERSION),
        ("wasm-tools", "wasm-tools", WASM_TOOLS_VERSION),
    ] {
        if version_of(tool).is_some_and(|v| v.contains(version)) {
            eprintln!("{tool} {version}: present");
            continue;
        }
        status(Command::new("cargo").args(["install", "--locked", &format!("{krate}@{version}")]))?;
    }
    Ok(())
}

fn bench_filter() -> Result<(), String> {
    status(
        Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
            .current_dir(root())
            .args(["bench", "-p", "kinesthetic", "--bench", "filter"]),
    )
}

fn demo() -> Result<(), String> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let filters_dir = target_dir().join("filters");
    filters(filters_dir.clone())?;
    status(Command::new(&cargo).current_dir(root()).args([
        "build",
        "--release",
        "--quiet",
        "-p",
        "kinesthetic",
    ]))?;
    let bin = target_dir().join("release/kinesthetic");
    let demo = target_dir().join("demo");
    std::fs::create_dir_all(&demo).map_err(|e| e.to_string())?;
    let logs = demo.join("logs.ndjson");
    let file = std::fs::File::create(&logs).map_err(|e| e.to_string())?;
    status(
        Command::new(&bin)
            .args(["datagen", "--mb", "50", "--seed", "1"])
            .stdout(file),
    )?;
    let kept = demo.join("errors.ndjson");
    let out = std::fs::File::create(&kept).map_err(|e| e.to_string())?;
    status(
        Command::new(&bin)
            .args(["filter", "run"])
            .arg(filters_dir.join("errors-only.wasm"))
            .arg(&logs)
            .arg("--stats")
            .stdout(out),
    )?;
    let text = std::fs::read_to_string(&kept).map_err(|e| e.to_string())?;
    println!(
        "first kept events ({} in all, in {}):",
        text.lines().count(),
        kept.display()
    );
    for l in text.lines().take(3) {
        println!("  {l}");
    }
    Ok(())
}
