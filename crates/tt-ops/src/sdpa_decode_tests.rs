//! Tests of decode attention: f64 reference, paged == contiguous, bad input.
#![allow(clippy::needless_range_loop)]

use super::*;
use crate::cache::TILE;
use crate::testutil::{assert_close_f64, attend_ref, rand_vec, random_page_table, to_paged};
use proptest::prelude::*;

/// Naive f64 decode attention over a contiguous cache.
fn reference(q: &Tensor, k: &Tensor, v: &Tensor, pos: &[i32], o: &SdpaDecodeOptions) -> Vec<f64> {
    let [_, b, nh, dh] = q.dims::<4>().unwrap();
    let [_, nkv, len, _] = k.dims::<4>().unwrap();
    let (qv, kv, vv) = (q.to_f32_vec(), k.to_f32_vec(), v.to_f32_vec());
    let scale = o.scale.map_or(1.0 / (dh as f64).sqrt(), f64::from);
    let mut out = Vec::new();
    for u in 0..b {
        for h in 0..nh {
            let base = (u * nkv + h / (nh / nkv)) * len * dh;
            let p = pos[u];
            let rows: Vec<usize> = (0..len)
                .filter(|&j| {
                    p >= 0 && j as i32 <= p && o.sliding_window.is_none_or(|w| j + w > p as usize)
                })
                .collect();
            let ks: Vec<&[f32]> = rows
                .iter()
                .map(|&j| &kv[base + j * dh..base + (j + 1) * dh])
                .collect();
            let vs: Vec<&[f32]> = rows
                .iter()
                .map(|&j| &vv[base + j * dh..base + (j + 1) * dh])
                .collect();
            let qa = (u * nh + h) * dh;
            out.extend(attend_ref(&qv[qa..qa + dh], &ks, &vs, scale));
        }
    }
    out
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 40, ..ProptestConfig::default() })]
    #[test]
    fn paged_equals_contiguous_and_matches_f64(
        b in 1usize..4, nkv in 1usize..3, rep in 1usize..4, bps in 1usize..12,
        dh in prop::sample::select(vec![3usize, 16, 40, 96]),
        window in prop::option::of(1usize..300), bf16: bool, seed: u64,
    ) {
        let nh = nkv * rep;
        let len = bps * TILE;
        let dt = if bf16 { DType::Bf16 } else { DType::F32 };
        let k = Tensor::from_f32_as(&rand_vec(b * nkv * len * dh, seed), &[b, nkv, len, dh], dt).unwrap();
        let v = Tensor::from_f32_as(&rand_vec(b * nkv * len * dh, seed ^ 1), &[b, nkv, len, dh], dt).unwrap();
        let q = Tensor::from_f32(rand_vec(b * nh * dh, seed ^ 2).iter().map(|x| x * 3.0).collect(), &[1, b, nh, dh]).unwrap();
        let pos: Vec<i32> = (0..b).map(|u| if u == 1 && seed % 3 == 0 { -1 } else { ((seed >> (8 * u)) as usize % len) as i32 }).collect();
        let opts = SdpaDecodeOptions { scale: None, sliding_window: window };
        let contiguous = sdpa_decode(&q, &k, &v, &pos, None, &opts).unwrap();
        assert_close_f64(contiguous.as_f32().unwrap(), &reference(&q, &k, &v, &pos, &opts), 1e-5);
        let num_blocks = b * bps + 3;
        let table = random_page_table(b, bps, num_blocks, seed ^ 3);
        let (kp, vp) = (to_paged(&k, &table, num_blocks, TILE, 9.0), to_paged(&v, &table, num_blocks, TILE, -9.0));
        let paged = sdpa_decode(&q, &kp, &vp, &pos, Some(&table), &opts).unwrap();
        prop_assert_eq!(paged.as_f32().unwrap(), contiguous.as_f32().unwrap());
    }
}

#[test]
fn long_cache_split_into_chunks_matches_reference() {
    let (b, nkv, nh, len, dh) = (2, 2, 4, 2048, 96);
    let k = Tensor::from_f32_as(
        &rand_vec(b * nkv * len * dh, 1),
        &[b, nkv, len, dh],
        DType::Bf16,
    )
    .unwrap();
    let v = Tensor::from_f32_as(
        &rand_vec(b * nkv * len * dh, 2),
        &[b, nkv, len, dh],
        DType::Bf16,
    )
    .unwrap();
    let q = Tensor::from_f32(
        rand_vec(b * nh * dh, 3).iter().map(|x| x * 8.0).collect(),
        &[1, b, nh, dh],
    )
    .unwrap();
    let pos = [2047, 1500];
    let opts = SdpaDecodeOptions::default();
    let y = sdpa_decode(&q, &k, &v, &pos, None, &opts).unwrap();
    assert_close_f64(
        y.as_f32().unwrap(),
        &reference(&q, &k, &v, &pos, &opts),
        1e-5,
    );
}

#[test]
fn skipped_user_gets_zeros() {
    let k = Tensor::from_f32(rand_vec(2 * 32 * 8, 4), &[2, 1, 32, 8]).unwrap();
    let q = Tensor::from_f32(rand_vec(2 * 8, 5), &[1, 2, 1, 8]).unwrap();
    let y = sdpa_decode(&q, &k, &k, &[-1, 3], None, &SdpaDecodeOptions::default()).unwrap();
    assert!(y.as_f32().unwrap()[..8].iter().all(|&x| x == 0.0));
    assert!(y.as_f32().unwrap()[8..].iter().any(|&x| x != 0.0));
}

#[test]
fn rejects_bad_input() {
    let k = Tensor::zeros(&[2, 2, 64, 8], DType::Bf16);
    let q = Tensor::zeros(&[1, 2, 4, 8], DType::F32);
    let d = SdpaDecodeOptions::default();
    assert!(sdpa_decode(&q, &k, &k, &[0, 63], None, &d).is_ok());
    // position past the cache, below -1, wrong count
    assert!(matches!(
        sdpa_decode(&q, &k, &k, &[0, 64], None, &d),
        Err(OpError::OutOfRange {
            index: 64,
            bound: 64,
            ..
        })
    ));
    assert!(matches!(
        sdpa_decode(&q, &k, &k, &[-3, 0], None, &d),
        Err(OpError::OutOfRange { .. })
    ));
    assert!(matches!(
        sdpa_decode(&q, &k, &k, &[0], None, &d),
        Err(OpError::Shape { .. })
    ));
    // heads
    let q3 = Tensor::zeros(&[1, 2, 3, 8], DType::F32);
    assert!(matches!(
        sdpa_decode(&q3, &k, &k, &[0, 0], None, &d),
        Err(OpError::Heads { nh: 3, nkv: 2, .. })
    ));
    // shapes and dtypes
    let qd = Tensor::zeros(&[1, 2, 4, 4], DType::F32);
    assert!(matches!(
        sdpa_decode(&qd, &k, &k, &[0, 0], None, &d),
        Err(OpError::Shape { .. })
    ));
    let q2 = Tensor::zeros(&[2, 2, 4, 8], DType::F32);
    assert!(matches!(
        sdpa_decode(&q2, &k, &k, &[0, 0], None, &d),
        Err(OpError::Shape { .. })
    ));
    let v = Tensor::zeros(&[2, 2, 32, 8], DType::Bf16);
    assert!(matches!(
        sdpa_decode(&q, &k, &v, &[0, 0], None, &d),
        Err(OpError::Shape { .. })
    ));
    assert!(matches!(
        sdpa_decode(&q, &k, &k.to_dtype(DType::F32), &[0, 0], None, &d),
        Err(OpError::DType { .. })
    ));
    assert!(matches!(
        sdpa_decode(
            &q,
            &Tensor::zeros(&[2, 64, 8], DType::F32),
            &Tensor::zeros(&[2, 64, 8], DType::F32),
            &[0, 0],
            None,
            &d
        ),
        Err(OpError::Shape { .. })
    ));
    let w0 = SdpaDecodeOptions {
        sliding_window: Some(0),
        ..d
    };
    assert!(matches!(
        sdpa_decode(&q, &k, &k, &[0, 0], None, &w0),
        Err(OpError::InvalidArgument { .. })
    ));
    // paged: a page table entry outside the cache, only when the rows are read
    let paged = Tensor::zeros(&[3, 2, 32, 8], DType::Bf16);
    let table = PageTable::new(vec![0, 5, 1, 2], 2, 2).unwrap();
    assert!(sdpa_decode(&q, &paged, &paged, &[31, 40], Some(&table), &d).is_ok());
    assert!(matches!(
        sdpa_decode(&q, &paged, &paged, &[32, 0], Some(&table), &d),
        Err(OpError::OutOfRange {
            index: 5,
            bound: 3,
            ..
        })
    ));
    // ... and a window that starts past the bad page does not read it
    let w = SdpaDecodeOptions {
        sliding_window: Some(8),
        ..d
    };
    let table = PageTable::new(vec![7, 0, 1, 2], 2, 2).unwrap();
    assert!(sdpa_decode(&q, &paged, &paged, &[40, 0], Some(&table), &w).is_ok());
    assert!(matches!(
        sdpa_decode(&q, &paged, &paged, &[40, 0], Some(&table), &d),
        Err(OpError::OutOfRange { index: 7, .. })
    ));
}
