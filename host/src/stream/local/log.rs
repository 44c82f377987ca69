//! The local log: streams in a directory, Kinesis semantics.
//!
//! One writer thread owns every file it appends to. `put_records` calls
//! queue requests for it; it takes every request waiting, appends each
//! shard's frames with one write, fsyncs each touched file once, and then
//! answers them all (group commit), so concurrent callers share fsyncs.
//! Readers go through the files, so another process (opened with
//! [`LocalLog::open_read_only`]) sees what the writer appended.
//!
//! This file holds the handle: [`LocalLog`], its options, the state its
//! clones share, opening, and the `StreamBackend` impl, which asks the
//! writer thread (`writer.rs`) or reads the files (`read.rs`). What runs at
//! open to check segments is in `recovery.rs`; creating, deleting,
//! resharding and retention in `admin.rs`.

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock, mpsc};
use std::time::{Duration, SystemTime};

use tokio::sync::oneshot;

use super::admin::{finish_deletes, spawn_retention};
use super::meta::{self, StreamMeta, sequence, shard_id, shard_index, split_sequence};
use super::read::{End, Position, seek_end, seek_offset, seek_time};
use super::recovery::Quarantine;
use super::segment;
use super::writer::{Req, Writer};
use crate::stream::{
    GetRecordsOutput, PlacedPut, PutEntry, PutOutcome, SequenceNumber, ShardIterator,
    StartPosition, StreamBackend, StreamDescription, StreamError, StreamStatus,
};

/// Settings of a local log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalOptions {
    /// fsync before answering a put (durable acknowledgements).
    pub fsync: bool,
    /// A segment file is closed and a new one started beyond this size.
    pub segment_bytes: u64,
    /// Keep records this long (default: the stream's retention, 24 h).
    pub retention: Option<Duration>,
    /// Keep at most this many bytes per shard (whole segments are deleted).
    pub retention_bytes: Option<u64>,
    /// How often retention runs (on its own thread, whether or not the log
    /// is being written).
    pub retention_every: Duration,
    /// Bytes each entry may carry beyond Kinesis's limits on a record and
    /// on a put: the spool wraps every record with its destination, and
    /// must take whatever Kinesis would.
    pub entry_overhead: usize,
}

impl Default for LocalOptions {
    fn default() -> Self {
        Self {
            fsync: true,
            segment_bytes: 64 << 20,
            retention: None,
            retention_bytes: None,
            retention_every: Duration::from_secs(10),
            entry_overhead: 0,
        }
    }
}

const LOCK: &str = ".lock";

/// The embedded stream log. Cheap to clone.
#[derive(Debug, Clone)]
pub struct LocalLog {
    pub(super) inner: Arc<Inner>,
}

#[derive(Debug)]
pub(super) struct Inner {
    pub(super) dir: PathBuf,
    pub(super) writer: Option<mpsc::Sender<Req>>,
    /// Committed ends of the writer's shards (readers stop there).
    pub(super) ends: Arc<RwLock<HashMap<(String, u32), End>>>,
    _lock: Option<File>,
    /// See [`LocalOptions::entry_overhead`].
    entry_overhead: usize,
    pub(super) quarantine: Arc<Quarantine>,
    /// See [`LocalOptions::retention`] and [`LocalOptions::retention_bytes`].
    pub(super) retention: Option<Duration>,
    pub(super) retention_bytes: Option<u64>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        // Dropping the sender ends the writer thread after its last cycle.
        self.writer.take();
    }
}

pub(super) fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> StreamError + '_ {
    move |error| StreamError::Io {
        path: path.display().to_string(),
        error,
    }
}

/// A data directory that turns out to be a file gets a message that says
/// so, not "File exists".
fn not_a_file(dir: &Path) -> Result<(), StreamError> {
    if dir.exists() && !dir.is_dir() {
        return Err(StreamError::BadInput(format!(
            "{} is a file, not a directory: the local log keeps its streams in a directory \
             of its own; name another path (--data, or stream.data_dir in the config)",
            dir.display()
        )));
    }
    Ok(())
}

pub(super) fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// Kinesis's rule for stream names, and not starting with `.`: the log's
/// own files (`.lock`, `.deleted-…`) do.
pub(super) fn check_name(name: &str) -> Result<(), StreamError> {
    crate::stream::name::check(name).map_err(StreamError::BadInput)?;
    if name.starts_with('.') {
        return Err(StreamError::BadInput(format!(
            "{} is not a stream name here: the local log's names do not start with `.` (its \
             own files do)",
            crate::stream::name::shown(name)
        )));
    }
    Ok(())
}

impl LocalLog {
    /// Opens (creating if needed) the log in `dir` for writing. Takes an
    /// exclusive lock: one writer per directory.
    pub fn open(dir: &Path, options: LocalOptions) -> Result<Self, StreamError> {
        not_a_file(dir)?;
        std::fs::create_dir_all(dir).map_err(io_err(dir))?;
        let lock = match crate::fsutil::lock_dir(dir, LOCK).map_err(io_err(dir))? {
            Ok(lock) => lock,
            Err(holder) => {
                return Err(StreamError::BadInput(format!(
                    "the local log in {} is being written by another process ({holder}), and \
                     one process at a time may write it. To create, delete or reshard a \
                     stream: stop that process, run this command, then start it again (its \
                     consumer reads new shards after their parents). `stream list`, \
                     `describe` and `tail` work while it runs",
                    dir.display(),
                )));
            }
        };
        finish_deletes(dir);
        let ends = Arc::new(RwLock::new(HashMap::new()));
        let entry_overhead = options.entry_overhead;
        let (retention, retention_bytes, retention_every) = (
            options.retention,
            options.retention_bytes,
            options.retention_every,
        );
        let quarantine = Arc::new(Quarantine::new(dir, true));
        let mut w = Writer {
            dir: dir.to_owned(),
            quarantine: Arc::clone(&quarantine),
            options,
            streams: BTreeMap::new(),
            ends: Arc::clone(&ends),
            cycle_start: HashMap::new(),
        };
        w.recover()?;
        let (tx, rx) = mpsc::channel();
        std::thread::Builder::new()
            .name("local-log-writer".into())
            .spawn(move || w.run(rx))
            .map_err(io_err(dir))?;
        let log = Self {
            inner: Arc::new(Inner {
                dir: dir.to_owned(),
                writer: Some(tx),
                ends,
                _lock: Some(lock),
                entry_overhead,
                quarantine,
                retention,
                retention_bytes,
            }),
        };
        spawn_retention(&log, retention, retention_bytes, retention_every);
        Ok(log)
    }

    /// Opens the log in `dir` for reading only (no lock; another process
    /// may be writing).
    pub fn open_read_only(dir: &Path, _options: LocalOptions) -> Result<Self, StreamError> {
        not_a_file(dir)?;
        if !dir.is_dir() {
            return Err(StreamError::BadInput(format!(
                "no local log in {} (the directory does not exist)",
                dir.display()
            )));
        }
        Ok(Self {
            inner: Arc::new(Inner {
                dir: dir.to_owned(),
                writer: None,
                ends: Arc::new(RwLock::new(HashMap::new())),
                _lock: None,
                entry_overhead: 0,
                quarantine: Arc::new(Quarantine::new(dir, false)),
                retention: None,
                retention_bytes: None,
            }),
        })
    }

    pub fn dir(&self) -> &Path {
        &self.inner.dir
    }

    /// Damaged places found in segments so far (each skipped, its bytes
    /// kept under `DIR/.quarantine/`), as a counter to register.
    pub fn quarantined(&self) -> prometheus_client::metrics::counter::Counter {
        self.inner.quarantine.found.clone()
    }

    /// The sequence number of record `offset` of a shard of this log.
    pub fn sequence_of(shard: &str, offset: u64) -> Option<SequenceNumber> {
        shard_index(shard).map(|i| sequence(i, offset))
    }

    pub(super) async fn ask<T: Send + 'static>(
        &self,
        make: impl FnOnce(oneshot::Sender<Result<T, StreamError>>) -> Req,
    ) -> Result<T, StreamError> {
        self.send(make)?
            .await
            .map_err(|_| StreamError::Service("the local log's writer has stopped".into()))?
    }

    /// A put, in the writer's queue on return: puts placed one after
    /// another are appended in that order, and those queued together share
    /// an fsync. An empty put is answered at once.
    fn place(&self, stream: &str, entries: &[PutEntry]) -> Result<PlacedPut, StreamError> {
        check_name(stream)?;
        if entries.is_empty() {
            let (tx, rx) = oneshot::channel();
            let _ = tx.send(Ok(Vec::new()));
            return Ok(PlacedPut::new(rx));
        }
        crate::stream::limits::check_put(entries, self.inner.entry_overhead)
            .map_err(StreamError::BadInput)?;
        let stream = stream.to_owned();
        let entries = entries.to_vec();
        self.send(|reply| Req::Put {
            stream,
            entries,
            reply,
        })
        .map(PlacedPut::new)
    }

    /// Queues a request for the writer; the receiver gets its answer.
    fn send<T: Send + 'static>(
        &self,
        make: impl FnOnce(oneshot::Sender<Result<T, StreamError>>) -> Req,
    ) -> Result<oneshot::Receiver<Result<T, StreamError>>, StreamError> {
        let w = self.inner.writer.as_ref().ok_or_else(|| {
            StreamError::BadInput(format!(
                "the local log in {} is open read-only",
                self.inner.dir.display()
            ))
        })?;
        let (tx, rx) = oneshot::channel();
        w.send(make(tx))
            .map_err(|_| StreamError::Service("the local log's writer has stopped".into()))?;
        Ok(rx)
    }

    pub(super) fn stream_dir(&self, name: &str) -> PathBuf {
        self.inner.dir.join(name)
    }

    pub(super) fn read_meta(&self, name: &str) -> Result<StreamMeta, StreamError> {
        check_name(name)?;
        meta::read(&self.stream_dir(name))?.ok_or_else(|| StreamError::NoSuchStream(name.into()))
    }
}

pub(super) fn shard_dir(stream_dir: &Path, index: u32) -> PathBuf {
    stream_dir.join(shard_id(index))
}

/// Open shards a local stream may have.
pub const MAX_SHARDS: u32 = 10_000;

impl StreamBackend for LocalLog {
    fn keeps_order_within_put(&self) -> bool {
        // One write per shard per put; a failed put is failed whole.
        true
    }

    async fn max_open_shards(&self, _stream: &str) -> Result<Option<u32>, StreamError> {
        Ok(Some(MAX_SHARDS))
    }

    async fn create_stream(&self, name: &str, shards: u32) -> Result<(), StreamError> {
        check_name(name)?;
        if shards == 0 || shards > MAX_SHARDS {
            return Err(StreamError::BadInput(format!(
                "{shards} shards: a stream has 1 to {MAX_SHARDS}"
            )));
        }
        let name = name.to_owned();
        self.ask(|reply| Req::Create {
            name,
            shards,
            reply,
        })
        .await
    }

    async fn delete_stream(&self, name: &str) -> Result<(), StreamError> {
        check_name(name)?;
        let name = name.to_owned();
        self.ask(|reply| Req::Delete { name, reply }).await
    }

    async fn list_streams(&self) -> Result<Vec<String>, StreamError> {
        let dir = &self.inner.dir;
        let mut out = Vec::new();
        for e in std::fs::read_dir(dir).map_err(io_err(dir))? {
            let e = e.map_err(io_err(dir))?;
            if let Some(n) = e.file_name().to_str()
                && check_name(n).is_ok()
                && e.path().join(meta::META).is_file()
            {
                out.push(n.to_owned());
            }
        }
        out.sort();
        Ok(out)
    }

    async fn describe(&self, name: &str) -> Result<StreamDescription, StreamError> {
        // A file read: off the async workers.
        let this = self.clone();
        let name = name.to_owned();
        tokio::task::spawn_blocking(move || {
            let m = this.read_meta(&name)?;
            let mut shards = Vec::with_capacity(m.shards.len());
            for s in &m.shards {
                shards.push(s.info()?);
            }
            Ok(StreamDescription {
                name: m.name,
                status: StreamStatus::Active,
                retention_hours: m.retention_hours,
                shards,
            })
        })
        .await
        .map_err(|e| StreamError::Service(format!("describe task failed: {e}")))?
    }

    async fn put_records(
        &self,
        stream: &str,
        entries: &[PutEntry],
    ) -> Result<Vec<PutOutcome>, StreamError> {
        self.place(stream, entries)?.outcome().await
    }

    fn place_put(
        &self,
        stream: &str,
        entries: &[PutEntry],
    ) -> Result<Option<PlacedPut>, StreamError> {
        self.place(stream, entries).map(Some)
    }

    async fn shard_iterator(
        &self,
        stream: &str,
        shard: &str,
        from: &StartPosition,
    ) -> Result<ShardIterator, StreamError> {
        let m = self.read_meta(stream)?;
        let no_shard = || StreamError::NoSuchShard {
            stream: stream.to_owned(),
            shard: shard.to_owned(),
        };
        let index = shard_index(shard).ok_or_else(no_shard)?;
        m.shard(index).ok_or_else(no_shard)?;
        let this = self.clone();
        let stream = stream.to_owned();
        let from = from.clone();
        let dir = shard_dir(&self.stream_dir(&stream), index);
        tokio::task::spawn_blocking(move || {
            let (offset, segment, pos) = match &from {
                StartPosition::TrimHorizon => {
                    let segs = segment::list(&dir).map_err(io_err(&dir))?;
                    segs.first().map_or((0, 0, 0), |(f, _)| (*f, *f, 0))
                }
                StartPosition::Latest => match this.committed(&stream, index) {
                    Some(e) => (e.next_offset, e.segment, e.pos),
                    None => seek_end(&dir)?,
                },
                StartPosition::AtTimestamp(ms) => seek_time(&dir, *ms)?,
                StartPosition::AtSequence(s) | StartPosition::AfterSequence(s) => {
                    let (_, off) = split_sequence(s)
                        .filter(|(si, _)| *si == index)
                        .ok_or_else(|| {
                            StreamError::BadInput(format!(
                                "sequence number {s} does not belong to shard {}",
                                shard_id(index)
                            ))
                        })?;
                    let off = if matches!(from, StartPosition::AfterSequence(_)) {
                        off.saturating_add(1)
                    } else {
                        off
                    };
                    seek_offset(&dir, off)?
                }
            };
            Ok(Position {
                stream,
                shard: index,
                offset,
                segment,
                pos,
            }
            .encode())
        })
        .await
        .map_err(|e| StreamError::Service(format!("iterator task failed: {e}")))?
    }

    async fn get_records(
        &self,
        iterator: &ShardIterator,
        limit: u32,
    ) -> Result<GetRecordsOutput, StreamError> {
        let p = Position::decode(iterator)?;
        let this = self.clone();
        let limit = limit.clamp(1, 10_000);
        tokio::task::spawn_blocking(move || this.read_records(p, limit))
            .await
            .map_err(|e| StreamError::Service(format!("read task failed: {e}")))?
    }

    async fn split_shard(
        &self,
        stream: &str,
        shard: &str,
        new_starting_hash_key: u128,
    ) -> Result<(), StreamError> {
        check_name(stream)?;
        let index = shard_index(shard).ok_or_else(|| StreamError::NoSuchShard {
            stream: stream.to_owned(),
            shard: shard.to_owned(),
        })?;
        let stream = stream.to_owned();
        self.ask(|reply| Req::Split {
            stream,
            index,
            at: new_starting_hash_key,
            reply,
        })
        .await
    }

    async fn merge_shards(
        &self,
        stream: &str,
        shard: &str,
        adjacent: &str,
    ) -> Result<(), StreamError> {
        check_name(stream)?;
        let idx = |s: &str| {
            shard_index(s).ok_or_else(|| StreamError::NoSuchShard {
                stream: stream.to_owned(),
                shard: s.to_owned(),
            })
        };
        let (a, b) = (idx(shard)?, idx(adjacent)?);
        let stream = stream.to_owned();
        self.ask(|reply| Req::Merge {
            stream,
            a,
            b,
            reply,
        })
        .await
    }
}
