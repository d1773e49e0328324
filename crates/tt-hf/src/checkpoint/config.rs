//! How a checkpoint's `config.json` is parsed: by the model family ([`HfConfig`] for a family's
//! own config type, or a parse function given at open), with HF's generation defaults
//! ([`ModelConfig`]); a plain JSON value serves a checkpoint opened without a family.

use std::path::Path;

use crate::error::ConfigError;
use crate::generation_config::GenerationConfig;

/// A parsed `config.json`: whatever a family makes of it, it knows HF's generation defaults.
pub trait ModelConfig {
    /// HF's generation defaults when `generation_config.json` is absent (its special ids).
    fn generation_defaults(&self) -> GenerationConfig;
}

/// A `config.json` type that parses itself (one family's config).
pub trait HfConfig: ModelConfig + Sized {
    /// Parses and validates the text of a `config.json`.
    fn from_json_str(text: &str) -> Result<Self, ConfigError>;

    /// Reads and validates a `config.json` file.
    fn from_file(path: &Path) -> Result<Self, ConfigError> {
        Self::from_json_str(&read_config_text(path)?)
    }
}

/// The text of a `config.json` file.
pub fn read_config_text(path: &Path) -> Result<String, ConfigError> {
    std::fs::read_to_string(path).map_err(|source| ConfigError::Io {
        path: path.to_path_buf(),
        source,
    })
}

/// Any JSON object: a checkpoint opened without a family (to inspect its tensors).
impl HfConfig for serde_json::Value {
    fn from_json_str(text: &str) -> Result<Self, ConfigError> {
        crate::json::parse_json("config.json", text)
    }
}

impl ModelConfig for serde_json::Value {
    fn generation_defaults(&self) -> GenerationConfig {
        let id = |key: &str| {
            self.get(key)
                .and_then(serde_json::Value::as_u64)
                .and_then(|v| u32::try_from(v).ok())
        };
        GenerationConfig {
            bos_token_id: id("bos_token_id"),
            eos_token_ids: id("eos_token_id").into_iter().collect(),
            pad_token_id: id("pad_token_id"),
            ..GenerationConfig::default()
        }
    }
}
