//! Changing the log rather than appending to it: creating and deleting
//! streams (and finishing deletes a crash cut short), splitting and merging
//! shards, and deleting old segments (retention by age and size, and the
//! spool's trim once its records are shipped).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use super::log::{LocalLog, check_name, io_err, now_ms, shard_dir};
use super::meta::{self, ShardMeta, StreamMeta, shard_id, shard_index, split_sequence};
use super::read::End;
use super::segment;
use super::writer::{Req, ShardState, StreamState, Writer};
use crate::stream::{HashRange, SequenceNumber, StreamError};

/// Prefix of a stream directory being deleted (renamed first, so that
/// nobody opens it meanwhile).
const DELETED_PREFIX: &str = ".deleted-";

/// Removes what deletes cut short by a crash left behind.
pub(super) fn finish_deletes(dir: &Path) {
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

impl Writer {
    pub(super) fn admin(&mut self, req: Req) {
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
pub(super) fn spawn_retention(
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
}
