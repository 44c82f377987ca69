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

impl std::str::FromStr for EventId {
    type Err = String;

    /// An id as it is printed: `{listener:016x}-{counter:016x}`.
    fn from_str(s: &str) -> Result<Self, String> {
        let bad = || format!("{s:?} is not an event id (LISTENER-COUNTER, both hex)");
        let (l, c) = s.split_once('-').ok_or_else(bad)?;
        Ok(EventId {
            listener: u64::from_str_radix(l, 16).map_err(|_| bad())?,
            counter: u64::from_str_radix(c, 16).map_err(|_| bad())?,
        })
    }
}

/// What the intake stamps on every event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Stamp {
    pub id: EventId,
    /// Receive time, milliseconds since the Unix epoch.
    pub received_ms: i64,
}

/// A shard's id, as the stream names it (`shardId-000000000003`).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct ShardId(String);

impl ShardId {
    pub fn new(id: impl Into<String>) -> Self {
        Self(id.into())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ShardId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl From<&str> for ShardId {
    fn from(s: &str) -> Self {
        Self(s.to_owned())
    }
}

impl From<String> for ShardId {
    fn from(s: String) -> Self {
        Self(s)
    }
}

impl PartialEq<str> for ShardId {
    fn eq(&self, other: &str) -> bool {
        self.0 == other
    }
}

impl PartialEq<&str> for ShardId {
    fn eq(&self, other: &&str) -> bool {
        self.0 == *other
    }
}

/// A record's position in a shard: a decimal number, as Kinesis writes
/// them (56 digits today, up to 129 by the API's rule; the local log's fit
/// in 128 bits). Ordered numerically.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SequenceNumber(String);

/// A string that is not a sequence number.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not a sequence number (1 to {max} decimal digits)", max = SequenceNumber::MAX_DIGITS)]
pub struct BadSequenceNumber(pub String);

impl SequenceNumber {
    /// Most digits Kinesis allows (`0|([1-9]\d{0,128})`).
    pub const MAX_DIGITS: usize = 129;

    /// Accepts a decimal string of 1 to [`Self::MAX_DIGITS`] digits (no
    /// sign, no spaces).
    pub fn parse(s: &str) -> Result<Self, BadSequenceNumber> {
        let ok =
            !s.is_empty() && s.len() <= Self::MAX_DIGITS && s.bytes().all(|b| b.is_ascii_digit());
        if !ok {
            return Err(BadSequenceNumber(s.chars().take(160).collect()));
        }
        let trimmed = s.trim_start_matches('0');
        Ok(Self(
            if trimmed.is_empty() { "0" } else { trimmed }.to_owned(),
        ))
    }

    pub fn from_u128(n: u128) -> Self {
        Self(n.to_string())
    }

    /// The number, when it fits in 128 bits (every local one does; Kinesis's
    /// 56-digit ones do not).
    pub fn as_u128(&self) -> Option<u128> {
        self.0.parse().ok()
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl Default for SequenceNumber {
    fn default() -> Self {
        Self("0".to_owned())
    }
}

impl Ord for SequenceNumber {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        // Canonical (no leading zeros): longer is larger, else compare digits.
        self.0
            .len()
            .cmp(&other.0.len())
            .then_with(|| self.0.cmp(&other.0))
    }
}

impl PartialOrd for SequenceNumber {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl fmt::Display for SequenceNumber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl serde::Serialize for SequenceNumber {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl<'de> serde::Deserialize<'de> for SequenceNumber {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Self::parse(&s).map_err(serde::de::Error::custom)
    }
}

impl serde::Serialize for ShardId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl<'de> serde::Deserialize<'de> for ShardId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d).map(Self)
    }
}

/// Where a batch was read from: the stream, the shard, and the sequence
/// numbers of its first and last records.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct BatchContext {
    pub stream: String,
    pub shard: ShardId,
    pub first_sequence: SequenceNumber,
    pub last_sequence: SequenceNumber,
}

/// One stream record of a batch: its sequence number, when the stream took
/// it, and where its events end among the batch's lines (a KPL aggregated
/// record holds many events; a plain record one). Sinks cut objects and
/// checkpoints move only at record boundaries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordSpan {
    pub sequence: SequenceNumber,
    /// The stream's arrival time of the record, ms since the Unix epoch.
    pub arrival_ms: i64,
    /// One past the index of the record's last line in the batch.
    pub end_line: u32,
}

/// The listener id of events no Kinesthetic intake stamped (records of
/// other producers). No intake uses it: a random id is odd, a configured
/// one may not be 0.
pub const UNSTAMPED_LISTENER: u64 = 0;

/// The stamp of an event that arrived without one (a record of another
/// producer): listener [`UNSTAMPED_LISTENER`], a counter hashed from the
/// shard, the record's sequence number and the event's index in it (so the
/// id is the same on every read of that record), and the stream's arrival
/// time as the receive time.
pub fn unstamped(shard: &ShardId, sequence: &SequenceNumber, sub: u32, arrival_ms: i64) -> Stamp {
    use md5::Digest;
    let mut h = md5::Md5::new();
    h.update(shard.as_str().as_bytes());
    h.update(b"/");
    h.update(sequence.as_str().as_bytes());
    h.update(b"/");
    h.update(sub.to_le_bytes());
    let d = h.finalize();
    let mut c = [0u8; 8];
    c.copy_from_slice(&d[..8]);
    Stamp {
        id: EventId {
            listener: UNSTAMPED_LISTENER,
            counter: u64::from_le_bytes(c),
        },
        received_ms: arrival_ms,
    }
}

/// A batch of events (lines) with their stamps and partition keys, and the
/// stream records they came from.
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
    /// The stream records the lines came from, in order (empty for a batch
    /// made from a file).
    pub(crate) records: Vec<RecordSpan>,
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

    /// Ends the current stream record: the lines pushed since the last call
    /// (none, for an empty aggregated record) are its events.
    pub fn end_record(&mut self, sequence: SequenceNumber, arrival_ms: i64) {
        // `push` bounds the line count by the 4 GiB of data offsets.
        let end_line = u32::try_from(self.len()).unwrap_or(u32::MAX);
        self.records.push(RecordSpan {
            sequence,
            arrival_ms,
            end_line,
        });
    }

    /// The stream records of this batch, in order.
    pub fn records(&self) -> &[RecordSpan] {
        &self.records
    }

    pub fn lines(&self) -> impl ExactSizeIterator<Item = &[u8]> + '_ {
        (0..self.len()).map(|i| self.line(i))
    }

    /// A new batch holding the lines `range` of this one (same context, no
    /// record spans).
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

/// The event a line of a body is: the line without its terminator (`\n` or
/// `\r\n`), or none when that leaves nothing (a blank line). The one rule
/// for how a body splits into events: the intake, `send` and `filter
/// run/test/bench` all split by it ([`events_of_body`]).
pub fn event_of_line(line: &[u8]) -> Option<&[u8]> {
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    (!line.is_empty()).then_some(line)
}

/// The events of a body, each with its 1-based line number (blank lines
/// count, as in an editor): [`event_of_line`] of every line.
pub fn events_of_body(body: &[u8]) -> impl Iterator<Item = (usize, &[u8])> {
    let mut start = 0usize;
    let ends = memchr::memchr_iter(b'\n', body)
        .map(|nl| nl + 1)
        .chain(std::iter::once(body.len()));
    ends.enumerate().filter_map(move |(i, end)| {
        let line = body.get(start..end).unwrap_or_default();
        start = end;
        event_of_line(line).map(|e| (i + 1, e))
    })
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
    #[test]
    fn bodies_split_into_events_one_way() {
        let body = b"a\n\r\nb\r\n\nc";
        let got: Vec<(usize, &[u8])> = events_of_body(body).collect();
        assert_eq!(got, vec![(1, &b"a"[..]), (3, b"b"), (5, b"c")]);
        assert_eq!(
            events_of_body(b"x\n").count(),
            1,
            "no event after the last newline"
        );
        assert_eq!(events_of_body(b"").count(), 0);
        assert_eq!(
            event_of_line(b" \r\n"),
            Some(&b" "[..]),
            "whitespace is an event"
        );
        assert_eq!(event_of_line(b"\r"), None);
    }

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
