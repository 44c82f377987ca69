//! Write [Kinesthetic](https://github.com/) filters in Rust: one trait impl,
//! one macro call.
//!
//! A filter is a WebAssembly component that the host calls once per batch of
//! lines, each batch on a fresh instance. This crate hides the component
//! bindings: you implement [`Filter`] — `init` from the pipeline's
//! parameters, then `line` for every line — and export it with
//! [`export_filter!`]. The loop over lines runs inside the guest, so the Wasm
//! boundary is crossed once per batch.
//!
//! ```
//! use kinesthetic_filter::{export_filter, Emit, Filter, Line, Params};
//!
//! /// Keeps the lines that contain the `needle` parameter.
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
//!         } // a line that is neither kept nor replaced is dropped
//!     }
//! }
//!
//! export_filter!(Needle);
//!
//! // Natively, with no Wasm runtime:
//! let out = kinesthetic_filter::testing::run::<Needle>(
//!     &[("needle", "err")],
//!     &[b"an error", b"all good"],
//! ).unwrap();
//! assert_eq!(out.len(), 1);
//! assert_eq!(out[0].bytes, b"an error");
//! ```
//!
//! Build with `cargo build --release --target wasm32-wasip2` (add
//! `-C target-feature=+simd128` for the fast JSON helpers) and run the
//! `.wasm` with `kinesthetic filter run`.

extern crate self as kinesthetic_filter;

mod emit;
pub mod json;
#[cfg(test)]
mod json_tests;
mod line;
pub mod num;
mod params;
pub mod testing;

pub use emit::Emit;
pub use line::{Context, Line};
pub use params::Params;
/// The runtime of the generated bindings, re-exported so that a filter crate
/// depends on this SDK alone.
pub use wit_bindgen;

/// A filter: built once per batch from its parameters, then called for each
/// line of the batch in order.
pub trait Filter: Sized + 'static {
    /// Builds the filter from the pipeline's parameters. An error stops the
    /// batch; its message reaches the user (name the bad parameter).
    fn init(params: &Params) -> Result<Self, String>;

    /// Called once per batch before its lines.
    fn begin_batch(&mut self, _context: &Context<'_>) {}

    /// Decides one line: call [`Emit::keep`] or [`Emit::replace`] to emit it
    /// (it is dropped otherwise), and optionally [`Emit::set_key`] /
    /// [`Emit::set_route`].
    fn line(&mut self, line: &Line<'_>, emit: &mut Emit<'_>);
}

/// Severity of a [`log`] message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    Trace,
    Debug,
    Info,
    Warn,
    Error,
}

/// Logs through the host (rate-limited there). In native tests the message
/// is recorded by [`testing`].
pub fn log(level: Level, message: &str) {
    #[cfg(target_arch = "wasm32")]
    {
        use __private::kinesthetic::filter::types::Level as L;
        let l = match level {
            Level::Trace => L::Trace,
            Level::Debug => L::Debug,
            Level::Info => L::Info,
            Level::Warn => L::Warn,
            Level::Error => L::Error,
        };
        __private::log(l, message);
    }
    #[cfg(not(target_arch = "wasm32"))]
    testing::record_log(level, message);
}

/// Exports a [`Filter`] implementation as the component's `init` and
/// `filter` functions. Call it once, at the crate's top level.
#[macro_export]
macro_rules! export_filter {
    ($filter:ty) => {
        #[doc(hidden)]
        pub struct __KinestheticFilterExport;

        impl $crate::__private::Guest for __KinestheticFilterExport {
            fn init(params: ::std::vec::Vec<(::std::string::String, ::std::string::String)>)
                -> ::std::result::Result<(), ::std::string::String> {
                $crate::__private::init::<$filter>(params)
            }

            fn filter(batch: $crate::__private::Batch)
                -> ::std::result::Result<$crate::__private::Output, ::std::string::String> {
                $crate::__private::filter::<$filter>(batch)
            }
        }

        #[cfg(target_arch = "wasm32")]
        $crate::__private::__export_filter_world!(__KinestheticFilterExport with_types_in $crate::__private);
    };
}

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

    pub use crate::emit::{chaos_bad_index, filter, init, process};
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_sdk_carries_the_same_wit_as_the_workspace() {
        let here = include_str!("../wit/filter.wit");
        let root =
            std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../wit/filter.wit"));
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
