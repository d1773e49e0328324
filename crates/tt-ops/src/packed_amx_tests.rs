#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use tt_numerics::{Accumulation, MathFidelity, OpSettings, StorageFormat};

use crate::device_linear::{DeviceKernel, DeviceWeight, device_linear_sums};
use crate::k_tile_sums::KTileSums;
use crate::packed_gemv::Choice;
use crate::tensor::Tensor;

/// Uniform in [-1, 1) with a few zeros and larger values: every product stays a normal f32.
fn values(n: usize, seed: u64) -> Vec<f32> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    (0..n)
        .map(|_| match rng.random_range(0..30) {
            0 => 0.0,
            1 => rng.random_range(-20.0f32..20.0),
            _ => rng.random_range(-1.0f32..1.0),
        })
        .collect()
}

/// One case's worst error against the emulation, as a share of its bound, and how many outputs
/// equal the emulation's bit for bit.
struct Compared {
    worst: f64,
    equal: usize,
    total: usize,
}

/// Runs `x [m, k] @ w` both ways and compares each output with the emulation's. The bound per
/// output: each K-tile sum of either way is within 32 f32 roundings of the exact sum, so
/// `64·2^-24·S` (S = Σ|a·b|) apart; a bf16 destination can then round each K-tile's value one
/// bf16 step (2^-7 of the value, at most S) differently, and a bf16 output one step more.
fn compare(m: usize, k: usize, n: usize, s: &OpSettings, seed: u64) -> Option<Compared> {
    let xv = values(m * k, seed);
    let wv = values(n * k, seed + 1);
    let x = Tensor::from_f32(xv.clone(), &[m, k]).unwrap();
    let w = DeviceWeight::pack(&Tensor::from_f32(wv, &[n, k]).unwrap(), s.weights).unwrap();
    crate::kernels::amx_gemm::Amx::detect()?; // no AMX here: nothing to compare
    let before = crate::device_kernel_counts();
    let got = device_linear_sums(&x, &w, s, Choice::Best, KTileSums::MatrixUnit).unwrap();
    let calls = crate::device_kernel_counts().since(&before);
    assert_eq!(
        calls.get(DeviceKernel::MatrixUnit),
        1,
        "{s:?} did not run on the tile unit"
    );
    let want = device_linear_sums(&x, &w, s, Choice::Reference, KTileSums::InOrder).unwrap();
    let wd = w.dequantize(); // [n, k]
    let wd = wd.as_f32().unwrap();
    let (got, want) = (got.as_f32().unwrap(), want.as_f32().unwrap());
    let tiles = k.div_ceil(32) as f64;
    let mut c = Compared {
        worst: 0.0,
        equal: 0,
        total: m * n,
    };
    for i in 0..m {
        for j in 0..n {
            let sum_abs: f64 = (0..k)
                .map(|kk| f64::from(xv[i * k + kk]).abs() * f64::from(wd[j * k + kk]).abs())
                .sum();
            let (g, e) = (got[i * n + j], want[i * n + j]);
            let mut bound = 64.0 * 2f64.powi(-24) * sum_abs;
            if s.accumulation == Accumulation::Bf16 {
                bound += tiles * 2f64.powi(-7) * sum_abs;
            }
            if s.output == StorageFormat::Bf16 {
                bound += 2f64.powi(-7) * f64::from(e).abs();
            }
            let err = (f64::from(g) - f64::from(e)).abs();
            assert!(
                err <= bound.max(1e-30),
                "m={m} k={k} n={n} {s:?}: out[{i}][{j}] = {g} vs the emulation's {e} (bound {bound})"
            );
            c.worst = c.worst.max(err / bound.max(1e-30));
            c.equal += usize::from(g.to_bits() == e.to_bits());
        }
    }
    Some(c)
}

fn settings(w: StorageFormat, f: MathFidelity, a: Accumulation, out: StorageFormat) -> OpSettings {
    OpSettings::new(w, f, a, out, "test")
}

#[test]
fn matrix_unit_prefill_is_the_emulation_up_to_k_tile_rounding() {
    use Accumulation::{Bf16 as AccBf16, Fp32};
    use MathFidelity::{HiFi2, HiFi4, LoFi};
    use StorageFormat::{Bf16, Bfp4B, Bfp8B, F32};
    let cases = [
        // (m, k, n, weights, fidelity, accumulation, output)
        (16, 64, 32, Bfp8B, HiFi2, Fp32, F32),
        (37, 200, 72, Bfp8B, HiFi2, AccBf16, Bf16),
        (70, 1024, 96, Bfp8B, HiFi2, Fp32, Bf16),
        (33, 96, 200, Bfp8B, LoFi, AccBf16, F32),
        (48, 160, 64, Bfp8B, HiFi4, Fp32, F32),
        (17, 512, 40, Bfp4B, LoFi, AccBf16, Bf16),
        (64, 320, 128, Bfp4B, HiFi2, Fp32, F32),
    ];
    let mut ran = 0;
    for (seed, &(m, k, n, wf, f, a, out)) in cases.iter().enumerate() {
        let s = settings(wf, f, a, out);
        let Some(c) = compare(m, k, n, &s, 100 + seed as u64) else {
            continue;
        };
        ran += 1;
        // The K-tile sums differ in their last bits only: with an f32 result most outputs
        // differ, but within a few 32-term roundings; rounded to bf16 nearly all are equal.
        if out == Bf16 || a == AccBf16 {
            assert!(
                c.equal * 100 >= c.total * 90,
                "m={m} k={k} n={n} {s:?}: only {}/{} outputs equal",
                c.equal,
                c.total
            );
        }
        assert!(c.worst <= 1.0);
    }
    if ran == 0 {
        eprintln!("no AMX-BF16 on this CPU: the tile-unit prefill was not run");
    }
}

#[test]
fn in_order_sums_never_take_the_matrix_unit() {
    let s = settings(
        StorageFormat::Bfp8B,
        MathFidelity::HiFi2,
        Accumulation::Bf16,
        StorageFormat::Bf16,
    );
    let x = Tensor::from_f32(values(40 * 64, 7), &[40, 64]).unwrap();
    let w = DeviceWeight::pack(
        &Tensor::from_f32(values(64 * 64, 8), &[64, 64]).unwrap(),
        s.weights,
    )
    .unwrap();
    let got = device_linear_sums(&x, &w, &s, Choice::Best, KTileSums::InOrder).unwrap();
    let want = device_linear_sums(&x, &w, &s, Choice::Reference, KTileSums::InOrder).unwrap();
    assert_eq!(got.as_f32().unwrap(), want.as_f32().unwrap());
    // Too few rows for the tile unit: the GEMV kernels, bit-equal too.
    let x = Tensor::from_f32(values(15 * 64, 9), &[15, 64]).unwrap();
    let got = device_linear_sums(&x, &w, &s, Choice::Best, KTileSums::MatrixUnit).unwrap();
    let want = device_linear_sums(&x, &w, &s, Choice::Reference, KTileSums::InOrder).unwrap();
    assert_eq!(got.as_f32().unwrap(), want.as_f32().unwrap());
}
