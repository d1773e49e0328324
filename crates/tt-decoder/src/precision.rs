//! The precision a model runs in: a [`Preset`] of `tt-numerics`, resolved into what the decoder
//! does with it.
//!
//! - Linear layers (QKV, O, FF1/FF3, FF2, LM head) take their op class's [`OpSettings`]: exact
//!   settings (f32 or bf16 weights, HiFi4, fp32 accumulation) keep host tensors and the host's
//!   kernels; any other weights are packed as the device stores them and multiplied with the
//!   device's fidelity and accumulation (`tt_mesh::DeviceShards`). Every op's output is written
//!   in its output format; the LM head's is the format the logits leave the device in.
//! - Activations between ops are f32 or rounded to bf16 ([`Fidelity`]).
//! - The KV cache is stored f32 or bf16; a block-float cache format (bfloat8_b) is emulated by
//!   rounding K and V to it, 16 values of a head row per shared exponent, as the device's packer
//!   writes them, before they enter the cache.
//! - SDPA's fidelity and accumulation are not emulated: attention runs in f32 on the stored
//!   (rounded) Q, K and V, and its output is rounded like any activation.
//!
//! `--fidelity f32|bf16` are aliases of the presets `f32` and `bf16` ([`preset_of_fidelity`]).

use tt_numerics::{OpClass, OpSettings, Preset, PresetName, StorageFormat};
use tt_ops::{DType, Fidelity};

use crate::error::{Error, Result};

/// Parses a `--precision` argument (`NAME[,op.field=value...]`), for clap's `value_parser`.
pub fn parse_preset(spec: &str) -> std::result::Result<Preset, String> {
    Preset::parse(spec).map_err(|e| e.to_string())
}

/// The preset a `--fidelity` value stands for.
pub fn preset_of_fidelity(fidelity: Fidelity) -> Preset {
    Preset::named(match fidelity {
        Fidelity::F32 => PresetName::F32,
        Fidelity::Bf16 => PresetName::Bf16,
    })
}

/// A preset resolved for the decoder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Numerics {
    preset: Preset,
    activations: Fidelity,
    kv_format: StorageFormat,
}

impl Numerics {
    /// Resolves `preset`; activations must be stored f32 or bf16.
    pub fn new(preset: Preset) -> Result<Self> {
        let activations = match preset.get(OpClass::Activations).weights {
            StorageFormat::F32 => Fidelity::F32,
            StorageFormat::Bf16 => Fidelity::Bf16,
            other => {
                return Err(Error::Precision(format!(
                    "activations stored in {other} are not supported (f32 or bf16)"
                )));
            }
        };
        let kv_format = preset.get(OpClass::KvCache).weights;
        Ok(Self {
            preset,
            activations,
            kv_format,
        })
    }

    /// The preset.
    pub fn preset(&self) -> &Preset {
        &self.preset
    }

    /// How activations are rounded between ops.
    pub fn activations(&self) -> Fidelity {
        self.activations
    }

    /// The settings of one op class.
    pub fn op(&self, op: OpClass) -> OpSettings {
        *self.preset.get(op)
    }

    /// The format the logits leave the device in.
    pub fn logits_format(&self) -> StorageFormat {
        self.preset.get(OpClass::LmHead).output
    }

    /// The element type the KV cache is kept in: f32 for an f32 cache, else bf16 (block-float
    /// values are exact in bf16).
    pub fn kv_dtype(&self) -> DType {
        match self.kv_format {
            StorageFormat::F32 => DType::F32,
            _ => DType::Bf16,
        }
    }

    /// The block-float format K and V are rounded to before entering the cache, if any.
    pub fn kv_block_format(&self) -> Option<StorageFormat> {
        self.kv_format.block_float().map(|_| self.kv_format)
    }
}

impl Default for Numerics {
    fn default() -> Self {
        Self {
            preset: Preset::default(),
            activations: Fidelity::F32,
            kv_format: StorageFormat::F32,
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn presets_resolve() {
        let f32 = Numerics::new(preset_of_fidelity(Fidelity::F32)).unwrap();
        assert_eq!(f32, Numerics::default());
        let bf16 = Numerics::new(preset_of_fidelity(Fidelity::Bf16)).unwrap();
        assert_eq!(bf16.activations(), Fidelity::Bf16);
        assert_eq!(bf16.kv_dtype(), DType::Bf16);
        assert_eq!(bf16.logits_format(), StorageFormat::Bf16);
        assert!(bf16.op(OpClass::Qkv).is_exact_math());
        let acc = Numerics::new(Preset::parse("accuracy").unwrap()).unwrap();
        assert_eq!(acc.kv_block_format(), Some(StorageFormat::Bfp8B));
        assert_eq!(acc.logits_format(), StorageFormat::Bfp8B);
        assert!(!acc.op(OpClass::Ff2).is_exact_math());
        let bad = Preset::parse("seed,activations.weights=bfp8").unwrap();
        assert!(matches!(Numerics::new(bad), Err(Error::Precision(_))));
    }
}
