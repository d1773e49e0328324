//! A face row's 16 values encoded at once: the same codes as [`crate::bfp::encode_block`], without
//! branches, so that the compiler turns the per-value steps into vector instructions (AVX2's
//! per-lane shifts where the CPU has them, chosen at run time). Packing a checkpoint into
//! bfloat8_b / bfloat4_b is this function over every 16 weights; the scalar path is the
//! definition and the tests check this one against it.

use crate::bfp::{BfpFormat, Rounding};

/// Values in a block.
pub const BLOCK: usize = 16;

/// Encodes 16 f32 bit patterns: returns the shared exponent and writes the 16 codes, exactly as
/// [`crate::bfp::encode_block`] does.
pub fn encode_block16(
    block: &[u32; BLOCK],
    format: BfpFormat,
    rounding: Rounding,
    codes: &mut [u8; BLOCK],
) -> u8 {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") {
        // SAFETY: the CPU has AVX2 (checked just above).
        return unsafe { encode_avx2(block, format, rounding, codes) };
    }
    encode_any(block, format, rounding, codes)
}

/// [`encode_block16`] compiled for AVX2.
///
/// # Safety
/// The CPU has AVX2.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn encode_avx2(
    block: &[u32; BLOCK],
    format: BfpFormat,
    rounding: Rounding,
    codes: &mut [u8; BLOCK],
) -> u8 {
    encode_any(block, format, rounding, codes)
}

/// Dispatches on the format and the rounding, so that each body has constants only.
#[inline(always)]
fn encode_any(
    block: &[u32; BLOCK],
    format: BfpFormat,
    rounding: Rounding,
    codes: &mut [u8; BLOCK],
) -> u8 {
    match (format, rounding) {
        (BfpFormat::Bfp8B, Rounding::TiesToEven) => body::<7, EVEN>(block, codes),
        (BfpFormat::Bfp8B, Rounding::TiesAwayFromZero) => body::<7, AWAY>(block, codes),
        (BfpFormat::Bfp8B, Rounding::Truncate) => body::<7, TRUNCATE>(block, codes),
        (BfpFormat::Bfp4B, Rounding::TiesToEven) => body::<3, EVEN>(block, codes),
        (BfpFormat::Bfp4B, Rounding::TiesAwayFromZero) => body::<3, AWAY>(block, codes),
        (BfpFormat::Bfp4B, Rounding::Truncate) => body::<3, TRUNCATE>(block, codes),
    }
}

/// Rounding modes as constants of [`body`].
const EVEN: u8 = 0;
const AWAY: u8 = 1;
const TRUNCATE: u8 = 2;

/// The encoder of `WIDTH` magnitude bits with rounding `ROUND`, every step a select.
#[inline(always)]
fn body<const WIDTH: u32, const ROUND: u8>(block: &[u32; BLOCK], codes: &mut [u8; BLOCK]) -> u8 {
    let mut exp = [0u32; BLOCK];
    for (e, &b) in exp.iter_mut().zip(block) {
        *e = (b >> 23) & 0xff;
    }
    let shared = exp.iter().copied().fold(0, u32::max);
    let drop = 24 - WIDTH;
    let half = 1u32 << (drop - 1);
    let max = (1u32 << WIDTH) - 1;
    let mut out = [0u32; BLOCK];
    for ((o, &b), &e) in out.iter_mut().zip(block).zip(&exp) {
        let shift = shared - e;
        let significand = (1u32 << 23) | (b & 0x007f_ffff);
        // A shift of 32 or more leaves nothing (Rust's `>>` would wrap the count).
        let aligned = if shift < 32 {
            significand >> (shift & 31)
        } else {
            0
        };
        let kept = aligned >> drop;
        let rest = aligned & ((1 << drop) - 1);
        let up = match ROUND {
            EVEN => u32::from(rest > half) | (u32::from(rest == half) & kept),
            AWAY => u32::from(rest >= half),
            _ => 0,
        } & 1;
        let magnitude = (kept + up).min(max);
        // ±0 and denormals get code 0; a zero magnitude clears the sign.
        let magnitude = if e == 0 { 0 } else { magnitude };
        let sign = if magnitude == 0 { 0 } else { b >> 31 };
        *o = (sign << WIDTH) | magnitude;
    }
    for (c, &o) in codes.iter_mut().zip(&out) {
        *c = o as u8;
    }
    shared as u8
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;
    use crate::bfp::encode_block;
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    /// Bit patterns that reach every branch of the scalar encoder: zeros of both signs,
    /// denormals, infinities and NaNs, the largest finite values, ties of both formats.
    fn special() -> Vec<u32> {
        vec![
            0,
            0x8000_0000,
            1,
            0x807f_ffff,
            0x7f80_0000,
            0xff80_0000,
            0x7fc0_0001,
            0x7f7f_ffff,
            0x3f80_0000,
            0x3f81_0000, // 1 + 2^-7: a bfp8 tie at shift 0
            0x3f90_0000, // 1.125: a bfp4 tie at shift 0
            0x0080_0000,
            0x4b00_0000,
        ]
    }

    #[test]
    fn equals_the_scalar_encoder_on_random_and_special_blocks() {
        let mut rng = ChaCha8Rng::seed_from_u64(17);
        let specials = special();
        for trial in 0..40_000 {
            let mut block = [0u32; BLOCK];
            for b in block.iter_mut() {
                *b = match rng.random_range(0..8) {
                    0 => specials[rng.random_range(0..specials.len())],
                    // exponents within a few steps of each other (ordinary weights)
                    1..=4 => {
                        let e = 120 + rng.random_range(0..8u32);
                        (rng.random::<u32>() & 0x807f_ffff) | (e << 23)
                    }
                    // a wide spread (shifts of 32 and more)
                    5 => (rng.random::<u32>() & 0x807f_ffff) | (rng.random_range(0..255u32) << 23),
                    // mantissas ending in a tie or one off it
                    _ => {
                        let e = 126 + rng.random_range(0..3u32);
                        let m = rng.random::<u32>() & 0x007f_0000
                            | [0x8000, 0x7fff, 0x8001, 0x0800][trial % 4];
                        (rng.random::<u32>() & 0x8000_0000) | (e << 23) | (m & 0x007f_ffff)
                    }
                };
            }
            for format in [BfpFormat::Bfp8B, BfpFormat::Bfp4B] {
                for rounding in [
                    Rounding::TiesToEven,
                    Rounding::TiesAwayFromZero,
                    Rounding::Truncate,
                ] {
                    let mut want = [0u8; BLOCK];
                    let e_want = encode_block(&block, format, rounding, &mut want);
                    let mut got = [0u8; BLOCK];
                    let e_got = encode_block16(&block, format, rounding, &mut got);
                    let mut any = [0u8; BLOCK];
                    let e_any = encode_any(&block, format, rounding, &mut any);
                    assert_eq!(
                        (e_got, got),
                        (e_want, want),
                        "{format} {rounding:?} {block:08x?}"
                    );
                    assert_eq!(
                        (e_any, any),
                        (e_want, want),
                        "portable {format} {rounding:?}"
                    );
                }
            }
        }
    }
}
