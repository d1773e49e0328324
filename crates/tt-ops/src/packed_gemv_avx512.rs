//! The AVX-512 kernel of [`crate::packed_gemv`]: `dest += x @ W` over block-float tiles, read in
//! place, with the emulation's order of operations (see that module for why the bits match).
//!
//! Per tile `(kt, tc)` and chunk of up to 4 activation rows:
//! 1. the 64 shared exponents become 64 scales `2^(E − bias)` (clamped into the matrix's range),
//!    multiplied by the 32 activation operands of the K-tile: `c[r][face row]`;
//! 2. the tile's codes become two's-complement bytes `±m` (bfloat8_b: negate where the sign bit
//!    is set; bfloat4_b: a 16-entry byte table per nibble), 64 at a time;
//! 3. for k in order, each face row's 16 bytes widen to f32 and `acc = fma(c, ±m, acc)` for every
//!    row, 32 columns in two registers;
//! 4. the K-tile's sums are added to the destination (`fp32`), or added and rounded to bf16,
//!    ties to even (`bf16`), as the emulation does.

use std::arch::x86_64::*;

use tt_numerics::tile::{TILE, TILE_EXPONENTS};

use crate::packed_gemv::{FastPlan, Params};

/// Proof that this CPU executes AVX-512 F, BW and VL (only [`Avx512::detect`] makes one).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Avx512(());

impl Avx512 {
    /// `Some` when the CPU has AVX-512 F, BW and VL (std caches the CPUID probe).
    pub(crate) fn detect() -> Option<Self> {
        (is_x86_feature_detected!("avx512f")
            && is_x86_feature_detected!("avx512bw")
            && is_x86_feature_detected!("avx512vl"))
        .then_some(Self(()))
    }
}

/// Row chunks this kernel is compiled for, largest first.
pub(crate) const CHUNKS: [usize; 4] = [8, 4, 2, 1];

/// `chunk` rows (one of [`CHUNKS`]): `x` is `[chunk, kp]`, `d` is `[chunk, tn · 32]`.
///
/// # Safety
/// As [`Params`] documents, and `x.len() >= chunk · kp`, `d.len() >= chunk · tn · 32`.
pub(crate) unsafe fn rows(isa: Avx512, chunk: usize, p: &Params<'_>, x: &[f32], d: &mut [f32]) {
    let _proof = isa;
    // SAFETY: `isa` proves AVX-512 F/BW/VL; the rest is the caller's contract.
    unsafe {
        match (chunk, p.plan.bfp4, p.plan.weight_hi) {
            (8, false, false) => rows_kernel::<8, false, false>(p, x, d),
            (4, false, false) => rows_kernel::<4, false, false>(p, x, d),
            (2, false, false) => rows_kernel::<2, false, false>(p, x, d),
            (_, false, false) => rows_kernel::<1, false, false>(p, x, d),
            (8, false, true) => rows_kernel::<8, false, true>(p, x, d),
            (4, false, true) => rows_kernel::<4, false, true>(p, x, d),
            (2, false, true) => rows_kernel::<2, false, true>(p, x, d),
            (_, false, true) => rows_kernel::<1, false, true>(p, x, d),
            (8, true, _) => rows_kernel::<8, true, false>(p, x, d),
            (4, true, _) => rows_kernel::<4, true, false>(p, x, d),
            (2, true, _) => rows_kernel::<2, true, false>(p, x, d),
            (_, true, _) => rows_kernel::<1, true, false>(p, x, d),
        }
    }
}

/// `R` rows: `x` is `[R, kp]`, `d` is `[R, tn · 32]`. `B4`: bfloat4_b codes; `HI`: weights enter
/// as `a_hi` (their low 3 mantissa bits masked off). One or two rows run [`SIDE_BY_SIDE`] tiles
/// at once: each column's sum is a chain of 32 dependent adds per tile, and a single row's two
/// chains leave the FMA units waiting on their latency.
///
/// # Safety
/// The CPU has AVX-512 F/BW/VL; `x.len() >= R · kp`, `d.len() >= R · tn · 32`, and [`Params`]'s
/// contract holds.
#[target_feature(enable = "avx512f,avx512bw,avx512vl")]
unsafe fn rows_kernel<const R: usize, const B4: bool, const HI: bool>(
    p: &Params<'_>,
    x: &[f32],
    d: &mut [f32],
) {
    let k = Consts::new(&p.plan);
    let mut m = [const { SignedCodes([0; 1024]) }; SIDE_BY_SIDE];
    for kt in 0..p.tiles_k {
        let mut j = 0;
        // SAFETY (both loops): tiles j .. j + T <= tn of tile row kt < tiles_k, the rest is
        // this function's contract.
        if R <= 2 {
            while j + SIDE_BY_SIDE <= p.tn {
                unsafe { tiles::<R, B4, HI, SIDE_BY_SIDE>(&k, p, x, d, kt, j, &mut m) };
                j += SIDE_BY_SIDE;
            }
        }
        while j < p.tn {
            unsafe { tiles::<R, B4, HI, 1>(&k, p, x, d, kt, j, &mut m) };
            j += 1;
        }
    }
}

/// Tiles a one- or two-row chunk runs at once.
const SIDE_BY_SIDE: usize = 2;

/// The constant vectors of a call's tile scales (this kernel's and the AVX-512 BF16 ones): the
/// matrix's exponent range and the exponent field offset of `2^(E − bias)`.
#[derive(Clone, Copy)]
pub(crate) struct Consts {
    lo: __m512i,
    hi: __m512i,
    offset: __m512i,
}

impl Consts {
    #[target_feature(enable = "avx512f,avx512bw,avx512vl")]
    pub(crate) fn new(plan: &FastPlan) -> Self {
        Self {
            lo: _mm512_set1_epi32(i32::from(plan.range.lo)),
            hi: _mm512_set1_epi32(i32::from(plan.range.hi)),
            // exponent field of 2^(E − bias) = E − bias + 127
            offset: _mm512_set1_epi32(plan.bias - 127),
        }
    }

    /// The scales `2^(E − bias)` of face `f`'s 16 face rows (`E` clamped into the matrix's range,
    /// so zero-code rows of any `E` get a finite scale).
    ///
    /// # Safety
    /// AVX-512 F/BW/VL; the tile's 64 exponent bytes are readable at `tile`; `f < 4`.
    #[target_feature(enable = "avx512f,avx512bw,avx512vl")]
    #[inline]
    pub(crate) unsafe fn face_scales(&self, tile: *const u8, f: usize) -> __m512 {
        // SAFETY: exponents 16f .. 16f + 16 of the tile (caller's contract).
        let e = _mm512_cvtepu8_epi32(unsafe { _mm_loadu_si128(tile.add(f * 16).cast()) });
        let e = _mm512_min_epi32(_mm512_max_epi32(e, self.lo), self.hi);
        _mm512_castsi512_ps(_mm512_slli_epi32::<23>(_mm512_sub_epi32(e, self.offset)))
    }
}

/// Adds the K-tile sums of `T` tiles (columns `(j0 + t) · 32 ..`) and `R` rows (`width` apart
/// in `d`), two halves of 16 columns each, to the destination (fp32), or adds and rounds to
/// bf16, ties to even (`acc_bf16`), as the emulation does K-tile by K-tile.
///
/// # Panics
/// If a tile column of a row lies past the end of `d`.
#[target_feature(enable = "avx512f,avx512bw,avx512vl")]
#[inline]
pub(crate) fn add_k_tile_sums<const R: usize, const T: usize>(
    acc: &[[[__m512; 2]; R]; T],
    d: &mut [f32],
    width: usize,
    j0: usize,
    acc_bf16: bool,
) {
    for (t, acc) in acc.iter().enumerate() {
        for (r, a) in acc.iter().enumerate() {
            for (h, &s) in a.iter().enumerate() {
                let at = &mut d[r * width + (j0 + t) * TILE + h * 16..][..16];
                // SAFETY: `at` holds 16 f32, read and written unaligned.
                unsafe {
                    let sum = _mm512_add_ps(_mm512_loadu_ps(at.as_ptr()), s);
                    let sum = if acc_bf16 { round_bf16(sum) } else { sum };
                    _mm512_storeu_ps(at.as_mut_ptr(), sum);
                }
            }
        }
    }
}

/// Tiles `(kt, tc0 + j0 .. tc0 + j0 + T)` against `R` rows, their K-tile sums added to `d`.
///
/// # Safety
/// As [`rows_kernel`], and `kt < tiles_k`, `j0 + T <= tn`, `T <= SIDE_BY_SIDE`.
#[target_feature(enable = "avx512f,avx512bw,avx512vl")]
#[inline]
#[allow(clippy::too_many_arguments)]
unsafe fn tiles<const R: usize, const B4: bool, const HI: bool, const T: usize>(
    k: &Consts,
    p: &Params<'_>,
    x: &[f32],
    d: &mut [f32],
    kt: usize,
    j0: usize,
    m: &mut [SignedCodes; SIDE_BY_SIDE],
) {
    let width = p.tn * TILE;
    let mut c = [[[0f32; 64]; R]; T];
    for t in 0..T {
        // SAFETY (all pointer reads below): the tile lies in p.bytes (caller's contract);
        // exponents are its first 64 bytes, codes the next 64 · row_bytes.
        let tile = unsafe {
            p.bytes
                .as_ptr()
                .add((kt * p.tiles_n + p.tc0 + j0 + t) * p.tile_bytes)
        };
        for f in 0..4 {
            let scale = unsafe { k.face_scales(tile, f) };
            for (r, cr) in c[t].iter_mut().enumerate() {
                // SAFETY: row r of x has kp = tiles_k · 32 operands.
                let xv =
                    unsafe { _mm512_loadu_ps(x.as_ptr().add(r * p.kp + kt * TILE + (f / 2) * 16)) };
                // SAFETY: cr has 64 values.
                unsafe { _mm512_storeu_ps(cr.as_mut_ptr().add(f * 16), _mm512_mul_ps(xv, scale)) };
            }
        }
        // The same tile of the next K-tile row is a tile row (tiles_n tiles) further on:
        // fetch it now, since the tiles of one task are not contiguous. Into L2, not L1: on a
        // Zen 4 EPYC that streams a one-row bfloat8_b decode 23% faster (`packed_stream`: 14.6-15.4
        // -> 11.3-11.7 ms per pass, three alternating runs; bfloat4_b unchanged).
        if kt + 1 < p.tiles_k {
            // SAFETY: the next tile row's tile lies in p.bytes (kt + 1 < tiles_k).
            let next = unsafe { tile.add(p.tiles_n * p.tile_bytes) };
            for line in (0..p.tile_bytes).step_by(64) {
                // SAFETY: inside that tile; prefetches never fault anyway.
                _mm_prefetch::<_MM_HINT_T1>(unsafe { next.add(line) }.cast());
            }
        }
        // SAFETY: the tile's codes follow its 64 exponent bytes.
        unsafe { signed_codes::<B4>(tile.add(TILE_EXPONENTS), &mut m[t]) };
    }
    let mut acc = [[[_mm512_setzero_ps(); 2]; R]; T];
    // k = 16·half + fr: face rows fr of faces 2·half (columns 0..16) and 2·half + 1 (columns
    // 16..32), in order of k; the tiles' sums interleave.
    for half in 0..2 {
        let (f0, f1) = (2 * half, 2 * half + 1);
        for fr in 0..16 {
            let (g0, g1) = (f0 * 16 + fr, f1 * 16 + fr);
            for t in 0..T {
                // SAFETY: g0, g1 < 64 face rows of 16 values in m[t].
                let (w0, w1) = unsafe { (widen::<HI>(&m[t], g0), widen::<HI>(&m[t], g1)) };
                for (a, cr) in acc[t].iter_mut().zip(&c[t]) {
                    a[0] = _mm512_fmadd_ps(_mm512_set1_ps(cr[g0]), w0, a[0]);
                    a[1] = _mm512_fmadd_ps(_mm512_set1_ps(cr[g1]), w1, a[1]);
                }
            }
        }
    }
    add_k_tile_sums(&acc, d, width, j0, p.plan.acc_bf16);
}

/// A tile's 1024 codes as two's-complement bytes `±m`, face row `g` at `16·g` (the codes' own
/// order).
#[repr(C, align(64))]
pub(crate) struct SignedCodes(pub(crate) [i8; 1024]);

/// Converts a tile's codes (after its exponents) to [`SignedCodes`], 64 bytes at a time:
/// bfloat8_b sign-magnitude bytes are negated where the sign bit is set; bfloat4_b nibbles (low
/// first) go through a 16-entry byte table, and the results of each 8-byte face row are
/// interleaved back into value order.
///
/// # Safety
/// AVX-512 F/BW/VL; 1024 (bfloat8_b) or 512 (bfloat4_b) bytes readable at `codes`.
#[target_feature(enable = "avx512f,avx512bw,avx512vl")]
#[inline]
pub(crate) unsafe fn signed_codes<const B4: bool>(codes: *const u8, out: &mut SignedCodes) {
    let dst = out.0.as_mut_ptr();
    if B4 {
        let nibble = _mm512_set1_epi8(0x0f);
        let table = _mm512_broadcast_i32x4(_mm_setr_epi8(
            0, 1, 2, 3, 4, 5, 6, 7, 0, -1, -2, -3, -4, -5, -6, -7,
        ));
        // vpermt2q picks 128-bit lanes: (low lane i, high lane i) pairs in order.
        let first = _mm512_setr_epi64(0, 1, 8, 9, 2, 3, 10, 11);
        let second = _mm512_setr_epi64(4, 5, 12, 13, 6, 7, 14, 15);
        for q in 0..8 {
            // 64 bytes = face rows 8q .. 8q + 8 (8 bytes each).
            // SAFETY: q < 8 blocks of 64 bytes inside the 512 code bytes.
            let v = unsafe { _mm512_loadu_si512(codes.add(q * 64).cast()) };
            let low = _mm512_shuffle_epi8(table, _mm512_and_si512(v, nibble));
            let high =
                _mm512_shuffle_epi8(table, _mm512_and_si512(_mm512_srli_epi16::<4>(v), nibble));
            // Per 128-bit lane i: unpacklo = face row 8q + 2i, unpackhi = 8q + 2i + 1.
            let even = _mm512_unpacklo_epi8(low, high);
            let odd = _mm512_unpackhi_epi8(low, high);
            // SAFETY: face rows 8q .. 8q + 8 are bytes 128q .. 128q + 128 of out.
            unsafe {
                _mm512_store_si512(
                    dst.add(q * 128).cast(),
                    _mm512_permutex2var_epi64(even, first, odd),
                );
                _mm512_store_si512(
                    dst.add(q * 128 + 64).cast(),
                    _mm512_permutex2var_epi64(even, second, odd),
                );
            }
        }
    } else {
        let magnitude = _mm512_set1_epi8(0x7f);
        for q in 0..16 {
            // SAFETY: q < 16 blocks of 64 bytes inside the 1024 code bytes.
            let v = unsafe { _mm512_loadu_si512(codes.add(q * 64).cast()) };
            let negative = _mm512_movepi8_mask(v);
            let m = _mm512_and_si512(v, magnitude);
            let signed = _mm512_mask_sub_epi8(m, negative, _mm512_setzero_si512(), m);
            // SAFETY: bytes 64q .. 64q + 64 of out.
            unsafe { _mm512_store_si512(dst.add(q * 64).cast(), signed) };
        }
    }
}

/// Face row `g`'s 16 values of `m` as f32; with `HI`, each `m`'s bits below its top 5
/// significant ones cleared (the weight's `a_hi`: sign, exponent and top 4 fraction bits).
///
/// # Safety
/// AVX-512 F/BW/VL; `g < 64`.
#[target_feature(enable = "avx512f,avx512bw,avx512vl")]
#[inline]
pub(crate) unsafe fn widen<const HI: bool>(m: &SignedCodes, g: usize) -> __m512 {
    // SAFETY: 16 bytes at 16·g < 1024.
    let bytes = unsafe { _mm_load_si128(m.0.as_ptr().add(16 * g).cast()) };
    let f = _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(bytes));
    if HI {
        _mm512_castsi512_ps(_mm512_and_si512(
            _mm512_castps_si512(f),
            _mm512_set1_epi32(0xfff8_0000u32 as i32),
        ))
    } else {
        f
    }
}

/// `v` rounded to bf16 (ties to even) as `tt_numerics::bf16::round_bf16` rounds: NaN stays a
/// quiet NaN with its sign and top mantissa bits.
#[target_feature(enable = "avx512f,avx512bw,avx512vl")]
#[inline]
pub(crate) fn round_bf16(v: __m512) -> __m512 {
    let bits = _mm512_castps_si512(v);
    let high = _mm512_set1_epi32(0xffff_0000u32 as i32);
    let lsb = _mm512_and_si512(_mm512_srli_epi32::<16>(bits), _mm512_set1_epi32(1));
    let bias = _mm512_add_epi32(lsb, _mm512_set1_epi32(0x7fff));
    let rounded = _mm512_and_si512(_mm512_add_epi32(bits, bias), high);
    let nan = _mm512_cmp_ps_mask::<_CMP_UNORD_Q>(v, v);
    let quiet = _mm512_or_si512(_mm512_and_si512(bits, high), _mm512_set1_epi32(0x0040_0000));
    _mm512_castsi512_ps(_mm512_mask_blend_epi32(nan, rounded, quiet))
}
