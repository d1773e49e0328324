//! The AVX-512 BF16 kernel of [`crate::packed_gemv`] for many rows (a prefill): the emulation's
//! bits, with two weights per lane and instruction (`vdpbf16ps`) instead of one fused
//! multiply-add per weight.
//!
//! Why the bits are the emulation's. `vdpbf16ps` adds to each f32 lane the products of one pair
//! of bf16 values, the pair's high half first: `acc = round(round(acc + a_hi·b_hi) + a_lo·b_lo)`,
//! each product exact (two 8-bit significands), each sum rounded to nearest even, inputs and
//! results that are subnormal read and written as zero (Intel's definition; the test
//! `dpbf16_adds_the_high_product_first_rounding_each_sum` checks order and rounding on the CPU at
//! hand). So a pair holding `k` in its high half and `k + 1` in its low half adds them in order
//! of k, as the emulation does. Both factors are exact bf16 values: a weight `±m·2^(E − bias)` has at most 7
//! significant bits, an activation operand is bf16 already (`b_hi` or `b`). What is left is the
//! flushing of subnormal sums, which cannot happen when every product is a multiple of some
//! `q >= 2^-126`: every sum of such multiples, rounded, is again a multiple of `q`, hence zero or
//! normal. [`crate::packed_gemv::FastPlan::for_call`] checks that per call (the activations'
//! smallest exponent against the matrix's smallest scale); calls outside it run the f32 kernels.
//!
//! Layout. A tile is decoded once per task into bf16 pairs: for `q` in 0..16, the 32 columns of
//! `k = 2q` (high halves) and `k = 2q + 1` (low halves) as two vectors of 16 lanes; the rows'
//! operands become the same pairs, one 32-bit word per row and `q`, broadcast to every lane.
//!
//! The loops, outermost first: blocks of [`K_TILES`] K-tiles; pairs of tile columns (the block's
//! tiles decoded, [`K_TILES`] x 4 KiB); row groups of [`ROWS`]; the block's K-tiles in order,
//! each K-tile's sums starting from zero and then added to the destination (fp32), or added and
//! rounded to bf16, ties to even, as the emulation does.

use std::arch::x86_64::*;

use tt_numerics::tile::{TILE, TILE_EXPONENTS};

use crate::packed_gemv::Params;
use crate::packed_gemv_avx512::{Avx512, Consts, SignedCodes, signed_codes, widen};

/// Proof that this CPU executes AVX-512 F, BW, VL, BF16 and VBMI (only [`Avx512Bf16::detect`]
/// makes one; VBMI's byte permute serves the bfloat4_b decode kernel,
/// [`crate::packed_gemv_avx512bf16`]).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Avx512Bf16(());

impl Avx512Bf16 {
    /// `Some` when the CPU has AVX-512 F, BW, VL, BF16 and VBMI (std caches the CPUID probe).
    pub(crate) fn detect() -> Option<Self> {
        (Avx512::detect().is_some()
            && is_x86_feature_detected!("avx512bf16")
            && is_x86_feature_detected!("avx512vbmi"))
        .then_some(Self(()))
    }

    /// `Some` where the CPU has AVX-512 BF16 and its `vdpbf16ps` is as fast as a fused
    /// multiply-add: AMD's (Zen 4: 0.278 against 0.277 ns per instruction on eight chains,
    /// `cargo run --release -p tt-ops --example dpbf16_order`). On the Intel Xeon of
    /// docs/PERFORMANCE.md one cost 1.44 ns against 0.27, and a kernel on it was no faster
    /// there, so Intel CPUs keep the f32 kernel (both give the same bits).
    pub(crate) fn where_it_pays() -> Option<Self> {
        // Asked once: every decode step plans hundreds of calls, and CPUID traps to the
        // hypervisor in a virtual machine (microseconds each).
        static PAYS: std::sync::OnceLock<Option<Avx512Bf16>> = std::sync::OnceLock::new();
        *PAYS.get_or_init(|| {
            // SAFETY: CPUID leaf 0 exists on every x86_64 CPU and only reads identification.
            #[allow(unused_unsafe)]
            let id = unsafe { __cpuid(0) };
            let amd = [id.ebx, id.edx, id.ecx] == [0x6874_7541, 0x6974_6e65, 0x444d_4163];
            if amd { Self::detect() } else { None }
        })
    }
}

/// Fewest rows for which this kernel runs (fewer decode too few rows per tile to pay).
pub(crate) const MIN_ROWS: usize = 8;

/// Rows per pass over the decoded tiles: 6 rows x 64 columns are 24 accumulators, with four
/// weight registers and a broadcast, 29 of the 32 registers.
const ROWS: usize = 6;

/// K-tiles decoded together: two tile columns of them are `K_TILES` x 4 KiB, in L1 beside a row
/// group's destination and operands.
const K_TILES: usize = 8;

/// Lines (16 lanes of bf16 pairs) of one `q` across the two tile columns decoded together.
const LINES: usize = 4;

/// 16 lanes of bf16 pairs, 64-byte aligned.
#[derive(Clone, Copy)]
#[repr(C, align(64))]
struct Line([u32; 16]);

/// `rows` rows: `x` is `[rows, kp]`, `d` is `[rows, tn · 32]`.
///
/// # Safety
/// As [`Params`] documents, and `x.len() >= rows · kp`, `d.len() >= rows · tn · 32`; every
/// operand of `x` is a bf16 value (an f32 whose low 16 bits are zero), and the call passed
/// [`crate::packed_gemv::FastPlan::for_call`].
pub(crate) unsafe fn rows(isa: Avx512Bf16, p: &Params<'_>, x: &[f32], d: &mut [f32], rows: usize) {
    let _proof = isa;
    // SAFETY: `isa` proves AVX-512 F/BW/VL/BF16; the rest is the caller's contract.
    unsafe {
        match (p.plan.bfp4, p.plan.weight_hi) {
            (false, false) => kernel::<false, false>(p, x, d, rows),
            (false, true) => kernel::<false, true>(p, x, d, rows),
            (true, _) => kernel::<true, false>(p, x, d, rows),
        }
    }
}

/// # Safety
/// As [`rows`], with AVX-512 F/BW/VL/BF16.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512bf16")]
unsafe fn kernel<const B4: bool, const HI: bool>(
    p: &Params<'_>,
    x: &[f32],
    d: &mut [f32],
    rows: usize,
) {
    let consts = Consts::new(&p.plan);
    let pairs = p.kp / 2;
    let acts = operand_pairs(x, p.kp, rows);
    let mut panel = vec![Line([0; 16]); K_TILES * 16 * LINES];
    let width = p.tn * TILE;
    for kt0 in (0..p.tiles_k).step_by(K_TILES) {
        let kts = K_TILES.min(p.tiles_k - kt0);
        let mut j = 0;
        while j < p.tn {
            let two = j + 1 < p.tn;
            for tk in 0..kts {
                for t in 0..if two { 2 } else { 1 } {
                    // SAFETY: tile (kt0 + tk, tc0 + j + t) lies in p.bytes (Params' contract:
                    // kt0 + tk < tiles_k, j + t < tn).
                    let tile = unsafe {
                        p.bytes
                            .as_ptr()
                            .add(((kt0 + tk) * p.tiles_n + p.tc0 + j + t) * p.tile_bytes)
                    };
                    let lines = &mut panel[tk * 16 * LINES..(tk + 1) * 16 * LINES];
                    // SAFETY: the tile's exponents and codes are readable (above).
                    unsafe { decode::<B4, HI>(&consts, tile, lines, 2 * t) };
                }
            }
            for r in (0..rows).step_by(ROWS) {
                let left = rows - r;
                for tk in 0..kts {
                    let w = panel[tk * 16 * LINES..].as_ptr();
                    let a = acts[r * pairs + (kt0 + tk) * 16..].as_ptr();
                    // SAFETY: d's rows r .. r + R (R <= left) hold `width` values from column
                    // j · 32, plus 32 or 64 inside the row (j < tn, and j + 1 < tn when two).
                    let o = unsafe { d.as_mut_ptr().add(r * width + j * TILE) };
                    // SAFETY (every arm): `w` holds 16 · LINES lines of this K-tile; `a` holds
                    // 16 pairs of each of R rows, `pairs` apart; `o` as above.
                    unsafe {
                        match (two, left) {
                            (true, 1) => block::<1, 4>(p, w, a, pairs, o, width),
                            (true, 2) => block::<2, 4>(p, w, a, pairs, o, width),
                            (true, 3) => block::<3, 4>(p, w, a, pairs, o, width),
                            (true, 4) => block::<4, 4>(p, w, a, pairs, o, width),
                            (true, 5) => block::<5, 4>(p, w, a, pairs, o, width),
                            (true, _) => block::<ROWS, 4>(p, w, a, pairs, o, width),
                            (false, 1) => block::<1, 2>(p, w, a, pairs, o, width),
                            (false, 2) => block::<2, 2>(p, w, a, pairs, o, width),
                            (false, 3) => block::<3, 2>(p, w, a, pairs, o, width),
                            (false, 4) => block::<4, 2>(p, w, a, pairs, o, width),
                            (false, 5) => block::<5, 2>(p, w, a, pairs, o, width),
                            (false, _) => block::<ROWS, 2>(p, w, a, pairs, o, width),
                        }
                    }
                }
            }
            j += if two { 2 } else { 1 };
        }
    }
}

/// The operands of `rows` rows of `x` (`kp` apart) as bf16 pairs, `kp / 2` per row: pair `q`
/// holds `k = 2q` in its high half (added first) and `k = 2q + 1` in its low half. The operands
/// are bf16 values, so their high halves are exact.
fn operand_pairs(x: &[f32], kp: usize, rows: usize) -> Vec<u32> {
    let pairs = kp / 2;
    let mut acts = vec![0u32; rows * pairs];
    for (dst, src) in acts.chunks_exact_mut(pairs).zip(x.chunks_exact(kp)) {
        for (a, two) in dst.iter_mut().zip(src.chunks_exact(2)) {
            debug_assert!(two[0].to_bits() & 0xffff == 0 && two[1].to_bits() & 0xffff == 0);
            *a = (two[0].to_bits() & 0xffff_0000) | (two[1].to_bits() >> 16);
        }
    }
    acts
}

/// One tile's weights as bf16 pairs into `lines` (16 `q` of [`LINES`] lines each), at lines
/// `first` (columns 0..16) and `first + 1` (columns 16..32) of each `q`. A weight is its code
/// `±m` (masked to `a_hi` with `HI`) times its face row's `2^(E − bias)`, E clamped into the
/// matrix's range: exact and normal, so its f32 bits' high half is its bf16 value.
///
/// # Safety
/// AVX-512 F/BW/VL; the tile's 64 exponent bytes and its codes are readable at `tile`;
/// `lines.len() >= 16 · LINES`, `first + 1 < LINES`.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512bf16")]
#[inline]
unsafe fn decode<const B4: bool, const HI: bool>(
    k: &Consts,
    tile: *const u8,
    lines: &mut [Line],
    first: usize,
) {
    let mut scales = [0f32; 64];
    for f in 0..4 {
        // SAFETY: the tile's exponents are readable; 16 writable f32 at 16f < 64.
        unsafe { _mm512_storeu_ps(scales.as_mut_ptr().add(f * 16), k.face_scales(tile, f)) };
    }
    let mut codes = SignedCodes([0; 1024]);
    // SAFETY: the codes follow the exponents.
    unsafe { signed_codes::<B4>(tile.add(TILE_EXPONENTS), &mut codes) };
    let high = _mm512_set1_epi32(0xffff_0000u32 as i32);
    for face in 0..4 {
        for fr in (0..16).step_by(2) {
            // Face rows g (k = 2q) and g + 1 (k = 2q + 1) of one face: 16 columns.
            let g = face * 16 + fr;
            // SAFETY: g + 1 < 64.
            let (m0, m1) = unsafe { (widen::<HI>(&codes, g), widen::<HI>(&codes, g + 1)) };
            let v0 = _mm512_castps_si512(_mm512_mul_ps(m0, _mm512_set1_ps(scales[g])));
            let v1 = _mm512_castps_si512(_mm512_mul_ps(m1, _mm512_set1_ps(scales[g + 1])));
            let pair = _mm512_or_si512(_mm512_and_si512(v0, high), _mm512_srli_epi32::<16>(v1));
            let q = (face / 2) * 8 + fr / 2;
            // SAFETY: q · LINES + first + face % 2 < 16 · LINES <= lines.len(); lines are
            // 64-byte aligned.
            unsafe {
                _mm512_store_si512(
                    lines.as_mut_ptr().add(q * LINES + first + face % 2).cast(),
                    pair,
                )
            };
        }
    }
}

/// A bf16-pair vector from 16 lanes of bits.
#[target_feature(enable = "avx512f,avx512bf16")]
#[inline]
pub(crate) fn pairs(v: __m512i) -> __m512bh {
    // SAFETY: both are 64-byte plain vectors; every bit pattern is a valid value of either.
    unsafe { std::mem::transmute::<__m512i, __m512bh>(v) }
}

/// The bits of a bf16 vector, as 16 lanes.
#[target_feature(enable = "avx512f,avx512bf16")]
#[inline]
pub(crate) fn bits(v: __m512bh) -> __m512i {
    // SAFETY: both are 64-byte plain vectors; every bit pattern is a valid value of either.
    unsafe { std::mem::transmute::<__m512bh, __m512i>(v) }
}

/// Rows `0 .. R` (operand pairs at `a`, `stride` apart) against `C` lines (16 columns each) of
/// one decoded K-tile at `w`: each K-tile sum starts from zero, takes its 16 pairs in order of
/// k, and is added to `o` (rows `width` apart), rounded to bf16 when the plan says.
///
/// # Safety
/// AVX-512 F/BW/VL/BF16; `w` holds `16 · LINES` lines; `a` holds 16 pairs of each of `R` rows,
/// `stride` apart; `o` holds `C · 16` writable values in each of `R` rows, `width` apart.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512bf16")]
#[inline]
unsafe fn block<const R: usize, const C: usize>(
    p: &Params<'_>,
    w: *const Line,
    a: *const u32,
    stride: usize,
    o: *mut f32,
    width: usize,
) {
    let mut acc = [[_mm512_setzero_ps(); C]; R];
    for q in 0..16 {
        let mut wv = [pairs(_mm512_setzero_si512()); C];
        for (c, v) in wv.iter_mut().enumerate() {
            // SAFETY: line q · LINES + c < 16 · LINES, 64-byte aligned.
            *v = pairs(unsafe { _mm512_load_si512(w.add(q * LINES + c).cast()) });
        }
        for (r, acc_r) in acc.iter_mut().enumerate() {
            // SAFETY: pair q < 16 of row r < R.
            let b = pairs(_mm512_set1_epi32(unsafe { *a.add(r * stride + q) } as i32));
            for (s, &v) in acc_r.iter_mut().zip(&wv) {
                *s = _mm512_dpbf16_ps(*s, v, b);
            }
        }
    }
    for (r, acc_r) in acc.iter().enumerate() {
        for (c, &s) in acc_r.iter().enumerate() {
            // SAFETY: value c · 16 .. c · 16 + 16 of row r (caller's contract).
            unsafe {
                let at = o.add(r * width + c * 16);
                let sum = _mm512_add_ps(_mm512_loadu_ps(at), s);
                let sum = if p.plan.acc_bf16 {
                    // Round to nearest even (NaN: quiet, sign and top bits kept), as
                    // `round_bf16` does; its flushing of subnormal inputs never acts, as the
                    // destination is zero or normal (module doc).
                    _mm512_cvtpbh_ps(_mm512_cvtneps_pbh(sum))
                } else {
                    sum
                };
                _mm512_storeu_ps(at, sum);
            }
        }
    }
}

#[cfg(test)]
#[path = "packed_prefill_avx512bf16_tests.rs"]
mod tests;
