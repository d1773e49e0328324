//! Typed errors. Each plan error names the constraint that failed and what to change.

use crate::report::fmt_bytes;

/// A mesh shape string or size that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MeshShapeError {
    /// The text is not `RxC` (e.g. `2x4`) or a plain device count (e.g. `8`).
    #[error("cannot parse mesh shape {text:?}: write rows x cols, e.g. \"2x4\" or \"1x8\"")]
    Parse {
        /// The text given.
        text: String,
    },
    /// A mesh needs at least one row and one column.
    #[error("mesh shape {rows}x{cols} has no devices: rows and cols must both be at least 1")]
    Empty {
        /// Rows given.
        rows: usize,
        /// Columns given.
        cols: usize,
    },
}

/// Why a plan cannot be made, with what to change.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlanError {
    /// A model dimension is zero.
    #[error("model dimension `{name}` is 0: every size in DecoderDims must be at least 1")]
    ZeroDim {
        /// Name of the zero field.
        name: &'static str,
    },
    /// More devices than query heads: some device would hold no real query head, and padding
    /// (which only adds zero heads) cannot change that.
    #[error(
        "a mesh of {devices} devices cannot serve a model with {heads} query heads ({kv_heads} KV \
         heads): every device computes at least one real query head, and padding only adds zero \
         heads. Use a mesh of 1 to {heads} devices (e.g. 1x{heads}); any such mesh works for the \
         heads, whether or not its device count divides {heads} query or {kv_heads} KV heads, \
         because the planner pads each device with zero heads"
    )]
    MoreDevicesThanHeads {
        /// Query heads of the model.
        heads: usize,
        /// Key/value heads of the model.
        kv_heads: usize,
        /// Devices in the mesh.
        devices: usize,
    },
    /// Query heads are not a whole multiple of KV heads, so GQA groups are undefined.
    #[error(
        "{heads} query heads are not a multiple of {kv_heads} KV heads: GQA needs heads % kv_heads == 0"
    )]
    GqaGroups {
        /// Query heads.
        heads: usize,
        /// Key/value heads.
        kv_heads: usize,
    },
    /// Rotary embedding (rotate-half) needs an even head dimension.
    #[error(
        "head_dim {head_dim} is odd: rotary embedding rotates two halves, so head_dim must be even"
    )]
    HeadDimOdd {
        /// Head dimension.
        head_dim: usize,
    },
    /// Under a tiled profile, heads are split on tile boundaries.
    #[error(
        "head_dim {head_dim} is not a multiple of the {tile}-wide tile of profile {profile}: \
         head split/concat ops cut heads on tile boundaries; use the host profile or a model \
         whose head_dim is a multiple of {tile}"
    )]
    HeadDimNotTileAligned {
        /// Head dimension.
        head_dim: usize,
        /// Tile size of the profile.
        tile: usize,
        /// Profile name.
        profile: String,
    },
    /// Under a tiled profile the replicated hidden width must fill whole tiles.
    #[error(
        "hidden size {hidden} is not a multiple of the {tile}-wide tile of profile {profile}: \
         padding hidden would change RMSNorm statistics; use the host profile"
    )]
    HiddenNotTileAligned {
        /// Hidden size.
        hidden: usize,
        /// Tile size of the profile.
        tile: usize,
        /// Profile name.
        profile: String,
    },
    /// Weights plus KV cache exceed one device's memory.
    #[error(
        "device {device} needs {} ({} weights + {} KV cache for {seq_len} tokens x batch {batch}) \
         but profile {profile} has {}: use more devices, a shorter --seq-len or a smaller --batch",
        fmt_bytes(*needed), fmt_bytes(*weights), fmt_bytes(*kv_cache), fmt_bytes(*available)
    )]
    OutOfMemory {
        /// Device index (row-major).
        device: usize,
        /// Bytes needed (weights + KV cache).
        needed: u64,
        /// Bytes the profile offers per device.
        available: u64,
        /// Weight bytes on that device.
        weights: u64,
        /// KV cache bytes on that device.
        kv_cache: u64,
        /// Cache length planned for.
        seq_len: usize,
        /// Batch planned for.
        batch: usize,
        /// Profile name.
        profile: String,
    },
    /// A device index outside the mesh.
    #[error("device {device} is outside the mesh of {devices} devices")]
    DeviceOutOfRange {
        /// Device asked for.
        device: usize,
        /// Devices in the mesh.
        devices: usize,
    },
    /// The plan has no entry for a weight kind (e.g. asking for the tied LM head's own tensor).
    #[error("the plan holds no weight {kind:?}")]
    NoSuchWeight {
        /// Kind asked for.
        kind: crate::placement::WeightKind,
    },
    /// Head slices asked for a weight that is not split by heads.
    #[error(
        "weight {kind} is not split by heads: only q, k, v (rows) and o (columns) have head \
         slices; use the plan's shard ranges for the others"
    )]
    NotHeadSliced {
        /// Kind asked for.
        kind: crate::placement::WeightKind,
    },
    /// A size is beyond what the planner handles (each dimension at most 2^28, at most 65536
    /// devices, byte counts within 64 bits).
    #[error(
        "{what} is too large to plan: use realistic sizes (dimensions up to 2^28, up to 65536 devices)"
    )]
    TooLarge {
        /// What overflowed.
        what: String,
    },
}
