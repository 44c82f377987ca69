//! The runtime's job mechanics: fresh instances, outputs, hashes, isolation,
//! the module cache, concurrency.

use std::time::Duration;

use kinesthetic::filter::{
    Cause, EngineSettings, GaveUp, IsolationBudget, Limits, Runtime, UNIFORM_PROBES,
    is_line_dependent, isolate,
};

use crate::filters;
use crate::harness::{input, load, out_lines, params, runtime};

/// A budget of `n` failing jobs only: no time limit to speak of, no probes
/// (the tests of the job budget alone).
fn jobs_budget(n: usize) -> IsolationBudget {
    IsolationBudget {
        max_failed_jobs: n,
        time: Duration::from_secs(600),
        uniform_probes: 0,
    }
}

fn default_budget() -> IsolationBudget {
    IsolationBudget::for_limits(&Limits::default())
}

#[test]
fn output_carries_the_module_hash_and_name() {
    let f = load(filters::GREP);
    let bytes = std::fs::read(filters::GREP).unwrap_or_else(|e| panic!("{e}"));
    let want = {
        use sha2::Digest;
        hex::encode(sha2::Sha256::digest(&bytes))
    };
    assert_eq!(f.sha256(), want);
    let inp = input(&[&b"a needle"[..], b"hay"]);
    let out = f
        .run(&inp, &params(&[("pattern", "needle")]), &Limits::default())
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(&*out.module_sha256, want.as_str());
    assert_eq!(&*out.filter, "grep");
}

#[test]
fn kept_lines_are_the_input_bytes_and_keys() {
    let f = load(filters::GREP);
    let inp = input(&[&b"x1"[..], b"y", b"x2"]);
    let out = f
        .run(&inp, &params(&[("pattern", "x")]), &Limits::default())
        .unwrap_or_else(|e| panic!("{e}"));
    let lines: Vec<_> = out.lines(&inp).collect();
    assert_eq!(lines.len(), 2);
    assert_eq!(
        (lines[0].index, lines[0].bytes, lines[0].key),
        (0, &b"x1"[..], &b"k0"[..])
    );
    assert_eq!(
        (lines[1].index, lines[1].bytes, lines[1].key),
        (2, &b"x2"[..], &b"k2"[..])
    );
    assert!(!lines[0].replaced && !lines[0].rekeyed && lines[0].route.is_none());
}

#[test]
fn no_state_survives_a_batch() {
    // `sample` keeps 1 in n by event id: the same input gives the same
    // output on every fresh instance, whatever ran before.
    let f = load(filters::SAMPLE);
    let lines: Vec<Vec<u8>> = (0..500).map(|i| format!("line {i}").into_bytes()).collect();
    let inp = input(&lines);
    let p = params(&[("n", "10")]);
    let first = out_lines(
        &f.run(&inp, &p, &Limits::default())
            .unwrap_or_else(|e| panic!("{e}")),
        &inp,
    );
    for _ in 0..5 {
        let again = f
            .run(&inp, &p, &Limits::default())
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(out_lines(&again, &inp), first);
    }
    assert!(
        !first.is_empty() && first.len() < 200,
        "kept {}",
        first.len()
    );
}

#[test]
fn jobs_of_one_filter_run_concurrently() {
    let f = std::sync::Arc::new(load(filters::GREP));
    let threads: Vec<_> = (0..4)
        .map(|t| {
            let f = std::sync::Arc::clone(&f);
            std::thread::spawn(move || {
                for i in 0..50 {
                    let l1 = format!("t{t} i{i} keep");
                    let inp = input(&[l1.as_bytes(), b"drop"]);
                    let out = f
                        .run(&inp, &params(&[("pattern", "keep")]), &Limits::default())
                        .unwrap_or_else(|e| panic!("{e}"));
                    assert_eq!(out_lines(&out, &inp), vec![l1.into_bytes()]);
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap_or_else(|_| panic!("worker panicked"));
    }
}

#[test]
fn poison_lines_are_isolated_and_the_rest_is_kept() {
    let f = load(filters::CHAOS);
    let lines: Vec<Vec<u8>> = (0..1000)
        .map(|i| {
            if i == 3 || i == 700 {
                format!("{i} POISON").into_bytes()
            } else {
                format!("{i} fine").into_bytes()
            }
        })
        .collect();
    let inp = input(&lines);
    let p = params(&[("mode", "poison")]);
    let err = f.run(&inp, &p, &Limits::default()).err();
    assert!(matches!(err.map(|e| e.cause), Some(Cause::Trap(_))));
    let iso = isolate(&f, &inp, &p, &Limits::default(), &default_budget())
        .unwrap_or_else(|e| panic!("{e}"));
    let poison: Vec<u32> = iso.poison.iter().map(|p| p.index).collect();
    assert_eq!(poison, [3, 700]);
    assert!(
        iso.poison
            .iter()
            .all(|p| p.isolated && matches!(p.error.cause, Cause::Trap(_)))
    );
    let kept: Vec<u32> = iso.lines.iter().map(|l| l.index).collect();
    let want: Vec<u32> = (0..1000).filter(|i| *i != 3 && *i != 700).collect();
    assert_eq!(kept, want);
    assert_eq!(iso.lines[0].bytes, b"0 fine");
    assert!(iso.jobs < 60, "bisection took {} jobs", iso.jobs);
}

#[test]
fn isolation_budget_bounds_the_work() {
    // Every line traps: with a budget of 3 failed jobs, the rest is reported
    // as not isolated instead of bisecting 1,000 lines one by one.
    let f = load(filters::CHAOS);
    let lines: Vec<Vec<u8>> = (0..1000)
        .map(|i| format!("{i} POISON").into_bytes())
        .collect();
    let inp = input(&lines);
    let iso = isolate(
        &f,
        &inp,
        &params(&[("mode", "poison")]),
        &Limits::default(),
        &jobs_budget(3),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(iso.poison.len(), 1000);
    assert!(iso.lines.is_empty());
    assert!(iso.poison.iter().any(|p| !p.isolated));
    assert!(iso.jobs <= 7, "{} jobs", iso.jobs);
}

/// A spent budget stops the splitting, not the work: every range left is
/// still run, so good lines are kept, and a line reported as not isolated
/// carries the error of a range it was run in.
#[test]
fn a_spent_isolation_budget_loses_no_good_line() {
    let f = load(filters::CHAOS);
    let lines: Vec<Vec<u8>> = (1..=1000)
        .map(|i| {
            if i % 40 == 0 {
                format!("{i} POISON")
            } else {
                format!("{i} good")
            }
            .into_bytes()
        })
        .collect();
    let inp = input(&lines);
    let iso = isolate(
        &f,
        &inp,
        &params(&[("mode", "poison")]),
        &Limits::default(),
        &default_budget(),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let kept: Vec<u32> = iso.lines.iter().map(|l| l.index).collect();
    let poison: Vec<u32> = iso.poison.iter().map(|p| p.index).collect();
    // Every line is accounted for exactly once, in one list or the other.
    let mut all: Vec<u32> = kept.iter().chain(&poison).copied().collect();
    all.sort_unstable();
    assert_eq!(all, (0..1000).collect::<Vec<u32>>());
    // Every poison line is reported; some not isolated (the budget is spent).
    for i in (39..1000).step_by(40) {
        assert!(poison.contains(&i), "line {i} not reported");
    }
    assert!(iso.poison.iter().any(|p| !p.isolated));
    // Good lines are kept except those last run together with a poison
    // line: splitting level by level leaves ranges of ≈ 16 lines around
    // each poison line (depth first, with the right half never run, kept
    // 351 of the 975).
    assert!(kept.len() > 600, "only {} good lines kept", kept.len());
    // The batch, the probes, then at most twice the failing-job budget.
    assert!(iso.jobs <= 1 + UNIFORM_PROBES + 2 * 64, "{} jobs", iso.jobs);
}

#[test]
fn isolation_returns_init_errors_instead_of_bisecting() {
    let f = load(filters::GREP);
    let inp = input(&[b"a", b"b"]);
    let e = isolate(
        &f,
        &inp,
        &params(&[]),
        &Limits::default(),
        &default_budget(),
    )
    .err()
    .unwrap_or_else(|| panic!("missing pattern must fail"));
    assert!(matches!(e.cause, Cause::Init(_)), "{e}");
}

#[test]
fn precompiled_modules_are_cached_on_disk() {
    let dir = crate::harness::tempdir();
    let rt = Runtime::new(EngineSettings {
        cache_dir: Some(dir.path().to_owned()),
        max_instances: 4,
        ..EngineSettings::default()
    })
    .unwrap_or_else(|e| panic!("{e}"));
    let path = std::path::Path::new(filters::GREP);
    let first = rt.load_file(path).unwrap_or_else(|e| panic!("{e}"));
    let entries: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap_or_else(|e| panic!("{e}"))
        .filter_map(Result::ok)
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(entries.len(), 1, "{entries:?}");
    assert!(entries[0].starts_with(first.sha256()) && entries[0].ends_with(".cwasm"));
    // A second load comes from the cache and behaves the same.
    let second = rt.load_file(path).unwrap_or_else(|e| panic!("{e}"));
    let inp = input(&[b"abc", b"xyz"]);
    let p = params(&[("pattern", "b")]);
    let a = second
        .run(&inp, &p, &Limits::default())
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(out_lines(&a, &inp), vec![b"abc".to_vec()]);
    // A corrupt cache entry is ignored and rewritten, not fatal.
    let entry = dir.path().join(&entries[0]);
    std::fs::write(&entry, b"garbage").unwrap_or_else(|e| panic!("{e}"));
    let third = rt.load_file(path).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(third.sha256(), first.sha256());
    let good = std::fs::read(&entry).unwrap_or_default();
    assert!(good.len() > 100);
    // Damage inside the artifact (its header intact): wasmtime alone would
    // load it and run the damaged machine code; the checksum catches it,
    // and the entry is rewritten.
    let mut damaged = good.clone();
    let mid = damaged.len() / 2;
    for b in &mut damaged[mid..mid + 64] {
        *b = 0xcc;
    }
    std::fs::write(&entry, &damaged).unwrap_or_else(|e| panic!("{e}"));
    let fourth = rt.load_file(path).unwrap_or_else(|e| panic!("{e}"));
    let b = fourth
        .run(&inp, &p, &Limits::default())
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(out_lines(&b, &inp), vec![b"abc".to_vec()]);
    assert!(
        std::fs::read(&entry).is_ok_and(|now| now != damaged),
        "the damaged entry was used, not rewritten"
    );
    // No temporary files are left behind.
    assert_eq!(
        std::fs::read_dir(dir.path()).map(|d| d.count()).ok(),
        Some(1)
    );
}

#[test]
fn warm_instance_gives_the_same_answer_as_fresh_ones() {
    let f = load(filters::ERRORS_ONLY);
    let data = kinesthetic::datagen::ndjson_logs(3, 300_000);
    let lines: Vec<&[u8]> = kinesthetic::event::split_lines(&data).collect();
    let inp = input(&lines);
    let fresh = f
        .run(&inp, &params(&[]), &Limits::default())
        .unwrap_or_else(|e| panic!("{e}"));
    let mut warm = f
        .warm(&params(&[]), &Limits::default())
        .unwrap_or_else(|e| panic!("{e}"));
    for _ in 0..3 {
        let w = warm.run(&inp).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(out_lines(&w, &inp), out_lines(&fresh, &inp));
    }
    let _ = runtime();
}

/// A failure before the filter sees the batch (here the memory cap, met
/// while instantiating) is not the lines' fault: one error, no bisection.
#[test]
fn a_failure_before_the_call_is_not_blamed_on_the_lines() {
    let f = load(filters::CHAOS);
    let lines: Vec<Vec<u8>> = (0..8).map(|i| format!("line {i}").into_bytes()).collect();
    let inp = input(&lines);
    let limits = Limits {
        memory_bytes: 0,
        ..Limits::default()
    };
    let e = f
        .run(&inp, &params(&[]), &limits)
        .err()
        .unwrap_or_else(|| panic!("a 0-byte memory cap must fail"));
    assert!(matches!(e.cause, Cause::Instantiate(_)), "{e}");
    assert!(e.to_string().contains("memory cap"), "{e}");
    assert!(!is_line_dependent(&e.cause));
    let r = isolate(&f, &inp, &params(&[]), &limits, &default_budget());
    assert!(
        r.is_err(),
        "isolation must give the error back, not poison lines"
    );
}

/// The bisection budget bounds the failing jobs: once it is spent nothing
/// is split further, and each range left runs once, so a filter that hits
/// its deadline on every line costs at most twice the budget in deadlines.
#[test]
fn the_bisection_budget_bounds_failing_jobs_exactly() {
    let f = load(filters::CHAOS);
    let lines: Vec<Vec<u8>> = (0..1000).map(|i| format!("{i}").into_bytes()).collect();
    let inp = input(&lines);
    let limits = Limits {
        deadline_ms: 5,
        ..Limits::default()
    };
    let p = params(&[("mode", "loop")]);
    let first = f
        .run(&inp, &p, &limits)
        .err()
        .unwrap_or_else(|| panic!("mode=loop must fail"));
    let iso = kinesthetic::filter::isolate_failed(&f, &inp, &p, &limits, &jobs_budget(8), first)
        .unwrap_or_else(|e| panic!("{e}"));
    // 7 failures split (the first one was charged): every split adds two
    // ranges to run, each run once at most, so 2 + 2 × 7 jobs.
    assert!(
        iso.jobs <= 16,
        "{} jobs after the first failure, budget 8",
        iso.jobs
    );
    assert_eq!(iso.poison.len(), 1000);
    assert!(iso.lines.is_empty());
    // Through `isolate`, the first run counts as a job too.
    let iso = isolate(&f, &inp, &p, &limits, &jobs_budget(8)).unwrap_or_else(|e| panic!("{e}"));
    assert!(iso.jobs <= 17, "{} jobs, budget 8", iso.jobs);
}

/// A filter that loops on every line: single lines spread over the batch
/// all hit the deadline, so isolation gives up after those probes instead
/// of bisecting (≈ 130 deadline-long jobs per 1,000 lines before), and the
/// whole batch is reported failed by that cause, not isolated.
#[test]
fn a_filter_that_fails_every_line_fails_fast() {
    let f = load(filters::CHAOS);
    let lines: Vec<Vec<u8>> = (0..1000).map(|i| format!("{i}").into_bytes()).collect();
    let inp = input(&lines);
    let limits = Limits {
        deadline_ms: 20,
        ..Limits::default()
    };
    let budget = IsolationBudget::for_limits(&limits);
    let iso = isolate(&f, &inp, &params(&[("mode", "loop")]), &limits, &budget)
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        iso.gave_up,
        Some(GaveUp::Uniform {
            probes: UNIFORM_PROBES
        })
    );
    // The batch's job and the probes, nothing more.
    assert_eq!(iso.jobs, 1 + UNIFORM_PROBES);
    assert!(iso.lines.is_empty());
    assert_eq!(iso.poison.len(), 1000);
    assert!(
        iso.poison
            .iter()
            .all(|p| !p.isolated && matches!(p.error.cause, Cause::Deadline { ms: 20 }))
    );
    let why = iso.gave_up.map(|g| g.to_string()).unwrap_or_default();
    assert!(why.contains("not one line's"), "{why}");
}

/// One line that hangs among good ones is still isolated: the probes pass,
/// bisection runs, and it fits the default time budget.
#[test]
fn one_hanging_line_is_still_isolated() {
    let f = load(filters::CHAOS);
    let lines: Vec<Vec<u8>> = (0..1000)
        .map(|i| {
            if i == 777 {
                "HANG".into()
            } else {
                format!("{i} ok")
            }
            .into_bytes()
        })
        .collect();
    let inp = input(&lines);
    let limits = Limits {
        deadline_ms: 20,
        ..Limits::default()
    };
    let iso = isolate(
        &f,
        &inp,
        &params(&[("mode", "hang")]),
        &limits,
        &IsolationBudget::for_limits(&limits),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(iso.gave_up, None);
    let poison: Vec<(u32, bool)> = iso.poison.iter().map(|p| (p.index, p.isolated)).collect();
    assert_eq!(poison, [(777, true)]);
    assert_eq!(iso.lines.len(), 999);
}

/// Hanging lines all over the batch (but not under the probes): isolation
/// stops when its time budget is spent; the good lines found by then are
/// kept, every line is accounted for once, and each hanging line is among
/// the failed ones.
#[test]
fn isolation_stops_at_its_time_budget() {
    let f = load(filters::CHAOS);
    let hangs = |i: usize| i % 50 == 25;
    let lines: Vec<Vec<u8>> = (0..1000)
        .map(|i| {
            if hangs(i) {
                format!("{i} HANG")
            } else {
                format!("{i} ok")
            }
            .into_bytes()
        })
        .collect();
    let inp = input(&lines);
    let limits = Limits {
        deadline_ms: 20,
        ..Limits::default()
    };
    let budget = IsolationBudget::for_limits(&limits).with_time_ms(200);
    let iso = isolate(&f, &inp, &params(&[("mode", "hang")]), &limits, &budget)
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(iso.gave_up, Some(GaveUp::Time { budget_ms: 200 }));
    let mut all: Vec<u32> = iso
        .lines
        .iter()
        .map(|l| l.index)
        .chain(iso.poison.iter().map(|p| p.index))
        .collect();
    all.sort_unstable();
    assert_eq!(all, (0..1000).collect::<Vec<u32>>());
    for i in (0..1000).filter(|i| hangs(*i)) {
        assert!(
            iso.poison.iter().any(|p| p.index == i as u32),
            "hanging line {i} not reported"
        );
    }
    assert!(iso.poison.iter().any(|p| !p.isolated));
    // Without the time budget, 20 hanging lines cost 64 or more failing
    // jobs of 20 ms each.
    assert!(iso.jobs < 64, "{} jobs", iso.jobs);
}

/// A filter's new keys and route names are checked where they enter: a
/// key that is not a Kinesis partition key (over 256 characters, a control
/// character) or an unbounded route name makes the answer malformed, and
/// isolation names exactly those lines.
#[test]
fn keys_and_routes_a_filter_sets_are_checked() {
    let f = load(filters::CHAOS);
    for (mode, bad, why) in [
        (
            "key",
            "k".repeat(10_000),
            "not a partition key: it must be 1 to 256",
        ),
        ("key", "evil\nforged".to_owned(), "U+000A"),
        (
            "route",
            "r".repeat(1 << 20),
            "not a route name: it must be 1 to 256 bytes",
        ),
        ("route", "a\tb".to_owned(), "U+0009"),
    ] {
        let lines: Vec<Vec<u8>> = vec![b"fine".to_vec(), bad.into_bytes(), b"also fine".to_vec()];
        let inp = input(&lines);
        let p = params(&[("mode", mode)]);
        let e = f
            .run(&inp, &p, &Limits::default())
            .err()
            .unwrap_or_else(|| panic!("{mode}: a bad value must fail the batch"));
        let msg = e.to_string();
        assert!(matches!(e.cause, Cause::Malformed(_)), "{msg}");
        assert!(msg.contains(why) && msg.contains("line 1"), "{mode}: {msg}");
        assert!(msg.len() < 400, "the value is not echoed whole: {msg}");
        let iso = isolate(&f, &inp, &p, &Limits::default(), &default_budget())
            .unwrap_or_else(|e| panic!("{e}"));
        let poison: Vec<u32> = iso.poison.iter().map(|p| p.index).collect();
        assert_eq!(poison, [1], "{mode}");
        assert_eq!(iso.lines.len(), 2);
    }
}
