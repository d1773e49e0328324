//! `embedding`: look up rows of a table by token id.
//!
//! TTNN counterpart: `ttnn.embedding(input_ids, weight)`.
//! Contract: `ids` (any number of tokens) and `weight [V, H]` (f32 or bf16) -> f32 `[ids.len(), H]`;
//! the caller reshapes (e.g. to `[B, 1, S, H]`). Every id must be `< V`.

use crate::error::{OpError, Result};
use crate::tensor::{DType, Element, Tensor};

/// Rows `ids` of `weight [V, H]`, widened to f32: `[ids.len(), H]`.
pub fn embedding(ids: &[u32], weight: &Tensor) -> Result<Tensor> {
    const OP: &str = "embedding";
    let [v, h] = weight.dims::<2>().map_err(|_| {
        OpError::shape(
            OP,
            format!("weight must be [V, H], got {:?}", weight.shape()),
        )
    })?;
    for (i, &id) in ids.iter().enumerate() {
        if id as usize >= v {
            return Err(OpError::out_of_range(
                OP,
                format!("ids[{i}]"),
                i64::from(id),
                v,
            ));
        }
    }
    fn gather<E: Element>(ids: &[u32], w: &[E], h: usize) -> Vec<f32> {
        let mut out = Vec::with_capacity(ids.len() * h);
        for &id in ids {
            let row = &w[id as usize * h..(id as usize + 1) * h];
            out.extend(row.iter().map(|x| x.to_f32()));
        }
        out
    }
    let out = match weight.dtype() {
        DType::F32 => gather(ids, weight.as_f32()?, h),
        DType::Bf16 => gather(ids, weight.as_bf16()?, h),
    };
    Tensor::from_f32(out, &[ids.len(), h])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gathers_rows_for_both_dtypes() {
        let w: Vec<f32> = (0..12).map(|i| i as f32 * 0.5).collect();
        let t = Tensor::from_f32(w.clone(), &[4, 3]).unwrap();
        for table in [t.clone(), t.to_dtype(DType::Bf16)] {
            let e = embedding(&[3, 0, 3], &table).unwrap();
            assert_eq!(e.shape(), &[3, 3]);
            let want: Vec<f32> = [3usize, 0, 3]
                .iter()
                .flat_map(|&r| w[r * 3..r * 3 + 3].to_vec())
                .collect();
            assert_eq!(e.as_f32().unwrap(), want.as_slice());
        }
        assert_eq!(embedding(&[], &t).unwrap().shape(), &[0, 3]);
    }

    #[test]
    fn rejects_bad_ids_and_shapes() {
        let t = Tensor::zeros(&[4, 3], DType::Bf16);
        assert!(matches!(
            embedding(&[1, 4], &t),
            Err(OpError::OutOfRange {
                index: 4,
                bound: 4,
                ..
            })
        ));
        let flat = Tensor::zeros(&[12], DType::F32);
        assert!(matches!(embedding(&[0], &flat), Err(OpError::Shape { .. })));
    }
}
