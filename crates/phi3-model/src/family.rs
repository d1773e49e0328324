//! Phi-3 as a [`Family`] of the generic decoder: its config keys, and nothing else.
//!
//! The decoder reads Phi-3 through [`crate::Phi3Config`] (LongRoPE parameters, fused `qkv_proj`
//! and `gate_up_proj`); its tensor names are HF's defaults, which include the fused names.

use tt_decoder::{DecoderConfig, Family, FamilyConfig};
use tt_hf::ConfigError;

use crate::config::Phi3Config;

/// The Phi-3 family (`model_type` `phi3`).
#[derive(Debug, Clone, Copy)]
pub struct Phi3Family;

/// The one [`Phi3Family`] value binaries register.
pub static PHI3: Phi3Family = Phi3Family;

impl Family for Phi3Family {
    fn name(&self) -> &'static str {
        "phi3"
    }

    fn model_types(&self) -> &'static [&'static str] {
        &["phi3"]
    }

    fn parse_config(&'static self, text: &str) -> Result<DecoderConfig, ConfigError> {
        Ok(Phi3Config::from_json_str(text)?.decoder_config())
    }
}
