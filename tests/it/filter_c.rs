//! `kinesthetic filter new --lang c`: a C filter that builds with one
//! command (`./build.sh`) and passes its own test (`./build.sh test`, which
//! runs `kinesthetic filter test`). Outside CI a missing C toolchain skips
//! the build, saying why.

use std::path::Path;
use std::process::Command;

use crate::harness::{assert_lines_eq, cli, input, load, out_lines, params, tempdir};
use kinesthetic::filter::Limits;

/// `kinesthetic filter new NAME --dir DIR ARGS…`: (success, stderr).
fn new(dir: &Path, name: &str, args: &[&str]) -> (bool, String) {
    let o = cli()
        .args(["filter", "new", "--dir"])
        .arg(dir)
        .args(args)
        .arg("--")
        .arg(name)
        .output()
        .unwrap_or_else(|e| panic!("kinesthetic filter new: {e}"));
    (
        o.status.success(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

/// The scaffold's `build.sh ARGS…` as a user runs it, with `kinesthetic`
/// being `kinesthetic_bin`: (success, stdout and stderr).
fn build_sh(root: &Path, args: &[&str], kinesthetic_bin: &str) -> (bool, String) {
    let script = root.join("build.sh");
    let o = Command::new(&script)
        .args(args)
        .current_dir(root)
        .env("KINESTHETIC", kinesthetic_bin)
        .env("KINESTHETIC_CACHE_DIR", root.join("module-cache"))
        .env("RUST_LOG", "warn")
        .output()
        .unwrap_or_else(|e| panic!("{}: {e}", script.display()));
    (
        o.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        ),
    )
}

const CLI: &str = env!("CARGO_BIN_EXE_kinesthetic-cli");

/// What the scaffold holds and says, without building it: the world this
/// binary hosts, the pinned tools, the commands; and what it refuses.
#[test]
fn new_lang_c_writes_a_filter_that_stands_alone() {
    let dir = tempdir();
    let (ok, err) = new(dir.path(), "my-c", &["--lang", "c"]);
    assert!(ok, "{err}");
    let root = dir.path().join("my-c");
    for f in [
        "my-c.c",
        "build.sh",
        ".gitignore",
        "test/input.txt",
        "test/expected.txt",
    ] {
        assert!(root.join(f).is_file(), "{f} missing: {err}");
    }
    // The world is the one the host is built from, byte for byte.
    let read = |p: &Path| std::fs::read(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    assert_eq!(
        read(&root.join("wit/filter.wit")),
        read(&xtask::root().join("wit/filter.wit")),
        "the scaffold's wit/filter.wit is not the repository's"
    );
    // The script checks the tools the example's build pins.
    let script = String::from_utf8_lossy(&read(&root.join("build.sh"))).into_owned();
    for pin in [
        format!(" {} wit-bindgen-cli", xtask::WIT_BINDGEN_VERSION),
        format!(" {} wasm-tools", xtask::WASM_TOOLS_VERSION),
        xtask::APT_PACKAGES.join(" "),
    ] {
        assert!(script.contains(&pin), "build.sh lacks `{pin}`");
    }
    assert!(!script.contains("@NAME@") && script.contains("name=my-c"));
    let source = String::from_utf8_lossy(&read(&root.join("my-c.c"))).into_owned();
    assert!(!source.contains('@'), "a placeholder is left: {source}");
    // The printed commands are the ones to run.
    let r = root.display();
    for line in [
        format!("build: cd {r} && ./build.sh\n"),
        format!("test:  cd {r} && KINESTHETIC="),
        format!("run:   kinesthetic filter run {r}/build/my-c.wasm --param needle=error"),
    ] {
        assert!(err.contains(&line), "`{line}` not printed: {err}");
    }

    // The checks every scaffold shares: an existing directory, a bad name.
    let (ok, err) = new(dir.path(), "my-c", &["--lang", "c"]);
    assert!(!ok && err.contains("already exists"), "{err}");
    for bad in ["9lives", "a.b", "a b", "-x", "x;rm"] {
        let (ok, err) = new(dir.path(), bad, &["--lang", "c"]);
        assert!(
            !ok && err.contains(&format!("invalid name `{bad}`")),
            "{bad:?}: {err}"
        );
        assert!(!dir.path().join(bad).exists(), "{bad:?} was written");
    }
    // C needs no SDK: --sdk is refused rather than ignored.
    let (ok, err) = new(dir.path(), "with-sdk", &["--lang", "c", "--sdk", "."]);
    assert!(
        !ok && err.contains("--sdk") && err.contains("C filter"),
        "{err}"
    );
    assert!(!dir.path().join("with-sdk").exists());
    let (ok, err) = new(dir.path(), "go-filter", &["--lang", "go"]);
    assert!(
        !ok && err.contains("--lang go: expected rust, c, python or js"),
        "{err}"
    );
}

/// The scaffold builds with its one command into a component that loads,
/// keeps the lines with the needle, logs once, fails `init` without a
/// needle; and its own test passes, and fails when the expected output is
/// wrong.
#[test]
fn new_lang_c_builds_with_one_command_and_passes_its_own_test() {
    if let Err(why) = xtask::check_c_tools() {
        crate::services::missing_tool::<()>(format!("the C toolchain: {why}"));
        return;
    }
    let dir = tempdir();
    let (ok, err) = new(dir.path(), "my-c", &["--lang", "c"]);
    assert!(ok, "{err}");
    let root = dir.path().join("my-c");

    let (ok, out) = build_sh(&root, &[], CLI);
    assert!(ok, "./build.sh failed:\n{out}");
    assert!(
        !out.contains("warning:"),
        "the template compiles with warnings:\n{out}"
    );
    let wasm = root.join("build/my-c.wasm");
    assert!(out.contains("built build/my-c.wasm"), "{out}");

    let f = load(&wasm.to_string_lossy());
    let lines: [&[u8]; 6] = [
        b"an error here",
        b"all fine",
        b"",
        b"ERROR in capitals",
        b"error",
        b"\xff\xfe not utf-8, error",
    ];
    let inp = input(&lines);
    let run = |p: &[(&str, &str)]| {
        f.run(&inp, &params(p), &Limits::default())
            .map(|o| out_lines(&o, &inp))
            .map_err(|e| e.to_string())
    };
    let kept = run(&[("needle", "error")]).unwrap_or_else(|e| panic!("{e}"));
    assert_lines_eq(
        &kept,
        &[
            b"an error here".to_vec(),
            b"error".to_vec(),
            b"\xff\xfe not utf-8, error".to_vec(),
        ],
    );
    let none = run(&[("needle", "absent")]).unwrap_or_else(|e| panic!("{e}"));
    assert!(none.is_empty(), "{none:?}");
    let e = run(&[]).err().unwrap_or_default();
    assert!(e.contains("missing parameter `needle`"), "{e}");
    let e = run(&[("needle", "")]).err().unwrap_or_default();
    assert!(e.contains("parameter `needle` is empty"), "{e}");

    // Its one `log` call reaches the host's log.
    let o = cli()
        .args(["filter", "run", "--no-cache", "-p", "needle=error"])
        .arg(&wasm)
        .arg(root.join("test/input.txt"))
        .env("RUST_LOG", "filter=debug")
        .output()
        .unwrap_or_else(|e| panic!("{e}"));
    let log = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{log}");
    assert!(
        log.contains("my-c: keeping lines that contain error"),
        "{log}"
    );

    // Its own test passes…
    let (ok, out) = build_sh(&root, &["test"], CLI);
    assert!(ok, "./build.sh test failed:\n{out}");
    assert!(out.contains("ok: 7 lines in, 3 lines out"), "{out}");
    // …and can fail: a line the filter does not give is expected.
    let expected = root.join("test/expected.txt");
    let mut text = std::fs::read_to_string(&expected).unwrap_or_else(|e| panic!("{e}"));
    text.push_str("2024-05-01T10:00:03Z ERROR upstream refused the connection\n");
    std::fs::write(&expected, text).unwrap_or_else(|e| panic!("{e}"));
    let (ok, out) = build_sh(&root, &["test"], CLI);
    assert!(!ok, "./build.sh test passed a wrong expectation:\n{out}");
    assert!(
        out.contains(
            "-2024-05-01T10:00:03Z ERROR upstream refused the connection (expected line 4)"
        ),
        "{out}"
    );
    // Without kinesthetic the test says what to do.
    let missing = dir.path().join("no-such-kinesthetic");
    let (ok, out) = build_sh(&root, &["test"], &missing.to_string_lossy());
    assert!(!ok && out.contains("set KINESTHETIC="), "{out}");
}
