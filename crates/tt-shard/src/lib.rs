//! tt-shard: pure shard math for tensor-parallel decoders on a device mesh.
//!
//! No tensor data lives here, and nothing is specific to one model: a decoder is described by
//! numbers ([`DecoderDims`]), a mesh by its shape ([`MeshShape`]), a device by its constraints
//! ([`DeviceProfile`]). [`Plan::new`] turns these into a 1-D tensor-parallel plan across every
//! device of the mesh: each weight's placement, the HF rows/columns every device takes, padded
//! shapes, bytes per device, the KV cache shard and the collectives per token. Models ask the
//! plan for their ranges ([`Plan::shard_of`]) instead of dividing by the device count themselves.
//!
//! Code map:
//! - [`mesh`]: mesh shape (`RxC`, row-major device ids).
//! - [`profile`]: device profiles (`host`, `wormhole_b0`).
//! - [`dims`]: the decoder described by numbers, fused layouts.
//! - [`placement`]: placements, weight kinds, source tensors.
//! - [`heads`]: query/KV head partition (GQA replication, zero-head padding).
//! - [`split`]: even splits with padding.
//! - [`plan`]: the plan.
//! - [`weights`]: per-weight placement, per-device shards and bytes.
//! - [`memory`]: bytes per device, KV cache shard.
//! - [`collective`]: collectives per token.
//! - [`report`]: the plan as a text table.
//! - [`error`]: typed errors that say what to change.

pub mod collective;
pub mod dims;
pub mod error;
pub mod heads;
pub mod memory;
pub mod mesh;
pub mod placement;
pub mod plan;
pub mod profile;
pub mod report;
pub mod split;
pub mod weights;

pub use collective::{CollectiveOp, CollectiveStep, CollectiveSummary};
pub use dims::{DecoderDims, GateUpLayout, MAX_DIM, QkvLayout};
pub use error::{MeshShapeError, PlanError};
pub use heads::{DeviceHeads, HeadPartition};
pub use memory::{DeviceMemory, KvCacheShard, WeightTotals};
pub use mesh::MeshShape;
pub use placement::{Placement, SourceTensor, WeightKind};
pub use plan::{MAX_DEVICES, Plan, PlanOptions};
pub use profile::{DeviceProfile, WORMHOLE_B0_DRAM_BYTES};
pub use split::EvenSplit;
pub use weights::{DeviceShard, WeightPlan};
