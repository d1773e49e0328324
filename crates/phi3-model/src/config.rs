//! `Phi3Config`: the model hyper-parameters, read straight from a HuggingFace `config.json`.
//!
//! Parsing follows transformers 5.x `Phi3Config`: optional keys take HF's defaults, the rope
//! settings may come as `rope_scaling` (older files) or `rope_parameters` (transformers 5), and
//! LongRoPE may be spelled "longrope", "su" (its old name) or "yarn" with short/long factor lists
//! (HF maps that spelling to LongRoPE for Phi-3 too). Everything is validated once here, so the
//! rest of the crate can trust the numbers. Derived sizes are methods.

use std::path::Path;

use serde::{Deserialize, Serialize};
use tt_decoder::config::validate_heads;
use tt_decoder::{DecoderConfig, FamilyConfig};
use tt_hf::json::{TokenIds, in_range, parse_json, positive, positive_float, required};
use tt_hf::{ConfigError, GenerationConfig, HfConfig, ModelConfig};
use tt_ops::{RopeScaling, RopeSpec};
use tt_shard::{GateUpLayout, QkvLayout};

use crate::family::PHI3;

/// HF's default `rope_theta`.
const DEFAULT_ROPE_THETA: f64 = 10_000.0;
/// HF `Phi3Config` default of `original_max_position_embeddings` (and `max_position_embeddings`).
const DEFAULT_ORIGINAL_MAX: i64 = 4096;
/// Accepted `rope_theta` (real models use 1e4 to 1e7). With the factor range below, the RoPE
/// tables, which HF and this crate compute in f32, stay finite at every supported position:
/// `ext * theta^(2i/d)` lies in [1e-6, 1e36] and `position / (ext * theta^(2i/d))` below 1e16.
const ROPE_THETA_RANGE: (f64, f64) = (1e-3, 1e30);
/// Accepted LongRoPE factors (Phi-3 uses 1 to about 60).
pub const ROPE_FACTOR_RANGE: (f64, f64) = (1e-3, 1e6);
/// Accepted explicit LongRoPE `attention_factor` (Phi-3's default is about 1.19).
const ATTENTION_FACTOR_RANGE: (f64, f64) = (1e-6, 1e6);
/// Accepted `rms_norm_eps` (real models use 1e-6 to 1e-5); below 1e-30 it rounds to 0 in f32.
const RMS_NORM_EPS_RANGE: (f64, f64) = (1e-30, 1.0);

/// Phi-3 hyper-parameters, validated.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Phi3Config {
    /// Always "phi3" (anything else is rejected).
    pub model_type: String,
    /// Rows of the embedding and of `lm_head` (V).
    pub vocab_size: usize,
    /// Residual width (H).
    pub hidden_size: usize,
    /// MLP width (I).
    pub intermediate_size: usize,
    /// Decoder layers.
    pub num_hidden_layers: usize,
    /// Query heads.
    pub num_attention_heads: usize,
    /// Key/value heads (defaults to the query heads).
    pub num_key_value_heads: usize,
    /// `head_dim` when the file gives it; see [`Phi3Config::head_dim`].
    pub explicit_head_dim: Option<usize>,
    /// Longest sequence the model supports.
    pub max_position_embeddings: usize,
    /// RMSNorm epsilon.
    pub rms_norm_eps: f64,
    /// Rotary embedding settings.
    pub rope: RopeConfig,
    /// Sliding attention window; a query at p sees keys in (p - w, p].
    pub sliding_window: Option<usize>,
    /// `lm_head` shares the embedding matrix (no `lm_head.weight` tensor).
    pub tie_word_embeddings: bool,
    /// Activation of the MLP (always "silu").
    pub hidden_act: String,
    /// Beginning-of-sequence id.
    pub bos_token_id: Option<u32>,
    /// End-of-sequence ids from config.json (generation_config.json usually has more).
    pub eos_token_ids: Vec<u32>,
    /// Padding id.
    pub pad_token_id: Option<u32>,
    /// Storage dtype named by the file (`torch_dtype` or `dtype`), informational.
    pub torch_dtype: Option<String>,
}

/// Rotary embedding settings.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RopeConfig {
    /// Base wavelength.
    pub theta: f64,
    /// LongRoPE scaling, or `None` for plain RoPE.
    pub long_rope: Option<LongRopeConfig>,
}

/// LongRoPE parameters (`rope_type` "longrope").
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LongRopeConfig {
    /// Frequency divisors used while max position + 1 <= `original_max_position_embeddings`.
    pub short_factor: Vec<f64>,
    /// Frequency divisors used beyond it.
    pub long_factor: Vec<f64>,
    /// Pretraining context length that selects the factor list.
    pub original_max_position_embeddings: usize,
    /// Explicit cos/sin multiplier, if the file gives one.
    pub attention_factor: Option<f64>,
    /// Explicit scale `s`, if the file gives one (else max / original max).
    pub factor: Option<f64>,
}

impl Phi3Config {
    /// Parses and validates the text of a `config.json`.
    pub fn from_json_str(text: &str) -> Result<Self, ConfigError> {
        let raw: RawConfig = parse_json("config.json", text)?;
        raw.validate()
    }

    /// Reads and validates a `config.json` file.
    pub fn from_file(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        Self::from_json_str(&text)
    }

    /// Size of one attention head: `head_dim` if given, else hidden / heads.
    pub fn head_dim(&self) -> usize {
        self.explicit_head_dim
            .unwrap_or(self.hidden_size / self.num_attention_heads)
    }

    /// Query heads per KV head.
    pub fn kv_group_size(&self) -> usize {
        self.num_attention_heads / self.num_key_value_heads
    }

    /// Rows of the query part of `qkv_proj` (heads x head_dim).
    pub fn q_size(&self) -> usize {
        self.num_attention_heads * self.head_dim()
    }

    /// Rows of the key (or value) part of `qkv_proj` (KV heads x head_dim).
    pub fn kv_size(&self) -> usize {
        self.num_key_value_heads * self.head_dim()
    }

    /// Rows of the fused `qkv_proj` weight: `[Q heads | K heads | V heads]`.
    pub fn qkv_size(&self) -> usize {
        self.q_size() + 2 * self.kv_size()
    }

    /// Rows of the fused `gate_up_proj` weight: `[gate | up]`.
    pub fn gate_up_size(&self) -> usize {
        2 * self.intermediate_size
    }

    /// Number of parameters (the `lm_head` counted unless tied).
    /// Saturates at `u64::MAX` for absurd configs.
    pub fn parameter_count(&self) -> u64 {
        let h = self.hidden_size as u128;
        let v = self.vocab_size as u128;
        let per_layer = (self.qkv_size() as u128) * h
            + h * self.q_size() as u128
            + (self.gate_up_size() as u128) * h
            + h * self.intermediate_size as u128
            + 2 * h;
        let head = if self.tie_word_embeddings { 0 } else { v * h };
        let total = v * h + per_layer * self.num_hidden_layers as u128 + h + head;
        u64::try_from(total).unwrap_or(u64::MAX)
    }

    /// `original_max_position_embeddings` of the LongRoPE scaling, if the model uses it.
    pub fn long_rope_original_max(&self) -> Option<usize> {
        self.rope
            .long_rope
            .as_ref()
            .map(|l| l.original_max_position_embeddings)
    }
}

impl HfConfig for Phi3Config {
    fn from_json_str(text: &str) -> Result<Self, ConfigError> {
        Phi3Config::from_json_str(text)
    }
}

impl ModelConfig for Phi3Config {
    fn generation_defaults(&self) -> GenerationConfig {
        self.decoder_config().generation_defaults()
    }
}

impl FamilyConfig for Phi3Config {
    /// Phi-3 as the decoder sees it: fused `qkv_proj` and `gate_up_proj`, plain RoPE or
    /// LongRoPE with its attention factor resolved as HF resolves it.
    fn decoder_config(&self) -> DecoderConfig {
        DecoderConfig {
            family: &PHI3,
            model_type: self.model_type.clone(),
            vocab_size: self.vocab_size,
            hidden_size: self.hidden_size,
            intermediate_size: self.intermediate_size,
            num_hidden_layers: self.num_hidden_layers,
            num_attention_heads: self.num_attention_heads,
            num_key_value_heads: self.num_key_value_heads,
            head_dim: self.head_dim(),
            max_position_embeddings: self.max_position_embeddings,
            rms_norm_eps: self.rms_norm_eps,
            rope: self.rope_spec(),
            sliding_window: self.sliding_window,
            tie_word_embeddings: self.tie_word_embeddings,
            qkv_layout: QkvLayout::Fused,
            gate_up_layout: GateUpLayout::Fused,
            bos_token_id: self.bos_token_id,
            eos_token_ids: self.eos_token_ids.clone(),
            pad_token_id: self.pad_token_id,
        }
    }
}

impl Phi3Config {
    /// The rotary embedding: plain, or LongRoPE with HF's default attention factor
    /// (`sqrt(1 + ln s / ln original)`, `s` = `factor` or max / original max) unless given.
    pub fn rope_spec(&self) -> RopeSpec {
        let scaling = match &self.rope.long_rope {
            None => RopeScaling::Plain,
            Some(long) => {
                let original = long.original_max_position_embeddings;
                let scale = long
                    .factor
                    .unwrap_or(self.max_position_embeddings as f64 / original as f64);
                RopeScaling::LongRope {
                    short_factor: long.short_factor.clone(),
                    long_factor: long.long_factor.clone(),
                    original_max_position_embeddings: original,
                    attention_factor: long
                        .attention_factor
                        .unwrap_or_else(|| tt_ops::rope::default_attention_factor(scale, original)),
                }
            }
        };
        RopeSpec {
            theta: self.rope.theta,
            head_dim: self.head_dim(),
            scaling,
        }
    }
}

/// `config.json` as written by HF; every key optional so absence is reported by name.
#[derive(Debug, Deserialize)]
struct RawConfig {
    model_type: Option<String>,
    vocab_size: Option<i64>,
    hidden_size: Option<i64>,
    intermediate_size: Option<i64>,
    num_hidden_layers: Option<i64>,
    num_attention_heads: Option<i64>,
    num_key_value_heads: Option<i64>,
    head_dim: Option<i64>,
    max_position_embeddings: Option<i64>,
    original_max_position_embeddings: Option<i64>,
    rms_norm_eps: Option<f64>,
    rope_theta: Option<f64>,
    partial_rotary_factor: Option<f64>,
    rope_scaling: Option<RawRope>,
    rope_parameters: Option<RawRope>,
    sliding_window: Option<i64>,
    tie_word_embeddings: Option<bool>,
    hidden_act: Option<String>,
    bos_token_id: Option<u32>,
    eos_token_id: Option<TokenIds>,
    pad_token_id: Option<u32>,
    torch_dtype: Option<String>,
    dtype: Option<String>,
}

/// A `rope_scaling` / `rope_parameters` dictionary.
#[derive(Debug, Default, Deserialize)]
struct RawRope {
    rope_type: Option<String>,
    #[serde(rename = "type")]
    legacy_type: Option<String>,
    rope_theta: Option<f64>,
    partial_rotary_factor: Option<f64>,
    short_factor: Option<Vec<f64>>,
    long_factor: Option<Vec<f64>>,
    original_max_position_embeddings: Option<i64>,
    attention_factor: Option<f64>,
    factor: Option<f64>,
}

impl RawRope {
    /// HF treats an empty dict like no dict.
    fn is_empty(&self) -> bool {
        self.rope_type.is_none()
            && self.legacy_type.is_none()
            && self.rope_theta.is_none()
            && self.partial_rotary_factor.is_none()
            && self.short_factor.is_none()
            && self.long_factor.is_none()
            && self.original_max_position_embeddings.is_none()
            && self.attention_factor.is_none()
            && self.factor.is_none()
    }
}

impl RawConfig {
    fn validate(self) -> Result<Phi3Config, ConfigError> {
        let model_type = match self.model_type {
            Some(t) if t == "phi3" => t,
            Some(t) => {
                return Err(ConfigError::WrongModelType {
                    model_type: t,
                    expected: "`phi3`".to_string(),
                });
            }
            None => {
                tracing::warn!("config.json has no model_type; assuming phi3");
                "phi3".to_string()
            }
        };
        let vocab_size = required(self.vocab_size, "vocab_size")?;
        let hidden_size = required(self.hidden_size, "hidden_size")?;
        let intermediate_size = required(self.intermediate_size, "intermediate_size")?;
        let num_hidden_layers = required(self.num_hidden_layers, "num_hidden_layers")?;
        let num_attention_heads = required(self.num_attention_heads, "num_attention_heads")?;
        let num_key_value_heads = match self.num_key_value_heads {
            Some(v) => positive(v, "num_key_value_heads")?,
            None => num_attention_heads,
        };
        let explicit_head_dim = self.head_dim.map(|v| positive(v, "head_dim")).transpose()?;
        let head_dim = validate_heads(
            hidden_size,
            num_attention_heads,
            num_key_value_heads,
            explicit_head_dim,
        )?;
        let max_position_embeddings = positive(
            self.max_position_embeddings.unwrap_or(DEFAULT_ORIGINAL_MAX),
            "max_position_embeddings",
        )?;
        let rms_norm_eps = in_range(
            self.rms_norm_eps.unwrap_or(1e-5),
            "rms_norm_eps",
            RMS_NORM_EPS_RANGE,
            "a number between 1e-30 and 1 (typically 1e-5)",
        )?;
        let sliding_window = self
            .sliding_window
            .map(|v| positive(v, "sliding_window"))
            .transpose()?;
        let hidden_act = self.hidden_act.unwrap_or_else(|| "silu".to_string());
        if hidden_act != "silu" {
            return Err(ConfigError::UnsupportedActivation { act: hidden_act });
        }
        let rope = parse_rope(
            self.rope_scaling,
            self.rope_parameters,
            self.rope_theta,
            self.partial_rotary_factor,
            self.original_max_position_embeddings,
            head_dim,
            max_position_embeddings,
        )?;
        Ok(Phi3Config {
            model_type,
            vocab_size,
            hidden_size,
            intermediate_size,
            num_hidden_layers,
            num_attention_heads,
            num_key_value_heads,
            explicit_head_dim,
            max_position_embeddings,
            rms_norm_eps,
            rope,
            sliding_window,
            tie_word_embeddings: self.tie_word_embeddings.unwrap_or(false),
            hidden_act,
            bos_token_id: self.bos_token_id,
            eos_token_ids: self
                .eos_token_id
                .map(TokenIds::into_vec)
                .unwrap_or_default(),
            pad_token_id: self.pad_token_id,
            torch_dtype: self.torch_dtype.or(self.dtype),
        })
    }
}

/// Normalises the two rope spellings the way transformers 5.x `Phi3Config` does.
fn parse_rope(
    rope_scaling: Option<RawRope>,
    rope_parameters: Option<RawRope>,
    top_theta: Option<f64>,
    top_partial: Option<f64>,
    top_original_max: Option<i64>,
    head_dim: usize,
    max_position_embeddings: usize,
) -> Result<RopeConfig, ConfigError> {
    // `rope_scaling` wins when it is a non-empty dict (HF: `rope_scaling or rope_parameters`).
    let dict = match (rope_scaling, rope_parameters) {
        (Some(s), _) if !s.is_empty() => s,
        (_, Some(p)) => p,
        _ => RawRope::default(),
    };
    let theta = in_range(
        dict.rope_theta.or(top_theta).unwrap_or(DEFAULT_ROPE_THETA),
        "rope_theta",
        ROPE_THETA_RANGE,
        "a number between 1e-3 and 1e30 (Phi-3 uses 10000)",
    )?;
    let partial = dict.partial_rotary_factor.or(top_partial).unwrap_or(1.0);
    if partial != 1.0 {
        return Err(ConfigError::UnsupportedPartialRotary { value: partial });
    }
    let rope_type = dict
        .rope_type
        .clone()
        .or_else(|| dict.legacy_type.clone())
        .unwrap_or_else(|| "default".to_string());
    let has_lists = dict.short_factor.is_some() && dict.long_factor.is_some();
    let is_long = match rope_type.as_str() {
        "default" => false,
        "longrope" | "su" => true,
        "yarn" if has_lists => true,
        _ => {
            return Err(ConfigError::UnsupportedRopeType {
                rope_type,
                supported: "no scaling (\"default\") and \"longrope\" (old names \"su\", and \"yarn\" \
                            with factor lists)",
            });
        }
    };
    if !is_long {
        return Ok(RopeConfig {
            theta,
            long_rope: None,
        });
    }
    let short_factor = factor_list(dict.short_factor, "short_factor", head_dim)?;
    let long_factor = factor_list(dict.long_factor, "long_factor", head_dim)?;
    // HF gives the top-level value priority; the one inside the dict is used when the top level
    // has none (HF 5.24 would then fall back to its 4096 default instead).
    let original = match (top_original_max, dict.original_max_position_embeddings) {
        (Some(top), inner) => {
            if inner.is_some_and(|i| i != top) {
                tracing::warn!(
                    top,
                    ?inner,
                    "original_max_position_embeddings differs at top level and in the rope \
                     dict; using the top-level value as HF does"
                );
            }
            top
        }
        (None, Some(inner)) => inner,
        (None, None) => DEFAULT_ORIGINAL_MAX,
    };
    let original_max_position_embeddings = positive(original, "original_max_position_embeddings")?;
    let attention_factor = dict
        .attention_factor
        .map(|v| {
            in_range(
                v,
                "attention_factor",
                ATTENTION_FACTOR_RANGE,
                "a number between 1e-6 and 1e6 (Phi-3's default is about 1.19)",
            )
        })
        .transpose()?;
    let factor = dict
        .factor
        .map(|v| positive_float(v, "factor"))
        .transpose()?;
    if attention_factor.is_none() {
        // HF's default divides by ln(original_max_position_embeddings): with an original
        // context of 1 and a scale above 1 it is infinite (HF raises ZeroDivisionError).
        let scale = factor
            .unwrap_or(max_position_embeddings as f64 / original_max_position_embeddings as f64);
        let default =
            tt_ops::rope::default_attention_factor(scale, original_max_position_embeddings);
        if !default.is_finite() {
            return Err(ConfigError::InvalidValue {
                field: "original_max_position_embeddings",
                value: original_max_position_embeddings as f64,
                expected: "at least 2 when LongRoPE extends the context (the default \
                           attention factor divides by its logarithm), or an explicit \
                           attention_factor",
            });
        }
    }
    Ok(RopeConfig {
        theta,
        long_rope: Some(LongRopeConfig {
            short_factor,
            long_factor,
            original_max_position_embeddings,
            attention_factor,
            factor,
        }),
    })
}

fn factor_list(
    list: Option<Vec<f64>>,
    name: &'static str,
    head_dim: usize,
) -> Result<Vec<f64>, ConfigError> {
    let list = list.ok_or(ConfigError::MissingRopeKey {
        rope_type: "longrope",
        key: name,
    })?;
    let expected = head_dim / 2;
    if list.len() != expected {
        return Err(ConfigError::FactorLength {
            list: name,
            expected,
            actual: list.len(),
        });
    }
    let (lo, hi) = ROPE_FACTOR_RANGE;
    if let Some((index, &value)) = list
        .iter()
        .enumerate()
        .find(|(_, v)| !(**v >= lo && **v <= hi))
    {
        return Err(ConfigError::BadFactor {
            list: name,
            index,
            value,
        });
    }
    Ok(list)
}
