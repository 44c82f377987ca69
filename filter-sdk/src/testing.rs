//! Run filters natively in `cargo test`, without a Wasm runtime.
//!
//! The harness drives the code the component runs (`init`, then the loop
//! over the batch's lines) and decodes the answer the host would get, after
//! checking it is well-formed. [`log`](crate::log) calls are captured.
//!
//! ```
//! use kinesthetic_filter::{Emit, Filter, Line, Params, testing};
//!
//! struct Upper;
//! impl Filter for Upper {
//!     fn init(_: &Params) -> Result<Self, String> {
//!         Ok(Upper)
//!     }
//!     fn line(&mut self, line: &Line<'_>, emit: &mut Emit<'_>) {
//!         emit.replace_with(|out| out.extend(line.bytes().to_ascii_uppercase()));
//!         emit.set_key("k");
//!     }
//! }
//!
//! assert_eq!(testing::run_str::<Upper>(&[], "a\nb"), Ok("A\nB".to_owned()));
//! let out = testing::run::<Upper>(&[], &[b"x"]).unwrap_or_default();
//! assert_eq!(out[0].key.as_deref(), Some("k"));
//! ```

use std::cell::{Cell, RefCell};

use crate::__private::kinesthetic::filter::types::{self as wit, Output, Packed, Patches};
use crate::{Filter, Level, Params};

/// One emitted line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Out {
    /// Index of the input line.
    pub index: u32,
    /// The emitted bytes: the input line's, unless replaced.
    pub bytes: Vec<u8>,
    /// New partition key, if set.
    pub key: Option<String>,
    /// Route, if set.
    pub route: Option<String>,
}

/// Everything a native run produced.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Run {
    /// The emitted lines, in order.
    pub outputs: Vec<Out>,
    /// The messages passed to [`log`](crate::log), in order.
    pub logs: Vec<(Level, String)>,
}

/// A batch to run a filter on, with the metadata the host would send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Input {
    lines: Vec<Vec<u8>>,
    keys: Vec<String>,
    ids: Vec<(u64, u64)>,
    received_ms: Vec<i64>,
    /// Stream, shard, first and last sequence number, as in
    /// [`Context`](crate::Context).
    pub stream: String,
    pub shard: String,
    pub first_sequence: String,
    pub last_sequence: String,
}

impl Default for Input {
    fn default() -> Self {
        Self {
            lines: Vec::new(),
            keys: Vec::new(),
            ids: Vec::new(),
            received_ms: Vec::new(),
            stream: "test".into(),
            shard: "shardId-000000000000".into(),
            first_sequence: "1".into(),
            last_sequence: "1".into(),
        }
    }
}

impl Input {
    pub fn new() -> Self {
        Self::default()
    }

    /// `lines` with event ids `(1, 0)`, `(1, 1)`, …, receive time 0 and an
    /// empty partition key.
    pub fn from_lines(lines: &[&[u8]]) -> Self {
        let mut input = Self::new();
        for l in lines {
            input.push(l);
        }
        input
    }

    /// Adds a line with the next event id of listener 1, receive time 0 and
    /// an empty partition key.
    pub fn push(&mut self, line: &[u8]) -> &mut Self {
        let counter = self.lines.len() as u64;
        self.push_event(line, "", (1, counter), 0)
    }

    /// Adds a line with its metadata.
    pub fn push_event(
        &mut self,
        line: &[u8],
        key: &str,
        event_id: (u64, u64),
        received_ms: i64,
    ) -> &mut Self {
        self.lines.push(line.to_vec());
        self.keys.push(key.to_owned());
        self.ids.push(event_id);
        self.received_ms.push(received_ms);
        self
    }

    pub fn len(&self) -> usize {
        self.lines.len()
    }

    pub fn is_empty(&self) -> bool {
        self.lines.is_empty()
    }

    fn to_batch(&self) -> wit::Batch {
        fn pack<T: AsRef<[u8]>>(items: &[T]) -> Packed {
            let mut p = Packed {
                data: Vec::new(),
                ends: Vec::with_capacity(items.len()),
            };
            for i in items {
                p.data.extend_from_slice(i.as_ref());
                p.ends.push(p.data.len() as u32);
            }
            p
        }
        wit::Batch {
            context: wit::Context {
                stream: self.stream.clone(),
                shard: self.shard.clone(),
                first_sequence: self.first_sequence.clone(),
                last_sequence: self.last_sequence.clone(),
            },
            lines: pack(&self.lines),
            listeners: self.ids.iter().map(|id| id.0).collect(),
            counters: self.ids.iter().map(|id| id.1).collect(),
            received_ms: self.received_ms.clone(),
            keys: pack(&self.keys),
        }
    }
}

thread_local! {
    static CAPTURING: Cell<bool> = const { Cell::new(false) };
    static LOGS: RefCell<Vec<(Level, String)>> = const { RefCell::new(Vec::new()) };
}

/// Records a `log` call made natively during a run (dropped otherwise).
#[cfg_attr(target_arch = "wasm32", allow(dead_code))]
pub(crate) fn record_log(level: Level, message: &str) {
    if CAPTURING.with(Cell::get) {
        LOGS.with(|l| l.borrow_mut().push((level, message.to_owned())));
    }
}

/// Runs filter `F` on `input` as one batch, as the host would: `init` with
/// `params`, then the batch. `Err` is `init`'s error (or a malformed answer,
/// which would be an SDK bug); a panic in the filter propagates.
pub fn run_input<F: Filter>(params: &[(&str, &str)], input: &Input) -> Result<Run, String> {
    let params: Params = params.iter().copied().collect();
    /// Stops capturing logs, even when the filter panics.
    struct Capture;
    impl Drop for Capture {
        fn drop(&mut self) {
            CAPTURING.with(|c| c.set(false));
        }
    }
    LOGS.with(|l| l.borrow_mut().clear());
    CAPTURING.with(|c| c.set(true));
    let capture = Capture;
    // `init`'s log calls are captured too, as the host receives them.
    let mut filter = F::init(&params)?;
    let batch = input.to_batch();
    let out = crate::emit::process(&mut filter, &batch);
    drop(capture);
    let logs = LOGS.with(|l| std::mem::take(&mut *l.borrow_mut()));
    let outputs = decode(&out?, input)?;
    Ok(Run { outputs, logs })
}

/// Runs filter `F` with `params` over `lines` as one batch, capturing logs.
pub fn run_full<F: Filter>(params: &[(&str, &str)], lines: &[&[u8]]) -> Result<Run, String> {
    run_input::<F>(params, &Input::from_lines(lines))
}

/// Runs filter `F` with `params` over `lines` as one batch; returns the
/// emitted lines.
pub fn run<F: Filter>(params: &[(&str, &str)], lines: &[&[u8]]) -> Result<Vec<Out>, String> {
    run_full::<F>(params, lines).map(|r| r.outputs)
}

/// Like [`run`], over the lines of `text` (split on `\n`; a final newline
/// ends the last line, it does not start an empty one); returns the emitted
/// lines joined with `\n` (lossily decoded as UTF-8).
pub fn run_str<F: Filter>(params: &[(&str, &str)], text: &str) -> Result<String, String> {
    let text = text.strip_suffix('\n').unwrap_or(text);
    let lines: Vec<&[u8]> = if text.is_empty() {
        Vec::new()
    } else {
        text.split('\n').map(str::as_bytes).collect()
    };
    let out = run::<F>(params, &lines)?;
    let texts: Vec<_> = out
        .iter()
        .map(|o| String::from_utf8_lossy(&o.bytes))
        .collect();
    Ok(texts.join("\n"))
}

/// The values of `p` in order, after checking that they belong to emitted
/// lines in ascending order.
fn patch_values<'p>(p: &'p Patches, what: &str) -> Result<Vec<(u32, &'p [u8])>, String> {
    let bad = |why: &str| Err(format!("malformed output: {what}: {why}"));
    if p.lines.len() != p.values.ends.len() {
        return bad("as many lines as values expected");
    }
    let mut values = Vec::with_capacity(p.lines.len());
    let mut start = 0;
    for (i, (&line, &end)) in p.lines.iter().zip(&p.values.ends).enumerate() {
        if i > 0 && p.lines[i - 1] >= line {
            return bad("lines not strictly ascending");
        }
        let Some(v) = p.values.data.get(start..end as usize) else {
            return bad("ends out of order or past the data");
        };
        values.push((line, v));
        start = end as usize;
    }
    if start != p.values.data.len() {
        return bad("data past the last end");
    }
    Ok(values)
}

/// The emitted lines of `out`, checked the way the host checks them.
fn decode(out: &Output, input: &Input) -> Result<Vec<Out>, String> {
    let text = |v: &[u8], what: &str| {
        String::from_utf8(v.to_vec()).map_err(|_| format!("malformed output: {what} is not UTF-8"))
    };
    let mut replace = patch_values(&out.replace, "replace")?
        .into_iter()
        .peekable();
    let mut rekey = patch_values(&out.rekey, "rekey")?.into_iter().peekable();
    let mut route = patch_values(&out.route, "route")?.into_iter().peekable();
    let mut outputs = Vec::with_capacity(out.emit.len());
    for (i, &index) in out.emit.iter().enumerate() {
        if i > 0 && out.emit[i - 1] >= index {
            return Err("malformed output: emit not strictly ascending".into());
        }
        let Some(line) = input.lines.get(index as usize) else {
            return Err(format!("malformed output: emit names line {index}"));
        };
        let replaced = replace.next_if(|(l, _)| *l == index).map(|(_, v)| v);
        let key = rekey.next_if(|(l, _)| *l == index).map(|(_, v)| v);
        let rte = route.next_if(|(l, _)| *l == index).map(|(_, v)| v);
        let key = key.map(|k| text(k, "a key")).transpose()?;
        let rte = rte.map(|r| text(r, "a route")).transpose()?;
        if let Some(Err(e)) = key.as_deref().map(crate::rules::check_key) {
            return Err(format!(
                "malformed output: the key of line {index} is not a partition key: it {e}"
            ));
        }
        if let Some(Err(e)) = rte.as_deref().map(crate::rules::check_route) {
            return Err(format!(
                "malformed output: the route of line {index} is not a route name: it {e}"
            ));
        }
        outputs.push(Out {
            index,
            bytes: replaced.unwrap_or(line).to_vec(),
            key,
            route: rte,
        });
    }
    for (what, rest) in [
        ("replace", replace.next()),
        ("rekey", rekey.next()),
        ("route", route.next()),
    ] {
        if let Some((line, _)) = rest {
            return Err(format!(
                "malformed output: {what} for line {line}, which is not emitted"
            ));
        }
    }
    Ok(outputs)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Context, Emit, Line, log};

    /// Exercises every part of the answer, chosen by the line's text.
    struct Script {
        batches: u32,
    }

    impl Filter for Script {
        fn init(params: &Params) -> Result<Self, String> {
            log(Level::Debug, "init");
            params.parse("batches").map(|b| Script {
                batches: b.unwrap_or(0),
            })
        }

        fn begin_batch(&mut self, context: &Context<'_>) {
            self.batches += 1;
            log(Level::Info, &format!("{} {}", context.stream, self.batches));
        }

        fn line(&mut self, line: &Line<'_>, emit: &mut Emit<'_>) {
            let words: Vec<&[u8]> = line.bytes().split(|&b| b == b' ').collect();
            for w in words {
                match w {
                    b"keep" => emit.keep(),
                    b"drop" => emit.drop_line(),
                    b"key" => emit.set_key(&format!("k{}", line.index())),
                    b"route" => emit.set_route("r"),
                    b"id" => emit.replace(format!("{:?}", line.event_id()).as_bytes()),
                    b"meta" => emit.replace_with(|o| {
                        o.extend_from_slice(line.key());
                        o.extend_from_slice(format!("@{}", line.received_ms()).as_bytes());
                    }),
                    w => emit.replace_with(|o| o.extend_from_slice(w)),
                }
            }
        }
    }

    #[test]
    fn decodes_every_kind_of_answer() {
        let lines: &[&[u8]] = &[
            b"keep",
            b"",
            b"x keep",
            b"keep x",
            b"keep key route",
            b"key route",
            b"x drop key",
            b"a b c",
            b"id",
        ];
        let r = run_full::<Script>(&[("batches", "4")], lines).unwrap_or_default();
        type Row<'a> = (u32, &'a [u8], Option<&'a str>, Option<&'a str>);
        let got: Vec<Row<'_>> = r
            .outputs
            .iter()
            .map(|o| (o.index, &o.bytes[..], o.key.as_deref(), o.route.as_deref()))
            .collect();
        let want: Vec<Row<'_>> = vec![
            (0, b"keep", None, None),
            (1, b"", None, None),
            (2, b"x keep", None, None),
            (3, b"x", None, None),
            (4, b"keep key route", Some("k4"), Some("r")),
            (7, b"c", None, None),
            (8, b"(1, 8)", None, None),
        ];
        assert_eq!(got, want);
        assert_eq!(
            r.logs,
            [
                (Level::Debug, "init".to_owned()),
                (Level::Info, "test 5".to_owned())
            ]
        );
        let e = run::<Script>(&[("batches", "x")], &[]).err();
        assert!(e.is_some_and(|e| e.contains("`batches`")));
    }

    #[test]
    fn passes_metadata() {
        let mut input = Input::new();
        input.push_event(b"meta", "user-1", (9, 3), 1_700_000_000_000);
        input.push(b"id");
        let r = run_input::<Script>(&[], &input).unwrap_or_default();
        assert_eq!(r.outputs[0].bytes, b"user-1@1700000000000");
        assert_eq!(r.outputs[1].bytes, b"(1, 1)");
    }

    #[test]
    fn text_lines() {
        assert_eq!(run_str::<Script>(&[], "keep\nx\n"), Ok("keep\nx".into()));
        assert_eq!(run_str::<Script>(&[], ""), Ok(String::new()));
        assert_eq!(run_str::<Script>(&[], "\n\nkeep"), Ok("\n\nkeep".into()));
    }

    #[test]
    fn rejects_a_malformed_answer() {
        let input = Input::from_lines(&[b"a", b"b"]);
        let mut out = Output {
            emit: vec![1, 0],
            replace: crate::emit::patches(),
            rekey: crate::emit::patches(),
            route: crate::emit::patches(),
        };
        assert!(decode(&out, &input).is_err());
        out.emit = vec![2];
        assert!(decode(&out, &input).is_err());
        out.emit = vec![0];
        out.rekey.lines.push(1);
        out.rekey.values.ends.push(0);
        assert!(decode(&out, &input).is_err());
    }

    #[test]
    fn the_export_glue_inits_once_and_rejects_bad_batches() {
        let slot = RefCell::new(None::<Script>);
        let e = crate::emit::init::<Script>(&slot, vec![("batches".into(), "x".into())]);
        assert!(e.is_err());
        let ok = crate::emit::init::<Script>(&slot, vec![("batches".into(), "1".into())]);
        assert_eq!(ok, Ok(()));
        let mut batch = Input::from_lines(&[b"keep", b"drop"]).to_batch();
        let out = crate::emit::filter(&slot, batch.clone()).map(|o| o.emit);
        assert_eq!(out, Ok(vec![0]));
        assert_eq!(slot.borrow().as_ref().map(|s| s.batches), Some(2));
        batch.counters.pop();
        assert!(crate::emit::filter(&slot, batch.clone()).is_err());
        batch.counters.push(0);
        batch.lines.ends[0] = 99;
        assert!(crate::emit::filter(&slot, batch).is_err());
    }
}
