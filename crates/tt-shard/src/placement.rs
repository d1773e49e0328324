//! Placements, the weights of a decoder, and the checkpoint tensors they come from.

use std::fmt;

use serde::{Deserialize, Serialize};

/// Where a weight lives across the devices of a 1-D tensor-parallel mesh.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Placement {
    /// Every device holds the whole tensor.
    Replicated,
    /// The output dim (rows of an `[out, in]` weight) is split: no communication after it.
    ColumnParallel,
    /// The input dim (columns of an `[out, in]` weight) is split: partial sums need an all_reduce.
    RowParallel,
}

impl fmt::Display for Placement {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Placement::Replicated => "replicated",
            Placement::ColumnParallel => "column",
            Placement::RowParallel => "row",
        })
    }
}

/// One logical weight of the decoder (per-layer kinds exist once per layer).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum WeightKind {
    /// Token embedding table `[vocab, hidden]`.
    Embedding,
    /// Pre-attention RMSNorm weight `[hidden]` (per layer).
    AttnNorm,
    /// Query projection `[heads * head_dim, hidden]` (per layer).
    Q,
    /// Key projection `[kv_heads * head_dim, hidden]` (per layer).
    K,
    /// Value projection `[kv_heads * head_dim, hidden]` (per layer).
    V,
    /// Attention output projection `[hidden, heads * head_dim]` (per layer).
    O,
    /// Pre-MLP RMSNorm weight `[hidden]` (per layer).
    MlpNorm,
    /// MLP gate projection `[intermediate, hidden]` (per layer).
    Gate,
    /// MLP up projection `[intermediate, hidden]` (per layer).
    Up,
    /// MLP down projection `[hidden, intermediate]` (per layer).
    Down,
    /// Final RMSNorm weight `[hidden]`.
    FinalNorm,
    /// LM head `[vocab, hidden]` (the embedding table when tied).
    LmHead,
}

impl WeightKind {
    /// Every kind, in checkpoint order.
    pub const ALL: [WeightKind; 12] = [
        WeightKind::Embedding,
        WeightKind::AttnNorm,
        WeightKind::Q,
        WeightKind::K,
        WeightKind::V,
        WeightKind::O,
        WeightKind::MlpNorm,
        WeightKind::Gate,
        WeightKind::Up,
        WeightKind::Down,
        WeightKind::FinalNorm,
        WeightKind::LmHead,
    ];

    /// Whether the weight exists once per decoder layer.
    pub fn is_per_layer(self) -> bool {
        !matches!(
            self,
            WeightKind::Embedding | WeightKind::FinalNorm | WeightKind::LmHead
        )
    }

    /// Short lowercase name used in reports.
    pub fn name(self) -> &'static str {
        match self {
            WeightKind::Embedding => "embedding",
            WeightKind::AttnNorm => "attn_norm",
            WeightKind::Q => "q",
            WeightKind::K => "k",
            WeightKind::V => "v",
            WeightKind::O => "o",
            WeightKind::MlpNorm => "mlp_norm",
            WeightKind::Gate => "gate",
            WeightKind::Up => "up",
            WeightKind::Down => "down",
            WeightKind::FinalNorm => "final_norm",
            WeightKind::LmHead => "lm_head",
        }
    }
}

impl fmt::Display for WeightKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The checkpoint tensor a weight's data is read from (model-agnostic names; a model crate maps
/// them to its checkpoint keys).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum SourceTensor {
    /// Token embedding table `[vocab, hidden]`.
    Embedding,
    /// Pre-attention norm `[hidden]`.
    AttnNorm,
    /// Fused `[Q | K | V]` rows.
    QkvFused,
    /// Separate query projection.
    Q,
    /// Separate key projection.
    K,
    /// Separate value projection.
    V,
    /// Attention output projection.
    O,
    /// Pre-MLP norm `[hidden]`.
    MlpNorm,
    /// Fused `[gate | up]` rows.
    GateUpFused,
    /// Separate gate projection.
    Gate,
    /// Separate up projection.
    Up,
    /// Down projection.
    Down,
    /// Final norm `[hidden]`.
    FinalNorm,
    /// LM head `[vocab, hidden]`.
    LmHead,
}

impl SourceTensor {
    /// Short lowercase name used in reports.
    pub fn name(self) -> &'static str {
        match self {
            SourceTensor::Embedding => "embedding",
            SourceTensor::AttnNorm => "attn_norm",
            SourceTensor::QkvFused => "qkv(fused)",
            SourceTensor::Q => "q",
            SourceTensor::K => "k",
            SourceTensor::V => "v",
            SourceTensor::O => "o",
            SourceTensor::MlpNorm => "mlp_norm",
            SourceTensor::GateUpFused => "gate_up(fused)",
            SourceTensor::Gate => "gate",
            SourceTensor::Up => "up",
            SourceTensor::Down => "down",
            SourceTensor::FinalNorm => "final_norm",
            SourceTensor::LmHead => "lm_head",
        }
    }
}

impl fmt::Display for SourceTensor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}
