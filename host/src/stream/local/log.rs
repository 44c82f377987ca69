//! The local log: streams in a directory, Kinesis semantics.
//!
//! One writer thread owns every file it appends to. `put_records` calls
//! queue requests for it; it takes every request waiting, appends each
//! shard's frames with one write, fsyncs each touched file once, and then
//! answers them all (group commit), so concurrent callers share fsyncs.
//! Readers go through the files, so another process (opened with
//! [`LocalLog::open_read_only`]) sees what the writer appended.

use std::collections::{BTreeMap, HashMap};
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock, mpsc};
use std::time::{Duration, SystemTime};

use bytes::BytesMut;
use tokio::sync::oneshot;

use super::meta::{self, ShardMeta, StreamMeta, sequence, shard_id, shard_index, split_sequence};
use super::segment::{self, Bad};
use crate::stream::{
    GetRecordsOutput, HashRange, PutEntry, PutOutcome, SequenceNumber, ShardIterator,
    StartPosition, StreamBackend, StreamDescription, StreamError, StreamRecord, StreamStatus,
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

/// Bytes read from a segment at a time: reads are sized by what they
/// return, not by the most a read may return (a big buffer per read costs
/// its page faults, and keeps memory that few records need).
const READ_CHUNK: usize = 512 << 10;
/// Most bytes one `get_records` returns (Kinesis: 10 MB).
const MAX_GET_BYTES: usize = 10 << 20;
const LOCK: &str = ".lock";

/// The embedded stream log. Cheap to clone.
#[derive(Debug, Clone)]
pub struct LocalLog {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    dir: PathBuf,
    writer: Option<mpsc::Sender<Req>>,
    /// Committed ends of the writer's shards (readers stop there).
    ends: Arc<RwLock<HashMap<(String, u32), End>>>,
    _lock: Option<File>,
    /// See [`LocalOptions::entry_overhead`].
    entry_overhead: usize,
    quarantine: Arc<Quarantine>,
    /// See [`LocalOptions::retention`] and [`LocalOptions::retention_bytes`].
    retention: Option<Duration>,
    retention_bytes: Option<u64>,
}

/// Where damaged bytes found in segments are kept (under the log's
/// directory; not a stream name, as it starts with `.`).
const QUARANTINE: &str = ".quarantine";

/// Damage found in segments: reported once per place, counted, and its
/// bytes kept aside under `DIR/.quarantine/` (when the log is writable),
/// while the good frames around it are read on.
#[derive(Debug)]
struct Quarantine {
    dir: PathBuf,
    writable: bool,
    found: prometheus_client::metrics::counter::Counter,
    seen: std::sync::Mutex<std::collections::HashSet<(PathBuf, u64)>>,
}

impl Quarantine {
    fn new(dir: &Path, writable: bool) -> Self {
        Self {
            dir: dir.to_owned(),
            writable,
            found: Default::default(),
            seen: Default::default(),
        }
    }

    /// Keeps `bytes` (from byte `start` of the segment `path`) aside;
    /// returns where, or why not.
    fn keep(&self, path: &Path, start: u64, bytes: &[u8]) -> Result<PathBuf, String> {
        let rel = path.strip_prefix(&self.dir).unwrap_or(path);
        // Named by what they are: the same damage met again (by a reader,
        // then at the next open) is kept once.
        let name = format!(
            "{}@{start}+{}-{:08x}",
            rel.file_name()
                .and_then(|n| n.to_str())
                .unwrap_or("segment"),
            bytes.len(),
            crc32fast::hash(bytes)
        );
        let to = self
            .dir
            .join(QUARANTINE)
            .join(rel.parent().unwrap_or(Path::new("")))
            .join(name);
        let parent = to.parent().unwrap_or(&self.dir);
        std::fs::create_dir_all(parent)
            .and_then(|()| std::fs::write(&to, bytes))
            .map_err(|e| format!("cannot keep them in {}: {e}", to.display()))?;
        Ok(to)
    }

    /// Damaged bytes `[start, start + bytes.len())` of segment `path`:
    /// counted, logged and kept aside the first time they are met.
    fn report(&self, path: &Path, start: u64, bytes: &[u8], why: &Bad, next: &str) {
        let new = self
            .seen
            .lock()
            .map(|mut s| s.insert((path.to_owned(), start)))
            .unwrap_or(true);
        if !new {
            return;
        }
        self.found.inc();
        let kept = if self.writable {
            match self.keep(path, start, bytes) {
                Ok(to) => to.display().to_string(),
                Err(e) => e,
            }
        } else {
            "not kept (the log is open read-only)".to_owned()
        };
        tracing::error!(
            file = %path.display(),
            byte = start,
            bytes = bytes.len(),
            reason = ?why,
            kept = %kept,
            "local log: damaged bytes in a segment are skipped; {next}"
        );
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        // Dropping the sender ends the writer thread after its last cycle.
        self.writer.take();
    }
}

/// Where a shard's committed data ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct End {
    next_offset: u64,
    segment: u64,
    pos: u64,
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> StreamError + '_ {
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

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// Kinesis's rule for stream names, and not starting with `.`: the log's
/// own files (`.lock`, `.deleted-…`) do.
fn check_name(name: &str) -> Result<(), StreamError> {
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

/// Prefix of a stream directory being deleted (renamed first, so that
/// nobody opens it meanwhile).
const DELETED_PREFIX: &str = ".deleted-";

/// Removes what deletes cut short by a crash left behind.
fn finish_deletes(dir: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name();
        if name.to_str().is_some_and(|n| n.starts_with(DELETED_PREFIX)) {
            match std::fs::remove_dir_all(e.path()) {
                Ok(()) => {
                    tracing::info!(dir = %e.path().display(), "removed a stream whose delete was cut short")
                }
                Err(error) => {
                    tracing::warn!(dir = %e.path().display(), %error, "cannot remove a stream whose delete was cut short")
                }
            }
        }
    }
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

    async fn ask<T: Send + 'static>(
        &self,
        make: impl FnOnce(oneshot::Sender<Result<T, StreamError>>) -> Req,
    ) -> Result<T, StreamError> {
        let w = self.inner.writer.as_ref().ok_or_else(|| {
            StreamError::BadInput(format!(
                "the local log in {} is open read-only",
                self.inner.dir.display()
            ))
        })?;
        let (tx, rx) = oneshot::channel();
        w.send(make(tx))
            .map_err(|_| StreamError::Service("the local log's writer has stopped".into()))?;
        rx.await
            .map_err(|_| StreamError::Service("the local log's writer has stopped".into()))?
    }

    fn stream_dir(&self, name: &str) -> PathBuf {
        self.inner.dir.join(name)
    }

    fn read_meta(&self, name: &str) -> Result<StreamMeta, StreamError> {
        check_name(name)?;
        meta::read(&self.stream_dir(name))?.ok_or_else(|| StreamError::NoSuchStream(name.into()))
    }

    /// Where readers stop in a shard: what the writer has committed
    /// (fsynced and answered). In another process, from the shard's
    /// `.committed` file; `None` (no limit) for a shard written before
    /// that file existed.
    fn committed(&self, stream: &str, index: u32) -> Option<End> {
        let none = End {
            next_offset: 0,
            segment: 0,
            pos: 0,
        };
        if self.inner.writer.is_none() {
            let dir = shard_dir(&self.stream_dir(stream), index);
            for _ in 0..3 {
                match read_committed(&dir) {
                    Ok(end) => return end,
                    // Read while being written: read again.
                    Err(_) => continue,
                }
            }
            // Nothing visible this time; the next read tries again.
            return Some(none);
        }
        self.inner
            .ends
            .read()
            .ok()
            .and_then(|m| m.get(&(stream.to_owned(), index)).copied())
            .or(Some(none))
    }
}

/// A shard's committed end, for readers in other processes: 24 bytes and
/// their CRC-32, rewritten in place after each commit (never truncated).
const COMMITTED: &str = ".committed";

fn write_committed(dir: &Path, end: End) -> std::io::Result<()> {
    use std::os::unix::fs::FileExt;
    let mut b = [0u8; 28];
    b[0..8].copy_from_slice(&end.next_offset.to_le_bytes());
    b[8..16].copy_from_slice(&end.segment.to_le_bytes());
    b[16..24].copy_from_slice(&end.pos.to_le_bytes());
    let crc = crc32fast::hash(&b[..24]);
    b[24..].copy_from_slice(&crc.to_le_bytes());
    let f = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(dir.join(COMMITTED))?;
    f.write_all_at(&b, 0)
}

/// `Ok(None)` when the shard has no such file; an error when it cannot be
/// read or does not check out (being written).
fn read_committed(dir: &Path) -> std::io::Result<Option<End>> {
    let b = match std::fs::read(dir.join(COMMITTED)) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    let word = |i: usize| {
        let mut w = [0u8; 8];
        w.copy_from_slice(&b[i..i + 8]);
        u64::from_le_bytes(w)
    };
    if b.len() != 28 || crc32fast::hash(&b[..24]).to_le_bytes() != b[24..28] {
        return Err(std::io::Error::other("committed end does not check out"));
    }
    Ok(Some(End {
        next_offset: word(0),
        segment: word(8),
        pos: word(16),
    }))
}

// ---- iterators -----------------------------------------------------------

/// A position in a shard: the next record's offset and where it is.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Position {
    stream: String,
    shard: u32,
    offset: u64,
    segment: u64,
    pos: u64,
}

impl Position {
    fn encode(&self) -> ShardIterator {
        ShardIterator(format!(
            "L1/{}/{}/{}/{}/{}",
            self.stream, self.shard, self.offset, self.segment, self.pos
        ))
    }

    fn decode(it: &ShardIterator) -> Result<Self, StreamError> {
        let bad = || StreamError::BadIterator(format!("{:?} is not a local-log iterator", it.0));
        let mut p = it.0.split('/');
        if p.next() != Some("L1") {
            return Err(bad());
        }
        let stream = p.next().ok_or_else(bad)?.to_owned();
        check_name(&stream).map_err(|_| bad())?;
        let mut num = || p.next().and_then(|x| x.parse::<u64>().ok()).ok_or_else(bad);
        let shard = u32::try_from(num()?).map_err(|_| bad())?;
        let (offset, segment, pos) = (num()?, num()?, num()?);
        if p.next().is_some() {
            return Err(bad());
        }
        Ok(Self {
            stream,
            shard,
            offset,
            segment,
            pos,
        })
    }
}

/// Position of the first record with offset ≥ `offset` (or the end).
fn seek_offset(dir: &Path, offset: u64) -> Result<(u64, u64, u64), StreamError> {
    let segs = segment::list(dir).map_err(io_err(dir))?;
    let Some(idx) = segs.iter().rposition(|(first, _)| *first <= offset) else {
        // Before the oldest kept record: start at the trim horizon.
        return Ok(segs.first().map_or((offset, 0, 0), |(f, _)| (*f, *f, 0)));
    };
    let (first, path) = &segs[idx];
    let scan = segment::scan(path, *first).map_err(io_err(path))?;
    for (o, pos, _) in &scan.frames {
        if *o >= offset {
            return Ok((*o, *first, *pos));
        }
    }
    let next = scan.next_offset(*first);
    // Past the last record: the end of the shard.
    Ok((next, *first, scan.valid_len))
}

/// Position of the first record that arrived at or after `ms`.
fn seek_time(dir: &Path, ms: i64) -> Result<(u64, u64, u64), StreamError> {
    let segs = segment::list(dir).map_err(io_err(dir))?;
    let mut last_end = None;
    for (first, path) in &segs {
        let scan = segment::scan(path, *first).map_err(io_err(path))?;
        for (o, pos, t) in &scan.frames {
            if *t >= ms {
                return Ok((*o, *first, *pos));
            }
        }
        let next = scan.next_offset(*first);
        last_end = Some((next, *first, scan.valid_len));
    }
    Ok(last_end.unwrap_or((0, 0, 0)))
}

/// The end of a shard as found in its files.
fn seek_end(dir: &Path) -> Result<(u64, u64, u64), StreamError> {
    let segs = segment::list(dir).map_err(io_err(dir))?;
    match segs.last() {
        None => Ok((0, 0, 0)),
        Some((first, path)) => {
            let scan = segment::scan(path, *first).map_err(io_err(path))?;
            Ok((scan.next_offset(*first), *first, scan.valid_len))
        }
    }
}

fn shard_dir(stream_dir: &Path, index: u32) -> PathBuf {
    stream_dir.join(shard_id(index))
}

impl LocalLog {
    /// Damage at byte `pos` of the segment `path`, where the record with
    /// offset `offset` was expected: reports it (once) and returns where
    /// the next good frame starts in that segment, if one does.
    fn step_over(
        &self,
        path: &Path,
        pos: u64,
        offset: u64,
        why: &Bad,
    ) -> Result<Option<u64>, StreamError> {
        let rest = segment::read_from(path, pos, usize::MAX).map_err(io_err(path))?;
        let found = segment::resync(&rest, 1, offset);
        let end = found.unwrap_or(rest.len());
        let next = match found {
            Some(_) => "reading on at the next good record in the segment".to_owned(),
            None => "nothing good follows in this segment; reading on at the next".to_owned(),
        };
        self.inner
            .quarantine
            .report(path, pos, &rest[..end], why, &next);
        Ok(found.map(|at| pos + at as u64))
    }

    fn read_records(&self, p: Position, limit: u32) -> Result<GetRecordsOutput, StreamError> {
        let m = self.read_meta(&p.stream)?;
        let sm = m.shard(p.shard).ok_or_else(|| {
            StreamError::BadIterator(format!(
                "shard {} of stream {:?} no longer exists",
                shard_id(p.shard),
                p.stream
            ))
        })?;
        let dir = shard_dir(&self.stream_dir(&p.stream), p.shard);
        let committed = self.committed(&p.stream, p.shard);
        let limit_offset = committed.map_or(u64::MAX, |c| c.next_offset);
        let segs = segment::list(&dir).map_err(io_err(&dir))?;
        let (mut offset, mut seg, mut pos) = (p.offset, p.segment, p.pos);
        // The iterator's segment was deleted by retention: skip to the oldest.
        if !segs.iter().any(|(f, _)| *f == seg)
            && let Some((first, _)) = segs.first()
            && *first > seg
        {
            (offset, seg, pos) = (*first, *first, 0);
        }
        let mut records = Vec::new();
        let mut bytes = 0usize;
        let mut exhausted = false;
        'outer: while records.len() < limit as usize && bytes < MAX_GET_BYTES {
            let Some(path) = segs.iter().find(|(f, _)| *f == seg).map(|(_, p)| p.clone()) else {
                exhausted = true;
                break;
            };
            let buf = segment::read_from(&path, pos, READ_CHUNK).map_err(io_err(&path))?;
            let mut at = 0usize;
            while at < buf.len() {
                match segment::parse(&buf.slice(at..)) {
                    Ok(f) => {
                        if f.offset >= limit_offset {
                            exhausted = true;
                            break 'outer;
                        }
                        at += f.size;
                        pos += f.size as u64;
                        offset = f.offset + 1;
                        bytes += f.data.len();
                        records.push(StreamRecord {
                            sequence: sequence(p.shard, f.offset),
                            partition_key: f.key,
                            data: f.data,
                            arrival_ms: f.arrival_ms,
                        });
                        if records.len() >= limit as usize || bytes >= MAX_GET_BYTES {
                            break 'outer;
                        }
                    }
                    Err(Bad::Short) => break,
                    Err(why) => {
                        // What was good before the damage goes out first;
                        // the next read steps over it.
                        if !records.is_empty() {
                            break 'outer;
                        }
                        match self.step_over(&path, pos, offset, &why)? {
                            Some(at) => {
                                pos = at;
                                continue 'outer;
                            }
                            None => match segs.iter().find(|(f, _)| *f > seg) {
                                Some((next, _)) => {
                                    (offset, seg, pos) = (offset.max(*next), *next, 0);
                                    continue 'outer;
                                }
                                None => {
                                    exhausted = true;
                                    break 'outer;
                                }
                            },
                        }
                    }
                }
            }
            if at > 0 && at < buf.len() && buf.len() >= READ_CHUNK {
                // A frame goes on past this chunk: read on from it.
                continue;
            }
            if at == 0 || at < buf.len() {
                // Nothing more here (end of file, or a write in progress):
                // move on if a later segment exists, else stop.
                let later = segs.iter().find(|(f, _)| *f > seg);
                if at == 0
                    && !buf.is_empty()
                    && let Some((next, _)) = later
                {
                    // Only the last segment is written to: a record cut off
                    // at the end of an earlier one is damage, and waiting
                    // would wait forever. Good frames may follow it.
                    if !records.is_empty() {
                        break 'outer;
                    }
                    match self.step_over(&path, pos, offset, &Bad::Short)? {
                        Some(at) => pos = at,
                        None => (offset, seg, pos) = (offset.max(*next), *next, 0),
                    }
                    continue 'outer;
                }
                match later {
                    Some((next, _)) if at == buf.len() || buf.is_empty() => {
                        seg = *next;
                        pos = 0;
                    }
                    _ => {
                        exhausted = true;
                        break;
                    }
                }
            }
        }
        let closed_at = sm.end_offset;
        let next_iterator = match closed_at {
            Some(end) if offset >= end => None,
            _ => Some(
                Position {
                    stream: p.stream.clone(),
                    shard: p.shard,
                    offset,
                    segment: seg,
                    pos,
                }
                .encode(),
            ),
        };
        let millis_behind_latest = if exhausted {
            0
        } else {
            records
                .last()
                .map_or(0, |r| (now_ms() - r.arrival_ms).max(0))
        };
        Ok(GetRecordsOutput {
            records,
            next_iterator,
            millis_behind_latest,
        })
    }
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
        check_name(stream)?;
        if entries.is_empty() {
            return Ok(Vec::new());
        }
        crate::stream::limits::check_put(entries, self.inner.entry_overhead)
            .map_err(StreamError::BadInput)?;
        let stream = stream.to_owned();
        let entries = entries.to_vec();
        self.ask(|reply| Req::Put {
            stream,
            entries,
            reply,
        })
        .await
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

// ---- the writer ----------------------------------------------------------

type Reply<T> = oneshot::Sender<Result<T, StreamError>>;
/// A put waiting for its fsync: where to answer, and its outcome so far.
type PendingPut = (
    String,
    Reply<Vec<PutOutcome>>,
    Result<Vec<PutOutcome>, StreamError>,
);

#[derive(Debug)]
enum Req {
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

struct ShardState {
    dir: PathBuf,
    /// The segment being appended to: first offset, file, size.
    active: Option<(u64, File, u64)>,
    next_offset: u64,
    /// A failed write could not be cut out of the active segment.
    poisoned: bool,
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

struct StreamState {
    dir: PathBuf,
    meta: StreamMeta,
    shards: HashMap<u32, ShardState>,
}

struct Writer {
    dir: PathBuf,
    quarantine: Arc<Quarantine>,
    options: LocalOptions,
    streams: BTreeMap<String, StreamState>,
    ends: Arc<RwLock<HashMap<(String, u32), End>>>,
    /// Each shard touched in this commit cycle, as it was before: active
    /// segment, its size, next offset. A shard whose fsync fails is cut
    /// back to it.
    cycle_start: HashMap<(String, u32), (Option<u64>, u64, u64)>,
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
    /// Loads every stream and truncates torn tails.
    fn recover(&mut self) -> Result<(), StreamError> {
        let rd = std::fs::read_dir(&self.dir).map_err(io_err(&self.dir))?;
        for e in rd {
            let e = e.map_err(io_err(&self.dir))?;
            let Some(name) = e.file_name().to_str().map(str::to_owned) else {
                continue;
            };
            if check_name(&name).is_err() || !e.path().is_dir() {
                continue;
            }
            let dir = e.path();
            let Some(m) = meta::read(&dir)? else { continue };
            let mut shards = HashMap::new();
            for s in &m.shards {
                let sd = shard_dir(&dir, s.index);
                let mut state = self.recover_shard(&sd)?;
                if !s.is_open() {
                    // Closed by a reshard: checked, but no file kept open.
                    state.active = None;
                }
                shards.insert(s.index, state);
            }
            let st = StreamState {
                dir,
                meta: m,
                shards,
            };
            self.publish(&name, &st);
            self.streams.insert(name, st);
        }
        Ok(())
    }

    /// Opens a shard's files. Every segment's frames are checked: damage
    /// in any of them is kept aside and cut out, the good frames before and
    /// after it stay; a write torn by a crash at the end of the last one is
    /// cut off.
    fn recover_shard(&self, dir: &Path) -> Result<ShardState, StreamError> {
        let segs = segment::list(dir).map_err(io_err(dir))?;
        let mut last = None;
        for (n, (first, path)) in segs.iter().enumerate() {
            let is_last = n + 1 == segs.len();
            let len = self.repair_segment(path, *first, is_last)?;
            if is_last {
                last = Some((*first, path, len));
            }
        }
        let Some((first, path, (valid_len, next_offset))) = last else {
            return Ok(ShardState {
                dir: dir.to_owned(),
                active: None,
                next_offset: 0,
                poisoned: false,
            });
        };
        let file = OpenOptions::new()
            .append(true)
            .open(path)
            .map_err(io_err(path))?;
        Ok(ShardState {
            dir: dir.to_owned(),
            active: Some((first, file, valid_len)),
            next_offset,
            poisoned: false,
        })
    }

    /// Checks one segment at open, cutting out what is not a good frame;
    /// returns its length after and the offset after its last record.
    fn repair_segment(
        &self,
        path: &Path,
        first: u64,
        is_last: bool,
    ) -> Result<(u64, u64), StreamError> {
        let all = bytes::Bytes::from(std::fs::read(path).map_err(io_err(path))?);
        let scan = segment::scan_bytes(&all, first);
        let mut next_offset = scan.next_offset(first);
        let range = |d: &segment::Damage| &all[d.start as usize..d.end as usize];
        for d in &scan.damage {
            self.quarantine.report(
                path,
                d.start,
                range(d),
                &d.why,
                "found at open: cut out, the records after it kept",
            );
        }
        if let Some(t) = &scan.tail {
            if is_last && t.why == Bad::Short {
                // A write torn by a crash: never acknowledged.
                let kept = self
                    .quarantine
                    .keep(path, t.start, range(t))
                    .map_or_else(|e| e, |p| p.display().to_string());
                tracing::warn!(
                    file = %path.display(),
                    offset = t.start,
                    dropped_bytes = t.end - t.start,
                    kept = %kept,
                    "local log: truncating a torn tail"
                );
            } else {
                self.quarantine.report(
                    path,
                    t.start,
                    range(t),
                    &t.why,
                    "found at open: cut off the end of the segment",
                );
            }
            // A whole record that was written and then damaged may have
            // been acknowledged: its offset is never handed out again (a
            // consumer checkpointed past it would skip the new record).
            if is_last && let Some(o) = segment::claimed_offset(&all, t.start as usize, next_offset)
            {
                next_offset = next_offset.max(o + 1);
            }
        }
        if scan.damage.is_empty() && scan.tail.is_none() {
            return Ok((scan.valid_len, next_offset));
        }
        // The good frames alone, in order, in place of the segment.
        let mut good = Vec::with_capacity(all.len());
        let mut frame_end = 0u64;
        for &(_, at, _) in &scan.frames {
            let size = segment::parse(&all.slice(at as usize..))
                .map(|f| f.size)
                .unwrap_or(0);
            good.extend_from_slice(&all[at as usize..at as usize + size]);
            frame_end = at + size as u64;
        }
        if scan.damage.is_empty() {
            // Only a tail: cut it off where the good frames end.
            let f = OpenOptions::new()
                .write(true)
                .open(path)
                .map_err(io_err(path))?;
            f.set_len(frame_end).map_err(io_err(path))?;
            f.sync_all().map_err(io_err(path))?;
        } else {
            let tmp = path.with_extension("seg.repair");
            let mut f = File::create(&tmp).map_err(io_err(&tmp))?;
            f.write_all(&good).map_err(io_err(&tmp))?;
            f.sync_all().map_err(io_err(&tmp))?;
            std::fs::rename(&tmp, path).map_err(io_err(path))?;
            if let Some(d) = path.parent() {
                meta::sync_dir(d).map_err(io_err(d))?;
            }
        }
        Ok((good.len() as u64, next_offset))
    }

    /// Makes the committed ends of a stream's shards visible to readers.
    fn publish(&self, name: &str, st: &StreamState) {
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

    fn run(mut self, rx: mpsc::Receiver<Req>) {
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

    fn admin(&mut self, req: Req) {
        match req {
            Req::Create {
                name,
                shards,
                reply,
            } => {
                let _ = reply.send(self.create(&name, shards));
            }
            Req::Delete { name, reply } => {
                let _ = reply.send(self.delete(&name));
            }
            Req::Split {
                stream,
                index,
                at,
                reply,
            } => {
                let _ = reply.send(self.split(&stream, index, at));
            }
            Req::Merge {
                stream,
                a,
                b,
                reply,
            } => {
                let _ = reply.send(self.merge(&stream, a, b));
            }
            Req::TrimThrough {
                stream,
                index,
                offset,
                reply,
            } => {
                let _ = reply.send(self.trim_through(&stream, index, offset));
            }
            Req::Put { reply, .. } => {
                let _ = reply.send(Err(StreamError::Service("misrouted put".into())));
            }
        }
    }

    fn create(&mut self, name: &str, n: u32) -> Result<(), StreamError> {
        let dir = self.dir.join(name);
        if self.streams.contains_key(name) || dir.join(meta::META).exists() {
            return Err(StreamError::StreamExists(name.to_owned()));
        }
        std::fs::create_dir_all(&dir).map_err(io_err(&dir))?;
        let shards: Vec<ShardMeta> = HashRange::even(n)
            .into_iter()
            .enumerate()
            .map(|(i, r)| ShardMeta {
                index: i as u32,
                parent: None,
                adjacent_parent: None,
                start: r.start.to_string(),
                end: r.end.to_string(),
                end_offset: None,
            })
            .collect();
        let m = StreamMeta {
            name: name.to_owned(),
            created_ms: now_ms(),
            retention_hours: 24,
            next_shard: n,
            shards,
        };
        meta::write(&dir, &m, self.options.fsync)?;
        if self.options.fsync {
            meta::sync_dir(&self.dir).map_err(io_err(&self.dir))?;
        }
        let shards = m
            .shards
            .iter()
            .map(|s| {
                (
                    s.index,
                    ShardState {
                        dir: shard_dir(&dir, s.index),
                        active: None,
                        next_offset: 0,
                        poisoned: false,
                    },
                )
            })
            .collect();
        let st = StreamState {
            dir,
            meta: m,
            shards,
        };
        self.publish(name, &st);
        self.streams.insert(name.to_owned(), st);
        Ok(())
    }

    fn delete(&mut self, name: &str) -> Result<(), StreamError> {
        let st = self
            .streams
            .remove(name)
            .ok_or_else(|| StreamError::NoSuchStream(name.to_owned()))?;
        // Rename first so readers never see half a stream.
        let gone = self
            .dir
            .join(format!("{DELETED_PREFIX}{name}-{}", now_ms()));
        std::fs::rename(&st.dir, &gone).map_err(io_err(&st.dir))?;
        if let Ok(mut ends) = self.ends.write() {
            ends.retain(|(s, _), _| s != name);
        }
        std::fs::remove_dir_all(&gone).map_err(io_err(&gone))
    }

    fn open_shard(st: &StreamState, index: u32) -> Result<(&ShardMeta, HashRange), StreamError> {
        let s = st
            .meta
            .shard(index)
            .ok_or_else(|| StreamError::NoSuchShard {
                stream: st.meta.name.clone(),
                shard: shard_id(index),
            })?;
        if !s.is_open() {
            return Err(StreamError::BadInput(format!(
                "shard {} of stream {:?} is closed",
                shard_id(index),
                st.meta.name
            )));
        }
        Ok((s, s.range()?))
    }

    /// `meta` with shard `index` closed where `st` has written up to.
    fn close(st: &StreamState, meta: &mut StreamMeta, index: u32) {
        let end = st.shards.get(&index).map_or(0, |s| s.next_offset);
        if let Some(s) = meta.shard_mut(index) {
            s.end_offset = Some(end);
        }
    }

    /// `meta` with a new child shard; its index.
    fn add_child(
        meta: &mut StreamMeta,
        range: HashRange,
        parent: u32,
        adjacent: Option<u32>,
    ) -> u32 {
        let index = meta.next_shard;
        meta.next_shard += 1;
        meta.shards.push(ShardMeta {
            index,
            parent: Some(parent),
            adjacent_parent: adjacent,
            start: range.start.to_string(),
            end: range.end.to_string(),
            end_offset: None,
        });
        index
    }

    /// Makes a reshard's new metadata the stream's: written to disk first,
    /// and only once that succeeded, taken in memory (the parents closed,
    /// the children open). A failed write changes nothing, so no put is
    /// acknowledged into a shard the disk does not list and no shard index
    /// (nor its sequence numbers) is handed out twice.
    fn commit_reshard(
        &mut self,
        stream: &str,
        meta: StreamMeta,
        children: &[u32],
    ) -> Result<(), StreamError> {
        let fsync = self.options.fsync;
        let st = self
            .streams
            .get_mut(stream)
            .ok_or_else(|| StreamError::NoSuchStream(stream.to_owned()))?;
        meta::write(&st.dir, &meta, fsync)?;
        // A closed shard takes no more writes: its file is let go (what
        // it holds is committed; readers go through the files).
        for sm in meta.shards.iter().filter(|s| !s.is_open()) {
            if let Some(sh) = st.shards.get_mut(&sm.index) {
                sh.active = None;
            }
        }
        st.meta = meta;
        for &index in children {
            st.shards.insert(
                index,
                ShardState {
                    dir: shard_dir(&st.dir, index),
                    active: None,
                    next_offset: 0,
                    poisoned: false,
                },
            );
        }
        if let Some(st) = self.streams.get(stream) {
            self.publish(stream, st);
        }
        Ok(())
    }

    fn split(&mut self, stream: &str, index: u32, at: u128) -> Result<(), StreamError> {
        let st = self
            .streams
            .get_mut(stream)
            .ok_or_else(|| StreamError::NoSuchStream(stream.to_owned()))?;
        let (_, r) = Self::open_shard(st, index)?;
        if at <= r.start || at > r.end {
            return Err(StreamError::BadInput(format!(
                "new starting hash key {at} is not inside shard {}'s range {}..={} (exclusive of its start)",
                shard_id(index),
                r.start,
                r.end
            )));
        }
        let mut m = st.meta.clone();
        Self::close(st, &mut m, index);
        let left = Self::add_child(
            &mut m,
            HashRange {
                start: r.start,
                end: at - 1,
            },
            index,
            None,
        );
        let right = Self::add_child(
            &mut m,
            HashRange {
                start: at,
                end: r.end,
            },
            index,
            None,
        );
        self.commit_reshard(stream, m, &[left, right])
    }

    fn merge(&mut self, stream: &str, a: u32, b: u32) -> Result<(), StreamError> {
        let st = self
            .streams
            .get_mut(stream)
            .ok_or_else(|| StreamError::NoSuchStream(stream.to_owned()))?;
        let (_, ra) = Self::open_shard(st, a)?;
        let (_, rb) = Self::open_shard(st, b)?;
        let adjacent =
            ra.end.checked_add(1) == Some(rb.start) || rb.end.checked_add(1) == Some(ra.start);
        if !adjacent {
            return Err(StreamError::BadInput(format!(
                "shards {} and {} are not adjacent",
                shard_id(a),
                shard_id(b)
            )));
        }
        let mut m = st.meta.clone();
        Self::close(st, &mut m, a);
        Self::close(st, &mut m, b);
        let range = HashRange {
            start: ra.start.min(rb.start),
            end: ra.end.max(rb.end),
        };
        let child = Self::add_child(&mut m, range, a, Some(b));
        self.commit_reshard(stream, m, &[child])
    }

    /// Deletes the shard's whole segments whose every record is at or
    /// before `offset`; the segment being appended to is kept. Returns the
    /// bytes freed.
    fn trim_through(&mut self, stream: &str, index: u32, offset: u64) -> Result<u64, StreamError> {
        let st = self
            .streams
            .get(stream)
            .ok_or_else(|| StreamError::NoSuchStream(stream.to_owned()))?;
        let sh = st
            .shards
            .get(&index)
            .ok_or_else(|| StreamError::NoSuchShard {
                stream: stream.to_owned(),
                shard: shard_id(index),
            })?;
        let segs = segment::list(&sh.dir).map_err(io_err(&sh.dir))?;
        let active = sh.active.as_ref().map(|(f, _, _)| *f);
        let mut freed = 0;
        for pair in segs.windows(2) {
            let ((first, path), (next_first, _)) = (&pair[0], &pair[1]);
            // The segment holds offsets first..next_first.
            if Some(*first) == active || *next_first > offset.saturating_add(1) {
                break;
            }
            let len = std::fs::metadata(path).map_or(0, |m| m.len());
            std::fs::remove_file(path).map_err(io_err(path))?;
            freed += len;
            tracing::debug!(file = %path.display(), "local log: segment trimmed");
        }
        Ok(freed)
    }
}

/// Deletes whole segments past the retention age or size, in every stream
/// of the log in `dir`. A shard's segment being appended to (where its
/// committed end is, in `ends`) and those after it are kept.
fn retention_pass(
    dir: &Path,
    retention: Option<Duration>,
    retention_bytes: Option<u64>,
    ends: &RwLock<HashMap<(String, u32), End>>,
) {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return;
    };
    for e in rd.flatten() {
        let Some(name) = e.file_name().to_str().map(str::to_owned) else {
            continue;
        };
        if check_name(&name).is_err() {
            continue;
        }
        let Ok(Some(m)) = meta::read(&e.path()) else {
            continue;
        };
        let age = retention.unwrap_or(Duration::from_secs(u64::from(m.retention_hours) * 3600));
        for sm in &m.shards {
            let sdir = shard_dir(&e.path(), sm.index);
            let Ok(segs) = segment::list(&sdir) else {
                continue;
            };
            // Not known to the writer (yet): leave it.
            let Some(end) = ends
                .read()
                .ok()
                .and_then(|m| m.get(&(name.clone(), sm.index)).copied())
            else {
                continue;
            };
            let mut sized: Vec<(u64, PathBuf, u64, Option<SystemTime>)> = segs
                .into_iter()
                .map(|(f, p)| {
                    let md = std::fs::metadata(&p).ok();
                    let len = md.as_ref().map_or(0, |m| m.len());
                    let mtime = md.and_then(|m| m.modified().ok());
                    (f, p, len, mtime)
                })
                .collect();
            let mut total: u64 = sized.iter().map(|s| s.2).sum();
            // An open shard's active segment starts at `end.segment`; a
            // closed shard has none, and its `end.segment` is past its last.
            sized.retain(|s| s.0 < end.segment);
            for (_, path, len, mtime) in sized {
                let old = mtime
                    .and_then(|t| t.elapsed().ok())
                    .is_some_and(|e| e > age);
                let big = retention_bytes.is_some_and(|max| total > max);
                if !(old || big) {
                    break;
                }
                match std::fs::remove_file(&path) {
                    Ok(()) => {
                        total -= len;
                        tracing::info!(file = %path.display(), "local log: segment past retention deleted");
                    }
                    Err(e) => {
                        tracing::warn!(file = %path.display(), error = %e, "cannot delete segment")
                    }
                }
            }
        }
    }
}

/// Runs retention every `every` until the log is dropped, on a thread of
/// its own: deleting files does not hold up the writer's puts.
fn spawn_retention(
    log: &LocalLog,
    retention: Option<Duration>,
    retention_bytes: Option<u64>,
    every: Duration,
) {
    let weak = Arc::downgrade(&log.inner);
    let tick = every.clamp(Duration::from_millis(10), Duration::from_secs(1));
    let spawned = std::thread::Builder::new()
        .name("local-log-retention".into())
        .spawn(move || {
            let mut waited = Duration::ZERO;
            loop {
                std::thread::sleep(tick);
                waited += tick;
                let Some(inner) = weak.upgrade() else { return };
                if waited >= every {
                    waited = Duration::ZERO;
                    retention_pass(&inner.dir, retention, retention_bytes, &inner.ends);
                }
            }
        });
    if let Err(e) = spawned {
        tracing::error!(error = %e, "local log: cannot start the retention thread; segments are kept");
    }
}

impl LocalLog {
    /// Applies retention now (tools and tests); the writer also does it
    /// every 10 s while it is writing.
    pub async fn run_retention(&self) -> Result<(), StreamError> {
        if self.inner.writer.is_none() {
            return Err(StreamError::BadInput(format!(
                "the local log in {} is open read-only",
                self.inner.dir.display()
            )));
        }
        let inner = Arc::clone(&self.inner);
        tokio::task::spawn_blocking(move || {
            retention_pass(
                &inner.dir,
                inner.retention,
                inner.retention_bytes,
                &inner.ends,
            )
        })
        .await
        .map_err(|e| StreamError::Service(format!("retention task failed: {e}")))
    }

    /// Deletes the shard's whole segments that hold nothing after
    /// `through` (the spool, once those records are shipped). The segment
    /// being appended to stays. Returns the bytes freed.
    pub async fn trim_through(
        &self,
        stream: &str,
        shard: &str,
        through: &SequenceNumber,
    ) -> Result<u64, StreamError> {
        let bad = || StreamError::NoSuchShard {
            stream: stream.to_owned(),
            shard: shard.to_owned(),
        };
        let index = shard_index(shard).ok_or_else(bad)?;
        let (seq_index, offset) = split_sequence(through).ok_or_else(|| {
            StreamError::BadInput(format!("sequence number {through} is not of this log"))
        })?;
        if seq_index != index {
            return Err(StreamError::BadInput(format!(
                "sequence number {through} is not of shard {shard}"
            )));
        }
        let stream = stream.to_owned();
        self.ask(|reply| Req::TrimThrough {
            stream,
            index,
            offset,
            reply,
        })
        .await
    }

    /// The sequence number of record `offset` of a shard of this log.
    pub fn sequence_of(shard: &str, offset: u64) -> Option<SequenceNumber> {
        shard_index(shard).map(|i| sequence(i, offset))
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
}
