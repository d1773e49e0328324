//! [`DecoderConfig`]: what the decoder needs to know about a model, whatever its family.
//!
//! A family parses its own `config.json` keys into this (sizes, norm epsilon, the rotary
//! embedding as a [`RopeSpec`], the layouts of its projections, its special ids); everything
//! downstream (planner, loader, layers, generation) reads only this. Derived sizes are methods.

use tt_hf::json::MAX_DIM;
use tt_hf::{ConfigError, GenerationConfig, ModelConfig};
use tt_ops::RopeSpec;
use tt_shard::{GateUpLayout, QkvLayout};

use crate::family::Family;

/// A pre-norm decoder with a gated SiLU MLP and RMSNorm, described for the generic decoder.
#[derive(Clone)]
pub struct DecoderConfig {
    /// The family that parsed the config (its tensor names).
    pub family: &'static dyn Family,
    /// `model_type` from config.json.
    pub model_type: String,
    /// Rows of the embedding and of the LM head (V).
    pub vocab_size: usize,
    /// Residual width (H).
    pub hidden_size: usize,
    /// MLP width (I).
    pub intermediate_size: usize,
    /// Decoder layers.
    pub num_hidden_layers: usize,
    /// Query heads.
    pub num_attention_heads: usize,
    /// Key/value heads.
    pub num_key_value_heads: usize,
    /// Width of one head.
    pub head_dim: usize,
    /// Longest sequence the model supports.
    pub max_position_embeddings: usize,
    /// RMSNorm epsilon.
    pub rms_norm_eps: f64,
    /// Rotary embedding.
    pub rope: RopeSpec,
    /// Sliding attention window; a query at p sees keys in (p - w, p].
    pub sliding_window: Option<usize>,
    /// The LM head is the embedding matrix.
    pub tie_word_embeddings: bool,
    /// How Q, K and V are stored (one fused tensor or three).
    pub qkv_layout: QkvLayout,
    /// How the MLP gate and up projections are stored.
    pub gate_up_layout: GateUpLayout,
    /// Beginning-of-sequence id.
    pub bos_token_id: Option<u32>,
    /// End-of-sequence ids from config.json.
    pub eos_token_ids: Vec<u32>,
    /// Padding id.
    pub pad_token_id: Option<u32>,
}

impl std::fmt::Debug for DecoderConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DecoderConfig")
            .field("family", &self.family.name())
            .field("model_type", &self.model_type)
            .field("vocab_size", &self.vocab_size)
            .field("hidden_size", &self.hidden_size)
            .field("intermediate_size", &self.intermediate_size)
            .field("num_hidden_layers", &self.num_hidden_layers)
            .field("num_attention_heads", &self.num_attention_heads)
            .field("num_key_value_heads", &self.num_key_value_heads)
            .field("head_dim", &self.head_dim)
            .field("rope", &self.rope)
            .field("tie_word_embeddings", &self.tie_word_embeddings)
            .finish_non_exhaustive()
    }
}

impl DecoderConfig {
    /// Rows of all query heads (heads x head_dim).
    pub fn q_size(&self) -> usize {
        self.num_attention_heads * self.head_dim
    }

    /// Rows of all key (or value) heads.
    pub fn kv_size(&self) -> usize {
        self.num_key_value_heads * self.head_dim
    }
}

impl ModelConfig for DecoderConfig {
    fn generation_defaults(&self) -> GenerationConfig {
        GenerationConfig {
            bos_token_id: self.bos_token_id,
            eos_token_ids: self.eos_token_ids.clone(),
            pad_token_id: self.pad_token_id,
            ..GenerationConfig::default()
        }
    }
}

/// The attention-head checks every family's config parser makes, with the head width they give:
/// `head_dim` if the file gives it, else `hidden_size / heads` (which must divide); at most
/// 2^31 query rows (heads x head_dim); whole query-head groups per KV head; an even head width
/// (RoPE rotates pairs). `heads` and `kv_heads` are already positive.
pub fn validate_heads(
    hidden_size: usize,
    heads: usize,
    kv_heads: usize,
    head_dim: Option<usize>,
) -> Result<usize, ConfigError> {
    let head_dim = match head_dim {
        Some(d) => d,
        None if hidden_size.is_multiple_of(heads) => hidden_size / heads,
        None => return Err(ConfigError::HiddenNotDivisibleByHeads { hidden_size, heads }),
    };
    if (heads as u64) * (head_dim as u64) > MAX_DIM as u64 {
        return Err(ConfigError::InvalidValue {
            field: "head_dim",
            value: head_dim as f64,
            expected: "num_attention_heads x head_dim of at most 2^31",
        });
    }
    if !heads.is_multiple_of(kv_heads) {
        return Err(ConfigError::HeadsNotDivisibleByKvHeads { heads, kv_heads });
    }
    if head_dim % 2 != 0 {
        return Err(ConfigError::OddHeadDim { head_dim });
    }
    Ok(head_dim)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn head_checks_in_order() {
        assert!(matches!(validate_heads(3072, 32, 32, None), Ok(96)));
        assert!(matches!(validate_heads(100, 4, 2, Some(8)), Ok(8)));
        assert!(matches!(
            validate_heads(100, 3, 3, None),
            Err(ConfigError::HiddenNotDivisibleByHeads {
                hidden_size: 100,
                heads: 3
            })
        ));
        assert!(matches!(
            validate_heads(64, 1 << 20, 1, Some(1 << 12)),
            Err(ConfigError::InvalidValue {
                field: "head_dim",
                ..
            })
        ));
        assert!(matches!(
            validate_heads(64, 4, 3, None),
            Err(ConfigError::HeadsNotDivisibleByKvHeads {
                heads: 4,
                kv_heads: 3
            })
        ));
        assert!(matches!(
            validate_heads(36, 4, 4, None),
            Err(ConfigError::OddHeadDim { head_dim: 9 })
        ));
    }
}
