//! Kinesis's rule for stream names, in one place: the config, the intake,
//! the local log and the CLI all check names with it, and show names a
//! client sent through [`shown`], so a name of 5,000 characters is not
//! echoed whole.

/// The rule, as the messages state it.
pub const RULE: &str = "1 to 128 of A-Z a-z 0-9 _ . -";

/// Whether `s` is a stream name Kinesis accepts.
pub fn is_valid(s: &str) -> bool {
    (1..=128).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
}

/// `Ok` for a valid name; else a message naming it (shortened) and the rule.
pub fn check(s: &str) -> Result<(), String> {
    if is_valid(s) {
        Ok(())
    } else {
        Err(format!("{} is not a stream name ({RULE})", shown(s)))
    }
}

/// `s` quoted for a message: whole up to 64 characters, else its first 64
/// and how long it was.
pub fn shown(s: &str) -> String {
    const MAX: usize = 64;
    match s.char_indices().nth(MAX) {
        None => format!("{s:?}"),
        Some((cut, _)) => format!("{:?}… ({} bytes)", &s[..cut], s.len()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_kinesis_and_long_ones_are_shortened() {
        assert!(is_valid("logs.v2_a-b"));
        assert!(is_valid(&"a".repeat(128)));
        for bad in ["", "a b", "ü", "a/b"] {
            assert!(check(bad).is_err(), "{bad:?}");
        }
        let long = "x".repeat(5000);
        let e = check(&long).err().unwrap_or_default();
        assert!(
            e.len() < 200 && e.contains("(5000 bytes)") && e.contains(RULE),
            "{e}"
        );
        assert_eq!(shown("é".repeat(70).as_str()).matches('é').count(), 64);
    }
}
