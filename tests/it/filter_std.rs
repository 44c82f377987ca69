//! What Rust's standard library can and cannot do inside a filter: stdio
//! goes to the log, the environment is empty, `HashMap` gets a fixed seed,
//! clocks are denied with a clear error. And none of it costs an import.

use std::sync::atomic::Ordering::Relaxed;

use kinesthetic::filter::{Cause, Limits};

use crate::filters;
use crate::harness::{input, load, out_lines, params};

#[test]
fn sdk_filters_import_only_their_world() {
    // The SDK defines the wasi-libc functions std links (stdio, environment,
    // exit) inside the filter, so instantiating one resolves no WASI import.
    for path in [
        filters::ERRORS_ONLY,
        filters::GREP,
        filters::REDACT,
        filters::SAMPLE,
        filters::REKEY,
    ] {
        let f = load(path);
        let imports = &f.info().imports;
        assert_eq!(
            imports,
            &["kinesthetic:filter/types@0.1.0", "log"],
            "{path}"
        );
        assert!(f.info().stubbed_imports.is_empty(), "{path}");
    }
}

#[test]
fn std_in_a_filter_prints_to_the_log_and_hashes_deterministically() {
    let f = load(filters::CHAOS);
    let imports = &f.info().imports;
    let seed = imports
        .iter()
        .find(|i| i.starts_with("wasi:random/insecure-seed@0.2."));
    assert!(seed.is_some(), "chaos uses a HashSet: {imports:?}");
    assert!(
        seed.is_some_and(|s| !f.info().stubbed_imports.contains(s)),
        "the seed is provided, not stubbed: {:?}",
        f.info().stubbed_imports
    );

    let words: Vec<String> = (0..3)
        .map(|i| {
            (0..12)
                .map(|w| format!("w{i}x{w}"))
                .collect::<Vec<_>>()
                .join(" ")
        })
        .collect();
    let inp = input(&words);
    let p = params(&[("mode", "std")]);
    let run = || {
        let out = f
            .run(&inp, &p, &Limits::default())
            .unwrap_or_else(|e| panic!("{e}"));
        out_lines(&out, &inp)
            .into_iter()
            .map(|l| String::from_utf8(l).unwrap_or_else(|e| panic!("{e}")))
            .collect::<Vec<_>>()
    };
    let first = run();
    assert_eq!(first.len(), 3);
    for (line, want) in first.iter().zip(&words) {
        let (got, env) = line.rsplit_once(' ').unwrap_or_default();
        assert_eq!(env, "env=absent", "the environment is empty: {line}");
        let mut got: Vec<&str> = got.split(' ').collect();
        let mut want: Vec<&str> = want.split(' ').collect();
        got.sort_unstable();
        want.sort_unstable();
        assert_eq!(got, want);
    }
    // Every job is a fresh instance; with a seed drawn per instance, 12
    // words would come out in another order almost every time.
    for _ in 0..3 {
        assert_eq!(run(), first, "HashSet order changed between instances");
    }
    // One `println!` and one `eprint!` + `eprintln!` per line, the stderr
    // pieces joined into one message: six messages a job. (The `eprint!`
    // without a newline after the first line joins the second line's stderr
    // message, as on a terminal.)
    assert_eq!(f.log_stats().forwarded.load(Relaxed), 4 * 6);
    // With one line, nothing follows that partial line: it is logged when
    // the batch ends.
    f.run(&input(&[b"x"]), &p, &Limits::default())
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(f.log_stats().forwarded.load(Relaxed), 4 * 6 + 3);
    assert_eq!(f.log_stats().suppressed.load(Relaxed), 0);
}

#[test]
fn a_filter_that_reads_the_clock_gets_a_clear_error() {
    let f = load(filters::CHAOS);
    assert!(
        f.info()
            .stubbed_imports
            .iter()
            .any(|i| i.starts_with("wasi:clocks/wall-clock@")),
        "{:?}",
        f.info().stubbed_imports
    );
    let e = f
        .run(
            &input(&[b"a"]),
            &params(&[("mode", "clock")]),
            &Limits::default(),
        )
        .err()
        .unwrap_or_else(|| panic!("reading the clock must fail"));
    let Cause::Trap(msg) = &e.cause else {
        panic!("expected a trap, got {e}");
    };
    assert!(
        msg.contains("called `wasi:clocks/wall-clock@") && msg.contains("#now`"),
        "{msg}"
    );
    assert!(
        msg.contains("no files, network, environment or clocks"),
        "{msg}"
    );
    assert!(e.to_string().contains("filter `chaos`"), "{e}");
}

#[test]
fn a_panic_says_where_its_message_went() {
    let f = load(filters::CHAOS);
    let e = f
        .run(
            &input(&[b"a"]),
            &params(&[("mode", "trap")]),
            &Limits::default(),
        )
        .err()
        .unwrap_or_else(|| panic!("mode=trap must fail"));
    assert!(e.to_string().contains("its message is in the log"), "{e}");
    assert_eq!(
        f.log_stats().forwarded.load(Relaxed),
        1,
        "the panic message"
    );
}

#[test]
fn a_flood_of_prints_cannot_hide_a_panic_message() {
    let f = load(filters::CHAOS);
    let limits = Limits::default();
    let e = f
        .run(
            &input(&[b"a"]),
            &params(&[("mode", "print-then-panic")]),
            &limits,
        )
        .err()
        .unwrap_or_else(|| panic!("the filter panics"));
    assert!(e.to_string().contains("its message is in the log"), "{e}");
    let stats = f.log_stats();
    // The prints use up the job's budget; the panic's message, an error,
    // has its own and gets through.
    let budget = u64::from(limits.logs_per_job);
    assert_eq!(stats.forwarded.load(Relaxed), budget + 1);
    assert_eq!(stats.suppressed.load(Relaxed), 100 + 1 - budget);
}
