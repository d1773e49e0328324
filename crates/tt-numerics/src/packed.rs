//! A matrix kept packed in device tiles: what a weight looks like in DRAM.
//!
//! `rows x cols` values are padded with zeros to whole 32x32 tiles; tiles are stored row-major
//! by tile (tile (tr, tc) is tile number `tr * tile_cols + tc`), each in the format's tile
//! layout ([`crate::tile`]). Weights stay packed: [`PackedMatrix::row`] dequantizes one row into
//! a caller's buffer, and kernels can read tiles directly with [`PackedMatrix::tile`].
//!
//! The tile bytes are either owned (packed here, or handed over as a `Vec`) or a range of a
//! shared buffer ([`PackedMatrix::from_shared`], e.g. a memory-mapped cache file that many
//! matrices are ranges of): the matrix reads them in place, never copies them, and keeps the
//! buffer alive as long as it lives. Either way [`PackedMatrix::bytes`] is the same slice.

use std::fmt;
use std::ops::Range;
use std::sync::Arc;

use crate::bfp::Rounding;
use crate::error::NumericsError;
use crate::format::StorageFormat;
use crate::tile::{TILE, TILE_VALUES, pack_tile, unpack_tile_row};

/// A buffer shared by several packed matrices (e.g. a memory-mapped file).
pub type SharedBytes = Arc<dyn AsRef<[u8]> + Send + Sync>;

/// Where a matrix's tile bytes live.
#[derive(Clone)]
enum Storage {
    /// Bytes of its own.
    Owned(Vec<u8>),
    /// `range` of a shared buffer (checked to lie inside it at construction).
    Shared {
        data: SharedBytes,
        range: Range<usize>,
    },
}

impl Storage {
    fn as_slice(&self) -> &[u8] {
        match self {
            Self::Owned(bytes) => bytes,
            // Checked at construction; the fallback is never taken.
            Self::Shared { data, range } => {
                (**data).as_ref().get(range.clone()).unwrap_or_default()
            }
        }
    }
}

impl fmt::Debug for Storage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Owned(bytes) => write!(f, "Owned({} bytes)", bytes.len()),
            Self::Shared { range, .. } => write!(f, "Shared({range:?})"),
        }
    }
}

/// A `rows x cols` matrix packed in tiles of one storage format.
#[derive(Debug, Clone)]
pub struct PackedMatrix {
    rows: usize,
    cols: usize,
    format: StorageFormat,
    bytes: Storage,
}

/// Equal shape, format and bytes, wherever the bytes live.
impl PartialEq for PackedMatrix {
    fn eq(&self, other: &Self) -> bool {
        (self.rows, self.cols, self.format) == (other.rows, other.cols, other.format)
            && self.bytes() == other.bytes()
    }
}

impl Eq for PackedMatrix {}

/// Tiles needed to cover `n` values along one dimension.
fn tiles_for(n: usize) -> usize {
    n.div_ceil(TILE)
}

impl PackedMatrix {
    /// Packs row-major `values` (`rows * cols`) the way tt-metal's host packer does (ties to
    /// even).
    pub fn pack(
        values: &[f32],
        rows: usize,
        cols: usize,
        format: StorageFormat,
    ) -> Result<Self, NumericsError> {
        Self::pack_with(values, rows, cols, format, Rounding::TiesToEven)
    }

    /// Packs with an explicit rounding: [`Rounding::TiesAwayFromZero`] emulates tensors the
    /// device itself writes (op outputs, KV cache updates).
    pub fn pack_with(
        values: &[f32],
        rows: usize,
        cols: usize,
        format: StorageFormat,
        rounding: Rounding,
    ) -> Result<Self, NumericsError> {
        if rows == 0 || cols == 0 {
            return Err(NumericsError::EmptyShape { rows, cols });
        }
        let expected = rows * cols;
        if values.len() != expected {
            return Err(NumericsError::ShapeMismatch {
                rows,
                cols,
                expected,
                got: values.len(),
            });
        }
        let (tr_n, tc_n) = (tiles_for(rows), tiles_for(cols));
        let tile_bytes = format.tile_bytes();
        let mut bytes = vec![0u8; tr_n * tc_n * tile_bytes];
        let mut tile = [0f32; TILE_VALUES];
        for tr in 0..tr_n {
            for tc in 0..tc_n {
                tile.fill(0.0);
                for r in 0..TILE.min(rows - tr * TILE) {
                    let src = (tr * TILE + r) * cols + tc * TILE;
                    let n = TILE.min(cols - tc * TILE);
                    tile[r * TILE..r * TILE + n].copy_from_slice(&values[src..src + n]);
                }
                let at = (tr * tc_n + tc) * tile_bytes;
                pack_tile(&tile, format, rounding, &mut bytes[at..at + tile_bytes]);
            }
        }
        Ok(Self {
            rows,
            cols,
            format,
            bytes: Storage::Owned(bytes),
        })
    }

    /// Wraps already packed bytes (e.g. read from a tt-metal tensor of the same layout).
    pub fn from_bytes(
        rows: usize,
        cols: usize,
        format: StorageFormat,
        bytes: Vec<u8>,
    ) -> Result<Self, NumericsError> {
        Self::packed_len(rows, cols, format, bytes.len())?;
        Ok(Self {
            rows,
            cols,
            format,
            bytes: Storage::Owned(bytes),
        })
    }

    /// A matrix whose tiles are `range` of `data`, read in place (no copy): e.g. a tensor of a
    /// memory-mapped cache file. Errors unless the range lies inside `data` and holds exactly
    /// the tiles of the shape and format.
    pub fn from_shared(
        rows: usize,
        cols: usize,
        format: StorageFormat,
        data: SharedBytes,
        range: Range<usize>,
    ) -> Result<Self, NumericsError> {
        Self::packed_len(rows, cols, format, range.len())?;
        let available = (*data).as_ref().len();
        if range.end > available || range.start > range.end {
            return Err(NumericsError::ByteLength {
                expected: range.end,
                got: available,
            });
        }
        Ok(Self {
            rows,
            cols,
            format,
            bytes: Storage::Shared { data, range },
        })
    }

    /// Checks that `len` bytes are exactly the tiles of a non-empty `rows x cols` matrix.
    fn packed_len(
        rows: usize,
        cols: usize,
        format: StorageFormat,
        len: usize,
    ) -> Result<(), NumericsError> {
        if rows == 0 || cols == 0 {
            return Err(NumericsError::EmptyShape { rows, cols });
        }
        let expected = tiles_for(rows) * tiles_for(cols) * format.tile_bytes();
        if len != expected {
            return Err(NumericsError::ByteLength { expected, got: len });
        }
        Ok(())
    }

    /// Whether the bytes are a range of a shared buffer ([`Self::from_shared`]), not owned.
    pub fn is_shared(&self) -> bool {
        matches!(self.bytes, Storage::Shared { .. })
    }

    /// Logical rows.
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Logical columns.
    pub fn cols(&self) -> usize {
        self.cols
    }

    /// The storage format.
    pub fn format(&self) -> StorageFormat {
        self.format
    }

    /// Tiles down the rows (rows padded to a multiple of 32, divided by 32).
    pub fn tile_rows(&self) -> usize {
        tiles_for(self.rows)
    }

    /// Tiles across the columns.
    pub fn tile_cols(&self) -> usize {
        tiles_for(self.cols)
    }

    /// Bytes held (all tiles, padding included).
    pub fn byte_size(&self) -> usize {
        self.bytes().len()
    }

    /// All packed bytes, tile after tile.
    pub fn bytes(&self) -> &[u8] {
        self.bytes.as_slice()
    }

    /// The bytes of tile (`tr`, `tc`), or `None` past the matrix.
    pub fn tile(&self, tr: usize, tc: usize) -> Option<&[u8]> {
        if tr >= self.tile_rows() || tc >= self.tile_cols() {
            return None;
        }
        let tb = self.format.tile_bytes();
        let at = (tr * self.tile_cols() + tc) * tb;
        self.bytes().get(at..at + tb)
    }

    /// Dequantizes row `i` (its `cols` logical values) into `out`.
    pub fn row(&self, i: usize, out: &mut [f32]) -> Result<(), NumericsError> {
        if i >= self.rows {
            return Err(NumericsError::RowOutOfRange {
                row: i,
                rows: self.rows,
            });
        }
        if out.len() != self.cols {
            return Err(NumericsError::OutputLength {
                expected: self.cols,
                got: out.len(),
            });
        }
        let (tr, r) = (i / TILE, i % TILE);
        for (tc, chunk) in out.chunks_mut(TILE).enumerate() {
            if let Some(tile) = self.tile(tr, tc) {
                unpack_tile_row(tile, self.format, r, 0, chunk);
            }
        }
        Ok(())
    }

    /// Dequantizes the whole matrix, row-major, without padding.
    pub fn unpack(&self) -> Vec<f32> {
        let mut out = vec![0f32; self.rows * self.cols];
        for (i, row) in out.chunks_exact_mut(self.cols).enumerate() {
            // Cannot fail: `i < rows` and the chunk has `cols` values.
            let _ = self.row(i, row);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;
    use crate::bf16::round_bf16;

    fn ramp(n: usize) -> Vec<f32> {
        (0..n)
            .map(|i| ((i * 37 % 101) as f32 - 50.0) / 8.0)
            .collect()
    }

    #[test]
    fn sizes_pad_to_tiles() {
        let m = PackedMatrix::pack(&ramp(33 * 70), 33, 70, StorageFormat::Bfp8B).unwrap();
        assert_eq!((m.tile_rows(), m.tile_cols()), (2, 3));
        assert_eq!(m.byte_size(), 6 * 1088);
        let m4 = PackedMatrix::pack(&ramp(64 * 64), 64, 64, StorageFormat::Bfp4B).unwrap();
        assert_eq!(m4.byte_size(), 4 * 576);
        // bfp8 is 1088/2048 = 8.5/16 of bf16.
        let b = PackedMatrix::pack(&ramp(64 * 64), 64, 64, StorageFormat::Bf16).unwrap();
        assert_eq!(b.byte_size() * 17, m.byte_size() / 6 * 4 * 32);
    }

    #[test]
    fn row_matches_unpack_and_exact_formats_round_trip() {
        let v = ramp(45 * 77);
        for format in StorageFormat::ALL {
            let m = PackedMatrix::pack(&v, 45, 77, format).unwrap();
            let all = m.unpack();
            let mut row = vec![0f32; 77];
            for i in [0, 31, 32, 44] {
                m.row(i, &mut row).unwrap();
                assert_eq!(row, all[i * 77..(i + 1) * 77], "{format} row {i}");
            }
            if format == StorageFormat::F32 {
                assert_eq!(all, v);
            }
            if format == StorageFormat::Bf16 {
                assert_eq!(all, v.iter().map(|&x| round_bf16(x)).collect::<Vec<_>>());
            }
        }
    }

    #[test]
    fn block_float_error_is_bounded_by_half_a_step() {
        let v = ramp(32 * 32);
        for (format, width) in [(StorageFormat::Bfp8B, 7), (StorageFormat::Bfp4B, 3)] {
            let m = PackedMatrix::pack(&v, 32, 32, format).unwrap();
            let back = m.unpack();
            for r in 0..32 {
                for half in 0..2 {
                    let group = &v[r * 32 + half * 16..r * 32 + half * 16 + 16];
                    let max = group.iter().fold(0f32, |a, &x| a.max(x.abs()));
                    let step = 2f32.powi(max.log2().floor() as i32 - (width - 1));
                    for j in 0..16 {
                        let (x, y) = (group[j], back[r * 32 + half * 16 + j]);
                        // Clamping at the top can cost up to a full step.
                        assert!((x - y).abs() <= step, "{format} {x} -> {y}, step {step}");
                    }
                }
            }
        }
    }

    #[test]
    fn errors_are_typed() {
        assert!(matches!(
            PackedMatrix::pack(&[1.0; 5], 2, 3, StorageFormat::Bf16),
            Err(NumericsError::ShapeMismatch { .. })
        ));
        let m = PackedMatrix::pack(&[1.0; 6], 2, 3, StorageFormat::Bf16).unwrap();
        assert!(matches!(
            m.row(2, &mut [0.0; 3]),
            Err(NumericsError::RowOutOfRange { .. })
        ));
        assert!(matches!(
            m.row(0, &mut [0.0; 4]),
            Err(NumericsError::OutputLength { .. })
        ));
        assert!(m.tile(1, 0).is_none());
        assert!(PackedMatrix::from_bytes(2, 3, StorageFormat::Bf16, vec![0; 2048]).is_ok());
        assert!(PackedMatrix::from_bytes(2, 3, StorageFormat::Bf16, vec![0; 2047]).is_err());
        let shared: SharedBytes = Arc::new(vec![0u8; 3000]);
        let from = |r: Range<usize>| {
            PackedMatrix::from_shared(2, 3, StorageFormat::Bf16, Arc::clone(&shared), r)
        };
        assert!(from(0..2048).is_ok());
        assert!(from(952..3000).is_ok());
        assert!(matches!(
            from(953..3001),
            Err(NumericsError::ByteLength { .. })
        ));
        assert!(matches!(
            from(0..2047),
            Err(NumericsError::ByteLength { .. })
        ));
    }

    #[test]
    fn shared_storage_reads_the_same_tiles_in_place() {
        let v = ramp(45 * 77);
        for format in StorageFormat::ALL {
            let owned = PackedMatrix::pack(&v, 45, 77, format).unwrap();
            // The tiles at an offset inside a larger buffer, as in a cache file.
            let mut buf = vec![0xAAu8; 64];
            buf.extend_from_slice(owned.bytes());
            buf.extend_from_slice(&[0x55; 7]);
            let end = 64 + owned.byte_size();
            let shared = PackedMatrix::from_shared(45, 77, format, Arc::new(buf), 64..end).unwrap();
            assert!(shared.is_shared() && !owned.is_shared());
            assert_eq!(shared, owned);
            assert_eq!(shared.bytes(), owned.bytes());
            assert_eq!(shared.tile(1, 2), owned.tile(1, 2));
            assert_eq!(shared.unpack(), owned.unpack());
            assert!(shared.tile(2, 0).is_none());
            // A clone shares the buffer rather than copying it.
            let clone = shared.clone();
            assert_eq!(clone.bytes().as_ptr(), shared.bytes().as_ptr());
        }
    }
}
