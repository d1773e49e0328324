//! A decoder described by numbers, plus the layouts of its fused weights.

use serde::{Deserialize, Serialize};

use crate::error::PlanError;

/// Largest accepted value of any dimension (2^28); keeps products of two dims far from overflow.
pub const MAX_DIM: usize = 1 << 28;

/// How the attention input projection is stored in the checkpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum QkvLayout {
    /// One tensor `[(heads + 2 kv_heads) * head_dim, hidden]` with rows `[Q | K | V]`.
    Fused,
    /// Three tensors `q [heads * head_dim, hidden]`, `k` and `v [kv_heads * head_dim, hidden]`.
    Separate,
}

/// How the gated MLP input projections are stored in the checkpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum GateUpLayout {
    /// One tensor `[2 * intermediate, hidden]` with rows `[gate | up]`.
    Fused,
    /// Two tensors `gate` and `up`, each `[intermediate, hidden]`.
    Separate,
}

/// A pre-norm decoder-only transformer with a gated MLP, described by its sizes.
///
/// Linear weights are stored `[out, in]` (the layer computes `x @ W^T`), without biases.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DecoderDims {
    /// Residual width.
    pub hidden: usize,
    /// Query heads.
    pub heads: usize,
    /// Key/value heads (equal to `heads` without GQA).
    pub kv_heads: usize,
    /// Width of one head.
    pub head_dim: usize,
    /// MLP intermediate width.
    pub intermediate: usize,
    /// Vocabulary size (rows of the embedding and LM head).
    pub vocab: usize,
    /// Decoder layers.
    pub layers: usize,
    /// Bytes per stored value (weights, KV cache and exchanged activations), e.g. 2 for bf16.
    pub dtype_bytes: usize,
    /// Whether the LM head reuses the embedding table (no `lm_head` tensor in the checkpoint).
    pub tied_embeddings: bool,
    /// Layout of the attention input projection.
    pub qkv_layout: QkvLayout,
    /// Layout of the MLP gate and up projections.
    pub gate_up_layout: GateUpLayout,
}

impl DecoderDims {
    /// Width of all query heads (`heads * head_dim`).
    pub fn q_dim(&self) -> usize {
        self.heads * self.head_dim
    }

    /// Width of all key (or value) heads (`kv_heads * head_dim`).
    pub fn kv_dim(&self) -> usize {
        self.kv_heads * self.head_dim
    }

    /// Query heads per KV head.
    pub fn gqa_group(&self) -> usize {
        self.heads / self.kv_heads.max(1)
    }

    /// Parameter count of the checkpoint (embedding, layers, final norm, untied LM head).
    pub fn param_count(&self) -> u64 {
        let (h, i, v) = (
            self.hidden as u64,
            self.intermediate as u64,
            self.vocab as u64,
        );
        let qkv = (self.q_dim() + 2 * self.kv_dim()) as u64 * h;
        let o = h * self.q_dim() as u64;
        let layer = qkv + o + 3 * i * h + 2 * h;
        let head = if self.tied_embeddings { 0 } else { v * h };
        v * h + self.layers as u64 * layer + h + head
    }

    /// Checks that every size is non-zero and that heads group evenly over KV heads.
    pub fn validate(&self) -> Result<(), PlanError> {
        let fields = [
            ("hidden", self.hidden),
            ("heads", self.heads),
            ("kv_heads", self.kv_heads),
            ("head_dim", self.head_dim),
            ("intermediate", self.intermediate),
            ("vocab", self.vocab),
            ("layers", self.layers),
            ("dtype_bytes", self.dtype_bytes),
        ];
        if let Some((name, _)) = fields.iter().find(|(_, v)| *v == 0) {
            return Err(PlanError::ZeroDim { name });
        }
        if let Some((name, v)) = fields.iter().find(|(_, v)| *v > MAX_DIM) {
            return Err(PlanError::TooLarge {
                what: format!("{name} = {v}"),
            });
        }
        if !self.heads.is_multiple_of(self.kv_heads) {
            return Err(PlanError::GqaGroups {
                heads: self.heads,
                kv_heads: self.kv_heads,
            });
        }
        if !self.head_dim.is_multiple_of(2) {
            return Err(PlanError::HeadDimOdd {
                head_dim: self.head_dim,
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn phi3_mini() -> DecoderDims {
        DecoderDims {
            hidden: 3072,
            heads: 32,
            kv_heads: 32,
            head_dim: 96,
            intermediate: 8192,
            vocab: 32064,
            layers: 32,
            dtype_bytes: 2,
            tied_embeddings: false,
            qkv_layout: QkvLayout::Fused,
            gate_up_layout: GateUpLayout::Fused,
        }
    }

    #[test]
    fn phi3_mini_has_3_82e9_params() {
        let d = phi3_mini();
        assert_eq!(d.param_count(), 3_821_079_552);
        assert_eq!(d.q_dim(), 3072);
        assert_eq!(d.gqa_group(), 1);
        d.validate().unwrap();
    }

    #[test]
    fn validate_names_the_problem() {
        let mut d = phi3_mini();
        d.kv_heads = 5;
        assert!(matches!(
            d.validate(),
            Err(PlanError::GqaGroups {
                heads: 32,
                kv_heads: 5
            })
        ));
        d.kv_heads = 0;
        assert!(matches!(
            d.validate(),
            Err(PlanError::ZeroDim { name: "kv_heads" })
        ));
        let mut d = phi3_mini();
        d.head_dim = 95;
        assert!(matches!(
            d.validate(),
            Err(PlanError::HeadDimOdd { head_dim: 95 })
        ));
    }
}
