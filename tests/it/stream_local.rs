//! The local log: Kinesis semantics, durability, recovery from torn tails,
//! resharding, retention, and readers in another process (damaged
//! segments: `stream_damage`).

use std::collections::HashSet;
use std::path::Path;
use std::time::Duration;

use bytes::Bytes;
use kinesthetic::stream::local::{LocalLog, LocalOptions};

use crate::harness::rt;
use kinesthetic::stream::{
    PutEntry, PutOutcome, SequenceNumber, ShardIterator, StartPosition, StreamBackend, StreamError,
    StreamRecord, reshard,
};

pub(crate) fn open(dir: &Path) -> LocalLog {
    LocalLog::open(dir, LocalOptions::default()).unwrap_or_else(|e| panic!("open: {e}"))
}

pub(crate) fn entry(key: &str, data: impl Into<Vec<u8>>) -> PutEntry {
    PutEntry {
        partition_key: key.to_owned(),
        explicit_hash_key: None,
        data: Bytes::from(data.into()),
    }
}

/// Every record of one shard from `from`, until caught up or closed.
pub(crate) async fn read_shard(
    log: &LocalLog,
    stream: &str,
    shard: &str,
    from: StartPosition,
) -> Vec<StreamRecord> {
    let mut out = Vec::new();
    let mut it = Some(
        log.shard_iterator(stream, shard, &from)
            .await
            .unwrap_or_else(|e| panic!("iterator: {e}")),
    );
    while let Some(cur) = it.take() {
        let r = log
            .get_records(&cur, 1000)
            .await
            .unwrap_or_else(|e| panic!("get: {e}"));
        let done = r.records.is_empty();
        out.extend(r.records);
        if !done {
            it = r.next_iterator;
        }
    }
    out
}

pub(crate) fn written(o: &PutOutcome) -> (String, SequenceNumber) {
    match o {
        PutOutcome::Written { shard, sequence } => (shard.clone(), sequence.clone()),
        PutOutcome::Failed { code, message } => panic!("{code}: {message}"),
    }
}

#[test]
fn puts_and_every_iterator_type_behave_like_kinesis() {
    rt().block_on(async {
        let dir = crate::harness::tempdir();
        let log = open(dir.path());
        log.create_stream("s", 1)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(matches!(
            log.create_stream("s", 1).await,
            Err(StreamError::StreamExists(_))
        ));
        let entries: Vec<PutEntry> = (0..10)
            .map(|i| entry(&format!("k{i}"), format!("e{i}")))
            .collect();
        let out = log
            .put_records("s", &entries)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let seqs: Vec<SequenceNumber> = out.iter().map(|o| written(o).1).collect();
        assert!(
            seqs.windows(2).all(|w| w[0] < w[1]),
            "sequence numbers increase"
        );
        let shard = written(&out[0]).0;
        let all = read_shard(&log, "s", &shard, StartPosition::TrimHorizon).await;
        assert_eq!(all.len(), 10);
        for (i, r) in all.iter().enumerate() {
            assert_eq!(&r.data[..], format!("e{i}").as_bytes());
            assert_eq!(r.partition_key, format!("k{i}"));
            assert_eq!(r.sequence, seqs[i]);
        }
        let at = read_shard(
            &log,
            "s",
            &shard,
            StartPosition::AtSequence(seqs[4].clone()),
        )
        .await;
        assert_eq!(at.first().map(|r| &r.data[..]), Some(&b"e4"[..]));
        assert_eq!(at.len(), 6);
        let after = read_shard(
            &log,
            "s",
            &shard,
            StartPosition::AfterSequence(seqs[4].clone()),
        )
        .await;
        assert_eq!(after.len(), 5);
        // LATEST sees only what comes after it.
        let latest = log
            .shard_iterator("s", &shard, &StartPosition::Latest)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let r = log
            .get_records(&latest, 100)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(r.records.is_empty());
        assert_eq!(r.millis_behind_latest, 0);
        log.put_records("s", &[entry("k", "new")])
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let next = r
            .next_iterator
            .unwrap_or_else(|| panic!("open shard has a next iterator"));
        let r = log
            .get_records(&next, 100)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(r.records.len(), 1);
        assert_eq!(&r.records[0].data[..], b"new");
        // AT_TIMESTAMP: records from a time on.
        let t = all[0].arrival_ms;
        let from_t = read_shard(&log, "s", &shard, StartPosition::AtTimestamp(t)).await;
        assert_eq!(from_t.len(), 11);
        let future = read_shard(&log, "s", &shard, StartPosition::AtTimestamp(i64::MAX / 2)).await;
        assert!(future.is_empty());
        // Limits per call.
        let it = log
            .shard_iterator("s", &shard, &StartPosition::TrimHorizon)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let r = log
            .get_records(&it, 3)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(r.records.len(), 3);
        assert!(r.millis_behind_latest >= 0);
    });
}

#[test]
fn bad_requests_are_named() {
    rt().block_on(async {
        let dir = crate::harness::tempdir();
        let log = open(dir.path());
        log.create_stream("s", 2)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let msg = |r: Result<(), StreamError>| r.err().map(|e| e.to_string()).unwrap_or_default();
        assert!(msg(log.create_stream("bad/name", 1).await).contains("bad/name"));
        assert!(msg(log.create_stream("z", 0).await).contains("0 shards"));
        assert!(matches!(
            log.describe("nope").await,
            Err(StreamError::NoSuchStream(_))
        ));
        assert!(matches!(
            log.put_records("nope", &[entry("k", "x")]).await,
            Err(StreamError::NoSuchStream(_))
        ));
        let e = log
            .put_records("s", &[entry("", "x")])
            .await
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(e.contains("partition key"), "{e}");
        let e = log
            .put_records("s", &[entry("k", vec![0u8; 1 << 20])])
            .await
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(e.contains("1048576"), "{e}");
        for it in ["", "garbage", "L1/s/0/0/0", "L1/s/x/0/0/0", "L1/../0/0/0/0"] {
            let r = log.get_records(&ShardIterator(it.into()), 10).await;
            assert!(
                matches!(
                    r,
                    Err(StreamError::BadIterator(_)) | Err(StreamError::NoSuchStream(_))
                ),
                "{it:?}: {r:?}"
            );
        }
        assert!(matches!(
            log.shard_iterator("s", "shardId-000000000099", &StartPosition::TrimHorizon)
                .await,
            Err(StreamError::NoSuchShard { .. })
        ));
        let e = msg(log.split_shard("s", "shardId-000000000000", 0).await);
        assert!(e.contains("not inside"), "{e}");
        // A second writer on the same directory is refused, naming it.
        let e = LocalLog::open(dir.path(), LocalOptions::default())
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(
            e.contains("another process") && e.contains(&dir.path().display().to_string()),
            "{e}"
        );
        // A corrupt metadata file is named.
        std::fs::write(dir.path().join("s/meta.json"), b"{not json")
            .unwrap_or_else(|e| panic!("{e}"));
        let e = log
            .describe("s")
            .await
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(e.contains("meta.json") && e.contains("corrupt"), "{e}");
    });
}

#[test]
fn concurrent_puts_share_fsyncs_and_keep_order_per_shard() {
    rt().block_on(async {
        let dir = crate::harness::tempdir();
        let log = open(dir.path());
        log.create_stream("s", 3)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let mut tasks = tokio::task::JoinSet::new();
        for w in 0..16 {
            let log = log.clone();
            tasks.spawn(async move {
                for b in 0..20 {
                    let e: Vec<PutEntry> = (0..10)
                        .map(|i| entry(&format!("w{w}"), format!("{w}:{}", b * 10 + i)))
                        .collect();
                    log.put_records("s", &e)
                        .await
                        .unwrap_or_else(|e| panic!("{e}"));
                }
            });
        }
        while let Some(t) = tasks.join_next().await {
            t.unwrap_or_else(|e| panic!("{e}"));
        }
        let d = log.describe("s").await.unwrap_or_else(|e| panic!("{e}"));
        let mut total = 0;
        for s in &d.shards {
            let recs = read_shard(&log, "s", &s.id, StartPosition::TrimHorizon).await;
            total += recs.len();
            // Per writer (one key each), its records are in the order it put them.
            let mut last: std::collections::HashMap<String, i64> = Default::default();
            for r in &recs {
                let text = String::from_utf8_lossy(&r.data).into_owned();
                let (w, n) = text.split_once(':').unwrap_or(("", ""));
                let n: i64 = n.parse().unwrap_or(-1);
                let prev = last.insert(w.to_owned(), n).unwrap_or(-1);
                assert!(n > prev, "writer {w}: {n} after {prev}");
            }
        }
        assert_eq!(total, 16 * 200);
    });
}

#[test]
fn a_torn_tail_is_truncated_on_open_and_appends_continue() {
    // Write records, then cut the segment at many byte offsets: every record
    // wholly before the cut survives, nothing after it, and the log takes
    // new records after the recovered tail.
    let base = crate::harness::tempdir();
    let rt = rt();
    let n = 40usize;
    let seg_path = rt.block_on(async {
        let log = open(base.path());
        log.create_stream("s", 1)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        for i in 0..n {
            let data = format!("record-{i}-{}", "x".repeat(i * 7 % 50));
            log.put_records("s", &[entry("k", data)])
                .await
                .unwrap_or_else(|e| panic!("{e}"));
        }
        base.path()
            .join("s/shardId-000000000000/00000000000000000000.seg")
    });
    let full = std::fs::read(&seg_path).unwrap_or_else(|e| panic!("{e}"));
    // Frame ends, from the file itself (length prefix + 8-byte header).
    let mut ends = Vec::new();
    let mut pos = 0usize;
    while pos < full.len() {
        let len =
            u32::from_le_bytes([full[pos], full[pos + 1], full[pos + 2], full[pos + 3]]) as usize;
        pos += 8 + len;
        ends.push(pos);
    }
    assert_eq!(ends.len(), n);
    // Seeded cut points: every frame boundary ±1, plus pseudo-random ones.
    let mut cuts: Vec<usize> = ends
        .iter()
        .flat_map(|&e| [e.saturating_sub(1), e, e + 1])
        .collect();
    let mut x: u64 = 0x2545_f491_4f6c_dd1d;
    for _ in 0..200 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        cuts.push((x % full.len() as u64) as usize);
    }
    cuts.retain(|&c| c <= full.len());
    cuts.sort_unstable();
    cuts.dedup();
    assert!(cuts.len() >= 200, "{} cuts", cuts.len());
    for cut in cuts {
        let dir = crate::harness::tempdir();
        let shard_dir = dir.path().join("s/shardId-000000000000");
        std::fs::create_dir_all(&shard_dir).unwrap_or_else(|e| panic!("{e}"));
        std::fs::copy(
            base.path().join("s/meta.json"),
            dir.path().join("s/meta.json"),
        )
        .unwrap_or_else(|e| panic!("{e}"));
        std::fs::write(shard_dir.join("00000000000000000000.seg"), &full[..cut])
            .unwrap_or_else(|e| panic!("{e}"));
        let whole = ends.iter().filter(|&&e| e <= cut).count();
        rt.block_on(async {
            let log = open(dir.path());
            let recs = read_shard(
                &log,
                "s",
                "shardId-000000000000",
                StartPosition::TrimHorizon,
            )
            .await;
            assert_eq!(recs.len(), whole, "cut at {cut}");
            for (i, r) in recs.iter().enumerate() {
                assert!(
                    r.data.starts_with(format!("record-{i}-").as_bytes()),
                    "cut at {cut}"
                );
            }
            let out = log
                .put_records("s", &[entry("k", "after")])
                .await
                .unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(
                written(&out[0]).1,
                LocalLog::sequence_of("shardId-000000000000", whole as u64)
                    .unwrap_or_else(|| panic!("seq"))
            );
            let recs = read_shard(
                &log,
                "s",
                "shardId-000000000000",
                StartPosition::TrimHorizon,
            )
            .await;
            assert_eq!(recs.len(), whole + 1, "cut at {cut}");
            assert_eq!(recs.last().map(|r| &r.data[..]), Some(&b"after"[..]));
        });
    }
}

#[test]
fn resharding_closes_parents_and_routes_to_children() {
    rt().block_on(async {
        let dir = crate::harness::tempdir();
        let log = open(dir.path());
        log.create_stream("s", 1)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let keys: Vec<String> = (0..300).map(|i| format!("key-{i}")).collect();
        let put_all = |tag: &'static str| {
            let log = log.clone();
            let keys = keys.clone();
            async move {
                for chunk in keys.chunks(100) {
                    let e: Vec<PutEntry> = chunk
                        .iter()
                        .map(|k| entry(k, format!("{tag}:{k}")))
                        .collect();
                    log.put_records("s", &e)
                        .await
                        .unwrap_or_else(|e| panic!("{e}"));
                }
            }
        };
        put_all("one").await;
        for target in [3u32, 2, 5] {
            let steps = reshard::reshard(&log, "s", target, Duration::from_secs(10), |_| {})
                .await
                .unwrap_or_else(|e| panic!("reshard to {target}: {e}"));
            assert!(steps > 0);
            let d = log.describe("s").await.unwrap_or_else(|e| panic!("{e}"));
            let mut open: Vec<_> = d.open_shards().map(|s| s.hash_range).collect();
            open.sort();
            assert_eq!(
                open,
                kinesthetic::stream::HashRange::even(target),
                "{target} even shards"
            );
            for s in d.shards.iter().filter(|s| !s.is_open()) {
                assert!(s.ending_sequence.is_some());
            }
            for s in d.shards.iter().filter(|s| s.parent.is_some()) {
                let p = s.parent.as_ref().unwrap_or_else(|| panic!("parent"));
                let parent = d
                    .shards
                    .iter()
                    .find(|x| &x.id == p)
                    .unwrap_or_else(|| panic!("{p} listed"));
                assert!(!parent.is_open(), "parent {p} closed");
                assert!(
                    s.starting_sequence > parent.starting_sequence,
                    "child numbers are larger"
                );
            }
            put_all(["", "", "three", "two", "", "five"][target as usize]).await;
        }
        // Every record readable; a closed shard's reader ends with no iterator.
        let d = log.describe("s").await.unwrap_or_else(|e| panic!("{e}"));
        let mut seen = HashSet::new();
        for s in &d.shards {
            let mut it = Some(
                log.shard_iterator("s", &s.id, &StartPosition::TrimHorizon)
                    .await
                    .unwrap_or_else(|e| panic!("{e}")),
            );
            let mut ended = false;
            while let Some(cur) = it.take() {
                let r = log
                    .get_records(&cur, 1000)
                    .await
                    .unwrap_or_else(|e| panic!("{e}"));
                let empty = r.records.is_empty();
                for rec in r.records {
                    assert!(
                        s.hash_range
                            .contains(kinesthetic::stream::hash_key_of(&rec.partition_key))
                    );
                    seen.insert(rec.data);
                }
                match r.next_iterator {
                    None => ended = true,
                    Some(n) if !empty => it = Some(n),
                    Some(_) => {}
                }
            }
            assert_eq!(ended, !s.is_open(), "shard {}", s.id);
        }
        assert_eq!(seen.len(), 300 * 4);
        // Errors: merging non-adjacent or closed shards.
        let open: Vec<_> = d.open_shards().map(|s| s.id.clone()).collect();
        let e = log
            .merge_shards("s", &open[0], &open[2])
            .await
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(e.contains("not adjacent"), "{e}");
        let closed = d
            .shards
            .iter()
            .find(|s| !s.is_open())
            .map(|s| s.id.clone())
            .unwrap_or_default();
        let e = log
            .split_shard("s", &closed, 5)
            .await
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(e.contains("closed"), "{e}");
    });
}

#[test]
fn another_process_sees_new_records() {
    rt().block_on(async {
        let dir = crate::harness::tempdir();
        let log = open(dir.path());
        log.create_stream("s", 1)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        log.put_records("s", &[entry("k", "first")])
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        // A real second process: the CLI, reading the directory.
        let tail = || {
            crate::harness::cli()
                .args(["stream", "--backend", "local", "--data"])
                .arg(dir.path())
                .args(["tail", "s"])
                .output()
                .unwrap_or_else(|e| panic!("cli: {e}"))
        };
        let out = tail();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(String::from_utf8_lossy(&out.stdout).ends_with("\tfirst\n"));
        log.put_records("s", &[entry("k", "second")])
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let out = tail();
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        assert_eq!(text.lines().count(), 2, "{text}");
        assert!(text.ends_with("\tsecond\n"), "{text}");
        // And a read-only instance in this process, after a reshard.
        log.split_shard("s", "shardId-000000000000", 1u128 << 127)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        log.put_records("s", &[entry("k", "third")])
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let ro = LocalLog::open_read_only(dir.path(), LocalOptions::default())
            .unwrap_or_else(|e| panic!("{e}"));
        let d = ro.describe("s").await.unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(d.shards.len(), 3);
        let mut all = Vec::new();
        for s in &d.shards {
            all.extend(read_shard(&ro, "s", &s.id, StartPosition::TrimHorizon).await);
        }
        assert_eq!(all.len(), 3);
        assert!(
            ro.put_records("s", &[entry("k", "x")]).await.is_err(),
            "read-only refuses writes"
        );
    });
}

#[test]
fn retention_deletes_old_segments_and_moves_the_trim_horizon() {
    rt().block_on(async {
        let dir = crate::harness::tempdir();
        {
            let log = LocalLog::open(
                dir.path(),
                LocalOptions {
                    segment_bytes: 2_000,
                    ..LocalOptions::default()
                },
            )
            .unwrap_or_else(|e| panic!("{e}"));
            log.create_stream("s", 1)
                .await
                .unwrap_or_else(|e| panic!("{e}"));
            for i in 0..100 {
                log.put_records("s", &[entry("k", format!("{i:04}-{}", "p".repeat(100)))])
                    .await
                    .unwrap_or_else(|e| panic!("{e}"));
            }
        }
        let shard_dir = dir.path().join("s/shardId-000000000000");
        let before = std::fs::read_dir(&shard_dir)
            .map(|d| d.count())
            .unwrap_or(0);
        assert!(before > 5, "{before} segments");
        // Size retention: reopen with a small byte budget (the writer applies
        // it every 10 s of activity; here, now).
        let log = LocalLog::open(
            dir.path(),
            LocalOptions {
                segment_bytes: 2_000,
                retention_bytes: Some(5_000),
                retention: Some(Duration::from_secs(3600)),
                ..LocalOptions::default()
            },
        )
        .unwrap_or_else(|e| panic!("{e}"));
        log.run_retention().await.unwrap_or_else(|e| panic!("{e}"));
        log.put_records("s", &[entry("k", "late")])
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let after = std::fs::read_dir(&shard_dir)
            .map(|d| d.count())
            .unwrap_or(0);
        assert!(after < before && after <= 4, "{before} -> {after} segments");
        let recs = read_shard(
            &log,
            "s",
            "shardId-000000000000",
            StartPosition::TrimHorizon,
        )
        .await;
        assert!(recs.len() < 101 && !recs.is_empty());
        assert_eq!(recs.last().map(|r| &r.data[..]), Some(&b"late"[..]));
        // The oldest kept record follows on without gaps.
        let first: u64 = String::from_utf8_lossy(&recs[0].data[..4])
            .parse()
            .unwrap_or(0);
        assert_eq!(recs.len() as u64, 100 - first + 1);
    });
}

#[test]
fn trim_through_deletes_only_segments_wholly_at_or_before_the_sequence() {
    rt().block_on(async {
        let dir = crate::harness::tempdir();
        let log = LocalLog::open(
            dir.path(),
            LocalOptions {
                segment_bytes: 2_000,
                ..LocalOptions::default()
            },
        )
        .unwrap_or_else(|e| panic!("{e}"));
        log.create_stream("s", 2)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let shard = "shardId-000000000000";
        let mut seqs = Vec::new();
        for i in 0..100 {
            let out = log
                .put_records(
                    "s",
                    &[PutEntry {
                        partition_key: "k".into(),
                        explicit_hash_key: Some(0),
                        data: Bytes::from(format!("{i:04}-{}", "p".repeat(100))),
                    }],
                )
                .await
                .unwrap_or_else(|e| panic!("{e}"));
            match &out[..] {
                [PutOutcome::Written { sequence, .. }] => seqs.push(sequence.clone()),
                other => panic!("{other:?}"),
            }
        }
        let shard_dir = dir.path().join("s").join(shard);
        let count = || std::fs::read_dir(&shard_dir).map_or(0, |d| d.count());
        let before = count();
        assert!(before > 5, "{before} segments");

        let freed = log
            .trim_through("s", shard, &seqs[49])
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(freed > 0, "nothing freed");
        assert!(count() < before, "{before} -> {} segments", count());
        let recs = read_shard(&log, "s", shard, StartPosition::TrimHorizon).await;
        let first: u64 = String::from_utf8_lossy(&recs[0].data[..4])
            .parse()
            .unwrap_or(u64::MAX);
        // Everything after the sequence is still there, without gaps; the
        // segment holding record 49 stays whole because it also holds later ones.
        assert!(first <= 50, "record {first} is the oldest kept");
        assert!(first > 0, "nothing was trimmed");
        assert_eq!(recs.len() as u64, 100 - first);

        // Trimming through the last record keeps the segment being appended to.
        log.trim_through("s", shard, &seqs[99])
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let recs = read_shard(&log, "s", shard, StartPosition::TrimHorizon).await;
        assert!(!recs.is_empty(), "the active segment was deleted");
        assert_eq!(recs.last().map(|r| &r.data[..4]), Some(&b"0099"[..]));

        // Bad input: a sequence of another shard, an unknown shard or stream.
        let other = log
            .trim_through("s", "shardId-000000000001", &seqs[10])
            .await;
        assert!(
            matches!(other, Err(StreamError::BadInput(ref m)) if m.contains("shardId-000000000001")),
            "{other:?}"
        );
        let nine = LocalLog::sequence_of("shardId-000000000009", 0)
            .unwrap_or_else(|| panic!("no sequence for shard 9"));
        let missing = log.trim_through("s", "shardId-000000000009", &nine).await;
        assert!(matches!(missing, Err(StreamError::NoSuchShard { .. })), "{missing:?}");
        let nostream = log.trim_through("nope", shard, &seqs[10]).await;
        assert!(matches!(nostream, Err(StreamError::NoSuchStream(_))), "{nostream:?}");
    });
}

/// Reads go through the segment in chunks: records that straddle a chunk
/// come back whole, and one read returns up to its limit (not just the
/// records of the first chunk).
#[test]
fn a_read_returns_records_across_its_chunks() {
    let dir = crate::harness::tempdir();
    rt().block_on(async {
        let log = open(dir.path());
        log.create_stream("s", 1)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        // 30 records of ≈ 100 KB: 3 MB, several chunks, frames across them.
        let entries: Vec<PutEntry> = (0..30u8)
            .map(|i| entry("k", vec![i; 100_000 + usize::from(i) * 7]))
            .collect();
        for chunk in entries.chunks(10) {
            log.put_records("s", chunk)
                .await
                .unwrap_or_else(|e| panic!("{e}"));
        }
        let it = log
            .shard_iterator("s", "shardId-000000000000", &StartPosition::TrimHorizon)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let r = log
            .get_records(&it, 10_000)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(r.records.len(), 30);
        for (i, rec) in r.records.iter().enumerate() {
            assert_eq!(rec.data.len(), 100_000 + i * 7, "record {i}");
            assert!(rec.data.iter().all(|&b| b == i as u8), "record {i}");
        }
        let r = log
            .get_records(&it, 7)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(r.records.len(), 7);
    });
}

/// Every record of every shard of `stream`, by shard id.
async fn read_stream(log: &LocalLog, stream: &str) -> Vec<(String, StreamRecord)> {
    let d = log.describe(stream).await.unwrap_or_else(|e| panic!("{e}"));
    let mut out = Vec::new();
    for s in &d.shards {
        for r in read_shard(log, stream, &s.id, StartPosition::TrimHorizon).await {
            out.push((s.id.clone(), r));
        }
    }
    out
}

/// A split or merge whose metadata write fails changes nothing: puts go on
/// into the shards the disk lists, nothing acknowledged is lost across a
/// restart, and no shard index (so no sequence number) is handed out twice.
/// (Before, the children were live in memory only: puts into them were
/// acknowledged and gone after a restart, and the next split reused them.)
#[test]
fn a_failed_metadata_write_during_a_reshard_changes_nothing() {
    rt().block_on(async {
        let dir = crate::harness::tempdir();
        let put = |log: LocalLog, tag: &'static str| async move {
            let e: Vec<PutEntry> = (0..50)
                .map(|i| entry(&format!("key-{i}"), format!("{tag}-{i}")))
                .collect();
            let out = log
                .put_records("s", &e)
                .await
                .unwrap_or_else(|e| panic!("{e}"));
            out.iter().map(written).collect::<Vec<_>>()
        };
        let mut acked: Vec<(String, SequenceNumber)> = Vec::new();
        {
            let log = open(dir.path());
            log.create_stream("s", 2)
                .await
                .unwrap_or_else(|e| panic!("{e}"));
            acked.extend(put(log.clone(), "before").await);
            // The write of the new metadata fails: its temporary file's
            // name is taken by a directory.
            let blocker = dir.path().join("s").join("meta.json.tmp");
            std::fs::create_dir(&blocker).unwrap_or_else(|e| panic!("{e}"));
            let split = log
                .split_shard("s", "shardId-000000000000", 1u128 << 126)
                .await;
            assert!(split.is_err(), "the split must fail");
            let merge = log
                .merge_shards("s", "shardId-000000000000", "shardId-000000000001")
                .await;
            assert!(merge.is_err(), "the merge must fail");
            let d = log.describe("s").await.unwrap_or_else(|e| panic!("{e}"));
            let ids: Vec<&str> = d.shards.iter().map(|s| s.id.as_str()).collect();
            assert_eq!(ids, ["shardId-000000000000", "shardId-000000000001"]);
            assert!(d.shards.iter().all(|s| s.is_open()));
            let after = put(log.clone(), "after-failure").await;
            for (shard, _) in &after {
                assert!(
                    shard == "shardId-000000000000" || shard == "shardId-000000000001",
                    "acknowledged into {shard}, which the disk does not list"
                );
            }
            acked.extend(after);
            std::fs::remove_dir(&blocker).unwrap_or_else(|e| panic!("{e}"));
        }
        // Restart: everything acknowledged is there; the next split gets
        // fresh shard indices.
        let log = open(dir.path());
        let got = read_stream(&log, "s").await;
        assert_eq!(got.len(), acked.len());
        let have: HashSet<(String, SequenceNumber)> = got
            .iter()
            .map(|(s, r)| (s.clone(), r.sequence.clone()))
            .collect();
        for a in &acked {
            assert!(have.contains(a), "acknowledged {a:?} lost");
        }
        log.split_shard("s", "shardId-000000000000", 1u128 << 126)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        acked.extend(put(log.clone(), "after-split").await);
        let got = read_stream(&log, "s").await;
        assert_eq!(got.len(), acked.len());
        let seqs: HashSet<&SequenceNumber> = got.iter().map(|(_, r)| &r.sequence).collect();
        assert_eq!(seqs.len(), got.len(), "a sequence number was reused");
        let d = log.describe("s").await.unwrap_or_else(|e| panic!("{e}"));
        let ids: Vec<&str> = d.shards.iter().map(|s| s.id.as_str()).collect();
        assert_eq!(
            ids,
            [
                "shardId-000000000000",
                "shardId-000000000001",
                "shardId-000000000002",
                "shardId-000000000003"
            ]
        );
    });
}

/// Files of this process open under `dir`.
fn open_files_under(dir: &Path) -> Vec<std::path::PathBuf> {
    std::fs::read_dir("/proc/self/fd")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| std::fs::read_link(e.path()).ok())
        .filter(|p| p.starts_with(dir))
        .collect()
}

/// A shard closed by a split or merge takes no writes: the log lets its
/// segment file go, at once and after a restart.
#[test]
fn closed_shards_release_their_files() {
    rt().block_on(async {
        let dir = crate::harness::tempdir();
        let root = dir.path().canonicalize().unwrap_or_else(|e| panic!("{e}"));
        let parent = root.join("s/shardId-000000000000");
        {
            let log = open(&root);
            log.create_stream("s", 1)
                .await
                .unwrap_or_else(|e| panic!("{e}"));
            log.put_records("s", &[entry("k", "before")])
                .await
                .unwrap_or_else(|e| panic!("{e}"));
            assert!(
                open_files_under(&parent).len() == 1,
                "{:?}",
                open_files_under(&parent)
            );
            log.split_shard("s", "shardId-000000000000", 1u128 << 127)
                .await
                .unwrap_or_else(|e| panic!("{e}"));
            log.put_records("s", &[entry("k", "after")])
                .await
                .unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(open_files_under(&parent), Vec::<std::path::PathBuf>::new());
            assert_eq!(
                open_files_under(&root.join("s")).len(),
                1,
                "one child written"
            );
        }
        let log = open(&root);
        assert_eq!(open_files_under(&parent), Vec::<std::path::PathBuf>::new());
        // Still read whole.
        let recs = read_shard(
            &log,
            "s",
            "shardId-000000000000",
            StartPosition::TrimHorizon,
        )
        .await;
        assert_eq!(recs.len(), 1);
    });
}

/// Retention runs on its own thread: an idle log (no puts) still deletes
/// segments past their age, and the segment being written to stays.
#[test]
fn retention_runs_while_the_log_is_idle() {
    rt().block_on(async {
        let dir = crate::harness::tempdir();
        let log = LocalLog::open(
            dir.path(),
            LocalOptions {
                segment_bytes: 2_000,
                retention: Some(Duration::from_millis(300)),
                retention_every: Duration::from_millis(100),
                ..LocalOptions::default()
            },
        )
        .unwrap_or_else(|e| panic!("{e}"));
        log.create_stream("s", 1)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        for i in 0..60 {
            log.put_records("s", &[entry("k", format!("{i:04}-{}", "p".repeat(100)))])
                .await
                .unwrap_or_else(|e| panic!("{e}"));
        }
        let shard_dir = dir.path().join("s/shardId-000000000000");
        let segments = || {
            std::fs::read_dir(&shard_dir)
                .into_iter()
                .flatten()
                .flatten()
                .filter(|e| e.path().extension().is_some_and(|x| x == "seg"))
                .count()
        };
        let before = segments();
        assert!(before >= 3, "{before} segments");
        // No put from here on.
        tokio::time::sleep(Duration::from_millis(1500)).await;
        assert_eq!(segments(), 1, "{before} segments, none deleted while idle");
        let recs = read_shard(
            &log,
            "s",
            "shardId-000000000000",
            StartPosition::TrimHorizon,
        )
        .await;
        assert!(
            !recs.is_empty() && recs.len() < 60,
            "{} records",
            recs.len()
        );
    });
}
