//! The decode GEMV for bf16 weights on AVX-512 BF16, when every activation is a bf16 value (the
//! `bf16` preset rounds activations between ops): `vdpbf16ps` takes 32 weights as they lie in
//! memory, pairs `(k, k + 1)` against the same pair of activations, so a weight costs no
//! instruction but its share of one load and one `vdpbf16ps` per activation row.
//!
//! Why: one core streams more of a matrix the fewer instructions it spends per byte, since more
//! loads then fit in its out-of-order window. One core, 12 matrices of 8192 x 3072 (600 MB;
//! `RAYON_NUM_THREADS=1 cargo run --release -p tt-ops --example gemv_stream`), the AVX2 kernel
//! ([`super::gemv_avx2`]: a load, two widening ops and two FMAs per 16 weights) read 23.5 GB/s
//! where a plain sum read 34.5 and this kernel 32.7 (docs/PERFORMANCE.md, Session 13). Two cores
//! reach the memory's rate with either kernel only while the memory is slow.
//!
//! Numbers: a product of two bf16 values is exact in f32, so only the order of the f32 sums
//! differs from the AVX2 kernel (as between any two GEMM kernels; results are checked against
//! the f64 reference with the same tolerance). `vdpbf16ps` reads subnormal bf16 inputs as zero,
//! as oneDNN's bf16 prefill does on the same instruction. Weight rows go one at a time, whole
//! (a contiguous stream per worker); each is read once for up to four activation rows, again
//! from L1 for rows five to eight.

use std::arch::x86_64::*;

use half::bf16;

use super::gemv::{BLOCK_ROWS, for_each_row_block, for_row_blocks};
use super::out::DisjointOut;
use super::scratch::with_scratch;

/// Proof that this CPU executes AVX-512 F, BW and BF16 and that `vdpbf16ps` is as fast as an
/// FMA there (AMD; see [`crate::packed_prefill_avx512bf16::Avx512Bf16::where_it_pays`]).
#[derive(Clone, Copy, Debug)]
pub(crate) struct GemvBf16(());

impl GemvBf16 {
    /// `Some` where this kernel runs: AVX-512 BF16 whose `vdpbf16ps` pays (AMD), unless
    /// `TT_OPS_GEMV=avx2` asks for the AVX2 kernel (comparisons).
    pub(crate) fn detect() -> Option<Self> {
        static USABLE: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
        let usable = *USABLE.get_or_init(|| {
            let forced_off = std::env::var("TT_OPS_GEMV").is_ok_and(|v| v.trim() == "avx2");
            !forced_off
                && crate::packed_prefill_avx512bf16::Avx512Bf16::where_it_pays().is_some()
                && is_x86_feature_detected!("avx512bw")
        });
        usable.then_some(Self(()))
    }
}

/// Runs `f` on `x` as bf16 values, in scratch memory, if every value is exactly a bf16 (its low
/// 16 bits are zero); `None` (and `f` not run) otherwise.
pub(super) fn with_bf16_activations<R>(x: &[f32], f: impl FnOnce(&[bf16]) -> R) -> Option<R> {
    with_scratch(x.len().div_ceil(2), |buf| {
        let xb = &mut bytemuck::cast_slice_mut::<f32, bf16>(buf)[..x.len()];
        for (d, &v) in xb.iter_mut().zip(x) {
            let bits = v.to_bits();
            if bits & 0xFFFF != 0 {
                return None;
            }
            *d = bf16::from_bits((bits >> 16) as u16);
        }
        Some(f(xb))
    })
}

/// How far ahead of its loads a weight row is prefetched when two or more activation rows share
/// it (bytes; past the row's end, the next row when rows are contiguous). One row is left to the
/// hardware prefetcher: the hint cost it a quarter of one core's stream (30.8 -> 23.6 GB/s, one
/// thread, `gemv_stream`), while it raised four rows 24.9 -> 26.9 GB/s and eight 15.9 -> 16.4
/// (`cargo bench -p tt-ops --bench linear -- linear_decode`, against the AVX2 kernel; without it
/// four and eight rows were slower than that kernel, 22.9 and 14.5).
const PREFETCH_BYTES: usize = 1024;

/// Weights per step of the inner loop (one 64-byte load).
const LANES: usize = 32;

/// `out = x @ w^T` for `1 <= m <= GEMV_MAX_M`, `x` bf16 `[m, k]`, weight row `j` at `j * ldw`.
#[allow(clippy::too_many_arguments)]
pub(super) fn gemv(
    token: GemvBf16,
    x: &[bf16],
    w: &[bf16],
    ldw: usize,
    out: &mut [f32],
    m: usize,
    k: usize,
    n: usize,
) {
    assert!(
        (1..=super::GEMV_MAX_M).contains(&m)
            && ldw >= k
            && x.len() == m * k
            && n >= 1
            && (n - 1) * ldw + k <= w.len()
            && out.len() == m * n
    );
    for_row_blocks(out, m, n, k, |j0, rows, res| {
        for r in 0..rows {
            let row = &w[(j0 + r) * ldw..(j0 + r) * ldw + k];
            // SAFETY: `token` exists only where AVX-512 F/BW/BF16 were detected.
            unsafe { dot_rows(token, x, k, 0, row, m, |i, v| res[i * BLOCK_ROWS + r] = v) };
        }
    });
}

/// Row-parallel products of every device in one pass (see [`super::gemv_blocks`]): `outs[b]`
/// `[m, n]` = `x[:, b*kb..(b+1)*kb] @ w[:, b*kb..(b+1)*kb]^T`, `kb = k / outs.len()`, `w [n, k]`
/// contiguous, each weight row read once, left to right.
pub(super) fn gemv_column_blocks(
    token: GemvBf16,
    x: &[bf16],
    w: &[bf16],
    outs: &mut [&mut [f32]],
    m: usize,
    k: usize,
    n: usize,
) {
    let blocks = outs.len();
    assert!(blocks > 0 && k.is_multiple_of(blocks) && (1..=super::GEMV_MAX_M).contains(&m));
    assert!(x.len() == m * k && w.len() == n * k && outs.iter().all(|o| o.len() == m * n));
    let kb = k / blocks;
    let out: Vec<DisjointOut<'_>> = outs.iter_mut().map(|o| DisjointOut::new(o)).collect();
    let task = |t: usize| {
        let j0 = t * BLOCK_ROWS;
        for j in j0..(j0 + BLOCK_ROWS).min(n) {
            let row = &w[j * k..(j + 1) * k];
            for (b, out_b) in out.iter().enumerate() {
                let put = |i: usize, v: f32| {
                    // SAFETY: task t alone writes columns j0..j0+BLOCK_ROWS of every output
                    // row, and this one-element segment is dropped before the next is taken.
                    unsafe { out_b.segment(i * n + j, 1)[0] = v };
                };
                // SAFETY: as in `gemv`.
                unsafe { dot_rows(token, x, k, b * kb, &row[b * kb..(b + 1) * kb], m, put) };
            }
        }
    };
    for_each_row_block(n, k, task);
}

/// The dot products of one weight row `w` (`w.len()` weights) with columns `c0 .. c0 + w.len()`
/// of the `m` activation rows of `x` (row stride `xk`), passed to `put(i, value)`.
///
/// # Safety
/// The CPU must support AVX-512 F, BW and BF16 (the token's proof).
#[target_feature(enable = "avx512f,avx512bw,avx512bf16")]
fn dot_rows(
    _token: GemvBf16,
    x: &[bf16],
    xk: usize,
    c0: usize,
    w: &[bf16],
    m: usize,
    mut put: impl FnMut(usize, f32),
) {
    fn emit<const R: usize>(vals: [f32; R], i0: usize, put: &mut impl FnMut(usize, f32)) {
        vals.iter().enumerate().for_each(|(i, &v)| put(i0 + i, v));
    }
    let mut i0 = 0;
    while i0 < m {
        let rows = match m - i0 {
            1 => 1,
            2 => 2,
            3 => 3,
            4..=7 => 4,
            _ => 8,
        };
        match rows {
            1 => emit(dot::<1>(x, xk, c0, i0, w), i0, &mut put),
            2 => emit(dot::<2>(x, xk, c0, i0, w), i0, &mut put),
            3 => emit(dot::<3>(x, xk, c0, i0, w), i0, &mut put),
            4 => emit(dot::<4>(x, xk, c0, i0, w), i0, &mut put),
            _ => emit(dot::<8>(x, xk, c0, i0, w), i0, &mut put),
        }
        i0 += rows;
    }
}

/// Activation rows `i0 .. i0 + R` (columns `c0 ..` of rows `xk` apart) against one weight row,
/// at least eight chains of accumulators (a `vdpbf16ps` is six cycles long): four per row for
/// one or two rows, two for three or four, one for eight; the last partial step reads masked
/// (masked-off weights and activations are zeros, adding nothing).
#[target_feature(enable = "avx512f,avx512bw,avx512bf16")]
#[inline]
fn dot<const R: usize>(x: &[bf16], xk: usize, c0: usize, i0: usize, w: &[bf16]) -> [f32; R] {
    const SPLIT: usize = 4;
    let len = w.len();
    // These bounds make every read below in range.
    assert!(c0 + len <= xk && (i0 + R - 1) * xk + c0 + len <= x.len());
    let wp = w.as_ptr();
    let xp = x.as_ptr().wrapping_add(i0 * xk + c0);
    let load = |p: *const bf16, c: usize, mask: __mmask32| -> __m512bh {
        // SAFETY: the mask covers only elements c .. len of a row in range (asserted above);
        // masked-off elements are not read. A bf16 vector is 32 u16 lanes.
        unsafe { std::mem::transmute(_mm512_maskz_loadu_epi16(mask, p.wrapping_add(c).cast())) }
    };
    let mut acc = [[_mm512_setzero_ps(); SPLIT]; R];
    // Accumulator a[s] of a row takes steps s, s + SPLIT, ..; with fewer chains per row, step
    // s goes to a[s % chains] (the others stay zero).
    let chains = match R {
        1 | 2 => SPLIT,
        3 | 4 => 2,
        _ => 1,
    };
    let step = |acc: &mut [[__m512; SPLIT]; R], s: usize, c: usize, mask: __mmask32| {
        if R > 1 {
            // A hint that never faults (wrapping_add keeps the arithmetic defined past the end).
            _mm_prefetch::<_MM_HINT_T0>(wp.wrapping_add(c + PREFETCH_BYTES / 2).cast::<i8>());
        }
        let wv = load(wp, c, mask);
        let s = s % chains;
        for (i, a) in acc.iter_mut().enumerate() {
            a[s] = _mm512_dpbf16_ps(a[s], wv, load(xp.wrapping_add(i * xk), c, mask));
        }
    };
    let mut c = 0;
    while c + SPLIT * LANES <= len {
        for s in 0..SPLIT {
            step(&mut acc, s, c + s * LANES, !0);
        }
        c += SPLIT * LANES;
    }
    // At most SPLIT steps are left, the last one maybe partial.
    for s in 0..SPLIT {
        let at = c + s * LANES;
        if at < len {
            let mask = if len - at >= LANES {
                !0
            } else {
                (1u32 << (len - at)) - 1
            };
            step(&mut acc, s, at, mask);
        }
    }
    let mut out = [0.0f32; R];
    for (o, a) in out.iter_mut().zip(&acc) {
        let sum = _mm512_add_ps(_mm512_add_ps(a[0], a[1]), _mm512_add_ps(a[2], a[3]));
        *o = _mm512_reduce_add_ps(sum);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::super::reference::{assert_close, column_block, matmul_ref, random_case};
    use super::super::{Isa, column_blocks_into, matmul_with, path};
    use super::*;

    /// `x` rounded to bf16 values (as the `bf16` preset's activations are).
    fn bf16_valued(x: &[f32]) -> Vec<f32> {
        x.iter().map(|&v| bf16::from_f32(v).to_f32()).collect()
    }

    #[test]
    fn every_m_and_tail_matches_the_f64_reference() {
        let Some(_) = GemvBf16::detect() else {
            eprintln!("skipped: no AVX-512 BF16 GEMV on this CPU");
            return;
        };
        // k: under one step, one step and tails, four steps exactly and with tails, Phi-3's.
        for &(k, n, ldw_extra) in &[
            (1, 3, 0),
            (31, 70, 5),
            (32, 64, 0),
            (33, 65, 1),
            (100, 129, 0),
            (128, 64, 32),
            (161, 200, 7),
            (3072, 70, 0),
        ] {
            for m in 1..=super::super::GEMV_MAX_M {
                let (x, _, wb) = random_case(m, k, n, (m * 31 + k * 7 + n) as u64);
                let x = bf16_valued(&x);
                let ldw = k + ldw_extra;
                let mut wide = vec![bf16::ZERO; n * ldw];
                for j in 0..n {
                    wide[j * ldw..j * ldw + k].copy_from_slice(&wb[j * k..(j + 1) * k]);
                }
                let before = path::path_counts();
                let mut got = vec![f32::NAN; m * n];
                let isa = Isa::detect();
                matmul_with(isa, &x, &wide[..(n - 1) * ldw + k], ldw, &mut got, m, k, n);
                // Other tests may count calls meanwhile: a lower bound only.
                let ran = path::path_counts().since(before);
                assert!(ran.gemv_bf16 >= 1, "m={m} k={k} n={n}");
                assert_close(
                    &got,
                    &matmul_ref(&x, &wb, m, k, n),
                    &format!("m={m} k={k} n={n}"),
                );
            }
        }
    }

    #[test]
    fn activations_that_are_not_bf16_values_take_the_avx2_kernel() {
        let Some(_) = GemvBf16::detect() else {
            eprintln!("skipped: no AVX-512 BF16 GEMV on this CPU");
            return;
        };
        let (m, k, n) = (2, 64, 8);
        let (mut x, _, wb) = random_case(m, k, n, 5);
        x = bf16_valued(&x);
        x[77] += x[77] * 2f32.powi(-12); // one value off the bf16 grid
        assert!(with_bf16_activations(&x, |_| ()).is_none());
        let before = path::path_counts();
        let mut got = vec![f32::NAN; m * n];
        matmul_with(Isa::detect(), &x, &wb, k, &mut got, m, k, n);
        assert!(path::path_counts().since(before).gemv >= 1);
        assert_close(&got, &matmul_ref(&x, &wb, m, k, n), "f32 activations");
    }

    #[test]
    fn column_blocks_match_each_block_alone() {
        let Some(_) = GemvBf16::detect() else {
            eprintln!("skipped: no AVX-512 BF16 GEMV on this CPU");
            return;
        };
        // 2x4's o_proj shape scaled down: blocks of 48 (a partial step) and of 96 (three).
        for &(m, blocks, kb, n) in &[(1, 8, 48, 130), (3, 4, 96, 64), (8, 2, 33, 70)] {
            let k = blocks * kb;
            let (x, _, wb) = random_case(m, k, n, (m + k + n) as u64);
            let x = bf16_valued(&x);
            let mut outs_store = vec![vec![f32::NAN; m * n]; blocks];
            let mut outs: Vec<&mut [f32]> = outs_store.iter_mut().map(|o| &mut o[..]).collect();
            let before = path::path_counts();
            column_blocks_into(Isa::detect(), true, &x, &wb, &mut outs, m, k, n);
            assert!(path::path_counts().since(before).gemv_bf16 >= 1);
            for (b, got) in outs_store.iter().enumerate() {
                let xb = column_block(&x, m, k, b * kb, kb);
                let wbb = column_block(&wb, n, k, b * kb, kb);
                assert_close(got, &matmul_ref(&xb, &wbb, m, kb, n), &format!("block {b}"));
            }
        }
    }
}
