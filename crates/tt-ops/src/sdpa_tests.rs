//! Tests of prefill attention: f64 reference on random shapes and masks, and bad input.
#![allow(clippy::needless_range_loop)]

use super::*;
use crate::testutil::{assert_close_attention, assert_close_f64, attend_ref, rand_vec};
use proptest::prelude::*;

/// Naive f64 attention with the module's mask contract.
fn reference(q: &Tensor, k: &Tensor, v: &Tensor, o: &SdpaOptions) -> Vec<f64> {
    let [b, nh, sq, dh] = q.dims::<4>().unwrap();
    let [_, nkv, sk, _] = k.dims::<4>().unwrap();
    let (qv, kv, vv) = (q.to_f32_vec(), k.to_f32_vec(), v.to_f32_vec());
    let scale = o.scale.map_or(1.0 / (dh as f64).sqrt(), f64::from);
    let mut out = Vec::new();
    for bi in 0..b {
        for h in 0..nh {
            let kvh = h / (nh / nkv);
            for i in 0..sq {
                let p = o.q_offset + i;
                let keep =
                    |j: usize| !o.causal || (j <= p && o.sliding_window.is_none_or(|w| j + w > p));
                let rows: Vec<usize> = (0..sk).filter(|&j| keep(j)).collect();
                let base = (bi * nkv + kvh) * sk * dh;
                let ks: Vec<&[f32]> = rows
                    .iter()
                    .map(|&j| &kv[base + j * dh..base + (j + 1) * dh])
                    .collect();
                let vs: Vec<&[f32]> = rows
                    .iter()
                    .map(|&j| &vv[base + j * dh..base + (j + 1) * dh])
                    .collect();
                let qa = ((bi * nh + h) * sq + i) * dh;
                out.extend(attend_ref(&qv[qa..qa + dh], &ks, &vs, scale));
            }
        }
    }
    out
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]
    #[test]
    fn matches_f64_reference(
        b in 1usize..3, nkv in 1usize..3, rep in 1usize..4, sq in 1usize..80, extra in 0usize..40,
        dh in prop::sample::select(vec![1usize, 7, 16, 33, 96]),
        causal: bool, window in prop::option::of(1usize..50), bf16_kv: bool,
        scale in prop::option::of(0.05f32..1.0), seed: u64,
    ) {
        let nh = nkv * rep;
        let sk = sq + extra;
        let opts = SdpaOptions {
            causal,
            scale,
            sliding_window: if causal { window } else { None },
            q_offset: if causal { extra } else { extra / 2 },
        };
        let q = Tensor::from_f32(rand_vec(b * nh * sq * dh, seed), &[b, nh, sq, dh]).unwrap();
        let dt = if bf16_kv { DType::Bf16 } else { DType::F32 };
        let k = Tensor::from_f32_as(&rand_vec(b * nkv * sk * dh, seed ^ 1), &[b, nkv, sk, dh], dt).unwrap();
        let v = Tensor::from_f32_as(&rand_vec(b * nkv * sk * dh, seed ^ 2), &[b, nkv, sk, dh], dt).unwrap();
        let y = scaled_dot_product_attention(&q, &k, &v, &opts).unwrap();
        prop_assert_eq!(y.shape(), q.shape());
        let v_max = v.to_f32_vec().iter().fold(0.0f64, |m, x| m.max(f64::from(x.abs())));
        assert_close_attention(y.as_f32().unwrap(), &reference(&q, &k, &v, &opts), v_max, 1e-5);
    }
}

#[test]
fn long_causal_sequence_matches_reference() {
    let (nh, s, dh) = (2, 300, 64);
    let q = Tensor::from_f32(
        rand_vec(nh * s * dh, 1).iter().map(|x| x * 4.0).collect(),
        &[1, nh, s, dh],
    )
    .unwrap();
    let k = Tensor::from_f32(rand_vec(nh * s * dh, 2), &[1, nh, s, dh]).unwrap();
    let v = Tensor::from_f32(rand_vec(nh * s * dh, 3), &[1, nh, s, dh]).unwrap();
    for window in [None, Some(70)] {
        let opts = SdpaOptions {
            sliding_window: window,
            ..SdpaOptions::default()
        };
        let y = scaled_dot_product_attention(&q, &k, &v, &opts).unwrap();
        assert_close_f64(y.as_f32().unwrap(), &reference(&q, &k, &v, &opts), 1e-5);
    }
}

#[test]
fn chunked_prefill_equals_full_prefill() {
    let (nh, s, dh) = (2, 96, 16);
    let q = Tensor::from_f32(rand_vec(nh * s * dh, 4), &[1, nh, s, dh]).unwrap();
    let k = Tensor::from_f32(rand_vec(nh * s * dh, 5), &[1, nh, s, dh]).unwrap();
    let v = Tensor::from_f32(rand_vec(nh * s * dh, 6), &[1, nh, s, dh]).unwrap();
    let full = scaled_dot_product_attention(&q, &k, &v, &SdpaOptions::default()).unwrap();
    // second half of the queries against the whole cache
    let q2 = q
        .select(0)
        .unwrap()
        .narrow(1, 64, 32)
        .unwrap()
        .reshape(&[1, nh, 32, dh])
        .unwrap();
    let opts = SdpaOptions {
        q_offset: 64,
        ..SdpaOptions::default()
    };
    let part = scaled_dot_product_attention(&q2, &k, &v, &opts).unwrap();
    let full_tail = full.select(0).unwrap().narrow(1, 64, 32).unwrap();
    assert_eq!(part.as_f32().unwrap(), full_tail.as_f32().unwrap());
}

#[test]
fn rejects_bad_input() {
    let q = Tensor::zeros(&[1, 4, 8, 16], DType::F32);
    let k = Tensor::zeros(&[1, 2, 8, 16], DType::F32);
    let d = SdpaOptions::default();
    let sdpa = |q: &Tensor, k: &Tensor, v: &Tensor, o: &SdpaOptions| {
        scaled_dot_product_attention(q, k, v, o)
    };
    assert!(sdpa(&q, &k, &k, &d).is_ok());
    // nh not a multiple of nkv
    let k3 = Tensor::zeros(&[1, 3, 8, 16], DType::F32);
    assert!(matches!(
        sdpa(&q, &k3, &k3, &d),
        Err(OpError::Heads { nh: 4, nkv: 3, .. })
    ));
    // shape mismatches: head_dim, batch, v vs k, rank
    let kd = Tensor::zeros(&[1, 2, 8, 8], DType::F32);
    assert!(matches!(sdpa(&q, &kd, &kd, &d), Err(OpError::Shape { .. })));
    let kb = Tensor::zeros(&[2, 2, 8, 16], DType::F32);
    assert!(matches!(sdpa(&q, &kb, &kb, &d), Err(OpError::Shape { .. })));
    let v9 = Tensor::zeros(&[1, 2, 9, 16], DType::F32);
    assert!(matches!(sdpa(&q, &k, &v9, &d), Err(OpError::Shape { .. })));
    assert!(matches!(
        sdpa(&Tensor::zeros(&[4, 8, 16], DType::F32), &k, &k, &d),
        Err(OpError::Shape { .. })
    ));
    // k/v dtypes differ
    assert!(matches!(
        sdpa(&q, &k, &k.to_dtype(DType::Bf16), &d),
        Err(OpError::DType { .. })
    ));
    // query positions past the keys
    let o = SdpaOptions { q_offset: 1, ..d };
    assert!(matches!(
        sdpa(&q, &k, &k, &o),
        Err(OpError::OutOfRange { .. })
    ));
    // window without causal, zero window, bad scale
    let o = SdpaOptions {
        causal: false,
        sliding_window: Some(4),
        ..d
    };
    assert!(matches!(
        sdpa(&q, &k, &k, &o),
        Err(OpError::InvalidArgument { .. })
    ));
    let o = SdpaOptions {
        sliding_window: Some(0),
        ..d
    };
    assert!(matches!(
        sdpa(&q, &k, &k, &o),
        Err(OpError::InvalidArgument { .. })
    ));
    let o = SdpaOptions {
        scale: Some(f32::INFINITY),
        ..d
    };
    assert!(matches!(
        sdpa(&q, &k, &k, &o),
        Err(OpError::InvalidArgument { .. })
    ));
    // non-causal with no keys
    let k0 = Tensor::zeros(&[1, 2, 0, 16], DType::F32);
    let o = SdpaOptions { causal: false, ..d };
    assert!(matches!(sdpa(&q, &k0, &k0, &o), Err(OpError::Shape { .. })));
}
