//! Kinesthetic's one integration-test binary: a module per area.

mod filters {
    //! Paths of the example filters, built on demand by `tests/build.rs`.
    #![allow(dead_code)]
    include!(concat!(env!("OUT_DIR"), "/filters.rs"));
}

mod harness;

mod filter_bad_input;
mod filter_cli;
mod filter_examples;
mod filter_registry;
mod filter_runtime;
