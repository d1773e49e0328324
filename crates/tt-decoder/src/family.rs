//! The family seam: what makes Phi-3 Phi-3 and Llama Llama, and nothing else.
//!
//! A [`Family`] turns its `config.json` into a [`DecoderConfig`] (config keys, RoPE scaling,
//! fused or separate projections, special ids) and names the checkpoint's tensors
//! ([`TensorName`]; the default is the Llama naming most HF decoders share). Chat formatting
//! comes from the checkpoint's own template and BOS from its tokenizer, so they need no code.
//! [`open_checkpoint`] picks the family from `model_type` among those a binary knows.

use std::path::Path;

use tt_hf::checkpoint::resolve_model;
use tt_hf::{Checkpoint, ConfigError, HubEnv};

use crate::config::DecoderConfig;
use crate::error::Result;
use crate::names::TensorName;

/// One model family (Phi-3, Llama, ...).
pub trait Family: Send + Sync + 'static {
    /// Short name, e.g. `phi3`.
    fn name(&self) -> &'static str;

    /// The `model_type` values of config.json this family runs.
    fn model_types(&self) -> &'static [&'static str];

    /// Parses and validates config.json.
    fn parse_config(&'static self, text: &str) -> std::result::Result<DecoderConfig, ConfigError>;

    /// The checkpoint name of a tensor (default: HF's Llama names).
    fn tensor_name(&self, tensor: TensorName) -> String {
        tensor.llama_name()
    }
}

/// The family among `families` whose `model_types` include config.json's `model_type`.
pub fn family_for(
    text: &str,
    families: &[&'static dyn Family],
) -> std::result::Result<&'static dyn Family, ConfigError> {
    let model_type = tt_hf::json::model_type(text)?;
    let found = model_type.as_deref().and_then(|t| {
        families
            .iter()
            .copied()
            .find(|f| f.model_types().contains(&t))
    });
    found.ok_or_else(|| ConfigError::WrongModelType {
        model_type: model_type.unwrap_or_default(),
        expected: families
            .iter()
            .flat_map(|f| f.model_types().iter().map(|t| format!("`{t}`")))
            .collect::<Vec<_>>()
            .join(" or "),
    })
}

/// Opens `model` (a directory or an HF id in the offline cache) with the family its config.json
/// names, among `families`.
pub fn open_checkpoint(
    model: &str,
    families: &[&'static dyn Family],
) -> Result<Checkpoint<DecoderConfig>> {
    let dir = resolve_model(model, &HubEnv::from_env())?;
    open_checkpoint_dir(&dir, families)
}

/// [`open_checkpoint`] for a directory.
pub fn open_checkpoint_dir(
    dir: &Path,
    families: &[&'static dyn Family],
) -> Result<Checkpoint<DecoderConfig>> {
    Ok(Checkpoint::open_dir_with(dir, |text| {
        family_for(text, families)?.parse_config(text)
    })?)
}

/// A parsed config.json that can say what the decoder needs: a family's own config type, or a
/// [`DecoderConfig`] itself.
pub trait FamilyConfig {
    /// The decoder's view of this config.
    fn decoder_config(&self) -> DecoderConfig;
}

impl FamilyConfig for DecoderConfig {
    fn decoder_config(&self) -> DecoderConfig {
        self.clone()
    }
}
