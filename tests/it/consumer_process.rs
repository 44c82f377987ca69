//! `kinesthetic serve` as a process: kill -9 in the middle and a restart
//! lose and duplicate nothing; SIGTERM ends within the shutdown timeout even
//! when a sink hangs; `intake` and `consume` run apart on one local log.

use std::io::BufRead;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::consumer::{archived_lines, drop_filter, event, line_counts, read_dir_archive, reduced};
use crate::filters;
use crate::harness::rt;

/// A config file for a serve process on the local log in `dir`.
pub(crate) fn write_config(dir: &Path, extra: &str) -> std::path::PathBuf {
    let d = dir.display();
    let text = format!(
        r#"[stream]
data_dir = "{d}/data"
[intake]
listen = "127.0.0.1:0"
[admin]
listen = "127.0.0.1:0"
[consumer]
poll_interval_ms = 20
shard_refresh_ms = 200
shutdown_timeout_ms = 3000
[filters]
dir = "{d}/filters"
cache_dir = "{d}/cache"
[streams.events]
shards = 2
[sinks.raw]
type = "dir"
path = "{d}/archive/raw"
max_age_ms = 200
[sinks.filtered]
type = "dir"
path = "{d}/archive/filtered"
prefix = "{{filter}}"
max_age_ms = 200
[[pipelines]]
name = "raw"
stream = "events"
sinks = ["raw"]
[[pipelines]]
name = "errors"
stream = "events"
filter = "errors-only"
sinks = ["filtered"]
{extra}
"#
    );
    let p = dir.join("kinesthetic.toml");
    std::fs::write(&p, text).unwrap_or_else(|e| panic!("{e}"));
    p
}

/// Starts `kinesthetic ROLE --config FILE [args]`; returns the process and
/// the first address printed on the line starting `prefix`.
pub(crate) fn spawn(role: &str, config: &Path, args: &[&str], prefix: &str) -> (Child, String) {
    let (child, mut addrs) = spawn_addrs(role, config, args, &[prefix]);
    (child, addrs.remove(0))
}

/// [`spawn`], returning the address after each of `prefixes`, in the order
/// the process prints them.
pub(crate) fn spawn_addrs(
    role: &str,
    config: &Path,
    args: &[&str],
    prefixes: &[&str],
) -> (Child, Vec<String>) {
    let mut child = crate::harness::cli()
        .args([role, "--config"])
        .arg(config)
        .args(args)
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{role}: {e}"));
    let stderr = child.stderr.take().unwrap_or_else(|| panic!("no stderr"));
    let mut lines = std::io::BufReader::new(stderr).lines();
    let mut addrs = Vec::new();
    for prefix in prefixes {
        let addr = loop {
            let line = lines
                .next()
                .unwrap_or_else(|| panic!("{role} exited before printing {prefix:?}"))
                .unwrap_or_else(|e| panic!("{e}"));
            if let Some(rest) = line.split(prefix).nth(1) {
                break rest
                    .split_whitespace()
                    .next()
                    .unwrap_or_default()
                    .trim_end_matches(':')
                    .to_owned();
            }
        };
        addrs.push(addr);
    }
    std::thread::spawn(move || for _ in lines {});
    (child, addrs)
}

/// Posts batches of unique events until `stop`; returns the lines acked.
pub(crate) async fn post_until(addr: String, stop: Instant, first: usize) -> Vec<String> {
    let client = reqwest::Client::new();
    let mut acked = Vec::new();
    let mut n = first;
    while Instant::now() < stop {
        let lines: Vec<String> = (n..n + 100).map(|i| event(i, i % 10 == 7)).collect();
        n += 100;
        let r = client
            .post(format!("http://{addr}/v1/streams/events/events"))
            .body(lines.join("\n"))
            .send()
            .await;
        match r {
            Ok(r) if r.status().is_success() => acked.extend(lines),
            _ => break,
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    acked
}

/// A child process killed when dropped (a failing test must not leave a
/// `serve` behind holding the test's output open).
pub(crate) struct Reap(pub(crate) Child);

impl Drop for Reap {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

pub(crate) fn sigterm(child: &Child) {
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
}

#[test]
fn kill_9_mid_run_and_a_restart_lose_and_duplicate_nothing() {
    let dir = crate::harness::tempdir();
    let config = write_config(dir.path(), "");
    let module = std::fs::read(filters::ERRORS_ONLY).unwrap_or_else(|e| panic!("{e}"));
    drop_filter(&dir.path().join("filters"), "errors-only", &module);
    let mut acked: Vec<String> = Vec::new();
    rt().block_on(async {
        // Three kills at different moments, each under load.
        for (round, run_ms) in [900u64, 1400, 700].into_iter().enumerate() {
            let (mut child, addr) = spawn("serve", &config, &[], "intake on http://");
            let stop = Instant::now() + Duration::from_millis(run_ms);
            let more = post_until(addr, stop, round * 1_000_000).await;
            assert!(!more.is_empty(), "round {round}: nothing acked");
            acked.extend(more);
            child.kill().unwrap_or_else(|e| panic!("{e}"));
            let _ = child.wait();
        }
        // A last run delivers everything, then stops gracefully.
        let (mut child, _addr) = spawn("serve", &config, &[], "intake on http://");
        let raw = dir.path().join("archive/raw");
        let filtered = dir.path().join("archive/filtered/errors-only");
        let errors: Vec<usize> = acked
            .iter()
            .filter(|l| l.contains("\"error\""))
            .filter_map(|l| {
                l.split("\"msg\":\"m-")
                    .nth(1)
                    .and_then(|r| r.split('"').next())
                    .and_then(|n| n.parse().ok())
            })
            .collect();
        crate::consumer::wait_until(
            Duration::from_secs(60),
            "every acked event archived",
            || {
                let raw_lines = line_counts(&read_dir_archive(&raw));
                let f = line_counts(&read_dir_archive(&filtered));
                acked.iter().all(|l| raw_lines.contains_key(l.as_bytes()))
                    && errors.iter().all(|n| f.contains_key(&reduced(*n)))
            },
        )
        .await;
        sigterm(&child);
        let status = child.wait().unwrap_or_else(|e| panic!("{e}"));
        assert!(status.success(), "{status}");
        // No line in two objects: the objects a restart wrote again
        // replaced the ones written before the kill.
        for (what, root) in [("raw", &raw), ("filtered", &filtered)] {
            let objs = read_dir_archive(root);
            let counts = line_counts(&objs);
            let twice: Vec<_> = counts.iter().filter(|(_, n)| **n > 1).take(3).collect();
            assert!(twice.is_empty(), "{what}: lines in two objects: {twice:?}");
        }
        let raw_lines = line_counts(&read_dir_archive(&raw));
        for l in &acked {
            assert_eq!(raw_lines.get(l.as_bytes()), Some(&1), "{l}");
        }
    });
}

/// An S3 endpoint that takes connections and never answers.
fn hanging_endpoint() -> String {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap_or_else(|e| panic!("{e}"));
    let addr = l.local_addr().unwrap_or_else(|e| panic!("{e}"));
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for c in l.incoming().flatten() {
            held.push(c);
        }
    });
    format!("http://{addr}")
}

#[test]
fn sigterm_ends_within_the_shutdown_timeout_while_a_sink_hangs() {
    let dir = crate::harness::tempdir();
    let endpoint = hanging_endpoint();
    let config = write_config(
        dir.path(),
        &format!(
            r#"[sinks.stuck]
type = "s3"
bucket = "stuck"
endpoint = "{endpoint}"
max_age_ms = 100
[[pipelines]]
name = "stuck"
stream = "events"
sinks = ["stuck"]
"#
        ),
    );
    let text = std::fs::read_to_string(&config)
        .unwrap_or_default()
        .replace("shutdown_timeout_ms = 3000", "shutdown_timeout_ms = 1500");
    std::fs::write(&config, text).unwrap_or_else(|e| panic!("{e}"));
    let (mut child, addr) = spawn("serve", &config, &[], "intake on http://");
    rt().block_on(async {
        let lines: Vec<String> = (0..50).map(|i| event(i, false)).collect();
        reqwest::Client::new()
            .post(format!("http://{addr}/v1/streams/events/events"))
            .body(lines.join("\n"))
            .send()
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        // The raw pipeline is not held back by the stuck one.
        let raw = dir.path().join("archive/raw");
        crate::consumer::wait_until(Duration::from_secs(20), "the raw archive", || {
            archived_lines(&raw) == 50
        })
        .await;
        // Let the stuck sink's write begin.
        tokio::time::sleep(Duration::from_millis(500)).await;
    });
    let t = Instant::now();
    sigterm(&child);
    let status = child.wait().unwrap_or_else(|e| panic!("{e}"));
    let took = t.elapsed();
    assert!(status.success(), "{status}");
    assert!(
        took < Duration::from_millis(4000),
        "took {took:?} with a 1.5 s timeout"
    );
}

#[test]
fn intake_and_consume_run_apart_on_one_local_log() {
    let dir = crate::harness::tempdir();
    let config = write_config(dir.path(), "");
    let module = std::fs::read(filters::ERRORS_ONLY).unwrap_or_else(|e| panic!("{e}"));
    drop_filter(&dir.path().join("filters"), "errors-only", &module);
    let (mut intake, addr) = spawn("intake", &config, &[], "intake on http://");
    // The consumer reads the log the intake writes (read-only).
    let (mut consume, admin) = spawn("consume", &config, &[], "admin on http://");
    rt().block_on(async {
        let lines: Vec<String> = (0..200).map(|i| event(i, i % 4 == 0)).collect();
        reqwest::Client::new()
            .post(format!("http://{addr}/v1/streams/events/events"))
            .body(lines.join("\n"))
            .send()
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let raw = dir.path().join("archive/raw");
        let filtered = dir.path().join("archive/filtered/errors-only");
        crate::consumer::wait_until(Duration::from_secs(30), "both archives", || {
            archived_lines(&raw) == 200 && archived_lines(&filtered) == 50
        })
        .await;
        let text = reqwest::get(format!("http://{admin}/v1/status"))
            .await
            .unwrap_or_else(|e| panic!("{e}"))
            .text()
            .await
            .unwrap_or_default();
        let status: serde_json::Value =
            serde_json::from_str(&text).unwrap_or(serde_json::Value::Null);
        assert!(status["roles"].get("intake").is_none(), "{status}");
        assert!(status["roles"].get("consumer").is_some(), "{status}");
    });
    for c in [&intake, &consume] {
        sigterm(c);
    }
    assert!(intake.wait().is_ok_and(|s| s.success()));
    assert!(consume.wait().is_ok_and(|s| s.success()));
}
