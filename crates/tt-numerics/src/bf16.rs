//! Rounding f32 to bfloat16.
//!
//! The host (torch, tt-metal's host tilizer) rounds to nearest, ties to even. The device's packer
//! writing an fp32 destination register out as bf16 rounds to nearest, ties away from zero
//! (issue 16, from tt-llk). Truncation is what a plain bit shift does. NaN stays NaN (quiet) in
//! every mode; values that round past the largest finite bf16 become infinity.

use crate::bfp::Rounding;

/// The bf16 bit pattern of `x` under `rounding`.
pub fn to_bf16_bits(x: f32, rounding: Rounding) -> u16 {
    let bits = x.to_bits();
    if x.is_nan() {
        // Keep the sign and make sure a mantissa bit survives the shift.
        return ((bits >> 16) as u16) | 0x0040;
    }
    let rounded = match rounding {
        Rounding::TiesToEven => bits.wrapping_add(0x7fff + ((bits >> 16) & 1)),
        Rounding::TiesAwayFromZero => bits.wrapping_add(0x8000),
        Rounding::Truncate => bits,
    };
    (rounded >> 16) as u16
}

/// The f32 value of a bf16 bit pattern (exact).
pub fn from_bf16_bits(b: u16) -> f32 {
    f32::from_bits(u32::from(b) << 16)
}

/// `x` rounded to bf16, ties to even (the host's rounding).
pub fn round_bf16(x: f32) -> f32 {
    from_bf16_bits(to_bf16_bits(x, Rounding::TiesToEven))
}

/// `x` rounded to bf16, ties away from zero (the device packer's rounding).
pub fn round_bf16_device(x: f32) -> f32 {
    from_bf16_bits(to_bf16_bits(x, Rounding::TiesAwayFromZero))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    /// Naive reference: pick the nearer of the two bf16 neighbours in f64.
    fn naive(x: f32, ties_even: bool) -> f32 {
        let lo = f32::from_bits(x.to_bits() & 0xffff_0000);
        let hi = f32::from_bits((x.to_bits() & 0xffff_0000) + 0x1_0000);
        let (dl, dh) = (
            (f64::from(x) - f64::from(lo)).abs(),
            (f64::from(hi) - f64::from(x)).abs(),
        );
        if dl < dh {
            lo
        } else if dh < dl {
            hi
        } else if ties_even {
            if (lo.to_bits() >> 16) & 1 == 0 {
                lo
            } else {
                hi
            }
        } else {
            hi // |hi| > |lo| for the magnitude bits: away from zero
        }
    }

    #[test]
    fn matches_naive_rounding_on_every_low_half() {
        for hi in [0x3f80u32, 0x3f81, 0xbf80, 0xbf81, 0x4049, 0x0080, 0x7f00] {
            for lo in (0..=0xffffu32).step_by(7).chain([0x7fff, 0x8000, 0x8001]) {
                let x = f32::from_bits(hi << 16 | lo);
                assert_eq!(round_bf16(x).to_bits(), naive(x, true).to_bits(), "{x:e}");
                assert_eq!(
                    round_bf16_device(x).to_bits(),
                    naive(x, false).to_bits(),
                    "{x:e}"
                );
            }
        }
    }

    #[test]
    fn ties_differ_between_host_and_device() {
        // 1 + 2^-8 is halfway between 1 and 1 + 2^-7: even keeps 1, away goes up.
        let x = 1.0 + 2f32.powi(-8);
        assert_eq!(round_bf16(x), 1.0);
        assert_eq!(round_bf16_device(x), 1.0 + 2f32.powi(-7));
        assert_eq!(round_bf16_device(-x), -(1.0 + 2f32.powi(-7)));
        assert_eq!(from_bf16_bits(to_bf16_bits(x, Rounding::Truncate)), 1.0);
    }

    #[test]
    fn nan_and_overflow() {
        assert!(round_bf16(f32::NAN).is_nan());
        assert!(round_bf16_device(-f32::NAN).is_nan());
        assert!(round_bf16(f32::from_bits(0x7f80_0001)).is_nan());
        assert_eq!(round_bf16(f32::MAX), f32::INFINITY);
        assert_eq!(round_bf16(f32::INFINITY), f32::INFINITY);
    }
}
