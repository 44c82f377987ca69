//! Build automation shared by `cargo xtask` and `tests/build.rs`: building
//! the example filters (Rust and C) into Wasm components.

use std::path::{Path, PathBuf};
use std::process::Command;

/// Versions of the C toolchain's tools from crates.io.
pub const WIT_BINDGEN_VERSION: &str = "0.63.0";
pub const WASM_TOOLS_VERSION: &str = "1.263.0";

/// One built filter component.
#[derive(Debug, Clone)]
pub struct BuiltFilter {
    /// Name with dashes, as in `errors-only`.
    pub name: String,
    pub path: PathBuf,
    pub language: &'static str,
}

/// The repository root (xtask lives in `ROOT/xtask`).
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."))
}

/// The build directory for artefacts outside the root workspace's own.
pub fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root().join("target"))
}

/// A command with the variables of an enclosing cargo build removed, so a
/// nested build (e.g. from a build script) starts clean.
pub fn clean_command(program: impl AsRef<std::ffi::OsStr>) -> Command {
    let mut c = Command::new(program);
    for (k, _) in std::env::vars_os() {
        let Some(k) = k.to_str() else { continue };
        let outer = (k.starts_with("CARGO_") && k != "CARGO_HOME" && k != "CARGO_TARGET_DIR")
            || k.starts_with("RUSTC")
            || k.starts_with("DEP_")
            || matches!(
                k,
                "RUSTFLAGS"
                    | "RUSTDOCFLAGS"
                    | "OUT_DIR"
                    | "TARGET"
                    | "HOST"
                    | "OPT_LEVEL"
                    | "PROFILE"
                    | "DEBUG"
                    | "NUM_JOBS"
            )
            || k.starts_with("__CARGO");
        if outer {
            c.env_remove(k);
        }
    }
    c
}

fn run(cmd: &mut Command, what: &str, hint: &str) -> Result<(), String> {
    let out = cmd.output().map_err(|e| {
        if e.kind() == std::io::ErrorKind::NotFound {
            format!(
                "{what}: `{}` not found: {hint}",
                cmd.get_program().to_string_lossy()
            )
        } else {
            format!(
                "{what}: cannot run `{}`: {e}",
                cmd.get_program().to_string_lossy()
            )
        }
    })?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{what} failed ({}):\n{}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

const INSTALL_HINT: &str = "run `cargo xtask install-tools` (or .ci/run)";

/// Builds every example filter and copies the components to
/// `out_dir/NAME.wasm`.
pub fn build_filters(out_dir: &Path) -> Result<Vec<BuiltFilter>, String> {
    std::fs::create_dir_all(out_dir)
        .map_err(|e| format!("cannot create {}: {e}", out_dir.display()))?;
    let mut built = build_rust(out_dir)?;
    built.extend(build_c(out_dir)?);
    Ok(built)
}

fn build_rust(out_dir: &Path) -> Result<Vec<BuiltFilter>, String> {
    let root = root();
    let target = target_dir().join("example-filters");
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let manifest = root.join("example-filters/Cargo.toml");
    run(
        clean_command(&cargo)
            // Run from the example workspace so its `.cargo/config.toml`
            // (simd128, stack size) applies: cargo reads config from the
            // current directory, not from the manifest's.
            .current_dir(root.join("example-filters"))
            .args([
                "build",
                "--release",
                "--quiet",
                "--target",
                "wasm32-wasip2",
                "--manifest-path",
            ])
            .arg(&manifest)
            .env("CARGO_TARGET_DIR", &target),
        "building the Rust example filters",
        "install Rust with rustup and `rustup target add wasm32-wasip2`",
    )?;
    let mut built = Vec::new();
    for name in rust_members(&manifest)? {
        let file = target
            .join("wasm32-wasip2/release")
            .join(format!("{}.wasm", name.replace('-', "_")));
        let dest = out_dir.join(format!("{name}.wasm"));
        std::fs::copy(&file, &dest)
            .map_err(|e| format!("cannot copy {} to {}: {e}", file.display(), dest.display()))?;
        built.push(BuiltFilter {
            name,
            path: dest,
            language: "rust",
        });
    }
    Ok(built)
}

/// Crate names listed in the example workspace's `members = [...]`.
fn rust_members(manifest: &Path) -> Result<Vec<String>, String> {
    let text = std::fs::read_to_string(manifest)
        .map_err(|e| format!("cannot read {}: {e}", manifest.display()))?;
    let start = text
        .find("members")
        .and_then(|i| text[i..].find('[').map(|j| i + j + 1))
        .ok_or("no `members` in example-filters/Cargo.toml")?;
    let end = text[start..]
        .find(']')
        .map(|j| start + j)
        .ok_or("unterminated `members` list")?;
    Ok(text[start..end]
        .split(',')
        .map(|s| s.trim().trim_matches('"').to_owned())
        .filter(|s| !s.is_empty())
        .collect())
}

/// Builds each `example-filters/c/NAME/NAME.c` into a component.
fn build_c(out_dir: &Path) -> Result<Vec<BuiltFilter>, String> {
    let root = root();
    let c_dir = root.join("example-filters/c");
    let Ok(entries) = std::fs::read_dir(&c_dir) else {
        return Ok(Vec::new());
    };
    let mut dirs: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_dir())
        .collect();
    dirs.sort();
    let mut built = Vec::new();
    for dir in dirs {
        let Some(name) = dir.file_name().map(|n| n.to_string_lossy().into_owned()) else {
            continue;
        };
        let build = target_dir().join("c-filters").join(&name);
        let gen_dir = build.join("gen");
        std::fs::create_dir_all(&gen_dir)
            .map_err(|e| format!("cannot create {}: {e}", gen_dir.display()))?;
        run(
            Command::new("wit-bindgen")
                .arg("c")
                .arg(root.join("wit"))
                .args(["--world", "filter", "--out-dir"])
                .arg(&gen_dir),
            &format!("generating C bindings for `{name}`"),
            INSTALL_HINT,
        )?;
        let core = build.join(format!("{name}.core.wasm"));
        run(
            Command::new("clang")
                .args([
                    "--target=wasm32-wasi",
                    "-mexec-model=reactor",
                    "-O2",
                    "-Wall",
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
            "install Debian's clang, lld and wasi-libc: run `cargo xtask install-tools`",
        )?;
        let dest = out_dir.join(format!("{name}.wasm"));
        run(
            Command::new("wasm-tools")
                .args(["component", "new"])
                .arg(&core)
                .arg("-o")
                .arg(&dest),
            &format!("making a component of `{name}`"),
            INSTALL_HINT,
        )?;
        built.push(BuiltFilter {
            name,
            path: dest,
            language: "c",
        });
    }
    Ok(built)
}
