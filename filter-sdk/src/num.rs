//! Number parsing straight from bytes, with the JSON number grammar
//! (`-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?`, nothing around it).

/// Parses a JSON integer (`-?(0|[1-9][0-9]*)`) that fits in an `i64`.
#[inline]
pub fn parse_i64(s: &[u8]) -> Option<i64> {
    let (neg, digits) = match s.split_first()? {
        (b'-', rest) => (true, rest),
        _ => (false, s),
    };
    match digits {
        [] => return None,
        [b'0', _, ..] => return None,
        _ if digits.len() > 19 => return None,
        _ => {}
    }
    // Accumulate negatively so that i64::MIN fits.
    let mut v: i64 = 0;
    for &d in digits {
        if !d.is_ascii_digit() {
            return None;
        }
        v = v.checked_mul(10)?.checked_sub(i64::from(d - b'0'))?;
    }
    if neg { Some(v) } else { v.checked_neg() }
}

/// Powers of ten that are exact in an `f64`.
const POW10: [f64; 23] = [
    1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11, 1e12, 1e13, 1e14, 1e15, 1e16,
    1e17, 1e18, 1e19, 1e20, 1e21, 1e22,
];

/// Parses a JSON number as `f64`, correctly rounded (`1e400` is infinity).
///
/// Short numbers (up to 15 significant digits and a small exponent, which
/// is nearly all of them) take an exact fast path; the rest go through the
/// standard library's parser.
pub fn parse_f64(s: &[u8]) -> Option<f64> {
    let at = |i: usize| s.get(i).copied().unwrap_or(0);
    let neg = at(0) == b'-';
    let mut i = usize::from(neg);
    // The digits without leading zeros, while there are at most 19 of them
    // (`significant` counts on); `fraction` counts the digits after the point.
    let (mut mantissa, mut significant, mut fraction) = (0u64, 0u32, 0i64);
    let mut digit = |d: u8| {
        if mantissa != 0 || d != b'0' {
            significant += 1;
        }
        if significant <= 19 {
            mantissa = mantissa * 10 + u64::from(d - b'0');
        }
    };
    match at(i) {
        b'0' => i += 1,
        b'1'..=b'9' => {
            while at(i).is_ascii_digit() {
                digit(at(i));
                i += 1;
            }
        }
        _ => return None,
    }
    if at(i) == b'.' {
        i += 1;
        if !at(i).is_ascii_digit() {
            return None;
        }
        while at(i).is_ascii_digit() {
            digit(at(i));
            fraction += 1;
            i += 1;
        }
    }
    let mut exp: i64 = 0;
    if at(i) | 0x20 == b'e' {
        i += 1;
        let exp_neg = at(i) == b'-';
        if matches!(at(i), b'-' | b'+') {
            i += 1;
        }
        if !at(i).is_ascii_digit() {
            return None;
        }
        while at(i).is_ascii_digit() {
            exp = (exp * 10 + i64::from(at(i) - b'0')).min(1_000_000);
            i += 1;
        }
        if exp_neg {
            exp = -exp;
        }
    }
    if i != s.len() {
        return None;
    }
    let e = exp - fraction;
    if significant <= 19 && mantissa < (1 << 53) && (-22..=22).contains(&e) {
        // Clinger's fast path: both operands exact, so one correct rounding.
        let m = mantissa as f64;
        let v = if e < 0 {
            m / POW10[e.unsigned_abs() as usize]
        } else {
            m * POW10[e as usize]
        };
        return Some(if neg { -v } else { v });
    }
    std::str::from_utf8(s).ok()?.parse().ok()
}

/// Whether `s` is exactly one JSON number.
pub fn is_json_number(s: &[u8]) -> bool {
    parse_f64(s).is_some()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn integers() {
        assert_eq!(parse_i64(b"0"), Some(0));
        assert_eq!(parse_i64(b"-0"), Some(0));
        assert_eq!(parse_i64(b"-12"), Some(-12));
        assert_eq!(parse_i64(b"9223372036854775807"), Some(i64::MAX));
        assert_eq!(parse_i64(b"-9223372036854775808"), Some(i64::MIN));
        assert_eq!(parse_i64(b"9223372036854775808"), None);
        assert_eq!(parse_i64(b"99999999999999999999"), None);
        for bad in [
            &b""[..],
            b"-",
            b"01",
            b"-01",
            b"1.0",
            b"1e2",
            b"+1",
            b" 1",
            b"1 ",
        ] {
            assert_eq!(parse_i64(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn floats() {
        assert_eq!(parse_f64(b"500"), Some(500.0));
        assert_eq!(parse_f64(b"500.0"), Some(500.0));
        assert_eq!(parse_f64(b"5e2"), Some(500.0));
        assert_eq!(parse_f64(b"5E+2"), Some(500.0));
        assert_eq!(parse_f64(b"-0.5E-1"), Some(-0.05));
        assert_eq!(parse_f64(b"0.1"), Some(0.1));
        assert_eq!(parse_f64(b"0.000001"), Some(0.000001));
        assert_eq!(parse_f64(b"123.456"), Some(123.456));
        assert_eq!(parse_f64(b"1e400"), Some(f64::INFINITY));
        assert_eq!(parse_f64(b"1e-400"), Some(0.0));
        assert!(parse_f64(b"-0").is_some_and(|v| v == 0.0 && v.is_sign_negative()));
        for bad in [
            &b""[..],
            b"-",
            b"1.",
            b".5",
            b"1e",
            b"1e+",
            b"inf",
            b"NaN",
            b"0x10",
            b"1_0",
            b"01",
            b"1.5 ",
            b"+1",
        ] {
            assert_eq!(parse_f64(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn floats_agree_with_the_standard_library() {
        let cases = [
            "0.30000000000000004",
            "9007199254740993",
            "9007199254740992.5",
            "1.7976931348623157e308",
            "2.2250738585072014e-308",
            "4.9e-324",
            "123456789012345678901234567890",
            "0.000000000000000000000000000001234",
            "3.141592653589793238462643383279",
            "1e22",
            "1e23",
            "12345678901234567e-5",
            "100000000000000000000000e-10",
        ];
        for c in cases {
            let want: f64 = c.parse().unwrap_or(f64::NAN);
            assert_eq!(parse_f64(c.as_bytes()), Some(want), "{c}");
            let neg = format!("-{c}");
            assert_eq!(parse_f64(neg.as_bytes()), Some(-want), "{neg}");
        }
    }
}
