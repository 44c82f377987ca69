//! Filters written in JavaScript (componentize-js, the SDK's
//! `kinesthetic-filter.js` helper): built by `tests/build.rs` like the other
//! examples; outside CI a missing toolchain skips them, saying why.

use std::path::Path;
use std::process::{Command, Output};

use crate::filters;
use crate::harness::{built, input, load, out_lines, params};
use kinesthetic::filter::Limits;

/// The JavaScript `errors-only` gives exactly the Rust one's output, line
/// for line, on a seeded data set of logs with edge cases mixed in (the
/// places where `JSON.parse` and the Rust walker disagree among them) and
/// seeded mutants of its lines.
#[test]
fn js_errors_only_matches_the_rust_one_byte_for_byte() {
    let Some(js) = built(filters::ERRORS_ONLY_JS, "errors-only-js") else {
        return;
    };
    let (js, rust) = (load(js), load(filters::ERRORS_ONLY));
    let data = kinesthetic::datagen::ndjson_logs(7, 400_000);
    let mut lines: Vec<Vec<u8>> = kinesthetic::event::events_of_body(&data)
        .map(|(_, l)| l.to_vec())
        .collect();
    let nested = |n: usize| {
        format!(
            r#"{{"level":"error","status":503,"msg":{}{}}}"#,
            "[".repeat(n),
            "]".repeat(n)
        )
        .into_bytes()
    };
    let edges: Vec<Vec<u8>> = [
        &br#"{"level":"error","status":503,"ts":1.50e+3,"msg":{ "a" : [1, 2] }}"#[..],
        br#"{"level":"error","status":"503"}"#,
        br#"{"level":"error","status":1e999,"msg":"x"}"#,
        br#"{"level":"error","status":503,"x":[-1e400]}"#,
        br#"{"level":"error","status":503,"x":1e308,"y":0e999,"msg":-0}"#,
        br#"{"level":"error","status":500,"service":"a\"b\\c\nd"}"#,
        br#"{"level":"error","level":"warn","status":500}"#,
        br#"{"level":"error","status":500,"ts":1,"ts":2}"#,
        br#"{"le\u0076el":"\u0065rror","st\u0061tus":503,"m\u0073g":"caf\u00e9 \ud83d\ude00"}"#,
        br#"{"level":"error","status":503,"msg":"\ud800"}"#,
        br#"{"level":"error","status":503,"msg":"\udc00\ud800"}"#,
        br#"{"level":"error","status":503,"\ud800":1}"#,
        br#"{"level":"error","status":503,"msg":"tab	inside"}"#,
        br#"{"level":"error","status":503,"n":01}"#,
        br#"{"level":"error","status":503,"msg":"x"} trailing"#,
        br#" {"level":"error","status":503} "#,
        "\u{feff}{\"level\":\"error\",\"status\":503}".as_bytes(),
        "{\"level\":\"error\",\"status\":503,\"msg\":\"h\u{e9}\u{1f600}\"}".as_bytes(),
        b"{\"level\":\"error\",\"status\":503,\"msg\":\"\xff\"}",
        b"{\"level\":\"warn\",\"status\":503,\"msg\":\"\xff\"}",
        b"not json",
        b"\xff\xfe",
    ]
    .iter()
    .map(|l| l.to_vec())
    .chain([nested(126), nested(127)])
    .collect();
    lines.extend(edges);
    lines.extend(mutants(&lines, 11, 6_000));
    let kept = crate::harness::assert_same_output(&js, &rust, &lines);
    assert!(kept > 20, "the data set keeps some lines: {kept}");
}

/// `count` seeded mutants of the error lines among `lines` (and some
/// others): bits of JSON and of invalid JSON inserted, bytes cut, lines
/// truncated.
fn mutants(lines: &[Vec<u8>], seed: u64, count: usize) -> Vec<Vec<u8>> {
    const BITS: &[&[u8]] = &[
        br"\u0065",
        br"\ud800",
        br"\udc00",
        br"\ud83d\ude00",
        br#"\""#,
        br"\\",
        br"\/",
        br"\x",
        b" ",
        b"\t",
        b"1e999",
        b"-1e400",
        b"1e308",
        b"0e999",
        b"01",
        b"-0",
        b"1.",
        b"[",
        b"]",
        b"{",
        b"}",
        b",",
        b":",
        b"\"",
        b"true",
        b"nul",
        b"\xff",
        "\u{e9}".as_bytes(),
        b"\xe2\x82",
        "\u{feff}".as_bytes(),
        br#""level":"error""#,
        br#""level":"warn""#,
        br#""status":503"#,
        br#""status":"503""#,
        br#""ts":[1, {"a" : 2}]"#,
        br#""le\u0076el""#,
        br#""\u0065rror""#,
        b"5e2",
        b"499.99",
        b"1E+3",
    ];
    let mut rng = kinesthetic::datagen::Rng::new(seed);
    let errors: Vec<&Vec<u8>> = lines
        .iter()
        .filter(|l| l.windows(15).any(|w| w == br#""level":"error""#))
        .collect();
    (0..count)
        .map(|_| {
            let mut l = if rng.below(10) < 7 && !errors.is_empty() {
                errors[rng.below(errors.len() as u64) as usize].clone()
            } else {
                lines[rng.below(lines.len() as u64) as usize].clone()
            };
            for _ in 0..=rng.below(3) {
                let at = rng.below(l.len() as u64 + 1) as usize;
                match rng.below(10) {
                    0..=5 => {
                        let bit = BITS[rng.below(BITS.len() as u64) as usize];
                        l.splice(at..at, bit.iter().copied());
                    }
                    6..=8 => {
                        let end = (at + 1 + rng.below(5) as usize).min(l.len());
                        l.drain(at..end);
                    }
                    _ => l.truncate(at),
                }
            }
            l
        })
        .filter(|l| !l.is_empty())
        .collect()
}

/// Parameters reach `init`: `grep` keeps matches, `invert` flips it, and a
/// missing or bad parameter fails the batch with a message naming it.
#[test]
fn js_grep_takes_parameters_and_init_errors_name_them() {
    let Some(path) = built(filters::GREP_JS, "grep-js") else {
        return;
    };
    let f = load(path);
    let run = crate::harness::assert_grep_basics(&f);
    let e = run(&[("pattern", "(")]).err().unwrap_or_default();
    assert!(e.contains(r#"pattern "(": "#), "{e}");
    let e = run(&[("pattern", "x"), ("invert", "yes")])
        .err()
        .unwrap_or_default();
    assert!(e.contains(r#"parameter `invert`: "yes""#), "{e}");
}

/// The components import the world and nothing of WASI: componentize-js's
/// WASI features are all disabled.
#[test]
fn js_filters_import_nothing_but_the_world() {
    for (path, name) in [
        (filters::ERRORS_ONLY_JS, "errors-only-js"),
        (filters::GREP_JS, "grep-js"),
    ] {
        let Some(path) = built(path, name) else {
            return;
        };
        let f = load(path);
        assert_eq!(
            f.info().imports,
            ["kinesthetic:filter/types@0.1.0", "log"],
            "{name}"
        );
        assert!(f.info().stubbed_imports.is_empty(), "{name}");
    }
}

/// Plain `node --test` in `dir` (Node.js from PATH).
fn node_test(node: &Path, dir: &Path) -> Output {
    Command::new(node)
        .arg("--test")
        .current_dir(dir)
        .output()
        .unwrap_or_else(|e| panic!("{}: {e}", node.display()))
}

#[track_caller]
fn assert_node_tests_pass(what: &str, o: &Output) {
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(
        o.status.success(),
        "{what}: {text}{}",
        String::from_utf8_lossy(&o.stderr)
    );
    // node's TAP summary: at least one test ran, and none failed.
    assert!(
        text.lines()
            .any(|l| l.starts_with("# pass ") && l != "# pass 0"),
        "{what}: {text}"
    );
    assert!(text.lines().any(|l| l == "# fail 0"), "{what}: {text}");
}

/// Each JavaScript example's own native tests, and the helper's, pass under
/// plain `node --test` (no Wasm involved).
#[test]
fn js_examples_and_the_helper_pass_their_native_tests() {
    let Some(node) = xtask::find_tool("node")
        .or_else(|| crate::services::missing_tool("node (Node.js) is not on PATH".to_owned()))
    else {
        return;
    };
    let examples = xtask::js_filters();
    assert!(examples.len() >= 2, "{examples:?}");
    for (name, dir) in examples {
        assert_node_tests_pass(&name, &node_test(&node, &dir));
    }
    assert_node_tests_pass("the helper", &node_test(&node, &xtask::js_helper_dir()));
}

/// `filter new --lang js` scaffolds a filter whose own tests pass under
/// `node --test`, which builds with the printed componentize-js command and
/// runs.
#[test]
fn new_lang_js_scaffolds_a_filter_that_tests_builds_and_runs() {
    let dir = crate::harness::tempdir();
    let o = crate::harness::cli()
        .args(["filter", "new", "my-js", "--lang", "js", "--dir"])
        .arg(dir.path())
        .output()
        .unwrap_or_else(|e| panic!("{e}"));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{err}");
    let root = dir.path().join("my-js");
    for file in [
        "app.js",
        "app.test.js",
        "component.js",
        "kinesthetic-filter.js",
        "package.json",
    ] {
        assert!(root.join(file).is_file(), "{file}: {err}");
    }
    // The helper is the SDK's, as it is now.
    let helper = std::fs::read(root.join("kinesthetic-filter.js")).unwrap_or_default();
    let sdk = std::fs::read(xtask::js_helper_dir().join("kinesthetic-filter.js"));
    assert!(sdk.is_ok_and(|s| s == helper));
    // The printed commands name the pinned toolchain.
    let build = err
        .lines()
        .find_map(|l| l.trim().strip_prefix("build: "))
        .unwrap_or_else(|| panic!("no build command: {err}"));
    assert!(
        build.contains("componentize-js component.js ")
            && build.contains(&format!(
                "--disable {}",
                xtask::COMPONENTIZE_JS_DISABLE.join(" ")
            ))
            && err.contains(&format!(
                "componentize-js {}",
                xtask::COMPONENTIZE_JS_VERSION
            )),
        "{err}"
    );
    let Some(node) = xtask::find_tool("node")
        .or_else(|| crate::services::missing_tool("node (Node.js) is not on PATH".to_owned()))
    else {
        return;
    };
    assert_node_tests_pass("the scaffold", &node_test(&node, &root));
    if let Err(e) = xtask::componentize_js() {
        crate::services::missing_tool::<()>(format!("the JavaScript toolchain: {e}"));
        return;
    }
    // The build command as printed, by a shell.
    let o = Command::new("sh")
        .args(["-c", build])
        .output()
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(
        o.status.success(),
        "{build}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    let wasm = root.join("my-js.wasm");
    let f = load(&wasm.to_string_lossy());
    let lines: [&[u8]; 3] = [b"an error", b"fine", b"error!"];
    let inp = input(&lines);
    let out = f
        .run(&inp, &params(&[("needle", "error")]), &Limits::default())
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        out_lines(&out, &inp),
        [b"an error".to_vec(), b"error!".to_vec()]
    );
    let e = f
        .run(&inp, &params(&[]), &Limits::default())
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(e.contains("parameter `needle` is required"), "{e}");
}
