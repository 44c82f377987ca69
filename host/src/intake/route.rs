//! Which shard an event goes to: the open shard whose hash range holds the
//! MD5 of its partition key, or, for events without a key, the next shard in
//! turn (the seed's round-robin over buckets), a whole request at a time so
//! its events stay together.
//!
//! An event without a key is given one whose MD5 falls in its shard's
//! range ([`ShardMap::spread_key`]): KPL de-aggregators such as the KCL's
//! check each event's hash against the shard they read it from, and drop
//! the whole aggregated record when one falls outside.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};

use crate::stream::{HashRange, StreamDescription, StreamError, hash_key_of};

/// One open shard: its id and hash-key range.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub shard: String,
    pub range: HashRange,
}

/// The open shards of a stream, ordered by hash range.
#[derive(Debug, Clone)]
pub struct ShardMap {
    targets: Arc<[Target]>,
    turn: Arc<AtomicUsize>,
    /// Per shard, the key [`ShardMap::spread_key`] found.
    spread: Arc<[OnceLock<Arc<str>>]>,
}

/// Candidate keys tried per shard before giving up on a range too narrow
/// to hit (the expected number is the shard count).
const SPREAD_TRIES: u64 = 1 << 20;

impl ShardMap {
    pub fn new(mut targets: Vec<Target>) -> Result<Self, StreamError> {
        if targets.is_empty() {
            return Err(StreamError::Service("the stream has no open shard".into()));
        }
        targets.sort_by_key(|t| t.range.start);
        let spread = targets.iter().map(|_| OnceLock::new()).collect();
        Ok(Self {
            targets: targets.into(),
            turn: Arc::new(AtomicUsize::new(0)),
            spread,
        })
    }

    pub fn from_description(d: &StreamDescription) -> Result<Self, StreamError> {
        Self::new(
            d.open_shards()
                .map(|s| Target {
                    shard: s.id.clone(),
                    range: s.hash_range,
                })
                .collect(),
        )
        .map_err(|_| StreamError::Service(format!("stream {:?} has no open shard", d.name)))
    }

    pub fn len(&self) -> usize {
        self.targets.len()
    }

    pub fn is_empty(&self) -> bool {
        self.targets.is_empty()
    }

    pub fn targets(&self) -> &[Target] {
        &self.targets
    }

    /// Index of the shard whose range holds `hash_key`.
    pub fn index_of(&self, hash_key: u128) -> usize {
        // The last shard starting at or below the key.
        self.targets
            .partition_point(|t| t.range.start <= hash_key)
            .saturating_sub(1)
    }

    /// The next shard in turn, for events without a partition key.
    pub fn next_in_turn(&self) -> usize {
        self.turn.fetch_add(1, Ordering::Relaxed) % self.targets.len().max(1)
    }

    /// A partition key for events without one that go to shard `index`:
    /// `BASE-N` with the first `N` whose MD5 lies in the shard's range (found
    /// once per map). A range too narrow to hit keeps `BASE` itself.
    pub fn spread_key(&self, index: usize, base: &str) -> Arc<str> {
        let (Some(slot), Some(target)) = (self.spread.get(index), self.targets.get(index)) else {
            return Arc::from(base);
        };
        Arc::clone(slot.get_or_init(|| {
            (0..SPREAD_TRIES)
                .map(|n| format!("{base}-{n}"))
                .find(|k| target.range.contains(hash_key_of(k)))
                .map_or_else(
                    || {
                        tracing::warn!(shard = %target.shard, "no spread key found for a narrow hash range");
                        Arc::from(base)
                    },
                    Arc::from,
                )
        }))
    }

    /// Whether the two maps have the same shards.
    pub fn same_shards(&self, other: &ShardMap) -> bool {
        self.targets == other.targets
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stream::hash_key_of;

    fn map(n: u32) -> ShardMap {
        let t = HashRange::even(n)
            .into_iter()
            .enumerate()
            .map(|(i, range)| Target {
                shard: format!("s{i}"),
                range,
            })
            .collect();
        ShardMap::new(t).unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn spread_keys_hash_into_their_own_shard() {
        for n in [1, 2, 5, 64] {
            let m = map(n);
            for i in 0..m.len() {
                let k = m.spread_key(i, "abc");
                assert!(
                    m.targets()[i].range.contains(hash_key_of(&k)),
                    "{n} shards, shard {i}: {k}"
                );
                assert_eq!(m.spread_key(i, "abc"), k, "found once");
            }
        }
    }

    #[test]
    fn keys_go_to_the_shard_holding_their_hash() {
        let m = map(5);
        for i in 0..2000 {
            let k = format!("key-{i}");
            let h = hash_key_of(&k);
            let t = &m.targets()[m.index_of(h)];
            assert!(t.range.contains(h), "{k}");
        }
        assert_eq!(m.index_of(0), 0);
        assert_eq!(m.index_of(u128::MAX), 4);
    }

    #[test]
    fn turns_visit_every_shard_evenly() {
        let m = map(3);
        let mut counts = [0; 3];
        for _ in 0..300 {
            counts[m.next_in_turn()] += 1;
        }
        assert_eq!(counts, [100, 100, 100]);
    }
}
