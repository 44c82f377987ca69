//! Kinesthetic's one integration-test binary: a module per area.
#![allow(clippy::print_stderr)] // tests print why they skip

mod filters {
    //! Paths of the example filters, built on demand by `tests/build.rs`.
    #![allow(dead_code, unreachable_pub)]
    include!(concat!(env!("OUT_DIR"), "/filters.rs"));
}

mod harness;
mod services;

mod config_cli;
mod consumer;
mod consumer_aws;
mod consumer_index;
mod consumer_process;
mod consumer_push;
mod consumer_rekey;
mod filter_bad_input;
mod filter_c;
mod filter_cli;
mod filter_examples;
mod filter_js;
mod filter_native_tests;
mod filter_python;
mod filter_registry;
mod filter_runtime;
mod filter_std;
mod intake;
mod intake_decode;
mod intake_hostile;
mod intake_kinesis;
mod kinesis_responses;
mod replay;
mod reshard_routing;
mod stream_cli;
mod stream_damage;
mod stream_kinesis;
mod stream_kpl;
mod stream_local;
