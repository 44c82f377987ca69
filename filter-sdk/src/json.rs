//! Fast, zero-copy JSON helpers for one-object-per-line events.
//!
//! [`members`] walks the top-level members of an object line, validating as
//! it goes (strings with their escapes and UTF-8, numbers, nested values),
//! so a filter can stop as soon as it knows its answer: the verdict is the
//! same as validating first, only cheaper. [`field`] finds one top-level
//! field. Keys and string values compare correctly with escapes
//! (`"le\u0076el"` is `level`).
//!
//! Agreement with `serde_json` is property-tested. Known differences: numbers
//! beyond `f64` range (`1e400`) are accepted here; nesting is limited to 128
//! levels like `serde_json`'s default.

use std::borrow::Cow;

/// Why a line is not valid JSON, and where.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Error {
    /// Byte offset in the line.
    pub offset: usize,
    pub reason: &'static str,
}

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "invalid JSON at byte {}: {}", self.offset, self.reason)
    }
}

/// The type of a JSON value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    String,
    Number,
    Bool,
    Null,
    Object,
    Array,
}

/// A validated value, as its raw bytes in the line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Value<'a> {
    raw: &'a [u8],
    kind: Kind,
    escaped: bool,
}

/// A member's key (raw content, without the quotes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Key<'a> {
    raw: &'a [u8],
    escaped: bool,
}

const MAX_DEPTH: usize = 128;

fn err<T>(offset: usize, reason: &'static str) -> Result<T, Error> {
    Err(Error { offset, reason })
}

#[inline]
fn skip_ws(s: &[u8], mut i: usize) -> usize {
    while let Some(&b) = s.get(i) {
        if !matches!(b, b' ' | b'\t' | b'\n' | b'\r') {
            break;
        }
        i += 1;
    }
    i
}

/// Position of the first byte at or after `i` that is `"`, `\`, a control
/// byte or non-ASCII; `s.len()` if none.
#[inline]
fn find_special(s: &[u8], i: usize) -> usize {
    #[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
    {
        simd::find_special(s, i)
    }
    #[cfg(not(all(target_arch = "wasm32", target_feature = "simd128")))]
    {
        swar::find_special(s, i)
    }
}

#[allow(dead_code)]
mod swar {
    const LO: u64 = 0x0101_0101_0101_0101;
    const HI: u64 = 0x8080_8080_8080_8080;

    #[inline]
    fn special_mask(x: u64) -> u64 {
        let quote = x ^ (LO * b'"' as u64);
        let bslash = x ^ (LO * b'\\' as u64);
        let zero = |v: u64| v.wrapping_sub(LO) & !v & HI;
        // Bytes < 0x20 (exact for the lowest flagged byte), and bytes ≥ 0x80.
        let ctrl = x.wrapping_sub(LO * 0x20) & !x & HI;
        zero(quote) | zero(bslash) | ctrl | (x & HI)
    }

    pub(super) fn find_special(s: &[u8], mut i: usize) -> usize {
        while i + 8 <= s.len() {
            let mut w = [0u8; 8];
            w.copy_from_slice(&s[i..i + 8]);
            let m = special_mask(u64::from_le_bytes(w));
            if m != 0 {
                return i + (m.trailing_zeros() / 8) as usize;
            }
            i += 8;
        }
        while i < s.len() {
            let b = s[i];
            if b == b'"' || b == b'\\' || !(0x20..0x80).contains(&b) {
                return i;
            }
            i += 1;
        }
        s.len()
    }
}

#[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
mod simd {
    use core::arch::wasm32::*;

    pub(super) fn find_special(s: &[u8], mut i: usize) -> usize {
        let quote = u8x16_splat(b'"');
        let bslash = u8x16_splat(b'\\');
        let space = u8x16_splat(0x20);
        let high = u8x16_splat(0x7f);
        while i + 16 <= s.len() {
            let chunk: &[u8; 16] = match s[i..i + 16].try_into() {
                Ok(c) => c,
                Err(_) => break,
            };
            let v = u8x16(
                chunk[0], chunk[1], chunk[2], chunk[3], chunk[4], chunk[5], chunk[6], chunk[7],
                chunk[8], chunk[9], chunk[10], chunk[11], chunk[12], chunk[13], chunk[14],
                chunk[15],
            );
            let m = v128_or(
                v128_or(u8x16_eq(v, quote), u8x16_eq(v, bslash)),
                v128_or(u8x16_lt(v, space), u8x16_gt(v, high)),
            );
            let bits = u8x16_bitmask(m);
            if bits != 0 {
                return i + bits.trailing_zeros() as usize;
            }
            i += 16;
        }
        super::swar::find_special(s, i)
    }
}

fn hex4(s: &[u8], i: usize) -> Result<u32, Error> {
    let mut v = 0u32;
    for k in 0..4 {
        let d = match s.get(i + k) {
            Some(b @ b'0'..=b'9') => b - b'0',
            Some(b @ b'a'..=b'f') => b - b'a' + 10,
            Some(b @ b'A'..=b'F') => b - b'A' + 10,
            Some(_) => return err(i + k, "invalid \\u escape"),
            None => return err(i + k, "unexpected end in \\u escape"),
        };
        v = v * 16 + u32::from(d);
    }
    Ok(v)
}

/// Validates the string starting at the opening quote `s[i]`; returns the
/// position after the closing quote and whether it has escapes.
fn skip_string(s: &[u8], i: usize) -> Result<(usize, bool), Error> {
    let start = i + 1;
    let mut j = start;
    let mut escaped = false;
    let mut non_ascii = false;
    loop {
        j = find_special(s, j);
        let Some(&b) = s.get(j) else {
            return err(j, "unterminated string");
        };
        match b {
            b'"' => break,
            b'\\' => {
                escaped = true;
                match s.get(j + 1) {
                    Some(b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't') => j += 2,
                    Some(b'u') => {
                        let c = hex4(s, j + 2)?;
                        j += 6;
                        if (0xDC00..0xE000).contains(&c) {
                            return err(j - 6, "lone trailing surrogate in \\u escape");
                        }
                        if (0xD800..0xDC00).contains(&c) {
                            if s.get(j) != Some(&b'\\') || s.get(j + 1) != Some(&b'u') {
                                return err(j, "lone leading surrogate in \\u escape");
                            }
                            let c2 = hex4(s, j + 2)?;
                            if !(0xDC00..0xE000).contains(&c2) {
                                return err(j, "invalid surrogate pair in \\u escape");
                            }
                            j += 6;
                        }
                    }
                    Some(_) => return err(j + 1, "invalid escape"),
                    None => return err(j + 1, "unterminated string"),
                }
            }
            b if b < 0x20 => return err(j, "control character in string"),
            _ => {
                non_ascii = true;
                j += 1;
            }
        }
    }
    if non_ascii {
        if let Err(e) = std::str::from_utf8(&s[start..j]) {
            return err(start + e.valid_up_to(), "invalid UTF-8 in string");
        }
    }
    Ok((j + 1, escaped))
}

fn skip_number(s: &[u8], i: usize) -> Result<usize, Error> {
    let mut j = i;
    let at = |j: usize| s.get(j).copied().unwrap_or(0);
    if at(j) == b'-' {
        j += 1;
    }
    match at(j) {
        b'0' => j += 1,
        b'1'..=b'9' => {
            while at(j).is_ascii_digit() {
                j += 1;
            }
        }
        _ => return err(j, "invalid number"),
    }
    if at(j) == b'.' {
        j += 1;
        if !at(j).is_ascii_digit() {
            return err(j, "invalid number: digit expected after `.`");
        }
        while at(j).is_ascii_digit() {
            j += 1;
        }
    }
    if at(j) | 0x20 == b'e' {
        j += 1;
        if at(j) == b'+' || at(j) == b'-' {
            j += 1;
        }
        if !at(j).is_ascii_digit() {
            return err(j, "invalid number: digit expected in exponent");
        }
        while at(j).is_ascii_digit() {
            j += 1;
        }
    }
    Ok(j)
}

fn literal(s: &[u8], i: usize, word: &[u8]) -> Result<usize, Error> {
    if s.get(i..i + word.len()) == Some(word) {
        Ok(i + word.len())
    } else {
        err(i, "invalid literal")
    }
}

/// Validates the value starting at `s[i]` (no leading whitespace); returns
/// its end and kind.
fn skip_value(s: &[u8], i: usize, depth: usize) -> Result<(usize, Kind, bool), Error> {
    match s.get(i) {
        Some(b'"') => skip_string(s, i).map(|(e, esc)| (e, Kind::String, esc)),
        Some(b'{') => skip_container(s, i, depth, b'}').map(|e| (e, Kind::Object, false)),
        Some(b'[') => skip_container(s, i, depth, b']').map(|e| (e, Kind::Array, false)),
        Some(b't') => literal(s, i, b"true").map(|e| (e, Kind::Bool, false)),
        Some(b'f') => literal(s, i, b"false").map(|e| (e, Kind::Bool, false)),
        Some(b'n') => literal(s, i, b"null").map(|e| (e, Kind::Null, false)),
        Some(b'-' | b'0'..=b'9') => skip_number(s, i).map(|e| (e, Kind::Number, false)),
        Some(_) => err(i, "value expected"),
        None => err(i, "unexpected end, value expected"),
    }
}

fn skip_container(s: &[u8], i: usize, depth: usize, close: u8) -> Result<usize, Error> {
    if depth >= MAX_DEPTH {
        return err(i, "nesting too deep");
    }
    let object = close == b'}';
    let mut j = skip_ws(s, i + 1);
    if s.get(j) == Some(&close) {
        return Ok(j + 1);
    }
    loop {
        if object {
            if s.get(j) != Some(&b'"') {
                return err(j, "key expected");
            }
            j = skip_ws(s, skip_string(s, j)?.0);
            if s.get(j) != Some(&b':') {
                return err(j, "`:` expected");
            }
            j = skip_ws(s, j + 1);
        }
        j = skip_ws(s, skip_value(s, j, depth + 1)?.0);
        match s.get(j) {
            Some(b',') => j = skip_ws(s, j + 1),
            Some(&b) if b == close => return Ok(j + 1),
            Some(_) => return err(j, "`,` or closing bracket expected"),
            None => return err(j, "unexpected end"),
        }
    }
}

/// Decodes the content of a string with escapes (already validated).
fn decode(raw: &[u8]) -> String {
    let mut out = String::with_capacity(raw.len());
    let mut i = 0;
    while i < raw.len() {
        let b = raw[i];
        if b != b'\\' {
            let next = raw[i..]
                .iter()
                .position(|&c| c == b'\\')
                .map_or(raw.len(), |p| i + p);
            out.push_str(&String::from_utf8_lossy(&raw[i..next]));
            i = next;
            continue;
        }
        let c = raw.get(i + 1).copied().unwrap_or(b'\\');
        i += 2;
        let ch = match c {
            b'b' => '\u{8}',
            b'f' => '\u{c}',
            b'n' => '\n',
            b'r' => '\r',
            b't' => '\t',
            b'u' => {
                let hi = hex4(raw, i).unwrap_or(0xFFFD);
                i += 4;
                let code = if (0xD800..0xDC00).contains(&hi) {
                    let lo = hex4(raw, i + 2).unwrap_or(0xDC00);
                    i += 6;
                    0x10000 + ((hi - 0xD800) << 10) + (lo - 0xDC00)
                } else {
                    hi
                };
                char::from_u32(code).unwrap_or('\u{FFFD}')
            }
            other => other as char,
        };
        out.push(ch);
    }
    out
}

fn text_eq(raw: &[u8], escaped: bool, want: &str) -> bool {
    if !escaped {
        raw == want.as_bytes()
    } else {
        decode(raw) == want
    }
}

impl<'a> Key<'a> {
    /// Whether the decoded key equals `name`.
    pub fn eq_str(&self, name: &str) -> bool {
        text_eq(self.raw, self.escaped, name)
    }

    /// The key's raw content (escapes not decoded).
    pub fn raw(&self) -> &'a [u8] {
        self.raw
    }

    /// The decoded key.
    pub fn as_str(&self) -> Cow<'a, str> {
        if self.escaped {
            Cow::Owned(decode(self.raw))
        } else {
            String::from_utf8_lossy(self.raw)
        }
    }
}

impl<'a> Value<'a> {
    /// The value's bytes as they appear in the line (strings with quotes).
    pub fn raw(&self) -> &'a [u8] {
        self.raw
    }

    pub fn kind(&self) -> Kind {
        self.kind
    }

    /// Whether this is a string whose decoded content equals `want`.
    pub fn str_eq(&self, want: &str) -> bool {
        self.kind == Kind::String && text_eq(&self.raw[1..self.raw.len() - 1], self.escaped, want)
    }

    /// The decoded string, if this is a string.
    pub fn as_str(&self) -> Option<Cow<'a, str>> {
        if self.kind != Kind::String {
            return None;
        }
        let inner = &self.raw[1..self.raw.len() - 1];
        Some(if self.escaped {
            Cow::Owned(decode(inner))
        } else {
            String::from_utf8_lossy(inner)
        })
    }

    /// The number, if this is a number.
    pub fn as_f64(&self) -> Option<f64> {
        if self.kind != Kind::Number {
            return None;
        }
        crate::num::parse_f64(self.raw)
    }

    /// The number, if this is an integer that fits in `i64`.
    pub fn as_i64(&self) -> Option<i64> {
        if self.kind != Kind::Number {
            return None;
        }
        crate::num::parse_i64(self.raw)
    }

    pub fn as_bool(&self) -> Option<bool> {
        match (self.kind, self.raw) {
            (Kind::Bool, b"true") => Some(true),
            (Kind::Bool, _) => Some(false),
            _ => None,
        }
    }
}

/// Iterator over the top-level members of an object line; see [`members`].
#[derive(Debug, Clone)]
pub struct Members<'a> {
    s: &'a [u8],
    pos: usize,
    state: State,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Start,
    Next,
    Done,
}

/// Walks the members of the JSON object `line`, validating as it goes. Each
/// item is a member or the first error; after the last member, the closing
/// brace and trailing whitespace are checked (an error there is the last
/// item). Stop early when you know your answer.
pub fn members(line: &[u8]) -> Members<'_> {
    Members {
        s: line,
        pos: 0,
        state: State::Start,
    }
}

impl<'a> Members<'a> {
    fn fail(&mut self, e: Error) -> Option<Result<(Key<'a>, Value<'a>), Error>> {
        self.state = State::Done;
        Some(Err(e))
    }

    fn end(&mut self, j: usize) -> Option<Result<(Key<'a>, Value<'a>), Error>> {
        self.state = State::Done;
        let k = skip_ws(self.s, j + 1);
        if k != self.s.len() {
            return Some(err(k, "trailing characters after the object"));
        }
        None
    }
}

impl<'a> Iterator for Members<'a> {
    type Item = Result<(Key<'a>, Value<'a>), Error>;

    fn next(&mut self) -> Option<Self::Item> {
        let s = self.s;
        let mut j = skip_ws(s, self.pos);
        match self.state {
            State::Done => return None,
            State::Start => {
                if s.get(j) != Some(&b'{') {
                    return self.fail(Error {
                        offset: j,
                        reason: "object expected",
                    });
                }
                j = skip_ws(s, j + 1);
                if s.get(j) == Some(&b'}') {
                    return self.end(j);
                }
            }
            State::Next => match s.get(j) {
                Some(b',') => j = skip_ws(s, j + 1),
                Some(b'}') => return self.end(j),
                Some(_) => {
                    return self.fail(Error {
                        offset: j,
                        reason: "`,` or `}` expected",
                    });
                }
                None => {
                    return self.fail(Error {
                        offset: j,
                        reason: "unexpected end, `}` expected",
                    });
                }
            },
        }
        if s.get(j) != Some(&b'"') {
            return self.fail(Error {
                offset: j,
                reason: "key expected",
            });
        }
        let (kend, kesc) = match skip_string(s, j) {
            Ok(k) => k,
            Err(e) => return self.fail(e),
        };
        let key = Key {
            raw: &s[j + 1..kend - 1],
            escaped: kesc,
        };
        let c = skip_ws(s, kend);
        if s.get(c) != Some(&b':') {
            return self.fail(Error {
                offset: c,
                reason: "`:` expected",
            });
        }
        let v = skip_ws(s, c + 1);
        let (vend, kind, vesc) = match skip_value(s, v, 1) {
            Ok(x) => x,
            Err(e) => return self.fail(e),
        };
        self.pos = vend;
        self.state = State::Next;
        Some(Ok((
            key,
            Value {
                raw: &s[v..vend],
                kind,
                escaped: vesc,
            },
        )))
    }
}

/// The first top-level field `name` of the object `line`, if the line is an
/// object up to that field (the rest of the line is not validated).
pub fn field<'a>(line: &'a [u8], name: &str) -> Option<Value<'a>> {
    for m in members(line) {
        match m {
            Ok((k, v)) if k.eq_str(name) => return Some(v),
            Ok(_) => {}
            Err(_) => return None,
        }
    }
    None
}

/// Whether `line` is exactly one valid JSON object (whitespace around it
/// allowed).
pub fn is_valid_object(line: &[u8]) -> bool {
    members(line).all(|m| m.is_ok())
}

/// Validates any JSON value filling `line` (whitespace around it allowed).
pub fn validate(line: &[u8]) -> Result<Kind, Error> {
    let i = skip_ws(line, 0);
    let (end, kind, _) = skip_value(line, i, 0)?;
    let k = skip_ws(line, end);
    if k != line.len() {
        return err(k, "trailing characters after the value");
    }
    Ok(kind)
}

/// Appends the raw value `raw` to `out` without insignificant whitespace
/// (string contents are copied unchanged).
pub fn write_compact(raw: &[u8], out: &mut Vec<u8>) {
    let mut i = 0;
    while i < raw.len() {
        let b = raw[i];
        if b == b'"' {
            let end = skip_string(raw, i).map_or(raw.len(), |(e, _)| e);
            out.extend_from_slice(&raw[i..end]);
            i = end;
        } else {
            if !matches!(b, b' ' | b'\t' | b'\n' | b'\r') {
                out.push(b);
            }
            i += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn walks_members() {
        let line = br#" { "a" : 1 , "b":{"c":[1,2,{"d":null}]}, "e":"x\"y" } "#;
        let got: Vec<(String, Vec<u8>)> = members(line)
            .map(|m| m.map(|(k, v)| (k.as_str().into_owned(), v.raw().to_vec())))
            .collect::<Result<_, _>>()
            .unwrap_or_default();
        assert_eq!(got.len(), 3);
        assert_eq!(got[1].1, br#"{"c":[1,2,{"d":null}]}"#.to_vec());
        assert_eq!(got[2].1, br#""x\"y""#.to_vec());
    }

    #[test]
    fn errors_name_the_place() {
        let e = members(br#"{"a":1,"b":tru}"#).find_map(Result::err);
        assert_eq!(e.map(|e| e.offset), Some(11));
        assert!(!is_valid_object(br#"{"a":1"#));
        assert!(!is_valid_object(br#"{"a":1}}"#));
        assert!(!is_valid_object(b"[]"));
        assert!(!is_valid_object(b"{\"a\":\"\x01\"}"));
        assert!(!is_valid_object(b"{\"a\":\"\xff\"}"));
        assert!(!is_valid_object(br#"{"a":"\ud800"}"#));
        assert!(is_valid_object(br#"{"a":"\ud83d\ude00"}"#));
        assert!(is_valid_object(b"{}"));
    }

    #[test]
    fn escaped_keys_and_strings_compare_decoded() {
        let line = br#"{"le\u0076el":"err\u006Fr","n":5e2}"#;
        let v = field(line, "level");
        assert!(v.is_some_and(|v| v.str_eq("error")));
        assert_eq!(field(line, "n").and_then(|v| v.as_f64()), Some(500.0));
        assert_eq!(field(line, "missing"), None);
    }

    #[test]
    fn compacts_values() {
        let mut out = Vec::new();
        write_compact(br#"{ "a" : [ 1 , "x  y" ] }"#, &mut out);
        assert_eq!(out, br#"{"a":[1,"x  y"]}"#);
    }

    #[test]
    fn finds_special_bytes() {
        let s = b"abcdefghijklmnopqrstuvwxyz\"";
        for i in 0..s.len() {
            assert_eq!(find_special(s, i), s.len() - 1);
        }
        assert_eq!(find_special(b"abc\x01def", 0), 3);
        assert_eq!(find_special("aé".as_bytes(), 0), 1);
        assert_eq!(swar::find_special(b"0123456789\\x", 0), 10);
    }
}
