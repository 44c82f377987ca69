//! `redact`: masks e-mail addresses as `[email]` and IPv4 addresses as
//! `[ipv4]` in any line, JSON or not. A line without either is kept as it
//! is (by index, no copy); every other byte is left untouched, UTF-8 or not.
//!
//! An e-mail address is `local@domain`: the local part made of letters,
//! digits and `._%+-` (not starting with a dot), the domain two or more
//! dot-separated labels of letters, digits and `-`, the last one letters
//! only (`a.b@c.d` is masked, `root@localhost` is not). A dot ending a
//! sentence is not part of it. An IPv4 address is four decimal numbers up to
//! 255 joined by dots, not part of a longer word or dotted number
//! (`999.1.1.1` and `1.2.3.4.5` are not).

use kinesthetic_filter::{Emit, Filter, Line, Params, export_filter};

pub struct Redact {
    /// This line's spans to mask (reused from line to line).
    spans: Vec<Span>,
}

/// A range of the line and its mask.
type Span = (usize, usize, &'static [u8]);

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

/// The e-mail address around the `@` at `s[at]`, as `(start, end)`.
fn email(s: &[u8], at: usize) -> Option<(usize, usize)> {
    let mut start = at;
    while start > 0 && is_local(s[start - 1]) {
        start -= 1;
    }
    while start < at && s[start] == b'.' {
        start += 1;
    }
    let mut end = at + 1;
    while end < s.len() && is_domain(s[end]) {
        end += 1;
    }
    // Dots and dashes at the end close the sentence, not the domain.
    while end > at + 1 && matches!(s[end - 1], b'.' | b'-') {
        end -= 1;
    }
    let domain = &s[at + 1..end];
    let mut labels = domain.split(|&b| b == b'.');
    let tld = labels.next_back()?;
    let labels_ok = labels
        .map(|l| !l.is_empty() && l[0] != b'-' && l[l.len() - 1] != b'-')
        .fold(domain.contains(&b'.'), |ok, l| ok && l);
    let tld_ok = !tld.is_empty() && tld.iter().all(u8::is_ascii_alphabetic);
    (start < at && labels_ok && tld_ok).then_some((start, end))
}

/// The end of the IPv4 address starting at `s[i]`.
fn ipv4(s: &[u8], i: usize) -> Option<usize> {
    let mut j = i;
    for part in 0..4 {
        let start = j;
        let mut v = 0u32;
        while j < s.len() && s[j].is_ascii_digit() && j - start < 3 {
            v = v * 10 + u32::from(s[j] - b'0');
            j += 1;
        }
        if j == start || v > 255 {
            return None;
        }
        if part < 3 {
            if s.get(j) != Some(&b'.') {
                return None;
            }
            j += 1;
        }
    }
    // Not part of a longer word or number (`1.2.3.45`, `1.2.3.4x`), nor of
    // a longer dotted number (`1.2.3.4.5`); a sentence's dot may follow.
    match s.get(j) {
        Some(b) if b.is_ascii_alphanumeric() => None,
        Some(b'.') if s.get(j + 1).is_some_and(u8::is_ascii_digit) => None,
        _ => Some(j),
    }
}

/// All spans of `s` to mask, in order, without overlaps.
pub fn find(s: &[u8], spans: &mut Vec<Span>) {
    spans.clear();
    let mut i = 0;
    while i < s.len() {
        let b = s[i];
        if b == b'@' {
            if let Some((start, end)) = email(s, i) {
                // An e-mail address swallows what was found in its local
                // part (`1.2.3.4@example.com`).
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
            && let Some(end) = ipv4(s, i)
        {
            spans.push((i, end, b"[ipv4]"));
            i = end;
            continue;
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
        assert_eq!(got, expected, "input: {input}");
    }

    #[test]
    fn masks_addresses() {
        check("from bob@example.com at 10.0.0.1", "from [email] at [ipv4]");
        check("a.b@c.d", "[email]");
        check("<first.last+tag@mail.example-corp.co.uk>", "<[email]>");
        check(
            r#"{"user":"x_y%z@a1.io","ip":"172.16.0.1"}"#,
            r#"{"user":"[email]","ip":"[ipv4]"}"#,
        );
        check("255.255.255.255:22 0.0.0.0", "[ipv4]:22 [ipv4]");
        check(
            "Failed password for root from 173.234.31.186 port 38926 ssh2",
            "Failed password for root from [ipv4] port 38926 ssh2",
        );
        check("1.2.3.4@example.com", "[email]");
        check("root@10.0.0.1", "root@[ipv4]");
    }

    #[test]
    fn trailing_dots_end_the_sentence() {
        check("mail a.b@c.de.", "mail [email].");
        check("mail a.b@c.de...", "mail [email]...");
        check("ip=192.168.1.254.", "ip=[ipv4].");
        check("see .bob@example.com", "see .[email]");
    }

    #[test]
    fn leaves_lookalikes_alone() {
        for line in [
            "version 1.2.3",
            "999.1.1.1",
            "1.2.3.256",
            "1.2.3.4.5",
            "a1.2.3.4",
            "1.2.3.4x",
            "1.2.3.4567",
            "user@localhost",
            "@home",
            "me@",
            "x@y.z1",
            "x@-y.com",
            "x@y..com",
            "2024-01-01T10:00:00Z",
        ] {
            check(line, line);
        }
    }

    #[test]
    fn untouched_lines_are_kept_by_index_and_others_replaced() {
        let out =
            testing::run::<Redact>(&[], &[b"plain \xff", b"a@b.io \xff", b""]).unwrap_or_default();
        let got: Vec<(u32, &[u8])> = out.iter().map(|o| (o.index, &o.bytes[..])).collect();
        assert_eq!(
            got,
            [(0, &b"plain \xff"[..]), (1, b"[email] \xff"), (2, b"")]
        );
    }
}
