//! The embedded stream log: the default backend (no AWS account needed) and
//! the intake's spool. A directory per stream, a directory per shard of
//! append-only, CRC-framed segment files, Kinesis-like sequence numbers and
//! iterators, fsync group commit, retention by age and size, and recovery
//! that truncates a torn tail.
//!
//! ```text
//! DIR/.lock                          one writer per directory
//! DIR/STREAM/meta.json               shards, hash ranges, parents, ends
//! DIR/STREAM/shardId-000000000001/   00000000000000000000.seg …
//! ```

mod admin;
mod log;
mod meta;
mod read;
mod recovery;
mod segment;
mod writer;

pub use log::{LocalLog, LocalOptions, MAX_SHARDS};
