//! Spans around the kinds of work of a forward step, for a profiler to sum (`cargo xtask
//! profile`).
//!
//! Contract (what a subscriber can rely on):
//! - every span of a kind of work (`qkv`, `attention`, `all_reduce`, ...) is made by
//!   [`op_span!`]: target [`TARGET`], level TRACE, and a `threads` field left empty. With no
//!   subscriber that wants TRACE spans of this target, making and entering one costs a
//!   callsite-interest check.
//! - a kind's span is made on the thread that runs the step, once per call of that kind (once
//!   per layer, not per device); the per-device work of a kind enters that same span on
//!   whichever thread of the team runs the device ([`map_in_span`], [`map_mut_in_span`]), so
//!   each thread's time inside the span is that thread's time on the kind.
//! - a kernel that spreads its own work over the pool's threads from the calling thread (a
//!   host matmul over the whole mesh's matrix; any kernel of a one-device mesh) runs inside
//!   [`spread`]: the current span's `threads` field is set to the pool's thread count for the
//!   call and back to 1 after it. The pool's other threads run that kernel's items with no span
//!   of their own, so a profiler counts the calling thread's time there once per thread.

use tt_ops::team;

/// The target of every span made by [`op_span!`].
pub const TARGET: &str = "tt_op";

/// A TRACE span of one kind of work (`op_span!("qkv")`), with target [`TARGET`] and an empty
/// `threads` field ([`spread`] fills it). The caller's crate must depend on `tracing`.
#[macro_export]
macro_rules! op_span {
    ($name:literal) => {
        ::tracing::trace_span!(
            target: $crate::trace::TARGET,
            $name,
            threads = ::tracing::field::Empty
        )
    };
}

/// Runs `f`, a kernel that spreads over the pool's threads from this thread, with the current
/// span's `threads` field set to the pool's thread count (then back to 1).
pub fn spread<T>(f: impl FnOnce() -> T) -> T {
    let span = tracing::Span::current();
    span.record("threads", rayon::current_num_threads() as u64);
    let out = f();
    span.record("threads", 1u64);
    out
}

/// [`spread`] when `alone` (a one-device loop runs its item on this thread, and the item's
/// kernels spread over the pool), else just `f()`.
pub fn spread_when<T>(alone: bool, f: impl FnOnce() -> T) -> T {
    match alone {
        true => spread(f),
        false => f(),
    }
}

/// [`team::map`], with the caller's current span entered around each item (on whichever thread
/// runs it).
pub fn map_in_span<T: Send>(n: usize, f: impl Fn(usize) -> T + Sync) -> Vec<T> {
    let span = tracing::Span::current();
    team::map(n, |i| span.in_scope(|| f(i)))
}

/// [`team::map_mut`], with the caller's current span entered around each item (on whichever
/// thread runs it).
pub fn map_mut_in_span<T: Send, R: Send>(
    items: &mut [T],
    f: impl Fn(usize, &mut T) -> R + Sync,
) -> Vec<R> {
    let span = tracing::Span::current();
    team::map_mut(items, |i, item| span.in_scope(|| f(i, item)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maps_keep_their_results_in_order_without_a_subscriber() {
        let _span = op_span!("test").entered();
        assert_eq!(map_in_span(5, |i| i * 2), vec![0, 2, 4, 6, 8]);
        let mut items = vec![1, 2, 3];
        let got = map_mut_in_span(&mut items, |i, v| {
            *v += i;
            *v
        });
        assert_eq!((got, items), (vec![1, 3, 5], vec![1, 3, 5]));
        assert_eq!(spread(|| 7), 7);
        assert_eq!(spread_when(false, || 8), 8);
    }
}
