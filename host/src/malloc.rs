//! The process's allocator settings.
//!
//! glibc's malloc raises its mmap threshold each time a large block is
//! freed, up to 32 MiB; after that the consumer's big, short-lived buffers
//! (reads, batches, compressed members) come from the heap, fragment it,
//! and are never returned: measured with four pipelines under load, RSS
//! reached 650 MiB (`cargo xtask bench consumer`) for a live heap of
//! ≈ 70 MiB (valgrind's massif). A fixed threshold keeps such blocks in
//! their own mappings, returned to the system when freed: 250–275 MiB in the
//! same bench. It costs page faults on those blocks: the consumer's
//! throughput went from ≈ 500 to ≈ 380 MB/s in the same bench, still far
//! above what an intake feeds it on the same cores.

/// Blocks of this size or more get a mapping of their own.
pub const MMAP_THRESHOLD: usize = 256 << 10;

/// Fixes glibc's mmap threshold at [`MMAP_THRESHOLD`] (a no-op elsewhere).
/// Call it first thing in `main`, before any thread starts.
pub fn limit_retained_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    #[allow(unsafe_code)]
    // SAFETY: mallopt only sets a parameter of the allocator; it is called
    // before the process starts any thread, and the value is in range.
    unsafe {
        if std::env::var_os("X_OFF").is_none() {
            libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD as libc::c_int);
        }
    }
}
