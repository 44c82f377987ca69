//! Bad filters and bad input: every case is a clear error naming the filter
//! and the cause, and the host keeps serving other filters.

use kinesthetic::filter::{Cause, Limits, LoadError};

use crate::filters;
use crate::harness::{check, input, load, out_lines, params, runtime};

/// After every failure, another filter on the same runtime still works.
#[track_caller]
fn host_still_serves() {
    let grep = load(filters::GREP);
    check(&grep, &[("pattern", "ok")], &[b"ok 1", b"no"], &[b"ok 1"]);
}

#[track_caller]
fn load_err(name: &str, bytes: &[u8]) -> LoadError {
    match runtime().load(name, bytes) {
        Ok(_) => panic!("{name} should not load"),
        Err(e) => e,
    }
}

/// A module or component in the WebAssembly text format.
fn wat(text: &str) -> Vec<u8> {
    wat::parse_str(text).unwrap_or_else(|e| panic!("bad test WAT: {e}"))
}

#[test]
fn a_file_that_is_not_wasm() {
    let e = load_err("notes", b"hello, I am a text file\n");
    assert!(matches!(e, LoadError::NotWasm { .. }));
    assert!(
        e.to_string().contains("`notes`") && e.to_string().contains("not a WebAssembly"),
        "{e}"
    );
    let e = load_err("empty", b"");
    assert!(matches!(e, LoadError::NotWasm { .. }), "{e}");
    host_still_serves();
}

#[test]
fn a_truncated_component() {
    let bytes = std::fs::read(filters::GREP).unwrap_or_else(|e| panic!("{e}"));
    let e = load_err("cut", &bytes[..bytes.len() / 2]);
    assert!(matches!(e, LoadError::Compile { .. }), "{e}");
    assert!(e.to_string().contains("`cut` does not compile"), "{e}");
    // Cut inside the header: truncated, not "no magic".
    for n in [3, 6] {
        let e = load_err("short", &bytes[..n]);
        assert!(matches!(e, LoadError::Truncated { .. }), "{n}: {e}");
        assert!(e.to_string().contains("`short` is truncated"), "{e}");
    }
    host_still_serves();
}

#[test]
fn a_core_module_instead_of_a_component() {
    let e = load_err("core", &wat("(module (func (export \"filter\")))"));
    assert!(matches!(e, LoadError::CoreModule { .. }));
    assert!(
        e.to_string()
            .contains("core WebAssembly module, not a component"),
        "{e}"
    );
    host_still_serves();
}

#[test]
fn a_component_of_another_world() {
    let e = load_err(
        "hello",
        &wat(r#"(component
              (core module $m (func (export "f")))
              (core instance $i (instantiate $m))
              (func (export "hello") (canon lift (core func $i "f"))))"#),
    );
    assert!(matches!(e, LoadError::WrongWorld { .. }), "{e}");
    let msg = e.to_string();
    assert!(
        msg.contains("`hello`") && msg.contains("init") && msg.contains("filter"),
        "{msg}"
    );
    host_still_serves();
}

#[test]
fn a_component_that_imports_the_network_is_rejected() {
    let e = load_err(
        "sneaky",
        &wat(r#"(component
              (import "wasi:sockets/tcp@0.2.0" (instance (export "connect" (func)))))"#),
    );
    assert!(matches!(e, LoadError::ForbiddenImport { .. }), "{e}");
    assert!(e.to_string().contains("wasi:sockets/tcp@0.2.0"), "{e}");
    host_still_serves();
}

#[test]
fn a_filter_that_traps() {
    let f = load(filters::CHAOS);
    let e = f
        .run(
            &input(&[b"a"]),
            &params(&[("mode", "trap")]),
            &Limits::default(),
        )
        .err()
        .unwrap_or_else(|| panic!("trap expected"));
    assert!(matches!(e.cause, Cause::Trap(_)), "{e}");
    let msg = e.to_string();
    assert!(
        msg.contains("filter `chaos`") && msg.contains(&f.sha256()[..12]),
        "{msg}"
    );
    host_still_serves();
}

#[test]
fn a_filter_that_loops_forever_hits_the_deadline() {
    let f = load(filters::CHAOS);
    let limits = Limits {
        deadline_ms: 50,
        ..Limits::default()
    };
    let t = std::time::Instant::now();
    let e = f
        .run(&input(&[b"a"]), &params(&[("mode", "loop")]), &limits)
        .err()
        .unwrap_or_else(|| panic!("deadline expected"));
    assert_eq!(e.cause, Cause::Deadline { ms: 50 }, "{e}");
    assert!(t.elapsed() < std::time::Duration::from_secs(5));
    assert!(e.to_string().contains("deadline of 50 ms exceeded"));
    host_still_serves();
}

#[test]
fn a_filter_that_allocates_without_bound_hits_the_memory_cap() {
    let f = load(filters::CHAOS);
    let limits = Limits {
        memory_bytes: 16 << 20,
        ..Limits::default()
    };
    let e = f
        .run(&input(&[b"a"]), &params(&[("mode", "alloc")]), &limits)
        .err()
        .unwrap_or_else(|| panic!("memory cap expected"));
    match e.cause {
        Cause::MemoryLimit { limit, wanted } => {
            assert_eq!(limit, 16 << 20);
            assert!(wanted > limit);
        }
        ref other => panic!("expected a memory cap error, got {other}"),
    }
    assert!(
        e.to_string().contains("memory cap of 16 MiB exceeded"),
        "{e}"
    );
    host_still_serves();
}

#[test]
fn a_filter_that_recurses_without_bound() {
    let f = load(filters::CHAOS);
    let e = f
        .run(
            &input(&[b"a"]),
            &params(&[("mode", "recurse")]),
            &Limits::default(),
        )
        .err()
        .unwrap_or_else(|| panic!("stack overflow expected"));
    // Whichever stack runs out first: Wasm's own call stack (the host's
    // `max_wasm_stack`) or the guest's shadow stack in linear memory (Rust
    // keeps locals there; overflowing it is an out-of-bounds access).
    match &e.cause {
        Cause::StackOverflow => {}
        Cause::Trap(m) if m.contains("out of bounds memory access") => {}
        other => panic!("expected a stack overflow, got {other}"),
    }
    host_still_serves();
}

#[test]
fn a_filter_that_returns_out_of_range_indices() {
    let f = load(filters::CHAOS);
    let e = f
        .run(
            &input(&[b"a", b"b"]),
            &params(&[("mode", "bad-index")]),
            &Limits::default(),
        )
        .err()
        .unwrap_or_else(|| panic!("malformed answer expected"));
    match &e.cause {
        Cause::Malformed(m) => assert!(m.contains("but the batch has 2 lines"), "{m}"),
        other => panic!("expected malformed, got {other}"),
    }
    host_still_serves();
}

#[test]
fn a_filter_that_logs_a_million_lines_is_rate_limited() {
    let f = load(filters::CHAOS);
    let limits = Limits {
        deadline_ms: 20_000,
        logs_per_job: 5,
        ..Limits::default()
    };
    let inp = input(&[b"a", b"b"]);
    let out = f
        .run(&inp, &params(&[("mode", "log-flood")]), &limits)
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(out.len(), 2);
    let stats = f.log_stats();
    use std::sync::atomic::Ordering::Relaxed;
    assert_eq!(stats.forwarded.load(Relaxed), 5);
    assert_eq!(stats.suppressed.load(Relaxed), 1_000_000 - 5);
    // Across jobs, a filter gets at most LOGS_PER_SECOND lines in each
    // one-second window the jobs touch.
    let many = Limits {
        logs_per_job: 1_000,
        ..limits
    };
    let before = stats.forwarded.load(Relaxed);
    let t = std::time::Instant::now();
    for _ in 0..3 {
        f.run(&inp, &params(&[("mode", "log-flood")]), &many)
            .unwrap_or_else(|e| panic!("{e}"));
    }
    let forwarded = stats.forwarded.load(Relaxed) - before;
    let windows = t.elapsed().as_secs() + 2;
    assert!(
        forwarded <= windows * kinesthetic::filter::LOGS_PER_SECOND && forwarded < 3_000,
        "{forwarded} lines forwarded in {windows} windows"
    );
    host_still_serves();
}

#[test]
fn an_empty_input() {
    let f = load(filters::GREP);
    let inp = input::<&[u8]>(&[]);
    let out = f
        .run(&inp, &params(&[("pattern", "x")]), &Limits::default())
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(out.is_empty());
    let iso = kinesthetic::filter::isolate(
        &f,
        &inp,
        &params(&[("pattern", "x")]),
        &Limits::default(),
        &kinesthetic::filter::IsolationBudget::for_limits(&Limits::default()),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    assert!(iso.lines.is_empty() && iso.poison.is_empty());
}

#[test]
fn a_one_mib_line_passes_byte_for_byte() {
    let f = load(filters::GREP);
    let mut big = vec![b'a'; 1 << 20];
    big[(1 << 20) - 3..].copy_from_slice(b"END");
    let inp = input(&[&big[..], b"small"]);
    let out = f
        .run(&inp, &params(&[("pattern", "END")]), &Limits::default())
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(out_lines(&out, &inp), vec![big]);
}

#[test]
fn lines_that_are_not_utf8_go_through_as_bytes() {
    let f = load(filters::GREP);
    let weird: &[u8] = b"\xff\xfe needle \xc3\x28 \x00 end";
    check(
        &f,
        &[("pattern", "needle")],
        &[weird, b"\xff plain"],
        &[weird],
    );
    // redact rewrites around invalid bytes without touching them.
    let r = load(filters::REDACT);
    check(
        &r,
        &[],
        &[b"\xff mail a@b.io \xfe"],
        &[b"\xff mail [email] \xfe"],
    );
}

#[test]
fn missing_and_malformed_params_reach_the_user() {
    let grep = load(filters::GREP);
    let e = grep
        .run(&input(&[b"a"]), &params(&[]), &Limits::default())
        .err()
        .unwrap_or_else(|| panic!("init error expected"));
    assert!(matches!(e.cause, Cause::Init(_)), "{e}");
    assert!(e.to_string().contains("pattern"), "{e}");
    let sample = load(filters::SAMPLE);
    let e = sample
        .run(
            &input(&[b"a"]),
            &params(&[("n", "zero")]),
            &Limits::default(),
        )
        .err()
        .unwrap_or_else(|| panic!("init error expected"));
    assert!(
        matches!(e.cause, Cause::Init(_)) && e.to_string().contains("zero"),
        "{e}"
    );
    host_still_serves();
}

#[test]
fn fuel_needs_an_engine_that_counts_it() {
    let f = load(filters::GREP);
    let limits = Limits {
        fuel: Some(1_000),
        ..Limits::default()
    };
    let e = f
        .run(&input(&[b"a"]), &params(&[("pattern", "a")]), &limits)
        .err()
        .unwrap_or_else(|| panic!("error expected"));
    assert!(e.to_string().contains("does not count fuel"), "{e}");
}

#[test]
fn a_fuel_budget_stops_a_loop_deterministically() {
    let rt = fuel_runtime();
    let f = rt
        .load_file(std::path::Path::new(filters::CHAOS))
        .unwrap_or_else(|e| panic!("{e}"));
    let limits = Limits {
        fuel: Some(5_000_000),
        deadline_ms: 30_000,
        ..Limits::default()
    };
    let e = f
        .run(&input(&[b"a"]), &params(&[("mode", "loop")]), &limits)
        .err()
        .unwrap_or_else(|| panic!("out of fuel expected"));
    assert_eq!(e.cause, Cause::OutOfFuel { fuel: 5_000_000 }, "{e}");
}

/// A warm instance (the benches') gets the whole fuel budget for every
/// batch, as a fresh one does; it used to spend one budget over all batches.
#[test]
fn a_warm_instance_gets_the_fuel_budget_per_batch() {
    let rt = fuel_runtime();
    let f = rt
        .load_file(std::path::Path::new(filters::GREP))
        .unwrap_or_else(|e| panic!("{e}"));
    let lines: Vec<Vec<u8>> = (0..200)
        .map(|i| format!("line {i} with some words and an error here").into_bytes())
        .collect();
    let inp = input(&lines);
    let p = params(&[("pattern", "error")]);
    // Find a budget one batch fits in with room to spare, but not ten batches.
    let mut budget = 10_000u64;
    let limits = loop {
        let limits = Limits {
            fuel: Some(budget),
            ..Limits::default()
        };
        if f.run(&inp, &p, &limits).is_ok() {
            break limits;
        }
        budget *= 2;
        assert!(budget < 1 << 40, "no budget fits one batch");
    };
    let limits = Limits {
        fuel: limits.fuel.map(|b| b * 2),
        ..limits
    };
    let mut warm = f.warm(&p, &limits).unwrap_or_else(|e| panic!("{e}"));
    for batch in 0..10 {
        warm.run(&inp)
            .unwrap_or_else(|e| panic!("batch {batch} of a warm instance: {e}"));
    }
}

/// An engine that counts fuel (the shared test runtime does not).
fn fuel_runtime() -> kinesthetic::filter::Runtime {
    kinesthetic::filter::Runtime::new(kinesthetic::filter::EngineSettings {
        fuel: true,
        max_instances: 4,
        ..Default::default()
    })
    .unwrap_or_else(|e| panic!("{e}"))
}
