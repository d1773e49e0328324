//! The fast path of [`crate::device_linear()`] on block-float weights (bfloat8_b, bfloat4_b): it
//! reads the packed tiles directly (no f32 or bf16 copy of the weights) and gives the same bits
//! as the reference emulation of the module doc of [`crate::device_linear`].
//!
//! Why the numbers are the same. A block-float weight is `a = ±m·2^(E−bias)` (m ≤ 127 for
//! bfloat8_b with bias 133, m ≤ 7 for bfloat4_b with bias 129; E is the face row's shared
//! exponent). The emulation adds, in order of k, the products `a·b` (b the activation operand of
//! the fidelity: `b_hi` under LoFi and HiFi2, `b` under HiFi4; under LoFi `a` is `a_hi`), each
//! exact in f32. The fast path computes the same product as `c·(±m)` with `c = b·2^(E−bias)`
//! and adds it with one fused multiply-add. When `c` is a normal f32 and `c·m` neither
//! overflows nor underflows, `c` and `c·m` are exact, so `fma(c, ±m, acc) = acc + a·b` rounded
//! once, as the emulation rounds it. [`ExponentRange`] (per matrix) and [`rows_fit`] (per call)
//! check exactly these conditions; when they fail the call runs the reference emulation.
//!
//! - Per matrix: every face row holding a non-zero code has `E` in the range where all its
//!   values decode to normal f32s (bfloat8_b `7..=254`, bfloat4_b `3..=254`). Face rows of zero
//!   codes may have any `E`; the kernel clamps their scale into the matrix's range, so their
//!   `c` is finite and `c·0` adds nothing.
//! - Per call: every non-zero activation operand is finite, and with the matrix's range every
//!   `c` is normal and `|c|·128 < 2^128`.
//!
//! HiFi3 (two partial products per term) always runs the reference emulation. The kernels are
//! AVX-512 (F, BW, VL; [`crate::packed_gemv_avx512`]) and AVX2 + FMA (`packed_gemv_avx2`); on
//! AMD CPUs with AVX-512 BF16, prefills and decode rows run on bf16 pairs
//! ([`crate::packed_prefill_avx512bf16`], [`crate::packed_gemv_avx512bf16`]), same bits,
//! chosen at run time (`TT_OPS_DEVICE_KERNEL=avx2` or `=reference` caps the choice, for tests
//! and benchmarks); other CPUs run the reference emulation.

use rayon::prelude::*;

use crate::device_linear::DeviceKernel;
use tt_numerics::tile::{TILE, TILE_EXPONENTS};
use tt_numerics::{Accumulation, MathFidelity, OpSettings, PackedMatrix, StorageFormat};

/// The shared exponents of a block-float matrix's face rows, when the fast path may read it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ExponentRange {
    /// Smallest shared exponent of a face row in the decodable range.
    pub lo: u8,
    /// Largest shared exponent of a face row in the decodable range.
    pub hi: u8,
}

/// The block-float layout of a storage format: (bias of `2^(E − bias)`, smallest `E` whose
/// every code decodes to a normal f32, bytes of codes per face row, magnitude mask).
fn layout(format: StorageFormat) -> Option<(i32, u8, usize, u8)> {
    match format {
        StorageFormat::Bfp8B => Some((133, 7, 16, 0x7f)),
        StorageFormat::Bfp4B => Some((129, 3, 8, 0x77)),
        StorageFormat::F32 | StorageFormat::Bf16 => None,
    }
}

/// Scans the shared exponents of `w`'s tiles (and the codes of face rows outside the decodable
/// range): `None` unless `w` is block-float and every face row holding a non-zero code decodes
/// to normal f32 values. Runs at every load of a packed matrix, so it reads only the exponents
/// (a tile's 64 at once: their minimum and maximum) unless some fall outside the range, and
/// bands of tiles in parallel.
pub(crate) fn exponent_range(w: &PackedMatrix) -> Option<ExponentRange> {
    /// Tiles per parallel band.
    const BAND: usize = 1024;
    let (_, min_e, row_bytes, magnitude) = layout(w.format())?;
    let tile_bytes = w.format().tile_bytes();
    let scan = |band: &[u8]| -> Option<(u8, u8)> {
        let (mut lo, mut hi) = (u8::MAX, 0u8);
        for tile in band.chunks_exact(tile_bytes) {
            let exponents = &tile[..TILE_EXPONENTS];
            let least = exponents.iter().fold(u8::MAX, |a, &e| a.min(e));
            let most = exponents.iter().fold(0u8, |a, &e| a.max(e));
            if least >= min_e && most <= 254 {
                (lo, hi) = (lo.min(least), hi.max(most));
                continue;
            }
            for (g, &e) in exponents.iter().enumerate() {
                if (min_e..=254).contains(&e) {
                    (lo, hi) = (lo.min(e), hi.max(e));
                } else {
                    let codes = &tile[TILE_EXPONENTS + g * row_bytes..][..row_bytes];
                    if codes.iter().any(|&c| c & magnitude != 0) {
                        return None;
                    }
                }
            }
        }
        Some((lo, hi))
    };
    let (mut lo, mut hi) = w
        .bytes()
        .par_chunks(BAND * tile_bytes)
        .map(scan)
        .try_reduce(|| (u8::MAX, 0), |a, b| Some((a.0.min(b.0), a.1.max(b.1))))?;
    if lo > hi {
        // Only zero codes: any in-range scale serves.
        (lo, hi) = (127, 127);
    }
    Some(ExponentRange { lo, hi })
}

/// The instruction set of the fast kernel, holding the proof that this CPU has it.
#[derive(Debug, Clone, Copy)]
pub(crate) enum FastIsa {
    /// AVX-512 F, BW and VL (16 lanes).
    #[cfg(target_arch = "x86_64")]
    Avx512(crate::packed_gemv_avx512::Avx512),
    /// AVX2 and FMA (8 lanes).
    #[cfg(target_arch = "x86_64")]
    Avx2(crate::packed_gemv_avx2::Avx2),
}

/// Which kernels a call may use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Choice {
    /// The best this CPU has, unless `TT_OPS_DEVICE_KERNEL` (`avx512`, `avx2`, `reference`)
    /// caps it.
    Best,
    /// At most AVX-512 F/BW/VL: not the AVX-512 BF16 prefill kernel (tests and benchmarks of the
    /// f32 kernels on machines that have it).
    Avx512,
    /// At most AVX2 (tests of the AVX2 kernel on AVX-512 machines).
    Avx2,
    /// The reference emulation only.
    Reference,
}

impl Choice {
    /// `self`, capped by `TT_OPS_DEVICE_KERNEL` when it is [`Choice::Best`].
    fn capped(self) -> Self {
        // Read once per process: this runs on every call of a decode step.
        static CAP: std::sync::OnceLock<Option<Choice>> = std::sync::OnceLock::new();
        let cap = CAP.get_or_init(|| match std::env::var("TT_OPS_DEVICE_KERNEL").as_deref() {
            Ok("reference") => Some(Choice::Reference),
            Ok("avx2") => Some(Choice::Avx2),
            Ok("avx512") => Some(Choice::Avx512),
            _ => None,
        });
        match (self, cap) {
            (Choice::Best, Some(cap)) => *cap,
            (choice, _) => choice,
        }
    }
}

impl FastIsa {
    /// The best this CPU has under `choice` (already capped).
    #[cfg(target_arch = "x86_64")]
    fn detect(choice: Choice) -> Option<Self> {
        if choice == Choice::Reference {
            return None;
        }
        if matches!(choice, Choice::Best | Choice::Avx512)
            && let Some(isa) = crate::packed_gemv_avx512::Avx512::detect()
        {
            return Some(Self::Avx512(isa));
        }
        crate::packed_gemv_avx2::Avx2::detect().map(Self::Avx2)
    }

    /// The [`DeviceKernel`] this instruction set runs.
    pub(crate) fn kernel(self) -> DeviceKernel {
        match self {
            #[cfg(target_arch = "x86_64")]
            Self::Avx512(_) => DeviceKernel::PackedAvx512,
            #[cfg(target_arch = "x86_64")]
            Self::Avx2(_) => DeviceKernel::PackedAvx2,
        }
    }
}

/// How the fast kernel runs one call.
#[derive(Debug, Clone, Copy)]
pub(crate) struct FastPlan {
    /// The instruction set, with its proof.
    pub isa: FastIsa,
    /// bfloat4_b codes (else bfloat8_b).
    pub bfp4: bool,
    /// The activation operand is `b_hi` (LoFi, HiFi2), else `b` (HiFi4).
    pub act_hi: bool,
    /// Weights enter as `a_hi` (LoFi on bfloat8_b; bfloat4_b's 3 bits already fit).
    pub weight_hi: bool,
    /// bf16 destination (else fp32).
    pub acc_bf16: bool,
    /// The matrix's exponent range.
    pub range: ExponentRange,
    /// `bias` of the format.
    pub bias: i32,
    /// The AVX-512 BF16 kernels (prefill and decode), where this CPU and the choice allow them;
    /// a call keeps them only when its products fit them ([`FastPlan::for_call`]).
    #[cfg(target_arch = "x86_64")]
    pub pairs: Option<crate::packed_prefill_avx512bf16::Avx512Bf16>,
}

impl FastPlan {
    /// The plan for one call of operand rows `xs`, from one scan of their exponents: `None`
    /// unless they fit the fast kernels ([`rows_fit`]'s rule); without the AVX-512 BF16 kernels
    /// unless every product is also a multiple of a power of two `q >= 2^-126`.
    pub(crate) fn for_call(mut self, xs: &[f32]) -> Option<Self> {
        let fields = exponent_fields(xs);
        if !rows_fit(&fields, &self) {
            return None;
        }
        #[cfg(target_arch = "x86_64")]
        if self.pairs.is_some() && !pairs_fit(&fields, &self) {
            self.pairs = None;
        }
        Some(self)
    }

    /// The [`DeviceKernel`] a call with this plan runs.
    pub(crate) fn kernel(&self) -> DeviceKernel {
        #[cfg(target_arch = "x86_64")]
        if self.pairs.is_some() {
            return DeviceKernel::PackedAvx512Bf16;
        }
        self.isa.kernel()
    }
}

/// The fast plan for `w` (with its exponent range) under `settings`, if this CPU and these
/// numerics have one.
pub(crate) fn plan(
    format: StorageFormat,
    range: Option<ExponentRange>,
    settings: &OpSettings,
    choice: Choice,
) -> Option<FastPlan> {
    let range = range?;
    let (bias, ..) = layout(format)?;
    let (act_hi, weight_hi) = match settings.fidelity {
        MathFidelity::LoFi => (true, format == StorageFormat::Bfp8B),
        MathFidelity::HiFi2 => (true, false),
        MathFidelity::HiFi4 => (false, false),
        MathFidelity::HiFi3 => return None,
    };
    #[cfg(target_arch = "x86_64")]
    {
        let choice = choice.capped();
        let isa = FastIsa::detect(choice)?;
        let pairs = match (isa, choice) {
            (FastIsa::Avx512(_), Choice::Best) => {
                crate::packed_prefill_avx512bf16::Avx512Bf16::where_it_pays()
            }
            _ => None,
        };
        Some(FastPlan {
            isa,
            bfp4: format == StorageFormat::Bfp4B,
            act_hi,
            weight_hi,
            acc_bf16: settings.accumulation == Accumulation::Bf16,
            range,
            bias,
            pairs,
        })
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = (bias, act_hi, weight_hi, choice);
        None
    }
}

/// Whether every non-zero operand (its exponent field in `fields`) is finite and, against the
/// matrix's range, gives a normal scale `c = b·2^(E − bias)` with `|c|·128 < 2^128` (so every
/// product is exact).
fn rows_fit(fields: &Fields, plan: &FastPlan) -> bool {
    match *fields {
        Fields::NotFinite => false,
        Fields::AllZero => true,
        Fields::Range(lo, hi) => {
            // Unbiased exponents: of b, and of 2^(E − bias).
            let (b_lo, b_hi) = (lo - 127, hi - 127);
            let (s_lo, s_hi) = (
                i32::from(plan.range.lo) - plan.bias,
                i32::from(plan.range.hi) - plan.bias,
            );
            b_lo + s_lo >= -126 && b_hi + s_hi <= 120
        }
    }
}

/// Whether every product of the operands with the matrix's weights is a multiple of a power of
/// two `q >= 2^-126`, so that no sum of them rounds to a subnormal (which the AVX-512 BF16
/// kernels would flush to zero). An operand with exponent `e` is a multiple of `2^(e − 7)` (8
/// significant bits), a weight a multiple of its `2^(E − bias)`. Implies nothing else: see
/// [`rows_fit`].
#[cfg(target_arch = "x86_64")]
fn pairs_fit(fields: &Fields, plan: &FastPlan) -> bool {
    match *fields {
        Fields::NotFinite => false,
        Fields::AllZero => true,
        Fields::Range(lo, _) => (lo - 127 - 7) + (i32::from(plan.range.lo) - plan.bias) >= -126,
    }
}

/// The exponent fields of a slice's non-zero values.
#[derive(Debug, PartialEq, Eq)]
enum Fields {
    /// Some value is infinite or NaN.
    NotFinite,
    /// Every value is zero (subnormals count as zero: operands have them flushed).
    AllZero,
    /// The smallest and largest exponent field of the non-zero values.
    Range(i32, i32),
}

fn exponent_fields(xs: &[f32]) -> Fields {
    // A prefill call scans m·k operands (every device of a mesh its own copy), so the scan is
    // branch-free and runs as AVX2 where the CPU has it (the baseline x86_64 target has no
    // 32-bit min/max instructions): the scalar loop with an early exit was about 9% of a 2x4
    // `accuracy` prefill on the tile unit (perf samples; docs/PERFORMANCE.md, Session 14).
    let (lo, hi, not_finite) = crate::simd::dispatch(FieldScan(xs));
    if not_finite {
        Fields::NotFinite
    } else if hi == 0 {
        Fields::AllZero
    } else {
        Fields::Range(lo as i32, hi as i32)
    }
}

/// The scan of [`exponent_fields`]: the smallest non-zero field (256 if none), the largest field,
/// and whether some field is 255 (infinite or NaN).
struct FieldScan<'a>(&'a [f32]);

impl crate::simd::Kernel for FieldScan<'_> {
    type Out = (u32, u32, bool);

    fn run<const FMA: bool>(self) -> Self::Out {
        let (mut lo, mut hi, mut special) = (0x100u32, 0u32, 0u32);
        for &v in self.0 {
            let field = (v.to_bits() >> 23) & 0xff;
            // Zero (subnormals were flushed to zero) takes no part in the smallest field.
            lo = lo.min(if field == 0 { 0x100 } else { field });
            hi = hi.max(field);
            special |= u32::from(field == 0xff);
        }
        (lo, hi, special != 0)
    }
}

/// The operands of the fast kernel: `xb` (`[m, k]`, already rounded to bf16 and flushed) with
/// `b_hi`'s mask applied when the plan needs it, each row zero-padded to `kp` (whole K-tiles).
pub(crate) fn operands(xb: &[f32], m: usize, k: usize, kp: usize, plan: &FastPlan) -> Vec<f32> {
    let mask = if plan.act_hi { B_HI_MASK } else { u32::MAX };
    let mut xs = vec![0f32; m * kp];
    if k == 0 {
        return xs;
    }
    for (dst, src) in xs.chunks_exact_mut(kp).zip(xb.chunks_exact(k)) {
        for (d, &s) in dst.iter_mut().zip(src) {
            *d = f32::from_bits(s.to_bits() & mask);
        }
    }
    xs
}

/// bf16 bits kept in `b_hi` (sign, exponent, top 6 mantissa bits) as an f32 mask.
pub(crate) const B_HI_MASK: u32 = 0xfffe_0000;

/// What a kernel reads for one task. Contract: every tile `(kt, tc0 + j)` with `kt < tiles_k`
/// and `j < tn` lies inside `bytes` (`tile_bytes` each, the format's), and operand rows are
/// `kp = tiles_k · 32` long.
pub(crate) struct Params<'a> {
    /// Operand rows, `kp` apart, zero beyond K.
    pub x: &'a [f32],
    pub kp: usize,
    /// The whole packed matrix.
    pub bytes: &'a [u8],
    pub tile_bytes: usize,
    pub tiles_k: usize,
    pub tiles_n: usize,
    /// First tile column and tile columns of the task.
    pub tc0: usize,
    pub tn: usize,
    pub plan: FastPlan,
}

/// `dest [rows, cols]` (before output rounding) of rows `r0 .. r0 + rows` of the operands `xs`
/// (rows `kp` apart, zero-padded to whole K-tiles) against output columns `n0 .. n0 + cols` of
/// `w`. `None` (nothing computed) when this build has no fast kernel or the arguments do not
/// describe a task inside `w`.
#[allow(clippy::too_many_arguments)]
pub(crate) fn run_task(
    plan: &FastPlan,
    xs: &[f32],
    kp: usize,
    w: &PackedMatrix,
    r0: usize,
    rows: usize,
    n0: usize,
    cols: usize,
) -> Option<Vec<f32>> {
    let (tiles_k, tiles_n) = (w.tile_rows(), w.tile_cols());
    let tile_bytes = w.format().tile_bytes();
    let (tc0, tn) = (n0 / TILE, cols.div_ceil(TILE));
    let fits = kp == tiles_k * TILE
        && xs.len() >= (r0 + rows) * kp
        && n0.is_multiple_of(TILE)
        && tc0 + tn <= tiles_n
        && w.bytes().len() == tiles_k * tiles_n * tile_bytes
        && tile_bytes == if plan.bfp4 { 576 } else { 1088 };
    if !fits {
        return None;
    }
    let width = tn * TILE;
    let mut dest = vec![0f32; rows * width];
    let p = Params {
        x: &xs[r0 * kp..(r0 + rows) * kp],
        kp,
        bytes: w.bytes(),
        tile_bytes,
        tiles_k,
        tiles_n,
        tc0,
        tn,
        plan: *plan,
    };
    let mut r = 0;
    while r < rows {
        let left = rows - r;
        let (x, d) = (&p.x[r * kp..], &mut dest[r * width..]);
        // SAFETY (every arm): the token proves the ISA; `x` holds at least `chunk` rows of
        // `kp = tiles_k · 32` operands and `d` at least `chunk` rows of `width = tn · 32` (chunk
        // <= left); every tile `(kt, tc0 + j)`, kt < tiles_k, j < tn, lies in `bytes`, whose
        // length is tiles_k · tiles_n · tile_bytes with tc0 + tn <= tiles_n, and tile_bytes is
        // the format's (all checked above).
        let chunk = match plan.isa {
            #[cfg(target_arch = "x86_64")]
            FastIsa::Avx512(_)
                if let Some(pairs) = plan.pairs
                    && left >= crate::packed_prefill_avx512bf16::MIN_ROWS =>
            {
                // Beyond the contract above: the operands are bf16 values (`operands`) and the
                // plan kept `pairs` only for a call whose products fit them (`for_call`).
                unsafe { crate::packed_prefill_avx512bf16::rows(pairs, &p, x, d, left) };
                left
            }
            #[cfg(target_arch = "x86_64")]
            FastIsa::Avx512(_) if let Some(pairs) = plan.pairs => {
                // Beyond the contract above: the plan kept `pairs` only for a call whose
                // products fit them (`for_call`).
                let chunk = largest_chunk(&crate::packed_gemv_avx512bf16::CHUNKS, left);
                unsafe { crate::packed_gemv_avx512bf16::rows(pairs, chunk, &p, x, d) };
                chunk
            }
            #[cfg(target_arch = "x86_64")]
            FastIsa::Avx512(isa) => {
                let chunk = largest_chunk(&crate::packed_gemv_avx512::CHUNKS, left);
                unsafe { crate::packed_gemv_avx512::rows(isa, chunk, &p, x, d) };
                chunk
            }
            #[cfg(target_arch = "x86_64")]
            FastIsa::Avx2(isa) if left >= crate::packed_prefill_avx2::MIN_ROWS => {
                unsafe { crate::packed_prefill_avx2::rows(isa, &p, x, d, left) };
                left
            }
            #[cfg(target_arch = "x86_64")]
            FastIsa::Avx2(isa) => {
                let chunk = largest_chunk(&crate::packed_gemv_avx2::CHUNKS, left);
                unsafe { crate::packed_gemv_avx2::rows(isa, chunk, &p, x, d) };
                chunk
            }
        };
        r += chunk;
    }
    if width == cols {
        return Some(dest);
    }
    Some(
        dest.chunks_exact(width)
            .flat_map(|r| &r[..cols])
            .copied()
            .collect(),
    )
}

/// The largest of `chunks` (largest first, ending in 1) that is at most `left`.
fn largest_chunk(chunks: &[usize], left: usize) -> usize {
    chunks.iter().copied().find(|&c| c <= left).unwrap_or(1)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    #[test]
    fn rows_fit_keeps_every_scale_normal_and_every_product_finite() {
        // Weights in [-2, 2): the largest shared exponent is 128 (2^(E - 133) = 2^-5).
        let v: Vec<f32> = (0..64 * 64)
            .map(|i| ((i % 89) as f32 - 44.0) / 22.0)
            .collect();
        let w = PackedMatrix::pack(&v, 64, 64, StorageFormat::Bfp8B).unwrap();
        let range = exponent_range(&w).unwrap();
        assert_eq!(range.hi, 128);
        let s = OpSettings::new(
            StorageFormat::Bfp8B,
            MathFidelity::HiFi2,
            Accumulation::Bf16,
            StorageFormat::Bf16,
            "test",
        );
        let Some(plan) = plan(w.format(), Some(range), &s, Choice::Best) else {
            return; // no fast kernel on this CPU: nothing to bound
        };
        assert!(plan.for_call(&[0.0, 1.0, -3.5, 1e30]).is_some());
        assert!(plan.for_call(&[]).is_some());
        // 3e38·2^-5 = 2^122.8 > 2^120: c·127 could overflow.
        assert!(plan.for_call(&[1.0, 3e38]).is_none());
        // 1e-37·2^(lo - 133) is below 2^-126.
        assert!(plan.for_call(&[1e-37, 1.0]).is_none());
        assert!(plan.for_call(&[f32::INFINITY]).is_none());
        assert!(plan.for_call(&[f32::NAN]).is_none());
    }

    /// The scan one value at a time, as [`exponent_fields`] defines it.
    fn fields_one_by_one(xs: &[f32]) -> Fields {
        let (mut lo, mut hi) = (i32::MAX, i32::MIN);
        for &v in xs {
            let field = ((v.to_bits() >> 23) & 0xff) as i32;
            if field == 255 {
                return Fields::NotFinite;
            }
            if field != 0 {
                lo = lo.min(field);
                hi = hi.max(field);
            }
        }
        if lo > hi {
            Fields::AllZero
        } else {
            Fields::Range(lo, hi)
        }
    }

    #[test]
    fn exponent_fields_equal_the_scan_one_value_at_a_time() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(17);
        let specials = [
            0.0,
            -0.0,
            f32::INFINITY,
            f32::NEG_INFINITY,
            f32::NAN,
            1e-40,
            3e38,
        ];
        for case in 0..400 {
            let len = rng.random_range(0..300);
            let xs: Vec<f32> = (0..len)
                .map(|_| match rng.random_range(0..16) {
                    0 if case % 4 == 0 => specials[rng.random_range(0..specials.len())],
                    1..=3 => 0.0,
                    // Any bit pattern: every exponent field, subnormals, NaNs.
                    _ => f32::from_bits(rng.random::<u32>()),
                })
                .collect();
            assert_eq!(
                exponent_fields(&xs),
                fields_one_by_one(&xs),
                "case {case}: {xs:?}"
            );
        }
        assert_eq!(exponent_fields(&[]), Fields::AllZero);
        assert_eq!(exponent_fields(&[0.0, 1e-40]), Fields::AllZero);
        assert_eq!(exponent_fields(&[1.0, f32::NAN, 0.0]), Fields::NotFinite);
        assert_eq!(exponent_fields(&[0.5, 0.0, 4.0]), Fields::Range(126, 129));
    }

    #[test]
    fn exponent_range_of_ordinary_and_degenerate_matrices() {
        let v: Vec<f32> = (0..64 * 40)
            .map(|i| ((i % 97) as f32 - 48.0) / 64.0)
            .collect();
        let w = PackedMatrix::pack(&v, 64, 40, StorageFormat::Bfp8B).unwrap();
        let r = exponent_range(&w).unwrap();
        // |v| <= 0.75: the largest shared exponent is that of 0.5 .. 0.75 (126).
        assert_eq!(r.hi, 126);
        assert!(r.lo >= 7 && r.lo <= r.hi, "{r:?}");
        // Zero matrices and zero padding pass; a tiny weight (face row exponent < 7) does not.
        let z = PackedMatrix::pack(&[0.0; 4], 2, 2, StorageFormat::Bfp4B).unwrap();
        assert_eq!(exponent_range(&z), Some(ExponentRange { lo: 127, hi: 127 }));
        let tiny = PackedMatrix::pack(&[1e-37, 0.0, 0.0, 0.0], 2, 2, StorageFormat::Bfp8B).unwrap();
        assert_eq!(exponent_range(&tiny), None);
        let bf = PackedMatrix::pack(&[1.0; 4], 2, 2, StorageFormat::Bf16).unwrap();
        assert_eq!(exponent_range(&bf), None);
    }
}
