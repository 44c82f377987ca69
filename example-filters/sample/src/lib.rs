//! `sample`: keeps 1 event in `n` (parameter `n`, required, at least 1).
//!
//! The choice is a hash of the event id (listener and counter), so it is the
//! same on every run, every replay and every host: an event kept once is
//! always kept.

use kinesthetic_filter::{Emit, Filter, Line, Params, export_filter};

pub struct Sample {
    n: u64,
}

impl Filter for Sample {
    fn init(params: &Params) -> Result<Self, String> {
        let n: u64 = params
            .parse("n")?
            .ok_or("missing parameter `n` (keep 1 event in n)")?;
        if n == 0 {
            return Err("parameter `n` must be at least 1".into());
        }
        Ok(Sample { n })
    }

    fn line(&mut self, line: &Line<'_>, emit: &mut Emit<'_>) {
        if keeps(line.event_id(), self.n) {
            emit.keep();
        }
    }
}

export_filter!(Sample);

/// Whether the event `(listener, counter)` is among the 1 in `n` kept.
pub fn keeps((listener, counter): (u64, u64), n: u64) -> bool {
    splitmix64(listener ^ splitmix64(counter)).is_multiple_of(n)
}

/// SplitMix64's output function: a well-mixed hash of a 64-bit value.
fn splitmix64(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;
    use kinesthetic_filter::testing::{self, Input};

    #[test]
    fn keeps_about_one_in_n_by_event_id() {
        let mut input = Input::new();
        for i in 0..20_000u64 {
            // Two listeners with overlapping counters: still independent.
            input.push_event(format!("line {i}").as_bytes(), "", (i % 2 + 7, i / 2), 0);
        }
        let run = |n: &str| {
            testing::run_input::<Sample>(&[("n", n)], &input)
                .unwrap_or_else(|e| panic!("{e}"))
                .outputs
        };
        let tenth = run("10");
        assert!((1_800..2_200).contains(&tenth.len()), "{}", tenth.len());
        assert_eq!(tenth, run("10"), "deterministic");
        assert!(
            tenth
                .iter()
                .all(|o| keeps(((o.index % 2 + 7).into(), (o.index / 2).into()), 10))
        );
        assert_eq!(run("1").len(), 20_000);
        // The same event is kept whatever else is in its batch.
        let mut alone = Input::new();
        let first = &tenth[0];
        alone.push_event(
            &first.bytes,
            "",
            ((first.index % 2 + 7).into(), (first.index / 2).into()),
            0,
        );
        let kept = testing::run_input::<Sample>(&[("n", "10")], &alone).unwrap_or_default();
        assert_eq!(kept.outputs.len(), 1);
    }

    #[test]
    fn bad_n_is_named() {
        for (params, needle) in [
            (vec![], "missing parameter `n`"),
            (vec![("n", "0")], "at least 1"),
            (vec![("n", "x")], "parameter `n`: cannot parse `x`"),
            (vec![("n", "-1")], "`-1`"),
        ] {
            let e = testing::run::<Sample>(&params, &[b"a"])
                .err()
                .unwrap_or_default();
            assert!(e.contains(needle), "{e}");
        }
    }
}
