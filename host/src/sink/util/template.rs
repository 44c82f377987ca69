//! Object key templates: `{prefix}/{stream}/{yyyy}/{MM}/{dd}/{HH}/…`.
//!
//! A key is a pure function of what an object holds (stream, shard, the
//! sequence range, the first event's receive time, the pipeline and the
//! filter), so writing the same object again lands on the same key.

use crate::event::{SequenceNumber, ShardId};

/// The placeholders a template may use.
pub const PLACEHOLDERS: &[&str] = &[
    "prefix",
    "stream",
    "shard",
    "first_seq",
    "last_seq",
    "pipeline",
    "filter",
    "yyyy",
    "MM",
    "dd",
    "HH",
    "mm",
    "ss",
];

#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Text(String),
    Var(&'static str),
}

/// A parsed template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyTemplate {
    parts: Vec<Part>,
}

/// What an object's key is made of.
#[derive(Debug, Clone)]
pub struct KeyParts<'a> {
    pub prefix: &'a str,
    pub stream: &'a str,
    pub shard: &'a ShardId,
    pub first_seq: &'a SequenceNumber,
    pub last_seq: &'a SequenceNumber,
    pub pipeline: &'a str,
    /// The filter's name, or `raw` for a pipeline without one.
    pub filter: &'a str,
    /// Receive time of the object's first event, ms since the Unix epoch.
    pub received_ms: i64,
}

impl KeyTemplate {
    /// Parses a template; the error names the bad placeholder.
    pub fn parse(text: &str) -> Result<Self, String> {
        let mut parts = Vec::new();
        let mut rest = text;
        while let Some(open) = rest.find('{') {
            if open > 0 {
                if rest[..open].contains('}') {
                    return Err(format!("a `}}` without its `{{` in {text:?}"));
                }
                parts.push(Part::Text(rest[..open].to_owned()));
            }
            let after = &rest[open + 1..];
            let close = after
                .find('}')
                .ok_or_else(|| format!("an unclosed `{{` in {text:?}"))?;
            let name = &after[..close];
            let var = PLACEHOLDERS.iter().find(|p| **p == name).ok_or_else(|| {
                format!(
                    "unknown placeholder {{{name}}} in {text:?}; known: {}",
                    PLACEHOLDERS
                        .iter()
                        .map(|p| format!("{{{p}}}"))
                        .collect::<Vec<_>>()
                        .join(" ")
                )
            })?;
            parts.push(Part::Var(var));
            rest = &after[close + 1..];
        }
        if rest.contains('}') {
            return Err(format!("a `}}` without its `{{` in {text:?}"));
        }
        if !rest.is_empty() {
            parts.push(Part::Text(rest.to_owned()));
        }
        let t = Self { parts };
        // Two objects of a shard must never share a key.
        for needed in ["shard", "first_seq"] {
            if !t.uses(needed) {
                return Err(format!(
                    "{text:?} does not use {{{needed}}}: two objects would get the same key"
                ));
            }
        }
        Ok(t)
    }

    pub fn uses(&self, name: &str) -> bool {
        self.parts
            .iter()
            .any(|p| matches!(p, Part::Var(v) if *v == name))
    }

    /// The key: empty path segments (an empty prefix) are dropped, so keys
    /// never start with `/` nor hold `//`.
    pub fn render(&self, k: &KeyParts<'_>) -> String {
        let (y, mo, d, h, mi, s) = civil(k.received_ms);
        let mut out = String::new();
        for p in &self.parts {
            match p {
                Part::Text(t) => out.push_str(t),
                Part::Var(v) => match *v {
                    "prefix" => out.push_str(k.prefix),
                    "stream" => out.push_str(k.stream),
                    "shard" => out.push_str(k.shard.as_str()),
                    "first_seq" => out.push_str(k.first_seq.as_str()),
                    "last_seq" => out.push_str(k.last_seq.as_str()),
                    "pipeline" => out.push_str(k.pipeline),
                    "filter" => out.push_str(k.filter),
                    "yyyy" => out.push_str(&format!("{y:04}")),
                    "MM" => out.push_str(&format!("{mo:02}")),
                    "dd" => out.push_str(&format!("{d:02}")),
                    "HH" => out.push_str(&format!("{h:02}")),
                    "mm" => out.push_str(&format!("{mi:02}")),
                    "ss" => out.push_str(&format!("{s:02}")),
                    _ => {}
                },
            }
        }
        out.split('/')
            .filter(|s| !s.is_empty())
            .collect::<Vec<_>>()
            .join("/")
    }
}

/// Renders the prefix setting, which may use `{pipeline}` and `{filter}`.
pub fn render_prefix(prefix: &str, pipeline: &str, filter: &str) -> String {
    prefix
        .replace("{pipeline}", pipeline)
        .replace("{filter}", filter)
}

/// UTC calendar fields of epoch milliseconds.
pub use crate::timefmt::civil;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_the_default_layout() {
        let t = KeyTemplate::parse(
            "{prefix}/{stream}/{yyyy}/{MM}/{dd}/{HH}/{stream}-{shard}-{first_seq}-{last_seq}.ndjson.gz",
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let shard = ShardId::new("shardId-000000000001");
        let (a, b) = (SequenceNumber::from_u128(5), SequenceNumber::from_u128(9));
        let parts = KeyParts {
            prefix: "",
            stream: "events",
            shard: &shard,
            first_seq: &a,
            last_seq: &b,
            pipeline: "raw",
            filter: "raw",
            // 2026-12-05T08:03:41.250Z
            received_ms: 1_796_457_821_250,
        };
        assert_eq!(
            t.render(&parts),
            "events/2026/12/05/08/events-shardId-000000000001-5-9.ndjson.gz"
        );
        let with_prefix = KeyParts {
            prefix: "archive/x",
            ..parts
        };
        assert!(t.render(&with_prefix).starts_with("archive/x/events/2026/"));
    }

    #[test]
    fn civil_dates_are_right_at_the_edges() {
        assert_eq!(civil(0), (1970, 1, 1, 0, 0, 0));
        assert_eq!(civil(951_782_400_000), (2000, 2, 29, 0, 0, 0));
        assert_eq!(civil(-1), (1969, 12, 31, 23, 59, 59));
        assert_eq!(civil(4_102_444_799_000), (2099, 12, 31, 23, 59, 59));
    }

    #[test]
    fn bad_templates_are_named() {
        for (t, want) in [
            ("{stream}/{shrd}-{first_seq}", "unknown placeholder {shrd}"),
            ("{stream}/{shard", "unclosed"),
            ("{shard}}-{first_seq}", "without its"),
            ("{stream}/{first_seq}", "does not use {shard}"),
            ("{stream}/{shard}", "does not use {first_seq}"),
        ] {
            let e = KeyTemplate::parse(t).err().unwrap_or_default();
            assert!(e.contains(want), "{t}: {e}");
        }
    }
}
