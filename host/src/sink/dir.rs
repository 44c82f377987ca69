//! The directory sink: objects as files, laid out exactly like the S3 keys
//! (`ROOT/KEY`), each with its metadata beside it (`ROOT/KEY.meta.json`).
//!
//! A file is written under a temporary name in its own directory, fsynced,
//! and renamed into place (then the directory is fsynced), so a reader
//! never sees half an object and a write that returned survives a crash.
//! Writing a key again replaces the file.

use std::io::Write;
use std::path::{Component, Path, PathBuf};

use futures::future::BoxFuture;

use super::{Object, ObjectStore, SinkError};

#[derive(Debug, Clone)]
pub struct DirStore {
    name: String,
    root: PathBuf,
    fsync: bool,
}

impl DirStore {
    pub fn open(name: &str, root: &Path, fsync: bool) -> Result<Self, SinkError> {
        std::fs::create_dir_all(root).map_err(|e| SinkError::Setup {
            sink: name.to_owned(),
            message: format!("cannot create {}: {e}", root.display()),
        })?;
        if !root.is_dir() {
            return Err(SinkError::Setup {
                sink: name.to_owned(),
                message: format!("{} is not a directory", root.display()),
            });
        }
        Ok(Self {
            name: name.to_owned(),
            root: root.to_owned(),
            fsync,
        })
    }

    /// The file of `key`; a key that would leave the root is refused.
    fn path_of(&self, key: &str) -> Result<PathBuf, String> {
        let rel = Path::new(key);
        if key.is_empty() || rel.components().any(|c| !matches!(c, Component::Normal(_))) {
            return Err(format!("{key:?} is not a relative path inside the sink"));
        }
        Ok(self.root.join(rel))
    }

    fn write_blocking(&self, key: &str, object: &Object) -> Result<(), String> {
        let path = self.path_of(key)?;
        let dir = path.parent().unwrap_or(&self.root).to_owned();
        create_dirs(&self.root, &dir, self.fsync)
            .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        let meta: serde_json::Map<String, serde_json::Value> = object
            .metadata
            .iter()
            .map(|(k, v)| ((*k).to_owned(), serde_json::Value::String(v.clone())))
            .chain(
                object
                    .content_encoding
                    .map(|e| ("content-encoding".to_owned(), e.into())),
            )
            .collect();
        let meta = serde_json::to_vec_pretty(&meta).map_err(|e| e.to_string())?;
        // The metadata first: an object file never exists without it.
        let meta_path = PathBuf::from(format!("{}.meta.json", path.display()));
        self.write_file(&dir, &meta_path, &meta)?;
        self.write_file(&dir, &path, &object.body)?;
        if self.fsync {
            sync_dir(&dir).map_err(|e| format!("cannot fsync {}: {e}", dir.display()))?;
        }
        Ok(())
    }

    fn write_file(&self, dir: &Path, path: &Path, bytes: &[u8]) -> Result<(), String> {
        let mut tmp = tempfile::Builder::new()
            .prefix(".tmp-")
            .tempfile_in(dir)
            .map_err(|e| format!("cannot create a file in {}: {e}", dir.display()))?;
        tmp.write_all(bytes)
            .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
        if self.fsync {
            tmp.as_file()
                .sync_data()
                .map_err(|e| format!("cannot fsync {}: {e}", path.display()))?;
        }
        tmp.persist(path)
            .map(|_| ())
            .map_err(|e| format!("cannot rename into {}: {}", path.display(), e.error))
    }
}

use crate::fsutil::sync_dir;

/// Creates `dir` under `root` (and the directories between), fsyncing each
/// new directory's parent so its entry survives a crash.
fn create_dirs(root: &Path, dir: &Path, fsync: bool) -> std::io::Result<()> {
    if dir.is_dir() {
        return Ok(());
    }
    let mut missing = Vec::new();
    let mut d = dir;
    while !d.is_dir() && d != root {
        missing.push(d.to_owned());
        match d.parent() {
            Some(p) => d = p,
            None => break,
        }
    }
    std::fs::create_dir_all(dir)?;
    if fsync {
        for m in missing.iter().rev() {
            if let Some(p) = m.parent() {
                sync_dir(p)?;
            }
        }
    }
    Ok(())
}

impl ObjectStore for DirStore {
    fn put<'a>(&'a self, key: &'a str, object: &'a Object) -> BoxFuture<'a, Result<(), SinkError>> {
        Box::pin(async move {
            let this = self.clone();
            let (k, o) = (key.to_owned(), object.clone());
            tokio::task::spawn_blocking(move || this.write_blocking(&k, &o))
                .await
                .map_err(|e| e.to_string())
                .and_then(|r| r)
                .map_err(|message| SinkError::Write {
                    sink: self.name.clone(),
                    key: key.to_owned(),
                    message,
                })
        })
    }

    fn location(&self) -> String {
        format!("dir {}", self.root.display())
    }

    fn list<'a>(&'a self, prefix: &'a str) -> BoxFuture<'a, Result<Vec<String>, SinkError>> {
        Box::pin(async move {
            let root = self.root.clone();
            let prefix = prefix.to_owned();
            tokio::task::spawn_blocking(move || {
                let mut keys = Vec::new();
                list_under(&root, &root, &mut keys)?;
                keys.retain(|k: &String| k.starts_with(&prefix));
                keys.sort();
                Ok::<_, String>(keys)
            })
            .await
            .map_err(|e| e.to_string())
            .and_then(|r| r)
            .map_err(|message| SinkError::Setup {
                sink: self.name.clone(),
                message,
            })
        })
    }

    fn get<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<super::Stored, SinkError>> {
        Box::pin(async move {
            let read = || -> Result<super::Stored, String> {
                let path = self.path_of(key)?;
                let body = std::fs::read(&path)
                    .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
                let meta_path = PathBuf::from(format!("{}.meta.json", path.display()));
                let metadata = match std::fs::read(&meta_path) {
                    Ok(m) => serde_json::from_slice(&m).map_err(|e| {
                        format!("{}: not a metadata file: {e}", meta_path.display())
                    })?,
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => Default::default(),
                    Err(e) => return Err(format!("cannot read {}: {e}", meta_path.display())),
                };
                Ok(super::Stored {
                    body: body.into(),
                    metadata,
                })
            };
            read().map_err(|message| SinkError::Write {
                sink: self.name.clone(),
                key: key.to_owned(),
                message,
            })
        })
    }
}

/// The objects' keys under `dir` (not their `.meta.json`, nor temporary
/// or hidden files).
fn list_under(root: &Path, dir: &Path, out: &mut Vec<String>) -> Result<(), String> {
    let entries =
        std::fs::read_dir(dir).map_err(|e| format!("cannot list {}: {e}", dir.display()))?;
    for e in entries {
        let e = e.map_err(|e| format!("cannot list {}: {e}", dir.display()))?;
        let name = e.file_name();
        let name = name.to_string_lossy();
        if name.starts_with('.') {
            continue;
        }
        let path = e.path();
        let kind = e
            .file_type()
            .map_err(|e| format!("{}: {e}", path.display()))?;
        if kind.is_dir() {
            list_under(root, &path, out)?;
        } else if kind.is_file()
            && !name.ends_with(".meta.json")
            && let Ok(rel) = path.strip_prefix(root)
        {
            out.push(
                rel.to_string_lossy()
                    .replace(std::path::MAIN_SEPARATOR, "/"),
            );
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_replace_and_refuse_escapes() {
        let root = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let s = DirStore::open("t", root.path(), true).unwrap_or_else(|e| panic!("{e}"));
        let o = |body: &'static [u8]| Object {
            body: bytes::Bytes::from_static(body),
            content_type: "application/x-ndjson",
            content_encoding: None,
            metadata: vec![("line-count", "1".into())],
        };
        s.write_blocking("a/b/c.ndjson", &o(b"one\n"))
            .unwrap_or_else(|e| panic!("{e}"));
        s.write_blocking("a/b/c.ndjson", &o(b"two\n"))
            .unwrap_or_else(|e| panic!("{e}"));
        let got = std::fs::read(root.path().join("a/b/c.ndjson")).unwrap_or_default();
        assert_eq!(got, b"two\n");
        let meta =
            std::fs::read_to_string(root.path().join("a/b/c.ndjson.meta.json")).unwrap_or_default();
        assert!(meta.contains("\"line-count\": \"1\""), "{meta}");
        // Nothing else is left in the directory (no temporary files).
        let names: Vec<_> = std::fs::read_dir(root.path().join("a/b"))
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.file_name())
            .collect();
        assert_eq!(names.len(), 2, "{names:?}");
        for bad in ["../x", "/etc/x", "a/../../x", ""] {
            assert!(s.write_blocking(bad, &o(b"x")).is_err(), "{bad}");
        }
    }
}
