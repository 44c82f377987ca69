//! The writer thread: the requests it takes, each shard's active segment,
//! appending a put's frames (one write per shard, all or nothing), group
//! commit (one fsync per touched file, then the answers) and undoing a
//! cycle whose fsync failed.

use std::collections::{BTreeMap, HashMap};
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock, mpsc};

use bytes::BytesMut;
use tokio::sync::oneshot;

use super::log::{LocalOptions, io_err, now_ms};
use super::meta::{self, StreamMeta, sequence, shard_id, shard_index};
use super::read::{End, write_committed};
use super::recovery::Quarantine;
use super::segment;
use crate::stream::{HashRange, PutEntry, PutOutcome, StreamError};

type Reply<T> = oneshot::Sender<Result<T, StreamError>>;
/// A put waiting for its fsync: where to answer, and its outcome so far.
type PendingPut = (
    String,
    Reply<Vec<PutOutcome>>,
    Result<Vec<PutOutcome>, StreamError>,
);

#[derive(Debug)]
pub(super) enum Req {
    Put {
        stream: String,
        entries: Vec<PutEntry>,
        reply: Reply<Vec<PutOutcome>>,
    },
    Create {
        name: String,
        shards: u32,
        reply: Reply<()>,
    },
    Delete {
        name: String,
        reply: Reply<()>,
    },
    Split {
        stream: String,
        index: u32,
        at: u128,
        reply: Reply<()>,
    },
    Merge {
        stream: String,
        a: u32,
        b: u32,
        reply: Reply<()>,
    },
    TrimThrough {
        stream: String,
        index: u32,
        offset: u64,
        reply: Reply<u64>,
    },
}

pub(super) struct ShardState {
    pub(super) dir: PathBuf,
    /// The segment being appended to: first offset, file, size.
    pub(super) active: Option<(u64, File, u64)>,
    pub(super) next_offset: u64,
    /// A failed write could not be cut out of the active segment.
    pub(super) poisoned: bool,
}

/// Appends `buf` (frames from `first_offset` on) to the shard's active
/// segment, rolling to a new one first when it would grow past
/// `segment_bytes`. Returns the segment's size before the write. On error
/// the segment is cut back to that size.
fn write_frames(
    sh: &mut ShardState,
    first_offset: u64,
    buf: &[u8],
    segment_bytes: u64,
    fsync: bool,
) -> Result<u64, StreamError> {
    let roll = match &sh.active {
        None => true,
        Some((_, _, size)) => *size > 0 && size + buf.len() as u64 > segment_bytes,
    };
    if roll {
        // The commit fsyncs only the active segment: make what was
        // appended to this one durable before it stops being active.
        if fsync && let Some((_, f, _)) = &sh.active {
            f.sync_data().map_err(io_err(&sh.dir))?;
        }
        // A new shard's directory: its entry in the stream's directory must
        // be durable before the first acknowledged write inside it.
        match std::fs::create_dir(&sh.dir) {
            Ok(()) => {
                // Nothing of it is committed yet, for readers elsewhere.
                write_committed(
                    &sh.dir,
                    End {
                        next_offset: first_offset,
                        segment: first_offset,
                        pos: 0,
                    },
                )
                .map_err(io_err(&sh.dir))?;
                if fsync && let Some(stream_dir) = sh.dir.parent() {
                    meta::sync_dir(stream_dir).map_err(io_err(stream_dir))?;
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(io_err(&sh.dir)(e)),
        }
        let path = sh.dir.join(segment::segment_name(first_offset));
        let f = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(io_err(&path))?;
        if fsync {
            meta::sync_dir(&sh.dir).map_err(io_err(&sh.dir))?;
        }
        sh.active = Some((first_offset, f, 0));
    }
    let Some((_, f, size)) = &mut sh.active else {
        return Err(StreamError::Service(format!(
            "{}: no active segment",
            sh.dir.display()
        )));
    };
    let before = *size;
    if let Err(e) = f.write_all(buf) {
        truncate_active(sh, before);
        return Err(StreamError::Io {
            path: sh.dir.display().to_string(),
            error: e,
        });
    }
    *size += buf.len() as u64;
    Ok(before)
}

/// Puts a shard back as it was before this commit cycle: segments the cycle
/// started are removed, the segment that was active then is cut back to its
/// size and active again, and the offsets handed out are returned.
fn undo_cycle(sh: &mut ShardState, first: Option<u64>, size: u64, next: u64) {
    if first != sh.active.as_ref().map(|a| a.0) {
        // The cycle rolled: its segments start at or after `next`.
        let started: Vec<PathBuf> = segment::list(&sh.dir)
            .unwrap_or_default()
            .into_iter()
            .filter(|(f, _)| *f >= next && Some(*f) != first)
            .map(|(_, p)| p)
            .collect();
        for p in started {
            if let Err(e) = std::fs::remove_file(&p) {
                tracing::error!(file = %p.display(), error = %e, "cannot remove a segment of a failed commit");
            }
        }
        sh.active = None;
        if let Some(f) = first {
            let path = sh.dir.join(segment::segment_name(f));
            match OpenOptions::new().append(true).open(&path) {
                Ok(file) => sh.active = Some((f, file, size)),
                Err(e) => {
                    tracing::error!(file = %path.display(), error = %e, "cannot reopen a segment");
                }
            }
        }
    }
    truncate_active(sh, size);
    sh.next_offset = next;
}

/// Cuts the active segment back to `len` bytes, dropping frames of a put
/// that failed. If even that fails, the shard takes no more writes until
/// the log is reopened (recovery truncates the torn tail then).
fn truncate_active(sh: &mut ShardState, len: u64) {
    let Some((_, f, size)) = &mut sh.active else {
        return;
    };
    match f.set_len(len) {
        Ok(()) => *size = len,
        Err(e) => {
            tracing::error!(dir = %sh.dir.display(), error = %e, "cannot cut a failed write out of a segment; the shard takes no more writes until reopened");
            sh.poisoned = true;
        }
    }
}

pub(super) struct StreamState {
    pub(super) dir: PathBuf,
    pub(super) meta: StreamMeta,
    pub(super) shards: HashMap<u32, ShardState>,
}

pub(super) struct Writer {
    pub(super) dir: PathBuf,
    pub(super) quarantine: Arc<Quarantine>,
    pub(super) options: LocalOptions,
    pub(super) streams: BTreeMap<String, StreamState>,
    pub(super) ends: Arc<RwLock<HashMap<(String, u32), End>>>,
    /// Each shard touched in this commit cycle, as it was before: active
    /// segment, its size, next offset. A shard whose fsync fails is cut
    /// back to it.
    pub(super) cycle_start: HashMap<(String, u32), (Option<u64>, u64, u64)>,
}

#[cfg(test)]
/// Shard directories whose next fsync fails (unit tests of the commit).
static FAIL_FSYNC_IN: std::sync::Mutex<Vec<PathBuf>> = std::sync::Mutex::new(Vec::new());

/// `sync_data`, or the failure a unit test asked for.
fn sync_shard(f: &File, dir: &Path) -> std::io::Result<()> {
    #[cfg(test)]
    if let Ok(mut fail) = FAIL_FSYNC_IN.lock()
        && let Some(i) = fail.iter().position(|d| d == dir)
    {
        fail.remove(i);
        return Err(std::io::Error::other("injected fsync failure"));
    }
    let _ = dir;
    f.sync_data()
}

impl Writer {
    /// Makes the committed ends of a stream's shards visible to readers.
    pub(super) fn publish(&self, name: &str, st: &StreamState) {
        if let Ok(mut ends) = self.ends.write() {
            for (i, s) in st.shards.iter().filter(|(_, s)| !s.poisoned) {
                let (segment, pos) = s
                    .active
                    .as_ref()
                    .map_or((s.next_offset, 0), |(f, _, size)| (*f, *size));
                let end = End {
                    next_offset: s.next_offset,
                    segment,
                    pos,
                };
                let before = ends.insert((name.to_owned(), *i), end);
                // Readers in other processes see what is committed only.
                if before != Some(end)
                    && s.active.is_some()
                    && let Err(e) = write_committed(&s.dir, end)
                {
                    tracing::warn!(dir = %s.dir.display(), error = %e, "local log: cannot note the committed end for other processes' readers");
                }
            }
        }
    }

    pub(super) fn run(mut self, rx: mpsc::Receiver<Req>) {
        while let Ok(first) = rx.recv() {
            let mut batch = vec![first];
            while let Ok(r) = rx.try_recv() {
                batch.push(r);
            }
            let mut puts: Vec<PendingPut> = Vec::new();
            let mut touched: Vec<(String, u32)> = Vec::new();
            for req in batch {
                match req {
                    Req::Put {
                        stream,
                        entries,
                        reply,
                    } => {
                        let r = self.append(&stream, &entries, &mut touched);
                        puts.push((stream, reply, r));
                    }
                    other => {
                        // Keep order: what was appended before is committed first.
                        self.commit(&mut puts, &mut touched);
                        self.admin(other);
                    }
                }
            }
            self.commit(&mut puts, &mut touched);
        }
    }

    /// fsyncs what was appended, publishes it, answers the puts.
    ///
    /// A shard whose fsync fails is cut back to where it was before this
    /// cycle, is not published, and takes no more writes until the log is
    /// reopened (after a failed fsync the kernel may have dropped pages it
    /// had not written); the puts that wrote to it fail, the others succeed.
    fn commit(&mut self, puts: &mut Vec<PendingPut>, touched: &mut Vec<(String, u32)>) {
        touched.sort();
        touched.dedup();
        let mut failed: Vec<(String, u32, String)> = Vec::new();
        if self.options.fsync {
            for (s, i) in touched.iter() {
                let Some(sh) = self.streams.get_mut(s).and_then(|st| st.shards.get_mut(i)) else {
                    continue;
                };
                let Some((_, f, _)) = &sh.active else {
                    continue;
                };
                if let Err(e) = sync_shard(f, &sh.dir) {
                    let why = format!("fsync of {}: {e}", sh.dir.display());
                    tracing::error!(error = %why, "a shard takes no more writes until the log is reopened");
                    if let Some(&(first, size, next)) = self.cycle_start.get(&(s.clone(), *i)) {
                        undo_cycle(sh, first, size, next);
                    }
                    sh.poisoned = true;
                    failed.push((s.clone(), *i, why));
                }
            }
        }
        self.cycle_start.clear();
        let names: Vec<String> = touched.iter().map(|(s, _)| s.clone()).collect();
        for n in names {
            if let Some(st) = self.streams.get(&n) {
                self.publish(&n, st);
            }
        }
        touched.clear();
        for (stream, reply, r) in puts.drain(..) {
            let r = match r {
                Ok(outcomes) => {
                    let hit = outcomes.iter().find_map(|o| match o {
                        PutOutcome::Written { shard, .. } => failed
                            .iter()
                            .find(|(s, i, _)| *s == stream && Some(*i) == shard_index(shard)),
                        PutOutcome::Failed { .. } => None,
                    });
                    match hit {
                        Some((_, _, why)) => Err(StreamError::Service(why.clone())),
                        None => Ok(outcomes),
                    }
                }
                Err(e) => Err(e),
            };
            let _ = reply.send(r);
        }
    }

    fn append(
        &mut self,
        stream: &str,
        entries: &[PutEntry],
        touched: &mut Vec<(String, u32)>,
    ) -> Result<Vec<PutOutcome>, StreamError> {
        let segment_bytes = self.options.segment_bytes;
        let st = self
            .streams
            .get_mut(stream)
            .ok_or_else(|| StreamError::NoSuchStream(stream.to_owned()))?;
        let mut open: Vec<(HashRange, u32)> = Vec::new();
        for s in st.meta.shards.iter().filter(|s| s.is_open()) {
            open.push((s.range()?, s.index));
        }
        let arrival = now_ms();
        let mut bufs: BTreeMap<u32, (u64, BytesMut)> = BTreeMap::new();
        let mut out = Vec::with_capacity(entries.len());
        // Where each entry goes, checked before any offset is handed out.
        // An aggregated record whose sub-records do not all hash into that
        // shard is refused (`WRONG_SHARD`), and so are the later entries
        // bound for the same shard.
        let mut targets = Vec::with_capacity(entries.len());
        let mut wrong: Vec<u32> = Vec::new();
        for e in entries {
            let h = e.hash_key();
            let (index, range) = open
                .iter()
                .find(|(r, _)| r.contains(h))
                .map(|(r, i)| (*i, *r))
                .ok_or_else(|| StreamError::Service(format!("no open shard holds hash key {h}")))?;
            let outside =
                crate::stream::kpl::hash_span(&e.data).is_some_and(|span| !range.holds(span));
            if outside || wrong.contains(&index) {
                if !wrong.contains(&index) {
                    wrong.push(index);
                }
                targets.push(Err(index));
                continue;
            }
            match st.shards.get(&index) {
                None => {
                    return Err(StreamError::Service(format!("shard {index} has no state")));
                }
                Some(sh) if sh.poisoned => {
                    return Err(StreamError::Service(format!(
                        "shard {index} of {stream:?} takes no writes after a failed one could not \
                         be cut out of its segment; reopen the log"
                    )));
                }
                Some(_) => targets.push(Ok(index)),
            }
        }
        for (e, target) in entries.iter().zip(targets) {
            let index = match target {
                Ok(i) => i,
                Err(i) => {
                    out.push(PutOutcome::Failed {
                        code: crate::stream::WRONG_SHARD.to_owned(),
                        message: format!(
                            "some of the record's sub-records hash outside shard {}'s range \
                             (the stream was resharded): re-route them",
                            shard_id(i)
                        ),
                    });
                    continue;
                }
            };
            let Some(sh) = st.shards.get_mut(&index) else {
                continue;
            };
            let offset = sh.next_offset;
            sh.next_offset += 1;
            let (_, buf) = bufs
                .entry(index)
                .or_insert_with(|| (offset, BytesMut::new()));
            segment::encode(buf, offset, arrival, &e.partition_key, &e.data);
            out.push(PutOutcome::Written {
                shard: shard_id(index),
                sequence: sequence(index, offset),
            });
        }
        // All or nothing: a put that fails leaves no frame of it in any
        // shard, so no later put is appended after a torn one.
        let fsync = self.options.fsync;
        let mut written: Vec<(u32, u64)> = Vec::new();
        let mut failure: Option<StreamError> = None;
        for (&index, (first_offset, buf)) in &bufs {
            let Some(sh) = st.shards.get_mut(&index) else {
                continue;
            };
            self.cycle_start
                .entry((stream.to_owned(), index))
                .or_insert((
                    sh.active.as_ref().map(|a| a.0),
                    sh.active.as_ref().map_or(0, |a| a.2),
                    *first_offset,
                ));
            match write_frames(sh, *first_offset, buf, segment_bytes, fsync) {
                Ok(before) => written.push((index, before)),
                Err(e) => {
                    failure = Some(e);
                    break;
                }
            }
            touched.push((stream.to_owned(), index));
        }
        if let Some(e) = failure {
            for (index, before) in written {
                if let Some(sh) = st.shards.get_mut(&index) {
                    truncate_active(sh, before);
                }
            }
            for (index, (first_offset, _)) in &bufs {
                if let Some(sh) = st.shards.get_mut(index) {
                    sh.next_offset = *first_offset;
                }
            }
            return Err(e);
        }
        Ok(out)
    }
}

#[cfg(all(test, target_os = "linux"))]
mod write_failure_tests {
    #![allow(unsafe_code)]
    use super::*;

    /// A write that fails halfway (here: the file-size limit) leaves no
    /// torn frame: the segment is cut back, and the next put lands where
    /// the failed one began.
    #[test]
    fn a_failed_write_is_cut_out_of_the_segment() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let path = dir.path().join("seg");
        let f = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .unwrap_or_else(|e| panic!("{e}"));
        // A sparse file 100 bytes under a 1 GiB limit: no other test in
        // this process writes a file that big.
        const LIMIT: u64 = 1 << 30;
        f.set_len(LIMIT - 100).unwrap_or_else(|e| panic!("{e}"));
        let mut sh = ShardState {
            dir: dir.path().to_owned(),
            active: Some((0, f, LIMIT - 100)),
            next_offset: 5,
            poisoned: false,
        };
        // SAFETY: plain libc calls; SIGXFSZ ignored makes the write fail
        // with EFBIG instead of killing the process.
        let old = unsafe {
            libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
            let mut old = libc::rlimit {
                rlim_cur: 0,
                rlim_max: 0,
            };
            assert_eq!(libc::getrlimit(libc::RLIMIT_FSIZE, &mut old), 0);
            let new = libc::rlimit {
                rlim_cur: LIMIT,
                rlim_max: old.rlim_max,
            };
            assert_eq!(libc::setrlimit(libc::RLIMIT_FSIZE, &new), 0);
            old
        };
        let failed = write_frames(&mut sh, 5, &[7u8; 1000], u64::MAX, false);
        let len_after_failure = std::fs::metadata(&path).map(|m| m.len());
        // SAFETY: restores the limit read above.
        unsafe {
            libc::setrlimit(libc::RLIMIT_FSIZE, &old);
        }
        assert!(matches!(failed, Err(StreamError::Io { .. })), "{failed:?}");
        assert_eq!(
            len_after_failure.ok(),
            Some(LIMIT - 100),
            "a torn frame was left"
        );
        assert!(!sh.poisoned);
        assert_eq!(sh.active.as_ref().map(|a| a.2), Some(LIMIT - 100));
        let ok = write_frames(&mut sh, 5, &[9u8; 50], u64::MAX, false);
        assert_eq!(ok.ok(), Some(LIMIT - 100));
        let bytes = std::fs::read(&path).unwrap_or_default();
        assert_eq!(bytes.len() as u64, LIMIT - 50);
        assert!(bytes[bytes.len() - 50..].iter().all(|&b| b == 9));
        assert!(
            bytes[..bytes.len() - 50]
                .iter()
                .rev()
                .take(100)
                .all(|&b| b == 0)
        );
    }

    /// When even the cut fails, the shard refuses writes instead of
    /// appending after a torn frame.
    #[test]
    fn a_write_that_cannot_be_cut_out_stops_the_shard() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        // /dev/full: every write fails (ENOSPC), and it cannot be truncated.
        let f = OpenOptions::new()
            .append(true)
            .open("/dev/full")
            .unwrap_or_else(|e| panic!("/dev/full: {e}"));
        let mut sh = ShardState {
            dir: dir.path().to_owned(),
            active: Some((0, f, 0)),
            next_offset: 0,
            poisoned: false,
        };
        let r = write_frames(&mut sh, 0, b"frame", u64::MAX, false);
        assert!(matches!(r, Err(StreamError::Io { .. })), "{r:?}");
        assert!(sh.poisoned);
    }
}

#[cfg(test)]
mod fsync_failure_tests {
    use super::*;
    use crate::stream::local::log::{LocalLog, shard_dir};
    use crate::stream::{SequenceNumber, StartPosition, StreamBackend};

    fn entry(data: &str, shard: u32) -> PutEntry {
        PutEntry {
            partition_key: "k".into(),
            explicit_hash_key: Some(if shard == 0 { 0 } else { u128::MAX }),
            data: bytes::Bytes::from(data.to_owned()),
        }
    }

    fn block_on(f: impl std::future::Future<Output = ()>) {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap_or_else(|e| panic!("{e}"))
            .block_on(f);
    }

    /// Bytes of the segment files of a shard directory.
    fn bytes_in(dir: &Path) -> u64 {
        std::fs::read_dir(dir)
            .map(|rd| {
                rd.flatten()
                    .map(|e| e.metadata().map_or(0, |m| m.len()))
                    .sum()
            })
            .unwrap_or(0)
    }

    async fn read(log: &LocalLog, shard: u32) -> Result<Vec<String>, StreamError> {
        let it = log
            .shard_iterator("s", &shard_id(shard), &StartPosition::TrimHorizon)
            .await?;
        let out = log.get_records(&it, 100).await?;
        Ok(out
            .records
            .iter()
            .map(|r| String::from_utf8_lossy(&r.data).into_owned())
            .collect())
    }

    /// The same when the failed cycle rolled to new segments: they are
    /// removed, and nothing of the failed put comes back on reopening.
    #[test]
    fn a_failed_fsync_after_a_roll_leaves_nothing_behind() {
        block_on(async {
            let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
            let options = || LocalOptions {
                segment_bytes: 1,
                ..LocalOptions::default()
            };
            let log = LocalLog::open(dir.path(), options()).unwrap_or_else(|e| panic!("{e}"));
            log.create_stream("s", 1)
                .await
                .unwrap_or_else(|e| panic!("{e}"));
            for d in ["a", "b"] {
                log.put_records("s", &[entry(d, 0)])
                    .await
                    .unwrap_or_else(|e| panic!("{e}"));
            }
            let shard0 = shard_dir(&dir.path().join("s"), 0);
            if let Ok(mut f) = FAIL_FSYNC_IN.lock() {
                f.push(shard0.clone());
            }
            let failed = log.put_records("s", &[entry("c", 0)]).await;
            assert!(failed.is_err(), "{failed:?}");
            drop(log);
            let log = LocalLog::open(dir.path(), options()).unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(
                read(&log, 0).await.ok(),
                Some(vec!["a".to_owned(), "b".to_owned()])
            );
            let out = log
                .put_records("s", &[entry("d", 0)])
                .await
                .unwrap_or_else(|e| panic!("{e}"));
            assert!(
                matches!(&out[0], PutOutcome::Written { sequence: seq, .. } if *seq == sequence(0, 2)),
                "{out:?}"
            );
        });
    }

    /// A failed fsync: the shard's frames of that cycle are cut back and
    /// never published, its put fails, the shard takes no more writes until
    /// the log is reopened; other shards go on.
    #[test]
    fn a_failed_fsync_stops_the_shard_and_publishes_nothing_of_it() {
        block_on(async {
            let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
            let log = LocalLog::open(dir.path(), LocalOptions::default())
                .unwrap_or_else(|e| panic!("{e}"));
            log.create_stream("s", 2)
                .await
                .unwrap_or_else(|e| panic!("{e}"));
            log.put_records("s", &[entry("a", 0), entry("b", 1)])
                .await
                .unwrap_or_else(|e| panic!("{e}"));
            let shard0 = shard_dir(&dir.path().join("s"), 0);
            let before = bytes_in(&shard0);
            if let Ok(mut f) = FAIL_FSYNC_IN.lock() {
                f.push(shard0.clone());
            }
            let failed = log.put_records("s", &[entry("c", 0)]).await;
            assert!(
                matches!(&failed, Err(StreamError::Service(m)) if m.contains("injected fsync failure")),
                "{failed:?}"
            );
            assert_eq!(read(&log, 0).await.ok(), Some(vec!["a".to_owned()]));
            let after = bytes_in(&shard0);
            assert_eq!(after, before, "the failed frame was not cut back");
            let refused = log.put_records("s", &[entry("d", 0)]).await;
            assert!(
                matches!(&refused, Err(StreamError::Service(m)) if m.contains("reopen")),
                "{refused:?}"
            );
            log.put_records("s", &[entry("e", 1)])
                .await
                .unwrap_or_else(|e| panic!("the other shard: {e}"));
            assert_eq!(
                read(&log, 1).await.ok(),
                Some(vec!["b".to_owned(), "e".to_owned()])
            );
            drop(log);
            // Reopened: the shard takes writes again, after `a`.
            let log = LocalLog::open(dir.path(), LocalOptions::default())
                .unwrap_or_else(|e| panic!("{e}"));
            log.put_records("s", &[entry("f", 0)])
                .await
                .unwrap_or_else(|e| panic!("after reopening: {e}"));
            assert_eq!(
                read(&log, 0).await.ok(),
                Some(vec!["a".to_owned(), "f".to_owned()])
            );
        });
    }

    /// Puts placed one after another, their outcomes not yet awaited, are
    /// written in the order placed, whatever order they are awaited in.
    #[test]
    fn placed_puts_are_written_in_the_order_placed() {
        block_on(async {
            let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
            let log = LocalLog::open(dir.path(), LocalOptions::default())
                .unwrap_or_else(|e| panic!("{e}"));
            log.create_stream("s", 1)
                .await
                .unwrap_or_else(|e| panic!("{e}"));
            let names: Vec<String> = (0..40).map(|i| format!("p{i}")).collect();
            let mut placed = Vec::new();
            for n in &names {
                match log.place_put("s", &[entry(n, 0)]) {
                    Ok(Some(p)) => placed.push(p),
                    other => panic!("the local log places puts: {other:?}"),
                }
            }
            let mut sequences = Vec::new();
            for p in placed.into_iter().rev() {
                match p
                    .outcome()
                    .await
                    .unwrap_or_else(|e| panic!("{e}"))
                    .as_slice()
                {
                    [PutOutcome::Written { sequence, .. }] => sequences.push(sequence.clone()),
                    other => panic!("{other:?}"),
                }
            }
            sequences.reverse();
            let want: Vec<SequenceNumber> = (0..40).map(|i| sequence(0, i)).collect();
            assert_eq!(sequences, want);
            assert_eq!(read(&log, 0).await.ok(), Some(names));
        });
    }

    /// A put placed behind one whose fsync fails is not written after the
    /// gap: it fails too, and neither is readable.
    #[test]
    fn a_failed_fsync_fails_the_puts_placed_behind_it() {
        block_on(async {
            let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
            let log = LocalLog::open(dir.path(), LocalOptions::default())
                .unwrap_or_else(|e| panic!("{e}"));
            log.create_stream("s", 1)
                .await
                .unwrap_or_else(|e| panic!("{e}"));
            log.put_records("s", &[entry("a", 0)])
                .await
                .unwrap_or_else(|e| panic!("{e}"));
            let shard0 = shard_dir(&dir.path().join("s"), 0);
            if let Ok(mut f) = FAIL_FSYNC_IN.lock() {
                f.push(shard0.clone());
            }
            let place = |d: &str| match log.place_put("s", &[entry(d, 0)]) {
                Ok(Some(p)) => p,
                other => panic!("{other:?}"),
            };
            let (c, d) = (place("c"), place("d"));
            let (c, d) = (c.outcome().await, d.outcome().await);
            assert!(c.is_err(), "{c:?}");
            assert!(d.is_err(), "{d:?}");
            assert_eq!(read(&log, 0).await.ok(), Some(vec!["a".to_owned()]));
        });
    }
}
