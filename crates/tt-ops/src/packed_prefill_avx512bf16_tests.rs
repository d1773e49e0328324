#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use tt_numerics::{Accumulation, MathFidelity, OpSettings, StorageFormat};

use super::*;
use crate::device_linear::{DeviceWeight, device_linear_with, operand};
use crate::packed_gemv::{self, Choice};
use crate::tensor::{DType, Tensor};
use crate::testutil::{assert_bits_eq, ordinary};

/// The proof of AVX-512 BF16, or `None` after saying why the test checks nothing here.
fn here(test: &str) -> Option<Avx512Bf16> {
    let isa = Avx512Bf16::detect();
    if isa.is_none() {
        eprintln!("{test}: this CPU has no AVX-512 BF16; nothing to check");
    }
    isa
}

/// The proof where the model uses the kernel, or `None` after saying why not.
fn used_here(test: &str) -> Option<Avx512Bf16> {
    here(test)?;
    let isa = Avx512Bf16::where_it_pays();
    if isa.is_none() {
        eprintln!("{test}: device_linear does not use the AVX-512 BF16 kernel on this CPU");
    }
    isa
}

fn bf16(bits: u16) -> f32 {
    f32::from_bits(u32::from(bits) << 16)
}

/// `vdpbf16ps` of 16 lanes: `acc[j] + a[2j + 1]·b[2j + 1] + a[2j]·b[2j]`.
#[target_feature(enable = "avx512f,avx512bf16")]
fn dpbf16(acc: &[f32; 16], a: &[u16; 32], b: &[u16; 32]) -> [f32; 16] {
    let mut out = [0f32; 16];
    // SAFETY: 16 f32 / 32 u16 readable and 16 f32 writable behind the references.
    unsafe {
        let acc = _mm512_loadu_ps(acc.as_ptr());
        let a = pairs(_mm512_loadu_si512(a.as_ptr().cast()));
        let b = pairs(_mm512_loadu_si512(b.as_ptr().cast()));
        _mm512_storeu_ps(out.as_mut_ptr(), _mm512_dpbf16_ps(acc, a, b));
    }
    out
}

/// What the kernel's exactness rests on: this CPU's `vdpbf16ps` adds the high product of a
/// pair first and rounds each sum to nearest even, as two f32 adds in that order do (and not
/// as one rounding of both products, nor the low product first). Normal values close in
/// magnitude, so sums cancel and round often; half the cases start from zero as a K-tile does.
#[test]
fn dpbf16_adds_the_high_product_first_rounding_each_sum() {
    let Some(_) = here("dpbf16_order") else {
        return;
    };
    let mut rng = ChaCha8Rng::seed_from_u64(7);
    let normal16 = |rng: &mut ChaCha8Rng| -> u16 {
        let sign = u16::from(rng.random::<bool>()) << 15;
        sign | rng.random_range(118u16..136) << 7 | rng.random_range(0u16..128)
    };
    let (mut other_order, mut one_rounding) = (0, 0);
    for case in 0..20_000 {
        let a: [u16; 32] = std::array::from_fn(|_| normal16(&mut rng));
        let b: [u16; 32] = std::array::from_fn(|_| normal16(&mut rng));
        let acc: [f32; 16] = std::array::from_fn(|_| match case % 2 {
            0 => 0.0,
            _ => rng.random_range(-4.0f32..4.0),
        });
        // SAFETY: `here` proved AVX-512 F and BF16.
        let got = unsafe { dpbf16(&acc, &a, &b) };
        for j in 0..16 {
            let hi = bf16(a[2 * j + 1]) * bf16(b[2 * j + 1]);
            let lo = bf16(a[2 * j]) * bf16(b[2 * j]);
            let want = (acc[j] + hi) + lo;
            assert_eq!(
                got[j].to_bits(),
                want.to_bits(),
                "lane {j}: {} + {hi} + {lo}",
                acc[j]
            );
            other_order += usize::from(((acc[j] + lo) + hi).to_bits() != want.to_bits());
            let single = (f64::from(acc[j]) + f64::from(hi) + f64::from(lo)) as f32;
            one_rounding += usize::from(single.to_bits() != want.to_bits());
        }
    }
    // The cases tell the orders apart: both alternatives differ from it many times.
    assert!(
        other_order > 1000 && one_rounding > 1000,
        "{other_order} {one_rounding}"
    );
}

fn settings(f: MathFidelity, a: Accumulation) -> OpSettings {
    OpSettings::new(StorageFormat::Bfp8B, f, a, StorageFormat::F32, "test")
}

/// The plan `device_linear` makes for `x` against `w` (after its per-call checks), from the
/// same functions.
fn call_plan(x: &Tensor, w: &DeviceWeight, s: &OpSettings) -> Option<packed_gemv::FastPlan> {
    let [m, k] = x.dims::<2>().unwrap();
    let kp = k.div_ceil(TILE) * TILE;
    let range = packed_gemv::exponent_range(w.packed());
    let plan = packed_gemv::plan(w.format(), range, s, Choice::Best)?;
    let xb: Vec<f32> = x.f32_values().iter().map(|&v| operand(v)).collect();
    plan.for_call(&packed_gemv::operands(&xb, m, k, kp, &plan))
}

/// `device_linear` against the reference emulation, bit for bit, for each shape `(m, k, n)`
/// (activations and weights drawn from `seeds`): both block-float formats, the fidelities the
/// pair kernels serve, both accumulations; every call must take the pair kernels.
fn pairs_equal_the_emulation(shapes: &[(usize, usize, usize)], seeds: (u64, u64)) {
    for &(m, k, n) in shapes {
        let x = Tensor::from_f32(ordinary(m * k, 3.0, seeds.0), &[m, k]).unwrap();
        let wt =
            Tensor::from_f32_as(&ordinary(n * k, 0.05, seeds.1), &[n, k], DType::Bf16).unwrap();
        for wf in [StorageFormat::Bfp8B, StorageFormat::Bfp4B] {
            let w = DeviceWeight::pack(&wt, wf).unwrap();
            for f in [MathFidelity::LoFi, MathFidelity::HiFi2, MathFidelity::HiFi4] {
                for a in [Accumulation::Fp32, Accumulation::Bf16] {
                    let mut s = settings(f, a);
                    s.weights = wf;
                    let what = format!("{m}x{k} @ {k}x{n} {wf} {f} acc={a}");
                    let plan = call_plan(&x, &w, &s).expect("a fast plan");
                    assert!(plan.pairs.is_some(), "{what}: not the AVX-512 BF16 kernels");
                    let got = device_linear_with(&x, &w, &s, Choice::Best).unwrap();
                    let want = device_linear_with(&x, &w, &s, Choice::Reference).unwrap();
                    assert_bits_eq(got.as_f32().unwrap(), want.as_f32().unwrap(), &what);
                }
            }
        }
    }
}

/// The prefill kernel against the reference emulation: row counts around its six-row groups,
/// K and N not multiples of 32, odd tile columns (one decoded alone), more K-tiles than one
/// block.
#[test]
fn the_kernel_equals_the_emulation() {
    let Some(_) = used_here("the_kernel_equals_the_emulation") else {
        return;
    };
    let shapes = [
        (8, 33, 40),
        (13, 600, 100),
        (19, 200, 96),
        (37, 64, 300),
        (64, 1000, 64),
    ];
    pairs_equal_the_emulation(&shapes, (1, 2));
}

/// Activations so small that a product could be a multiple of less than `2^-126` (where the
/// kernels' flushed subnormal sums could differ) keep the call on the f32 kernels, prefill
/// (nine rows) and decode (one, seven) alike, and the result is still the emulation's.
#[test]
fn calls_outside_its_range_run_the_f32_kernels() {
    let Some(_) = used_here("calls_outside_its_range_run_the_f32_kernels") else {
        return;
    };
    let (k, n) = (64, 48);
    let wt = Tensor::from_f32(ordinary(n * k, 0.05, 5), &[n, k]).unwrap();
    let w = DeviceWeight::pack(&wt, StorageFormat::Bfp8B).unwrap();
    let s = settings(MathFidelity::HiFi2, Accumulation::Bf16);
    let range = packed_gemv::exponent_range(w.packed()).unwrap();
    // The smallest activation exponent the kernel takes against this matrix.
    let e_min = -126 + 7 - (i32::from(range.lo) - 133);
    for (m, tiny, pairs) in [
        (9, 2f32.powi(e_min), true),
        (9, 2f32.powi(e_min - 1), false),
        (7, 2f32.powi(e_min), true),
        (7, 2f32.powi(e_min - 1), false),
        (1, 2f32.powi(e_min - 1), false),
    ] {
        let mut xv = ordinary(m * k, 1.0, 6);
        xv[(m - 1) * k + 3] = tiny;
        let x = Tensor::from_f32(xv, &[m, k]).unwrap();
        let plan = call_plan(&x, &w, &s).expect("a fast plan");
        assert_eq!(plan.pairs.is_some(), pairs, "m={m} tiny={tiny:e}");
        let got = device_linear_with(&x, &w, &s, Choice::Best).unwrap();
        let want = device_linear_with(&x, &w, &s, Choice::Reference).unwrap();
        assert_bits_eq(
            got.as_f32().unwrap(),
            want.as_f32().unwrap(),
            &format!("m={m} {tiny:e}"),
        );
    }
}

/// Decode rows (1 to 7) run the decode kernel on pairs (`packed_gemv_avx512bf16`) against the
/// reference emulation (LoFi's `a_hi` of bfloat8_b included): K and N not multiples of 32, one
/// row over 1, 2, 7 and 32 tiles (four, two and one tile at a time), two to seven rows.
#[test]
fn decode_rows_take_pairs_and_equal_the_emulation() {
    let Some(_) = used_here("decode_rows_take_pairs_and_equal_the_emulation") else {
        return;
    };
    let shapes = [
        (1, 3072, 1000),
        (1, 61, 33),
        (1, 100, 200),
        (1, 64, 20),
        (2, 200, 96),
        (3, 600, 100),
        (7, 96, 300),
    ];
    pairs_equal_the_emulation(&shapes, (3, 4));
}
