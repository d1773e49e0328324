//! `rotary_embedding`: rotary position embedding in HF's rotate-half layout.
//!
//! TTNN counterpart: `ttnn.experimental.rotary_embedding(x, cos, sin, token_index)`.
//! For a head vector `x` of width `dh = 2h` at table row `p`:
//! `y[i] = x[i]*cos[p][i] - x[i+h]*sin[p][i]` and `y[i+h] = x[i+h]*cos[p][i+h] + x[i]*sin[p][i+h]`
//! (HF's `x*cos + rotate_half(x)*sin`, products and sum rounded in the same order).
//! The tables carry the attention factor already (`cos = cos(f) * factor`, likewise `sin`); build them
//! with [`rope_tables`]. Table shape `[P, dh]` (or `[1, 1, P, dh]`), f32 or bf16.
//! - Prefill ([`rotary_embedding`]): `x [B, H, S, dh]`, token `s` uses row `offset + s`.
//! - Decode ([`rotary_embedding_decode`]): `x [1, B, H, dh]`, user `b` uses row `positions[b]`;
//!   `-1` skips the user (its rows pass through unchanged).
//!
//! The device op needs `dh` to be a multiple of 64, so a head of 96 is padded to 128 with each
//! 48-wide half padded to 64 (cos padded with 1, sin with 0) and sliced back afterwards. That layout
//! changes no number, so the host computes the plain width and [`RotaryPadding`] only validates and
//! accounts for it (and can materialise it, which the tests use to prove the equivalence).

use rayon::prelude::*;

use crate::error::{OpError, Result};
use crate::tensor::{DType, Tensor};

/// Cos and sin tables `[len, 2 * inv_freq.len()]` for positions `start .. start + len`, as HF
/// builds them: `f = inv_freq[i] * p` in f32, `emb = [f, f]`, `cos = cos(emb) * factor` and
/// `sin = sin(emb) * factor` in f32 (cos/sin evaluated in f64 and rounded, the product in f32).
pub fn rope_tables(
    inv_freq: &[f32],
    attention_factor: f32,
    start: usize,
    len: usize,
) -> Result<(Tensor, Tensor)> {
    const OP: &str = "rope_tables";
    if inv_freq.is_empty() || !attention_factor.is_finite() {
        return Err(OpError::invalid(
            OP,
            "need a non-empty inv_freq and a finite attention factor",
        ));
    }
    let end = start
        .checked_add(len)
        .filter(|&e| e <= 1 << 24)
        .ok_or_else(|| {
            OpError::out_of_range(
                OP,
                "last position",
                (start as i64).saturating_add(len as i64),
                1 << 24,
            )
        })?;
    let dh = 2 * inv_freq.len();
    let mut cos = vec![0.0f32; len * dh];
    let mut sin = vec![0.0f32; len * dh];
    crate::rope::fill_rows(inv_freq, attention_factor, start..end, &mut cos, &mut sin);
    Ok((
        Tensor::from_f32(cos, &[len, dh])?,
        Tensor::from_f32(sin, &[len, dh])?,
    ))
}

/// `(rows, dh)` of a table `[P, dh]` or `[1, .., 1, P, dh]`.
fn table_dims(op: &'static str, t: &Tensor) -> Result<(usize, usize)> {
    let s = t.shape();
    if s.len() < 2 || s[..s.len() - 2].iter().any(|&d| d != 1) {
        return Err(OpError::shape(
            op,
            format!("cos/sin must be [P, dh] or [1, 1, P, dh], got {s:?}"),
        ));
    }
    Ok((s[s.len() - 2], s[s.len() - 1]))
}

/// Checks the tables against head width `dh`; returns their row count.
fn check_tables(op: &'static str, cos: &Tensor, sin: &Tensor, dh: usize) -> Result<usize> {
    let (pc, dc) = table_dims(op, cos)?;
    let (ps, ds) = table_dims(op, sin)?;
    if dc != dh || ds != dh || pc != ps {
        return Err(OpError::shape(
            op,
            format!(
                "cos {:?} / sin {:?} do not match head_dim {dh}",
                cos.shape(),
                sin.shape()
            ),
        ));
    }
    if dh == 0 || !dh.is_multiple_of(2) {
        return Err(OpError::shape(
            op,
            format!("head_dim must be even and non-zero, got {dh}"),
        ));
    }
    Ok(pc)
}

/// Rotate one head vector `x` (width `dh`) with table rows `c`, `s` into `y`.
#[inline]
fn rotate(x: &[f32], c: &[f32], s: &[f32], y: &mut [f32]) {
    let h = x.len() / 2;
    let (x1, x2) = x.split_at(h);
    let (y1, y2) = y.split_at_mut(h);
    let (c1, c2) = c.split_at(h);
    let (s1, s2) = s.split_at(h);
    for i in 0..h {
        y1[i] = x1[i] * c1[i] + (-x2[i]) * s1[i];
        y2[i] = x2[i] * c2[i] + x1[i] * s2[i];
    }
}

/// Prefill rotary: `x [B, H, S, dh]`, token `s` rotated with table row `offset + s`.
pub fn rotary_embedding(x: &Tensor, cos: &Tensor, sin: &Tensor, offset: usize) -> Result<Tensor> {
    const OP: &str = "rotary_embedding";
    let [_, _, s, dh] = x
        .dims::<4>()
        .map_err(|_| OpError::shape(OP, format!("x must be [B, H, S, dh], got {:?}", x.shape())))?;
    let rows = check_tables(OP, cos, sin, dh)?;
    if offset.checked_add(s).is_none_or(|e| e > rows) {
        return Err(OpError::out_of_range(
            OP,
            format!("last position (offset {offset} + S {s} - 1)"),
            offset.saturating_add(s) as i64 - 1,
            rows,
        ));
    }
    let (xv, cv, sv) = (x.f32_values(), cos.f32_values(), sin.f32_values());
    let mut out = vec![0.0f32; xv.len()];
    if dh * s > 0 {
        out.par_chunks_mut(s * dh)
            .zip(xv.par_chunks(s * dh))
            .for_each(|(yo, xo)| {
                for t in 0..s {
                    let (r, e) = ((offset + t) * dh, (offset + t + 1) * dh);
                    rotate(
                        &xo[t * dh..(t + 1) * dh],
                        &cv[r..e],
                        &sv[r..e],
                        &mut yo[t * dh..(t + 1) * dh],
                    );
                }
            });
    }
    Tensor::from_f32(out, x.shape())
}

/// Decode rotary: `x [1, B, H, dh]`, user `b` rotated with table row `positions[b]` (`-1` skips).
pub fn rotary_embedding_decode(
    x: &Tensor,
    cos: &Tensor,
    sin: &Tensor,
    positions: &[i32],
) -> Result<Tensor> {
    const OP: &str = "rotary_embedding_decode";
    let [one, b, nh, dh] = x
        .dims::<4>()
        .map_err(|_| OpError::shape(OP, format!("x must be [1, B, H, dh], got {:?}", x.shape())))?;
    if one != 1 || positions.len() != b {
        return Err(OpError::shape(
            OP,
            format!(
                "x {:?} needs shape [1, B, H, dh] with B = positions.len() = {}",
                x.shape(),
                positions.len()
            ),
        ));
    }
    let rows = check_tables(OP, cos, sin, dh)?;
    for (u, &p) in positions.iter().enumerate() {
        if p < -1 || p as i64 >= rows as i64 {
            return Err(OpError::out_of_range(
                OP,
                format!("positions[{u}]"),
                p.into(),
                rows,
            ));
        }
    }
    let (xv, cv, sv) = (x.f32_values(), cos.f32_values(), sin.f32_values());
    let mut out = xv.to_vec();
    for (u, &p) in positions.iter().enumerate() {
        if p < 0 {
            continue;
        }
        let (r, e) = (p as usize * dh, (p as usize + 1) * dh);
        for hd in 0..nh {
            let at = (u * nh + hd) * dh;
            rotate(
                &xv[at..at + dh],
                &cv[r..e],
                &sv[r..e],
                &mut out[at..at + dh],
            );
        }
    }
    Tensor::from_f32(out, x.shape())
}

/// The device's rotary padding for one head width: each half padded up to a multiple of 32, so the
/// padded head width is a multiple of 64 (96 -> 128). Validates and accounts; the host never
/// computes on the padding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RotaryPadding {
    head_dim: usize,
    padded_head_dim: usize,
}

impl RotaryPadding {
    /// Width the device's rotary op needs the head dimension to be a multiple of.
    pub const ALIGN: usize = 64;

    /// Padding for `head_dim` (must be even and non-zero).
    pub fn new(head_dim: usize) -> Result<Self> {
        if head_dim == 0 || !head_dim.is_multiple_of(2) {
            return Err(OpError::invalid(
                "RotaryPadding",
                format!("head_dim must be even and non-zero, got {head_dim}"),
            ));
        }
        let padded_head_dim = head_dim.div_ceil(Self::ALIGN) * Self::ALIGN;
        Ok(Self {
            head_dim,
            padded_head_dim,
        })
    }

    /// The unpadded head width.
    pub fn head_dim(&self) -> usize {
        self.head_dim
    }

    /// The padded head width (a multiple of 64).
    pub fn padded_head_dim(&self) -> usize {
        self.padded_head_dim
    }

    /// Whether any padding is needed.
    pub fn is_padded(&self) -> bool {
        self.padded_head_dim != self.head_dim
    }

    /// `shape` (last dim = head_dim) with the last dim padded.
    pub fn padded_shape(&self, shape: &[usize]) -> Result<Vec<usize>> {
        match shape.split_last() {
            Some((&d, lead)) if d == self.head_dim => {
                let mut s = lead.to_vec();
                s.push(self.padded_head_dim);
                Ok(s)
            }
            _ => Err(OpError::shape(
                "RotaryPadding",
                format!("last dim of {shape:?} is not head_dim {}", self.head_dim),
            )),
        }
    }

    /// Extra bytes a tensor of `shape` would occupy on the device in its padded layout.
    pub fn padding_bytes(&self, shape: &[usize], dtype: DType) -> Result<usize> {
        let padded: usize = self.padded_shape(shape)?.iter().product();
        let plain: usize = shape.iter().product();
        Ok((padded - plain) * dtype.size_bytes())
    }

    /// Materialise the padded layout of `x [.., head_dim]`: each half followed by `fill`.
    pub fn pad(&self, x: &Tensor, fill: f32) -> Result<Tensor> {
        let shape = self.padded_shape(x.shape())?;
        let (h, ph) = (self.head_dim / 2, self.padded_head_dim / 2);
        let xv = x.f32_values();
        let mut out = vec![fill; shape.iter().product()];
        for (src, dst) in xv
            .chunks(self.head_dim)
            .zip(out.chunks_mut(self.padded_head_dim))
        {
            dst[..h].copy_from_slice(&src[..h]);
            dst[ph..ph + h].copy_from_slice(&src[h..]);
        }
        Tensor::from_f32(out, &shape)
    }

    /// Pad tables the device way: cos padded with 1, sin with 0.
    pub fn pad_tables(&self, cos: &Tensor, sin: &Tensor) -> Result<(Tensor, Tensor)> {
        Ok((self.pad(cos, 1.0)?, self.pad(sin, 0.0)?))
    }

    /// Slice a padded `x [.., padded_head_dim]` back to `[.., head_dim]`.
    pub fn unpad(&self, x: &Tensor) -> Result<Tensor> {
        let Some((&d, lead)) = x.shape().split_last() else {
            return Err(OpError::shape("RotaryPadding", "cannot unpad a scalar"));
        };
        if d != self.padded_head_dim {
            return Err(OpError::shape(
                "RotaryPadding",
                format!(
                    "last dim of {:?} is not {}",
                    x.shape(),
                    self.padded_head_dim
                ),
            ));
        }
        let (h, ph) = (self.head_dim / 2, self.padded_head_dim / 2);
        let xv = x.f32_values();
        let mut out = Vec::with_capacity(xv.len() / d * self.head_dim);
        for src in xv.chunks(d) {
            out.extend_from_slice(&src[..h]);
            out.extend_from_slice(&src[ph..ph + h]);
        }
        let mut shape = lead.to_vec();
        shape.push(self.head_dim);
        Tensor::from_f32(out, &shape)
    }
}

#[cfg(test)]
#[path = "rotary_tests.rs"]
mod tests;
