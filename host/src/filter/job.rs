//! What goes into a filter job and what comes out of it.

use std::ops::Range;

use super::bindings::kinesthetic::filter::types as wit;
use crate::event::{Batch, BatchContext, RecordSpan, packed_item};

/// A batch prepared for filter jobs. Built from a [`Batch`] without copying
/// the lines; jobs borrow it, so one input can run through several filters
/// (or be re-run by [`isolate`](super::isolate)).
pub struct Input {
    pub(crate) wit: wit::Batch,
    /// The typed context the WIT strings were made from.
    context: BatchContext,
    /// The batch's stream records (host side only; filters see lines).
    records: Vec<RecordSpan>,
}

impl std::fmt::Debug for Input {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Input")
            .field("lines", &self.len())
            .field("bytes", &self.byte_len())
            .finish()
    }
}

impl From<Batch> for Input {
    fn from(b: Batch) -> Self {
        let c = &b.context;
        Self {
            wit: wit::Batch {
                context: wit::Context {
                    stream: c.stream.clone(),
                    shard: c.shard.to_string(),
                    first_sequence: c.first_sequence.to_string(),
                    last_sequence: c.last_sequence.to_string(),
                },
                lines: wit::Packed {
                    data: b.data,
                    ends: b.ends,
                },
                listeners: b.listeners,
                counters: b.counters,
                received_ms: b.received_ms,
                keys: wit::Packed {
                    data: b.keys,
                    ends: b.key_ends,
                },
            },
            context: b.context,
            records: b.records,
        }
    }
}

impl From<Input> for Batch {
    fn from(i: Input) -> Self {
        let w = i.wit;
        Batch {
            context: i.context,
            data: w.lines.data,
            ends: w.lines.ends,
            listeners: w.listeners,
            counters: w.counters,
            received_ms: w.received_ms,
            keys: w.keys.data,
            key_ends: w.keys.ends,
            records: i.records,
        }
    }
}

impl Input {
    pub fn len(&self) -> usize {
        self.wit.lines.ends.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn byte_len(&self) -> usize {
        self.wit.lines.data.len()
    }

    pub fn line(&self, i: usize) -> &[u8] {
        packed_item(&self.wit.lines.data, &self.wit.lines.ends, i)
    }

    pub fn key(&self, i: usize) -> &[u8] {
        packed_item(&self.wit.keys.data, &self.wit.keys.ends, i)
    }

    /// The stamp of line `i`.
    pub fn stamp(&self, i: usize) -> crate::event::Stamp {
        let w = &self.wit;
        crate::event::Stamp {
            id: crate::event::EventId {
                listener: w.listeners[i],
                counter: w.counters[i],
            },
            received_ms: w.received_ms[i],
        }
    }

    pub fn context(&self) -> &BatchContext {
        &self.context
    }

    /// The stream records the lines came from (see [`Batch::records`]).
    pub fn records(&self) -> &[RecordSpan] {
        &self.records
    }

    /// A new input holding lines `range` (copies them; no record spans).
    pub(crate) fn slice(&self, range: Range<usize>) -> Input {
        let mut b = Batch::new(self.context.clone());
        for i in range {
            // A slice is never larger than its source, so it fits.
            let _ = b.push(self.line(i), self.stamp(i), self.key(i));
        }
        Input::from(b)
    }
}

/// A filter's validated answer for one input.
#[derive(Debug, Clone)]
pub struct Output {
    pub(crate) wit: wit::Output,
    /// SHA-256 (hex) of the module that produced this output.
    pub module_sha256: std::sync::Arc<str>,
    /// Name of the filter that produced this output.
    pub filter: std::sync::Arc<str>,
}

/// One emitted line, borrowed from the input and the output.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OutLine<'a> {
    /// Index of the input line this comes from.
    pub index: u32,
    /// The line's bytes (the input's, unless replaced).
    pub bytes: &'a [u8],
    /// Whether the filter replaced the line's bytes.
    pub replaced: bool,
    /// Partition key: the filter's new key, or the input's.
    pub key: &'a [u8],
    /// Whether the filter set a new key.
    pub rekeyed: bool,
    /// Route name, if the filter set one.
    pub route: Option<&'a str>,
}

impl Output {
    /// Number of emitted lines.
    pub fn len(&self) -> usize {
        self.wit.emit.len()
    }

    pub fn is_empty(&self) -> bool {
        self.wit.emit.is_empty()
    }

    /// The emitted lines in order. `input` must be the input of this job.
    pub fn lines<'a>(&'a self, input: &'a Input) -> impl Iterator<Item = OutLine<'a>> + 'a {
        let mut rep = Cursor::new(&self.wit.replace);
        let mut key = Cursor::new(&self.wit.rekey);
        let mut route = Cursor::new(&self.wit.route);
        self.wit.emit.iter().map(move |&index| {
            let i = index as usize;
            let new_bytes = rep.take(index);
            let new_key = key.take(index);
            let new_route = route.take(index);
            OutLine {
                index,
                bytes: new_bytes.unwrap_or_else(|| input.line(i)),
                replaced: new_bytes.is_some(),
                key: new_key.unwrap_or_else(|| input.key(i)),
                rekeyed: new_key.is_some(),
                // Validated as UTF-8 in `validate`.
                route: new_route.and_then(|r| std::str::from_utf8(r).ok()),
            }
        })
    }

    /// Checks the answer against the world's contract for an input of `n` lines.
    pub(crate) fn validate(out: &wit::Output, n: usize) -> Result<(), String> {
        ascending(&out.emit, n, "emit")?;
        for (name, p) in [
            ("replace", &out.replace),
            ("rekey", &out.rekey),
            ("route", &out.route),
        ] {
            ascending(&p.lines, n, name)?;
            if p.values.ends.len() != p.lines.len() {
                return Err(format!(
                    "`{name}` has {} lines but {} values",
                    p.lines.len(),
                    p.values.ends.len()
                ));
            }
            let mut prev = 0u32;
            for &e in &p.values.ends {
                if e < prev || e as usize > p.values.data.len() {
                    return Err(format!(
                        "`{name}` value offsets are not ascending within its {} data bytes",
                        p.values.data.len()
                    ));
                }
                prev = e;
            }
            if prev as usize != p.values.data.len() {
                return Err(format!("`{name}` has data past its last value"));
            }
            // Every patched line must be emitted.
            let mut emit = out.emit.iter().peekable();
            for &l in &p.lines {
                while emit.next_if(|&&e| e < l).is_some() {}
                if emit.peek() != Some(&&l) {
                    return Err(format!("`{name}` patches line {l}, which is not emitted"));
                }
            }
            if name != "replace" {
                for i in 0..p.lines.len() {
                    let v = packed_item(&p.values.data, &p.values.ends, i);
                    let Ok(v) = std::str::from_utf8(v) else {
                        return Err(format!(
                            "`{name}` value for line {} is not UTF-8",
                            p.lines[i]
                        ));
                    };
                    // Keys and route names are checked where they enter,
                    // so nothing downstream carries or prints a forged or
                    // unbounded one.
                    if name == "rekey"
                        && let Err(e) = crate::stream::key::check(v)
                    {
                        return Err(format!(
                            "`rekey` value for line {} is not a partition key: it {e}",
                            p.lines[i]
                        ));
                    }
                    if name == "route"
                        && let Err(e) = kinesthetic_filter::rules::check_route(v)
                    {
                        return Err(format!(
                            "`route` value for line {} (starting \"{}\") is not a route name: it \
                             {e}",
                            p.lines[i],
                            crate::stream::key::printable(
                                &v.as_bytes()[..v.floor_char_boundary(32)]
                            )
                        ));
                    }
                }
            }
        }
        Ok(())
    }
}

fn ascending(v: &[u32], n: usize, name: &str) -> Result<(), String> {
    let mut prev: Option<u32> = None;
    for &i in v {
        if i as usize >= n {
            return Err(format!(
                "`{name}` names line {i}, but the batch has {n} lines"
            ));
        }
        if prev.is_some_and(|p| p >= i) {
            return Err(format!("`{name}` is not strictly ascending at line {i}"));
        }
        prev = Some(i);
    }
    Ok(())
}

/// Walks a `patches` list alongside the ascending emit list.
struct Cursor<'a> {
    p: &'a wit::Patches,
    next: usize,
}

impl<'a> Cursor<'a> {
    fn new(p: &'a wit::Patches) -> Self {
        Self { p, next: 0 }
    }

    fn take(&mut self, index: u32) -> Option<&'a [u8]> {
        if self.p.lines.get(self.next) == Some(&index) {
            let v = packed_item(&self.p.values.data, &self.p.values.ends, self.next);
            self.next += 1;
            Some(v)
        } else {
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn patches(lines: &[u32], values: &[&[u8]]) -> wit::Patches {
        let mut data = Vec::new();
        let mut ends = Vec::new();
        for v in values {
            data.extend_from_slice(v);
            ends.push(data.len() as u32);
        }
        wit::Patches {
            lines: lines.to_vec(),
            values: wit::Packed { data, ends },
        }
    }

    fn out(emit: &[u32], replace: wit::Patches, rekey: wit::Patches) -> wit::Output {
        wit::Output {
            emit: emit.to_vec(),
            replace,
            rekey,
            route: patches(&[], &[]),
        }
    }

    #[track_caller]
    fn check(o: wit::Output, n: usize, err: Option<&str>) {
        match (Output::validate(&o, n), err) {
            (Ok(()), None) => {}
            (Err(e), Some(want)) => assert!(e.contains(want), "{e} does not mention {want}"),
            (got, want) => panic!("got {got:?}, want {want:?}"),
        }
    }

    #[test]
    fn validates_the_answer() {
        let none = || patches(&[], &[]);
        check(out(&[0, 2], none(), none()), 3, None);
        check(out(&[], none(), none()), 0, None);
        check(
            out(&[3], none(), none()),
            3,
            Some("names line 3, but the batch has 3 lines"),
        );
        check(
            out(&[1, 1], none(), none()),
            3,
            Some("not strictly ascending"),
        );
        check(
            out(&[2, 1], none(), none()),
            3,
            Some("not strictly ascending"),
        );
        check(out(&[0, 2], patches(&[2], &[b"x"]), none()), 3, None);
        check(
            out(&[0], patches(&[1], &[b"x"]), none()),
            3,
            Some("patches line 1, which is not emitted"),
        );
        check(
            out(&[0], none(), patches(&[0], &[b"\xff"])),
            3,
            Some("not UTF-8"),
        );
        let mut bad = patches(&[0], &[b"abc"]);
        bad.values.ends = vec![5];
        check(out(&[0], bad, none()), 3, Some("offsets"));
        let mut bad = patches(&[0], &[b"abc"]);
        bad.values.ends = vec![];
        check(out(&[0], bad, none()), 3, Some("1 lines but 0 values"));
    }

    #[test]
    fn merges_patches_into_the_emitted_lines() {
        let mut b = Batch::default();
        for (i, l) in [&b"a"[..], b"b", b"c"].iter().enumerate() {
            let _ = b.push(
                l,
                crate::event::Stamp::default(),
                format!("k{i}").as_bytes(),
            );
        }
        let input = Input::from(b);
        let o = Output {
            wit: out(&[0, 1, 2], patches(&[1], &[b"B"]), patches(&[2], &[b"new"])),
            module_sha256: "x".into(),
            filter: "f".into(),
        };
        type Row<'a> = (u32, &'a [u8], &'a [u8], bool, bool);
        let got: Vec<Row<'_>> = o
            .lines(&input)
            .map(|l| (l.index, l.bytes, l.key, l.replaced, l.rekeyed))
            .collect();
        assert_eq!(
            got,
            [
                (0, &b"a"[..], &b"k0"[..], false, false),
                (1, b"B", b"k1", true, false),
                (2, b"c", b"new", false, true),
            ]
        );
    }
}
