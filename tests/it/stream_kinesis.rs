//! The Kinesis backend against the Kinesis stand-in (kinesis-local, started
//! by `cargo xtask services up`): the whole `StreamBackend` contract through
//! the real AWS SDK and HTTP.

use std::time::Duration;

use bytes::Bytes;
use kinesthetic::stream::kinesis::KinesisBackend;
use kinesthetic::stream::reshard::{self, Progress, Step};
use kinesthetic::stream::{
    HashRange, PutEntry, PutOutcome, SequenceNumber, ShardInfo, ShardIterator, StartPosition,
    StreamBackend, StreamDescription, StreamError, StreamRecord, StreamStatus,
};

use crate::services::{kinesis_backend, unique_stream};

type R = Result<(), Box<dyn std::error::Error>>;

const ACTIVE_TIMEOUT: Duration = Duration::from_secs(20);

/// The backend, or return (skip) when the stand-in is missing locally.
macro_rules! backend {
    () => {
        match kinesis_backend().await {
            Some(b) => b,
            None => return Ok(()),
        }
    };
}

/// A new ACTIVE stream of `shards` shards.
async fn new_stream(b: &KinesisBackend, prefix: &str, shards: u32) -> Result<String, StreamError> {
    let name = unique_stream(prefix);
    b.create_stream(&name, shards).await?;
    reshard::wait_active(b, &name, ACTIVE_TIMEOUT).await?;
    Ok(name)
}

fn entry(key: &str, data: &[u8]) -> PutEntry {
    PutEntry {
        partition_key: key.to_owned(),
        explicit_hash_key: None,
        data: Bytes::copy_from_slice(data),
    }
}

/// Puts `entries` and returns (shard, sequence) of each; every one must be
/// written.
async fn put_all(
    b: &KinesisBackend,
    stream: &str,
    entries: &[PutEntry],
) -> Result<Vec<(String, SequenceNumber)>, StreamError> {
    let outcomes = b.put_records(stream, entries).await?;
    assert_eq!(outcomes.len(), entries.len(), "one outcome per entry");
    Ok(outcomes
        .into_iter()
        .enumerate()
        .map(|(i, o)| match o {
            PutOutcome::Written { shard, sequence } => (shard, sequence),
            PutOutcome::Failed { code, message } => {
                panic!("entry {i} of the put into {stream} failed: {code}: {message}")
            }
        })
        .collect())
}

/// Reads from `it` until `want` records arrived (or `max_calls` calls
/// returned nothing more), returning them and the last iterator.
async fn read(
    b: &KinesisBackend,
    mut it: ShardIterator,
    want: usize,
    limit: u32,
) -> Result<(Vec<StreamRecord>, Option<ShardIterator>), StreamError> {
    let mut out = Vec::new();
    for _ in 0..20 {
        let got = b.get_records(&it, limit).await?;
        assert!(
            got.records.len() <= limit as usize,
            "limit {limit} exceeded"
        );
        assert!(got.millis_behind_latest >= 0);
        out.extend(got.records);
        match got.next_iterator {
            Some(next) if out.len() < want => it = next,
            next => return Ok((out, next)),
        }
    }
    Ok((out, Some(it)))
}

fn open_ranges(d: &StreamDescription) -> Vec<HashRange> {
    let mut r: Vec<HashRange> = d.open_shards().map(|s| s.hash_range).collect();
    r.sort();
    r
}

/// `ranges` (sorted) cover the hash-key space without gaps or overlaps, in
/// `n` ranges whose boundaries are within one key of [`HashRange::even`]'s:
/// Kinesis splits 2^128 exactly as `even` does; kinesis-local computes its
/// boundaries from 2^128 - 1 and lands up to one key lower.
#[track_caller]
fn assert_covers_evenly(ranges: &[HashRange], n: u32) {
    assert_eq!(ranges.len(), n as usize, "{ranges:#?}");
    assert_eq!(ranges[0].start, 0);
    assert_eq!(ranges[ranges.len() - 1].end, u128::MAX);
    for (w, even) in ranges.windows(2).zip(&HashRange::even(n)[1..]) {
        assert_eq!(w[0].end.checked_add(1), Some(w[1].start), "{ranges:#?}");
        assert!(w[1].start.abs_diff(even.start) <= 1, "{ranges:#?}");
    }
}

fn shard<'a>(d: &'a StreamDescription, id: &str) -> &'a ShardInfo {
    d.shards
        .iter()
        .find(|s| s.id == id)
        .unwrap_or_else(|| panic!("no shard {id} in {:#?}", d.shards))
}

#[tokio::test]
async fn streams_are_created_described_listed_and_deleted() -> R {
    let b = backend!();
    let name = new_stream(&b, "crud", 2).await?;

    let d = b.describe(&name).await?;
    assert_eq!(d.name, name);
    assert_eq!(d.status, StreamStatus::Active);
    assert_eq!(d.retention_hours, 24);
    assert_eq!(d.shards.len(), 2, "{:#?}", d.shards);
    assert_covers_evenly(&open_ranges(&d), 2);
    for s in &d.shards {
        assert!(s.is_open(), "{s:?}");
        assert_eq!((&s.parent, &s.adjacent_parent), (&None, &None), "{s:?}");
    }
    assert!(b.list_streams().await?.contains(&name));

    // A second create of the same name is refused as such.
    match b.create_stream(&name, 1).await {
        Err(StreamError::StreamExists(n)) => assert_eq!(n, name),
        other => panic!("second create of {name}: {other:?}"),
    }
    // So is a stream without shards (and nothing is created).
    let empty = unique_stream("crud-zero");
    match b.create_stream(&empty, 0).await {
        Err(StreamError::BadInput(m)) => assert!(!m.is_empty()),
        other => panic!("create with 0 shards: {other:?}"),
    }

    b.delete_stream(&name).await?;
    let start = tokio::time::Instant::now();
    loop {
        match b.describe(&name).await {
            Err(StreamError::NoSuchStream(n)) => {
                assert_eq!(n, name);
                break;
            }
            Ok(d) if start.elapsed() < ACTIVE_TIMEOUT => {
                assert_eq!(d.status, StreamStatus::Deleting, "after delete");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            other => panic!("describe after delete: {other:?}"),
        }
    }
    let listed = b.list_streams().await?;
    assert!(!listed.contains(&name), "{name} still listed");
    assert!(!listed.contains(&empty), "{empty} was created");
    Ok(())
}

#[tokio::test]
async fn records_are_read_back_from_every_kind_of_iterator() -> R {
    let b = backend!();
    let stream = new_stream(&b, "iter", 1).await?;
    let d = b.describe(&stream).await?;
    let shard_id = d.shards[0].id.clone();

    // Two puts, apart in time, so AT_TIMESTAMP can tell them apart. Data is
    // binary, and one record's key is not ASCII.
    let first: Vec<PutEntry> = (0..5u8)
        .map(|i| entry(&format!("key-{i}"), &[i, 0, 0xff, b'\n', i ^ 0x80]))
        .collect();
    let second: Vec<PutEntry> = vec![
        entry("ключ", "ünïcode data".as_bytes()),
        entry("b", &[0u8; 1000]),
        entry("c", b"{\"json\":true}"),
    ];
    let mut written = put_all(&b, &stream, &first).await?;
    tokio::time::sleep(Duration::from_millis(50)).await;
    written.extend(put_all(&b, &stream, &second).await?);
    let all: Vec<&PutEntry> = first.iter().chain(&second).collect();

    for (i, (s, _)) in written.iter().enumerate() {
        assert_eq!(s, &shard_id, "entry {i}");
    }
    for w in written.windows(2) {
        assert!(w[0].1 < w[1].1, "sequence numbers increase: {w:?}");
    }
    assert!(written[0].1 >= d.shards[0].starting_sequence);

    let check = |got: &[StreamRecord], from: usize, what: &str| {
        assert_eq!(got.len(), all.len() - from, "{what}: {got:#?}");
        for (k, r) in got.iter().enumerate() {
            let (e, (_, seq)) = (all[from + k], &written[from + k]);
            assert_eq!(&r.sequence, seq, "{what}: record {k}");
            assert_eq!(r.partition_key, e.partition_key, "{what}: record {k}");
            assert_eq!(r.data, e.data, "{what}: record {k}");
        }
    };

    // TRIM_HORIZON, in pages of 3 to follow the iterators.
    let it = b
        .shard_iterator(&stream, &shard_id, &StartPosition::TrimHorizon)
        .await?;
    let (got, next) = read(&b, it, all.len(), 3).await?;
    check(&got, 0, "TRIM_HORIZON");
    assert!(next.is_some(), "an open shard always has a next iterator");
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_millis() as i64;
    for r in &got {
        assert!(
            (now_ms - 120_000..=now_ms + 5_000).contains(&r.arrival_ms),
            "arrival {} vs now {now_ms}",
            r.arrival_ms
        );
    }

    // AT_SEQUENCE_NUMBER and AFTER_SEQUENCE_NUMBER.
    let at = StartPosition::AtSequence(written[2].1.clone());
    let it = b.shard_iterator(&stream, &shard_id, &at).await?;
    check(&read(&b, it, all.len() - 2, 100).await?.0, 2, "AT_SEQUENCE");
    let after = StartPosition::AfterSequence(written[2].1.clone());
    let it = b.shard_iterator(&stream, &shard_id, &after).await?;
    check(
        &read(&b, it, all.len() - 3, 100).await?.0,
        3,
        "AFTER_SEQUENCE",
    );

    // AT_TIMESTAMP: the second put's arrival time starts at its records.
    let second_ms = got[first.len()].arrival_ms;
    assert!(
        got[first.len() - 1].arrival_ms < second_ms,
        "the puts are 50 ms apart: {:?}",
        got.iter().map(|r| r.arrival_ms).collect::<Vec<_>>()
    );
    let it = b
        .shard_iterator(&stream, &shard_id, &StartPosition::AtTimestamp(second_ms))
        .await?;
    check(
        &read(&b, it, second.len(), 100).await?.0,
        first.len(),
        "AT_TIMESTAMP",
    );

    // LATEST: nothing that was there, then exactly what comes after.
    let it = b
        .shard_iterator(&stream, &shard_id, &StartPosition::Latest)
        .await?;
    let late = [entry("late-1", b"one"), entry("late-2", b"two")];
    let late_written = put_all(&b, &stream, &late).await?;
    let (got, _) = read(&b, it, late.len(), 100).await?;
    assert_eq!(got.len(), 2, "LATEST: {got:#?}");
    for ((r, e), (_, seq)) in got.iter().zip(&late).zip(&late_written) {
        assert_eq!((&r.sequence, &r.data), (seq, &e.data));
    }

    b.delete_stream(&stream).await?;
    Ok(())
}

#[tokio::test]
async fn records_go_to_the_shard_of_their_hash_key() -> R {
    let b = backend!();
    let stream = new_stream(&b, "route", 3).await?;
    let d = b.describe(&stream).await?;
    let owner = |key: u128| {
        d.shards
            .iter()
            .find(|s| s.hash_range.contains(key))
            .map(|s| s.id.clone())
            .unwrap_or_else(|| panic!("no shard holds {key}"))
    };
    let mut entries: Vec<PutEntry> = (0..60).map(|i| entry(&format!("pk{i}"), b"x")).collect();
    // Explicit hash keys at the edges of every range override the key's hash.
    for r in HashRange::even(3) {
        for key in [r.start, r.end] {
            entries.push(PutEntry {
                explicit_hash_key: Some(key),
                ..entry("same-key-every-time", b"y")
            });
        }
    }
    let written = put_all(&b, &stream, &entries).await?;
    let mut shards_used = std::collections::BTreeSet::new();
    for (e, (s, _)) in entries.iter().zip(&written) {
        assert_eq!(
            s,
            &owner(e.hash_key()),
            "{:?} (hash key {})",
            e.partition_key,
            e.hash_key()
        );
        shards_used.insert(s.clone());
    }
    assert_eq!(shards_used.len(), 3);
    b.delete_stream(&stream).await?;
    Ok(())
}

#[tokio::test]
async fn resharding_closes_parents_and_children_name_them() -> R {
    let b = backend!();
    let stream = new_stream(&b, "reshard", 1).await?;
    let d0 = b.describe(&stream).await?;
    let root = d0.shards[0].id.clone();
    let before: Vec<PutEntry> = (0..6).map(|i| entry(&format!("k{i}"), &[i])).collect();
    put_all(&b, &stream, &before).await?;

    // 1 → 3: two splits.
    let mut seen: Vec<Progress> = Vec::new();
    let steps = reshard::reshard(&b, &stream, 3, ACTIVE_TIMEOUT, |p| seen.push(p.clone())).await?;
    assert_eq!(steps, 2);
    // Each step is announced before it starts, then reported done.
    assert_eq!(
        seen.iter().map(|p| (p.done, p.phase)).collect::<Vec<_>>(),
        [
            (0, reshard::Phase::Starting),
            (1, reshard::Phase::Done),
            (1, reshard::Phase::Starting),
            (2, reshard::Phase::Done)
        ]
    );
    seen.retain(|p| p.phase == reshard::Phase::Done);
    assert!(seen.iter().all(|p| matches!(p.step, Step::Split { .. })));
    assert_eq!(
        seen.iter().map(|p| (p.done, p.total)).collect::<Vec<_>>(),
        [(1, 2), (2, 2)]
    );
    let d1 = b.describe(&stream).await?;
    assert_eq!(open_ranges(&d1), HashRange::even(3), "{:#?}", d1.shards);
    check_lineage(&d1);
    assert!(!shard(&d1, &root).is_open(), "the split shard is closed");

    // The closed root keeps its records and ends: no next iterator.
    let it = b
        .shard_iterator(&stream, &root, &StartPosition::TrimHorizon)
        .await?;
    let (got, next) = read(&b, it, usize::MAX, 100).await?;
    assert_eq!(
        got.iter().map(|r| r.data.clone()).collect::<Vec<_>>(),
        before.iter().map(|e| e.data.clone()).collect::<Vec<_>>()
    );
    assert_eq!(next, None, "a closed shard read to its end has no next");
    // (kinesis-local gives every closed shard the ending sequence
    // 9223372036854775807, below its own 56-digit sequence numbers, where
    // Kinesis gives the shard's last one: nothing to compare here.)
    assert!(shard(&d1, &root).ending_sequence.is_some());

    // New writes go to the open children only.
    let after: Vec<PutEntry> = (0..30).map(|i| entry(&format!("n{i}"), b"z")).collect();
    for (s, _) in put_all(&b, &stream, &after).await? {
        assert!(shard(&d1, &s).is_open(), "write to closed shard {s}");
    }

    // 3 → 2: a split, then merges.
    let mut seen: Vec<Progress> = Vec::new();
    let steps = reshard::reshard(&b, &stream, 2, ACTIVE_TIMEOUT, |p| seen.push(p.clone())).await?;
    seen.retain(|p| p.phase == reshard::Phase::Done);
    assert_eq!(steps, seen.len());
    assert!(seen.iter().any(|p| matches!(p.step, Step::Merge { .. })));
    let d2 = b.describe(&stream).await?;
    assert_eq!(open_ranges(&d2), HashRange::even(2), "{:#?}", d2.shards);
    check_lineage(&d2);
    let merged = d2.open_shards().filter(|s| s.adjacent_parent.is_some());
    assert_eq!(merged.count(), 2, "both halves come from merges");
    // Every shard that was open before is closed now.
    for s in d1.open_shards() {
        assert!(!shard(&d2, &s.id).is_open(), "{} still open", s.id);
    }

    // Operations on closed or non-adjacent shards are refused.
    match b.split_shard(&stream, &root, 1u128 << 100).await {
        Err(StreamError::BadInput(_) | StreamError::Service(_)) => {}
        other => panic!("split of the closed {root}: {other:?}"),
    }
    let mut open: Vec<&ShardInfo> = d2.open_shards().collect();
    open.sort_by_key(|s| s.hash_range);
    match b.merge_shards(&stream, &open[0].id, &root).await {
        Err(StreamError::BadInput(_) | StreamError::Service(_)) => {}
        other => panic!("merge with the closed {root}: {other:?}"),
    }
    b.delete_stream(&stream).await?;
    Ok(())
}

/// Parents are closed shards of the stream; the hash ranges of a child's
/// parents cover the child's range exactly.
#[track_caller]
fn check_lineage(d: &StreamDescription) {
    for s in &d.shards {
        let parents: Vec<&ShardInfo> = [&s.parent, &s.adjacent_parent]
            .into_iter()
            .flatten()
            .map(|p| shard(d, p))
            .collect();
        for p in &parents {
            assert!(!p.is_open(), "parent {} of {} is open", p.id, s.id);
            assert!(p.ending_sequence.is_some());
        }
        match parents.as_slice() {
            [] => {}
            // A split: the child is inside its parent.
            [p] => assert!(
                p.hash_range.start <= s.hash_range.start && s.hash_range.end <= p.hash_range.end,
                "{} is not inside its parent {}",
                s.id,
                p.id
            ),
            // A merge: the two parents are adjacent and make up the child.
            [a, c] => {
                let (lo, hi) = if a.hash_range.start < c.hash_range.start {
                    (a, c)
                } else {
                    (c, a)
                };
                assert_eq!(lo.hash_range.end + 1, hi.hash_range.start);
                assert_eq!(
                    (lo.hash_range.start, hi.hash_range.end),
                    (s.hash_range.start, s.hash_range.end),
                    "{} is not the union of {} and {}",
                    s.id,
                    a.id,
                    c.id
                );
            }
            _ => unreachable!(),
        }
    }
}

#[tokio::test]
async fn unknown_streams_shards_and_iterators_are_named_errors() -> R {
    let b = backend!();
    // The name holds "shard" on purpose: it must still read as a stream.
    let ghost = unique_stream("no-such-shard-stream");
    match b.describe(&ghost).await {
        Err(StreamError::NoSuchStream(n)) => assert_eq!(n, ghost),
        other => panic!("describe {ghost}: {other:?}"),
    }
    match b.put_records(&ghost, &[entry("k", b"v")]).await {
        Err(StreamError::NoSuchStream(n)) => assert_eq!(n, ghost),
        other => panic!("put into {ghost}: {other:?}"),
    }
    match b.delete_stream(&ghost).await {
        Err(StreamError::NoSuchStream(n)) => assert_eq!(n, ghost),
        other => panic!("delete {ghost}: {other:?}"),
    }
    match b
        .shard_iterator(&ghost, "shardId-000000000000", &StartPosition::TrimHorizon)
        .await
    {
        Err(StreamError::NoSuchStream(n)) => assert_eq!(n, ghost),
        other => panic!("iterator on {ghost}: {other:?}"),
    }

    let stream = new_stream(&b, "errors", 1).await?;
    let missing = "shardId-000000000042";
    match b
        .shard_iterator(&stream, missing, &StartPosition::TrimHorizon)
        .await
    {
        Err(StreamError::NoSuchShard { stream: s, shard }) => {
            assert_eq!((s.as_str(), shard.as_str()), (stream.as_str(), missing));
        }
        other => panic!("iterator on {missing}: {other:?}"),
    }
    match b.split_shard(&stream, missing, 1u128 << 127).await {
        Err(StreamError::NoSuchShard { stream: s, shard }) => {
            assert_eq!((s.as_str(), shard.as_str()), (stream.as_str(), missing));
        }
        other => panic!("split of {missing}: {other:?}"),
    }
    for garbage in [
        "not-an-iterator",
        "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
    ] {
        match b.get_records(&ShardIterator(garbage.into()), 10).await {
            Err(StreamError::BadIterator(m)) => assert!(m.contains(&garbage[..10]), "{m}"),
            other => panic!("get_records({garbage:?}): {other:?}"),
        }
    }
    // An iterator from before the stream's deletion no longer reads.
    let shard_id = b.describe(&stream).await?.shards[0].id.clone();
    let it = b
        .shard_iterator(&stream, &shard_id, &StartPosition::TrimHorizon)
        .await?;
    b.delete_stream(&stream).await?;
    tokio::time::sleep(Duration::from_millis(200)).await;
    match b.get_records(&it, 10).await {
        Err(StreamError::BadIterator(m)) => assert!(m.contains(&it.0[..10]), "{m}"),
        other => panic!("get_records after delete: {other:?}"),
    }
    Ok(())
}

#[tokio::test]
async fn every_stream_is_listed_past_the_first_page() -> R {
    let b = backend!();
    // ListStreams answers at most 100 names a call.
    let prefix = unique_stream("page");
    let names: Vec<String> = (0..105).map(|i| format!("{prefix}-{i:03}")).collect();
    for n in &names {
        b.create_stream(n, 1).await?;
    }
    let listed = b.list_streams().await?;
    let mine: Vec<&String> = listed.iter().filter(|n| n.starts_with(&prefix)).collect();
    assert_eq!(
        mine.len(),
        names.len(),
        "listed {} of {}",
        mine.len(),
        names.len()
    );
    assert_eq!(mine, names.iter().collect::<Vec<_>>());
    assert!(listed.windows(2).all(|w| w[0] < w[1]), "sorted, no repeats");
    for n in &names {
        b.delete_stream(n).await?;
    }
    Ok(())
}

#[tokio::test]
async fn puts_beyond_kinesis_limits_are_refused_naming_the_entry() -> R {
    let b = backend!();
    let stream = new_stream(&b, "limits", 1).await?;
    let check = async |entries: &[PutEntry], want: &str| -> R {
        match b.put_records(&stream, entries).await {
            Err(StreamError::BadInput(m)) => assert!(m.contains(want), "{m}"),
            other => panic!("want an error with {want:?}: {other:?}"),
        }
        Ok(())
    };
    let many: Vec<PutEntry> = (0..501).map(|i| entry(&i.to_string(), b"x")).collect();
    check(&many, "501 entries").await?;
    let mut big = vec![entry("k", b"x"); 3];
    big[2].data = Bytes::from(vec![0u8; 1 << 20]);
    check(&big, "entry 2: 1048577 bytes").await?;
    let mut keys = vec![entry("k", b"x"); 2];
    keys[1].partition_key = String::new();
    check(&keys, "entry 1: partition key of 0 characters").await?;
    keys[1].partition_key = "é".repeat(257);
    check(&keys, "entry 1: partition key of 257 characters").await?;
    let heavy = vec![entry("k", &[7u8; (1 << 20) - 1]); 6];
    check(&heavy, "6291456 bytes in 6 entries").await?;

    // The largest legal put is accepted, and nothing of the refused ones
    // was written.
    let mut edge: Vec<PutEntry> = (0..500).map(|i| entry(&i.to_string(), b"")).collect();
    edge[0].partition_key = "é".repeat(256);
    edge[1].data = Bytes::from(vec![1u8; (1 << 20) - 1]);
    assert_eq!(put_all(&b, &stream, &edge).await?.len(), 500);
    assert!(b.put_records(&stream, &[]).await?.is_empty());
    let shard_id = b.describe(&stream).await?.shards[0].id.clone();
    let it = b
        .shard_iterator(&stream, &shard_id, &StartPosition::TrimHorizon)
        .await?;
    let (got, _) = read(&b, it, 500, 10_000).await?;
    assert_eq!(got.len(), 500);
    assert_eq!(got[1].data.len(), (1 << 20) - 1);
    b.delete_stream(&stream).await?;
    Ok(())
}
