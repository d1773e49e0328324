//! `GenerationConfig`: stop tokens and sampling defaults from HF `generation_config.json`.

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::ConfigError;
use crate::json::{TokenIds, parse_json};

/// Generation defaults shipped with a checkpoint. Absent keys stay `None`; HF's own
/// defaults are temperature 1.0, top_k 50, top_p 1.0 and greedy decoding.
#[derive(Debug, Clone, PartialEq, Default, Serialize)]
pub struct GenerationConfig {
    /// Beginning-of-sequence id.
    pub bos_token_id: Option<u32>,
    /// Stop tokens (`eos_token_id`, one id or a list in the file).
    pub eos_token_ids: Vec<u32>,
    /// Padding id.
    pub pad_token_id: Option<u32>,
    /// Sample instead of greedy decoding.
    pub do_sample: bool,
    /// Softmax temperature.
    pub temperature: Option<f32>,
    /// Keep only the k most likely tokens.
    pub top_k: Option<usize>,
    /// Keep the smallest set of tokens whose probability reaches p.
    pub top_p: Option<f32>,
    /// Total length limit (prompt + generated).
    pub max_length: Option<usize>,
    /// Limit on generated tokens.
    pub max_new_tokens: Option<usize>,
}

#[derive(Debug, Deserialize)]
struct RawGenerationConfig {
    bos_token_id: Option<u32>,
    eos_token_id: Option<TokenIds>,
    pad_token_id: Option<u32>,
    do_sample: Option<bool>,
    temperature: Option<f32>,
    top_k: Option<usize>,
    top_p: Option<f32>,
    max_length: Option<usize>,
    max_new_tokens: Option<usize>,
}

impl GenerationConfig {
    /// Parses the text of a `generation_config.json`.
    pub fn from_json_str(text: &str) -> Result<Self, ConfigError> {
        let raw: RawGenerationConfig = parse_json("generation_config.json", text)?;
        Ok(Self {
            bos_token_id: raw.bos_token_id,
            eos_token_ids: raw.eos_token_id.map(TokenIds::into_vec).unwrap_or_default(),
            pad_token_id: raw.pad_token_id,
            do_sample: raw.do_sample.unwrap_or(false),
            temperature: raw.temperature,
            top_k: raw.top_k,
            top_p: raw.top_p,
            max_length: raw.max_length,
            max_new_tokens: raw.max_new_tokens,
        })
    }

    /// Reads a `generation_config.json` file.
    pub fn from_file(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        Self::from_json_str(&text)
    }

    /// True when `id` ends generation.
    pub fn is_stop_token(&self, id: u32) -> bool {
        self.eos_token_ids.contains(&id)
    }
}
