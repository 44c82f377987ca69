//! A batch's answer ([`Emit`]), the loop over its lines, and the glue behind
//! [`export_filter!`](crate::export_filter).

use std::cell::{Cell, RefCell};

use crate::__private::kinesthetic::filter::types::{Batch, Output, Packed, Patches};
use crate::{Context, Filter, Line, Params};

/// What happens to one line: it is **dropped** unless [`keep`](Emit::keep)
/// or [`replace`](Emit::replace) is called.
///
/// One `Emit` writes into buffers shared by the whole batch: keeping a line
/// records its index only (the host already has the bytes), and
/// replacements, keys and routes are appended to one packed buffer each, so
/// a line costs no allocation.
#[derive(Debug)]
pub struct Emit<'a> {
    out: &'a mut Output,
    index: u32,
    kept: bool,
    /// Where this line's replacement, key and route start in their buffers.
    replace_from: Option<usize>,
    key_from: Option<usize>,
    route_from: Option<usize>,
}

/// Starts (or restarts) this line's value in a patch buffer.
#[inline]
fn begin<'p>(p: &'p mut Patches, from: &mut Option<usize>) -> &'p mut Vec<u8> {
    let data = &mut p.values.data;
    let start = *from.get_or_insert(data.len());
    data.truncate(start);
    data
}

/// Closes this line's value in a patch buffer, or discards it.
#[inline]
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
    #[inline]
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

    /// Emits the line unchanged (by index: no bytes go back to the host).
    /// Undoes an earlier `replace`.
    #[inline]
    pub fn keep(&mut self) {
        self.kept = true;
        if let Some(start) = self.replace_from.take() {
            self.out.replace.values.data.truncate(start);
        }
    }

    /// Emits `bytes` instead of the line.
    #[inline]
    pub fn replace(&mut self, bytes: &[u8]) {
        self.replace_with(|buf| buf.extend_from_slice(bytes));
    }

    /// Emits what `write` appends to the buffer instead of the line.
    ///
    /// The buffer is the batch's shared replacement buffer, positioned at
    /// the end: append to it, don't read or remove what is before. Calling
    /// this again for the same line starts the replacement over.
    #[inline]
    pub fn replace_with(&mut self, write: impl FnOnce(&mut Vec<u8>)) {
        self.kept = false;
        write(begin(&mut self.out.replace, &mut self.replace_from));
    }

    /// Drops the line after all, undoing `keep` or `replace` (dropping is
    /// the default; this is for code that decides late).
    #[inline]
    pub fn drop_line(&mut self) {
        self.kept = false;
        if let Some(start) = self.replace_from.take() {
            self.out.replace.values.data.truncate(start);
        }
    }

    /// Whether the line will be emitted (kept or replaced) as things stand.
    pub fn is_emitted(&self) -> bool {
        self.kept || self.replace_from.is_some()
    }

    /// Gives the emitted line a new partition key (ignored if the line is
    /// dropped). The host refuses a batch's answer whose key is not 1 to 256
    /// characters or holds a control character ([`crate::rules`]): check
    /// keys taken from the data first.
    #[inline]
    pub fn set_key(&mut self, key: &str) {
        begin(&mut self.out.rekey, &mut self.key_from).extend_from_slice(key.as_bytes());
    }

    /// Gives the emitted line a route name (ignored if the line is dropped).
    /// The host refuses a batch's answer whose route is not 1 to 256 bytes
    /// or holds a control character ([`crate::rules`]).
    #[inline]
    pub fn set_route(&mut self, route: &str) {
        begin(&mut self.out.route, &mut self.route_from).extend_from_slice(route.as_bytes());
    }

    #[inline]
    fn finish(self) {
        let emitted = self.is_emitted();
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

pub(crate) fn patches() -> Patches {
    Patches {
        lines: Vec::new(),
        values: Packed {
            data: Vec::new(),
            ends: Vec::new(),
        },
    }
}

/// Checks that `p` packs `n` items.
fn check_packed(p: &Packed, n: usize, what: &str) -> Result<(), String> {
    if p.ends.len() != n {
        return Err(format!(
            "malformed batch: {n} lines but {} {what}",
            p.ends.len()
        ));
    }
    let mut prev = 0;
    for &e in &p.ends {
        if e < prev {
            return Err(format!("malformed batch: {what} ends decrease"));
        }
        prev = e;
    }
    if prev as usize > p.data.len() {
        return Err(format!("malformed batch: {what} end past the data"));
    }
    Ok(())
}

/// Runs `filter` over every line of `batch`: the loop inside the guest.
pub(crate) fn process<F: Filter>(filter: &mut F, batch: &Batch) -> Result<Output, String> {
    let n = batch.lines.ends.len();
    check_packed(&batch.lines, n, "line ends")?;
    check_packed(&batch.keys, n, "key ends")?;
    for (len, what) in [
        (batch.listeners.len(), "listener ids"),
        (batch.counters.len(), "counters"),
        (batch.received_ms.len(), "receive times"),
    ] {
        if len != n {
            return Err(format!("malformed batch: {n} lines but {len} {what}"));
        }
    }
    let mut out = Output {
        emit: Vec::with_capacity(n),
        replace: patches(),
        rekey: patches(),
        route: patches(),
    };
    let c = &batch.context;
    filter.begin_batch(&Context {
        stream: &c.stream,
        shard: &c.shard,
        first_sequence: &c.first_sequence,
        last_sequence: &c.last_sequence,
    });
    let (data, keys) = (&batch.lines.data[..], &batch.keys.data[..]);
    let (mut start, mut key_start) = (0, 0);
    let stamps = batch
        .listeners
        .iter()
        .zip(&batch.counters)
        .zip(&batch.received_ms);
    let ends = batch.lines.ends.iter().zip(&batch.keys.ends);
    for (index, ((&end, &key_end), ((&listener, &counter), &received_ms))) in
        (0u32..).zip(ends.zip(stamps))
    {
        let (end, key_end) = (end as usize, key_end as usize);
        let line = Line {
            index,
            bytes: data.get(start..end).unwrap_or_default(),
            listener,
            counter,
            received_ms,
            key: keys.get(key_start..key_end).unwrap_or_default(),
        };
        (start, key_start) = (end, key_end);
        let mut emit = Emit::new(&mut out, index);
        filter.line(&line, &mut emit);
        emit.finish();
    }
    Ok(out)
}

thread_local! {
    /// Set by the `chaos` test fixture: corrupt this batch's answer.
    static BAD_INDEX: Cell<bool> = const { Cell::new(false) };
}

/// Test hook for the host's tests (the `chaos` fixture only): this batch's
/// answer will name a line past the end of the batch, as a buggy filter
/// written without this SDK could.
#[doc(hidden)]
pub fn chaos_bad_index() {
    BAD_INDEX.with(|c| c.set(true));
}

/// Makes a panic log its message through the host, as an error under the
/// filter's name, before the instance traps. (The standard hook would
/// write it to stderr, a mere warning in the host's log.)
fn install_panic_hook() {
    #[cfg(target_arch = "wasm32")]
    {
        thread_local! {
            static INSTALLED: Cell<bool> = const { Cell::new(false) };
        }
        if !INSTALLED.with(|i| i.replace(true)) {
            std::panic::set_hook(Box::new(|info| {
                // What was printed just before is context for the panic.
                #[cfg(target_os = "wasi")]
                crate::wasi_stubs::flush_pending();
                crate::log(crate::Level::Error, &format!("filter {info}"));
            }));
        }
    }
}

/// The `init` export: builds the instance's filter (each instance is fresh
/// and gets exactly one `init`).
#[doc(hidden)]
pub fn init<F: Filter>(
    slot: &RefCell<Option<F>>,
    params: Vec<(String, String)>,
) -> Result<(), String> {
    install_panic_hook();
    let filter = F::init(&Params::new(params));
    #[cfg(all(target_arch = "wasm32", target_os = "wasi"))]
    crate::wasi_stubs::flush_pending();
    let filter = filter?;
    let mut slot = slot
        .try_borrow_mut()
        .map_err(|_| "`init` called during `filter`".to_owned())?;
    *slot = Some(filter);
    Ok(())
}

/// The `filter` export.
#[doc(hidden)]
pub fn filter<F: Filter>(slot: &RefCell<Option<F>>, batch: Batch) -> Result<Output, String> {
    let mut slot = slot
        .try_borrow_mut()
        .map_err(|_| "`filter` called during `filter`".to_owned())?;
    if slot.is_none() {
        install_panic_hook();
        // The host always calls `init` first; without it, no parameters.
        *slot = Some(F::init(&Params::default())?);
    }
    let Some(filter) = slot.as_mut() else {
        return Err("no filter instance".to_owned());
    };
    let out = process(filter, &batch);
    #[cfg(all(target_arch = "wasm32", target_os = "wasi"))]
    crate::wasi_stubs::flush_pending();
    let mut out = out?;
    if BAD_INDEX.with(|c| c.replace(false)) {
        out.emit.push(batch.lines.ends.len() as u32 + 7);
    }
    Ok(out)
}
