//! Collectives a tensor-parallel decoder runs per token.

use serde::{Deserialize, Serialize};

use crate::error::PlanError;
use crate::placement::WeightKind;
use crate::weights::checked_product;

/// A collective operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum CollectiveOp {
    /// Sum over devices; every device ends with the sum.
    AllReduce,
    /// Concatenate the devices' shards in device order (the logits composer).
    Gather,
}

/// One collective site in the forward pass.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CollectiveStep {
    /// The operation.
    pub op: CollectiveOp,
    /// The weight whose output it combines.
    pub after: WeightKind,
    /// Calls per token (per forward step).
    pub calls_per_token: usize,
    /// Values exchanged per call per token (per batch row): the whole reduced / gathered width.
    pub values_per_token: usize,
    /// Bytes per call for a decode step at the planned batch.
    pub bytes_per_call: u64,
    /// Bytes each device sends per call with a ring algorithm at the planned batch:
    /// `2 (N-1)/N` of the tensor for an all_reduce, `(N-1)/N` for a gather.
    pub ring_bytes_per_device: u64,
}

/// All collectives per token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CollectiveSummary {
    /// Collective sites in forward order.
    pub steps: Vec<CollectiveStep>,
    /// All-reduce calls per token (two per layer).
    pub all_reduces_per_token: usize,
    /// Bytes of all all_reduce calls per decode step at the planned batch.
    pub all_reduce_bytes_per_step: u64,
    /// Whether collectives are no-ops (a single device).
    pub noop: bool,
}

impl CollectiveSummary {
    /// The collectives of a decoder with `layers` layers, residual width `hidden`, and
    /// `vocab_values` logits gathered per token, on `devices` devices.
    pub(crate) fn new(
        layers: usize,
        hidden: usize,
        vocab_values: usize,
        batch: usize,
        dtype_bytes: usize,
        devices: usize,
    ) -> Result<Self, PlanError> {
        let n = devices.max(1) as u64;
        let too_large = || PlanError::TooLarge {
            what: "the collective byte count".to_string(),
        };
        let bytes = |values: usize| {
            checked_product([values as u64, batch as u64, dtype_bytes as u64]).ok_or_else(too_large)
        };
        let step = |op, after, calls, values| {
            let b = bytes(values)?;
            // (N-1) * b / N without overflowing: b = q N + r.
            let share = (b / n) * (n - 1) + (b % n) * (n - 1) / n;
            let ring = match op {
                CollectiveOp::AllReduce => share.checked_mul(2).ok_or_else(too_large)?,
                CollectiveOp::Gather => share,
            };
            Ok(CollectiveStep {
                op,
                after,
                calls_per_token: calls,
                values_per_token: values,
                bytes_per_call: b,
                ring_bytes_per_device: ring,
            })
        };
        let steps = vec![
            step(CollectiveOp::AllReduce, WeightKind::O, layers, hidden)?,
            step(CollectiveOp::AllReduce, WeightKind::Down, layers, hidden)?,
            step(CollectiveOp::Gather, WeightKind::LmHead, 1, vocab_values)?,
        ];
        Ok(Self {
            steps,
            all_reduces_per_token: 2 * layers,
            all_reduce_bytes_per_step: checked_product([2, layers as u64, bytes(hidden)?])
                .ok_or_else(too_large)?,
            noop: devices <= 1,
        })
    }
}
