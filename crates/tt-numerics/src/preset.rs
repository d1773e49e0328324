//! Precision presets as data: per op class, the stored format, math fidelity, accumulation and
//! output format, each with the tt-metal file it was taken from.
//!
//! Named presets:
//! - `f32`: exact host arithmetic, no device rounding anywhere;
//! - `bf16`: bf16 weights, KV cache and activations with exact products and fp32 accumulation,
//!   logits written out in bf16 by the device's packer (what `--fidelity bf16` always meant);
//! - `seed`: the seed bringup's bf16 weights, KV cache and activations with ttnn's default compute
//!   config for `ttnn.linear` (HiFi2, bf16 accumulation when the output is not f32) and for SDPA
//!   (HiFi2, bf16 accumulation);
//! - `accuracy`, `performance`: tt_transformers' `ModelOptimizations` for Phi-3-mini (decode
//!   settings: bfp8 weights and KV cache; performance puts FF1/FF3 in bfp4 with LoFi).
//!
//! Presets are overridable per op class with `op.field=value` (e.g. `ff1_ff3.weights=bfp4`).

use std::fmt;
use std::str::FromStr;

use crate::bfp::Rounding;
use crate::error::NumericsError;
use crate::fidelity::{Accumulation, MathFidelity};
use crate::format::StorageFormat;

/// ttnn's default compute config for `ttnn.linear` / `ttnn.matmul`.
pub const SRC_MATMUL_DEFAULT: &str = "ttnn/cpp/ttnn/operations/matmul/device/matmul_device_operation.cpp (create_matmul_attributes defaults)";
/// ttnn's default compute config for `scaled_dot_product_attention`.
pub const SRC_SDPA_DEFAULT: &str = "ttnn/cpp/ttnn/operations/transformer/sdpa/sdpa.cpp (init_device_compute_kernel_config defaults)";
/// The seed bringup's storage choice.
pub const SRC_SEED: &str =
    "seed bringup: bf16 weights, KV cache and activations (docs FACTS.md §2)";
/// tt_transformers' accuracy mode.
pub const SRC_TT_ACCURACY: &str =
    "models/tt_transformers/tt/model_config.py (ModelOptimizations.accuracy, Phi-3-mini)";
/// tt_transformers' defaults (what performance mode keeps outside FF1/FF3).
pub const SRC_TT_DEFAULTS: &str =
    "models/tt_transformers/tt/model_config.py (ModelOptimizations._default_settings)";
/// tt_transformers' performance mode.
pub const SRC_TT_PERFORMANCE: &str =
    "models/tt_transformers/tt/model_config.py (ModelOptimizations.performance)";
/// tt_transformers' LM head.
pub const SRC_TT_LM_HEAD: &str =
    "models/tt_transformers/tt/lm_head.py (HiFi2, fp32 acc off, bfloat8_b output)";
/// The exact preset.
pub const SRC_EXACT: &str = "exact host f32 (no device rounding)";
/// The host bf16 preset.
pub const SRC_HOST_BF16: &str =
    "host bf16 (--fidelity bf16): bf16 storage, exact products, bf16 outputs (device packer)";
/// A user override.
pub const SRC_OVERRIDE: &str = "override";

/// The op classes a decoder's numerics are set by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum OpClass {
    /// The fused Q/K/V projection.
    Qkv,
    /// The attention output projection.
    O,
    /// The MLP gate and up projections (tt_transformers FF1 / FF3).
    Ff1Ff3,
    /// The MLP down projection (FF2).
    Ff2,
    /// Scaled dot-product attention (reads the KV cache).
    Sdpa,
    /// The KV cache's storage.
    KvCache,
    /// The LM head (its output is the logits).
    LmHead,
    /// Activations between ops.
    Activations,
}

/// One field of [`OpSettings`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Field {
    /// The stored operand's format.
    Weights,
    /// The math fidelity.
    Fidelity,
    /// The accumulator precision.
    Accumulation,
    /// The output's format.
    Output,
}

impl Field {
    /// All fields, in table order.
    pub const ALL: [Field; 4] = [
        Self::Weights,
        Self::Fidelity,
        Self::Accumulation,
        Self::Output,
    ];

    fn index(self) -> usize {
        self as usize
    }
}

impl OpClass {
    /// Every op class, in table order.
    pub const ALL: [OpClass; 8] = [
        Self::Qkv,
        Self::O,
        Self::Ff1Ff3,
        Self::Ff2,
        Self::Sdpa,
        Self::KvCache,
        Self::LmHead,
        Self::Activations,
    ];

    /// The name used in overrides and tables.
    pub fn name(self) -> &'static str {
        match self {
            Self::Qkv => "qkv",
            Self::O => "o",
            Self::Ff1Ff3 => "ff1_ff3",
            Self::Ff2 => "ff2",
            Self::Sdpa => "sdpa",
            Self::KvCache => "kv_cache",
            Self::LmHead => "lm_head",
            Self::Activations => "activations",
        }
    }

    /// Whether a field means anything for this op class: SDPA has no weights of its own, the KV
    /// cache and the activations are storage only.
    pub fn uses(self, field: Field) -> bool {
        match self {
            Self::Sdpa => field != Field::Weights,
            Self::KvCache | Self::Activations => field == Field::Weights,
            _ => true,
        }
    }
}

impl FromStr for OpClass {
    type Err = NumericsError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let lower = s.to_ascii_lowercase();
        let alias = match lower.as_str() {
            "gate_up" | "ff1" | "ff3" => "ff1_ff3",
            "down" => "ff2",
            "kv" => "kv_cache",
            "acts" => "activations",
            other => other,
        };
        Self::ALL
            .into_iter()
            .find(|op| op.name() == alias)
            .ok_or_else(|| NumericsError::UnknownName {
                what: "op class",
                got: s.to_string(),
                expected: "qkv, o, ff1_ff3, ff2, sdpa, kv_cache, lm_head, activations",
            })
    }
}

/// The numerics of one op class.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OpSettings {
    /// Format of the stored operand: the weights of a linear op, the cache for
    /// [`OpClass::KvCache`], the activations for [`OpClass::Activations`].
    pub weights: StorageFormat,
    /// Multiplier phases.
    pub fidelity: MathFidelity,
    /// Destination register precision (`fp32_dest_acc_en`).
    pub accumulation: Accumulation,
    /// Format the op's output is written in (by the device's packer).
    pub output: StorageFormat,
    /// Where the settings were taken from.
    pub source: &'static str,
    overridden: [bool; 4],
}

impl OpSettings {
    /// Exact host arithmetic: f32 operand, HiFi4, fp32 destination, f32 output.
    pub const EXACT: OpSettings = OpSettings::new(
        StorageFormat::F32,
        MathFidelity::HiFi4,
        Accumulation::Fp32,
        StorageFormat::F32,
        SRC_EXACT,
    );

    /// Settings taken from `source`.
    pub const fn new(
        weights: StorageFormat,
        fidelity: MathFidelity,
        accumulation: Accumulation,
        output: StorageFormat,
        source: &'static str,
    ) -> Self {
        Self {
            weights,
            fidelity,
            accumulation,
            output,
            source,
            overridden: [false; 4],
        }
    }

    /// Whether `field` was changed by an override.
    pub fn is_overridden(&self, field: Field) -> bool {
        self.overridden[field.index()]
    }

    /// Whether a plain host matmul computes this op's sums: the stored operand is f32 or bf16,
    /// every product is exact (HiFi4) and the destination is fp32. Block-float weights, a lower
    /// fidelity or a bf16 destination need the device's arithmetic emulated.
    pub fn is_exact_math(&self) -> bool {
        matches!(self.weights, StorageFormat::F32 | StorageFormat::Bf16)
            && self.fidelity == MathFidelity::HiFi4
            && self.accumulation == Accumulation::Fp32
    }

    /// How the device rounds what it writes: ties away from zero (its packer).
    pub fn output_rounding(&self) -> Rounding {
        Rounding::TiesAwayFromZero
    }

    fn set(&mut self, field: Field, value: &str) -> Result<(), NumericsError> {
        match field {
            Field::Weights => self.weights = value.parse()?,
            Field::Fidelity => self.fidelity = value.parse()?,
            Field::Accumulation => self.accumulation = value.parse()?,
            Field::Output => self.output = value.parse()?,
        }
        self.overridden[field.index()] = true;
        Ok(())
    }
}

/// The named presets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PresetName {
    /// Exact f32.
    F32,
    /// bf16 storage and outputs with exact products (the `--fidelity bf16` alias).
    Bf16,
    /// The seed bringup's bf16 with ttnn defaults.
    Seed,
    /// tt_transformers accuracy mode.
    Accuracy,
    /// tt_transformers performance mode.
    Performance,
}

impl PresetName {
    /// Every preset, most exact first.
    pub const ALL: [PresetName; 5] = [
        Self::F32,
        Self::Bf16,
        Self::Seed,
        Self::Accuracy,
        Self::Performance,
    ];

    /// The name on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Self::F32 => "f32",
            Self::Bf16 => "bf16",
            Self::Seed => "seed",
            Self::Accuracy => "accuracy",
            Self::Performance => "performance",
        }
    }
}

impl FromStr for PresetName {
    type Err = NumericsError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|p| p.name() == s.to_ascii_lowercase())
            .ok_or_else(|| NumericsError::UnknownName {
                what: "precision preset",
                got: s.to_string(),
                expected: "f32, bf16, seed, accuracy, performance",
            })
    }
}

impl fmt::Display for PresetName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A named preset with any overrides applied: one [`OpSettings`] per [`OpClass`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Preset {
    name: PresetName,
    ops: [OpSettings; 8],
}

impl Preset {
    /// The named preset, without overrides.
    pub fn named(name: PresetName) -> Self {
        use Accumulation::{Bf16 as AccBf16, Fp32};
        use MathFidelity::{HiFi2, HiFi4, LoFi};
        use StorageFormat::{Bf16, Bfp4B, Bfp8B, F32};
        let ops = match name {
            PresetName::F32 => [OpSettings::new(F32, HiFi4, Fp32, F32, SRC_EXACT); 8],
            PresetName::Bf16 => [OpSettings::new(Bf16, HiFi4, Fp32, Bf16, SRC_HOST_BF16); 8],
            PresetName::Seed => {
                let linear = OpSettings::new(Bf16, HiFi2, AccBf16, Bf16, SRC_MATMUL_DEFAULT);
                let storage = OpSettings::new(Bf16, HiFi2, AccBf16, Bf16, SRC_SEED);
                [
                    linear,
                    linear,
                    linear,
                    linear,
                    OpSettings::new(Bf16, HiFi2, AccBf16, Bf16, SRC_SDPA_DEFAULT),
                    storage,
                    linear,
                    storage,
                ]
            }
            PresetName::Accuracy | PresetName::Performance => {
                let src = if name == PresetName::Performance {
                    SRC_TT_DEFAULTS
                } else {
                    SRC_TT_ACCURACY
                };
                let ff1_ff3 = if name == PresetName::Performance {
                    OpSettings::new(Bfp4B, LoFi, AccBf16, Bf16, SRC_TT_PERFORMANCE)
                } else {
                    OpSettings::new(Bfp8B, HiFi2, AccBf16, Bf16, src)
                };
                [
                    OpSettings::new(Bfp8B, HiFi2, Fp32, Bf16, src),
                    OpSettings::new(Bfp8B, HiFi2, Fp32, Bf16, src),
                    ff1_ff3,
                    OpSettings::new(Bfp8B, HiFi2, AccBf16, Bf16, src),
                    OpSettings::new(Bf16, HiFi2, Fp32, Bf16, src),
                    OpSettings::new(Bfp8B, HiFi2, Fp32, Bfp8B, src),
                    OpSettings::new(Bfp8B, HiFi2, AccBf16, Bfp8B, SRC_TT_LM_HEAD),
                    OpSettings::new(Bf16, HiFi2, Fp32, Bf16, src),
                ]
            }
        };
        Self { name, ops }
    }

    /// Parses `NAME[,op.field=value...]`, e.g. `performance,ff2.weights=bfp4,qkv.fidelity=hifi4`.
    pub fn parse(spec: &str) -> Result<Self, NumericsError> {
        let mut parts = spec.split(',').map(str::trim).filter(|p| !p.is_empty());
        let name: PresetName = parts.next().unwrap_or_default().parse()?;
        let mut preset = Self::named(name);
        for o in parts {
            preset.apply_override(o)?;
        }
        Ok(preset)
    }

    /// Applies one override `op.field=value`; fields: `weights`, `fidelity`, `acc`
    /// (`accumulation`), `output`.
    pub fn apply_override(&mut self, spec: &str) -> Result<(), NumericsError> {
        let bad = || NumericsError::BadOverride(spec.to_string());
        let (key, value) = spec.split_once('=').ok_or_else(bad)?;
        let (op, field) = key.trim().split_once('.').ok_or_else(bad)?;
        let op: OpClass = op.parse()?;
        let field = match field.to_ascii_lowercase().as_str() {
            "weights" | "storage" | "format" => Field::Weights,
            "fidelity" => Field::Fidelity,
            "acc" | "accumulation" => Field::Accumulation,
            "output" | "out" => Field::Output,
            _ => return Err(bad()),
        };
        if !op.uses(field) {
            return Err(bad());
        }
        self.ops[op as usize].set(field, value.trim())
    }

    /// The preset's name.
    pub fn name(&self) -> PresetName {
        self.name
    }

    /// The settings of one op class.
    pub fn get(&self, op: OpClass) -> &OpSettings {
        &self.ops[op as usize]
    }

    /// Whether any override was applied.
    pub fn is_overridden(&self) -> bool {
        self.ops
            .iter()
            .any(|s| Field::ALL.iter().any(|&f| s.is_overridden(f)))
    }
}

impl Default for Preset {
    fn default() -> Self {
        Self::named(PresetName::F32)
    }
}

impl FromStr for Preset {
    type Err = NumericsError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    #[test]
    fn presets_differ_where_tt_transformers_says() {
        let acc = Preset::named(PresetName::Accuracy);
        let perf = Preset::named(PresetName::Performance);
        for op in OpClass::ALL {
            if op == OpClass::Ff1Ff3 {
                assert_eq!(perf.get(op).weights, StorageFormat::Bfp4B);
                assert_eq!(perf.get(op).fidelity, MathFidelity::LoFi);
                assert_eq!(acc.get(op).weights, StorageFormat::Bfp8B);
            } else {
                let key = |s: &OpSettings| (s.weights, s.fidelity, s.accumulation, s.output);
                assert_eq!(key(acc.get(op)), key(perf.get(op)), "{op:?}");
            }
        }
        assert_eq!(acc.get(OpClass::KvCache).weights, StorageFormat::Bfp8B);
        let seed = Preset::named(PresetName::Seed);
        assert_eq!(seed.get(OpClass::Qkv).fidelity, MathFidelity::HiFi2);
        assert_eq!(seed.get(OpClass::Qkv).accumulation, Accumulation::Bf16);
        assert!(
            OpClass::ALL
                .iter()
                .all(|&op| Preset::default().get(op).weights == StorageFormat::F32)
        );
    }

    #[test]
    fn overrides_parse_and_mark_the_field() {
        let p =
            Preset::parse("accuracy, ff1_ff3.weights=bfp4 ,qkv.fidelity=hifi4,lm_head.output=bf16")
                .unwrap();
        assert_eq!(p.name(), PresetName::Accuracy);
        assert_eq!(p.get(OpClass::Ff1Ff3).weights, StorageFormat::Bfp4B);
        assert!(p.get(OpClass::Ff1Ff3).is_overridden(Field::Weights));
        assert!(!p.get(OpClass::Ff1Ff3).is_overridden(Field::Fidelity));
        assert_eq!(p.get(OpClass::Qkv).fidelity, MathFidelity::HiFi4);
        assert_eq!(p.get(OpClass::LmHead).output, StorageFormat::Bf16);
        assert!(p.is_overridden());
        assert!(!Preset::parse("seed").unwrap().is_overridden());
        assert_eq!("gate_up".parse::<OpClass>().unwrap(), OpClass::Ff1Ff3);
    }

    #[test]
    fn bad_specs_are_typed_errors() {
        assert!(matches!(
            Preset::parse("fast"),
            Err(NumericsError::UnknownName { .. })
        ));
        assert!(matches!(
            Preset::parse(""),
            Err(NumericsError::UnknownName { .. })
        ));
        assert!(matches!(
            Preset::parse("seed,qkv.weights"),
            Err(NumericsError::BadOverride(_))
        ));
        assert!(matches!(
            Preset::parse("seed,qkv=bf16"),
            Err(NumericsError::BadOverride(_))
        ));
        assert!(matches!(
            Preset::parse("seed,qkv.colour=bf16"),
            Err(NumericsError::BadOverride(_))
        ));
        assert!(matches!(
            Preset::parse("seed,sdpa.weights=bf16"),
            Err(NumericsError::BadOverride(_))
        ));
        assert!(matches!(
            Preset::parse("seed,mlp.weights=bf16"),
            Err(NumericsError::UnknownName { .. })
        ));
        assert!(matches!(
            Preset::parse("seed,qkv.weights=int8"),
            Err(NumericsError::UnknownName { .. })
        ));
    }
}
