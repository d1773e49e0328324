//! Tensor-parallel linear layers that own their collective.
//!
//! - [`ColumnParallelLinear`]: every device holds some output rows of the weight (its heads, its
//!   slice of the MLP) and computes its own outputs from the replicated input; no communication.
//!   Its outputs stay on their devices.
//! - [`RowParallelLinear`]: every device holds the input columns matching its slice and computes
//!   a partial product; the layer ends in its `all_reduce`, so it returns the replicated sum.
//!
//! Each layer carries the [`OpSettings`] of its op class. Its weights are either host tensors
//! ([`ColumnWeights::Host`], [`RowWeights::Host`]: f32 or bf16, multiplied by the host's exact
//! kernels) or packed as the device stores them ([`DeviceShards`]: any storage format, multiplied
//! with the device's fidelity and accumulation by [`tt_ops::device_linear`]). Either way, every
//! device's output is written in the settings' output format, as the device's packer writes it.
//!
//! Each device's part runs inside the caller's current span (`crate::trace`): the decoder's
//! span of the projection's kind (`qkv`, `o_proj`, ...); a row-parallel layer's all_reduce has
//! a span of its own (`all_reduce`).
//!
//! Invariant: each device's numbers are those of its own shard. When the devices' shards
//! partition one checkpoint matrix exactly, the host runs all devices in one pass over the whole
//! matrix ([`FusedRows`], column blocks) and hands each device its part; this is an optimisation
//! of the simulation (one kernel call instead of one per device), and gives the same numbers
//! every device's own product would, because each output element is the same dot product over
//! the same weights.

use std::ops::Range;

use rayon::prelude::*;
use tt_numerics::OpSettings;
use tt_numerics::StorageFormat;
use tt_ops::{
    DeviceWeight, Tensor, device_linear, linear_column_blocks_stored, linear_stored,
    write_in_format,
};

use crate::Collectives;
use crate::error::MeshError;
use crate::memory::Allocation;
use crate::mesh::Mesh;
use crate::tensor::{Distribution, MeshTensor};
use crate::trace::{map_in_span, spread, spread_when};

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

/// Per device, its weights packed as the device stores them (one per output of the layer), with
/// their bytes reserved on the device (this process's devices only, on a mesh spread over ranks).
#[derive(Debug)]
pub struct DeviceShards {
    weights: Vec<Vec<DeviceWeight>>,
    first: usize,
    _allocations: Vec<Allocation>,
}

impl DeviceShards {
    /// Packs `per_device[i][o]` (output `o` of the `i`-th local device, `[N, K]`) in `format`
    /// and reserves the packed bytes on each device.
    pub fn pack(
        mesh: &Mesh,
        per_device: &[Vec<&Tensor>],
        format: tt_numerics::StorageFormat,
    ) -> Result<Self, MeshError> {
        check_device_count(mesh, per_device.len())?;
        let weights = per_device
            .par_iter()
            .map(|outputs| {
                outputs
                    .iter()
                    .map(|w| Ok(DeviceWeight::pack(w, format)?))
                    .collect::<Result<Vec<_>, MeshError>>()
            })
            .collect::<Result<Vec<_>, MeshError>>()?;
        Self::place(mesh, weights)
    }

    /// Takes `per_device[i][o]` (output `o` of the `i`-th local device, packed `[K, N]`, e.g.
    /// mapped from a packed-weight cache) as they are, and reserves their bytes on each device.
    pub fn from_packed(
        mesh: &Mesh,
        per_device: Vec<Vec<tt_numerics::PackedMatrix>>,
    ) -> Result<Self, MeshError> {
        check_device_count(mesh, per_device.len())?;
        let weights = per_device
            .into_iter()
            .map(|outputs| outputs.into_iter().map(DeviceWeight::from_packed).collect())
            .collect();
        Self::place(mesh, weights)
    }

    /// Reserves the bytes of `weights` (one list per local device) on their devices.
    fn place(mesh: &Mesh, weights: Vec<Vec<DeviceWeight>>) -> Result<Self, MeshError> {
        let local = mesh.local_devices();
        let _allocations = weights
            .iter()
            .zip(local.clone())
            .map(|(ws, d)| {
                let bytes: usize = ws.iter().map(DeviceWeight::byte_size).sum();
                mesh.allocate(d, bytes as u64)
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self {
            weights,
            first: local.start,
            _allocations,
        })
    }

    /// The devices whose weights this process holds.
    pub fn local_devices(&self) -> Range<usize> {
        self.first..self.first + self.weights.len()
    }

    /// Device `d`'s weights, one per output (a device of this process).
    pub fn device(&self, d: usize) -> Result<&[DeviceWeight], MeshError> {
        d.checked_sub(self.first)
            .and_then(|i| self.weights.get(i))
            .map(Vec::as_slice)
            .ok_or(MeshError::NotLocal {
                device: d,
                first: self.first,
                end: self.first + self.weights.len(),
            })
    }

    /// Packed bytes over this process's devices.
    pub fn byte_size(&self) -> usize {
        self.weights
            .iter()
            .flatten()
            .map(DeviceWeight::byte_size)
            .sum()
    }
}

/// An error unless `got` lists are one per local device of `mesh`.
fn check_device_count(mesh: &Mesh, got: usize) -> Result<(), MeshError> {
    let expected = mesh.local_devices().len();
    if got != expected {
        return Err(MeshError::DeviceCount { expected, got });
    }
    Ok(())
}

/// The weights of a [`ColumnParallelLinear`].
#[derive(Debug)]
pub enum ColumnWeights {
    /// Host tensors, multiplied exactly.
    Host {
        /// Per output (e.g. Q, K, V), each device's weight rows `[N_d, H]`.
        outputs: Vec<MeshTensor>,
        /// The whole fused matrix, when the devices' rows cover it exactly once.
        fused: Option<FusedRows>,
    },
    /// Packed device weights, multiplied with the device's arithmetic.
    Device(DeviceShards),
}

/// A linear layer split by output rows over the devices; no collective.
#[derive(Debug)]
pub struct ColumnParallelLinear {
    /// The weights.
    pub weights: ColumnWeights,
    /// How a device's outputs are returned.
    pub grouping: OutputGrouping,
    /// The op's numerics (its output format is applied in both weight kinds).
    pub settings: OpSettings,
}

/// Writes `t` in `settings.output`, as the device's packer writes an op's output.
fn write_output(t: Tensor, settings: &OpSettings) -> Result<Tensor, MeshError> {
    Ok(write_in_format(t, settings.output)?)
}

impl ColumnParallelLinear {
    /// The whole fused matrix of host weights, when the devices' rows cover it exactly once.
    pub fn fused(&self) -> Option<&FusedRows> {
        match &self.weights {
            ColumnWeights::Host { fused, .. } => fused.as_ref(),
            ColumnWeights::Device(_) => None,
        }
    }

    /// Every local device's outputs for the replicated input `x [M, H]`: per device, one tensor
    /// ([`OutputGrouping::Concat`]) or one per output ([`OutputGrouping::Apart`]).
    pub fn forward(&self, x: &Tensor) -> Result<Vec<Vec<Tensor>>, MeshError> {
        let ys = self.forward_outputs(x)?;
        ys.into_iter()
            .map(|ys| match self.grouping {
                OutputGrouping::Apart => Ok(ys),
                OutputGrouping::Concat if ys.len() == 1 => Ok(ys),
                OutputGrouping::Concat => {
                    let refs: Vec<&Tensor> = ys.iter().collect();
                    Ok(vec![Tensor::cat(&refs, 1)?])
                }
            })
            .collect()
    }

    /// Per device, one tensor per output (or, for a fused host pass grouped by
    /// [`OutputGrouping::Concat`], the outputs already side by side), written in the output
    /// format.
    fn forward_outputs(&self, x: &Tensor) -> Result<Vec<Vec<Tensor>>, MeshError> {
        let output = self.settings.output;
        match &self.weights {
            ColumnWeights::Host {
                fused: Some(f),
                outputs,
            } => {
                // A value-by-value output format is written by the fused product itself; a
                // block-float one shares exponents along each device's own rows, so it is
                // applied to the device's tensors.
                let by_value = matches!(output, StorageFormat::F32 | StorageFormat::Bf16);
                let fused_output = if by_value { output } else { StorageFormat::F32 };
                let y = spread(|| linear_stored(x, &f.full, fused_output))?;
                let finish = |t: Tensor| {
                    if by_value {
                        Ok(t)
                    } else {
                        write_output(t, &self.settings)
                    }
                };
                let local = outputs
                    .first()
                    .map_or(0..f.parts.len(), MeshTensor::local_devices);
                map_in_span(local.len(), |i| {
                    let parts = f
                        .parts
                        .get(local.start + i)
                        .and_then(|p| p.get(..outputs.len()))
                        .ok_or_else(|| wrong_outputs(outputs.len()))?;
                    match self.grouping {
                        // One gather of all the device's ranges, side by side.
                        OutputGrouping::Concat => Ok(vec![finish(y.gather_columns(parts)?)?]),
                        OutputGrouping::Apart => parts
                            .iter()
                            .map(|r| finish(y.gather_columns(std::slice::from_ref(r))?))
                            .collect(),
                    }
                })
                .into_iter()
                .collect()
            }
            ColumnWeights::Host {
                outputs,
                fused: None,
            } => {
                let local = outputs.first().map_or(0..0, MeshTensor::local_devices);
                let alone = local.len() == 1;
                map_in_span(local.len(), |i| {
                    spread_when(alone, || {
                        outputs
                            .iter()
                            .map(|w| Ok(linear_stored(x, w.shard(local.start + i)?, output)?))
                            .collect()
                    })
                })
                .into_iter()
                .collect()
            }
            ColumnWeights::Device(shards) => {
                let alone = shards.weights.len() == 1;
                map_in_span(shards.weights.len(), |i| {
                    spread_when(alone, || {
                        shards
                            .device(shards.first + i)?
                            .iter()
                            .map(|w| {
                                write_output(device_linear(x, w, &self.settings)?, &self.settings)
                            })
                            .collect()
                    })
                })
            }
            .into_iter()
            .collect(),
        }
    }

    /// The same layer with its weights packed as the device stores them (in
    /// `settings.weights`), when `settings` need the device's arithmetic; else unchanged but
    /// for the settings.
    pub fn with_settings(self, mesh: &Mesh, settings: OpSettings) -> Result<Self, MeshError> {
        let weights = match self.weights {
            ColumnWeights::Host { outputs, .. } if !settings.is_exact_math() => {
                let per_device = mesh
                    .local_devices()
                    .map(|d| outputs.iter().map(|o| o.shard(d)).collect())
                    .collect::<Result<Vec<Vec<&Tensor>>, _>>()?;
                ColumnWeights::Device(DeviceShards::pack(mesh, &per_device, settings.weights)?)
            }
            weights => weights,
        };
        Ok(Self {
            weights,
            grouping: self.grouping,
            settings,
        })
    }
}

/// The weights of a [`RowParallelLinear`].
#[derive(Debug)]
pub enum RowWeights {
    /// Host tensors, multiplied exactly.
    Host {
        /// Each device's input columns `[H, K_d]` (column views of the checkpoint matrix).
        weight: MeshTensor,
        /// The whole matrix, when device `d` holds exactly its `d`-th equal column block: then
        /// all devices' products run in one pass over it (`tt_ops::linear_column_blocks`).
        blocks: Option<Tensor>,
    },
    /// Packed device weights, multiplied with the device's arithmetic.
    Device(DeviceShards),
}

/// A linear layer split by input columns over the devices, ending in its `all_reduce`.
#[derive(Debug)]
pub struct RowParallelLinear {
    /// The weights.
    pub weights: RowWeights,
    /// The op's numerics (each device's partial is written in its output format).
    pub settings: OpSettings,
}

impl RowParallelLinear {
    /// `sum_d xs[d] @ w_d^T` over the mesh: every device's partial product, then the
    /// all_reduce; returns the replicated sum. `xs` are the local devices' inputs, in device
    /// order (every device's in a one-process mesh). Each partial is written in the output
    /// format, as the device writes it, before the all_reduce.
    pub fn forward(&self, mesh: &Mesh, xs: &[Tensor]) -> Result<Tensor, MeshError> {
        let output = self.settings.output;
        let partials = match &self.weights {
            RowWeights::Host {
                blocks: Some(full),
                weight,
            } if weight.local_devices().len() == weight.num_devices() => {
                let refs: Vec<&Tensor> = xs.iter().collect();
                spread(|| linear_column_blocks_stored(&refs, full, output))?
            }
            RowWeights::Host { weight, .. } => {
                let first = weight.local_devices().start;
                let alone = xs.len() == 1;
                map_in_span(xs.len(), |i| {
                    spread_when(alone, || {
                        Ok(linear_stored(&xs[i], weight.shard(first + i)?, output)?)
                    })
                })
                .into_iter()
                .collect::<Result<Vec<_>, MeshError>>()?
            }
            RowWeights::Device(shards) => {
                let alone = xs.len() == 1;
                map_in_span(xs.len(), |i| {
                    let [w] = shards.device(shards.first + i)? else {
                        return Err(wrong_outputs(1));
                    };
                    spread_when(alone, || {
                        write_output(device_linear(&xs[i], w, &self.settings)?, &self.settings)
                    })
                })
                .into_iter()
                .collect::<Result<Vec<_>, MeshError>>()?
            }
        };
        let _all_reduce = crate::op_span!("all_reduce").entered();
        let mut partial = MeshTensor::from_shards(mesh, partials, Distribution::PartialSum)?;
        partial.expect(Distribution::PartialSum, "row-parallel output")?;
        mesh.ccl().all_reduce(&mut partial)?;
        partial.expect(Distribution::Replicated, "all_reduce output")?;
        Ok(partial.replica()?.clone())
    }

    /// The same layer with its weights packed as the device stores them, when `settings` need
    /// the device's arithmetic; else unchanged but for the settings.
    pub fn with_settings(self, mesh: &Mesh, settings: OpSettings) -> Result<Self, MeshError> {
        let weights = match self.weights {
            RowWeights::Host { weight, .. } if !settings.is_exact_math() => {
                let per_device = weight.shards().iter().map(|w| vec![w]).collect::<Vec<_>>();
                RowWeights::Device(DeviceShards::pack(mesh, &per_device, settings.weights)?)
            }
            weights => weights,
        };
        Ok(Self { weights, settings })
    }
}

fn wrong_outputs(count: usize) -> MeshError {
    MeshError::InvalidArgument {
        op: "column_parallel",
        detail: format!("a fused projection has fewer than {count} output ranges per device"),
    }
}
