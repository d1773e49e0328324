#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use tt_numerics::bf16::round_bf16_device;
use tt_numerics::bfp::Rounding;
use tt_numerics::fidelity::{accumulate, product};
use tt_numerics::{Accumulation, MathFidelity, OpSettings, PackedMatrix, StorageFormat};

use super::*;
use crate::testutil::{assert_bits_eq, ordinary};

const ACCS: [Accumulation; 2] = [Accumulation::Fp32, Accumulation::Bf16];

fn settings(f: MathFidelity, a: Accumulation, out: StorageFormat) -> OpSettings {
    OpSettings::new(StorageFormat::F32, f, a, out, "test")
}

/// Mostly uniform in [-1, 1), with zeros, subnormals, bf16 ties, large and tiny values mixed in.
fn values(n: usize, seed: u64) -> Vec<f32> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    (0..n)
        .map(|_| match rng.random_range(0..40) {
            0 => 0.0,
            1 => -0.0,
            2 => 1e-40,
            3 => -(1.0 + 2f32.powi(-8)),
            4 => 3.0 * (1.0 + 2f32.powi(-8)),
            5 => rng.random_range(-100.0f32..100.0),
            6 => rng.random_range(-1.0f32..1.0) * 1e-20,
            _ => rng.random_range(-1.0f32..1.0),
        })
        .collect()
}

/// Row-major transpose of `[rows, cols]`.
fn transpose(v: &[f32], rows: usize, cols: usize) -> Vec<f32> {
    let mut t = vec![0f32; v.len()];
    for r in 0..rows {
        for c in 0..cols {
            t[c * rows + r] = v[r * cols + c];
        }
    }
    t
}

/// The naive model: per output, K-tiles of products from `tt_numerics::fidelity::product`,
/// summed in f32, folded with `accumulate`, then written by a packer rounding ties away.
fn reference(x: &[f32], m: usize, k: usize, w: &DeviceWeight, s: &OpSettings) -> Vec<f32> {
    let n = w.out_features();
    let a = w.packed().unpack(); // [K, N], tt-numerics' own unpacker
    let mut out = vec![0f32; m * n];
    for i in 0..m {
        for j in 0..n {
            let mut dest = 0f32;
            for k0 in (0..k).step_by(32) {
                let mut tile_sum = 0f32;
                for kk in k0..(k0 + 32).min(k) {
                    tile_sum += product(a[kk * n + j], x[i * k + kk], s.fidelity);
                }
                dest = accumulate(dest, tile_sum, s.accumulation);
            }
            out[i * n + j] = dest;
        }
    }
    match s.output {
        StorageFormat::F32 => out,
        StorageFormat::Bf16 => out.into_iter().map(round_bf16_device).collect(),
        f => PackedMatrix::pack_with(&out, m, n, f, Rounding::TiesAwayFromZero)
            .unwrap()
            .unpack(),
    }
}

/// Every fidelity x accumulation x output format x weight format, bit for bit.
#[test]
fn device_linear_matches_naive_reference_bit_for_bit() {
    // (leading dims, K, N, weight dtype, weight is a column view)
    let shapes: [(&[usize], usize, usize, DType, bool); 7] = [
        (&[1], 1, 1, DType::F32, false),
        (&[1], 37, 45, DType::F32, false),
        (&[3], 64, 16, DType::Bf16, false),
        (&[2, 3], 70, 33, DType::F32, true),
        (&[5], 96, 100, DType::Bf16, true),
        (&[1], 33, 17, DType::Bf16, false),
        (&[4], 31, 64, DType::F32, false),
    ];
    for (si, &(lead, k, n, dtype, view)) in shapes.iter().enumerate() {
        let seed = si as u64 * 10;
        let m: usize = lead.iter().product();
        let xv = values(m * k, seed);
        let x = Tensor::from_f32(xv.clone(), &[lead, &[k]].concat()).unwrap();
        let wt = if view {
            let wide = Tensor::from_f32_as(&values(n * (k + 9), seed + 1), &[n, k + 9], dtype);
            wide.unwrap().columns(5, k).unwrap()
        } else {
            Tensor::from_f32_as(&values(n * k, seed + 1), &[n, k], dtype).unwrap()
        };
        for wf in StorageFormat::ALL {
            let w = DeviceWeight::pack(&wt, wf).unwrap();
            for f in MathFidelity::ALL {
                for a in ACCS {
                    for out in StorageFormat::ALL {
                        let s = settings(f, a, out);
                        let y = device_linear(&x, &w, &s).unwrap();
                        assert_eq!(y.shape(), &[lead, &[n]].concat()[..]);
                        let want = reference(&xv, m, k, &w, &s);
                        let what = format!("{lead:?}x{k} @ {k}x{n} w={wf} {f} acc={a} out={out}");
                        assert_bits_eq(y.as_f32().unwrap(), &want, &what);
                    }
                }
            }
        }
    }
}

/// Shapes large enough for the parallel path (column blocks and row chunks), bit for bit.
#[test]
fn device_linear_parallel_path_matches_reference() {
    for (m, k, n, wf) in [
        (8, 200, 700, StorageFormat::Bfp8B),
        (1, 1100, 1000, StorageFormat::Bfp4B),
        (3, 400, 900, StorageFormat::F32),
    ] {
        assert!(m * k * n > PARALLEL_WORK);
        let xv = values(m * k, 7);
        let x = Tensor::from_f32(xv.clone(), &[m, k]).unwrap();
        let wt = Tensor::from_f32(values(n * k, 8), &[n, k]).unwrap();
        let w = DeviceWeight::pack(&wt, wf).unwrap();
        for f in MathFidelity::ALL {
            for a in ACCS {
                let s = settings(f, a, StorageFormat::Bfp8B);
                let y = device_linear(&x, &w, &s).unwrap();
                let want = reference(&xv, m, k, &w, &s);
                assert_bits_eq(
                    y.as_f32().unwrap(),
                    &want,
                    &format!("{m}x{k}x{n} {wf} {f} {a}"),
                );
            }
        }
    }
}

#[test]
fn device_linear_does_not_depend_on_thread_count() {
    let (m, k, n) = (6, 300, 800);
    let x = Tensor::from_f32(values(m * k, 3), &[m, k]).unwrap();
    let wt = Tensor::from_f32(values(n * k, 4), &[n, k]).unwrap();
    let w = DeviceWeight::pack(&wt, StorageFormat::Bfp8B).unwrap();
    let s = settings(MathFidelity::HiFi2, Accumulation::Bf16, StorageFormat::F32);
    let run = |threads: usize| {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap();
        pool.install(|| device_linear(&x, &w, &s).unwrap().to_f32_vec())
    };
    assert_bits_eq(&run(1), &run(3), "1 vs 3 threads");
}

#[test]
fn device_linear_pack_is_the_transposed_weight_packed() {
    // 19 tile rows: more than one packing band (16 tile rows), the last one partial.
    let (n, k) = (45, 582);
    let big = values(n * k, 13);
    let wide_v = values(n * 700, 14);
    let big_view = Tensor::from_f32(wide_v, &[n, 700]).unwrap();
    for format in StorageFormat::ALL {
        let w =
            DeviceWeight::pack(&Tensor::from_f32(big.clone(), &[n, k]).unwrap(), format).unwrap();
        let want = PackedMatrix::pack(&transpose(&big, n, k), k, n, format).unwrap();
        assert_eq!(w.packed(), &want, "{format} {k}");
        let view = big_view.columns(100, k).unwrap();
        let from_view = DeviceWeight::pack(&view, format).unwrap();
        let from_copy = DeviceWeight::pack(&view.contiguous(), format).unwrap();
        assert_eq!(from_view.packed(), from_copy.packed(), "view {format} {k}");
    }
    let (n, k) = (45, 70);
    let wv = values(n * k, 11);
    let wt = Tensor::from_f32(wv.clone(), &[n, k]).unwrap();
    let wide_v = values(n * 150, 12);
    let wide = Tensor::from_f32(wide_v, &[n, 150]).unwrap();
    let view = wide.columns(40, k).unwrap();
    for format in StorageFormat::ALL {
        let w = DeviceWeight::pack(&wt, format).unwrap();
        let want = PackedMatrix::pack(&transpose(&wv, n, k), k, n, format).unwrap();
        assert_eq!(w.packed(), &want, "{format}");
        assert_eq!((w.in_features(), w.out_features()), (k, n));
        assert_eq!(w.format(), format);
        assert_eq!(w.byte_size(), 3 * 2 * format.tile_bytes());
        let dq = w.dequantize();
        assert_eq!(dq.shape(), &[n, k]);
        assert_bits_eq(
            dq.as_f32().unwrap(),
            &transpose(&want.unpack(), k, n),
            &format!("dequantize {format}"),
        );
        // A column view packs like its contiguous copy.
        let from_view = DeviceWeight::pack(&view, format).unwrap();
        let from_copy = DeviceWeight::pack(&view.contiguous(), format).unwrap();
        assert_eq!(from_view.packed(), from_copy.packed(), "view {format}");
    }
    // bf16 weights stored as bf16 come back exactly.
    let wb = wt.to_dtype(DType::Bf16);
    let w = DeviceWeight::pack(&wb, StorageFormat::Bf16).unwrap();
    assert_bits_eq(
        w.dequantize().as_f32().unwrap(),
        &wb.to_f32_vec(),
        "bf16 round trip",
    );
    // bfp8 shares exponents along N: one large weight of output feature 0 coarsens the other 15
    // output features of the same input feature, not the other input features of feature 0.
    let mut v = vec![0.0f32; 16 * 16];
    v.iter_mut().for_each(|x| *x = 1.0 + 2f32.powi(-6)); // exact in bfp8 next to 1.0
    v[0] = 64.0; // w[0][0]
    let w = DeviceWeight::pack(
        &Tensor::from_f32(v, &[16, 16]).unwrap(),
        StorageFormat::Bfp8B,
    )
    .unwrap();
    let dq = w.dequantize().to_f32_vec();
    assert_eq!(dq[1], 1.0 + 2f32.powi(-6), "w[0][1]: another input feature");
    assert_eq!(dq[16], 1.0, "w[1][0]: same input feature, step 1");
}

#[test]
fn device_linear_hifi4_fp32_is_a_plain_matmul() {
    let (m, k, n) = (3, 300, 50);
    let xv: Vec<f32> = values(m * k, 21).into_iter().map(round_bf16).collect();
    let x = Tensor::from_f32(xv.clone(), &[m, k]).unwrap();
    let wt = Tensor::from_f32_as(&values(n * k, 22), &[n, k], DType::Bf16).unwrap();
    let wv = wt.to_f32_vec();
    let w = DeviceWeight::pack(&wt, StorageFormat::Bf16).unwrap();
    let s = settings(MathFidelity::HiFi4, Accumulation::Fp32, StorageFormat::F32);
    let y = device_linear(&x, &w, &s).unwrap().to_f32_vec();
    for i in 0..m {
        for j in 0..n {
            let terms = (0..k).map(|p| f64::from(xv[i * k + p]) * f64::from(wv[j * k + p]));
            let (want, scale) = (terms.clone().sum::<f64>(), terms.map(f64::abs).sum::<f64>());
            let got = f64::from(y[i * n + j]);
            assert!(
                (got - want).abs() <= 1e-5 * scale,
                "{i},{j}: {got} vs {want} (scale {scale})"
            );
        }
    }
    // And a lower fidelity differs from it.
    let lofi = settings(MathFidelity::LoFi, Accumulation::Fp32, StorageFormat::F32);
    assert_ne!(device_linear(&x, &w, &lofi).unwrap().to_f32_vec(), y);
}

#[test]
fn device_linear_round_to_device_format_ties_and_groups() {
    let tie = 1.0 + 2f32.powi(-8);
    let mut v = [tie, -tie, 1.0, 3.5];
    round_to_device_format(&mut v, 2, StorageFormat::Bf16).unwrap();
    let up = 1.0 + 2f32.powi(-7);
    assert_eq!(v, [up, -up, 1.0, 3.5]);
    let mut f = [tie, -tie];
    round_to_device_format(&mut f, 1, StorageFormat::F32).unwrap();
    assert_eq!(f, [tie, -tie]);

    // Two rows of 20: groups [0, 16) and [16, 20) of each row.
    let q = 1.0 + 2f32.powi(-7); // a bfp8 tie when the group's exponent is 1.0's
    let mut rows = vec![q; 40];
    rows[16..20].copy_from_slice(&[4.0, q, 0.0, -q]);
    round_to_device_format(&mut rows, 20, StorageFormat::Bfp8B).unwrap();
    let away = 1.0 + 2f32.powi(-6);
    let mut want = vec![away; 40];
    want[16..20].copy_from_slice(&[4.0, 1.0, 0.0, -1.0]); // step 2^-4 next to 4.0
    assert_eq!(rows, want);

    // bfp4 keeps 3 magnitude bits: 1.125 is a tie between 1.0 and 1.25.
    let mut r4 = vec![1.125f32, -1.125, 0.5, 1.0];
    round_to_device_format(&mut r4, 4, StorageFormat::Bfp4B).unwrap();
    assert_eq!(r4, [1.25, -1.25, 0.5, 1.0]);

    let mut bad = [0.0f32; 7];
    assert!(matches!(
        round_to_device_format(&mut bad, 3, StorageFormat::Bf16),
        Err(OpError::InvalidArgument { .. })
    ));
    assert!(round_to_device_format(&mut bad, 0, StorageFormat::F32).is_err());
    assert!(round_to_device_format(&mut [], 4, StorageFormat::Bfp8B).is_ok());
}

#[test]
fn device_linear_rejects_bad_shapes_and_survives_non_finite() {
    let wt = Tensor::from_f32(values(8 * 5, 1), &[8, 5]).unwrap();
    let w = DeviceWeight::pack(&wt, StorageFormat::Bfp8B).unwrap();
    let s = settings(MathFidelity::HiFi2, Accumulation::Bf16, StorageFormat::Bf16);
    let x4 = Tensor::zeros(&[2, 4], DType::F32);
    assert!(matches!(
        device_linear(&x4, &w, &s),
        Err(OpError::Shape { .. })
    ));
    let scalar = Tensor::zeros(&[], DType::F32);
    assert!(matches!(
        device_linear(&scalar, &w, &s),
        Err(OpError::Shape { .. })
    ));
    let empty = Tensor::zeros(&[0, 5], DType::F32);
    assert_eq!(device_linear(&empty, &w, &s).unwrap().shape(), &[0, 8]);
    let w3 = Tensor::zeros(&[2, 3, 4], DType::F32);
    assert!(DeviceWeight::pack(&w3, StorageFormat::Bf16).is_err());
    let w0 = Tensor::zeros(&[0, 4], DType::Bf16);
    assert!(DeviceWeight::pack(&w0, StorageFormat::Bf16).is_err());

    let mut xv = vec![0.5f32; 10];
    xv[2] = f32::NAN;
    let x = Tensor::from_f32(xv, &[2, 5]).unwrap();
    for f in MathFidelity::ALL {
        let y = device_linear(
            &x,
            &w,
            &settings(f, Accumulation::Fp32, StorageFormat::Bfp8B),
        )
        .unwrap()
        .to_f32_vec();
        assert!(y[..8].iter().all(|v| v.is_nan()), "{f}: {y:?}");
        assert!(y[8..].iter().all(|v| v.is_finite()), "{f}: {y:?}");
    }
}

/// The kernel this CPU should pick for the packed formats (`TT_OPS_DEVICE_KERNEL` caps it).
fn fast_kernel_expected() -> DeviceKernel {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::is_x86_feature_detected as has;
        let cap = std::env::var("TT_OPS_DEVICE_KERNEL").unwrap_or_default();
        if cap == "reference" {
            return DeviceKernel::Reference;
        }
        if cap != "avx2" && has!("avx512f") && has!("avx512bw") && has!("avx512vl") {
            if cap != "avx512"
                && crate::packed_prefill_avx512bf16::Avx512Bf16::where_it_pays().is_some()
            {
                return DeviceKernel::PackedAvx512Bf16;
            }
            return DeviceKernel::PackedAvx512;
        }
        if has!("avx2") && has!("fma") {
            return DeviceKernel::PackedAvx2;
        }
    }
    DeviceKernel::Reference
}

/// The packed kernel against the reference emulation, bit for bit: both block-float formats,
/// the fidelities it serves, both accumulations, 1 to 15 rows, K and N not multiples of 32, one
/// call small enough for one task and one split over column blocks. On an AVX-512 machine the
/// AVX-512 F kernel and the AVX2 kernel are checked as well (same cases, [`Choice::Avx512`],
/// [`Choice::Avx2`]); on one with AVX-512 BF16, calls of eight rows and more run its kernel.
#[test]
fn device_linear_packed_kernel_equals_the_emulation() {
    let fast = fast_kernel_expected();
    for (m, k, n) in [
        (1, 3072, 1000),
        (2, 100, 70),
        (3, 61, 33),
        (4, 256, 4008),
        // Eight rows and more: the prefill kernel, six rows at a time, then the rest.
        (8, 33, 40),
        (11, 200, 96),
        (15, 96, 300),
        (40, 64, 64),
        // More K-tiles than the prefill kernel decodes at once (8), not a multiple of them.
        (13, 600, 100),
    ] {
        let x = Tensor::from_f32(ordinary(m * k, 3.0, 1), &[m, k]).unwrap();
        let wt = Tensor::from_f32_as(&ordinary(n * k, 0.05, 2), &[n, k], DType::Bf16).unwrap();
        for wf in [StorageFormat::Bfp8B, StorageFormat::Bfp4B] {
            let w = DeviceWeight::pack(&wt, wf).unwrap();
            for f in MathFidelity::ALL {
                for a in ACCS {
                    let s = settings(f, a, StorageFormat::F32);
                    let want_kernel = if f != MathFidelity::HiFi3 {
                        fast
                    } else {
                        DeviceKernel::Reference
                    };
                    assert_eq!(w.kernel(&s), want_kernel, "{wf} {f}");
                    let want = device_linear_reference(&x, &w, &s).unwrap();
                    for choice in [Choice::Best, Choice::Avx512, Choice::Avx2] {
                        let got = device_linear_with(&x, &w, &s, choice).unwrap();
                        let what = format!("{m}x{k} @ {k}x{n} {wf} {f} acc={a} {choice:?}");
                        assert_bits_eq(got.as_f32().unwrap(), want.as_f32().unwrap(), &what);
                    }
                }
            }
        }
    }
}

/// Activations at the edges of the range where every product is exact: 1e30 and 3e38 still fit
/// the fast kernel against these small weights, 1e-37 (its scale would fall below the normal
/// range) and non-finite values fall back to the emulation; every result matches it
/// (`packed_gemv`'s `rows_fit` test checks which side each falls on). bf16 and f32 weights always
/// use the emulation.
#[test]
fn device_linear_packed_kernel_falls_back_outside_its_range() {
    let (m, k, n) = (2, 64, 48);
    let wt = Tensor::from_f32(ordinary(n * k, 0.05, 5), &[n, k]).unwrap();
    let s = settings(MathFidelity::HiFi2, Accumulation::Bf16, StorageFormat::Bf16);
    for special in [1e30f32, 3e38, 1e-37, f32::INFINITY, f32::NAN] {
        let mut xv = ordinary(m * k, 1.0, 6);
        xv[k + 3] = special;
        let x = Tensor::from_f32(xv, &[m, k]).unwrap();
        for wf in StorageFormat::ALL {
            let w = DeviceWeight::pack(&wt, wf).unwrap();
            let want = device_linear_reference(&x, &w, &s).unwrap();
            for choice in [Choice::Best, Choice::Avx512, Choice::Avx2] {
                let got = device_linear_with(&x, &w, &s, choice).unwrap();
                assert_bits_eq(
                    got.as_f32().unwrap(),
                    &want.to_f32_vec(),
                    &format!("{special} {wf} {choice:?}"),
                );
            }
        }
    }
    for wf in [StorageFormat::F32, StorageFormat::Bf16] {
        let w = DeviceWeight::pack(&wt, wf).unwrap();
        assert_eq!(w.kernel(&s), DeviceKernel::Reference, "{wf}");
    }
}

/// Sums that overflow: K-tile 0 of every output adds to `+inf`, K-tile 1 to `-inf`, so the
/// destination becomes `inf − inf` = NaN, then K-tile 2 adds to it. The operands still fit the
/// fast kernels (every product is finite), which must give the emulation's bits, NaN included,
/// for the decode rows and the prefill rows.
#[test]
fn device_linear_packed_kernel_overflowing_sums_match_the_emulation() {
    let (k, n) = (96, 40);
    // Weights ±1.75 (code 112·2^-6 in bfloat8_b, 7·2^-2 in bfloat4_b) and operands as large as
    // the kernels take (1.5·2^126 against bfloat8_b's scale, 1.5·2^122 against bfloat4_b's):
    // each product is finite, 32 of them are not.
    let wv: Vec<f32> = (0..n * k)
        .map(|i| match i % k {
            kk if kk < 32 => 1.75,
            kk if kk < 64 => -1.75,
            _ => 0.5,
        })
        .collect();
    let wt = Tensor::from_f32_as(&wv, &[n, k], DType::Bf16).unwrap();
    for m in [2, 9] {
        for (wf, e) in [(StorageFormat::Bfp8B, 126), (StorageFormat::Bfp4B, 122)] {
            let x = Tensor::from_f32(vec![1.5 * 2f32.powi(e); m * k], &[m, k]).unwrap();
            let w = DeviceWeight::pack(&wt, wf).unwrap();
            for (f, a, out) in [
                (MathFidelity::HiFi2, Accumulation::Bf16, StorageFormat::Bf16),
                (MathFidelity::HiFi2, Accumulation::Bf16, StorageFormat::F32),
                (MathFidelity::LoFi, Accumulation::Fp32, StorageFormat::F32),
            ] {
                let s = settings(f, a, out);
                if let Some(plan) = packed_gemv::plan(wf, w.range, &s, Choice::Best) {
                    let xb: Vec<f32> = x.f32_values().iter().map(|&v| operand(v)).collect();
                    let xs = packed_gemv::operands(&xb, m, k, k, &plan);
                    assert!(plan.for_call(&xs).is_some(), "{m} {wf} {f}");
                }
                let want = device_linear_reference(&x, &w, &s).unwrap();
                assert!(want.to_f32_vec().iter().all(|v| v.is_nan()), "{m} {wf} {f}");
                for choice in [Choice::Best, Choice::Avx512, Choice::Avx2] {
                    let got = device_linear_with(&x, &w, &s, choice).unwrap();
                    let what = format!("m={m} {wf} {f} acc={a} out={out} {choice:?}");
                    assert_bits_eq(got.as_f32().unwrap(), &want.to_f32_vec(), &what);
                }
            }
        }
    }
}

/// Inside a team's loop item (one device of a mesh) the fast kernel takes a call whole instead
/// of in column blocks: the same bits as the reference emulation, as outside one.
#[test]
fn device_linear_in_a_loop_item_matches_the_emulation() {
    let (m, k, n) = (1, 640, 2100); // m·k·n above PARALLEL_WORK: outside an item it splits
    let x = Tensor::from_f32(ordinary(m * k, 2.0, 11), &[m, k]).unwrap();
    let wt = Tensor::from_f32_as(&ordinary(n * k, 0.05, 12), &[n, k], DType::Bf16).unwrap();
    let w = DeviceWeight::pack(&wt, StorageFormat::Bfp8B).unwrap();
    let s = settings(MathFidelity::HiFi2, Accumulation::Bf16, StorageFormat::Bf16);
    let want = device_linear_reference(&x, &w, &s).unwrap();
    let outside = device_linear(&x, &w, &s).unwrap();
    assert_bits_eq(outside.as_f32().unwrap(), &want.to_f32_vec(), "outside");
    let inside = crate::team::with_team(|| {
        crate::team::map(3, |_| {
            let serial = crate::team::serial_here();
            (serial, device_linear(&x, &w, &s).unwrap())
        })
    });
    for (serial, got) in inside {
        assert!(serial, "a team's loop item runs its nested loops serially");
        let what = format!("in an item (serial here: {serial})");
        assert_bits_eq(got.as_f32().unwrap(), &want.to_f32_vec(), &what);
    }
}
