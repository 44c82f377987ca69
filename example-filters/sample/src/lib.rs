//! `sample`: keeps 1 in `n` events, chosen by a hash of the event id, so the
//! choice is the same on every run and every replay.

use kinesthetic_filter::{Emit, Filter, Line, Params, export_filter};

pub struct Sample {
    n: u64,
}

impl Filter for Sample {
    fn init(params: &Params) -> Result<Self, String> {
        let n: u64 = params
            .parse("n")?
            .ok_or_else(|| "missing parameter `n` (keep 1 in n)".to_owned())?;
        if n == 0 {
            return Err("parameter `n` must be at least 1".into());
        }
        Ok(Sample { n })
    }

    fn line(&mut self, line: &Line<'_>, emit: &mut Emit<'_>) {
        let (listener, counter) = line.event_id();
        if mix(listener ^ mix(counter)) % self.n == 0 {
            emit.keep();
        }
    }
}

export_filter!(Sample);

/// SplitMix64's finaliser: a well-spread hash of a 64-bit value.
fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;
    use kinesthetic_filter::testing;

    #[test]
    fn keeps_about_one_in_n_deterministically() {
        let lines: Vec<Vec<u8>> = (0..10_000).map(|i| format!("{i}").into_bytes()).collect();
        let refs: Vec<&[u8]> = lines.iter().map(Vec::as_slice).collect();
        let a = testing::run::<Sample>(&[("n", "10")], &refs).unwrap_or_default();
        let b = testing::run::<Sample>(&[("n", "10")], &refs).unwrap_or_default();
        assert_eq!(a, b);
        assert!((800..1200).contains(&a.len()), "{}", a.len());
    }

    #[test]
    fn bad_n_is_named() {
        for (p, needle) in [
            (vec![], "missing parameter `n`"),
            (vec![("n", "0")], "at least 1"),
            (vec![("n", "x")], "`x`"),
        ] {
            let e = testing::run::<Sample>(&p, &[b"a"])
                .err()
                .unwrap_or_default();
            assert!(e.contains(needle), "{e}");
        }
    }
}
