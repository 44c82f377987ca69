//! Run filters natively in `cargo test`, without a Wasm runtime.
//!
//! The harness drives the same code the component runs: `init`, then the
//! in-guest loop over the batch's lines.

use std::cell::RefCell;

use crate::__private::kinesthetic::filter::types::{Batch, Context, Packed};
use crate::{Filter, Level, Params};

/// One emitted line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Out {
    /// Index of the input line.
    pub index: u32,
    /// The emitted bytes (the input line's, unless replaced).
    pub bytes: Vec<u8>,
    /// New partition key, if set.
    pub key: Option<String>,
    /// Route, if set.
    pub route: Option<String>,
}

/// Everything a native run produced.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Run {
    pub outputs: Vec<Out>,
    pub logs: Vec<(Level, String)>,
}

thread_local! {
    static LOGS: RefCell<Vec<(Level, String)>> = const { RefCell::new(Vec::new()) };
}

#[cfg_attr(target_arch = "wasm32", allow(dead_code))]
pub(crate) fn record_log(level: Level, message: &str) {
    LOGS.with(|l| l.borrow_mut().push((level, message.to_owned())));
}

/// Builds a batch of `lines` stamped listener 1, counters 0.., empty keys.
pub fn batch(lines: &[&[u8]]) -> Batch {
    let mut data = Vec::new();
    let mut ends = Vec::new();
    for l in lines {
        data.extend_from_slice(l);
        ends.push(data.len() as u32);
    }
    let n = lines.len();
    Batch {
        context: Context {
            stream: "test".into(),
            shard: "shardId-000000000000".into(),
            first_sequence: "0".into(),
            last_sequence: "0".into(),
        },
        lines: Packed { data, ends },
        listeners: vec![1; n],
        counters: (0..n as u64).collect(),
        received_ms: vec![0; n],
        keys: Packed {
            data: Vec::new(),
            ends: vec![0; n],
        },
    }
}

/// Runs filter `F` with `params` over `lines` as one batch, capturing logs.
pub fn run_full<F: Filter>(params: &[(&str, &str)], lines: &[&[u8]]) -> Result<Run, String> {
    run_batch::<F>(params, &batch(lines))
}

/// Runs filter `F` over a prepared batch, capturing logs.
pub fn run_batch<F: Filter>(params: &[(&str, &str)], batch: &Batch) -> Result<Run, String> {
    LOGS.with(|l| l.borrow_mut().clear());
    let params = Params::new(
        params
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect(),
    );
    let mut f = F::init(&params)?;
    let out = crate::emit::process(&mut f, batch);
    fn text(p: &crate::__private::kinesthetic::filter::types::Patches, line: u32) -> Option<&[u8]> {
        let i = p.lines.iter().position(|&l| l == line)?;
        let start = if i == 0 {
            0
        } else {
            p.values.ends[i - 1] as usize
        };
        Some(&p.values.data[start..p.values.ends[i] as usize])
    }
    let mut outputs = Vec::with_capacity(out.emit.len());
    for &index in &out.emit {
        let i = index as usize;
        let start = if i == 0 {
            0
        } else {
            batch.lines.ends[i - 1] as usize
        };
        let original = &batch.lines.data[start..batch.lines.ends[i] as usize];
        outputs.push(Out {
            index,
            bytes: text(&out.replace, index).unwrap_or(original).to_vec(),
            key: text(&out.rekey, index).map(|k| String::from_utf8_lossy(k).into_owned()),
            route: text(&out.route, index).map(|r| String::from_utf8_lossy(r).into_owned()),
        });
    }
    let logs = LOGS.with(|l| std::mem::take(&mut *l.borrow_mut()));
    Ok(Run { outputs, logs })
}

/// Runs filter `F` with `params` over `lines`; returns the emitted lines.
pub fn run<F: Filter>(params: &[(&str, &str)], lines: &[&[u8]]) -> Result<Vec<Out>, String> {
    run_full::<F>(params, lines).map(|r| r.outputs)
}

/// Like [`run`], over the lines of `text` (split on `\n`); returns the
/// emitted lines as text joined with `\n`.
pub fn run_str<F: Filter>(params: &[(&str, &str)], text: &str) -> Result<String, String> {
    let lines: Vec<&[u8]> = text.lines().map(str::as_bytes).collect();
    let out = run::<F>(params, &lines)?;
    Ok(out
        .iter()
        .map(|o| String::from_utf8_lossy(&o.bytes).into_owned())
        .collect::<Vec<_>>()
        .join("\n"))
}
