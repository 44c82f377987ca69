//! `kinesthetic stream …` on both backends, as a user runs it.

use std::process::{Command, Output};

use crate::services::{kinesis_endpoint, unique_stream};

fn cli(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_kinesthetic-cli"))
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
    let r = run(&["reshard", name, "--shards", "3"]);
    assert!(r.contains("2 -> 3 open shard(s)"), "{r}");
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
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
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
