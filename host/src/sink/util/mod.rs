//! What the sinks share: key templates and compression.

pub mod compress;
pub mod template;
