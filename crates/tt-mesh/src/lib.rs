//! tt-mesh: a host-simulated mesh of accelerator devices.
//!
//! A [`Mesh`] is a grid of devices (shape and [`DeviceProfile`] from tt-shard) with per-device
//! memory accounting (an allocation past a device's budget is an [`MeshError::OutOfMemory`]) and a
//! [`Topology`]. A [`MeshTensor`] holds one [`tt_ops::Tensor`] per device; TTNN-style mappers
//! ([`MeshMapper`]) place a host tensor on the mesh and composers ([`MeshComposer`]) bring it
//! back. Collectives ([`Collectives`]: all_gather, reduce_scatter, all_reduce) move real data
//! between the devices step by step with a ring or a line algorithm, counting bytes per directed
//! link; on one device they are no-ops.
//!
//! Code map:
//! - [`mesh`]: the mesh, its devices and execution policy.
//! - [`memory`]: per-device memory ledger and RAII allocations.
//! - [`topology`]: linear/ring topology and collective algorithms.
//! - [`links`]: bytes per directed link.
//! - [`tensor`]: mesh tensors and their distribution contract.
//! - [`mapper`]: mappers and composers.
//! - [`ccl`]: collectives (schedules and their execution on device buffers).
//! - [`parallel`]: column- and row-parallel linear layers, with host or packed device weights
//!   ([`DeviceShards`]); a row-parallel layer ends in its all_reduce.
//! - [`trace`]: the TRACE spans around each kind of work of a step ([`op_span!`]), entered on
//!   whichever thread runs a device's part, for a profiler to sum.
//! - [`transport`]: ranks that together host one mesh ([`Transport`]; [`ThreadRanks`] in one
//!   process, `mpi::MpiTransport` across processes and hosts with the `mpi` feature).
//! - `wire`: bit-exact bytes between ranks.
//! - [`error`]: typed errors.

pub mod ccl;
pub mod error;
pub mod links;
pub mod mapper;
pub mod memory;
pub mod mesh;
#[cfg(feature = "mpi")]
pub mod mpi;
pub mod parallel;
pub mod tensor;
pub mod topology;
pub mod trace;
pub mod transport;
mod wire;

pub use ccl::{Ccl, Collectives};
pub use error::MeshError;
pub use links::{LinkBytes, RankTraffic};
pub use mapper::{MeshComposer, MeshMapper};
pub use memory::{Allocation, MemoryStats};
pub use mesh::{Execution, Mesh};
pub use parallel::{
    ColumnParallelLinear, ColumnWeights, DeviceShards, FusedRows, OutputGrouping,
    RowParallelLinear, RowWeights,
};
pub use tensor::{Distribution, MeshTensor};
pub use topology::{Algorithm, Topology};
pub use transport::{ThreadRanks, Transport};
pub use tt_shard::{DeviceProfile, MeshShape};
