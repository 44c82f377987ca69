//! `chaos`: a TEST FIXTURE that misbehaves on purpose, so the host's tests
//! can check that every kind of misbehaviour is contained. Not an example to
//! follow. Parameter `mode`:
//!
//! `keep` (default) · `trap` (panic on every batch) · `poison` (panic on
//! lines containing `POISON`, keep the others) · `loop` (never returns) ·
//! `alloc` (allocates without bound) · `recurse` (unbounded recursion) ·
//! `bad-index` (answers with an out-of-range line index) · `log-flood`
//! (logs 1,000,000 lines, then keeps everything) · `init-error`.

use std::hint::black_box;

use kinesthetic_filter::{Emit, Filter, Level, Line, Params, export_filter, log};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Keep,
    Trap,
    Poison,
    Loop,
    Alloc,
    Recurse,
    BadIndex,
    LogFlood,
}

pub struct Chaos {
    mode: Mode,
    first: bool,
}

impl Filter for Chaos {
    fn init(params: &Params) -> Result<Self, String> {
        let mode = match params.get("mode").unwrap_or("keep") {
            "keep" => Mode::Keep,
            "trap" => Mode::Trap,
            "poison" => Mode::Poison,
            "loop" => Mode::Loop,
            "alloc" => Mode::Alloc,
            "recurse" => Mode::Recurse,
            "bad-index" => Mode::BadIndex,
            "log-flood" => Mode::LogFlood,
            "init-error" => return Err("chaos says no".into()),
            other => return Err(format!("parameter `mode`: unknown mode `{other}`")),
        };
        Ok(Chaos { mode, first: true })
    }

    fn line(&mut self, line: &Line<'_>, emit: &mut Emit<'_>) {
        let first = std::mem::replace(&mut self.first, false);
        match self.mode {
            Mode::Keep => emit.keep(),
            Mode::Trap => panic!("chaos: trap"),
            Mode::Poison => {
                if line.bytes().windows(6).any(|w| w == b"POISON") {
                    panic!("chaos: poison line {}", line.index());
                }
                emit.keep();
            }
            Mode::Loop => {
                let mut x = 0u64;
                while black_box(true) {
                    x = black_box(x.wrapping_add(1));
                }
            }
            Mode::Alloc => {
                let mut hoard: Vec<Vec<u8>> = Vec::new();
                loop {
                    hoard.push(vec![1u8; 1 << 20]);
                    black_box(&hoard);
                }
            }
            Mode::Recurse => {
                black_box(recurse(black_box(1)));
            }
            Mode::BadIndex => {
                emit.keep();
                if first {
                    kinesthetic_filter::__private::chaos_bad_index();
                }
            }
            Mode::LogFlood => {
                if first {
                    for i in 0..1_000_000u32 {
                        log(Level::Info, if i % 2 == 0 { "flood" } else { "more flood" });
                    }
                }
                emit.keep();
            }
        }
    }
}

#[allow(unconditional_recursion)] // the point of this mode
fn recurse(n: u64) -> u64 {
    black_box(recurse(black_box(n + 1))).wrapping_add(n)
}

export_filter!(Chaos);

#[cfg(test)]
mod tests {
    use super::*;
    use kinesthetic_filter::testing;

    #[test]
    fn keep_poison_and_init_error() {
        assert_eq!(
            testing::run::<Chaos>(&[], &[b"a", b"b"])
                .unwrap_or_default()
                .len(),
            2
        );
        let poison =
            std::panic::catch_unwind(|| testing::run::<Chaos>(&[("mode", "poison")], &[b"POISON"]));
        assert!(poison.is_err());
        let ok = testing::run::<Chaos>(&[("mode", "poison")], &[b"fine"]).unwrap_or_default();
        assert_eq!(ok.len(), 1);
        let e = testing::run::<Chaos>(&[("mode", "init-error")], &[b"a"]).err();
        assert_eq!(e.as_deref(), Some("chaos says no"));
    }
}
