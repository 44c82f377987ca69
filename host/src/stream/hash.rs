//! Kinesis's hash-key space: a partition key goes to the shard whose range
//! holds the MD5 of the key, read as a 128-bit big-endian number.

use md5::{Digest, Md5};

/// An inclusive range of 128-bit hash keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct HashRange {
    pub start: u128,
    pub end: u128,
}

impl HashRange {
    pub const ALL: HashRange = HashRange {
        start: 0,
        end: u128::MAX,
    };

    pub fn contains(&self, key: u128) -> bool {
        self.start <= key && key <= self.end
    }

    /// Whether every key from `span.0` to `span.1` is in the range.
    pub fn holds(&self, span: (u128, u128)) -> bool {
        self.contains(span.0) && self.contains(span.1)
    }

    /// `n` ranges of (nearly) equal width covering the whole key space, in
    /// order: range `i` starts at `floor(i * 2^128 / n)`.
    pub fn even(n: u32) -> Vec<HashRange> {
        let n = n.max(1);
        let starts: Vec<u128> = (0..n).map(|i| even_boundary(i, n)).collect();
        starts
            .iter()
            .enumerate()
            .map(|(i, &start)| HashRange {
                start,
                end: starts.get(i + 1).map_or(u128::MAX, |next| next - 1),
            })
            .collect()
    }
}

/// `floor(i * 2^128 / n)` without overflow, for `i < n`.
pub(crate) fn even_boundary(i: u32, n: u32) -> u128 {
    if i == 0 {
        return 0;
    }
    // 2^128 / n = q remainder r, computed from (2^128 - 1) / n.
    let n128 = u128::from(n);
    let mut q = u128::MAX / n128;
    let mut r = u128::MAX % n128 + 1;
    if r == n128 {
        q += 1;
        r = 0;
    }
    // i * 2^128 / n = i*q + i*r/n, with i*r < n^2 < 2^64.
    u128::from(i) * q + u128::from(i) * r / n128
}

/// The hash key of a partition key, as Kinesis computes it.
pub fn hash_key_of(partition_key: &str) -> u128 {
    let digest = Md5::digest(partition_key.as_bytes());
    let mut b = [0u8; 16];
    b.copy_from_slice(&digest);
    u128::from_be_bytes(b)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn even_ranges_cover_the_space_without_gaps() {
        for n in [1u32, 2, 3, 4, 7, 10, 64, 1000] {
            let r = HashRange::even(n);
            assert_eq!(r.len(), n as usize);
            assert_eq!(r[0].start, 0);
            assert_eq!(r[r.len() - 1].end, u128::MAX);
            for w in r.windows(2) {
                assert_eq!(w[0].end + 1, w[1].start, "n={n}");
            }
            // Widths differ by at most one.
            let widths: Vec<u128> = r.iter().map(|x| x.end - x.start).collect();
            let (lo, hi) = (widths.iter().min(), widths.iter().max());
            assert!(hi.zip(lo).is_some_and(|(h, l)| h - l <= 1), "n={n}");
        }
        // The halves Kinesis makes for two shards.
        assert_eq!(HashRange::even(2)[1].start, 1u128 << 127);
    }

    #[test]
    fn md5_hash_keys_match_kinesis() {
        // MD5("a") = 0cc175b9c0f1b6a831c399e269772661
        assert_eq!(hash_key_of("a"), 0x0cc175b9c0f1b6a831c399e269772661u128);
    }
}
