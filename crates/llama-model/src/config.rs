//! `LlamaConfig`: a Llama `config.json` (transformers 5.x `LlamaConfig`), validated.
//!
//! Optional keys take HF's defaults. The rope settings may come as `rope_scaling` (older files)
//! or `rope_parameters` (transformers 5, which also holds `rope_theta`); the types are `default`
//! (plain RoPE) and `llama3`. Attention and MLP biases are refused: the decoder has none.

use serde::Deserialize;
use tt_decoder::config::validate_heads;
use tt_decoder::{DecoderConfig, FamilyConfig};
use tt_hf::json::{TokenIds, in_range, parse_json, positive, positive_float, required};
use tt_hf::{ConfigError, GenerationConfig, HfConfig, ModelConfig};
use tt_ops::{RopeScaling, RopeSpec};
use tt_shard::{GateUpLayout, QkvLayout};

use crate::LLAMA;

/// Llama 3's frequency scaling (`rope_type` `llama3`).
#[derive(Debug, Clone, PartialEq)]
pub struct Llama3Scaling {
    /// Divisor of the low frequencies.
    pub factor: f64,
    /// Low-frequency boundary factor.
    pub low_freq_factor: f64,
    /// High-frequency boundary factor.
    pub high_freq_factor: f64,
    /// Pretraining context length.
    pub original_max_position_embeddings: usize,
}

/// Llama hyper-parameters, validated.
#[derive(Debug, Clone, PartialEq)]
pub struct LlamaConfig {
    /// Rows of the embedding and of `lm_head`.
    pub vocab_size: usize,
    /// Residual width.
    pub hidden_size: usize,
    /// MLP width.
    pub intermediate_size: usize,
    /// Decoder layers.
    pub num_hidden_layers: usize,
    /// Query heads.
    pub num_attention_heads: usize,
    /// Key/value heads (defaults to the query heads).
    pub num_key_value_heads: usize,
    /// Width of one head (`head_dim`, else hidden / heads).
    pub head_dim: usize,
    /// Longest sequence the model supports.
    pub max_position_embeddings: usize,
    /// RMSNorm epsilon.
    pub rms_norm_eps: f64,
    /// RoPE base.
    pub rope_theta: f64,
    /// `llama3` scaling, or `None` for plain RoPE.
    pub llama3: Option<Llama3Scaling>,
    /// `lm_head` is the embedding matrix.
    pub tie_word_embeddings: bool,
    /// Beginning-of-sequence id.
    pub bos_token_id: Option<u32>,
    /// End-of-sequence ids.
    pub eos_token_ids: Vec<u32>,
    /// Padding id.
    pub pad_token_id: Option<u32>,
}

/// The keys read from config.json; every one optional so absence is reported by name.
#[derive(Debug, Deserialize)]
struct Raw {
    model_type: Option<String>,
    vocab_size: Option<i64>,
    hidden_size: Option<i64>,
    intermediate_size: Option<i64>,
    num_hidden_layers: Option<i64>,
    num_attention_heads: Option<i64>,
    num_key_value_heads: Option<i64>,
    head_dim: Option<i64>,
    max_position_embeddings: Option<i64>,
    rms_norm_eps: Option<f64>,
    rope_theta: Option<f64>,
    rope_scaling: Option<RawRope>,
    rope_parameters: Option<RawRope>,
    tie_word_embeddings: Option<bool>,
    attention_bias: Option<bool>,
    mlp_bias: Option<bool>,
    hidden_act: Option<String>,
    bos_token_id: Option<u32>,
    eos_token_id: Option<TokenIds>,
    pad_token_id: Option<u32>,
}

/// A `rope_scaling` / `rope_parameters` dictionary.
#[derive(Debug, Default, Deserialize)]
struct RawRope {
    rope_type: Option<String>,
    #[serde(rename = "type")]
    legacy_type: Option<String>,
    rope_theta: Option<f64>,
    factor: Option<f64>,
    low_freq_factor: Option<f64>,
    high_freq_factor: Option<f64>,
    original_max_position_embeddings: Option<i64>,
}

/// What the decoder does not implement.
const UNSUPPORTED: &str = "the decoder implements a bias-free Llama (attention_bias and mlp_bias \
                           false)";

impl LlamaConfig {
    /// Parses and validates the text of a `config.json`.
    pub fn from_json_str(text: &str) -> Result<Self, ConfigError> {
        let raw: Raw = parse_json("config.json", text)?;
        match raw.model_type.as_deref() {
            Some("llama") => {}
            other => {
                return Err(ConfigError::WrongModelType {
                    model_type: other.unwrap_or_default().to_string(),
                    expected: "`llama`".to_string(),
                });
            }
        }
        for (field, on) in [
            ("attention_bias", raw.attention_bias),
            ("mlp_bias", raw.mlp_bias),
        ] {
            if on == Some(true) {
                return Err(ConfigError::InvalidValue {
                    field,
                    value: 1.0,
                    expected: UNSUPPORTED,
                });
            }
        }
        let act = raw.hidden_act.unwrap_or_else(|| "silu".to_string());
        if act != "silu" {
            return Err(ConfigError::UnsupportedActivation { act });
        }
        let hidden_size = required(raw.hidden_size, "hidden_size")?;
        let heads = required(raw.num_attention_heads, "num_attention_heads")?;
        let kv_heads = match raw.num_key_value_heads {
            Some(v) => positive(v, "num_key_value_heads")?,
            None => heads,
        };
        let head_dim = raw.head_dim.map(|v| positive(v, "head_dim")).transpose()?;
        let head_dim = validate_heads(hidden_size, heads, kv_heads, head_dim)?;
        let rope = match (raw.rope_scaling, raw.rope_parameters) {
            (Some(s), _) => s,
            (None, Some(p)) => p,
            (None, None) => RawRope::default(),
        };
        let rope_theta = in_range(
            rope.rope_theta.or(raw.rope_theta).unwrap_or(10_000.0),
            "rope_theta",
            (1e-3, 1e30),
            "a number between 1e-3 and 1e30 (Llama 3 uses 500000)",
        )?;
        Ok(Self {
            vocab_size: required(raw.vocab_size, "vocab_size")?,
            hidden_size,
            intermediate_size: required(raw.intermediate_size, "intermediate_size")?,
            num_hidden_layers: required(raw.num_hidden_layers, "num_hidden_layers")?,
            num_attention_heads: heads,
            num_key_value_heads: kv_heads,
            head_dim,
            max_position_embeddings: positive(
                raw.max_position_embeddings.unwrap_or(2048),
                "max_position_embeddings",
            )?,
            rms_norm_eps: in_range(
                raw.rms_norm_eps.unwrap_or(1e-6),
                "rms_norm_eps",
                (1e-30, 1.0),
                "a number between 1e-30 and 1 (typically 1e-5)",
            )?,
            rope_theta,
            llama3: llama3(rope)?,
            tie_word_embeddings: raw.tie_word_embeddings.unwrap_or(false),
            bos_token_id: raw.bos_token_id,
            eos_token_ids: raw.eos_token_id.map(TokenIds::into_vec).unwrap_or_default(),
            pad_token_id: raw.pad_token_id,
        })
    }
}

/// The `llama3` scaling of a rope dictionary, `None` for plain RoPE.
fn llama3(rope: RawRope) -> Result<Option<Llama3Scaling>, ConfigError> {
    let rope_type = rope.rope_type.or(rope.legacy_type);
    match rope_type.as_deref().unwrap_or("default") {
        "default" => Ok(None),
        "llama3" => {
            let key = |v: Option<f64>, key: &'static str| {
                let v = v.ok_or(ConfigError::MissingRopeKey {
                    rope_type: "llama3",
                    key,
                })?;
                positive_float(v, key)
            };
            let low_freq_factor = key(rope.low_freq_factor, "low_freq_factor")?;
            let high_freq_factor = key(rope.high_freq_factor, "high_freq_factor")?;
            if high_freq_factor <= low_freq_factor {
                return Err(ConfigError::InvalidValue {
                    field: "high_freq_factor",
                    value: high_freq_factor,
                    expected: "a number above low_freq_factor",
                });
            }
            let original =
                rope.original_max_position_embeddings
                    .ok_or(ConfigError::MissingRopeKey {
                        rope_type: "llama3",
                        key: "original_max_position_embeddings",
                    })?;
            Ok(Some(Llama3Scaling {
                factor: key(rope.factor, "factor")?,
                low_freq_factor,
                high_freq_factor,
                original_max_position_embeddings: positive(
                    original,
                    "original_max_position_embeddings",
                )?,
            }))
        }
        other => Err(ConfigError::UnsupportedRopeType {
            rope_type: other.to_string(),
            supported: "no scaling (\"default\") and \"llama3\"",
        }),
    }
}

impl HfConfig for LlamaConfig {
    fn from_json_str(text: &str) -> Result<Self, ConfigError> {
        LlamaConfig::from_json_str(text)
    }
}

impl ModelConfig for LlamaConfig {
    fn generation_defaults(&self) -> GenerationConfig {
        self.decoder_config().generation_defaults()
    }
}

impl FamilyConfig for LlamaConfig {
    fn decoder_config(&self) -> DecoderConfig {
        let scaling = match &self.llama3 {
            None => RopeScaling::Plain,
            Some(s) => RopeScaling::Llama3 {
                factor: s.factor,
                low_freq_factor: s.low_freq_factor,
                high_freq_factor: s.high_freq_factor,
                original_max_position_embeddings: s.original_max_position_embeddings,
            },
        };
        DecoderConfig {
            family: &LLAMA,
            model_type: "llama".to_string(),
            vocab_size: self.vocab_size,
            hidden_size: self.hidden_size,
            intermediate_size: self.intermediate_size,
            num_hidden_layers: self.num_hidden_layers,
            num_attention_heads: self.num_attention_heads,
            num_key_value_heads: self.num_key_value_heads,
            head_dim: self.head_dim,
            max_position_embeddings: self.max_position_embeddings,
            rms_norm_eps: self.rms_norm_eps,
            rope: RopeSpec {
                theta: self.rope_theta,
                head_dim: self.head_dim,
                scaling,
            },
            sliding_window: None,
            tie_word_embeddings: self.tie_word_embeddings,
            qkv_layout: QkvLayout::Separate,
            gate_up_layout: GateUpLayout::Separate,
            bos_token_id: self.bos_token_id,
            eos_token_ids: self.eos_token_ids.clone(),
            pad_token_id: self.pad_token_id,
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    /// A small Llama config with `extra` keys over it.
    fn parse(extra: &str) -> Result<LlamaConfig, ConfigError> {
        LlamaConfig::from_json_str(&format!(
            r#"{{"model_type": "llama", "vocab_size": 64, "hidden_size": 64,
                "intermediate_size": 128, "num_hidden_layers": 1,
                "num_attention_heads": 4{extra}}}"#
        ))
    }

    #[test]
    fn head_sizes_and_their_errors() {
        let c = parse("").unwrap();
        assert_eq!((c.num_key_value_heads, c.head_dim), (4, 16));
        let c = parse(r#", "num_key_value_heads": 2, "head_dim": 8"#).unwrap();
        assert_eq!((c.num_key_value_heads, c.head_dim), (2, 8));
        let e = parse(r#", "hidden_size": 66"#).unwrap_err();
        assert!(matches!(
            e,
            ConfigError::HiddenNotDivisibleByHeads {
                hidden_size: 66,
                heads: 4
            }
        ));
        let e = parse(r#", "num_key_value_heads": 3"#).unwrap_err();
        assert!(matches!(
            e,
            ConfigError::HeadsNotDivisibleByKvHeads {
                heads: 4,
                kv_heads: 3
            }
        ));
        let e = parse(r#", "head_dim": 7"#).unwrap_err();
        assert!(matches!(e, ConfigError::OddHeadDim { head_dim: 7 }));
        let e = parse(r#", "head_dim": 0"#).unwrap_err();
        assert!(e.to_string().contains("head_dim"), "{e}");
        let e = parse(r#", "num_attention_heads": 1073741824, "head_dim": 4"#).unwrap_err();
        assert!(e.to_string().contains("at most 2^31"), "{e}");
    }
}
