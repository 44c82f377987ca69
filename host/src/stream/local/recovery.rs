//! Damage in segments, and what runs on open: every segment of every
//! shard is checked, damaged bytes are kept aside under `DIR/.quarantine/`
//! and cut out, and a tail torn by a crash is truncated. Readers report the
//! damage they meet through the same [`Quarantine`].

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use super::log::{check_name, io_err, shard_dir};
use super::meta;
use super::segment::{self, Bad};
use super::writer::{ShardState, StreamState, Writer};
use crate::stream::StreamError;

/// Where damaged bytes found in segments are kept (under the log's
/// directory; not a stream name, as it starts with `.`).
const QUARANTINE: &str = ".quarantine";

/// Damage found in segments: reported once per place, counted, and its
/// bytes kept aside under `DIR/.quarantine/` (when the log is writable),
/// while the good frames around it are read on.
#[derive(Debug)]
pub(super) struct Quarantine {
    dir: PathBuf,
    writable: bool,
    pub(super) found: prometheus_client::metrics::counter::Counter,
    seen: std::sync::Mutex<std::collections::HashSet<(PathBuf, u64)>>,
}

impl Quarantine {
    pub(super) fn new(dir: &Path, writable: bool) -> Self {
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
    pub(super) fn report(&self, path: &Path, start: u64, bytes: &[u8], why: &Bad, next: &str) {
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

impl Writer {
    /// Loads every stream and truncates torn tails.
    pub(super) fn recover(&mut self) -> Result<(), StreamError> {
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
}
