//! Head reshapes: `nlp_create_qkv_heads` and `nlp_concat_heads`, prefill and decode forms.
//!
//! TTNN counterparts: `ttnn.experimental.nlp_create_qkv_heads`, `nlp_create_qkv_heads_decode`,
//! `nlp_concat_heads`, `nlp_concat_heads_decode`. Pure data movement: the dtype is preserved.
//! - `nlp_create_qkv_heads(x [B, 1, S, (nh + 2 nkv) dh])` -> Q `[B, nh, S, dh]`, K, V `[B, nkv, S, dh]`
//!   where each row of `x` is `[Q heads | K heads | V heads]` (HF's fused qkv_proj order).
//! - `nlp_create_qkv_heads_decode(x [1, 1, B, (nh + 2 nkv) dh])` -> Q `[1, B, nh, dh]`,
//!   K, V `[1, B, nkv, dh]` (the device pads heads to 32; the host does not).
//! - `nlp_concat_heads([B, nh, S, dh])` -> `[B, 1, S, nh dh]`.
//! - `nlp_concat_heads_decode([1, B, nh, dh])` -> `[1, 1, B, nh dh]` (a view).

use crate::error::{OpError, Result};
use crate::tensor::{DType, Element, Tensor};

/// Checks the fused width and returns `dh`.
fn head_dim(op: &'static str, width: usize, nh: usize, nkv: usize) -> Result<usize> {
    let heads = nh + 2 * nkv;
    if nh == 0 || nkv == 0 || width == 0 || !width.is_multiple_of(heads) {
        return Err(OpError::shape(
            op,
            format!(
                "last dim {width} is not (nh {nh} + 2 * nkv {nkv}) * head_dim with head_dim > 0"
            ),
        ));
    }
    Ok(width / heads)
}

/// Split `groups * seq` rows of `[Q | K | V]` heads into `[groups, heads, seq, dh]` (`head_major`)
/// or `[groups, seq, heads, dh]` (not `head_major`, the decode layout).
fn split<E: Element>(
    src: &[E],
    groups: usize,
    seq: usize,
    nh: usize,
    nkv: usize,
    dh: usize,
    head_major: bool,
) -> [Vec<E>; 3] {
    let width = (nh + 2 * nkv) * dh;
    let parts = [(0, nh), (nh, nkv), (nh + nkv, nkv)];
    parts.map(|(first, count)| {
        let mut out = Vec::with_capacity(groups * count * seq * dh);
        for g in 0..groups {
            if head_major {
                for h in 0..count {
                    for s in 0..seq {
                        let at = (g * seq + s) * width + (first + h) * dh;
                        out.extend_from_slice(&src[at..at + dh]);
                    }
                }
            } else {
                for s in 0..seq {
                    let at = (g * seq + s) * width + first * dh;
                    out.extend_from_slice(&src[at..at + count * dh]);
                }
            }
        }
        out
    })
}

fn make3<E: Element>(
    parts: [Vec<E>; 3],
    shapes: [[usize; 4]; 3],
) -> Result<(Tensor, Tensor, Tensor)> {
    let [q, k, v] = parts;
    Ok((
        E::tensor(q, &shapes[0])?,
        E::tensor(k, &shapes[1])?,
        E::tensor(v, &shapes[2])?,
    ))
}

/// Prefill: `x [B, 1, S, (nh + 2 nkv) dh]` -> `(Q [B, nh, S, dh], K [B, nkv, S, dh], V [B, nkv, S, dh])`.
pub fn nlp_create_qkv_heads(x: &Tensor, nh: usize, nkv: usize) -> Result<(Tensor, Tensor, Tensor)> {
    const OP: &str = "nlp_create_qkv_heads";
    let [b, one, s, w] = x
        .dims::<4>()
        .map_err(|_| bad_shape(OP, x, "[B, 1, S, (nh + 2 nkv) dh]"))?;
    if one != 1 {
        return Err(bad_shape(OP, x, "[B, 1, S, (nh + 2 nkv) dh]"));
    }
    let dh = head_dim(OP, w, nh, nkv)?;
    let shapes = [[b, nh, s, dh], [b, nkv, s, dh], [b, nkv, s, dh]];
    match x.dtype() {
        DType::F32 => make3(split(x.as_f32()?, b, s, nh, nkv, dh, true), shapes),
        DType::Bf16 => make3(split(x.as_bf16()?, b, s, nh, nkv, dh, true), shapes),
    }
}

/// Decode: `x [1, 1, B, (nh + 2 nkv) dh]` -> `(Q [1, B, nh, dh], K [1, B, nkv, dh], V [1, B, nkv, dh])`.
pub fn nlp_create_qkv_heads_decode(
    x: &Tensor,
    nh: usize,
    nkv: usize,
) -> Result<(Tensor, Tensor, Tensor)> {
    const OP: &str = "nlp_create_qkv_heads_decode";
    let [o1, o2, b, w] = x
        .dims::<4>()
        .map_err(|_| bad_shape(OP, x, "[1, 1, B, (nh + 2 nkv) dh]"))?;
    if o1 != 1 || o2 != 1 {
        return Err(bad_shape(OP, x, "[1, 1, B, (nh + 2 nkv) dh]"));
    }
    let dh = head_dim(OP, w, nh, nkv)?;
    let shapes = [[1, b, nh, dh], [1, b, nkv, dh], [1, b, nkv, dh]];
    match x.dtype() {
        DType::F32 => make3(split(x.as_f32()?, 1, b, nh, nkv, dh, false), shapes),
        DType::Bf16 => make3(split(x.as_bf16()?, 1, b, nh, nkv, dh, false), shapes),
    }
}

/// Prefill: `[B, nh, S, dh]` -> `[B, 1, S, nh dh]`.
pub fn nlp_concat_heads(x: &Tensor) -> Result<Tensor> {
    const OP: &str = "nlp_concat_heads";
    let [b, nh, s, dh] = x
        .dims::<4>()
        .map_err(|_| bad_shape(OP, x, "[B, nh, S, dh]"))?;
    fn go<E: Element>(src: &[E], [b, nh, s, dh]: [usize; 4]) -> Result<Tensor> {
        let mut out = Vec::with_capacity(src.len());
        for bi in 0..b {
            for si in 0..s {
                for h in 0..nh {
                    let at = ((bi * nh + h) * s + si) * dh;
                    out.extend_from_slice(&src[at..at + dh]);
                }
            }
        }
        E::tensor(out, &[b, 1, s, nh * dh])
    }
    match x.dtype() {
        DType::F32 => go(x.as_f32()?, [b, nh, s, dh]),
        DType::Bf16 => go(x.as_bf16()?, [b, nh, s, dh]),
    }
}

/// Decode: `[1, B, nh, dh]` -> `[1, 1, B, nh dh]` (a view; no copy).
pub fn nlp_concat_heads_decode(x: &Tensor) -> Result<Tensor> {
    const OP: &str = "nlp_concat_heads_decode";
    let [one, b, nh, dh] = x
        .dims::<4>()
        .map_err(|_| bad_shape(OP, x, "[1, B, nh, dh]"))?;
    if one != 1 {
        return Err(bad_shape(OP, x, "[1, B, nh, dh]"));
    }
    x.reshape(&[1, 1, b, nh * dh])
}

fn bad_shape(op: &'static str, x: &Tensor, want: &str) -> OpError {
    OpError::shape(op, format!("x must be {want}, got {:?}", x.shape()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::rand_vec;
    use proptest::prelude::*;

    /// Element `[b, s, c]` of the fused input by (part, head, d) with an index formula.
    fn at(w: usize, dh: usize, b: usize, s: usize, seq: usize, head: usize, d: usize) -> usize {
        (b * seq + s) * w + head * dh + d
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 32, ..ProptestConfig::default() })]
        #[test]
        fn create_and_concat_follow_the_index_contract(b in 1usize..3, s in 1usize..5, nkv in 1usize..3, rep in 1usize..3, dh in 1usize..9, seed: u64) {
            let nh = nkv * rep;
            let w = (nh + 2 * nkv) * dh;
            let data = rand_vec(b * s * w, seed);
            let x = Tensor::from_f32(data.clone(), &[b, 1, s, w]).unwrap();
            let (q, k, v) = nlp_create_qkv_heads(&x, nh, nkv).unwrap();
            prop_assert_eq!(q.shape(), &[b, nh, s, dh]);
            prop_assert_eq!(k.shape(), &[b, nkv, s, dh]);
            let (qv, kv, vv) = (q.as_f32().unwrap(), k.as_f32().unwrap(), v.as_f32().unwrap());
            for bi in 0..b { for si in 0..s { for d in 0..dh {
                for h in 0..nh {
                    prop_assert_eq!(qv[((bi * nh + h) * s + si) * dh + d], data[at(w, dh, bi, si, s, h, d)]);
                }
                for h in 0..nkv {
                    prop_assert_eq!(kv[((bi * nkv + h) * s + si) * dh + d], data[at(w, dh, bi, si, s, nh + h, d)]);
                    prop_assert_eq!(vv[((bi * nkv + h) * s + si) * dh + d], data[at(w, dh, bi, si, s, nh + nkv + h, d)]);
                }
            }}}
            // concat(Q) gives back the Q columns of x
            let c = nlp_concat_heads(&q).unwrap();
            prop_assert_eq!(c.shape(), &[b, 1, s, nh * dh]);
            let cv = c.as_f32().unwrap();
            for bi in 0..b { for si in 0..s { for j in 0..nh * dh {
                prop_assert_eq!(cv[(bi * s + si) * nh * dh + j], data[(bi * s + si) * w + j]);
            }}}
            // decode forms: batch in dim 2, one token per user
            let xd = x.reshape(&[1, 1, b * s, w]).unwrap().to_dtype(DType::Bf16);
            let (qd, kd, vd) = nlp_create_qkv_heads_decode(&xd, nh, nkv).unwrap();
            prop_assert_eq!(qd.dtype(), DType::Bf16);
            prop_assert_eq!(qd.shape(), &[1, b * s, nh, dh]);
            let (qd, kd, vd) = (qd.to_f32_vec(), kd.to_f32_vec(), vd.to_f32_vec());
            let xdv = xd.to_f32_vec();
            for u in 0..b * s { for d in 0..dh {
                for h in 0..nh { prop_assert_eq!(qd[(u * nh + h) * dh + d], xdv[u * w + h * dh + d]); }
                for h in 0..nkv {
                    prop_assert_eq!(kd[(u * nkv + h) * dh + d], xdv[u * w + (nh + h) * dh + d]);
                    prop_assert_eq!(vd[(u * nkv + h) * dh + d], xdv[u * w + (nh + nkv + h) * dh + d]);
                }
            }}
            let qd4 = Tensor::from_f32(qd.clone(), &[1, b * s, nh, dh]).unwrap();
            let cd = nlp_concat_heads_decode(&qd4).unwrap();
            prop_assert_eq!(cd.shape(), &[1, 1, b * s, nh * dh]);
            prop_assert!(cd.shares_storage(&qd4));
        }
    }

    #[test]
    fn rejects_bad_shapes() {
        let x = Tensor::zeros(&[1, 1, 2, 30], DType::F32);
        assert!(matches!(
            nlp_create_qkv_heads(&x, 4, 2),
            Err(OpError::Shape { .. })
        )); // 30 % 8 != 0
        assert!(matches!(
            nlp_create_qkv_heads(&x, 0, 2),
            Err(OpError::Shape { .. })
        ));
        assert!(matches!(
            nlp_create_qkv_heads(&Tensor::zeros(&[1, 2, 2, 32], DType::F32), 4, 2),
            Err(OpError::Shape { .. })
        ));
        assert!(matches!(
            nlp_create_qkv_heads(&Tensor::zeros(&[2, 32], DType::F32), 4, 2),
            Err(OpError::Shape { .. })
        ));
        assert!(matches!(
            nlp_create_qkv_heads_decode(&Tensor::zeros(&[2, 1, 2, 32], DType::F32), 4, 2),
            Err(OpError::Shape { .. })
        ));
        assert!(matches!(
            nlp_create_qkv_heads_decode(&x, 4, 2),
            Err(OpError::Shape { .. })
        ));
        assert!(matches!(
            nlp_concat_heads(&Tensor::zeros(&[2, 3, 4], DType::F32)),
            Err(OpError::Shape { .. })
        ));
        assert!(matches!(
            nlp_concat_heads_decode(&Tensor::zeros(&[2, 3, 4, 5], DType::F32)),
            Err(OpError::Shape { .. })
        ));
    }
}
