//! `chaos`: a **test fixture** that misbehaves on purpose, so that the
//! host's tests can check that each kind of misbehaviour stays contained in
//! its batch. It is not an example to follow.
//!
//! Parameter `mode`:
//!
//! | mode | behaviour |
//! |---|---|
//! | `keep` (default) | keeps every line |
//! | `trap` | panics (traps) on every batch |
//! | `poison` | panics on a line containing `POISON`, keeps the others |
//! | `loop` | never returns |
//! | `hang` | never returns on a line containing `HANG`, keeps the others |
//! | `route` | keeps every line, with the line itself as its route name |
//! | `key` | keeps every line, with the line itself as its partition key, unchecked |
//! | `alloc` | allocates (and touches) memory without bound |
//! | `recurse` | recurses without bound |
//! | `bad-index` | answers with a line index past the end of the batch |
//! | `log-flood` | logs 1,000,000 messages per batch, then keeps every line |
//! | `init-error` | `init` fails with `chaos says no` |
//! | `print-then-panic` | prints 100 lines, then `context` without a newline, then panics |
//! | `clock` | reads the wall clock, which the host does not provide |
//! | `std` | uses what `std` does have in a filter: each line is replaced by its words in a `HashSet`'s order, then `env=…` (what `HOME` is); prints `stdout: LINE` and `stderr: LINE` (in pieces), and after the first line `first line done` without a newline |

use std::hint::black_box;

use kinesthetic_filter::{Context, Emit, Filter, Level, Line, Params, export_filter, log};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Keep,
    Trap,
    Poison,
    Hang,
    Route,
    Key,
    Loop,
    Alloc,
    Recurse,
    BadIndex,
    LogFlood,
    Clock,
    Std,
    PrintThenPanic,
}

pub struct Chaos {
    mode: Mode,
}

impl Filter for Chaos {
    fn init(params: &Params) -> Result<Self, String> {
        let mode = match params.get("mode").unwrap_or("keep") {
            "keep" => Mode::Keep,
            "trap" => Mode::Trap,
            "poison" => Mode::Poison,
            "hang" => Mode::Hang,
            "route" => Mode::Route,
            "key" => Mode::Key,
            "loop" => Mode::Loop,
            "alloc" => Mode::Alloc,
            "recurse" => Mode::Recurse,
            "bad-index" => Mode::BadIndex,
            "log-flood" => Mode::LogFlood,
            "clock" => Mode::Clock,
            "print-then-panic" => Mode::PrintThenPanic,
            "std" => Mode::Std,
            "init-error" => return Err("chaos says no".into()),
            other => return Err(format!("parameter `mode`: unknown mode `{other}`")),
        };
        Ok(Chaos { mode })
    }

    fn begin_batch(&mut self, _: &Context<'_>) {
        match self.mode {
            Mode::Trap => panic!("chaos: trap"),
            Mode::Loop => spin(),
            Mode::Alloc => {
                let mut hoard: Vec<Vec<u8>> = Vec::new();
                loop {
                    hoard.push(vec![1u8; 1 << 20]);
                    black_box(&mut hoard);
                }
            }
            Mode::Recurse => {
                black_box(recurse(black_box(1)));
            }
            Mode::BadIndex => kinesthetic_filter::__private::chaos_bad_index(),
            Mode::LogFlood => {
                for i in 0..1_000_000u32 {
                    log(Level::Info, if i % 2 == 0 { "flood" } else { "more flood" });
                }
            }
            Mode::Clock => {
                black_box(std::time::SystemTime::now());
            }
            Mode::PrintThenPanic => {
                for i in 0..100 {
                    println!("chatter {i}");
                }
                eprint!("context ");
                panic!("chaos: after prints");
            }
            Mode::Keep | Mode::Poison | Mode::Hang | Mode::Route | Mode::Key | Mode::Std => {}
        }
    }

    fn line(&mut self, line: &Line<'_>, emit: &mut Emit<'_>) {
        if self.mode == Mode::Poison && line.bytes().windows(6).any(|w| w == b"POISON") {
            panic!("chaos: poison line {}", line.index());
        }
        if self.mode == Mode::Hang && line.bytes().windows(4).any(|w| w == b"HANG") {
            spin();
        }
        if self.mode == Mode::Std {
            let text = String::from_utf8_lossy(line.bytes());
            let words: std::collections::HashSet<&str> = text.split_whitespace().collect();
            let mut out = words.into_iter().collect::<Vec<_>>().join(" ");
            let home = std::env::var("HOME").unwrap_or_else(|_| "absent".into());
            out.push_str(&format!(" env={home}"));
            println!("stdout: {text}");
            eprint!("stderr: ");
            eprintln!("{text}");
            if line.index() == 0 {
                eprint!("first line done"); // no newline: logged when the batch ends
            }
            emit.replace(out.as_bytes());
            return;
        }
        emit.keep();
        match self.mode {
            Mode::Route => emit.set_route(&String::from_utf8_lossy(line.bytes())),
            Mode::Key => emit.set_key(&String::from_utf8_lossy(line.bytes())),
            _ => {}
        }
    }
}

/// Recurses forever; `black_box` keeps the compiler from turning it into a
/// loop.
#[allow(unconditional_recursion)]
fn recurse(n: u64) -> u64 {
    black_box(recurse(black_box(n + 1))).wrapping_add(n)
}

export_filter!(Chaos);

/// Never returns (until the host's deadline stops the instance).
fn spin() {
    let mut x = 0u64;
    while black_box(true) {
        x = black_box(x.wrapping_add(1));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kinesthetic_filter::testing;

    #[test]
    fn keep_is_the_default() {
        let out = testing::run::<Chaos>(&[], &[b"a", b"POISON"]).unwrap_or_default();
        assert_eq!(out.len(), 2);
        let out = testing::run::<Chaos>(&[("mode", "keep")], &[b"a"]).unwrap_or_default();
        assert_eq!(out.len(), 1);
    }

    #[test]
    fn poison_panics_only_on_poison_lines() {
        let ok = testing::run::<Chaos>(&[("mode", "poison")], &[b"fine", b"POISO N"]);
        assert_eq!(ok.map(|o| o.len()), Ok(2));
        let poisoned = std::panic::catch_unwind(|| {
            testing::run::<Chaos>(&[("mode", "poison")], &[b"fine", b"xPOISONx"])
        });
        let message = poisoned.err().and_then(|p| p.downcast::<String>().ok());
        assert_eq!(
            message.as_deref().map(String::as_str),
            Some("chaos: poison line 1")
        );
    }

    #[test]
    fn std_mode_rewrites_each_line_to_its_words() {
        let out = testing::run::<Chaos>(&[("mode", "std")], &[b"b a b c"]).unwrap_or_default();
        let text = String::from_utf8_lossy(&out[0].bytes).into_owned();
        let (words, env) = text.rsplit_once(' ').unwrap_or_default();
        let mut words: Vec<&str> = words.split(' ').collect();
        words.sort();
        assert_eq!(words, ["a", "b", "c"]);
        assert!(env.starts_with("env="), "{text}");
    }

    #[test]
    fn init_error_and_unknown_modes_fail_init() {
        let e = testing::run::<Chaos>(&[("mode", "init-error")], &[b"a"]).err();
        assert_eq!(e.as_deref(), Some("chaos says no"));
        let e = testing::run::<Chaos>(&[("mode", "nope")], &[b"a"]).err();
        assert!(e.is_some_and(|e| e.contains("`nope`")));
    }
}
