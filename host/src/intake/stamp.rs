//! Stamping: every listener has a unique 64-bit id and a counter; an event's
//! id is (listener, counter), unique across listeners and stable through
//! every sink (DESIGN.md, "Stamping").

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::event::EventId;

/// One intake listener's identity and event counter. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Listener {
    id: u64,
    counter: Arc<AtomicU64>,
}

impl Listener {
    /// A listener with a configured id, or a random one (`None`). The
    /// counter starts at the current time in microseconds, so a restarted
    /// listener that keeps its configured id does not reuse counters
    /// (unless it handles more than a million events a second on average
    /// over its whole previous life).
    pub fn new(id: Option<u64>) -> Self {
        let id = id.unwrap_or_else(|| rand::random::<u64>() | 1);
        let start = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX / 2));
        Self {
            id,
            counter: Arc::new(AtomicU64::new(start)),
        }
    }

    pub fn id(&self) -> u64 {
        self.id
    }

    /// Reserves `n` consecutive counters; returns the first.
    pub fn reserve(&self, n: u64) -> EventId {
        EventId {
            listener: self.id,
            counter: self.counter.fetch_add(n, Ordering::Relaxed),
        }
    }
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reservations_never_overlap_across_threads() {
        let l = Listener::new(Some(42));
        let mut all: Vec<u64> = std::thread::scope(|s| {
            let hs: Vec<_> = (0..4)
                .map(|_| {
                    let l = l.clone();
                    s.spawn(move || {
                        (0..1000)
                            .flat_map(|i| {
                                let first = l.reserve(i % 7 + 1).counter;
                                first..first + i % 7 + 1
                            })
                            .collect::<Vec<_>>()
                    })
                })
                .collect();
            hs.into_iter()
                .flat_map(|h| h.join().unwrap_or_default())
                .collect()
        });
        let n = all.len();
        all.sort_unstable();
        all.dedup();
        assert_eq!(all.len(), n, "a counter was handed out twice");
        assert_eq!(l.reserve(1).listener, 42);
    }
}
