//! Build automation shared by `cargo xtask`, `tests/build.rs` and the
//! benches: building the example filters (Rust, C, Python and JavaScript)
//! into Wasm components.
//!
//! Standard library only, so that the build scripts that depend on this
//! crate cost next to nothing to compile.

use std::ffi::{OsStr, OsString};
use std::fmt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

/// Pinned versions of the C toolchain's tools from crates.io.
pub const WIT_BINDGEN_VERSION: &str = "0.63.0";
pub const WASM_TOOLS_VERSION: &str = "1.263.0";

/// Debian packages the C filters need: the compiler, the Wasm linker, the C
/// library for `wasm32-wasi` and the compiler's runtime builtins for it.
pub const APT_PACKAGES: &[&str] = &["clang", "lld", "wasi-libc", "libclang-rt-dev-wasm32"];

/// The Python toolchain, pinned: componentize-py builds a Python filter
/// into a component (with `--stub-wasi`: no WASI imports); pytest runs its
/// native tests. Installed from PyPI into [`python_tools_dir`].
pub const COMPONENTIZE_PY_VERSION: &str = "0.25.1";
pub const PYTEST_VERSION: &str = "8.3.4";

/// The JavaScript toolchain, pinned: componentize-js builds a JavaScript
/// filter into a component. Installed from npm into [`js_tools_dir`] with
/// `npm ci` from `xtask/js/package-lock.json` (which also holds
/// `@bytecodealliance/preview2-shim` at 0.25.0 through `overrides`).
pub const COMPONENTIZE_JS_VERSION: &str = "0.23.0";

/// The WASI features componentize-js links by default, all disabled: a
/// filter imports nothing of WASI (checked by the tests).
pub const COMPONENTIZE_JS_DISABLE: &[&str] = &["stdio", "random", "clocks", "http", "fetch-event"];

/// The Rust target of the example filters.
pub const RUST_TARGET: &str = "wasm32-wasip2";

const INSTALL_TOOLS: &str = "run `cargo xtask install-tools` (or .ci/run)";

/// The language a filter is written in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Language {
    Rust,
    C,
    Python,
    JavaScript,
}

impl Language {
    pub fn as_str(self) -> &'static str {
        match self {
            Language::Rust => "rust",
            Language::C => "c",
            Language::Python => "python",
            Language::JavaScript => "js",
        }
    }
}

impl fmt::Display for Language {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.as_str())
    }
}

/// One built filter component.
#[derive(Debug, Clone)]
pub struct BuiltFilter {
    /// Name with dashes, as in `errors-only`; the file is `NAME.wasm`.
    pub name: String,
    /// Absolute path of the component.
    pub path: PathBuf,
    pub language: Language,
}

/// The repository root (xtask lives in `ROOT/xtask`).
pub fn root() -> PathBuf {
    // Prefer the manifest directory cargo gives the running process (the
    // xtask binary, a build script or a bench of a member crate; every member
    // sits one level below the root). The path compiled in is only a
    // fallback: with a build cache shared between clones it can name a clone
    // that has since been deleted.
    let is_root = |p: &Path| p.join("Cargo.toml").is_file() && p.join("example-filters").is_dir();
    std::env::var_os("CARGO_MANIFEST_DIR")
        .map(PathBuf::from)
        .and_then(|dir| dir.parent().map(Path::to_path_buf))
        .filter(|p| is_root(p))
        .or_else(|| {
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .parent()
                .map(Path::to_path_buf)
        })
        .unwrap_or_else(|| PathBuf::from("."))
}

/// The root workspace's target directory: `$CARGO_TARGET_DIR`, else
/// `ROOT/target`.
pub fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .filter(|d| !d.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| root().join("target"))
}

/// Where the example filters' own cargo workspace builds (Wasm and native):
/// a directory of its own beside the root workspace's builds, so the nested
/// build never waits on the outer build's lock.
pub fn example_filters_target_dir() -> PathBuf {
    target_dir().join("example-filters")
}

/// The files and directories the example filters are built from, for
/// `cargo:rerun-if-changed`. Lists sources, never build output, so a build
/// inside `example-filters/` does not make every later build start over.
pub fn filter_sources() -> Vec<PathBuf> {
    let root = root();
    let examples = root.join("example-filters");
    let mut paths = vec![
        root.join("wit"),
        root.join("filter-sdk/Cargo.toml"),
        root.join("filter-sdk/src"),
        root.join("filter-sdk/wit"),
        examples.join("Cargo.toml"),
        examples.join("Cargo.lock"),
        examples.join(".cargo/config.toml"),
    ];
    for name in rust_members().unwrap_or_default() {
        paths.push(examples.join(&name).join("Cargo.toml"));
        paths.push(examples.join(&name).join("src"));
    }
    paths.push(examples.join("c"));
    paths.push(root.join("filter-sdk/python"));
    paths.push(examples.join("python"));
    for (_, dir) in python_filters() {
        paths.push(dir.join("app.py"));
    }
    paths.push(js_helper_dir());
    paths.push(examples.join("js"));
    paths.push(js_toolchain_manifest_dir());
    for (_, dir) in js_filters() {
        paths.push(dir.join(JS_ENTRY));
        paths.push(dir.join("app.js"));
    }
    for (name, dir) in c_filters() {
        paths.push(dir.join(format!("{name}.c")));
    }
    paths
}

/// An example filter that was not built, and why.
#[derive(Debug, Clone)]
pub struct Skipped {
    pub name: String,
    pub language: Language,
    pub reason: String,
}

/// CI as runners set it: `true`, `1`, `yes` (any case).
pub fn in_ci() -> bool {
    std::env::var("CI")
        .is_ok_and(|v| matches!(v.trim().to_ascii_lowercase().as_str(), "true" | "1" | "yes"))
}

/// Builds every example filter, Rust and C, and copies the components to
/// `out_dir/NAME.wasm`. The error says what failed, with the tool's output,
/// and how to install a missing tool. Where the C toolchain is missing, the
/// C filters are skipped with a line on stderr saying so — except in CI
/// (`CI=true`), where that is an error.
pub fn build_filters(out_dir: &Path) -> Result<Vec<BuiltFilter>, String> {
    let (built, skipped) = build_filters_with_skips(out_dir)?;
    for s in &skipped {
        #[allow(clippy::print_stderr)]
        {
            eprintln!(
                "skipping the {} filter `{}`: {}",
                s.language, s.name, s.reason
            );
        }
    }
    Ok(built)
}

/// [`build_filters`], returning what was skipped instead of reporting it.
pub fn build_filters_with_skips(
    out_dir: &Path,
) -> Result<(Vec<BuiltFilter>, Vec<Skipped>), String> {
    std::fs::create_dir_all(out_dir)
        .map_err(|e| format!("cannot create {}: {e}", out_dir.display()))?;
    let out_dir = std::path::absolute(out_dir)
        .map_err(|e| format!("cannot resolve {}: {e}", out_dir.display()))?;
    // Check the C tools first: a missing one should not wait for the
    // (longer) Rust build to be reported.
    let c = c_filters();
    let c_tools = match CTools::find(&c) {
        Ok(t) => t,
        Err(e) if !in_ci() => {
            let skipped = c
                .into_iter()
                .map(|(name, _)| Skipped {
                    name,
                    language: Language::C,
                    reason: e.clone(),
                })
                .collect();
            let mut built = build_rust(&out_dir)?;
            let mut skipped: Vec<Skipped> = skipped;
            build_interpreted(&out_dir, &mut built, &mut skipped)?;
            return Ok((built, skipped));
        }
        Err(e) => return Err(format!("{e} (CI=true: the C filter must be built)")),
    };
    let mut built = build_rust(&out_dir)?;
    if let Some(tools) = c_tools {
        built.extend(build_c(&out_dir, &tools)?);
    }
    let mut skipped = Vec::new();
    build_interpreted(&out_dir, &mut built, &mut skipped)?;
    Ok((built, skipped))
}

/// Builds the Python and the JavaScript filters, each with its toolchain
/// from `cargo xtask install-tools`. Where a toolchain is missing, its
/// filters are skipped with the reason — except in CI (`CI=true`), where that
/// is an error.
fn build_interpreted(
    out_dir: &Path,
    built: &mut Vec<BuiltFilter>,
    skipped: &mut Vec<Skipped>,
) -> Result<(), String> {
    let py = python_filters();
    if !py.is_empty() {
        match componentize_py() {
            Ok(tool) => built.extend(build_python(out_dir, &tool, &py)?),
            Err(e) if !in_ci() => skipped.extend(skips(&py, "-py", Language::Python, &e)),
            Err(e) => return Err(format!("{e} (CI=true: the Python filters must be built)")),
        }
    }
    let js = js_filters();
    if !js.is_empty() {
        match componentize_js() {
            Ok(tools) => built.extend(build_js(out_dir, &tools, &js)?),
            Err(e) if !in_ci() => skipped.extend(skips(&js, "-js", Language::JavaScript, &e)),
            Err(e) => {
                return Err(format!(
                    "{e} (CI=true: the JavaScript filters must be built)"
                ));
            }
        }
    }
    Ok(())
}

/// The filters of one language, skipped for `reason`.
fn skips(
    filters: &[(String, PathBuf)],
    suffix: &str,
    language: Language,
    reason: &str,
) -> Vec<Skipped> {
    filters
        .iter()
        .map(|(name, _)| Skipped {
            name: format!("{name}{suffix}"),
            language,
            reason: reason.to_owned(),
        })
        .collect()
}

/// Adds the Rust target the filters need when rustup lacks it (a fresh
/// machine has only the host's).
pub fn ensure_rust_target() -> Result<(), String> {
    let Ok(installed) = Command::new("rustup")
        .args(["target", "list", "--installed"])
        .output()
    else {
        // No rustup (a distribution's Rust): cargo says what is missing.
        return Ok(());
    };
    if String::from_utf8_lossy(&installed.stdout)
        .lines()
        .any(|t| t.trim() == RUST_TARGET)
    {
        return Ok(());
    }
    #[allow(clippy::print_stderr)]
    {
        eprintln!("adding the Rust target {RUST_TARGET} (rustup target add {RUST_TARGET})");
    }
    let out = clean_command("rustup")
        .args(["target", "add", RUST_TARGET])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .output()
        .map_err(|e| format!("cannot run rustup: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "`rustup target add {RUST_TARGET}` failed ({}); its messages are above",
            out.status
        ))
    }
}

/// A command for a nested cargo (or any tool) with the variables that an
/// enclosing cargo build sets for build scripts and tests removed: with
/// them the nested build would take the outer crate's flags (`RUSTFLAGS`,
/// `CARGO_ENCODED_RUSTFLAGS`), join its jobserver (`CARGO_MAKEFLAGS`) or
/// believe it is the outer package. The user's own settings for reaching
/// registries (`CARGO_HOME`, `CARGO_NET_*`, `CARGO_HTTP_*`, `CARGO_REGISTRIES_*`,
/// `CARGO_REGISTRY_*`) and terminal output (`CARGO_TERM_*`) are kept.
pub fn clean_command(program: impl AsRef<OsStr>) -> Command {
    let mut c = Command::new(program);
    for (key, _) in std::env::vars_os() {
        if let Some(k) = key.to_str()
            && is_outer_build_var(k)
        {
            c.env_remove(k);
        }
    }
    c
}

fn is_outer_build_var(k: &str) -> bool {
    const KEEP: &[&str] = &[
        "CARGO_HOME",
        "CARGO_NET_",
        "CARGO_HTTP_",
        "CARGO_REGISTRIES_",
        "CARGO_REGISTRY_",
        "CARGO_TERM_",
    ];
    if k.starts_with("CARGO") {
        return !KEEP.iter().any(|p| k.starts_with(p));
    }
    k.starts_with("RUSTC")
        || k.starts_with("RUSTDOC")
        || k.starts_with("DEP_")
        || k.starts_with("__CARGO")
        || matches!(
            k,
            "RUSTFLAGS"
                | "OUT_DIR"
                | "TARGET"
                | "HOST"
                | "OPT_LEVEL"
                | "PROFILE"
                | "DEBUG"
                | "NUM_JOBS"
                | "MAKEFLAGS"
                | "MFLAGS"
        )
}

/// The first `name` on `PATH`, else in cargo's bin directory (where
/// `cargo install` puts tools, and which a build script's `PATH` may lack).
pub fn find_tool(name: &str) -> Option<PathBuf> {
    let mut dirs: Vec<PathBuf> = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect())
        .unwrap_or_default();
    if let Some(home) = std::env::var_os("CARGO_HOME") {
        dirs.push(PathBuf::from(home).join("bin"));
    }
    if let Some(home) = std::env::var_os("HOME") {
        dirs.push(PathBuf::from(home).join(".cargo/bin"));
    }
    dirs.into_iter().map(|d| d.join(name)).find(|p| p.is_file())
}

/// `TOOL --version`'s first line, if the tool runs.
pub fn tool_version(tool: &Path) -> Option<String> {
    let out = Command::new(tool).arg("--version").output().ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    Some(text.lines().next().unwrap_or_default().trim().to_owned())
}

/// A pinned tool from crates.io, checked: found and at its version.
fn pinned_tool(name: &str, krate: &str, version: &str) -> Result<PathBuf, String> {
    let install = format!(
        "{INSTALL_TOOLS}, or `cargo install --locked {krate}@{version}` (puts it in ~/.cargo/bin)"
    );
    let path = find_tool(name).ok_or_else(|| format!("{name} not found: {install}"))?;
    match tool_version(&path) {
        Some(v) if v.split_whitespace().any(|w| w == version) => Ok(path),
        found => Err(format!(
            "{} is {}, not the pinned {version}: {install}",
            path.display(),
            found.as_deref().unwrap_or("not runnable"),
        )),
    }
}

/// A tool from Debian's packages.
fn apt_tool(name: &str) -> Result<PathBuf, String> {
    find_tool(name).ok_or_else(|| {
        format!(
            "{name} not found: {INSTALL_TOOLS}, or `apt-get install {}`",
            APT_PACKAGES.join(" ")
        )
    })
}

/// Runs `cmd` with its output captured; on failure the error holds it.
fn run(cmd: &mut Command, what: &str) -> Result<Output, String> {
    let program = cmd.get_program().to_string_lossy().into_owned();
    let out = cmd
        .output()
        .map_err(|e| format!("{what}: cannot run {program}: {e}"))?;
    if out.status.success() {
        Ok(out)
    } else {
        Err(format!(
            "{what} failed ({}): {program}\n{}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

fn copy(from: &Path, to: &Path) -> Result<(), String> {
    std::fs::copy(from, to)
        .map(drop)
        .map_err(|e| format!("cannot copy {} to {}: {e}", from.display(), to.display()))
}

// ---- Rust --------------------------------------------------------------

fn build_rust(out_dir: &Path) -> Result<Vec<BuiltFilter>, String> {
    ensure_rust_target()?;
    let examples = root().join("example-filters");
    let target = example_filters_target_dir();
    let cargo: OsString = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = clean_command(&cargo);
    cmd
        // From the example workspace, so that its `.cargo/config.toml`
        // (simd128, stack size) applies: cargo reads config from the current
        // directory, not from the manifest's.
        .current_dir(&examples)
        .args([
            "build",
            "--release",
            "--target",
            RUST_TARGET,
            "--manifest-path",
        ])
        .arg(examples.join("Cargo.toml"))
        .env("CARGO_TARGET_DIR", &target)
        // cargo's progress and errors go to our stderr (a build script's is
        // shown when it fails); its stdout must not reach a build script's
        // stdout, where cargo would read it as instructions.
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    let out = cmd
        .output()
        .map_err(|e| format!("cannot run cargo ({}): {e}", cargo.to_string_lossy()))?;
    if !out.status.success() {
        return Err(format!(
            "building the Rust example filters failed ({}); cargo's messages are above. \
             If it says the `{RUST_TARGET}` target may not be installed: \
             `rustup target add {RUST_TARGET}` ({INSTALL_TOOLS})",
            out.status
        ));
    }
    let mut built = Vec::new();
    for name in rust_members()? {
        let file = target
            .join(RUST_TARGET)
            .join("release")
            .join(format!("{}.wasm", name.replace('-', "_")));
        let dest = out_dir.join(format!("{name}.wasm"));
        copy(&file, &dest)?;
        built.push(BuiltFilter {
            name,
            path: dest,
            language: Language::Rust,
        });
    }
    Ok(built)
}

/// Builds one Rust example filter with extra `rustflags` (after the example
/// workspace's own), for a bench that compares a build setting. It builds in
/// a target directory of its own, `example-filters-TAG`, so the regular
/// build's cache is untouched, and returns the component's path.
pub fn build_rust_variant(name: &str, tag: &str, rustflags: &[String]) -> Result<PathBuf, String> {
    if !rust_members()?.iter().any(|m| m == name) {
        return Err(format!("`{name}` is not a Rust example filter"));
    }
    let examples = root().join("example-filters");
    let target = target_dir().join(format!("example-filters-{tag}"));
    let cargo: OsString = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    // Arrays given with `--config` are appended to the config files' arrays,
    // so simd128 and the stack size still apply.
    let quoted: Vec<String> = rustflags.iter().map(|f| format!("{f:?}")).collect();
    let config = format!("target.{RUST_TARGET}.rustflags=[{}]", quoted.join(","));
    let out = clean_command(&cargo)
        .current_dir(&examples)
        .args(["build", "--release", "--target", RUST_TARGET, "-p", name])
        .arg("--config")
        .arg(&config)
        .arg("--manifest-path")
        .arg(examples.join("Cargo.toml"))
        .env("CARGO_TARGET_DIR", &target)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .output()
        .map_err(|e| format!("cannot run cargo ({}): {e}", cargo.to_string_lossy()))?;
    if !out.status.success() {
        return Err(format!(
            "building `{name}` with {config} failed ({}); cargo's messages are above",
            out.status
        ));
    }
    Ok(target
        .join(RUST_TARGET)
        .join("release")
        .join(format!("{}.wasm", name.replace('-', "_"))))
}

/// Crate names (= directories) in the example workspace's `members = [...]`.
fn rust_members() -> Result<Vec<String>, String> {
    let manifest = root().join("example-filters/Cargo.toml");
    let text = std::fs::read_to_string(&manifest)
        .map_err(|e| format!("cannot read {}: {e}", manifest.display()))?;
    let list = text
        .lines()
        .map(str::trim_start)
        .find(|l| l.starts_with("members"))
        .map(|l| l.to_owned())
        .ok_or("no `members = [...]` line in example-filters/Cargo.toml")?;
    let inner = list
        .split_once('[')
        .and_then(|(_, rest)| rest.split_once(']'))
        .map(|(inner, _)| inner)
        .ok_or("example-filters/Cargo.toml: keep `members = [...]` on one line")?;
    Ok(inner
        .split(',')
        .map(|s| s.trim().trim_matches('"').to_owned())
        .filter(|s| !s.is_empty())
        .collect())
}

// ---- C -----------------------------------------------------------------

/// The C filters: every `example-filters/c/NAME/` holding `NAME.c`.
fn c_filters() -> Vec<(String, PathBuf)> {
    let Ok(entries) = std::fs::read_dir(root().join("example-filters/c")) else {
        return Vec::new();
    };
    let mut found: Vec<(String, PathBuf)> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter_map(|dir| {
            let name = dir.file_name()?.to_str()?.to_owned();
            dir.join(format!("{name}.c"))
                .is_file()
                .then_some((name, dir))
        })
        .collect();
    found.sort();
    found
}

/// The tools the C filters need, found and checked.
struct CTools {
    wit_bindgen: PathBuf,
    wasm_tools: PathBuf,
    clang: PathBuf,
}

impl CTools {
    /// `None` when there is no C filter to build.
    fn find(filters: &[(String, PathBuf)]) -> Result<Option<Self>, String> {
        if filters.is_empty() {
            return Ok(None);
        }
        Self::locate().map(Some)
    }

    fn locate() -> Result<Self, String> {
        let clang = apt_tool("clang")?;
        apt_tool("wasm-ld")?;
        Ok(CTools {
            wit_bindgen: pinned_tool("wit-bindgen", "wit-bindgen-cli", WIT_BINDGEN_VERSION)?,
            wasm_tools: pinned_tool("wasm-tools", "wasm-tools", WASM_TOOLS_VERSION)?,
            clang,
        })
    }
}

/// Whether the C toolchain is here, checked as for the C example filters:
/// clang and wasm-ld, and wit-bindgen and wasm-tools at their pinned
/// versions. The error names what is missing and how to install it.
pub fn check_c_tools() -> Result<(), String> {
    CTools::locate().map(drop)
}

/// Builds each C filter with the recipe of `shared/TOOLCHAINS.md`: bindings
/// generated from `wit/` by `wit-bindgen c` into the build directory (never
/// into the source tree), Debian's clang for `wasm32-wasi` as a reactor, and
/// `wasm-tools component new` (no adapter: the filters use no stdio).
fn build_c(out_dir: &Path, tools: &CTools) -> Result<Vec<BuiltFilter>, String> {
    let CTools {
        wit_bindgen,
        wasm_tools,
        clang,
    } = tools;

    // One copy of the bindings serves every C filter.
    let build = target_dir().join("c-filters");
    let gen_dir = build.join("gen");
    std::fs::create_dir_all(&gen_dir)
        .map_err(|e| format!("cannot create {}: {e}", gen_dir.display()))?;
    run(
        Command::new(wit_bindgen)
            .arg("c")
            .arg(root().join("wit"))
            .args(["--world", "filter", "--out-dir"])
            .arg(&gen_dir),
        "generating the C bindings (wit-bindgen c)",
    )?;

    let mut built = Vec::new();
    for (name, dir) in c_filters() {
        let core = build.join(format!("{name}.core.wasm"));
        run(
            Command::new(clang)
                .args([
                    "--target=wasm32-wasi",
                    "-mexec-model=reactor",
                    "-O2",
                    "-msimd128",
                    "-Wall",
                    "-Wextra",
                    "-Werror",
                    "-Wl,--strip-all",
                ])
                .arg("-I")
                .arg(&gen_dir)
                .arg("-o")
                .arg(&core)
                .arg(dir.join(format!("{name}.c")))
                .arg(gen_dir.join("filter.c"))
                .arg(gen_dir.join("filter_component_type.o")),
            &format!("compiling the C filter `{name}`"),
        )
        .map_err(|e| with_c_hint(&e))?;
        let dest = out_dir.join(format!("{name}.wasm"));
        run(
            Command::new(wasm_tools)
                .args(["component", "new"])
                .arg(&core)
                .arg("-o")
                .arg(&dest),
            &format!("making a component of the C filter `{name}`"),
        )?;
        built.push(BuiltFilter {
            name,
            path: dest,
            language: Language::C,
        });
    }
    Ok(built)
}

/// Adds the likely cure to clang's error when a Debian package is missing.
fn with_c_hint(error: &str) -> String {
    let apt = format!("apt-get install {}", APT_PACKAGES.join(" "));
    let hint = if error.contains("wasm-ld") {
        Some(format!("the Wasm linker is missing: {apt}"))
    } else if error.contains("stdlib.h") || error.contains("string.h") || error.contains("-lc") {
        Some(format!("wasi-libc is missing: {apt}"))
    } else if error.contains("libclang_rt.builtins") {
        Some(format!("clang's wasm32 runtime is missing: {apt}"))
    } else {
        None
    };
    match hint {
        Some(h) => format!("{error}\nhint: {h} ({INSTALL_TOOLS})"),
        None => error.to_owned(),
    }
}

/// Where `cargo xtask install-tools` puts the Python toolchain: a virtual
/// environment with componentize-py and pytest, pinned, under
/// `$KINESTHETIC_TOOLS_DIR` (default `~/.cache/kinesthetic-tools`).
pub fn python_tools_dir() -> PathBuf {
    tools_dir().join("python")
}

/// `$KINESTHETIC_TOOLS_DIR`, default `~/.cache/kinesthetic-tools`: where
/// `cargo xtask install-tools` puts the Python and JavaScript toolchains.
pub fn tools_dir() -> PathBuf {
    std::env::var_os("KINESTHETIC_TOOLS_DIR")
        .filter(|d| !d.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            let home = std::env::var_os("HOME").map_or_else(|| PathBuf::from("."), PathBuf::from);
            home.join(".cache/kinesthetic-tools")
        })
}

/// The Python interpreter of [`python_tools_dir`], when installed.
pub fn tools_python() -> Option<PathBuf> {
    let p = python_tools_dir().join("bin/python");
    p.is_file().then_some(p)
}

/// The SDK's Python helper (`kinesthetic_filter.py`) directory.
pub fn python_helper_dir() -> PathBuf {
    root().join("filter-sdk/python")
}

/// The Python example filters: `example-filters/python/NAME/app.py`.
pub fn python_filters() -> Vec<(String, PathBuf)> {
    let Ok(entries) = std::fs::read_dir(root().join("example-filters/python")) else {
        return Vec::new();
    };
    let mut found: Vec<(String, PathBuf)> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter_map(|dir| {
            let name = dir.file_name()?.to_str()?.to_owned();
            dir.join("app.py").is_file().then_some((name, dir))
        })
        .collect();
    found.sort();
    found
}

/// componentize-py at the pinned version: the installed tools' first,
/// else on `PATH`.
pub fn componentize_py() -> Result<PathBuf, String> {
    let install =
        format!("{INSTALL_TOOLS}, or `pip install componentize-py=={COMPONENTIZE_PY_VERSION}`");
    let path = Some(python_tools_dir().join("bin/componentize-py"))
        .filter(|p| p.is_file())
        .or_else(|| find_tool("componentize-py"))
        .ok_or_else(|| format!("componentize-py not found: {install}"))?;
    match tool_version(&path) {
        Some(v) if v.split_whitespace().any(|w| w == COMPONENTIZE_PY_VERSION) => Ok(path),
        Some(v) => Err(format!(
            "{} is {v}, not {COMPONENTIZE_PY_VERSION}: {install}",
            path.display()
        )),
        None => Err(format!("{} does not run: {install}", path.display())),
    }
}

/// Builds each Python filter with componentize-py (`--stub-wasi`: the
/// component imports nothing of WASI) into `out_dir/NAME-py.wasm`, with the
/// SDK's helper on its path.
fn build_python(
    out_dir: &Path,
    tool: &Path,
    filters: &[(String, PathBuf)],
) -> Result<Vec<BuiltFilter>, String> {
    let mut built = Vec::new();
    for (name, dir) in filters {
        let dest = out_dir.join(format!("{name}-py.wasm"));
        run(
            Command::new(tool)
                .arg("-d")
                .arg(root().join("wit"))
                .args(["-w", "filter", "componentize", "--stub-wasi", "-p"])
                .arg(python_helper_dir())
                .arg("-p")
                .arg(dir)
                .arg("app")
                .arg("-o")
                .arg(&dest),
            &format!("building the Python filter `{name}` (componentize-py)"),
        )?;
        built.push(BuiltFilter {
            name: format!("{name}-py"),
            path: dest,
            language: Language::Python,
        });
    }
    Ok(built)
}

// ---- JavaScript ----------------------------------------------------------

/// The file componentize-js builds in a JavaScript filter's directory: it
/// imports the world's `log` (which only the Wasm build can resolve) and
/// exports the app's `init` and `filter`; the native tests import `app.js`.
pub const JS_ENTRY: &str = "component.js";

/// In [`js_tools_dir`]: the lock file `npm ci` last installed from,
/// written once it succeeded.
pub const JS_INSTALLED_LOCK: &str = "installed.package-lock.json";

/// Where `cargo xtask install-tools` puts the JavaScript toolchain:
/// `node_modules` with componentize-js, installed by `npm ci` from
/// [`js_toolchain_manifest_dir`]'s lock file.
pub fn js_tools_dir() -> PathBuf {
    tools_dir().join("js")
}

/// The toolchain's `package.json` and `package-lock.json` in the repository.
pub fn js_toolchain_manifest_dir() -> PathBuf {
    root().join("xtask/js")
}

/// The SDK's JavaScript helper (`kinesthetic-filter.js`) directory.
pub fn js_helper_dir() -> PathBuf {
    root().join("filter-sdk/js")
}

/// The JavaScript example filters: `example-filters/js/NAME/component.js`.
pub fn js_filters() -> Vec<(String, PathBuf)> {
    let Ok(entries) = std::fs::read_dir(root().join("example-filters/js")) else {
        return Vec::new();
    };
    let mut found: Vec<(String, PathBuf)> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter_map(|dir| {
            let name = dir.file_name()?.to_str()?.to_owned();
            dir.join(JS_ENTRY).is_file().then_some((name, dir))
        })
        .collect();
    found.sort();
    found
}

/// The JavaScript toolchain, found and checked.
#[derive(Debug, Clone)]
pub struct JsTools {
    /// Node.js, which runs componentize-js (and the native tests).
    pub node: PathBuf,
    /// componentize-js's command-line entry (`src/cli.js`).
    pub componentize: PathBuf,
}

impl JsTools {
    /// The `componentize-js` command for `entry` (relative to the directory
    /// it runs in, which must hold every file the entry imports) writing
    /// `out`: no WASI features, no AOT (it downloads a tool at build time).
    pub fn command(&self, entry: &Path, wit: &Path, out: &Path) -> Command {
        let mut cmd = Command::new(&self.node);
        cmd.arg(&self.componentize)
            .arg(entry)
            .arg("--wit")
            .arg(wit)
            .args(["--world-name", "filter", "--disable"])
            .args(COMPONENTIZE_JS_DISABLE)
            .arg("--out")
            .arg(out);
        cmd
    }
}

/// Node.js on `PATH`, and componentize-js as `cargo xtask install-tools`
/// installed it: at the pinned version, from the repository's lock file
/// (a changed pin means installing again).
pub fn componentize_js() -> Result<JsTools, String> {
    let install = format!(
        "{INSTALL_TOOLS}, which runs npm ci in {}",
        js_tools_dir().display()
    );
    let node = find_tool("node").ok_or_else(|| {
        "node not found: the JavaScript filters need Node.js (with npm) on PATH".to_owned()
    })?;
    let dir = js_tools_dir();
    let package = dir.join("node_modules/@bytecodealliance/componentize-js");
    let componentize = package.join("src/cli.js");
    if !componentize.is_file() {
        return Err(format!("componentize-js not found: {install}"));
    }
    let manifest = package.join("package.json");
    let version = std::fs::read_to_string(&manifest)
        .ok()
        .and_then(|t| json_string_field(&t, "version"));
    if version.as_deref() != Some(COMPONENTIZE_JS_VERSION) {
        return Err(format!(
            "{} is version {}, not {COMPONENTIZE_JS_VERSION}: {install}",
            package.display(),
            version.as_deref().unwrap_or("unknown"),
        ));
    }
    let lock = js_toolchain_manifest_dir().join("package-lock.json");
    let wanted =
        std::fs::read(&lock).map_err(|e| format!("cannot read {}: {e}", lock.display()))?;
    match std::fs::read(dir.join(JS_INSTALLED_LOCK)) {
        Ok(installed) if installed == wanted => Ok(JsTools { node, componentize }),
        _ => Err(format!(
            "{} was not installed from xtask/js/package-lock.json as it is now: {install}",
            dir.display()
        )),
    }
}

/// The string value of the first member `key` in a JSON text (enough for a
/// package.json's `name` or `version`: no escapes, any spacing).
pub fn json_string_field(text: &str, key: &str) -> Option<String> {
    let quoted = format!("\"{key}\"");
    let mut rest = text;
    while let Some(i) = rest.find(&quoted) {
        rest = &rest[i + quoted.len()..];
        let after = rest.trim_start();
        if let Some(v) = after.strip_prefix(':') {
            let v = v.trim_start().strip_prefix('"')?;
            return v.find('"').map(|end| v[..end].to_owned());
        }
    }
    None
}

/// Builds each JavaScript filter with componentize-js into
/// `out_dir/NAME-js.wasm`. componentize-js sees only the tree below the
/// directory it runs in (its runtime's file system at build time), so it
/// runs at the repository's root, where both the filter and the SDK's helper
/// are.
fn build_js(
    out_dir: &Path,
    tools: &JsTools,
    filters: &[(String, PathBuf)],
) -> Result<Vec<BuiltFilter>, String> {
    let root = root();
    let mut built = Vec::new();
    for (name, dir) in filters {
        let entry = dir.join(JS_ENTRY);
        let relative = entry.strip_prefix(&root).map_err(|_| {
            format!(
                "{} is not below the repository's root {}",
                entry.display(),
                root.display()
            )
        })?;
        let dest = out_dir.join(format!("{name}-js.wasm"));
        run(
            tools
                .command(relative, &root.join("wit"), &dest)
                .current_dir(&root),
            &format!("building the JavaScript filter `{name}` (componentize-js)"),
        )?;
        built.push(BuiltFilter {
            name: format!("{name}-js"),
            path: dest,
            language: Language::JavaScript,
        });
    }
    Ok(built)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outer_build_variables_are_removed_and_user_settings_kept() {
        for k in [
            "CARGO",
            "CARGO_MANIFEST_DIR",
            "CARGO_PKG_NAME",
            "CARGO_ENCODED_RUSTFLAGS",
            "CARGO_MAKEFLAGS",
            "CARGO_CFG_TARGET_OS",
            "CARGO_FEATURE_STD",
            "CARGO_TARGET_DIR",
            "CARGO_BUILD_TARGET",
            "RUSTFLAGS",
            "RUSTC",
            "RUSTC_WRAPPER",
            "RUSTDOCFLAGS",
            "OUT_DIR",
            "TARGET",
            "DEP_Z_INCLUDE",
            "NUM_JOBS",
        ] {
            assert!(is_outer_build_var(k), "{k} should be removed");
        }
        for k in [
            "CARGO_HOME",
            "CARGO_NET_OFFLINE",
            "CARGO_HTTP_CAINFO",
            "CARGO_TERM_COLOR",
            "RUSTUP_TOOLCHAIN",
            "PATH",
            "HOME",
        ] {
            assert!(!is_outer_build_var(k), "{k} should be kept");
        }
    }

    #[test]
    fn a_variant_of_an_unknown_filter_is_refused_before_building() {
        match build_rust_variant("no-such-filter", "t", &[]) {
            Err(err) => assert!(
                err.contains("`no-such-filter` is not a Rust example filter"),
                "{err}"
            ),
            Ok(path) => panic!("built {}", path.display()),
        }
    }

    #[test]
    fn the_example_workspace_lists_its_members() {
        let members = rust_members().unwrap_or_else(|e| panic!("{e}"));
        assert!(members.iter().any(|m| m == "errors-only"), "{members:?}");
        assert!(members.iter().all(|m| !m.contains('"')), "{members:?}");
    }

    #[test]
    fn sources_name_no_build_output() {
        let sources = filter_sources();
        assert!(sources.iter().any(|p| p.ends_with("c/contains/contains.c")));
        assert!(sources.iter().all(|p| !p.ends_with("target")));
        assert!(
            sources
                .iter()
                .any(|p| p.ends_with("js/errors-only/component.js"))
        );
        assert!(sources.iter().any(|p| p.ends_with("filter-sdk/js")));
        assert!(sources.iter().all(|p| !p.ends_with("node_modules")));
    }

    #[test]
    fn the_js_toolchain_is_pinned_in_its_manifest() {
        let dir = js_toolchain_manifest_dir();
        let manifest = std::fs::read_to_string(dir.join("package.json")).unwrap_or_default();
        assert!(
            manifest.contains(&format!(
                "\"@bytecodealliance/componentize-js\": \"{COMPONENTIZE_JS_VERSION}\""
            )),
            "{manifest}"
        );
        let lock = std::fs::read_to_string(dir.join("package-lock.json")).unwrap_or_default();
        let entry = lock
            .split("\"node_modules/@bytecodealliance/componentize-js\"")
            .nth(1)
            .unwrap_or_default();
        assert_eq!(
            json_string_field(entry, "version").as_deref(),
            Some(COMPONENTIZE_JS_VERSION)
        );
    }
}
