//! `kinesthetic config check`: what `serve` would accept, checked without
//! starting anything.

use std::process::Output;

fn check(text: &str) -> Output {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
    let path = dir.path().join("k.toml");
    std::fs::write(&path, text).unwrap_or_else(|e| panic!("write: {e}"));
    crate::harness::cli()
        .args(["config", "check"])
        .arg(&path)
        .env_remove("KINESTHETIC_CONFIG")
        .output()
        .unwrap_or_else(|e| panic!("cli: {e}"))
}

#[track_caller]
fn refused(text: &str, names: &[&str]) {
    let o = check(text);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{text:?} was accepted: {err}");
    assert!(
        err.contains("k.toml"),
        "the error does not name the file: {err}"
    );
    for n in names {
        assert!(err.contains(n), "the error does not name {n:?}: {err}");
    }
}

#[test]
fn the_example_file_is_valid_and_described() {
    let text = include_str!("../../kinesthetic.example.toml");
    let o = check(text);
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(out.contains("k.toml: valid"), "{out}");
    assert!(out.contains("the local log in kinesthetic-data"), "{out}");
    assert!(out.contains("127.0.0.1:8080"), "{out}");
}

#[test]
fn a_kinesis_set_up_with_tokens_is_described_without_the_secrets() {
    let secret = "s3cr3t-t0ken-0123456789";
    let o = check(&format!(
        "[stream]\nbackend = \"kinesis\"\n[stream.kinesis]\nendpoint = \"http://127.0.0.1:4568\"\n\
         [[intake.tokens]]\ntoken = \"{secret}\"\nstreams = [\"logs\"]\n\
         [streams.logs]\npartition_key_field = \"user\"\n"
    ));
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(
        out.contains("Kinesis") && out.contains("http://127.0.0.1:4568"),
        "{out}"
    );
    assert!(out.contains("spool"), "{out}");
    assert!(out.contains("token 1 of 1 may write to logs"), "{out}");
    assert!(out.contains("\"user\""), "{out}");
    assert!(!out.contains(&secret[..4]), "a token leaked: {out}");
}

#[test]
fn bad_files_are_refused_naming_the_key() {
    refused("[intake]\nlisten_adr = \"1.2.3.4:1\"\n", &["listen_adr"]);
    refused(
        "[intake]\nrecord_max_bytes = 2000000\n",
        &["intake.record_max_bytes"],
    );
    refused("[stream]\nbackend = \"s3\"\n", &["s3"]);
    refused("[intake]\nlisten = \"nowhere\"\n", &["listen"]);
    refused(
        "[[intake.tokens]]\ntoken = \"short\"\nstreams = [\"*\"]\n",
        &["intake.tokens[0].token"],
    );
    refused("[intake\n", &["line 1"]);
}

#[test]
fn a_missing_file_is_named() {
    let o = crate::harness::cli()
        .args(["config", "check", "/nonexistent/k.toml"])
        .output()
        .unwrap_or_else(|e| panic!("cli: {e}"));
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1));
    assert!(err.contains("cannot read /nonexistent/k.toml"), "{err}");
}

#[test]
fn pipelines_sinks_and_filters_are_described_and_checked() {
    let o = check(
        "[sinks.arch]\ntype = \"s3\"\nbucket = \"my-archive\"\nendpoint = \"http://127.0.0.1:5000\"\n\
         prefix = \"{pipeline}\"\ncompression = \"zstd\"\n\
         [sinks.hot]\ntype = \"dir\"\npath = \"/var/hot\"\nprefix = \"{filter}\"\n\
         [[pipelines]]\nname = \"errors\"\nstream = \"events\"\nfilter = \"errors-only\"\n\
         sinks = [\"arch\"]\nroutes = { alerts = [\"hot\"] }\non_error = \"skip\"\n\
         [[pipelines]]\nname = \"raw\"\nstream = \"events\"\nsinks = [\"arch\"]\n\
         [filters.auto]\nstream = \"events\"\nsinks = [\"hot\"]\n",
    );
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    for want in [
        "sink arch",
        "s3://my-archive at http://127.0.0.1:5000",
        ".ndjson.zst",
        "sink hot",
        "dir /var/hot",
        "pipeline errors: stream events → filter errors-only → arch (on error: skip); routes: alerts → hot",
        "pipeline raw: stream events → no filter (raw) → arch (on error: dead-letter)",
        "every module in filters without a pipeline → stream events → hot",
        "checkpoints in kinesthetic-data/checkpoints",
    ] {
        assert!(out.contains(want), "{want:?} not in:\n{out}");
    }
    refused(
        "[[pipelines]]\nname = \"p\"\nstream = \"events\"\nsinks = [\"missing\"]\n",
        &[
            "pipelines[0].sinks",
            "\"missing\"",
            "add a [sinks.NAME] section",
        ],
    );
    refused(
        "[sinks.a]\ntype = \"dir\"\npath = \"x\"\nmax_bytes = \"big\"\n",
        &["max_bytes"],
    );
}

/// The README's quick start for delivery is a valid file, and the
/// delivery sinks' keys are checked, naming the key.
#[test]
fn delivery_sinks_are_checked_and_the_readme_quick_start_is_valid() {
    let readme = include_str!("../../README.md");
    let start = readme
        .find("cat > deliver.toml <<'EOF'\n")
        .unwrap_or_else(|| panic!("the README has no deliver.toml"));
    let body = &readme[start..];
    let body = &body[body.find('\n').unwrap_or(0) + 1..];
    let quick = &body[..body.find("\nEOF").unwrap_or(body.len())];
    let o = check(quick);
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(out.contains("POST http://127.0.0.1:9000/ingest"), "{out}");
    assert!(out.contains("index in"), "{out}");

    let two = "[streams.a]\nshards = 1\n[streams.b]\nshards = 1\n";
    let pipe = |name: &str, sink: &str| {
        format!("[[pipelines]]\nname = \"{name}\"\nstream = \"a\"\nsinks = [\"{sink}\"]\n")
    };
    refused(
        &format!("{two}[sinks.k]\ntype = \"kinesis\"\n{}", pipe("p", "k")),
        &["sinks.k.stream", "needs the stream"],
    );
    refused(
        &format!(
            "{two}[sinks.k]\ntype = \"kinesis\"\nstream = \"b\"\ncompression = \"gzip\"\n{}",
            pipe("p", "k")
        ),
        &["sinks.k.compression"],
    );
    refused(
        &format!("{two}[sinks.k]\ntype = \"kinesis\"\nstream = \"not a name!\"\n"),
        &["sinks.k.stream", "not a stream name"],
    );
    refused(
        &format!("{two}[sinks.i]\ntype = \"index\"\nbucket = \"b\"\n"),
        &["sinks.i.bucket"],
    );
    refused(
        &format!("{two}[sinks.i]\ntype = \"index\"\nurl = \"ftp://x\"\n"),
        &["sinks.i.url"],
    );
    refused(
        &format!(
            "{two}[sinks.i]\ntype = \"index\"\n{}{}",
            pipe("p", "i"),
            pipe("q", "i")
        ),
        &["sinks.i", "one pipeline"],
    );
    refused(
        &format!("{two}[sinks.d]\ntype = \"dir\"\npath = \"x\"\nidle_grace_ms = 5\n"),
        &["sinks.d.idle_grace_ms", "index"],
    );
    refused(
        &format!("{two}[sinks.i]\ntype = \"index\"\nmemory_bytes = 10\n"),
        &["sinks.i.memory_bytes"],
    );
}
