//! Kinesthetic: event streams through Amazon Kinesis, filtered by sandboxed
//! WebAssembly. See `DESIGN.md` for the shape of the code.
pub mod app;
pub mod config;
pub mod datagen;
pub mod event;
pub mod filter;
pub mod intake;
pub mod stream;
pub mod telemetry;
