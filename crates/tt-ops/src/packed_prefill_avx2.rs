//! The AVX2 + FMA kernel of [`crate::packed_gemv`] for many rows (a prefill): the operations of
//! [`crate::packed_gemv_avx2`] per output, in the same order (so the same bits), in another loop
//! order. There every chunk of rows decodes every tile again (a sign-extending load and a
//! conversion per 8 weights, next to the fused multiply-adds); here each tile is decoded once,
//! to f32, and every row of the task runs over it, [`ROWS`] at a time: per `k`, two weight
//! registers loaded from the decoded tile serve twelve fused multiply-adds.
//!
//! The loops, outermost first: blocks of [`K_TILES`] K-tiles (the rows' operands of the block
//! interleaved k-major, [`ROWS`] rows per group, so one pointer serves every broadcast); tile
//! columns (the block's tiles of the column decoded, 32 KiB); row groups; the block's K-tiles in
//! order. A row group's destination and operands stay in L1 across the block, where a loop of
//! K-tiles outside the rows would sweep the whole destination once per K-tile (at 1024 rows that
//! made the kernel a third slower: `packed_in_cache 1024 3072 2048`).

use std::arch::x86_64::*;

use tt_numerics::tile::{TILE, TILE_EXPONENTS};

use crate::packed_gemv::Params;
use crate::packed_gemv_avx2::{Avx2, round_bf16_default_nan, signed_codes};
use crate::packed_gemv_avx512::SignedCodes;

/// Rows per pass over a decoded tile: 6 rows x 16 columns are twelve accumulators, with two
/// weight registers and a broadcast, 15 of the 16 registers.
const ROWS: usize = 6;

/// K-tiles of one tile column decoded together (32 KiB of f32, about the L1 data cache): each
/// pass of [`ROWS`] rows then runs over all of them, so a row's destination and operands stay in
/// L1 across the block instead of being swept once per K-tile.
const K_TILES: usize = 8;

/// Fewest rows for which this kernel runs (fewer decode too few rows per tile to pay).
pub(crate) const MIN_ROWS: usize = 8;

/// One tile's weights as f32 `±m` (with `a_hi`'s mask where the plan says), face row `g` at
/// `16·g`.
#[repr(C, align(64))]
struct Decoded([f32; 1024]);

/// `rows` rows: `x` is `[rows, kp]`, `d` is `[rows, tn · 32]`.
///
/// # Safety
/// As [`Params`] documents, and `x.len() >= rows · kp`, `d.len() >= rows · tn · 32`.
pub(crate) unsafe fn rows(isa: Avx2, p: &Params<'_>, x: &[f32], d: &mut [f32], rows: usize) {
    let _proof = isa;
    // SAFETY: `isa` proves AVX2 and FMA; the rest is the caller's contract.
    unsafe {
        match (p.plan.bfp4, p.plan.weight_hi) {
            (false, false) => kernel::<false, false>(p, x, d, rows),
            (false, true) => kernel::<false, true>(p, x, d, rows),
            (true, _) => kernel::<true, false>(p, x, d, rows),
        }
    }
}

/// # Safety
/// As [`rows`], with AVX2 and FMA.
#[target_feature(enable = "avx2,fma")]
unsafe fn kernel<const B4: bool, const HI: bool>(
    p: &Params<'_>,
    x: &[f32],
    d: &mut [f32],
    rows: usize,
) {
    let lo = _mm256_set1_epi32(i32::from(p.plan.range.lo));
    let hi = _mm256_set1_epi32(i32::from(p.plan.range.hi));
    let offset = _mm256_set1_epi32(p.plan.bias - 127);
    let mut codes = SignedCodes([0; 1024]);
    let mut panel: Vec<Decoded> = (0..K_TILES.min(p.tiles_k))
        .map(|_| Decoded([0.0; 1024]))
        .collect();
    let groups = rows.div_ceil(ROWS);
    let group_len = K_TILES * TILE * ROWS;
    let mut operands = vec![0f32; groups * group_len];
    let mut scale = [_mm256_setzero_ps(); 8];
    for kt0 in (0..p.tiles_k).step_by(K_TILES) {
        let kts = K_TILES.min(p.tiles_k - kt0);
        interleave(x, p.kp, rows, kt0 * TILE, kts * TILE, &mut operands);
        for j in 0..p.tn {
            for (t, w) in panel.iter_mut().take(kts).enumerate() {
                // SAFETY (pointer reads): the tile lies in p.bytes (Params' contract); exponents
                // are its first 64 bytes, codes the next 64 · row_bytes.
                let tile = unsafe {
                    p.bytes
                        .as_ptr()
                        .add(((kt0 + t) * p.tiles_n + p.tc0 + j) * p.tile_bytes)
                };
                for (q, s) in scale.iter_mut().enumerate() {
                    // Exponents 8q .. 8q + 8 as 2^(E − bias), E clamped into the matrix's range.
                    let e =
                        _mm256_cvtepu8_epi32(unsafe { _mm_loadl_epi64(tile.add(q * 8).cast()) });
                    let e = _mm256_min_epi32(_mm256_max_epi32(e, lo), hi);
                    *s = _mm256_castsi256_ps(_mm256_slli_epi32::<23>(_mm256_sub_epi32(e, offset)));
                }
                // SAFETY: the codes follow the exponents.
                unsafe { signed_codes::<B4>(tile.add(TILE_EXPONENTS), &mut codes) };
                decode::<HI>(&codes, &scale, w);
            }
            for (g, xg) in operands.chunks_exact(group_len).enumerate() {
                let r = g * ROWS;
                let left = rows - r;
                // Row group by row group, the K-tiles in order: each output's K-tile sums are
                // added to it in order of k, as in the emulation.
                for (w, xt) in panel.iter().zip(xg.chunks_exact(TILE * ROWS)).take(kts) {
                    // SAFETY (every arm): rows r .. r + n < rows of d exist (contract); `xt`
                    // holds 32 · ROWS operands.
                    unsafe {
                        match left {
                            1 => tile_rows::<1>(p, w, xt, d, r, j),
                            2 => tile_rows::<2>(p, w, xt, d, r, j),
                            3 => tile_rows::<3>(p, w, xt, d, r, j),
                            4 => tile_rows::<4>(p, w, xt, d, r, j),
                            5 => tile_rows::<5>(p, w, xt, d, r, j),
                            _ => tile_rows::<ROWS>(p, w, xt, d, r, j),
                        }
                    }
                }
            }
        }
    }
}

/// Columns `k0 .. k0 + len` of `rows` rows of `x` (`kp` apart) into `out`, [`ROWS`] rows at a
/// time and k-major: group `g`'s operand `(k, r)` at `g · K_TILES · 32 · ROWS + k · ROWS + r`.
/// The slots of rows past `rows` are left as they are: a group's tail pass reads its own rows.
fn interleave(x: &[f32], kp: usize, rows: usize, k0: usize, len: usize, out: &mut [f32]) {
    let group_len = K_TILES * TILE * ROWS;
    for row in 0..rows {
        let og = &mut out[(row / ROWS) * group_len..][..len * ROWS];
        let src = &x[row * kp + k0..][..len];
        for (slot, &v) in og.iter_mut().skip(row % ROWS).step_by(ROWS).zip(src) {
            *slot = v;
        }
    }
}

/// Every weight of the tile into `w`: code `±m` (masked to `a_hi` with `HI`) times its face
/// row's `2^(E − bias)` (`scale`, 8 face rows per register). Both factors are exact and the
/// matrix's range keeps the product a normal f32, so it is the weight's exact value.
#[target_feature(enable = "avx2,fma")]
#[inline]
fn decode<const HI: bool>(m: &SignedCodes, scale: &[__m256; 8], w: &mut Decoded) {
    let mask = _mm256_castsi256_ps(_mm256_set1_epi32(if HI {
        0xfff8_0000u32 as i32
    } else {
        -1
    }));
    let mut scales = [0f32; 64];
    for (q, &s) in scale.iter().enumerate() {
        // SAFETY: 8 writable f32 at 8q < 64.
        unsafe { _mm256_storeu_ps(scales.as_mut_ptr().add(8 * q), s) };
    }
    for ((bytes, out), &s) in
        m.0.chunks_exact(16)
            .zip(w.0.chunks_exact_mut(16))
            .zip(&scales)
    {
        let s = _mm256_set1_ps(s);
        for half in 0..2 {
            // SAFETY: 8 readable bytes at 8·half < 16; 8 writable f32 at 8·half < 16.
            unsafe {
                let b = _mm_loadl_epi64(bytes.as_ptr().add(8 * half).cast());
                let f = _mm256_and_ps(_mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(b)), mask);
                _mm256_storeu_ps(out.as_mut_ptr().add(8 * half), _mm256_mul_ps(f, s));
            }
        }
    }
}

/// Rows `r0 .. r0 + R` against tile `(kt, j)` (its weights decoded in `w`, the rows' operands
/// of K-tile `kt` interleaved in `xt`, `k · ROWS + r`): their K-tile sums added to `d` (fp32) or
/// added and rounded to bf16. Each product is `b·(±m·2^(E − bias))`, the real number
/// `packed_gemv_avx2` computes as `(b·2^(E − bias))·(±m)`, exact both ways, so every fused
/// multiply-add rounds the same sum.
///
/// # Safety
/// AVX2 and FMA; rows `r0 .. r0 + R` of `d` (`tn · 32` apart) exist; `xt` holds `32 · ROWS`
/// operands; `j < tn`.
#[target_feature(enable = "avx2,fma")]
#[inline]
unsafe fn tile_rows<const R: usize>(
    p: &Params<'_>,
    w: &Decoded,
    xt: &[f32],
    d: &mut [f32],
    r0: usize,
    j: usize,
) {
    let width = p.tn * TILE;
    debug_assert!(xt.len() >= TILE * ROWS);
    let xt = xt.as_ptr();
    for h in 0..2 {
        let mut acc = [[_mm256_setzero_ps(); 2]; R];
        // Face h (k < 16) then 2 + h (k >= 16): the column face's k in order.
        for top in [0, 2] {
            let face = top + h;
            for fr in 0..16 {
                let g = face * 16 + fr;
                let k = (face / 2) * 16 + fr;
                // SAFETY: face row g < 64 of 16 values in w.
                let (w0, w1) = unsafe {
                    (
                        _mm256_load_ps(w.0.as_ptr().add(16 * g)),
                        _mm256_load_ps(w.0.as_ptr().add(16 * g + 8)),
                    )
                };
                for (r, a) in acc.iter_mut().enumerate() {
                    // SAFETY: k · ROWS + r < 32 · ROWS operands in xt.
                    let b = unsafe { _mm256_broadcast_ss(&*xt.add(k * ROWS + r)) };
                    a[0] = _mm256_fmadd_ps(b, w0, a[0]);
                    a[1] = _mm256_fmadd_ps(b, w1, a[1]);
                }
            }
        }
        for (r, a) in acc.iter().enumerate() {
            for (q, &s) in a.iter().enumerate() {
                // SAFETY: row r0 + r of d has width = tn · 32 values; j < tn, h < 2, q < 2.
                unsafe {
                    let at = d
                        .as_mut_ptr()
                        .add((r0 + r) * width + j * TILE + h * 16 + q * 8);
                    let sum = _mm256_add_ps(_mm256_loadu_ps(at), s);
                    let sum = if p.plan.acc_bf16 {
                        round_bf16_default_nan(sum)
                    } else {
                        sum
                    };
                    _mm256_storeu_ps(at, sum);
                }
            }
        }
    }
}
