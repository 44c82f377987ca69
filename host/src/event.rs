//! Domain types shared by every component: events, stamps and batches.
//!
//! A [`Batch`] is stored as a structure of arrays (one byte buffer for all
//! lines plus per-line metadata vectors) so that it crosses into a Wasm
//! filter as a few `memcpy`s, whatever the number of lines.

use std::fmt;

/// Unique id of an accepted event: the listener that received it and that
/// listener's counter. Unique across listeners, stable through every sink.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct EventId {
    pub listener: u64,
    pub counter: u64,
}

impl fmt::Display for EventId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016x}-{:016x}", self.listener, self.counter)
    }
}

/// What the intake stamps on every event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Stamp {
    pub id: EventId,
    /// Receive time, milliseconds since the Unix epoch.
    pub received_ms: i64,
}

/// Where a batch was read from.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct BatchContext {
    pub stream: String,
    pub shard: String,
    pub first_sequence: String,
    pub last_sequence: String,
}

/// A batch of events (lines) with their stamps and partition keys.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Batch {
    pub context: BatchContext,
    pub(crate) data: Vec<u8>,
    pub(crate) ends: Vec<u32>,
    pub(crate) listeners: Vec<u64>,
    pub(crate) counters: Vec<u64>,
    pub(crate) received_ms: Vec<i64>,
    pub(crate) keys: Vec<u8>,
    pub(crate) key_ends: Vec<u32>,
}

/// A batch cannot hold more than 4 GiB of lines (offsets are `u32`).
#[derive(Debug, thiserror::Error)]
#[error("batch is full: lines and keys are limited to 4 GiB per batch")]
pub struct BatchFull;

impl Batch {
    pub fn new(context: BatchContext) -> Self {
        Self {
            context,
            ..Self::default()
        }
    }

    /// Appends one line with its stamp and partition key.
    pub fn push(&mut self, line: &[u8], stamp: Stamp, key: &[u8]) -> Result<(), BatchFull> {
        let end = u32::try_from(self.data.len() + line.len()).map_err(|_| BatchFull)?;
        let key_end = u32::try_from(self.keys.len() + key.len()).map_err(|_| BatchFull)?;
        self.data.extend_from_slice(line);
        self.ends.push(end);
        self.listeners.push(stamp.id.listener);
        self.counters.push(stamp.id.counter);
        self.received_ms.push(stamp.received_ms);
        self.keys.extend_from_slice(key);
        self.key_ends.push(key_end);
        Ok(())
    }

    pub fn len(&self) -> usize {
        self.ends.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }

    /// Total bytes of all lines.
    pub fn byte_len(&self) -> usize {
        self.data.len()
    }

    pub fn line(&self, i: usize) -> &[u8] {
        packed_item(&self.data, &self.ends, i)
    }

    pub fn key(&self, i: usize) -> &[u8] {
        packed_item(&self.keys, &self.key_ends, i)
    }

    pub fn stamp(&self, i: usize) -> Stamp {
        Stamp {
            id: EventId {
                listener: self.listeners[i],
                counter: self.counters[i],
            },
            received_ms: self.received_ms[i],
        }
    }

    pub fn lines(&self) -> impl ExactSizeIterator<Item = &[u8]> + '_ {
        (0..self.len()).map(|i| self.line(i))
    }

    /// A new batch holding the lines `range` of this one (same context).
    pub fn slice(&self, range: std::ops::Range<usize>) -> Batch {
        let mut out = Batch::new(self.context.clone());
        for i in range {
            // Cannot overflow: a slice is never larger than its source.
            let _ = out.push(self.line(i), self.stamp(i), self.key(i));
        }
        out
    }
}

/// Item `i` of a packed list (`ends` holds end offsets).
pub(crate) fn packed_item<'a>(data: &'a [u8], ends: &[u32], i: usize) -> &'a [u8] {
    let start = if i == 0 { 0 } else { ends[i - 1] as usize };
    &data[start..ends[i] as usize]
}

/// Splits text into lines on `\n` (kept out of the line; a `\r` stays, so
/// bytes go out as they came in). A final line without `\n` counts; the empty
/// remainder after a final `\n` does not.
pub fn split_lines(text: &[u8]) -> impl Iterator<Item = &[u8]> {
    let body = text.strip_suffix(b"\n").unwrap_or(text);
    let empty = text.is_empty();
    body.split(|&b| b == b'\n').filter(move |_| !empty)
}

/// Packs lines into batches of at most `batch_lines` lines, stamped with
/// `listener` and consecutive counters starting at `first_counter`.
pub fn batches_of<'a>(
    lines: impl IntoIterator<Item = &'a [u8]>,
    batch_lines: usize,
    listener: u64,
    first_counter: u64,
    received_ms: i64,
) -> Result<Vec<Batch>, BatchFull> {
    let batch_lines = batch_lines.max(1);
    let mut out = Vec::new();
    let mut cur = Batch::default();
    for (counter, line) in (first_counter..).zip(lines) {
        if cur.len() == batch_lines {
            out.push(std::mem::take(&mut cur));
        }
        cur.push(
            line,
            Stamp {
                id: EventId { listener, counter },
                received_ms,
            },
            b"",
        )?;
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[track_caller]
    fn check_split(text: &[u8], want: &[&[u8]]) {
        assert_eq!(split_lines(text).collect::<Vec<_>>(), want);
    }

    #[test]
    fn splits_lines_keeping_bytes() {
        check_split(b"", &[]);
        check_split(b"\n", &[b""]);
        check_split(b"a\nb", &[b"a", b"b"]);
        check_split(b"a\nb\n", &[b"a", b"b"]);
        check_split(b"a\r\n\n\xffc\n", &[b"a\r", b"", b"\xffc"]);
    }

    #[test]
    fn batches_carry_stamps_and_keys() {
        let lines: Vec<&[u8]> = vec![b"one", b"two", b"three"];
        let b = batches_of(lines, 2, 9, 100, 5).unwrap_or_default();
        assert_eq!(b.len(), 2);
        assert_eq!(b[0].len(), 2);
        assert_eq!(b[1].line(0), b"three");
        assert_eq!(
            b[1].stamp(0).id,
            EventId {
                listener: 9,
                counter: 102
            }
        );
        assert_eq!(b[1].stamp(0).received_ms, 5);
        let s = b[0].slice(1..2);
        assert_eq!(
            (s.len(), s.line(0), s.stamp(0).id.counter),
            (1, &b"two"[..], 101)
        );
        assert_eq!(
            EventId {
                listener: 1,
                counter: 2
            }
            .to_string(),
            "0000000000000001-0000000000000002"
        );
    }
}
