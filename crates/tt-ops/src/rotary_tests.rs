//! Tests of the rotary op: f64 reference, the padded layout, decode vs prefill, bad input.
#![allow(clippy::needless_range_loop)]

use super::*;
use crate::testutil::{assert_close_f64, rand_vec};
use proptest::prelude::*;

fn inv_freq(h: usize) -> Vec<f32> {
    (0..h)
        .map(|i| 1.0 / 10000f32.powf(2.0 * i as f32 / (2 * h) as f32))
        .collect()
}

/// f64 rotary of `x [B, H, S, dh]` at positions `pos[s]` with the same table formula.
fn reference(x: &[f32], dims: [usize; 4], inv: &[f32], factor: f32, pos: &[usize]) -> Vec<f64> {
    let [b, nh, s, dh] = dims;
    let h = dh / 2;
    let mut out = vec![0.0; x.len()];
    for bh in 0..b * nh {
        for t in 0..s {
            let at = (bh * s + t) * dh;
            for i in 0..h {
                let a = f64::from(inv[i] * pos[t] as f32);
                let (c, sn) = (a.cos() * f64::from(factor), a.sin() * f64::from(factor));
                let (x1, x2) = (f64::from(x[at + i]), f64::from(x[at + h + i]));
                out[at + i] = x1 * c - x2 * sn;
                out[at + h + i] = x2 * c + x1 * sn;
            }
        }
    }
    out
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 32, ..ProptestConfig::default() })]
    #[test]
    fn prefill_matches_f64_reference(b in 1usize..3, nh in 1usize..4, s in 1usize..12, half in 1usize..50, offset in 0usize..40, seed: u64) {
        let dh = 2 * half;
        let inv = inv_freq(half);
        let (cos, sin) = rope_tables(&inv, 1.190_238, 0, offset + s).unwrap();
        let x = rand_vec(b * nh * s * dh, seed);
        let xt = Tensor::from_f32(x.clone(), &[b, nh, s, dh]).unwrap();
        let y = rotary_embedding(&xt, &cos, &sin, offset).unwrap();
        let pos: Vec<usize> = (offset..offset + s).collect();
        assert_close_f64(y.as_f32().unwrap(), &reference(&x, [b, nh, s, dh], &inv, 1.190_238, &pos), 2e-6);
    }

    #[test]
    fn padded_layout_gives_identical_numbers(nh in 1usize..4, s in 1usize..6, half in 1usize..70, seed: u64) {
        let dh = 2 * half;
        let pad = RotaryPadding::new(dh).unwrap();
        prop_assert_eq!(pad.padded_head_dim() % 64, 0);
        prop_assert!(pad.padded_head_dim() >= dh && pad.padded_head_dim() < dh + 64);
        let (cos, sin) = rope_tables(&inv_freq(half), 1.5, 0, s + 3).unwrap();
        let xt = Tensor::from_f32(rand_vec(nh * s * dh, seed), &[1, nh, s, dh]).unwrap();
        let plain = rotary_embedding(&xt, &cos, &sin, 3).unwrap();
        let (pc, ps) = pad.pad_tables(&cos, &sin).unwrap();
        let padded = rotary_embedding(&pad.pad(&xt, 0.0).unwrap(), &pc, &ps, 3).unwrap();
        let back = pad.unpad(&padded).unwrap();
        prop_assert_eq!(back.shape(), plain.shape());
        prop_assert_eq!(back.as_f32().unwrap(), plain.as_f32().unwrap());
        let padded_bytes = pad.padding_bytes(xt.shape(), DType::Bf16).unwrap();
        prop_assert_eq!(padded_bytes, nh * s * (pad.padded_head_dim() - dh) * 2);
    }
}

#[test]
fn phi3_padding_is_96_to_128() {
    let pad = RotaryPadding::new(96).unwrap();
    assert_eq!(pad.padded_head_dim(), 128);
    assert!(pad.is_padded());
    assert_eq!(
        pad.padded_shape(&[1, 4, 32, 96]).unwrap(),
        vec![1, 4, 32, 128]
    );
    // 4 heads x 32 tokens x 32 padded values x 2 bytes
    assert_eq!(
        pad.padding_bytes(&[1, 4, 32, 96], DType::Bf16).unwrap(),
        4 * 32 * 32 * 2
    );
    assert!(!RotaryPadding::new(128).unwrap().is_padded());
    assert!(matches!(
        RotaryPadding::new(95),
        Err(OpError::InvalidArgument { .. })
    ));
    assert!(matches!(
        pad.padded_shape(&[1, 4, 32, 64]),
        Err(OpError::Shape { .. })
    ));
    assert!(matches!(
        pad.unpad(&Tensor::zeros(&[2, 96], DType::F32)),
        Err(OpError::Shape { .. })
    ));
}

#[test]
fn decode_equals_prefill_at_each_users_position() {
    let (b, nh, dh) = (4, 3, 96);
    let (cos, sin) = rope_tables(&inv_freq(dh / 2), 1.19, 0, 64).unwrap();
    let x = Tensor::from_f32(rand_vec(b * nh * dh, 5), &[1, b, nh, dh]).unwrap();
    let positions = [0, 63, -1, 17];
    let y = rotary_embedding_decode(&x, &cos, &sin, &positions).unwrap();
    for (u, &p) in positions.iter().enumerate() {
        let xu = x.select(0).unwrap().select(u).unwrap();
        let got = y.select(0).unwrap().select(u).unwrap();
        if p < 0 {
            assert_eq!(got.as_f32().unwrap(), xu.as_f32().unwrap());
            continue;
        }
        let pre = rotary_embedding(
            &xu.reshape(&[1, nh, 1, dh]).unwrap(),
            &cos,
            &sin,
            p as usize,
        )
        .unwrap();
        assert_eq!(got.as_f32().unwrap(), pre.as_f32().unwrap());
    }
}

#[test]
fn tables_follow_hf_f32_formula() {
    let inv = inv_freq(4);
    let (cos, sin) = rope_tables(&inv, 1.25, 5, 3).unwrap();
    assert_eq!(cos.shape(), &[3, 8]);
    let (c, s) = (cos.as_f32().unwrap(), sin.as_f32().unwrap());
    for r in 0..3 {
        for i in 0..4 {
            let f = inv[i] * (5 + r) as f32;
            let want_c = ((f as f64).cos() as f32) * 1.25;
            assert_eq!(c[r * 8 + i], want_c);
            assert_eq!(c[r * 8 + 4 + i], want_c);
            assert_eq!(s[r * 8 + i], ((f as f64).sin() as f32) * 1.25);
        }
    }
    // [1, 1, P, dh] tables are accepted as well.
    let x = Tensor::from_f32(rand_vec(8, 1), &[1, 1, 1, 8]).unwrap();
    let c4 = cos.reshape(&[1, 1, 3, 8]).unwrap();
    let s4 = sin.reshape(&[1, 1, 3, 8]).unwrap();
    assert_eq!(
        rotary_embedding(&x, &c4, &s4, 2).unwrap().as_f32().unwrap(),
        rotary_embedding(&x, &cos, &sin, 2)
            .unwrap()
            .as_f32()
            .unwrap()
    );
}

#[test]
fn rejects_bad_input() {
    let (cos, sin) = rope_tables(&inv_freq(4), 1.0, 0, 10).unwrap();
    let x = Tensor::zeros(&[1, 2, 4, 8], DType::F32);
    // position past the table
    assert!(matches!(
        rotary_embedding(&x, &cos, &sin, 7),
        Err(OpError::OutOfRange { .. })
    ));
    // wrong rank / head width
    assert!(matches!(
        rotary_embedding(&Tensor::zeros(&[2, 4, 8], DType::F32), &cos, &sin, 0),
        Err(OpError::Shape { .. })
    ));
    assert!(matches!(
        rotary_embedding(&Tensor::zeros(&[1, 2, 4, 6], DType::F32), &cos, &sin, 0),
        Err(OpError::Shape { .. })
    ));
    // cos and sin disagree / odd width / leading dims not 1
    let (c2, _) = rope_tables(&inv_freq(4), 1.0, 0, 5).unwrap();
    assert!(matches!(
        rotary_embedding(&x, &c2, &sin, 0),
        Err(OpError::Shape { .. })
    ));
    let odd = Tensor::zeros(&[10, 7], DType::F32);
    assert!(matches!(
        rotary_embedding(&Tensor::zeros(&[1, 1, 1, 7], DType::F32), &odd, &odd, 0),
        Err(OpError::Shape { .. })
    ));
    let c3 = cos.reshape(&[2, 5, 8]).unwrap();
    assert!(matches!(
        rotary_embedding(&x, &c3, &c3, 0),
        Err(OpError::Shape { .. })
    ));
    // decode: positions out of range, wrong batch, bad leading dim
    let xd = Tensor::zeros(&[1, 2, 3, 8], DType::F32);
    assert!(matches!(
        rotary_embedding_decode(&xd, &cos, &sin, &[0, 10]),
        Err(OpError::OutOfRange { .. })
    ));
    assert!(matches!(
        rotary_embedding_decode(&xd, &cos, &sin, &[0, -2]),
        Err(OpError::OutOfRange { .. })
    ));
    assert!(matches!(
        rotary_embedding_decode(&xd, &cos, &sin, &[0]),
        Err(OpError::Shape { .. })
    ));
    let xb = Tensor::zeros(&[2, 2, 3, 8], DType::F32);
    assert!(matches!(
        rotary_embedding_decode(&xb, &cos, &sin, &[0, 0]),
        Err(OpError::Shape { .. })
    ));
    // table builder
    assert!(matches!(
        rope_tables(&[], 1.0, 0, 4),
        Err(OpError::InvalidArgument { .. })
    ));
    assert!(matches!(
        rope_tables(&[1.0], f32::NAN, 0, 4),
        Err(OpError::InvalidArgument { .. })
    ));
    assert!(matches!(
        rope_tables(&[1.0], 1.0, 1 << 24, 1),
        Err(OpError::OutOfRange { .. })
    ));
}
