//! The KPL aggregation format: many user records in one Kinesis record.
//!
//! ```text
//! record = MAGIC (f3 89 9a c2) · AggregatedRecord (protobuf) · MD5(AggregatedRecord)
//!
//! message AggregatedRecord {
//!   repeated string partition_key_table     = 1;
//!   repeated string explicit_hash_key_table = 2;
//!   repeated Record records                 = 3;
//! }
//! message Record {
//!   required uint64 partition_key_index     = 1;
//!   optional uint64 explicit_hash_key_index = 2;
//!   required bytes  data                    = 3;
//!   repeated Tag    tags                    = 4;
//! }
//! message Tag { required string key = 1; optional string value = 2; }
//! ```
//!
//! Kinesthetic's stamp travels in a tag, so the event's bytes are untouched
//! and any KPL de-aggregator still reads the events. To keep the overhead
//! negligible the tag is written only where a *run* starts: a record without
//! one has the previous record's listener and receive time and the next
//! counter. Tag `ks` = `LISTENER.COUNTER.RECEIVED_MS` (hex, decimal, decimal).
//!
//! The encoder is hand-written (it streams events into a buffer and knows the
//! exact size at every step); the decoder uses `prost` and slices the input
//! without copying event bytes.

use std::collections::HashMap;

use bytes::{BufMut, Bytes, BytesMut};
use md5::{Digest, Md5};
use prost::Message;

use crate::event::{EventId, Stamp};

pub const MAGIC: [u8; 4] = [0xf3, 0x89, 0x9a, 0xc2];
const DIGEST_LEN: usize = 16;
/// Tag key of a Kinesthetic stamp run.
pub const STAMP_TAG: &str = "ks";

mod proto {
    //! The KPL messages, for decoding.
    #[derive(Clone, PartialEq, prost::Message)]
    pub(super) struct AggregatedRecord {
        #[prost(string, repeated, tag = "1")]
        pub(super) partition_key_table: Vec<String>,
        #[prost(string, repeated, tag = "2")]
        pub(super) explicit_hash_key_table: Vec<String>,
        #[prost(message, repeated, tag = "3")]
        pub(super) records: Vec<Record>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub(super) struct Record {
        #[prost(uint64, required, tag = "1")]
        pub(super) partition_key_index: u64,
        #[prost(uint64, optional, tag = "2")]
        pub(super) explicit_hash_key_index: Option<u64>,
        #[prost(bytes = "bytes", required, tag = "3")]
        pub(super) data: bytes::Bytes,
        #[prost(message, repeated, tag = "4")]
        pub(super) tags: Vec<Tag>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub(super) struct Tag {
        #[prost(string, required, tag = "1")]
        pub(super) key: String,
        #[prost(string, optional, tag = "2")]
        pub(super) value: Option<String>,
    }
}

fn varint_len(v: u64) -> usize {
    // 1 byte per 7 bits, at least one.
    (64 - (v | 1).leading_zeros() as usize).div_ceil(7)
}

fn put_varint(buf: &mut BytesMut, mut v: u64) {
    while v >= 0x80 {
        buf.put_u8((v as u8) | 0x80);
        v >>= 7;
    }
    buf.put_u8(v as u8);
}

/// Size of a length-delimited field with a one-byte tag.
fn field_len(payload: usize) -> usize {
    1 + varint_len(payload as u64) + payload
}

fn stamp_tag_value(s: &Stamp) -> String {
    format!("{:x}.{}.{}", s.id.listener, s.id.counter, s.received_ms)
}

/// Packs events into one aggregated record, knowing its exact encoded size
/// at every step so it never exceeds its limit.
#[derive(Debug)]
pub struct Aggregator {
    limit: usize,
    keys: HashMap<String, u64>,
    /// The last key used and its index: consecutive events mostly share
    /// one key, and comparing it is cheaper than hashing it.
    last_key: Option<(String, u64)>,
    key_table: BytesMut,
    records: BytesMut,
    events: usize,
    last: Option<Stamp>,
    first_key: Option<String>,
    stamp_bytes: usize,
}

/// A finished aggregated record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Aggregated {
    /// The bytes to put: magic, protobuf, MD5.
    pub data: Bytes,
    /// Partition key of the first event (the record's own key).
    pub partition_key: String,
    pub events: usize,
    /// Bytes spent on stamp tags (for the packing figures).
    pub stamp_bytes: usize,
}

/// A finished record still missing its MD5 trailer.
#[derive(Debug)]
pub struct Unsealed {
    /// Magic and protobuf.
    body: BytesMut,
    partition_key: String,
    events: usize,
    stamp_bytes: usize,
}

impl Unsealed {
    /// Appends the MD5 of the protobuf: the record is complete.
    pub fn seal(mut self) -> Aggregated {
        let digest = Md5::digest(&self.body[MAGIC.len()..]);
        self.body.put_slice(&digest);
        Aggregated {
            data: self.body.freeze(),
            partition_key: self.partition_key,
            events: self.events,
            stamp_bytes: self.stamp_bytes,
        }
    }

    /// Size of the sealed record, bytes.
    pub fn len(&self) -> usize {
        self.body.len() + DIGEST_LEN
    }

    pub fn is_empty(&self) -> bool {
        false
    }
}

impl Aggregator {
    /// An aggregator whose records stay within `limit` bytes, magic and
    /// checksum included.
    pub fn new(limit: usize) -> Self {
        Self {
            limit,
            keys: HashMap::new(),
            last_key: None,
            key_table: BytesMut::new(),
            records: BytesMut::new(),
            events: 0,
            last: None,
            first_key: None,
            stamp_bytes: 0,
        }
    }

    pub fn len(&self) -> usize {
        self.events
    }

    pub fn is_empty(&self) -> bool {
        self.events == 0
    }

    /// Encoded size if finished now.
    pub fn size(&self) -> usize {
        MAGIC.len() + self.key_table.len() + self.records.len() + DIGEST_LEN
    }

    /// Index of `key` in the key table, if it is there.
    fn key_index(&self, key: &str) -> Option<u64> {
        match &self.last_key {
            Some((k, i)) if k == key => Some(*i),
            _ => self.keys.get(key).copied(),
        }
    }

    fn continues_run(&self, stamp: &Stamp) -> bool {
        self.last.is_some_and(|l| {
            l.id.listener == stamp.id.listener
                && l.received_ms == stamp.received_ms
                && l.id.counter.checked_add(1) == Some(stamp.id.counter)
        })
    }

    /// Bytes the event would add: (record field, key-table growth, the
    /// record message alone, the tag value if one is needed).
    fn cost(
        &self,
        key: &str,
        data_len: usize,
        stamp: &Stamp,
    ) -> (usize, usize, usize, Option<String>) {
        let (key_index, key_growth) = match self.key_index(key) {
            Some(i) => (i, 0),
            None => (self.keys.len() as u64, field_len(key.len())),
        };
        let tag = (!self.continues_run(stamp)).then(|| stamp_tag_value(stamp));
        let tag_len = tag.as_ref().map_or(0, |v| {
            field_len(field_len(STAMP_TAG.len()) + field_len(v.len()))
        });
        let msg = 1 + varint_len(key_index) + field_len(data_len) + tag_len;
        (field_len(msg), key_growth, msg, tag)
    }

    /// Adds an event if the record stays within its limit; returns false
    /// (and changes nothing) otherwise.
    pub fn try_push(&mut self, key: &str, data: &[u8], stamp: Stamp) -> bool {
        let (record_len, key_growth, msg_len, tag) = self.cost(key, data.len(), &stamp);
        if self.size() + record_len + key_growth > self.limit {
            return false;
        }
        let key_index = match self.key_index(key) {
            Some(i) => i,
            None => {
                let i = self.keys.len() as u64;
                self.keys.insert(key.to_owned(), i);
                self.key_table.put_u8(0x0a); // field 1, length-delimited
                put_varint(&mut self.key_table, key.len() as u64);
                self.key_table.put_slice(key.as_bytes());
                i
            }
        };
        match &mut self.last_key {
            Some((k, i)) if k == key => debug_assert_eq!(*i, key_index),
            Some((k, i)) => {
                k.clear();
                k.push_str(key);
                *i = key_index;
            }
            None => self.last_key = Some((key.to_owned(), key_index)),
        }
        let r = &mut self.records;
        r.put_u8(0x1a); // field 3, length-delimited
        put_varint(r, msg_len as u64);
        r.put_u8(0x08); // partition_key_index, varint
        put_varint(r, key_index);
        r.put_u8(0x1a); // data
        put_varint(r, data.len() as u64);
        r.put_slice(data);
        if let Some(v) = tag {
            let before = r.len();
            r.put_u8(0x22); // tags
            put_varint(r, (field_len(STAMP_TAG.len()) + field_len(v.len())) as u64);
            r.put_u8(0x0a);
            put_varint(r, STAMP_TAG.len() as u64);
            r.put_slice(STAMP_TAG.as_bytes());
            r.put_u8(0x12);
            put_varint(r, v.len() as u64);
            r.put_slice(v.as_bytes());
            self.stamp_bytes += r.len() - before;
        }
        if self.first_key.is_none() {
            self.first_key = Some(key.to_owned());
        }
        self.last = Some(stamp);
        self.events += 1;
        true
    }

    /// The record so far; the aggregator is empty afterwards.
    pub fn finish(&mut self) -> Aggregated {
        self.finish_unsealed().seal()
    }

    /// The record so far without its MD5 trailer, which [`Unsealed::seal`]
    /// adds: the producer seals a cycle's records in parallel, since MD5
    /// over every byte is the packing's largest cost. The aggregator is
    /// empty afterwards.
    pub fn finish_unsealed(&mut self) -> Unsealed {
        let mut out = BytesMut::with_capacity(self.size());
        out.put_slice(&MAGIC);
        out.put_slice(&self.key_table);
        out.put_slice(&self.records);
        let unsealed = Unsealed {
            body: out,
            partition_key: self.first_key.take().unwrap_or_default(),
            events: self.events,
            stamp_bytes: self.stamp_bytes,
        };
        self.stamp_bytes = 0;
        self.keys.clear();
        self.last_key = None;
        self.key_table.clear();
        self.records.clear();
        self.events = 0;
        self.last = None;
        unsealed
    }

    /// The largest event (bytes) that fits alone in a record of `limit`
    /// bytes with a partition key of `key_len` bytes and a stamp tag.
    pub fn max_event_len(limit: usize, key_len: usize) -> usize {
        let stamp = Stamp {
            id: EventId {
                listener: u64::MAX,
                counter: u64::MAX,
            },
            received_ms: i64::MAX,
        };
        let fixed = MAGIC.len() + DIGEST_LEN + field_len(key_len);
        let tag = stamp_tag_value(&stamp);
        let tag_len = field_len(field_len(STAMP_TAG.len()) + field_len(tag.len()));
        // record field: 1 + varint(msg) + msg; msg = 2 + field_len(data) + tag.
        // Search down from the naive bound; varint sizes change by few bytes.
        let mut n = limit.saturating_sub(fixed + tag_len + 2);
        while n > 0 && fixed + field_len(2 + field_len(n) + tag_len) > limit {
            n -= 1;
        }
        n
    }
}

/// One event read back from a stream record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    pub partition_key: String,
    pub explicit_hash_key: Option<String>,
    pub data: Bytes,
    /// Present when a Kinesthetic intake stamped the event.
    pub stamp: Option<Stamp>,
}

/// What a stream record held.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decoded {
    /// A plain record (no KPL magic, or a checksum that does not match): one
    /// event, the record itself.
    Plain,
    /// A KPL aggregated record and its events, in order.
    Aggregated(Vec<Event>),
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KplError {
    #[error("KPL record has a valid checksum but its protobuf is malformed: {0}")]
    Protobuf(String),
    #[error("KPL record {record}: partition key index {index} is outside the table of {table}")]
    KeyIndex {
        record: usize,
        index: u64,
        table: usize,
    },
    #[error("KPL record {record}: explicit hash key index {index} is outside the table of {table}")]
    HashKeyIndex {
        record: usize,
        index: u64,
        table: usize,
    },
    #[error("KPL record {record}: stamp tag {value:?} is not LISTENER.COUNTER.RECEIVED_MS")]
    Stamp { record: usize, value: String },
    #[error("KPL record {record}: unstamped event follows a stamped one")]
    StampGap { record: usize },
    #[error("KPL key table entry {index} is {chars} characters; Kinesis allows {MAX_KEY_CHARS}")]
    KeyTooLong { index: usize, chars: usize },
    #[error(
        "KPL record of {bytes} bytes would expand to {expanded} bytes of partition keys \
         (more than {KEY_EXPANSION} times its size): refused"
    )]
    KeyExpansion { bytes: usize, expanded: usize },
}

/// Longest partition key Kinesis accepts, in characters.
pub const MAX_KEY_CHARS: usize = kinesthetic_filter::rules::MAX_KEY_CHARS;

/// Every decoded event carries its own copy of its key: a record whose
/// keys would take more than this many times its own size is refused, so a
/// small crafted record cannot make a reader allocate gigabytes.
pub const KEY_EXPANSION: usize = 64;

/// Whether `data` looks like a KPL aggregated record (magic and checksum).
pub fn is_aggregated(data: &[u8]) -> bool {
    data.len() >= MAGIC.len() + DIGEST_LEN && data[..MAGIC.len()] == MAGIC && {
        let body = &data[MAGIC.len()..data.len() - DIGEST_LEN];
        Md5::digest(body)[..] == data[data.len() - DIGEST_LEN..]
    }
}

/// The lowest and highest hash key among an aggregated record's key
/// tables (the MD5 of each partition key, each explicit hash key): where
/// its sub-records go. `None` for a record without the KPL magic or whose
/// tables cannot be read (a plain record, one hash: its own key's). Reads
/// only the tables, without checking the MD5 trailer, so it is cheap
/// enough for every put.
pub fn hash_span(data: &[u8]) -> Option<(u128, u128)> {
    if data.len() < MAGIC.len() + DIGEST_LEN || data[..MAGIC.len()] != MAGIC {
        return None;
    }
    let mut body = &data[MAGIC.len()..data.len() - DIGEST_LEN];
    let mut span: Option<(u128, u128)> = None;
    let mut take = |h: u128| {
        span = Some(span.map_or((h, h), |(lo, hi)| (lo.min(h), hi.max(h))));
    };
    while !body.is_empty() {
        let tag = prost::encoding::decode_varint(&mut body).ok()?;
        match (tag >> 3, tag & 7) {
            (field, 2) => {
                let len = usize::try_from(prost::encoding::decode_varint(&mut body).ok()?).ok()?;
                let value = body.get(..len)?;
                body = &body[len..];
                match field {
                    1 => take(crate::stream::hash_key_of(std::str::from_utf8(value).ok()?)),
                    2 => take(std::str::from_utf8(value).ok()?.parse().ok()?),
                    _ => {}
                }
            }
            (_, 0) => {
                prost::encoding::decode_varint(&mut body).ok()?;
            }
            _ => return None,
        }
    }
    span
}

/// Where a record's events go: its [`hash_span`], or for a plain record
/// the hash of `partition_key`.
pub fn span_of(data: &[u8], partition_key: &str) -> (u128, u128) {
    hash_span(data).unwrap_or_else(|| {
        let h = crate::stream::hash_key_of(partition_key);
        (h, h)
    })
}

fn parse_stamp(v: &str) -> Option<Stamp> {
    let mut it = v.split('.');
    let listener = u64::from_str_radix(it.next()?, 16).ok()?;
    let counter = it.next()?.parse().ok()?;
    let received_ms = it.next()?.parse().ok()?;
    it.next().is_none().then_some(Stamp {
        id: EventId { listener, counter },
        received_ms,
    })
}

/// Reads a stream record: a KPL aggregated record becomes its events, any
/// other record is [`Decoded::Plain`] (one event, the record's own bytes).
pub fn decode(data: &Bytes) -> Result<Decoded, KplError> {
    if !is_aggregated(data) {
        return Ok(Decoded::Plain);
    }
    let body = data.slice(MAGIC.len()..data.len() - DIGEST_LEN);
    let agg =
        proto::AggregatedRecord::decode(body).map_err(|e| KplError::Protobuf(e.to_string()))?;
    for (index, k) in agg.partition_key_table.iter().enumerate() {
        if k.len() > MAX_KEY_CHARS {
            let chars = k.chars().count();
            if chars > MAX_KEY_CHARS {
                return Err(KplError::KeyTooLong { index, chars });
            }
        }
    }
    let expanded: usize = agg
        .records
        .iter()
        .map(|r| {
            usize::try_from(r.partition_key_index)
                .ok()
                .and_then(|k| agg.partition_key_table.get(k))
                .map_or(0, String::len)
                + r.explicit_hash_key_index
                    .and_then(|x| usize::try_from(x).ok())
                    .and_then(|k| agg.explicit_hash_key_table.get(k))
                    .map_or(0, String::len)
        })
        .sum();
    if expanded > KEY_EXPANSION * data.len() {
        return Err(KplError::KeyExpansion {
            bytes: data.len(),
            expanded,
        });
    }
    let mut events = Vec::with_capacity(agg.records.len());
    let mut run: Option<Stamp> = None;
    for (i, r) in agg.records.into_iter().enumerate() {
        let key = usize::try_from(r.partition_key_index)
            .ok()
            .and_then(|k| agg.partition_key_table.get(k))
            .ok_or(KplError::KeyIndex {
                record: i,
                index: r.partition_key_index,
                table: agg.partition_key_table.len(),
            })?;
        let explicit_hash_key = match r.explicit_hash_key_index {
            None => None,
            Some(x) => Some(
                usize::try_from(x)
                    .ok()
                    .and_then(|k| agg.explicit_hash_key_table.get(k))
                    .cloned()
                    .ok_or(KplError::HashKeyIndex {
                        record: i,
                        index: x,
                        table: agg.explicit_hash_key_table.len(),
                    })?,
            ),
        };
        let tag = r.tags.iter().find(|t| t.key == STAMP_TAG);
        let stamp = match tag {
            Some(t) => {
                let v = t.value.as_deref().unwrap_or("");
                Some(parse_stamp(v).ok_or_else(|| KplError::Stamp {
                    record: i,
                    value: v.to_owned(),
                })?)
            }
            None => match run {
                None => None,
                Some(prev) => Some(Stamp {
                    id: EventId {
                        listener: prev.id.listener,
                        counter: prev
                            .id
                            .counter
                            .checked_add(1)
                            .ok_or(KplError::StampGap { record: i })?,
                    },
                    received_ms: prev.received_ms,
                }),
            },
        };
        run = stamp;
        events.push(Event {
            partition_key: key.clone(),
            explicit_hash_key,
            data: r.data,
            stamp,
        });
    }
    Ok(Decoded::Aggregated(events))
}

/// The events of a stream record: its KPL events, or the record itself as
/// one unstamped event.
pub fn events_of(data: &Bytes, partition_key: &str) -> Result<Vec<Event>, KplError> {
    Ok(match decode(data)? {
        Decoded::Aggregated(events) => events,
        Decoded::Plain => vec![Event {
            partition_key: partition_key.to_owned(),
            explicit_hash_key: None,
            data: data.clone(),
            stamp: None,
        }],
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stamp(listener: u64, counter: u64, ms: i64) -> Stamp {
        Stamp {
            id: EventId { listener, counter },
            received_ms: ms,
        }
    }

    #[test]
    fn the_hash_span_covers_every_key_of_a_record() {
        use crate::stream::hash_key_of;
        let mut a = Aggregator::new(1 << 20);
        let keys = ["alpha", "beta", "gamma", "delta"];
        for (i, k) in keys.iter().enumerate() {
            assert!(a.try_push(k, b"x", stamp(1, i as u64, 5)));
        }
        let agg = a.finish();
        let hashes: Vec<u128> = keys.iter().map(|k| hash_key_of(k)).collect();
        let lo = hashes.iter().copied().min().unwrap_or(0);
        let hi = hashes.iter().copied().max().unwrap_or(0);
        assert_eq!(hash_span(&agg.data), Some((lo, hi)));
        // Plain records and truncated ones have none.
        assert_eq!(hash_span(b"plain text"), None);
        assert_eq!(hash_span(&agg.data[..12]), None);
    }

    #[test]
    fn round_trip_with_runs_and_keys() {
        let mut a = Aggregator::new(1 << 20);
        let evs = [
            ("k1", &b"one"[..], stamp(7, 1, 100)),
            ("k2", b"two", stamp(7, 2, 100)),
            ("k1", b"", stamp(7, 3, 100)),
            ("k1", b"four", stamp(7, 10, 100)),
            ("k3", b"five", stamp(8, 11, 100)),
            ("k3", b"six", stamp(8, 12, 101)),
        ];
        for (k, d, s) in evs {
            let before = a.size();
            assert!(a.try_push(k, d, s));
            assert!(a.size() > before);
        }
        let size = a.size();
        let agg = a.finish();
        assert_eq!(agg.data.len(), size, "size() is exact");
        assert_eq!(agg.partition_key, "k1");
        assert_eq!(agg.events, 6);
        assert!(a.is_empty());
        let Decoded::Aggregated(out) = decode(&agg.data).unwrap_or(Decoded::Plain) else {
            panic!("not aggregated")
        };
        assert_eq!(out.len(), 6);
        for (e, (k, d, s)) in out.iter().zip(evs) {
            assert_eq!(e.partition_key, k);
            assert_eq!(&e.data[..], d);
            assert_eq!(e.stamp, Some(s));
        }
    }

    #[test]
    fn a_reused_aggregator_starts_a_fresh_key_table() {
        let mut a = Aggregator::new(1 << 20);
        assert!(a.try_push("k1", b"a", stamp(1, 1, 5)));
        assert!(a.try_push("k2", b"b", stamp(1, 2, 5)));
        let first = a.finish_unsealed();
        assert_eq!(first.len(), first.seal().data.len());
        // "k2" was the last key used: the next record must not reuse its index.
        for (k, c) in [("k2", 3), ("k1", 4), ("k2", 5)] {
            assert!(a.try_push(k, c.to_string().as_bytes(), stamp(1, c, 5)));
        }
        let agg = a.finish();
        let Decoded::Aggregated(out) = decode(&agg.data).unwrap_or(Decoded::Plain) else {
            panic!("not aggregated")
        };
        let keys: Vec<&str> = out.iter().map(|e| e.partition_key.as_str()).collect();
        assert_eq!(keys, ["k2", "k1", "k2"]);
        assert_eq!(agg.partition_key, "k2");
    }

    #[test]
    fn the_limit_is_never_exceeded() {
        let limit = 10_000;
        let mut a = Aggregator::new(limit);
        let mut n = 0;
        while a.try_push("key", &[b'x'; 200], stamp(1, n, 5)) {
            n += 1;
        }
        assert!(n > 40, "{n} events");
        let size = a.size();
        assert!(size <= limit);
        let agg = a.finish();
        assert_eq!(agg.data.len(), size);
        // And the refused event fits in a fresh one.
        assert!(a.try_push("key", &[b'x'; 200], stamp(1, n, 5)));
    }

    #[test]
    fn max_event_len_is_tight() {
        for limit in [100usize, 1000, 70_000, 1_040_000] {
            let n = Aggregator::max_event_len(limit, 3);
            let s = stamp(u64::MAX, u64::MAX, i64::MAX);
            let mut a = Aggregator::new(limit);
            assert!(a.try_push("abc", &vec![0; n], s), "limit {limit}: {n} fits");
            let mut a = Aggregator::new(limit);
            assert!(
                !a.try_push("abc", &vec![0; n + 1], s),
                "limit {limit}: {} does not",
                n + 1
            );
        }
    }

    #[test]
    fn plain_records_and_bad_checksums_are_plain() {
        assert_eq!(decode(&Bytes::from_static(b"hello")), Ok(Decoded::Plain));
        let mut a = Aggregator::new(1000);
        assert!(a.try_push("k", b"x", stamp(1, 1, 1)));
        let mut data = a.finish().data.to_vec();
        let last = data.len() - 1;
        data[last] ^= 1;
        assert_eq!(decode(&Bytes::from(data)), Ok(Decoded::Plain));
        let ev = events_of(&Bytes::from_static(b"plain"), "pk").unwrap_or_default();
        assert_eq!(ev.len(), 1);
        assert_eq!(ev[0].partition_key, "pk");
        assert_eq!(ev[0].stamp, None);
    }

    /// A KPL record around `agg`, magic and checksum included.
    fn crafted(agg: &proto::AggregatedRecord) -> Bytes {
        let body = prost::Message::encode_to_vec(agg);
        let mut data = MAGIC.to_vec();
        data.extend_from_slice(&body);
        data.extend_from_slice(&Md5::digest(&body));
        Bytes::from(data)
    }

    fn empty_events(n: usize) -> Vec<proto::Record> {
        (0..n)
            .map(|_| proto::Record {
                partition_key_index: 0,
                explicit_hash_key_index: None,
                data: Bytes::new(),
                tags: Vec::new(),
            })
            .collect()
    }

    #[test]
    fn a_key_longer_than_kinesis_allows_is_refused() {
        let agg = proto::AggregatedRecord {
            partition_key_table: vec!["k".repeat(MAX_KEY_CHARS + 1)],
            explicit_hash_key_table: Vec::new(),
            records: empty_events(1),
        };
        let e = decode(&crafted(&agg));
        assert!(
            matches!(
                e,
                Err(KplError::KeyTooLong {
                    index: 0,
                    chars: 257
                })
            ),
            "{e:?}"
        );
        // 256 characters of 4 bytes each are within the limit.
        let agg = proto::AggregatedRecord {
            partition_key_table: vec!["😀".repeat(MAX_KEY_CHARS)],
            ..agg
        };
        let one = decode(&crafted(&agg)).map(|d| match d {
            Decoded::Aggregated(ev) => ev.len(),
            Decoded::Plain => 0,
        });
        assert_eq!(one, Ok(1));
    }

    #[test]
    fn a_small_record_cannot_expand_into_a_huge_allocation() {
        // 20,000 empty events sharing one key of 256 four-byte characters:
        // about 120 KB that would decode into 20 MB of key copies.
        let key = "😀".repeat(MAX_KEY_CHARS);
        let agg = proto::AggregatedRecord {
            partition_key_table: vec![key.clone()],
            explicit_hash_key_table: Vec::new(),
            records: empty_events(20_000),
        };
        let data = crafted(&agg);
        let e = decode(&data);
        let summary = match &e {
            Ok(Decoded::Aggregated(ev)) => format!("{} events", ev.len()),
            other => format!("{other:?}"),
        };
        assert!(
            matches!(e, Err(KplError::KeyExpansion { expanded, .. }) if expanded == 20_000 * key.len()),
            "{} bytes: {summary}",
            data.len()
        );
        // What the intake packs is far from the bound.
        let mut a = Aggregator::new(1 << 20);
        let key = "k".repeat(MAX_KEY_CHARS);
        let mut n = 0u64;
        while a.try_push(&key, b"{}", stamp(1, n, 1)) {
            n += 1;
        }
        let packed = a.finish().data;
        let decoded = decode(&packed).map(|d| match d {
            Decoded::Aggregated(ev) => ev.len() as u64,
            Decoded::Plain => 0,
        });
        assert_eq!(decoded, Ok(n));
    }

    #[test]
    fn corrupt_protobuf_with_valid_checksum_is_an_error() {
        let body = [0x1a, 0x05, 0x08]; // a record that claims 5 bytes, has 1
        let mut data = MAGIC.to_vec();
        data.extend_from_slice(&body);
        data.extend_from_slice(&Md5::digest(body));
        let e = decode(&Bytes::from(data));
        assert!(matches!(e, Err(KplError::Protobuf(_))), "{e:?}");
    }
}
