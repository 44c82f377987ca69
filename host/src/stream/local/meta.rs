//! A stream's metadata file (`STREAM/meta.json`): its shards, their hash
//! ranges, parents, and where closed shards end. Written atomically.

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::stream::{HashRange, SequenceNumber, ShardInfo, StreamError};

pub(crate) const META: &str = "meta.json";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct StreamMeta {
    pub(crate) name: String,
    pub(crate) created_ms: i64,
    pub(crate) retention_hours: u32,
    pub(crate) next_shard: u32,
    pub(crate) shards: Vec<ShardMeta>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct ShardMeta {
    pub(crate) index: u32,
    pub(crate) parent: Option<u32>,
    pub(crate) adjacent_parent: Option<u32>,
    /// Hash range, decimal (JSON numbers cannot hold 128 bits).
    pub(crate) start: String,
    pub(crate) end: String,
    /// Offset one past the last record, once closed by a split or merge.
    pub(crate) end_offset: Option<u64>,
}

/// Sequence number of record `offset` of shard `index`: the shard in the
/// high 64 bits, so numbers are unique across a stream's shards and a child
/// (created later, with a larger index) has larger numbers than its parents.
pub(crate) fn sequence(index: u32, offset: u64) -> SequenceNumber {
    SequenceNumber::from_u128((u128::from(index) << 64) | u128::from(offset))
}

/// The shard index and offset of a sequence number.
pub(crate) fn split_sequence(s: &SequenceNumber) -> Option<(u32, u64)> {
    let n = s.as_u128()?;
    Some((u32::try_from(n >> 64).ok()?, n as u64))
}

pub(crate) fn shard_id(index: u32) -> String {
    format!("shardId-{index:012}")
}

pub(crate) fn shard_index(id: &str) -> Option<u32> {
    id.strip_prefix("shardId-")?.parse().ok()
}

impl ShardMeta {
    pub(crate) fn range(&self) -> Result<HashRange, StreamError> {
        let p = |s: &str| {
            s.parse::<u128>()
                .map_err(|_| StreamError::Service(format!("bad hash key {s:?} in stream metadata")))
        };
        Ok(HashRange {
            start: p(&self.start)?,
            end: p(&self.end)?,
        })
    }

    pub(crate) fn is_open(&self) -> bool {
        self.end_offset.is_none()
    }

    pub(crate) fn info(&self) -> Result<ShardInfo, StreamError> {
        Ok(ShardInfo {
            id: shard_id(self.index),
            parent: self.parent.map(shard_id),
            adjacent_parent: self.adjacent_parent.map(shard_id),
            hash_range: self.range()?,
            starting_sequence: sequence(self.index, 0),
            ending_sequence: self.end_offset.map(|e| sequence(self.index, e)),
        })
    }
}

impl StreamMeta {
    pub(crate) fn shard(&self, index: u32) -> Option<&ShardMeta> {
        self.shards.iter().find(|s| s.index == index)
    }

    pub(crate) fn shard_mut(&mut self, index: u32) -> Option<&mut ShardMeta> {
        self.shards.iter_mut().find(|s| s.index == index)
    }
}

/// Reads `dir/meta.json`; a missing file is `Ok(None)`.
pub(crate) fn read(dir: &Path) -> Result<Option<StreamMeta>, StreamError> {
    let path = dir.join(META);
    let text = match std::fs::read(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(error) => {
            return Err(StreamError::Io {
                path: path.display().to_string(),
                error,
            });
        }
    };
    serde_json::from_slice(&text).map(Some).map_err(|e| {
        StreamError::Service(format!(
            "stream metadata {} is corrupt: {e} (restore it, or delete the stream's directory)",
            path.display()
        ))
    })
}

/// Writes `dir/meta.json` atomically: a temporary file, fsync, rename, fsync
/// of the directory.
pub(crate) fn write(dir: &Path, meta: &StreamMeta, fsync: bool) -> Result<(), StreamError> {
    let io = |path: &Path| {
        let path = path.display().to_string();
        move |error| StreamError::Io { path, error }
    };
    let tmp = dir.join("meta.json.tmp");
    let text = serde_json::to_vec_pretty(meta)
        .map_err(|e| StreamError::Service(format!("cannot encode stream metadata: {e}")))?;
    {
        use std::io::Write;
        let mut f = std::fs::File::create(&tmp).map_err(io(&tmp))?;
        f.write_all(&text).map_err(io(&tmp))?;
        if fsync {
            f.sync_all().map_err(io(&tmp))?;
        }
    }
    let path = dir.join(META);
    std::fs::rename(&tmp, &path).map_err(io(&path))?;
    if fsync {
        sync_dir(dir).map_err(io(dir))?;
    }
    Ok(())
}

pub(crate) use crate::fsutil::sync_dir;
