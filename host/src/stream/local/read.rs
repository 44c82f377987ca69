//! Reading a shard: where readers stop (the committed end the writer
//! publishes, in memory and, for readers in other processes, in each
//! shard's `.committed` file), iterator positions and seeking (to an
//! offset, a time or the end), and `get_records`, which steps over damaged
//! frames.

use std::fs::OpenOptions;
use std::path::Path;

use super::log::{LocalLog, check_name, io_err, now_ms, shard_dir};
use super::meta::{sequence, shard_id};
use super::segment::{self, Bad};
use crate::stream::{GetRecordsOutput, ShardIterator, StreamError, StreamRecord};

/// Bytes read from a segment at a time: reads are sized by what they
/// return, not by the most a read may return (a big buffer per read costs
/// its page faults, and keeps memory that few records need).
const READ_CHUNK: usize = 512 << 10;
/// Most bytes one `get_records` returns (Kinesis: 10 MB).
const MAX_GET_BYTES: usize = 10 << 20;

/// Where a shard's committed data ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct End {
    pub(super) next_offset: u64,
    pub(super) segment: u64,
    pub(super) pos: u64,
}

impl LocalLog {
    /// Where readers stop in a shard: what the writer has committed
    /// (fsynced and answered). In another process, from the shard's
    /// `.committed` file; `None` (no limit) for a shard written before
    /// that file existed.
    pub(super) fn committed(&self, stream: &str, index: u32) -> Option<End> {
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

pub(super) fn write_committed(dir: &Path, end: End) -> std::io::Result<()> {
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

/// A position in a shard: the next record's offset and where it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Position {
    pub(super) stream: String,
    pub(super) shard: u32,
    pub(super) offset: u64,
    pub(super) segment: u64,
    pub(super) pos: u64,
}

impl Position {
    pub(super) fn encode(&self) -> ShardIterator {
        ShardIterator(format!(
            "L1/{}/{}/{}/{}/{}",
            self.stream, self.shard, self.offset, self.segment, self.pos
        ))
    }

    pub(super) fn decode(it: &ShardIterator) -> Result<Self, StreamError> {
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
pub(super) fn seek_offset(dir: &Path, offset: u64) -> Result<(u64, u64, u64), StreamError> {
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
pub(super) fn seek_time(dir: &Path, ms: i64) -> Result<(u64, u64, u64), StreamError> {
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
pub(super) fn seek_end(dir: &Path) -> Result<(u64, u64, u64), StreamError> {
    let segs = segment::list(dir).map_err(io_err(dir))?;
    match segs.last() {
        None => Ok((0, 0, 0)),
        Some((first, path)) => {
            let scan = segment::scan(path, *first).map_err(io_err(path))?;
            Ok((scan.next_offset(*first), *first, scan.valid_len))
        }
    }
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

    pub(super) fn read_records(
        &self,
        p: Position,
        limit: u32,
    ) -> Result<GetRecordsOutput, StreamError> {
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
