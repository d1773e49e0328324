//! Tests of the cache-writing ops: contents against index formulas, paged vs contiguous, bad input.
#![allow(clippy::needless_range_loop)]

use super::*;
use crate::testutil::{rand_vec, random_page_table, to_paged};
use proptest::prelude::*;

proptest! {
    #![proptest_config(ProptestConfig { cases: 32, ..ProptestConfig::default() })]
    #[test]
    fn fill_and_update_write_the_right_rows_in_both_layouts(
        b in 1usize..4, nkv in 1usize..3, bps in 1usize..4, dh in 1usize..9, bf16: bool, seed: u64,
    ) {
        let block = TILE;
        let len = bps * block;
        let dt = if bf16 { DType::Bf16 } else { DType::F32 };
        let num_blocks = b * bps + 2;
        let table = random_page_table(b, bps, num_blocks, seed);
        let mut contiguous = Tensor::zeros(&[b, nkv, len, dh], dt);
        let mut paged = to_paged(&contiguous, &table, num_blocks, block, 7.0);
        let mut want = vec![0.0f32; b * nkv * len * dh];
        // prefill user `u` with s rows at a tile-aligned offset
        let u = (seed as usize) % b;
        let start = ((seed as usize / 7) % bps) * block;
        let s = 1 + (seed as usize / 31) % (len - start);
        let x = Tensor::from_f32_as(&rand_vec(nkv * s * dh, seed), &[1, nkv, s, dh], dt).unwrap();
        fill_cache(&mut contiguous, &x, u, start).unwrap();
        paged_fill_cache(&mut paged, &x, &table, u, start).unwrap();
        let xv = x.to_f32_vec();
        for h in 0..nkv { for r in 0..s {
            let d = ((u * nkv + h) * len + start + r) * dh;
            want[d..d + dh].copy_from_slice(&xv[(h * s + r) * dh..(h * s + r + 1) * dh]);
        }}
        // one decode row per user, some users skipped
        let pos: Vec<i32> = (0..b).map(|i| if (seed >> i) & 1 == 1 { -1 } else { ((seed as usize >> (4 + i)) % len) as i32 }).collect();
        let row = Tensor::from_f32(rand_vec(b * nkv * dh, seed ^ 9), &[1, b, nkv, dh]).unwrap();
        paged_update_cache(&mut contiguous, &row, &pos, None).unwrap();
        paged_update_cache(&mut paged, &row, &pos, Some(&table)).unwrap();
        let rv = row.to_dtype(dt).to_f32_vec();
        for (i, &p) in pos.iter().enumerate() {
            if p < 0 { continue; }
            for h in 0..nkv {
                let d = ((i * nkv + h) * len + p as usize) * dh;
                want[d..d + dh].copy_from_slice(&rv[(i * nkv + h) * dh..(i * nkv + h + 1) * dh]);
            }
        }
        prop_assert_eq!(contiguous.to_f32_vec(), want);
        prop_assert_eq!(contiguous.dtype(), dt);
        prop_assert_eq!(paged.to_f32_vec(), to_paged(&contiguous, &table, num_blocks, block, 7.0).to_f32_vec());
    }
}

#[test]
fn bf16_cache_rounds_to_nearest_even() {
    let mut cache = Tensor::zeros(&[1, 1, 32, 2], DType::Bf16);
    let x = Tensor::from_f32(vec![1.0 + 1.0 / 256.0, 0.1], &[1, 1, 1, 2]).unwrap();
    fill_cache(&mut cache, &x, 0, 0).unwrap();
    assert_eq!(&cache.to_f32_vec()[..2], &[1.0, 0.100_097_656]);
}

#[test]
fn rejects_bad_input_and_leaves_cache_unchanged() {
    let mut cache = Tensor::zeros(&[2, 2, 64, 4], DType::Bf16);
    let x = Tensor::full(&[1, 2, 8, 4], 1.0, DType::F32);
    // batch index, unaligned and overflowing update index, shape mismatch
    assert!(matches!(
        fill_cache(&mut cache, &x, 2, 0),
        Err(OpError::OutOfRange { .. })
    ));
    assert!(matches!(
        fill_cache(&mut cache, &x, 0, 16),
        Err(OpError::InvalidArgument { .. })
    ));
    assert!(matches!(
        fill_cache(&mut cache, &x, 0, 64),
        Err(OpError::OutOfRange { .. })
    ));
    let x3 = Tensor::full(&[1, 3, 8, 4], 1.0, DType::F32);
    assert!(matches!(
        fill_cache(&mut cache, &x3, 0, 0),
        Err(OpError::Shape { .. })
    ));
    assert!(matches!(
        fill_cache(&mut cache, &Tensor::zeros(&[2, 8, 4], DType::F32), 0, 0),
        Err(OpError::Shape { .. })
    ));
    let long = Tensor::full(&[1, 2, 40, 4], 1.0, DType::F32);
    assert!(matches!(
        fill_cache(&mut cache, &long, 0, 32),
        Err(OpError::OutOfRange { .. })
    ));
    // update: position past the cache, below -1, wrong batch
    let row = Tensor::full(&[1, 2, 2, 4], 1.0, DType::F32);
    assert!(matches!(
        paged_update_cache(&mut cache, &row, &[0, 64], None),
        Err(OpError::OutOfRange { .. })
    ));
    assert!(matches!(
        paged_update_cache(&mut cache, &row, &[-2, 0], None),
        Err(OpError::OutOfRange { .. })
    ));
    assert!(matches!(
        paged_update_cache(&mut cache, &row, &[0], None),
        Err(OpError::Shape { .. })
    ));
    assert!(
        cache.to_f32_vec().iter().all(|&v| v == 0.0),
        "a failed call wrote into the cache"
    );
    // paged: entry outside the cache, negative entry, block not a multiple of 32, table size
    let mut paged = Tensor::zeros(&[3, 2, 32, 4], DType::F32);
    let table = PageTable::new(vec![0, 3, 1, -1], 2, 2).unwrap();
    assert!(paged_update_cache(&mut paged, &row, &[31, 31], Some(&table)).is_ok());
    assert!(matches!(
        paged_update_cache(&mut paged, &row, &[32, 0], Some(&table)),
        Err(OpError::OutOfRange {
            index: 3,
            bound: 3,
            ..
        })
    ));
    assert!(matches!(
        paged_update_cache(&mut paged, &row, &[0, 40], Some(&table)),
        Err(OpError::OutOfRange { index: -1, .. })
    ));
    assert!(matches!(
        paged_update_cache(&mut paged, &row, &[0, 64], Some(&table)),
        Err(OpError::OutOfRange { .. })
    ));
    assert!(matches!(
        paged_fill_cache(&mut paged, &long, &table, 0, 0),
        Err(OpError::OutOfRange { index: 3, .. })
    ));
    let mut odd = Tensor::zeros(&[3, 2, 16, 4], DType::F32);
    assert!(matches!(
        paged_update_cache(&mut odd, &row, &[0, 0], Some(&table)),
        Err(OpError::Shape { .. })
    ));
    assert!(matches!(
        PageTable::new(vec![0; 3], 2, 2),
        Err(OpError::DataLength { .. })
    ));
    let t1 = PageTable::new(vec![0, 1], 1, 2).unwrap();
    assert!(matches!(
        paged_update_cache(&mut paged, &row, &[0, 0], Some(&t1)),
        Err(OpError::Shape { .. })
    ));
}
