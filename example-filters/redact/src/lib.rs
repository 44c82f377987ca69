//! `redact`: masks e-mail addresses (`[email]`) and IPv4 addresses
//! (`[ipv4]`) in any line, JSON or not. Lines without either are kept by
//! index (no copy); other bytes, valid UTF-8 or not, are left untouched.

use kinesthetic_filter::{Emit, Filter, Line, Params, export_filter};

pub struct Redact {
    spans: Vec<(usize, usize, &'static [u8])>,
}

impl Filter for Redact {
    fn init(_: &Params) -> Result<Self, String> {
        Ok(Redact { spans: Vec::new() })
    }

    fn line(&mut self, line: &Line<'_>, emit: &mut Emit<'_>) {
        let s = line.bytes();
        find(s, &mut self.spans);
        if self.spans.is_empty() {
            emit.keep();
            return;
        }
        emit.replace_with(|out| {
            let mut at = 0;
            for &(start, end, mask) in &self.spans {
                out.extend_from_slice(&s[at..start]);
                out.extend_from_slice(mask);
                at = end;
            }
            out.extend_from_slice(&s[at..]);
        });
    }
}

export_filter!(Redact);

fn is_local(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'%' | b'+' | b'-')
}

fn is_domain(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-')
}

/// The e-mail address around the `@` at `at`, as (start, end).
fn email(s: &[u8], at: usize) -> Option<(usize, usize)> {
    let mut start = at;
    while start > 0 && is_local(s[start - 1]) {
        start -= 1;
    }
    // A local part does not start with a dot.
    while start < at && s[start] == b'.' {
        start += 1;
    }
    let mut end = at + 1;
    while end < s.len() && is_domain(s[end]) {
        end += 1;
    }
    // Trailing dots end the sentence, not the domain.
    while end > at + 1 && s[end - 1] == b'.' {
        end -= 1;
    }
    let domain = &s[at + 1..end];
    let tld = domain.rsplit(|&b| b == b'.').next()?;
    let ok = start < at
        && domain.contains(&b'.')
        && !domain.starts_with(b".")
        && tld.len() >= 2
        && tld.iter().all(u8::is_ascii_alphabetic);
    ok.then_some((start, end))
}

/// The IPv4 address starting at `i`, as its end.
fn ipv4(s: &[u8], i: usize) -> Option<usize> {
    let mut j = i;
    for part in 0..4 {
        let start = j;
        let mut v = 0u32;
        while j < s.len() && s[j].is_ascii_digit() && j - start < 3 {
            v = v * 10 + u32::from(s[j] - b'0');
            j += 1;
        }
        if j == start || v > 255 || (j < s.len() && s[j].is_ascii_digit()) {
            return None;
        }
        if part < 3 {
            if s.get(j) != Some(&b'.') {
                return None;
            }
            j += 1;
        }
    }
    // Not followed by `.digit` (a longer dotted number such as a version).
    if s.get(j) == Some(&b'.') && s.get(j + 1).is_some_and(u8::is_ascii_digit) {
        return None;
    }
    Some(j)
}

/// All spans to mask, in order, without overlaps.
pub fn find(s: &[u8], spans: &mut Vec<(usize, usize, &'static [u8])>) {
    spans.clear();
    let mut i = 0;
    while i < s.len() {
        let b = s[i];
        if b == b'@' {
            if let Some((start, end)) = email(s, i) {
                // An e-mail swallows anything found inside its local part.
                while spans.last().is_some_and(|&(st, _, _)| st >= start) {
                    spans.pop();
                }
                if spans.last().is_none_or(|&(_, e, _)| e <= start) {
                    spans.push((start, end, b"[email]"));
                    i = end;
                    continue;
                }
            }
        } else if b.is_ascii_digit()
            && (i == 0 || !(s[i - 1].is_ascii_alphanumeric() || s[i - 1] == b'.'))
        {
            if let Some(end) = ipv4(s, i) {
                spans.push((i, end, b"[ipv4]"));
                i = end;
                continue;
            }
        }
        i += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kinesthetic_filter::testing;

    #[track_caller]
    fn check(input: &str, expected: &str) {
        let got = testing::run_str::<Redact>(&[], input).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(got, expected);
    }

    #[test]
    fn masks_addresses() {
        check("from bob@example.com at 10.0.0.1", "from [email] at [ipv4]");
        check("ip=192.168.1.254.", "ip=[ipv4].");
        check("mail a.b@c.de.", "mail [email].");
        check("255.255.255.255:22", "[ipv4]:22");
        check(
            "Failed password for root from 173.234.31.186 port 38926 ssh2",
            "Failed password for root from [ipv4] port 38926 ssh2",
        );
    }

    #[test]
    fn leaves_lookalikes_alone() {
        for line in [
            "version 1.2.3",
            "999.1.1.1",
            "1.2.3.4.5",
            "a1.2.3.4",
            "user@localhost",
            "@home",
            "x@y.z",
            "2024-01-01",
        ] {
            check(line, line);
        }
    }

    #[test]
    fn untouched_lines_are_kept_by_index() {
        let out = testing::run::<Redact>(&[], &[b"plain", b"a@b.io"]).unwrap_or_default();
        assert_eq!(out.len(), 2);
        assert_eq!(out[1].bytes, b"[email]");
    }
}
