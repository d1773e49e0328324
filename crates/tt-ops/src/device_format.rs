//! The device's packer: an f32 result written in a storage format, as `ttnn.linear` writes its
//! output ([`round_to_device_format`]).

use tt_numerics::StorageFormat;
use tt_numerics::bf16::round_bf16_device;
use tt_numerics::bfp::{BfpFormat, Rounding, decode};
use tt_numerics::bfp_block::encode_block16;
use tt_numerics::tile::FACE;

use crate::error::{OpError, Result};
use crate::tensor::Tensor;

/// `t` (f32, rows along its last dimension) as the device's packer writes it in `format`
/// ([`round_to_device_format`] on its rows; f32 leaves it as it is).
pub fn write_in_format(mut t: Tensor, format: StorageFormat) -> Result<Tensor> {
    if format != StorageFormat::F32 {
        let row = t.shape().last().copied().unwrap_or(1).max(1);
        round_to_device_format(t.as_f32_mut()?, row, format)?;
    }
    Ok(t)
}

/// Rounds a row-major `[rows, row_len]` buffer in place to `format` as the device's packer writes
/// it: bf16 ties away from zero; bfp8/bfp4: each run of 16 consecutive values of a row (a face
/// row; the last run of a row may be shorter and is padded with zeros for the shared exponent)
/// shares an exponent, ties away from zero; f32: unchanged. Errors if `row_len` is 0 or
/// `values.len()` is not a multiple of it.
pub fn round_to_device_format(
    values: &mut [f32],
    row_len: usize,
    format: StorageFormat,
) -> Result<()> {
    const OP: &str = "round_to_device_format";
    if row_len == 0 || !values.len().is_multiple_of(row_len) {
        return Err(OpError::invalid(
            OP,
            format!(
                "{} values are not whole rows of {row_len} values",
                values.len()
            ),
        ));
    }
    match format {
        StorageFormat::F32 => {}
        StorageFormat::Bf16 => {
            // Value by value, so chunks over the team change no number (a 2x4 prefill of 1024
            // tokens writes eight 1024 x 3072 partial sums per row-parallel layer).
            crate::team::for_each_chunk_mut(values, |_, chunk| {
                for v in chunk {
                    *v = round_bf16_device(*v);
                }
            });
        }
        StorageFormat::Bfp8B | StorageFormat::Bfp4B => {
            let bfp = if format == StorageFormat::Bfp8B {
                BfpFormat::Bfp8B
            } else {
                BfpFormat::Bfp4B
            };
            let mut block = [0u32; FACE];
            let mut codes = [0u8; FACE];
            for row in values.chunks_exact_mut(row_len) {
                for run in row.chunks_mut(FACE) {
                    block.fill(0);
                    for (b, v) in block.iter_mut().zip(run.iter()) {
                        *b = v.to_bits();
                    }
                    let shared =
                        encode_block16(&block, bfp, Rounding::TiesAwayFromZero, &mut codes);
                    for (v, &c) in run.iter_mut().zip(&codes) {
                        *v = f32::from_bits(decode(c, shared, bfp));
                    }
                }
            }
        }
    }
    Ok(())
}
