//! The C allocator's thresholds, set once per process before the first graph runs.
//!
//! glibc serves an allocation of at least its *mmap threshold* with a fresh mapping
//! (every page faults and is cleared by the kernel on first touch) and returns the
//! heap's free top to the system beyond its *trim threshold*. Both start low (128
//! KiB) and adapt: each freed mapping raises the mmap threshold to its size, up to
//! 32 MiB, and the trim threshold to twice that. A training step's values are tens
//! of kilobytes to tens of megabytes, so how fast a step runs depended on what the
//! process had freed before: W1-L ran at 299–305 ms per step after the W1-S and
//! W1-M workloads, and at 286–289 ms alone.
//!
//! [`settle`] sets both thresholds where glibc's own adaptation ends (32 MiB and
//! 64 MiB), once, when the process creates its first graph. Values below 32 MiB then
//! come from the heap and are reused; larger ones are mapped, and a graph keeps a
//! few of those for reuse itself ([`crate::spares`]). It does nothing when the
//! process chose its own thresholds (`MALLOC_MMAP_THRESHOLD_` or
//! `MALLOC_TRIM_THRESHOLD_` in the environment), when `UNROLLED_MALLOC=system`
//! asks for glibc's defaults, or with any other C library.

/// The mmap threshold glibc's adaptation stops at (its `DEFAULT_MMAP_THRESHOLD_MAX`).
#[cfg(all(target_os = "linux", target_env = "gnu"))]
const MMAP_THRESHOLD: i32 = 32 << 20;

/// Sets the allocator's thresholds (see the module's documentation), once.
pub(crate) fn settle() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let own = |k: &str| std::env::var_os(k).is_some();
        let system = std::env::var("UNROLLED_MALLOC").is_ok_and(|v| v.trim() == "system");
        if system || own("MALLOC_MMAP_THRESHOLD_") || own("MALLOC_TRIM_THRESHOLD_") {
            return;
        }
        #[cfg(all(target_os = "linux", target_env = "gnu"))]
        // SAFETY: `mallopt` only changes glibc's thresholds for later allocations; it
        // is thread-safe (it takes the arena locks) and leaves existing blocks alone.
        unsafe {
            libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD);
            libc::mallopt(libc::M_TRIM_THRESHOLD, 2 * MMAP_THRESHOLD);
        }
    });
}
