//! Compressing an object's body.

use std::io::Write;

use crate::config::Compression;

/// Compresses `body` (blocking: call it off the async workers).
pub fn compress(body: &[u8], how: Compression) -> std::io::Result<Vec<u8>> {
    match how {
        Compression::None => Ok(body.to_vec()),
        Compression::Gzip => {
            let mut e = flate2::write::GzEncoder::new(
                Vec::with_capacity(body.len() / 4),
                flate2::Compression::fast(),
            );
            e.write_all(body)?;
            e.finish()
        }
        Compression::Zstd => zstd::bulk::compress(body, 3),
    }
}

/// Where the whole members of an object's lines end. Lines are compressed
/// in members (gzip members and zstd frames concatenate into one valid
/// stream), each ending at the first line end at least `member` bytes
/// from its start: the split is a function of the lines alone, so the same
/// lines make the same bytes however they were buffered (a replay writes
/// objects identical to the originals). The lines after the last end make
/// the object's last member.
pub fn member_ends(body: &[u8], member: usize) -> Vec<usize> {
    let mut ends = Vec::new();
    let mut start = 0;
    while body.len() - start >= member {
        let from = start + member - 1;
        match body[from..].iter().position(|b| *b == b'\n') {
            Some(i) => {
                start = from + i + 1;
                ends.push(start);
            }
            None => break,
        }
    }
    ends
}

/// Compresses the whole members of `body` ([`member_ends`]); returns them
/// and where the rest of the lines starts.
pub fn compress_members(
    body: &[u8],
    member: usize,
    how: Compression,
) -> std::io::Result<(Vec<u8>, usize)> {
    let mut out = Vec::new();
    let mut start = 0;
    for end in member_ends(body, member) {
        out.extend_from_slice(&compress(&body[start..end], how)?);
        start = end;
    }
    Ok((out, start))
}

/// An object's stored bytes from all its lines, as an archive writer
/// stores them: its whole members, then the rest as the last member.
pub fn encode_object(body: &[u8], member: usize, how: Compression) -> std::io::Result<Vec<u8>> {
    let (mut out, rest) = compress_members(body, member, how)?;
    out.extend_from_slice(&compress(&body[rest..], how)?);
    Ok(out)
}

/// The `Content-Encoding` of a compression.
pub fn content_encoding(how: Compression) -> Option<&'static str> {
    match how {
        Compression::None => None,
        Compression::Gzip => Some("gzip"),
        Compression::Zstd => Some("zstd"),
    }
}

/// Decompresses an object's body (tests and tools read archives back).
pub fn decompress(body: &[u8], how: Compression) -> std::io::Result<Vec<u8>> {
    use std::io::Read;
    match how {
        Compression::None => Ok(body.to_vec()),
        Compression::Gzip => {
            let mut out = Vec::new();
            flate2::read::MultiGzDecoder::new(body).read_to_end(&mut out)?;
            Ok(out)
        }
        Compression::Zstd => {
            let mut out = Vec::new();
            zstd::stream::read::Decoder::new(body)?.read_to_end(&mut out)?;
            Ok(out)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips() {
        let body = b"{\"a\":1}\n{\"a\":2}\n".repeat(100);
        for how in [Compression::None, Compression::Gzip, Compression::Zstd] {
            let c = compress(&body, how).unwrap_or_default();
            assert_eq!(decompress(&c, how).unwrap_or_default(), body, "{how:?}");
        }
        assert!(decompress(b"not gzip", Compression::Gzip).is_err());
    }
}
