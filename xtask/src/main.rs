//! `cargo xtask …`: build automation in Rust.
#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

mod demo;
mod services;

use xtask::{
    APT_PACKAGES, COMPONENTIZE_JS_VERSION, COMPONENTIZE_PY_VERSION, PYTEST_VERSION, RUST_TARGET,
    WASM_TOOLS_VERSION, WIT_BINDGEN_VERSION, build_filters, clean_command, find_tool, root,
    target_dir, tool_version,
};

const USAGE: &str = "usage: cargo xtask <command>

commands:
  build-filters [--out DIR]   build every example filter (Rust, C, Python, JavaScript) into DIR
                              (default: $CARGO_TARGET_DIR/filters or target/filters)
  install-tools               install what the builds and tests need: the
                              wasm32-wasip2 target, Debian's clang/lld/wasi-libc,
                              wit-bindgen-cli and wasm-tools (pinned), and
                              componentize-py and pytest (pinned, in a venv in
                              ~/.cache/kinesthetic-tools/python), and
                              componentize-js (pinned by xtask/js/package-lock.json,
                              npm ci into ~/.cache/kinesthetic-tools/js)
  bench filter                the filter runtime's figures (BENCH_MB=200 by default)
  bench intake                the intake's figures: throughput vs. a bare handler,
                              packing, and the Kinesis path when KINESIS_ENDPOINT is set
  bench consumer              the consumer's figures: throughput vs. the filter's
                              (BENCH_MB=100), event → archive latency at 5,000 events/s
                              (BENCH_SECS=20; Kinesis too when KINESIS_ENDPOINT is set),
                              and the binary's RSS idle and under load
  demo                        build the filters and the binary, then run `kinesthetic
                              serve` in $CARGO_TARGET_DIR/demo (or target/demo) with
                              errors-only dropped in, posting ~1 MB of generated logs
                              every 2 s, until Ctrl-C. Ports: DEMO_LISTEN (127.0.0.1:8080),
                              DEMO_ADMIN (127.0.0.1:9090). DEMO_SECS=N: stop after N s and
                              check that both archives hold objects
  services up                 install (pinned, cached in ~/.cache/kinesthetic-services)
                              and start the test services on 127.0.0.1: kinesis-local
                              (Kinesis) and moto (S3, DynamoDB); prints the
                              `export NAME=VALUE` lines the tests read
  services down               stop them (safe to repeat)
  services status             endpoints, PIDs, and whether each answers";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let result = match args.as_slice() {
        ["build-filters"] => filters(target_dir().join("filters")),
        ["build-filters", "--out", dir] => filters(PathBuf::from(dir)),
        ["install-tools"] => install_tools(),
        ["bench", "filter"] => bench_filter(),
        ["bench", "intake"] => bench("intake"),
        ["bench", "consumer"] => bench("consumer"),
        ["demo"] => demo::run(),
        ["services", "up"] => services::up().map(|env| print!("{env}")),
        ["services", "down"] => services::down(),
        ["services", "status"] => services::status().map(|text| print!("{text}")),
        ["help" | "-h" | "--help"] => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
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
    let built = build_filters(&out)?;
    for f in &built {
        let size = std::fs::metadata(&f.path).map(|m| m.len()).unwrap_or(0);
        println!(
            "{:<12} {:<5} {:>8} bytes  {}",
            f.name,
            f.language,
            size,
            f.path.display()
        );
    }
    eprintln!("{} filters in {}", built.len(), out.display());
    Ok(())
}

/// `+ PROGRAM ARGS…` on stderr.
fn print_command(cmd: &Command) {
    let args: Vec<_> = cmd.get_args().map(|a| a.to_string_lossy()).collect();
    eprintln!(
        "+ {} {}",
        cmd.get_program().to_string_lossy(),
        args.join(" ")
    );
}

fn status(cmd: &mut Command) -> Result<(), String> {
    print_command(cmd);
    let s = cmd
        .status()
        .map_err(|e| format!("cannot run {:?}: {e}", cmd.get_program()))?;
    if s.success() {
        Ok(())
    } else {
        Err(format!("{:?} failed: {s}", cmd.get_program()))
    }
}

fn install_tools() -> Result<(), String> {
    // The Rust target (no network when it is already installed).
    let installed = Command::new("rustup")
        .args(["target", "list", "--installed"])
        .output()
        .map_err(|e| format!("cannot run rustup: {e}: install Rust with rustup first"))?;
    if String::from_utf8_lossy(&installed.stdout)
        .lines()
        .any(|t| t.trim() == RUST_TARGET)
    {
        eprintln!("{RUST_TARGET} target: present");
    } else {
        status(Command::new("rustup").args(["target", "add", RUST_TARGET]))?;
    }

    // Debian's clang, lld, wasi-libc and clang's wasm32 builtins.
    let c_ready = find_tool("clang").is_some()
        && find_tool("wasm-ld").is_some()
        && Path::new("/usr/include/wasm32-wasi/stdlib.h").is_file()
        && wasm32_builtins_present();
    if c_ready {
        eprintln!("clang, wasm-ld, wasi-libc: present");
    } else {
        status(Command::new("apt-get").args(["update", "-qq"]))?;
        status(
            Command::new("apt-get")
                .args(["install", "-y", "-qq", "--no-install-recommends"])
                .args(APT_PACKAGES)
                .env("DEBIAN_FRONTEND", "noninteractive"),
        )?;
    }

    // The pinned crates.io tools, only when the right version is missing.
    for (tool, krate, version) in [
        ("wit-bindgen", "wit-bindgen-cli", WIT_BINDGEN_VERSION),
        ("wasm-tools", "wasm-tools", WASM_TOOLS_VERSION),
    ] {
        let found = find_tool(tool).and_then(|p| tool_version(&p));
        if found
            .as_deref()
            .is_some_and(|v| v.split_whitespace().any(|w| w == version))
        {
            eprintln!("{tool} {version}: present");
            continue;
        }
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        status(clean_command(cargo).args(["install", "--locked", &format!("{krate}@{version}")]))?;
    }

    // The Python toolchain in a virtual environment of its own: pinned
    // componentize-py (builds the Python filters) and pytest (their native
    // tests), from PyPI.
    if xtask::componentize_py().is_ok() && xtask::tools_python().is_some() {
        eprintln!("componentize-py {COMPONENTIZE_PY_VERSION}: present");
    } else {
        let venv = xtask::python_tools_dir();
        if xtask::tools_python().is_none() {
            status(Command::new("python3").args(["-m", "venv"]).arg(&venv))?;
        }
        status(
            Command::new(venv.join("bin/pip"))
                .args(["install", "--quiet", "--disable-pip-version-check"])
                .arg(format!("componentize-py=={COMPONENTIZE_PY_VERSION}"))
                .arg(format!("pytest=={PYTEST_VERSION}")),
        )?;
    }

    // The JavaScript toolchain: componentize-js from npm, exactly as the
    // repository's lock file pins it (`npm ci`), in a directory of its own.
    // A copy of the lock file is left beside it once `npm ci` has succeeded:
    // it says what was installed.
    if xtask::componentize_js().is_ok() {
        eprintln!("componentize-js {COMPONENTIZE_JS_VERSION}: present");
    } else {
        let npm = find_tool("npm").ok_or(
            "npm not found: the JavaScript filters' toolchain comes from the npm registry; \
             install Node.js (with npm) first",
        )?;
        let dir = xtask::js_tools_dir();
        std::fs::create_dir_all(&dir)
            .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        let installed = dir.join(xtask::JS_INSTALLED_LOCK);
        if installed.exists() {
            std::fs::remove_file(&installed)
                .map_err(|e| format!("cannot remove {}: {e}", installed.display()))?;
        }
        for file in ["package.json", "package-lock.json"] {
            let from = xtask::js_toolchain_manifest_dir().join(file);
            std::fs::copy(&from, dir.join(file))
                .map_err(|e| format!("cannot copy {} to {}: {e}", from.display(), dir.display()))?;
        }
        status(
            Command::new(npm)
                .args(["ci", "--no-audit", "--no-fund", "--loglevel=error"])
                .current_dir(&dir),
        )?;
        std::fs::copy(dir.join("package-lock.json"), &installed)
            .map_err(|e| format!("cannot write {}: {e}", installed.display()))?;
        xtask::componentize_js().map_err(|e| format!("after npm ci: {e}"))?;
    }
    Ok(())
}

/// Whether clang finds its runtime builtins for wasm32 (Debian's
/// `libclang-rt-dev-wasm32`).
fn wasm32_builtins_present() -> bool {
    Command::new("clang")
        .args(["--target=wasm32-wasi", "-print-libgcc-file-name"])
        .output()
        .ok()
        .map(|o| PathBuf::from(String::from_utf8_lossy(&o.stdout).trim()))
        .is_some_and(|p| p.is_file())
}

fn bench(name: &str) -> Result<(), String> {
    status(
        Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
            .current_dir(root())
            .args(["bench", "-p", "kinesthetic", "--bench", name]),
    )
}

fn bench_filter() -> Result<(), String> {
    status(
        Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
            .current_dir(root())
            .args(["bench", "-p", "kinesthetic", "--bench", "filter"]),
    )
}
