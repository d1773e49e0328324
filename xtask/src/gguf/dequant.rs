//! ggml element types and their dequantization to f32, computed exactly as gguf-py's
//! `gguf.quants.dequantize` (what transformers uses to load a GGUF) computes it in numpy:
//!
//! - `F16`/`BF16`: widened to f32 (exact);
//! - `Q8_0`: blocks of 32, an f16 scale `d` then 32 `i8`; `x = f32(q) * f32(d)`;
//! - `Q4_0`: blocks of 32, `d` then 16 bytes; element `j` is the low nibble of byte `j`, element
//!   `j + 16` the high nibble; `x = f32(d) * f32(q - 8)`;
//! - `Q4_1`: blocks of 32, `d`, a minimum `m` (both f16), then nibbles as Q4_0;
//!   `x = f32(d) * f32(q) + f32(m)`, a product rounded to f32 and then a sum rounded to f32 (numpy
//!   does two operations; Rust does not fuse them into an FMA).

use anyhow::{Result, bail, ensure};
use half::{bf16, f16};

/// Elements per block of the 32-element quantized types.
const QK: usize = 32;

/// A ggml tensor element type (ids from ggml.h).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GgmlType {
    /// 32-bit float (id 0).
    F32,
    /// 16-bit IEEE float (id 1).
    F16,
    /// 4-bit, one f16 scale per 32 elements (id 2).
    Q4_0,
    /// 4-bit, f16 scale and minimum per 32 elements (id 3).
    Q4_1,
    /// 8-bit, one f16 scale per 32 elements (id 8).
    Q8_0,
    /// bfloat16 (id 30).
    Bf16,
    /// Any other type: parsed, never dequantized.
    Other(u32),
}

impl GgmlType {
    /// The type of a ggml type id.
    pub fn from_id(id: u32) -> Self {
        match id {
            0 => Self::F32,
            1 => Self::F16,
            2 => Self::Q4_0,
            3 => Self::Q4_1,
            8 => Self::Q8_0,
            30 => Self::Bf16,
            other => Self::Other(other),
        }
    }

    /// (elements per block, bytes per block).
    fn block(self) -> Result<(u64, u64)> {
        Ok(match self {
            Self::F32 => (1, 4),
            Self::F16 | Self::Bf16 => (1, 2),
            Self::Q4_0 => (32, 18),
            Self::Q4_1 => (32, 20),
            Self::Q8_0 => (32, 34),
            Self::Other(id) => {
                bail!("ggml type {id} is not supported (F32, F16, BF16, Q4_0, Q4_1, Q8_0 are)")
            }
        })
    }

    /// Bytes taken by `numel` elements of this type.
    pub fn byte_len(self, numel: u64) -> Result<u64> {
        let (per_block, bytes) = self.block()?;
        ensure!(
            numel.is_multiple_of(per_block),
            "{numel} elements are not whole blocks of {per_block}"
        );
        Ok(numel / per_block * bytes)
    }
}

/// Dequantizes `numel` elements of type `ty` from `bytes` (exactly as gguf-py does).
pub fn dequantize(ty: GgmlType, bytes: &[u8], numel: usize) -> Result<Vec<f32>> {
    let want = ty.byte_len(numel as u64)?;
    ensure!(
        bytes.len() as u64 == want,
        "{ty:?}: {} bytes for {numel} elements, expected {want}",
        bytes.len()
    );
    let f16_at = |b: &[u8], i: usize| f16::from_le_bytes([b[i], b[i + 1]]).to_f32();
    let mut out = Vec::with_capacity(numel);
    match ty {
        GgmlType::F32 => {
            out.extend(
                bytes
                    .chunks_exact(4)
                    .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])),
            );
        }
        GgmlType::F16 => out.extend(
            bytes
                .chunks_exact(2)
                .map(|c| f16::from_le_bytes([c[0], c[1]]).to_f32()),
        ),
        GgmlType::Bf16 => out.extend(
            bytes
                .chunks_exact(2)
                .map(|c| bf16::from_le_bytes([c[0], c[1]]).to_f32()),
        ),
        GgmlType::Q8_0 => {
            for block in bytes.chunks_exact(34) {
                let d = f16_at(block, 0);
                out.extend(block[2..].iter().map(|&q| f32::from(q as i8) * d));
            }
        }
        GgmlType::Q4_0 => {
            for block in bytes.chunks_exact(18) {
                let d = f16_at(block, 0);
                let qs = &block[2..];
                out.extend(nibbles(qs).map(|q| d * f32::from(q as i8 - 8)));
            }
        }
        GgmlType::Q4_1 => {
            for block in bytes.chunks_exact(20) {
                let d = f16_at(block, 0);
                let m = f16_at(block, 2);
                let qs = &block[4..];
                out.extend(nibbles(qs).map(|q| d * f32::from(q) + m));
            }
        }
        GgmlType::Other(id) => bail!("ggml type {id} cannot be dequantized"),
    }
    Ok(out)
}

/// The 32 4-bit values of a block: the low nibbles of the 16 bytes, then the high nibbles.
fn nibbles(qs: &[u8]) -> impl Iterator<Item = u8> + '_ {
    debug_assert_eq!(qs.len(), QK / 2);
    qs.iter().map(|b| b & 0x0F).chain(qs.iter().map(|b| b >> 4))
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    fn h(v: f32) -> [u8; 2] {
        f16::from_f32(v).to_le_bytes()
    }

    #[test]
    fn q4_1_orders_low_then_high_nibbles_and_adds_the_minimum() {
        let (d, m) = (0.1f32, -0.7f32);
        let mut block = Vec::new();
        block.extend(h(d));
        block.extend(h(m));
        // byte j: low nibble j, high nibble 15 - j.
        block.extend((0..16u8).map(|j| j | ((15 - j) << 4)));
        let got = dequantize(GgmlType::Q4_1, &block, 32).unwrap();
        let (d, m) = (f16::from_f32(d).to_f32(), f16::from_f32(m).to_f32());
        for j in 0..16 {
            assert_eq!(got[j].to_bits(), (d * j as f32 + m).to_bits());
            assert_eq!(got[j + 16].to_bits(), (d * (15 - j) as f32 + m).to_bits());
        }
    }

    #[test]
    fn q8_0_and_q4_0_scale_signed_values() {
        let mut block = h(0.5).to_vec();
        block.extend((0..32).map(|i| (i as i8 - 16) as u8));
        let got = dequantize(GgmlType::Q8_0, &block, 32).unwrap();
        assert_eq!(
            got,
            (0..32).map(|i| (i as f32 - 16.0) * 0.5).collect::<Vec<_>>()
        );

        let mut block = h(2.0).to_vec();
        block.extend([0x80u8; 16]); // low nibble 0 (-8), high nibble 8 (0)
        let got = dequantize(GgmlType::Q4_0, &block, 32).unwrap();
        assert_eq!(&got[..16], &[-16.0; 16]);
        assert_eq!(&got[16..], &[0.0; 16]);
    }

    #[test]
    fn floats_widen_exactly_and_lengths_are_checked() {
        let bytes: Vec<u8> = [1.5f32, -2.25]
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect();
        assert_eq!(
            dequantize(GgmlType::F32, &bytes, 2).unwrap(),
            vec![1.5, -2.25]
        );
        let bytes: Vec<u8> = [h(0.333), h(-4.0)].concat();
        assert_eq!(
            dequantize(GgmlType::F16, &bytes, 2).unwrap(),
            vec![f16::from_f32(0.333).to_f32(), -4.0]
        );
        let bytes: Vec<u8> = bf16::from_f32(3.0).to_le_bytes().to_vec();
        assert_eq!(dequantize(GgmlType::Bf16, &bytes, 1).unwrap(), vec![3.0]);
        assert!(dequantize(GgmlType::Q4_1, &[0; 20], 31).is_err());
        assert!(dequantize(GgmlType::Q4_1, &[0; 19], 32).is_err());
        assert!(dequantize(GgmlType::Other(14), &[0; 210], 256).is_err());
    }
}
