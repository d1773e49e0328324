//! AVX2+FMA inner loops of the GEMV path.
//!
//! Weights are consumed 16 at a time from `NR` rows at once. A 32-byte load of 16 bf16 widens with
//! two ALU ops into the f32 of the even and of the odd elements (see `WeightElem::load16_avx2`), so
//! the activation rows are first re-laid out once per call to match: in each 16-chunk the 8 even
//! elements, then the 8 odd ones. The dot product is order-independent, so nothing else changes.
//! f32 weights use the activations as they are. Eight ymm accumulators per tile hide the 4-cycle
//! FMA latency; a tile's weight rows lie `BLOCK_ROWS / NR` rows apart and each is
//! software-prefetched 1 KiB ahead (memory-level parallelism is what one core lacks on this
//! machine); the `k % 16` tail is scalar.

use std::arch::x86_64::*;

use super::elem::WeightElem;
use super::gemv::{BLOCK_ROWS, BlockResult, for_row_blocks};
use super::isa::Avx2Fma;
use super::scratch::with_scratch;

/// `out = x @ w^T` for `1 <= m <= GEMV_MAX_M` with AVX2+FMA (the token proves the CPU has them).
#[allow(clippy::too_many_arguments)]
pub(super) fn gemv<W: WeightElem>(
    token: Avx2Fma,
    x: &[f32],
    w: &[W],
    ldw: usize,
    out: &mut [f32],
    m: usize,
    k: usize,
    n: usize,
) {
    let kv = k - k % 16;
    let mut run = |xv: &[f32], xs: usize| {
        let rows = Rows {
            ldw,
            base: 0,
            rowlen: k,
            x,
            xk: k,
            xv,
            xs,
            k,
            kv,
            m,
        };
        for_row_blocks(out, m, n, k, |j0, nrows, res| {
            let w = &w[j0 * ldw..(j0 + nrows - 1) * ldw + k];
            // SAFETY: `token` exists only if AVX2 and FMA were detected on this CPU.
            unsafe { block(token, &rows, w, ldw, nrows, res) }
        });
    };
    if W::PAIRS_EVEN_ODD && kv > 0 {
        with_scratch(m * kv, |xr| {
            relayout_even_odd(x, m, k, kv, xr);
            run(xr, kv);
        });
    } else {
        run(x, k);
    }
}

/// The activations as a kernel sees them.
pub(super) struct Rows<'a> {
    /// Distance between weight rows (not an activation property, but every tile needs it).
    pub ldw: usize,
    /// Column of the weight rows where the tile's `w` starts (non-zero for a column block read as
    /// part of a longer row).
    pub base: usize,
    /// Length of the run of each weight row that is streamed in order (`k`, or the whole row when
    /// its column blocks are read one after another): prefetches past it continue on the next row.
    pub rowlen: usize,
    /// Original rows, row stride `xk` (used for the scalar tail).
    pub x: &'a [f32],
    pub xk: usize,
    /// Rows as the vector loop reads them (re-laid out, or `x` itself), row stride `xs`.
    pub xv: &'a [f32],
    pub xs: usize,
    pub k: usize,
    /// `k` rounded down to a multiple of 16: the vectorised part.
    pub kv: usize,
    pub m: usize,
}

/// Writes each 16-chunk of each row as its 8 even elements then its 8 odd ones.
pub(super) fn relayout_even_odd(x: &[f32], m: usize, k: usize, kv: usize, xr: &mut [f32]) {
    for i in 0..m {
        let src = &x[i * k..i * k + kv];
        let dst = &mut xr[i * kv..(i + 1) * kv];
        for (s, d) in src.chunks_exact(16).zip(dst.chunks_exact_mut(16)) {
            for l in 0..8 {
                d[l] = s[2 * l];
                d[8 + l] = s[2 * l + 1];
            }
        }
    }
}

/// How far ahead of the loads each weight row is prefetched, in bytes. Without it one core keeps
/// too few misses in flight on this machine's high-latency memory (measured: 12 -> 19 GB/s at
/// `m = 1`, both cores); 0.5-2 KiB all work, 1 KiB was best.
pub(super) const PREFETCH_BYTES: usize = 1024;

/// Computes one block of `nrows` weight rows (`w` holds those rows, `ldw` apart) for all `m`
/// activation rows.
///
/// Weight rows go `NR` at a time (chosen by `m`); for each group, the activation rows go in chunks
/// of at most 4, so the group's weights come from memory once and from L1 for later chunks.
///
/// # Safety
/// The CPU must support AVX2 and FMA.
#[target_feature(enable = "avx2,fma")]
unsafe fn block<W: WeightElem>(
    _token: Avx2Fma,
    rows: &Rows<'_>,
    w: &[W],
    ldw: usize,
    nrows: usize,
    res: &mut BlockResult,
) {
    let k = rows.k;
    let (groups, gap, nr) = row_groups(rows.m, nrows);
    for g in 0..groups {
        // Rows g, g + gap, .., g + (nr-1)*gap of the block.
        let wr = &w[g * ldw..(g + (nr - 1) * gap) * ldw + k];
        let mut i0 = 0;
        while i0 < rows.m {
            let mr = (rows.m - i0).min(4);
            chunk(rows, i0, mr, wr, gap * ldw, nr, i0 == 0, &mut |i, q, v| {
                res[(i0 + i) * BLOCK_ROWS + g + q * gap] = v
            });
            i0 += mr;
        }
    }
}

/// How a block of `nrows` weight rows is walked for `m` activation rows: `(groups, gap, nr)`, group
/// `g` being rows `g, g + gap, .., g + (nr-1)*gap`.
///
/// Weight rows per group: 4 for m = 1 (8 split accumulators), else 2. (Three rows with four
/// activation rows needs 12 accumulators plus the activations and spills; it measured no faster.)
/// A tile's rows are taken `nrows / nr` apart when that divides (every block but a short last
/// one): streams several KiB apart keep more DRAM pages busy than adjacent rows (measured +6% at
/// m = 1, +17% at m = 8).
pub(super) fn row_groups(m: usize, nrows: usize) -> (usize, usize, usize) {
    let nr_main = if m == 1 { 4 } else { 2 };
    if nrows.is_multiple_of(nr_main) {
        (nrows / nr_main, nrows / nr_main, nr_main)
    } else {
        (nrows, 1, 1)
    }
}

/// Runs the register tile for activation rows `i0..i0+mr` against the `nr` weight rows `w`,
/// passing each result to `put(i, q, value)`.
///
/// Tiles (`MR` activation rows x `NR` weight rows): at most 12 ymm accumulators, and at least ~10
/// independent FMA chains so the 4-cycle latency is hidden. `SPLIT` keeps separate accumulators
/// for the two halves of each 16-chunk when the tile alone would have too few chains.
#[inline]
#[target_feature(enable = "avx2,fma")]
#[allow(clippy::too_many_arguments)]
pub(super) fn chunk<W: WeightElem>(
    rows: &Rows<'_>,
    i0: usize,
    mr: usize,
    w: &[W],
    rs: usize,
    nr: usize,
    prefetch: bool,
    put: &mut impl FnMut(usize, usize, f32),
) {
    fn emit<const MR: usize, const NR: usize>(
        acc: [[f32; NR]; MR],
        put: &mut impl FnMut(usize, usize, f32),
    ) {
        for (i, row) in acc.iter().enumerate() {
            for (q, &v) in row.iter().enumerate() {
                put(i, q, v);
            }
        }
    }
    let p = prefetch;
    match (nr, mr) {
        (4, 1) => emit(tile::<W, 1, 4, true>(rows, i0, w, rs, p), put),
        (2, 1) => emit(tile::<W, 1, 2, true>(rows, i0, w, rs, p), put),
        (2, 2) => emit(tile::<W, 2, 2, true>(rows, i0, w, rs, p), put),
        (2, 3) => emit(tile::<W, 3, 2, false>(rows, i0, w, rs, p), put),
        (2, 4) => emit(tile::<W, 4, 2, false>(rows, i0, w, rs, p), put),
        (1, 1) => emit(tile::<W, 1, 1, true>(rows, i0, w, rs, p), put),
        (1, 2) => emit(tile::<W, 2, 1, true>(rows, i0, w, rs, p), put),
        (1, 3) => emit(tile::<W, 3, 1, true>(rows, i0, w, rs, p), put),
        (1, 4) => emit(tile::<W, 4, 1, true>(rows, i0, w, rs, p), put),
        (nr, mr) => unreachable!("no gemv tile for {mr} x {nr}"),
    }
}

/// Dot products of activation rows `i0..i0+MR` with the `NR` weight rows of `w` that start every
/// `rs` elements, optionally prefetching each weight row `PREFETCH_BYTES` ahead.
#[inline]
#[target_feature(enable = "avx2,fma")]
fn tile<W: WeightElem, const MR: usize, const NR: usize, const SPLIT: bool>(
    rows: &Rows<'_>,
    i0: usize,
    w: &[W],
    rs: usize,
    prefetch: bool,
) -> [[f32; NR]; MR] {
    let (k, kv, xs) = (rows.k, rows.kv, rows.xs);
    // These bounds make every raw read below in range.
    assert!(i0 + MR <= rows.m && rs >= k && w.len() >= (NR - 1) * rs + k);
    assert!(rows.xk >= k && rows.x.len() >= (rows.m - 1) * rows.xk + k);
    assert!(kv <= k && kv.is_multiple_of(16) && rows.xv.len() >= (rows.m - 1) * xs + kv);
    let wp = w.as_ptr();
    let xp = rows.xv.as_ptr().wrapping_add(i0 * xs);
    let ahead = PREFETCH_BYTES / size_of::<W>();
    let mut ae = [[_mm256_setzero_ps(); NR]; MR];
    let mut ao = [[_mm256_setzero_ps(); NR]; MR];
    let mut c = 0;
    while c < kv {
        for r in 0..NR {
            if prefetch {
                // A hint that never faults (wrapping_add keeps the address arithmetic defined
                // when it points past `w`). The tile's later groups read the next rows, so a
                // position past the end of this row continues into those rows (`ldw` apart),
                // never into the columns beyond the row: they belong to another device's view.
                let p = rows.base + c + ahead;
                let off = (p / rows.rowlen) * rows.ldw + p % rows.rowlen - rows.base;
                _mm_prefetch::<_MM_HINT_T0>(wp.wrapping_add(r * rs + off).cast::<i8>());
            }
            // SAFETY: c + 16 <= kv <= k, so the 16 weights r*rs + c.. lie inside row r of w.
            let (we, wo) = unsafe { W::load16_avx2(wp.add(r * rs + c)) };
            for i in 0..MR {
                // SAFETY: (i0+i)*xs + c + 16 <= (m-1)*xs + kv <= xv.len() (asserted above).
                let (xe, xo) = unsafe {
                    (
                        _mm256_loadu_ps(xp.add(i * xs + c)),
                        _mm256_loadu_ps(xp.add(i * xs + c + 8)),
                    )
                };
                ae[i][r] = _mm256_fmadd_ps(we, xe, ae[i][r]);
                if SPLIT {
                    ao[i][r] = _mm256_fmadd_ps(wo, xo, ao[i][r]);
                } else {
                    ae[i][r] = _mm256_fmadd_ps(wo, xo, ae[i][r]);
                }
            }
        }
        c += 16;
    }
    let mut out = [[0.0f32; NR]; MR];
    for i in 0..MR {
        for r in 0..NR {
            let mut s = hsum(_mm256_add_ps(ae[i][r], ao[i][r]));
            for kk in kv..k {
                s += rows.x[(i0 + i) * rows.xk + kk] * w[r * rs + kk].to_f32();
            }
            out[i][r] = s;
        }
    }
    out
}

/// Sum of the 8 lanes.
#[inline]
#[target_feature(enable = "avx2,fma")]
pub(super) fn hsum(v: __m256) -> f32 {
    let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps::<1>(v));
    let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    let s = _mm_add_ss(s, _mm_shuffle_ps::<0b01>(s, s));
    _mm_cvtss_f32(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relayout_pairs_even_and_odd() {
        let x: Vec<f32> = (0..35).map(|v| v as f32).collect(); // m=1, k=35, kv=32
        let mut xr = vec![0.0; 32];
        relayout_even_odd(&x, 1, 35, 32, &mut xr);
        assert_eq!(&xr[..8], &[0.0, 2.0, 4.0, 6.0, 8.0, 10.0, 12.0, 14.0]);
        assert_eq!(&xr[8..16], &[1.0, 3.0, 5.0, 7.0, 9.0, 11.0, 13.0, 15.0]);
        assert_eq!(xr[16], 16.0);
        assert_eq!(xr[24], 17.0);
    }
}
