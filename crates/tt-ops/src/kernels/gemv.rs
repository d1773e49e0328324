//! Small-`m` (decode) path: stream every weight row once and serve all activation rows from it.
//!
//! With `m <= GEMV_MAX_M` the work is dominated by reading `w` (`n*k` weights, each used for only
//! `m` multiply-adds), so the kernel is built for bandwidth: the weight rows of a block are read
//! once, widened in registers, never packed. The `n` rows are split into blocks of `BLOCK_ROWS`
//! that run in parallel ([`crate::team::for_each`]); each block writes its own columns of `out`.

use super::GEMV_MAX_M;
use super::elem::WeightElem;
use super::isa::Isa;
use super::out::DisjointOut;

/// Weight rows per parallel work item (the unit whose outputs are written together; a multiple
/// of the AVX2 tiles' 2 and 4 rows). Large, because a tile takes its rows `BLOCK_ROWS / 4` apart:
/// at `m = 1` 16 gave 26, 32 gave 27-28, 64 and 128 gave 28-30 GB/s in one machine state.
pub(super) const BLOCK_ROWS: usize = 64;

/// Below this many weights a call runs on the calling thread: waking the pool costs more than the
/// split saves (a few microseconds against ~10 us of streaming).
pub(super) const PAR_MIN_WEIGHTS: usize = 1 << 17;

/// Results of one block: `res[mi * BLOCK_ROWS + r]` is `out[mi, j0 + r]`.
pub(super) type BlockResult = [f32; GEMV_MAX_M * BLOCK_ROWS];

/// `out = x @ w^T` for `m <= GEMV_MAX_M`; weight row `j` starts at `j * ldw`.
#[allow(clippy::too_many_arguments)]
pub(super) fn gemv<W: WeightElem>(
    isa: Isa,
    x: &[f32],
    w: &[W],
    ldw: usize,
    out: &mut [f32],
    m: usize,
    k: usize,
    n: usize,
) {
    debug_assert!(m <= GEMV_MAX_M);
    match isa {
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2Fma(token) => super::gemv_avx2::gemv(token, x, w, ldw, out, m, k, n),
        Isa::Scalar => for_row_blocks(out, m, n, k, |j0, rows, res| {
            for r in 0..rows {
                let wr = &w[(j0 + r) * ldw..(j0 + r) * ldw + k];
                for mi in 0..m {
                    res[mi * BLOCK_ROWS + r] = dot_scalar(&x[mi * k..(mi + 1) * k], wr);
                }
            }
        }),
    }
}

/// Runs `block(j0, rows, res)` for every block of up to `BLOCK_ROWS` weight rows starting at row
/// `j0`, in parallel, and copies each block's results into its columns of `out`.
pub(super) fn for_row_blocks(
    out: &mut [f32],
    m: usize,
    n: usize,
    k: usize,
    block: impl Fn(usize, usize, &mut BlockResult) + Sync,
) {
    let out = DisjointOut::new(out);
    let run = |b: usize| {
        let j0 = b * BLOCK_ROWS;
        let rows = BLOCK_ROWS.min(n - j0);
        let mut res: BlockResult = [0.0; GEMV_MAX_M * BLOCK_ROWS];
        block(j0, rows, &mut res);
        for mi in 0..m {
            // SAFETY: block `b` is the only one covering columns j0..j0+rows, and within a block
            // each output row gets its own segment, so no two live segments overlap.
            let seg = unsafe { out.segment(mi * n + j0, rows) };
            seg.copy_from_slice(&res[mi * BLOCK_ROWS..mi * BLOCK_ROWS + rows]);
        }
    };
    for_each_row_block(n, k, run);
}

/// Runs `task(b)` for every block `b` of up to `BLOCK_ROWS` of `n` weight rows of `k` values:
/// on the team, or on this thread when the matrix is small or one block.
pub(super) fn for_each_row_block(n: usize, k: usize, task: impl Fn(usize) + Sync) {
    let nblocks = n.div_ceil(BLOCK_ROWS);
    if n * k < PAR_MIN_WEIGHTS || nblocks == 1 {
        (0..nblocks).for_each(task);
    } else {
        crate::team::for_each(nblocks, task);
    }
}

/// Portable dot product with eight independent partial sums (so the compiler can vectorise it).
pub(super) fn dot_scalar<W: WeightElem>(x: &[f32], w: &[W]) -> f32 {
    debug_assert_eq!(x.len(), w.len());
    let mut acc = [0.0f32; 8];
    let (xc, wc) = (x.chunks_exact(8), w.chunks_exact(8));
    let (xt, wt) = (xc.remainder(), wc.remainder());
    for (xa, wa) in xc.zip(wc) {
        for l in 0..8 {
            acc[l] += xa[l] * wa[l].to_f32();
        }
    }
    let mut tail = 0.0f32;
    for (a, b) in xt.iter().zip(wt) {
        tail += a * b.to_f32();
    }
    acc.iter().sum::<f32>() + tail
}

#[cfg(test)]
mod tests {
    use super::super::reference::{assert_close, matmul_ref, random_case};
    use super::*;

    #[test]
    fn every_m_up_to_the_switch_and_row_tails() {
        for m in 1..=GEMV_MAX_M {
            for &(k, n) in &[
                (1, 1),
                (15, 3),
                (16, 4),
                (17, 5),
                (48, 16),
                (100, 37),
                (513, 18),
            ] {
                let (x, wf, wb) = random_case(m, k, n, (m * 7919 + k * 31 + n) as u64);
                for isa in Isa::available() {
                    let mut got = vec![f32::NAN; m * n];
                    gemv(isa, &x, &wb, k, &mut got, m, k, n);
                    assert_close(
                        &got,
                        &matmul_ref(&x, &wb, m, k, n),
                        &format!("bf16 {isa:?} {m} {k} {n}"),
                    );
                    gemv(isa, &x, &wf, k, &mut got, m, k, n);
                    assert_close(
                        &got,
                        &matmul_ref(&x, &wf, m, k, n),
                        &format!("f32 {isa:?} {m} {k} {n}"),
                    );
                }
            }
        }
    }

    #[test]
    fn parallel_split_matches_reference() {
        // Large enough to cross PAR_MIN_WEIGHTS, with a partial last block.
        let (m, k, n) = (2, 1030, 150);
        let (x, _, wb) = random_case(m, k, n, 3);
        for isa in Isa::available() {
            let mut got = vec![f32::NAN; m * n];
            gemv(isa, &x, &wb, k, &mut got, m, k, n);
            assert_close(&got, &matmul_ref(&x, &wb, m, k, n), &format!("{isa:?}"));
        }
    }
}
