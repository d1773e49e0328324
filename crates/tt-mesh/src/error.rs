//! Typed errors of mesh operations.

use tt_ops::OpError;

use crate::tensor::Distribution;

/// What went wrong on the mesh.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MeshError {
    /// An allocation does not fit in a device's remaining memory.
    #[error(
        "device {device} is out of memory: {needed} bytes needed, {available} available \
         ({in_use} of {budget} in use)"
    )]
    OutOfMemory {
        /// Device (row-major index).
        device: usize,
        /// Bytes requested.
        needed: u64,
        /// Bytes still free on the device.
        available: u64,
        /// Bytes already in use.
        in_use: u64,
        /// The device's budget.
        budget: u64,
    },
    /// A device index outside the mesh.
    #[error("device {device} is outside the mesh of {devices} devices")]
    DeviceOutOfRange {
        /// Device asked for.
        device: usize,
        /// Devices in the mesh.
        devices: usize,
    },
    /// A per-device list has the wrong length.
    #[error("expected one shard per device ({expected}), got {got}")]
    DeviceCount {
        /// Devices in the mesh.
        expected: usize,
        /// Entries supplied.
        got: usize,
    },
    /// Shards that must agree in shape or dtype do not.
    #[error("{op}: {detail}")]
    ShardMismatch {
        /// Operation that checked the shards.
        op: &'static str,
        /// What differs.
        detail: String,
    },
    /// A dimension does not split into equal parts.
    #[error("{op}: dim {dim} of size {size} does not split into {parts} equal parts; pad it first")]
    NotDivisible {
        /// Operation.
        op: &'static str,
        /// Tensor dimension.
        dim: usize,
        /// Its size.
        size: usize,
        /// Parts asked for.
        parts: usize,
    },
    /// A tensor dimension that does not exist.
    #[error("{op}: dim {dim} is out of range for rank {rank}")]
    InvalidDim {
        /// Operation.
        op: &'static str,
        /// Dimension asked for.
        dim: usize,
        /// Tensor rank.
        rank: usize,
    },
    /// A mapper or composer that does not fit the mesh or tensor.
    #[error("{op}: {detail}")]
    InvalidArgument {
        /// Operation.
        op: &'static str,
        /// What is wrong.
        detail: String,
    },
    /// A block received a tensor with another distribution than its contract states.
    #[error("{context}: expected a {expected} mesh tensor, got {got}")]
    Contract {
        /// Where the contract is stated.
        context: &'static str,
        /// Distribution the block takes.
        expected: Distribution,
        /// Distribution it got.
        got: Distribution,
    },
    /// A ring algorithm needs the link from the last device back to the first.
    #[error(
        "the ring algorithm needs a ring topology on {devices} devices (no link {last} -> 0 in a \
         linear topology): use Algorithm::Line or Topology::Ring"
    )]
    NoRingLink {
        /// Devices in the mesh.
        devices: usize,
        /// Last device.
        last: usize,
    },
    /// Another rank could not be reached, or sent something this rank did not expect.
    #[error("rank {rank}: {detail}")]
    Transport {
        /// The rank at the other end.
        rank: usize,
        /// What happened.
        detail: String,
    },
    /// A device hosted by another rank (this process holds only its own devices' shards).
    #[error("device {device} is hosted by another rank (this rank hosts devices {first}..{end})")]
    NotLocal {
        /// Device asked for.
        device: usize,
        /// First device of this rank.
        first: usize,
        /// One past its last device.
        end: usize,
    },
    /// The devices do not split into equal contiguous blocks over the ranks.
    #[error("{devices} devices do not split into equal blocks over {ranks} ranks")]
    RankSplit {
        /// Devices in the mesh.
        devices: usize,
        /// Ranks in the job.
        ranks: usize,
    },
    /// A mesh tensor allocated on another mesh.
    #[error("the mesh tensor was allocated on another mesh")]
    ForeignTensor,
    /// A device-local op failed.
    #[error(transparent)]
    Op(#[from] OpError),
}
