//! HF tensor names of a Phi-3 checkpoint and the shapes the config implies (FACTS §1).

use crate::config::Phi3Config;

/// `model.embed_tokens.weight` `[V, H]`.
pub const EMBED_TOKENS: &str = "model.embed_tokens.weight";
/// `model.norm.weight` `[H]`.
pub const FINAL_NORM: &str = "model.norm.weight";
/// `lm_head.weight` `[V, H]` (absent when embeddings are tied).
pub const LM_HEAD: &str = "lm_head.weight";

/// The per-layer tensors of a Phi-3 decoder layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LayerTensor {
    /// `self_attn.qkv_proj.weight` `[(nh + 2 nkv) dh, H]`, rows `[Q | K | V]`.
    QkvProj,
    /// `self_attn.o_proj.weight` `[H, nh dh]`.
    OProj,
    /// `mlp.gate_up_proj.weight` `[2 I, H]`, rows `[gate | up]`.
    GateUpProj,
    /// `mlp.down_proj.weight` `[H, I]`.
    DownProj,
    /// `input_layernorm.weight` `[H]`.
    InputLayerNorm,
    /// `post_attention_layernorm.weight` `[H]`.
    PostAttentionLayerNorm,
}

impl LayerTensor {
    /// All layer tensors, in checkpoint order.
    pub const ALL: [LayerTensor; 6] = [
        LayerTensor::QkvProj,
        LayerTensor::OProj,
        LayerTensor::GateUpProj,
        LayerTensor::DownProj,
        LayerTensor::InputLayerNorm,
        LayerTensor::PostAttentionLayerNorm,
    ];

    /// Full HF name for layer `layer`.
    pub fn name(self, layer: usize) -> String {
        let suffix = match self {
            LayerTensor::QkvProj => "self_attn.qkv_proj.weight",
            LayerTensor::OProj => "self_attn.o_proj.weight",
            LayerTensor::GateUpProj => "mlp.gate_up_proj.weight",
            LayerTensor::DownProj => "mlp.down_proj.weight",
            LayerTensor::InputLayerNorm => "input_layernorm.weight",
            LayerTensor::PostAttentionLayerNorm => "post_attention_layernorm.weight",
        };
        format!("model.layers.{layer}.{suffix}")
    }

    /// Shape the config implies.
    pub fn shape(self, config: &Phi3Config) -> Vec<usize> {
        let h = config.hidden_size;
        match self {
            LayerTensor::QkvProj => vec![config.qkv_size(), h],
            LayerTensor::OProj => vec![h, config.q_size()],
            LayerTensor::GateUpProj => vec![config.gate_up_size(), h],
            LayerTensor::DownProj => vec![h, config.intermediate_size],
            LayerTensor::InputLayerNorm | LayerTensor::PostAttentionLayerNorm => vec![h],
        }
    }
}

/// Every tensor a Phi-3 model with this config needs, with its shape, in checkpoint order.
pub fn expected_tensors(config: &Phi3Config) -> Vec<(String, Vec<usize>)> {
    let h = config.hidden_size;
    let v = config.vocab_size;
    let mut out = vec![(EMBED_TOKENS.to_string(), vec![v, h])];
    for layer in 0..config.num_hidden_layers {
        for t in LayerTensor::ALL {
            out.push((t.name(layer), t.shape(config)));
        }
    }
    out.push((FINAL_NORM.to_string(), vec![h]));
    if !config.tie_word_embeddings {
        out.push((LM_HEAD.to_string(), vec![v, h]));
    }
    out
}
