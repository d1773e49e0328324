//! Elementwise ops: `add`, `mul`, `silu` and the fused MLP gate `silu_mul`.
//!
//! TTNN counterparts: `ttnn.add`, `ttnn.mul`, `ttnn.silu` (and `ttnn.mul(.., input_tensor_a_activation
//! = SILU)` for the fused form). Contract: operands of identical shape (no broadcasting), f32 (bf16
//! operands are widened) -> f32 of the same shape. `silu(x) = x / (1 + exp(-x))` in f32.

use crate::error::{OpError, Result};
use crate::fidelity::Fidelity;
use crate::tensor::{DType, Tensor};

fn same_shape(op: &'static str, a: &Tensor, b: &Tensor) -> Result<()> {
    if a.shape() != b.shape() {
        return Err(OpError::shape(
            op,
            format!(
                "operands differ in shape: {:?} vs {:?}",
                a.shape(),
                b.shape()
            ),
        ));
    }
    Ok(())
}

/// `f` of each pair of values, in chunks over the caller's team when the tensors are
/// prefill-sized ([`crate::team::for_each_chunk_mut`]). Each value is computed alone, so the
/// split changes no number.
fn zip_map(
    op: &'static str,
    a: &Tensor,
    b: &Tensor,
    f: impl Fn(f32, f32) -> f32 + Sync,
) -> Result<Tensor> {
    same_shape(op, a, b)?;
    let (x, y) = (a.f32_values(), b.f32_values());
    let (x, y) = (&x[..], &y[..]);
    let mut out = vec![0.0f32; x.len()];
    crate::team::for_each_chunk_mut(&mut out, |at, dst| {
        let pairs = x[at..at + dst.len()].iter().zip(&y[at..at + dst.len()]);
        for (d, (&p, &q)) in dst.iter_mut().zip(pairs) {
            *d = f(p, q);
        }
    });
    Tensor::from_f32(out, a.shape())
}

/// `silu(x) = x * sigmoid(x)` as f32.
#[inline]
pub fn silu_scalar(x: f32) -> f32 {
    x / (1.0 + (-x).exp())
}

/// `a + b`.
pub fn add(a: &Tensor, b: &Tensor) -> Result<Tensor> {
    zip_map("add", a, b, |p, q| p + q)
}

/// `a += b` in place (the residual update; `a` must be f32).
pub fn add_inplace(a: &mut Tensor, b: &Tensor) -> Result<()> {
    same_shape("add_inplace", a, b)?;
    let y = b.f32_values();
    for (p, &q) in a.as_f32_mut()?.iter_mut().zip(y.iter()) {
        *p += q;
    }
    Ok(())
}

/// `a * b`.
pub fn mul(a: &Tensor, b: &Tensor) -> Result<Tensor> {
    zip_map("mul", a, b, |p, q| p * q)
}

/// `silu(x)`.
pub fn silu(x: &Tensor) -> Result<Tensor> {
    let v = x.f32_values();
    Tensor::from_f32(v.iter().map(|&p| silu_scalar(p)).collect(), x.shape())
}

/// `up * silu(gate)`, the Phi-3 MLP gate, in one pass (same numbers as `mul(up, silu(gate))`).
pub fn silu_mul(gate: &Tensor, up: &Tensor) -> Result<Tensor> {
    zip_map("silu_mul", gate, up, |g, u| u * silu_scalar(g))
}

/// The MLP gate with the device's roundings, in one pass and in place:
/// `up = r(r(up) * silu(r(gate)))`, `r` rounding to `fidelity` ([`Fidelity::round_value`]). The same
/// numbers as rounding `gate` and `up`, then [`silu_mul`], then rounding the result; `up` (f32)
/// holds the result, so a prefill's gate costs no new buffer and one pass over memory.
pub fn silu_mul_rounded(gate: &Tensor, up: &mut Tensor, fidelity: Fidelity) -> Result<()> {
    same_shape("silu_mul_rounded", gate, up)?;
    let g = gate.f32_values();
    let g = &g[..];
    let r = |v: f32| fidelity.round_value(v);
    if up.dtype() != DType::F32 {
        *up = up.to_dtype(DType::F32);
    }
    crate::team::for_each_chunk_mut(up.as_f32_mut()?, |at, dst| {
        let gates = &g[at..at + dst.len()];
        for (u, &g) in dst.iter_mut().zip(gates) {
            *u = r(r(*u) * silu_scalar(r(g)));
        }
    });
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::{assert_close_f64, rand_vec};
    use proptest::prelude::*;

    #[test]
    fn silu_mul_rounded_is_the_three_steps_bit_for_bit() {
        // Short (one chunk) and long (split over the team); gates over the whole useful range.
        for len in [37, 300_001] {
            let g: Vec<f32> = rand_vec(len, 7).iter().map(|v| v * 12.0).collect();
            let u = rand_vec(len, 8);
            let (gt, ut) = (
                Tensor::from_f32(g, &[len]).unwrap(),
                Tensor::from_f32(u, &[len]).unwrap(),
            );
            for fidelity in [Fidelity::F32, Fidelity::Bf16] {
                // The three steps the decoder ran before, on an up stored as f32 or as bf16.
                let r = |t: &Tensor| fidelity.round(t.clone()).unwrap();
                let bits = |t: &Tensor| -> Vec<u32> {
                    t.as_f32().unwrap().iter().map(|v| v.to_bits()).collect()
                };
                for up in [ut.clone(), ut.to_dtype(DType::Bf16)] {
                    let want = r(&silu_mul(&r(&gt), &r(&up)).unwrap());
                    let mut got = up;
                    silu_mul_rounded(&gt, &mut got, fidelity).unwrap();
                    assert!(bits(&got) == bits(&want), "len {len} {fidelity:?}");
                }
            }
        }
        let mut short = Tensor::zeros(&[3], DType::F32);
        let gate = Tensor::zeros(&[4], DType::F32);
        assert!(silu_mul_rounded(&gate, &mut short, Fidelity::Bf16).is_err());
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 32, ..ProptestConfig::default() })]
        #[test]
        fn match_f64_reference(a in 1usize..5, b in 1usize..70, seed: u64) {
            let x: Vec<f32> = rand_vec(a * b, seed).iter().map(|v| v * 8.0).collect();
            let y = rand_vec(a * b, seed ^ 3);
            let xt = Tensor::from_f32(x.clone(), &[a, b]).unwrap();
            let yt = Tensor::from_f32(y.clone(), &[a, b]).unwrap();
            let silu64 = |v: f64| v / (1.0 + (-v).exp());
            let pairs = x.iter().zip(&y).map(|(&p, &q)| (p as f64, q as f64));
            let want_add: Vec<f64> = pairs.clone().map(|(p, q)| p + q).collect();
            let want_mul: Vec<f64> = pairs.clone().map(|(p, q)| p * q).collect();
            let want_silu: Vec<f64> = x.iter().map(|&p| silu64(p as f64)).collect();
            let want_sm: Vec<f64> = pairs.map(|(p, q)| q * silu64(p)).collect();
            assert_close_f64(add(&xt, &yt).unwrap().as_f32().unwrap(), &want_add, 1e-7);
            assert_close_f64(mul(&xt, &yt).unwrap().as_f32().unwrap(), &want_mul, 1e-7);
            assert_close_f64(silu(&xt).unwrap().as_f32().unwrap(), &want_silu, 1e-6);
            let sm = silu_mul(&xt, &yt).unwrap();
            assert_close_f64(sm.as_f32().unwrap(), &want_sm, 1e-6);
            let two_step = mul(&yt, &silu(&xt).unwrap()).unwrap();
            prop_assert_eq!(sm.as_f32().unwrap(), two_step.as_f32().unwrap());
            let mut acc = xt.clone();
            add_inplace(&mut acc, &yt.to_dtype(DType::Bf16)).unwrap();
            let want_acc: Vec<f64> = x.iter().zip(yt.to_dtype(DType::Bf16).to_f32_vec()).map(|(&p, q)| p as f64 + q as f64).collect();
            assert_close_f64(acc.as_f32().unwrap(), &want_acc, 1e-7);
        }
    }

    #[test]
    fn chunked_ops_equal_the_serial_loop() {
        // Past the parallel threshold, with a short last chunk.
        let n = 4 * crate::team::CHUNK + 1234;
        let x: Vec<f32> = rand_vec(n, 7).iter().map(|v| v * 8.0).collect();
        let y = rand_vec(n, 8);
        let xt = Tensor::from_f32(x.clone(), &[n]).unwrap();
        let yt = Tensor::from_f32(y.clone(), &[n]).unwrap();
        let sm = silu_mul(&xt, &yt).unwrap();
        let want: Vec<f32> = x
            .iter()
            .zip(&y)
            .map(|(&g, &u)| u * silu_scalar(g))
            .collect();
        assert_eq!(sm.as_f32().unwrap(), &want[..]);
        let sum = add(&xt, &yt).unwrap();
        let want: Vec<f32> = x.iter().zip(&y).map(|(&p, &q)| p + q).collect();
        assert_eq!(sum.as_f32().unwrap(), &want[..]);
    }

    #[test]
    fn rejects_shape_mismatch() {
        let a = Tensor::zeros(&[2, 3], DType::F32);
        let b = Tensor::zeros(&[3, 2], DType::F32);
        assert!(matches!(add(&a, &b), Err(OpError::Shape { .. })));
        assert!(matches!(mul(&a, &b), Err(OpError::Shape { .. })));
        assert!(matches!(silu_mul(&a, &b), Err(OpError::Shape { .. })));
        let mut c = a.clone();
        assert!(matches!(
            add_inplace(&mut c, &b),
            Err(OpError::Shape { .. })
        ));
        let mut d = Tensor::zeros(&[2, 3], DType::Bf16);
        assert!(matches!(
            add_inplace(&mut d, &a),
            Err(OpError::DType { .. })
        ));
    }
}
