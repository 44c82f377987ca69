//! Helpers the bench binaries share (each bench is its own crate; each
//! uses some of these).
#![allow(dead_code)]

use std::time::{Duration, Instant};

/// A number from the environment, or `default`.
pub(crate) fn env_num(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// MD5 throughput of one core, MB/s, over 1 MiB records (the KPL trailer
/// covers every byte of a record).
pub(crate) fn md5_rate() -> f64 {
    use md5::{Digest, Md5};
    let record = vec![0x5au8; 1 << 20];
    let start = Instant::now();
    let mut n = 0u64;
    let mut fold = 0u8;
    while start.elapsed() < Duration::from_millis(500) {
        fold ^= Md5::digest(&record)[0];
        n += record.len() as u64;
    }
    std::hint::black_box(fold);
    n as f64 / 1e6 / start.elapsed().as_secs_f64()
}

/// The sum of a metric's samples in a Prometheus text exposition.
pub(crate) fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(name) && !l.starts_with('#'))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// CPU time (user + system) of this process so far, seconds (100 Hz ticks).
pub(crate) fn cpu_seconds() -> f64 {
    let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else {
        return f64::NAN;
    };
    // Fields after the command's `)`: state is field 3, utime 14, stime 15.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map_or(Vec::new(), |(_, rest)| rest.split_whitespace().collect());
    let tick = |i: usize| fields.get(i).and_then(|v| v.parse::<f64>().ok());
    match (tick(11), tick(12)) {
        (Some(u), Some(s)) => (u + s) / 100.0,
        _ => f64::NAN,
    }
}

/// The machine's cores.
pub(crate) fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// This process's resident set, bytes.
pub(crate) fn rss_now() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
        })
        .map_or(0, |kb| kb * 1024)
}
