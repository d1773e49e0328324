//! Mesh mappers (host tensor -> mesh tensor) and composers (mesh tensor -> host tensor).

use tt_ops::Tensor;

use crate::error::MeshError;
use crate::mesh::Mesh;
use crate::tensor::{Distribution, MeshTensor};
use crate::transport::Transport;
use crate::wire::{TensorReader, put_tensor};

/// How a host tensor is placed on the devices.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MeshMapper {
    /// Every device gets the whole tensor (shared host storage, memory counted per device).
    Replicate,
    /// Tensor dim `dim` is split into equal parts, part `d` on device `d` (row-major order).
    Shard {
        /// Tensor dim to split.
        dim: usize,
    },
    /// Per mesh axis (rows, cols): split a tensor dim over that axis, or replicate along it.
    /// Device (r, c) gets part r of `dims[0]` and part c of `dims[1]`.
    Shard2d {
        /// Tensor dim split over mesh rows, and over mesh columns (`None` = replicate).
        dims: [Option<usize>; 2],
    },
}

/// How a mesh tensor's shards are brought back into one host tensor.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MeshComposer {
    /// Concatenate all shards along `dim` in device order.
    Concat {
        /// Tensor dim to concatenate along.
        dim: usize,
    },
    /// Concatenate each mesh row's shards along `dims[1]`, then the rows along `dims[0]`
    /// (the inverse of [`MeshMapper::Shard2d`] with both dims set).
    Concat2d {
        /// Tensor dims for mesh rows and mesh columns.
        dims: [usize; 2],
    },
    /// The shard of one device (for a replicated tensor).
    Replica {
        /// Device to read.
        device: usize,
    },
}

/// Part `part` of `parts` equal parts of dim `dim` of `t` (a view when `dim` is outermost).
fn part_of(
    t: &Tensor,
    dim: usize,
    part: usize,
    parts: usize,
    op: &'static str,
) -> Result<Tensor, MeshError> {
    let rank = t.rank();
    let size = *t
        .shape()
        .get(dim)
        .ok_or(MeshError::InvalidDim { op, dim, rank })?;
    if size % parts != 0 {
        return Err(MeshError::NotDivisible {
            op,
            dim,
            size,
            parts,
        });
    }
    let len = size / parts;
    Ok(t.narrow(dim, part * len, len)?)
}

impl Mesh {
    /// Place `tensor` on the mesh as `mapper` says, reserving each shard's bytes (on a mesh
    /// spread over ranks, only this rank's devices' shards are made).
    pub fn distribute(&self, tensor: &Tensor, mapper: MeshMapper) -> Result<MeshTensor, MeshError> {
        const OP: &str = "distribute";
        let n = self.num_devices();
        let local = self.local_devices();
        let (shards, distribution) = match mapper {
            MeshMapper::Replicate => (vec![tensor.clone(); local.len()], Distribution::Replicated),
            MeshMapper::Shard { dim } => (
                local
                    .map(|d| part_of(tensor, dim, d, n, OP))
                    .collect::<Result<Vec<_>, _>>()?,
                Distribution::Sharded { dim },
            ),
            MeshMapper::Shard2d { dims } => {
                if let [Some(a), Some(b)] = dims
                    && a == b
                {
                    return Err(MeshError::InvalidArgument {
                        op: OP,
                        detail: format!("Shard2d splits tensor dim {a} over both mesh axes"),
                    });
                }
                let (rows, cols) = (self.shape().rows(), self.shape().cols());
                let shards = local
                    .map(|d| {
                        let (r, c) = (d / cols, d % cols);
                        let t = match dims[0] {
                            Some(dim) => part_of(tensor, dim, r, rows, OP)?,
                            None => tensor.clone(),
                        };
                        match dims[1] {
                            Some(dim) => part_of(&t, dim, c, cols, OP),
                            None => Ok(t),
                        }
                    })
                    .collect::<Result<Vec<_>, _>>()?;
                (shards, Distribution::Sharded2d { dims })
            }
        };
        MeshTensor::from_shards(self, shards, distribution)
    }

    /// Bring `tensor` back to the host as `composer` says. On a mesh spread over ranks every
    /// rank gets the whole result (the shards are gathered from every rank first), so every
    /// rank must call it.
    pub fn compose(
        &self,
        tensor: &MeshTensor,
        composer: MeshComposer,
    ) -> Result<Tensor, MeshError> {
        const OP: &str = "compose";
        if tensor.num_devices() != self.num_devices() {
            return Err(MeshError::DeviceCount {
                expected: self.num_devices(),
                got: tensor.num_devices(),
            });
        }
        let gathered;
        let shards = match self.transport() {
            None => tensor.shards(),
            Some(transport) => {
                gathered = gather_shards(self, transport, tensor)?;
                &gathered
            }
        };
        let check_dim = |dim: usize| {
            let rank = shards.first().map_or(0, Tensor::rank);
            if dim >= rank {
                Err(MeshError::InvalidDim { op: OP, dim, rank })
            } else {
                Ok(())
            }
        };
        match composer {
            MeshComposer::Concat { dim } => {
                check_dim(dim)?;
                let refs: Vec<&Tensor> = shards.iter().collect();
                Ok(Tensor::cat(&refs, dim)?)
            }
            MeshComposer::Concat2d { dims } => {
                check_dim(dims[0])?;
                check_dim(dims[1])?;
                let cols = self.shape().cols();
                let rows = shards
                    .chunks(cols)
                    .map(|row| Tensor::cat(&row.iter().collect::<Vec<_>>(), dims[1]))
                    .collect::<Result<Vec<_>, _>>()?;
                Ok(Tensor::cat(&rows.iter().collect::<Vec<_>>(), dims[0])?)
            }
            MeshComposer::Replica { device } => {
                shards
                    .get(device)
                    .cloned()
                    .ok_or(MeshError::DeviceOutOfRange {
                        device,
                        devices: self.num_devices(),
                    })
            }
        }
    }
}

/// Every device's shard of `tensor`, gathered from every rank, in device order.
fn gather_shards(
    mesh: &Mesh,
    transport: &dyn Transport,
    tensor: &MeshTensor,
) -> Result<Vec<Tensor>, MeshError> {
    let mut mine = Vec::new();
    for t in tensor.shards() {
        put_tensor(t, &mut mine)?;
    }
    let per_rank = tensor.shards().len();
    let started = std::time::Instant::now();
    let all = transport.all_gather(&mine)?;
    mesh.links().add_exchange_time(started.elapsed());
    for _ in 1..transport.ranks() {
        mesh.links().add_message(mine.len() as u64);
    }
    let mut shards = Vec::with_capacity(mesh.num_devices());
    for (rank, bytes) in all.iter().enumerate() {
        let mut reader = TensorReader::new(bytes, rank);
        for _ in 0..per_rank {
            shards.push(reader.tensor()?);
        }
        if !reader.is_done() {
            return Err(MeshError::Transport {
                rank,
                detail: "sent more shards than its devices hold".into(),
            });
        }
    }
    Ok(shards)
}
