//! `cargo xtask services up|down|status`: the local stand-ins for the AWS
//! APIs the tests talk to (DESIGN.md, "Test services"), installed pinned
//! from the package registries into `$HOME/.cache/kinesthetic-services` and
//! started on 127.0.0.1.
//!
//! - Kinesis: `kinesis-local` from npm (kinesis-mock compiled to one JS
//!   file). It binds 0.0.0.0 in code; the installed copy is patched to bind
//!   127.0.0.1, and `up` fails if that patch no longer applies.
//! - S3 and DynamoDB: `moto[server]` from PyPI, in a venv that also holds
//!   `aws_kinesis_agg`, the KPL aggregation library the interop tests run.
//!
//! `up` prints `export NAME=VALUE` lines for the tests on stdout (everything
//! else goes to stderr), so a script can `eval` them. The processes run in
//! process groups of their own, with their PIDs in `services.pids`; `down`
//! stops exactly those.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use xtask::json_string_field;

/// The npm package of the Kinesis stand-in, pinned.
pub(crate) const KINESIS_LOCAL: &str = "kinesis-local";
pub(crate) const KINESIS_LOCAL_VERSION: &str = "0.6.2";
/// What the venv holds, pinned. `protobuf` is pinned because
/// `aws_kinesis_agg`'s generated `_pb2` modules must load with it; `six` is
/// imported by `aws_kinesis_agg` without being declared as a dependency.
pub(crate) const PYTHON_PINS: &[&str] = &[
    "moto[server]==5.2.5",
    "aws_kinesis_agg==1.2.3",
    "protobuf==7.36.2",
    "six==1.17.0",
];

const HOST: &str = "127.0.0.1";
const KINESIS_PORT: u16 = 4568;
const KINESIS_TLS_PORT: u16 = 4567;
const MOTO_PORT: u16 = 5000;
const START_TIMEOUT: Duration = Duration::from_secs(90);
const STOP_TIMEOUT: Duration = Duration::from_secs(10);

/// The bind address in kinesis-local's `main.js`, and what it becomes.
const BIND_ORIGINAL: &str = r#"$m_Lcom_comcast_ip4s_Host$().em("0.0.0.0")"#;
const BIND_PATCHED: &str = r#"$m_Lcom_comcast_ip4s_Host$().em("127.0.0.1")"#;

/// `$HOME/.cache/kinesthetic-services`.
fn base_dir() -> Result<PathBuf, String> {
    let home = std::env::var_os("HOME")
        .filter(|h| !h.is_empty())
        .ok_or("HOME is not set: the services live in $HOME/.cache/kinesthetic-services")?;
    Ok(PathBuf::from(home).join(".cache/kinesthetic-services"))
}

fn venv_dir(base: &Path) -> PathBuf {
    base.join("venv")
}

fn kinesis_prefix(base: &Path) -> PathBuf {
    base.join("kinesis-local")
}

fn kinesis_package(base: &Path) -> PathBuf {
    kinesis_prefix(base)
        .join("node_modules")
        .join(KINESIS_LOCAL)
}

fn pid_file(base: &Path) -> PathBuf {
    base.join("services.pids")
}

fn log_file(base: &Path, name: &str) -> PathBuf {
    base.join("logs").join(format!("{name}.log"))
}

/// One service: how it is reached and recognised.
#[derive(Debug, Clone, Copy)]
struct Service {
    /// Name in the PID file and of the log file.
    name: &'static str,
    port: u16,
    /// Path asked by the readiness probe.
    probe_path: &'static str,
    /// A word of the process's command line, checked before signalling a
    /// PID from the file (PIDs get reused).
    cmdline_mark: &'static str,
}

const KINESIS: Service = Service {
    name: "kinesis-local",
    port: KINESIS_PORT,
    probe_path: "/healthcheck",
    cmdline_mark: "kinesis-local",
};

const MOTO: Service = Service {
    name: "moto",
    port: MOTO_PORT,
    probe_path: "/moto-api/",
    cmdline_mark: "moto_server",
};

const SERVICES: [Service; 2] = [KINESIS, MOTO];

impl Service {
    fn endpoint(&self) -> String {
        format!("http://{HOST}:{}", self.port)
    }
}

/// The variables the tests read, with their values.
fn environment(base: &Path) -> Vec<(&'static str, String)> {
    vec![
        ("KINESIS_ENDPOINT", KINESIS.endpoint()),
        ("S3_ENDPOINT", MOTO.endpoint()),
        ("DYNAMODB_ENDPOINT", MOTO.endpoint()),
        (
            "KPL_PYTHON",
            venv_dir(base).join("bin/python").display().to_string(),
        ),
    ]
}

/// A value quoted for a POSIX shell when it needs it.
fn shell_quote(v: &str) -> String {
    let plain = !v.is_empty()
        && v.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_./:=@+,".contains(&b));
    if plain {
        v.to_owned()
    } else {
        format!("'{}'", v.replace('\'', r"'\''"))
    }
}

// ---- up ------------------------------------------------------------------

/// Installs what is missing, starts what is not running, waits until both
/// answer, and returns the `export` lines for stdout.
pub(crate) fn up() -> Result<String, String> {
    let base = base_dir()?;
    std::fs::create_dir_all(base.join("logs"))
        .map_err(|e| format!("cannot create {}: {e}", base.join("logs").display()))?;

    let t = Instant::now();
    install_kinesis_local(&base)?;
    let main_js = patch_kinesis_local(&base)?;
    install_venv(&base)?;
    eprintln!("services: installed in {:.1} s", t.elapsed().as_secs_f64());

    let t = Instant::now();
    let mut pids = read_pids(&base);
    for service in SERVICES {
        let running = pids
            .iter()
            .find(|(n, _)| n == service.name)
            .map(|&(_, pid)| pid)
            .filter(|&pid| is_our_process(pid, &service));
        if let Some(pid) = running {
            wait_ready(&service, None, &base, Some(pid))?;
            eprintln!(
                "{}: already running (pid {pid}) at {}",
                service.name,
                service.endpoint()
            );
            continue;
        }
        if answers(&service) {
            return Err(format!(
                "{} already answers, but not from a process that `cargo xtask services up` \
                 started (none alive in {}): stop whatever listens on {HOST}:{}, then retry",
                service.endpoint(),
                pid_file(&base).display(),
                service.port
            ));
        }
        let mut cmd = match service.name {
            "kinesis-local" => kinesis_command(&main_js),
            _ => moto_command(&base),
        };
        let child = spawn(&mut cmd, &service, &base)?;
        let pid = child.id();
        pids.retain(|(n, _)| n != service.name);
        pids.push((service.name.to_owned(), pid));
        write_pids(&base, &pids)?;
        wait_ready(&service, Some(child), &base, Some(pid))?;
        eprintln!(
            "{}: started (pid {pid}) at {}, log {}",
            service.name,
            service.endpoint(),
            log_file(&base, service.name).display()
        );
    }
    eprintln!("services: answering in {:.1} s", t.elapsed().as_secs_f64());

    Ok(environment(&base)
        .into_iter()
        .map(|(k, v)| format!("export {k}={}\n", shell_quote(&v)))
        .collect())
}

/// Runs an installer, its output on our stderr (stdout carries the
/// environment for the caller).
fn run_installer(cmd: &mut Command, what: &str) -> Result<(), String> {
    let args: Vec<_> = cmd.get_args().map(|a| a.to_string_lossy()).collect();
    eprintln!(
        "+ {} {}",
        cmd.get_program().to_string_lossy(),
        args.join(" ")
    );
    let status = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::from(std::io::stderr()))
        .status()
        .map_err(|e| format!("{what}: cannot run {:?}: {e}", cmd.get_program()))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("{what} failed: {status} (its output is above)"))
    }
}

fn installed_kinesis_local_version(base: &Path) -> Option<String> {
    let text = std::fs::read_to_string(kinesis_package(base).join("package.json")).ok()?;
    json_string_field(&text, "version")
}

fn install_kinesis_local(base: &Path) -> Result<(), String> {
    let found = installed_kinesis_local_version(base);
    if found.as_deref() == Some(KINESIS_LOCAL_VERSION) {
        eprintln!("{KINESIS_LOCAL} {KINESIS_LOCAL_VERSION}: present");
        return Ok(());
    }
    let prefix = kinesis_prefix(base);
    std::fs::create_dir_all(&prefix)
        .map_err(|e| format!("cannot create {}: {e}", prefix.display()))?;
    // A manifest of its own, so npm installs here and not into a parent.
    let manifest = prefix.join("package.json");
    std::fs::write(
        &manifest,
        "{ \"name\": \"kinesthetic-services\", \"private\": true }\n",
    )
    .map_err(|e| format!("cannot write {}: {e}", manifest.display()))?;
    let npm = crate::find_tool("npm").ok_or(
        "npm not found: the Kinesis stand-in comes from the npm registry; \
         install Node.js (with npm) first",
    )?;
    run_installer(
        Command::new(npm)
            .arg("install")
            .arg("--prefix")
            .arg(&prefix)
            .args([
                "--no-audit",
                "--no-fund",
                "--save-exact",
                "--loglevel=error",
            ])
            .arg(format!("{KINESIS_LOCAL}@{KINESIS_LOCAL_VERSION}")),
        &format!("installing {KINESIS_LOCAL}@{KINESIS_LOCAL_VERSION} from npm"),
    )?;
    match installed_kinesis_local_version(base) {
        Some(v) if v == KINESIS_LOCAL_VERSION => Ok(()),
        other => Err(format!(
            "after npm install, {} holds version {other:?}, not {KINESIS_LOCAL_VERSION}",
            kinesis_package(base).display()
        )),
    }
}

/// The entry point of kinesis-local: its package.json's `main` (`main.js`).
fn kinesis_main_js(base: &Path) -> Result<PathBuf, String> {
    let package = kinesis_package(base);
    let text = std::fs::read_to_string(package.join("package.json")).map_err(|e| {
        format!(
            "cannot read {}: {e}",
            package.join("package.json").display()
        )
    })?;
    let main = json_string_field(&text, "main").unwrap_or_else(|| "main.js".to_owned());
    let path = package.join(main);
    if path.is_file() {
        Ok(path)
    } else {
        Err(format!(
            "{KINESIS_LOCAL}'s entry point {} is missing",
            path.display()
        ))
    }
}

/// Makes the installed kinesis-local bind 127.0.0.1 instead of 0.0.0.0.
fn patch_kinesis_local(base: &Path) -> Result<PathBuf, String> {
    let main_js = kinesis_main_js(base)?;
    let text = std::fs::read_to_string(&main_js)
        .map_err(|e| format!("cannot read {}: {e}", main_js.display()))?;
    match patch_bind(&text).map_err(|e| format!("cannot patch {}: {e}", main_js.display()))? {
        None => eprintln!("{KINESIS_LOCAL}: binds {HOST} (patched)"),
        Some(patched) => {
            let tmp = main_js.with_extension("js.patching");
            std::fs::write(&tmp, patched)
                .map_err(|e| format!("cannot write {}: {e}", tmp.display()))?;
            std::fs::rename(&tmp, &main_js)
                .map_err(|e| format!("cannot replace {}: {e}", main_js.display()))?;
            eprintln!("{KINESIS_LOCAL}: patched to bind {HOST}");
        }
    }
    Ok(main_js)
}

/// The patched text of `main.js`, or `None` when it is patched already.
/// Fails when the code it patches is not there exactly once (a new version
/// of the package): then the patch must be redone by hand.
fn patch_bind(text: &str) -> Result<Option<String>, String> {
    let original = text.matches(BIND_ORIGINAL).count();
    let patched = text.matches(BIND_PATCHED).count();
    match (original, patched) {
        (0, 1) => Ok(None),
        (1, 0) => Ok(Some(text.replacen(BIND_ORIGINAL, BIND_PATCHED, 1))),
        _ => Err(format!(
            "to bind {HOST}, expected the bind address `{BIND_ORIGINAL}` exactly once, \
             found it {original} times (and the patched form {patched} times). \
             The package changed: find where it binds 0.0.0.0 and update BIND_ORIGINAL in \
             xtask/src/services.rs"
        )),
    }
}

fn pins_stamp(base: &Path) -> PathBuf {
    venv_dir(base).join("kinesthetic-pins.txt")
}

fn pins_text() -> String {
    PYTHON_PINS.iter().map(|p| format!("{p}\n")).collect()
}

fn install_venv(base: &Path) -> Result<(), String> {
    let venv = venv_dir(base);
    let python = venv.join("bin/python");
    let ready = std::fs::read_to_string(pins_stamp(base)).ok() == Some(pins_text())
        && python.is_file()
        && venv.join("bin/moto_server").is_file();
    if ready {
        eprintln!(
            "venv {}: present ({})",
            venv.display(),
            PYTHON_PINS.join(" ")
        );
        return Ok(());
    }
    if venv.exists() {
        std::fs::remove_dir_all(&venv)
            .map_err(|e| format!("cannot remove the stale venv {}: {e}", venv.display()))?;
    }
    let system_python = crate::find_tool("python3").ok_or(
        "python3 not found: moto and aws_kinesis_agg come from PyPI into a venv; \
         install Python 3 (with venv and pip) first",
    )?;
    run_installer(
        Command::new(system_python).arg("-m").arg("venv").arg(&venv),
        "creating the venv",
    )?;
    run_installer(
        Command::new(&python)
            .args([
                "-m",
                "pip",
                "install",
                "--quiet",
                "--disable-pip-version-check",
            ])
            .args(PYTHON_PINS),
        "installing moto and aws_kinesis_agg from PyPI",
    )?;
    // The KPL library must load with the pinned protobuf; say so now rather
    // than in the middle of the tests.
    run_installer(
        Command::new(&python).args([
            "-c",
            "import aws_kinesis_agg.aggregator, aws_kinesis_agg.deaggregator",
        ]),
        "importing aws_kinesis_agg",
    )?;
    std::fs::write(pins_stamp(base), pins_text())
        .map_err(|e| format!("cannot write {}: {e}", pins_stamp(base).display()))?;
    Ok(())
}

fn kinesis_command(main_js: &Path) -> Command {
    let package = main_js.parent().unwrap_or(Path::new("."));
    let mut cmd = Command::new("node");
    cmd.arg(main_js)
        .current_dir(package)
        .env("KINESIS_MOCK_CERT_PATH", package.join("server.json"))
        .env("KINESIS_MOCK_PLAIN_PORT", KINESIS_PORT.to_string())
        .env("KINESIS_MOCK_TLS_PORT", KINESIS_TLS_PORT.to_string())
        .env("LOG_LEVEL", "WARN")
        .env("CREATE_STREAM_DURATION", "0ms")
        .env("DELETE_STREAM_DURATION", "0ms")
        .env("SPLIT_SHARD_DURATION", "0ms")
        .env("MERGE_SHARDS_DURATION", "0ms")
        .env("UPDATE_SHARD_COUNT_DURATION", "0ms")
        .env("SHARD_LIMIT", "1000");
    cmd
}

fn moto_command(base: &Path) -> Command {
    let mut cmd = Command::new(venv_dir(base).join("bin/moto_server"));
    cmd.args(["-H", HOST, "-p", &MOTO_PORT.to_string()])
        .current_dir(base);
    cmd
}

/// Starts a service detached: its own process group (so a Ctrl-C of the
/// caller does not reach it and `down` can stop the whole group), no stdin,
/// output to its log file (never to our stdout, which a `$(…)` reads to
/// the end).
fn spawn(cmd: &mut Command, service: &Service, base: &Path) -> Result<Child, String> {
    let log = log_file(base, service.name);
    let out =
        std::fs::File::create(&log).map_err(|e| format!("cannot create {}: {e}", log.display()))?;
    let err = out
        .try_clone()
        .map_err(|e| format!("cannot reopen {}: {e}", log.display()))?;
    cmd.stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .process_group(0)
        .spawn()
        .map_err(|e| {
            format!(
                "cannot start {} ({:?}): {e}",
                service.name,
                cmd.get_program()
            )
        })
}

/// The last `n` lines of a log, for error messages.
fn log_tail(base: &Path, service: &Service, n: usize) -> String {
    let log = log_file(base, service.name);
    match std::fs::read(&log) {
        Ok(bytes) => {
            let text = String::from_utf8_lossy(&bytes);
            let lines: Vec<&str> = text.lines().collect();
            let tail = lines[lines.len().saturating_sub(n)..].join("\n");
            format!("last lines of {}:\n{tail}", log.display())
        }
        Err(e) => format!("(cannot read {}: {e})", log.display()),
    }
}

/// Waits until `service` answers HTTP. Fails early when the process exits,
/// and after [`START_TIMEOUT`] (stopping the process it started); both
/// errors carry the log's tail.
fn wait_ready(
    service: &Service,
    mut child: Option<Child>,
    base: &Path,
    pid: Option<u32>,
) -> Result<(), String> {
    let start = Instant::now();
    loop {
        if answers(service) {
            return Ok(());
        }
        if let Some(c) = child.as_mut()
            && let Ok(Some(status)) = c.try_wait()
        {
            return Err(format!(
                "{} exited while starting ({status}); {}",
                service.name,
                log_tail(base, service, 30)
            ));
        }
        if child.is_none() && pid.is_some_and(|p| !is_alive(p)) {
            return Err(format!(
                "{} (pid {}) exited while starting; {}",
                service.name,
                pid.unwrap_or_default(),
                log_tail(base, service, 30)
            ));
        }
        if start.elapsed() > START_TIMEOUT {
            if let Some(p) = pid {
                stop_group(p);
            }
            return Err(format!(
                "{} did not answer at {} within {} s; {}",
                service.name,
                service.endpoint(),
                START_TIMEOUT.as_secs(),
                log_tail(base, service, 30)
            ));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Whether an HTTP server answers `GET probe_path` on the service's port
/// (any status: the point is that it speaks HTTP).
fn answers(service: &Service) -> bool {
    let addr = SocketAddr::from(([127, 0, 0, 1], service.port));
    let Ok(mut s) = TcpStream::connect_timeout(&addr, Duration::from_millis(500)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
    let _ = s.set_write_timeout(Some(Duration::from_secs(5)));
    let req = format!(
        "GET {} HTTP/1.1\r\nHost: {HOST}:{}\r\nConnection: close\r\n\r\n",
        service.probe_path, service.port
    );
    if s.write_all(req.as_bytes()).is_err() {
        return false;
    }
    let mut head = [0u8; 12];
    let mut got = 0;
    while got < head.len() {
        match s.read(&mut head[got..]) {
            Ok(0) | Err(_) => break,
            Ok(n) => got += n,
        }
    }
    head[..got].starts_with(b"HTTP/1.")
}

// ---- processes -------------------------------------------------------------

fn read_pids(base: &Path) -> Vec<(String, u32)> {
    let Ok(text) = std::fs::read_to_string(pid_file(base)) else {
        return Vec::new();
    };
    text.lines()
        .filter_map(|l| {
            let (name, pid) = l.split_once(' ')?;
            Some((name.to_owned(), pid.trim().parse().ok()?))
        })
        .collect()
}

fn write_pids(base: &Path, pids: &[(String, u32)]) -> Result<(), String> {
    let path = pid_file(base);
    let text: String = pids.iter().map(|(n, p)| format!("{n} {p}\n")).collect();
    std::fs::write(&path, text).map_err(|e| format!("cannot write {}: {e}", path.display()))
}

/// Alive and not a zombie.
fn is_alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        // The state follows the command name in parentheses.
        .and_then(|s| {
            s.rsplit_once(')')
                .map(|(_, rest)| rest.trim_start().to_owned())
        })
        .is_some_and(|rest| !rest.starts_with('Z') && !rest.starts_with('X'))
}

/// Alive, and its command line names the service (the PID was not reused).
fn is_our_process(pid: u32, service: &Service) -> bool {
    is_alive(pid)
        && std::fs::read(format!("/proc/{pid}/cmdline"))
            .is_ok_and(|c| String::from_utf8_lossy(&c).contains(service.cmdline_mark))
}

fn signal_group(pgid: u32, signal: &str) {
    // std cannot signal another process; `kill` is in every base system.
    let _ = Command::new("kill")
        .args([signal, "--", &format!("-{pgid}")])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

/// SIGTERM to the process group, SIGKILL after [`STOP_TIMEOUT`]. Returns
/// whether it had to kill.
fn stop_group(pgid: u32) -> bool {
    signal_group(pgid, "-TERM");
    let start = Instant::now();
    while is_alive(pgid) {
        if start.elapsed() > STOP_TIMEOUT {
            signal_group(pgid, "-KILL");
            std::thread::sleep(Duration::from_millis(200));
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    false
}

// ---- down, status ------------------------------------------------------------

/// Stops the services `up` started (by the PIDs in the file). Safe to call
/// when nothing runs.
pub(crate) fn down() -> Result<(), String> {
    let base = base_dir()?;
    let pids = read_pids(&base);
    if pids.is_empty() {
        eprintln!("services: none running (no {})", pid_file(&base).display());
    }
    for (name, pid) in &pids {
        let service = SERVICES.iter().find(|s| s.name == name);
        match service {
            Some(s) if is_our_process(*pid, s) => {
                let killed = stop_group(*pid);
                eprintln!(
                    "{name}: stopped (pid {pid}{})",
                    if killed { ", killed after 10 s" } else { "" }
                );
            }
            _ => eprintln!("{name}: not running (pid {pid} is gone)"),
        }
    }
    let path = pid_file(&base);
    match std::fs::remove_file(&path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(format!("cannot remove {}: {e}", path.display())),
    }
}

/// Prints each service's endpoint, PID and whether it answers; fails when
/// one does not.
pub(crate) fn status() -> Result<String, String> {
    let base = base_dir()?;
    let pids = read_pids(&base);
    let mut out = String::new();
    let mut all = true;
    for s in SERVICES {
        let pid = pids.iter().find(|(n, _)| n == s.name).map(|&(_, p)| p);
        let pid_text = match pid {
            Some(p) if is_our_process(p, &s) => format!("pid {p}"),
            Some(p) => format!("pid {p} gone"),
            None => "not started".to_owned(),
        };
        let ok = answers(&s);
        all &= ok;
        out.push_str(&format!(
            "{:<14} {:<24} {:<14} {}\n",
            s.name,
            s.endpoint(),
            pid_text,
            if ok { "answers" } else { "does not answer" }
        ));
    }
    for (k, v) in environment(&base) {
        out.push_str(&format!("{k}={v}\n"));
    }
    if all {
        Ok(out)
    } else {
        Err(format!(
            "{out}not every service answers: `cargo xtask services up`"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_fields_are_found_with_any_spacing() {
        let text = r#"{ "bin" : { "kinesis-local" : "main.js" },
            "name" : "kinesis-local", "version":"0.6.2", "main" : "main.js" }"#;
        assert_eq!(json_string_field(text, "version").as_deref(), Some("0.6.2"));
        assert_eq!(json_string_field(text, "main").as_deref(), Some("main.js"));
        assert_eq!(json_string_field(text, "missing"), None);
    }

    #[test]
    fn values_are_quoted_only_when_needed() {
        assert_eq!(
            shell_quote("http://127.0.0.1:4568"),
            "http://127.0.0.1:4568"
        );
        assert_eq!(shell_quote("/a b/python"), "'/a b/python'");
        assert_eq!(shell_quote("it's"), r"'it'\''s'");
    }

    #[test]
    fn the_bind_patch_applies_once_and_fails_loudly_otherwise() {
        let js = format!("a;{BIND_ORIGINAL}.x;b");
        let patched = patch_bind(&js).unwrap_or_else(|e| panic!("{e}"));
        let patched = patched.unwrap_or_else(|| panic!("no change"));
        assert_eq!(patched, format!("a;{BIND_PATCHED}.x;b"));
        assert!(!patched.contains("0.0.0.0"));
        // Patched already: nothing to do.
        assert_eq!(patch_bind(&patched), Ok(None));
        // The code moved or appears twice: an error naming what was sought.
        for bad in [
            "Host.em(\"0.0.0.0\")".to_owned(),
            format!("{BIND_ORIGINAL}{BIND_ORIGINAL}"),
            format!("{BIND_ORIGINAL}{BIND_PATCHED}"),
        ] {
            let e = patch_bind(&bad).err().unwrap_or_default();
            assert!(e.contains(BIND_ORIGINAL), "{e}");
        }
    }

    #[test]
    fn process_state_is_read_from_proc() {
        assert!(is_alive(std::process::id()));
        assert!(!is_alive(u32::MAX));
    }
}
