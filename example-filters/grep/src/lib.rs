//! `grep`: keeps lines containing the substring given by the `pattern`
//! parameter. Works on any bytes (JSON or not).

use kinesthetic_filter::{Emit, Filter, Line, Params, export_filter};

pub struct Grep {
    pattern: Vec<u8>,
}

impl Filter for Grep {
    fn init(params: &Params) -> Result<Self, String> {
        let pattern = params.require("pattern")?;
        if pattern.is_empty() {
            return Err("parameter `pattern` must not be empty".into());
        }
        Ok(Grep {
            pattern: pattern.as_bytes().to_vec(),
        })
    }

    fn line(&mut self, line: &Line<'_>, emit: &mut Emit<'_>) {
        if contains(line.bytes(), &self.pattern) {
            emit.keep();
        }
    }
}

export_filter!(Grep);

/// Substring search: scan for the first byte, then compare.
pub fn contains(hay: &[u8], needle: &[u8]) -> bool {
    let Some((&first, rest)) = needle.split_first() else {
        return true;
    };
    let mut i = 0;
    while i + needle.len() <= hay.len() {
        match hay[i..=hay.len() - needle.len()]
            .iter()
            .position(|&b| b == first)
        {
            None => return false,
            Some(p) => {
                let at = i + p;
                if hay[at + 1..at + needle.len()] == *rest {
                    return true;
                }
                i = at + 1;
            }
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;
    use kinesthetic_filter::testing;

    const LINUX: &str =
        "Jun 14 15:16:01 combo sshd(pam_unix)[19939]: authentication failure; logname= uid=0
Jun 14 15:16:02 combo sshd(pam_unix)[19937]: check pass; user unknown
Jun 15 02:04:59 combo su(pam_unix)[21416]: session opened for user cyrus by (uid=0)";

    #[test]
    fn keeps_matching_system_log_lines() {
        let got = testing::run_str::<Grep>(&[("pattern", "sshd")], LINUX).unwrap_or_default();
        assert_eq!(got.lines().count(), 2);
        assert!(got.lines().all(|l| l.contains("sshd")));
    }

    #[test]
    fn pattern_is_required() {
        let e = testing::run::<Grep>(&[], &[b"x"]).err().unwrap_or_default();
        assert!(e.contains("`pattern`"), "{e}");
    }

    #[test]
    fn substring_edges() {
        assert!(contains(b"abc", b"abc"));
        assert!(contains(b"xxabc", b"abc"));
        assert!(!contains(b"ab", b"abc"));
        assert!(contains(b"aab", b"ab"));
        assert!(!contains(b"", b"a"));
        assert!(contains(b"\xff\x00x", b"\x00x"));
    }
}
