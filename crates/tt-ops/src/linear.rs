//! `linear`: `y = x @ W^T` with bf16 or f32 weights and f32 accumulation.
//!
//! TTNN counterpart: `ttnn.linear(x, w)` / `ttnn.matmul` (no bias; Phi-3 has none).
//! Contract: `x [.., K]` (any leading dims, f32; bf16 is widened) and `w [N, K]` in the HF
//! `nn.Linear` layout (one output feature per row) -> f32 `[.., N]`. The device stores the weight
//! transposed; the host keeps HF's row-major layout and the kernels in [`crate::kernels`] read it
//! as is: `matmul_bf16` widens bf16 to f32 in registers, so weights stay bf16 in memory. `w` may be
//! a column view of a wider matrix ([`Tensor::columns`]): the kernels read its rows in place.
//! With bf16 weights and bf16-valued activations, prefill-sized products may run on oneDNN's
//! matrix-unit kernels instead, where the library loads ([`crate::kernels::path`]).

use tt_numerics::StorageFormat;

use crate::device_format::write_in_format;
use crate::error::{OpError, Result};
use crate::kernels::path::try_amx_blocks;
use crate::kernels::{matmul_bf16_column_blocks_into, matmul_bf16_strided, matmul_f32_strided};
use crate::tensor::{DType, Tensor, UnwrittenF32};

const OP: &str = "linear";

/// Checks `x [.., K]` against `w [N, K]`; returns `(m, k, n, output shape)`.
fn plan(x: &Tensor, w: &Tensor) -> Result<(usize, usize, usize, Vec<usize>)> {
    let [n, k] = w
        .dims::<2>()
        .map_err(|_| OpError::shape(OP, format!("weight must be [N, K], got {:?}", w.shape())))?;
    let Some((&xk, lead)) = x.shape().split_last() else {
        return Err(OpError::shape(OP, "x must have at least one dimension"));
    };
    if xk != k {
        return Err(OpError::shape(
            OP,
            format!(
                "x {:?} has K = {xk} but weight {:?} has K = {k}",
                x.shape(),
                w.shape()
            ),
        ));
    }
    let m = lead.iter().product();
    let mut out = lead.to_vec();
    out.push(n);
    Ok((m, k, n, out))
}

/// `x [.., K] @ w^T` for `w [N, K]`: a new f32 tensor `[.., N]`.
pub fn linear(x: &Tensor, w: &Tensor) -> Result<Tensor> {
    linear_stored(x, w, StorageFormat::F32)
}

/// [`linear()`] with its output as the device writes it in `format`: the same values as
/// [`write_in_format`] on [`linear()`]'s, bit for bit. A bf16 output is rounded by the
/// AMX kernel as it stores each value, where that kernel runs (one pass less over a prefill's
/// outputs); every other case rounds after the product.
pub fn linear_stored(x: &Tensor, w: &Tensor, format: StorageFormat) -> Result<Tensor> {
    let (m, k, n, shape) = plan(x, w)?;
    let xs = x.f32_values();
    let mut out = UnwrittenF32::line_aligned(&shape);
    if w.dtype() == DType::Bf16 {
        let (ws, ldw) = w.bf16_rows()?;
        let round = format == StorageFormat::Bf16;
        if try_amx_blocks(&xs, ws, ldw, &mut [out.elements()], m, k, n, round) {
            // SAFETY: the AMX kernel returned true: it wrote every element, rounded if asked.
            let out = unsafe { out.assume_written() };
            return if round {
                Ok(out)
            } else {
                write_in_format(out, format)
            };
        }
    }
    let mut out = out.zeroed();
    product_into(&xs, w, out.as_f32_mut()?, m, k, n)?;
    write_in_format(out, format)
}

/// `x [.., K] @ w^T` written into `out` (f32, shape `[.., N]`), reusing its buffer: the
/// allocation-free form for decode loops.
pub fn linear_into(x: &Tensor, w: &Tensor, out: &mut Tensor) -> Result<()> {
    let (m, k, n, shape) = plan(x, w)?;
    if out.shape() != shape.as_slice() {
        return Err(OpError::shape(
            OP,
            format!("out must be {shape:?}, got {:?}", out.shape()),
        ));
    }
    product_into(&x.f32_values(), w, out.as_f32_mut()?, m, k, n)
}

/// `dst [m, n] = xs [m, k] @ w^T` on the kernel for `w`'s dtype (shapes checked by [`plan`]).
fn product_into(
    xs: &[f32],
    w: &Tensor,
    dst: &mut [f32],
    m: usize,
    k: usize,
    n: usize,
) -> Result<()> {
    match w.dtype() {
        DType::Bf16 => {
            let (ws, ldw) = w.bf16_rows()?;
            matmul_bf16_strided(xs, ws, ldw, dst, m, k, n);
        }
        DType::F32 => {
            let (ws, ldw) = w.f32_rows()?;
            matmul_f32_strided(xs, ws, ldw, dst, m, k, n);
        }
    }
    Ok(())
}

/// The row-parallel `linear` of several devices at once: `xs[b] [.., kb] @ w[:, b*kb..(b+1)*kb]^T`
/// for every block `b` of `w [N, blocks * kb]`, each an f32 `[.., N]` partial sum.
///
/// Device `b` of a row-parallel layer holds columns `b*kb ..` of the weight; computing every
/// device's product in one call lets the kernel stream the whole matrix once, contiguously,
/// instead of each device striding over its column block (see
/// [`crate::kernels::matmul_bf16_column_blocks`]). Each result depends only on its own block, as
/// if every device had run [`linear`] on its shard. Errors unless every `xs[b]` has the same
/// leading dims and last dim `kb`, and `blocks` divides `w`'s width.
pub fn linear_column_blocks(xs: &[&Tensor], w: &Tensor) -> Result<Vec<Tensor>> {
    linear_column_blocks_stored(xs, w, StorageFormat::F32)
}

/// [`linear_column_blocks`] with each block's output as the device writes it in `format` (as
/// [`linear_stored`]).
pub fn linear_column_blocks_stored(
    xs: &[&Tensor],
    w: &Tensor,
    format: StorageFormat,
) -> Result<Vec<Tensor>> {
    const OP: &str = "linear_column_blocks";
    let Some(first) = xs.first() else {
        return Err(OpError::invalid(OP, "no activations given"));
    };
    let blocks = xs.len();
    let [n, k] = w
        .dims::<2>()
        .map_err(|_| OpError::shape(OP, format!("weight must be [N, K], got {:?}", w.shape())))?;
    if !k.is_multiple_of(blocks) {
        return Err(OpError::shape(
            OP,
            format!("{blocks} column blocks do not divide the weight's K = {k}"),
        ));
    }
    let kb = k / blocks;
    let Some((_, lead)) = first.shape().split_last() else {
        return Err(OpError::shape(
            OP,
            "activations must have at least one dimension",
        ));
    };
    for x in xs {
        if x.shape().split_last() != Some((&kb, lead)) {
            return Err(OpError::shape(
                OP,
                format!(
                    "every activation must be {:?} (K = {k} over {blocks} blocks), got {:?}",
                    [lead, &[kb]].concat(),
                    x.shape()
                ),
            ));
        }
    }
    if w.dtype() != DType::Bf16 || !w.is_contiguous() {
        return xs
            .iter()
            .enumerate()
            .map(|(b, x)| linear_stored(x, &w.columns(b * kb, kb)?, format))
            .collect();
    }
    let m: usize = lead.iter().product();
    let mut x_all: Vec<f32> = crate::pages::zeroed_vec(m * k);
    for (b, x) in xs.iter().enumerate() {
        let xv = x.f32_values();
        for i in 0..m {
            x_all[i * k + b * kb..i * k + (b + 1) * kb].copy_from_slice(&xv[i * kb..(i + 1) * kb]);
        }
    }
    // One tensor per block, written in place (a prefill's partial sums are megabytes): by the
    // AMX kernel without zeroing them first where it runs, else zeroed and by the others.
    let shape = [lead, &[n]].concat();
    let mut outs: Vec<UnwrittenF32> = (0..blocks)
        .map(|_| UnwrittenF32::line_aligned(&shape))
        .collect();
    let wb = w.as_bf16()?;
    let mut views: Vec<_> = outs.iter_mut().map(UnwrittenF32::elements).collect();
    let round = format == StorageFormat::Bf16;
    if try_amx_blocks(&x_all, wb, k, &mut views, m, kb, n, round) {
        // SAFETY: the AMX kernel returned true: it wrote every element of every block, rounded
        // if asked.
        let outs = outs.into_iter().map(|o| unsafe { o.assume_written() });
        return if round {
            Ok(outs.collect())
        } else {
            outs.map(|o| write_in_format(o, format)).collect()
        };
    }
    let mut outs: Vec<Tensor> = outs.into_iter().map(UnwrittenF32::zeroed).collect();
    let mut views = outs
        .iter_mut()
        .map(Tensor::as_f32_mut)
        .collect::<Result<Vec<_>>>()?;
    matmul_bf16_column_blocks_into(&x_all, wb, &mut views, m, k, n);
    outs.into_iter()
        .map(|o| write_in_format(o, format))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::device_format::round_to_device_format;
    use crate::testutil::rand_vec;
    use proptest::prelude::*;

    /// f64 products and, per output, the scale `sum_k |x_k w_k|` its rounding error is bounded by.
    fn reference(x: &[f32], w: &[f32], m: usize, k: usize, n: usize) -> (Vec<f64>, Vec<f64>) {
        let mut out = vec![0.0; m * n];
        let mut mag = vec![0.0; m * n];
        for i in 0..m {
            for j in 0..n {
                let terms = (0..k).map(|p| x[i * k + p] as f64 * w[j * k + p] as f64);
                out[i * n + j] = terms.clone().sum();
                mag[i * n + j] = terms.map(f64::abs).sum();
            }
        }
        (out, mag)
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 32, ..ProptestConfig::default() })]
        #[test]
        fn matches_f64_reference(b in 1usize..3, s in 1usize..20, k in 1usize..70, n in 1usize..40, seed: u64) {
            let x = rand_vec(b * s * k, seed);
            let w = rand_vec(n * k, seed ^ 1);
            let xt = Tensor::from_f32(x.clone(), &[b, s, k]).unwrap();
            let wt = Tensor::from_f32(w, &[n, k]).unwrap();
            for wd in [wt.clone(), wt.to_dtype(DType::Bf16)] {
                let y = linear(&xt, &wd).unwrap();
                prop_assert_eq!(y.shape(), &[b, s, n]);
                let (want, mag) = reference(&x, &wd.to_f32_vec(), b * s, k, n);
                for ((g, w), a) in y.as_f32().unwrap().iter().zip(&want).zip(&mag) {
                    // f32 accumulation: error within a few k * eps of sum |x w| (k <= 70 here)
                    prop_assert!((*g as f64 - w).abs() <= 1e-5 * a + 1e-30, "{g} vs {w} (scale {a})");
                }
            }
        }
    }

    #[test]
    fn column_view_weights_match_copied_blocks() {
        // A row-parallel shard: columns 96..192 of a [70, 288] bf16 matrix, read in place.
        let (n, full, k0, k) = (70, 288, 96, 96);
        let wide = Tensor::from_f32_as(&rand_vec(n * full, 1), &[n, full], DType::Bf16).unwrap();
        let view = wide.columns(k0, k).unwrap();
        let copy = view.contiguous();
        for m in [1, 3, 8, 9, 40] {
            let x = Tensor::from_f32(rand_vec(m * k, m as u64), &[m, k]).unwrap();
            let got = linear(&x, &view).unwrap();
            let want = linear(&x, &copy).unwrap();
            assert_eq!(got.as_f32().unwrap(), want.as_f32().unwrap(), "m={m}");
        }
    }

    #[test]
    fn column_blocks_equal_each_device_alone() {
        // 8 devices' row-parallel shards of a [70, 8 * 48] matrix, in both dtypes and both paths.
        let (n, kb, blocks) = (70, 48, 8);
        for dtype in [DType::Bf16, DType::F32] {
            let w = Tensor::from_f32_as(&rand_vec(n * kb * blocks, 9), &[n, kb * blocks], dtype)
                .unwrap();
            for m in [1, 5, 12] {
                let xs: Vec<Tensor> = (0..blocks)
                    .map(|b| Tensor::from_f32(rand_vec(m * kb, b as u64), &[m, kb]).unwrap())
                    .collect();
                let refs: Vec<&Tensor> = xs.iter().collect();
                let got = linear_column_blocks(&refs, &w).unwrap();
                for (b, x) in xs.iter().enumerate() {
                    let alone = linear(x, &w.columns(b * kb, kb).unwrap().contiguous()).unwrap();
                    let (g, a) = (got[b].as_f32().unwrap(), alone.as_f32().unwrap());
                    let worst = g
                        .iter()
                        .zip(a)
                        .map(|(p, q)| (p - q).abs())
                        .fold(0.0, f32::max);
                    assert!(worst <= 1e-5, "{dtype:?} m={m} b={b}: {worst}");
                    assert_eq!(got[b].shape(), &[m, n]);
                }
            }
        }
        let w = Tensor::zeros(&[4, 10], DType::Bf16);
        let x = Tensor::zeros(&[1, 5], DType::F32);
        assert!(linear_column_blocks(&[], &w).is_err());
        assert!(
            linear_column_blocks(&[&x, &x, &x], &w).is_err(),
            "3 blocks of 10"
        );
        let y = Tensor::zeros(&[2, 5], DType::F32);
        let err = linear_column_blocks(&[&x, &y], &w).unwrap_err();
        assert!(
            err.to_string().contains("every activation must be [1, 5]"),
            "{err}"
        );
    }

    #[test]
    fn prefill_sized_products_match_the_reference() {
        // Sizes the matrix units take (bf16 weights and activations, m >= 32, k a multiple of
        // 32): where AMX runs, its outputs start unwritten, so every element must be written.
        let (m, kb, n, blocks) = (40, 64, 70, 4);
        let k = kb * blocks;
        let xt = crate::Fidelity::Bf16
            .round(Tensor::from_f32(rand_vec(m * k, 5), &[m, k]).unwrap())
            .unwrap();
        let w = Tensor::from_f32_as(&rand_vec(n * k, 6), &[n, k], DType::Bf16).unwrap();
        let check = |got: &Tensor, x: &Tensor, w: &Tensor, what: &str| {
            let k = x.shape()[1];
            let (want, mag) = reference(&x.to_f32_vec(), &w.to_f32_vec(), m, k, n);
            assert_eq!(got.shape(), &[m, n], "{what}");
            for ((g, w), a) in got.as_f32().unwrap().iter().zip(&want).zip(&mag) {
                assert!(
                    (*g as f64 - w).abs() <= 1e-5 * a + 1e-30,
                    "{what}: {g} vs {w}"
                );
            }
        };
        check(&linear(&xt, &w).unwrap(), &xt, &w, "linear");
        let xs: Vec<Tensor> = (0..blocks)
            .map(|b| xt.columns(b * kb, kb).unwrap().contiguous())
            .collect();
        let refs: Vec<&Tensor> = xs.iter().collect();
        let parts = linear_column_blocks(&refs, &w).unwrap();
        for (b, part) in parts.iter().enumerate() {
            let wb = w.columns(b * kb, kb).unwrap();
            check(part, &xs[b], &wb, &format!("block {b}"));
        }
    }

    #[test]
    fn stored_outputs_are_the_products_rounded_after() {
        // m = 40: where AMX runs, it rounds bf16 outputs as it stores them; m = 3: the other
        // kernels, rounded after. Either way, the bits of rounding `linear`'s output.
        let (kb, n, blocks) = (64, 70, 4);
        let k = kb * blocks;
        let w = Tensor::from_f32_as(&rand_vec(n * k, 6), &[n, k], DType::Bf16).unwrap();
        let bits =
            |t: &Tensor| -> Vec<u32> { t.as_f32().unwrap().iter().map(|v| v.to_bits()).collect() };
        let rounded = |t: Tensor, format| {
            let mut t = t;
            round_to_device_format(t.as_f32_mut().unwrap(), n, format).unwrap();
            t
        };
        for m in [40, 3] {
            let xt = crate::Fidelity::Bf16
                .round(Tensor::from_f32(rand_vec(m * k, 5), &[m, k]).unwrap())
                .unwrap();
            let xs: Vec<Tensor> = (0..blocks)
                .map(|b| xt.columns(b * kb, kb).unwrap().contiguous())
                .collect();
            let refs: Vec<&Tensor> = xs.iter().collect();
            let plain = linear(&xt, &w).unwrap();
            let parts = linear_column_blocks(&refs, &w).unwrap();
            for format in [
                StorageFormat::F32,
                StorageFormat::Bf16,
                StorageFormat::Bfp8B,
            ] {
                let want = rounded(plain.clone(), format);
                let got = linear_stored(&xt, &w, format).unwrap();
                assert!(bits(&got) == bits(&want), "m {m} {format:?}");
                let got = linear_column_blocks_stored(&refs, &w, format).unwrap();
                for (b, (g, p)) in got.iter().zip(&parts).enumerate() {
                    let want = rounded(p.clone(), format);
                    assert!(bits(g) == bits(&want), "m {m} {format:?} block {b}");
                }
            }
        }
    }

    #[test]
    fn rejects_mismatched_shapes() {
        let x = Tensor::zeros(&[2, 5], DType::F32);
        let w = Tensor::zeros(&[3, 4], DType::Bf16);
        assert!(matches!(linear(&x, &w), Err(OpError::Shape { .. })));
        let w3 = Tensor::zeros(&[1, 3, 5], DType::Bf16);
        assert!(matches!(linear(&x, &w3), Err(OpError::Shape { .. })));
        let scalar = Tensor::zeros(&[], DType::F32);
        assert!(matches!(linear(&scalar, &w), Err(OpError::Shape { .. })));
        let w = Tensor::zeros(&[3, 5], DType::Bf16);
        let mut out = Tensor::zeros(&[2, 4], DType::F32);
        assert!(matches!(
            linear_into(&x, &w, &mut out),
            Err(OpError::Shape { .. })
        ));
        let mut out = Tensor::zeros(&[2, 3], DType::Bf16);
        assert!(matches!(
            linear_into(&x, &w, &mut out),
            Err(OpError::DType { .. })
        ));
    }
}
