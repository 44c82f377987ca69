//! Damaged segments in the local log and the spool: a bad frame costs
//! itself alone. Readers step over it (reported once, counted, its bytes
//! kept under `DIR/.quarantine/`) and read the good records on both sides;
//! opening the log checks every segment and cuts damage out; the spool's
//! shipper ships around it; readers in another process never see frames
//! the writer has not committed.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use kinesthetic::stream::local::{LocalLog, LocalOptions};
use kinesthetic::stream::{StartPosition, StreamBackend};

use crate::harness::rt;
use crate::stream_local::{entry, open, read_shard, written};

const SHARD: &str = "shardId-000000000000";

fn segments(shard_dir: &Path) -> Vec<PathBuf> {
    let mut segs: Vec<PathBuf> = std::fs::read_dir(shard_dir)
        .unwrap_or_else(|e| panic!("{e}"))
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "seg"))
        .collect();
    segs.sort();
    segs
}

/// The files kept under the log's `.quarantine/`, with their sizes.
fn quarantined(log_dir: &Path) -> Vec<(PathBuf, u64)> {
    fn walk(d: &Path, out: &mut Vec<(PathBuf, u64)>) {
        for e in std::fs::read_dir(d).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() {
                walk(&p, out);
            } else {
                out.push((p.clone(), e.metadata().map_or(0, |m| m.len())));
            }
        }
    }
    let mut out = Vec::new();
    walk(&log_dir.join(".quarantine"), &mut out);
    out
}

fn datas(recs: &[kinesthetic::stream::StreamRecord]) -> Vec<String> {
    recs.iter()
        .map(|r| String::from_utf8_lossy(&r.data).into_owned())
        .collect()
}

/// Frame ends in a segment file (length prefix + 8-byte header).
fn frame_ends(bytes: &[u8]) -> Vec<usize> {
    let mut ends = Vec::new();
    let mut pos = 0usize;
    while pos + 4 <= bytes.len() {
        let len = u32::from_le_bytes([bytes[pos], bytes[pos + 1], bytes[pos + 2], bytes[pos + 3]])
            as usize;
        pos += 8 + len;
        ends.push(pos);
    }
    ends
}

#[test]
fn a_damaged_record_is_read_around_and_cut_out_at_open() {
    rt().block_on(async {
        let dir = crate::harness::tempdir();
        let seg = dir
            .path()
            .join("s")
            .join(SHARD)
            .join("00000000000000000000.seg");
        let log = open(dir.path());
        log.create_stream("s", 1)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        for i in 0..5 {
            log.put_records("s", &[entry("k", format!("r{i}"))])
                .await
                .unwrap_or_else(|e| panic!("{e}"));
        }
        // Flip a byte inside the third record's data.
        let mut bytes = std::fs::read(&seg).unwrap_or_else(|e| panic!("{e}"));
        let ends = frame_ends(&bytes);
        let third = (ends[1], ends[2]);
        bytes[third.1 - 1] ^= 0x55;
        std::fs::write(&seg, &bytes).unwrap_or_else(|e| panic!("{e}"));

        // Readers, here and in another process, get the four good records
        // (a read of one record at a time included) and no error.
        let reader = LocalLog::open_read_only(dir.path(), LocalOptions::default())
            .unwrap_or_else(|e| panic!("{e}"));
        let all = read_shard(&reader, "s", SHARD, StartPosition::TrimHorizon).await;
        assert_eq!(datas(&all), ["r0", "r1", "r3", "r4"]);
        let mut one_by_one = Vec::new();
        let mut it = Some(
            log.shard_iterator("s", SHARD, &StartPosition::TrimHorizon)
                .await
                .unwrap_or_else(|e| panic!("{e}")),
        );
        while let Some(cur) = it.take() {
            let r = log
                .get_records(&cur, 1)
                .await
                .unwrap_or_else(|e| panic!("get: {e}"));
            if r.records.is_empty() && r.millis_behind_latest == 0 {
                break;
            }
            one_by_one.extend(r.records);
            it = r.next_iterator;
        }
        assert_eq!(datas(&one_by_one), ["r0", "r1", "r3", "r4"]);
        // Counted once however often it is met, and kept aside.
        assert_eq!(log.quarantined().get(), 1);
        let kept = quarantined(dir.path());
        assert_eq!(kept.len(), 1, "{kept:?}");
        assert_eq!(kept[0].1, (third.1 - third.0) as u64);
        let last = written(
            &log.put_records("s", &[entry("k", "r5")])
                .await
                .unwrap_or_else(|e| panic!("{e}"))[0],
        )
        .1;
        drop(log);

        // Opening cuts it out of the segment; the sequence numbers stay.
        let log = open(dir.path());
        assert_eq!(log.quarantined().get(), 1);
        let all = read_shard(&log, "s", SHARD, StartPosition::TrimHorizon).await;
        assert_eq!(datas(&all), ["r0", "r1", "r3", "r4", "r5"]);
        assert_eq!(all[4].sequence, last);
        let clean = std::fs::read(&seg).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            frame_ends(&clean).len(),
            5,
            "the damaged frame is still there"
        );
        assert_eq!(quarantined(dir.path()).len(), 1, "kept twice");
        let next = written(
            &log.put_records("s", &[entry("k", "r6")])
                .await
                .unwrap_or_else(|e| panic!("{e}"))[0],
        )
        .1;
        assert!(next > last, "{next:?} after {last:?}");
    });
}

/// A record cut off at the end of a segment that is not the last one: the
/// reader goes on in the next segment instead of waiting for ever.
#[test]
fn damage_at_the_end_of_an_earlier_segment_is_stepped_over() {
    rt().block_on(async {
        let dir = crate::harness::tempdir();
        let options = LocalOptions {
            segment_bytes: 2_000,
            ..LocalOptions::default()
        };
        let log = LocalLog::open(dir.path(), options.clone()).unwrap_or_else(|e| panic!("{e}"));
        log.create_stream("s", 1)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        for i in 0..60 {
            log.put_records("s", &[entry("k", format!("{i:04}-{}", "p".repeat(100)))])
                .await
                .unwrap_or_else(|e| panic!("{e}"));
        }
        let segs = segments(&dir.path().join("s").join(SHARD));
        assert!(segs.len() >= 3, "{segs:?}");
        let len = std::fs::metadata(&segs[0]).map_or(0, |m| m.len());
        std::fs::OpenOptions::new()
            .write(true)
            .open(&segs[0])
            .and_then(|f| f.set_len(len - 3))
            .unwrap_or_else(|e| panic!("{e}"));
        let next_first: usize = segs[1]
            .file_stem()
            .and_then(|s| s.to_str())
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("{segs:?}"));
        let want: Vec<usize> = (0..60).filter(|i| *i != next_first - 1).collect();
        let index = |recs: &[kinesthetic::stream::StreamRecord]| -> Vec<usize> {
            recs.iter()
                .filter_map(|r| String::from_utf8_lossy(&r.data[..4]).parse().ok())
                .collect()
        };
        let recs = read_shard(&log, "s", SHARD, StartPosition::TrimHorizon).await;
        assert_eq!(index(&recs), want, "all but the damaged record, in order");
        assert_eq!(log.quarantined().get(), 1);
        drop(log);
        let log = LocalLog::open(dir.path(), options).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(log.quarantined().get(), 1, "not found at open");
        let recs = read_shard(&log, "s", SHARD, StartPosition::TrimHorizon).await;
        assert_eq!(index(&recs), want);
    });
}

/// Damage in the first record of the segment being appended to: the
/// records after it are kept, not cut with it. A whole record damaged at
/// the end: its sequence number is never handed out again, so a consumer
/// checkpointed past it does not skip the next record.
#[test]
fn recovery_keeps_what_follows_damage_and_never_reuses_a_sequence_number() {
    rt().block_on(async {
        for damaged in [0usize, 2] {
            let dir = crate::harness::tempdir();
            let mut seqs = Vec::new();
            {
                let log = open(dir.path());
                log.create_stream("s", 1)
                    .await
                    .unwrap_or_else(|e| panic!("{e}"));
                for d in ["a", "b", "c"] {
                    let out = log
                        .put_records("s", &[entry("k", format!("{d}-{}", "x".repeat(40)))])
                        .await
                        .unwrap_or_else(|e| panic!("{e}"));
                    seqs.push(written(&out[0]).1);
                }
            }
            let seg = dir
                .path()
                .join("s")
                .join(SHARD)
                .join("00000000000000000000.seg");
            let mut bytes = std::fs::read(&seg).unwrap_or_else(|e| panic!("{e}"));
            let ends = frame_ends(&bytes);
            bytes[ends[damaged] - 5] ^= 0x10;
            std::fs::write(&seg, &bytes).unwrap_or_else(|e| panic!("{e}"));

            let log = open(dir.path());
            let d = written(
                &log.put_records("s", &[entry("k", "d")])
                    .await
                    .unwrap_or_else(|e| panic!("{e}"))[0],
            )
            .1;
            assert!(
                d > seqs[2],
                "new record {d:?} must come after {:?}",
                seqs[2]
            );
            let after_c = read_shard(
                &log,
                "s",
                SHARD,
                StartPosition::AfterSequence(seqs[2].clone()),
            )
            .await;
            assert_eq!(datas(&after_c), ["d"]);
            let all = read_shard(&log, "s", SHARD, StartPosition::TrimHorizon).await;
            let firsts: Vec<char> = all
                .iter()
                .filter_map(|r| r.data.first().map(|b| *b as char))
                .collect();
            let want: Vec<char> = ['a', 'b', 'c', 'd']
                .into_iter()
                .enumerate()
                .filter(|(i, _)| *i != damaged)
                .map(|(_, c)| c)
                .collect();
            assert_eq!(firsts, want, "damaged record {damaged}");
            let kept = quarantined(dir.path());
            assert_eq!(kept.len(), 1, "{kept:?}");
            let frame = ends[damaged] - if damaged == 0 { 0 } else { ends[damaged - 1] };
            assert_eq!(kept[0].1, frame as u64);
        }
    });
}

/// A frame as the log writes it (see `segment.rs`).
fn frame(offset: u64, key: &str, data: &[u8]) -> Vec<u8> {
    let mut p = Vec::new();
    p.extend_from_slice(&offset.to_le_bytes());
    p.extend_from_slice(&0i64.to_le_bytes());
    p.extend_from_slice(&(key.len() as u16).to_le_bytes());
    p.extend_from_slice(key.as_bytes());
    p.extend_from_slice(data);
    let mut f = Vec::new();
    f.extend_from_slice(&(p.len() as u32).to_le_bytes());
    f.extend_from_slice(&crc32fast::hash(&p).to_le_bytes());
    f.extend_from_slice(&p);
    f
}

/// A frame in the file that the writer has not committed (written, not yet
/// fsynced and answered; it may still be cut out) is not read by a reader
/// in another process either.
#[test]
fn readers_in_another_process_see_only_committed_records() {
    rt().block_on(async {
        let dir = crate::harness::tempdir();
        let log = open(dir.path());
        log.create_stream("s", 1)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        for i in 0..3 {
            log.put_records("s", &[entry("k", format!("r{i}"))])
                .await
                .unwrap_or_else(|e| panic!("{e}"));
        }
        let seg = dir
            .path()
            .join("s")
            .join(SHARD)
            .join("00000000000000000000.seg");
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(&seg)
            .unwrap_or_else(|e| panic!("{e}"));
        std::io::Write::write_all(&mut f, &frame(3, "k", b"uncommitted"))
            .unwrap_or_else(|e| panic!("{e}"));
        let reader = LocalLog::open_read_only(dir.path(), LocalOptions::default())
            .unwrap_or_else(|e| panic!("{e}"));
        for from in [StartPosition::TrimHorizon, StartPosition::Latest] {
            let recs = read_shard(&reader, "s", SHARD, from.clone()).await;
            let want: &[&str] = match from {
                StartPosition::TrimHorizon => &["r0", "r1", "r2"],
                _ => &[],
            };
            assert_eq!(datas(&recs), want, "from {from:?}");
        }
        assert_eq!(
            datas(&read_shard(&log, "s", SHARD, StartPosition::TrimHorizon).await),
            ["r0", "r1", "r2"]
        );
    });
}

/// The reproduction from the review: one flipped byte in the first of
/// three spool segments used to stop the shipper for good (0 of the events
/// shipped, puts still acknowledged). Now only the damaged record is lost,
/// and it is kept aside.
#[test]
fn a_damaged_spool_segment_costs_its_record_alone() {
    use kinesthetic::app::Telemetry;
    use kinesthetic::intake::producer::ProducerConfig;
    use kinesthetic::intake::spool::Spooled;
    rt().block_on(async {
        let remote_dir = crate::harness::tempdir();
        let spool_dir = crate::harness::tempdir();
        let remote = open(remote_dir.path());
        // 8 MiB of backlog: segments of 1 MiB.
        const LIMIT: u64 = 8 << 20;
        let spool = || {
            Spooled::open(
                remote.clone(),
                spool_dir.path(),
                ProducerConfig::default(),
                Telemetry::new().metrics,
                LIMIT,
            )
            .unwrap_or_else(|e| panic!("{e}"))
        };
        // The stream does not exist yet: everything stays spooled.
        let first = spool();
        for i in 0..12u8 {
            let e = kinesthetic::stream::PutEntry {
                partition_key: format!("k{i}"),
                explicit_hash_key: None,
                data: bytes::Bytes::from(vec![b'a' + i; 256 << 10]),
            };
            first
                .put_records("s", &[e])
                .await
                .unwrap_or_else(|e| panic!("put {i}: {e}"));
        }
        first.close().await;
        drop(first);
        let segs = segments(&spool_dir.path().join("s").join(SHARD));
        assert!(segs.len() >= 3, "{segs:?}");
        // A byte inside the second record of the first segment.
        let mut bytes = std::fs::read(&segs[0]).unwrap_or_else(|e| panic!("{e}"));
        let ends = frame_ends(&bytes);
        bytes[ends[0] + 1000] ^= 0x01;
        std::fs::write(&segs[0], &bytes).unwrap_or_else(|e| panic!("{e}"));

        remote
            .create_stream("s", 1)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let second = spool();
        second.resume().await.unwrap_or_else(|e| panic!("{e}"));
        let start = Instant::now();
        loop {
            let got = crate::intake::read_all(&remote, "s").await;
            if got.len() >= 11 {
                // Each record has a key of its own: no order between them.
                let mut letters: Vec<u8> = got.iter().map(|e| e.data[0]).collect();
                letters.sort_unstable();
                let want: Vec<u8> = (0..12u8).filter(|i| *i != 1).map(|i| b'a' + i).collect();
                assert_eq!(letters, want, "every record but the damaged one, once");
                break;
            }
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "{} of 11 records shipped",
                got.len()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert_eq!(second.quarantined().get(), 1);
        assert_eq!(quarantined(spool_dir.path()).len(), 1);
        second.close().await;
    });
}
