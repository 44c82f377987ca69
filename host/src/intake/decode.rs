//! Request bodies into events: content type and encoding, bounded
//! decompression, and splitting into events.
//!
//! - NDJSON (`application/x-ndjson`, `application/jsonlines`, `text/plain`,
//!   curl's default `application/x-www-form-urlencoded`, or no content type): one event per line, kept byte for byte (no
//!   parsing: lines need not be JSON). The terminator (`\n`, or `\r\n`) is not
//!   part of the event; blank lines (empty, or only `\r`) are skipped; a last
//!   line without `\n` counts.
//! - JSON array (`application/json`): one event per element, re-emitted
//!   compact: insignificant whitespace removed, everything else (number
//!   spelling, string escapes, key order, duplicate keys) byte for byte. The
//!   array is validated in one pass against the JSON grammar (RFC 8259);
//!   `\u` escapes and numbers are copied as written, so a lone surrogate
//!   (`"\ud800"`) or a number beyond f64 (`1e400`) is accepted, as the
//!   grammar allows, where serde_json refuses them.
//!
//! Events are slices of the body where possible (no copy).

use std::io::Read;

use bytes::Bytes;

/// How events are laid out in the body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Ndjson,
    JsonArray,
}

/// How the body is compressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    Identity,
    Gzip,
    Zstd,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error(
        "content type {0:?} is not accepted: send application/x-ndjson, \
         text/plain (one event a line) or application/json (an array of events)"
    )]
    UnsupportedMediaType(String),
    #[error("content encoding {0:?} is not accepted: send identity, gzip or zstd")]
    UnsupportedEncoding(String),
    #[error("the body has no events")]
    Empty,
    #[error("the body is larger than {limit} bytes after decompression")]
    BodyTooLarge { limit: usize },
    /// The intake's buffer cannot hold the decompressed body now.
    #[error(
        "the intake's buffer is full (the body had decompressed to {decoded} bytes); retry later"
    )]
    NoRoom { decoded: usize },
    #[error("the body has more than {limit} events; send them in several requests")]
    TooManyEvents { limit: usize },
    #[error("{at} is {len} bytes; the limit is {limit} bytes")]
    EventTooLarge {
        at: EventAt,
        len: usize,
        limit: usize,
    },
    #[error("malformed {what} at byte {offset}: {message}")]
    Malformed {
        what: &'static str,
        offset: usize,
        message: String,
    },
    #[error("malformed JSON array at byte {offset} (line {line}, column {column}): {reason}")]
    BadJson {
        offset: usize,
        line: usize,
        column: usize,
        reason: &'static str,
    },
}

impl DecodeError {
    /// The HTTP status this error answers with.
    pub fn status(&self) -> u16 {
        match self {
            Self::UnsupportedMediaType(_) | Self::UnsupportedEncoding(_) => 415,
            Self::BodyTooLarge { .. } | Self::EventTooLarge { .. } | Self::TooManyEvents { .. } => {
                413
            }
            Self::Empty | Self::Malformed { .. } | Self::BadJson { .. } => 400,
            Self::NoRoom { .. } => 503,
        }
    }
}

/// Where an event is in its body, for errors: the line of an NDJSON body
/// (counting blank lines, as an editor does), the element of a JSON array.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventAt {
    Line(usize),
    Element(usize),
}

impl std::fmt::Display for EventAt {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Line(n) => write!(f, "line {n}"),
            Self::Element(n) => write!(f, "array element {n}"),
        }
    }
}

/// The format named by a `Content-Type` header.
pub fn format_of(content_type: Option<&str>) -> Result<Format, DecodeError> {
    let Some(ct) = content_type else {
        return Ok(Format::Ndjson);
    };
    let essence = ct
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    match essence.as_str() {
        ""
        | "application/x-ndjson"
        | "application/ndjson"
        | "application/jsonlines"
        | "application/x-jsonlines"
        | "text/plain"
        // What curl sends with -d/--data-binary unless told otherwise; the
        // body is taken as it is, never form-decoded.
        | "application/x-www-form-urlencoded" => Ok(Format::Ndjson),
        "application/json" => Ok(Format::JsonArray),
        _ => Err(DecodeError::UnsupportedMediaType(ct.to_owned())),
    }
}

/// The encoding named by a `Content-Encoding` header.
pub fn encoding_of(content_encoding: Option<&str>) -> Result<Encoding, DecodeError> {
    let Some(ce) = content_encoding else {
        return Ok(Encoding::Identity);
    };
    match ce.trim().to_ascii_lowercase().as_str() {
        "" | "identity" => Ok(Encoding::Identity),
        "gzip" | "x-gzip" => Ok(Encoding::Gzip),
        "zstd" => Ok(Encoding::Zstd),
        _ => Err(DecodeError::UnsupportedEncoding(ce.to_owned())),
    }
}

/// Decompresses `body`, refusing output beyond `max_bytes` as soon as it
/// gets there (a small body can expand enormously).
pub fn decompress(enc: Encoding, body: Bytes, max_bytes: usize) -> Result<Bytes, DecodeError> {
    decompress_within(enc, body, max_bytes, &mut |_| true)
}

/// Output is decoded in steps of this many bytes, each paid for first.
const DECODE_STEP: usize = 256 << 10;

/// [`decompress`], paying for the output as it grows: before each step of
/// [`DECODE_STEP`] bytes, `room(bytes)` is asked for the memory the output
/// will then hold (its allocation); `false` stops with
/// [`DecodeError::NoRoom`]. So a bomb costs at most what the caller grants,
/// and stops at `max_bytes` (413) without ever holding much more.
pub fn decompress_within(
    enc: Encoding,
    body: Bytes,
    max_bytes: usize,
    room: &mut dyn FnMut(usize) -> bool,
) -> Result<Bytes, DecodeError> {
    let what = match enc {
        Encoding::Identity => {
            return if body.len() > max_bytes {
                Err(DecodeError::BodyTooLarge { limit: max_bytes })
            } else {
                Ok(body)
            };
        }
        Encoding::Gzip => "gzip",
        Encoding::Zstd => "zstd",
    };
    // Buffered decoders over the slice take from it only what they have
    // decoded, so what is left of it tells where an error is.
    let mut input: &[u8] = &body;
    let reader: Box<dyn Read + '_> = match enc {
        Encoding::Gzip => Box::new(flate2::bufread::MultiGzDecoder::new(&mut input)),
        _ => Box::new(
            zstd::stream::read::Decoder::with_buffer(&mut input).map_err(|e| {
                DecodeError::Malformed {
                    what,
                    offset: 0,
                    message: e.to_string(),
                }
            })?,
        ),
    };
    // Read one byte past the limit to know it was exceeded.
    let limit = max_bytes.saturating_add(1);
    let mut reader = reader;
    let mut out: Vec<u8> = Vec::new();
    let r = loop {
        if out.len() >= limit {
            break Ok(());
        }
        if out.capacity() - out.len() < DECODE_STEP.min(limit - out.len()) {
            // Grow (doubling, so copies stay linear), and pay first: the
            // allocation is what counts.
            let want = (out.len() + DECODE_STEP)
                .max(out.capacity().saturating_mul(2))
                .min(limit);
            if !room(want) {
                return Err(DecodeError::NoRoom { decoded: out.len() });
            }
            out.reserve_exact(want - out.len());
        }
        let end = (out.len() + DECODE_STEP).min(limit).min(out.capacity());
        let at = out.len();
        out.resize(end, 0);
        match reader.read(&mut out[at..]) {
            Ok(0) => {
                out.truncate(at);
                break Ok(());
            }
            Ok(n) => out.truncate(at + n),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => out.truncate(at),
            Err(e) => {
                out.truncate(at);
                break Err(e);
            }
        }
    };
    drop(reader);
    let consumed = body.len() - input.len();
    match r {
        Ok(()) if out.len() > max_bytes => Err(DecodeError::BodyTooLarge { limit: max_bytes }),
        Ok(()) => Ok(Bytes::from(out)),
        Err(e) => Err(DecodeError::Malformed {
            what,
            offset: consumed,
            message: e.to_string(),
        }),
    }
}

/// A body split into events.
#[derive(Debug, Clone)]
pub struct Events {
    /// The body (NDJSON) or the compacted elements (JSON array).
    buf: Bytes,
    spans: Vec<(u32, u32)>,
}

impl Events {
    pub fn len(&self) -> usize {
        self.spans.len()
    }

    pub fn is_empty(&self) -> bool {
        self.spans.is_empty()
    }

    pub fn get(&self, i: usize) -> &[u8] {
        let (a, b) = self.spans[i];
        &self.buf[a as usize..b as usize]
    }

    /// Event `i` as a shared slice of the body (no copy).
    /// Bytes of the buffer the events are views of.
    pub fn buffer_len(&self) -> usize {
        self.buf.len()
    }

    pub fn get_bytes(&self, i: usize) -> Bytes {
        let (a, b) = self.spans[i];
        self.buf.slice(a as usize..b as usize)
    }

    pub fn iter(&self) -> impl ExactSizeIterator<Item = &[u8]> + '_ {
        self.spans
            .iter()
            .map(|&(a, b)| &self.buf[a as usize..b as usize])
    }
}

/// Splits a (decompressed) body into events of at most `max_event_bytes`.
pub fn split(format: Format, body: Bytes, max_event_bytes: usize) -> Result<Events, DecodeError> {
    split_at_most(format, body, max_event_bytes, usize::MAX)
}

/// [`split`], refusing a body of more than `max_events` events as soon as
/// it finds one more (before the bookkeeping of a million tiny lines).
pub fn split_at_most(
    format: Format,
    body: Bytes,
    max_event_bytes: usize,
    max_events: usize,
) -> Result<Events, DecodeError> {
    if body.len() > u32::MAX as usize {
        return Err(DecodeError::BodyTooLarge {
            limit: u32::MAX as usize,
        });
    }
    let events = match format {
        Format::Ndjson => split_lines(body, max_event_bytes, max_events)?,
        Format::JsonArray => split_array(&body, max_event_bytes, max_events)?,
    };
    if events.is_empty() {
        return Err(DecodeError::Empty);
    }
    Ok(events)
}

fn split_lines(body: Bytes, max: usize, max_events: usize) -> Result<Events, DecodeError> {
    let mut spans = Vec::with_capacity((body.len() / 128 + 1).min(max_events));
    let base = body.as_ptr() as usize;
    for (line, event) in crate::event::events_of_body(&body) {
        if event.len() > max {
            return Err(DecodeError::EventTooLarge {
                at: EventAt::Line(line),
                len: event.len(),
                limit: max,
            });
        }
        if spans.len() == max_events {
            return Err(DecodeError::TooManyEvents { limit: max_events });
        }
        // Where the event lies in the body; it cannot truncate: the body
        // is at most u32::MAX bytes (checked).
        let a = event.as_ptr() as usize - base;
        spans.push((a as u32, (a + event.len()) as u32));
    }
    Ok(Events { buf: body, spans })
}

/// Position of `offset` as 1-based line and column (for error messages).
fn line_col(body: &[u8], offset: usize) -> (usize, usize) {
    let before = &body[..offset.min(body.len())];
    let line = memchr::memchr_iter(b'\n', before).count() + 1;
    let col = before.len()
        - before
            .iter()
            .rposition(|&b| b == b'\n')
            .map_or(0, |p| p + 1)
        + 1;
    (line, col)
}

/// Splits a JSON-array body into its elements, each re-emitted compact
/// (insignificant whitespace removed, everything else as sent). The grammar
/// is the filter SDK's (`kinesthetic_filter::json`, property-tested against
/// `serde_json`): one JSON implementation for the host and its filters.
fn split_array(body: &Bytes, max: usize, max_events: usize) -> Result<Events, DecodeError> {
    use kinesthetic_filter::json;
    if body
        .iter()
        .all(|b| matches!(b, b' ' | b'\t' | b'\n' | b'\r'))
    {
        return Err(DecodeError::Empty);
    }
    let bad = |e: json::Error| {
        let (line, column) = line_col(body, e.offset);
        DecodeError::BadJson {
            offset: e.offset,
            line,
            column,
            reason: e.reason,
        }
    };
    let mut out = Vec::with_capacity(body.len());
    let mut spans = Vec::new();
    for element in json::elements(body) {
        let element = element.map_err(bad)?;
        let start = out.len();
        json::write_compact(element.raw(), &mut out);
        let len = out.len() - start;
        if len > max {
            return Err(DecodeError::EventTooLarge {
                at: EventAt::Element(spans.len() + 1),
                len,
                limit: max,
            });
        }
        if spans.len() == max_events {
            return Err(DecodeError::TooManyEvents { limit: max_events });
        }
        spans.push((start as u32, out.len() as u32));
    }
    Ok(Events {
        buf: Bytes::from(out),
        spans,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(body: &[u8]) -> Result<Vec<Vec<u8>>, DecodeError> {
        split(Format::Ndjson, Bytes::copy_from_slice(body), 1 << 20)
            .map(|e| e.iter().map(<[u8]>::to_vec).collect())
    }

    fn array(body: &str) -> Result<Vec<String>, DecodeError> {
        split(
            Format::JsonArray,
            Bytes::copy_from_slice(body.as_bytes()),
            1 << 20,
        )
        .map(|e| {
            e.iter()
                .map(|x| String::from_utf8_lossy(x).into_owned())
                .collect()
        })
    }

    #[test]
    fn ndjson_lines_are_kept_byte_for_byte() {
        assert_eq!(
            lines(b"a\r\n\n\r\n b \n\xff\xfe\nlast"),
            Ok(vec![
                b"a".to_vec(),
                b" b ".to_vec(),
                b"\xff\xfe".to_vec(),
                b"last".to_vec()
            ])
        );
        assert_eq!(lines(b"\n\n\r\n"), Err(DecodeError::Empty));
        assert_eq!(lines(b""), Err(DecodeError::Empty));
        // Blank lines count: the error names the line an editor shows.
        let e = split(
            Format::Ndjson,
            Bytes::from_static(b"ok\n\r\n\nok\ntoo long\n"),
            4,
        );
        assert_eq!(
            e.err(),
            Some(DecodeError::EventTooLarge {
                at: EventAt::Line(5),
                len: 8,
                limit: 4
            })
        );
        let e = split(Format::Ndjson, Bytes::from_static(b"\n\ntoo long"), 4);
        assert_eq!(
            e.map_err(|e| e.to_string()).err().as_deref(),
            Some("line 3 is 8 bytes; the limit is 4 bytes")
        );
        let e = split(
            Format::JsonArray,
            Bytes::from_static(b"[1,\n\n\"too long\"]"),
            4,
        );
        assert_eq!(
            e.map_err(|e| e.to_string()).err().as_deref(),
            Some("array element 2 is 10 bytes; the limit is 4 bytes")
        );
    }

    #[test]
    fn curls_default_content_type_is_ndjson() {
        assert_eq!(
            format_of(Some("application/x-www-form-urlencoded")),
            Ok(Format::Ndjson)
        );
        assert_eq!(
            format_of(Some("Text/Plain; charset=utf-8")),
            Ok(Format::Ndjson)
        );
        assert_eq!(format_of(None), Ok(Format::Ndjson));
        assert_eq!(
            format_of(Some("multipart/form-data; boundary=x")),
            Err(DecodeError::UnsupportedMediaType(
                "multipart/form-data; boundary=x".into()
            ))
        );
    }

    #[test]
    fn arrays_are_compacted_and_nothing_else_changes() {
        assert_eq!(
            array(" [ {\"a\" : 1.50e+3 , \"a\":\"x \\u00e9\\n\"} ,\n[ ] , -0 , true,null ] "),
            Ok(vec![
                r#"{"a":1.50e+3,"a":"x \u00e9\n"}"#.to_owned(),
                "[]".into(),
                "-0".into(),
                "true".into(),
                "null".into()
            ])
        );
        assert_eq!(array("[ ]"), Err(DecodeError::Empty));
        // Paired surrogates are one character; a lone one is refused (below).
        assert_eq!(
            array(r#"["\ud83d\ude00"]"#),
            Ok(vec![r#""\ud83d\ude00""#.to_owned()])
        );
    }

    #[test]
    fn array_errors_say_where_and_what() {
        let cases = [
            ("[1, 2,, 3]", 6, "value expected"),
            ("[1 2]", 3, "`,` or `]` expected"),
            ("[1,]", 3, "value expected"),
            ("[01]", 2, "invalid number: leading zero"),
            ("{\"a\":1}", 0, "array expected"),
            ("[1] x", 4, "trailing characters after the array"),
            ("[\"abc", 5, "unterminated string"),
            ("[{\"a\" 1}]", 6, "`:` expected"),
            ("[\"\\x\"]", 3, "invalid escape"),
            ("[1.]", 3, "invalid number: digit expected after `.`"),
            ("[\n  tru]", 4, "invalid literal"),
            ("[\"\\ud800\"]", 8, "lone leading surrogate in \\u escape"),
            ("[1e400]", 1, "number out of range"),
        ];
        let mut wrong = Vec::new();
        for (body, offset, expected) in cases {
            match array(body) {
                Err(DecodeError::BadJson {
                    offset: o,
                    reason: e,
                    ..
                }) if (o, e) == (offset, expected) => {}
                other => wrong.push(format!("{body}: {other:?}")),
            }
        }
        assert!(wrong.is_empty(), "{wrong:#?}");
        let latin1 = split(Format::JsonArray, Bytes::from_static(b"[\"a\xe9\"]"), 100);
        assert!(
            matches!(
                latin1,
                Err(DecodeError::BadJson {
                    offset: 3,
                    reason: "invalid UTF-8 in string",
                    ..
                })
            ),
            "{latin1:?}"
        );
        let deep = format!("[{}{}]", "[".repeat(200), "]".repeat(200));
        assert!(matches!(array(&deep), Err(DecodeError::BadJson { .. })));
        let e = array("[\n  1,\n  x]")
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(e.contains("line 3, column 3"), "{e}");
    }

    #[test]
    fn content_types_and_encodings() {
        assert_eq!(format_of(None), Ok(Format::Ndjson));
        assert_eq!(
            format_of(Some("Application/JSON; charset=utf-8")),
            Ok(Format::JsonArray)
        );
        assert_eq!(format_of(Some("text/plain")), Ok(Format::Ndjson));
        assert_eq!(
            format_of(Some("image/png")).map_err(|e| e.status()),
            Err(415)
        );
        assert_eq!(encoding_of(Some("gzip")), Ok(Encoding::Gzip));
        assert_eq!(encoding_of(Some("br")).map_err(|e| e.status()), Err(415));
    }

    #[test]
    fn decompression_is_bounded_and_errors_name_the_encoding() {
        use std::io::Write;
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        let _ = gz.write_all(&vec![b'a'; 1_000_000]);
        let gz = Bytes::from(gz.finish().unwrap_or_default());
        assert!(gz.len() < 10_000);
        assert_eq!(
            decompress(Encoding::Gzip, gz.clone(), 999_999),
            Err(DecodeError::BodyTooLarge { limit: 999_999 })
        );
        assert_eq!(
            decompress(Encoding::Gzip, gz.clone(), 1_000_000).map(|b| b.len()),
            Ok(1_000_000)
        );
        let truncated = gz.slice(..gz.len() / 2);
        let e = decompress(Encoding::Gzip, truncated, 1 << 20);
        assert!(
            matches!(e, Err(DecodeError::Malformed { what: "gzip", .. })),
            "{e:?}"
        );
        let zs = Bytes::from(zstd::encode_all(&vec![b'z'; 100_000][..], 3).unwrap_or_default());
        assert_eq!(
            decompress(Encoding::Zstd, zs.clone(), 100_000).map(|b| b.len()),
            Ok(100_000)
        );
        assert_eq!(
            decompress(Encoding::Zstd, zs.clone(), 99_999),
            Err(DecodeError::BodyTooLarge { limit: 99_999 })
        );
        let e = decompress(Encoding::Zstd, Bytes::from_static(b"not zstd at all"), 1000);
        assert!(
            matches!(e, Err(DecodeError::Malformed { what: "zstd", .. })),
            "{e:?}"
        );
        // Two gzip members in a row are one body.
        let mut two = Vec::new();
        for part in [&b"a\n"[..], b"b\n"] {
            let mut g = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            let _ = g.write_all(part);
            two.extend(g.finish().unwrap_or_default());
        }
        assert_eq!(
            decompress(Encoding::Gzip, Bytes::from(two), 100),
            Ok(Bytes::from_static(b"a\nb\n"))
        );
    }

    /// The offset of a decompression error is near the damage, not how
    /// much a reader buffered.
    #[test]
    fn decompression_errors_name_where_the_damage_is() {
        use std::io::Write;
        let text: Vec<u8> = (0..200_000u32)
            .flat_map(|i| i.to_string().into_bytes())
            .collect();
        let mut g = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        let _ = g.write_all(&text);
        let gz = g.finish().unwrap_or_default();
        assert!(gz.len() > 100_000, "{}", gz.len());
        let offset_of = |e: Result<Bytes, DecodeError>| match e {
            Err(DecodeError::Malformed { offset, .. }) => offset,
            other => panic!("{other:?}"),
        };
        // Damage in the gzip header (its method byte).
        let mut bad = gz.clone();
        bad[2] ^= 0xff;
        assert!(offset_of(decompress(Encoding::Gzip, Bytes::from(bad), 1 << 30)) <= 10);
        // Damage in the zstd frame header.
        let zs = zstd::encode_all(&text[..], 3).unwrap_or_default();
        assert!(zs.len() > 100_000, "{}", zs.len());
        let mut bad = zs.clone();
        bad[0] ^= 0xff;
        assert!(offset_of(decompress(Encoding::Zstd, Bytes::from(bad), 1 << 30)) <= 16);
        // Cut short: the offset is where the body ends.
        let cut = gz.len() * 3 / 4;
        let at = offset_of(decompress(
            Encoding::Gzip,
            Bytes::copy_from_slice(&gz[..cut]),
            1 << 30,
        ));
        assert_eq!(at, cut);
    }
}
