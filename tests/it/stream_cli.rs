//! `kinesthetic stream …` on both backends, as a user runs it.

use std::process::Output;

use crate::services::{kinesis_endpoint, unique_stream};

fn cli(args: &[&str]) -> Output {
    crate::harness::cli()
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cli: {e}"))
}

#[track_caller]
fn ok(args: &[&str]) -> String {
    let o = cli(args);
    assert!(
        o.status.success(),
        "{args:?}: {}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// Create, describe, reshard, list and delete through the CLI.
fn admin_round_trip(backend: &[&str], name: &str) {
    let with = |rest: &[&str]| -> Vec<String> {
        let mut v: Vec<String> = vec!["stream".into()];
        v.extend(backend.iter().map(|s| (*s).to_owned()));
        v.extend(rest.iter().map(|s| (*s).to_owned()));
        v
    };
    let run = |rest: &[&str]| {
        let a = with(rest);
        ok(&a.iter().map(String::as_str).collect::<Vec<_>>())
    };
    assert!(run(&["create", name, "--shards", "2"]).contains("2 shard(s)"));
    let d = run(&["describe", name]);
    assert!(
        d.contains("ACTIVE") && d.contains("2 open shard(s) of 2"),
        "{d}"
    );
    let a = with(&["reshard", name, "--shards", "3"]);
    let o = cli(&a.iter().map(String::as_str).collect::<Vec<_>>());
    let (r, progress) = (
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr),
    );
    assert!(
        o.status.success() && r.contains("2 -> 3 open shard(s)"),
        "{r}{progress}"
    );
    // Without a terminal, each step is a line as it starts.
    assert!(
        progress.contains("step 1/") && progress.contains("split at hash key"),
        "{progress}"
    );
    let d = run(&["describe", name]);
    assert!(
        d.contains("3 open shard(s)") && d.contains("closed") && d.contains("parent"),
        "{d}"
    );
    assert!(run(&["list"]).lines().any(|l| l == name));
    // Errors name what is wrong, with a non-zero exit.
    let a = with(&["describe", "no-such-stream-here"]);
    let o = cli(&a.iter().map(String::as_str).collect::<Vec<_>>());
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("no-such-stream-here"));
    assert!(run(&["delete", name]).contains("deleted"));
}

#[test]
fn stream_admin_on_the_local_log() {
    let dir = crate::harness::tempdir();
    let data = dir.path().to_string_lossy().into_owned();
    admin_round_trip(&["--backend", "local", "--data", &data], "clicks");
    let o = cli(&[
        "stream",
        "--data",
        &data,
        "tail",
        "x",
        "--from",
        "yesterday-ish",
    ]);
    assert!(!o.status.success());
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("--from"),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
}

#[test]
fn stream_admin_on_kinesis() {
    let Some(endpoint) = kinesis_endpoint() else {
        return;
    };
    admin_round_trip(&["--endpoint", &endpoint], &unique_stream("cli"));
}

/// `tail --from` in each of its forms, against records whose arrival time
/// is known to within the test's run.
#[test]
fn tail_from_times_offsets_epoch_ms_ages_and_latest() {
    use kinesthetic::stream::local::{LocalLog, LocalOptions};
    use kinesthetic::stream::{PutEntry, StreamBackend};
    let dir = crate::harness::tempdir();
    let data = dir.path().to_string_lossy().into_owned();
    let before_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64);
    crate::harness::rt().block_on(async {
        let log =
            LocalLog::open(dir.path(), LocalOptions::default()).unwrap_or_else(|e| panic!("{e}"));
        log.create_stream("t", 1)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let entries: Vec<PutEntry> = (0..3)
            .map(|i| PutEntry {
                partition_key: "k".into(),
                explicit_hash_key: None,
                data: format!("event-{i}").into_bytes().into(),
            })
            .collect();
        log.put_records("t", &entries)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
    });
    // A time after the records that is not in the future (which is
    // refused): the formats below have whole seconds.
    std::thread::sleep(std::time::Duration::from_millis(2_000));
    let after_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
        - 500;
    let tail = |from: &str| -> usize {
        let out = ok(&["stream", "--data", &data, "tail", "t", "--from", from]);
        out.lines().filter(|l| l.contains("event-")).count()
    };
    // An hour before, and just after, in UTC, in +05:30 and in -08:00.
    let fmt = |ms: i64, offset_min: i64| -> String {
        let t = std::time::UNIX_EPOCH
            + std::time::Duration::from_millis((ms + offset_min * 60_000) as u64);
        let utc = humantime::format_rfc3339_seconds(t).to_string();
        let local = utc.trim_end_matches('Z');
        if offset_min == 0 {
            return utc;
        }
        let sign = if offset_min < 0 { '-' } else { '+' };
        let m = offset_min.abs();
        format!("{local}{sign}{:02}:{:02}", m / 60, m % 60)
    };
    let hour = 3_600_000;
    for offset in [0, 330, -480] {
        assert_eq!(
            tail(&fmt(before_ms - hour, offset)),
            3,
            "an hour ago, offset {offset} min"
        );
        assert_eq!(
            tail(&fmt(after_ms, offset)),
            0,
            "after the records, offset {offset} min"
        );
    }
    // An explicit +00:00 is UTC too.
    assert_eq!(tail(&fmt(before_ms - hour, 0).replace('Z', "+00:00")), 3);
    assert_eq!(tail(&(before_ms - hour).to_string()), 3, "epoch ms");
    assert_eq!(tail(&after_ms.to_string()), 0, "epoch ms");
    assert_eq!(tail("1h"), 3, "an age");
    assert_eq!(tail("trim-horizon"), 3);
    assert_eq!(tail("latest"), 0, "latest starts after the newest record");
    // Bad forms name themselves.
    for bad in [
        "2026-13-01T00:00:00Z",
        "2026-11-28T10:00:00+25:00",
        "früh",
        "",
    ] {
        let o = cli(&["stream", "--data", &data, "tail", "t", "--from", bad]);
        assert!(!o.status.success(), "{bad:?} was accepted");
        assert!(
            String::from_utf8_lossy(&o.stderr).contains("--from"),
            "{bad:?}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
    }
}

/// Packed, stamped events as the intake writes them, put on `backend`.
async fn put_stamped<B: kinesthetic::stream::StreamBackend>(b: &B, stream: &str) {
    use kinesthetic::event::{EventId, Stamp};
    use kinesthetic::stream::PutEntry;
    use kinesthetic::stream::kpl::Aggregator;
    let mut agg = Aggregator::new(1 << 20);
    for i in 0..3u64 {
        let stamp = Stamp {
            id: EventId {
                listener: 0xabc,
                counter: 40 + i,
            },
            received_ms: 1_764_000_000_000 + i as i64,
        };
        assert!(agg.try_push("user-7", format!("{{\"n\":{i}}}").as_bytes(), stamp));
    }
    let rec = agg.finish();
    b.put_records(
        stream,
        &[PutEntry {
            partition_key: rec.partition_key.clone(),
            explicit_hash_key: None,
            data: rec.data,
        }],
    )
    .await
    .unwrap_or_else(|e| panic!("{e}"));
}

/// Keys written by other producers may hold newlines and tabs (Kinesis
/// allows them): `tail` escapes them, so a key cannot forge an event line
/// or shift the event's column.
#[test]
fn tail_escapes_keys_that_would_forge_lines() {
    use kinesthetic::stream::local::{LocalLog, LocalOptions};
    use kinesthetic::stream::{PutEntry, StreamBackend};
    let dir = crate::harness::tempdir();
    let data = dir.path().to_string_lossy().into_owned();
    crate::harness::rt().block_on(async {
        let log =
            LocalLog::open(dir.path(), LocalOptions::default()).unwrap_or_else(|e| panic!("{e}"));
        log.create_stream("t", 1)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let entries: Vec<PutEntry> = [
            "x\n0000000000000000-1 2026-01-01T00:00:00.000Z k",
            "a\tb\\c",
        ]
        .iter()
        .enumerate()
        .map(|(i, k)| PutEntry {
            partition_key: (*k).into(),
            explicit_hash_key: None,
            data: format!("event-{i}").into_bytes().into(),
        })
        .collect();
        log.put_records("t", &entries)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
    });
    let out = ok(&["stream", "--data", &data, "tail", "t"]);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 2, "{out}");
    assert!(
        lines[0].ends_with(" x\\n0000000000000000-1 2026-01-01T00:00:00.000Z k\tevent-0"),
        "{out}"
    );
    assert!(lines[1].ends_with(" a\\tb\\\\c\tevent-1"), "{out}");
    assert!(lines.iter().all(|l| l.matches('\t').count() == 1), "{out}");
}

/// `EVENT-ID RECEIVED KEY<TAB>EVENT` for each of the three events.
#[track_caller]
fn check_tail_lines(out: &str) {
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 3, "{out}");
    for (i, l) in lines.iter().enumerate() {
        let want_id = kinesthetic::event::EventId {
            listener: 0xabc,
            counter: 40 + i as u64,
        }
        .to_string();
        let (head, event) = l.split_once('\t').unwrap_or_else(|| panic!("no tab: {l}"));
        assert_eq!(event, format!("{{\"n\":{i}}}"), "{l}");
        let parts: Vec<&str> = head.split(' ').collect();
        assert_eq!(parts.len(), 3, "{l}");
        assert_eq!(parts[0], want_id, "{l}");
        assert_eq!(parts[1], format!("2025-11-24T16:00:00.00{i}Z"), "{l}");
        assert_eq!(parts[2], "user-7", "{l}");
    }
}

#[test]
fn tail_prints_de_aggregated_events_with_their_stamps_on_both_backends() {
    use kinesthetic::stream::StreamBackend;
    use kinesthetic::stream::local::{LocalLog, LocalOptions};
    let dir = crate::harness::tempdir();
    let data = dir.path().to_string_lossy().into_owned();
    crate::harness::rt().block_on(async {
        let log =
            LocalLog::open(dir.path(), LocalOptions::default()).unwrap_or_else(|e| panic!("{e}"));
        log.create_stream("st", 1)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        put_stamped(&log, "st").await;
    });
    check_tail_lines(&ok(&["stream", "--data", &data, "tail", "st"]));

    let Some(endpoint) = kinesis_endpoint() else {
        return;
    };
    let name = unique_stream("tail");
    crate::harness::rt().block_on(async {
        let Some(k) = crate::services::kinesis_backend().await else {
            return;
        };
        k.create_stream(&name, 1)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        kinesthetic::stream::reshard::wait_active(&k, &name, std::time::Duration::from_secs(30))
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        put_stamped(&k, &name).await;
    });
    check_tail_lines(&ok(&["stream", "--endpoint", &endpoint, "tail", &name]));
    ok(&["stream", "--endpoint", &endpoint, "delete", &name]);
}

#[test]
fn help_teaches_with_examples() {
    for (cmd, want) in [
        (
            "serve",
            &[
                "Examples:",
                "embedded default",
                "./filters",
                "archive/filtered/FILTER/",
                "/v1/status",
                "SIGTERM",
            ][..],
        ),
        ("intake", &["Examples:", "--config"][..]),
        ("consume", &["Examples:", "read-only"][..]),
        (
            "send",
            &["Examples:", "send - --stream", "line numbers"][..],
        ),
    ] {
        let help = ok(&[cmd, "--help"]);
        for w in want {
            assert!(help.contains(w), "{cmd} --help lacks {w:?}:\n{help}");
        }
    }
}

/// `tail --from TIME` after a reshard: the time applies to the children
/// too, and `--limit 0` prints nothing.
#[test]
fn tail_from_a_time_applies_to_child_shards() {
    use kinesthetic::stream::local::{LocalLog, LocalOptions};
    use kinesthetic::stream::{PutEntry, StreamBackend};
    let dir = crate::harness::tempdir();
    let data = dir.path().to_string_lossy().into_owned();
    let now_ms = || {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as i64)
    };
    let put = |log: &LocalLog, what: &'static str| {
        let log = log.clone();
        async move {
            let entries: Vec<PutEntry> = (0..4)
                .map(|i| PutEntry {
                    partition_key: format!("k{i}"),
                    explicit_hash_key: None,
                    data: format!("{what}-{i}").into_bytes().into(),
                })
                .collect();
            log.put_records("t", &entries)
                .await
                .unwrap_or_else(|e| panic!("{e}"));
        }
    };
    let t = crate::harness::rt().block_on(async {
        let log =
            LocalLog::open(dir.path(), LocalOptions::default()).unwrap_or_else(|e| panic!("{e}"));
        log.create_stream("t", 1)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        put(&log, "one").await;
        log.split_shard("t", "shardId-000000000000", 1 << 127)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        put(&log, "two").await;
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        let t = now_ms();
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        put(&log, "three").await;
        t
    });
    let out = ok(&[
        "stream",
        "--data",
        &data,
        "tail",
        "t",
        "--from",
        &t.to_string(),
    ]);
    let events: Vec<&str> = out.lines().filter_map(|l| l.split('\t').nth(1)).collect();
    assert_eq!(events.len(), 4, "{out}");
    assert!(events.iter().all(|e| e.starts_with("three-")), "{out}");
    let all = ok(&["stream", "--data", &data, "tail", "t"]);
    assert_eq!(all.lines().count(), 12, "{all}");
    let none = ok(&["stream", "--data", &data, "tail", "t", "--limit", "0"]);
    assert_eq!(none, "", "--limit 0");
}

#[track_caller]
fn fails(args: &[&str], names: &[&str]) {
    let o = cli(args);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{args:?} did not fail: {err}");
    for n in names {
        assert!(
            err.contains(n),
            "{args:?}: the error does not say {n:?}: {err}"
        );
    }
}

/// Limits are checked before anything changes: a reshard past the shard
/// limit takes no step, a time in the future is refused on both backends
/// alike, and names of the local log's own files are no stream names.
#[test]
fn limits_are_checked_before_anything_changes() {
    let dir = crate::harness::tempdir();
    let data = dir.path().to_string_lossy().into_owned();
    let local = |rest: &[&str]| -> Vec<String> {
        ["stream", "--backend", "local", "--data", &data]
            .iter()
            .chain(rest)
            .map(|s| (*s).to_owned())
            .collect()
    };
    let run_ok = |rest: &[&str]| {
        let v = local(rest);
        ok(&v.iter().map(String::as_str).collect::<Vec<_>>())
    };
    let run_fails = |rest: &[&str], names: &[&str]| {
        let v = local(rest);
        fails(&v.iter().map(String::as_str).collect::<Vec<_>>(), names);
    };
    run_ok(&["create", "r", "--shards", "1"]);
    run_fails(
        &["reshard", "r", "--shards", "10001"],
        &["10001", "at most 10000"],
    );
    assert!(run_ok(&["describe", "r"]).contains("1 open shard(s) of 1"));
    run_fails(
        &["tail", "r", "--from", "2999-01-01T00:00:00Z"],
        &["--from", "in the future", "--from latest --follow"],
    );
    for bad in [".lock", ".deleted-r-1", ".x"] {
        run_fails(
            &["create", bad],
            &["not a stream name", "do not start with `.`"],
        );
    }
    // A delete cut short by a crash leaves its renamed directory: the next
    // writer removes it, and it is never listed as a stream.
    let leftover = dir.path().join(".deleted-gone-1764000000000");
    std::fs::create_dir_all(&leftover).unwrap_or_else(|e| panic!("{e}"));
    std::fs::copy(dir.path().join("r/meta.json"), leftover.join("meta.json"))
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(run_ok(&["list"]).trim(), "r");
    run_ok(&["create", "t", "--shards", "1"]);
    assert!(!leftover.exists(), "the cut-short delete was not finished");

    let Some(endpoint) = kinesis_endpoint() else {
        return;
    };
    let name = unique_stream("limits");
    let k = |rest: &[&str]| -> Vec<String> {
        ["stream", "--endpoint", &endpoint]
            .iter()
            .chain(rest)
            .map(|s| (*s).to_owned())
            .collect()
    };
    let started = std::time::Instant::now();
    let v = k(&["create", &name, "--shards", "100001"]);
    fails(
        &v.iter().map(String::as_str).collect::<Vec<_>>(),
        &[&name, "100001"],
    );
    assert!(
        started.elapsed().as_secs() < 10,
        "a shard count over the limit was retried like contention"
    );
    let v = k(&["create", &name, "--shards", "1"]);
    ok(&v.iter().map(String::as_str).collect::<Vec<_>>());
    let v = k(&["reshard", &name, "--shards", "100001"]);
    fails(
        &v.iter().map(String::as_str).collect::<Vec<_>>(),
        &["100001", "at most"],
    );
    let v = k(&["describe", &name]);
    assert!(ok(&v.iter().map(String::as_str).collect::<Vec<_>>()).contains("1 open shard(s) of 1"));
    let v = k(&["delete", &name]);
    ok(&v.iter().map(String::as_str).collect::<Vec<_>>());
}

/// Seen as a new user: a data directory that is a file, and stream admin
/// on a log another process writes, each say what to do.
#[test]
fn stream_admin_errors_say_what_to_do() {
    let dir = crate::harness::tempdir();
    let file = dir.path().join("datafile");
    std::fs::write(&file, b"x").unwrap_or_else(|e| panic!("{e}"));
    let f = file.to_string_lossy().into_owned();
    for args in [
        &["stream", "--data", &f, "create", "x"][..],
        &["stream", "--data", &f, "list"][..],
    ] {
        fails(args, &["is a file, not a directory", "--data"]);
    }
    // serve too, on either backend (the spool and checkpoints live there).
    let toml = dir.path().join("kinesis.toml");
    std::fs::write(&toml, "[stream]\nbackend = \"kinesis\"\n").unwrap_or_else(|e| panic!("{e}"));
    let toml = toml.to_string_lossy().into_owned();
    for kinesis in [false, true] {
        let mut args = vec!["serve", "--data", &f, "--listen", "127.0.0.1:0"];
        args.extend(["--admin", "127.0.0.1:0"]);
        if kinesis {
            args.extend(["--config", &toml]);
        }
        fails(&args, &["is a file, not a directory", "--data"]);
    }
    // The writer a running `serve` holds.
    let data = dir.path().join("data");
    let held = kinesthetic::stream::local::LocalLog::open(&data, Default::default())
        .unwrap_or_else(|e| panic!("{e}"));
    let d = data.to_string_lossy().into_owned();
    for verb in [
        &["create", "x", "--shards", "2"][..],
        &["delete", "x"][..],
        &["reshard", "x", "--shards", "2"][..],
    ] {
        let args: Vec<&str> = ["stream", "--data", &d]
            .iter()
            .copied()
            .chain(verb.iter().copied())
            .collect();
        fails(
            &args,
            &[
                &format!("pid {}", std::process::id()),
                "stop that process, run this command, then start it again",
                "`stream list`, `describe` and `tail` work while it runs",
            ],
        );
    }
    // And the read-only verbs do work beside it.
    assert_eq!(ok(&["stream", "--data", &d, "list"]).trim(), "");
    drop(held);
}
