//! Dead-letter entries: one JSON line per line (or record) that could not
//! be delivered, saying why, by which module, and where it came from.
//!
//! ```json
//! {"reason":"filter","error":"filter `f` (sha256 0a1b…): trapped: …",
//!  "pipeline":"p","filter":"f","module_sha256":"0a1b…","stream":"events",
//!  "shard":"shardId-000000000001","sequence":"1234","event_id":"…-…",
//!  "received_ms":1733390000000,"partition_key":"user-7","line":"…"}
//! ```
//!
//! `line` holds the event as text when it is UTF-8; otherwise `line_hex`
//! holds its bytes in hex. Nothing is dropped: the bytes are all there.

use serde::Serialize;

use crate::event::{SequenceNumber, ShardId, Stamp};

/// Why an entry is in the dead-letter sink.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Reason {
    /// The filter failed on this line (trap, deadline, memory, fuel,
    /// malformed answer, an error it returned) and isolation named it.
    Filter,
    /// The stream record could not be de-aggregated (a KPL record with a
    /// valid checksum and a broken body); `line_hex` holds the whole record.
    Undecodable,
    /// An http sink's receiver refused the batch the line was in (a 4xx
    /// other than 408 and 429), or it was not delivered within the sink's
    /// retry budget; `error` has the status and the start of the answer.
    Rejected,
}

/// One entry.
#[derive(Debug, Clone)]
pub struct Entry<'a> {
    pub reason: Reason,
    pub error: &'a str,
    pub pipeline: &'a str,
    pub filter: &'a str,
    pub module_sha256: Option<&'a str>,
    pub stream: &'a str,
    pub shard: &'a ShardId,
    pub sequence: &'a SequenceNumber,
    pub stamp: Option<Stamp>,
    pub partition_key: &'a [u8],
    pub line: &'a [u8],
    /// Whether isolation narrowed the failure down to this one line.
    pub isolated: bool,
}

#[derive(Serialize)]
struct Json<'a> {
    reason: Reason,
    error: &'a str,
    pipeline: &'a str,
    filter: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    module_sha256: Option<&'a str>,
    stream: &'a str,
    shard: &'a str,
    sequence: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    event_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    received_ms: Option<i64>,
    partition_key: std::borrow::Cow<'a, str>,
    isolated: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    line: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    line_hex: Option<String>,
}

impl Entry<'_> {
    /// The entry as one JSON line (without the newline).
    pub fn to_json(&self) -> Vec<u8> {
        let text = std::str::from_utf8(self.line).ok();
        let j = Json {
            reason: self.reason,
            error: self.error,
            pipeline: self.pipeline,
            filter: self.filter,
            module_sha256: self.module_sha256,
            stream: self.stream,
            shard: self.shard.as_str(),
            sequence: self.sequence.as_str(),
            event_id: self.stamp.map(|s| s.id.to_string()),
            received_ms: self.stamp.map(|s| s.received_ms),
            partition_key: String::from_utf8_lossy(self.partition_key),
            isolated: self.isolated,
            line: text,
            line_hex: if text.is_none() {
                Some(hex::encode(self.line))
            } else {
                None
            },
        };
        // Serialising plain strings and numbers cannot fail.
        serde_json::to_vec(&j).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_and_bytes_are_both_kept() {
        let shard = ShardId::new("shardId-000000000001");
        let seq = SequenceNumber::from_u128(7);
        let e = Entry {
            reason: Reason::Filter,
            error: "trapped: boom \"x\"",
            pipeline: "p",
            filter: "f",
            module_sha256: Some("ab"),
            stream: "s",
            shard: &shard,
            sequence: &seq,
            stamp: None,
            partition_key: b"k",
            line: b"{\"a\":1}",
            isolated: true,
        };
        let v: serde_json::Value =
            serde_json::from_slice(&e.to_json()).unwrap_or(serde_json::Value::Null);
        assert_eq!(v["line"], "{\"a\":1}");
        assert_eq!(v["error"], "trapped: boom \"x\"");
        assert_eq!(v["reason"], "filter");
        let bin = Entry {
            line: b"\xff\x00",
            ..e
        };
        let v: serde_json::Value =
            serde_json::from_slice(&bin.to_json()).unwrap_or(serde_json::Value::Null);
        assert_eq!(v["line_hex"], "ff00");
        assert!(v.get("line").is_none());
    }
}
