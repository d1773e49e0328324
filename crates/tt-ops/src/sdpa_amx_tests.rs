//! Tests of the tile-unit attention: the probability split, the f64 reference over shapes and
//! masks (bf16 Q, K, V), the native kernel beside it, and the calls it must refuse. The kernel
//! tests need AMX-BF16; elsewhere they say so and return.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use half::bf16;
use proptest::prelude::*;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::*;
use crate::kernels::amx_gemm::Amx;
use crate::testutil::{attend_ref, rand_vec, rel_max_err};

/// `n` values uniform in `[-scale, scale)`, rounded to bf16.
fn bf16_values(n: usize, scale: f32, seed: u64) -> Vec<f32> {
    rand_vec(n, seed)
        .into_iter()
        .map(|x| bf16::from_f32(x * scale).to_f32())
        .collect()
}

/// Attention in f64 with the module's mask contract, `[b, nh, sq, dh]` out.
fn reference(q: &[f32], k: &[f32], v: &[f32], b: usize, d: Dims, o: &SdpaOptions) -> Vec<f64> {
    let scale = o.scale.map_or(1.0 / (d.dh as f64).sqrt(), f64::from);
    let mut out = Vec::new();
    for bi in 0..b {
        for h in 0..d.nh {
            let base = (bi * d.nkv + h / (d.nh / d.nkv)) * d.sk * d.dh;
            for i in 0..d.sq {
                let (lo, hi) = visible(o.q_offset + i, d.sk, o);
                let ks: Vec<&[f32]> = (lo..hi)
                    .map(|j| &k[base + j * d.dh..base + (j + 1) * d.dh])
                    .collect();
                let vs: Vec<&[f32]> = (lo..hi)
                    .map(|j| &v[base + j * d.dh..base + (j + 1) * d.dh])
                    .collect();
                let qa = ((bi * d.nh + h) * d.sq + i) * d.dh;
                out.extend(attend_ref(&q[qa..qa + d.dh], &ks, &vs, scale));
            }
        }
    }
    out
}

fn no_amx(test: &str) -> bool {
    if Amx::detect().is_none() {
        println!("{test}: skipped, no AMX-BF16 here");
        return true;
    }
    false
}

#[test]
fn three_parts_sum_to_the_probability_exactly() {
    let mut rng = ChaCha8Rng::seed_from_u64(7);
    let mut xs: Vec<f32> = (0..100_000)
        .map(|_| rng.random_range(0.0f32..=1.0))
        .collect();
    // exp(-t) over a wide range of t, as the softmax makes them.
    xs.extend((0..2000).map(|i| (-(i as f32) * 0.037).exp()));
    xs.extend([0.0, 1.0, f32::EPSILON, 1.0 - f32::EPSILON / 2.0, 1e-30]);
    for x in xs {
        let parts = split3(x);
        let sum: f64 = parts
            .iter()
            .map(|&b| f64::from(f32::from_bits(u32::from(b) << 16)))
            .sum();
        assert_eq!(sum, f64::from(x), "{x:e} = {parts:?}");
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 40, ..ProptestConfig::default() })]
    #[test]
    fn matches_f64_reference_and_the_native_kernel(
        b in 1usize..3, nkv in 1usize..3, rep in 1usize..3, sq in 16usize..150, extra in 0usize..90,
        dh in prop::sample::select(vec![32usize, 64, 96, 128]),
        causal: bool, window in prop::option::of(1usize..80), bf16_kv: bool,
        scale in prop::option::of(0.05f32..1.0), seed: u64,
    ) {
        if no_amx("matches_f64_reference_and_the_native_kernel") {
            return Ok(());
        }
        let d = Dims { nh: nkv * rep, sq, dh, nkv, sk: sq + extra };
        let opts = SdpaOptions {
            causal,
            scale,
            sliding_window: if causal { window } else { None },
            q_offset: if causal { extra } else { extra / 2 },
        };
        // Scores up to ~±8: the softmax is neither flat nor one-hot.
        let q = bf16_values(b * d.nh * sq * dh, 3.0, seed);
        let k = bf16_values(b * nkv * d.sk * dh, 3.0, seed ^ 1);
        let v = bf16_values(b * nkv * d.sk * dh, 1.0, seed ^ 2);
        let s = opts.scale.unwrap_or(1.0 / (dh as f32).sqrt());
        let mut got = vec![0f32; q.len()];
        let ran = if bf16_kv {
            let kb: Vec<bf16> = k.iter().map(|&x| bf16::from_f32(x)).collect();
            let vb: Vec<bf16> = v.iter().map(|&x| bf16::from_f32(x)).collect();
            attention(&q, &kb, &vb, d, &opts, s, &mut got)
        } else {
            attention(&q, &k, &v, d, &opts, s, &mut got)
        };
        prop_assert!(ran, "the tile unit must take this call");
        let want = reference(&q, &k, &v, b, d, &opts);
        prop_assert!(got.iter().all(|x| x.is_finite()));
        let err = rel_max_err(&got, &want);
        prop_assert!(err <= 1e-5, "relative max error {err:e} against f64");
        // The native kernel on the same values: the same sums up to their order.
        let mut native = vec![0f32; q.len()];
        crate::sdpa::native(&q, &k, &v, [b, d.nh, sq, dh], nkv, d.sk, &opts, s, &mut native);
        let native64: Vec<f64> = native.iter().map(|&x| f64::from(x)).collect();
        let apart = rel_max_err(&got, &native64);
        prop_assert!(apart <= 1e-5, "{apart:e} from the native kernel");
    }
}

/// The tile unit's results do not depend on how the prompt is cut: a chunk of queries over the
/// whole cache gives the same bits as those rows of the full prefill (key blocks are aligned to
/// positions, not to the chunk).
#[test]
fn a_chunk_equals_the_same_rows_of_the_full_prefill() {
    if no_amx("a_chunk_equals_the_same_rows_of_the_full_prefill") {
        return;
    }
    let (nh, s, dh) = (2, 200, 96);
    let q = bf16_values(nh * s * dh, 3.0, 4);
    let k = bf16_values(nh * s * dh, 3.0, 5);
    let v = bf16_values(nh * s * dh, 1.0, 6);
    let d = Dims {
        nh,
        sq: s,
        dh,
        nkv: nh,
        sk: s,
    };
    let scale = 1.0 / (dh as f32).sqrt();
    let mut full = vec![0f32; q.len()];
    assert!(attention(
        &q,
        &k,
        &v,
        d,
        &SdpaOptions::default(),
        scale,
        &mut full
    ));
    let (start, len) = (77, 51);
    let chunk_q: Vec<f32> = (0..nh)
        .flat_map(|h| q[(h * s + start) * dh..(h * s + start + len) * dh].to_vec())
        .collect();
    let opts = SdpaOptions {
        q_offset: start,
        ..SdpaOptions::default()
    };
    let mut part = vec![0f32; chunk_q.len()];
    let d = Dims { sq: len, ..d };
    assert!(attention(&chunk_q, &k, &v, d, &opts, scale, &mut part));
    for h in 0..nh {
        let want = &full[(h * s + start) * dh..(h * s + start + len) * dh];
        let got = &part[h * len * dh..(h + 1) * len * dh];
        assert!(
            got.iter()
                .zip(want)
                .all(|(a, b)| a.to_bits() == b.to_bits()),
            "head {h}"
        );
    }
}

#[test]
fn refuses_what_it_cannot_compute_exactly() {
    let (nh, s) = (1, 32);
    let d = Dims {
        nh,
        sq: s,
        dh: 32,
        nkv: 1,
        sk: s,
    };
    let opts = SdpaOptions::default();
    let bf = bf16_values(s * 32, 1.0, 8);
    let mut out = vec![7.0f32; s * 32];
    // A query, key or value that is not a bf16 value; dh not a multiple of 32; a short prompt.
    let mut not_bf16 = bf.clone();
    not_bf16[100] = 0.1;
    assert!(!attention(&not_bf16, &bf, &bf, d, &opts, 0.1, &mut out));
    assert!(!attention(&bf, &not_bf16, &bf, d, &opts, 0.1, &mut out));
    assert!(!attention(&bf, &bf, &not_bf16, d, &opts, 0.1, &mut out));
    let d48 = Dims {
        dh: 48,
        sq: 20,
        sk: 20,
        ..d
    };
    assert!(!attention(
        &bf[..960],
        &bf[..960],
        &bf[..960],
        d48,
        &opts,
        0.1,
        &mut out[..960]
    ));
    let short = Dims {
        sq: MIN_SQ - 1,
        sk: MIN_SQ - 1,
        ..d
    };
    let n = (MIN_SQ - 1) * 32;
    assert!(!attention(
        &bf[..n],
        &bf[..n],
        &bf[..n],
        short,
        &opts,
        0.1,
        &mut out[..n]
    ));
    assert!(
        out.iter().all(|&x| x == 7.0),
        "a refused call leaves out untouched"
    );
}
