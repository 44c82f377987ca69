//! Kinesthetic: event streams through Amazon Kinesis, filtered by sandboxed
//! WebAssembly. See `DESIGN.md` for the shape of the code.
pub mod admin;
pub mod app;
mod aws;
pub mod cli;
pub mod config;
pub mod consumer;
pub mod datagen;
pub mod event;
pub mod filter;
mod fsutil;
pub mod intake;
pub mod malloc;
pub mod net;
pub mod pipeline;
pub mod retry;
pub mod sink;
pub mod stream;
pub mod telemetry;
pub mod timefmt;
