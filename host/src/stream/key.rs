//! Partition keys: the rule for keys that enter through Kinesthetic (the
//! intake's header and JSON field, a filter's re-key), and how any key,
//! whoever wrote it, is printed.
//!
//! Kinesis takes 1 to 256 Unicode characters. Kinesthetic also refuses
//! control characters where it can (its own entry points): a key is printed
//! one event per line (`stream tail`, `filter run --with-key`), so a key with
//! a newline or a tab could forge events there. Keys written by other
//! producers may still hold them, so printing escapes them ([`printable`]).

use std::borrow::Cow;

pub use kinesthetic_filter::rules::{MAX_KEY_CHARS, NameError as KeyError, check_key as check};

/// A key (or any short field printed between separators) as text that
/// cannot break a line or a column: invalid UTF-8 becomes U+FFFD, control
/// characters and backslashes are escaped (`\n`, `\t`, `\u{1b}`, `\\`).
pub fn printable(bytes: &[u8]) -> Cow<'_, str> {
    let text = String::from_utf8_lossy(bytes);
    if !text.chars().any(|c| c.is_control() || c == '\\') {
        return text;
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        if c.is_control() || c == '\\' {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn printed_keys_cannot_break_lines_or_columns() {
        assert_eq!(printable(b"plain key"), "plain key");
        assert_eq!(printable(b"a\nb\tc\\d\x1b"), "a\\nb\\tc\\\\d\\u{1b}");
        assert_eq!(printable(b"\xff"), "\u{fffd}");
        assert!(!printable(b"x\r\ny").contains('\n'));
    }
}
