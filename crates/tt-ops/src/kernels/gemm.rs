//! Large-`m` (prefill) path: packed, cache-blocked GEMM around the 6x16 register tile.
//!
//! Both operands are K-contiguous (`x` is `[m, k]`, `w` is `[n, k]`). The activations are packed
//! once per call, transposed into `[kc][16]` micro-panels (cheap: `m*k` values, reused for all `n`).
//! The weights become the broadcast operand of the tile, so their packing is a plain widening copy
//! of row segments (bf16 -> f32 folded in here), done once per task and K block and reused by every
//! activation micro-panel of the task. The tile produces `out^T`; each task transposes its block
//! into `out` at the end.
//!
//! Parallelism: tasks are (`NC` weight rows) x (`MC` activation rows) blocks of `out`, distributed
//! by rayon. Loop nest per task: K blocks (`KC`) > pack the block's weights (`NC x KC` f32, L2) >
//! activation micro-panels (`KC x 16`, kept in L1) > weight tiles (6 rows, streamed from L2) >
//! register tile. While a block computes, the raw weights of the next block are prefetched a few
//! lines per tile, so packing does not stall on memory (worth ~5% at `m = 128` here).
//!
//! Block sizes were tuned on the benchmark machine (48 KiB L1d, 2 MiB L2): `KC = 512` beat 256 and
//! 384 by 2-4%; `NC` 48..192 and `MC` 256..1024 were within noise of each other.

use rayon::prelude::*;

use super::elem::WeightElem;
use super::isa::Isa;
use super::microkernel::{Tile, tile_scalar};
use super::out::DisjointOut;
use super::pack::{KC, MR, NR, WS, pack_w, pack_xt};
use super::scratch::with_scratch;

/// Weight rows per task (a multiple of `MR`).
const NC: usize = 96;
/// Activation rows per task (a multiple of `NR`).
const MC: usize = 256;

/// Sizes shared by all tasks of one call.
#[derive(Clone, Copy)]
struct Dims {
    m: usize,
    k: usize,
    n: usize,
    /// Distance between weight rows (`>= k`).
    ldw: usize,
    /// `m` rounded up to `NR`.
    mp: usize,
    /// Activation rows per task.
    mc: usize,
}

/// `out = x @ w^T` for any `m` (used for `m > GEMV_MAX_M`).
#[allow(clippy::too_many_arguments)]
pub(super) fn gemm<W: WeightElem>(
    isa: Isa,
    x: &[f32],
    w: &[W],
    ldw: usize,
    out: &mut [f32],
    m: usize,
    k: usize,
    n: usize,
) {
    let mp = m.next_multiple_of(NR);
    let d = Dims {
        m,
        k,
        n,
        ldw,
        mp,
        mc: MC.min(mp),
    };
    with_scratch(mp * k, |xt| {
        pack_xt(x, m, k, mp, xt);
        let xt: &[f32] = xt;
        let out = DisjointOut::new(out);
        let m_tiles = mp.div_ceil(d.mc);
        let tasks = n.div_ceil(NC) * m_tiles;
        let run = |t: usize| {
            task(
                isa,
                d,
                xt,
                w,
                &out,
                (t / m_tiles) * NC,
                (t % m_tiles) * d.mc,
            )
        };
        if tasks == 1 {
            run(0);
        } else {
            (0..tasks).into_par_iter().for_each(run);
        }
    });
}

/// Computes `out[i0..i0+mc, j0..j0+nc]`.
fn task<W: WeightElem>(
    isa: Isa,
    d: Dims,
    xt: &[f32],
    w: &[W],
    out: &DisjointOut<'_>,
    j0: usize,
    i0: usize,
) {
    let nc = NC.min(d.n - j0);
    let ncp = nc.next_multiple_of(MR);
    let mc = d.mc.min(d.mp - i0);
    let rows = &w[j0 * d.ldw..(j0 + nc - 1) * d.ldw + d.k];
    with_scratch(ncp * WS + ncp * mc, |buf| {
        let (wp, ct) = buf.split_at_mut(ncp * WS);
        for p0 in (0..d.k).step_by(KC) {
            let kc = KC.min(d.k - p0);
            pack_w(isa, w, d.ldw, j0, nc, ncp, p0, kc, wp);
            // This K block's activation panels for rows i0..i0+mc.
            let xb = &xt[p0 * d.mp + i0 * kc..p0 * d.mp + (i0 + mc) * kc];
            let blk = Block {
                kc,
                wp,
                xb,
                ncp,
                mc,
                first: p0 == 0,
            };
            // The raw weights of the next K block, fetched while this one computes.
            let ahead = Ahead {
                rows,
                nrows: nc,
                ldw: d.ldw,
                p0: p0 + KC,
                len: KC.min(d.k.saturating_sub(p0 + KC)),
            };
            match isa {
                #[cfg(target_arch = "x86_64")]
                // SAFETY: the `Avx2Fma` token exists only when AVX2 and FMA were detected.
                Isa::Avx2Fma(_) => unsafe { block_avx2(&blk, ct, &ahead) },
                Isa::Scalar => block_scalar(&blk, ct),
            }
        }
        // ct is out^T for this block: ct[j * mc + i] = out[i0 + i, j0 + j].
        for i in 0..mc.min(d.m.saturating_sub(i0)) {
            // SAFETY: task (j0, i0) is the only one covering rows i0..i0+mc x columns j0..j0+nc,
            // and each row gets its own segment.
            let seg = unsafe { out.segment((i0 + i) * d.n + j0, nc) };
            for (j, o) in seg.iter_mut().enumerate() {
                *o = ct[j * mc + i];
            }
        }
    });
}

/// One K block of a task: packed weights for `ncp` rows, activation panels for `mc` rows.
struct Block<'a> {
    kc: usize,
    wp: &'a [f32],
    xb: &'a [f32],
    ncp: usize,
    mc: usize,
    first: bool,
}

impl Block<'_> {
    /// Operands of the tile at weight row `jr`, activation row `ir`.
    fn tile(&self, jr: usize, ir: usize) -> Tile<'_> {
        Tile {
            kc: self.kc,
            wp: &self.wp[jr * WS..(jr + MR) * WS],
            xt: &self.xb[ir * self.kc..(ir + NR) * self.kc],
            first: self.first,
        }
    }
}

/// Runs every register tile of a block (portable).
fn block_scalar(b: &Block<'_>, ct: &mut [f32]) {
    for ir in (0..b.mc).step_by(NR) {
        for jr in (0..b.ncp).step_by(MR) {
            tile_scalar(&b.tile(jr, ir), &mut ct[jr * b.mc + ir..], b.mc);
        }
    }
}

/// The task's raw weight rows (`nc` rows `ldw` apart) and the column range `p0..p0+len` the next K block will
/// pack: prefetched a few cache lines per tile so that packing finds them in cache instead of
/// stalling on memory.
struct Ahead<'a, W> {
    rows: &'a [W],
    nrows: usize,
    ldw: usize,
    p0: usize,
    len: usize,
}

impl<W> Ahead<'_, W> {
    /// Cache lines per row of the range.
    fn lines_per_row(&self) -> usize {
        (self.len * size_of::<W>()).div_ceil(64)
    }

    /// Cache lines to fetch in all.
    fn lines(&self) -> usize {
        if self.len == 0 {
            0
        } else {
            self.nrows * self.lines_per_row()
        }
    }

    /// Hints the CPU to fetch line `i` (in row-major order over the range).
    #[cfg(target_arch = "x86_64")]
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    fn touch(&self, i: usize) {
        use std::arch::x86_64::{_MM_HINT_T0, _mm_prefetch};
        let per = self.lines_per_row();
        let idx = (i / per) * self.ldw + self.p0 + (i % per) * 64 / size_of::<W>();
        if idx < self.rows.len() {
            // SAFETY: a prefetch is only a hint and never faults; the address is inside `rows`.
            unsafe { _mm_prefetch::<_MM_HINT_T0>(self.rows.as_ptr().add(idx).cast::<i8>()) };
        }
    }
}

/// Runs every register tile of a block with AVX2+FMA (the tile is inlined here), spreading the
/// prefetch of the next block's weights over the tiles.
///
/// # Safety
/// The CPU must support AVX2 and FMA.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn block_avx2<W>(b: &Block<'_>, ct: &mut [f32], ahead: &Ahead<'_, W>) {
    let tiles = (b.mc / NR) * (b.ncp / MR);
    let lines = ahead.lines();
    let per_tile = lines.div_ceil(tiles.max(1));
    let mut next = 0;
    for ir in (0..b.mc).step_by(NR) {
        for jr in (0..b.ncp).step_by(MR) {
            super::microkernel::tile_avx2(&b.tile(jr, ir), &mut ct[jr * b.mc + ir..], b.mc);
            for _ in 0..per_tile.min(lines - next) {
                ahead.touch(next);
                next += 1;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::reference::{assert_close, matmul_ref, random_case};
    use super::*;

    #[test]
    fn crosses_every_block_boundary() {
        // m past MC and not a multiple of NR; n past NC with an MR tail; k past KC with a tail.
        for &(m, k, n) in &[
            (MC + 21, KC + 7, NC + 5),
            (1, 3, 1),
            (NR, KC, MR),
            (40, 2 * KC + 1, 2 * NC),
        ] {
            let (x, wf, wb) = random_case(m, k, n, (m + k + n) as u64);
            for isa in Isa::available() {
                let mut got = vec![f32::NAN; m * n];
                gemm(isa, &x, &wb, k, &mut got, m, k, n);
                assert_close(
                    &got,
                    &matmul_ref(&x, &wb, m, k, n),
                    &format!("bf16 {isa:?} {m} {k} {n}"),
                );
                gemm(isa, &x, &wf, k, &mut got, m, k, n);
                assert_close(
                    &got,
                    &matmul_ref(&x, &wf, m, k, n),
                    &format!("f32 {isa:?} {m} {k} {n}"),
                );
            }
        }
    }
}
