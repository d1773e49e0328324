//! The tensors a decoder checkpoint holds, their HF names and the shapes a config implies.
//!
//! [`TensorName`] says which tensor; a [`crate::Family`] turns it into the checkpoint's name
//! (the default, [`TensorName::llama_name`], is the naming most HF decoders share; Phi-3 renames
//! only its fused projections). [`expected_tensors`] lists every tensor a config needs, for the
//! loader's up-front check.

use tt_shard::{GateUpLayout, QkvLayout};

use crate::config::DecoderConfig;

/// A tensor of one decoder layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LayerTensor {
    /// `input_layernorm.weight` `[H]`.
    InputLayerNorm,
    /// Fused `[Q | K | V]` rows `[(nh + 2 nkv) dh, H]`.
    QkvProj,
    /// `self_attn.q_proj.weight` `[nh dh, H]`.
    QProj,
    /// `self_attn.k_proj.weight` `[nkv dh, H]`.
    KProj,
    /// `self_attn.v_proj.weight` `[nkv dh, H]`.
    VProj,
    /// `self_attn.o_proj.weight` `[H, nh dh]`.
    OProj,
    /// `post_attention_layernorm.weight` `[H]`.
    PostAttentionLayerNorm,
    /// Fused `[gate | up]` rows `[2 I, H]`.
    GateUpProj,
    /// `mlp.gate_proj.weight` `[I, H]`.
    GateProj,
    /// `mlp.up_proj.weight` `[I, H]`.
    UpProj,
    /// `mlp.down_proj.weight` `[H, I]`.
    DownProj,
}

/// Any tensor of a decoder checkpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TensorName {
    /// `model.embed_tokens.weight` `[V, H]`.
    Embed,
    /// A tensor of layer `.0`.
    Layer(usize, LayerTensor),
    /// `model.norm.weight` `[H]`.
    FinalNorm,
    /// `lm_head.weight` `[V, H]` (absent when tied).
    LmHead,
}

impl LayerTensor {
    /// The HF (Llama) suffix after `model.layers.{i}.`; fused tensors get Phi-3's names.
    pub fn llama_suffix(self) -> &'static str {
        match self {
            LayerTensor::InputLayerNorm => "input_layernorm.weight",
            LayerTensor::QkvProj => "self_attn.qkv_proj.weight",
            LayerTensor::QProj => "self_attn.q_proj.weight",
            LayerTensor::KProj => "self_attn.k_proj.weight",
            LayerTensor::VProj => "self_attn.v_proj.weight",
            LayerTensor::OProj => "self_attn.o_proj.weight",
            LayerTensor::PostAttentionLayerNorm => "post_attention_layernorm.weight",
            LayerTensor::GateUpProj => "mlp.gate_up_proj.weight",
            LayerTensor::GateProj => "mlp.gate_proj.weight",
            LayerTensor::UpProj => "mlp.up_proj.weight",
            LayerTensor::DownProj => "mlp.down_proj.weight",
        }
    }

    /// The default (HF Llama, and Phi-3 for the fused tensors) name in layer `layer`.
    pub fn name(self, layer: usize) -> String {
        TensorName::Layer(layer, self).llama_name()
    }

    /// The layer's tensors for `config`'s layouts, in checkpoint order.
    pub fn of(config: &DecoderConfig) -> Vec<LayerTensor> {
        let mut out = vec![LayerTensor::InputLayerNorm];
        match config.qkv_layout {
            QkvLayout::Fused => out.push(LayerTensor::QkvProj),
            QkvLayout::Separate => {
                out.extend([LayerTensor::QProj, LayerTensor::KProj, LayerTensor::VProj])
            }
        }
        out.extend([LayerTensor::OProj, LayerTensor::PostAttentionLayerNorm]);
        match config.gate_up_layout {
            GateUpLayout::Fused => out.push(LayerTensor::GateUpProj),
            GateUpLayout::Separate => out.extend([LayerTensor::GateProj, LayerTensor::UpProj]),
        }
        out.push(LayerTensor::DownProj);
        out
    }

    /// Shape `config` implies.
    pub fn shape(self, config: &DecoderConfig) -> Vec<usize> {
        let (h, i) = (config.hidden_size, config.intermediate_size);
        let (q, kv) = (config.q_size(), config.kv_size());
        match self {
            LayerTensor::InputLayerNorm | LayerTensor::PostAttentionLayerNorm => vec![h],
            LayerTensor::QkvProj => vec![q + 2 * kv, h],
            LayerTensor::QProj => vec![q, h],
            LayerTensor::KProj | LayerTensor::VProj => vec![kv, h],
            LayerTensor::OProj => vec![h, q],
            LayerTensor::GateUpProj => vec![2 * i, h],
            LayerTensor::GateProj | LayerTensor::UpProj => vec![i, h],
            LayerTensor::DownProj => vec![h, i],
        }
    }
}

impl TensorName {
    /// The name most HF decoders (Llama, Mistral, Qwen2, Phi-3) give this tensor.
    pub fn llama_name(self) -> String {
        match self {
            TensorName::Embed => "model.embed_tokens.weight".to_string(),
            TensorName::Layer(i, t) => format!("model.layers.{i}.{}", t.llama_suffix()),
            TensorName::FinalNorm => "model.norm.weight".to_string(),
            TensorName::LmHead => "lm_head.weight".to_string(),
        }
    }

    /// Shape `config` implies.
    pub fn shape(self, config: &DecoderConfig) -> Vec<usize> {
        let (v, h) = (config.vocab_size, config.hidden_size);
        match self {
            TensorName::Embed | TensorName::LmHead => vec![v, h],
            TensorName::Layer(_, t) => t.shape(config),
            TensorName::FinalNorm => vec![h],
        }
    }
}

/// Every tensor a model of `config` needs, in checkpoint order.
pub fn expected_names(config: &DecoderConfig) -> Vec<TensorName> {
    let mut out = vec![TensorName::Embed];
    let layer = LayerTensor::of(config);
    for i in 0..config.num_hidden_layers {
        out.extend(layer.iter().map(|&t| TensorName::Layer(i, t)));
    }
    out.push(TensorName::FinalNorm);
    if !config.tie_word_embeddings {
        out.push(TensorName::LmHead);
    }
    out
}

/// Every tensor a model of `config` needs, with its checkpoint name and shape.
pub fn expected_tensors(config: &DecoderConfig) -> Vec<(String, Vec<usize>)> {
    expected_names(config)
        .into_iter()
        .map(|t| (config.family.tensor_name(t), t.shape(config)))
        .collect()
}
