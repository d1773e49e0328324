//! Mesh tensors: one device-local tensor per device, with memory held on each device and the
//! distribution contract (replicated, sharded, partial sums) they satisfy.

use std::fmt;

use rayon::prelude::*;
use tt_ops::{DType, Tensor};

use crate::error::MeshError;
use crate::memory::Allocation;
use crate::mesh::Mesh;

/// How a mesh tensor's shards relate to the logical tensor: the contract a block states for its
/// inputs and outputs (checked with [`MeshTensor::expect`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Distribution {
    /// Every device holds the same whole tensor.
    Replicated,
    /// Device `d` holds part `d` (row-major) of tensor dim `dim`.
    Sharded {
        /// The split tensor dim.
        dim: usize,
    },
    /// Device (r, c) holds part r of `dims[0]` and part c of `dims[1]` (`None` = replicated on
    /// that mesh axis).
    Sharded2d {
        /// Tensor dim split over mesh rows, then over mesh columns.
        dims: [Option<usize>; 2],
    },
    /// The logical tensor is the sum of the shards (e.g. after a row-parallel matmul).
    PartialSum,
    /// No stated relation.
    Unspecified,
}

impl fmt::Display for Distribution {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Distribution::Replicated => f.write_str("replicated"),
            Distribution::Sharded { dim } => write!(f, "sharded(dim {dim})"),
            Distribution::Sharded2d { dims } => write!(f, "sharded2d({dims:?})"),
            Distribution::PartialSum => f.write_str("partial-sum"),
            Distribution::Unspecified => f.write_str("unspecified"),
        }
    }
}

/// One tensor per device of a mesh, with its bytes reserved on each device. When the mesh
/// spans several ranks, a rank's mesh tensor holds the shards of its own devices only
/// ([`MeshTensor::local_devices`]); device indices stay those of the whole mesh.
#[derive(Debug)]
pub struct MeshTensor {
    shards: Vec<Tensor>,
    allocations: Vec<Allocation>,
    distribution: Distribution,
    /// The first local device.
    first: usize,
    /// Devices of the whole mesh.
    devices: usize,
}

impl MeshTensor {
    /// Place `shards[i]` on the `i`-th device this process hosts (one per local device: every
    /// device of a one-process mesh), reserving their bytes.
    pub fn from_shards(
        mesh: &Mesh,
        shards: Vec<Tensor>,
        distribution: Distribution,
    ) -> Result<Self, MeshError> {
        let local = mesh.local_devices();
        if shards.len() != local.len() {
            return Err(MeshError::DeviceCount {
                expected: local.len(),
                got: shards.len(),
            });
        }
        let allocations = shards
            .iter()
            .zip(local.clone())
            .map(|(t, d)| mesh.allocate_tensor(d, t))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self {
            shards,
            allocations,
            distribution,
            first: local.start,
            devices: mesh.num_devices(),
        })
    }

    /// A tensor of zeros of `shape` on every device.
    pub fn zeros(
        mesh: &Mesh,
        shape: &[usize],
        dtype: DType,
        distribution: Distribution,
    ) -> Result<Self, MeshError> {
        let shards = mesh
            .local_devices()
            .map(|_| Tensor::zeros(shape, dtype))
            .collect();
        Self::from_shards(mesh, shards, distribution)
    }

    /// This process's shards, in device order (those of [`MeshTensor::local_devices`]).
    pub fn shards(&self) -> &[Tensor] {
        &self.shards
    }

    /// The shard on `device` (an index of the whole mesh; a typed error for a device another
    /// rank hosts).
    pub fn shard(&self, device: usize) -> Result<&Tensor, MeshError> {
        if device >= self.devices {
            return Err(MeshError::DeviceOutOfRange {
                device,
                devices: self.devices,
            });
        }
        device
            .checked_sub(self.first)
            .and_then(|i| self.shards.get(i))
            .ok_or(MeshError::NotLocal {
                device,
                first: self.first,
                end: self.first + self.shards.len(),
            })
    }

    /// This process's copy of a replicated tensor: the shard of its first device.
    pub fn replica(&self) -> Result<&Tensor, MeshError> {
        self.shard(self.first)
    }

    /// Devices of the whole mesh the tensor spans.
    pub fn num_devices(&self) -> usize {
        self.devices
    }

    /// The devices whose shards this process holds.
    pub fn local_devices(&self) -> std::ops::Range<usize> {
        self.first..self.first + self.shards.len()
    }

    /// The distribution contract.
    pub fn distribution(&self) -> Distribution {
        self.distribution
    }

    /// The same shards under another distribution label (e.g. after a column-parallel op turns
    /// a replicated input into sharded output).
    pub fn with_distribution(mut self, distribution: Distribution) -> Self {
        self.distribution = distribution;
        self
    }

    /// Check the distribution contract of a block boundary.
    pub fn expect(
        &self,
        expected: Distribution,
        context: &'static str,
    ) -> Result<&Self, MeshError> {
        if self.distribution == expected {
            Ok(self)
        } else {
            Err(MeshError::Contract {
                context,
                expected,
                got: self.distribution,
            })
        }
    }

    /// Bytes reserved for this tensor on `device` (0 outside the mesh or on another rank).
    pub fn device_bytes(&self, device: usize) -> u64 {
        device
            .checked_sub(self.first)
            .and_then(|i| self.allocations.get(i))
            .map_or(0, Allocation::bytes)
    }

    /// Run `f(device, shard)` on every local device concurrently; the results form a new mesh tensor
    /// (reserved on the same devices) labelled `distribution`.
    pub fn map<E, F>(&self, distribution: Distribution, f: F) -> Result<MeshTensor, E>
    where
        F: Fn(usize, &Tensor) -> Result<Tensor, E> + Sync + Send,
        E: From<MeshError> + Send,
    {
        let shards = self
            .shards
            .par_iter()
            .enumerate()
            .map(|(i, t)| f(self.first + i, t))
            .collect::<Result<Vec<_>, E>>()?;
        let allocations = self
            .allocations
            .iter()
            .zip(&shards)
            .map(|(a, t)| Allocation::new(a.ledger(), a.ledger().tensor_bytes(t)))
            .collect::<Result<Vec<_>, MeshError>>()?;
        Ok(MeshTensor {
            shards,
            allocations,
            distribution,
            first: self.first,
            devices: self.devices,
        })
    }

    /// Run `f(device, &mut shard)` on every local device concurrently, in place; memory is re-counted
    /// if a shard's size changed.
    pub fn update<E, F>(&mut self, f: F) -> Result<(), E>
    where
        F: Fn(usize, &mut Tensor) -> Result<(), E> + Sync + Send,
        E: From<MeshError> + Send,
    {
        self.shards
            .par_iter_mut()
            .enumerate()
            .try_for_each(|(i, t)| f(self.first + i, t))?;
        for (a, t) in self.allocations.iter_mut().zip(&self.shards) {
            let bytes = a.ledger().tensor_bytes(t);
            if bytes != a.bytes() {
                a.resize(bytes)?;
            }
        }
        Ok(())
    }

    /// The shards, releasing their device memory.
    pub fn into_shards(self) -> Vec<Tensor> {
        self.shards
    }

    /// Mutable shards for in-place collectives (shapes and dtypes are not changed).
    pub(crate) fn shards_mut(&mut self) -> &mut [Tensor] {
        &mut self.shards
    }

    pub(crate) fn set_distribution(&mut self, distribution: Distribution) {
        self.distribution = distribution;
    }

    /// Whether this tensor lives on `mesh`.
    pub(crate) fn is_on(&self, mesh: &Mesh) -> bool {
        self.devices == mesh.num_devices()
            && self.local_devices() == mesh.local_devices()
            && self.allocations.iter().all(|a| mesh.owns(a))
    }
}
