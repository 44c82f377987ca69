//! What the consumer is doing, for `/v1/status` and `/readyz`.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use serde::Serialize;

/// One pipeline's shard, as its worker last reported it.
#[derive(Debug, Clone, Serialize, Default)]
pub struct ShardStatus {
    /// `starting`, `reading`, `waiting-for-filter`, `retrying`, `finished`,
    /// `stopped`, `failed`.
    pub state: String,
    /// `start`, a sequence number, or `shard-end`.
    pub checkpoint: String,
    pub checkpoint_ms: i64,
    pub millis_behind_latest: i64,
    pub records: u64,
    pub lines_in: u64,
    pub lines_out: u64,
    pub objects: u64,
    pub dead_letters: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub module_sha256: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
}

/// One pipeline.
#[derive(Debug, Clone, Serialize, Default)]
pub struct PipelineStatus {
    pub stream: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub filter: Option<String>,
    pub sinks: Vec<String>,
    pub on_error: String,
    /// Whether its shards and checkpoints are loaded.
    pub loaded: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    pub shards: BTreeMap<String, ShardStatus>,
}

/// Shared by the workers (writers) and the admin API (reader).
#[derive(Debug, Clone, Default)]
pub struct StatusBoard {
    inner: Arc<Mutex<BTreeMap<String, PipelineStatus>>>,
}

impl StatusBoard {
    pub fn update_pipeline(&self, name: &str, f: impl FnOnce(&mut PipelineStatus)) {
        let mut g = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        f(g.entry(name.to_owned()).or_default());
    }

    pub fn update_shard(&self, pipeline: &str, shard: &str, f: impl FnOnce(&mut ShardStatus)) {
        let mut g = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let p = g.entry(pipeline.to_owned()).or_default();
        f(p.shards.entry(shard.to_owned()).or_default());
    }

    pub fn snapshot(&self) -> BTreeMap<String, PipelineStatus> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Pipelines whose shards and checkpoints are not loaded yet.
    pub fn not_loaded(&self) -> Vec<String> {
        self.inner
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .filter(|(_, p)| !p.loaded)
            .map(|(n, _)| n.clone())
            .collect()
    }
}
