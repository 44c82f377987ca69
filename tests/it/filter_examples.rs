//! The example filters, compiled to Wasm, running in the real host.

use kinesthetic::event::split_lines;
use kinesthetic::filter::Limits;
use serde_json::{Map, Value};

use crate::filters;
use crate::harness::{check, input, load, loghub, out_lines, params};

/// What `errors-only` must answer for one line, computed with serde_json.
fn errors_only_oracle(line: &[u8]) -> Option<String> {
    let Ok(Value::Object(obj)) = serde_json::from_slice::<Value>(line) else {
        return None;
    };
    if obj.get("level") != Some(&Value::String("error".into())) {
        return None;
    }
    if !obj
        .get("status")
        .and_then(Value::as_f64)
        .is_some_and(|s| s >= 500.0)
    {
        return None;
    }
    let mut out = Map::new();
    for k in ["ts", "service", "msg"] {
        if let Some(v) = obj.get(k) {
            out.insert(k.to_owned(), v.clone());
        }
    }
    serde_json::to_string(&Value::Object(out)).ok()
}

#[test]
fn errors_only_matches_serde_json_on_generated_logs() {
    let f = load(filters::ERRORS_ONLY);
    let data = kinesthetic::datagen::ndjson_logs(42, 2_000_000);
    let lines: Vec<&[u8]> = split_lines(&data).collect();
    let mut kept = 0;
    for chunk in lines.chunks(1000) {
        let inp = input(chunk);
        let out = f
            .run(&inp, &params(&[]), &Limits::default())
            .unwrap_or_else(|e| panic!("{e}"));
        let got: Vec<String> = out_lines(&out, &inp)
            .into_iter()
            .map(|l| String::from_utf8(l).unwrap_or_else(|e| panic!("{e}")))
            .collect();
        let want: Vec<String> = chunk.iter().filter_map(|l| errors_only_oracle(l)).collect();
        assert_eq!(got, want);
        kept += got.len();
    }
    // ≈ 5 % of lines are errors with status ≥ 500.
    assert!(
        kept > lines.len() / 40 && kept < lines.len() / 10,
        "kept {kept} of {}",
        lines.len()
    );
}

#[test]
fn errors_only_edge_cases() {
    let f = load(filters::ERRORS_ONLY);
    let cases: &[&[u8]] = &[
        br#"{"level":"error","status":503,"ts":"t1","msg":"m","service":"api","x":1}"#,
        br#"{ "ts" : "t2" , "level" : "error" , "status" : 500.0 , "msg" : "a \"quoted\" msg" }"#,
        br#"{"le\u0076el":"error","status":5e2,"service":{"name": "nested", "v": [1, 2]}}"#,
        br#"{"level":"error","status":"500","ts":"string status"}"#,
        br#"{"level":"error","status":499,"ts":"too low"}"#,
        br#"{"level":"warn","status":503}"#,
        br#"{"level":"error","status":503,"ts":"truncated"#,
        br#"{"level":"error","status":503,"ts":"trailing"} x"#,
        br#"[{"level":"error","status":503}]"#,
        b"not json at all",
        b"",
        br#"{"nested":{"level":"error","status":503},"level":"info","status":503}"#,
    ];
    let inp = input(cases);
    let out = f
        .run(&inp, &params(&[]), &Limits::default())
        .unwrap_or_else(|e| panic!("{e}"));
    let got: Vec<String> = out_lines(&out, &inp)
        .into_iter()
        .map(|l| String::from_utf8_lossy(&l).into_owned())
        .collect();
    assert_eq!(
        got,
        [
            r#"{"ts":"t1","service":"api","msg":"m"}"#,
            r#"{"ts":"t2","msg":"a \"quoted\" msg"}"#,
            r#"{"service":{"name":"nested","v":[1,2]}}"#,
        ]
    );
}

#[test]
fn grep_on_real_system_logs() {
    let data = loghub("Linux_2k.log");
    let f = load(filters::GREP);
    let lines: Vec<&[u8]> = split_lines(&data).collect();
    let want: Vec<&[u8]> = lines
        .iter()
        .copied()
        .filter(|l| l.windows(4).any(|w| w == b"sshd"))
        .collect();
    assert!(!want.is_empty());
    let mut got = Vec::new();
    for chunk in lines.chunks(500) {
        let inp = input(chunk);
        let out = f
            .run(&inp, &params(&[("pattern", "sshd")]), &Limits::default())
            .unwrap_or_else(|e| panic!("{e}"));
        got.extend(out_lines(&out, &inp));
    }
    assert_eq!(got, want.iter().map(|l| l.to_vec()).collect::<Vec<_>>());
}

#[test]
fn redact_masks_emails_and_ipv4() {
    let f = load(filters::REDACT);
    check(
        &f,
        &[],
        &[
            b"user bob@example.com from 10.0.0.1 failed",
            b"nothing to hide",
            b"version 1.2.3 and 999.1.1.1",
        ],
        &[
            b"user [email] from [ipv4] failed",
            b"nothing to hide",
            b"version 1.2.3 and 999.1.1.1",
        ],
    );
    let inp = input(&[&b"a@b.co"[..], b"plain"]);
    let out = f
        .run(&inp, &params(&[]), &Limits::default())
        .unwrap_or_else(|e| panic!("{e}"));
    let lines: Vec<_> = out.lines(&inp).collect();
    assert!(lines[0].replaced && !lines[1].replaced);
}

#[test]
fn redact_on_real_ssh_logs_leaves_no_ipv4() {
    let data = loghub("OpenSSH_2k.log");
    let f = load(filters::REDACT);
    let lines: Vec<&[u8]> = split_lines(&data).collect();
    let mut redacted = 0;
    for chunk in lines.chunks(1000) {
        let inp = input(chunk);
        let out = f
            .run(&inp, &params(&[]), &Limits::default())
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(out.len(), chunk.len(), "redact keeps every line");
        for l in out.lines(&inp) {
            let s = String::from_utf8_lossy(l.bytes);
            assert!(!s.contains("173.234.31.186"), "{s}");
            redacted += usize::from(l.replaced);
        }
    }
    assert!(redacted > 100, "only {redacted} lines redacted");
}

#[test]
fn sample_keeps_about_one_in_n_by_event_id() {
    let f = load(filters::SAMPLE);
    let lines: Vec<Vec<u8>> = (0..1000).map(|i| format!("{i}").into_bytes()).collect();
    let inp = input(&lines);
    let out = f
        .run(&inp, &params(&[("n", "4")]), &Limits::default())
        .unwrap_or_else(|e| panic!("{e}"));
    assert!((180..320).contains(&out.len()), "kept {}", out.len());
    let all = f
        .run(&inp, &params(&[("n", "1")]), &Limits::default())
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(all.len(), 1000);
}

#[test]
fn rekey_sets_the_partition_key_from_a_field() {
    let f = load(filters::REKEY);
    let inp = input(&[
        &br#"{"user":"ann","n":1}"#[..],
        br#"{"user":42}"#,
        b"not json",
        br#"{"other":1}"#,
    ]);
    let out = f
        .run(&inp, &params(&[("field", "user")]), &Limits::default())
        .unwrap_or_else(|e| panic!("{e}"));
    let keys: Vec<(Vec<u8>, bool)> = out
        .lines(&inp)
        .map(|l| (l.key.to_vec(), l.rekeyed))
        .collect();
    assert_eq!(
        keys,
        [
            (b"ann".to_vec(), true),
            (b"42".to_vec(), true),
            (b"k2".to_vec(), false),
            (b"k3".to_vec(), false),
        ]
    );
}

#[test]
fn the_c_filter_runs_in_the_same_host() {
    let Some(path) = crate::harness::built(filters::CONTAINS, "contains") else {
        return;
    };
    let f = load(path);
    check(
        &f,
        &[("needle", "ERR")],
        &[b"ERR one", b"ok", b"x ERR"],
        &[b"ERR one", b"x ERR"],
    );
    check(
        &f,
        &[("needle", "err"), ("ignore-case", "true")],
        &[b"ERR one", b"ok"],
        &[b"ERR one"],
    );
    let e = f
        .run(&input(&[b"a"]), &params(&[]), &Limits::default())
        .err()
        .unwrap_or_else(|| panic!("init error expected"));
    assert!(e.to_string().contains("needle"), "{e}");
    assert!(
        f.info().stubbed_imports.is_empty(),
        "{:?}",
        f.info().imports
    );
}
