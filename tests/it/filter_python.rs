//! Filters written in Python (componentize-py, the SDK's
//! `kinesthetic_filter.py` helper): built by `tests/build.rs` like the other
//! examples; outside CI a missing toolchain skips them, saying why.

use std::process::Command;

use crate::filters;
use crate::harness::{built, input, load, out_lines, params};
use kinesthetic::filter::Limits;

/// The Python `errors-only` gives exactly the Rust one's output, line for
/// line, on a seeded data set of logs with edge cases mixed in.
#[test]
fn python_errors_only_matches_the_rust_one_byte_for_byte() {
    let Some(py) = built(filters::ERRORS_ONLY_PY, "errors-only-py") else {
        return;
    };
    let (py, rust) = (load(py), load(filters::ERRORS_ONLY));
    let data = kinesthetic::datagen::ndjson_logs(7, 400_000);
    let mut lines: Vec<&[u8]> = kinesthetic::event::events_of_body(&data)
        .map(|(_, l)| l)
        .collect();
    let edges: [&[u8]; 8] = [
        br#"{"level":"error","status":503,"ts":1.50e+3,"msg":{ "a" : [1, 2] }}"#,
        br#"{"level":"error","status":"503"}"#,
        br#"{"level":"error","status":1e999,"msg":"x"}"#,
        br#"{"level":"error","status":500,"service":"a\"b\\c\nd"}"#,
        br#"{"level":"error","level":"warn","status":500}"#,
        br#"{"level":"error","status":500,"ts":1,"ts":2}"#,
        b"not json",
        b"\xff\xfe",
    ];
    lines.extend(edges);
    let kept = crate::harness::assert_same_output(&py, &rust, &lines);
    assert!(kept > 20, "the data set keeps some lines: {kept}");
}

/// Parameters reach `init`: `grep` keeps matches, `invert` flips it, and a
/// missing or bad pattern fails the batch with the helper's message.
#[test]
fn python_grep_takes_parameters_and_init_errors_name_them() {
    let Some(path) = built(filters::GREP_PY, "grep-py") else {
        return;
    };
    let f = load(path);
    let run = crate::harness::assert_grep_basics(&f);
    let e = run(&[("pattern", "(")]).err().unwrap_or_default();
    assert!(e.contains("pattern '('"), "{e}");
}

/// Plain pytest in `dir`, with the SDK's helper on the path.
fn pytest(python: &std::path::Path, dir: &std::path::Path) -> std::process::Output {
    Command::new(python)
        .args(["-m", "pytest", "-q", "-p", "no:cacheprovider"])
        .current_dir(dir)
        .env("PYTHONPATH", xtask::python_helper_dir())
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .output()
        .unwrap_or_else(|e| panic!("{}: {e}", python.display()))
}

/// Each Python example's own native tests pass under plain pytest, with
/// the SDK's helper on the path (no Wasm involved).
#[test]
fn python_examples_pass_their_native_tests() {
    let Some(python) = xtask::tools_python().or_else(|| {
        crate::services::missing_tool("pytest for the Python filters is not installed".to_owned())
    }) else {
        return;
    };
    let examples = xtask::python_filters();
    assert!(examples.len() >= 2, "{examples:?}");
    for (name, dir) in examples {
        let o = pytest(&python, &dir);
        let text = String::from_utf8_lossy(&o.stdout);
        assert!(
            o.status.success(),
            "{name}: {text}{}",
            String::from_utf8_lossy(&o.stderr)
        );
        assert!(text.contains(" passed"), "{name}: {text}");
    }
}

/// `filter new --lang python` scaffolds a filter whose own tests pass under
/// pytest, which builds with the printed componentize-py command and runs.
#[test]
fn new_lang_python_scaffolds_a_filter_that_tests_builds_and_runs() {
    let dir = crate::harness::tempdir();
    let o = crate::harness::cli()
        .args(["filter", "new", "my-py", "--lang", "python", "--dir"])
        .arg(dir.path())
        .output()
        .unwrap_or_else(|e| panic!("{e}"));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{err}");
    let root = dir.path().join("my-py");
    assert!(root.join("app.py").is_file() && root.join("test_app.py").is_file());
    assert!(
        err.contains("componentize-py -d ") && err.contains("--stub-wasi"),
        "{err}"
    );
    let (Some(python), Ok(componentize)) = (xtask::tools_python(), xtask::componentize_py()) else {
        crate::services::missing_tool::<()>("the Python toolchain".to_owned());
        return;
    };
    let o = pytest(&python, &root);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stdout));
    let wasm = root.join("my-py.wasm");
    let o = Command::new(&componentize)
        .arg("-d")
        .arg(xtask::root().join("wit"))
        .args(["-w", "filter", "componentize", "--stub-wasi", "-p"])
        .arg(xtask::python_helper_dir())
        .args(["-p", ".", "app", "-o"])
        .arg(&wasm)
        .current_dir(&root)
        .output()
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let f = load(&wasm.to_string_lossy());
    let lines: [&[u8]; 2] = [b"an error", b"fine"];
    let inp = input(&lines);
    let out = f
        .run(&inp, &params(&[("needle", "error")]), &Limits::default())
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(out_lines(&out, &inp), [b"an error".to_vec()]);
    // An unknown language says which are known.
    let o = crate::harness::cli()
        .args(["filter", "new", "x", "--lang", "cobol", "--dir"])
        .arg(dir.path())
        .output()
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(String::from_utf8_lossy(&o.stderr).contains("expected rust, c, python or js"));
}
