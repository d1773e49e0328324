//! Row-parallel GEMV of every device in one pass: `out[b] = x[:, blk b] @ w[:, blk b]^T` for the
//! `blocks` equal column blocks of one weight matrix.
//!
//! A row-parallel layer gives device `b` the columns `b*kb .. (b+1)*kb` of `w [n, K]` and its own
//! activations. Run device by device, each GEMV reads its columns with the row stride `K`: short
//! runs (768 B for Phi-3's `o_proj` on 8 devices) spread over the whole matrix, which streams at
//! about 60% of a contiguous read here (a TLB miss and a broken hardware-prefetch stream per run).
//! This kernel instead walks each group of weight rows once, left to right, computing the dot
//! product of every block in turn: the matrix is read as one contiguous stream, and each device's
//! partial result is still its own (`x`'s block `b` only ever meets `w`'s block `b`).

use super::elem::WeightElem;
use super::gemv::{BLOCK_ROWS, for_each_row_block};
use super::gemv_avx2::{Rows, chunk, relayout_even_odd, row_groups};
use super::isa::Avx2Fma;
use super::out::DisjointOut;
use super::scratch::with_scratch;

/// `outs[b] [m, n]` = `x[:, b*kb..(b+1)*kb] @ w[:, b*kb..(b+1)*kb]^T` for each block `b`, with
/// `x [m, k]`, `w [n, k]` (contiguous), `kb = k / blocks` a multiple of 16, `1 <= m <= 8`.
#[allow(clippy::too_many_arguments)]
pub(super) fn gemv_column_blocks<W: WeightElem>(
    _token: Avx2Fma,
    x: &[f32],
    w: &[W],
    outs: &mut [&mut [f32]],
    m: usize,
    k: usize,
    n: usize,
) {
    let blocks = outs.len();
    assert!(blocks > 0 && k.is_multiple_of(blocks));
    let kb = k / blocks;
    assert!(kb.is_multiple_of(16) && (1..=8).contains(&m));
    assert!(x.len() == m * k && w.len() == n * k && outs.iter().all(|o| o.len() == m * n));
    let out: Vec<DisjointOut<'_>> = outs.iter_mut().map(|o| DisjointOut::new(o)).collect();
    let run = |xv: &[f32]| {
        let task = |t: usize| {
            let j0 = t * BLOCK_ROWS;
            let nrows = BLOCK_ROWS.min(n - j0);
            // SAFETY: `_token` exists only if AVX2 and FMA were detected on this CPU.
            unsafe {
                row_block(
                    x,
                    xv,
                    &w[j0 * k..(j0 + nrows) * k],
                    &out,
                    j0,
                    nrows,
                    m,
                    k,
                    n,
                    kb,
                )
            }
        };
        for_each_row_block(n, k, task);
    };
    if W::PAIRS_EVEN_ODD {
        with_scratch(m * k, |xr| {
            relayout_even_odd(x, m, k, k, xr);
            run(xr);
        });
    } else {
        run(x);
    }
}

/// Weight rows `j0 .. j0 + nrows` (`w` holds exactly them) for every block and activation row.
///
/// # Safety
/// The CPU must support AVX2 and FMA.
#[target_feature(enable = "avx2,fma")]
#[allow(clippy::too_many_arguments)]
unsafe fn row_block<W: WeightElem>(
    x: &[f32],
    xv: &[f32],
    w: &[W],
    out: &[DisjointOut<'_>],
    j0: usize,
    nrows: usize,
    m: usize,
    k: usize,
    n: usize,
    kb: usize,
) {
    // Tiles as in the plain GEMV.
    let (groups, gap, nr) = row_groups(m, nrows);
    for g in 0..groups {
        for (b, out_b) in out.iter().enumerate() {
            let c0 = b * kb;
            let rows = Rows {
                ldw: k,
                base: c0,
                rowlen: k,
                x: &x[c0..],
                xk: k,
                xv: &xv[c0..],
                xs: k,
                k: kb,
                kv: kb,
                m,
            };
            let wr = &w[g * k + c0..(g + (nr - 1) * gap) * k + c0 + kb];
            let mut i0 = 0;
            while i0 < m {
                let mr = (m - i0).min(4);
                chunk(&rows, i0, mr, wr, gap * k, nr, i0 == 0, &mut |i, q, v| {
                    let at = (i0 + i) * n + j0 + g + q * gap;
                    // SAFETY: this task alone writes columns j0..j0+nrows of every output row,
                    // and this one-element segment is dropped before the next is taken.
                    unsafe { out_b.segment(at, 1)[0] = v };
                });
                i0 += mr;
            }
        }
    }
}
