//! Reusable, cache-line aligned f32 scratch buffers (packed panels, re-laid-out activations).
//!
//! Each thread keeps a small pool, so steady-state calls allocate nothing. A buffer is taken out of
//! the pool for the duration of its use and put back after, never borrowed across user code: when a
//! rayon worker blocked inside one kernel call steals another (an outer `par_iter` over devices),
//! the nested call simply takes a second buffer.

use std::cell::RefCell;

/// Buffers kept per thread at most (deeper nesting allocates and drops).
const POOL_DEPTH: usize = 8;
/// Alignment of the slice handed out, in f32 elements (64 bytes: one cache line).
const ALIGN: usize = 16;

thread_local! {
    static POOL: RefCell<Vec<Vec<f32>>> = const { RefCell::new(Vec::new()) };
}

/// Runs `f` with a 64-byte aligned scratch slice of `len` f32 whose contents are unspecified
/// (callers write before they read).
pub(crate) fn with_scratch<R>(len: usize, f: impl FnOnce(&mut [f32]) -> R) -> R {
    let mut buf = POOL.with(|p| take_best_fit(&mut p.borrow_mut(), len + ALIGN));
    if buf.len() < len + ALIGN {
        buf.resize(len + ALIGN, 0.0);
    }
    let off = buf
        .as_ptr()
        .align_offset(ALIGN * size_of::<f32>())
        .min(ALIGN);
    let r = f(&mut buf[off..off + len]);
    POOL.with(|p| {
        let mut p = p.borrow_mut();
        if p.len() < POOL_DEPTH {
            p.push(buf);
        }
    });
    r
}

/// Removes from `pool` the smallest buffer holding at least `want` values, else the largest one
/// (to be grown), else a new empty one: small requests do not inflate big buffers and vice versa.
fn take_best_fit(pool: &mut Vec<Vec<f32>>, want: usize) -> Vec<f32> {
    let fit = pool
        .iter()
        .enumerate()
        .filter(|(_, b)| b.len() >= want)
        .min_by_key(|(_, b)| b.len())
        .or_else(|| pool.iter().enumerate().max_by_key(|(_, b)| b.len()))
        .map(|(i, _)| i);
    fit.map(|i| pool.swap_remove(i)).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aligned_and_nestable() {
        with_scratch(100, |a| {
            assert_eq!(a.len(), 100);
            assert_eq!(a.as_ptr() as usize % 64, 0);
            a.fill(1.0);
            with_scratch(50, |b| {
                assert_eq!(b.as_ptr() as usize % 64, 0);
                b.fill(2.0);
            });
            assert!(a.iter().all(|&v| v == 1.0));
        });
    }

    #[test]
    fn best_fit_keeps_small_buffers_small() {
        let mut pool = vec![vec![0.0; 1000], vec![0.0; 40], vec![0.0; 300]];
        assert_eq!(take_best_fit(&mut pool, 100).len(), 300);
        assert_eq!(take_best_fit(&mut pool, 5000).len(), 1000);
        assert_eq!(take_best_fit(&mut pool, 10).len(), 40);
        assert!(take_best_fit(&mut pool, 10).is_empty());
    }
}
