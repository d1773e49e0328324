//! Activation fidelity: keep activations in f32, or round them to bf16 between ops as a device does.
//!
//! Design: activations are always *stored* as f32 tensors and every op computes in f32. Under
//! [`Fidelity::Bf16`] the caller rounds each op's output to the nearest bf16 value (ties to even)
//! with [`Fidelity::apply`], so the f32 buffer holds exactly the values a bf16 device buffer would,
//! while kernels stay single-typed. Weights and KV caches carry their own dtype independently.

use crate::error::Result;
use crate::tensor::Tensor;

/// Numerical fidelity of activations between ops.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Fidelity {
    /// Activations stay f32 (compare with an fp32 reference).
    #[default]
    F32,
    /// Activations are rounded to bf16 values after every op (what a bf16 device does).
    Bf16,
}

impl Fidelity {
    /// `v` rounded to this fidelity: [`round_bf16`] under [`Fidelity::Bf16`], `v` itself under
    /// [`Fidelity::F32`].
    #[inline]
    pub fn round_value(self, v: f32) -> f32 {
        match self {
            Fidelity::Bf16 => round_bf16(v),
            Fidelity::F32 => v,
        }
    }

    /// Round `values` in place to this fidelity (a no-op for [`Fidelity::F32`]).
    pub fn round_slice(self, values: &mut [f32]) {
        if self == Fidelity::Bf16 {
            // Value by value, so chunks over the team change no number.
            crate::team::for_each_chunk_mut(values, |_, chunk| {
                for v in chunk {
                    *v = round_bf16(*v);
                }
            });
        }
    }

    /// Round an f32 tensor in place to this fidelity. Bf16-stored tensors are left unchanged
    /// (their values already are bf16); copy-on-write applies if the storage is shared.
    pub fn apply(self, t: &mut Tensor) -> Result<()> {
        if self == Fidelity::Bf16 && t.dtype() == crate::DType::F32 {
            self.round_slice(t.as_f32_mut()?);
        }
        Ok(())
    }

    /// Convenience: [`Fidelity::apply`] on an owned tensor, returning it.
    pub fn round(self, mut t: Tensor) -> Result<Tensor> {
        self.apply(&mut t)?;
        Ok(t)
    }
}

/// `x` rounded to the nearest bf16 value (ties to even), returned as f32; NaN stays NaN, made
/// quiet, as `half::bf16::from_f32` does (the same bits for every input). Written without a
/// branch, so that loops over slices of it vectorize: every op's output passes through it under
/// `Fidelity::Bf16`.
#[inline]
pub fn round_bf16(x: f32) -> f32 {
    let bits = x.to_bits();
    let nearest = bits.wrapping_add(0x7FFF + ((bits >> 16) & 1)) & 0xFFFF_0000;
    let quiet_nan = (bits | 0x0040_0000) & 0xFFFF_0000;
    f32::from_bits(if x.is_nan() { quiet_nan } else { nearest })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::DType;
    use half::bf16;

    #[test]
    fn a_prefill_sized_slice_rounds_value_by_value() {
        let n = 4 * crate::team::CHUNK + 77;
        let vals: Vec<f32> = (0..n).map(|i| (i as f32 * 0.37).sin() * 1e3).collect();
        let mut got = vals.clone();
        Fidelity::Bf16.round_slice(&mut got);
        for (i, (&g, &v)) in got.iter().zip(&vals).enumerate() {
            assert_eq!(g.to_bits(), round_bf16(v).to_bits(), "value {i}");
        }
    }

    /// What the device's packer writes as bf16 (ties away from zero) is on the bf16 grid:
    /// rounding it again to this fidelity changes no bit (the decoder skips that pass).
    #[test]
    fn device_rounded_values_are_fixed_points() {
        for hi in 0..=0xFFFFu32 {
            for lo in [0x0000u32, 0x0001, 0x7FFF, 0x8000, 0x8001, 0xFFFF] {
                let x = f32::from_bits(hi << 16 | lo);
                let device = tt_numerics::bf16::round_bf16_device(x);
                assert_eq!(
                    round_bf16(device).to_bits(),
                    device.to_bits(),
                    "{:#010x}",
                    hi << 16 | lo
                );
            }
        }
    }

    /// Every upper half with the lower halves where rounding decides (zero, the last bit, just
    /// under, at and over the halfway point, all ones) and a few others: the bits of `half`'s
    /// conversion, NaNs, infinities and the overflow to infinity included.
    #[test]
    fn rounds_as_half_does_for_every_upper_half() {
        let lows = [
            0x0000u32, 0x0001, 0x3FFF, 0x7FFF, 0x8000, 0x8001, 0xBFFF, 0xC000, 0xFFFF, 0x1234,
        ];
        for hi in 0..=0xFFFFu32 {
            for lo in lows {
                let x = f32::from_bits(hi << 16 | lo);
                let want = bf16::from_f32(x).to_f32();
                assert_eq!(
                    round_bf16(x).to_bits(),
                    want.to_bits(),
                    "{:#010x}",
                    hi << 16 | lo
                );
            }
        }
    }

    #[test]
    fn f32_is_identity_and_bf16_rounds_to_nearest_even() {
        let vals = vec![1.0f32 + 1.0 / 256.0, 1.0 + 3.0 / 256.0, 0.1, -3.5];
        let mut t = Tensor::from_f32(vals.clone(), &[4]).unwrap();
        Fidelity::F32.apply(&mut t).unwrap();
        assert_eq!(t.as_f32().unwrap(), vals.as_slice());
        Fidelity::Bf16.apply(&mut t).unwrap();
        let r = t.as_f32().unwrap();
        // 1 + 2^-8 is a tie between 1 and 1 + 2^-7: even mantissa wins (1.0).
        assert_eq!(r[0], 1.0);
        // 1 + 3*2^-8 ties between 1+2^-7 and 1+2^-6: even is 1 + 2^-6.
        assert_eq!(r[1], 1.0 + 1.0 / 64.0);
        assert_eq!(r[2], 0.100_097_656);
        assert_eq!(r[3], -3.5);
        let b = Tensor::zeros(&[2], DType::Bf16);
        assert_eq!(Fidelity::Bf16.round(b).unwrap().dtype(), DType::Bf16);
    }
}
