//! The `index` sink: the filtered output of every shard of a stream merged
//! into one stream ordered by receive time, then event id — pushed in order
//! to a consumer's endpoint and served on the admin API
//! (`GET /v1/index/NAME`).
//!
//! Each shard's worker hands its batches (cut like any sink's, with each
//! line's stamp) to [`IndexStore::put`], which appends them to the shard's
//! staging file and fsyncs before it returns, so the shard's checkpoint
//! moves only past lines the index holds durably. A merger releases lines
//! from the staging files into the merged log in order by a watermark
//! k-way merge: the earliest pending line goes once every other live shard
//! has passed its time (a line of its at or after it was staged), has
//! nothing pending and has been idle for `idle_grace_ms`, or is finished
//! (read to its end after a reshard). A line staged later than lines after
//! it were released (a clock far behind, or a shard back from idle) is
//! released at once and counted as late.
//!
//! Memory is bounded by `memory_bytes`: each shard's pending lines are read
//! from its staging file as the merge needs them; the rest waits on disk.
//! `state.json` records, atomically after each merge step, how far the
//! merged log and each staging file are consumed: after a crash the merged
//! log is cut back to it and the merge resumes from the staging files, so
//! every line is in the index once. Each staged batch starts with a header
//! naming its last record: a worker that died before its checkpoint sends
//! that batch again after the restart, and the index takes it once.
//!
//! Files in the sink's directory: `merged.log` (frames: length, receive
//! time, event id, line), `staging/SHARD.frames` ([`super::kinesis::frame`]),
//! `state.json`, and `rejected/` (pushed batches the consumer refused).

use std::collections::{BTreeMap, VecDeque};
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::future::BoxFuture;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::{Object, ObjectStore, SinkError};
use crate::config::SinkConfig;
use crate::event::{EventId, SequenceNumber, ShardId};
use crate::retry::Backoff;

/// Bytes of a merged-log frame besides its line: length (u32), receive
/// time (i64), listener and counter (u64 each).
const MERGED_FIXED: u64 = 4 + 8 + 8 + 8;

/// Every this many entries the position in the merged log is remembered
/// (finding an ordinal or a time reads at most this many frames).
const SPARSE_EVERY: u64 = 256;

/// Lines released per merge step at most (then the lock is let go).
const STEP_LINES: usize = 20_000;

/// One line of the merged stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IndexLine {
    /// Its place in the merged stream, from 0.
    pub ordinal: u64,
    pub received_ms: i64,
    pub id: EventId,
    pub line: Bytes,
}

/// A pending line of a shard.
#[derive(Debug)]
struct Pending {
    t: i64,
    id: EventId,
    line: Bytes,
    /// Its frame's bytes in the staging file.
    disk: u64,
    /// A batch's header ([`MARKER_KEY`]): `line` is `LAST_SEQ DATA_BYTES`.
    marker: bool,
}

/// The key of the frame that starts each staged batch: it names the
/// batch's last record and how many bytes of frames follow, so a restart
/// knows which batches are staged whole (a worker that died before its
/// checkpoint sends the same batch again: it is taken once) and cuts one
/// the crash left half-written.
const MARKER_KEY: &[u8] = b"\0batch";

#[derive(Debug)]
struct ShardQ {
    file: File,
    path: PathBuf,
    /// Bytes of the staging file merged (or cut by a compaction: 0).
    consumed: u64,
    /// Bytes read into `pending`.
    loaded: u64,
    len: u64,
    pending: VecDeque<Pending>,
    pending_bytes: usize,
    /// Receive time of the latest line staged.
    watermark: i64,
    last_put: Instant,
    /// The last record of the last batch staged whole.
    staged_through: Option<SequenceNumber>,
    /// A worker reads the shard (it holds the merge back while idle for
    /// less than the grace).
    live: bool,
}

#[derive(Debug, serde::Serialize, serde::Deserialize, Default)]
struct Saved {
    count: u64,
    log_len: u64,
    consumed: BTreeMap<String, u64>,
    pushed: u64,
    /// Per shard, the last record of the last batch staged (kept here when
    /// a staging file is cut).
    #[serde(default)]
    staged_through: BTreeMap<String, String>,
    /// The batch being pushed (ordinals `from..to`): a restart pushes
    /// exactly it again, under the same key.
    #[serde(default)]
    pushing: Option<(u64, u64)>,
}

#[derive(Debug)]
struct State {
    shards: BTreeMap<String, ShardQ>,
    log: File,
    log_len: u64,
    count: u64,
    /// (ordinal, offset, receive time) every [`SPARSE_EVERY`] entries.
    sparse: Vec<(u64, u64, i64)>,
    last: Option<(i64, EventId)>,
    pushed: u64,
    pushing: Option<(u64, u64)>,
    late: u64,
}

/// One index: its files, its merge, its readers.
#[derive(Debug)]
pub struct Index {
    name: String,
    stream: String,
    dir: PathBuf,
    grace: Duration,
    memory_bytes: usize,
    state: Mutex<State>,
    /// Entries in the merged log, for followers and the pusher.
    merged: tokio::sync::watch::Sender<u64>,
    wake: tokio::sync::Notify,
    reader: File,
}

/// The indexes of a process, by sink name (for the admin API).
pub type Indexes = Arc<Mutex<BTreeMap<String, Arc<Index>>>>;

fn io(sink: &str, what: String) -> impl Fn(std::io::Error) -> SinkError + '_ {
    move |e| SinkError::Setup {
        sink: sink.to_owned(),
        message: format!("{what}: {e}"),
    }
}

fn safe_name(shard: &str) -> String {
    shard
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// Parses merged-log frames in `buf` (which starts at a frame); returns the
/// entries and the bytes of whole frames.
fn parse_merged(buf: &[u8], first_ordinal: u64) -> (Vec<IndexLine>, usize) {
    let mut out = Vec::new();
    let mut at = 0usize;
    while buf.len() - at >= MERGED_FIXED as usize {
        let b = &buf[at..];
        let len = u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize;
        let whole = MERGED_FIXED as usize + len;
        if b.len() < whole {
            break;
        }
        let num = |i: usize| {
            let mut a = [0u8; 8];
            a.copy_from_slice(&b[i..i + 8]);
            a
        };
        out.push(IndexLine {
            ordinal: first_ordinal + out.len() as u64,
            received_ms: i64::from_le_bytes(num(4)),
            id: EventId {
                listener: u64::from_le_bytes(num(12)),
                counter: u64::from_le_bytes(num(20)),
            },
            line: Bytes::copy_from_slice(&b[MERGED_FIXED as usize..whole]),
        });
        at += whole;
    }
    (out, at)
}

/// Whole staging frames in `buf`: the lines and their frame sizes.
fn parse_staged(buf: &[u8]) -> (Vec<Pending>, usize) {
    let mut out = Vec::new();
    let mut at = 0usize;
    const FIXED: usize = 8 + 8 + 8 + 2 + 4;
    while buf.len() - at >= FIXED {
        let b = &buf[at..];
        let num = |i: usize| {
            let mut a = [0u8; 8];
            a.copy_from_slice(&b[i..i + 8]);
            a
        };
        let key_len = u16::from_le_bytes([b[24], b[25]]) as usize;
        let len = u32::from_le_bytes([b[26], b[27], b[28], b[29]]) as usize;
        let whole = FIXED + key_len + len;
        if b.len() < whole {
            break;
        }
        out.push(Pending {
            id: EventId {
                listener: u64::from_le_bytes(num(0)),
                counter: u64::from_le_bytes(num(8)),
            },
            t: i64::from_le_bytes(num(16)),
            line: Bytes::copy_from_slice(&b[FIXED + key_len..whole]),
            disk: whole as u64,
            marker: &b[FIXED..FIXED + key_len] == MARKER_KEY,
        });
        at += whole;
    }
    (out, at)
}

impl Index {
    /// Opens (or creates) the index in `dir`, recovering from a crash.
    pub fn open(
        name: &str,
        stream: &str,
        dir: &Path,
        grace: Duration,
        memory_bytes: usize,
    ) -> Result<Self, SinkError> {
        let staging = dir.join("staging");
        std::fs::create_dir_all(&staging)
            .map_err(io(name, format!("cannot create {}", staging.display())))?;
        let state_path = dir.join("state.json");
        let saved: Saved = match std::fs::read(&state_path) {
            Ok(b) => serde_json::from_slice(&b).map_err(|e| SinkError::Setup {
                sink: name.to_owned(),
                message: format!("{} is damaged: {e}", state_path.display()),
            })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Saved::default(),
            Err(e) => return Err(io(name, format!("cannot read {}", state_path.display()))(e)),
        };
        let log_path = dir.join("merged.log");
        let log = OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .open(&log_path)
            .map_err(io(name, format!("cannot open {}", log_path.display())))?;
        let on_disk = log
            .metadata()
            .map_err(io(name, log_path.display().to_string()))?
            .len();
        if on_disk < saved.log_len {
            return Err(SinkError::Setup {
                sink: name.to_owned(),
                message: format!(
                    "{} holds {on_disk} bytes but {} says {}: the index was damaged; move the directory away to start a new one",
                    log_path.display(),
                    state_path.display(),
                    saved.log_len
                ),
            });
        }
        // Lines merged after the last state was written are merged again.
        log.set_len(saved.log_len)
            .map_err(io(name, format!("cannot cut {}", log_path.display())))?;
        let reader = File::open(&log_path).map_err(io(name, log_path.display().to_string()))?;
        // The sparse positions, and the last entry.
        let mut sparse = Vec::new();
        let (mut off, mut count, mut last) = (0u64, 0u64, None);
        let mut buf = vec![0u8; 1 << 20];
        let mut carry: Vec<u8> = Vec::new();
        while off + (carry.len() as u64) < saved.log_len {
            let at = off + carry.len() as u64;
            let want = ((saved.log_len - at) as usize).min(buf.len());
            reader
                .read_exact_at(&mut buf[..want], at)
                .map_err(io(name, format!("cannot read {}", log_path.display())))?;
            carry.extend_from_slice(&buf[..want]);
            let (lines, used) = parse_merged(&carry, count);
            let mut pos = off;
            for l in &lines {
                if l.ordinal % SPARSE_EVERY == 0 {
                    sparse.push((l.ordinal, pos, l.received_ms));
                }
                pos += MERGED_FIXED + l.line.len() as u64;
                last = Some((l.received_ms, l.id));
            }
            count += lines.len() as u64;
            off += used as u64;
            carry.drain(..used);
            if lines.is_empty() && want == 0 {
                break;
            }
        }
        if count != saved.count {
            tracing::warn!(
                index = name,
                entries = count,
                saved = saved.count,
                "the merged log's entries differ from its state; going by the log"
            );
        }
        let mut shards = BTreeMap::new();
        for e in std::fs::read_dir(&staging).map_err(io(name, staging.display().to_string()))? {
            let e = e.map_err(io(name, staging.display().to_string()))?;
            let file_name = e.file_name().to_string_lossy().into_owned();
            let Some(shard) = file_name.strip_suffix(".frames") else {
                continue;
            };
            let consumed = saved.consumed.get(shard).copied().unwrap_or(0);
            let through = saved
                .staged_through
                .get(shard)
                .and_then(|s| SequenceNumber::parse(s).ok());
            let q = open_staging(name, &e.path(), consumed, through)?;
            shards.insert(shard.to_owned(), q);
        }
        let pushed = saved.pushed.min(count);
        let pushing = saved
            .pushing
            .filter(|(f, t)| *f == pushed && *t <= count && f < t);
        let (merged, _) = tokio::sync::watch::channel(count);
        Ok(Self {
            name: name.to_owned(),
            stream: stream.to_owned(),
            dir: dir.to_owned(),
            grace,
            memory_bytes: memory_bytes.max(1 << 16),
            state: Mutex::new(State {
                shards,
                log,
                log_len: saved.log_len,
                count,
                sparse,
                last,
                pushed,
                pushing,
                late: 0,
            }),
            merged,
            wake: tokio::sync::Notify::new(),
            reader,
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Entries in the merged stream.
    pub fn count(&self) -> u64 {
        *self.merged.borrow()
    }

    /// Lines released after later ones (see the module's doc).
    pub fn late(&self) -> u64 {
        self.state.lock().map_or(0, |s| s.late)
    }

    /// Bytes of pending lines held in memory now.
    pub fn memory_bytes(&self) -> usize {
        self.state
            .lock()
            .map_or(0, |s| s.shards.values().map(|q| q.pending_bytes).sum())
    }

    /// What `/v1/status` says of the index.
    pub fn status(&self) -> serde_json::Value {
        let Ok(st) = self.state.lock() else {
            return serde_json::json!({"error": "a merge step panicked"});
        };
        let shards: serde_json::Map<String, serde_json::Value> = st
            .shards
            .iter()
            .map(|(k, q)| {
                (
                    k.clone(),
                    serde_json::json!({
                        "live": q.live,
                        "staged_bytes": q.len - q.consumed,
                        "pending_in_memory_bytes": q.pending_bytes,
                        "watermark_ms": (q.watermark != i64::MIN).then_some(q.watermark),
                        "idle_ms": q.last_put.elapsed().as_millis() as u64,
                    }),
                )
            })
            .collect();
        serde_json::json!({
            "stream": self.stream,
            "dir": self.dir.display().to_string(),
            "lines": st.count,
            "pushed": st.pushed,
            "late_lines": st.late,
            "memory_limit_bytes": self.memory_bytes,
            "pending_in_memory_bytes": st.shards.values().map(|q| q.pending_bytes).sum::<usize>(),
            "staged_bytes": st.shards.values().map(|q| q.len - q.consumed).sum::<u64>(),
            "shards": shards,
        })
    }

    /// Waits until the merged stream has more than `count` entries (or
    /// `cancel`).
    pub async fn wait_beyond(&self, count: u64, cancel: &CancellationToken) {
        let mut rx = self.merged.subscribe();
        loop {
            if *rx.borrow_and_update() > count {
                return;
            }
            tokio::select! {
                () = cancel.cancelled() => return,
                r = rx.changed() => if r.is_err() { return },
            }
        }
    }

    fn lock(&self) -> Result<std::sync::MutexGuard<'_, State>, SinkError> {
        self.state.lock().map_err(|_| SinkError::Setup {
            sink: self.name.clone(),
            message: "a merge step panicked".into(),
        })
    }

    /// A worker started (`live`) or finished reading `shard`.
    pub fn set_live(&self, shard: &ShardId, live: bool) -> Result<(), SinkError> {
        let mut st = self.lock()?;
        let q = self.shard_q(&mut st, shard.as_str())?;
        q.live = live;
        q.last_put = Instant::now();
        drop(st);
        self.wake.notify_one();
        Ok(())
    }

    fn shard_q<'s>(&self, st: &'s mut State, shard: &str) -> Result<&'s mut ShardQ, SinkError> {
        if !st.shards.contains_key(shard) {
            let path = self
                .dir
                .join("staging")
                .join(format!("{}.frames", safe_name(shard)));
            let q = open_staging(&self.name, &path, 0, None)?;
            st.shards.insert(shard.to_owned(), q);
        }
        st.shards.get_mut(shard).ok_or_else(|| SinkError::Setup {
            sink: self.name.clone(),
            message: "shard vanished".into(),
        })
    }

    /// Stages a batch of `shard` (event frames) ending with record `last`,
    /// durably; a batch already staged (sent again after a restart) is
    /// taken once.
    fn stage(&self, shard: &str, body: &[u8], last: Option<&str>) -> Result<(), SinkError> {
        let (lines, whole) = parse_staged(body);
        if whole != body.len() {
            return Err(SinkError::Rejected {
                sink: self.name.clone(),
                key: shard.to_owned(),
                message: "a batch that is not whole event frames".into(),
            });
        }
        let last = last.and_then(|l| SequenceNumber::parse(l).ok());
        let mut st = self.lock()?;
        let q = self.shard_q(&mut st, shard)?;
        if let (Some(l), Some(t)) = (&last, &q.staged_through)
            && l <= t
        {
            tracing::debug!(index = %self.name, shard, last = %l, "batch staged before a restart; taken once");
            q.last_put = Instant::now();
            return Ok(());
        }
        let fail = |e: std::io::Error| SinkError::Write {
            sink: self.name.clone(),
            key: shard.to_owned(),
            message: format!("cannot stage in {}: {e}", q.path.display()),
        };
        let mut append = Vec::with_capacity(body.len() + 96);
        let header = format!(
            "{} {}",
            last.as_ref().map_or("-", SequenceNumber::as_str),
            body.len()
        );
        super::kinesis::frame(
            &mut append,
            &super::archive::ArchiveLine {
                bytes: header.as_bytes(),
                id: EventId {
                    listener: u64::MAX,
                    counter: u64::MAX,
                },
                received_ms: i64::MIN,
                key: MARKER_KEY,
            },
        );
        append.extend_from_slice(body);
        q.file.write_all_at(&append, q.len).map_err(fail)?;
        q.file.sync_data().map_err(fail)?;
        q.len += append.len() as u64;
        if last.is_some() {
            q.staged_through = last;
        }
        q.last_put = Instant::now();
        q.live = true;
        if let Some(t) = lines.iter().map(|l| l.t).max() {
            q.watermark = q.watermark.max(t);
        }
        drop(st);
        self.wake.notify_one();
        Ok(())
    }

    /// One merge step: releases what the watermarks allow into the merged
    /// log, durably, then records how far everything is consumed. Returns
    /// the lines released.
    pub fn merge_step(&self) -> Result<usize, SinkError> {
        let mut st = self.lock()?;
        let st = &mut *st;
        let per_shard = self.memory_bytes / st.shards.len().max(1);
        let fail = |what: &str, e: std::io::Error| SinkError::Write {
            sink: self.name.clone(),
            key: "merged.log".into(),
            message: format!("{what}: {e}"),
        };
        for q in st.shards.values_mut() {
            refill(q, per_shard).map_err(|e| fail("cannot read a staging file", e))?;
        }
        let now = Instant::now();
        let mut out = Vec::new();
        let mut released = 0usize;
        let mut sparse_new = Vec::new();
        let (mut count, mut log_len) = (st.count, st.log_len);
        while released < STEP_LINES {
            // The earliest pending line.
            let Some((shard, t, _)) = st
                .shards
                .iter()
                .filter_map(|(k, q)| q.pending.front().map(|p| (k, p.t, p.id)))
                .min_by_key(|(_, t, id)| (*t, *id))
                .map(|(k, t, id)| (k.clone(), t, id))
            else {
                break;
            };
            let held = st.shards.iter().any(|(k, q)| {
                *k != shard
                    && q.live
                    && q.pending.is_empty()
                    && q.loaded >= q.len
                    && q.watermark < t
                    && now.duration_since(q.last_put) < self.grace
            });
            if held {
                break;
            }
            let Some(q) = st.shards.get_mut(&shard) else {
                break;
            };
            let Some(p) = q.pending.pop_front() else {
                break;
            };
            q.pending_bytes -= p.line.len();
            q.consumed += p.disk;
            drop_markers(q);
            if q.pending.is_empty() {
                refill(q, per_shard).map_err(|e| fail("cannot read a staging file", e))?;
            }
            if st.last.is_some_and(|l| (p.t, p.id) < l) {
                st.late += 1;
            } else {
                st.last = Some((p.t, p.id));
            }
            if count % SPARSE_EVERY == 0 {
                sparse_new.push((count, log_len, p.t));
            }
            out.extend_from_slice(
                &u32::try_from(p.line.len())
                    .unwrap_or(u32::MAX)
                    .to_le_bytes(),
            );
            out.extend_from_slice(&p.t.to_le_bytes());
            out.extend_from_slice(&p.id.listener.to_le_bytes());
            out.extend_from_slice(&p.id.counter.to_le_bytes());
            out.extend_from_slice(&p.line);
            log_len += MERGED_FIXED + p.line.len() as u64;
            count += 1;
            released += 1;
        }
        if released > 0 {
            st.log
                .write_all_at(&out, st.log_len)
                .map_err(|e| fail("cannot append to merged.log", e))?;
            st.log
                .sync_data()
                .map_err(|e| fail("cannot fsync merged.log", e))?;
            st.log_len = log_len;
            st.count = count;
            st.sparse.extend(sparse_new);
        }
        // Staging files merged to their end start again empty; what they
        // staged through is recorded first.
        let mut cut = false;
        if st
            .shards
            .values()
            .any(|q| q.consumed > 0 && q.consumed == q.len && q.pending.is_empty())
        {
            self.save(st)?;
        }
        for q in st.shards.values_mut() {
            if q.consumed > 0 && q.consumed == q.len && q.pending.is_empty() {
                q.file
                    .set_len(0)
                    .map_err(|e| fail("cannot cut a staging file", e))?;
                q.consumed = 0;
                q.loaded = 0;
                q.len = 0;
                cut = true;
            }
        }
        if released > 0 || cut {
            self.save(st)?;
        }
        if released > 0 {
            self.merged.send_replace(count);
        }
        Ok(released)
    }

    fn save(&self, st: &State) -> Result<(), SinkError> {
        let saved = Saved {
            count: st.count,
            log_len: st.log_len,
            consumed: st
                .shards
                .iter()
                .map(|(k, q)| (safe_name(k), q.consumed))
                .collect(),
            pushed: st.pushed,
            staged_through: st
                .shards
                .iter()
                .filter_map(|(k, q)| Some((safe_name(k), q.staged_through.as_ref()?.to_string())))
                .collect(),
            pushing: st.pushing,
        };
        let bytes = serde_json::to_vec(&saved).map_err(|e| SinkError::Write {
            sink: self.name.clone(),
            key: "state.json".into(),
            message: e.to_string(),
        })?;
        crate::fsutil::write_atomic(&self.dir.join("state.json"), &bytes).map_err(|e| {
            SinkError::Write {
                sink: self.name.clone(),
                key: "state.json".into(),
                message: format!("cannot write: {e}"),
            }
        })
    }

    /// Up to `limit` entries from `ordinal` on.
    pub fn read(&self, ordinal: u64, limit: usize) -> Result<Vec<IndexLine>, SinkError> {
        let (count, log_len, start) = {
            let st = self.lock()?;
            let i = st.sparse.partition_point(|(o, _, _)| *o <= ordinal);
            let start = if i == 0 {
                (0, 0)
            } else {
                (st.sparse[i - 1].0, st.sparse[i - 1].1)
            };
            (st.count, st.log_len, start)
        };
        if ordinal >= count || limit == 0 {
            return Ok(Vec::new());
        }
        let (mut at_ordinal, mut off) = start;
        let mut out = Vec::new();
        let mut carry: Vec<u8> = Vec::new();
        let mut buf = vec![0u8; 256 << 10];
        while out.len() < limit && off + (carry.len() as u64) < log_len {
            let at = off + carry.len() as u64;
            let want = ((log_len - at) as usize).min(buf.len());
            self.reader
                .read_exact_at(&mut buf[..want], at)
                .map_err(|e| SinkError::Write {
                    sink: self.name.clone(),
                    key: "merged.log".into(),
                    message: format!("cannot read: {e}"),
                })?;
            carry.extend_from_slice(&buf[..want]);
            let (lines, used) = parse_merged(&carry, at_ordinal);
            at_ordinal += lines.len() as u64;
            off += used as u64;
            carry.drain(..used);
            for l in lines {
                if l.ordinal >= ordinal && out.len() < limit {
                    out.push(l);
                }
            }
        }
        Ok(out)
    }

    /// The ordinal of the first entry received at or after `ms`.
    pub fn ordinal_at_time(&self, ms: i64) -> Result<u64, SinkError> {
        let (from, count) = {
            let st = self.lock()?;
            let i = st.sparse.partition_point(|(_, _, t)| *t < ms);
            (if i == 0 { 0 } else { st.sparse[i - 1].0 }, st.count)
        };
        let mut o = from;
        while o < count {
            let chunk = self.read(o, 4096)?;
            if let Some(l) = chunk.iter().find(|l| l.received_ms >= ms) {
                return Ok(l.ordinal);
            }
            o += chunk.len().max(1) as u64;
        }
        Ok(count)
    }

    /// The ordinal after the entry of event `id`, if the index holds it.
    pub fn ordinal_after_id(&self, id: EventId) -> Result<Option<u64>, SinkError> {
        let count = self.count();
        let mut o = 0;
        while o < count {
            let chunk = self.read(o, 4096)?;
            if let Some(l) = chunk.iter().find(|l| l.id == id) {
                return Ok(Some(l.ordinal + 1));
            }
            o += chunk.len().max(1) as u64;
        }
        Ok(None)
    }

    /// Pushed up to, and the batch being pushed.
    fn push_position(&self) -> (u64, Option<(u64, u64)>) {
        self.state
            .lock()
            .map_or((0, None), |s| (s.pushed, s.pushing))
    }

    fn set_pushing(&self, range: (u64, u64)) -> Result<(), SinkError> {
        let mut st = self.lock()?;
        st.pushing = Some(range);
        self.save(&st)
    }

    fn set_pushed(&self, to: u64) -> Result<(), SinkError> {
        let mut st = self.lock()?;
        st.pushed = to;
        st.pushing = None;
        self.save(&st)
    }
}

fn open_staging(
    sink: &str,
    path: &Path,
    consumed: u64,
    through: Option<SequenceNumber>,
) -> Result<ShardQ, SinkError> {
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .read(true)
        .write(true)
        .open(path)
        .map_err(io(sink, format!("cannot open {}", path.display())))?;
    let len = file
        .metadata()
        .map_err(io(sink, path.display().to_string()))?
        .len();
    let consumed = consumed.min(len);
    // What is staged and not merged: its latest time, the last batch staged
    // whole, and a batch a crash left half-written (never acknowledged: its
    // write had not returned) cut off.
    let mut rest = vec![0u8; (len - consumed) as usize];
    file.read_exact_at(&mut rest, consumed)
        .map_err(io(sink, format!("cannot read {}", path.display())))?;
    let (frames, _) = parse_staged(&rest);
    let mut through = through;
    let mut good = 0usize;
    let mut watermark = i64::MIN;
    let mut at = 0usize;
    let mut i = 0;
    while i < frames.len() {
        let f = &frames[i];
        if !f.marker {
            // Data of a batch whose header was merged already.
            at += f.disk as usize;
            good = at;
            watermark = watermark.max(f.t);
            i += 1;
            continue;
        }
        let text = String::from_utf8_lossy(&f.line).into_owned();
        let mut parts = text.split(' ');
        let seq = parts.next().and_then(|s| SequenceNumber::parse(s).ok());
        let Some(data) = parts.next().and_then(|n| n.parse::<usize>().ok()) else {
            break;
        };
        let end = at + f.disk as usize + data;
        if end > rest.len() {
            break;
        }
        // The whole batch is there.
        let mut j = i + 1;
        let mut pos = at + f.disk as usize;
        while j < frames.len() && pos < end {
            watermark = watermark.max(frames[j].t);
            pos += frames[j].disk as usize;
            j += 1;
        }
        if pos != end {
            break;
        }
        if let Some(s) = seq
            && through.as_ref().is_none_or(|t| s > *t)
        {
            through = Some(s);
        }
        at = end;
        good = end;
        i = j;
    }
    if good < rest.len() {
        tracing::warn!(sink, file = %path.display(), bytes = rest.len() - good, "cutting a staged batch a crash left half-written (it was never acknowledged)");
        file.set_len(consumed + good as u64)
            .map_err(io(sink, format!("cannot cut {}", path.display())))?;
    }
    Ok(ShardQ {
        file,
        path: path.to_owned(),
        consumed,
        loaded: consumed,
        len: consumed + good as u64,
        pending: VecDeque::new(),
        pending_bytes: 0,
        watermark,
        last_put: Instant::now(),
        staged_through: through,
        live: false,
    })
}

/// Passes the batch headers at the front of a shard's pending lines.
fn drop_markers(q: &mut ShardQ) {
    while q.pending.front().is_some_and(|p| p.marker) {
        if let Some(p) = q.pending.pop_front() {
            q.consumed += p.disk;
        }
    }
}

/// Reads a shard's staged lines into memory up to `budget` bytes (at least
/// one line when any is staged).
fn refill(q: &mut ShardQ, budget: usize) -> std::io::Result<()> {
    while q.loaded < q.len && (q.pending.is_empty() || q.pending_bytes < budget) {
        // Never past the budget by more than one read's last frame.
        let room = budget.saturating_sub(q.pending_bytes).max(4 << 10);
        let want = ((q.len - q.loaded) as usize).min(room);
        let mut buf = vec![0u8; want];
        q.file.read_exact_at(&mut buf, q.loaded)?;
        let (lines, used) = parse_staged(&buf);
        if used == 0 {
            // One frame larger than the read: read it whole.
            let mut head = [0u8; 30];
            q.file.read_exact_at(&mut head, q.loaded)?;
            let key_len = u16::from_le_bytes([head[24], head[25]]) as usize;
            let len = u32::from_le_bytes([head[26], head[27], head[28], head[29]]) as usize;
            let mut whole = vec![0u8; 30 + key_len + len];
            q.file.read_exact_at(&mut whole, q.loaded)?;
            let (lines, used) = parse_staged(&whole);
            if used == 0 {
                return Err(std::io::Error::other("a staged frame is damaged"));
            }
            q.loaded += used as u64;
            push_loaded(q, lines);
            continue;
        }
        q.loaded += used as u64;
        push_loaded(q, lines);
    }
    Ok(())
}

fn push_loaded(q: &mut ShardQ, lines: Vec<Pending>) {
    for l in lines {
        if !l.marker {
            q.pending_bytes += l.line.len();
        }
        q.pending.push_back(l);
    }
    drop_markers(q);
}

/// The sink a pipeline writes: batches of one shard into the index.
#[derive(Debug)]
pub struct IndexStore {
    index: Arc<Index>,
}

impl IndexStore {
    /// Opens the index of sink `name` (a directory: `config.path`), starts
    /// its merger and, with a `url`, its pusher.
    pub fn open(
        name: &str,
        config: &SinkConfig,
        stream: &str,
        indexes: &Indexes,
        cancel: &CancellationToken,
        tracker: &TaskTracker,
    ) -> Result<Self, SinkError> {
        let dir = config.path.clone().ok_or_else(|| SinkError::Setup {
            sink: name.to_owned(),
            message: "an index sink needs a directory".into(),
        })?;
        let index = Arc::new(Index::open(
            name,
            stream,
            &dir,
            Duration::from_millis(config.idle_grace_ms()),
            usize::try_from(config.memory_bytes()).unwrap_or(usize::MAX),
        )?);
        if let Ok(mut m) = indexes.lock() {
            m.insert(name.to_owned(), Arc::clone(&index));
        }
        {
            let index = Arc::clone(&index);
            let cancel = cancel.clone();
            let tick = Duration::from_millis((config.idle_grace_ms() / 4).clamp(5, 50));
            tracker.spawn(async move {
                loop {
                    let i = Arc::clone(&index);
                    match tokio::task::spawn_blocking(move || i.merge_step()).await {
                        Ok(Ok(n)) if n > 0 => continue,
                        Ok(Ok(_)) => {}
                        Ok(Err(e)) => {
                            tracing::error!(index = %index.name, error = %e, "merge step failed; retrying");
                        }
                        Err(e) => {
                            tracing::error!(index = %index.name, error = %e, "merge step panicked");
                            return;
                        }
                    }
                    tokio::select! {
                        () = cancel.cancelled() => return,
                        () = index.wake.notified() => {}
                        () = tokio::time::sleep(tick) => {}
                    }
                }
            });
        }
        if config.url.is_some() {
            let mut push = config.clone();
            push.kind = crate::config::SinkKind::Http;
            push.path = None;
            let http = super::http::HttpStore::new(name, &push)?;
            let index = Arc::clone(&index);
            let cancel = cancel.clone();
            let max_bytes = usize::try_from(config.max_bytes()).unwrap_or(usize::MAX);
            let max_age = Duration::from_millis(config.max_age_ms());
            let budget = Duration::from_millis(config.retry_budget_ms);
            let retry_max = Duration::from_millis(config.retry_max_ms);
            tracker.spawn(async move {
                push_loop(
                    &index, &http, max_bytes, max_age, budget, retry_max, &cancel,
                )
                .await;
            });
        }
        Ok(Self { index })
    }
}

impl ObjectStore for IndexStore {
    fn put<'a>(
        &'a self,
        _key: &'a str,
        object: &'a Object,
    ) -> BoxFuture<'a, Result<(), SinkError>> {
        Box::pin(async move {
            let shard = object
                .metadata
                .iter()
                .find(|(k, _)| *k == "shard")
                .map(|(_, v)| v.clone())
                .unwrap_or_default();
            let last = object
                .metadata
                .iter()
                .find(|(k, _)| *k == "last-sequence")
                .map(|(_, v)| v.clone());
            let index = Arc::clone(&self.index);
            let body = object.body.clone();
            tokio::task::spawn_blocking(move || index.stage(&shard, &body, last.as_deref()))
                .await
                .map_err(|e| SinkError::Setup {
                    sink: self.index.name.clone(),
                    message: format!("staging: {e}"),
                })?
        })
    }

    fn location(&self) -> String {
        format!("index {}", self.index.dir.display())
    }

    fn shard_started(&self, shard: &ShardId) {
        if let Err(e) = self.index.set_live(shard, true) {
            tracing::error!(index = %self.index.name, %shard, error = %e, "cannot track the shard");
        }
    }

    fn shard_finished(&self, shard: &ShardId) {
        if let Err(e) = self.index.set_live(shard, false) {
            tracing::error!(index = %self.index.name, %shard, error = %e, "cannot track the shard");
        }
    }
}

/// Pushes the merged stream in order: batches of at most `max_bytes` of
/// lines, waiting up to `max_age` for a batch to fill, each POSTed until it
/// is taken (or refused, or out of budget: then kept in `rejected/`).
async fn push_loop(
    index: &Index,
    http: &super::http::HttpStore,
    max_bytes: usize,
    max_age: Duration,
    budget: Duration,
    retry_max: Duration,
    cancel: &CancellationToken,
) {
    let backoff = Backoff::new(Duration::from_millis(100), retry_max);
    // The index's own files failing in a row (a full or broken disk).
    let io_backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(10));
    let mut io_failures = 0u32;
    loop {
        let (from, pushing) = index.push_position();
        let lines = match pushing {
            // Cut before a restart: the same lines again, the same key.
            Some((f, t)) => match index.read(f, (t - f) as usize) {
                Ok(l) => l,
                Err(e) => {
                    tracing::error!(index = %index.name, error = %e, "cannot read the merged log to push");
                    io_failures += 1;
                    tokio::time::sleep(io_backoff.delay(io_failures)).await;
                    continue;
                }
            },
            None => {
                index.wait_beyond(from, cancel).await;
                if cancel.is_cancelled() {
                    return;
                }
                // Let a batch fill for up to max_age.
                let deadline = Instant::now() + max_age;
                loop {
                    let n = index.count() - from;
                    if n as usize * 64 >= max_bytes || Instant::now() >= deadline {
                        break;
                    }
                    tokio::select! {
                        () = cancel.cancelled() => return,
                        () = tokio::time::sleep(Duration::from_millis(5).min(deadline - Instant::now())) => {}
                    }
                }
                let mut lines = match index.read(from, 100_000) {
                    Ok(l) => l,
                    Err(e) => {
                        tracing::error!(index = %index.name, error = %e, "cannot read the merged log to push");
                        io_failures += 1;
                        tokio::time::sleep(io_backoff.delay(io_failures)).await;
                        continue;
                    }
                };
                let mut bytes = 0usize;
                let mut taken = 0usize;
                for l in &lines {
                    if taken > 0 && bytes + l.line.len() + 1 > max_bytes {
                        break;
                    }
                    bytes += l.line.len() + 1;
                    taken += 1;
                }
                lines.truncate(taken);
                if let Some(last) = lines.last()
                    && let Err(e) = index.set_pushing((from, last.ordinal + 1))
                {
                    tracing::error!(index = %index.name, error = %e, "cannot record the batch being pushed");
                    io_failures += 1;
                    tokio::time::sleep(io_backoff.delay(io_failures)).await;
                    continue;
                }
                lines
            }
        };
        io_failures = 0;
        let taken = lines.len();
        if taken == 0 {
            continue;
        }
        let mut body = Vec::new();
        for l in &lines {
            body.extend_from_slice(&l.line);
            body.push(b'\n');
        }
        let first = &lines[0];
        let last = &lines[taken - 1];
        let to = last.ordinal + 1;
        let object = Object {
            body: Bytes::from(body),
            content_type: "application/x-ndjson",
            content_encoding: None,
            metadata: vec![
                ("pipeline", format!("index:{}", index.name)),
                ("filter", "index".into()),
                ("stream", index.stream.clone()),
                ("shard", "index".into()),
                ("first-sequence", first.ordinal.to_string()),
                ("last-sequence", last.ordinal.to_string()),
                ("first-event-id", first.id.to_string()),
                ("last-event-id", last.id.to_string()),
                ("line-count", taken.to_string()),
            ],
        };
        let key = format!("{}-{}", first.ordinal, last.ordinal);
        let started = Instant::now();
        let mut attempt = 0u32;
        loop {
            match http.put(&key, &object).await {
                Ok(()) => break,
                Err(e) => {
                    attempt = attempt.saturating_add(1);
                    let wait = match &e {
                        SinkError::Retry { after: Some(a), .. } => *a,
                        _ => backoff.delay(attempt),
                    };
                    let refused = matches!(e, SinkError::Rejected { .. });
                    if refused || started.elapsed() + wait > budget {
                        keep_refused(index, &key, &object, &e.to_string());
                        break;
                    }
                    tracing::warn!(index = %index.name, %key, error = %e, attempt, ?wait, "push failed; retrying");
                    tokio::select! {
                        () = cancel.cancelled() => return,
                        () = tokio::time::sleep(wait) => {}
                    }
                }
            }
        }
        if let Err(e) = index.set_pushed(to) {
            tracing::error!(index = %index.name, error = %e, "cannot record the push position");
        }
    }
}

/// A pushed batch the consumer refused: kept beside the index with why.
fn keep_refused(index: &Index, key: &str, object: &Object, why: &str) {
    let dir = index.dir.join("rejected");
    let path = dir.join(format!("{key}.ndjson"));
    let r = std::fs::create_dir_all(&dir).and_then(|()| {
        let mut f = File::create(&path)?;
        f.write_all(&object.body)?;
        f.sync_all()?;
        std::fs::write(dir.join(format!("{key}.why")), why)
    });
    match r {
        Ok(()) => {
            tracing::error!(index = %index.name, %key, file = %path.display(), error = %why, "push refused: the batch is kept in the file")
        }
        Err(e) => {
            tracing::error!(index = %index.name, %key, error = %why, write_error = %e, "push refused and the batch cannot be kept")
        }
    }
}

/// Looks up an index by name.
pub fn find(indexes: &Indexes, name: &str) -> Option<Arc<Index>> {
    indexes.lock().ok().and_then(|m| m.get(name).cloned())
}

/// Names of the indexes, for errors.
pub fn names(indexes: &Indexes) -> Vec<String> {
    indexes
        .lock()
        .map(|m| m.keys().cloned().collect())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sink::archive::ArchiveLine;
    use crate::sink::kinesis::frame;

    fn batch(lines: &[(i64, u64, &str)]) -> Vec<u8> {
        let mut body = Vec::new();
        for (t, c, l) in lines {
            frame(
                &mut body,
                &ArchiveLine {
                    bytes: l.as_bytes(),
                    id: EventId {
                        listener: 1,
                        counter: *c,
                    },
                    received_ms: *t,
                    key: b"k",
                },
            );
        }
        body
    }

    fn all(i: &Index) -> Vec<String> {
        i.read(0, 1000)
            .unwrap_or_else(|e| panic!("{e}"))
            .into_iter()
            .map(|l| String::from_utf8_lossy(&l.line).into_owned())
            .collect()
    }

    #[test]
    fn a_line_waits_for_every_live_shard_to_pass_its_time_or_idle_out() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let i = Index::open("t", "s", dir.path(), Duration::from_millis(300), 1 << 20)
            .unwrap_or_else(|e| panic!("{e}"));
        let (a, b) = (ShardId::new("a"), ShardId::new("b"));
        i.set_live(&a, true).unwrap_or_else(|e| panic!("{e}"));
        i.set_live(&b, true).unwrap_or_else(|e| panic!("{e}"));
        i.stage("a", &batch(&[(10, 1, "a10"), (30, 2, "a30")]), None)
            .unwrap_or_else(|e| panic!("{e}"));
        // b is live, has staged nothing and is not yet idle: nothing goes.
        assert_eq!(i.merge_step().unwrap_or_else(|e| panic!("{e}")), 0);
        i.stage("b", &batch(&[(20, 3, "b20")]), None)
            .unwrap_or_else(|e| panic!("{e}"));
        // a10 and b20 go; a30 waits for b to pass 30.
        assert_eq!(i.merge_step().unwrap_or_else(|e| panic!("{e}")), 2);
        assert_eq!(all(&i), ["a10", "b20"]);
        std::thread::sleep(Duration::from_millis(350));
        // b idle past the grace: a30 goes.
        assert_eq!(i.merge_step().unwrap_or_else(|e| panic!("{e}")), 1);
        assert_eq!(all(&i), ["a10", "b20", "a30"]);
        // A restart finds the same stream and nothing pending.
        drop(i);
        let i = Index::open("t", "s", dir.path(), Duration::from_millis(300), 1 << 20)
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(i.merge_step().unwrap_or_else(|e| panic!("{e}")), 0);
        assert_eq!(all(&i), ["a10", "b20", "a30"]);
        assert_eq!(i.ordinal_at_time(20).unwrap_or_else(|e| panic!("{e}")), 1);
        assert_eq!(
            i.ordinal_after_id(EventId {
                listener: 1,
                counter: 3
            })
            .unwrap_or_else(|e| panic!("{e}")),
            Some(2)
        );
    }

    /// A worker that died before its checkpoint sends its last batch again
    /// after the restart: the index takes it once, also after its staging
    /// file was cut; a batch whose write a crash cut short is dropped.
    #[test]
    fn a_batch_sent_again_after_a_restart_is_taken_once() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let open = || {
            Index::open("t", "s", dir.path(), Duration::from_millis(0), 1 << 20)
                .unwrap_or_else(|e| panic!("{e}"))
        };
        let i = open();
        let b1 = batch(&[(1, 1, "one"), (2, 2, "two")]);
        i.stage("a", &b1, Some("10"))
            .unwrap_or_else(|e| panic!("{e}"));
        drop(i);
        let i = open();
        i.stage("a", &b1, Some("10"))
            .unwrap_or_else(|e| panic!("{e}"));
        i.merge_step().unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(all(&i), ["one", "two"]);
        // Merged and cut: the record of what was staged outlives the file.
        drop(i);
        let i = open();
        i.stage("a", &b1, Some("10"))
            .unwrap_or_else(|e| panic!("{e}"));
        i.stage("a", &batch(&[(3, 3, "three")]), Some("11"))
            .unwrap_or_else(|e| panic!("{e}"));
        i.merge_step().unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(all(&i), ["one", "two", "three"]);
        // A batch half-written when the process died is cut at the restart
        // and taken whole when it comes again.
        let file = dir.path().join("staging/a.frames");
        let before = std::fs::metadata(&file).map_or(0, |m| m.len());
        i.stage("a", &batch(&[(4, 4, "four"), (5, 5, "five")]), Some("12"))
            .unwrap_or_else(|e| panic!("{e}"));
        drop(i);
        let whole = std::fs::read(&file).unwrap_or_default();
        std::fs::write(&file, &whole[..whole.len() - 3]).unwrap_or_else(|e| panic!("{e}"));
        let i = open();
        assert_eq!(std::fs::metadata(&file).map_or(0, |m| m.len()), before);
        i.stage("a", &batch(&[(4, 4, "four"), (5, 5, "five")]), Some("12"))
            .unwrap_or_else(|e| panic!("{e}"));
        i.merge_step().unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(all(&i), ["one", "two", "three", "four", "five"]);
    }

    #[test]
    fn a_crash_after_the_log_and_before_the_state_merges_again_once() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let open = || {
            Index::open("t", "s", dir.path(), Duration::from_millis(0), 1 << 20)
                .unwrap_or_else(|e| panic!("{e}"))
        };
        let i = open();
        i.stage("a", &batch(&[(1, 1, "one"), (2, 2, "two")]), None)
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(i.merge_step().unwrap_or_else(|e| panic!("{e}")), 2);
        let state = std::fs::read(dir.path().join("state.json")).unwrap_or_default();
        i.stage("a", &batch(&[(3, 3, "three")]), None)
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(i.merge_step().unwrap_or_else(|e| panic!("{e}")), 1);
        drop(i);
        // As if the process died after appending "three" to the merged log
        // and before its state was written (and the staging file cut).
        std::fs::write(dir.path().join("state.json"), state).unwrap_or_else(|e| panic!("{e}"));
        // The staging file was cut after "one" and "two" were merged, so it
        // holds "three", then half of a batch that was being staged.
        let mut torn = batch(&[(3, 3, "three")]);
        torn.extend_from_slice(&batch(&[(4, 4, "four")])[..10]);
        std::fs::write(dir.path().join("staging/a.frames"), &torn)
            .unwrap_or_else(|e| panic!("{e}"));
        let i = open();
        assert_eq!(all(&i), ["one", "two"]);
        i.merge_step().unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(all(&i), ["one", "two", "three"]);
    }
}
