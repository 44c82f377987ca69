//! Hot drop: the watched filters directory.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use kinesthetic::filter::{Limits, Registry};
use tokio_util::sync::CancellationToken;

use crate::filters;
use crate::harness::{input, out_lines, params, runtime};

fn copy(from: &str, to: &Path) {
    // Write under a temporary name, then rename: what the docs recommend.
    let tmp = to.with_extension("tmp");
    std::fs::copy(from, &tmp).unwrap_or_else(|e| panic!("{e}"));
    std::fs::rename(&tmp, to).unwrap_or_else(|e| panic!("{e}"));
}

fn sha(path: &str) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(
        std::fs::read(path).unwrap_or_else(|e| panic!("{e}")),
    ))
}

/// Waits until `cond` holds for the registry (the watcher is asynchronous;
/// a swapped directory is seen at the next rescan, which a loaded machine
/// running the whole suite can delay by seconds).
async fn eventually(reg: &Registry, what: &str, cond: impl Fn(&Registry) -> bool) {
    for _ in 0..600 {
        if cond(reg) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("timed out waiting until {what}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hot_drop_swap_reject_and_unload() {
    let dir = crate::harness::tempdir();
    let target = dir.path().join("f.wasm");
    copy(filters::GREP, &target);
    let reg = Arc::new(Registry::new(runtime().clone(), dir.path()));
    let cancel = CancellationToken::new();
    let task = tokio::spawn(Arc::clone(&reg).watch(Duration::from_millis(100), cancel.clone()));

    let grep_sha = sha(filters::GREP);
    eventually(&reg, "grep is loaded", |r| {
        r.get("f").is_some_and(|f| f.sha256() == grep_sha)
    })
    .await;
    let gen1 = reg.current().generation;

    // A batch "in flight" holds the old version.
    let old = reg.get("f").unwrap_or_else(|| panic!("loaded"));

    // New version: redact under the same name.
    copy(filters::REDACT, &target);
    let redact_sha = sha(filters::REDACT);
    eventually(&reg, "redact replaces grep", |r| {
        r.get("f").is_some_and(|f| f.sha256() == redact_sha)
    })
    .await;
    assert!(reg.current().generation > gen1);
    let inp = input(&[&b"mail me: a@b.io"[..], b"zzz"]);
    let out = old
        .run(&inp, &params(&[("pattern", "mail")]), &Limits::default())
        .unwrap_or_else(|e| panic!("the old version still runs: {e}"));
    assert_eq!(out_lines(&out, &inp), vec![b"mail me: a@b.io".to_vec()]);
    assert_eq!(&*out.module_sha256, grep_sha.as_str());

    // A broken module is rejected; the previous version keeps serving.
    std::fs::write(&target, b"\0asm\x0d\0\x01\0 broken").unwrap_or_else(|e| panic!("{e}"));
    tokio::time::sleep(Duration::from_millis(600)).await;
    let cur = reg.get("f").unwrap_or_else(|| panic!("still loaded"));
    assert_eq!(cur.sha256(), redact_sha);
    let out = cur
        .run(&inp, &params(&[]), &Limits::default())
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(out_lines(&out, &inp)[0], b"mail me: [email]".to_vec());

    // A second filter appears alongside.
    copy(filters::SAMPLE, &dir.path().join("s.wasm"));
    eventually(&reg, "s is loaded", |r| r.get("s").is_some()).await;

    // Deleting the file unloads the filter.
    std::fs::remove_file(&target).unwrap_or_else(|e| panic!("{e}"));
    eventually(&reg, "f is unloaded", |r| r.get("f").is_none()).await;
    assert!(reg.get("s").is_some());

    cancel.cancel();
    let stopped = tokio::time::timeout(Duration::from_secs(5), task).await;
    assert!(matches!(stopped, Ok(Ok(Ok(())))), "watcher stops on cancel");
}

/// A batch really running while its filter is replaced finishes on the
/// version it started with; the next batch gets the new one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_in_flight_during_a_swap_finishes_on_its_version() {
    use std::sync::atomic::{AtomicBool, Ordering};
    let dir = crate::harness::tempdir();
    let target = dir.path().join("f.wasm");
    copy(filters::CHAOS, &target);
    let reg = Arc::new(Registry::new(runtime().clone(), dir.path()));
    let cancel = CancellationToken::new();
    let task = tokio::spawn(Arc::clone(&reg).watch(Duration::from_millis(50), cancel.clone()));
    let chaos_sha = sha(filters::CHAOS);
    eventually(&reg, "chaos is loaded", |r| {
        r.get("f").is_some_and(|f| f.sha256() == chaos_sha)
    })
    .await;

    // A batch that spins until its 3 s deadline.
    let running = reg.get("f").unwrap_or_else(|| panic!("loaded"));
    let finished = Arc::new(AtomicBool::new(false));
    let done = Arc::clone(&finished);
    let job = std::thread::spawn(move || {
        let inp = input(&[&b"x"[..]]);
        let limits = Limits {
            deadline_ms: 3_000,
            ..Limits::default()
        };
        let r = running.run(&inp, &params(&[("mode", "loop")]), &limits);
        done.store(true, Ordering::SeqCst);
        r
    });
    tokio::time::sleep(Duration::from_millis(100)).await;

    copy(filters::GREP, &target);
    let grep_sha = sha(filters::GREP);
    eventually(&reg, "grep replaces chaos", |r| {
        r.get("f").is_some_and(|f| f.sha256() == grep_sha)
    })
    .await;
    assert!(
        !finished.load(Ordering::SeqCst),
        "the batch ended before the swap: the test proves nothing"
    );
    // The next batch runs the new version while the old one still spins.
    let inp = input(&[&b"find me"[..], b"not this"]);
    let out = reg
        .get("f")
        .unwrap_or_else(|| panic!("loaded"))
        .run(&inp, &params(&[("pattern", "find")]), &Limits::default())
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(out_lines(&out, &inp), vec![b"find me".to_vec()]);
    assert_eq!(&*out.module_sha256, grep_sha.as_str());
    assert!(!finished.load(Ordering::SeqCst));

    let e = job
        .join()
        .unwrap_or_else(|_| panic!("job thread"))
        .err()
        .unwrap_or_else(|| panic!("a loop ends at its deadline"));
    assert_eq!(
        e.sha256, chaos_sha,
        "the in-flight batch ran on its own version"
    );
    assert!(e.to_string().contains("deadline of 3000 ms"), "{e}");

    cancel.cancel();
    let _ = tokio::time::timeout(Duration::from_secs(5), task).await;
}

#[test]
fn reload_reports_what_changed() {
    let dir = crate::harness::tempdir();
    copy(filters::GREP, &dir.path().join("a.wasm"));
    std::fs::write(dir.path().join("bad.wasm"), b"nope").unwrap_or_else(|e| panic!("{e}"));
    std::fs::write(dir.path().join("notes.txt"), b"ignored").unwrap_or_else(|e| panic!("{e}"));
    let reg = Registry::new(runtime().clone(), dir.path());
    let r = reg.reload();
    assert_eq!(r.loaded, ["a"]);
    assert_eq!(r.failed.len(), 1);
    assert_eq!(r.failed[0].0, "bad");
    assert!(
        r.failed[0]
            .1
            .to_string()
            .contains("`bad` is not a WebAssembly file")
    );
    let r = reg.reload();
    assert_eq!(r.unchanged, ["a"]);
    assert!(r.loaded.is_empty());
}

/// A file that keeps changing (a slow copy straight into `slow.wasm`) does
/// not hold back the reload of another filter for longer than a second
/// or so; it used to, for as long as the writes went on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_that_keeps_changing_does_not_hold_back_a_swap() {
    use std::io::Write as _;
    use std::sync::atomic::{AtomicBool, Ordering};
    let dir = crate::harness::tempdir();
    let target = dir.path().join("f.wasm");
    copy(filters::GREP, &target);
    let reg = Arc::new(Registry::new(runtime().clone(), dir.path()));
    let cancel = CancellationToken::new();
    let task = tokio::spawn(Arc::clone(&reg).watch(Duration::from_millis(300), cancel.clone()));
    let grep_sha = sha(filters::GREP);
    eventually(&reg, "grep is loaded", |r| {
        r.get("f").is_some_and(|f| f.sha256() == grep_sha)
    })
    .await;

    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let stop = Arc::clone(&stop);
        let path = dir.path().join("slow.wasm");
        std::thread::spawn(move || {
            let mut f = std::fs::File::create(&path).unwrap_or_else(|e| panic!("{e}"));
            let t = std::time::Instant::now();
            while !stop.load(Ordering::Relaxed) && t.elapsed() < Duration::from_secs(15) {
                f.write_all(&[0u8; 4096]).unwrap_or_else(|e| panic!("{e}"));
                std::thread::sleep(Duration::from_millis(50));
            }
        })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    let t = std::time::Instant::now();
    copy(filters::REDACT, &target);
    let redact_sha = sha(filters::REDACT);
    eventually(
        &reg,
        "redact replaces grep while slow.wasm is written",
        |r| r.get("f").is_some_and(|f| f.sha256() == redact_sha),
    )
    .await;
    let took = t.elapsed();
    stop.store(true, Ordering::Relaxed);
    let _ = writer.join();
    assert!(took < Duration::from_secs(5), "the swap took {took:?}");
    cancel.cancel();
    let _ = task.await;
}

/// A module file that cannot be read (here: a read that fails with EIO,
/// which works as root too) is a failed load, not a removal: the previous
/// version keeps serving.
#[cfg(target_os = "linux")]
#[test]
fn an_unreadable_module_keeps_the_previous_version() {
    let dir = crate::harness::tempdir();
    let path = dir.path().join("a.wasm");
    copy(filters::GREP, &path);
    let reg = Registry::new(runtime().clone(), dir.path());
    assert_eq!(reg.reload().loaded, ["a"]);
    std::fs::remove_file(&path).unwrap_or_else(|e| panic!("{e}"));
    std::os::unix::fs::symlink("/proc/self/mem", &path).unwrap_or_else(|e| panic!("{e}"));
    let r = reg.reload();
    assert!(r.removed.is_empty(), "unloaded: {:?}", r.removed);
    assert_eq!(r.failed.len(), 1);
    assert!(
        r.failed[0].1.to_string().contains("cannot read"),
        "{}",
        r.failed[0].1
    );
    assert_eq!(
        reg.get("a").map(|f| f.sha256().to_owned()),
        Some(sha(filters::GREP))
    );
    // Really gone: unloaded.
    std::fs::remove_file(&path).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(reg.reload().removed, ["a"]);
    assert!(reg.get("a").is_none());
}

/// A watch follows the directory it was armed on: a filters directory
/// swapped in by renames, or a symlinked module whose target changes,
/// sends it nothing. The registry notices anyway (it rescans every few
/// seconds, and re-arms its watch on the new directory).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_swapped_directory_and_a_changed_symlink_target_are_noticed() {
    let base = crate::harness::tempdir();
    let dir = base.path().join("filters");
    std::fs::create_dir(&dir).unwrap_or_else(|e| panic!("{e}"));
    copy(filters::GREP, &dir.join("f.wasm"));
    let reg = Arc::new(Registry::new(runtime().clone(), &dir));
    let cancel = CancellationToken::new();
    let task = tokio::spawn(Arc::clone(&reg).watch(Duration::from_millis(50), cancel.clone()));
    eventually(&reg, "f is loaded", |r| r.get("f").is_some()).await;

    // Swap the whole directory by renames, then add a module to the new one.
    let fresh = base.path().join("filters.new");
    std::fs::create_dir(&fresh).unwrap_or_else(|e| panic!("{e}"));
    copy(filters::GREP, &fresh.join("f.wasm"));
    std::fs::rename(&dir, base.path().join("filters.old")).unwrap_or_else(|e| panic!("{e}"));
    std::fs::rename(&fresh, &dir).unwrap_or_else(|e| panic!("{e}"));
    tokio::time::sleep(Duration::from_millis(2500)).await;
    copy(filters::REDACT, &dir.join("g.wasm"));
    eventually(
        &reg,
        "g, added to the swapped-in directory, is loaded",
        |r| r.get("g").is_some(),
    )
    .await;

    // A symlinked module whose target is replaced.
    let target = base.path().join("module.wasm");
    copy(filters::GREP, &target);
    #[cfg(unix)]
    {
        std::os::unix::fs::symlink(&target, dir.join("s.wasm")).unwrap_or_else(|e| panic!("{e}"));
        let grep_sha = sha(filters::GREP);
        eventually(&reg, "s is loaded", |r| {
            r.get("s").is_some_and(|f| f.sha256() == grep_sha)
        })
        .await;
        copy(filters::REDACT, &target);
        let redact_sha = sha(filters::REDACT);
        eventually(&reg, "s follows its target", |r| {
            r.get("s").is_some_and(|f| f.sha256() == redact_sha)
        })
        .await;
    }
    cancel.cancel();
    let _ = task.await;
}
