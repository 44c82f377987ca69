//! Small helpers shared by the test modules.

use std::sync::OnceLock;

use kinesthetic::event::{Batch, BatchContext, EventId, Stamp};
use kinesthetic::filter::{EngineSettings, Input, Limits, LoadedFilter, Output, Runtime};

/// One runtime for the whole binary (like a host process).
pub(crate) fn runtime() -> &'static Runtime {
    static RT: OnceLock<Runtime> = OnceLock::new();
    RT.get_or_init(|| {
        Runtime::new(EngineSettings::default()).unwrap_or_else(|e| panic!("engine: {e}"))
    })
}

/// The path of an example filter, or `None` (printing why; in CI a
/// failure) when it was not built here: the C filter needs the C
/// toolchain (`cargo xtask install-tools`).
#[track_caller]
pub(crate) fn built(path: &'static str, name: &str) -> Option<&'static str> {
    if !path.is_empty() {
        return Some(path);
    }
    let why = crate::filters::SKIPPED
        .iter()
        .find(|(n, _)| *n == name)
        .map_or("it was not built", |(_, r)| *r);
    crate::services::missing_tool(format!(
        "the `{name}` example filter is not built here: {why}"
    ))
}

#[track_caller]
pub(crate) fn load(path: &str) -> LoadedFilter {
    runtime()
        .load_file(std::path::Path::new(path))
        .unwrap_or_else(|e| panic!("loading {path}: {e}"))
}

/// A batch of `lines`, stamped listener 7, counters 0.., keys `k<i>`.
pub(crate) fn input<L: AsRef<[u8]>>(lines: &[L]) -> Input {
    let mut b = Batch::new(BatchContext {
        stream: "s".into(),
        shard: "shardId-000000000000".into(),
        first_sequence: kinesthetic::event::SequenceNumber::from_u128(1),
        last_sequence: kinesthetic::event::SequenceNumber::from_u128(2),
    });
    for (i, l) in lines.iter().enumerate() {
        let stamp = Stamp {
            id: EventId {
                listener: 7,
                counter: i as u64,
            },
            received_ms: 1_700_000_000_000 + i as i64,
        };
        b.push(l.as_ref(), stamp, format!("k{i}").as_bytes())
            .unwrap_or_else(|e| panic!("{e}"));
    }
    Input::from(b)
}

pub(crate) fn params(p: &[(&str, &str)]) -> Vec<(String, String)> {
    p.iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

/// Output lines as owned byte strings.
pub(crate) fn out_lines(out: &Output, input: &Input) -> Vec<Vec<u8>> {
    out.lines(input).map(|l| l.bytes.to_vec()).collect()
}

/// Runs `filter` over `lines` with `params`; panics on a job error.
#[track_caller]
pub(crate) fn check(
    filter: &LoadedFilter,
    p: &[(&str, &str)],
    lines: &[&[u8]],
    expected: &[&[u8]],
) {
    let inp = input(lines);
    let out = filter
        .run(&inp, &params(p), &Limits::default())
        .unwrap_or_else(|e| panic!("{e}"));
    let got = out_lines(&out, &inp);
    let want: Vec<Vec<u8>> = expected.iter().map(|l| l.to_vec()).collect();
    assert_lines_eq(&got, &want);
}

/// `other` gives exactly `rust`'s output on `lines`, in 1,000-line batches;
/// returns how many lines were kept (for a check that the data keeps some).
#[track_caller]
pub(crate) fn assert_same_output<L: AsRef<[u8]>>(
    other: &LoadedFilter,
    rust: &LoadedFilter,
    lines: &[L],
) -> usize {
    let mut kept = 0;
    for chunk in lines.chunks(1000) {
        let inp = input(chunk);
        let run = |f: &LoadedFilter, who: &str| {
            f.run(&inp, &Vec::new(), &Limits::default())
                .map(|o| out_lines(&o, &inp))
                .unwrap_or_else(|e| panic!("{who}: {e}"))
        };
        let (want, got) = (run(rust, "rust"), run(other, "the other language"));
        assert_lines_eq(&got, &want);
        kept += got.len();
    }
    kept
}

/// Output lines of a run, or its error's text.
pub(crate) type RunResult = Result<Vec<Vec<u8>>, String>;

/// What every language's `grep` example does alike: keeps the lines that
/// match `pattern`, `invert=true` keeps the others, and without `pattern`
/// init fails naming it. Returns a runner of the filter on the same lines,
/// for the language's own messages.
#[track_caller]
pub(crate) fn assert_grep_basics(f: &LoadedFilter) -> impl Fn(&[(&str, &str)]) -> RunResult + '_ {
    let lines: [&[u8]; 3] = [b"sshd[1]: Accepted", b"cron[2]: run", b"sshd[3]: Failed"];
    let inp = input(&lines);
    let run = move |p: &[(&str, &str)]| {
        f.run(&inp, &params(p), &Limits::default())
            .map(|o| out_lines(&o, &inp))
            .map_err(|e| e.to_string())
    };
    let sshd = run(&[("pattern", r"sshd\[")]).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        sshd,
        [b"sshd[1]: Accepted".to_vec(), b"sshd[3]: Failed".to_vec()]
    );
    let not = run(&[("pattern", "sshd"), ("invert", "true")]).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(not, [b"cron[2]: run".to_vec()]);
    let e = run(&[]).err().unwrap_or_default();
    assert!(e.contains("parameter `pattern` is required"), "{e}");
    run
}

/// Two lists of output lines are equal; when not, shown as text first.
#[track_caller]
pub(crate) fn assert_lines_eq(got: &[Vec<u8>], want: &[Vec<u8>]) {
    assert_eq!(
        got.iter()
            .map(|l| String::from_utf8_lossy(l))
            .collect::<Vec<_>>(),
        want.iter()
            .map(|l| String::from_utf8_lossy(l))
            .collect::<Vec<_>>()
    );
    assert_eq!(got, want);
}

/// Loghub sample lines (real system logs, https://github.com/logpai/loghub),
/// kept in `tests/data/loghub`.
pub(crate) fn loghub(file: &str) -> Vec<u8> {
    let p = std::path::PathBuf::from(
        std::env::var_os("CARGO_MANIFEST_DIR").unwrap_or_else(|| env!("CARGO_MANIFEST_DIR").into()),
    )
    .join("data/loghub")
    .join(file);
    std::fs::read(&p).unwrap_or_else(|e| panic!("loghub sample {}: {e}", p.display()))
}

/// A two-worker Tokio runtime for a test (like a small host).
pub(crate) fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap_or_else(|e| panic!("runtime: {e}"))
}

/// The intake's Prometheus metrics, as text, from its admin address.
pub(crate) async fn scrape(admin: std::net::SocketAddr) -> String {
    reqwest::get(format!("http://{admin}/metrics"))
        .await
        .unwrap_or_else(|e| panic!("GET /metrics: {e}"))
        .text()
        .await
        .unwrap_or_default()
}

/// The sum of the samples whose line starts with `prefix` (a metric name,
/// with as many of its labels as matter).
pub(crate) fn metric(text: &str, prefix: &str) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(prefix) && !l.starts_with('#'))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// A temporary directory, removed when dropped.
#[track_caller]
pub(crate) fn tempdir() -> tempfile::TempDir {
    tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"))
}

/// The `kinesthetic` CLI (the library's `cli::main`, built as the test
/// crate's `kinesthetic-cli`), ready for arguments.
pub(crate) fn cli() -> std::process::Command {
    std::process::Command::new(env!("CARGO_BIN_EXE_kinesthetic-cli"))
}
