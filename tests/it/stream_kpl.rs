//! The KPL aggregation format against the official implementation for
//! Python, `aws_kinesis_agg` (run from `KPL_PYTHON`, the venv of `cargo
//! xtask services up`), plus a seeded fuzz test of the decoder.
//!
//! Records travel between the two as JSON files with hex-encoded bytes.

use std::path::Path;
use std::process::Command;

use bytes::Bytes;
use kinesthetic::event::{EventId, Stamp};
use kinesthetic::stream::kpl::{self, Aggregator, Decoded, Event, KplError, MAGIC, STAMP_TAG};
use md5::{Digest, Md5};
use serde_json::{Value, json};

use crate::services::kpl_python;

type R = Result<(), Box<dyn std::error::Error>>;

/// The Python side: `aggregate IN OUT MAX_SIZE` packs user records with the
/// library's `RecordAggregator`; `deaggregate IN OUT` unpacks records with
/// its `deaggregate_records` and, for aggregated ones, lists each user
/// record's tags as the library's own protobuf classes read them.
const SCRIPT: &str = r#"
import base64, json, sys
# The library's modules first: they put their folder on sys.path, which its
# messages_pb2 needs to import config_pb2.
from aws_kinesis_agg.aggregator import RecordAggregator
from aws_kinesis_agg.deaggregator import deaggregate_records
from aws_kinesis_agg import MAGIC, DIGEST_SIZE, messages_pb2

def aggregate(inp, out, max_size):
    agg = RecordAggregator(max_size=max_size)
    done = []
    def emit(rec):
        pk, ehk, data = rec.get_contents()
        done.append({"pk": pk, "ehk": ehk, "data": data.hex(),
                     "n": rec.get_num_user_records()})
    for r in json.load(open(inp)):
        full = agg.add_user_record(r["pk"], bytes.fromhex(r["data"]), r["ehk"])
        if full is not None:
            emit(full)
    last = agg.clear_and_get()
    if last is not None:
        emit(last)
    json.dump(done, open(out, "w"))

def deaggregate(inp, out):
    result = []
    for i, r in enumerate(json.load(open(inp))):
        data = bytes.fromhex(r["data"])
        record = {"kinesis": {
            "kinesisSchemaVersion": "1.0", "sequenceNumber": str(i),
            "approximateArrivalTimestamp": 0, "partitionKey": r["pk"],
            "data": base64.b64encode(data).decode()}}
        users = []
        for u in deaggregate_records([record]):
            k = u["kinesis"]
            users.append({"pk": k["partitionKey"],
                          "data": base64.b64decode(k["data"]).hex(),
                          "aggregated": k.get("aggregated", False),
                          "sub": k.get("subSequenceNumber")})
        tags = None
        if any(u["aggregated"] for u in users):
            ar = messages_pb2.AggregatedRecord()
            ar.ParseFromString(data[len(MAGIC):-DIGEST_SIZE])
            tags = [[[t.key, t.value if t.HasField("value") else None] for t in rec.tags]
                    for rec in ar.records]
        result.append({"users": users, "tags": tags})
    json.dump(result, open(out, "w"))

mode = sys.argv[1]
if mode == "aggregate":
    aggregate(sys.argv[2], sys.argv[3], int(sys.argv[4]))
elif mode == "deaggregate":
    deaggregate(sys.argv[2], sys.argv[3])
else:
    sys.exit("unknown mode " + mode)
"#;

/// Runs the script's `mode` on `input`; fails on a non-zero exit or on
/// anything on stderr (the deaggregator reports its errors there and
/// carries on).
fn python(py: &Path, mode: &str, input: &Value, extra: &[&str]) -> Result<Value, String> {
    let dir = tempfile::tempdir().map_err(|e| format!("temp dir: {e}"))?;
    let script = dir.path().join("kpl.py");
    let inp = dir.path().join("in.json");
    let out = dir.path().join("out.json");
    std::fs::write(&script, SCRIPT).map_err(|e| format!("{}: {e}", script.display()))?;
    std::fs::write(&inp, input.to_string()).map_err(|e| format!("{}: {e}", inp.display()))?;
    let run = Command::new(py)
        .arg(&script)
        .arg(mode)
        .arg(&inp)
        .arg(&out)
        .args(extra)
        .output()
        .map_err(|e| format!("cannot run {}: {e}", py.display()))?;
    let stderr = String::from_utf8_lossy(&run.stderr);
    if !run.status.success() || !stderr.trim().is_empty() {
        return Err(format!("{} {mode}: {}: {stderr}", py.display(), run.status));
    }
    let text = std::fs::read_to_string(&out).map_err(|e| format!("{}: {e}", out.display()))?;
    serde_json::from_str(&text).map_err(|e| format!("{}: {e}", out.display()))
}

fn field<'a>(v: &'a Value, key: &str) -> &'a Value {
    v.get(key).unwrap_or_else(|| panic!("no {key:?} in {v}"))
}

fn text(v: &Value, key: &str) -> String {
    field(v, key)
        .as_str()
        .unwrap_or_else(|| panic!("{key:?} is not a string in {v}"))
        .to_owned()
}

fn bytes_of(v: &Value, key: &str) -> Bytes {
    Bytes::from(hex::decode(text(v, key)).unwrap_or_else(|e| panic!("{key:?} in {v}: {e}")))
}

fn array(v: &Value) -> &Vec<Value> {
    v.as_array().unwrap_or_else(|| panic!("not an array: {v}"))
}

/// Deterministic pseudo-random numbers (SplitMix64), so failures repeat.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (n > 0).
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    fn chance(&mut self, percent: u64) -> bool {
        self.next() % 100 < percent
    }

    fn bytes(&mut self, len: usize) -> Vec<u8> {
        (0..len).map(|_| self.next() as u8).collect()
    }

    /// Random bytes, `0..max` of them.
    fn bytes_below(&mut self, max: usize) -> Vec<u8> {
        let len = self.below(max);
        self.bytes(len)
    }
}

fn stamp(listener: u64, counter: u64, received_ms: i64) -> Stamp {
    Stamp {
        id: EventId { listener, counter },
        received_ms,
    }
}

/// The stamp tag's value, as the module documents it.
fn tag_value(s: &Stamp) -> String {
    format!("{:x}.{}.{}", s.id.listener, s.id.counter, s.received_ms)
}

#[test]
fn records_aggregated_by_the_python_library_decode() -> R {
    let Some(py) = kpl_python() else {
        return Ok(());
    };
    let mut rng = Rng(11);
    let keys = [
        "alpha".to_owned(),
        "beta".to_owned(),
        "γάμμα-κλειδί".to_owned(),
        "k".repeat(256),
    ];
    let ehks = ["0", "340282366920938463463374607431768211455", "12345"];
    let inputs: Vec<(String, Option<String>, Vec<u8>)> = (0..1500usize)
        .map(|i| {
            let pk = keys[i % keys.len()].clone();
            let ehk = (i % 7 == 3).then(|| ehks[i % ehks.len()].to_owned());
            let data = match i % 10 {
                0 => Vec::new(),
                1 | 4 => rng.bytes_below(3000),
                // User data that itself looks like an aggregated record.
                2 => [&MAGIC[..], &rng.bytes(40)].concat(),
                _ => format!("{{\"n\":{i},\"msg\":\"event {i}\"}}").into_bytes(),
            };
            (pk, ehk, data)
        })
        .collect();
    let input: Value = inputs
        .iter()
        .map(|(pk, ehk, data)| json!({"pk": pk, "ehk": ehk, "data": hex::encode(data)}))
        .collect();
    let max_size = 64 * 1024;
    let out = python(&py, "aggregate", &input, &[&max_size.to_string()])?;
    let records = array(&out);
    assert!(records.len() >= 10, "{} aggregated records", records.len());

    let mut events: Vec<Event> = Vec::new();
    for (r, rec) in records.iter().enumerate() {
        let data = bytes_of(rec, "data");
        assert!(data.len() <= max_size, "record {r}: {} bytes", data.len());
        assert!(kpl::is_aggregated(&data), "record {r}");
        let Decoded::Aggregated(evs) = kpl::decode(&data)? else {
            panic!("record {r} decoded as plain")
        };
        assert_eq!(
            Some(evs.len() as u64),
            field(rec, "n").as_u64(),
            "record {r}"
        );
        // The library keys the record by its first user record.
        assert_eq!(evs[0].partition_key, text(rec, "pk"), "record {r}");
        assert_eq!(kpl::events_of(&data, "ignored")?, evs, "record {r}");
        events.extend(evs);
    }
    assert_eq!(events.len(), inputs.len());
    for (i, (e, (pk, ehk, data))) in events.iter().zip(&inputs).enumerate() {
        assert_eq!(&e.partition_key, pk, "user record {i}");
        assert_eq!(&e.explicit_hash_key, ehk, "user record {i}");
        assert_eq!(&e.data[..], &data[..], "user record {i}");
        assert_eq!(e.stamp, None, "user record {i}");
    }
    Ok(())
}

#[test]
fn records_of_our_aggregator_are_read_by_the_python_library() -> R {
    let Some(py) = kpl_python() else {
        return Ok(());
    };
    let mut rng = Rng(12);
    let keys = ["k1", "k2", "ключ", "a-much-longer-partition-key-0123456789"];
    // Runs of stamps: same listener and receive time, consecutive counters;
    // a new run now and then.
    let (mut listener, mut counter, mut ms) = (0xfeed_u64, 0u64, 1_700_000_000_000i64);
    let mut inputs: Vec<(&str, Vec<u8>, Stamp)> = Vec::new();
    for i in 0..1500usize {
        match rng.below(20) {
            0 => listener = rng.next(),
            1 => ms += 1,
            2 => counter = counter.wrapping_add(5),
            3 => counter = u64::MAX - 1,
            _ => {}
        }
        counter = counter.wrapping_add(1);
        let data = match i % 9 {
            0 => Vec::new(),
            1 => rng.bytes_below(2000),
            _ => format!("line {i} of the test\n").into_bytes(),
        };
        inputs.push((
            keys[rng.below(keys.len())],
            data,
            stamp(listener, counter, ms),
        ));
    }

    // Pack into records of at most 16 KiB, as the intake would.
    let mut agg = Aggregator::new(16 * 1024);
    let mut packed: Vec<(kpl::Aggregated, Vec<usize>)> = Vec::new();
    let mut members: Vec<usize> = Vec::new();
    for (i, (key, data, s)) in inputs.iter().enumerate() {
        if !agg.try_push(key, data, *s) {
            packed.push((agg.finish(), std::mem::take(&mut members)));
            assert!(
                agg.try_push(key, data, *s),
                "event {i} fits an empty record"
            );
        }
        members.push(i);
    }
    packed.push((agg.finish(), members));
    assert!(packed.len() >= 10, "{} records", packed.len());

    let input: Value = packed
        .iter()
        .map(|(a, _)| json!({"pk": a.partition_key, "data": hex::encode(&a.data)}))
        .collect();
    let out = python(&py, "deaggregate", &input, &[])?;
    let out = array(&out);
    assert_eq!(out.len(), packed.len());
    for (r, ((_, members), got)) in packed.iter().zip(out).enumerate() {
        let users = array(field(got, "users"));
        assert_eq!(users.len(), members.len(), "record {r}");
        let tags = array(field(got, "tags"));
        assert_eq!(tags.len(), members.len(), "record {r}");
        let mut prev: Option<Stamp> = None;
        for (k, ((u, t), &i)) in users.iter().zip(tags).zip(members).enumerate() {
            let (key, data, s) = &inputs[i];
            assert_eq!(text(u, "pk"), *key, "record {r}, user record {k}");
            assert_eq!(&bytes_of(u, "data")[..], &data[..], "record {r}, {k}");
            assert_eq!(field(u, "aggregated"), &json!(true), "record {r}, {k}");
            assert_eq!(field(u, "sub"), &json!(k), "record {r}, {k}");
            // The stamp tag, read by the library's protobuf classes, where a
            // run starts; none where the record continues one.
            let continues = prev.is_some_and(|p| {
                p.id.listener == s.id.listener
                    && p.received_ms == s.received_ms
                    && p.id.counter.checked_add(1) == Some(s.id.counter)
            });
            let want = if continues {
                json!([])
            } else {
                json!([[STAMP_TAG, tag_value(s)]])
            };
            assert_eq!(t, &want, "record {r}, user record {k}");
            prev = Some(*s);
        }
    }
    Ok(())
}

#[test]
fn plain_records_are_one_event_on_both_sides() -> R {
    let Some(py) = kpl_python() else {
        return Ok(());
    };
    let line = b"{\"a plain\":\"record\"}\n".to_vec();
    // The magic but a wrong checksum: plain for both.
    let mut bad_md5 = MAGIC.to_vec();
    bad_md5.extend_from_slice(&[0x0a, 0x01, b'k']);
    bad_md5.extend_from_slice(&[0u8; 16]);
    // A valid checksum over a body that is not protobuf.
    let body = [0x1a, 0x05, 0x08];
    let mut bad_proto = MAGIC.to_vec();
    bad_proto.extend_from_slice(&body);
    bad_proto.extend_from_slice(&Md5::digest(body));
    let cases = [&line, &bad_md5, &MAGIC.to_vec(), &Vec::new(), &bad_proto];
    let input: Value = cases
        .iter()
        .map(|d| json!({"pk": "plain-key", "data": hex::encode(d)}))
        .collect();
    let out = python(&py, "deaggregate", &input, &[])?;
    for (c, (data, got)) in cases.iter().zip(array(&out)).enumerate() {
        let users = array(field(got, "users"));
        assert_eq!(users.len(), 1, "case {c}: {got}");
        assert_eq!(field(&users[0], "aggregated"), &json!(false), "case {c}");
        assert_eq!(&bytes_of(&users[0], "data")[..], &data[..], "case {c}");
        let data = Bytes::from((*data).clone());
        if c == cases.len() - 1 {
            // Here the two differ on purpose: the library passes the record
            // on as plain, we refuse it, since its checksum says it is an
            // aggregated record that was written wrong.
            assert!(
                matches!(kpl::decode(&data), Err(KplError::Protobuf(_))),
                "case {c}"
            );
            continue;
        }
        assert_eq!(kpl::decode(&data), Ok(Decoded::Plain), "case {c}");
        let evs = kpl::events_of(&data, "plain-key")?;
        assert_eq!(evs.len(), 1, "case {c}");
        assert_eq!(
            (evs[0].partition_key.as_str(), &evs[0].data, evs[0].stamp),
            ("plain-key", &data, None),
            "case {c}"
        );
    }
    Ok(())
}

// ---- fuzzing the decoder ---------------------------------------------------

/// A KPL record as a model, which may break the format's rules on purpose:
/// indices outside the tables, strings that are not UTF-8, bad stamp tags.
#[derive(Debug, Clone, Default)]
struct Model {
    keys: Vec<Vec<u8>>,
    hash_keys: Vec<Vec<u8>>,
    records: Vec<ModelRecord>,
    /// Order of the top-level fields on the wire (protobuf allows any
    /// interleaving; each repeated field keeps its own order), with
    /// fields of unknown numbers the decoder must skip.
    order: Vec<Top>,
    /// A field with a wire type its number does not have.
    wrong_wire_type: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Top {
    Key,
    HashKey,
    Record,
    Unknown,
}

#[derive(Debug, Clone, Default)]
struct ModelRecord {
    key_index: u64,
    hash_key_index: Option<u64>,
    data: Vec<u8>,
    tags: Vec<(Vec<u8>, Option<Vec<u8>>)>,
    /// Leave out fields whose value is the default (prost reads them so).
    omit_defaults: bool,
    /// An unknown field inside the record.
    unknown: bool,
}

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push(v as u8 | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn put_bytes(out: &mut Vec<u8>, field: u8, b: &[u8]) {
    out.push(field << 3 | 2);
    put_varint(out, b.len() as u64);
    out.extend_from_slice(b);
}

impl ModelRecord {
    fn encode(&self) -> Vec<u8> {
        let mut m = Vec::new();
        if !(self.omit_defaults && self.key_index == 0) {
            m.push(1 << 3);
            put_varint(&mut m, self.key_index);
        }
        if let Some(h) = self.hash_key_index {
            m.push(2 << 3);
            put_varint(&mut m, h);
        }
        if self.unknown {
            put_bytes(&mut m, 9, b"skip me");
        }
        if !(self.omit_defaults && self.data.is_empty()) {
            put_bytes(&mut m, 3, &self.data);
        }
        for (k, v) in &self.tags {
            let mut t = Vec::new();
            put_bytes(&mut t, 1, k);
            if let Some(v) = v {
                put_bytes(&mut t, 2, v);
            }
            put_bytes(&mut m, 4, &t);
        }
        m
    }
}

impl Model {
    /// The protobuf body, and where each top-level field ends in it.
    fn encode(&self) -> (Vec<u8>, Vec<usize>) {
        let (mut k, mut h, mut r) = (0, 0, 0);
        let mut out = Vec::new();
        let mut ends = Vec::new();
        for top in &self.order {
            match top {
                Top::Key => {
                    put_bytes(&mut out, 1, &self.keys[k]);
                    k += 1;
                }
                Top::HashKey => {
                    put_bytes(&mut out, 2, &self.hash_keys[h]);
                    h += 1;
                }
                Top::Record => {
                    put_bytes(&mut out, 3, &self.records[r].encode());
                    r += 1;
                }
                Top::Unknown => {
                    out.push(15 << 3); // field 15, varint
                    put_varint(&mut out, 300);
                }
            }
            ends.push(out.len());
        }
        if self.wrong_wire_type {
            out.push(1 << 3); // partition_key_table as a varint
            put_varint(&mut out, 1);
            ends.push(out.len());
        }
        (out, ends)
    }

    /// The model made of the first `n` top-level fields.
    fn prefix(&self, n: usize) -> Model {
        let order: Vec<Top> = self.order.iter().take(n).copied().collect();
        let count = |t: Top| order.iter().filter(|&&o| o == t).count();
        Model {
            keys: self.keys[..count(Top::Key)].to_vec(),
            hash_keys: self.hash_keys[..count(Top::HashKey)].to_vec(),
            records: self.records[..count(Top::Record)].to_vec(),
            wrong_wire_type: self.wrong_wire_type && n > self.order.len(),
            order,
        }
    }

    /// What the decoder must answer, from the model's rules alone.
    fn expected(&self) -> Result<Vec<Event>, KplError> {
        let strings = self
            .keys
            .iter()
            .chain(&self.hash_keys)
            .chain(self.records.iter().flat_map(|r| {
                r.tags
                    .iter()
                    .flat_map(|(k, v)| std::iter::once(k).chain(v.as_ref()))
            }));
        if self.wrong_wire_type || strings.clone().any(|s| std::str::from_utf8(s).is_err()) {
            return Err(KplError::Protobuf(String::new()));
        }
        let utf8 = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
        // Keys Kinesis would not take, then keys whose copies (one per
        // event) would dwarf the record.
        for (index, k) in self.keys.iter().enumerate() {
            let chars = utf8(k).chars().count();
            if chars > kpl::MAX_KEY_CHARS {
                return Err(KplError::KeyTooLong { index, chars });
            }
        }
        let expanded: usize = self
            .records
            .iter()
            .map(|r| {
                self.keys.get(r.key_index as usize).map_or(0, Vec::len)
                    + r.hash_key_index
                        .and_then(|x| self.hash_keys.get(x as usize))
                        .map_or(0, Vec::len)
            })
            .sum();
        let bytes = MAGIC.len() + self.encode().0.len() + 16;
        if expanded > kpl::KEY_EXPANSION * bytes {
            return Err(KplError::KeyExpansion { bytes, expanded });
        }
        let mut events = Vec::new();
        let mut run: Option<Stamp> = None;
        for (i, r) in self.records.iter().enumerate() {
            let key = self
                .keys
                .get(r.key_index as usize)
                .ok_or(KplError::KeyIndex {
                    record: i,
                    index: r.key_index,
                    table: self.keys.len(),
                })?;
            let hash_key = match r.hash_key_index {
                None => None,
                Some(x) => Some(utf8(self.hash_keys.get(x as usize).ok_or(
                    KplError::HashKeyIndex {
                        record: i,
                        index: x,
                        table: self.hash_keys.len(),
                    },
                )?)),
            };
            let stamp = match r.tags.iter().find(|(k, _)| k == STAMP_TAG.as_bytes()) {
                Some((_, v)) => {
                    let v = utf8(v.as_deref().unwrap_or_default());
                    Some(valid_stamp(&v).ok_or(KplError::Stamp {
                        record: i,
                        value: v,
                    })?)
                }
                None => match run {
                    None => None,
                    Some(p) => Some(stamp(
                        p.id.listener,
                        p.id.counter
                            .checked_add(1)
                            .ok_or(KplError::StampGap { record: i })?,
                        p.received_ms,
                    )),
                },
            };
            run = stamp;
            events.push(Event {
                partition_key: utf8(key),
                explicit_hash_key: hash_key,
                data: Bytes::from(r.data.clone()),
                stamp,
            });
        }
        Ok(events)
    }
}

/// Stamp tag values the generator writes: valid ones, and ones that must
/// be refused.
const BAD_STAMPS: &[&str] = &[
    "",
    "1.2",
    "1.2.3.4",
    "g.1.1",
    "1..1",
    ".1.1",
    "1.x.1",
    "1.1.",
    "1.-1.1",
    "10000000000000000.1.1",
    "1.18446744073709551616.1",
    "1.1.9223372036854775808",
    " 1.1.1",
    "1.1.1 ",
];

/// The stamp a generated tag value stands for (`None` for the bad ones).
fn valid_stamp(v: &str) -> Option<Stamp> {
    if BAD_STAMPS.contains(&v) {
        return None;
    }
    let mut it = v.split('.');
    let s = stamp(
        u64::from_str_radix(it.next()?, 16).ok()?,
        it.next()?.parse().ok()?,
        it.next()?.parse().ok()?,
    );
    (tag_value(&s) == v).then_some(s)
}

fn gen_string(rng: &mut Rng, invalid_utf8: bool) -> Vec<u8> {
    let pool = [
        "",
        "k",
        "key-1",
        "ключ",
        "🔑",
        "0",
        "340282366920938463463374607431768211455",
    ];
    let mut s = pool[rng.below(pool.len())].as_bytes().to_vec();
    if invalid_utf8 && rng.chance(3) {
        s.push(0xff);
    }
    s
}

fn gen_model(rng: &mut Rng) -> Model {
    let break_utf8 = rng.chance(10);
    let mut keys: Vec<Vec<u8>> = (0..rng.below(5))
        .map(|_| gen_string(rng, break_utf8))
        .collect();
    // Now and then a key at Kinesis's limit, or one past it.
    if rng.chance(3) {
        keys.push("🔑".repeat(kpl::MAX_KEY_CHARS).into_bytes());
    }
    if rng.chance(3) {
        keys.push("k".repeat(kpl::MAX_KEY_CHARS + 1).into_bytes());
    }
    let hash_keys: Vec<Vec<u8>> = (0..rng.below(3))
        .map(|_| gen_string(rng, break_utf8))
        .collect();
    let mut records = Vec::new();
    let (listener, mut counter, ms) = (rng.next(), rng.next() >> rng.below(64), rng.next() as i64);
    for _ in 0..rng.below(12) {
        // Mostly valid indices; now and then one past a table's end.
        let key_index = if rng.chance(95) {
            rng.below(keys.len().max(1)) as u64
        } else {
            keys.len() as u64 + rng.below(3) as u64 * u64::from(rng.chance(50)) * 1_000_000_007
        };
        let hash_key_index = rng.chance(30).then(|| {
            if rng.chance(90) {
                rng.below(hash_keys.len().max(1)) as u64
            } else {
                u64::MAX
            }
        });
        let mut tags = Vec::new();
        for _ in 0..rng.below(3) {
            let key = match rng.below(4) {
                0 => b"other".to_vec(),
                1 => b"ks2".to_vec(),
                _ => STAMP_TAG.as_bytes().to_vec(),
            };
            let value = match rng.below(10) {
                0 => None,
                1 => Some(BAD_STAMPS[rng.below(BAD_STAMPS.len())].as_bytes().to_vec()),
                2 => Some(gen_string(rng, break_utf8)),
                _ => {
                    counter = if rng.chance(10) {
                        u64::MAX
                    } else {
                        counter.wrapping_add(1)
                    };
                    Some(tag_value(&stamp(listener, counter, ms)).into_bytes())
                }
            };
            tags.push((key, value));
        }
        records.push(ModelRecord {
            key_index,
            hash_key_index,
            data: rng.bytes_below(40),
            tags,
            omit_defaults: rng.chance(20),
            unknown: rng.chance(5),
        });
    }
    // Interleave the fields: keys mostly first, as writers do, but not always.
    let mut order: Vec<Top> = std::iter::repeat_n(Top::Key, keys.len())
        .chain(std::iter::repeat_n(Top::HashKey, hash_keys.len()))
        .chain(std::iter::repeat_n(Top::Record, records.len()))
        .collect();
    if rng.chance(5) {
        order.push(Top::Unknown);
    }
    if rng.chance(20) {
        for i in (1..order.len()).rev() {
            order.swap(i, rng.below(i + 1));
        }
    }
    Model {
        keys,
        hash_keys,
        records,
        order,
        wrong_wire_type: rng.chance(2),
    }
}

/// MAGIC · body · MD5(body).
fn frame(body: &[u8]) -> Bytes {
    let mut d = MAGIC.to_vec();
    d.extend_from_slice(body);
    d.extend_from_slice(&Md5::digest(body));
    Bytes::from(d)
}

/// Which answer a decode gave: Ok, or the error's kind.
fn outcome(r: &Result<Vec<Event>, KplError>) -> usize {
    match r {
        Ok(_) => 0,
        Err(KplError::Protobuf(_)) => 1,
        Err(KplError::KeyIndex { .. }) => 2,
        Err(KplError::HashKeyIndex { .. }) => 3,
        Err(KplError::Stamp { .. }) => 4,
        Err(KplError::StampGap { .. }) => 5,
        Err(KplError::KeyTooLong { .. }) => 6,
        Err(KplError::KeyExpansion { .. }) => 7,
    }
}

/// Decodes `data` and checks the answer against `want` (for a protobuf
/// error only its kind: the message is prost's). `events_of` must agree.
#[track_caller]
fn check_decode(case: &dyn Fn() -> String, data: &Bytes, want: &Result<Vec<Event>, KplError>) {
    let case = case();
    let got = kpl::decode(data);
    let same = match (&got, want) {
        (Ok(Decoded::Aggregated(g)), Ok(w)) => g == w,
        (Err(KplError::Protobuf(m)), Err(KplError::Protobuf(_))) => !m.is_empty(),
        (Err(g), Err(w)) => g == w,
        _ => false,
    };
    assert!(
        same,
        "{case}: got {got:?}, want {want:?}\ninput {}",
        hex::encode(data)
    );
    match (kpl::events_of(data, "pk"), got) {
        (Ok(e), Ok(Decoded::Aggregated(g))) => assert_eq!(e, g, "{case}"),
        (Err(e), Err(g)) => assert_eq!(e, g, "{case}"),
        (e, g) => panic!("{case}: events_of {e:?} but decode {g:?}"),
    }
}

/// ≥ 100,000 cases, seeded (set `KPL_FUZZ_SEED` to explore others): every
/// answer is checked against what the model says, never just "no panic".
#[test]
fn the_decoder_answers_exactly_on_generated_and_mutated_records() {
    let seed = std::env::var("KPL_FUZZ_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x5eed_u64);
    let mut rng = Rng(seed);
    let cases = 120_000;
    let mut kinds = [0usize; 6];
    // Answers the generated and cut records expect: Ok and each error kind.
    let mut answers = [0usize; 8];
    let start = std::time::Instant::now();
    for n in 0..cases {
        let case = move || format!("seed {seed:#x}, case {n}");
        let kind = rng.below(100);
        match kind {
            // A generated record, as is.
            0..40 => {
                kinds[0] += 1;
                let m = gen_model(&mut rng);
                let want = m.expected();
                answers[outcome(&want)] += 1;
                check_decode(&case, &frame(&m.encode().0), &want);
            }
            // Cut short (checksum recomputed): at a field boundary it is the
            // record of the fields before the cut; inside a field, an error.
            40..70 => {
                kinds[1] += 1;
                let m = gen_model(&mut rng);
                let (body, ends) = m.encode();
                let cut = rng.below(body.len() + 1);
                let want = match ends.iter().position(|&e| e == cut) {
                    Some(i) => m.prefix(i + 1).expected(),
                    None if cut == 0 => Ok(Vec::new()),
                    None => Err(KplError::Protobuf(String::new())),
                };
                answers[outcome(&want)] += 1;
                check_decode(&case, &frame(&body[..cut]), &want);
            }
            // One byte changed, checksum recomputed: any answer but a panic,
            // and an error says which record (or key table entry).
            70..85 => {
                kinds[2] += 1;
                let m = gen_model(&mut rng);
                let mut body = m.encode().0;
                if body.is_empty() {
                    continue;
                }
                let at = rng.below(body.len());
                body[at] ^= 1 << rng.below(8);
                let data = frame(&body);
                match kpl::decode(&data) {
                    Ok(Decoded::Aggregated(_)) | Err(KplError::Protobuf(_)) => {}
                    Err(e) => assert!(
                        ["KPL record ", "KPL key table "]
                            .iter()
                            .any(|p| e.to_string().starts_with(p)),
                        "{}: {e}",
                        case()
                    ),
                    Ok(Decoded::Plain) => panic!("{}: a valid checksum read as plain", case()),
                }
            }
            // One byte changed and the checksum not: a plain record.
            85..90 => {
                kinds[3] += 1;
                let m = gen_model(&mut rng);
                let mut data = frame(&m.encode().0).to_vec();
                let at = MAGIC.len() + rng.below(data.len() - MAGIC.len());
                data[at] ^= 1 << rng.below(8);
                let data = Bytes::from(data);
                assert_eq!(kpl::decode(&data), Ok(Decoded::Plain), "{}", case());
                assert_eq!(kpl::events_of(&data, "pk").map(|e| e.len()), Ok(1));
            }
            // Random bytes with a valid frame: the protobuf parser on noise.
            90..95 => {
                kinds[4] += 1;
                let noise = rng.bytes_below(64);
                let data = frame(&noise);
                match kpl::decode(&data) {
                    Ok(Decoded::Aggregated(_)) | Err(KplError::Protobuf(_)) => {}
                    Err(e) => assert!(
                        ["KPL record ", "KPL key table "]
                            .iter()
                            .any(|p| e.to_string().starts_with(p)),
                        "{}: {e}",
                        case()
                    ),
                    Ok(Decoded::Plain) => panic!("{}: a valid checksum read as plain", case()),
                }
            }
            // Random bytes: plain (the magic is 4 bytes and the MD5 must fit).
            _ => {
                kinds[5] += 1;
                let data = Bytes::from(rng.bytes_below(64));
                assert_eq!(kpl::decode(&data), Ok(Decoded::Plain), "{}", case());
            }
        }
    }
    eprintln!(
        "KPL fuzz: {cases} cases (generated, cut, flipped, bad checksum, noise, random: \
         {kinds:?}; expected ok, protobuf, key index, hash key index, stamp, stamp gap: \
         {answers:?}) in {:.2} s",
        start.elapsed().as_secs_f64()
    );
    assert!(kinds.iter().all(|&k| k > 1000), "{kinds:?}");
    assert!(
        // All but KeyExpansion, which takes thousands of events per record
        // (the kpl module's unit test crafts one).
        answers[..7].iter().all(|&k| k > 500),
        "every answer is exercised: {answers:?}"
    );
}
