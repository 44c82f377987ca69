//! The HTTP intake: decode request bodies into events, stamp them, route
//! them to shards, pack them into KPL records and write them to the stream.

pub mod decode;
pub mod metrics;
pub mod producer;
pub mod route;
pub mod server;
pub mod spool;
pub mod stamp;
