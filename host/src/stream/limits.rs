//! Kinesis's limits on writing, in one place. The Kinesis backend checks a
//! put against them before sending (the stand-in does not enforce them, and
//! Kinesis's own refusal names no entry); the local log and the spool
//! refuse what Kinesis would, so that nothing is acknowledged that could
//! never be shipped; the producer and the sinks pack to them.

use super::PutEntry;

/// Most entries in one PutRecords.
pub const PUT_MAX_ENTRIES: usize = 500;
/// Most bytes (data and partition keys) in one PutRecords.
pub const PUT_MAX_BYTES: usize = 5 << 20;
/// Largest record: its data plus its partition key.
pub const RECORD_MAX_BYTES: usize = 1 << 20;
/// Partition keys are 1 to 256 characters (Unicode scalar values).
pub const KEY_MAX_CHARS: usize = kinesthetic_filter::rules::MAX_KEY_CHARS;

/// Checks one put against the limits; `entry_overhead` is bytes a store
/// adds per entry and allows for (the local log's own framing, 0 else).
/// Names the first entry that breaks one. An empty put is no error.
pub fn check_put(entries: &[PutEntry], entry_overhead: usize) -> Result<(), String> {
    if entries.len() > PUT_MAX_ENTRIES {
        return Err(format!(
            "{} entries, at most {PUT_MAX_ENTRIES} per call",
            entries.len()
        ));
    }
    let record_max = RECORD_MAX_BYTES + entry_overhead;
    let mut total = 0;
    for (i, e) in entries.iter().enumerate() {
        let chars = e.partition_key.chars().count();
        if chars == 0 || chars > KEY_MAX_CHARS {
            return Err(format!(
                "entry {i}: partition key of {chars} characters, not 1 to {KEY_MAX_CHARS}"
            ));
        }
        let size = e.data.len() + e.partition_key.len();
        if size > record_max {
            return Err(format!(
                "entry {i}: {size} bytes of data and partition key, at most {record_max}"
            ));
        }
        total += size;
    }
    let put_max = PUT_MAX_BYTES + entry_overhead * entries.len();
    if total > put_max {
        return Err(format!(
            "{total} bytes in {} entries, at most {put_max} per call",
            entries.len()
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn e(key: &str, len: usize) -> PutEntry {
        PutEntry {
            partition_key: key.to_owned(),
            explicit_hash_key: None,
            data: vec![0u8; len].into(),
        }
    }

    #[test]
    fn each_limit_names_the_entry_and_the_edge_passes() {
        assert_eq!(check_put(&[], 0), Ok(()));
        let ok: Vec<PutEntry> = (0..500).map(|_| e("k", 100)).collect();
        assert_eq!(check_put(&ok, 0), Ok(()));
        let many: Vec<PutEntry> = (0..501).map(|_| e("k", 1)).collect();
        assert!(check_put(&many, 0).is_err_and(|m| m.starts_with("501 entries")));
        let edge = [e("k", RECORD_MAX_BYTES - 1)];
        assert_eq!(check_put(&edge, 0), Ok(()));
        let over = [e("k", 1), e("k", RECORD_MAX_BYTES)];
        assert!(check_put(&over, 0).is_err_and(|m| m.starts_with("entry 1: 1048577 bytes")));
        assert_eq!(check_put(&over, 64), Ok(()), "the overhead is allowed for");
        let keyless = [e("", 1)];
        assert!(check_put(&keyless, 0).is_err_and(|m| m.contains("0 characters")));
        let long = [e(&"é".repeat(257), 1)];
        assert!(check_put(&long, 0).is_err_and(|m| m.contains("257 characters")));
        let heavy: Vec<PutEntry> = (0..6).map(|_| e("k", RECORD_MAX_BYTES - 1)).collect();
        assert!(check_put(&heavy, 0).is_err_and(|m| m.starts_with("6291456 bytes in 6 entries")));
    }
}
