//! Prefill attention on the AMX tile unit (`tdpbf16ps`), for the presets whose Q, K and V are
//! bf16 values (every preset but `f32`: activations are rounded to bf16 between ops, and the KV
//! cache is bf16 or wider). Same contract and mask as [`crate::sdpa`]; chosen there at run time.
//!
//! Per work item (one query head, [`Q_ROWS`] query rows) and per block of [`KEYS`] keys:
//! 1. scores `Q K^T` on the tile unit: bf16 products are exact and the tile unit adds them in f32,
//!    so the scores are the native kernel's up to summation order; then `* scale` and the mask;
//! 2. the online softmax of [`crate::simd`] on those rows (the native kernel's code);
//! 3. `P V` on the tile unit. The probabilities are f32, not bf16: each is split into three bf16
//!    parts, `p = hi + mid + lo` exactly (8 + 8 + 8 significant bits), and the three products are
//!    summed into the same f32 accumulators, so the products stay exact here too. The output rows
//!    live in memory between key blocks (the softmax rescales them by `alpha` there) and are
//!    loaded into the tile accumulators for each block's product.
//!
//! K and V are rearranged once per call and KV head into the right operand's pair-interleaved
//! layout (row `p` of a tile holds the pairs `2p, 2p + 1` of the summed dimension for 16
//! columns); Q rows and the probability parts are left operands as they lie (16 rows of 32 values,
//! rows a stride apart). Keys are padded with zeros to a multiple of [`KEYS`]; padded and masked
//! keys get probability 0. Result tiles are stored into row-major memory directly (a tile store
//! takes a row stride), so nothing is transposed.

use rayon::prelude::*;

use crate::kernels::amx_gemm::{Amx, TileRegisters};
use crate::sdpa::{SdpaOptions, visible};
use crate::simd::{self, Kernel, Lanes};

/// Query rows per work item: two 16-row left tiles.
const Q_ROWS: usize = 32;
/// Keys per softmax step: two steps of 32 keys in `P V`.
const KEYS: usize = 64;
/// bf16 parts of one f32 probability.
const PARTS: usize = 3;
/// Shortest prompt sent to the tile unit (a shorter one is a decode-sized call).
pub(crate) const MIN_SQ: usize = 16;

/// The dimensions of one call: `q [b, nh, sq, dh]`, `k`, `v [b, nkv, sk, dh]`.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Dims {
    pub nh: usize,
    pub sq: usize,
    pub dh: usize,
    pub nkv: usize,
    pub sk: usize,
}

/// Attention of `q` over `k`, `v` into `out` on the tile unit. Returns false, with `out`
/// untouched, when it cannot run here: no AMX, `dh` not a multiple of 32, fewer than
/// [`MIN_SQ`] query rows, or some Q, K or V value that is not a bf16 value.
pub(crate) fn attention<E: Lanes>(
    q: &[f32],
    k: &[E],
    v: &[E],
    d: Dims,
    opts: &SdpaOptions,
    scale: f32,
    out: &mut [f32],
) -> bool {
    let Some(amx) = Amx::detect() else {
        return false;
    };
    if d.dh == 0 || !d.dh.is_multiple_of(32) || d.sq < MIN_SQ || d.nkv == 0 {
        return false;
    }
    if !q
        .par_chunks(1 << 14)
        .all(|c| c.iter().all(|x| x.to_bits() & 0xFFFF == 0))
    {
        return false;
    }
    let head = d.sk * d.dh;
    let heads: Option<Vec<(Vec<u16>, Vec<u16>)>> = k
        .par_chunks(head.max(1))
        .zip(v.par_chunks(head.max(1)))
        .map(|(kh, vh)| Some((keys_layout(kh, d.sk, d.dh)?, values_layout(vh, d.sk, d.dh)?)))
        .collect();
    let Some(heads) = heads else {
        return false;
    };
    let group = d.nh / d.nkv;
    let mut tasks: Vec<(usize, usize, &mut [f32])> = Vec::new();
    for (bh, head_out) in out.chunks_mut(d.sq * d.dh).enumerate() {
        for (qb, rows) in head_out.chunks_mut(Q_ROWS * d.dh).enumerate() {
            tasks.push((bh, qb, rows));
        }
    }
    tasks.into_par_iter().for_each(|(bh, qb, rows)| {
        let (bi, h) = (bh / d.nh, bh % d.nh);
        let (kp, vp) = &heads[bi * d.nkv + h / group];
        let q0 = (bh * d.sq + qb * Q_ROWS) * d.dh;
        simd::dispatch(Block {
            amx,
            q: &q[q0..q0 + rows.len()],
            kp,
            vp,
            dh: d.dh,
            sk: d.sk,
            p0: opts.q_offset + qb * Q_ROWS,
            opts,
            scale,
            out: rows,
        });
    });
    true
}

/// The bf16 bits of `x`, or `None` if `x` is not a bf16 value.
#[inline(always)]
fn bf16_bits<E: Lanes>(x: E) -> Option<u16> {
    let bits = x.to_f32().to_bits();
    (bits & 0xFFFF == 0).then_some((bits >> 16) as u16)
}

/// Keys padded to a multiple of [`KEYS`].
fn padded(sk: usize) -> usize {
    sk.div_ceil(KEYS) * KEYS
}

/// One KV head's keys `[sk, dh]` as right operands of `Q K^T`: block `b` of 16 keys, pair `p` of
/// `dh`, key `j`, then the pair: element `((b * dh/2 + p) * 16 + j) * 2 + e` is `k[16b + j][2p + e]`.
/// The tile of block `b` at step `s` (32 values of `dh`) is the 1 KiB at `(b * dh/2 + 16s) * 32`.
fn keys_layout<E: Lanes>(k: &[E], sk: usize, dh: usize) -> Option<Vec<u16>> {
    let mut out = vec![0u16; padded(sk) * dh];
    for (j, row) in k.chunks_exact(dh).take(sk).enumerate() {
        let (b, j) = (j / 16, j % 16);
        for (p, pair) in row.chunks_exact(2).enumerate() {
            let at = ((b * dh / 2 + p) * 16 + j) * 2;
            out[at] = bf16_bits(pair[0])?;
            out[at + 1] = bf16_bits(pair[1])?;
        }
    }
    Some(out)
}

/// One KV head's values `[sk, dh]` as right operands of `P V`: step `t` of 32 keys, column block
/// `c` of 16 values of `dh`, key pair `p`, column `j`, then the pair: element
/// `(((t * dh/16 + c) * 16 + p) * 16 + j) * 2 + e` is `v[32t + 2p + e][16c + j]`; tile `(t, c)` is
/// the 1 KiB at `(t * dh/16 + c) * 512`.
fn values_layout<E: Lanes>(v: &[E], sk: usize, dh: usize) -> Option<Vec<u16>> {
    let mut out = vec![0u16; padded(sk) * dh];
    for (key, row) in v.chunks_exact(dh).take(sk).enumerate() {
        let (t, p, e) = (key / 32, (key % 32) / 2, key % 2);
        for (col, &x) in row.iter().enumerate() {
            let (c, j) = (col / 16, col % 16);
            out[(((t * dh / 16 + c) * 16 + p) * 16 + j) * 2 + e] = bf16_bits(x)?;
        }
    }
    Some(out)
}

/// `x` rounded to the nearest bf16 (ties to even), as its bits. `x` is a probability here: finite.
#[inline(always)]
fn round_bits(x: f32) -> u16 {
    let bits = x.to_bits();
    (bits.wrapping_add(0x7FFF + ((bits >> 16) & 1)) >> 16) as u16
}

/// `x` as three bf16 values whose sum is `x` exactly (for `x` of at least 2^-102 or zero: the
/// last part must be a normal bf16).
#[inline(always)]
pub(crate) fn split3(x: f32) -> [u16; PARTS] {
    let hi = round_bits(x);
    let r = x - f32::from_bits(u32::from(hi) << 16);
    let mid = round_bits(r);
    let lo = round_bits(r - f32::from_bits(u32::from(mid) << 16));
    [hi, mid, lo]
}

/// One work item: query rows `p0 ..` of one head.
struct Block<'a> {
    amx: Amx,
    /// The item's query rows `[rows, dh]` (bf16 values).
    q: &'a [f32],
    /// The KV head in [`keys_layout`] and [`values_layout`].
    kp: &'a [u16],
    vp: &'a [u16],
    dh: usize,
    sk: usize,
    /// Position of the first row.
    p0: usize,
    opts: &'a SdpaOptions,
    scale: f32,
    out: &'a mut [f32],
}

impl Kernel for Block<'_> {
    type Out = ();

    #[inline(always)]
    fn run<const FMA: bool>(self) -> Self::Out {
        let dh = self.dh;
        let rows = self.q.len() / dh;
        let _tiles = TileRegisters::configure(self.amx);
        let mut qb = vec![0u16; Q_ROWS * dh];
        for (dst, &x) in qb.iter_mut().zip(self.q) {
            *dst = (x.to_bits() >> 16) as u16;
        }
        let mut s = vec![0f32; Q_ROWS * KEYS];
        let mut p = vec![0u16; PARTS * Q_ROWS * KEYS];
        let mut o = vec![0f32; Q_ROWS * dh];
        let mut state = [(f32::NEG_INFINITY, 0.0f32); Q_ROWS];
        let ranges: Vec<(usize, usize)> = (0..rows)
            .map(|i| visible(self.p0 + i, self.sk, self.opts))
            .collect();
        let (lo, _) = ranges[0];
        let (_, hi) = ranges[rows - 1];
        let mut j0 = lo - lo % KEYS;
        while j0 < hi {
            let n = (hi - j0).min(KEYS);
            let halves = n.div_ceil(32);
            for half in 0..halves {
                // Key j's block starts at j·dh in the layout (j a multiple of 16).
                let kp = &self.kp[(j0 + 32 * half) * dh..];
                scores(&qb, dh, kp, &mut s[32 * half..]);
            }
            // Every row's softmax runs over all KEYS columns (those past `n` masked): its sums
            // then do not depend on where the item's last row ends, so a chunk of a prompt gives
            // the bits of the same rows in the whole prompt.
            for (i, &(a, b)) in ranges.iter().enumerate() {
                let row = &mut s[i * KEYS..(i + 1) * KEYS];
                for (jj, x) in row.iter_mut().enumerate() {
                    let j = j0 + jj;
                    *x = if j >= a && j < b {
                        *x * self.scale
                    } else {
                        f32::NEG_INFINITY
                    };
                }
                let (m, l) = &mut state[i];
                let alpha = simd::online_softmax_step::<FMA>(m, l, row);
                if alpha != 1.0 {
                    simd::scale(alpha, &mut o[i * dh..(i + 1) * dh]);
                }
                for (jj, &x) in row.iter().enumerate() {
                    let parts = split3(x);
                    for (part, &bits) in parts.iter().enumerate() {
                        p[(part * Q_ROWS + i) * KEYS + jj] = bits;
                    }
                }
            }
            weighted_values(&p, &self.vp[j0 * dh..], halves, dh, &mut o);
            j0 += KEYS;
        }
        for (i, (dst, (_, l))) in self.out.chunks_exact_mut(dh).zip(&state).enumerate() {
            dst.copy_from_slice(&o[i * dh..(i + 1) * dh]);
            if *l > 0.0 {
                simd::scale(1.0 / l, dst);
            }
        }
    }
}

/// Scores of the item's 32 query rows against 32 keys: `s[i][j] = q[i] . k[j]` for
/// `i < 32`, `j < 32`, into `s` (rows [`KEYS`] apart). `kp` starts at the first key's block in
/// [`keys_layout`].
fn scores(qb: &[u16], dh: usize, kp: &[u16], s: &mut [f32]) {
    let steps = dh / 32;
    assert!(
        qb.len() == Q_ROWS * dh && kp.len() >= 32 * dh && s.len() >= 31 * KEYS + 32,
        "sdpa_amx scores: operand sizes do not match dh={dh}"
    );
    let q_stride = dh * 2;
    // SAFETY: an `Amx` token configured this thread's tiles (the caller holds `TileRegisters`).
    // Left tiles: 16 rows `q_stride` bytes apart from qb (and from row 16), 64 bytes each, step
    // `st` at byte 64·st: rows < 32 and bytes < 64·steps = 2·dh, inside qb. Right tiles: key
    // blocks 0 and 1 of kp, 1 KiB per step, `steps` KiB each (kp holds two blocks of 32·dh bytes).
    // Result tiles: rows 0..32 of s, columns 0..32, [`KEYS`]·4 bytes apart: inside s.
    unsafe {
        tiles::zero();
        for st in 0..steps {
            let a = qb.as_ptr().add(32 * st);
            let b = kp.as_ptr().add(512 * st);
            tiles::step(a, a.add(16 * dh), q_stride, b, b.add(16 * dh));
        }
        tiles::store(s.as_mut_ptr(), KEYS * 4);
    }
}

/// `o += P V` over `halves` steps of 32 keys, every part of `p` (layout `[part][row][key]`, rows
/// [`KEYS`] apart); `vp` starts at the first step's tiles in [`values_layout`].
fn weighted_values(p: &[u16], vp: &[u16], halves: usize, dh: usize, o: &mut [f32]) {
    let cols = dh / 16;
    assert!(
        p.len() == PARTS * Q_ROWS * KEYS
            && (1..=2).contains(&halves)
            && vp.len() >= halves * cols * 512
            && o.len() == Q_ROWS * dh,
        "sdpa_amx weighted_values: operand sizes do not match dh={dh}"
    );
    // SAFETY: tiles configured as in `scores`. Accumulators: rows 0..32 of o, columns
    // 32g..32g+32 (< dh), rows dh·4 bytes apart. Left tiles: part `part`, rows 0..16 and 16..32 of
    // p, 64 bytes at key 32t (< 64), rows KEYS·2 bytes apart. Right tiles: (t, 2g) and (t, 2g+1)
    // of vp, 1 KiB each, t < halves (checked above).
    unsafe {
        for g in 0..dh / 32 {
            let c = o.as_mut_ptr().add(32 * g);
            tiles::load(c, dh * 4);
            for part in 0..PARTS {
                for t in 0..halves {
                    let a = p.as_ptr().add(part * Q_ROWS * KEYS + 32 * t);
                    let b = vp.as_ptr().add((t * cols + 2 * g) * 512);
                    tiles::step(a, a.add(16 * KEYS), KEYS * 2, b, b.add(512));
                }
            }
            tiles::store(c, dh * 4);
        }
    }
}

/// The four instructions sequences the kernel is made of. tmm0-3 hold a 32 x 32 f32 result as
/// four 16 x 16 tiles (`[row half][column half]`); tmm4-5 the left operand's two row halves;
/// tmm6-7 the right operand's two column halves. The compiler never uses tile registers, so
/// they keep their values from one `asm!` block to the next.
mod tiles {
    /// Zeroes the accumulators.
    ///
    /// # Safety
    /// This thread's tiles are configured as 16 rows of 64 bytes ([`super::TileRegisters`]).
    pub(super) unsafe fn zero() {
        // SAFETY: the caller's contract.
        unsafe {
            std::arch::asm!(
                "tilezero tmm0",
                "tilezero tmm1",
                "tilezero tmm2",
                "tilezero tmm3",
                options(nostack, nomem)
            )
        };
    }

    /// Loads the accumulators from 32 rows of 32 f32 at `c`, rows `stride` bytes apart.
    ///
    /// # Safety
    /// As [`zero`]; those 32 x 128 bytes are readable.
    pub(super) unsafe fn load(c: *const f32, stride: usize) {
        // SAFETY: the caller's contract.
        unsafe {
            let c16 = c.cast::<u8>().add(16 * stride);
            std::arch::asm!(
                "tileloadd tmm0, [{c} + {s}*1]",
                "tileloadd tmm1, [{c} + {s}*1 + 64]",
                "tileloadd tmm2, [{c16} + {s}*1]",
                "tileloadd tmm3, [{c16} + {s}*1 + 64]",
                c = in(reg) c,
                c16 = in(reg) c16,
                s = in(reg) stride,
                options(nostack, readonly)
            )
        };
    }

    /// Stores the accumulators as 32 rows of 32 f32 at `c`, rows `stride` bytes apart.
    ///
    /// # Safety
    /// As [`zero`]; those 32 x 128 bytes are writable and nothing else refers to them.
    pub(super) unsafe fn store(c: *mut f32, stride: usize) {
        // SAFETY: the caller's contract.
        unsafe {
            let c16 = c.cast::<u8>().add(16 * stride);
            std::arch::asm!(
                "tilestored [{c} + {s}*1], tmm0",
                "tilestored [{c} + {s}*1 + 64], tmm1",
                "tilestored [{c16} + {s}*1], tmm2",
                "tilestored [{c16} + {s}*1 + 64], tmm3",
                c = in(reg) c,
                c16 = in(reg) c16,
                s = in(reg) stride,
                options(nostack)
            )
        };
    }

    /// Adds one step of 32 summed values: left row halves at `a0`, `a1` (16 rows of 64 bytes,
    /// `a_stride` bytes apart), right column halves at `b0`, `b1` (1 KiB each, pair-interleaved).
    ///
    /// # Safety
    /// As [`zero`]; those bytes are readable.
    pub(super) unsafe fn step(
        a0: *const u16,
        a1: *const u16,
        a_stride: usize,
        b0: *const u16,
        b1: *const u16,
    ) {
        // SAFETY: the caller's contract.
        unsafe {
            std::arch::asm!(
                "tileloadd tmm4, [{a0} + {sa}*1]",
                "tileloadd tmm5, [{a1} + {sa}*1]",
                "tileloadd tmm6, [{b0} + {s64}*1]",
                "tileloadd tmm7, [{b1} + {s64}*1]",
                "tdpbf16ps tmm0, tmm4, tmm6",
                "tdpbf16ps tmm1, tmm4, tmm7",
                "tdpbf16ps tmm2, tmm5, tmm6",
                "tdpbf16ps tmm3, tmm5, tmm7",
                a0 = in(reg) a0,
                a1 = in(reg) a1,
                sa = in(reg) a_stride,
                b0 = in(reg) b0,
                b1 = in(reg) b1,
                s64 = in(reg) 64usize,
                options(nostack, readonly)
            )
        };
    }
}

#[cfg(test)]
#[path = "sdpa_amx_tests.rs"]
mod tests;
