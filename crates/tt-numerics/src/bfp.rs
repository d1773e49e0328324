//! One block of block-float: 16 values sharing an 8-bit exponent (bfloat8_b / bfloat4_b).
//!
//! Encoding, as tt-metal's host packer does it (`convert_u32_to_bfp` in
//! `tt_metal/impl/data_format/blockfloat_common.cpp`, checked bit for bit by the
//! `tt-metal-oracle` crate against the ttnn 0.81.1 build):
//! 1. the shared exponent `E` is the largest raw biased exponent field of the 16 values
//!    (NaN and infinity count as 255);
//! 2. ±0 and every value whose exponent field is 0 (denormals) get code 0;
//! 3. the 24-bit significand `1.fraction` is shifted right by `E - e` (0 when that is 32 or
//!    more);
//! 4. it is rounded to the format's magnitude width (7 or 3 bits): the host rounds to nearest,
//!    ties to even; the device's packer rounds ties away from zero; truncation is also offered;
//! 5. the magnitude is clamped to 127 (or 7); `E` is never bumped;
//! 6. a zero magnitude clears the sign.
//!
//! A code is sign-magnitude without a hidden bit: bfp8 value = ±m·2^(E−133), bfp4 value =
//! ±m·2^(E−129). Decoding normalises `m` into an f32 (see [`decode`] and [`decode_scalar`]).

use std::fmt;

/// The two block-float storage formats of Wormhole ("_b": 8-bit exponent, like bf16).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BfpFormat {
    /// bfloat8_b: sign + 7-bit magnitude; tt-metal `DataFormat::Bfp8_b` = 6.
    Bfp8B,
    /// bfloat4_b: sign + 3-bit magnitude; tt-metal `DataFormat::Bfp4_b` = 7.
    Bfp4B,
}

impl BfpFormat {
    /// Magnitude bits of one code (7 or 3).
    pub const fn magnitude_bits(self) -> u32 {
        match self {
            Self::Bfp8B => 7,
            Self::Bfp4B => 3,
        }
    }

    /// Bits of one code including the sign (8 or 4).
    pub const fn code_bits(self) -> u32 {
        self.magnitude_bits() + 1
    }

    /// The largest magnitude (127 or 7).
    pub const fn max_magnitude(self) -> u32 {
        (1 << self.magnitude_bits()) - 1
    }

    /// Bytes of one 32x32 tile: 64 exponents, then 1024 codes (1088 or 576).
    pub const fn tile_bytes(self) -> usize {
        64 + 1024 * self.code_bits() as usize / 8
    }

    /// tt-metal's `tt::DataFormat` number.
    pub const fn tt_data_format(self) -> u8 {
        match self {
            Self::Bfp8B => 6,
            Self::Bfp4B => 7,
        }
    }
}

impl fmt::Display for BfpFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Bfp8B => "bfp8_b",
            Self::Bfp4B => "bfp4_b",
        })
    }
}

/// How the bits shifted out of a significand are rounded away.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Rounding {
    /// Round to nearest, ties to even: tt-metal's host packer, torch's bf16 cast.
    TiesToEven,
    /// Round to nearest, ties away from zero: the device's packer writing outputs.
    TiesAwayFromZero,
    /// Drop the bits (tt-metal's `truncate_bfp_mantissa = true`).
    Truncate,
}

/// The shared exponent of a block: the largest raw biased exponent field.
pub fn shared_exponent(block: &[u32]) -> u8 {
    block
        .iter()
        .map(|&b| ((b >> 23) & 0xff) as u8)
        .max()
        .unwrap_or(0)
}

/// The code of one f32 (given by its bits) in a block whose shared exponent is `shared_exp`.
///
/// `shared_exp` must be at least the value's own exponent field (it is, when it comes from
/// [`shared_exponent`] of the block holding the value); a smaller one is treated as equal.
pub fn encode(bits: u32, shared_exp: u8, format: BfpFormat, rounding: Rounding) -> u8 {
    let exp = (bits >> 23) & 0xff;
    if exp == 0 {
        // ±0 and denormals.
        return 0;
    }
    let width = format.magnitude_bits();
    let drop = 24 - width;
    let shift = u32::from(shared_exp).saturating_sub(exp);
    let significand = (1u32 << 23) | (bits & 0x007f_ffff);
    let aligned = if shift >= 32 { 0 } else { significand >> shift };
    let kept = aligned >> drop;
    let rest = aligned & ((1 << drop) - 1);
    let half = 1u32 << (drop - 1);
    let up = match rounding {
        Rounding::TiesToEven => rest > half || (rest == half && kept & 1 == 1),
        Rounding::TiesAwayFromZero => rest >= half,
        Rounding::Truncate => false,
    };
    let magnitude = (kept + u32::from(up)).min(format.max_magnitude());
    let sign = if magnitude == 0 { 0 } else { bits >> 31 };
    ((sign << width) | magnitude) as u8
}

/// Encodes a block of up to 16 f32 bit patterns: returns the shared exponent and writes one
/// code per value into `codes`.
pub fn encode_block(block: &[u32], format: BfpFormat, rounding: Rounding, codes: &mut [u8]) -> u8 {
    let shared = shared_exponent(block);
    for (code, &bits) in codes.iter_mut().zip(block) {
        *code = encode(bits, shared, format, rounding);
    }
    shared
}

/// Splits a code into (sign, magnitude, leading shift): the shift is how far the magnitude
/// moves left until its top bit sits at bit `width - 1`.
fn parts(code: u8, format: BfpFormat) -> (u32, u32, u32) {
    let width = format.magnitude_bits();
    let code = u32::from(code) & ((1 << format.code_bits()) - 1);
    let sign = code >> width;
    let magnitude = code & format.max_magnitude();
    let shift = if magnitude == 0 {
        0
    } else {
        magnitude.leading_zeros() - (32 - width)
    };
    (sign, magnitude, shift)
}

/// The f32 bits of a code as tt-metal's tile unpackers produce them
/// (`unpack_bfp8_tiles_into_float_vec`, `unpack_bfp4_tiles_into_float_vec`).
///
/// A zero magnitude gives ±0 (the sign bit is kept). A magnitude whose normalising shift is
/// larger than the shared exponent is flushed to +0; a shift equal to it leaves exponent field 0
/// with the remaining magnitude bits as an f32 subnormal pattern.
pub fn decode(code: u8, shared_exp: u8, format: BfpFormat) -> u32 {
    let (sign, magnitude, shift) = parts(code, format);
    if magnitude == 0 {
        return sign << 31;
    }
    let shared = u32::from(shared_exp);
    if shift > shared {
        return 0;
    }
    let width = format.magnitude_bits();
    let fraction = (magnitude << (shift + 1)) & format.max_magnitude();
    (sign << 31) | ((shared - shift) << 23) | (fraction << (23 - width))
}

/// The f32 bits of a code as tt-metal's scalar `convert_bfp_to_u32` produces them: like
/// [`decode`], except that a normalising shift larger than the shared exponent is not flushed:
/// the exponent wraps around in 32-bit arithmetic and spills into the sign bit (tt-metal's
/// own assertion against this is compiled out).
pub fn decode_scalar(code: u8, shared_exp: u8, format: BfpFormat) -> u32 {
    let (sign, magnitude, shift) = parts(code, format);
    if magnitude == 0 {
        return sign << 31;
    }
    let width = format.magnitude_bits();
    let exp = u32::from(shared_exp).wrapping_sub(shift);
    let fraction = (magnitude << (shift + 1)) & format.max_magnitude();
    (sign << 31) | (exp << 23) | (fraction << (23 - width))
}

/// The value of a code as an f32 (tile-unpacker semantics, see [`decode`]).
pub fn decode_f32(code: u8, shared_exp: u8, format: BfpFormat) -> f32 {
    f32::from_bits(decode(code, shared_exp, format))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    /// Naive reference decoding: ±m·2^(E − 127 − width + 1) computed in f64.
    fn naive_value(code: u8, e: u8, format: BfpFormat) -> f64 {
        let w = format.magnitude_bits();
        let m = f64::from(u32::from(code) & format.max_magnitude());
        let s = if (u32::from(code) >> w) & 1 == 1 {
            -1.0
        } else {
            1.0
        };
        s * m * 2f64.powi(i32::from(e) - 127 - (w as i32 - 1))
    }

    #[test]
    fn decode_matches_the_formula_where_the_result_is_normal() {
        for format in [BfpFormat::Bfp8B, BfpFormat::Bfp4B] {
            for e in 8..=254u8 {
                for code in 0..(1u16 << format.code_bits()) {
                    let got = f64::from(decode_f32(code as u8, e, format));
                    assert_eq!(
                        got,
                        naive_value(code as u8, e, format),
                        "{format} {code} {e}"
                    );
                }
            }
        }
    }

    #[test]
    fn encode_then_decode_is_nearest_with_ties_to_even() {
        // Values 1.0 .. 2.0 in a block whose exponent is 127: bfp8 step 2^-6.
        let step = 2f64.powi(-6);
        for k in 0..(1 << 12) {
            let x = 1.0 + f64::from(k) / f64::from(1 << 12);
            let bits = (x as f32).to_bits();
            let code = encode(bits, 127, BfpFormat::Bfp8B, Rounding::TiesToEven);
            let back = naive_value(code, 127, BfpFormat::Bfp8B);
            let q = x / step;
            let want = if q.fract() == 0.5 {
                if (q.floor() as i64) % 2 == 0 {
                    q.floor()
                } else {
                    q.ceil()
                }
            } else {
                q.round()
            };
            assert_eq!(back, (want * step).min(127.0 * step), "x={x}");
        }
    }

    #[test]
    fn ties_and_clamping() {
        let f = BfpFormat::Bfp4B;
        // 1.0 + 2^-3 with E = 127: bfp4 keeps 1.00 (code 4) + half a step: a tie.
        let tie = (1.0f32 + 0.125).to_bits();
        assert_eq!(encode(tie, 127, f, Rounding::TiesToEven), 4);
        assert_eq!(encode(tie, 127, f, Rounding::TiesAwayFromZero), 5);
        assert_eq!(encode(tie, 127, f, Rounding::Truncate), 4);
        let tie_odd = (1.375f32).to_bits(); // 1.25 + half step: odd 5 goes up to 6
        assert_eq!(encode(tie_odd, 127, f, Rounding::TiesToEven), 6);
        // 1.99 rounds past 7: clamp, never bump E.
        assert_eq!(encode(1.99f32.to_bits(), 127, f, Rounding::TiesToEven), 7);
        assert_eq!(
            encode((-1.99f32).to_bits(), 127, f, Rounding::TiesToEven),
            0xf
        );
    }

    #[test]
    fn zeros_denormals_and_sign_of_zero() {
        let f = BfpFormat::Bfp8B;
        assert_eq!(encode(0x8000_0000, 127, f, Rounding::TiesToEven), 0);
        assert_eq!(encode(0x0000_0001, 0, f, Rounding::TiesToEven), 0);
        assert_eq!(encode(0x8040_0000, 1, f, Rounding::TiesToEven), 0);
        // A tiny negative value in a large block rounds to magnitude 0: sign cleared.
        assert_eq!(
            encode((-1e-10f32).to_bits(), 140, f, Rounding::TiesToEven),
            0
        );
        assert_eq!(decode(0x80, 9, f), 0x8000_0000);
    }

    #[test]
    fn shared_exponent_is_the_largest_field() {
        let block = [1.0f32, -8.0, 0.5, f32::MIN_POSITIVE].map(f32::to_bits);
        assert_eq!(shared_exponent(&block), 130);
        assert_eq!(shared_exponent(&[f32::NAN.to_bits(), 0]), 255);
        let mut codes = [0u8; 4];
        assert_eq!(
            encode_block(&block, BfpFormat::Bfp8B, Rounding::TiesToEven, &mut codes),
            130
        );
        assert_eq!(codes, [8, 0x80 | 64, 4, 0]);
    }

    #[test]
    fn small_shared_exponents_flush_in_tiles_and_wrap_in_scalar() {
        let f = BfpFormat::Bfp8B;
        // magnitude 1 needs shift 6: with E = 2 the tile unpacker flushes, the scalar wraps.
        assert_eq!(decode(1, 2, f), 0);
        assert_eq!(decode_scalar(1, 2, f), 0xfe00_0000);
        assert_eq!(decode_scalar(1, 6, f), 0);
        assert_eq!(decode(1, 6, f), 0);
        assert_eq!(decode_scalar(0x81, 0, f), 0xfd00_0000);
        assert_eq!(decode_scalar(1, 1, BfpFormat::Bfp4B), 0xff80_0000);
    }
}
