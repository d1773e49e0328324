//! The decode kernel of [`crate::packed_gemv`] on AVX-512 BF16: fewer than eight rows of a
//! block-float product, the emulation's bits, two weights per lane and `vdpbf16ps`.
//!
//! The f32 kernel ([`crate::packed_gemv_avx512`]) spends three instructions per 16 weights
//! (widen, convert, fused multiply-add) plus a share of turning codes into signed bytes, and on
//! a one-row product that, not the memory, bounds it. Here the weights become bf16 pairs
//! `(k, k + 1)` of 16 columns, the values `±m` (the LoFi `a_hi` of bfloat8_b already applied):
//! - bfloat4_b, 32 weights: a byte permute (the two face rows' code bytes to one byte per
//!   weight), a variable shift (the nibble down), a 16-bit table permute (code to bf16, sign
//!   included);
//! - bfloat8_b, 64 weights: two 128-entry byte table lookups (`vpermi2b`: the magnitude's low
//!   and high bf16 byte), the sign bit or-ed into the high byte, and two two-source byte permutes
//!   that interleave the four face rows' bytes into two vectors of pairs;
//!
//! and then one `vdpbf16ps` per row and pair vector.
//!
//! The scale sits on the activation side, as in the f32 kernel: the pair broadcast to every lane
//! is `(c_k, c_{k+1})`, `c = b·2^(E − bias)` of the face row, exact in bf16 (a bf16 operand times a
//! power of two, normal by [`crate::packed_gemv::FastPlan::for_call`]). So each product `c·(±m)` is exact,
//! `k` sits in the pair's high half and is added first, and a K-tile's sum runs in order of k from
//! zero; the flushing of subnormal sums cannot act under
//! [`crate::packed_gemv::FastPlan::for_call`] (`c`'s quantum is the operand's times the scale); see
//! [`crate::packed_prefill_avx512bf16`] for `vdpbf16ps`'s order and rounding. The K-tile sums
//! then go to the destination as everywhere: added (fp32), or added and rounded to bf16.

use std::arch::x86_64::*;

use tt_numerics::tile::{TILE, TILE_EXPONENTS};

use crate::packed_gemv::Params;
use crate::packed_gemv_avx512::{Consts as Scales, add_k_tile_sums};
use crate::packed_prefill_avx512bf16::{Avx512Bf16, bits, pairs};

/// Row chunks this kernel is compiled for, largest first.
pub(crate) const CHUNKS: [usize; 3] = [4, 2, 1];

/// Tiles a two-row chunk runs at once (more chains of dependent adds); a one-row chunk runs
/// [`ONE_ROW_SIDE_BY_SIDE`]. (`RAYON_NUM_THREADS=1 packed_in_cache 1 1024 1024`: one row of
/// bfloat4_b 42 -> 32 us with four tiles instead of two.)
const SIDE_BY_SIDE: usize = 2;

/// Tiles a one-row chunk runs at once.
const ONE_ROW_SIDE_BY_SIDE: usize = 4;

/// bf16 bits of a bfloat4_b code's `±m` (sign-magnitude nibble, `-0` as `+0`), twice: the
/// permute reads five index bits and the fifth is not part of the nibble.
const CODE_VALUES: [u16; 32] = {
    let half: [u16; 16] = [
        0x0000, 0x3f80, 0x4000, 0x4040, 0x4080, 0x40a0, 0x40c0, 0x40e0, 0x0000, 0xbf80, 0xc000,
        0xc040, 0xc080, 0xc0a0, 0xc0c0, 0xc0e0,
    ];
    let mut all = [0u16; 32];
    let mut i = 0;
    while i < 32 {
        all[i] = half[i % 16];
        i += 1;
    }
    all
};

/// For word `w` of a pair vector (column `j = w / 2`; the low word `k + 1`, the high word `k`):
/// the byte of the two face rows' 16 code bytes that holds its nibble (face row `k` at 0, `k + 1`
/// at 8), in the word's low byte.
const PAIR_BYTES: [u8; 64] = {
    let mut sel = [0u8; 64];
    let mut w = 0;
    while w < 32 {
        let j = w / 2;
        let row = if w % 2 == 0 { 8 } else { 0 };
        sel[2 * w] = (row + j / 2) as u8;
        w += 1;
    }
    sel
};

/// For word `w`: 4 when its nibble is the high one of its byte (odd column), else 0.
const PAIR_SHIFTS: [u16; 32] = {
    let mut s = [0u16; 32];
    let mut w = 0;
    while w < 32 {
        s[w] = if (w / 2) % 2 == 1 { 4 } else { 0 };
        w += 1;
    }
    s
};

/// bf16 bits of the integer `m` (0 ..= 255), and of its `a_hi` (top 5 significant bits) with `hi`.
const fn bf16_of(m: u32, hi: bool) -> u16 {
    if m == 0 {
        return 0;
    }
    let e = 31 - m.leading_zeros(); // m = 1.f · 2^e, exact in 8 bits
    let bits = ((127 + e) << 7) | ((m << (7 - e)) & 0x7f);
    (if hi { bits & 0xfff8 } else { bits }) as u16
}

/// For bfloat8_b: byte `byte` (0 low, 1 high) of the bf16 bits of each magnitude `m` (0 ..= 127),
/// or of its `a_hi` with `hi`: the 128-entry table of a `vpermi2b`, as its two vectors.
const fn magnitude_bytes(byte: u32, hi: bool) -> [[u8; 64]; 2] {
    let mut t = [[0u8; 64]; 2];
    let mut m = 0;
    while m < 128 {
        t[m / 64][m % 64] = (bf16_of(m as u32, hi) >> (8 * byte)) as u8;
        m += 1;
    }
    t
}

/// For bfloat8_b, `half` 0 (face rows 0, 1 of a 64-byte block) or 1 (rows 2, 3): where each byte
/// of the pair vector comes from, the low bytes' vector first and the high bytes' second (its
/// indices are 64 more). Column `j`'s dword is the second row's value (low word, `k + 1`) under
/// the first's (high word, `k`).
const fn interleave(half: usize) -> [u8; 64] {
    let mut sel = [0u8; 64];
    let mut j = 0;
    while j < 16 {
        let (first, second) = (32 * half + j, 32 * half + 16 + j);
        sel[4 * j] = second as u8;
        sel[4 * j + 1] = (64 + second) as u8;
        sel[4 * j + 2] = first as u8;
        sel[4 * j + 3] = (64 + first) as u8;
        j += 1;
    }
    sel
}

static LOW_BYTES: [[[u8; 64]; 2]; 2] = [magnitude_bytes(0, false), magnitude_bytes(0, true)];
static HIGH_BYTES: [[[u8; 64]; 2]; 2] = [magnitude_bytes(1, false), magnitude_bytes(1, true)];
static INTERLEAVE: [[u8; 64]; 2] = [interleave(0), interleave(1)];

/// The kernel's constant vectors: the scales' and the code tables.
#[derive(Clone, Copy)]
struct Consts {
    scales: Scales,
    /// bfloat4_b: the code values, the pair bytes and the nibble shifts.
    values: __m512i,
    bytes: __m512i,
    shifts: __m512i,
    /// bfloat8_b: the magnitude tables (low byte, high byte; two vectors each), the two
    /// interleaves and the sign bit of the high byte.
    low: [__m512i; 2],
    high: [__m512i; 2],
    interleave: [__m512i; 2],
    sign: __m512i,
}

/// A table of at least 64 bytes as a vector (its first 64).
#[target_feature(enable = "avx512f")]
fn vector<T: Copy, const N: usize>(table: &[T; N]) -> __m512i {
    const { assert!(size_of::<[T; N]>() >= 64) };
    // SAFETY: the table holds at least 64 bytes (checked at compile time).
    unsafe { _mm512_loadu_si512(table.as_ptr().cast()) }
}

impl Consts {
    #[target_feature(enable = "avx512f,avx512bw,avx512vl")]
    fn new(plan: &crate::packed_gemv::FastPlan) -> Self {
        let vectors = |t: &[[u8; 64]; 2]| t.each_ref().map(|h| vector(h));
        let hi = usize::from(plan.weight_hi);
        Self {
            scales: Scales::new(plan),
            values: vector(&CODE_VALUES),
            bytes: vector(&PAIR_BYTES),
            shifts: vector(&PAIR_SHIFTS),
            low: vectors(&LOW_BYTES[hi]),
            high: vectors(&HIGH_BYTES[hi]),
            interleave: vectors(&INTERLEAVE),
            sign: _mm512_set1_epi8(0x80u8 as i8),
        }
    }
}

/// `chunk` rows (one of [`CHUNKS`]) of a block-float product: `x` is `[chunk, kp]`, `d` is
/// `[chunk, tn · 32]`.
///
/// # Safety
/// As [`Params`] documents, and `x.len() >= chunk · kp`, `d.len() >= chunk · tn · 32`; the
/// call passed [`crate::packed_gemv::FastPlan::for_call`].
pub(crate) unsafe fn rows(isa: Avx512Bf16, chunk: usize, p: &Params<'_>, x: &[f32], d: &mut [f32]) {
    let _proof = isa;
    // SAFETY: `isa` proves AVX-512 F/BW/VL/BF16/VBMI; the rest is the caller's contract.
    unsafe {
        match (chunk, p.plan.bfp4) {
            (4, true) => rows_kernel::<4, true>(p, x, d),
            (2, true) => rows_kernel::<2, true>(p, x, d),
            (_, true) => rows_kernel::<1, true>(p, x, d),
            (4, false) => rows_kernel::<4, false>(p, x, d),
            (2, false) => rows_kernel::<2, false>(p, x, d),
            (_, false) => rows_kernel::<1, false>(p, x, d),
        }
    }
}

/// # Safety
/// As [`rows`] for `R` rows (`B4`: bfloat4_b, else bfloat8_b), with AVX-512 F/BW/VL/BF16/VBMI.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512bf16,avx512vbmi")]
unsafe fn rows_kernel<const R: usize, const B4: bool>(p: &Params<'_>, x: &[f32], d: &mut [f32]) {
    let k = Consts::new(&p.plan);
    for kt in 0..p.tiles_k {
        let mut j = 0;
        // SAFETY (both loops): tiles j .. j + T <= tn of tile row kt < tiles_k, the rest is
        // this function's contract.
        if R == 1 {
            while j + ONE_ROW_SIDE_BY_SIDE <= p.tn {
                unsafe { tiles::<R, ONE_ROW_SIDE_BY_SIDE, B4>(&k, p, x, d, kt, j) };
                j += ONE_ROW_SIDE_BY_SIDE;
            }
        }
        if R <= 2 {
            while j + SIDE_BY_SIDE <= p.tn {
                unsafe { tiles::<R, SIDE_BY_SIDE, B4>(&k, p, x, d, kt, j) };
                j += SIDE_BY_SIDE;
            }
        }
        while j < p.tn {
            unsafe { tiles::<R, 1, B4>(&k, p, x, d, kt, j) };
            j += 1;
        }
    }
}

/// Tiles `(kt, tc0 + j0 .. tc0 + j0 + T)` against `R` rows, their K-tile sums added to `d`.
///
/// # Safety
/// As [`rows_kernel`], and `kt < tiles_k`, `j0 + T <= tn`.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512bf16,avx512vbmi")]
#[inline]
unsafe fn tiles<const R: usize, const T: usize, const B4: bool>(
    k: &Consts,
    p: &Params<'_>,
    x: &[f32],
    d: &mut [f32],
    kt: usize,
    j0: usize,
) {
    let width = p.tn * TILE;
    // c as bf16 pairs: [tile][row][face][pair], pair q = face rows 2q (high) and 2q + 1 (low).
    let mut c = [[[[0u32; 8]; 4]; R]; T];
    let mut codes = [std::ptr::null::<u8>(); T];
    for t in 0..T {
        // SAFETY (all pointer reads below): the tile lies in p.bytes (caller's contract);
        // exponents are its first 64 bytes, codes the rest (512 or 1024).
        let tile = unsafe {
            p.bytes
                .as_ptr()
                .add((kt * p.tiles_n + p.tc0 + j0 + t) * p.tile_bytes)
        };
        codes[t] = unsafe { tile.add(TILE_EXPONENTS) };
        for top in [0, 2] {
            // Faces `top` and `top + 1` share the operands k = 8·top .. 8·top + 16.
            let (s0, s1) = unsafe {
                (
                    k.scales.face_scales(tile, top),
                    k.scales.face_scales(tile, top + 1),
                )
            };
            for (r, cr) in c[t].iter_mut().enumerate() {
                // SAFETY: row r of x has kp = tiles_k · 32 operands.
                let xv = unsafe {
                    _mm512_loadu_ps(x.as_ptr().add(r * p.kp + kt * TILE + (top / 2) * 16))
                };
                // Words: c of face `top`'s 16 rows, then face `top + 1`'s (exact: each c is a
                // normal bf16 value); rotating each dword by 16 puts face row 2q in the high
                // half over 2q + 1.
                let words = _mm512_cvtne2ps_pbh(_mm512_mul_ps(xv, s1), _mm512_mul_ps(xv, s0));
                let pair = _mm512_rol_epi32::<16>(bits(words));
                // SAFETY: cr[top] and cr[top + 1] are 16 contiguous writable u32.
                unsafe { _mm512_storeu_si512(cr[top].as_mut_ptr().cast(), pair) };
            }
        }
        // The same tile of the next K-tile row: its exponents now, each line of its codes as
        // the loop below reads the same line of this tile's (`prefetch`). (Fetching all its lines here, 68
        // at once for four bfloat8_b tiles, streamed slower: `packed_stream` bfloat8_b 12.2-13.1
        // ms per pass against 7.7-8.2 spread out.)
        if kt + 1 < p.tiles_k {
            // Into L2 (see `packed_gemv_avx512`); the line lies in p.bytes (kt + 1 < tiles_k),
            // and prefetches never fault anyway.
            _mm_prefetch::<_MM_HINT_T1>(tile.wrapping_add(p.tiles_n * p.tile_bytes).cast());
        }
    }
    // The same line of the next K-tile row's tile, as this tile's line at `at` is read (see
    // above); the line lies in p.bytes when kt + 1 < tiles_k, and prefetches never fault anyway.
    let ahead = (kt + 1 < p.tiles_k).then_some(p.tiles_n * p.tile_bytes);
    let prefetch = |at: *const u8| {
        if let Some(ahead) = ahead {
            _mm_prefetch::<_MM_HINT_T1>(at.wrapping_add(ahead).cast());
        }
    };
    let mut acc = [[[_mm512_setzero_ps(); 2]; R]; T];
    // k in order: faces 0 and 1 (k < 16, column halves 0 and 1), then 2 and 3. (`q` indexes
    // both the code rows and `c`.)
    for top in [0, 2] {
        for q in (0..8).step_by(if B4 { 1 } else { 2 }) {
            for (t, acc) in acc.iter_mut().enumerate() {
                for h in 0..2 {
                    let f = top + h;
                    let g = f * 16 + 2 * q;
                    if B4 {
                        // SAFETY: face rows g and g + 1 are bytes 8g .. 8g + 16 of the tile's
                        // 512 code bytes (g + 1 < 64).
                        let at = unsafe { codes[t].add(8 * g) };
                        if q % 4 == 0 {
                            prefetch(at);
                        }
                        // SAFETY: as above.
                        let w = unsafe { bfp4_pairs(k, at) };
                        for (r, a) in acc.iter_mut().enumerate() {
                            let b = pairs(_mm512_set1_epi32(c[t][r][f][q] as i32));
                            a[h] = _mm512_dpbf16_ps(a[h], w, b);
                        }
                    } else {
                        // SAFETY: face rows g .. g + 4 are bytes 16g .. 16g + 64 of the tile's
                        // 1024 code bytes (g + 3 < 64).
                        let at = unsafe { codes[t].add(16 * g) };
                        prefetch(at);
                        // SAFETY: as above.
                        let [w0, w1] = unsafe { bfp8_pairs(k, at) };
                        for (r, a) in acc.iter_mut().enumerate() {
                            let b0 = pairs(_mm512_set1_epi32(c[t][r][f][q] as i32));
                            let b1 = pairs(_mm512_set1_epi32(c[t][r][f][q + 1] as i32));
                            a[h] = _mm512_dpbf16_ps(_mm512_dpbf16_ps(a[h], w0, b0), w1, b1);
                        }
                    }
                }
            }
        }
    }
    add_k_tile_sums(&acc, d, width, j0, p.plan.acc_bf16);
}

/// Face rows `g`, `g + 1` of a bfloat4_b tile (16 code bytes at `at`) as bf16 pairs: a byte
/// permute puts each weight's code byte in its word, a variable shift brings its nibble down,
/// and a 16-bit table permute gives its value `±m`.
///
/// # Safety
/// AVX-512 F/BW/VL/BF16/VBMI; 16 bytes readable at `at`.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512bf16,avx512vbmi")]
#[inline]
unsafe fn bfp4_pairs(k: &Consts, at: *const u8) -> __m512bh {
    // SAFETY: the caller's contract.
    let two = _mm512_zextsi128_si512(unsafe { _mm_loadu_si128(at.cast()) });
    let nibbles = _mm512_srlv_epi16(_mm512_permutexvar_epi8(k.bytes, two), k.shifts);
    pairs(_mm512_permutexvar_epi16(nibbles, k.values))
}

/// Face rows `g .. g + 4` of a bfloat8_b tile (64 code bytes at `at`) as two vectors of bf16
/// pairs (rows `g`, `g + 1`, then `g + 2`, `g + 3`): two table lookups give each magnitude's
/// low and high bf16 byte, the code's sign goes into the high byte, and two permutes
/// interleave the rows.
///
/// # Safety
/// AVX-512 F/BW/VL/BF16/VBMI; 64 bytes readable at `at`.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512bf16,avx512vbmi")]
#[inline]
unsafe fn bfp8_pairs(k: &Consts, at: *const u8) -> [__m512bh; 2] {
    // SAFETY: the caller's contract.
    let four = unsafe { _mm512_loadu_si512(at.cast()) };
    let low = _mm512_permutex2var_epi8(k.low[0], four, k.low[1]);
    let high = _mm512_permutex2var_epi8(k.high[0], four, k.high[1]);
    // high | (four & 0x80): the code's sign is the bf16's.
    let high = _mm512_ternarylogic_epi32::<0xf8>(high, four, k.sign);
    k.interleave
        .map(|sel| pairs(_mm512_permutex2var_epi8(low, sel, high)))
}
