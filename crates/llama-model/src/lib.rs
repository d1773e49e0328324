//! llama-model: the Llama family on the generic decoder (`tt-decoder`).
//!
//! Llama 2, 3, 3.1 and 3.2, SmolLM and TinyLlama share `model_type` `llama`: separate `q_proj`,
//! `k_proj`, `v_proj`, `gate_proj` and `up_proj`, grouped-query attention, tied or untied
//! embeddings, plain RoPE or Llama 3's `llama3` frequency scaling. Everything else (checkpoint
//! reading, the sharded decoder, the KV cache, generation, chat templates, the CLI) is shared;
//! this crate is the family's description:
//! - [`config`]: [`LlamaConfig`] from `config.json`, and its view as a decoder config;
//! - [`LlamaFamily`] / [`LLAMA`]: the [`tt_decoder::Family`] a binary registers.

pub mod config;

use tt_decoder::{DecoderConfig, Family, FamilyConfig};
use tt_hf::ConfigError;

pub use config::{Llama3Scaling, LlamaConfig};

/// The Llama family (`model_type` `llama`).
#[derive(Debug, Clone, Copy)]
pub struct LlamaFamily;

/// The one [`LlamaFamily`] value binaries register.
pub static LLAMA: LlamaFamily = LlamaFamily;

impl Family for LlamaFamily {
    fn name(&self) -> &'static str {
        "llama"
    }

    fn model_types(&self) -> &'static [&'static str] {
        &["llama"]
    }

    fn parse_config(&'static self, text: &str) -> Result<DecoderConfig, ConfigError> {
        Ok(LlamaConfig::from_json_str(text)?.decoder_config())
    }
}
