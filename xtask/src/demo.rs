//! `cargo xtask demo`: the service running on this machine with data
//! flowing and the archives filling.
//!
//! It builds the example filters (the C one only where its toolchain is
//! found) and the `kinesthetic` binary (dev profile, together with the
//! test targets, so that `cargo test --workspace` reuses the build), starts `kinesthetic serve` on the embedded default in
//! `TARGET/demo/` with `errors-only.wasm` dropped into its filters
//! directory, and posts ≈ 1 MB of generated logs every 2 s until Ctrl-C.
//! With `DEMO_SECS=N` it stops by itself after N seconds and checks that the
//! raw archive and the `errors-only` archive each hold an object (CI).
//!
//! Ctrl-C reaches every process of the terminal's foreground group. So that
//! this process outlives it (waits for serve's graceful stop, then exits 0),
//! it goes on, after the builds, through `sh -c "trap '' INT; exec …"`: the
//! same process with SIGINT ignored. `serve` installs its own handler; the
//! short-lived `datagen | send` pairs inherit the ignored signal and are
//! stopped from here.

use std::io::{BufRead, BufReader, Read};
use std::net::{SocketAddr, TcpListener};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use xtask::{root, target_dir};

/// The filter the demo runs.
const FILTER: &str = "errors-only";
/// Set when the demo goes on after the builds with SIGINT ignored.
const RUN_PHASE: &str = "KINESTHETIC_DEMO_RUN_PHASE";
/// One post of generated logs every this long.
const PERIOD: Duration = Duration::from_secs(2);
/// MB generated per post.
const MB_PER_POST: u64 = 1;
/// A progress line every this long.
const PROGRESS: Duration = Duration::from_secs(10);
/// How long serve may take to stop after SIGINT (its own drain is bounded
/// by consumer.shutdown_timeout_ms, 10 s).
const STOP_TIMEOUT: Duration = Duration::from_secs(30);

pub(crate) fn run() -> Result<(), String> {
    if std::env::var_os(RUN_PHASE).is_none() {
        // Settings and ports before the builds, which can take minutes.
        preflight()?;
        build()?;
        // Only returns when `sh` cannot be run.
        let err = Command::new("sh")
            .arg("-c")
            .arg("trap '' INT; exec \"$0\" \"$@\"")
            .arg(std::env::current_exe().map_err(|e| format!("cannot find xtask itself: {e}"))?)
            .args(std::env::args_os().skip(1))
            .env(RUN_PHASE, "1")
            .exec();
        eprintln!(
            "note: cannot run sh ({err}): Ctrl-C will end this command before serve has stopped"
        );
    }
    serve_and_feed()
}

fn filters_build_dir() -> PathBuf {
    target_dir().join("filters")
}

fn binary() -> PathBuf {
    target_dir()
        .join("debug")
        .join(format!("kinesthetic{}", std::env::consts::EXE_SUFFIX))
}

/// The example filters and the binary: the dev profile (its dependencies
/// are optimised), and with the workspace's test targets, so that the
/// features of the dependencies are resolved as `cargo test --workspace`
/// resolves them (the tests' dev-dependencies add some, to serde_json,
/// getrandom, regex-syntax, …). `cargo build -p kinesthetic` alone would
/// build most dependencies a second time, differently, for the tests; this
/// way the README's test command finds everything built.
fn build() -> Result<(), String> {
    crate::filters(filters_build_dir())?;
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = Command::new(cargo);
    // What `cargo run` set for this process must not reach the build: a
    // build script that watches one of these (ring watches
    // CARGO_MANIFEST_DIR) would run again, and with it everything after
    // it, here and again in the next `cargo test`.
    for (key, _) in std::env::vars_os() {
        if key.to_str().is_some_and(is_set_by_cargo_run) {
            cmd.env_remove(&key);
        }
    }
    crate::status(
        cmd.current_dir(root())
            .args(["build", "--workspace", "--bins", "--tests"]),
    )
}

/// The variables `cargo run` sets for the program it runs (besides `CARGO`
/// and the library path).
fn is_set_by_cargo_run(key: &str) -> bool {
    key.starts_with("CARGO_PKG_")
        || key.starts_with("CARGO_MANIFEST_")
        || matches!(
            key,
            "CARGO_CRATE_NAME" | "CARGO_BIN_NAME" | "CARGO_PRIMARY_PACKAGE" | "OUT_DIR"
        )
}

/// An address from the environment, else the default.
fn env_addr(var: &str, default: &str) -> Result<SocketAddr, String> {
    let text = std::env::var(var).unwrap_or_else(|_| default.to_owned());
    text.parse()
        .map_err(|_| format!("{var}={text}: expected ADDRESS:PORT, such as 127.0.0.1:8081"))
}

/// Fails, saying what to do, when something listens on `addr` already.
fn check_free(addr: SocketAddr, role: &str) -> Result<(), String> {
    match TcpListener::bind(addr) {
        Ok(_) => Ok(()),
        Err(e) => Err(format!(
            "cannot listen on {addr} for the {role}: {e}. Another `kinesthetic serve` (an earlier \
             demo?) may hold it: stop that process, or give the demo other ports, e.g. \
             `DEMO_LISTEN=127.0.0.1:8081 DEMO_ADMIN=127.0.0.1:9091 cargo xtask demo` \
             (serve's --listen and --admin)"
        )),
    }
}

/// `DEMO_SECS`: run this long, then stop and check the archives.
fn demo_secs() -> Result<Option<u64>, String> {
    match std::env::var("DEMO_SECS") {
        Err(_) => Ok(None),
        Ok(v) if v.trim().is_empty() => Ok(None),
        Ok(v) => match v.trim().parse::<u64>() {
            Ok(n) if n >= 1 => Ok(Some(n)),
            _ => Err(format!(
                "DEMO_SECS={v}: expected a number of seconds from 1"
            )),
        },
    }
}

/// The running `kinesthetic serve`; dropping it stops it.
struct Serve {
    child: Child,
    pid_file: PathBuf,
}

impl Serve {
    /// SIGINT (a graceful stop), then its exit status; killed when it does
    /// not stop within [`STOP_TIMEOUT`].
    fn stop(&mut self) -> Result<ExitStatus, String> {
        let result = self.stop_inner();
        let _ = std::fs::remove_file(&self.pid_file);
        result
    }

    fn stop_inner(&mut self) -> Result<ExitStatus, String> {
        let wait_err = |e: std::io::Error| format!("cannot wait for kinesthetic serve: {e}");
        if let Some(s) = self.child.try_wait().map_err(wait_err)? {
            return Ok(s);
        }
        let _ = Command::new("kill")
            .args(["-INT", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + STOP_TIMEOUT;
        while Instant::now() < deadline {
            if let Some(s) = self.child.try_wait().map_err(wait_err)? {
                return Ok(s);
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        Err(format!(
            "kinesthetic serve did not stop within {} s of SIGINT: killed",
            STOP_TIMEOUT.as_secs()
        ))
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.stop();
    }
}

/// Where the demo's things are.
struct Places {
    demo: PathBuf,
    filters: PathBuf,
    raw: PathBuf,
    filtered: PathBuf,
}

impl Places {
    fn new() -> Self {
        let demo = target_dir().join("demo");
        let data = demo.join("kinesthetic-data");
        Places {
            filters: demo.join("filters"),
            raw: data.join("archive/raw"),
            filtered: data.join("archive/filtered").join(FILTER),
            demo,
        }
    }

    /// (raw objects, errors-only objects).
    fn counts(&self) -> (usize, usize) {
        (count_objects(&self.raw), count_objects(&self.filtered))
    }
}

/// Archive objects (`*.ndjson.gz`, not the temporary files they are written
/// as) anywhere under `dir`.
fn count_objects(dir: &Path) -> usize {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .filter_map(Result::ok)
        .map(|e| {
            let path = e.path();
            let name = e.file_name();
            let name = name.to_string_lossy();
            if path.is_dir() {
                count_objects(&path)
            } else {
                usize::from(name.ends_with(".ndjson.gz") && !name.starts_with('.'))
            }
        })
        .sum()
}

/// Starts serve on the demo's directory and reads its banner for the
/// addresses it listens on: (serve, intake address, admin address).
fn start_serve(
    bin: &Path,
    places: &Places,
    listen: SocketAddr,
    admin: SocketAddr,
) -> Result<(Serve, String, String), String> {
    let mut cmd = Command::new(bin);
    cmd.arg("serve")
        .arg("--listen")
        .arg(listen.to_string())
        .arg("--admin")
        .arg(admin.to_string())
        .arg("--data")
        .arg(places.demo.join("kinesthetic-data"))
        .arg("--filters")
        .arg(&places.filters)
        .env_remove(RUN_PHASE)
        .stdin(Stdio::null())
        .stderr(Stdio::piped());
    crate::print_command(&cmd);
    let mut child = cmd
        .spawn()
        .map_err(|e| format!("cannot start {}: {e}", bin.display()))?;
    let stderr = child.stderr.take();
    let pid_file = places.demo.join("serve.pid");
    // For .ci/run, which stops serve should this process die first.
    let _ = std::fs::write(&pid_file, format!("{}\n", child.id()));
    let mut serve = Serve { child, pid_file };
    let stderr = stderr.ok_or("no stderr from kinesthetic serve")?;
    let mut lines = BufReader::new(stderr).lines();
    let (mut intake, mut admin) = (None, None);
    while intake.is_none() || admin.is_none() {
        let Some(Ok(line)) = lines.next() else {
            let status = serve
                .stop()
                .map_or_else(|e| e, |s| format!("exit status: {s}"));
            return Err(format!(
                "kinesthetic serve stopped before listening ({status}); its messages are above"
            ));
        };
        eprintln!("{line}");
        // `intake on http://ADDR (listener …)`, `admin on http://ADDR: …`
        let addr_after = |prefix: &str| {
            line.split_once(prefix).map(|(_, rest)| {
                let addr = rest.split(' ').next().unwrap_or_default();
                addr.trim_end_matches(':').to_owned()
            })
        };
        if let Some(a) = addr_after("intake on http://") {
            intake = Some(a);
        } else if let Some(a) = addr_after("admin on http://") {
            admin = Some(a);
        }
    }
    // The rest of serve's messages (warnings, the shutdown) go on to ours.
    std::thread::spawn(move || {
        for line in lines.map_while(Result::ok) {
            eprintln!("{line}");
        }
    });
    Ok((serve, intake.unwrap_or_default(), admin.unwrap_or_default()))
}

/// What the poster thread has done.
#[derive(Default)]
struct Posted {
    posts: AtomicU64,
    bytes: AtomicU64,
}

/// Posts `datagen --mb 1 --seed N` (N = 1, 2, …) to the intake every
/// [`PERIOD`] until `stop`; an error is a post that failed.
fn spawn_poster(
    bin: PathBuf,
    url: String,
    stop: Arc<AtomicBool>,
    posted: Arc<Posted>,
) -> JoinHandle<Result<(), String>> {
    std::thread::spawn(move || {
        let mut seed = 0u64;
        while !stop.load(Ordering::SeqCst) {
            let started = Instant::now();
            seed += 1;
            match post_once(&bin, &url, seed, &stop)? {
                Some(bytes) => {
                    posted.bytes.fetch_add(bytes, Ordering::SeqCst);
                    posted.posts.fetch_add(1, Ordering::SeqCst);
                }
                None => break,
            }
            while started.elapsed() < PERIOD && !stop.load(Ordering::SeqCst) {
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        Ok(())
    })
}

/// `kinesthetic datagen … | kinesthetic send - …`: the bytes posted, or
/// `None` when stopped on the way.
fn post_once(bin: &Path, url: &str, seed: u64, stop: &AtomicBool) -> Result<Option<u64>, String> {
    let mut datagen = Command::new(bin)
        .args(["datagen", "--mb", &MB_PER_POST.to_string()])
        .args(["--seed", &seed.to_string()])
        .env_remove(RUN_PHASE)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run {} datagen: {e}", bin.display()))?;
    let logs = datagen.stdout.take().ok_or("no stdout from datagen")?;
    // Counts the bytes on their way from datagen to send.
    let mut send = Command::new(bin)
        .args(["send", "-", "--stream", "events", "--quiet", "--url", url])
        .env_remove(RUN_PHASE)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| {
            let _ = datagen.kill();
            let _ = datagen.wait();
            format!("cannot run {} send: {e}", bin.display())
        })?;
    let mut to_send = send.stdin.take().ok_or("no stdin for send")?;
    let pump = std::thread::spawn(move || {
        let mut logs = logs;
        std::io::copy(&mut logs, &mut to_send).unwrap_or(0)
    });
    let mut err_pipe = send.stderr.take().ok_or("no stderr from send")?;
    let messages = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = err_pipe.read_to_string(&mut text);
        text
    });
    let status = loop {
        if stop.load(Ordering::SeqCst) {
            for child in [&mut send, &mut datagen] {
                let _ = child.kill();
                let _ = child.wait();
            }
            let _ = pump.join();
            let _ = messages.join();
            return Ok(None);
        }
        match send.try_wait() {
            Ok(Some(s)) => break s,
            Ok(None) => std::thread::sleep(Duration::from_millis(50)),
            Err(e) => return Err(format!("cannot wait for kinesthetic send: {e}")),
        }
    };
    let _ = datagen.kill();
    let _ = datagen.wait();
    let bytes = pump.join().unwrap_or(0);
    let text = messages.join().unwrap_or_default();
    if status.success() {
        Ok(Some(bytes))
    } else {
        Err(format!(
            "posting the generated logs (seed {seed}) to {url} failed ({status}):\n{}",
            text.trim_end()
        ))
    }
}

/// Why the demo's loop ended.
enum End {
    /// Serve exited by itself (Ctrl-C, or a failure).
    Serve(ExitStatus),
    /// A post failed.
    Poster(String),
    /// DEMO_SECS passed.
    Time,
}

/// DEMO_SECS, and the two addresses, free: (secs, intake, admin).
fn preflight() -> Result<(Option<u64>, SocketAddr, SocketAddr), String> {
    let secs = demo_secs()?;
    let listen = env_addr("DEMO_LISTEN", "127.0.0.1:8080")?;
    let admin = env_addr("DEMO_ADMIN", "127.0.0.1:9090")?;
    check_free(listen, "intake")?;
    check_free(admin, "admin API")?;
    Ok((secs, listen, admin))
}

fn serve_and_feed() -> Result<(), String> {
    let (secs, listen, admin) = preflight()?;

    let bin = binary();
    let places = Places::new();
    match std::fs::remove_dir_all(&places.demo) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(format!("cannot remove {}: {e}", places.demo.display())),
    }
    std::fs::create_dir_all(&places.filters)
        .map_err(|e| format!("cannot create {}: {e}", places.filters.display()))?;
    let wasm = filters_build_dir().join(format!("{FILTER}.wasm"));
    std::fs::copy(&wasm, places.filters.join(format!("{FILTER}.wasm"))).map_err(|e| {
        format!(
            "cannot copy {} into {}: {e}",
            wasm.display(),
            places.filters.display()
        )
    })?;

    let (mut serve, intake, admin) = start_serve(&bin, &places, listen, admin)?;
    let started = Instant::now();
    let url = format!("http://{intake}");
    let stop = Arc::new(AtomicBool::new(false));
    let posted = Arc::new(Posted::default());
    let mut poster = Some(spawn_poster(
        bin.clone(),
        url.clone(),
        stop.clone(),
        posted.clone(),
    ));

    let deadline = secs.map(|s| started + Duration::from_secs(s));
    let mut told = false;
    let mut next_progress = Instant::now() + PROGRESS;
    let end = loop {
        match serve.child.try_wait() {
            Ok(Some(s)) => break End::Serve(s),
            Ok(None) => {}
            Err(e) => break End::Poster(format!("cannot wait for kinesthetic serve: {e}")),
        }
        if poster.as_ref().is_some_and(JoinHandle::is_finished) {
            let result = poster.take().map(JoinHandle::join);
            match result {
                Some(Ok(Err(e))) => break End::Poster(e),
                Some(Err(_)) => break End::Poster("the poster thread panicked".to_owned()),
                _ => {}
            }
        }
        if !told && posted.posts.load(Ordering::SeqCst) > 0 {
            told = true;
            next_progress = Instant::now() + PROGRESS;
            print_where_to_look(&places, &url, &admin, &bin, secs);
        }
        if told && Instant::now() >= next_progress {
            next_progress += PROGRESS;
            let (raw, filtered) = places.counts();
            println!(
                "{:>4} s: posted {:.0} MB in {} posts; archive objects: raw {raw}, {FILTER} \
                 {filtered}",
                started.elapsed().as_secs(),
                posted.bytes.load(Ordering::SeqCst) as f64 / 1e6,
                posted.posts.load(Ordering::SeqCst),
            );
        }
        if deadline.is_some_and(|d| Instant::now() >= d) {
            break End::Time;
        }
        std::thread::sleep(Duration::from_millis(200));
    };

    // Stop posting first, so that no post is cut off by serve's stop.
    stop.store(true, Ordering::SeqCst);
    if let Some(p) = poster.take() {
        let _ = p.join();
    }
    let posts = posted.posts.load(Ordering::SeqCst);
    let mb = posted.bytes.load(Ordering::SeqCst) as f64 / 1e6;
    let stopped = match end {
        End::Poster(e) => {
            // A post fails when serve has gone: say so first.
            if let Ok(Some(s)) = serve.child.try_wait() {
                return Err(format!(
                    "kinesthetic serve stopped by itself ({s}); its messages are above. {e}"
                ));
            }
            let _ = serve.stop();
            return Err(e);
        }
        End::Time => {
            println!(
                "DEMO_SECS={}: stopping kinesthetic serve (SIGINT)",
                secs.unwrap_or_default()
            );
            serve.stop()?
        }
        End::Serve(s) => {
            // SIGINT reached serve from the terminal (the graceful stop is
            // exit code 0, a second Ctrl-C's immediate one 130).
            let by_user = s.success() || s.code() == Some(130);
            if secs.is_some() || !by_user {
                let _ = serve.stop();
                return Err(format!(
                    "kinesthetic serve stopped by itself ({s}) after {} s; its messages are above",
                    started.elapsed().as_secs()
                ));
            }
            s
        }
    };
    let _ = serve.stop();
    let (raw, filtered) = places.counts();
    println!(
        "stopped ({stopped}) after {} s: posted {mb:.0} MB in {posts} posts; archive objects: \
         raw {raw} in {}, {FILTER} {filtered} in {}",
        started.elapsed().as_secs(),
        places.raw.display(),
        places.filtered.display()
    );
    if secs.is_some() {
        let mut missing = Vec::new();
        if posts == 0 {
            missing.push("no post was accepted".to_owned());
        }
        if raw == 0 {
            missing.push(format!("no *.ndjson.gz object in {}", places.raw.display()));
        }
        if filtered == 0 {
            missing.push(format!(
                "no *.ndjson.gz object in {}",
                places.filtered.display()
            ));
        }
        if !stopped.success() {
            missing.push(format!(
                "kinesthetic serve did not stop cleanly ({stopped})"
            ));
        }
        if !missing.is_empty() {
            return Err(format!("demo check failed: {}", missing.join("; ")));
        }
        println!("demo check passed: both archives hold objects");
    }
    Ok(())
}

fn print_where_to_look(places: &Places, url: &str, admin: &str, bin: &Path, secs: Option<u64>) {
    let others: Vec<String> = std::fs::read_dir(filters_build_dir())
        .map(|entries| {
            let mut names: Vec<String> = entries
                .filter_map(Result::ok)
                .filter_map(|e| {
                    e.file_name()
                        .to_str()?
                        .strip_suffix(".wasm")
                        .map(str::to_owned)
                })
                .filter(|n| n != FILTER)
                .collect();
            names.sort();
            names
        })
        .unwrap_or_default();
    let stops = match secs {
        Some(s) => format!("Ctrl-C stops (DEMO_SECS={s}: stops by itself after {s} s)"),
        None => "Ctrl-C stops.".to_owned(),
    };
    println!(
        "
Data is flowing: {MB_PER_POST} MB of generated logs posted to stream `events` every {} s.
  raw archive (every event):  {raw}/
  {FILTER} archive:         {filtered}/
      (gzip NDJSON objects; one closes every 5 s per shard: \
       zcat \"$(find {raw} -name '*.ndjson.gz' | head -n 1)\" | head -n 3)
  status:                     curl -s http://{admin}/v1/status
  drop another filter:        cp {build}/NAME.wasm {filters}/   (NAME: {names})
                              (it starts at once, writing to {filtered_root}/NAME/)
  send your own lines:        {bin} send FILE --stream events --url {url}
{stops}
",
        PERIOD.as_secs(),
        raw = places.raw.display(),
        filtered = places.filtered.display(),
        build = filters_build_dir().display(),
        filters = places.filters.display(),
        names = if others.is_empty() {
            "none built".to_owned()
        } else {
            others.join(", ")
        },
        filtered_root = places
            .filtered
            .parent()
            .unwrap_or(&places.filtered)
            .display(),
        bin = bin.display(),
    );
}
