//! `kinesthetic replay`: a raw archive replayed through the raw pipeline
//! into a fresh directory gives byte-identical objects (keys, bodies and
//! metadata); through a filter it gives the filter's lines, and a second
//! replay replaces the same objects instead of adding copies; a time range
//! selects; bad arguments and foreign files are named.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use kinesthetic::config::Config;

use crate::consumer::{
    archived_lines, drop_filter, event, line_counts, read_dir_archive, wait_until,
};
use crate::filters;
use crate::harness::rt;

/// Every file under `root` (objects and their `.meta.json`), by path.
fn files(root: &Path) -> BTreeMap<String, Vec<u8>> {
    fn walk(root: &Path, d: &Path, out: &mut BTreeMap<String, Vec<u8>>) {
        for e in std::fs::read_dir(d).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() {
                walk(root, &p, out);
            } else if let Ok(rel) = p.strip_prefix(root) {
                let bytes = std::fs::read(&p).unwrap_or_else(|e| panic!("{e}"));
                out.insert(rel.display().to_string(), bytes);
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(root, root, &mut out);
    out
}

fn replay(config: &Path, args: &[&str]) -> (bool, String, String) {
    let out = crate::harness::cli()
        .args(["replay", "--config"])
        .arg(config)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{e}"));
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn replay_rewrites_an_archive_byte_for_byte_and_runs_a_filter_over_it() {
    let dir = crate::harness::tempdir();
    let config_path = crate::consumer_process::write_config(dir.path(), "");
    let module = std::fs::read(filters::ERRORS_ONLY).unwrap_or_else(|e| panic!("{e}"));
    drop_filter(&dir.path().join("filters"), "errors-only", &module);
    let config = Config::load(&config_path).unwrap_or_else(|e| panic!("{e}"));
    let raw = dir.path().join("archive/raw");
    let filtered = dir.path().join("archive/filtered/errors-only");
    let mut sent = 0usize;
    rt().block_on(async {
        let (app, _b) = crate::consumer::start_with(&config).await;
        let addr = app.intake_addr.unwrap_or_else(|| panic!("no intake"));
        for r in 0..6 {
            let lines: Vec<String> = (r * 300..(r + 1) * 300)
                .map(|n| event(n, n % 7 == 3))
                .collect();
            crate::consumer::post(addr, &lines, None).await;
            sent += lines.len();
        }
        // Large objects: compressed in several members.
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        let big: Vec<String> = (10_000..11_500)
            .map(|n| {
                let pad: String = (0..900)
                    .map(|_| {
                        x ^= x << 13;
                        x ^= x >> 7;
                        x ^= x << 17;
                        char::from(b"0123456789abcdef"[(x & 15) as usize])
                    })
                    .collect();
                format!(r#"{{"n":{n},"pad":"{pad}"}}"#)
            })
            .collect();
        crate::consumer::post(addr, &big, Some("one-key")).await;
        sent += big.len();
        wait_until(Duration::from_secs(30), "the raw archive", || {
            archived_lines(&raw) >= sent
        })
        .await;
        app.stop().await.unwrap_or_else(|e| panic!("{e}"));
    });
    let original = files(&raw);
    assert!(
        original.values().any(|b| b.len() > 256 << 10),
        "no large object: the member split is not exercised"
    );

    // 1. The raw archive through the raw pipeline into a fresh directory.
    let fresh = crate::harness::tempdir();
    let (ok, out, err) = replay(
        &config_path,
        &[
            "--pipeline",
            "raw",
            "--into-dir",
            &fresh.path().display().to_string(),
        ],
    );
    assert!(ok, "{out}{err}");
    assert!(
        out.contains(&format!("{sent} lines in, {sent} out")),
        "{out}"
    );
    let again = files(fresh.path());
    assert_eq!(
        original.keys().collect::<Vec<_>>(),
        again.keys().collect::<Vec<_>>(),
        "other keys"
    );
    for (k, bytes) in &original {
        assert!(again.get(k) == Some(bytes), "{k}: not byte-identical");
    }

    // 2. Through errors-only: the filter's lines, and the same objects on
    // a second run.
    let out_dir = crate::harness::tempdir();
    let into = out_dir.path().display().to_string();
    let (ok, out, err) = replay(&config_path, &["--pipeline", "errors", "--into-dir", &into]);
    assert!(ok, "{out}{err}");
    let first = files(out_dir.path());
    let live = line_counts(&read_dir_archive(&filtered));
    let replayed = line_counts(&read_dir_archive(&out_dir.path().join("errors-only")));
    assert!(!live.is_empty());
    assert_eq!(
        live, replayed,
        "the replay's lines differ from the live filter's"
    );
    let (ok, out, err) = replay(&config_path, &["--pipeline", "errors", "--into-dir", &into]);
    assert!(ok, "{out}{err}");
    assert_eq!(
        first,
        files(out_dir.path()),
        "a second replay changed the objects"
    );
    let meta: Vec<&String> = first.keys().filter(|k| k.ends_with(".meta.json")).collect();
    let m: serde_json::Value =
        serde_json::from_slice(&first[meta[0]]).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(m["filter"], "errors-only", "{m}");
    assert_eq!(m["module-sha256"].as_str().map(str::len), Some(64), "{m}");

    // 3. A time range after every object selects none.
    let empty = crate::harness::tempdir();
    let (ok, out, err) = replay(
        &config_path,
        &[
            "--pipeline",
            "raw",
            "--since",
            "2099-01-01T00:00:00Z",
            "--into-dir",
            &empty.path().display().to_string(),
        ],
    );
    assert!(ok, "{out}{err}");
    assert!(out.contains("replayed 0 of"), "{out}");
    assert!(files(empty.path()).is_empty());

    // 4. Bad arguments and a file that is no archive object.
    let (ok, _, err) = replay(&config_path, &["--pipeline", "nope"]);
    assert!(
        !ok && err.contains("no pipeline \"nope\"") && err.contains("\"raw\""),
        "{err}"
    );
    let (ok, _, err) = replay(
        &config_path,
        &["--pipeline", "raw", "--since", "yesterday-ish"],
    );
    assert!(!ok && err.contains("--since \"yesterday-ish\""), "{err}");
    std::fs::write(raw.join("stray.ndjson.gz"), b"not gzip").unwrap_or_else(|e| panic!("{e}"));
    let (ok, out, err) = replay(
        &config_path,
        &[
            "--pipeline",
            "raw",
            "--into-dir",
            &fresh.path().display().to_string(),
        ],
    );
    assert!(!ok, "{out}{err}");
    assert!(
        err.contains("stray.ndjson.gz") && err.contains("metadata"),
        "{err}"
    );
}

/// Replay reads an S3 archive (the moto stand-in, through the AWS SDK):
/// the objects replayed into a directory have the S3 objects' keys and
/// bytes.
#[test]
fn replay_reads_an_s3_archive_with_its_keys_and_bytes() {
    let Some(s3) = crate::services::s3_endpoint() else {
        return;
    };
    let dir = crate::harness::tempdir();
    let bucket = crate::services::unique_stream("replay")
        .to_ascii_lowercase()
        .chars()
        .take(63)
        .collect::<String>();
    let d = dir.path().display();
    let config_path = dir.path().join("k.toml");
    std::fs::write(
        &config_path,
        format!(
            "[stream]\ndata_dir = \"{d}/data\"\n[intake]\nlisten = \"127.0.0.1:0\"\n\
             [admin]\nlisten = \"127.0.0.1:0\"\n[consumer]\npoll_interval_ms = 20\n\
             [streams.events]\nshards = 2\n\
             [sinks.raw]\ntype = \"s3\"\nbucket = \"{bucket}\"\nendpoint = \"{s3}\"\nmax_age_ms = 200\n\
             [sinks.copy]\ntype = \"dir\"\npath = \"{d}/copy\"\n\
             [[pipelines]]\nname = \"raw\"\nstream = \"events\"\nsinks = [\"raw\"]\n\
             [[pipelines]]\nname = \"copy\"\nstream = \"events\"\nsinks = [\"copy\"]\n"
        ),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let config = Config::load(&config_path).unwrap_or_else(|e| panic!("{e}"));
    let store = rt().block_on(async {
        let client = crate::consumer_aws::s3_client(&s3).await;
        client
            .create_bucket()
            .bucket(&bucket)
            .send()
            .await
            .unwrap_or_else(|e| panic!("create bucket: {e:?}"));
        let (app, _b) = crate::consumer::start_with(&config).await;
        let addr = app.intake_addr.unwrap_or_else(|| panic!("no intake"));
        let lines: Vec<String> = (0..1_000).map(|n| event(n, n % 5 == 0)).collect();
        crate::consumer::post(addr, &lines, None).await;
        let raw = kinesthetic::sink::open_store(
            "raw",
            &config.sinks["raw"],
            &kinesthetic::sink::StreamWriter::default(),
        )
        .await
        .unwrap_or_else(|e| panic!("{e}"));
        let start = std::time::Instant::now();
        loop {
            let mut n = 0;
            for k in raw.list("").await.unwrap_or_else(|e| panic!("{e}")) {
                let o = raw.get(&k).await.unwrap_or_else(|e| panic!("{e}"));
                n += o.metadata["line-count"].parse::<usize>().unwrap_or(0);
            }
            if n >= lines.len() {
                break;
            }
            assert!(start.elapsed() < Duration::from_secs(30), "{n} lines in S3");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        app.stop().await.unwrap_or_else(|e| panic!("{e}"));
        raw
    });
    let fresh = crate::harness::tempdir();
    let (ok, out, err) = replay(
        &config_path,
        &[
            "--pipeline",
            "copy",
            "--from",
            "raw",
            "--into-dir",
            &fresh.path().display().to_string(),
        ],
    );
    assert!(ok, "{out}{err}");
    assert!(out.contains("1000 lines in, 1000 out"), "{out}");
    let written = files(fresh.path());
    rt().block_on(async {
        let keys = store.list("").await.unwrap_or_else(|e| panic!("{e}"));
        assert!(!keys.is_empty());
        for k in &keys {
            let o = store.get(k).await.unwrap_or_else(|e| panic!("{e}"));
            assert!(
                written.get(k).map(Vec::as_slice) == Some(&o.body[..]),
                "{k}: not the S3 object's bytes"
            );
        }
        assert_eq!(
            written
                .keys()
                .filter(|k| !k.ends_with(".meta.json"))
                .count(),
            keys.len()
        );
    });
}
