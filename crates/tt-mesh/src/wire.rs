//! Bytes on the wire between ranks: element slices and whole tensors, little-endian and bit-exact
//! (a value, NaN payloads included, arrives with the bits it left with).

use half::bf16;
use tt_ops::{DType, Element, Tensor};

use crate::error::MeshError;

/// An element type that travels between ranks: its bytes as they are in memory. Ranks of one
/// job share the byte order (every platform Rust's MPI bindings target is little-endian).
pub(crate) trait Wire: Element + bytemuck::Pod {
    /// Bytes per element.
    const BYTES: usize = std::mem::size_of::<Self>();

    /// Append `values` to `out`.
    fn put(values: &[Self], out: &mut Vec<u8>) {
        out.extend_from_slice(bytemuck::cast_slice(values));
    }

    /// Decode `bytes` (exactly `out.len() * BYTES` of them, any alignment) into `out`.
    fn get(bytes: &[u8], out: &mut [Self]) {
        bytemuck::cast_slice_mut::<Self, u8>(out).copy_from_slice(bytes);
    }
}

impl Wire for f32 {}
impl Wire for bf16 {}

fn malformed(rank: usize, what: &str) -> MeshError {
    MeshError::Transport {
        rank,
        detail: format!("malformed message: {what}"),
    }
}

/// Append `t` (dtype, rank, shape, then its values in row-major order) to `out`.
pub(crate) fn put_tensor(t: &Tensor, out: &mut Vec<u8>) -> Result<(), MeshError> {
    let t = t.contiguous();
    out.push(match t.dtype() {
        DType::F32 => 0,
        DType::Bf16 => 1,
    });
    out.extend_from_slice(&(t.rank() as u64).to_le_bytes());
    for &d in t.shape() {
        out.extend_from_slice(&(d as u64).to_le_bytes());
    }
    match t.dtype() {
        DType::F32 => f32::put(t.as_f32()?, out),
        DType::Bf16 => bf16::put(t.as_bf16()?, out),
    }
    Ok(())
}

/// Reads tensors written by [`put_tensor`] from one rank's message.
pub(crate) struct TensorReader<'a> {
    bytes: &'a [u8],
    rank: usize,
}

impl<'a> TensorReader<'a> {
    /// A reader of `bytes`, received from `rank`.
    pub(crate) fn new(bytes: &'a [u8], rank: usize) -> Self {
        Self { bytes, rank }
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], MeshError> {
        if self.bytes.len() < n {
            return Err(malformed(self.rank, "truncated"));
        }
        let (head, tail) = self.bytes.split_at(n);
        self.bytes = tail;
        Ok(head)
    }

    fn u64(&mut self) -> Result<usize, MeshError> {
        let b = self.take(8)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        usize::try_from(u64::from_le_bytes(a)).map_err(|_| malformed(self.rank, "size"))
    }

    /// The next tensor.
    pub(crate) fn tensor(&mut self) -> Result<Tensor, MeshError> {
        let tag = self.take(1)?[0];
        let rank = self.u64()?;
        if rank > 8 {
            return Err(malformed(self.rank, "tensor rank"));
        }
        let shape = (0..rank)
            .map(|_| self.u64())
            .collect::<Result<Vec<_>, _>>()?;
        let numel = shape
            .iter()
            .try_fold(1usize, |a, &d| a.checked_mul(d))
            .ok_or_else(|| malformed(self.rank, "shape"))?;
        match tag {
            0 => {
                let mut v = vec![0f32; numel];
                f32::get(self.take(numel * 4)?, &mut v);
                Ok(Tensor::from_f32(v, &shape)?)
            }
            1 => {
                let mut v = vec![bf16::ZERO; numel];
                bf16::get(self.take(numel * 2)?, &mut v);
                Ok(Tensor::from_bf16(v, &shape)?)
            }
            _ => Err(malformed(self.rank, "dtype")),
        }
    }

    /// Whether every byte was read.
    pub(crate) fn is_done(&self) -> bool {
        self.bytes.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tensors_round_trip_bit_exact() {
        let a =
            Tensor::from_f32(vec![1.5, f32::from_bits(0x7fc0_1234), -0.0, 3.0], &[2, 2]).unwrap();
        let b = Tensor::from_bf16(vec![bf16::from_bits(0xff81), bf16::ONE], &[2]).unwrap();
        let mut bytes = Vec::new();
        put_tensor(&a, &mut bytes).unwrap();
        put_tensor(&b, &mut bytes).unwrap();
        let mut r = TensorReader::new(&bytes, 1);
        let (a2, b2) = (r.tensor().unwrap(), r.tensor().unwrap());
        assert!(r.is_done());
        assert_eq!(a2.shape(), &[2, 2]);
        let bits = |t: &Tensor| {
            t.as_f32()
                .unwrap()
                .iter()
                .map(|v| v.to_bits())
                .collect::<Vec<_>>()
        };
        assert_eq!(bits(&a2), bits(&a));
        let bits16 = |t: &Tensor| {
            t.as_bf16()
                .unwrap()
                .iter()
                .map(|v| v.to_bits())
                .collect::<Vec<_>>()
        };
        assert_eq!(bits16(&b2), bits16(&b));
        let mut short = TensorReader::new(&bytes[..bytes.len() - 1], 1);
        short.tensor().unwrap();
        assert!(matches!(
            short.tensor(),
            Err(MeshError::Transport { rank: 1, .. })
        ));
    }
}
