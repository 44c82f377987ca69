//! `kinesthetic filter new`: a filter scaffolded from the templates
//! in `templates/` (one directory per language), that builds with one
//! command and passes its own test.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, bail};

pub(super) fn new(
    name: &str,
    dir: &Path,
    lang: &str,
    sdk: Option<PathBuf>,
) -> anyhow::Result<ExitCode> {
    match lang {
        "rust" => {}
        "python" | "py" => return new_python(name, dir, sdk),
        "c" => return new_c(name, dir, sdk),
        "js" | "javascript" => return new_js(name, dir, sdk),
        other => bail!("--lang {other}: expected rust, c, python or js"),
    }
    let path = scaffold(name, dir, sdk)?;
    eprintln!("created {}", path.display());
    eprintln!("  test:  cd {} && cargo test", path.display());
    eprintln!(
        "  build: cd {} && cargo build --release --target wasm32-wasip2",
        path.display()
    );
    // Where cargo will put the module: under CARGO_TARGET_DIR when
    // it is set (relative to the crate, as cargo reads it), else in
    // the crate's own target/.
    let target = match std::env::var_os("CARGO_TARGET_DIR") {
        Some(t) if !t.is_empty() => path.join(t),
        _ => path.join("target"),
    };
    eprintln!(
        "  run:   kinesthetic filter run {} --param needle=error INPUT",
        target
            .join("wasm32-wasip2/release")
            .join(format!("{}.wasm", name.replace('-', "_")))
            .display()
    );
    Ok(ExitCode::SUCCESS)
}

/// A Python filter: `app.py` and its native test, filled from
/// `templates/python/`, with the commands that test, build and run it.
fn new_python(name: &str, dir: &Path, sdk: Option<PathBuf>) -> anyhow::Result<ExitCode> {
    check_name(name)?;
    let root = fresh_dir(dir, name)?;
    let sdk = sdk_dir(sdk)?;
    let helper = sdk.join("python");
    let wit = sdk.join("wit");
    let py = xtask_python_bin();
    let fill = |t: &str| {
        t.replace("@NAME@", name)
            .replace("@HELPER@", &helper.display().to_string())
            .replace("@WIT@", &wit.display().to_string())
            .replace("@PY@", &py)
    };
    std::fs::create_dir_all(&root).with_context(|| format!("cannot create {}", root.display()))?;
    for (file, text) in [
        ("app.py", include_str!("templates/python/app.py")),
        ("test_app.py", include_str!("templates/python/test_app.py")),
    ] {
        let p = root.join(file);
        std::fs::write(&p, fill(text)).with_context(|| format!("cannot write {}", p.display()))?;
    }
    let r = root.display();
    eprintln!("created {r} (app.py, test_app.py)");
    eprintln!("  tools: cargo xtask install-tools (componentize-py 0.25.1 and pytest, in {py})");
    eprintln!(
        "  test:  cd {r} && PYTHONPATH={} {py}/python -m pytest",
        helper.display()
    );
    eprintln!(
        "  build: cd {r} && {py}/componentize-py -d {} -w filter componentize --stub-wasi -p {} \
         -p . app -o {name}.wasm",
        wit.display(),
        helper.display()
    );
    eprintln!("  run:   kinesthetic filter run {r}/{name}.wasm --param needle=error INPUT");
    Ok(ExitCode::SUCCESS)
}

/// A C filter: `NAME.c`, a `build.sh` that makes it a component with one
/// command (and runs its test with `./build.sh test`), a copy of the world
/// it is built against, and a sample input with its expected output, filled
/// from `templates/c/`.
fn new_c(name: &str, dir: &Path, sdk: Option<PathBuf>) -> anyhow::Result<ExitCode> {
    check_name(name)?;
    if let Some(sdk) = sdk {
        bail!(
            "--sdk {}: a C filter does not use the SDK (it carries its own copy of the \
             filter world); leave --sdk out",
            sdk.display()
        );
    }
    let root = fresh_dir(dir, name)?;
    // `name` is letters, digits, `-` and `_` (check_name), so it is safe
    // as is in a file name, a C string literal and an unquoted shell word.
    let fill = |t: &str| t.replace("@NAME@", name);
    let files = [
        (
            format!("{name}.c"),
            fill(include_str!("templates/c/NAME.c")),
        ),
        (
            "build.sh".to_owned(),
            fill(include_str!("templates/c/build.sh")),
        ),
        (
            ".gitignore".to_owned(),
            include_str!("templates/c/gitignore").to_owned(),
        ),
        // The world this binary hosts, so that the filter builds on its own.
        (
            "wit/filter.wit".to_owned(),
            include_str!("../../../../wit/filter.wit").to_owned(),
        ),
        (
            "test/input.txt".to_owned(),
            include_str!("templates/c/input.txt").to_owned(),
        ),
        (
            "test/expected.txt".to_owned(),
            include_str!("templates/c/expected.txt").to_owned(),
        ),
    ];
    for (rel, text) in &files {
        let p = root.join(rel);
        if let Some(parent) = p.parent() {
            std::fs::create_dir_all(parent)
                .with_context(|| format!("cannot create {}", parent.display()))?;
        }
        std::fs::write(&p, text).with_context(|| format!("cannot write {}", p.display()))?;
    }
    let script = root.join("build.sh");
    make_executable(&script)?;

    let r = shell_word(&root.display().to_string());
    eprintln!(
        "created {} ({name}.c, build.sh, wit/filter.wit, test/input.txt, test/expected.txt)",
        root.display()
    );
    eprintln!(
        "  tools: cargo xtask install-tools (Debian's clang, lld, wasi-libc; wit-bindgen and \
         wasm-tools at the versions build.sh checks)"
    );
    eprintln!("  build: cd {r} && ./build.sh");
    // The test needs this binary: name it, in case it is not on PATH.
    match std::env::current_exe() {
        Ok(exe) => eprintln!(
            "  test:  cd {r} && KINESTHETIC={} ./build.sh test",
            shell_word(&exe.display().to_string())
        ),
        Err(_) => eprintln!("  test:  cd {r} && ./build.sh test"),
    }
    eprintln!("  run:   kinesthetic filter run {r}/build/{name}.wasm --param needle=error INPUT");
    Ok(ExitCode::SUCCESS)
}

/// Sets the owner's, group's and others' execute bits of `path`.
fn make_executable(path: &Path) -> anyhow::Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mut perm = std::fs::metadata(path)
            .with_context(|| format!("cannot read {}", path.display()))?
            .permissions();
        perm.set_mode(perm.mode() | 0o111);
        std::fs::set_permissions(path, perm)
            .with_context(|| format!("cannot make {} executable", path.display()))?;
    }
    #[cfg(not(unix))]
    let _ = path;
    Ok(())
}

/// `s` as one word for a POSIX shell: as is when it holds only characters
/// no shell treats specially, else in single quotes.
fn shell_word(s: &str) -> String {
    if !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "/._-+:@,=%".contains(c))
    {
        s.to_owned()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

/// Where `cargo xtask install-tools` puts the Python tools' binaries.
fn xtask_python_bin() -> String {
    format!("{}/python/bin", xtask_tools_dir())
}

/// Where `cargo xtask install-tools` puts the Python and JavaScript
/// toolchains (as xtask's `tools_dir`, written for a shell).
fn xtask_tools_dir() -> String {
    std::env::var("KINESTHETIC_TOOLS_DIR")
        .ok()
        .filter(|d| !d.is_empty())
        .unwrap_or_else(|| "~/.cache/kinesthetic-tools".to_owned())
}

/// A JavaScript filter: `app.js`, its native test, the component's entry
/// `component.js` and a `package.json`, filled from `templates/js/`, plus a
/// copy of the SDK's helper: componentize-js sees only the directory it
/// runs in, so the filter's directory must hold everything it imports.
/// Prints the commands that test, build and run it.
fn new_js(name: &str, dir: &Path, sdk: Option<PathBuf>) -> anyhow::Result<ExitCode> {
    check_name(name)?;
    let root = fresh_dir(dir, name)?;
    let sdk = sdk_dir(sdk)?;
    let helper_path = sdk.join("js/kinesthetic-filter.js");
    let helper = std::fs::read(&helper_path).with_context(|| {
        format!(
            "cannot read the SDK's JavaScript helper {}",
            helper_path.display()
        )
    })?;
    let wit = sdk.join("wit");
    let componentize = format!("{}/js/node_modules/.bin/componentize-js", xtask_tools_dir());
    let fill = |t: &str| {
        t.replace("@NAME@", name)
            .replace("@WIT@", &wit.display().to_string())
            .replace("@COMPONENTIZE@", &componentize)
    };
    std::fs::create_dir_all(&root).with_context(|| format!("cannot create {}", root.display()))?;
    for (file, text) in [
        ("app.js", include_str!("templates/js/app.js")),
        ("app.test.js", include_str!("templates/js/app.test.js")),
        ("component.js", include_str!("templates/js/component.js")),
        ("package.json", include_str!("templates/js/package.json")),
        (".gitignore", include_str!("templates/js/gitignore")),
    ] {
        let p = root.join(file);
        std::fs::write(&p, fill(text)).with_context(|| format!("cannot write {}", p.display()))?;
    }
    let p = root.join("kinesthetic-filter.js");
    std::fs::write(&p, helper).with_context(|| format!("cannot write {}", p.display()))?;
    let r = root.display();
    eprintln!(
        "created {r} (app.js, app.test.js, component.js, package.json, and kinesthetic-filter.js: \
         a copy of the SDK's helper, since componentize-js sees only this directory)"
    );
    eprintln!(
        "  tools: cargo xtask install-tools (componentize-js 0.23.0, in {}/js; Node.js from PATH)",
        xtask_tools_dir()
    );
    eprintln!("  test:  cd {r} && node --test");
    eprintln!(
        "  build: cd {r} && {componentize} component.js --wit {} --world-name filter \
         --disable stdio random clocks http fetch-event --out {name}.wasm",
        wit.display()
    );
    eprintln!("  run:   kinesthetic filter run {r}/{name}.wasm --param needle=error INPUT");
    Ok(ExitCode::SUCCESS)
}

/// `dir/name`, which must not exist yet.
fn fresh_dir(dir: &Path, name: &str) -> anyhow::Result<PathBuf> {
    let root = dir.join(name);
    if root.exists() {
        bail!(
            "{} already exists; choose another name or --dir",
            root.display()
        );
    }
    Ok(root)
}

/// The SDK directory, checked.
fn sdk_dir(sdk: Option<PathBuf>) -> anyhow::Result<PathBuf> {
    let sdk = match sdk {
        Some(p) => p,
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join("../filter-sdk"),
    };
    sdk.canonicalize()
        .with_context(|| format!("SDK not found at {} (pass --sdk PATH)", sdk.display()))
}

/// A filter's name: letters, digits, `-` and `_`, starting with a letter.
fn check_name(name: &str) -> anyhow::Result<()> {
    if name.is_empty()
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        || !name.starts_with(|c: char| c.is_ascii_alphabetic())
    {
        bail!("invalid name `{name}`: use letters, digits, `-` and `_`, starting with a letter");
    }
    Ok(())
}

/// Writes a new filter crate; returns its directory.
fn scaffold(name: &str, dir: &Path, sdk: Option<PathBuf>) -> anyhow::Result<PathBuf> {
    check_name(name)?;
    // Names cargo refuses too: a keyword is no crate name, and a crate named
    // like a crate it depends on shadows it (`export_filter!` expands to
    // `::core::…` and `::kinesthetic_filter::…` paths).
    const RESERVED: &[&str] = &[
        "core",
        "std",
        "alloc",
        "test",
        "proc_macro",
        "kinesthetic_filter",
        "wit_bindgen",
        "as",
        "async",
        "await",
        "break",
        "const",
        "continue",
        "crate",
        "dyn",
        "else",
        "enum",
        "extern",
        "false",
        "fn",
        "for",
        "gen",
        "if",
        "impl",
        "in",
        "let",
        "loop",
        "match",
        "mod",
        "move",
        "mut",
        "pub",
        "ref",
        "return",
        "self",
        "static",
        "struct",
        "super",
        "trait",
        "true",
        "try",
        "type",
        "unsafe",
        "use",
        "where",
        "while",
        "yield",
        "abstract",
        "become",
        "box",
        "do",
        "final",
        "macro",
        "override",
        "priv",
        "typeof",
        "unsized",
        "virtual",
    ];
    let ident = name.replace('-', "_");
    if RESERVED.contains(&ident.as_str()) {
        bail!(
            "invalid name `{name}`: it is a Rust keyword or the name of a crate the filter \
             uses; choose another"
        );
    }
    let root = fresh_dir(dir, name)?;
    let sdk = sdk_dir(sdk)?;
    let ty: String = ident
        .split('_')
        .map(|w| {
            let mut c = w.chars();
            c.next()
                .map(|f| f.to_ascii_uppercase().to_string() + c.as_str())
                .unwrap_or_default()
        })
        .collect();
    // The templates, with @NAME@, @IDENT@ (the crate as a Rust path),
    // @TYPE@ (the filter's type) and @SDK@ filled in.
    let fill = |t: &str| {
        t.replace("@NAME@", name)
            .replace("@IDENT@", &ident)
            .replace("@TYPE@", &ty)
            .replace("@SDK@", &sdk.display().to_string())
    };
    let files = [
        (
            "Cargo.toml",
            fill(include_str!("templates/rust/Cargo.toml")),
        ),
        (
            ".cargo/config.toml",
            fill(include_str!("templates/rust/cargo-config.toml")),
        ),
        (".gitignore", fill(include_str!("templates/rust/gitignore"))),
        ("src/lib.rs", fill(include_str!("templates/rust/lib.rs"))),
    ];
    for (rel, text) in files {
        let p = root.join(rel);
        if let Some(parent) = p.parent() {
            std::fs::create_dir_all(parent)
                .with_context(|| format!("cannot create {}", parent.display()))?;
        }
        std::fs::write(&p, text).with_context(|| format!("cannot write {}", p.display()))?;
    }
    Ok(root)
}
