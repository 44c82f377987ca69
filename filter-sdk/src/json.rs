//! Fast, zero-copy JSON helpers for one-object-per-line events.
//!
//! [`members`] walks the top-level members of an object line and validates
//! as it goes (strings with their escapes and UTF-8, numbers, nested values,
//! the closing brace), so a filter can stop as soon as it knows its answer:
//! the verdict is the one full validation would give, only cheaper.
//! [`field`] finds one top-level field; [`is_valid_object`] checks a whole
//! line. Keys and strings compare decoded: `"le\u0076el"` is `level`.
//!
//! Nothing is copied or allocated unless you ask for decoded text with an
//! escape in it ([`Value::as_str`]). String contents are skipped 16 bytes at
//! a time (Wasm `simd128` when the crate is built with it, 8-byte words
//! otherwise).
//!
//! Agreement with `serde_json` (`from_slice` into a map) is property-tested:
//! the same lines are accepted, including numbers out of `f64` range (they
//! are rejected) and nesting (at most 127 levels, as `serde_json`). One
//! difference remains by design: with a duplicated key, [`field`] and early
//! exits see the *first* occurrence, `serde_json` keeps the last.
//!
//! ```
//! use kinesthetic_filter::json;
//!
//! let line = br#"{"level":"error","status":503,"user":{"id":7}}"#;
//! assert!(json::field(line, "level").is_some_and(|v| v.str_eq("error")));
//! assert_eq!(json::field(line, "status").and_then(|v| v.as_i64()), Some(503));
//! for member in json::members(line) {
//!     let Ok((key, value)) = member else { break }; // invalid from here on
//!     if key.eq_str("user") {
//!         assert_eq!(value.kind(), json::Kind::Object);
//!     }
//! }
//! assert!(!json::is_valid_object(br#"{"level":"error""#));
//! ```

use std::borrow::Cow;

/// Why a line is not valid JSON, and where.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Error {
    /// Byte offset in the line.
    pub offset: usize,
    /// What was wrong there.
    pub reason: &'static str,
}

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "invalid JSON at byte {}: {}", self.offset, self.reason)
    }
}

impl std::error::Error for Error {}

/// The type of a JSON value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    String,
    Number,
    Bool,
    Null,
    Object,
    Array,
}

/// A validated value: its raw bytes in the line, and its kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Value<'a> {
    raw: &'a [u8],
    kind: Kind,
    /// For strings: whether the content has a backslash escape.
    escaped: bool,
}

/// A validated member key (its raw content, without the quotes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Key<'a> {
    raw: &'a [u8],
    escaped: bool,
}

/// Containers may nest this deep, the outermost one included (as in
/// `serde_json`, whose recursion limit is 128).
const MAX_DEPTH: usize = 127;

#[cold]
fn err<T>(offset: usize, reason: &'static str) -> Result<T, Error> {
    Err(Error { offset, reason })
}

#[inline(always)]
fn is_ws(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | b'\r')
}

/// The first non-whitespace position at or after `i`.
#[inline(always)]
fn skip_ws(s: &[u8], i: usize) -> usize {
    match s.get(i) {
        Some(&b) if b > b' ' => i,
        _ => skip_ws_slow(s, i),
    }
}

#[inline(never)]
fn skip_ws_slow(s: &[u8], mut i: usize) -> usize {
    while let Some(&b) = s.get(i) {
        if !is_ws(b) {
            break;
        }
        i += 1;
    }
    i
}

/// The position of the first byte at or after `i` that is `"`, `\`, a
/// control byte (< 0x20) or, if `STOP_NON_ASCII`, a non-ASCII byte (≥ 0x80);
/// `s.len()` if there is none.
#[inline(always)]
fn find<const STOP_NON_ASCII: bool>(s: &[u8], i: usize) -> usize {
    #[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
    let i = simd::find::<STOP_NON_ASCII>(s, i);
    let i = swar::find::<STOP_NON_ASCII>(s, i);
    find_bytes::<STOP_NON_ASCII>(s, i)
}

#[inline(always)]
fn find_bytes<const STOP_NON_ASCII: bool>(s: &[u8], mut i: usize) -> usize {
    while let Some(&b) = s.get(i) {
        if b == b'"' || b == b'\\' || b < 0x20 || (STOP_NON_ASCII && b >= 0x80) {
            return i;
        }
        i += 1;
    }
    s.len()
}

/// If the string content starting at `s[j]` is plain ASCII without escapes
/// and ends (with its closing quote) within the next 16 bytes (8 without
/// SIMD), the position of that quote. The common case, decided without a
/// loop.
#[inline(always)]
fn quick_string(s: &[u8], j: usize) -> Option<usize> {
    #[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
    {
        simd::quick_string(s, j)
    }
    #[cfg(not(all(target_arch = "wasm32", target_feature = "simd128")))]
    {
        swar::quick_string(s, j)
    }
}

/// Eight bytes at a time in a `u64` (the fallback, and native builds).
mod swar {
    const LO: u64 = 0x0101_0101_0101_0101;
    const HI: u64 = 0x8080_8080_8080_8080;

    #[inline(always)]
    fn word(s: &[u8], i: usize) -> Option<u64> {
        s.get(i..)?
            .first_chunk::<8>()
            .map(|w| u64::from_le_bytes(*w))
    }

    /// High bit set in the bytes of `x` equal to `b`; exact for the lowest
    /// one (borrows only make false positives above a true one).
    #[inline(always)]
    fn eq(x: u64, b: u8) -> u64 {
        let v = x ^ (LO * u64::from(b));
        v.wrapping_sub(LO) & !v & HI
    }

    /// High bit set in the bytes of `x` that are `"`, `\`, < 0x20 or, if
    /// `STOP_NON_ASCII`, ≥ 0x80; exact for the lowest one.
    #[inline(always)]
    fn special<const STOP_NON_ASCII: bool>(x: u64) -> u64 {
        let below_space = x.wrapping_sub(LO * 0x20);
        let class = if STOP_NON_ASCII {
            (below_space | x) & HI
        } else {
            below_space & !x & HI
        };
        eq(x, b'"') | eq(x, b'\\') | class
    }

    #[inline(always)]
    pub(super) fn find<const STOP_NON_ASCII: bool>(s: &[u8], mut i: usize) -> usize {
        while let Some(x) = word(s, i) {
            let m = special::<STOP_NON_ASCII>(x);
            if m != 0 {
                return i + (m.trailing_zeros() / 8) as usize;
            }
            i += 8;
        }
        i
    }

    #[cfg_attr(
        all(target_arch = "wasm32", target_feature = "simd128"),
        allow(dead_code)
    )]
    #[inline(always)]
    pub(super) fn quick_string(s: &[u8], j: usize) -> Option<usize> {
        let x = word(s, j)?;
        let m = special::<true>(x);
        // The first special byte is a quote: the lowest bit of `m` is in
        // the (then exact) quote mask.
        (m != 0 && m.trailing_zeros() == eq(x, b'"').trailing_zeros())
            .then(|| j + (m.trailing_zeros() / 8) as usize)
    }
}

/// Sixteen bytes at a time with Wasm SIMD.
#[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
mod simd {
    use core::arch::wasm32::*;

    #[inline(always)]
    fn load(s: &[u8], i: usize) -> Option<v128> {
        let c = s.get(i..)?.first_chunk::<16>()?;
        let lo = u64::from_le_bytes(*c.first_chunk::<8>()?);
        let hi = u64::from_le_bytes(*c.last_chunk::<8>()?);
        Some(u64x2(lo, hi))
    }

    /// `0xFF` in the bytes of `v` that are `"`, `\`, < 0x20 or, if
    /// `STOP_NON_ASCII`, ≥ 0x80 (one signed compare finds both of these).
    #[inline(always)]
    fn special<const STOP_NON_ASCII: bool>(v: v128) -> v128 {
        let class = if STOP_NON_ASCII {
            i8x16_lt(v, i8x16_splat(0x20))
        } else {
            u8x16_lt(v, u8x16_splat(0x20))
        };
        v128_or(
            v128_or(
                u8x16_eq(v, u8x16_splat(b'"')),
                u8x16_eq(v, u8x16_splat(b'\\')),
            ),
            class,
        )
    }

    #[inline(always)]
    pub(super) fn find<const STOP_NON_ASCII: bool>(s: &[u8], mut i: usize) -> usize {
        while let Some(v) = load(s, i) {
            let m = special::<STOP_NON_ASCII>(v);
            if v128_any_true(m) {
                return i + u8x16_bitmask(m).trailing_zeros() as usize;
            }
            i += 16;
        }
        i
    }

    #[inline(always)]
    pub(super) fn quick_string(s: &[u8], j: usize) -> Option<usize> {
        let v = load(s, j)?;
        let m = u8x16_bitmask(special::<true>(v));
        let q = u8x16_bitmask(u8x16_eq(v, u8x16_splat(b'"')));
        (m != 0 && m.trailing_zeros() == q.trailing_zeros())
            .then(|| j + m.trailing_zeros() as usize)
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

/// Returned by [`Cursor`]'s methods instead of a position when the input is
/// invalid; the error is in `Cursor::error`. (One plain integer is cheaper to
/// return than a `Result` in Wasm, where it would go through memory.)
const FAIL: usize = usize::MAX;

/// The validator: each method takes the position where something starts
/// and returns the position after it, or [`FAIL`].
#[derive(Debug, Clone)]
struct Cursor<'a> {
    s: &'a [u8],
    /// Whether the last string read had a backslash escape.
    escaped: bool,
    error: Error,
}

impl<'a> Cursor<'a> {
    fn new(s: &'a [u8]) -> Self {
        Cursor {
            s,
            escaped: false,
            error: Error {
                offset: 0,
                reason: "",
            },
        }
    }

    #[cold]
    #[inline(never)]
    fn fail(&mut self, offset: usize, reason: &'static str) -> usize {
        self.error = Error { offset, reason };
        FAIL
    }

    #[cold]
    #[inline(never)]
    fn fail_with(&mut self, e: Error) -> usize {
        self.error = e;
        FAIL
    }

    /// The string whose opening quote is `s[i]`; sets `escaped`.
    #[inline(always)]
    fn string(&mut self, i: usize) -> usize {
        self.escaped = false;
        match quick_string(self.s, i + 1) {
            Some(quote) => quote + 1,
            None => self.string_slow(i),
        }
    }

    /// [`string`](Self::string) beyond the first chunk: long strings,
    /// escapes, non-ASCII text, errors.
    #[inline(never)]
    fn string_slow(&mut self, i: usize) -> usize {
        let s = self.s;
        let start = i + 1;
        let mut j = start;
        let mut ascii = true;
        loop {
            j = if ascii {
                find::<true>(s, j)
            } else {
                find::<false>(s, j)
            };
            match s.get(j) {
                Some(b'"') => break,
                Some(b'\\') => {
                    self.escaped = true;
                    j = self.escape(j);
                    if j == FAIL {
                        return FAIL;
                    }
                }
                Some(&b) if b >= 0x80 => {
                    ascii = false;
                    j += 1;
                }
                Some(_) => return self.fail(j, "control character in string"),
                None => return self.fail(j, "unterminated string"),
            }
        }
        if !ascii {
            return self.utf8(start, j);
        }
        j + 1
    }

    /// The escape at `s[j] == '\\'`.
    #[inline(never)]
    fn escape(&mut self, j: usize) -> usize {
        let s = self.s;
        match s.get(j + 1) {
            Some(b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't') => j + 2,
            Some(b'u') => {
                let c = match hex4(s, j + 2) {
                    Ok(c) => c,
                    Err(e) => return self.fail_with(e),
                };
                if (0xDC00..0xE000).contains(&c) {
                    return self.fail(j, "lone trailing surrogate in \\u escape");
                }
                if !(0xD800..0xDC00).contains(&c) {
                    return j + 6;
                }
                if s.get(j + 6) != Some(&b'\\') || s.get(j + 7) != Some(&b'u') {
                    return self.fail(j + 6, "lone leading surrogate in \\u escape");
                }
                match hex4(s, j + 8) {
                    Ok(c2) if (0xDC00..0xE000).contains(&c2) => j + 12,
                    Ok(_) => self.fail(j + 6, "invalid surrogate pair in \\u escape"),
                    Err(e) => self.fail_with(e),
                }
            }
            Some(_) => self.fail(j + 1, "invalid escape"),
            None => self.fail(j + 1, "unterminated string"),
        }
    }

    /// Checks that the string content `s[start..end]` is UTF-8; returns the
    /// position after the closing quote at `end`.
    #[cold]
    #[inline(never)]
    fn utf8(&mut self, start: usize, end: usize) -> usize {
        match std::str::from_utf8(self.s.get(start..end).unwrap_or_default()) {
            Ok(_) => end + 1,
            Err(e) => self.fail(start + e.valid_up_to(), "invalid UTF-8 in string"),
        }
    }

    /// The number starting at `s[i]`.
    #[inline]
    fn number(&mut self, i: usize) -> usize {
        let s = self.s;
        let digit = |j: usize| s.get(j).is_some_and(u8::is_ascii_digit);
        let mut j = i;
        if s.get(j) == Some(&b'-') {
            j += 1;
        }
        let int_start = j;
        match s.get(j) {
            Some(b'0') => {
                j += 1;
                if digit(j) {
                    return self.fail(j, "invalid number: leading zero");
                }
            }
            Some(b'1'..=b'9') => {
                j += 1;
                while digit(j) {
                    j += 1;
                }
            }
            _ => return self.fail(j, "invalid number"),
        }
        // Digits before the point of a non-zero integer part.
        let int_digits = if s.get(int_start) == Some(&b'0') {
            0
        } else {
            j - int_start
        };
        if s.get(j) == Some(&b'.') {
            j += 1;
            if !digit(j) {
                return self.fail(j, "invalid number: digit expected after `.`");
            }
            while digit(j) {
                j += 1;
            }
        }
        if matches!(s.get(j), Some(b'e' | b'E')) {
            return self.exponent(i, j, int_digits);
        }
        if int_digits > 308 {
            return self.range(i, j);
        }
        j
    }

    /// The exponent at `s[j]` (`e` or `E`) of the number starting at
    /// `s[i]`.
    #[inline(never)]
    fn exponent(&mut self, i: usize, mut j: usize, int_digits: usize) -> usize {
        let s = self.s;
        j += 1;
        let neg = s.get(j) == Some(&b'-');
        if matches!(s.get(j), Some(b'-' | b'+')) {
            j += 1;
        }
        if !s.get(j).is_some_and(u8::is_ascii_digit) {
            return self.fail(j, "invalid number: digit expected in exponent");
        }
        let mut exp: i64 = 0;
        while let Some(&d) = s.get(j).filter(|d| d.is_ascii_digit()) {
            exp = (exp * 10 + i64::from(d - b'0')).min(1_000_000);
            j += 1;
        }
        // |value| < 10^(int_digits + exp), so it is finite unless that
        // exceeds 1e308.
        if int_digits as i64 + if neg { -exp } else { exp } > 308 {
            return self.range(i, j);
        }
        j
    }

    /// `serde_json` rejects numbers that round to infinity as `f64`.
    #[cold]
    #[inline(never)]
    fn range(&mut self, i: usize, j: usize) -> usize {
        let finite = std::str::from_utf8(self.s.get(i..j).unwrap_or_default())
            .ok()
            .and_then(|t| t.parse::<f64>().ok())
            .is_some_and(f64::is_finite);
        if finite {
            j
        } else {
            self.fail(i, "number out of range")
        }
    }

    /// The value starting at `s[i]` (no leading whitespace) inside `depth`
    /// open containers, and its kind (meaningless on failure).
    #[inline(always)]
    fn value(&mut self, i: usize, depth: usize) -> (usize, Kind) {
        // Most frequent first: a chain of predictable branches beats a
        // jump table here.
        let b = self.s.get(i).copied().unwrap_or(0);
        if b == b'"' {
            (self.string(i), Kind::String)
        } else if b.wrapping_sub(b'0') < 10 || b == b'-' {
            (self.number(i), Kind::Number)
        } else if b == b'{' {
            (self.container(i, depth), Kind::Object)
        } else if b == b'[' {
            (self.container(i, depth), Kind::Array)
        } else {
            self.literal(i)
        }
    }

    /// The literal (`true`, `false`, `null`) at `s[i]`, or the error.
    #[inline(never)]
    fn literal(&mut self, i: usize) -> (usize, Kind) {
        let (word, kind): (&[u8], Kind) = match self.s.get(i) {
            Some(b't') => (b"true", Kind::Bool),
            Some(b'f') => (b"false", Kind::Bool),
            Some(b'n') => (b"null", Kind::Null),
            Some(_) => return (self.fail(i, "value expected"), Kind::Null),
            None => return (self.fail(i, "unexpected end, value expected"), Kind::Null),
        };
        if self.s.get(i..i + word.len()) == Some(word) {
            (i + word.len(), kind)
        } else {
            (self.fail(i, "invalid literal"), kind)
        }
    }

    /// The object or array at `s[i]` inside `depth` open containers,
    /// everything nested in it included: one loop, with a bit stack of the
    /// open containers (1 for an object) instead of recursion.
    #[inline(never)]
    fn container(&mut self, mut i: usize, depth: usize) -> usize {
        #[derive(Clone, Copy)]
        enum Step {
            /// `s[i]` opens a container.
            Open,
            /// `s[i]` starts an element (a member's key in an object).
            Element,
            /// `i` is after an element, or after a closed container.
            After,
        }
        let s = self.s;
        let (mut stack, mut open) = (0u128, 0usize);
        let mut step = Step::Open;
        loop {
            match step {
                Step::Open => {
                    if depth + open >= MAX_DEPTH {
                        return self.fail(i, "nesting too deep");
                    }
                    let object = s.get(i) == Some(&b'{');
                    stack = stack << 1 | u128::from(object);
                    open += 1;
                    i = skip_ws(s, i + 1);
                    let close = if object { b'}' } else { b']' };
                    if s.get(i) == Some(&close) {
                        i += 1;
                        stack >>= 1;
                        open -= 1;
                        if open == 0 {
                            return i;
                        }
                        step = Step::After;
                    } else {
                        step = Step::Element;
                    }
                }
                Step::Element => {
                    if stack & 1 == 1 {
                        if s.get(i) != Some(&b'"') {
                            return self.fail(i, "key expected");
                        }
                        i = self.string(i);
                        if i == FAIL {
                            return FAIL;
                        }
                        i = skip_ws(s, i);
                        if s.get(i) != Some(&b':') {
                            return self.fail(i, "`:` expected");
                        }
                        i = skip_ws(s, i + 1);
                    }
                    let b = s.get(i).copied().unwrap_or(0);
                    i = if b == b'"' {
                        self.string(i)
                    } else if b.wrapping_sub(b'0') < 10 || b == b'-' {
                        self.number(i)
                    } else if b == b'{' || b == b'[' {
                        step = Step::Open;
                        continue;
                    } else {
                        self.literal(i).0
                    };
                    if i == FAIL {
                        return FAIL;
                    }
                    step = Step::After;
                }
                Step::After => {
                    i = skip_ws(s, i);
                    let object = stack & 1 == 1;
                    match s.get(i) {
                        Some(b',') => {
                            i = skip_ws(s, i + 1);
                            step = Step::Element;
                        }
                        Some(b'}') if object => {
                            i += 1;
                            stack >>= 1;
                            open -= 1;
                            if open == 0 {
                                return i;
                            }
                        }
                        Some(b']') if !object => {
                            i += 1;
                            stack >>= 1;
                            open -= 1;
                            if open == 0 {
                                return i;
                            }
                        }
                        Some(_) if object => return self.fail(i, "`,` or `}` expected"),
                        Some(_) => return self.fail(i, "`,` or `]` expected"),
                        None => return self.fail(i, "unexpected end"),
                    }
                }
            }
        }
    }
}

/// Decodes the escape at `raw[i] == '\\'` of validated string content;
/// returns the character and the escape's length.
fn unescape(raw: &[u8], i: usize) -> (char, usize) {
    let hex = |at: usize| hex4(raw, at).unwrap_or(0xFFFD);
    match raw.get(i + 1).copied().unwrap_or(b'\\') {
        b'b' => ('\u{8}', 2),
        b'f' => ('\u{c}', 2),
        b'n' => ('\n', 2),
        b'r' => ('\r', 2),
        b't' => ('\t', 2),
        b'u' => {
            let hi = hex(i + 2);
            if (0xD800..0xDC00).contains(&hi) {
                let lo = hex(i + 8);
                let c = 0x10000 + ((hi - 0xD800) << 10) + (lo.wrapping_sub(0xDC00) & 0x3FF);
                (char::from_u32(c).unwrap_or('\u{FFFD}'), 12)
            } else {
                (char::from_u32(hi).unwrap_or('\u{FFFD}'), 6)
            }
        }
        other => (char::from(other), 2),
    }
}

/// Decodes validated string content with escapes.
fn decode(raw: &[u8]) -> String {
    let mut out = String::with_capacity(raw.len());
    let mut i = 0;
    while i < raw.len() {
        let next = raw[i..]
            .iter()
            .position(|&c| c == b'\\')
            .map_or(raw.len(), |p| i + p);
        out.push_str(&String::from_utf8_lossy(&raw[i..next]));
        if next == raw.len() {
            break;
        }
        let (c, len) = unescape(raw, next);
        out.push(c);
        i = next + len;
    }
    out
}

/// Whether validated string content `raw` decodes to `want`, without
/// allocating. Inlined so that the common case, no escape and a constant
/// `want`, is a length check and a few word compares.
#[inline(always)]
fn text_eq(raw: &[u8], escaped: bool, want: &str) -> bool {
    if escaped {
        unescaped_eq(raw, want.as_bytes())
    } else {
        raw == want.as_bytes()
    }
}

#[inline(never)]
fn unescaped_eq(raw: &[u8], want: &[u8]) -> bool {
    let (mut i, mut w) = (0, 0);
    while let Some(&b) = raw.get(i) {
        if b != b'\\' {
            if want.get(w) != Some(&b) {
                return false;
            }
            i += 1;
            w += 1;
            continue;
        }
        let (c, len) = unescape(raw, i);
        let mut buf = [0u8; 4];
        let c = c.encode_utf8(&mut buf).as_bytes();
        if want.get(w..w + c.len()) != Some(c) {
            return false;
        }
        i += len;
        w += c.len();
    }
    w == want.len()
}

impl<'a> Key<'a> {
    /// Whether the decoded key equals `name` (no allocation; a plain byte
    /// comparison when the key has no escape).
    #[inline]
    pub fn eq_str(&self, name: &str) -> bool {
        text_eq(self.raw, self.escaped, name)
    }

    /// The key's raw content between the quotes (escapes not decoded).
    pub fn raw(&self) -> &'a [u8] {
        self.raw
    }

    /// Whether the raw key has a backslash escape.
    pub fn has_escapes(&self) -> bool {
        self.escaped
    }

    /// The decoded key (borrowed unless it has escapes).
    pub fn as_str(&self) -> Cow<'a, str> {
        if self.escaped {
            Cow::Owned(decode(self.raw))
        } else {
            String::from_utf8_lossy(self.raw)
        }
    }
}

impl<'a> Value<'a> {
    /// The value's bytes as they appear in the line (strings with their
    /// quotes and escapes, containers with their inner whitespace).
    pub fn raw(&self) -> &'a [u8] {
        self.raw
    }

    pub fn kind(&self) -> Kind {
        self.kind
    }

    /// For a string, its raw content between the quotes.
    fn content(&self) -> Option<&'a [u8]> {
        match self.kind {
            Kind::String => self.raw.get(1..self.raw.len().saturating_sub(1)),
            _ => None,
        }
    }

    /// Whether this is a string whose decoded content equals `want` (no
    /// allocation; a plain byte comparison when it has no escape).
    #[inline]
    pub fn str_eq(&self, want: &str) -> bool {
        self.content()
            .is_some_and(|c| text_eq(c, self.escaped, want))
    }

    /// The decoded string, if this is a string (borrowed unless it has
    /// escapes).
    pub fn as_str(&self) -> Option<Cow<'a, str>> {
        let c = self.content()?;
        Some(if self.escaped {
            Cow::Owned(decode(c))
        } else {
            String::from_utf8_lossy(c)
        })
    }

    /// The number as `f64`, if this is a number.
    pub fn as_f64(&self) -> Option<f64> {
        match self.kind {
            Kind::Number => crate::num::parse_f64(self.raw),
            _ => None,
        }
    }

    /// The number, if this is an integer (no fraction, no exponent) that
    /// fits in `i64`.
    pub fn as_i64(&self) -> Option<i64> {
        match self.kind {
            Kind::Number => crate::num::parse_i64(self.raw),
            _ => None,
        }
    }

    pub fn as_bool(&self) -> Option<bool> {
        match self.kind {
            Kind::Bool => Some(self.raw == b"true"),
            _ => None,
        }
    }

    pub fn is_null(&self) -> bool {
        self.kind == Kind::Null
    }

    /// The members of this object (already validated; empty if this is not
    /// an object).
    pub fn members(&self) -> Members<'a> {
        match self.kind {
            Kind::Object => members(self.raw),
            _ => Members {
                c: Cursor::new(self.raw),
                pos: 0,
                state: State::Done,
            },
        }
    }

    /// The first member `name` of this object.
    pub fn field(&self, name: &str) -> Option<Value<'a>> {
        match self.kind {
            Kind::Object => field(self.raw, name),
            _ => None,
        }
    }
}

/// Iterator over the top-level members of an object line; see [`members`].
#[derive(Debug, Clone)]
pub struct Members<'a> {
    c: Cursor<'a>,
    pos: usize,
    state: State,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Start,
    Next,
    Done,
}

/// Walks the members of the JSON object `line` in order, validating as it
/// goes.
///
/// Each item is a member, or the first error found (then the iteration
/// ends). After the last member the closing `}` and the trailing whitespace
/// are checked, and an error there is the last item; so a line is a valid
/// object exactly when no item is an `Err`. Stop as soon as you know your
/// answer.
pub fn members(line: &[u8]) -> Members<'_> {
    Members {
        c: Cursor::new(line),
        pos: 0,
        state: State::Start,
    }
}

type Item<'a> = Option<Result<(Key<'a>, Value<'a>), Error>>;

impl<'a> Members<'a> {
    #[cold]
    #[inline(never)]
    fn fail(&mut self, offset: usize, reason: &'static str) -> Item<'a> {
        self.c.error = Error { offset, reason };
        self.failed()
    }

    /// The cursor failed.
    #[cold]
    #[inline(never)]
    fn failed(&mut self) -> Item<'a> {
        self.state = State::Done;
        Some(Err(self.c.error))
    }

    /// At the closing brace `s[j]`: only whitespace may follow.
    fn end(&mut self, j: usize) -> Item<'a> {
        self.state = State::Done;
        let k = skip_ws(self.c.s, j + 1);
        if k != self.c.s.len() {
            return self.fail(k, "trailing characters after the object");
        }
        None
    }

    /// The member whose key starts at `s[j]`.
    #[inline]
    fn member(&mut self, j: usize) -> Item<'a> {
        let s = self.c.s;
        if s.get(j) != Some(&b'"') {
            return self.fail(j, "key expected");
        }
        let key_end = self.c.string(j);
        if key_end == FAIL {
            return self.failed();
        }
        let key_escaped = self.c.escaped;
        let mut colon = key_end;
        if s.get(colon) != Some(&b':') {
            colon = skip_ws(s, colon);
            if s.get(colon) != Some(&b':') {
                return self.fail(colon, "`:` expected");
            }
        }
        let v = skip_ws(s, colon + 1);
        let (end, kind) = self.c.value(v, 1);
        if end == FAIL {
            return self.failed();
        }
        self.pos = end;
        self.state = State::Next;
        let key = Key {
            raw: s.get(j + 1..key_end - 1).unwrap_or_default(),
            escaped: key_escaped,
        };
        let value = Value {
            raw: s.get(v..end).unwrap_or_default(),
            kind,
            escaped: kind == Kind::String && self.c.escaped,
        };
        Some(Ok((key, value)))
    }
}

impl<'a> Iterator for Members<'a> {
    type Item = Result<(Key<'a>, Value<'a>), Error>;

    #[inline]
    fn next(&mut self) -> Item<'a> {
        let s = self.c.s;
        match self.state {
            State::Next => {
                let j = skip_ws(s, self.pos);
                match s.get(j) {
                    Some(b',') => self.member(skip_ws(s, j + 1)),
                    Some(b'}') => self.end(j),
                    Some(_) => self.fail(j, "`,` or `}` expected"),
                    None => self.fail(j, "unexpected end, `}` expected"),
                }
            }
            State::Start => {
                let j = skip_ws(s, 0);
                if s.get(j) != Some(&b'{') {
                    return self.fail(j, "object expected");
                }
                let j = skip_ws(s, j + 1);
                if s.get(j) == Some(&b'}') {
                    return self.end(j);
                }
                self.member(j)
            }
            State::Done => None,
        }
    }
}

impl std::iter::FusedIterator for Members<'_> {}

/// Iterator over the elements of a top-level array; see [`elements`].
#[derive(Debug, Clone)]
pub struct Elements<'a> {
    c: Cursor<'a>,
    pos: usize,
    state: State,
}

/// Walks the elements of the JSON array `text` in order, validating as it
/// goes (the grammar of [`validate`]; elements nest at most 126 levels
/// inside the array).
///
/// Each item is an element, or the first error found (then the iteration
/// ends). After the last element the closing `]` and the trailing
/// whitespace are checked, and an error there is the last item; so `text`
/// is a valid array exactly when no item is an `Err`. The host's intake
/// splits a JSON-array body into events with it.
pub fn elements(text: &[u8]) -> Elements<'_> {
    Elements {
        c: Cursor::new(text),
        pos: 0,
        state: State::Start,
    }
}

impl<'a> Elements<'a> {
    #[cold]
    #[inline(never)]
    fn fail(&mut self, offset: usize, reason: &'static str) -> Option<Result<Value<'a>, Error>> {
        self.c.error = Error { offset, reason };
        self.failed()
    }

    #[cold]
    #[inline(never)]
    fn failed(&mut self) -> Option<Result<Value<'a>, Error>> {
        self.state = State::Done;
        Some(Err(self.c.error))
    }

    /// The element starting at `s[j]`.
    fn element(&mut self, j: usize) -> Option<Result<Value<'a>, Error>> {
        let (end, kind) = self.c.value(j, 1);
        if end == FAIL {
            return self.failed();
        }
        self.pos = end;
        self.state = State::Next;
        Some(Ok(Value {
            raw: self.c.s.get(j..end).unwrap_or_default(),
            kind,
            escaped: kind == Kind::String && self.c.escaped,
        }))
    }

    /// At the closing bracket `s[j]`: only whitespace may follow.
    fn end(&mut self, j: usize) -> Option<Result<Value<'a>, Error>> {
        self.state = State::Done;
        let k = skip_ws(self.c.s, j + 1);
        if k != self.c.s.len() {
            return self.fail(k, "trailing characters after the array");
        }
        None
    }
}

impl<'a> Iterator for Elements<'a> {
    type Item = Result<Value<'a>, Error>;

    fn next(&mut self) -> Option<Self::Item> {
        let s = self.c.s;
        match self.state {
            State::Next => {
                let j = skip_ws(s, self.pos);
                match s.get(j) {
                    Some(b',') => self.element(skip_ws(s, j + 1)),
                    Some(b']') => self.end(j),
                    Some(_) => self.fail(j, "`,` or `]` expected"),
                    None => self.fail(j, "unexpected end, `]` expected"),
                }
            }
            State::Start => {
                let j = skip_ws(s, 0);
                if s.get(j) != Some(&b'[') {
                    return self.fail(j, "array expected");
                }
                let j = skip_ws(s, j + 1);
                if s.get(j) == Some(&b']') {
                    return self.end(j);
                }
                self.element(j)
            }
            State::Done => None,
        }
    }
}

impl std::iter::FusedIterator for Elements<'_> {}

/// The first top-level member `name` of the object `line`.
///
/// The line is validated up to and including that member's value, not
/// beyond; `None` if the line is not an object up to there or has no such
/// member.
#[inline]
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
    let i = skip_ws(line, 0);
    line.get(i) == Some(&b'{') && validate(line).is_ok()
}

/// Validates any JSON value filling `line` (whitespace around it allowed)
/// and returns its kind.
pub fn validate(line: &[u8]) -> Result<Kind, Error> {
    let mut c = Cursor::new(line);
    let i = skip_ws(line, 0);
    let (end, kind) = c.value(i, 0);
    if end == FAIL {
        return Err(c.error);
    }
    let k = skip_ws(line, end);
    if k != line.len() {
        return err(k, "trailing characters after the value");
    }
    Ok(kind)
}

/// Appends the raw JSON value `raw` to `out` without insignificant
/// whitespace; string contents are copied unchanged.
pub fn write_compact(raw: &[u8], out: &mut Vec<u8>) {
    let (mut i, mut run) = (0, 0);
    while let Some(&b) = raw.get(i) {
        if b == b'"' {
            // Skip to the closing quote, stepping over escapes.
            let mut j = i + 1;
            loop {
                j = find::<false>(raw, j);
                match raw.get(j) {
                    Some(b'"') => break,
                    Some(b'\\') => j += 2,
                    Some(_) => j += 1,
                    None => break,
                }
            }
            i = j + 1;
        } else if is_ws(b) {
            out.extend_from_slice(&raw[run..i]);
            i = skip_ws(raw, i);
            run = i;
        } else {
            i += 1;
        }
    }
    out.extend_from_slice(raw.get(run..).unwrap_or_default());
}

#[cfg(test)]
mod tests {
    use super::*;

    fn collect(line: &[u8]) -> Result<Vec<(String, Vec<u8>)>, Error> {
        members(line)
            .map(|m| m.map(|(k, v)| (k.as_str().into_owned(), v.raw().to_vec())))
            .collect()
    }

    #[test]
    fn walks_members() {
        let line = br#" { "a" : 1 , "b":{"c":[1,2,{"d":null}]}, "e":"x\"y" ,"f" :true} "#;
        let got = collect(line).unwrap_or_default();
        assert_eq!(got.len(), 4);
        assert_eq!(got[1].1, br#"{"c":[1,2,{"d":null}]}"#.to_vec());
        assert_eq!(got[2].1, br#""x\"y""#.to_vec());
        assert_eq!(got[3].1, b"true".to_vec());
        assert_eq!(collect(b"{}").map(|v| v.len()), Ok(0));
        assert_eq!(collect(b" {\n}\r\n").map(|v| v.len()), Ok(0));
    }

    #[track_caller]
    fn invalid_at(line: &[u8], offset: usize) {
        let e = members(line).find_map(Result::err);
        assert_eq!(
            e.map(|e| e.offset),
            Some(offset),
            "{}: {e:?}",
            String::from_utf8_lossy(line)
        );
        assert!(!is_valid_object(line));
    }

    #[test]
    fn errors_name_the_place() {
        invalid_at(br#"{"a":1,"b":tru}"#, 11);
        invalid_at(br#"{"a":1"#, 6);
        invalid_at(br#"{"a":1}}"#, 7);
        invalid_at(b"[]", 0);
        invalid_at(b"", 0);
        invalid_at(b"{\"a\":\"\x01\"}", 6);
        invalid_at(b"{\"a\":\"\xff\"}", 6);
        invalid_at(b"{\"a\":\"\xc3\xa9\xc3\"}", 8);
        invalid_at(br#"{"a":"\ud800"}"#, 12);
        invalid_at(br#"{"a":"\udc00"}"#, 6);
        invalid_at(br#"{"a":"\ud800\u0041"}"#, 12);
        invalid_at(br#"{"a":"\x"}"#, 7);
        invalid_at(br#"{"a":01}"#, 6);
        invalid_at(br#"{"a":1.}"#, 7);
        invalid_at(br#"{"a":1e+}"#, 8);
        invalid_at(br#"{"a":-}"#, 6);
        invalid_at(br#"{"a":1e309}"#, 5);
        invalid_at(br#"{"a" 1}"#, 5);
        invalid_at(br#"{"a":1,}"#, 7);
        invalid_at(br#"{a:1}"#, 1);
        assert!(is_valid_object(br#"{"a":"\ud83d\ude00"}"#));
        assert!(is_valid_object(br#"{"a":1e308,"b":-1.5E-400,"c":0e999}"#));
    }

    #[test]
    fn nesting_is_limited_like_serde_json() {
        let nested = |n: usize| {
            let mut s = String::from(r#"{"a":"#);
            s.push_str(&"[".repeat(n));
            s.push_str(&"]".repeat(n));
            s.push('}');
            s
        };
        assert!(is_valid_object(nested(126).as_bytes()));
        assert!(!is_valid_object(nested(127).as_bytes()));
        assert_eq!(validate(b"[[]]"), Ok(Kind::Array));
        assert_eq!(validate(b" 1 "), Ok(Kind::Number));
    }

    #[test]
    fn escaped_keys_and_strings_compare_decoded() {
        let line = br#"{"le\u0076el":"err\u006Fr","n":5e2,"s":"a\n\u00e9\ud83d\ude00"}"#;
        assert!(field(line, "level").is_some_and(|v| v.str_eq("error")));
        assert!(!field(line, "level").is_some_and(|v| v.str_eq("erro")));
        assert!(!field(line, "level").is_some_and(|v| v.str_eq("errors")));
        assert!(field(line, "lev").is_none());
        assert_eq!(field(line, "n").and_then(|v| v.as_f64()), Some(500.0));
        let s = field(line, "s");
        assert!(s.is_some_and(|v| v.str_eq("a\n\u{e9}\u{1F600}")));
        assert_eq!(
            s.and_then(|v| v.as_str()).as_deref(),
            Some("a\n\u{e9}\u{1F600}")
        );
        assert_eq!(field(line, "missing"), None);
        assert_eq!(
            field(br#"{"a":1,"a":2}"#, "a").map(|v| v.raw()),
            Some(&b"1"[..])
        );
    }

    #[test]
    fn nested_access() {
        let line = br#"{"user":{"id":7,"tags":["x"]},"n":null}"#;
        let user = field(line, "user");
        assert_eq!(
            user.and_then(|u| u.field("id")).and_then(|v| v.as_i64()),
            Some(7)
        );
        assert_eq!(user.map(|u| u.members().count()), Some(2));
        assert!(field(line, "n").is_some_and(|v| v.is_null()));
        assert_eq!(field(line, "n").map(|v| v.members().count()), Some(0));
    }

    #[test]
    fn compacts_values() {
        let mut out = Vec::new();
        write_compact(br#"{ "a" : [ 1 , "x  \" y" ] ,"b":	{} }"#, &mut out);
        assert_eq!(out, br#"{"a":[1,"x  \" y"],"b":{}}"#);
        out.clear();
        write_compact(br#""a b""#, &mut out);
        assert_eq!(out, br#""a b""#);
    }

    /// `find` and its parts agree with a byte-by-byte search.
    #[track_caller]
    fn check_find(s: &[u8], from: usize) {
        let want = |non_ascii: bool| {
            (from..s.len())
                .find(|&i| matches!(s[i], b'"' | b'\\' | 0..0x20) || (non_ascii && s[i] >= 0x80))
                .unwrap_or(s.len())
        };
        let (strict, lax) = (want(true), want(false));
        assert_eq!(find::<true>(s, from), strict, "{s:?} from {from}");
        assert_eq!(find::<false>(s, from), lax, "{s:?} from {from}");
        let swar = find_bytes::<true>(s, swar::find::<true>(s, from));
        assert_eq!(swar, strict, "{s:?} from {from}");
        let swar = find_bytes::<false>(s, swar::find::<false>(s, from));
        assert_eq!(swar, lax, "{s:?} from {from}");
        let quick = (strict < s.len() && s[strict] == b'"').then_some(strict);
        for q in [quick_string(s, from), swar::quick_string(s, from)] {
            assert!(q.is_none() || q == quick, "{s:?} from {from}: {q:?}");
        }
    }

    #[test]
    fn finds_special_bytes() {
        let s = b"abcdefghijklmnopqrstuvwxyz0123456789ABCDEF\"";
        for i in 0..s.len() {
            check_find(s, i);
        }
        assert_eq!(quick_string(b"abc\"0123456789abcdef", 0), Some(3));
        assert_eq!(swar::quick_string(b"abc\"0123", 0), Some(3));
        for special in [b'"', b'\\', 0, 0x1f, b'\n', 0x7f, 0x80, 0xc3, 0xff, b' '] {
            for at in 0..40 {
                for other in [b'x', b'"', 0xe9, 0x01] {
                    let mut s = vec![b'x'; 40];
                    s[at] = special;
                    if at + 3 < 40 {
                        s[at + 3] = other;
                    }
                    for from in [0, at.saturating_sub(9), at] {
                        check_find(&s, from);
                    }
                }
            }
        }
        check_find("aé\"".as_bytes(), 0);
        check_find("aaaaaaaaaaaaaaaaaaaaaaaé\"".as_bytes(), 0);
    }
}
