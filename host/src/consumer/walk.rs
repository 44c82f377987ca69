//! The resharding rules (KCL's): a child shard is read only after its
//! parents are read to their end, and a child of a shard that was read
//! continues it from its first record. [`StreamWalk`] applies them to read a
//! whole stream in one task (`stream tail`); the consumer applies the same
//! two functions with checkpoints in place of the walk's memory.

use std::collections::{HashMap, HashSet, VecDeque};
use std::time::Duration;

use super::reader::{Read, ShardReader, Undecodable};
use crate::event::{Batch, ShardId};
use crate::stream::{ShardInfo, StartPosition, StreamBackend, StreamDescription, StreamError};

/// The parents of `shard` (none, one, or two after a merge).
pub fn parents(shard: &ShardInfo) -> impl Iterator<Item = &str> {
    [&shard.parent, &shard.adjacent_parent]
        .into_iter()
        .filter_map(|p| p.as_deref())
}

/// Whether `shard` may be read: each of its parents is `done` (read to its
/// end and, for a consumer, checkpointed there) or no longer in the stream
/// (aged out of retention, so nothing of it can be read any more).
pub fn parents_done(
    shard: &ShardInfo,
    stream: &StreamDescription,
    done: impl Fn(&str) -> bool,
) -> bool {
    parents(shard).all(|p| done(p) || !stream.shards.iter().any(|s| s.id == p))
}

/// Where to start reading `shard`: `initial` (what the user asked for), or
/// the trim horizon when a parent of it was read (the child continues it)
/// unless `initial` is a time, which applies to every shard. `None` when
/// there is nothing to read: a closed shard, read from LATEST.
pub fn start_of(
    shard: &ShardInfo,
    initial: &StartPosition,
    continues_a_parent: bool,
) -> Option<StartPosition> {
    if *initial == StartPosition::Latest && !shard.is_open() && !continues_a_parent {
        return None;
    }
    Some(
        if continues_a_parent && !matches!(initial, StartPosition::AtTimestamp(_)) {
            StartPosition::TrimHorizon
        } else {
            initial.clone()
        },
    )
}

/// One read of a [`StreamWalk`]: a shard's batch and its undecodable records.
#[derive(Debug)]
pub struct Walked {
    pub batch: Batch,
    pub undecodable: Vec<Undecodable>,
}

/// Reads every shard of a stream in one task, parents before children,
/// yielding batches as they are read; with `follow`, keeps waiting for new
/// records and new shards.
#[derive(Debug)]
pub struct StreamWalk<B: StreamBackend> {
    backend: B,
    stream: String,
    from: StartPosition,
    follow: bool,
    poll: Duration,
    limit: u32,
    finished: HashSet<String>,
    started: HashSet<String>,
    readers: HashMap<String, ShardReader<B>>,
    /// Shards still to read in this pass.
    pass: VecDeque<ShardInfo>,
    passes: u64,
    progressed: bool,
    idle: bool,
}

impl<B: StreamBackend> StreamWalk<B> {
    pub fn new(backend: B, stream: impl Into<String>, from: StartPosition, follow: bool) -> Self {
        Self {
            backend,
            stream: stream.into(),
            from,
            follow,
            poll: Duration::from_millis(200),
            limit: 1000,
            finished: HashSet::new(),
            started: HashSet::new(),
            readers: HashMap::new(),
            pass: VecDeque::new(),
            passes: 0,
            progressed: false,
            idle: true,
        }
    }

    /// The next batch, or `None` when the stream is read (not with `follow`).
    pub async fn next(&mut self) -> Result<Option<Walked>, StreamError> {
        loop {
            let Some(shard) = self.pass.front().cloned() else {
                if self.passes > 0 {
                    if !self.follow && !self.progressed && self.idle {
                        return Ok(None);
                    }
                    if !self.progressed {
                        tokio::time::sleep(self.poll).await;
                    }
                }
                self.start_pass().await?;
                continue;
            };
            if !self.readers.contains_key(&shard.id) {
                let continues = parents(&shard).any(|p| self.started.contains(p));
                match start_of(&shard, &self.from, continues) {
                    None => {
                        self.finished.insert(shard.id.clone());
                        self.pass.pop_front();
                        continue;
                    }
                    Some(pos) => {
                        self.started.insert(shard.id.clone());
                        let r = ShardReader::new(
                            self.backend.clone(),
                            self.stream.clone(),
                            ShardId::new(shard.id.clone()),
                            pos,
                            self.limit,
                        )
                        .with_range(shard.hash_range);
                        self.readers.insert(shard.id.clone(), r);
                    }
                }
            }
            let Some(reader) = self.readers.get_mut(&shard.id) else {
                continue;
            };
            match reader.read().await? {
                Read::Records { batch, undecodable } => {
                    self.idle = false;
                    if !batch.records().is_empty() {
                        self.progressed = true;
                        return Ok(Some(Walked {
                            batch: *batch,
                            undecodable,
                        }));
                    }
                }
                Read::CaughtUp => {
                    self.pass.pop_front();
                }
                Read::End => {
                    self.readers.remove(&shard.id);
                    self.finished.insert(shard.id.clone());
                    self.progressed = true;
                    self.pass.pop_front();
                }
                Read::Throttled(wait) => {
                    self.idle = false;
                    self.pass.pop_front();
                    tokio::time::sleep(wait).await;
                }
            }
        }
    }

    async fn start_pass(&mut self) -> Result<(), StreamError> {
        let d = self.backend.describe(&self.stream).await?;
        self.passes += 1;
        self.progressed = false;
        self.idle = true;
        let finished = &self.finished;
        self.pass = d
            .shards
            .iter()
            .filter(|s| !finished.contains(&s.id))
            .filter(|s| parents_done(s, &d, |p| finished.contains(p)))
            .cloned()
            .collect();
        Ok(())
    }
}
