//! Large buffers on 2 MiB pages.
//!
//! Decode streams gigabytes of weights and cache per token, far past the last-level cache. On
//! 4 KiB pages each 4 KiB read costs an address-translation walk, two-level under a hypervisor;
//! on 2 MiB pages almost none. Measured on the 2-core development VM (docs/PERFORMANCE.md): a
//! two-thread plain sum reads 19.5 GB/s on 4 KiB pages and 29.6 GB/s on 2 MiB pages, and the
//! bf16 GEMV goes from 24-25 to 30-31 GB/s.
//!
//! Linux backs a range with transparent huge pages only when asked (the usual `madvise` setting
//! of `/sys/kernel/mm/transparent_hugepage/enabled`), and only for pages not yet touched. So the
//! hint is given when a large buffer is allocated, before anything is written to it. Elsewhere, or
//! when the kernel declines, buffers keep ordinary pages: same results, less bandwidth.

use bytemuck::Zeroable;

/// The huge page size the hint asks for.
pub const HUGE_PAGE_BYTES: usize = 2 << 20;

/// Buffers smaller than this keep ordinary pages (the aligned interior of a smaller one would
/// hold at most one huge page).
pub const HUGE_PAGE_MIN_BYTES: usize = 2 * HUGE_PAGE_BYTES;

/// A zeroed vector of `len` elements whose pages are faulted in lazily (a large allocation comes
/// straight from the kernel, already zero), on 2 MiB pages when the buffer is large and the
/// kernel agrees.
pub fn zeroed_vec<T: Zeroable>(len: usize) -> Vec<T> {
    let v = bytemuck::zeroed_vec::<T>(len);
    advise_huge_pages(&v);
    v
}

/// Asks the kernel to back the 2 MiB-aligned interior of `data` with huge pages when it is next
/// faulted in. Returns whether the hint was given and accepted (always false off Linux and for
/// buffers under [`HUGE_PAGE_MIN_BYTES`]). Pages already touched keep their size.
pub fn advise_huge_pages<T>(data: &[T]) -> bool {
    let bytes = std::mem::size_of_val(data);
    if bytes < HUGE_PAGE_MIN_BYTES {
        return false;
    }
    let start = data.as_ptr() as usize;
    let first = start.next_multiple_of(HUGE_PAGE_BYTES);
    let end = (start + bytes) / HUGE_PAGE_BYTES * HUGE_PAGE_BYTES;
    if end <= first {
        return false;
    }
    madvise_hugepage(first, end - first)
}

#[cfg(target_os = "linux")]
fn madvise_hugepage(addr: usize, len: usize) -> bool {
    // SAFETY: `addr..addr + len` lies inside a live allocation of the caller (a page-aligned
    // interior of `data`). MADV_HUGEPAGE only changes how future faults in the range are served;
    // it never changes the bytes, so no reference into the range is invalidated.
    unsafe { libc::madvise(addr as *mut libc::c_void, len, libc::MADV_HUGEPAGE) == 0 }
}

#[cfg(not(target_os = "linux"))]
fn madvise_hugepage(_addr: usize, _len: usize) -> bool {
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_buffers_are_left_alone() {
        let v: Vec<f32> = zeroed_vec(1024);
        assert_eq!(v.len(), 1024);
        assert!(!advise_huge_pages(&v));
        assert!(!advise_huge_pages::<u8>(&[]));
    }

    #[test]
    fn large_buffers_are_zero_and_writable() {
        let n = 3 * HUGE_PAGE_BYTES / 4 + 17;
        let mut v: Vec<f32> = zeroed_vec(n);
        assert!(v.iter().all(|&x| x == 0.0));
        v[n - 1] = 1.0;
        assert_eq!(v.iter().sum::<f32>(), 1.0);
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn large_buffers_get_the_hint_where_the_kernel_has_huge_pages() {
        // madvise accepts the hint whenever the kernel has transparent huge pages at all.
        let available = std::path::Path::new("/sys/kernel/mm/transparent_hugepage").exists();
        let v: Vec<u8> = zeroed_vec(8 * HUGE_PAGE_BYTES);
        assert_eq!(advise_huge_pages(&v), available);
    }
}
