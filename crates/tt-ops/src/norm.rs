//! `rms_norm`: root-mean-square normalisation over the last dimension, in fp32 as HF computes it.
//!
//! TTNN counterpart: `ttnn.rms_norm(x, epsilon, weight)`.
//! Contract: `x [.., H]` and `weight [H]` (f32 or bf16) -> f32 `[.., H]` with
//! `y = weight * (x * (1 / sqrt(mean(x^2) + eps)))`. The mean of squares is accumulated in f64 and
//! rounded to f32; the reciprocal root and both products are f32, in HF's order.

use rayon::prelude::*;

use crate::error::{OpError, Result};
use crate::tensor::Tensor;

const OP: &str = "rms_norm";

/// RMS-normalise each row of `x [.., H]` and scale by `weight [H]`.
pub fn rms_norm(x: &Tensor, weight: &Tensor, eps: f32) -> Result<Tensor> {
    let mut out = Tensor::zeros(x.shape(), crate::DType::F32);
    rms_norm_into(x, weight, eps, &mut out)?;
    Ok(out)
}

/// [`rms_norm`] written into `out` (f32, same shape as `x`), reusing its buffer.
pub fn rms_norm_into(x: &Tensor, weight: &Tensor, eps: f32, out: &mut Tensor) -> Result<()> {
    let Some(&h) = x.shape().last() else {
        return Err(OpError::shape(OP, "x must have at least one dimension"));
    };
    if weight.shape() != [h] {
        return Err(OpError::shape(
            OP,
            format!(
                "weight must be [{h}] for x {:?}, got {:?}",
                x.shape(),
                weight.shape()
            ),
        ));
    }
    if out.shape() != x.shape() {
        return Err(OpError::shape(
            OP,
            format!("out must be {:?}, got {:?}", x.shape(), out.shape()),
        ));
    }
    if !(eps >= 0.0 && eps.is_finite()) || h == 0 {
        return Err(OpError::invalid(
            OP,
            format!("need eps >= 0 and H > 0 (eps {eps}, H {h})"),
        ));
    }
    let xs = x.f32_values();
    let w = weight.f32_values();
    let dst = out.as_f32_mut()?;
    let norm_row = |(src, dst): (&[f32], &mut [f32])| {
        let ss: f64 = src.iter().map(|&v| f64::from(v) * f64::from(v)).sum();
        let var = (ss / h as f64) as f32;
        let r = 1.0 / (var + eps).sqrt();
        for ((d, &s), &wv) in dst.iter_mut().zip(src).zip(w.iter()) {
            *d = wv * (s * r);
        }
    };
    let rows = xs.len() / h;
    if rows >= 64 {
        xs.par_chunks(h)
            .zip(dst.par_chunks_mut(h))
            .for_each(norm_row);
    } else {
        xs.chunks(h).zip(dst.chunks_mut(h)).for_each(norm_row);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::DType;
    use crate::testutil::{assert_close_f64, rand_vec};
    use proptest::prelude::*;

    fn reference(x: &[f32], w: &[f32], eps: f64) -> Vec<f64> {
        let h = w.len();
        x.chunks(h)
            .flat_map(|row| {
                let ms = row.iter().map(|&v| (v as f64).powi(2)).sum::<f64>() / h as f64;
                let r = 1.0 / (ms + eps).sqrt();
                row.iter()
                    .zip(w)
                    .map(move |(&v, &wv)| wv as f64 * v as f64 * r)
            })
            .collect()
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]
        #[test]
        fn matches_f64_reference(rows in 1usize..100, h in 1usize..300, seed: u64) {
            let x = rand_vec(rows * h, seed);
            let w = rand_vec(h, seed ^ 7);
            let xt = Tensor::from_f32(x.clone(), &[rows, h]).unwrap();
            for wt in [Tensor::from_f32(w.clone(), &[h]).unwrap(), Tensor::from_f32_as(&w, &[h], DType::Bf16).unwrap()] {
                let y = rms_norm(&xt, &wt, 1e-5).unwrap();
                let want = reference(&x, &wt.to_f32_vec(), 1e-5);
                assert_close_f64(y.as_f32().unwrap(), &want, 1e-6);
            }
        }
    }

    #[test]
    fn rejects_bad_input() {
        let x = Tensor::zeros(&[2, 4], DType::F32);
        let w = Tensor::zeros(&[3], DType::F32);
        assert!(matches!(rms_norm(&x, &w, 1e-5), Err(OpError::Shape { .. })));
        let w = Tensor::zeros(&[4], DType::F32);
        assert!(matches!(
            rms_norm(&x, &w, f32::NAN),
            Err(OpError::InvalidArgument { .. })
        ));
        assert!(matches!(
            rms_norm(&x, &w, -1.0),
            Err(OpError::InvalidArgument { .. })
        ));
        let mut out = Tensor::zeros(&[4, 2], DType::F32);
        assert!(matches!(
            rms_norm_into(&x, &w, 1e-5, &mut out),
            Err(OpError::Shape { .. })
        ));
        let scalar = Tensor::zeros(&[], DType::F32);
        assert!(matches!(
            rms_norm(&scalar, &w, 1e-5),
            Err(OpError::Shape { .. })
        ));
    }
}
