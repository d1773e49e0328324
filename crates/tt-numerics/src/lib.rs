//! tt-numerics: how a Tenstorrent device stores and multiplies numbers, emulated on the host.
//!
//! No model knowledge lives here. A model asks a [`Preset`] for the [`OpSettings`] of each op
//! class, keeps its weights packed in a [`PackedMatrix`] of the op's [`StorageFormat`], and runs
//! its products under the op's [`MathFidelity`] and [`Accumulation`].
//!
//! Code map:
//! - [`format`]: the storage formats (f32, bf16, bfloat8_b, bfloat4_b) and their tile sizes.
//! - [`bf16`]: rounding f32 to bf16 (ties to even, ties away from zero, truncation).
//! - [`bfp`]: one 16-value block of bfloat8_b / bfloat4_b: shared exponent, codes, decoding.
//! - [`bfp_block`]: the same encoding of a 16-value block, vectorized (packing a checkpoint).
//! - [`tile`]: the 32x32 tile layout (four 16x16 faces) and packing one tile.
//! - [`packed`]: a matrix kept packed in tiles, with row dequantization.
//! - [`fidelity`]: math fidelity phases, accumulation, a reference dot product.
//! - [`preset`]: op classes, per-op settings and the named precision presets, as data.
//! - [`table`]: a preset printed as a table.
//! - [`error`]: typed errors.
//!
//! Sources (tenstorrent/tt-metal): `tt_metal/impl/data_format/blockfloat_common.cpp`,
//! `bfloat8.cpp`, `bfloat4.cpp` (host packer), `tech_reports/matrix_engine/matrix_engine.md`
//! (fidelity), `models/tt_transformers/tt/model_config.py` (presets). `docs/NUMERICS.md` says
//! what each format and fidelity does; the `tt-metal-oracle` crate checks [`bfp`] and [`tile`]
//! bit for bit against tt-metal's own compiled packer.

pub mod bf16;
pub mod bfp;
pub mod bfp_block;
pub mod error;
pub mod fidelity;
pub mod format;
pub mod packed;
pub mod preset;
pub mod table;
pub mod tile;

pub use bfp::{BfpFormat, Rounding};
pub use error::NumericsError;
pub use fidelity::{Accumulation, MathFidelity};
pub use format::StorageFormat;
pub use packed::PackedMatrix;
pub use preset::{OpClass, OpSettings, Preset, PresetName};
