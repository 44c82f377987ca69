//! Checkpoints: where each pipeline is in each shard, behind a trait.
//!
//! A [`Lease`] is one (pipeline, shard) record, shaped like the KCL's
//! DynamoDB lease so a DynamoDB store can follow: an owner and a counter
//! for conditional writes, the shard's parents (a child starts only after
//! they are checkpointed at their end), the pipeline's checkpoint, and each
//! sink's own position, so that a sink's objects are cut again exactly where
//! they were after a restart (see `pipeline`).
//!
//! The local store keeps one JSON file per lease, written to a temporary
//! file, fsynced and renamed into place (the directory fsynced too), so a
//! crash leaves the old or the new checkpoint, never a torn one.

use std::collections::BTreeMap;
use std::fs::File;
use std::future::Future;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};

use crate::event::{SequenceNumber, ShardId};

/// How far a pipeline has delivered a shard.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case", tag = "at", content = "sequence")]
pub enum Checkpoint {
    /// Nothing delivered yet: start at the pipeline's initial position.
    #[default]
    Start,
    /// Every record up to and including this one is delivered.
    After(SequenceNumber),
    /// The shard is closed and every record of it is delivered.
    ShardEnd,
}

/// Where a lease without a checkpoint starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "at", content = "ms")]
pub enum StartAt {
    TrimHorizon,
    /// Records that reached the stream at or after this time (ms since
    /// the Unix epoch).
    Time(i64),
}

/// An object a sink decided to write but may not have written: after a
/// restart the sink cuts it again at exactly these records.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cut {
    pub first: SequenceNumber,
    pub last: SequenceNumber,
}

/// One sink's position in a shard.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct SinkPosition {
    /// Every record up to and including this one is written (or had nothing
    /// for this sink).
    #[serde(default)]
    pub after: Option<SequenceNumber>,
    /// An object being written.
    #[serde(default)]
    pub pending: Option<Cut>,
}

/// One (pipeline, shard) record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lease {
    pub pipeline: String,
    pub stream: String,
    pub shard: ShardId,
    #[serde(default)]
    pub parents: Vec<ShardId>,
    /// The host holding the lease (local store: this process).
    #[serde(default)]
    pub owner: Option<String>,
    /// Bumped by every write; a write names the counter it read
    /// (conditional write), so two owners cannot both move a checkpoint.
    pub counter: u64,
    pub checkpoint: Checkpoint,
    /// Where the shard is read from while it has no checkpoint, fixed when
    /// the lease is made: an initial position of LATEST becomes the time the
    /// lease was made, so a restart before the first checkpoint (or with
    /// another initial position configured) skips nothing that was read but
    /// not yet delivered.
    #[serde(default)]
    pub start: Option<StartAt>,
    #[serde(default)]
    pub sinks: BTreeMap<String, SinkPosition>,
    /// When the checkpoint was last written, ms since the Unix epoch.
    #[serde(default)]
    pub updated_ms: i64,
}

impl Lease {
    pub fn new(pipeline: &str, stream: &str, shard: ShardId, parents: Vec<ShardId>) -> Self {
        Self {
            pipeline: pipeline.to_owned(),
            stream: stream.to_owned(),
            shard,
            parents,
            owner: None,
            counter: 0,
            checkpoint: Checkpoint::Start,
            start: None,
            sinks: BTreeMap::new(),
            updated_ms: 0,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    #[error(
        "checkpoint of pipeline {pipeline:?} shard {shard} was changed by someone else \
         (expected version {expected}, found {found})"
    )]
    Conflict {
        pipeline: String,
        shard: ShardId,
        expected: u64,
        found: u64,
    },
    #[error("checkpoint store {path}: {error}")]
    Io { path: String, error: std::io::Error },
    #[error(
        "checkpoint file {path} is damaged ({message}); move it aside to start that shard over"
    )]
    Corrupt { path: String, message: String },
    #[error("{0}")]
    Locked(String),
}

/// Where leases live. Writes are conditional on the counter the writer read.
pub trait CheckpointStore: Clone + Send + Sync + 'static {
    /// Every lease of `pipeline`.
    fn list(
        &self,
        pipeline: &str,
    ) -> impl Future<Output = Result<Vec<Lease>, CheckpointError>> + Send;

    /// Writes `lease` if the stored one has counter `lease.counter` (or
    /// does not exist, for counter 0); returns it with the counter bumped.
    fn put(&self, lease: &Lease) -> impl Future<Output = Result<Lease, CheckpointError>> + Send;
}

/// Leases as JSON files: `DIR/PIPELINE/SHARD.json`.
#[derive(Debug, Clone)]
pub struct LocalCheckpoints {
    inner: Arc<LocalInner>,
}

#[derive(Debug)]
struct LocalInner {
    dir: PathBuf,
    fsync: bool,
    /// Serialises the compare-and-write within this process.
    write: Mutex<()>,
    _lock: File,
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> CheckpointError + '_ {
    move |error| CheckpointError::Io {
        path: path.display().to_string(),
        error,
    }
}

impl LocalCheckpoints {
    /// Opens (creating) the store in `dir`; one process per directory.
    pub fn open(dir: &Path, fsync: bool) -> Result<Self, CheckpointError> {
        std::fs::create_dir_all(dir).map_err(io(dir))?;
        let lock = match crate::fsutil::lock_dir(dir, ".lock").map_err(io(dir))? {
            Ok(lock) => lock,
            Err(holder) => {
                return Err(CheckpointError::Locked(format!(
                    "the checkpoints in {} are in use by another consumer ({holder}); give \
                     each consumer its own consumer.checkpoints.dir, or stop the other one",
                    dir.display(),
                )));
            }
        };
        Ok(Self {
            inner: Arc::new(LocalInner {
                dir: dir.to_owned(),
                fsync,
                write: Mutex::new(()),
                _lock: lock,
            }),
        })
    }

    pub fn dir(&self) -> &Path {
        &self.inner.dir
    }

    fn path(&self, pipeline: &str, shard: &ShardId) -> PathBuf {
        self.inner
            .dir
            .join(pipeline)
            .join(format!("{}.json", shard.as_str()))
    }

    fn read(path: &Path) -> Result<Option<Lease>, CheckpointError> {
        match std::fs::read(path) {
            Ok(bytes) => {
                serde_json::from_slice(&bytes)
                    .map(Some)
                    .map_err(|e| CheckpointError::Corrupt {
                        path: path.display().to_string(),
                        message: e.to_string(),
                    })
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io(path)(e)),
        }
    }

    fn list_blocking(&self, pipeline: &str) -> Result<Vec<Lease>, CheckpointError> {
        let dir = self.inner.dir.join(pipeline);
        let entries = match std::fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(io(&dir)(e)),
        };
        let mut out = Vec::new();
        for e in entries {
            let path = e.map_err(io(&dir))?.path();
            if path.extension().is_some_and(|x| x == "json")
                && let Some(l) = Self::read(&path)?
            {
                out.push(l);
            }
        }
        out.sort_by(|a, b| a.shard.cmp(&b.shard));
        Ok(out)
    }

    fn put_blocking(&self, lease: &Lease) -> Result<Lease, CheckpointError> {
        let _g = self
            .inner
            .write
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let path = self.path(&lease.pipeline, &lease.shard);
        let found = Self::read(&path)?.map_or(0, |l| l.counter);
        if found != lease.counter {
            return Err(CheckpointError::Conflict {
                pipeline: lease.pipeline.clone(),
                shard: lease.shard.clone(),
                expected: lease.counter,
                found,
            });
        }
        let mut next = lease.clone();
        next.counter += 1;
        next.updated_ms = crate::intake::stamp::now_ms();
        let bytes = serde_json::to_vec_pretty(&next).map_err(|e| CheckpointError::Corrupt {
            path: path.display().to_string(),
            message: e.to_string(),
        })?;
        let dir = path.parent().unwrap_or(&self.inner.dir).to_owned();
        let new_dir = !dir.exists();
        std::fs::create_dir_all(&dir).map_err(io(&dir))?;
        if new_dir && self.inner.fsync {
            sync_dir(&self.inner.dir).map_err(io(&self.inner.dir))?;
        }
        let tmp = path.with_extension("json.tmp");
        {
            let mut f = File::create(&tmp).map_err(io(&tmp))?;
            f.write_all(&bytes).map_err(io(&tmp))?;
            if self.inner.fsync {
                f.sync_data().map_err(io(&tmp))?;
            }
        }
        std::fs::rename(&tmp, &path).map_err(io(&path))?;
        if self.inner.fsync {
            sync_dir(&dir).map_err(io(&dir))?;
        }
        Ok(next)
    }
}

use crate::fsutil::sync_dir;

impl CheckpointStore for LocalCheckpoints {
    async fn list(&self, pipeline: &str) -> Result<Vec<Lease>, CheckpointError> {
        let this = self.clone();
        let pipeline = pipeline.to_owned();
        tokio::task::spawn_blocking(move || this.list_blocking(&pipeline))
            .await
            .map_err(|e| CheckpointError::Io {
                path: self.inner.dir.display().to_string(),
                error: std::io::Error::other(e.to_string()),
            })?
    }

    async fn put(&self, lease: &Lease) -> Result<Lease, CheckpointError> {
        let this = self.clone();
        let lease = lease.clone();
        tokio::task::spawn_blocking(move || this.put_blocking(&lease))
            .await
            .map_err(|e| CheckpointError::Io {
                path: self.inner.dir.display().to_string(),
                error: std::io::Error::other(e.to_string()),
            })?
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rt() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn writes_are_conditional_and_survive_a_reopen() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        rt().block_on(async {
            let store = LocalCheckpoints::open(dir.path(), true).unwrap_or_else(|e| panic!("{e}"));
            let mut l = Lease::new("p", "s", ShardId::new("shardId-000000000001"), vec![]);
            l.checkpoint = Checkpoint::After(SequenceNumber::from_u128(42));
            let written = store.put(&l).await.unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(written.counter, 1);
            // A second writer that read counter 0 loses.
            let e = store.put(&l).await.err().map(|e| e.to_string());
            assert!(e.is_some_and(|e| e.contains("changed by someone else")));
            let again = store.put(&written).await.unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(again.counter, 2);
            // One consumer per directory.
            let e = LocalCheckpoints::open(dir.path(), true)
                .err()
                .map(|e| e.to_string());
            assert!(e.is_some_and(|e| e.contains("in use by another consumer")));
            drop(store);
            let store = LocalCheckpoints::open(dir.path(), true).unwrap_or_else(|e| panic!("{e}"));
            let got = store.list("p").await.unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(got.len(), 1);
            assert_eq!(
                got[0].checkpoint,
                Checkpoint::After(SequenceNumber::from_u128(42))
            );
            assert!(store.list("nope").await.unwrap_or_default().is_empty());
        });
    }

    #[test]
    fn a_damaged_file_is_an_error_naming_it() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        rt().block_on(async {
            let store = LocalCheckpoints::open(dir.path(), false).unwrap_or_else(|e| panic!("{e}"));
            std::fs::create_dir_all(dir.path().join("p")).unwrap_or_else(|e| panic!("{e}"));
            std::fs::write(dir.path().join("p/shardId-000000000000.json"), b"{\"pipe")
                .unwrap_or_else(|e| panic!("{e}"));
            let e = store
                .list("p")
                .await
                .err()
                .map(|e| e.to_string())
                .unwrap_or_default();
            assert!(
                e.contains("shardId-000000000000.json") && e.contains("damaged"),
                "{e}"
            );
        });
    }
}
