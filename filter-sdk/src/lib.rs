//! Write Kinesthetic filters in Rust: one trait impl, one macro call.
//!
//! A filter is a WebAssembly component that the host calls once per batch of
//! lines, each batch on a fresh instance. This crate hides the component
//! bindings: implement [`Filter`] (`init` from the pipeline's parameters,
//! then `line` for every line) and export it with [`export_filter!`]. The
//! loop over the lines runs inside the guest, so the Wasm boundary is
//! crossed once per batch; a kept line goes back as its index, not a copy.
//!
//! ```
//! use kinesthetic_filter::{Emit, Filter, Line, Params, export_filter};
//!
//! /// Keeps the lines that contain the parameter `needle`.
//! pub struct Needle(Vec<u8>);
//!
//! impl Filter for Needle {
//!     fn init(params: &Params) -> Result<Self, String> {
//!         Ok(Needle(params.require("needle")?.as_bytes().to_vec()))
//!     }
//!
//!     fn line(&mut self, line: &Line<'_>, emit: &mut Emit<'_>) {
//!         if line.bytes().windows(self.0.len()).any(|w| w == self.0) {
//!             emit.keep(); // by index: the host keeps its own copy
//!         } // a line neither kept nor replaced is dropped
//!     }
//! }
//!
//! export_filter!(Needle);
//!
//! // Natively, in `cargo test`, without a Wasm runtime:
//! let out = kinesthetic_filter::testing::run::<Needle>(
//!     &[("needle", "err")],
//!     &[b"an error", b"all good"],
//! );
//! assert_eq!(out.map(|o| o[0].bytes.clone()), Ok(b"an error".to_vec()));
//! let err = kinesthetic_filter::testing::run::<Needle>(&[], &[]).err();
//! assert_eq!(err.as_deref(), Some("missing parameter `needle`"));
//! ```
//!
//! Build the component with `cargo build --release --target wasm32-wasip2`
//! in a crate with `crate-type = ["cdylib", "rlib"]` (add
//! `-C target-feature=+simd128` for the fastest [`json`] helpers) and try it
//! with `kinesthetic filter run`.
//!
//! Besides the trait: [`json`] walks, validates and queries JSON object
//! lines without copying, [`num`] parses numbers from bytes, [`log`] logs
//! through the host, and [`testing`] runs a filter natively.

extern crate self as kinesthetic_filter;

mod emit;
pub mod json;
#[cfg(test)]
mod json_tests;
mod line;
pub mod num;
mod params;
pub mod rules;
pub mod testing;
#[cfg(all(target_arch = "wasm32", target_os = "wasi"))]
mod wasi_stubs;

pub use emit::Emit;
pub use line::{Context, Line};
pub use params::Params;
/// The runtime of the generated bindings, re-exported so that a filter crate
/// depends on this SDK alone.
pub use wit_bindgen;

/// A filter: built from its parameters on every fresh instance, then called
/// for each line of a batch, in order.
///
/// Implement it and export the type with [`export_filter!`].
pub trait Filter: Sized {
    /// Builds the filter from the pipeline's parameters. An error stops the
    /// batch and its message reaches the user: name the parameter and say
    /// what was expected (see [`Params::require`] and [`Params::parse`]).
    fn init(params: &Params) -> Result<Self, String>;

    /// Decides one line: call [`Emit::keep`] or [`Emit::replace`] to emit
    /// it (it is dropped otherwise), and optionally [`Emit::set_key`] and
    /// [`Emit::set_route`].
    fn line(&mut self, line: &Line<'_>, emit: &mut Emit<'_>);

    /// Called once per batch, before its lines.
    fn begin_batch(&mut self, _context: &Context<'_>) {}
}

/// Severity of a [`log`] message, least severe first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Level {
    Trace,
    Debug,
    Info,
    Warn,
    Error,
}

/// Logs `message` through the host, which rate-limits it and tags it with
/// the filter's name. Natively (in `cargo test`) the message is captured by
/// the [`testing`] harness instead.
pub fn log(level: Level, message: &str) {
    #[cfg(target_arch = "wasm32")]
    {
        use __private::kinesthetic::filter::types::Level as L;
        let level = match level {
            Level::Trace => L::Trace,
            Level::Debug => L::Debug,
            Level::Info => L::Info,
            Level::Warn => L::Warn,
            Level::Error => L::Error,
        };
        __private::log(level, message);
    }
    #[cfg(not(target_arch = "wasm32"))]
    testing::record_log(level, message);
}

/// Exports a [`Filter`] implementation as the component's `init` and
/// `filter` functions. Call it once, at the top level of a `cdylib` crate.
///
/// On targets other than `wasm32` it exports nothing, so the same crate
/// builds natively for its unit tests.
#[macro_export]
macro_rules! export_filter {
    ($filter:ty $(,)?) => {
        #[doc(hidden)]
        #[allow(dead_code)]
        pub struct __KinestheticFilterExport;

        ::std::thread_local! {
            /// The instance's filter, built by `init`.
            static __KINESTHETIC_FILTER: ::core::cell::RefCell<::core::option::Option<$filter>> =
                const { ::core::cell::RefCell::new(::core::option::Option::None) };
        }

        impl $crate::__private::Guest for __KinestheticFilterExport {
            fn init(
                params: ::std::vec::Vec<(::std::string::String, ::std::string::String)>,
            ) -> ::core::result::Result<(), ::std::string::String> {
                __KINESTHETIC_FILTER.with(|slot| $crate::__private::init::<$filter>(slot, params))
            }

            fn filter(
                batch: $crate::__private::Batch,
            ) -> ::core::result::Result<$crate::__private::Output, ::std::string::String> {
                __KINESTHETIC_FILTER.with(|slot| $crate::__private::filter::<$filter>(slot, batch))
            }
        }

        #[cfg(target_arch = "wasm32")]
        $crate::__private::__export_filter_world!(
            __KinestheticFilterExport with_types_in $crate::__private
        );
    };
}

/// The generated bindings and the glue `export_filter!` expands to. Not a
/// public API.
#[doc(hidden)]
pub mod __private {
    #![allow(missing_docs, unreachable_pub, unsafe_code, clippy::all)]
    wit_bindgen::generate!({
        path: "wit",
        world: "filter",
        runtime_path: "::kinesthetic_filter::wit_bindgen::rt",
        pub_export_macro: true,
        export_macro_name: "__export_filter_world",
        default_bindings_module: "::kinesthetic_filter::__private",
    });

    pub use crate::emit::{chaos_bad_index, filter, init};
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_sdk_carries_the_same_wit_as_the_workspace() {
        let here = include_str!("../wit/filter.wit");
        // The manifest directory at run time: the compiled-in one can name
        // another clone when a build cache is shared.
        let dir = std::env::var_os("CARGO_MANIFEST_DIR")
            .unwrap_or_else(|| env!("CARGO_MANIFEST_DIR").into());
        let root = std::fs::read_to_string(std::path::Path::new(&dir).join("../wit/filter.wit"));
        match root {
            Ok(root) => assert!(
                root == here,
                "filter-sdk/wit/filter.wit differs from wit/filter.wit: copy it \
                 (cp wit/filter.wit filter-sdk/wit/filter.wit)"
            ),
            Err(e) => panic!("cannot read wit/filter.wit: {e}"),
        }
    }
}
