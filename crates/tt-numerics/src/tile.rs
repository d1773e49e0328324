//! The 32x32 tile: four 16x16 faces (top-left, top-right, bottom-left, bottom-right), each
//! stored row by row. A block-float tile is 64 shared exponents (one per face row, in face
//! order) followed by the 1024 codes in the same order; bfp4 puts two codes in a byte, the
//! first in the low nibble (tt-metal packs 8 codes per little-endian u32, first in the LSBs).

use crate::bf16::to_bf16_bits;
use crate::bfp::{BfpFormat, Rounding, decode};
use crate::bfp_block::encode_block16;
use crate::format::StorageFormat;

/// Rows (and columns) of a tile.
pub const TILE: usize = 32;
/// Rows (and columns) of a face.
pub const FACE: usize = 16;
/// Values in a tile.
pub const TILE_VALUES: usize = TILE * TILE;
/// Values in a face.
pub const FACE_VALUES: usize = FACE * FACE;
/// Shared exponents of a block-float tile (4 faces x 16 rows).
pub const TILE_EXPONENTS: usize = 64;

/// Where row `r`, column `c` of a tile sits: (face, row within the face, column within it).
pub const fn face_position(r: usize, c: usize) -> (usize, usize, usize) {
    ((r / FACE) * 2 + c / FACE, r % FACE, c % FACE)
}

/// Index of tile value (`r`, `c`) in face order (0..1024): the order codes are stored in.
pub const fn face_order_index(r: usize, c: usize) -> usize {
    let (face, fr, fc) = face_position(r, c);
    face * FACE_VALUES + fr * FACE + fc
}

/// Writes code number `index` (face order) of a block-float tile's data section.
fn put_code(data: &mut [u8], format: BfpFormat, index: usize, code: u8) {
    match format {
        BfpFormat::Bfp8B => data[index] = code,
        BfpFormat::Bfp4B => {
            let byte = &mut data[index / 2];
            if index.is_multiple_of(2) {
                *byte = (*byte & 0xf0) | (code & 0x0f);
            } else {
                *byte = (*byte & 0x0f) | (code << 4);
            }
        }
    }
}

/// Reads code number `index` (face order) of a block-float tile's data section.
pub fn get_code(data: &[u8], format: BfpFormat, index: usize) -> u8 {
    match format {
        BfpFormat::Bfp8B => data[index],
        BfpFormat::Bfp4B => {
            let byte = data[index / 2];
            if index.is_multiple_of(2) {
                byte & 0x0f
            } else {
                byte >> 4
            }
        }
    }
}

/// Packs one tile given row-major (`values[r * 32 + c]`) into `out` (`format.tile_bytes()`).
pub fn pack_tile(
    values: &[f32; TILE_VALUES],
    format: StorageFormat,
    rounding: Rounding,
    out: &mut [u8],
) {
    match format {
        StorageFormat::F32 => {
            for r in 0..TILE {
                for c in 0..TILE {
                    let at = face_order_index(r, c) * 4;
                    out[at..at + 4].copy_from_slice(&values[r * TILE + c].to_le_bytes());
                }
            }
        }
        StorageFormat::Bf16 => {
            for r in 0..TILE {
                for c in 0..TILE {
                    let at = face_order_index(r, c) * 2;
                    let b = to_bf16_bits(values[r * TILE + c], rounding);
                    out[at..at + 2].copy_from_slice(&b.to_le_bytes());
                }
            }
        }
        StorageFormat::Bfp8B | StorageFormat::Bfp4B => {
            let bfp = if format == StorageFormat::Bfp8B {
                BfpFormat::Bfp8B
            } else {
                BfpFormat::Bfp4B
            };
            let (exps, data) = out.split_at_mut(TILE_EXPONENTS);
            let mut block = [0u32; FACE];
            let mut codes = [0u8; FACE];
            for face in 0..4 {
                for fr in 0..FACE {
                    let r = (face / 2) * FACE + fr;
                    let c0 = (face % 2) * FACE;
                    for (j, b) in block.iter_mut().enumerate() {
                        *b = values[r * TILE + c0 + j].to_bits();
                    }
                    exps[face * FACE + fr] = encode_block16(&block, bfp, rounding, &mut codes);
                    for (j, &code) in codes.iter().enumerate() {
                        put_code(data, bfp, face * FACE_VALUES + fr * FACE + j, code);
                    }
                }
            }
        }
    }
}

/// Decodes tile row `r`, columns `c0..c0 + out.len()` (within one tile) into `out`.
pub fn unpack_tile_row(tile: &[u8], format: StorageFormat, r: usize, c0: usize, out: &mut [f32]) {
    for (k, slot) in out.iter_mut().enumerate() {
        let c = c0 + k;
        let idx = face_order_index(r, c);
        *slot = match format {
            StorageFormat::F32 => {
                let at = idx * 4;
                f32::from_le_bytes([tile[at], tile[at + 1], tile[at + 2], tile[at + 3]])
            }
            StorageFormat::Bf16 => {
                let at = idx * 2;
                f32::from_bits(u32::from(u16::from_le_bytes([tile[at], tile[at + 1]])) << 16)
            }
            StorageFormat::Bfp8B | StorageFormat::Bfp4B => {
                let bfp = if format == StorageFormat::Bfp8B {
                    BfpFormat::Bfp8B
                } else {
                    BfpFormat::Bfp4B
                };
                let (face, fr, _) = face_position(r, c);
                let exp = tile[face * FACE + fr];
                let code = get_code(&tile[TILE_EXPONENTS..], bfp, idx);
                f32::from_bits(decode(code, exp, bfp))
            }
        };
    }
}

/// Unpacks one tile into row-major values.
pub fn unpack_tile(tile: &[u8], format: StorageFormat, out: &mut [f32; TILE_VALUES]) {
    for (r, row) in out.chunks_exact_mut(TILE).enumerate() {
        unpack_tile_row(tile, format, r, 0, row);
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    #[test]
    fn face_order_is_tl_tr_bl_br() {
        assert_eq!(face_order_index(0, 0), 0);
        assert_eq!(face_order_index(0, 15), 15);
        assert_eq!(face_order_index(1, 0), 16);
        assert_eq!(face_order_index(0, 16), 256);
        assert_eq!(face_order_index(16, 0), 512);
        assert_eq!(face_order_index(31, 31), 1023);
    }

    #[test]
    fn bfp8_tile_layout_by_hand() {
        // Value at (r, c) = c + 1 in row 0 only; every other row 0.
        let mut v = [0f32; TILE_VALUES];
        for (c, x) in v.iter_mut().take(TILE).enumerate() {
            *x = (c + 1) as f32;
        }
        let mut out = vec![0u8; StorageFormat::Bfp8B.tile_bytes()];
        pack_tile(&v, StorageFormat::Bfp8B, Rounding::TiesToEven, &mut out);
        // Face 0 row 0 holds 1..16: the largest exponent is 16.0's (131), and 16 = 64·2^(131−133).
        assert_eq!(out[0], 131);
        assert_eq!(out[16], 132); // face 1 row 0 holds 17..32: 32 has exponent 132
        assert!(out[1..16].iter().all(|&e| e == 0));
        // 1.0 in a block with E = 131: m = 2^23 >> 4 >> 17 = 4.
        assert_eq!(out[64], 4);
        assert_eq!(out[64 + 15], 64); // 16.0
        assert_eq!(out[64 + 256 + 15], 64); // 32.0 in face 1
        let mut back = [0f32; TILE_VALUES];
        unpack_tile(&out, StorageFormat::Bfp8B, &mut back);
        assert_eq!(back, v);
    }

    #[test]
    fn bfp4_nibbles_low_first() {
        let mut v = [0f32; TILE_VALUES];
        v[0] = 1.0; // code 4
        v[1] = -1.0; // code 0xc
        let mut out = vec![0u8; StorageFormat::Bfp4B.tile_bytes()];
        pack_tile(&v, StorageFormat::Bfp4B, Rounding::TiesToEven, &mut out);
        assert_eq!(out[0], 127);
        assert_eq!(out[64], 0xc4);
        assert_eq!(out.len(), 576);
    }

    #[test]
    fn f32_and_bf16_tiles_round_trip() {
        let mut v = [0f32; TILE_VALUES];
        for (i, x) in v.iter_mut().enumerate() {
            *x = (i % 256) as f32 - 128.0 + if i % 3 == 0 { 0.5 } else { 0.0 }; // exact in bf16
        }
        for format in [StorageFormat::F32, StorageFormat::Bf16] {
            let mut out = vec![0u8; format.tile_bytes()];
            pack_tile(&v, format, Rounding::TiesToEven, &mut out);
            let mut back = [0f32; TILE_VALUES];
            unpack_tile(&out, format, &mut back);
            assert_eq!(back, v, "{format}");
        }
    }
}
