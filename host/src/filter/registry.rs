//! The filter registry: a directory of `NAME.wasm` components, watched and
//! hot-swapped between batches.
//!
//! * A new or changed file is compiled off the hot path, validated against the
//!   world, and swapped in atomically: jobs hold an `Arc` of the version they
//!   started with, so batches in flight finish on the old version.
//! * A module that fails to load is rejected with an error log line and the
//!   previous version (if any) keeps serving.
//! * Deleting a file unloads the filter: [`Registry::get`] returns `None` and
//!   a pipeline using it stops taking batches (and so holds its checkpoint,
//!   losing nothing) until a file of that name appears again.
//!
//! To replace a filter without the watcher seeing half a file, write it under
//! another name (e.g. `NAME.wasm.tmp`) and rename it to `NAME.wasm`; a
//! half-written file is rejected and retried on the next change anyway.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use sha2::{Digest, Sha256};
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

use super::error::LoadError;
use super::module::LoadedFilter;
use super::runtime::Runtime;

/// An immutable set of loaded filters; a new generation on every change.
#[derive(Debug, Default)]
pub struct FilterSet {
    pub generation: u64,
    pub filters: BTreeMap<String, Arc<LoadedFilter>>,
}

/// What one reload did.
#[derive(Debug, Default)]
pub struct ReloadReport {
    pub loaded: Vec<String>,
    pub unchanged: Vec<String>,
    pub removed: Vec<String>,
    pub failed: Vec<(String, LoadError)>,
}

pub struct Registry {
    runtime: Runtime,
    dir: PathBuf,
    current: watch::Sender<Arc<FilterSet>>,
    /// Serialises reloads (the watcher's and explicit ones).
    reload_lock: std::sync::Mutex<()>,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registry")
            .field("dir", &self.dir)
            .finish_non_exhaustive()
    }
}

impl Registry {
    pub fn new(runtime: Runtime, dir: impl Into<PathBuf>) -> Self {
        Self {
            runtime,
            dir: dir.into(),
            current: watch::channel(Arc::default()).0,
            reload_lock: std::sync::Mutex::new(()),
        }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The current filter set.
    pub fn current(&self) -> Arc<FilterSet> {
        self.current.borrow().clone()
    }

    /// The current version of filter `name`.
    pub fn get(&self, name: &str) -> Option<Arc<LoadedFilter>> {
        self.current.borrow().filters.get(name).cloned()
    }

    /// Notified on every new generation.
    pub fn subscribe(&self) -> watch::Receiver<Arc<FilterSet>> {
        self.current.subscribe()
    }

    /// Scans the directory and applies every change. Blocking: compiles.
    pub fn reload(&self) -> ReloadReport {
        let _guard = self
            .reload_lock
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let old = self.current();
        let mut report = ReloadReport::default();
        let mut next = BTreeMap::new();
        let entries = match std::fs::read_dir(&self.dir) {
            Ok(e) => e,
            Err(e) => {
                tracing::error!(dir = %self.dir.display(), error = %e, "cannot read the filters directory; keeping the loaded filters");
                return report;
            }
        };
        let mut files: Vec<PathBuf> = entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "wasm") && p.is_file())
            .collect();
        files.sort();
        for path in files {
            // A filter's name is its file stem; one that is not UTF-8 could
            // not be named in a pipeline, and two such would collide.
            let Some(name) = path.file_stem().and_then(|s| s.to_str()).map(str::to_owned) else {
                tracing::warn!(file = %path.display(), "filter file name is not UTF-8; ignored");
                continue;
            };
            let bytes = match std::fs::read(&path) {
                Ok(b) => b,
                Err(error) => {
                    // Vanished between listing and reading: removed. Any
                    // other error (permissions, I/O) is a failed load: the
                    // previous version keeps serving.
                    if error.kind() != std::io::ErrorKind::NotFound
                        && let Some(prev) = old.filters.get(&name)
                    {
                        tracing::error!(filter = %name, file = %path.display(), error = %error, keeping = %prev.sha256(), "cannot read the filter file; the previous version keeps serving");
                        next.insert(name.clone(), Arc::clone(prev));
                    }
                    report.failed.push((name, LoadError::Read { path, error }));
                    continue;
                }
            };
            let sha = hex::encode(Sha256::digest(&bytes));
            if let Some(prev) = old.filters.get(&name).filter(|f| f.sha256() == sha) {
                next.insert(name.clone(), Arc::clone(prev));
                report.unchanged.push(name);
                continue;
            }
            match self.runtime.load(&name, &bytes) {
                Ok(f) => {
                    tracing::info!(filter = %name, sha256 = %f.sha256(), "filter loaded");
                    next.insert(name.clone(), Arc::new(f));
                    report.loaded.push(name);
                }
                Err(e) => {
                    match old.filters.get(&name) {
                        Some(prev) => {
                            tracing::error!(filter = %name, error = %e, keeping = %prev.sha256(), "filter rejected; the previous version keeps serving");
                            next.insert(name.clone(), Arc::clone(prev));
                        }
                        None => tracing::error!(filter = %name, error = %e, "filter rejected"),
                    }
                    report.failed.push((name, e));
                }
            }
        }
        for name in old.filters.keys() {
            if !next.contains_key(name) {
                tracing::info!(filter = %name, "filter unloaded (file removed)");
                report.removed.push(name.clone());
            }
        }
        if !report.loaded.is_empty() || !report.removed.is_empty() {
            self.current.send_replace(Arc::new(FilterSet {
                generation: old.generation + 1,
                filters: next,
            }));
        }
        report
    }

    /// Loads the directory, then watches it until `cancel`: changes to
    /// `.wasm` files are debounced (`debounce` of quiet, or one second after
    /// the first change if changes keep coming) and applied by
    /// [`Registry::reload`] on a blocking thread.
    pub async fn watch(
        self: Arc<Self>,
        debounce: Duration,
        cancel: CancellationToken,
    ) -> Result<(), notify::Error> {
        use notify::Watcher;
        let (tx, mut rx) = mpsc::unbounded_channel();
        let mut watcher = notify::recommended_watcher(move |ev: notify::Result<notify::Event>| {
            // Only `.wasm` files are filters: a log or a `.part` file being
            // written beside them must not hold the reload back.
            if ev.is_ok_and(|ev| {
                !ev.kind.is_access()
                    && (ev.paths.is_empty()
                        || ev
                            .paths
                            .iter()
                            .any(|p| p.extension().is_some_and(|x| x == "wasm")))
            }) {
                let _ = tx.send(());
            }
        })?;
        watcher.watch(&self.dir, notify::RecursiveMode::NonRecursive)?;
        let mut watched = dir_identity(&self.dir);
        let me = Arc::clone(&self);
        let _ = tokio::task::spawn_blocking(move || me.reload()).await;
        let mut seen = fingerprint(&self.dir);
        loop {
            // Events, or a rescan now and then: a watch follows the
            // directory it was armed on, so a directory swapped in by
            // renames, or a symlinked file whose target changed, sends
            // nothing.
            let rescan = tokio::select! {
                _ = cancel.cancelled() => return Ok(()),
                got = rx.recv() => if got.is_none() { return Ok(()) } else { false },
                _ = tokio::time::sleep(RESCAN) => true,
            };
            if rescan {
                let now = dir_identity(&self.dir);
                if now != watched {
                    let _ = watcher.unwatch(&self.dir);
                    match watcher.watch(&self.dir, notify::RecursiveMode::NonRecursive) {
                        Ok(()) => {
                            tracing::info!(dir = %self.dir.display(), "filters directory replaced; watching the new one")
                        }
                        Err(e) => {
                            tracing::warn!(dir = %self.dir.display(), error = %e, "cannot watch the filters directory; rescanning it every few seconds")
                        }
                    }
                    watched = now;
                }
                if fingerprint(&self.dir) == seen {
                    continue;
                }
            }
            // Debounce: wait for `debounce` without events, but no longer
            // than `MAX_DEBOUNCE` in all: a file that keeps changing (a slow
            // copy) must not hold back the others' reload.
            let give_up = tokio::time::Instant::now() + debounce.max(MAX_DEBOUNCE);
            loop {
                tokio::select! {
                    _ = cancel.cancelled() => return Ok(()),
                    _ = tokio::time::sleep(debounce) => break,
                    _ = tokio::time::sleep_until(give_up) => break,
                    got = rx.recv() => if got.is_none() { return Ok(()) },
                }
            }
            let me = Arc::clone(&self);
            let _ = tokio::task::spawn_blocking(move || me.reload()).await;
            seen = fingerprint(&self.dir);
        }
    }
}

/// Longest a burst of changes puts a reload off (unless `debounce` is longer).
const MAX_DEBOUNCE: Duration = Duration::from_secs(1);

/// How often the watcher also rescans the directory.
const RESCAN: Duration = Duration::from_secs(2);

/// Which directory `dir` names now (device and inode on Unix).
fn dir_identity(dir: &Path) -> Option<(u64, u64)> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        std::fs::metadata(dir).ok().map(|m| (m.dev(), m.ino()))
    }
    #[cfg(not(unix))]
    {
        let _ = dir;
        None
    }
}

/// The `.wasm` files of `dir` with the size and modification time of what
/// they point to (symlinks followed): a cheap test for "something changed".
fn fingerprint(dir: &Path) -> Vec<(PathBuf, u64, Option<std::time::SystemTime>)> {
    let mut out: Vec<_> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "wasm"))
        .map(|p| {
            let m = std::fs::metadata(&p).ok();
            let len = m.as_ref().map_or(0, std::fs::Metadata::len);
            let modified = m.and_then(|m| m.modified().ok());
            (p, len, modified)
        })
        .collect();
    out.sort();
    out
}
