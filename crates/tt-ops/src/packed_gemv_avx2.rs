//! The AVX2 + FMA kernel of [`crate::packed_gemv`], for CPUs without AVX-512: the same
//! operations as [`crate::packed_gemv_avx512`] (same order per output, so the same bits), on 8
//! lanes. With 16 registers it runs one 16-column face of a tile at a time: for each of the two
//! column faces, k runs over the top face (k < 16) then the bottom one (k >= 16), which keeps
//! every column's sum in order of k.

use std::arch::x86_64::*;

use tt_numerics::tile::{TILE, TILE_EXPONENTS};

use crate::packed_gemv::Params;

/// Proof that this CPU executes AVX2 and FMA (only [`Avx2::detect`] makes one).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Avx2(());

impl Avx2 {
    /// `Some` when the CPU has AVX2 and FMA (std caches the CPUID probe).
    pub(crate) fn detect() -> Option<Self> {
        (is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma")).then_some(Self(()))
    }
}

/// Row chunks this kernel is compiled for, largest first.
pub(crate) const CHUNKS: [usize; 3] = [4, 2, 1];

/// `chunk` rows (one of [`CHUNKS`]): `x` is `[chunk, kp]`, `d` is `[chunk, tn · 32]`.
///
/// # Safety
/// As [`Params`] documents, and `x.len() >= chunk · kp`, `d.len() >= chunk · tn · 32`.
pub(crate) unsafe fn rows(isa: Avx2, chunk: usize, p: &Params<'_>, x: &[f32], d: &mut [f32]) {
    let _proof = isa;
    // SAFETY: `isa` proves AVX2 and FMA; the rest is the caller's contract.
    unsafe {
        match (chunk, p.plan.bfp4, p.plan.weight_hi) {
            (4, false, false) => rows_kernel::<4, false, false>(p, x, d),
            (2, false, false) => rows_kernel::<2, false, false>(p, x, d),
            (_, false, false) => rows_kernel::<1, false, false>(p, x, d),
            (4, false, true) => rows_kernel::<4, false, true>(p, x, d),
            (2, false, true) => rows_kernel::<2, false, true>(p, x, d),
            (_, false, true) => rows_kernel::<1, false, true>(p, x, d),
            (4, true, _) => rows_kernel::<4, true, false>(p, x, d),
            (2, true, _) => rows_kernel::<2, true, false>(p, x, d),
            (_, true, _) => rows_kernel::<1, true, false>(p, x, d),
        }
    }
}

/// `R` rows: `x` is `[R, kp]`, `d` is `[R, tn · 32]`. `B4`: bfloat4_b codes; `HI`: weights enter
/// as `a_hi`.
///
/// # Safety
/// The CPU has AVX2 and FMA; `x.len() >= R · kp`, `d.len() >= R · tn · 32`, and [`Params`]'s
/// contract holds.
#[target_feature(enable = "avx2,fma")]
unsafe fn rows_kernel<const R: usize, const B4: bool, const HI: bool>(
    p: &Params<'_>,
    x: &[f32],
    d: &mut [f32],
) {
    let lo = _mm256_set1_epi32(i32::from(p.plan.range.lo));
    let hi = _mm256_set1_epi32(i32::from(p.plan.range.hi));
    let offset = _mm256_set1_epi32(p.plan.bias - 127);
    let mut c = [[0f32; 64]; R];
    for kt in 0..p.tiles_k {
        for j in 0..p.tn {
            // SAFETY (all pointer reads below): the tile lies in p.bytes (Params' contract);
            // exponents are its first 64 bytes, codes the next 64 · row_bytes.
            let tile = unsafe {
                p.bytes
                    .as_ptr()
                    .add((kt * p.tiles_n + p.tc0 + j) * p.tile_bytes)
            };
            for q in 0..8 {
                // exponents 8q .. 8q + 8: face q / 2, face rows 8 (q % 2) ..
                let e = _mm256_cvtepu8_epi32(unsafe { _mm_loadl_epi64(tile.add(q * 8).cast()) });
                let e = _mm256_min_epi32(_mm256_max_epi32(e, lo), hi);
                let scale =
                    _mm256_castsi256_ps(_mm256_slli_epi32::<23>(_mm256_sub_epi32(e, offset)));
                let (face, half_row) = (q / 2, (q % 2) * 8);
                for (r, cr) in c.iter_mut().enumerate() {
                    // SAFETY: row r of x has kp = tiles_k · 32 operands.
                    let xv = unsafe {
                        _mm256_loadu_ps(
                            x.as_ptr()
                                .add(r * p.kp + kt * TILE + (face / 2) * 16 + half_row),
                        )
                    };
                    // SAFETY: cr has 64 values.
                    unsafe {
                        _mm256_storeu_ps(cr.as_mut_ptr().add(q * 8), _mm256_mul_ps(xv, scale))
                    };
                }
            }
            if kt + 1 < p.tiles_k {
                // SAFETY: the next tile row's tile lies in p.bytes (kt + 1 < tiles_k).
                let next = unsafe { tile.add(p.tiles_n * p.tile_bytes) };
                for line in (0..p.tile_bytes).step_by(64) {
                    // SAFETY: inside that tile; prefetches never fault anyway.
                    _mm_prefetch::<_MM_HINT_T0>(unsafe { next.add(line) }.cast());
                }
            }
            // SAFETY (both arms): the tile lies in p.bytes; row r of d has width values.
            if R <= 2 {
                unsafe { column_faces::<R, B4, HI, 2>(p, tile, &c, d, j, 0) };
            } else {
                for h in 0..2 {
                    unsafe { column_faces::<R, B4, HI, 1>(p, tile, &c, d, j, h) };
                }
            }
        }
    }
}

/// Column faces `h0 .. h0 + H` (16 columns each) of tile `tile` (tile column `j` of the task)
/// against `R` rows of scaled operands `c`, their K-tile sums added to `d`. With `H = 2` (one or
/// two rows) both faces' sums interleave: four or eight chains of dependent adds instead of two
/// or four keep the FMA units busy.
///
/// # Safety
/// AVX2 and FMA; the tile's bytes are readable at `tile`; `d` holds `R` rows of
/// `width = tn · 32` values with `j < tn`; `h0 + H <= 2`.
#[target_feature(enable = "avx2,fma")]
#[inline]
unsafe fn column_faces<const R: usize, const B4: bool, const HI: bool, const H: usize>(
    p: &Params<'_>,
    tile: *const u8,
    c: &[[f32; 64]; R],
    d: &mut [f32],
    j: usize,
    h0: usize,
) {
    let width = p.tn * TILE;
    let row_bytes = if B4 { 8 } else { 16 };
    let mut acc = [[[_mm256_setzero_ps(); 2]; R]; H];
    // Faces h (k < 16) then 2 + h (k >= 16): each column face's k in order.
    for top in [0, 2] {
        for fr in 0..16 {
            for (dh, acc) in acc.iter_mut().enumerate() {
                let face = top + h0 + dh;
                // SAFETY: fr < 16 face rows of row_bytes each, inside the tile's codes.
                let (w0, w1) = unsafe {
                    let codes = tile.add(TILE_EXPONENTS + (face * 16 + fr) * row_bytes);
                    if B4 {
                        decode_bfp4(codes)
                    } else {
                        decode_bfp8::<HI>(codes)
                    }
                };
                for (a, cr) in acc.iter_mut().zip(c) {
                    let cv = _mm256_set1_ps(cr[face * 16 + fr]);
                    a[0] = _mm256_fmadd_ps(cv, w0, a[0]);
                    a[1] = _mm256_fmadd_ps(cv, w1, a[1]);
                }
            }
        }
    }
    for (dh, acc) in acc.iter().enumerate() {
        let h = h0 + dh;
        for (r, a) in acc.iter().enumerate() {
            for (q, &s) in a.iter().enumerate() {
                // SAFETY: row r of d has width = tn · 32 values; j < tn, h < 2, q < 2.
                let at = unsafe { d.as_mut_ptr().add(r * width + j * TILE + h * 16 + q * 8) };
                let sum = _mm256_add_ps(unsafe { _mm256_loadu_ps(at) }, s);
                let sum = if p.plan.acc_bf16 {
                    round_bf16(sum)
                } else {
                    sum
                };
                unsafe { _mm256_storeu_ps(at, sum) };
            }
        }
    }
}

/// 16 bfloat8_b codes at `codes` as f32 `±m` in two registers (values 0..8, 8..16); with `HI`,
/// the weight's `a_hi`.
///
/// # Safety
/// AVX2; 16 bytes readable at `codes`.
#[target_feature(enable = "avx2,fma")]
#[inline]
unsafe fn decode_bfp8<const HI: bool>(codes: *const u8) -> (__m256, __m256) {
    let raw = unsafe { _mm_loadu_si128(codes.cast()) };
    let half = |bytes: __m128i| {
        // As a signed byte a code is m (sign clear) or m − 128 (sign set, negative);
        // −128 − (m − 128) = −m, chosen by the sign of the f32.
        let f = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(bytes));
        let f = _mm256_blendv_ps(f, _mm256_sub_ps(_mm256_set1_ps(-128.0), f), f);
        if HI {
            _mm256_and_ps(
                f,
                _mm256_castsi256_ps(_mm256_set1_epi32(0xfff8_0000u32 as i32)),
            )
        } else {
            f
        }
    };
    (half(raw), half(_mm_unpackhi_epi64(raw, raw)))
}

/// 16 bfloat4_b codes (8 bytes, low nibble first) at `codes` as f32 `±m` in two registers.
///
/// # Safety
/// AVX2; 8 bytes readable at `codes`.
#[target_feature(enable = "avx2,fma")]
#[inline]
unsafe fn decode_bfp4(codes: *const u8) -> (__m256, __m256) {
    let raw = unsafe { _mm_loadl_epi64(codes.cast()) };
    let pairs = _mm_unpacklo_epi8(raw, raw); // [b0, b0, b1, b1, ...]
    let shifts = _mm256_setr_epi32(0, 4, 0, 4, 0, 4, 0, 4);
    let magnitudes = _mm256_setr_ps(0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0);
    let sign = _mm256_set1_epi32(0x8000_0000u32 as i32);
    let half = |bytes: __m128i| {
        let code = _mm256_srlv_epi32(_mm256_cvtepu8_epi32(bytes), shifts);
        // The permute reads the low 3 bits (the magnitude); bit 3 is the sign.
        let m = _mm256_permutevar8x32_ps(magnitudes, code);
        let s = _mm256_and_si256(_mm256_slli_epi32::<28>(code), sign);
        _mm256_xor_ps(m, _mm256_castsi256_ps(s))
    };
    (half(pairs), half(_mm_unpackhi_epi64(pairs, pairs)))
}

/// `v` rounded to bf16 (ties to even) as `tt_numerics::bf16::round_bf16` rounds.
#[target_feature(enable = "avx2,fma")]
#[inline]
fn round_bf16(v: __m256) -> __m256 {
    let bits = _mm256_castps_si256(v);
    let high = _mm256_set1_epi32(0xffff_0000u32 as i32);
    let lsb = _mm256_and_si256(_mm256_srli_epi32::<16>(bits), _mm256_set1_epi32(1));
    let bias = _mm256_add_epi32(lsb, _mm256_set1_epi32(0x7fff));
    let rounded = _mm256_and_si256(_mm256_add_epi32(bits, bias), high);
    let quiet = _mm256_or_si256(_mm256_and_si256(bits, high), _mm256_set1_epi32(0x0040_0000));
    let nan = _mm256_cmp_ps::<_CMP_UNORD_Q>(v, v);
    _mm256_blendv_ps(
        _mm256_castsi256_ps(rounded),
        _mm256_castsi256_ps(quiet),
        nan,
    )
}
