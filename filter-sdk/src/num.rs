//! Number parsing from bytes (JSON number grammar).

/// Parses a JSON integer (`-?(0|[1-9][0-9]*)`) that fits in an `i64`.
pub fn parse_i64(s: &[u8]) -> Option<i64> {
    let (neg, digits) = match s.split_first()? {
        (b'-', rest) => (true, rest),
        _ => (false, s),
    };
    if digits.is_empty() || digits.len() > 19 || (digits[0] == b'0' && digits.len() > 1) {
        return None;
    }
    let mut v: i64 = 0;
    for &d in digits {
        if !d.is_ascii_digit() {
            return None;
        }
        v = v.checked_mul(10)?.checked_sub(i64::from(d - b'0'))?;
    }
    if neg { Some(v) } else { v.checked_neg() }
}

/// Whether `s` is a JSON number.
pub fn is_json_number(s: &[u8]) -> bool {
    let mut i = 0;
    let at = |i: usize| s.get(i).copied().unwrap_or(0);
    if at(i) == b'-' {
        i += 1;
    }
    match at(i) {
        b'0' => i += 1,
        b'1'..=b'9' => {
            while at(i).is_ascii_digit() {
                i += 1;
            }
        }
        _ => return false,
    }
    if at(i) == b'.' {
        i += 1;
        if !at(i).is_ascii_digit() {
            return false;
        }
        while at(i).is_ascii_digit() {
            i += 1;
        }
    }
    if at(i) | 0x20 == b'e' {
        i += 1;
        if at(i) == b'+' || at(i) == b'-' {
            i += 1;
        }
        if !at(i).is_ascii_digit() {
            return false;
        }
        while at(i).is_ascii_digit() {
            i += 1;
        }
    }
    i == s.len()
}

/// Parses a JSON number as `f64` (integers exactly when they fit).
pub fn parse_f64(s: &[u8]) -> Option<f64> {
    if let Some(i) = parse_i64(s) {
        return Some(i as f64);
    }
    if !is_json_number(s) {
        return None;
    }
    std::str::from_utf8(s).ok()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn integers() {
        assert_eq!(parse_i64(b"0"), Some(0));
        assert_eq!(parse_i64(b"-12"), Some(-12));
        assert_eq!(parse_i64(b"9223372036854775807"), Some(i64::MAX));
        assert_eq!(parse_i64(b"-9223372036854775808"), Some(i64::MIN));
        assert_eq!(parse_i64(b"9223372036854775808"), None);
        for bad in [&b""[..], b"-", b"01", b"1.0", b"1e2", b"+1", b" 1"] {
            assert_eq!(parse_i64(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn floats() {
        assert_eq!(parse_f64(b"500.0"), Some(500.0));
        assert_eq!(parse_f64(b"5e2"), Some(500.0));
        assert_eq!(parse_f64(b"-0.5E-1"), Some(-0.05));
        for bad in [&b"1."[..], b".5", b"1e", b"inf", b"NaN", b"0x10", b"1_0"] {
            assert_eq!(parse_f64(bad), None, "{bad:?}");
        }
    }
}
