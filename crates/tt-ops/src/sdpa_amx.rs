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

use crate::kernels::amx_gemm::Amx;
use crate::kernels::amx_tiles::{self as tiles, Quad, TileRegisters};
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
    if !all_bf16(q) || !all_bf16(k) || !all_bf16(v) {
        return false;
    }
    let head = (d.sk * d.dh).max(1);
    let heads: Vec<(Vec<u32>, Vec<u32>)> = k
        .par_chunks(head)
        .zip(v.par_chunks(head))
        .map(|(kh, vh)| (keys_layout(kh, d.sk, d.dh), values_layout(vh, d.sk, d.dh)))
        .collect();
    let group = d.nh / d.nkv;
    let mut tasks: Vec<(usize, usize, &mut [f32])> = Vec::new();
    for (bh, head_out) in out.chunks_mut(d.sq * d.dh).enumerate() {
        for (qb, rows) in head_out.chunks_mut(Q_ROWS * d.dh).enumerate() {
            tasks.push((bh, qb, rows));
        }
    }
    let scratch = || Scratch::new(amx, d.dh);
    tasks
        .into_par_iter()
        .for_each_init(scratch, |scratch, (bh, qb, rows)| {
            let (bi, h) = (bh / d.nh, bh % d.nh);
            let (kp, vp) = &heads[bi * d.nkv + h / group];
            let q0 = (bh * d.sq + qb * Q_ROWS) * d.dh;
            simd::dispatch(Block {
                scratch,
                q: &q[q0..q0 + rows.len()],
                kp: bytemuck::cast_slice(kp),
                vp: bytemuck::cast_slice(vp),
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

/// Whether every value is a bf16 value (at once for bf16 storage).
fn all_bf16<E: Lanes>(xs: &[E]) -> bool {
    E::DTYPE == crate::tensor::DType::Bf16
        || xs
            .par_chunks(1 << 14)
            .all(|c| c.iter().all(|x| x.to_f32().to_bits() & 0xFFFF == 0))
}

/// The upper half of `x`'s f32 bits: its bf16 bits when `x` is a bf16 value.
#[inline(always)]
fn bf16_bits<E: Lanes>(x: E) -> u32 {
    x.to_f32().to_bits() >> 16
}

/// Keys padded to a multiple of [`KEYS`].
fn padded(sk: usize) -> usize {
    sk.div_ceil(KEYS) * KEYS
}

/// One KV head's keys `[sk, dh]` (bf16 values) as right operands of `Q K^T`, in `u32` pairs (low
/// half first): block `b` of 16 keys, pair `p` of `dh`, key `j`: pair `(b * dh/2 + p) * 16 + j` is
/// `k[16b + j][2p], k[16b + j][2p + 1]`. The tile of block `b` at step `s` (32 values of `dh`) is
/// the 1 KiB at pair `(b * dh/2 + 16s) * 16`: key `j`'s block starts at pair `j * dh/2`.
fn keys_layout<E: Lanes>(k: &[E], sk: usize, dh: usize) -> Vec<u32> {
    let mut out = vec![0u32; padded(sk) * dh / 2];
    for (j, row) in k.chunks_exact(dh).take(sk).enumerate() {
        let block = &mut out[(j / 16) * 8 * dh..(j / 16 + 1) * 8 * dh];
        for (p, pair) in row.chunks_exact(2).enumerate() {
            block[p * 16 + j % 16] = bf16_bits(pair[0]) | bf16_bits(pair[1]) << 16;
        }
    }
    out
}

/// One KV head's values `[sk, dh]` (bf16 values) as right operands of `P V`, in `u32` pairs (low
/// half first): step `t` of 32 keys, column block `c` of 16 values of `dh`, key pair `p`, column
/// `j`: pair `((t * dh/16 + c) * 16 + p) * 16 + j` is `v[32t + 2p][16c + j], v[32t + 2p + 1][16c + j]`;
/// tile `(t, c)` is the 1 KiB at pair `(t * dh/16 + c) * 256`: key `j`'s step starts at pair
/// `j * dh/2`. An odd last key pairs with a zero.
fn values_layout<E: Lanes>(v: &[E], sk: usize, dh: usize) -> Vec<u32> {
    let mut out = vec![0u32; padded(sk) * dh / 2];
    for (pair, rows) in v[..sk * dh].chunks(2 * dh).enumerate() {
        let (t, p) = (pair / 16, pair % 16);
        let (r0, r1) = rows.split_at(dh);
        for c in 0..dh / 16 {
            let at = ((t * dh / 16 + c) * 16 + p) * 16;
            let dst = &mut out[at..at + 16];
            let (x0, x1) = (&r0[16 * c..16 * c + 16], r1.get(16 * c..16 * c + 16));
            match x1 {
                Some(x1) => {
                    for ((d, &a), &b) in dst.iter_mut().zip(x0).zip(x1) {
                        *d = bf16_bits(a) | bf16_bits(b) << 16;
                    }
                }
                None => {
                    for (d, &a) in dst.iter_mut().zip(x0) {
                        *d = bf16_bits(a);
                    }
                }
            }
        }
    }
    out
}

/// `x` rounded to the nearest bf16 (ties to even), as its bits. `x` is a probability here:
/// finite, so this skips [`crate::fidelity::round_bf16`]'s NaN select (calling that instead cost
/// 5%: `sdpa_prefill 1024 20 amx` alternated, 4.57/4.63 against 4.91/4.84 ms).
#[inline(always)]
fn round_bits(x: f32) -> u16 {
    let bits = x.to_bits();
    (bits.wrapping_add(0x7FFF + ((bits >> 16) & 1)) >> 16) as u16
}

/// `x` as three bf16 values whose sum is `x` exactly (for `x` of at least 2^-102 or zero: the
/// last part must be a normal bf16).
#[cfg(test)]
pub(crate) fn split3(x: f32) -> [u16; PARTS] {
    let mut p = vec![0u16; PARTS * Q_ROWS * KEYS];
    let mut row = [0f32; KEYS];
    row[0] = x;
    split_row(&row, &mut p, 0);
    [p[0], p[Q_ROWS * KEYS], p[2 * Q_ROWS * KEYS]]
}

/// Row `i` of the probability parts `p` (`[part][row][key]`): each probability of `row` as
/// three bf16 values that sum to it exactly, `hi + mid + lo` (8 significant bits each; exact for
/// values of at least 2^-102 or zero, where the last part is a normal bf16). One pass per part
/// over contiguous slices, so the compiler vectorizes it.
#[inline(always)]
fn split_row(row: &[f32], p: &mut [u16], i: usize) {
    let mut rest = [0f32; KEYS];
    rest.copy_from_slice(row);
    for part in 0..PARTS {
        let dst = &mut p[(part * Q_ROWS + i) * KEYS..(part * Q_ROWS + i + 1) * KEYS];
        for (d, r) in dst.iter_mut().zip(rest.iter_mut()) {
            let bits = round_bits(*r);
            *d = bits;
            *r -= f32::from_bits(u32::from(bits) << 16);
        }
    }
}

/// One work item: query rows `p0 ..` of one head.
/// A thread's tile configuration and buffers, kept from one work item to the next.
struct Scratch {
    /// tmm0-7 configured on this thread.
    _tiles: TileRegisters,
    /// The item's query rows as bf16 bits, `[Q_ROWS, dh]` (rows past the item's zero).
    qb: Vec<u16>,
    /// Scores, `[Q_ROWS, KEYS]`.
    s: Vec<f32>,
    /// Probability parts, `[PARTS, Q_ROWS, KEYS]` (rows past the item's zero).
    p: Vec<u16>,
    /// Output rows, `[Q_ROWS, dh]`.
    o: Vec<f32>,
}

impl Scratch {
    fn new(amx: Amx, dh: usize) -> Scratch {
        Scratch {
            _tiles: TileRegisters::configure(amx),
            qb: vec![0; Q_ROWS * dh],
            s: vec![0.0; Q_ROWS * KEYS],
            p: vec![0; PARTS * Q_ROWS * KEYS],
            o: vec![0.0; Q_ROWS * dh],
        }
    }
}

struct Block<'a> {
    /// This thread's tiles and buffers.
    scratch: &'a mut Scratch,
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
        let Scratch { qb, s, p, o, .. } = self.scratch;
        for (dst, &x) in qb.iter_mut().zip(self.q) {
            *dst = (x.to_bits() >> 16) as u16;
        }
        o.fill(0.0);
        if rows < Q_ROWS {
            // A short last item: the rows past it stay zero, as for a fresh buffer.
            qb[rows * dh..].fill(0);
            for part in 0..PARTS {
                p[(part * Q_ROWS + rows) * KEYS..(part + 1) * Q_ROWS * KEYS].fill(0);
            }
        }
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
                scores(qb, dh, kp, &mut s[32 * half..]);
            }
            // Every row's softmax runs over all KEYS columns (those past `n` masked): its sums
            // then do not depend on where the item's last row ends, so a chunk of a prompt gives
            // the bits of the same rows in the whole prompt.
            for (i, &(a, b)) in ranges.iter().enumerate() {
                let row = &mut s[i * KEYS..(i + 1) * KEYS];
                // Columns a - j0 .. b - j0 are visible (all of them off the diagonal).
                let first = a.saturating_sub(j0).min(KEYS);
                let end = b.saturating_sub(j0).clamp(first, KEYS);
                row[..first].fill(f32::NEG_INFINITY);
                row[end..].fill(f32::NEG_INFINITY);
                for x in &mut row[first..end] {
                    *x *= self.scale;
                }
                let (m, l) = &mut state[i];
                let alpha = simd::online_softmax_step::<FMA>(m, l, row);
                if alpha != 1.0 {
                    simd::scale(alpha, &mut o[i * dh..(i + 1) * dh]);
                }
                split_row(row, p, i);
            }
            weighted_values(p, &self.vp[j0 * dh..], halves, dh, o);
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
    // SAFETY: an `Amx` token configured this thread's tiles (the caller's `Scratch` holds them).
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
        tiles::store(&Quad::rows(s.as_mut_ptr(), KEYS * 4));
    }
}

/// `o += P V` over `halves` steps of 32 keys, every part of `p` (layout `[part][row][key]`, rows
/// [`KEYS`] apart); `vp` starts at the first step's tiles in [`values_layout`].
fn weighted_values(p: &[u16], vp: &[u16], halves: usize, dh: usize, o: &mut [f32]) {
    let cols = dh / 16;
    assert!(
        p.len() == PARTS * Q_ROWS * KEYS
            && (1..=KEYS / 32).contains(&halves)
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
            tiles::load(&Quad::rows(c, dh * 4));
            for part in 0..PARTS {
                for t in 0..halves {
                    let a = p.as_ptr().add(part * Q_ROWS * KEYS + 32 * t);
                    let b = vp.as_ptr().add((t * cols + 2 * g) * 512);
                    tiles::step(a, a.add(16 * KEYS), KEYS * 2, b, b.add(512));
                }
            }
            tiles::store(&Quad::rows(c, dh * 4));
        }
    }
}

#[cfg(test)]
#[path = "sdpa_amx_tests.rs"]
mod tests;
