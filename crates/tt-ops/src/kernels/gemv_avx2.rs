//! AVX2+FMA inner loops of the GEMV path.
//!
//! Weights are consumed 16 at a time from `NR` rows at once. A 32-byte load of 16 bf16 widens with
//! two ALU ops into the f32 of the even and of the odd elements (see `WeightElem::load16_avx2`), so
//! the activation rows are first re-laid out once per call to match: in each 16-chunk the 8 even
//! elements, then the 8 odd ones. The dot product is order-independent, so nothing else changes.
//! f32 weights use the activations as they are. Up to 12 ymm accumulators hide the 4-cycle FMA
//! latency; the `k % 16` tail is scalar.

use std::arch::x86_64::*;

use super::elem::WeightElem;
use super::gemv::{BLOCK_ROWS, BlockResult, for_row_blocks};
use super::isa::Avx2Fma;
use super::scratch::with_scratch;

/// `out = x @ w^T` for `1 <= m <= GEMV_MAX_M` with AVX2+FMA (the token proves the CPU has them).
pub(super) fn gemv<W: WeightElem>(
    token: Avx2Fma,
    x: &[f32],
    w: &[W],
    out: &mut [f32],
    m: usize,
    k: usize,
    n: usize,
) {
    let kv = k - k % 16;
    let mut run = |xv: &[f32], xs: usize| {
        let rows = Rows {
            x,
            xv,
            xs,
            k,
            kv,
            m,
        };
        for_row_blocks(out, m, n, k, |j0, nrows, res| {
            let w = &w[j0 * k..(j0 + nrows) * k];
            // SAFETY: `token` exists only if AVX2 and FMA were detected on this CPU.
            unsafe { block(token, &rows, w, nrows, res) }
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
struct Rows<'a> {
    /// Original rows, `[m, k]` (used for the scalar tail).
    x: &'a [f32],
    /// Rows as the vector loop reads them (re-laid out, or `x` itself), row stride `xs`.
    xv: &'a [f32],
    xs: usize,
    k: usize,
    /// `k` rounded down to a multiple of 16: the vectorised part.
    kv: usize,
    m: usize,
}

/// Writes each 16-chunk of each row as its 8 even elements then its 8 odd ones.
fn relayout_even_odd(x: &[f32], m: usize, k: usize, kv: usize, xr: &mut [f32]) {
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

/// Computes one block of `nrows` weight rows (`w` holds exactly those rows) for all `m` activation
/// rows, choosing register tiles by `m`.
///
/// # Safety
/// The CPU must support AVX2 and FMA.
#[target_feature(enable = "avx2,fma")]
unsafe fn block<W: WeightElem>(
    _token: Avx2Fma,
    rows: &Rows<'_>,
    w: &[W],
    nrows: usize,
    res: &mut BlockResult,
) {
    // Tiles: MR = m activation rows x NR weight rows. SPLIT keeps separate accumulators for the
    // two halves of each chunk, doubling the independent FMA chains when the tile is small.
    match rows.m {
        1 => rows_in::<W, 1, 4, true>(rows, w, nrows, res),
        2 => rows_in::<W, 2, 2, true>(rows, w, nrows, res),
        3 => rows_in::<W, 3, 4, false>(rows, w, nrows, res),
        4 => rows_in::<W, 4, 2, false>(rows, w, nrows, res),
        5 => rows_in::<W, 5, 2, false>(rows, w, nrows, res),
        6 => rows_in::<W, 6, 2, false>(rows, w, nrows, res),
        7 => rows_in::<W, 7, 1, false>(rows, w, nrows, res),
        8 => rows_in::<W, 8, 1, false>(rows, w, nrows, res),
        m => unreachable!("gemv called with m = {m}"),
    }
}

/// Runs the `MR x NR` tile over the block's rows, then leftover rows one at a time.
#[inline]
#[target_feature(enable = "avx2,fma")]
fn rows_in<W: WeightElem, const MR: usize, const NR: usize, const SPLIT: bool>(
    rows: &Rows<'_>,
    w: &[W],
    nrows: usize,
    res: &mut BlockResult,
) {
    const { assert!(BLOCK_ROWS.is_multiple_of(NR)) };
    let k = rows.k;
    let mut r = 0;
    while r < nrows {
        if r + NR <= nrows {
            let acc = tile::<W, MR, NR, SPLIT>(rows, &w[r * k..(r + NR) * k]);
            for (i, row) in acc.iter().enumerate() {
                res[i * BLOCK_ROWS + r..i * BLOCK_ROWS + r + NR].copy_from_slice(row);
            }
            r += NR;
        } else {
            let acc = tile::<W, MR, 1, SPLIT>(rows, &w[r * k..(r + 1) * k]);
            for (i, row) in acc.iter().enumerate() {
                res[i * BLOCK_ROWS + r] = row[0];
            }
            r += 1;
        }
    }
}

/// Dot products of `MR` activation rows with `NR` consecutive weight rows (`w` is `[NR, k]`).
#[inline]
#[target_feature(enable = "avx2,fma")]
fn tile<W: WeightElem, const MR: usize, const NR: usize, const SPLIT: bool>(
    rows: &Rows<'_>,
    w: &[W],
) -> [[f32; NR]; MR] {
    let (k, kv, xs) = (rows.k, rows.kv, rows.xs);
    // These bounds make every raw read below in range.
    assert!(MR <= rows.m && w.len() == NR * k && rows.x.len() >= MR * k);
    assert!(kv <= k && kv.is_multiple_of(16) && rows.xv.len() >= (MR - 1) * xs + kv);
    let wp = w.as_ptr();
    let xp = rows.xv.as_ptr();
    let mut ae = [[_mm256_setzero_ps(); NR]; MR];
    let mut ao = [[_mm256_setzero_ps(); NR]; MR];
    let mut c = 0;
    while c < kv {
        for r in 0..NR {
            // SAFETY: c + 16 <= kv <= k, so the 16 weights r*k + c.. lie inside row r of w.
            let (we, wo) = unsafe { W::load16_avx2(wp.add(r * k + c)) };
            for i in 0..MR {
                // SAFETY: i*xs + c + 16 <= (MR-1)*xs + kv <= xv.len() (asserted above).
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
                s += rows.x[i * k + kk] * w[r * k + kk].to_f32();
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
