//! Which toolchain built a filter component, read from what toolchains
//! leave in it (the `producers` custom sections of the component and its
//! core modules, and the modules' names), for `filter check` to name it and
//! explain the imports it found.

use std::collections::BTreeMap;

use wasmparser::{KnownCustom, Name, Parser, Payload};

/// A filter's toolchain as far as its custom sections tell.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Toolchain {
    /// "Rust", "C", "Python", "JavaScript".
    pub language: &'static str,
    /// The tool that made it a component, with its version when recorded
    /// (e.g. "ComponentizeJS 0.23.0", "wit-bindgen-c 0.63.0").
    pub tool: String,
}

impl Toolchain {
    /// What this toolchain's WASI imports are, and what to do about them:
    /// every toolchain here can build a filter that imports no WASI at all.
    pub fn about_wasi(&self) -> &'static str {
        match self.language {
            "Rust" => {
                "Rust's standard library for wasm32-wasip2 imports them to link (wasi:cli, \
                 wasi:io, and clocks or random where the filter uses them); each traps if \
                 called"
            }
            "C" => {
                "wasi-libc imports WASI only for what uses it (stdio, time, files): build \
                 without stdio, as the C recipe does, for a component that imports none"
            }
            "Python" => {
                "componentize-py imports wasi:cli/environment and wasi:random and calls them \
                 at start unless built with --stub-wasi: rebuild with --stub-wasi"
            }
            "JavaScript" => {
                "componentize-js imports WASI for the features it keeps: build with \
                 `-d stdio random clocks http fetch-event` for a component that imports none"
            }
            _ => "",
        }
    }
}

impl std::fmt::Display for Toolchain {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({})", self.language, self.tool)
    }
}

/// The toolchain that built `bytes` (a component), when it left a sign of
/// itself; `None` for one it did not, or for bytes that do not parse.
pub fn identify(bytes: &[u8]) -> Option<Toolchain> {
    // tool → version, and languages, over the component and every module
    // inside it; names of the core modules.
    let mut processed_by: BTreeMap<String, String> = BTreeMap::new();
    let mut languages: Vec<String> = Vec::new();
    let mut modules: Vec<String> = Vec::new();
    for payload in Parser::new(0).parse_all(bytes) {
        let Ok(Payload::CustomSection(c)) = payload else {
            continue;
        };
        match c.as_known() {
            KnownCustom::Producers(fields) => {
                for field in fields.into_iter().flatten() {
                    for v in field.values.into_iter().flatten() {
                        match field.name {
                            "processed-by" => {
                                processed_by.insert(v.name.to_owned(), v.version.to_owned());
                            }
                            "language" => languages.push(v.name.to_owned()),
                            _ => {}
                        }
                    }
                }
            }
            KnownCustom::Name(names) => {
                for n in names.into_iter().flatten() {
                    if let Name::Module { name, .. } = n {
                        modules.push(name.to_owned());
                    }
                }
            }
            _ => {}
        }
    }
    let tool = |name: &str| {
        processed_by
            .get(name)
            .map(|v| format!("{name} {v}").trim_end().to_owned())
    };
    // The embedded interpreters are built from Rust and C themselves: look
    // for them first.
    if let Some(t) = tool("ComponentizeJS") {
        return Some(Toolchain {
            language: "JavaScript",
            tool: t,
        });
    }
    if languages.iter().any(|l| l == "JavaScript") {
        return Some(Toolchain {
            language: "JavaScript",
            tool: "componentize-js".into(),
        });
    }
    if modules
        .iter()
        .any(|m| m.starts_with("libpython") || m.starts_with("componentize_py"))
    {
        return Some(Toolchain {
            language: "Python",
            tool: "componentize-py".into(),
        });
    }
    if processed_by.contains_key("wit-bindgen-rust") {
        // No version: the standard library's own bindings may carry an
        // older one than the filter's.
        return Some(Toolchain {
            language: "Rust",
            tool: "wit-bindgen-rust".into(),
        });
    }
    if languages.iter().any(|l| l == "Rust") || processed_by.contains_key("rustc") {
        return Some(Toolchain {
            language: "Rust",
            tool: tool("rustc").unwrap_or_else(|| "rustc".into()),
        });
    }
    if let Some(t) = tool("wit-bindgen-c") {
        return Some(Toolchain {
            language: "C",
            tool: t,
        });
    }
    if languages.iter().any(|l| l.starts_with("C")) {
        return Some(Toolchain {
            language: "C",
            tool: tool("clang").unwrap_or_else(|| "clang".into()),
        });
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A core module with a producers section and a module name, in the
    /// text format; the real components are identified in the test crate.
    fn module(producers: &str, name: &str) -> Vec<u8> {
        let wat = format!("(module ${name} (@producers {producers}))");
        wat::parse_str(&wat).unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn each_language_is_named_by_its_signs() {
        let js = module(
            r#"(language "JavaScript" "") (processed-by "ComponentizeJS" "0.23.0")"#,
            "m",
        );
        assert_eq!(
            identify(&js).map(|t| t.to_string()),
            Some("JavaScript (ComponentizeJS 0.23.0)".into())
        );
        let py = module(r#"(language "C11" "")"#, "libpython3.14.so");
        assert_eq!(identify(&py).map(|t| t.language), Some("Python"));
        let rust = module(r#"(processed-by "wit-bindgen-rust" "0.45.0")"#, "m");
        assert_eq!(
            identify(&rust).map(|t| t.to_string()),
            Some("Rust (wit-bindgen-rust)".into())
        );
        let c = module(r#"(processed-by "wit-bindgen-c" "0.63.0")"#, "m");
        assert_eq!(identify(&c).map(|t| t.language), Some("C"));
        assert_eq!(identify(&module(r#"(sdk "x" "1")"#, "m")), None);
        assert_eq!(identify(b"not wasm"), None);
    }
}
