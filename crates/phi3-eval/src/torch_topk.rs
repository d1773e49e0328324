//! `torch.topk` on CPU, order included: which of several equal logits torch ranks first.
//!
//! Logits that leave a Tenstorrent device come back in a device format (bf16, bfp8), and values
//! in those formats tie often. The seed bringup scored its eval with `torch.topk(logits, 5)` on
//! such logits (top-1 = the first entry, top-5 = membership), and torch's CPU topk does **not**
//! rank equal values by lowest index (unlike `torch.argmax` and [`crate::scoring::top_k`]). A
//! zero vector of 32064 entries with a 5 at ids 7, 100 and 30000 gives `[100, 30000, 7, 3, 1]`
//! for `topk(x, 5)` but `[7]` for `topk(x, 1)`. [`torch_topk`] reproduces torch's order exactly,
//! so that the eval can score the way the seed did.
//!
//! What torch does (ATen `topk_impl_loop` in `aten/src/ATen/native/TopKImpl.h`, called from the
//! CPU topk kernel in `aten/src/ATen/native/cpu/SortingKernel.cpp`; bf16 values are widened to
//! f32 first, so comparing the f32 values here is the same):
//! - it fills a vector of `(value, index)` pairs in index order;
//! - the comparator (`largest = true`) is "`a` ranks before `b`" =
//!   `(isnan(a) && !isnan(b)) || a > b`: NaN first, then larger values; equal values (and
//!   `-0.0` against `0.0`, and NaN against NaN) are unordered, so their order is whatever the
//!   algorithm leaves. NaN ranking first is a second difference from [`crate::scoring::top_k`],
//!   which ranks NaN last;
//! - when `k * 64 <= n`: `std::partial_sort(begin, begin + k, end, comp)`;
//! - otherwise: `std::nth_element(begin, begin + k - 1, end, comp)` then (`sorted = true`, the
//!   default) `std::sort(begin, begin + k - 1, comp)` (the first `k - 1`, not `k`: the `k`-th is
//!   already in place after `nth_element`).
//!
//! torch's CPU builds use GNU libstdc++, whose algorithms are reimplemented here step for step:
//! `partial_sort` is a heap select (a binary max-heap, under the comparator, of the first `k`;
//! every later element that ranks before the heap's top replaces it) followed by a heap sort of the
//! `k`; `nth_element` is introselect (median-of-three pivot moved to the front, Hoare-style
//! unguarded partition, a depth limit of `2 * floor(log2 n)` after which it falls back to a heap
//! select, insertion sort once at most 3 elements remain); `sort` is introsort (same partition,
//! heap sort past the depth limit, stop at 16 elements, final insertion sort). The tests compare
//! against torch's own output on bf16 vectors with many ties
//! (`tests/fixtures/torch_topk.json`, made by `scripts/make_topk_fixture.py`), on both paths.
//!
//! The eval always has `n` = the vocabulary (32064, 49152) and `k` = 5, so the `partial_sort`
//! path is the one that matters; the `nth_element` path (`n < 64 k`) is reproduced too.

use crate::scoring::Candidate;

/// torch's comparator for `largest = true`: `a` ranks before `b`.
fn before(a: &Candidate, b: &Candidate) -> bool {
    (a.logit.is_nan() && !b.logit.is_nan()) || a.logit > b.logit
}

/// The `k` best tokens of `logits` in the order of torch's CPU `torch.topk(logits, k)` (largest,
/// sorted). `k` larger than `logits.len()` is clamped (torch raises an error there); `k = 0` or
/// empty logits give an empty result.
pub fn torch_topk(logits: &[f32], k: usize) -> Vec<Candidate> {
    let n = logits.len();
    let k = k.min(n);
    if k == 0 {
        return Vec::new();
    }
    let mut candidates = (0u32..)
        .zip(logits)
        .map(|(id, &logit)| Candidate { id, logit });
    if k.saturating_mul(64) <= n {
        // partial_sort. The heap select only ever reads positions `< k` and the current element,
        // so the tail can be streamed instead of materialised.
        let mut heap: Vec<Candidate> = candidates.by_ref().take(k).collect();
        make_heap(&mut heap);
        for c in candidates {
            if before(&c, &heap[0]) {
                // pop_heap(first, middle, i): the top goes to position i (never read again) and
                // element i is sifted in from the root.
                adjust_heap(&mut heap, 0, k, c);
            }
        }
        sort_heap(&mut heap);
        heap
    } else {
        let mut all: Vec<Candidate> = candidates.collect();
        nth_element(&mut all, k - 1);
        sort(&mut all[..k - 1]);
        all.truncate(k);
        all
    }
}

/// `floor(log2 n)` for `n > 0` (libstdc++'s `__lg`).
fn lg(n: usize) -> usize {
    (usize::BITS - 1 - n.leading_zeros()) as usize
}

// ---- heap (libstdc++ stl_heap.h semantics; the heap's "largest" is the one ranked last) ----

/// Moves the hole at `hole` down to a leaf along the larger children, then pushes `value` up
/// from there, never above `hole`'s starting position. `len` is the heap's length.
fn adjust_heap(v: &mut [Candidate], mut hole: usize, len: usize, value: Candidate) {
    let top = hole;
    let mut child = hole;
    while child < (len - 1) / 2 {
        child = 2 * (child + 1);
        if before(&v[child], &v[child - 1]) {
            child -= 1;
        }
        v[hole] = v[child];
        hole = child;
    }
    if len.is_multiple_of(2) && child == (len - 2) / 2 {
        child = 2 * (child + 1);
        v[hole] = v[child - 1];
        hole = child - 1;
    }
    push_heap(v, hole, top, value);
}

/// Sifts `value` up from `hole` while its parent ranks before it, stopping at `top`.
fn push_heap(v: &mut [Candidate], mut hole: usize, top: usize, value: Candidate) {
    while hole > top {
        let parent = (hole - 1) / 2;
        if !before(&v[parent], &value) {
            break;
        }
        v[hole] = v[parent];
        hole = parent;
    }
    v[hole] = value;
}

/// Builds the heap bottom-up, from the last parent down to the root.
fn make_heap(v: &mut [Candidate]) {
    let len = v.len();
    if len < 2 {
        return;
    }
    let mut parent = (len - 2) / 2;
    loop {
        let value = v[parent];
        adjust_heap(v, parent, len, value);
        if parent == 0 {
            return;
        }
        parent -= 1;
    }
}

/// Repeatedly moves the top to the end of the shrinking heap (ascending under the comparator:
/// best first).
fn sort_heap(v: &mut [Candidate]) {
    let mut last = v.len();
    while last > 1 {
        last -= 1;
        let value = v[last];
        v[last] = v[0];
        adjust_heap(v, 0, last, value);
    }
}

/// Heap select on `v[..middle]` over all of `v` (partial_sort without the final heap sort).
fn heap_select(v: &mut [Candidate], middle: usize) {
    make_heap(&mut v[..middle]);
    for i in middle..v.len() {
        if before(&v[i], &v[0]) {
            let value = v[i];
            v[i] = v[0];
            adjust_heap(v, 0, middle, value);
        }
    }
}

// ---- introselect / introsort (libstdc++ stl_algo.h semantics) ----

/// Swaps into `result` the median of the elements at `a`, `b`, `c`.
fn move_median_to_first(v: &mut [Candidate], result: usize, a: usize, b: usize, c: usize) {
    let median = if before(&v[a], &v[b]) {
        if before(&v[b], &v[c]) {
            b
        } else if before(&v[a], &v[c]) {
            c
        } else {
            a
        }
    } else if before(&v[a], &v[c]) {
        a
    } else if before(&v[b], &v[c]) {
        c
    } else {
        b
    };
    v.swap(result, median);
}

/// Partitions `v[first..last)` around the pivot at `pivot` (outside that range); returns the cut.
fn unguarded_partition(
    v: &mut [Candidate],
    mut first: usize,
    mut last: usize,
    pivot: usize,
) -> usize {
    loop {
        while before(&v[first], &v[pivot]) {
            first += 1;
        }
        last -= 1;
        while before(&v[pivot], &v[last]) {
            last -= 1;
        }
        if first >= last {
            return first;
        }
        v.swap(first, last);
        first += 1;
    }
}

/// Median-of-three pivot (of the second, middle and last elements) moved to `first`, then the
/// partition of the rest around it.
fn unguarded_partition_pivot(v: &mut [Candidate], first: usize, last: usize) -> usize {
    let mid = first + (last - first) / 2;
    move_median_to_first(v, first, first + 1, mid, last - 1);
    unguarded_partition(v, first + 1, last, first)
}

/// Inserts `v[last]` into the sorted run before it; something before it must not rank after it.
fn unguarded_linear_insert(v: &mut [Candidate], mut last: usize) {
    let value = v[last];
    let mut next = last - 1;
    while before(&value, &v[next]) {
        v[last] = v[next];
        last = next;
        next -= 1;
    }
    v[last] = value;
}

/// Insertion sort of `v[first..last)`.
fn insertion_sort(v: &mut [Candidate], first: usize, last: usize) {
    if first == last {
        return;
    }
    for i in first + 1..last {
        if before(&v[i], &v[first]) {
            let value = v[i];
            v.copy_within(first..i, first + 1);
            v[first] = value;
        } else {
            unguarded_linear_insert(v, i);
        }
    }
}

/// `std::nth_element(v.begin(), v.begin() + nth, v.end(), comp)`.
fn nth_element(v: &mut [Candidate], nth: usize) {
    let (mut first, mut last) = (0, v.len());
    if nth >= last {
        return;
    }
    let mut depth = 2 * lg(last);
    while last - first > 3 {
        if depth == 0 {
            heap_select(&mut v[first..last], nth + 1 - first);
            v.swap(first, nth);
            return;
        }
        depth -= 1;
        let cut = unguarded_partition_pivot(v, first, last);
        if cut <= nth {
            first = cut;
        } else {
            last = cut;
        }
    }
    insertion_sort(v, first, last);
}

/// Below this many elements introsort leaves the range to the final insertion sort.
const SORT_THRESHOLD: usize = 16;

/// `std::sort(v.begin(), v.end(), comp)`.
fn sort(v: &mut [Candidate]) {
    let len = v.len();
    if len == 0 {
        return;
    }
    introsort_loop(v, 0, len, 2 * lg(len));
    if len > SORT_THRESHOLD {
        insertion_sort(v, 0, SORT_THRESHOLD);
        for i in SORT_THRESHOLD..len {
            unguarded_linear_insert(v, i);
        }
    } else {
        insertion_sort(v, 0, len);
    }
}

fn introsort_loop(v: &mut [Candidate], first: usize, mut last: usize, mut depth: usize) {
    while last - first > SORT_THRESHOLD {
        if depth == 0 {
            // partial_sort(first, last, last): a heap sort of the range.
            let range = &mut v[first..last];
            make_heap(range);
            sort_heap(range);
            return;
        }
        depth -= 1;
        let cut = unguarded_partition_pivot(v, first, last);
        introsort_loop(v, cut, last, depth);
        last = cut;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(c: &[Candidate]) -> Vec<u32> {
        c.iter().map(|c| c.id).collect()
    }

    #[test]
    fn the_documented_examples() {
        let mut x = vec![0.0f32; 32064];
        for i in [7, 100, 30000] {
            x[i] = 5.0;
        }
        assert_eq!(ids(&torch_topk(&x, 5)), vec![100, 30000, 7, 3, 1]);
        assert_eq!(ids(&torch_topk(&x, 1)), vec![7]);
        // n = 6 < 64 k: the nth_element path.
        let y = [1.0, 3.0, 2.0, 3.0, 3.0, 0.0];
        assert_eq!(ids(&torch_topk(&y, 5)), vec![1, 4, 3, 2, 0]);
    }

    #[test]
    fn edge_sizes() {
        assert!(torch_topk(&[], 5).is_empty());
        assert!(torch_topk(&[1.0, 2.0], 0).is_empty());
        assert_eq!(ids(&torch_topk(&[1.0, 3.0], 5)), vec![1, 0]);
        assert_eq!(ids(&torch_topk(&[4.0], 1)), vec![0]);
    }

    #[test]
    fn nan_ranks_first() {
        let mut x = vec![1.0f32; 640];
        x[9] = f32::NAN;
        x[300] = 2.0;
        let top = torch_topk(&x, 2);
        assert_eq!(top[0].id, 9);
        assert_eq!(top[1].id, 300);
    }

    #[test]
    fn sort_and_nth_element_order_fully() {
        // Distinct values: both algorithms must give the exact descending order.
        let x: Vec<f32> = (0..300).map(|i| ((i * 7919) % 301) as f32).collect();
        let mut all: Vec<Candidate> = (0u32..)
            .zip(&x)
            .map(|(id, &logit)| Candidate { id, logit })
            .collect();
        let mut expected = all.clone();
        expected.sort_by(|a, b| b.logit.total_cmp(&a.logit));
        sort(&mut all);
        assert_eq!(all, expected);
        let mut all: Vec<Candidate> = (0u32..)
            .zip(&x)
            .map(|(id, &logit)| Candidate { id, logit })
            .collect();
        nth_element(&mut all, 150);
        assert_eq!(all[150], expected[150]);
        assert!(all[..150].iter().all(|c| c.logit >= all[150].logit));
        assert!(all[151..].iter().all(|c| c.logit <= all[150].logit));
    }
}
