//! Building a batch's answer, and the glue behind `export_filter!`.

use std::any::Any;
use std::cell::RefCell;

use crate::__private::kinesthetic::filter::types::{Batch, Output, Packed, Patches};
use crate::{Context, Filter, Line, Params};

/// Decides what happens to one line. A line is dropped unless [`keep`] or
/// [`replace`] is called.
///
/// [`keep`]: Emit::keep
/// [`replace`]: Emit::replace
#[derive(Debug)]
pub struct Emit<'a> {
    out: &'a mut Output,
    index: u32,
    kept: bool,
    replace_from: Option<usize>,
    key_from: Option<usize>,
    route_from: Option<usize>,
}

/// Starts (or restarts) this line's value in a patch buffer.
fn begin(p: &mut Patches, from: &mut Option<usize>) -> usize {
    let start = *from.get_or_insert(p.values.data.len());
    p.values.data.truncate(start);
    start
}

fn finish(p: &mut Patches, from: Option<usize>, index: u32, emitted: bool) {
    if let Some(start) = from {
        if emitted {
            p.lines.push(index);
            p.values.ends.push(p.values.data.len() as u32);
        } else {
            p.values.data.truncate(start);
        }
    }
}

impl<'a> Emit<'a> {
    fn new(out: &'a mut Output, index: u32) -> Self {
        Self {
            out,
            index,
            kept: false,
            replace_from: None,
            key_from: None,
            route_from: None,
        }
    }

    /// Emit the line unchanged (by index: no bytes cross back to the host).
    pub fn keep(&mut self) {
        self.kept = true;
        if let Some(start) = self.replace_from.take() {
            self.out.replace.values.data.truncate(start);
        }
    }

    /// Emit `bytes` instead of the line.
    pub fn replace(&mut self, bytes: &[u8]) {
        self.replace_with(|buf| buf.extend_from_slice(bytes));
    }

    /// Emit what `write` appends to the buffer instead of the line. The
    /// buffer is shared by the batch: append only, no allocation per line.
    pub fn replace_with(&mut self, write: impl FnOnce(&mut Vec<u8>)) {
        self.kept = false;
        begin(&mut self.out.replace, &mut self.replace_from);
        write(&mut self.out.replace.values.data);
    }

    /// Undo `keep`/`replace`: the line is dropped.
    pub fn drop_line(&mut self) {
        self.kept = false;
        if let Some(start) = self.replace_from.take() {
            self.out.replace.values.data.truncate(start);
        }
    }

    /// Give the emitted line a new partition key.
    pub fn set_key(&mut self, key: &str) {
        begin(&mut self.out.rekey, &mut self.key_from);
        self.out.rekey.values.data.extend_from_slice(key.as_bytes());
    }

    /// Give the emitted line a route name.
    pub fn set_route(&mut self, route: &str) {
        begin(&mut self.out.route, &mut self.route_from);
        self.out
            .route
            .values
            .data
            .extend_from_slice(route.as_bytes());
    }

    fn finish(self) {
        let emitted = self.kept || self.replace_from.is_some();
        if emitted {
            self.out.emit.push(self.index);
        }
        finish(
            &mut self.out.replace,
            self.replace_from,
            self.index,
            emitted,
        );
        finish(&mut self.out.rekey, self.key_from, self.index, emitted);
        finish(&mut self.out.route, self.route_from, self.index, emitted);
    }
}

fn empty_patches() -> Patches {
    Patches {
        lines: Vec::new(),
        values: Packed {
            data: Vec::new(),
            ends: Vec::new(),
        },
    }
}

fn item<'a>(data: &'a [u8], ends: &[u32], i: usize, start: &mut usize) -> &'a [u8] {
    let end = (ends[i] as usize).min(data.len());
    let s = (*start).min(end);
    *start = end;
    &data[s..end]
}

/// Runs `filter` over every line of `batch` (the loop inside the guest).
pub fn process<F: Filter>(filter: &mut F, batch: &Batch) -> Output {
    let n = batch.lines.ends.len();
    let mut out = Output {
        emit: Vec::with_capacity(n),
        replace: empty_patches(),
        rekey: empty_patches(),
        route: empty_patches(),
    };
    let c = &batch.context;
    filter.begin_batch(&Context {
        stream: &c.stream,
        shard: &c.shard,
        first_sequence: &c.first_sequence,
        last_sequence: &c.last_sequence,
    });
    let data = &batch.lines.data[..];
    let ends = &batch.lines.ends[..];
    let (mut start, mut key_start) = (0, 0);
    for i in 0..n {
        let line = Line {
            index: i as u32,
            bytes: item(data, ends, i, &mut start),
            listener: batch.listeners.get(i).copied().unwrap_or(0),
            counter: batch.counters.get(i).copied().unwrap_or(0),
            received_ms: batch.received_ms.get(i).copied().unwrap_or(0),
            key: if i < batch.keys.ends.len() {
                item(&batch.keys.data, &batch.keys.ends, i, &mut key_start)
            } else {
                &[]
            },
        };
        let mut emit = Emit::new(&mut out, i as u32);
        filter.line(&line, &mut emit);
        emit.finish();
    }
    out
}

thread_local! {
    static CORRUPT: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Test hook for the host's tests (the `chaos` fixture): makes this batch's
/// answer name a line past the end of the batch.
#[doc(hidden)]
pub fn chaos_bad_index() {
    CORRUPT.with(|c| c.set(true));
}

thread_local! {
    /// The instance's filter, built by `init` (each instance is fresh).
    static INSTANCE: RefCell<Option<Box<dyn Any>>> = const { RefCell::new(None) };
}

/// The `init` export.
pub fn init<F: Filter>(params: Vec<(String, String)>) -> Result<(), String> {
    let f = F::init(&Params::new(params))?;
    INSTANCE.with(|i| *i.borrow_mut() = Some(Box::new(f)));
    Ok(())
}

/// The `filter` export.
pub fn filter<F: Filter>(batch: Batch) -> Result<Output, String> {
    INSTANCE.with(|i| {
        let mut slot = i.borrow_mut();
        let f = slot
            .as_mut()
            .and_then(|b| b.downcast_mut::<F>())
            .ok_or_else(|| "`filter` called before a successful `init`".to_owned())?;
        let mut out = process(f, &batch);
        if CORRUPT.with(|c| c.replace(false)) {
            out.emit.push(batch.lines.ends.len() as u32 + 5);
        }
        Ok(out)
    })
}
