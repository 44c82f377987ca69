//! Small file-system rules the local log, the checkpoints and the dir sink
//! share.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::Path;

/// fsyncs a directory, so a new entry or a rename in it survives a crash.
pub(crate) fn sync_dir(dir: &Path) -> std::io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Replaces `path` with `bytes` whole or not at all, durably: a temporary
/// file beside it, fsynced, renamed over it, and the directory fsynced.
pub(crate) fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = std::path::PathBuf::from(tmp);
    {
        let mut f = File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, path)?;
    match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => sync_dir(d),
        _ => Ok(()),
    }
}

/// Takes the exclusive lock file `name` in `dir` (created if needed) for
/// this process, and writes its pid there. `Ok(Err(holder))` when another
/// process holds it: what that process wrote (`pid N`), for the message.
pub(crate) fn lock_dir(dir: &Path, name: &str) -> std::io::Result<Result<File, String>> {
    let path = dir.join(name);
    let lock = OpenOptions::new()
        .create(true)
        .truncate(false)
        .read(true)
        .write(true)
        .open(&path)?;
    if lock.try_lock().is_err() {
        let holder = std::fs::read_to_string(&path).unwrap_or_default();
        return Ok(Err(holder.trim().to_owned()));
    }
    {
        let mut l = &lock;
        let _ = l.set_len(0);
        // The program and its subcommand name the holder; the rest of the
        // command line may hold secrets.
        let args: Vec<String> = std::env::args().take(2).collect();
        let _ = write!(l, "pid {}: {}", std::process::id(), args.join(" "));
    }
    Ok(Ok(lock))
}
