//! Jittered exponential backoff: the one retry schedule of the host (the
//! producer, the spool's shipper, the consumer's readers and the sinks).

use std::time::Duration;

/// Full-jitter exponential backoff: attempt `n` (from 1) waits a uniform
/// time in `[base, min(max, base·2^n)]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    pub base: Duration,
    pub max: Duration,
}

impl Backoff {
    pub const fn new(base: Duration, max: Duration) -> Self {
        Self { base, max }
    }

    /// How long to wait before attempt `attempt + 1`.
    pub fn delay(&self, attempt: u32) -> Duration {
        let base = self.base.as_secs_f64();
        let cap = self
            .max
            .as_secs_f64()
            .min(base * 2f64.powi(attempt.min(30) as i32));
        let x: f64 = rand::random();
        Duration::from_secs_f64(base + (cap - base).max(0.0) * x)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grows_and_is_capped() {
        let b = Backoff::new(Duration::from_millis(50), Duration::from_secs(5));
        let mut longest = Duration::ZERO;
        for attempt in 1..40 {
            let d = b.delay(attempt);
            assert!(d >= b.base && d <= b.max, "{d:?}");
            longest = longest.max(d);
        }
        assert!(
            longest > Duration::from_millis(400),
            "it grows: {longest:?}"
        );
    }
}
