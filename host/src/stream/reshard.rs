//! Resharding to N even hash-key ranges by splits and merges, one at a time,
//! waiting for the stream to be ACTIVE between steps (Kinesis allows one
//! resharding operation at a time per stream).

use std::time::Duration;

use super::{HashRange, StreamBackend, StreamError, StreamStatus};

/// One step of a plan, named by hash ranges (shard ids change as it runs).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Split the open shard covering `range` so a new shard starts at `at`.
    Split { range: HashRange, at: u128 },
    /// Merge the open shards covering `left` and `right` (adjacent).
    Merge { left: HashRange, right: HashRange },
}

/// The steps that take the open shards `open` to `target` even ranges:
/// first split at every target boundary that falls inside a shard, then
/// merge neighbours whose boundary is not a target boundary.
pub fn plan(open: &[HashRange], target: u32) -> Vec<Step> {
    let mut shards: Vec<HashRange> = open.to_vec();
    shards.sort();
    let goal = HashRange::even(target);
    let is_boundary = |k: u128| goal.iter().any(|g| g.start == k);
    let mut steps = Vec::new();
    // Splits.
    let mut i = 0;
    while i < shards.len() {
        let r = shards[i];
        match goal
            .iter()
            .map(|g| g.start)
            .find(|&b| r.start < b && b <= r.end)
        {
            Some(at) => {
                steps.push(Step::Split { range: r, at });
                shards[i] = HashRange {
                    start: r.start,
                    end: at - 1,
                };
                shards.insert(
                    i + 1,
                    HashRange {
                        start: at,
                        end: r.end,
                    },
                );
            }
            None => i += 1,
        }
    }
    // Merges.
    let mut i = 0;
    while i + 1 < shards.len() {
        let (l, r) = (shards[i], shards[i + 1]);
        if l.end.checked_add(1) == Some(r.start) && !is_boundary(r.start) {
            steps.push(Step::Merge { left: l, right: r });
            shards[i] = HashRange {
                start: l.start,
                end: r.end,
            };
            shards.remove(i + 1);
        } else {
            i += 1;
        }
    }
    steps
}

/// Progress of a running reshard: a step starting or just done.
#[derive(Debug, Clone)]
pub struct Progress {
    /// Steps finished so far.
    pub done: usize,
    pub total: usize,
    pub step: Step,
    pub phase: Phase,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// The step is about to be asked for (it can take minutes on Kinesis).
    Starting,
    /// The step is done and the stream is ACTIVE again.
    Done,
}

/// Calls `call` again while it is throttled (Kinesis allows 20
/// DescribeStreamSummary calls a second per account, shared with every
/// other client, and 5 SplitShard or MergeShards calls), backing off, until
/// `deadline`; then the last error.
async fn patiently<T, F, Fut>(
    what: &str,
    deadline: tokio::time::Instant,
    mut call: F,
) -> Result<T, StreamError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, StreamError>>,
{
    let backoff = crate::retry::Backoff::new(Duration::from_millis(100), Duration::from_secs(5));
    let mut attempt = 0u32;
    loop {
        attempt += 1;
        let delay = backoff.delay(attempt);
        match call().await {
            Err(StreamError::Throttled(m)) if tokio::time::Instant::now() + delay < deadline => {
                tracing::info!("{what} throttled ({m}); trying again in {delay:?}");
                tokio::time::sleep(delay).await;
            }
            r => return r,
        }
    }
}

/// Waits until the stream is ACTIVE (polling `describe`), at most `timeout`.
pub async fn wait_active<B: StreamBackend>(
    backend: &B,
    stream: &str,
    timeout: Duration,
) -> Result<(), StreamError> {
    let start = tokio::time::Instant::now();
    let mut delay = Duration::from_millis(20);
    loop {
        let d = patiently("DescribeStreamSummary", start + timeout, || {
            backend.describe(stream)
        })
        .await?;
        if d.status == StreamStatus::Active {
            return Ok(());
        }
        if start.elapsed() > timeout {
            return Err(StreamError::NotActive {
                stream: stream.to_owned(),
                status: d.status,
            });
        }
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(Duration::from_secs(1));
    }
}

/// Reshards `stream` to `target` open shards of even hash ranges. Calls
/// `progress` before and after each step. Returns the number of steps taken.
pub async fn reshard<B: StreamBackend>(
    backend: &B,
    stream: &str,
    target: u32,
    timeout_per_step: Duration,
    mut progress: impl FnMut(&Progress),
) -> Result<usize, StreamError> {
    if target == 0 {
        return Err(StreamError::BadInput(
            "a stream needs at least 1 shard".into(),
        ));
    }
    wait_active(backend, stream, timeout_per_step).await?;
    // Checked before the first step: a limit met halfway would leave the
    // stream with uneven shards.
    if let Some(max) = backend.max_open_shards(stream).await?
        && target > max
    {
        return Err(StreamError::BadInput(format!(
            "{target} shards: stream {stream:?} can have at most {max} open shards here \
             (the local log's limit, or the Kinesis account's shard quota less the other streams' \
             open shards)"
        )));
    }
    let by = |t: Duration| tokio::time::Instant::now() + t;
    let d = patiently("DescribeStreamSummary", by(timeout_per_step), || {
        backend.describe(stream)
    })
    .await?;
    let open: Vec<HashRange> = d.open_shards().map(|s| s.hash_range).collect();
    let steps = plan(&open, target);
    let total = steps.len();
    for (done, step) in steps.into_iter().enumerate() {
        let d = patiently("DescribeStreamSummary", by(timeout_per_step), || {
            backend.describe(stream)
        })
        .await?;
        let find = |r: HashRange| {
            d.open_shards()
                .find(|s| s.hash_range == r)
                .map(|s| s.id.clone())
                .ok_or_else(|| {
                    StreamError::Service(format!(
                        "stream {stream:?} changed while resharding: no open shard covers {}..={}",
                        r.start, r.end
                    ))
                })
        };
        progress(&Progress {
            done,
            total,
            step: step.clone(),
            phase: Phase::Starting,
        });
        match &step {
            Step::Split { range, at } => {
                let id = find(*range)?;
                patiently("SplitShard", by(timeout_per_step), || {
                    backend.split_shard(stream, &id, *at)
                })
                .await?;
            }
            Step::Merge { left, right } => {
                let (l, r) = (find(*left)?, find(*right)?);
                patiently("MergeShards", by(timeout_per_step), || {
                    backend.merge_shards(stream, &l, &r)
                })
                .await?;
            }
        }
        wait_active(backend, stream, timeout_per_step).await?;
        progress(&Progress {
            done: done + 1,
            total,
            step,
            phase: Phase::Done,
        });
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Applies a plan to ranges, as a stream would.
    fn apply(open: &[HashRange], steps: &[Step]) -> Vec<HashRange> {
        let mut s = open.to_vec();
        for step in steps {
            match *step {
                Step::Split { range, at } => {
                    let i = s.iter().position(|r| *r == range).unwrap_or(usize::MAX);
                    assert!(i < s.len(), "split of a range that is not open");
                    s[i] = HashRange {
                        start: range.start,
                        end: at - 1,
                    };
                    s.push(HashRange {
                        start: at,
                        end: range.end,
                    });
                }
                Step::Merge { left, right } => {
                    assert_eq!(left.end + 1, right.start, "merge of non-adjacent ranges");
                    s.retain(|r| *r != left && *r != right);
                    s.push(HashRange {
                        start: left.start,
                        end: right.end,
                    });
                }
            }
            s.sort();
        }
        s
    }

    #[test]
    fn any_layout_reaches_even_ranges() {
        for from in 1..=8u32 {
            for to in 1..=8u32 {
                let open = HashRange::even(from);
                let steps = plan(&open, to);
                assert_eq!(apply(&open, &steps), HashRange::even(to), "{from} -> {to}");
            }
        }
        // Already even: nothing to do.
        assert!(plan(&HashRange::even(4), 4).is_empty());
        // Doubling is one split per shard.
        assert_eq!(plan(&HashRange::even(4), 8).len(), 4);
        // Halving is one merge per pair.
        assert_eq!(plan(&HashRange::even(8), 4).len(), 4);
    }

    #[test]
    fn an_uneven_layout_is_evened_out() {
        let open = [
            HashRange { start: 0, end: 99 },
            HashRange {
                start: 100,
                end: u128::MAX,
            },
        ];
        let steps = plan(&open, 3);
        assert_eq!(apply(&open, &steps), HashRange::even(3));
    }

    /// A backend whose describes and splits are throttled every other
    /// call, as Kinesis throttles when other clients share the account's
    /// 20 describes a second.
    #[derive(Clone)]
    struct Throttled {
        inner: crate::stream::local::LocalLog,
        calls: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    }

    impl Throttled {
        fn turn(&self) -> Result<(), StreamError> {
            let n = self.calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            if n.is_multiple_of(2) {
                Err(StreamError::Throttled(
                    "LimitExceededException: Rate exceeded".into(),
                ))
            } else {
                Ok(())
            }
        }
    }

    impl StreamBackend for Throttled {
        async fn create_stream(&self, n: &str, s: u32) -> Result<(), StreamError> {
            self.inner.create_stream(n, s).await
        }
        async fn delete_stream(&self, n: &str) -> Result<(), StreamError> {
            self.inner.delete_stream(n).await
        }
        async fn list_streams(&self) -> Result<Vec<String>, StreamError> {
            self.inner.list_streams().await
        }
        async fn describe(&self, n: &str) -> Result<crate::stream::StreamDescription, StreamError> {
            self.turn()?;
            self.inner.describe(n).await
        }
        async fn put_records(
            &self,
            s: &str,
            e: &[crate::stream::PutEntry],
        ) -> Result<Vec<crate::stream::PutOutcome>, StreamError> {
            self.inner.put_records(s, e).await
        }
        async fn shard_iterator(
            &self,
            s: &str,
            sh: &str,
            f: &crate::stream::StartPosition,
        ) -> Result<crate::stream::ShardIterator, StreamError> {
            self.inner.shard_iterator(s, sh, f).await
        }
        async fn get_records(
            &self,
            i: &crate::stream::ShardIterator,
            l: u32,
        ) -> Result<crate::stream::GetRecordsOutput, StreamError> {
            self.inner.get_records(i, l).await
        }
        async fn split_shard(&self, s: &str, sh: &str, k: u128) -> Result<(), StreamError> {
            self.turn()?;
            self.inner.split_shard(s, sh, k).await
        }
        async fn merge_shards(&self, s: &str, a: &str, b: &str) -> Result<(), StreamError> {
            self.inner.merge_shards(s, a, b).await
        }
    }

    #[test]
    fn a_reshard_rides_out_throttled_describes_and_splits() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap_or_else(|e| panic!("{e}"));
        rt.block_on(async {
            let log = crate::stream::local::LocalLog::open(dir.path(), Default::default())
                .unwrap_or_else(|e| panic!("{e}"));
            log.create_stream("s", 2)
                .await
                .unwrap_or_else(|e| panic!("{e}"));
            let b = Throttled {
                inner: log.clone(),
                calls: Default::default(),
            };
            let steps = reshard(&b, "s", 4, Duration::from_secs(30), |_| {})
                .await
                .unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(steps, 2);
            let d = log.describe("s").await.unwrap_or_else(|e| panic!("{e}"));
            let open: Vec<HashRange> = d.open_shards().map(|s| s.hash_range).collect();
            assert_eq!(open, HashRange::even(4));
            assert!(b.calls.load(std::sync::atomic::Ordering::SeqCst) >= 8);
        });
    }
}
