//! Block-float prefill on the AMX tile unit: [`crate::device_linear()`] of at least
//! [`MATRIX_UNIT_MIN_ROWS`] rows under [`KTileSums::MatrixUnit`] (see [`crate::k_tile_sums`] for what that
//! changes in the numbers, and why it is not the default).
//!
//! Layout. The activations are the left operand: 16 rows of 32 bf16 operands (one K-tile) per
//! tile, read straight from a bf16 copy of the operand rows. The weights are the right operand,
//! whose rows hold pairs of `k`: row `p` of a tile is `(w[2p][n], w[2p + 1][n])` for 16 columns
//! `n`. A packed 32x32 tile's face rows run along N, so two consecutive face rows, decoded to bf16
//! and interleaved, make one such row; a tile column is decoded once per task, for every K-tile,
//! and serves every row of the task. The result tiles are then `[16 rows][16 columns]` of the
//! output itself.
//!
//! Per K-tile, four result tiles (32 rows x 32 columns) start from zero, take four `tdpbf16ps`,
//! and are stored; their sums are added to the destination (fp32), or added and rounded to bf16
//! (ties to even), as the emulation does K-tile by K-tile.
//!
//! Operands: the plan of [`crate::packed_gemv`] (its checks included: every product is a normal
//! f32, so the tile unit's flushing of subnormal operands and products changes nothing), with
//! the activations as that module prepares them (`b_hi` under LoFi and HiFi2) and the weights
//! decoded exactly to bf16 (`a_hi` under LoFi on bfloat8_b).

use std::arch::x86_64::*;

use tt_numerics::PackedMatrix;
use tt_numerics::tile::{TILE, TILE_EXPONENTS};

use crate::k_tile_sums::{KTileSums, MATRIX_UNIT_MIN_ROWS};
use crate::kernels::amx_gemm::Amx;
use crate::kernels::amx_tiles::{self, Quad, TileRegisters};
use crate::packed_gemv::{FastIsa, FastPlan};
use crate::packed_gemv_avx512::{Avx512, SignedCodes, round_bf16, signed_codes};

/// Activation rows per pass: two left tiles.
const PAIR: usize = 32;

/// 1 KiB, 64-byte aligned: one tile (16 rows of 64 bytes).
#[derive(Clone, Copy)]
#[repr(C, align(64))]
struct Tile([u32; 256]);

const ZERO: Tile = Tile([0; 256]);

/// What a call on the tile unit needs: the proofs, the plan, and the activations as bf16 rows.
pub(crate) struct AmxCall {
    amx: Amx,
    isa: Avx512,
    plan: FastPlan,
    /// Operand rows as bf16 bits, `kp` apart, with [`PAIR`] zero rows past the last.
    acts: Vec<u16>,
    kp: usize,
}

/// The tile-unit call for `m` operand rows `xs` (rows `kp` apart, as [`crate::packed_gemv`]
/// prepares them) under `plan`, when `sums` asks for it and this CPU and call allow it.
pub(crate) fn prepare(
    plan: &FastPlan,
    xs: &[f32],
    m: usize,
    kp: usize,
    sums: KTileSums,
) -> Option<AmxCall> {
    if sums != KTileSums::MatrixUnit || m < MATRIX_UNIT_MIN_ROWS || xs.len() < m * kp {
        return None;
    }
    let FastIsa::Avx512(isa) = plan.isa else {
        return None;
    };
    let amx = Amx::detect()?;
    let mut acts = vec![0u16; (m + PAIR) * kp];
    // Operands are bf16 values (rounded, masked): their high halves are exact.
    for (a, &x) in acts.iter_mut().zip(&xs[..m * kp]) {
        *a = (x.to_bits() >> 16) as u16;
    }
    Some(AmxCall {
        amx,
        isa,
        plan: *plan,
        acts,
        kp,
    })
}

/// `dest [rows, cols]` (before output rounding) of rows `r0 .. r0 + rows` against output columns
/// `n0 .. n0 + cols` of `w`. `None` (nothing computed) when the arguments do not describe a task
/// inside `w` and the call.
pub(crate) fn run_task(
    call: &AmxCall,
    w: &PackedMatrix,
    r0: usize,
    rows: usize,
    n0: usize,
    cols: usize,
) -> Option<Vec<f32>> {
    let (tiles_k, tiles_n) = (w.tile_rows(), w.tile_cols());
    let tile_bytes = w.format().tile_bytes();
    let (tc0, tn) = (n0 / TILE, cols.div_ceil(TILE));
    let kp = call.kp;
    let fits = kp == tiles_k * TILE
        && tiles_k > 0
        && rows > 0
        && call.acts.len() >= (r0 + rows.next_multiple_of(PAIR)) * kp
        && n0.is_multiple_of(TILE)
        && tc0 + tn <= tiles_n
        && w.bytes().len() == tiles_k * tiles_n * tile_bytes
        && tile_bytes == if call.plan.bfp4 { 576 } else { 1088 };
    if !fits {
        return None;
    }
    let _registers = TileRegisters::configure(call.amx);
    let mut panel = vec![ZERO; 2 * tiles_k];
    let mut sums = [ZERO; 4];
    let mut out = vec![0f32; rows * cols];
    let column = Column {
        bytes: w.bytes(),
        tile_bytes,
        tiles_k,
        tiles_n,
    };
    for j in 0..tn {
        // SAFETY: `isa` proves AVX-512 F/BW/VL; tile column tc0 + j < tiles_n and every tile
        // row lie in `bytes` (checked above); `panel` holds 2 · tiles_k tiles.
        unsafe { decode_column(call.isa, &call.plan, &column, tc0 + j, &mut panel) };
        let width = TILE.min(cols - j * TILE);
        for mb in (r0..r0 + rows).step_by(PAIR) {
            let mut dest = [ZERO; 4];
            for kt in 0..tiles_k {
                // SAFETY: `_registers` configured tmm0-7 on this thread; rows mb .. mb + 32 of
                // `acts` exist (mb < r0 + rows, length checked above), each kp ≥ (kt + 1) · 32
                // operands long; panel tiles 2kt and 2kt + 1 exist.
                unsafe {
                    step(
                        call.acts.as_ptr().add(mb * kp + kt * TILE),
                        2 * kp,
                        panel.as_ptr().add(2 * kt),
                        &mut sums,
                    );
                    drain(call.isa, &sums, &mut dest, call.plan.acc_bf16);
                }
            }
            for r in 0..PAIR.min(r0 + rows - mb) {
                let row = &mut out[(mb - r0 + r) * cols + j * TILE..][..width];
                for (c, o) in row.iter_mut().enumerate() {
                    *o = f32::from_bits(dest[2 * (r / 16) + c / 16].0[(r % 16) * 16 + c % 16]);
                }
            }
        }
    }
    Some(out)
}

/// The packed matrix as [`decode_column`] reads it.
struct Column<'a> {
    bytes: &'a [u8],
    tile_bytes: usize,
    tiles_k: usize,
    tiles_n: usize,
}

/// Decodes tile column `tc` into right-operand tiles: `panel[2·kt + h]` holds columns
/// `16h .. 16h + 16` of tile `(kt, tc)`, row `p` the pairs `(w[2p][n], w[2p + 1][n])` as bf16.
///
/// # Safety
/// AVX-512 F/BW/VL; every tile `(kt, tc)`, `kt < tiles_k`, lies in `c.bytes`, and
/// `panel.len() >= 2 · tiles_k`.
#[target_feature(enable = "avx512f,avx512bw,avx512vl")]
unsafe fn decode_column(
    _isa: Avx512,
    plan: &FastPlan,
    c: &Column<'_>,
    tc: usize,
    panel: &mut [Tile],
) {
    let mut codes = SignedCodes([0; 1024]);
    let (lo, hi) = (plan.range.lo, plan.range.hi);
    let a_hi = _mm512_set1_epi32(if plan.weight_hi {
        0xfff8_0000u32 as i32
    } else {
        -1
    });
    let high = _mm512_set1_epi32(0xffff_0000u32 as i32);
    for kt in 0..c.tiles_k {
        let at = (kt * c.tiles_n + tc) * c.tile_bytes;
        let tile = &c.bytes[at..at + c.tile_bytes];
        // SAFETY: the codes follow the 64 exponent bytes: 1024 (bfloat8_b) or 512 bytes.
        unsafe {
            if plan.bfp4 {
                signed_codes::<true>(tile[TILE_EXPONENTS..].as_ptr(), &mut codes);
            } else {
                signed_codes::<false>(tile[TILE_EXPONENTS..].as_ptr(), &mut codes);
            }
        }
        // 2^(E − bias), E clamped into the matrix's range (face rows outside it hold only zero
        // codes): a normal f32, so every decoded weight is exact.
        let mut scale = [0f32; 64];
        for (s, &e) in scale.iter_mut().zip(&tile[..TILE_EXPONENTS]) {
            let field = i32::from(e.clamp(lo, hi)) - plan.bias + 127;
            *s = f32::from_bits((field as u32) << 23);
        }
        for h in 0..2 {
            let dst = &mut panel[2 * kt + h].0;
            for p in 0..16 {
                // k = 2p and 2p + 1: face 2·(p / 8) + h, face rows (2p) % 16 and the next.
                let g = (2 * (p / 8) + h) * 16 + (2 * p) % 16;
                let (even, odd) = (
                    decode_row(&codes, &scale, g, a_hi),
                    decode_row(&codes, &scale, g + 1, a_hi),
                );
                let pairs =
                    _mm512_or_si512(_mm512_srli_epi32::<16>(even), _mm512_and_si512(odd, high));
                // SAFETY: row p (16 words) of a 256-word tile.
                unsafe { _mm512_storeu_si512(dst.as_mut_ptr().add(16 * p).cast(), pairs) };
            }
        }
    }
}

/// Face row `g` (< 64) of `codes` as f32 bits of `code · scale[g]`, masked by `a_hi`.
#[target_feature(enable = "avx512f,avx512bw,avx512vl")]
#[inline]
fn decode_row(codes: &SignedCodes, scale: &[f32; 64], g: usize, a_hi: __m512i) -> __m512i {
    let row: &[i8; 16] = codes.0[16 * g..16 * g + 16].try_into().unwrap_or(&[0; 16]);
    // SAFETY: 16 readable bytes.
    let b = unsafe { _mm_loadu_si128(row.as_ptr().cast()) };
    let v = _mm512_mul_ps(
        _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(b)),
        _mm512_set1_ps(scale[g]),
    );
    _mm512_and_si512(_mm512_castps_si512(v), a_hi)
}

/// One K-tile: `sums[2a + h] = acts rows 16a .. 16a + 16 (at `a`, rows `lda` bytes apart) times
/// weight tile `b[h]`, from zero.
///
/// # Safety
/// tmm0-7 are configured as 16 rows of 64 bytes on this thread; 32 rows of 32 bf16 are readable
/// at `a`, `lda` bytes apart; `b` points at two tiles.
unsafe fn step(a: *const u16, lda: usize, b: *const Tile, sums: &mut [Tile; 4]) {
    // SAFETY: the caller's contract; the store writes the four contiguous tiles of `sums`.
    unsafe {
        amx_tiles::zero();
        let b = b.cast::<u16>();
        amx_tiles::step(a, a.byte_add(16 * lda), lda, b, b.byte_add(1024));
        amx_tiles::store(&Quad::tiles(sums.as_mut_ptr()));
    }
}

/// `dest += sums` (fp32 destination), or `dest = round_bf16(dest + sums)` (bf16), value by value.
#[target_feature(enable = "avx512f,avx512bw,avx512vl")]
fn drain(_isa: Avx512, sums: &[Tile; 4], dest: &mut [Tile; 4], acc_bf16: bool) {
    for (d, s) in dest.iter_mut().zip(sums) {
        for r in 0..16 {
            // SAFETY: row r (16 words) of a 256-word, 64-byte aligned tile.
            unsafe {
                let at = d.0.as_mut_ptr().add(16 * r).cast::<f32>();
                let sum = _mm512_add_ps(
                    _mm512_load_ps(at),
                    _mm512_load_ps(s.0.as_ptr().add(16 * r).cast()),
                );
                let sum = if acc_bf16 { round_bf16(sum) } else { sum };
                _mm512_store_ps(at, sum);
            }
        }
    }
}

#[cfg(test)]
#[path = "packed_amx_tests.rs"]
mod tests;
