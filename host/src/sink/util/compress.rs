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
