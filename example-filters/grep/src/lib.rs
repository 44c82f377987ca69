//! `grep`: keeps the lines that contain the parameter `pattern` (required),
//! byte for byte and case-sensitive. Works on any line, JSON or not, UTF-8
//! or not.
//!
//! The search looks for the pattern's first and last bytes at the right
//! distance, 16 positions at a time with Wasm SIMD (8 at a time in a `u64`
//! otherwise), and compares the whole pattern only there.

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

/// Whether `needle` occurs in `hay` (an empty needle occurs everywhere).
pub fn contains(hay: &[u8], needle: &[u8]) -> bool {
    let (Some(&first), Some(&last)) = (needle.first(), needle.last()) else {
        return true;
    };
    if hay.len() < needle.len() {
        return false;
    }
    // Candidate starts are 0..=end.
    let end = hay.len() - needle.len();
    #[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
    let i = match simd::search(hay, needle, first, last, end) {
        Ok(found) => return found,
        Err(resume) => resume,
    };
    #[cfg(not(all(target_arch = "wasm32", target_feature = "simd128")))]
    let i = 0;
    match swar::search(hay, needle, first, last, i, end) {
        Ok(found) => found,
        Err(resume) => (resume..=end).any(|at| is_at(hay, needle, at)),
    }
}

/// Whether `needle` is at `hay[at..]`.
#[inline(always)]
fn is_at(hay: &[u8], needle: &[u8], at: usize) -> bool {
    hay.get(at..at + needle.len()) == Some(needle)
}

/// Eight candidate positions at a time.
mod swar {
    const LO: u64 = 0x0101_0101_0101_0101;
    const HI: u64 = 0x8080_8080_8080_8080;

    fn word(s: &[u8], at: usize) -> Option<u64> {
        s.get(at..)?
            .first_chunk::<8>()
            .map(|w| u64::from_le_bytes(*w))
    }

    /// High bit set in each byte of `x` equal to `b` (and possibly in bytes
    /// above one that is: those are checked anyway).
    #[inline(always)]
    fn eq_mask(x: u64, b: u8) -> u64 {
        let v = x ^ (LO * u64::from(b));
        v.wrapping_sub(LO) & !v & HI
    }

    /// Searches candidate starts from `i` while whole words fit: `Ok` with
    /// the answer, or `Err` with where a byte-wise search must go on.
    pub(super) fn search(
        hay: &[u8],
        needle: &[u8],
        first: u8,
        last: u8,
        mut i: usize,
        end: usize,
    ) -> Result<bool, usize> {
        let tail = needle.len() - 1;
        while i + 8 <= end + 1 {
            let (Some(a), Some(b)) = (word(hay, i), word(hay, i + tail)) else {
                break;
            };
            let mut m = eq_mask(a, first) & eq_mask(b, last);
            while m != 0 {
                let at = i + (m.trailing_zeros() / 8) as usize;
                if super::is_at(hay, needle, at) {
                    return Ok(true);
                }
                m &= m - 1;
            }
            i += 8;
        }
        Err(i)
    }
}

/// Sixteen candidate positions at a time with Wasm SIMD.
#[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
mod simd {
    use core::arch::wasm32::*;

    fn load(s: &[u8], at: usize) -> Option<v128> {
        let c = s.get(at..)?.first_chunk::<16>()?;
        let lo = u64::from_le_bytes(*c.first_chunk::<8>()?);
        let hi = u64::from_le_bytes(*c.last_chunk::<8>()?);
        Some(u64x2(lo, hi))
    }

    pub(super) fn search(
        hay: &[u8],
        needle: &[u8],
        first: u8,
        last: u8,
        end: usize,
    ) -> Result<bool, usize> {
        let (f, l) = (u8x16_splat(first), u8x16_splat(last));
        let tail = needle.len() - 1;
        let mut i = 0;
        while i + 16 <= end + 1 {
            let (Some(a), Some(b)) = (load(hay, i), load(hay, i + tail)) else {
                break;
            };
            let mut m = u8x16_bitmask(v128_and(u8x16_eq(a, f), u8x16_eq(b, l)));
            while m != 0 {
                if super::is_at(hay, needle, i + m.trailing_zeros() as usize) {
                    return Ok(true);
                }
                m &= m - 1;
            }
            i += 16;
        }
        Err(i)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kinesthetic_filter::testing;

    /// The first lines of loghub's `Linux_2k.log`.
    const LINUX: &str = "\
Jun 14 15:16:01 combo sshd(pam_unix)[19939]: authentication failure; logname= uid=0 euid=0 tty=NODEVssh ruser= rhost=218.188.2.4
Jun 14 15:16:02 combo sshd(pam_unix)[19937]: check pass; user unknown
Jun 14 15:16:02 combo sshd(pam_unix)[19937]: authentication failure; logname= uid=0 euid=0 tty=NODEVssh ruser= rhost=218.188.2.4
Jun 15 02:04:59 combo sshd(pam_unix)[20882]: authentication failure; logname= uid=0 euid=0 tty=NODEVssh ruser= rhost=220-135-151-1.hinet-ip.hinet.net  user=root
Jun 15 04:06:18 combo su(pam_unix)[21416]: session opened for user cyrus by (uid=0)
Jun 15 04:06:19 combo su(pam_unix)[21416]: session closed for user cyrus
Jun 15 04:06:20 combo logrotate: ALERT exited abnormally with [1]
Jun 15 04:12:42 combo su(pam_unix)[22644]: session opened for user news by (uid=0)";

    #[track_caller]
    fn check(pattern: &str, expected: &[usize]) {
        let got = testing::run_str::<Grep>(&[("pattern", pattern)], LINUX)
            .unwrap_or_else(|e| panic!("{e}"));
        let lines: Vec<&str> = LINUX.lines().collect();
        let want: Vec<&str> = expected.iter().map(|&i| lines[i]).collect();
        assert_eq!(got, want.join("\n"), "pattern {pattern:?}");
    }

    #[test]
    fn keeps_matching_system_log_lines() {
        check("sshd", &[0, 1, 2, 3]);
        check("session opened", &[4, 7]);
        check("user=root", &[3]);
        check("J", &[0, 1, 2, 3, 4, 5, 6, 7]);
        check("[1]", &[6]);
        check("hinet.net  user", &[3]);
        check(
            "Jun 15 04:12:42 combo su(pam_unix)[22644]: session opened for user news by (uid=0)",
            &[7],
        );
        check("SSHD", &[]);
        check("news by (uid=0)!", &[]);
    }

    #[test]
    fn pattern_is_required_and_not_empty() {
        let e = testing::run::<Grep>(&[], &[b"x"]).err().unwrap_or_default();
        assert_eq!(e, "missing parameter `pattern`");
        let e = testing::run::<Grep>(&[("pattern", "")], &[b"x"]).err();
        assert!(e.is_some_and(|e| e.contains("`pattern`")));
    }

    #[test]
    fn works_on_any_bytes() {
        let out = testing::run::<Grep>(&[("pattern", "é")], &[b"\xff\xfe caf\xc3\xa9", b"cafe"])
            .unwrap_or_default();
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].index, 0);
    }

    #[test]
    fn agrees_with_a_naive_search() {
        let hay: Vec<u8> = (0..300u32)
            .map(|i| b"abcab"[(i * 7 % 5) as usize])
            .collect();
        let naive = |h: &[u8], n: &[u8]| n.is_empty() || h.windows(n.len()).any(|w| w == n);
        for len in 0..hay.len() {
            let h = &hay[..len];
            for needle in [
                &b"a"[..],
                b"ab",
                b"ba",
                b"abc",
                b"cab",
                b"bb",
                b"cc",
                b"cabac",
                b"x",
            ] {
                assert_eq!(contains(h, needle), naive(h, needle), "{needle:?} in {len}");
            }
            assert!(contains(h, b""));
            if len > 20 {
                assert!(contains(h, &h[len - 13..]));
                assert!(contains(h, &h[3..19]));
            }
        }
    }
}
