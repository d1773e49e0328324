//! `out = x @ w^T` on the CPU's AMX tile unit (`tdpbf16ps`): bf16 activations and weights, f32
//! accumulation and output. Prefill-sized products only; x86_64 Linux with AMX-BF16.
//!
//! Why our own kernel next to oneDNN: oneDNN wants its weights in a blocked layout and, given
//! them in the HF layout, repacks every panel on every call. Here the weights keep the HF layout:
//! a row of `w [n, k]` is a row of the tile product's *left* operand, so the product is computed
//! transposed, `out^T [n, m] = w [n, k] @ x^T`, and the small operand, `x`, is the one rearranged:
//! once per call into the pair-interleaved layout the right operand needs (row `p` of a tile holds
//! `(x[j][2p], x[j][2p + 1])` for 16 activation rows `j`). Each 16x16 f32 result tile is written
//! into `out` transposed, with AVX-512 shuffles ([`super::transpose16`]).
//!
//! A row-parallel layer's devices (column blocks of one weight) run in one call,
//! [`matmul_blocks`]: each task takes its columns of every block in turn, so the tasks are
//! spread once per layer instead of once per device, and each block's sums are those of a call
//! on that block alone.
//!
//! Blocking (measured on a Sapphire Rapids vCPU, `cargo bench -p tt-ops --bench prefill_dnnl`):
//! - four result tiles (32 weight rows x 32 activation rows) per pass; each step of 32 values of
//!   `k` loads two weight tiles and two activation tiles and runs four `tdpbf16ps`;
//! - the weights of a 32-row panel are copied, [`KC`] values of `k` at a time, into a contiguous
//!   32 KiB block that stays in L1 while every activation pair runs over it. (Loading the tiles
//!   straight from `w` is slower: rows `ldw` apart fall into a few L1 sets.) The next block's rows
//!   are prefetched while this one computes, a few lines per step ([`WeightLines`]), and so, under
//!   a `k` chunk's first panel, is the next activation pair's slice;
//! - the `k` chunk is the outer loop within a chunk of [`CHUNK_ROWS`] activation rows, so that
//!   chunk's slice stays in L2 for every panel of a task; results go through memory between `k`
//!   chunks (an exact f32 round trip: the sums are those of one unbroken `k` loop);
//! - rayon spreads tasks of [`TASK_N`] output columns over the cores; the work split, and so every
//!   result, depends only on the shape.
//!
//! The tile unit sums a 32-term K-tile in its own order and rounding (see the `amx_rounding`
//! example), so results are those of an f32 accumulation up to summation order, as oneDNN's are.
//! `k` must be a multiple of 32 (else the caller runs another path); `m` and `n` are any.

use std::mem::MaybeUninit;

use half::bf16;
use rayon::prelude::*;

use super::amx_tiles::{self, Quad, TileRegisters};
use super::out::DisjointOut;
#[cfg(test)]
use super::out::as_unwritten;
use super::transpose16::Writes;

/// Output columns per rayon task.
const TASK_N: usize = 128;

/// Outputs of at least this many bytes (all blocks together) are written with streaming stores
/// ([`super::transpose16`]). Streaming a 2x4 mesh's row-parallel partial sums of a 1024-token
/// prompt (eight `[1024, 3072]` f32 blocks, 100 MB) took its `o_proj` from 51.9 to 34.1 ms
/// (`down_proj`: 95.6 to 79.5 ms; outputs 64-byte aligned in both cases; a temporary harness in
/// the `row_parallel_prefill` example alternated the two ten times in one process; medians).
/// Smaller outputs, which the next op finds in the L3 cache, are stored normally: with 4 MiB
/// here a 155-token prompt's outputs streamed too, and its 2x4 prefill spent 80-89 ms per step in
/// the all_reduce against 53-58 ms at 32 MiB (`cargo xtask profile --mesh 2x4 --precision bf16
/// --context 155 --prefill`, four alternations).
pub(crate) const STREAM_MIN_BYTES: usize = 32 << 20;

/// Weight rows per pass: two 16-row left tiles.
const PANEL: usize = 32;

/// Activation rows per pass: two 16-column right tiles.
const MPAIR: usize = 32;

/// Activation rows per chunk: a [`KC`] slice of them (512 KiB) stays in the L2 cache while every
/// weight panel of a task runs over it.
const CHUNK_ROWS: usize = 512;

/// Values of `k` per packed weight chunk: 32 rows of it (32 KiB at 512) stay in the L1 cache
/// while every activation pair of a chunk runs over them.
const KC: usize = 512;

/// Proof that this thread may run AMX-BF16 instructions (only [`Amx::detect`] makes one).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Amx(());

impl Amx {
    /// `Some` when the CPU has AMX-TILE and AMX-BF16 and Linux granted this process the tile
    /// state (probed once).
    pub(crate) fn detect() -> Option<Amx> {
        static USABLE: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
        USABLE.get_or_init(probe).then_some(Amx(()))
    }
}

/// CPUID and the kernel's permission.
#[cfg(all(target_arch = "x86_64", target_os = "linux"))]
fn probe() -> bool {
    // CPUID leaf 7: EDX bit 22 = AMX-BF16, bit 24 = AMX-TILE (std's AMX detection is unstable).
    let edx = std::arch::x86_64::__cpuid_count(7, 0).edx;
    if edx & (1 << 22) == 0 || edx & (1 << 24) == 0 {
        return false;
    }
    // The result tiles are stored with AVX-512 (every AMX CPU has it; checked all the same).
    if !std::arch::is_x86_feature_detected!("avx512f") {
        return false;
    }
    // Linux hands out the tile data state only on request: arch_prctl(ARCH_REQ_XCOMP_PERM,
    // XFEATURE_XTILEDATA = 18). The grant is process-wide and permanent.
    // SAFETY: a system call with integer arguments; it changes no memory of ours.
    let granted = unsafe { libc::syscall(libc::SYS_arch_prctl, 0x1023, 18) };
    granted == 0
}

/// No AMX off x86_64 Linux.
#[cfg(not(all(target_arch = "x86_64", target_os = "linux")))]
fn probe() -> bool {
    false
}

/// `x [m, k]` (f32 values that are all exactly bf16) rearranged for the right tile operand,
/// `m` padded with zero rows to a multiple of [`MPAIR`]; `None` if some value is not a bf16.
///
/// Layout: block `b` of 16 rows, then pair `p` of `k`, then row `j` of the block, then the pair:
/// element `((b * k/2 + p) * 16 + j) * 2 + e` is `x[16b + j][2p + e]`.
#[cfg(test)]
pub(crate) fn pair_interleave(x: &[f32], m: usize, k: usize) -> Option<Vec<u16>> {
    pair_interleave_columns(x, k, 0, m, k)
}

/// [`pair_interleave`] of columns `col0 .. col0 + k` of `x` (rows `ldx` apart, `m` of them).
fn pair_interleave_columns(
    x: &[f32],
    ldx: usize,
    col0: usize,
    m: usize,
    k: usize,
) -> Option<Vec<u16>> {
    let mp = m.div_ceil(MPAIR) * MPAIR;
    let mut v = vec![0u16; mp * k];
    // One block of 16 rows per task: the rearrangement of a 1024-row prompt is not negligible.
    let exact = v.par_chunks_mut(16 * k).enumerate().all(|(b, block)| {
        for j in 0..16.min(m.saturating_sub(16 * b)) {
            let start = (16 * b + j) * ldx + col0;
            let row = &x[start..start + k];
            for (p, pair) in row.chunks_exact(2).enumerate() {
                let (lo, hi) = (pair[0].to_bits(), pair[1].to_bits());
                if (lo | hi) & 0xFFFF != 0 {
                    return false;
                }
                let at = p * 32 + j * 2;
                block[at] = (lo >> 16) as u16;
                block[at + 1] = (hi >> 16) as u16;
            }
        }
        true
    });
    exact.then_some(v)
}

/// `out[m*n] = x[m*k] @ w^T` with `w [n, k]` bf16 rows `ldw` apart, on the tile unit. Returns
/// false, with `out` untouched, when `k` is not a multiple of 32 or `x` is not all bf16 values.
///
/// (The one-block case of [`matmul_blocks`], which the dispatch calls; the tests use this.)
///
/// # Panics
/// If the slice lengths do not match the shape (a caller bug).
#[cfg(test)]
#[allow(clippy::too_many_arguments)]
pub(crate) fn matmul(
    amx: Amx,
    x: &[f32],
    w: &[bf16],
    ldw: usize,
    out: &mut [f32],
    m: usize,
    k: usize,
    n: usize,
) -> bool {
    // SAFETY: the kernel writes only f32 results through the view.
    let outs = &mut [unsafe { as_unwritten(out) }];
    matmul_blocks(amx, x, w, ldw, outs, m, k, n, false)
}

/// The row-parallel products of `outs.len()` devices in one pass over `w`: for each block `b`,
/// `outs[b] [m, n] = x[:, b*kb .. (b+1)*kb] @ w[:, b*kb .. (b+1)*kb]^T`, with `x [m, blocks*kb]`
/// and `w` bf16 rows `ldw` apart. Each block's sums start from zero and are written out on
/// their own, so every result is what [`matmul`] gives for that block alone: the `k` loop of a
/// block is the same, chunk for chunk. Returns false, with `outs` untouched, when `kb` is not a
/// multiple of 32 or `x` is not all bf16 values; when it returns true, every element of every
/// `outs[b]` has been written (so they may start uninitialized). With `round_bf16`, every
/// element is written rounded to bf16 as the device's packer rounds (ties away from zero).
///
/// # Panics
/// If the slice lengths do not match the shape (a caller bug).
#[allow(clippy::too_many_arguments)]
pub(crate) fn matmul_blocks(
    amx: Amx,
    x: &[f32],
    w: &[bf16],
    ldw: usize,
    outs: &mut [&mut [MaybeUninit<f32>]],
    m: usize,
    kb: usize,
    n: usize,
    round_bf16: bool,
) -> bool {
    let blocks = outs.len();
    let k = blocks * kb;
    assert!(
        ldw >= k
            && x.len() == m * k
            && (n == 0 || (n - 1) * ldw + k <= w.len())
            && outs.iter().all(|o| o.len() == m * n),
        "amx matmul: slice lengths do not match m={m}, k={k} ({blocks} blocks), n={n}, ldw={ldw}"
    );
    if blocks == 0 || m == 0 || n == 0 || kb == 0 || !kb.is_multiple_of(32) {
        return false;
    }
    let mut xvs = Vec::with_capacity(blocks);
    for b in 0..blocks {
        let Some(xv) = pair_interleave_columns(x, k, b * kb, m, kb) else {
            return false;
        };
        xvs.push(xv);
    }
    let mp = m.div_ceil(MPAIR) * MPAIR;
    let writes = Writes {
        stream: blocks * m * n * 4 >= STREAM_MIN_BYTES,
        bf16: round_bf16,
    };
    let outs: Vec<DisjointOut<'_, MaybeUninit<f32>>> =
        outs.iter_mut().map(|o| DisjointOut::new(o)).collect();
    let task = |t: usize| {
        let c0 = t * TASK_N;
        let c1 = (c0 + TASK_N).min(n);
        let pairs = CHUNK_ROWS.min(mp) / MPAIR;
        let mut tiles = Tiles::new(amx, (c1 - c0).div_ceil(PANEL) * pairs);
        for m0 in (0..mp).step_by(CHUNK_ROWS) {
            let m1 = (m0 + CHUNK_ROWS).min(mp);
            for (b, (xv, out)) in xvs.iter().zip(&outs).enumerate() {
                let wb = &w[b * kb..];
                // k chunks outermost: one chunk of the activations stays in L2 for every panel.
                for k0 in (0..kb).step_by(KC) {
                    let kc = KC.min(kb - k0);
                    for (panel, p0) in (c0..c1).step_by(PANEL).enumerate() {
                        tiles.pack(&wb[p0 * ldw..], ldw, PANEL.min(c1 - p0), k0, kc);
                        // The next chunk's weight rows are short streams the hardware
                        // prefetcher barely starts on: ask for them while this chunk computes,
                        // a few lines per step.
                        let mut next = if p0 + PANEL < c1 {
                            let rows = PANEL.min(c1 - p0 - PANEL);
                            WeightLines::new(&wb[(p0 + PANEL) * ldw..], ldw, rows, k0, kc)
                        } else if k0 + KC < kb {
                            let kn = KC.min(kb - k0 - KC);
                            WeightLines::new(&wb[c0 * ldw..], ldw, PANEL.min(c1 - c0), k0 + KC, kn)
                        } else if b + 1 < blocks {
                            let next = &w[(b + 1) * kb + c0 * ldw..];
                            WeightLines::new(next, ldw, PANEL.min(c1 - c0), 0, KC.min(kb))
                        } else {
                            WeightLines::none()
                        };
                        next.pace((m1 - m0) / MPAIR * (kc / 32));
                        for (pair, mb) in (m0..m1).step_by(MPAIR).enumerate() {
                            let acts = &xv[mb * kb..(mb + MPAIR) * kb];
                            // The first panel meets each pair's chunk first: ask for the next
                            // pair's while this one computes.
                            let ahead = (panel == 0 && mb + MPAIR < m1)
                                .then(|| &xv[(mb + MPAIR) * kb..(mb + 2 * MPAIR) * kb]);
                            let ahead = Ahead {
                                acts: ahead,
                                weights: &mut next,
                            };
                            tiles.run(panel * pairs + pair, acts, ahead, kb, k0, kc);
                        }
                        next.rest();
                    }
                }
                for (panel, p0) in (c0..c1).step_by(PANEL).enumerate() {
                    let rows = PANEL.min(c1 - p0);
                    for (pair, mb) in (m0..m1).step_by(MPAIR).enumerate() {
                        let acts = MPAIR.min(m.saturating_sub(mb));
                        if acts > 0 {
                            // SAFETY: task t alone owns columns c0..c1 of every block's output;
                            // the store writes rows mb..mb+acts (< m) at columns p0..p0+rows
                            // (inside c0..c1), all within the span.
                            let dst = unsafe { out.raw(mb * n + p0, (acts - 1) * n + rows) }
                                .cast::<f32>();
                            tiles.store(panel * pairs + pair, dst, n, acts, rows, writes);
                        }
                    }
                }
            }
        }
    };
    (0..n.div_ceil(TASK_N)).into_par_iter().for_each(|t| {
        task(t);
        // The task's streaming stores reach memory before rayon reports it done.
        #[cfg(target_arch = "x86_64")]
        if writes.stream {
            super::transpose16::end_stream();
        }
    });
    true
}

/// Asks for the 64-byte lines of `v` to be brought into the L2 cache. Only a hint.
fn prefetch_lines(v: &[u16]) {
    for line in v.chunks(32) {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: a prefetch reads nothing architecturally and cannot fault; the address is
        // inside `v` anyway.
        unsafe {
            std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T1 }>(
                line.as_ptr().cast::<i8>(),
            )
        };
        #[cfg(not(target_arch = "x86_64"))]
        let _ = line;
    }
}

/// The 64-byte lines of weight rows `0..rows` (rows `ld` apart) at columns `k0..k0 + kc`, to be
/// brought into the L2 cache a few at a time while the current chunk computes (only hints: they
/// change no value). Asked for all at once, 512 lines fill the core's miss buffers and stall it
/// until most of them have arrived.
struct WeightLines<'w> {
    w: &'w [bf16],
    ld: usize,
    k0: usize,
    /// Lines per row (`kc / 32`).
    per_row: usize,
    /// Lines in all.
    lines: usize,
    /// The next line to ask for.
    next: usize,
    /// Lines asked for per step of 32 values of `k`.
    per_step: usize,
}

impl<'w> WeightLines<'w> {
    fn new(w: &'w [bf16], ld: usize, rows: usize, k0: usize, kc: usize) -> Self {
        let per_row = kc / 32;
        Self {
            w,
            ld,
            k0,
            per_row,
            lines: rows * per_row,
            next: 0,
            per_step: rows * per_row,
        }
    }

    /// Nothing to ask for.
    fn none() -> Self {
        Self::new(&[], 0, 0, 0, 0)
    }

    /// Spreads the lines evenly over `steps` steps.
    fn pace(&mut self, steps: usize) {
        self.per_step = self.lines.div_ceil(steps.max(1)).max(1);
    }

    /// Asks for this step's lines.
    fn step(&mut self) {
        self.ask(self.per_step);
    }

    /// Asks for every line not asked for yet.
    fn rest(&mut self) {
        self.ask(self.lines);
    }

    /// Asks for the next `count` lines (fewer at the end).
    fn ask(&mut self, count: usize) {
        let end = (self.next + count).min(self.lines);
        for i in self.next..end {
            let at = self.offset(i);
            prefetch_lines(bytemuck::cast_slice(&self.w[at..at + 32]));
        }
        self.next = end;
    }

    /// Where line `i` starts in `w`: row by row, 32 values per line.
    fn offset(&self, i: usize) -> usize {
        (i / self.per_row) * self.ld + self.k0 + 32 * (i % self.per_row)
    }
}

/// What the steps of a [`Tiles::run`] ask the L2 cache for while they compute.
struct Ahead<'a, 'w> {
    /// The next activation pair's rows (two blocks of [`pair_interleave`]'s layout), if any.
    acts: Option<&'a [u16]>,
    /// The next weight chunk.
    weights: &'a mut WeightLines<'w>,
}

/// This thread's configured tile registers (released when dropped), the packed weight chunk and
/// the result tiles of every activation pair of a chunk.
struct Tiles {
    /// tmm0-7 configured on this thread.
    _config: TileRegisters,
    /// Weight rows of the current panel and `k` chunk, tile by tile: step `s` (32 values of `k`)
    /// holds rows 0..16 then 16..32, 16 rows of 32 values each (2 KiB per step).
    packed: Vec<Block>,
    /// Per activation pair, four result tiles `[2 weight halves][2 activation halves][16 weight
    /// rows][16 activation rows]`.
    results: Vec<Block>,
}

/// 1 KiB, 64-byte aligned: one tile (16 rows of 64 bytes), or a quarter of a result set.
#[derive(Clone, Copy)]
#[repr(C, align(64))]
struct Block([u32; 256]);

impl Tiles {
    /// Configures tmm0-7 as 16 rows of 64 bytes each on this thread, with room for `pairs`
    /// activation pairs' results.
    fn new(amx: Amx, pairs: usize) -> Tiles {
        Tiles {
            _config: TileRegisters::configure(amx),
            packed: vec![Block([0; 256]); 2 * KC / 32],
            results: vec![Block([0; 256]); 4 * pairs],
        }
    }

    /// Copies weight rows `0..rows` (of `w`, rows `ld` apart) at columns `k0..k0 + kc` into
    /// [`Tiles::packed`], rows past `rows` as zeros.
    fn pack(&mut self, w: &[bf16], ld: usize, rows: usize, k0: usize, kc: usize) {
        for r in 0..PANEL {
            for s in 0..kc / 32 {
                let tile = &mut self.packed[2 * s + r / 16].0[(r % 16) * 16..(r % 16 + 1) * 16];
                if r < rows {
                    let src = &w[r * ld + k0 + 32 * s..r * ld + k0 + 32 * s + 32];
                    bytemuck::cast_slice_mut::<u32, bf16>(tile).copy_from_slice(src);
                } else {
                    tile.fill(0);
                }
            }
        }
    }

    /// Adds the packed chunk (`kc` values of `k` from `k0`) times activation pair `pair`'s rows
    /// (`acts`, two blocks of [`pair_interleave`]'s layout, of `k` values) into its results,
    /// which start from zero when `k0 == 0`.
    fn run(
        &mut self,
        pair: usize,
        acts: &[u16],
        ahead: Ahead<'_, '_>,
        k: usize,
        k0: usize,
        kc: usize,
    ) {
        assert!(
            k0.is_multiple_of(32)
                && kc.is_multiple_of(32)
                && kc > 0
                && kc <= KC
                && k0 + kc <= k
                && acts.len() == MPAIR * k
                && ahead.acts.is_none_or(|a| a.len() == MPAIR * k)
                && 4 * pair + 4 <= self.results.len(),
            "amx run: operand sizes do not match k={k} k0={k0} kc={kc}"
        );
        let c = &mut self.results[4 * pair..4 * pair + 4];
        // Block b of the activations starts at b*16*k values; step k0/32 of it at k0*16 further.
        let b0 = acts[k0 * 16..].as_ptr();
        let b1 = acts[16 * k + k0 * 16..].as_ptr();
        let next =
            (ahead.acts).map(|a| (&a[k0 * 16..][..kc * 16], &a[16 * k + k0 * 16..][..kc * 16]));
        let steps = kc / 32;
        run_chunk(
            self.packed.as_ptr(),
            [b0, b1],
            next,
            ahead.weights,
            steps,
            k0 == 0,
            c,
        );
    }

    /// Writes activation pair `pair`'s results, transposed, to `acts` rows of `rows` values each
    /// (at most [`MPAIR`] and [`PANEL`]), rows `ld` apart from `dst`, as `writes` says.
    fn store(
        &self,
        pair: usize,
        dst: *mut f32,
        ld: usize,
        acts: usize,
        rows: usize,
        writes: Writes,
    ) {
        assert!(
            acts <= MPAIR && rows <= PANEL,
            "amx store: a pair is 32 x 32"
        );
        for wh in 0..2 {
            for ah in 0..2 {
                let rows_out = acts.saturating_sub(16 * ah).min(16);
                let cols_out = rows.saturating_sub(16 * wh).min(16);
                if rows_out == 0 || cols_out == 0 {
                    continue;
                }
                let tile = &self.results[4 * pair + wh * 2 + ah].0;
                #[cfg(target_arch = "x86_64")]
                // SAFETY: an `Amx` token exists, so the CPU has AVX-512 F (`Amx::detect`); the
                // caller's `dst` covers `acts` rows of `rows` values, `ld` apart, that only this
                // task writes, and this tile's part is rows 16·ah.. and columns 16·wh.. of it.
                unsafe {
                    super::transpose16::store_transposed(
                        tile,
                        dst.add(16 * ah * ld + 16 * wh),
                        ld,
                        rows_out,
                        cols_out,
                        writes,
                    )
                };
                #[cfg(not(target_arch = "x86_64"))]
                let _ = (tile, dst, ld, writes);
            }
        }
    }
}

/// `steps` steps of 32 values of `k`: four result tiles `c` (zeroed first when `zero`, else
/// loaded) plus packed weight tiles `a` (two per step) times activation tiles at `b0` and `b1`
/// (one per step each, 1 KiB apart from step to step). Each step also asks for 1 KiB of each
/// of the `ahead` chunks, and for its share of the next weight chunk, to be brought into the L2
/// cache.
fn run_chunk(
    a: *const Block,
    [b0, b1]: [*const u16; 2],
    ahead: Option<(&[u16], &[u16])>,
    weights_ahead: &mut WeightLines<'_>,
    steps: usize,
    zero: bool,
    c: &mut [Block],
) {
    assert!(
        c.len() == 4 && steps > 0,
        "amx run_chunk: four result tiles"
    );
    let c = Quad::tiles(c.as_mut_ptr());
    // SAFETY: tiles were configured by `Tiles::new` on this thread (an `Amx` token exists). `a`
    // holds at least 2*steps blocks (`Tiles::packed` has 2*KC/32 and steps <= KC/32); `b0` and
    // `b1` each point at `steps` KiB of activations (checked by `Tiles::run`'s assert: the chunk
    // lies within the block's k/2 rows of 64 bytes); `c` is four contiguous 64-byte aligned KiB
    // blocks.
    unsafe {
        if zero {
            amx_tiles::zero();
        } else {
            amx_tiles::load(&c);
        }
        for s in 0..steps {
            if let Some((n0, n1)) = ahead {
                prefetch_lines(&n0[512 * s..][..512]);
                prefetch_lines(&n1[512 * s..][..512]);
            }
            weights_ahead.step();
            let a = a.add(2 * s).cast::<u16>();
            amx_tiles::step(a, a.byte_add(1024), 64, b0.add(512 * s), b1.add(512 * s));
        }
        amx_tiles::store(&c);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paced_weight_lines_ask_for_every_line_of_the_chunk_once() {
        let (ld, rows, k0, kc) = (1088, 13, 64, 480);
        let w = vec![bf16::ZERO; rows * ld];
        for steps in [1, 7, 15, 16, 400] {
            let mut lines = WeightLines::new(&w, ld, rows, k0, kc);
            lines.pace(steps);
            let mut asked = Vec::new();
            for _ in 0..steps {
                let from = lines.next;
                lines.step();
                asked.extend((from..lines.next).map(|i| lines.offset(i)));
            }
            // Paced over `steps`, the steps alone ask for all of them.
            assert_eq!(lines.next, lines.lines, "steps {steps}");
            lines.rest();
            let want: Vec<usize> = (0..rows)
                .flat_map(|r| (0..kc / 32).map(move |j| r * ld + k0 + 32 * j))
                .collect();
            assert_eq!(asked, want, "steps {steps}");
        }
        let mut none = WeightLines::none();
        none.pace(3);
        none.step();
        none.rest();
        assert_eq!(none.next, 0);
    }
}
