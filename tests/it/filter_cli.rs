//! `kinesthetic filter …` as a user runs it: a process, files, exit codes.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use crate::filters;
use crate::harness::loghub;

fn kinesthetic() -> Command {
    let mut c = crate::harness::cli();
    c.env("RUST_LOG", "warn")
        .env_remove("KINESTHETIC_CACHE_DIR");
    c
}

#[track_caller]
fn run(cmd: &mut Command, stdin: Option<&[u8]>) -> (i32, String, String) {
    cmd.stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().unwrap_or_else(|e| panic!("spawn: {e}"));
    if let (Some(mut si), Some(data)) = (child.stdin.take(), stdin) {
        si.write_all(data).unwrap_or_else(|e| panic!("{e}"));
    }
    let Output {
        status,
        stdout,
        stderr,
    } = child.wait_with_output().unwrap_or_else(|e| panic!("{e}"));
    (
        status.code().unwrap_or(-1),
        String::from_utf8_lossy(&stdout).into_owned(),
        String::from_utf8_lossy(&stderr).into_owned(),
    )
}

fn write(dir: &Path, name: &str, data: &[u8]) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, data).unwrap_or_else(|e| panic!("{e}"));
    p
}

#[test]
fn run_grep_over_a_file_with_stats() {
    let data = loghub("Linux_2k.log");
    let dir = crate::harness::tempdir();
    let input = write(dir.path(), "linux.log", &data);
    let (code, out, err) = run(
        kinesthetic()
            .args([
                "filter",
                "run",
                filters::GREP,
                "--param",
                "pattern=session opened",
                "--stats",
            ])
            .arg(&input)
            .args(["--batch-lines", "300"]),
        None,
    );
    assert_eq!(code, 0, "{err}");
    // The file's CRLF ends lines, as it does in a body the intake takes:
    // the CR is no part of the event, and output lines end in LF.
    let want: String = String::from_utf8_lossy(&data)
        .split_terminator('\n')
        .map(|l| l.strip_suffix('\r').unwrap_or(l))
        .filter(|l| l.contains("session opened"))
        .map(|l| format!("{l}\n"))
        .collect();
    assert!(
        data.windows(2).any(|w| w == b"\r\n"),
        "the data set has no CRLF"
    );
    assert!(!want.is_empty());
    assert_eq!(out, want);
    assert!(
        err.contains("lines in: 2000") && err.contains("MB/s") && err.contains("µs per job"),
        "{err}"
    );
}

#[test]
fn run_reads_stdin_and_shows_keys() {
    let (code, out, err) = run(
        kinesthetic().args([
            "filter",
            "run",
            filters::REKEY,
            "-p",
            "field=u",
            "--with-key",
        ]),
        Some(b"{\"u\":\"ann\"}\nplain\n"),
    );
    assert_eq!(code, 0, "{err}");
    assert_eq!(out, "ann\t{\"u\":\"ann\"}\n\tplain\n");
}

#[test]
fn run_reports_poison_lines_with_line_numbers() {
    let (code, out, err) = run(
        kinesthetic().args([
            "filter",
            "run",
            filters::CHAOS,
            "-p",
            "mode=poison",
            "--batch-lines",
            "4",
        ]),
        Some(b"a\nb\nPOISON c\nd\ne\nf POISON\n"),
    );
    assert_eq!(code, 1, "{err}");
    assert_eq!(out, "a\nb\nd\ne\n");
    assert!(err.contains("line 3: filter `chaos`"), "{err}");
    assert!(err.contains("line 6: filter `chaos`"), "{err}");
}

/// A filter that hangs on every line: each batch gives up after a few
/// probes and says so, instead of bisecting at a deadline per part (3,000
/// lines at the default 1 s deadline had not finished after 120 s), and
/// `--isolation-ms` is accepted.
#[test]
fn run_gives_up_on_a_filter_that_fails_every_line() {
    let text: String = (0..3000).map(|i| format!("line {i}\n")).collect();
    let (code, out, err) = run(
        kinesthetic().args([
            "filter",
            "run",
            filters::CHAOS,
            "-p",
            "mode=loop",
            "--deadline-ms",
            "50",
            "--isolation-ms",
            "5000",
            "--stats",
        ]),
        Some(text.as_bytes()),
    );
    assert_eq!(code, 1, "{err}");
    assert_eq!(out, "");
    for range in ["lines 1-1000:", "lines 1001-2000:", "lines 2001-3000:"] {
        assert!(err.contains(range), "{range}: {err}");
    }
    // Each batch's lines as one run.
    assert_eq!(err.matches("isolation gave up").count(), 3, "{err}");
    assert!(err.contains("lines 2001-3000: filter `chaos`"), "{err}");
    assert!(err.contains("failed: 3000"), "{err}");
    assert!(
        err.contains("jobs: 12 "),
        "3 batches × (1 + 3 probes): {err}"
    );
}

/// A batch that fails only whole (here: over the memory cap, while each
/// half fits) has no poison line, but it failed: `run` exits 1 and says
/// why, and `test` does not say "ok".
#[test]
fn a_batch_that_fails_only_whole_is_a_failure() {
    let dir = crate::harness::tempdir();
    let line = "x".repeat(300_000);
    let text = format!("{line}\n{line}\n{line}\n{line}\n");
    let input = write(dir.path(), "in.txt", text.as_bytes());
    let (code, out, err) = run(
        kinesthetic()
            .args(["filter", "run", filters::GREP, "-p", "pattern=x"])
            .args(["--memory-mib", "1"])
            .arg(&input),
        None,
    );
    assert_eq!(code, 1, "{err}");
    assert_eq!(out, text, "the parts' output is written");
    assert!(
        err.contains("lines 1-4: the batch failed, but every part of it passed on its own"),
        "{err}"
    );
    let (code, _, err) = run(
        kinesthetic()
            .args(["filter", "test", filters::GREP, "-p", "pattern=x"])
            .args(["--memory-mib", "1", "--input"])
            .arg(&input)
            .arg("--expect")
            .arg(&input),
        None,
    );
    assert_eq!(code, 1, "{err}");
    assert!(!err.contains("ok:"), "{err}");
}

/// Input is split as the intake splits a body: `\r\n` ends a line too and
/// blank lines are no events, so a filter sees in `run` and `test` what it
/// sees in production; line numbers still count every line of the file.
#[test]
fn run_and_test_split_lines_as_the_intake_does() {
    let (code, out, err) = run(
        kinesthetic().args([
            "filter",
            "run",
            filters::CHAOS,
            "-p",
            "mode=poison",
            "--batch-lines",
            "2",
            "--stats",
        ]),
        Some(b"a\r\n\r\n\nPOISON c\r\nd\n"),
    );
    assert_eq!(code, 1, "{err}");
    assert_eq!(out, "a\nd\n", "the filter saw a CR or a blank line");
    assert!(err.contains("line 4: filter `chaos`"), "{err}");
    assert!(err.contains("lines in: 3 "), "{err}");
    let dir = crate::harness::tempdir();
    let input = write(dir.path(), "in.txt", b"keep 1\r\n\r\ndrop\r\nkeep 2\r\n");
    let expect = write(dir.path(), "want.txt", b"keep 1\r\nkeep 2\r\n");
    let (code, _, err) = run(
        kinesthetic()
            .args([
                "filter",
                "test",
                filters::GREP,
                "-p",
                "pattern=keep",
                "--input",
            ])
            .arg(&input)
            .arg("--expect")
            .arg(&expect),
        None,
    );
    assert_eq!(code, 0, "{err}");
}

#[test]
fn run_fails_clearly_on_bad_modules_and_params() {
    let dir = crate::harness::tempdir();
    let bogus = write(dir.path(), "bogus.wasm", b"text, not wasm");
    let (code, _, err) = run(
        kinesthetic().args(["filter", "run"]).arg(&bogus),
        Some(b"x\n"),
    );
    assert_eq!(code, 1);
    assert!(
        err.contains("filter `bogus` is not a WebAssembly file"),
        "{err}"
    );

    // A missing file: its path, and the cause said once.
    let missing = dir.path().join("missing.wasm");
    let (code, _, err) = run(kinesthetic().args(["filter", "run"]).arg(&missing), None);
    assert_eq!(code, 1);
    assert!(
        err.contains("cannot read filter") && err.contains("missing.wasm"),
        "{err}"
    );
    assert_eq!(err.matches("os error 2").count(), 1, "{err}");

    let (code, _, err) = run(
        kinesthetic().args(["filter", "run", filters::GREP]),
        Some(b"x\n"),
    );
    assert_eq!(code, 1);
    assert!(
        err.contains("init failed") && err.contains("pattern"),
        "{err}"
    );

    let (code, _, err) = run(
        kinesthetic().args(["filter", "run", filters::GREP, "-p", "novalue"]),
        None,
    );
    assert_eq!(code, 2, "usage error");
    assert!(err.contains("expected KEY=VALUE"), "{err}");

    let (code, _, err) = run(
        kinesthetic().args([
            "filter",
            "run",
            filters::CHAOS,
            "-p",
            "mode=loop",
            "--deadline-ms",
            "30",
        ]),
        Some(b"x\n"),
    );
    assert_eq!(code, 1);
    assert!(err.contains("deadline of 30 ms exceeded"), "{err}");
}

#[test]
fn check_prints_the_world_exports_imports_and_hash() {
    let (code, out, err) = run(
        kinesthetic().args(["filter", "check", filters::ERRORS_ONLY]),
        None,
    );
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("init: func") && out.contains("filter: func"),
        "{out}"
    );
    assert!(
        out.contains("imports:") && out.contains("kinesthetic:filter/types@0.1.0"),
        "{out}"
    );
    assert!(
        !out.contains("wasi:"),
        "the SDK keeps WASI out of a filter's imports: {out}"
    );
    let (code, chaos, err) = run(
        kinesthetic().args(["filter", "check", filters::CHAOS]),
        None,
    );
    assert_eq!(code, 0, "{err}");
    assert!(
        chaos.lines().any(
            |l| l.contains("wasi:clocks/wall-clock@") && l.ends_with("(stub: traps if called)")
        ),
        "{chaos}"
    );
    assert!(
        chaos
            .lines()
            .any(|l| l.contains("wasi:random/insecure-seed@")
                && l.ends_with("(a fixed seed, for HashMap)")),
        "{chaos}"
    );
    let sha = {
        use sha2::Digest;
        hex::encode(sha2::Sha256::digest(
            std::fs::read(filters::ERRORS_ONLY).unwrap_or_default(),
        ))
    };
    assert!(out.contains(&sha), "{out}");

    let dir = crate::harness::tempdir();
    let core = write(
        dir.path(),
        "core.wasm",
        &wat::parse_str("(module)").unwrap_or_default(),
    );
    let (code, _, err) = run(kinesthetic().args(["filter", "check"]).arg(&core), None);
    assert_eq!(code, 1);
    assert!(
        err.contains("core WebAssembly module, not a component"),
        "{err}"
    );
}

/// `filter check` names the toolchain that built each example, and a
/// refused WASI import comes with that toolchain's cure.
#[test]
fn check_names_the_toolchain_and_its_cure_for_a_wasi_import() {
    let mut examples = vec![(
        filters::ERRORS_ONLY,
        "errors-only",
        "built:   Rust (wit-bindgen-rust)",
    )];
    examples.push((
        filters::CONTAINS,
        "contains",
        "built:   C (wit-bindgen-c 0.63.0)",
    ));
    examples.push((
        filters::ERRORS_ONLY_PY,
        "errors-only-py",
        "built:   Python (componentize-py)",
    ));
    examples.push((
        filters::ERRORS_ONLY_JS,
        "errors-only-js",
        "built:   JavaScript (ComponentizeJS 0.23.0)",
    ));
    for (path, name, want) in examples {
        let Some(path) = crate::harness::built(path, name) else {
            continue;
        };
        let (code, out, err) = run(kinesthetic().args(["filter", "check", path]), None);
        assert_eq!(code, 0, "{name}: {err}");
        assert!(out.lines().any(|l| l.starts_with(want)), "{name}: {out}");
        assert!(
            out.contains("imports: (no WASI: only the world's own)"),
            "{name}: {out}"
        );
    }
    let (code, chaos, err) = run(
        kinesthetic().args(["filter", "check", filters::CHAOS]),
        None,
    );
    assert_eq!(code, 0, "{err}");
    assert!(
        chaos.contains("of WASI, each a stub the host provides; Rust's standard library"),
        "{chaos}"
    );

    // A JavaScript build that kept WASI's files: refused, with the flags
    // that leave them out.
    let dir = crate::harness::tempdir();
    let js = write(
        dir.path(),
        "files.wasm",
        &wat::parse_str(
            r#"(component
                 (core module (@producers (language "JavaScript" "")
                                          (processed-by "ComponentizeJS" "0.23.0")))
                 (import "wasi:filesystem/types@0.2.3" (instance)))"#,
        )
        .unwrap_or_else(|e| panic!("{e}")),
    );
    let (code, _, err) = run(kinesthetic().args(["filter", "check"]).arg(&js), None);
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("`wasi:filesystem/types@0.2.3`, which the host does not provide")
            && err.contains("built by JavaScript (ComponentizeJS 0.23.0)")
            && err.contains("-d stdio random clocks http fetch-event"),
        "{err}"
    );
}

#[test]
fn test_passes_and_fails_with_a_diff() {
    let dir = crate::harness::tempdir();
    let input = write(dir.path(), "in.txt", b"keep 1\ndrop\nkeep 2\n");
    let good = write(dir.path(), "good.txt", b"keep 1\nkeep 2\n");
    let bad = write(dir.path(), "bad.txt", b"keep 1\nkeep 3\n");
    let (code, _, err) = run(
        kinesthetic()
            .args([
                "filter",
                "test",
                filters::GREP,
                "-p",
                "pattern=keep",
                "--input",
            ])
            .arg(&input)
            .arg("--expect")
            .arg(&good),
        None,
    );
    assert_eq!(code, 0, "{err}");
    let (code, _, err) = run(
        kinesthetic()
            .args([
                "filter",
                "test",
                filters::GREP,
                "-p",
                "pattern=keep",
                "--input",
            ])
            .arg(&input)
            .arg("--expect")
            .arg(&bad),
        None,
    );
    assert_eq!(code, 1);
    assert!(
        err.contains("-keep 3 (expected line 2)") && err.contains("+keep 2 (actual line 2)"),
        "{err}"
    );
}

#[test]
fn bench_prints_fresh_warm_and_overhead() {
    let (code, out, err) = run(
        kinesthetic().args([
            "filter",
            "bench",
            filters::ERRORS_ONLY,
            "--mb",
            "1",
            "--rounds",
            "1",
        ]),
        None,
    );
    assert_eq!(code, 0, "{err}");
    for needle in [
        "fresh instance per batch",
        "one warm instance",
        "fresh ÷ warm",
        "median",
    ] {
        assert!(out.contains(needle), "missing {needle}: {out}");
    }
    // Nothing to measure: an error, not figures of nothing.
    let dir = crate::harness::tempdir();
    let empty = write(dir.path(), "empty.txt", b"\n\r\n");
    let (code, out, err) = run(
        kinesthetic()
            .args(["filter", "bench", filters::ERRORS_ONLY])
            .arg(&empty),
        None,
    );
    assert_eq!(code, 1, "{out}");
    assert!(
        err.contains("no lines to measure in") && err.contains("empty.txt"),
        "{err}"
    );
}

#[test]
fn help_teaches() {
    let (code, out, _) = run(kinesthetic().args(["filter", "run", "--help"]), None);
    assert_eq!(code, 0);
    assert!(
        out.contains("fresh instance") && out.contains("--param") && out.contains("Example"),
        "{out}"
    );
}

#[test]
fn new_scaffolds_a_filter_that_tests_builds_and_runs() {
    let dir = crate::harness::tempdir();
    let root = dir.path().join("my-filter");
    // Share a build cache between runs of this test.
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            std::path::PathBuf::from(
                std::env::var_os("CARGO_MANIFEST_DIR")
                    .unwrap_or_else(|| env!("CARGO_MANIFEST_DIR").into()),
            )
            .join("../target")
        })
        .join("scaffold");
    let (code, _, err) = run(
        kinesthetic()
            .args(["filter", "new", "my-filter", "--dir"])
            .arg(dir.path())
            .env("CARGO_TARGET_DIR", &target),
        None,
    );
    assert_eq!(code, 0, "{err}");
    let wasm = target.join("wasm32-wasip2/release/my_filter.wasm");
    // The printed run command names where the module will be.
    assert!(
        err.contains(&format!("kinesthetic filter run {} ", wasm.display())),
        "{err}"
    );
    let cargo = || {
        let mut c = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
        c.current_dir(&root)
            .env("CARGO_TARGET_DIR", &target)
            .env_remove("RUSTFLAGS")
            .env_remove("CARGO_ENCODED_RUSTFLAGS");
        c
    };
    let (code, out, err) = run(cargo().args(["test", "--quiet"]), None);
    assert_eq!(code, 0, "scaffold's own tests: {out}\n{err}");
    let (code, _, err) = run(
        cargo().args(["build", "--release", "--target", "wasm32-wasip2"]),
        None,
    );
    assert_eq!(code, 0, "scaffold builds: {err}");
    let (code, out, err) = run(
        kinesthetic()
            .args(["filter", "run", "-p", "needle=error"])
            .arg(&wasm),
        Some(b"an error\nfine\n"),
    );
    assert_eq!(code, 0, "{err}");
    assert_eq!(out, "an error\n");
    // Refuses to overwrite.
    let (code, _, err) = run(
        kinesthetic()
            .args(["filter", "new", "my-filter", "--dir"])
            .arg(dir.path()),
        None,
    );
    assert_eq!(code, 1);
    assert!(err.contains("already exists"), "{err}");
    // Names that would not build are refused before anything is written.
    for bad in [
        "_",
        "-x",
        "9lives",
        "a b",
        "",
        "core",
        "std",
        "fn",
        "kinesthetic-filter",
    ] {
        let (code, _, err) = run(
            kinesthetic()
                .args(["filter", "new", "--dir"])
                .arg(dir.path())
                .arg("--")
                .arg(bad),
            None,
        );
        assert_eq!(code, 1, "{bad:?}: {err}");
        assert!(err.contains("invalid name"), "{bad:?}: {err}");
        assert!(!dir.path().join(bad).exists() || bad.is_empty(), "{bad:?}");
    }
}

/// Every bad-input case of the runtime, through `filter run`: exit code 1,
/// and stderr names the filter and the cause.
#[test]
fn run_names_the_filter_and_the_cause_for_every_kind_of_failure() {
    let dir = crate::harness::tempdir();
    let other_world = write(
        dir.path(),
        "hello.wasm",
        &wat::parse_str(
            r#"(component
              (core module $m (func (export "f")))
              (core instance $i (instantiate $m))
              (func (export "hello") (canon lift (core func $i "f"))))"#,
        )
        .unwrap_or_default(),
    );
    let other = other_world.to_string_lossy().into_owned();
    let cases: &[(&[&str], &str, &str)] = &[
        (&["filter", "run", &other], "`hello`", "filter"),
        (
            &[
                "filter",
                "run",
                filters::CHAOS,
                "-p",
                "mode=alloc",
                "--memory-mib",
                "8",
            ],
            "filter `chaos`",
            "memory cap of 8 MiB exceeded",
        ),
        (
            &["filter", "run", filters::CHAOS, "-p", "mode=recurse"],
            "filter `chaos`",
            "trapped",
        ),
        (
            &["filter", "run", filters::CHAOS, "-p", "mode=bad-index"],
            "filter `chaos`",
            "malformed answer",
        ),
        (
            &["filter", "run", filters::CHAOS, "-p", "mode=trap"],
            "filter `chaos`",
            "trapped",
        ),
        (
            &["filter", "run", filters::CHAOS, "-p", "mode=init-error"],
            "filter `chaos`",
            "init failed: chaos says no",
        ),
        (
            &["filter", "run", filters::CHAOS, "-p", "mode=clock"],
            "filter `chaos`",
            "called `wasi:clocks/wall-clock@",
        ),
        (
            &["filter", "run", filters::SAMPLE, "-p", "n=zero"],
            "filter `sample`",
            "cannot parse `zero`",
        ),
    ];
    for (args, who, what) in cases {
        let (code, out, err) = run(kinesthetic().args(*args), Some(b"a\nb\nc\n"));
        assert_eq!(code, 1, "{args:?}: exit {code}\n{err}");
        assert!(err.contains(who), "{args:?}: {who:?} not in\n{err}");
        assert!(err.contains(what), "{args:?}: {what:?} not in\n{err}");
        assert!(
            !out.contains('b'),
            "{args:?}: output despite the failure: {out}"
        );
    }
}

/// A filter's `eprintln!` reaches the user as a warning from that filter,
/// one line per line (not per piece); `println!` is logged at info level.
#[test]
fn run_shows_what_a_filter_prints() {
    let (code, out, err) = run(
        kinesthetic().args(["filter", "run", filters::CHAOS, "-p", "mode=std"]),
        Some(b"one two\nthree\n"),
    );
    assert_eq!(code, 0, "{err}");
    assert_eq!(out.lines().count(), 2, "{out}");
    let warned: Vec<&str> = err.lines().filter(|l| l.contains("stderr: ")).collect();
    assert_eq!(warned.len(), 2, "{err}");
    assert!(
        warned[0].contains("WARN")
            && warned[0].contains("stderr: one two")
            && warned[0].contains("chaos"),
        "{err}"
    );
    assert!(
        !err.contains("stdout: "),
        "info is below RUST_LOG=warn: {err}"
    );
}

/// `filter run … | head -1`: the reader closing the pipe is not an error.
#[test]
fn run_ends_quietly_when_its_reader_goes_away() {
    use std::io::{BufRead, BufReader};
    let mut child = kinesthetic()
        .args(["filter", "run", filters::GREP, "-p", "pattern=1"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("spawn: {e}"));
    let mut stdin = child.stdin.take().unwrap_or_else(|| panic!("stdin"));
    let feeder = std::thread::spawn(move || {
        let lines: String = (0..300_000).map(|i| format!("line {i}\n")).collect();
        let _ = stdin.write_all(lines.as_bytes());
    });
    let stdout = child.stdout.take().unwrap_or_else(|| panic!("stdout"));
    let mut first = String::new();
    BufReader::new(stdout)
        .read_line(&mut first)
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(first, "line 1\n");
    // stdout is dropped here: the pipe closes with output still to come.
    let out = child.wait_with_output().unwrap_or_else(|e| panic!("{e}"));
    let _ = feeder.join();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{err}");
    assert!(!err.contains("error"), "{err}");
}

/// The log rate limit limits the host's log: past the budget, suppressed
/// lines are reported at most once a second (and once at the end), not
/// once per job.
#[test]
fn suppressed_filter_logs_are_reported_once_a_second_at_most() {
    let dir = crate::harness::tempdir();
    let text: String = (1..=1000).map(|i| format!("{i}\n")).collect();
    let input = write(dir.path(), "in.txt", text.as_bytes());
    let t = std::time::Instant::now();
    let (code, _, err) = run(
        kinesthetic()
            .args(["filter", "run", filters::CHAOS, "-p", "mode=std"])
            .args(["--batch-lines", "1"])
            .arg(&input),
        None,
    );
    let secs = t.elapsed().as_secs();
    assert_eq!(code, 0, "{err}");
    let reports: Vec<u64> = err
        .lines()
        .filter(|l| l.contains("log lines suppressed"))
        .filter_map(|l| l.split("suppressed=").nth(1)?.trim().parse().ok())
        .collect();
    assert!(
        !reports.is_empty() && reports.len() as u64 <= secs + 3,
        "{} reports in {secs} s",
        reports.len()
    );
    // The reports carry the counts of many jobs, not one job's each.
    assert!(reports.iter().sum::<u64>() > 1000, "{reports:?}");
}

/// `errors-only` with its core module's memory made to start at 127 pages
/// (7.9 MiB): the first memory section, whose single memory has no maximum
/// and a one-byte minimum, gets a one-byte minimum of 127.
fn with_initial_memory_of_127_pages(wasm: &[u8]) -> Vec<u8> {
    let mut out = wasm.to_vec();
    for payload in wasmparser::Parser::new(0).parse_all(wasm) {
        if let Ok(wasmparser::Payload::MemorySection(r)) = payload {
            let at = r.range().start;
            // count 1, flags 0 (no maximum, 32-bit), minimum < 128 pages.
            assert_eq!(&wasm[at..at + 2], &[1, 0], "an unexpected memory section");
            assert!(wasm[at + 2] < 0x80, "a minimum of more than one byte");
            out[at + 2] = 127;
            return out;
        }
    }
    panic!("no memory section in the component");
}

#[test]
fn options_are_checked_by_the_pipeline_rules_and_say_what_to_do() {
    let dir = crate::harness::tempdir();
    let wasm = std::fs::read(filters::ERRORS_ONLY).unwrap_or_else(|e| panic!("{e}"));
    let big = write(
        dir.path(),
        "big.wasm",
        &with_initial_memory_of_127_pages(&wasm),
    );
    let (code, out, err) = run(kinesthetic().args(["filter", "check"]).arg(&big), None);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("memory:  starts with 7.9 MiB (cap 64 MiB: ok)"),
        "{out}"
    );
    let (code, _, err) = run(
        kinesthetic()
            .args(["filter", "check", "--memory-mib", "4"])
            .arg(&big),
        None,
    );
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("starts with 7.9 MiB of memory, above the 4 MiB cap")
            && err.contains("to at least 8 MiB"),
        "{err}"
    );
    // And the check is right: every job of it fails under that cap.
    let (code, _, err) = run(
        kinesthetic()
            .args(["filter", "run", "--memory-mib", "4"])
            .arg(&big),
        Some(b"{\"level\":\"error\"}\n"),
    );
    assert_eq!(
        code, 1,
        "a job ran under a cap below its initial memory: {err}"
    );

    let input = write(dir.path(), "in.ndjson", b"x\n");
    for (args, says) in [
        (
            &["--memory-mib", "100000"][..],
            "--memory-mib 100000: expected 1 to 4096",
        ),
        (
            &["--batch-lines", "0"][..],
            "--batch-lines 0: a batch holds at least 1 line",
        ),
        (
            &["--deadline-ms", "0"][..],
            "--deadline-ms 0: expected 1 to 600000",
        ),
        (
            &["-p", "pattern=a", "-p", "pattern=b"][..],
            "--param pattern is given twice (pattern=a and pattern=b)",
        ),
    ] {
        for verb in ["run", "bench"] {
            let (code, _, err) = run(
                kinesthetic()
                    .args(["filter", verb, filters::GREP])
                    .arg(&input)
                    .args(args),
                None,
            );
            assert_eq!(code, 1, "{verb} {args:?}: {err}");
            assert!(err.contains(says), "{verb} {args:?}: {err}");
        }
    }
}
