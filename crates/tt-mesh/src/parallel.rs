//! Tensor-parallel linear layers that own their collective.
//!
//! - [`ColumnParallelLinear`]: every device holds some output rows of the weight (its heads, its
//!   slice of the MLP) and computes its own outputs from the replicated input; no communication.
//!   Its outputs stay on their devices.
//! - [`RowParallelLinear`]: every device holds the input columns matching its slice and computes
//!   a partial product; the layer ends in its `all_reduce`, so it returns the replicated sum.
//!
//! Invariant: each device's numbers are those of its own shard. When the devices' shards
//! partition one checkpoint matrix exactly, the host runs all devices in one pass over the whole
//! matrix ([`FusedRows`], column blocks) and hands each device its part; this is an optimisation
//! of the simulation (one kernel call instead of one per device), and gives the same numbers
//! every device's own product would, because each output element is the same dot product over
//! the same weights.

use std::ops::Range;

use tt_ops::{Tensor, linear, linear_column_blocks, team};

use crate::Collectives;
use crate::error::MeshError;
use crate::mesh::Mesh;
use crate::tensor::{Distribution, MeshTensor};

/// A column-parallel projection of every device as one matrix: device `d`'s outputs are the
/// columns `parts[d]` of `x @ full^T` (one range per output, in the layer's output order).
#[derive(Debug, Clone)]
pub struct FusedRows {
    /// The whole checkpoint matrix, `[N, H]`.
    pub full: Tensor,
    /// Per device, its output column ranges.
    pub parts: Vec<Vec<Range<usize>>>,
}

/// How a column-parallel layer returns a device's outputs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutputGrouping {
    /// All outputs side by side in one tensor (Q, K and V as `nlp_create_qkv_heads` takes them).
    Concat,
    /// One tensor per output (gate and up).
    Apart,
}

/// A linear layer split by output rows over the devices; no collective.
#[derive(Debug)]
pub struct ColumnParallelLinear {
    /// Per output (e.g. Q, K, V), each device's weight rows `[N_d, H]`.
    pub outputs: Vec<MeshTensor>,
    /// The whole fused matrix, when the devices' rows cover it exactly once.
    pub fused: Option<FusedRows>,
    /// How a device's outputs are returned.
    pub grouping: OutputGrouping,
}

impl ColumnParallelLinear {
    /// Every device's outputs for the replicated input `x [M, H]`: per device, one tensor
    /// ([`OutputGrouping::Concat`]) or one per output ([`OutputGrouping::Apart`]).
    pub fn forward(&self, x: &Tensor) -> Result<Vec<Vec<Tensor>>, MeshError> {
        let devices = self.outputs.first().map_or(0, MeshTensor::num_devices);
        let per_output = match self.grouping {
            OutputGrouping::Concat => vec![self.outputs.len()],
            OutputGrouping::Apart => vec![1; self.outputs.len()],
        };
        match &self.fused {
            Some(f) => {
                let y = linear(x, &f.full)?;
                team::map(f.parts.len(), |d| {
                    let mut rest = f.parts[d].as_slice();
                    per_output
                        .iter()
                        .map(|&count| {
                            let (these, tail) = rest
                                .split_at_checked(count)
                                .ok_or_else(|| wrong_outputs(count))?;
                            rest = tail;
                            Ok(y.gather_columns(these)?)
                        })
                        .collect()
                })
                .into_iter()
                .collect()
            }
            None => team::map(devices, |d| {
                let ys = self
                    .outputs
                    .iter()
                    .map(|w| Ok(linear(x, w.shard(d)?)?))
                    .collect::<Result<Vec<_>, MeshError>>()?;
                match self.grouping {
                    OutputGrouping::Apart => Ok(ys),
                    OutputGrouping::Concat => {
                        let refs: Vec<&Tensor> = ys.iter().collect();
                        Ok(vec![Tensor::cat(&refs, 1)?])
                    }
                }
            })
            .into_iter()
            .collect(),
        }
    }
}

/// A linear layer split by input columns over the devices, ending in its `all_reduce`.
#[derive(Debug)]
pub struct RowParallelLinear {
    /// Each device's input columns `[H, K_d]` (column views of the checkpoint matrix).
    pub weight: MeshTensor,
    /// The whole matrix, when device `d` holds exactly its `d`-th equal column block: then all
    /// devices' products run in one pass over it (`tt_ops::linear_column_blocks`).
    pub blocks: Option<Tensor>,
}

impl RowParallelLinear {
    /// `sum_d xs[d] @ w_d^T` over the mesh: every device's partial product, then the
    /// all_reduce; returns the replicated sum.
    pub fn forward(&self, mesh: &Mesh, xs: &[Tensor]) -> Result<Tensor, MeshError> {
        let partials = match &self.blocks {
            Some(full) => {
                let refs: Vec<&Tensor> = xs.iter().collect();
                linear_column_blocks(&refs, full)?
            }
            None => team::map(xs.len(), |d| Ok(linear(&xs[d], self.weight.shard(d)?)?))
                .into_iter()
                .collect::<Result<Vec<_>, MeshError>>()?,
        };
        let mut partial = MeshTensor::from_shards(mesh, partials, Distribution::PartialSum)?;
        partial.expect(Distribution::PartialSum, "row-parallel output")?;
        mesh.ccl().all_reduce(&mut partial)?;
        partial.expect(Distribution::Replicated, "all_reduce output")?;
        Ok(partial.shard(0)?.clone())
    }
}

fn wrong_outputs(count: usize) -> MeshError {
    MeshError::InvalidArgument {
        op: "column_parallel",
        detail: format!("a fused projection has fewer than {count} output ranges per device"),
    }
}
