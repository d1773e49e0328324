//! Storage formats of a tensor on the device, and their size per 32x32 tile.

use std::fmt;
use std::str::FromStr;

use crate::bfp::BfpFormat;
use crate::error::NumericsError;
use crate::tile::TILE_VALUES;

/// How a tensor's values are stored (tt-metal `DataType`: FLOAT32, BFLOAT16, BFLOAT8_B,
/// BFLOAT4_B).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum StorageFormat {
    /// IEEE binary32: exact on the host side.
    F32,
    /// bfloat16: 8 exponent bits, 7 mantissa bits.
    Bf16,
    /// bfloat8_b: 16 values share an 8-bit exponent; sign + 7-bit magnitude each.
    Bfp8B,
    /// bfloat4_b: 16 values share an 8-bit exponent; sign + 3-bit magnitude each.
    Bfp4B,
}

impl StorageFormat {
    /// Every format, widest first.
    pub const ALL: [StorageFormat; 4] = [Self::F32, Self::Bf16, Self::Bfp8B, Self::Bfp4B];

    /// The short name used on the command line and in tables.
    pub fn name(self) -> &'static str {
        match self {
            Self::F32 => "f32",
            Self::Bf16 => "bf16",
            Self::Bfp8B => "bfp8",
            Self::Bfp4B => "bfp4",
        }
    }

    /// Bytes of one 32x32 tile: f32 4096, bf16 2048, bfp8_b 1088, bfp4_b 576.
    pub fn tile_bytes(self) -> usize {
        match self {
            Self::F32 => TILE_VALUES * 4,
            Self::Bf16 => TILE_VALUES * 2,
            Self::Bfp8B => BfpFormat::Bfp8B.tile_bytes(),
            Self::Bfp4B => BfpFormat::Bfp4B.tile_bytes(),
        }
    }

    /// The block-float format, if this is one.
    pub fn block_float(self) -> Option<BfpFormat> {
        match self {
            Self::Bfp8B => Some(BfpFormat::Bfp8B),
            Self::Bfp4B => Some(BfpFormat::Bfp4B),
            Self::F32 | Self::Bf16 => None,
        }
    }
}

impl fmt::Display for StorageFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for StorageFormat {
    type Err = NumericsError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "f32" | "fp32" | "float32" => Ok(Self::F32),
            "bf16" | "bfloat16" => Ok(Self::Bf16),
            "bfp8" | "bfp8_b" | "bfloat8_b" => Ok(Self::Bfp8B),
            "bfp4" | "bfp4_b" | "bfloat4_b" => Ok(Self::Bfp4B),
            _ => Err(NumericsError::UnknownName {
                what: "storage format",
                got: s.to_string(),
                expected: "f32, bf16, bfp8, bfp4",
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    #[test]
    fn tile_sizes_match_tt_metal() {
        assert_eq!(StorageFormat::F32.tile_bytes(), 4096);
        assert_eq!(StorageFormat::Bf16.tile_bytes(), 2048);
        assert_eq!(StorageFormat::Bfp8B.tile_bytes(), 1088);
        assert_eq!(StorageFormat::Bfp4B.tile_bytes(), 576);
    }

    #[test]
    fn names_round_trip() {
        for f in StorageFormat::ALL {
            assert_eq!(f.name().parse::<StorageFormat>().unwrap(), f);
        }
        assert_eq!(
            "bfloat8_b".parse::<StorageFormat>().unwrap(),
            StorageFormat::Bfp8B
        );
        assert!("int8".parse::<StorageFormat>().is_err());
    }
}
