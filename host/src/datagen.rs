//! Seeded synthetic data sets for benchmarks and tests.
//!
//! NDJSON application logs of about 700 bytes a line, 10 % `"level":"error"`
//! (half of those with `status` ≥ 500), reproducible from a seed.

/// A small, fast, seeded PRNG (SplitMix64).
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (n > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }

    pub fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[self.below(items.len() as u64) as usize]
    }
}

const SERVICES: &[&str] = &[
    "api",
    "auth",
    "billing",
    "search",
    "checkout",
    "inventory",
    "gateway",
    "mailer",
];
const LEVELS: &[&str] = &["debug", "info", "info", "info", "warn"];
const PATHS: &[&str] = &[
    "/v1/orders",
    "/v1/users/me",
    "/v1/cart/items",
    "/v2/search?q=shoes&page=2",
    "/healthz",
    "/v1/payments/authorize",
];
const WORDS: &[&str] = &[
    "request",
    "completed",
    "upstream",
    "timeout",
    "retrying",
    "connection",
    "reset",
    "by",
    "peer",
    "cache",
    "miss",
    "for",
    "key",
    "user",
    "session",
    "expired",
    "token",
    "refreshed",
    "query",
    "took",
    "slow",
    "pool",
    "exhausted",
    "handler",
    "returned",
];

/// One log line (without newline).
pub fn log_line(rng: &mut Rng, i: u64, out: &mut Vec<u8>) {
    use std::io::Write;
    let error = rng.below(10) == 0;
    let level = if error { "error" } else { rng.pick(LEVELS) };
    let status = if error {
        if rng.below(2) == 0 {
            500 + rng.below(4)
        } else {
            400 + rng.below(30)
        }
    } else {
        [200, 200, 200, 201, 204, 304, 404][rng.below(7) as usize]
    };
    let ms = 1_764_000_000_000u64 + i * 7 + rng.below(5);
    let (secs, milli) = (ms / 1000, ms % 1000);
    let mut msg = String::new();
    let words = 18 + rng.below(10);
    for w in 0..words {
        if w > 0 {
            msg.push(' ');
        }
        msg.push_str(rng.pick(WORDS));
    }
    let _ = write!(
        out,
        r#"{{"ts":"{secs}.{milli:03}","level":"{level}","service":"{svc}","host":"ip-10-0-{a}-{b}.ec2.internal","status":{status},"method":"{method}","path":"{path}","latency_ms":{lat}.{latf},"bytes":{bytes},"trace_id":"{t1:016x}{t2:016x}","request_id":"{r1:08x}-{r2:04x}-4{r3:03x}-a{r4:03x}-{r5:012x}","build":"2026.11.{bld}","user":{{"id":{uid},"tier":"{tier}","tags":["beta","eu-west-1"]}},"msg":"{msg}","agent":"Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0 Safari/537.36","kv":{{"retry":{retry},"cache":"{cache}","region":"eu-west-1","az":"eu-west-1{az}"}}}}"#,
        svc = rng.pick(SERVICES),
        a = rng.below(256),
        b = rng.below(256),
        method = ["GET", "GET", "POST", "PUT", "DELETE"][rng.below(5) as usize],
        path = rng.pick(PATHS),
        lat = rng.below(2000),
        latf = rng.below(1000),
        bytes = rng.below(100_000),
        t1 = rng.next_u64(),
        t2 = rng.next_u64(),
        uid = rng.below(1_000_000),
        r1 = rng.below(1 << 32),
        r2 = rng.below(1 << 16),
        r3 = rng.below(1 << 12),
        r4 = rng.below(1 << 12),
        r5 = rng.below(1 << 48),
        bld = rng.below(30),
        tier = ["free", "pro", "enterprise"][rng.below(3) as usize],
        retry = rng.below(4),
        cache = ["hit", "miss"][rng.below(2) as usize],
        az = ["a", "b", "c"][rng.below(3) as usize],
    );
}

/// About `target_bytes` of NDJSON log lines, each ending in `\n`.
pub fn ndjson_logs(seed: u64, target_bytes: usize) -> Vec<u8> {
    let mut rng = Rng::new(seed);
    let mut out = Vec::with_capacity(target_bytes + 1024);
    let mut i = 0;
    while out.len() < target_bytes {
        log_line(&mut rng, i, &mut out);
        out.push(b'\n');
        i += 1;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seeded_and_shaped_like_the_issue_says() {
        let a = ndjson_logs(7, 1_000_000);
        assert_eq!(a, ndjson_logs(7, 1_000_000), "same seed, same bytes");
        assert_ne!(a, ndjson_logs(8, 1_000_000));
        let lines: Vec<&[u8]> = crate::event::split_lines(&a).collect();
        let avg = a.len() / lines.len();
        assert!((650..760).contains(&avg), "average line {avg} B");
        let errors = lines
            .iter()
            .filter(|l| l.windows(15).any(|w| w == br#""level":"error""#))
            .count();
        let share = errors as f64 / lines.len() as f64;
        assert!((0.08..0.12).contains(&share), "error share {share}");
        assert!(
            lines
                .iter()
                .all(|l| l.starts_with(b"{") && l.ends_with(b"}"))
        );
    }
}
