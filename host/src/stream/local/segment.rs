//! Segment files: append-only runs of framed records.
//!
//! ```text
//! frame   = len: u32 LE · crc32(payload): u32 LE · payload (len bytes)
//! payload = offset: u64 LE · arrival_ms: i64 LE · key_len: u16 LE · key · data
//! ```
//! A segment is named by the offset of its first record (20 digits), so the
//! segments of a shard sort by name.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use bytes::{BufMut, Bytes, BytesMut};

pub(crate) const HEADER: usize = 8;
const FIXED: usize = 8 + 8 + 2;
/// Largest payload accepted when reading (a record is at most ~1 MiB).
pub(crate) const MAX_PAYLOAD: usize = 16 << 20;

/// Appends one framed record to `buf`.
pub(crate) fn encode(buf: &mut BytesMut, offset: u64, arrival_ms: i64, key: &str, data: &[u8]) {
    let key = &key.as_bytes()[..key.len().min(u16::MAX as usize)];
    let len = FIXED + key.len() + data.len();
    buf.reserve(HEADER + len);
    buf.put_u32_le(len as u32);
    let crc_at = buf.len();
    buf.put_u32_le(0);
    let start = buf.len();
    buf.put_u64_le(offset);
    buf.put_i64_le(arrival_ms);
    buf.put_u16_le(key.len() as u16);
    buf.put_slice(key);
    buf.put_slice(data);
    let crc = crc32fast::hash(&buf[start..]);
    buf[crc_at..crc_at + 4].copy_from_slice(&crc.to_le_bytes());
}

/// One record read back.
#[derive(Debug, Clone)]
pub(crate) struct Frame {
    pub(crate) offset: u64,
    pub(crate) arrival_ms: i64,
    pub(crate) key: String,
    pub(crate) data: Bytes,
    /// Bytes the frame takes in the file.
    pub(crate) size: usize,
}

/// Why a frame could not be read at a position.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Bad {
    /// The file ends inside the frame (a torn write, or one in progress).
    Short,
    /// Length out of range or checksum mismatch: corrupt bytes.
    Corrupt(&'static str),
}

/// Parses the frame at the start of `buf`.
pub(crate) fn parse(buf: &Bytes) -> Result<Frame, Bad> {
    if buf.len() < HEADER {
        return Err(Bad::Short);
    }
    let len = u32::from_le_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize;
    let crc = u32::from_le_bytes([buf[4], buf[5], buf[6], buf[7]]);
    if !(FIXED..=MAX_PAYLOAD).contains(&len) {
        return Err(Bad::Corrupt("frame length out of range"));
    }
    if buf.len() < HEADER + len {
        return Err(Bad::Short);
    }
    let p = &buf[HEADER..HEADER + len];
    if crc32fast::hash(p) != crc {
        return Err(Bad::Corrupt("checksum mismatch"));
    }
    let offset = u64::from_le_bytes(p[0..8].try_into().map_err(|_| Bad::Short)?);
    let arrival_ms = i64::from_le_bytes(p[8..16].try_into().map_err(|_| Bad::Short)?);
    let key_len = u16::from_le_bytes([p[16], p[17]]) as usize;
    if FIXED + key_len > len {
        return Err(Bad::Corrupt("key longer than the frame"));
    }
    let key = String::from_utf8_lossy(&p[FIXED..FIXED + key_len]).into_owned();
    let data = buf.slice(HEADER + FIXED + key_len..HEADER + len);
    Ok(Frame {
        offset,
        arrival_ms,
        key,
        data,
        size: HEADER + len,
    })
}

pub(crate) fn segment_name(first_offset: u64) -> String {
    format!("{first_offset:020}.seg")
}

/// The segments of a shard directory, by first offset.
pub(crate) fn list(dir: &Path) -> std::io::Result<Vec<(u64, PathBuf)>> {
    let mut out = Vec::new();
    let rd = match std::fs::read_dir(dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
        Err(e) => return Err(e),
    };
    for entry in rd {
        let entry = entry?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if let Some(n) = name.strip_suffix(".seg")
            && let Ok(first) = n.parse::<u64>()
        {
            out.push((first, entry.path()));
        }
    }
    out.sort();
    Ok(out)
}

/// Reads up to `max_bytes` of `path` from `pos` (more if one frame needs it).
pub(crate) fn read_from(path: &Path, pos: u64, max_bytes: usize) -> std::io::Result<Bytes> {
    let mut f = File::open(path)?;
    let len = f.metadata()?.len();
    if pos >= len {
        return Ok(Bytes::new());
    }
    f.seek(SeekFrom::Start(pos))?;
    let want = ((len - pos) as usize).min(max_bytes.max(HEADER));
    let mut buf = vec![0u8; want];
    f.read_exact(&mut buf)?;
    // Grow to hold a whole first frame that is larger than max_bytes.
    if buf.len() >= 4 {
        let need = HEADER + u32::from_le_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize;
        if need > buf.len() && need <= HEADER + MAX_PAYLOAD && pos + need as u64 <= len {
            let mut more = vec![0u8; need - buf.len()];
            f.read_exact(&mut more)?;
            buf.extend_from_slice(&more);
        }
    }
    Ok(Bytes::from(buf))
}

/// Bytes between two good frames (or after the last one) that are not a
/// frame: damage, or a write torn by a crash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Damage {
    pub(crate) start: u64,
    pub(crate) end: u64,
    pub(crate) why: Bad,
}

/// A whole segment read through: its good frames' (offset, position,
/// arrival), the damaged stretches between them, and what follows the last
/// good frame when that is not a frame (`tail`).
pub(crate) struct Scan {
    pub(crate) frames: Vec<(u64, u64, i64)>,
    pub(crate) damage: Vec<Damage>,
    pub(crate) tail: Option<Damage>,
    /// Where the last good frame ends (where appends go on).
    pub(crate) valid_len: u64,
}

impl Scan {
    /// The offset after the last good frame, or `first` with none.
    pub(crate) fn next_offset(&self, first: u64) -> u64 {
        self.frames.last().map_or(first, |(o, _, _)| o + 1)
    }
}

/// Scans the segment at `path`, whose first offset is `first`.
pub(crate) fn scan(path: &Path, first: u64) -> std::io::Result<Scan> {
    Ok(scan_bytes(&Bytes::from(std::fs::read(path)?), first))
}

/// Scans `all`, whose first frame has an offset of at least `first`.
pub(crate) fn scan_bytes(all: &Bytes, first: u64) -> Scan {
    let mut pos = 0usize;
    let mut frames = Vec::new();
    let mut damage = Vec::new();
    let mut tail = None;
    let mut next = first;
    while pos < all.len() {
        match parse(&all.slice(pos..)) {
            Ok(f) => {
                frames.push((f.offset, pos as u64, f.arrival_ms));
                next = f.offset + 1;
                pos += f.size;
            }
            Err(why) => match resync(all, pos + 1, next) {
                Some(at) => {
                    damage.push(Damage {
                        start: pos as u64,
                        end: at as u64,
                        why,
                    });
                    pos = at;
                }
                None => {
                    tail = Some(Damage {
                        start: pos as u64,
                        end: all.len() as u64,
                        why,
                    });
                    break;
                }
            },
        }
    }
    let valid_len = frames
        .last()
        .and_then(|&(_, p, _)| {
            parse(&all.slice(p as usize..))
                .ok()
                .map(|f| p + f.size as u64)
        })
        .unwrap_or(0);
    Scan {
        frames,
        damage,
        tail,
        valid_len,
    }
}

/// Where good frames go on after damage: the first position at or after
/// `from` holding a whole frame whose checksum holds and whose offset is at
/// least `min_offset` (and not beyond what the bytes could number). `None`
/// when no such frame follows, as after a torn write.
pub(crate) fn resync(all: &Bytes, from: usize, min_offset: u64) -> Option<usize> {
    let max_offset = min_offset.saturating_add(all.len() as u64);
    let mut at = from;
    while at + HEADER + FIXED <= all.len() {
        let len = u32::from_le_bytes([all[at], all[at + 1], all[at + 2], all[at + 3]]) as usize;
        if (FIXED..=MAX_PAYLOAD).contains(&len) && at + HEADER + len <= all.len() {
            let mut o = [0u8; 8];
            o.copy_from_slice(&all[at + HEADER..at + HEADER + 8]);
            let offset = u64::from_le_bytes(o);
            // Cheap tests first: the checksum only where a frame could be.
            if (min_offset..=max_offset).contains(&offset) && parse(&all.slice(at..)).is_ok() {
                return Some(at);
            }
        }
        at += 1;
    }
    None
}

/// The offset a frame at `pos` claims, when it is whole but damaged and
/// the claim is plausible (after `min_offset`, within what the bytes could
/// number): a record that was written, so its offset is never handed out
/// again.
pub(crate) fn claimed_offset(all: &Bytes, pos: usize, min_offset: u64) -> Option<u64> {
    let head = all.get(pos..pos + HEADER + 8)?;
    let len = u32::from_le_bytes([head[0], head[1], head[2], head[3]]) as usize;
    if !(FIXED..=MAX_PAYLOAD).contains(&len) || pos + HEADER + len > all.len() {
        return None;
    }
    let mut o = [0u8; 8];
    o.copy_from_slice(&head[HEADER..HEADER + 8]);
    let offset = u64::from_le_bytes(o);
    (min_offset..=min_offset.saturating_add(all.len() as u64))
        .contains(&offset)
        .then_some(offset)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip_and_damage_is_detected() {
        let mut b = BytesMut::new();
        encode(&mut b, 7, 1234, "key", b"data");
        encode(&mut b, 8, 1235, "", b"");
        let all = b.freeze();
        let f = parse(&all).unwrap_or_else(|e| panic!("{e:?}"));
        assert_eq!(
            (f.offset, f.arrival_ms, f.key.as_str(), &f.data[..]),
            (7, 1234, "key", &b"data"[..])
        );
        let g = parse(&all.slice(f.size..)).unwrap_or_else(|e| panic!("{e:?}"));
        assert_eq!((g.offset, g.key.as_str(), g.data.len()), (8, "", 0));
        for cut in 0..f.size {
            assert_eq!(
                parse(&all.slice(..cut)).err(),
                Some(Bad::Short),
                "cut {cut}"
            );
        }
        let mut bad = all.to_vec();
        bad[HEADER + 3] ^= 1;
        assert_eq!(
            parse(&Bytes::from(bad)).err(),
            Some(Bad::Corrupt("checksum mismatch"))
        );
    }

    #[test]
    fn a_scan_steps_over_damage_to_the_good_frames_after_it() {
        let mut b = BytesMut::new();
        for o in 10..20u64 {
            encode(
                &mut b,
                o,
                1000 + o as i64,
                "k",
                format!("record {o}").as_bytes(),
            );
        }
        let good = b.freeze();
        let clean = scan_bytes(&good, 10);
        assert_eq!(clean.frames.len(), 10);
        assert!(clean.damage.is_empty() && clean.tail.is_none());
        assert_eq!(clean.valid_len, good.len() as u64);
        let size = clean.frames[1].1 as usize;
        // A flipped byte in the 4th frame's data, and one in the 7th's
        // length: each costs its frame alone.
        let mut bad = good.to_vec();
        bad[3 * size + HEADER + 20] ^= 0x40;
        bad[6 * size] ^= 0x08;
        let s = scan_bytes(&Bytes::from(bad.clone()), 10);
        let offsets: Vec<u64> = s.frames.iter().map(|f| f.0).collect();
        assert_eq!(offsets, [10, 11, 12, 14, 15, 17, 18, 19]);
        assert_eq!(s.damage.len(), 2);
        assert_eq!(
            (s.damage[0].start, s.damage[0].end),
            (3 * size as u64, 4 * size as u64)
        );
        assert_eq!(s.damage[0].why, Bad::Corrupt("checksum mismatch"));
        assert!(s.tail.is_none());
        // A torn last frame is a tail, not damage.
        let torn = Bytes::from(good[..good.len() - 3].to_vec());
        let t = scan_bytes(&torn, 10);
        assert_eq!(t.frames.len(), 9);
        assert_eq!(t.tail.map(|d| d.why), Some(Bad::Short));
        assert_eq!(t.valid_len, 9 * size as u64);
        // A whole damaged last frame says which offset it held.
        let mut last = good.to_vec();
        let n = last.len();
        last[n - 1] ^= 1;
        let l = Bytes::from(last);
        let ls = scan_bytes(&l, 10);
        let at = ls.tail.as_ref().map_or(0, |d| d.start as usize);
        assert_eq!(claimed_offset(&l, at, 19), Some(19));
        assert_eq!(claimed_offset(&l, at, 20), None);
    }
}
