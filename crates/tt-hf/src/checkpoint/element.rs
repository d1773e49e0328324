//! Destination element types for checkpoint reads, converting from the stored dtype on the fly.

use half::{bf16, f16};

use super::format::Dtype;

mod sealed {
    pub trait Sealed {}
    impl Sealed for half::bf16 {}
    impl Sealed for f32 {}
}

/// A type checkpoint data can be read into: `bf16` (weights) or `f32`.
/// Conversions round to nearest even; f16 and bf16 widen to f32 exactly.
pub trait Element: Copy + Default + Send + Sync + sealed::Sealed + 'static {
    /// Converts stored bfloat16 bits.
    fn from_bf16_bits(bits: u16) -> Self;
    /// Converts stored IEEE half bits.
    fn from_f16_bits(bits: u16) -> Self;
    /// Converts a stored f32.
    fn from_f32(value: f32) -> Self;
}

impl Element for bf16 {
    fn from_bf16_bits(bits: u16) -> Self {
        bf16::from_bits(bits)
    }
    fn from_f16_bits(bits: u16) -> Self {
        bf16::from_f32(f16::from_bits(bits).to_f32())
    }
    fn from_f32(value: f32) -> Self {
        bf16::from_f32(value)
    }
}

impl Element for f32 {
    fn from_bf16_bits(bits: u16) -> Self {
        bf16::from_bits(bits).to_f32()
    }
    fn from_f16_bits(bits: u16) -> Self {
        f16::from_bits(bits).to_f32()
    }
    fn from_f32(value: f32) -> Self {
        value
    }
}

/// Converts little-endian `src` bytes of `dtype` into `dst` (`src.len() == dst.len() * size`).
pub(crate) fn convert_into<T: Element>(dtype: Dtype, src: &[u8], dst: &mut [T]) {
    debug_assert_eq!(src.len(), dst.len() * dtype.size());
    match dtype {
        Dtype::BF16 => {
            for (d, s) in dst.iter_mut().zip(src.chunks_exact(2)) {
                *d = T::from_bf16_bits(u16::from_le_bytes([s[0], s[1]]));
            }
        }
        Dtype::F16 => {
            for (d, s) in dst.iter_mut().zip(src.chunks_exact(2)) {
                *d = T::from_f16_bits(u16::from_le_bytes([s[0], s[1]]));
            }
        }
        Dtype::F32 => {
            for (d, s) in dst.iter_mut().zip(src.chunks_exact(4)) {
                *d = T::from_f32(f32::from_le_bytes([s[0], s[1], s[2], s[3]]));
            }
        }
    }
}
