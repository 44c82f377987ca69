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

/// Scans a whole segment: the valid frames' (offset, position, arrival) and
/// where valid data ends, with the reason it ends early if it does.
pub(crate) struct Scan {
    pub(crate) frames: Vec<(u64, u64, i64)>,
    pub(crate) valid_len: u64,
    pub(crate) file_len: u64,
    pub(crate) stop: Option<Bad>,
}

pub(crate) fn scan(path: &Path) -> std::io::Result<Scan> {
    let all = Bytes::from(std::fs::read(path)?);
    let mut pos = 0usize;
    let mut frames = Vec::new();
    let mut stop = None;
    while pos < all.len() {
        match parse(&all.slice(pos..)) {
            Ok(f) => {
                frames.push((f.offset, pos as u64, f.arrival_ms));
                pos += f.size;
            }
            Err(b) => {
                stop = Some(b);
                break;
            }
        }
    }
    Ok(Scan {
        frames,
        valid_len: pos as u64,
        file_len: all.len() as u64,
        stop,
    })
}

/// The highest offset among the whole frames that follow damage at `pos`
/// (a complete frame whose checksum fails, with a plausible length): `None`
/// when nothing readable follows, as after a torn write. Recovery must
/// never hand out these offsets again.
pub(crate) fn offsets_after_damage(all: &Bytes, pos: usize) -> Option<u64> {
    let head = all.get(pos..pos + HEADER)?;
    let len = u32::from_le_bytes([head[0], head[1], head[2], head[3]]) as usize;
    if !(FIXED..=MAX_PAYLOAD).contains(&len) {
        return None;
    }
    let mut at = pos + HEADER + len;
    let mut max = None;
    while at < all.len() {
        match parse(&all.slice(at..)) {
            Ok(f) => {
                max = Some(max.map_or(f.offset, |m: u64| m.max(f.offset)));
                at += f.size;
            }
            Err(_) => break,
        }
    }
    max
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
}
