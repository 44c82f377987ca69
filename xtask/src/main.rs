//! `cargo xtask …`: build automation in Rust.
#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

mod services;

use xtask::{
    APT_PACKAGES, RUST_TARGET, WASM_TOOLS_VERSION, WIT_BINDGEN_VERSION, build_filters,
    clean_command, find_tool, root, target_dir, tool_version,
};

const USAGE: &str = "usage: cargo xtask <command>

commands:
  build-filters [--out DIR]   build every example filter (Rust and C) into DIR
                              (default: $CARGO_TARGET_DIR/filters or target/filters)
  install-tools               install what the builds and tests need: the
                              wasm32-wasip2 target, Debian's clang/lld/wasi-libc,
                              wit-bindgen-cli and wasm-tools (pinned)
  bench filter                the filter runtime's figures (BENCH_MB=200 by default)
  bench intake                the intake's figures: throughput vs. a bare handler,
                              packing, and the Kinesis path when KINESIS_ENDPOINT is set
  demo                        build, generate 50 MB of logs, run errors-only over them
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
        ["demo"] => demo(),
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

fn status(cmd: &mut Command) -> Result<(), String> {
    let args: Vec<_> = cmd.get_args().map(|a| a.to_string_lossy()).collect();
    eprintln!(
        "+ {} {}",
        cmd.get_program().to_string_lossy(),
        args.join(" ")
    );
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

/// Serves an intake on a fresh local log, sends `logs` to it, shows the
/// stream, and reads its events back into a file (returned).
fn demo_stream(bin: &Path, demo: &Path, logs: &Path) -> Result<PathBuf, String> {
    use std::io::{BufRead, Write};
    let data = demo.join("data");
    let _ = std::fs::remove_dir_all(&data);
    let mut serve = Command::new(bin)
        .args(["serve", "--listen", "127.0.0.1:0", "--admin", "127.0.0.1:0"])
        .args(["--create-stream", "logs:2", "--data"])
        .arg(&data)
        .stderr(std::process::Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot start {}: {e}", bin.display()))?;
    let stderr = serve.stderr.take().ok_or("no stderr from serve")?;
    let mut lines = std::io::BufReader::new(stderr).lines();
    let addr = loop {
        let Some(Ok(line)) = lines.next() else {
            let _ = serve.kill();
            return Err("kinesthetic serve stopped before listening".into());
        };
        if let Some(rest) = line.split("intake on http://").nth(1) {
            println!("{line}");
            break rest
                .split_whitespace()
                .next()
                .unwrap_or_default()
                .to_owned();
        }
    };
    std::thread::spawn(move || lines.for_each(drop));
    let sent = status(
        Command::new(bin)
            .arg("send")
            .arg(logs)
            .args(["--stream", "logs", "--quiet", "--url"])
            .arg(format!("http://{addr}")),
    );
    // Ctrl-C: the intake finishes what it accepted, then exits.
    let _ = Command::new("kill")
        .args(["-INT", &serve.id().to_string()])
        .status();
    let _ = serve.wait();
    sent?;
    let stream = |args: &[&str]| {
        let mut c = Command::new(bin);
        c.args(["stream", "--backend", "local", "--data"])
            .arg(&data)
            .args(args);
        c
    };
    status(&mut stream(&["describe", "logs"]))?;
    let out = stream(&["tail", "logs"])
        .output()
        .map_err(|e| format!("stream tail: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "stream tail failed: {}",
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    // `tail` prints `ID RECEIVED KEY<TAB>EVENT`; keep the events.
    let events = demo.join("from-stream.ndjson");
    let mut f = std::io::BufWriter::new(std::fs::File::create(&events).map_err(|e| e.to_string())?);
    let mut n = 0;
    for line in out.stdout.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
        let event = line
            .iter()
            .position(|&b| b == b'\t')
            .map_or(line, |i| &line[i + 1..]);
        f.write_all(event)
            .and_then(|()| f.write_all(b"\n"))
            .map_err(|e| e.to_string())?;
        n += 1;
    }
    f.flush().map_err(|e| e.to_string())?;
    println!("read {n} events back from stream logs (parents before children, de-aggregated)");
    Ok(events)
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
    // Through the intake into a stream on the local log, and back out.
    let events = demo_stream(&bin, &demo, &logs)?;
    let kept = demo.join("errors.ndjson");
    let out = std::fs::File::create(&kept).map_err(|e| e.to_string())?;
    status(
        Command::new(&bin)
            .args(["filter", "run"])
            .arg(filters_dir.join("errors-only.wasm"))
            .arg(&events)
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
