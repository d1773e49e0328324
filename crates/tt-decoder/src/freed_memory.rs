//! Keeping freed memory in the process, so the next tensor of the same size reuses its pages.
//!
//! A prefill allocates and frees tens to hundreds of megabytes per op: every device's partial
//! sums of a row-parallel layer, the MLP's activations, the attention's heads. With glibc's
//! defaults, each such buffer above the (adaptive) mmap threshold is a fresh mapping, or is
//! trimmed from the heap when freed, and the next one page-faults every 4 KiB again; under a
//! hypervisor a fault costs microseconds. [`keep_freed_memory`] raises both thresholds, once, at
//! the start of a binary. Measured with `cargo xtask profile --model /work/synth-phi3 --mesh 2x4
//! --precision bf16 --context 1024 --prefill --steps 1`, the thresholds set through glibc's
//! environment variables: 28.5 s per prefill with glibc's defaults, 25.6 s with this module's
//! values. Each arena keeps at most [`TRIM_THRESHOLD`] of freed memory, so the peak RSS grows by
//! tens of megabytes at most (`cargo xtask bench --meshes 2x4 --precision accuracy`: 4.81 GB
//! with the defaults, 4.84 GB with these values). [`release_freed_memory`] hands the kept
//! memory back, e.g. between the configurations of a benchmark.

/// Buffers up to this size come from the heap, not from a mapping of their own: every
/// activation of a 1024-token prefill of a 3.8B model (a checkpoint's tensors are larger and
/// keep their own mappings).
const MMAP_THRESHOLD: i32 = 256 << 20;

/// Free memory a heap keeps at its top instead of returning it to the kernel. Each thread's
/// arena keeps up to this much: 1 GiB raised the `accuracy` preset's peak RSS on 2x4 from 4.81
/// to 4.87 GB; 64 MiB gives 4.84 GB and keeps the prefill's gain (see the module docs).
const TRIM_THRESHOLD: i32 = 64 << 20;

/// Raises glibc's mmap and trim thresholds for this process (see the module docs), unless the
/// user set them through `MALLOC_MMAP_THRESHOLD_` / `MALLOC_TRIM_THRESHOLD_`. Returns whether
/// they were set: false with another C library, or when the user's settings stand.
pub fn keep_freed_memory() -> bool {
    let user_set = ["MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_"]
        .iter()
        .any(|name| std::env::var_os(name).is_some());
    !user_set && set_thresholds()
}

/// Returns the freed memory the allocator keeps to the kernel (glibc's `malloc_trim`); nothing
/// with another C library.
pub fn release_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only releases free heap memory; no live allocation is touched.
    unsafe {
        libc::malloc_trim(0);
    }
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn set_thresholds() -> bool {
    // SAFETY: mallopt only changes the allocator's tuning parameters; it takes plain integers.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD) == 1
            && libc::mallopt(libc::M_TRIM_THRESHOLD, TRIM_THRESHOLD) == 1
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn set_thresholds() -> bool {
    let _ = (MMAP_THRESHOLD, TRIM_THRESHOLD);
    false
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    #[test]
    fn glibc_takes_the_thresholds() {
        // The test binary's environment does not set the variables (CI never does).
        if std::env::var_os("MALLOC_MMAP_THRESHOLD_").is_some()
            || std::env::var_os("MALLOC_TRIM_THRESHOLD_").is_some()
        {
            assert!(!keep_freed_memory());
            return;
        }
        let gnu = cfg!(all(target_os = "linux", target_env = "gnu"));
        assert_eq!(keep_freed_memory(), gnu);
    }
}
