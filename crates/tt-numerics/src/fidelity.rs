//! Math fidelity and accumulation of the Wormhole matrix engine, as a reference emulation.
//!
//! The multipliers are 5 x 7 bits (`tech_reports/matrix_engine/matrix_engine.md` in
//! tenstorrent/tt-metal). For bf16 operands (8 significant bits with the hidden bit):
//! - SrcA (in1, the weights) enters as its top 5 bits (hidden + 4), then its remaining 3;
//! - SrcB (in0, the activations) enters as its top 7 bits (hidden + 6), then its remaining 1.
//!
//! Bits are masked, not rounded. Each fidelity phase multiplies one pair of parts:
//! phase 0 = A_hi·B_hi (LoFi), 1 = A_lo·B_hi (HiFi2), 2 = A_hi·B_lo (HiFi3), 3 = A_lo·B_lo
//! (HiFi4, the exact bf16 x bf16 product).
//!
//! Accumulation is in the destination register: fp32 with `fp32_dest_acc_en`, else bf16. This
//! module is a sequential reference model of one dot product, not a bit-exact model of the
//! hardware's adder tree (no oracle for that exists without a device); see `docs/NUMERICS.md`.

use std::fmt;
use std::str::FromStr;

use crate::bf16::{from_bf16_bits, round_bf16, to_bf16_bits};
use crate::bfp::Rounding;
use crate::error::NumericsError;

/// How many multiplier phases a product takes (tt-metal `MathFidelity`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum MathFidelity {
    /// One phase: A_hi·B_hi.
    LoFi,
    /// Two phases: + A_lo·B_hi.
    HiFi2,
    /// Three phases: + A_hi·B_lo.
    HiFi3,
    /// Four phases: + A_lo·B_lo, exact for bf16 operands.
    HiFi4,
}

impl MathFidelity {
    /// Every fidelity, lowest first.
    pub const ALL: [MathFidelity; 4] = [Self::LoFi, Self::HiFi2, Self::HiFi3, Self::HiFi4];

    /// Phases run (1..=4); throughput is divided by this.
    pub fn phases(self) -> u32 {
        match self {
            Self::LoFi => 1,
            Self::HiFi2 => 2,
            Self::HiFi3 => 3,
            Self::HiFi4 => 4,
        }
    }

    /// The name used on the command line and in tables.
    pub fn name(self) -> &'static str {
        match self {
            Self::LoFi => "lofi",
            Self::HiFi2 => "hifi2",
            Self::HiFi3 => "hifi3",
            Self::HiFi4 => "hifi4",
        }
    }
}

impl fmt::Display for MathFidelity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for MathFidelity {
    type Err = NumericsError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "lofi" => Ok(Self::LoFi),
            "hifi2" => Ok(Self::HiFi2),
            "hifi3" => Ok(Self::HiFi3),
            "hifi4" => Ok(Self::HiFi4),
            _ => Err(NumericsError::UnknownName {
                what: "math fidelity",
                got: s.to_string(),
                expected: "lofi, hifi2, hifi3, hifi4",
            }),
        }
    }
}

/// Precision of the destination register products are summed in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Accumulation {
    /// `fp32_dest_acc_en = true`.
    Fp32,
    /// `fp32_dest_acc_en = false`: the running sum is bf16.
    Bf16,
}

impl Accumulation {
    /// The name used on the command line and in tables.
    pub fn name(self) -> &'static str {
        match self {
            Self::Fp32 => "fp32",
            Self::Bf16 => "bf16",
        }
    }
}

impl fmt::Display for Accumulation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Accumulation {
    type Err = NumericsError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "fp32" | "f32" => Ok(Self::Fp32),
            "bf16" | "fp16" => Ok(Self::Bf16),
            _ => Err(NumericsError::UnknownName {
                what: "accumulation",
                got: s.to_string(),
                expected: "fp32, bf16",
            }),
        }
    }
}

/// A bf16 operand split into sign, unbiased exponent and 8-bit significand (hidden bit
/// included); `None` for zero and subnormals (flushed).
fn split(x: f32) -> Option<(bool, i32, u32)> {
    let b = to_bf16_bits(x, Rounding::TiesToEven);
    let exp = i32::from((b >> 7) & 0xff);
    if exp == 0 {
        return None;
    }
    Some((b >> 15 == 1, exp - 127, 0x80 | u32::from(b & 0x7f)))
}

/// One product `weight * act` under `fidelity`. Both operands are first rounded to bf16 (ties to
/// even); the weight is SrcA, the activation SrcB. Non-finite operands give the IEEE product.
pub fn product(weight: f32, act: f32, fidelity: MathFidelity) -> f32 {
    let (w, a) = (round_bf16(weight), round_bf16(act));
    if !w.is_finite() || !a.is_finite() {
        return w * a;
    }
    let (Some((ws, we, wm)), Some((as_, ae, am))) = (split(w), split(a)) else {
        return 0.0;
    };
    let (a_hi, a_lo) = (wm >> 3, wm & 0x7);
    let (b_hi, b_lo) = (am >> 1, am & 0x1);
    // wm = 8·a_hi + a_lo and am = 2·b_hi + b_lo, so
    // wm·am = 16·a_hi·b_hi + 2·a_lo·b_hi + 8·a_hi·b_lo + a_lo·b_lo (phases 0..3).
    let phases = [
        16 * a_hi * b_hi,
        2 * a_lo * b_hi,
        8 * a_hi * b_lo,
        a_lo * b_lo,
    ];
    let m: u32 = phases[..fidelity.phases() as usize].iter().sum();
    let magnitude = f64::from(m) * 2f64.powi(we + ae - 14);
    let value = if ws != as_ { -magnitude } else { magnitude };
    value as f32
}

/// Adds `p` to the accumulator `acc` in the destination's precision.
pub fn accumulate(acc: f32, p: f32, accumulation: Accumulation) -> f32 {
    match accumulation {
        Accumulation::Fp32 => acc + p,
        Accumulation::Bf16 => round_bf16(acc + p),
    }
}

/// Reference dot product of `weights` and `acts` under a fidelity and an accumulation: products
/// from [`product`], summed in order from 0 by [`accumulate`].
pub fn dot(
    weights: &[f32],
    acts: &[f32],
    fidelity: MathFidelity,
    accumulation: Accumulation,
) -> Result<f32, NumericsError> {
    if weights.len() != acts.len() {
        return Err(NumericsError::DotLength {
            weights: weights.len(),
            acts: acts.len(),
        });
    }
    Ok(weights.iter().zip(acts).fold(0.0, |acc, (&w, &a)| {
        accumulate(acc, product(w, a, fidelity), accumulation)
    }))
}

/// The bf16 value with significand `m` (hidden bit included, 128..=255) and exponent `e`: a
/// helper for tests and docs.
pub fn bf16_value(negative: bool, e: i32, m: u32) -> f32 {
    let bits = (u16::from(negative) << 15) | (((e + 127) as u16) << 7) | (m as u16 & 0x7f);
    from_bf16_bits(bits)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    #[test]
    fn hifi4_is_the_exact_bf16_product() {
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        for _ in 0..100_000 {
            let (w, a) = (
                round_bf16(rng.random_range(-4.0..4.0)),
                round_bf16(rng.random_range(-4.0..4.0)),
            );
            // 8-bit x 8-bit significands: the product is exact in f32.
            assert_eq!(product(w, a, MathFidelity::HiFi4), w * a, "{w} {a}");
        }
    }

    #[test]
    fn each_phase_adds_its_bits() {
        let w = bf16_value(false, 0, 0x81); // 1 + 2^-7: its last bit is in A_lo
        let a = bf16_value(false, 0, 0x81); // 1 + 2^-7: its last bit is B_lo
        let one = 1.0f32;
        assert_eq!(product(w, one, MathFidelity::LoFi), 1.0);
        assert_eq!(product(w, one, MathFidelity::HiFi2), w);
        assert_eq!(product(one, a, MathFidelity::HiFi2), 1.0);
        assert_eq!(product(one, a, MathFidelity::HiFi3), a);
        assert_eq!(product(w, a, MathFidelity::HiFi3), w * a - 2f32.powi(-14));
        assert_eq!(product(w, a, MathFidelity::HiFi4), w * a);
        // A weight with bits only in its top 5 and an activation with its top 7 are exact in LoFi.
        let w5 = bf16_value(true, 3, 0xf8);
        let a7 = bf16_value(false, -2, 0xfe);
        assert_eq!(product(w5, a7, MathFidelity::LoFi), w5 * a7);
    }

    #[test]
    fn lower_fidelity_truncates_toward_zero() {
        let mut rng = ChaCha8Rng::seed_from_u64(2);
        for _ in 0..10_000 {
            let (w, a) = (
                rng.random_range(-4.0f32..4.0),
                rng.random_range(-4.0f32..4.0),
            );
            let exact = product(w, a, MathFidelity::HiFi4);
            let mut last = 0f32;
            for f in MathFidelity::ALL {
                let p = product(w, a, f);
                assert!(
                    p.abs() <= exact.abs() && p.abs() >= last.abs(),
                    "{w} {a} {f}"
                );
                last = p;
            }
            // LoFi drops at most 3 bits of A and 1 of B: relative error < 2^-4 + 2^-6.
            let lofi = product(w, a, MathFidelity::LoFi);
            assert!((exact - lofi).abs() <= exact.abs() * (1.0 / 16.0 + 1.0 / 64.0));
        }
    }

    #[test]
    fn dot_against_naive_sums() {
        let w = [1.5f32, -2.0, 0.25, 3.0];
        let a = [2.0f32, 0.5, -4.0, 1.0];
        let exact: f32 = w.iter().zip(&a).map(|(x, y)| x * y).sum();
        assert_eq!(
            dot(&w, &a, MathFidelity::HiFi4, Accumulation::Fp32).unwrap(),
            exact
        );
        // bf16 accumulation loses the small addend: 256 + 1 = 257 is not a bf16 (step 2).
        let w2 = [256.0f32, 1.0];
        let a2 = [1.0f32, 1.0];
        assert_eq!(
            dot(&w2, &a2, MathFidelity::HiFi4, Accumulation::Fp32).unwrap(),
            257.0
        );
        assert_eq!(
            dot(&w2, &a2, MathFidelity::HiFi4, Accumulation::Bf16).unwrap(),
            256.0
        );
        assert!(dot(&w2, &a, MathFidelity::LoFi, Accumulation::Fp32).is_err());
    }

    #[test]
    fn zeros_subnormals_and_non_finite() {
        assert_eq!(product(0.0, 3.0, MathFidelity::LoFi), 0.0);
        assert_eq!(product(1e-40, 3.0, MathFidelity::HiFi4), 0.0);
        assert!(product(f32::NAN, 1.0, MathFidelity::LoFi).is_nan());
        assert_eq!(
            product(f32::INFINITY, -1.0, MathFidelity::LoFi),
            f32::NEG_INFINITY
        );
    }

    #[test]
    fn names_parse() {
        for f in MathFidelity::ALL {
            assert_eq!(f.name().parse::<MathFidelity>().unwrap(), f);
        }
        assert_eq!("fp32".parse::<Accumulation>().unwrap(), Accumulation::Fp32);
        assert!("hifi5".parse::<MathFidelity>().is_err());
    }
}
