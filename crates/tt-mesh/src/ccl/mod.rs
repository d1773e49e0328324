//! Collectives over the devices of a mesh: all_gather, reduce_scatter and all_reduce
//! (reduce-scatter then all-gather), each as a ring or a line algorithm on real buffers.
//!
//! All devices of the mesh take part, in row-major order. Bytes are counted per directed link
//! at the storage dtype's size. On a single device every collective is a no-op (all_gather and
//! reduce_scatter return the input shard), so the same code runs on 1 and on N devices.
//!
//! When the mesh spans several ranks ([`Mesh::with_transport`]), each rank holds its own
//! devices' buffers and the same schedule runs with the transfers between ranks as messages
//! (`exec::run_ranked`); every rank must make the same collective calls in the same order.

mod exec;
mod schedule;

use half::bf16;
use tt_ops::{DType, Element, Tensor};

use crate::error::MeshError;
use crate::mesh::Mesh;
use crate::tensor::{Distribution, MeshTensor};
use crate::topology::{Algorithm, Topology};
use crate::wire::Wire;
use schedule::Phase;

/// The collectives a tensor-parallel model needs, behind one interface for 1 or N devices.
pub trait Collectives {
    /// Sum the shards in place; every device ends with the identical sum (labelled replicated).
    fn all_reduce(&self, x: &mut MeshTensor) -> Result<(), MeshError>;
    /// Every device gets the concatenation of all shards along `dim` (in device order).
    fn all_gather(&self, x: &MeshTensor, dim: usize) -> Result<MeshTensor, MeshError>;
    /// Device `d` gets part `d` (along `dim`) of the sum of the shards.
    fn reduce_scatter(&self, x: &MeshTensor, dim: usize) -> Result<MeshTensor, MeshError>;
}

/// Collectives of one mesh with a chosen algorithm.
#[derive(Debug, Clone, Copy)]
pub struct Ccl<'m> {
    mesh: &'m Mesh,
    algorithm: Algorithm,
}

impl Mesh {
    /// Collectives with the topology's algorithm (ring on a ring, line on a line).
    pub fn ccl(&self) -> Ccl<'_> {
        Ccl {
            mesh: self,
            algorithm: self.default_algorithm(),
        }
    }

    /// Collectives with `algorithm`; a ring needs a ring topology beyond two devices.
    pub fn ccl_with(&self, algorithm: Algorithm) -> Result<Ccl<'_>, MeshError> {
        let n = self.num_devices();
        if algorithm == Algorithm::Ring && self.topology() == Topology::Linear && n > 2 {
            return Err(MeshError::NoRingLink {
                devices: n,
                last: n - 1,
            });
        }
        Ok(Ccl {
            mesh: self,
            algorithm,
        })
    }
}

impl Ccl<'_> {
    /// The algorithm in use.
    pub fn algorithm(&self) -> Algorithm {
        self.algorithm
    }

    fn check(&self, x: &MeshTensor, op: &'static str) -> Result<(Vec<usize>, DType), MeshError> {
        if !x.is_on(self.mesh) {
            return Err(MeshError::ForeignTensor);
        }
        let Some(first) = x.shards().first() else {
            return Err(MeshError::DeviceCount {
                expected: self.mesh.num_devices(),
                got: 0,
            });
        };
        for (d, t) in x.shards().iter().enumerate() {
            if t.shape() != first.shape() || t.dtype() != first.dtype() {
                return Err(MeshError::ShardMismatch {
                    op,
                    detail: format!(
                        "device {d} holds {:?} {:?}, device 0 holds {:?} {:?}",
                        t.dtype(),
                        t.shape(),
                        first.dtype(),
                        first.shape()
                    ),
                });
            }
        }
        Ok((first.shape().to_vec(), first.dtype()))
    }

    fn parallel(&self, elems: usize) -> bool {
        self.mesh.execution().parallel_for(elems)
    }

    /// Runs `phases` over this process's device buffers: in memory in a one-process mesh, with
    /// messages between ranks otherwise. `elems` sizes the parallel policy.
    fn exchange<T: Storage>(
        &self,
        bufs: &mut [&mut [T]],
        chunks: &[std::ops::Range<usize>],
        phases: &[Phase],
        elems: usize,
    ) -> Result<(), MeshError> {
        match self.mesh.transport() {
            Some(transport) => exec::run_ranked(
                bufs,
                self.mesh.local_devices().start,
                self.mesh.num_devices(),
                chunks,
                self.algorithm,
                phases,
                self.mesh,
                transport,
            ),
            None => exec::run(
                bufs,
                chunks,
                self.algorithm,
                phases,
                self.mesh.links(),
                self.parallel(elems),
            ),
        }
    }
}

/// Storage types collectives run on.
trait Storage: Element + Wire {
    fn into_tensor(v: Vec<Self>, shape: &[usize]) -> tt_ops::Result<Tensor>;
}

impl Storage for f32 {
    fn into_tensor(v: Vec<Self>, shape: &[usize]) -> tt_ops::Result<Tensor> {
        Tensor::from_f32(v, shape)
    }
}

impl Storage for bf16 {
    fn into_tensor(v: Vec<Self>, shape: &[usize]) -> tt_ops::Result<Tensor> {
        Tensor::from_bf16(v, shape)
    }
}

fn check_dim(op: &'static str, dim: usize, shape: &[usize]) -> Result<(), MeshError> {
    if dim >= shape.len() {
        return Err(MeshError::InvalidDim {
            op,
            dim,
            rank: shape.len(),
        });
    }
    Ok(())
}

impl Collectives for Ccl<'_> {
    fn all_reduce(&self, x: &mut MeshTensor) -> Result<(), MeshError> {
        let (shape, dtype) = self.check(x, "all_reduce")?;
        let elems: usize = shape.iter().product();
        let n = x.num_devices();
        let chunks = exec::balanced_chunks(elems, n);
        let phases = [Phase::ReduceScatter, Phase::AllGather];
        if n > 1 {
            match dtype {
                DType::F32 => {
                    let mut bufs = x
                        .shards_mut()
                        .iter_mut()
                        .map(Tensor::as_f32_mut)
                        .collect::<Result<Vec<_>, _>>()?;
                    self.exchange(&mut bufs, &chunks, &phases, elems)?;
                }
                DType::Bf16 => {
                    let mut bufs = x
                        .shards_mut()
                        .iter_mut()
                        .map(Tensor::as_bf16_mut)
                        .collect::<Result<Vec<_>, _>>()?;
                    self.exchange(&mut bufs, &chunks, &phases, elems)?;
                }
            }
        }
        x.set_distribution(Distribution::Replicated);
        Ok(())
    }

    fn all_gather(&self, x: &MeshTensor, dim: usize) -> Result<MeshTensor, MeshError> {
        let (shape, dtype) = self.check(x, "all_gather")?;
        check_dim("all_gather", dim, &shape)?;
        let shards = match dtype {
            DType::F32 => self.gather_t::<f32>(x, &shape, dim)?,
            DType::Bf16 => self.gather_t::<bf16>(x, &shape, dim)?,
        };
        MeshTensor::from_shards(self.mesh, shards, Distribution::Replicated)
    }

    fn reduce_scatter(&self, x: &MeshTensor, dim: usize) -> Result<MeshTensor, MeshError> {
        let (shape, dtype) = self.check(x, "reduce_scatter")?;
        check_dim("reduce_scatter", dim, &shape)?;
        let n = x.num_devices();
        if shape[dim] % n != 0 {
            return Err(MeshError::NotDivisible {
                op: "reduce_scatter",
                dim,
                size: shape[dim],
                parts: n,
            });
        }
        let shards = match dtype {
            DType::F32 => self.scatter_t::<f32>(x, &shape, dim)?,
            DType::Bf16 => self.scatter_t::<bf16>(x, &shape, dim)?,
        };
        MeshTensor::from_shards(self.mesh, shards, Distribution::Sharded { dim })
    }
}

impl Ccl<'_> {
    /// all_gather for storage `T`: stage each device's output as `[n, shard]`, exchange, then
    /// lay the shards out along `dim` (no relayout when `dim` is outermost).
    fn gather_t<T: Storage>(
        &self,
        x: &MeshTensor,
        shape: &[usize],
        dim: usize,
    ) -> Result<Vec<Tensor>, MeshError> {
        let n = x.num_devices();
        if n == 1 {
            return Ok(x.shards().to_vec());
        }
        let s: usize = shape.iter().product();
        let mut staging = x
            .shards()
            .iter()
            .zip(x.local_devices())
            .map(|(t, d)| {
                let mut v = vec![T::from_f32(0.0); n * s];
                v[d * s..(d + 1) * s].copy_from_slice(T::slice(t)?);
                Ok(v)
            })
            .collect::<Result<Vec<_>, MeshError>>()?;
        let chunks: Vec<_> = (0..n).map(|k| k * s..(k + 1) * s).collect();
        let mut bufs: Vec<&mut [T]> = staging.iter_mut().map(Vec::as_mut_slice).collect();
        self.exchange(&mut bufs, &chunks, &[Phase::AllGather], n * s)?;
        let mut out_shape = shape.to_vec();
        out_shape[dim] *= n;
        let outer: usize = shape[..dim].iter().product();
        let run = s / outer.max(1);
        staging
            .into_iter()
            .map(|v| {
                let v = if outer == 1 {
                    v
                } else {
                    let mut out = Vec::with_capacity(v.len());
                    for o in 0..outer {
                        for k in 0..n {
                            out.extend_from_slice(&v[k * s + o * run..k * s + (o + 1) * run]);
                        }
                    }
                    out
                };
                Ok(T::into_tensor(v, &out_shape)?)
            })
            .collect()
    }

    /// reduce_scatter for storage `T`: stage each device's input chunk-major (part `k` of `dim`
    /// as chunk `k`, already in the output layout), reduce, and keep each device's own chunk.
    fn scatter_t<T: Storage>(
        &self,
        x: &MeshTensor,
        shape: &[usize],
        dim: usize,
    ) -> Result<Vec<Tensor>, MeshError> {
        let n = x.num_devices();
        let mut out_shape = shape.to_vec();
        out_shape[dim] /= n;
        if n == 1 {
            return Ok(x.shards().to_vec());
        }
        let total: usize = shape.iter().product();
        let c = total / n;
        let outer: usize = shape[..dim].iter().product();
        let run = c / outer.max(1);
        let mut staging = x
            .shards()
            .iter()
            .map(|t| {
                let src = T::slice(t)?;
                if outer == 1 {
                    return Ok(src.to_vec());
                }
                let mut v = Vec::with_capacity(total);
                for k in 0..n {
                    for o in 0..outer {
                        let base = o * n * run + k * run;
                        v.extend_from_slice(&src[base..base + run]);
                    }
                }
                Ok(v)
            })
            .collect::<Result<Vec<_>, MeshError>>()?;
        let chunks: Vec<_> = (0..n).map(|k| k * c..(k + 1) * c).collect();
        let mut bufs: Vec<&mut [T]> = staging.iter_mut().map(Vec::as_mut_slice).collect();
        self.exchange(&mut bufs, &chunks, &[Phase::ReduceScatter], total)?;
        staging
            .into_iter()
            .zip(x.local_devices())
            .map(|(v, d)| Ok(T::into_tensor(v[d * c..(d + 1) * c].to_vec(), &out_shape)?))
            .collect()
    }
}

impl Collectives for Mesh {
    fn all_reduce(&self, x: &mut MeshTensor) -> Result<(), MeshError> {
        self.ccl().all_reduce(x)
    }

    fn all_gather(&self, x: &MeshTensor, dim: usize) -> Result<MeshTensor, MeshError> {
        self.ccl().all_gather(x, dim)
    }

    fn reduce_scatter(&self, x: &MeshTensor, dim: usize) -> Result<MeshTensor, MeshError> {
        self.ccl().reduce_scatter(x, dim)
    }
}
