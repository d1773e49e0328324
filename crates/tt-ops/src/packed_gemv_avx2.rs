//! The AVX2 + FMA kernel of [`crate::packed_gemv`], for CPUs without AVX-512: the same
//! operations as [`crate::packed_gemv_avx512`] (same order per output, so the same bits), on 8
//! lanes. With 16 registers it runs one 16-column face of a tile at a time: for each of the two
//! column faces, k runs over the top face (k < 16) then the bottom one (k >= 16), which keeps
//! every column's sum in order of k. As there, each tile's codes first become two's-complement
//! bytes `±m` in a 1 KiB buffer (32 codes per few instructions), so the inner loop per 8 weights
//! is a sign-extending load, a conversion to f32 and a fused multiply-add.

use std::arch::x86_64::*;

use tt_numerics::tile::{TILE, TILE_EXPONENTS};

use crate::packed_gemv::Params;
use crate::packed_gemv_avx512::SignedCodes;

/// Proof that this CPU executes AVX2 and FMA (only [`Avx2::detect`] makes one).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Avx2(());

impl Avx2 {
    /// `Some` when the CPU has AVX2 and FMA (std caches the CPUID probe).
    pub(crate) fn detect() -> Option<Self> {
        (is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma")).then_some(Self(()))
    }
}

/// Tiles between the one being computed and the one being prefetched, in the loop's order.
const PREFETCH_AHEAD: usize = 4;

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
    let mut m = SignedCodes([0; 1024]);
    let (mut ahead_kt, mut ahead_j) = (PREFETCH_AHEAD / p.tn.max(1), PREFETCH_AHEAD % p.tn.max(1));
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
            // The tile PREFETCH_AHEAD places later in this loop's order, (ahead_kt, ahead_j):
            // across a K-tile row's end too, the jump the hardware prefetcher cannot foresee.
            if ahead_kt < p.tiles_k {
                // SAFETY: tile (ahead_kt, tc0 + ahead_j) lies in p.bytes (ahead_kt < tiles_k,
                // ahead_j < tn).
                let next = unsafe {
                    p.bytes
                        .as_ptr()
                        .add((ahead_kt * p.tiles_n + p.tc0 + ahead_j) * p.tile_bytes)
                };
                for line in (0..p.tile_bytes).step_by(64) {
                    // SAFETY: inside that tile; prefetches never fault anyway.
                    _mm_prefetch::<_MM_HINT_T0>(unsafe { next.add(line) }.cast());
                }
            }
            ahead_j += 1;
            if ahead_j == p.tn {
                (ahead_kt, ahead_j) = (ahead_kt + 1, 0);
            }
            // SAFETY: the tile's codes follow its 64 exponent bytes.
            unsafe { signed_codes::<B4>(tile.add(TILE_EXPONENTS), &mut m) };
            // SAFETY (both arms): row r of d has width values.
            if R <= 2 {
                unsafe { column_faces::<R, HI, 2>(p, &m, &c, d, j, 0) };
            } else {
                for h in 0..2 {
                    unsafe { column_faces::<R, HI, 1>(p, &m, &c, d, j, h) };
                }
            }
        }
    }
}

/// Column faces `h0 .. h0 + H` (16 columns each) of a tile (tile column `j` of the task), its
/// codes as `m`, against `R` rows of scaled operands `c`, their K-tile sums added to `d`. With
/// `H = 2` (one or two rows) both faces' sums interleave: four or eight chains of dependent adds
/// instead of two or four keep the FMA units busy.
///
/// # Safety
/// AVX2 and FMA; `d` holds `R` rows of `width = tn · 32` values with `j < tn`; `h0 + H <= 2`.
#[target_feature(enable = "avx2,fma")]
#[inline]
unsafe fn column_faces<const R: usize, const HI: bool, const H: usize>(
    p: &Params<'_>,
    m: &SignedCodes,
    c: &[[f32; 64]; R],
    d: &mut [f32],
    j: usize,
    h0: usize,
) {
    let width = p.tn * TILE;
    let mut acc = [[[_mm256_setzero_ps(); 2]; R]; H];
    // Faces h (k < 16) then 2 + h (k >= 16): each column face's k in order.
    for top in [0, 2] {
        for fr in 0..16 {
            for (dh, acc) in acc.iter_mut().enumerate() {
                let face = top + h0 + dh;
                let (w0, w1) = widen::<HI>(m, face * 16 + fr);
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
                    round_bf16_default_nan(sum)
                } else {
                    sum
                };
                unsafe { _mm256_storeu_ps(at, sum) };
            }
        }
    }
}

/// Converts a tile's codes (after its exponents) to [`SignedCodes`], 32 bytes at a time:
/// bfloat8_b sign-magnitude bytes are negated where the sign bit is set; bfloat4_b nibbles (low
/// first) go through a 16-entry byte table and are interleaved back into value order.
///
/// # Safety
/// AVX2; 1024 (bfloat8_b) or 512 (bfloat4_b) bytes readable at `codes`.
#[target_feature(enable = "avx2,fma")]
#[inline]
pub(crate) unsafe fn signed_codes<const B4: bool>(codes: *const u8, out: &mut SignedCodes) {
    let dst = out.0.as_mut_ptr();
    if B4 {
        let nibble = _mm256_set1_epi8(0x0f);
        let table = _mm256_setr_epi8(
            0, 1, 2, 3, 4, 5, 6, 7, 0, -1, -2, -3, -4, -5, -6, -7, 0, 1, 2, 3, 4, 5, 6, 7, 0, -1,
            -2, -3, -4, -5, -6, -7,
        );
        for q in 0..16 {
            // 32 bytes = face rows 4q .. 4q + 4 (8 bytes each); a 128-bit lane holds two.
            // SAFETY: q < 16 blocks of 32 bytes inside the 512 code bytes.
            let v = unsafe { _mm256_loadu_si256(codes.add(q * 32).cast()) };
            let low = _mm256_shuffle_epi8(table, _mm256_and_si256(v, nibble));
            let high =
                _mm256_shuffle_epi8(table, _mm256_and_si256(_mm256_srli_epi16::<4>(v), nibble));
            // Per lane i: unpacklo = face row 4q + 2i, unpackhi = 4q + 2i + 1.
            let even = _mm256_unpacklo_epi8(low, high);
            let odd = _mm256_unpackhi_epi8(low, high);
            // SAFETY: face rows 4q .. 4q + 4 are bytes 64q .. 64q + 64 of out.
            unsafe {
                _mm256_store_si256(
                    dst.add(q * 64).cast(),
                    _mm256_permute2x128_si256::<0x20>(even, odd),
                );
                _mm256_store_si256(
                    dst.add(q * 64 + 32).cast(),
                    _mm256_permute2x128_si256::<0x31>(even, odd),
                );
            }
        }
    } else {
        let magnitude = _mm256_set1_epi8(0x7f);
        for q in 0..32 {
            // SAFETY: q < 32 blocks of 32 bytes inside the 1024 code bytes.
            let v = unsafe { _mm256_loadu_si256(codes.add(q * 32).cast()) };
            // All ones where the sign bit is set: (m ^ -1) - (-1) = -m.
            let negative = _mm256_cmpgt_epi8(_mm256_setzero_si256(), v);
            let m = _mm256_and_si256(v, magnitude);
            let signed = _mm256_sub_epi8(_mm256_xor_si256(m, negative), negative);
            // SAFETY: bytes 32q .. 32q + 32 of out.
            unsafe { _mm256_store_si256(dst.add(q * 32).cast(), signed) };
        }
    }
}

/// Face row `g`'s 16 values of `m` as f32 in two registers (values 0..8, 8..16); with `HI`,
/// each value's bits below its top 5 significant ones cleared (the weight's `a_hi`).
#[target_feature(enable = "avx2,fma")]
#[inline]
fn widen<const HI: bool>(m: &SignedCodes, g: usize) -> (__m256, __m256) {
    let row: &[i8; 16] = m.0[16 * g..16 * g + 16].try_into().unwrap_or(&[0; 16]);
    let half = |at: usize| {
        // SAFETY: 8 readable bytes at `at` < 16 of the row.
        let bytes = unsafe { _mm_loadl_epi64(row.as_ptr().add(at).cast()) };
        let f = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(bytes));
        if HI {
            _mm256_and_ps(
                f,
                _mm256_castsi256_ps(_mm256_set1_epi32(0xfff8_0000u32 as i32)),
            )
        } else {
            f
        }
    };
    (half(0), half(8))
}

/// `v` rounded to bf16 (ties to even) as `tt_numerics::bf16::round_bf16` rounds, for every
/// finite and infinite value and for x86's default NaN (`0xffc0_0000`, what `inf − inf` gives),
/// but not for other NaN payloads (a carry out of the mantissa). The packed kernels see no other:
/// their weights and operands are finite (`rows_fit`), so a NaN in a sum comes from `inf − inf`
/// and adds propagate its payload. Five integer operations, where a NaN test and blend would add
/// four.
#[target_feature(enable = "avx2,fma")]
#[inline]
pub(crate) fn round_bf16_default_nan(v: __m256) -> __m256 {
    let bits = _mm256_castps_si256(v);
    let lsb = _mm256_and_si256(_mm256_srli_epi32::<16>(bits), _mm256_set1_epi32(1));
    let bias = _mm256_add_epi32(lsb, _mm256_set1_epi32(0x7fff));
    let high = _mm256_set1_epi32(0xffff_0000u32 as i32);
    _mm256_castsi256_ps(_mm256_and_si256(_mm256_add_epi32(bits, bias), high))
}
