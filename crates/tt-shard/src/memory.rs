//! Bytes per device: weights, the KV cache shard, and totals over the mesh.

use serde::{Deserialize, Serialize};

use crate::dims::DecoderDims;
use crate::error::PlanError;
use crate::heads::HeadPartition;
use crate::placement::WeightKind;
use crate::profile::DeviceProfile;
use crate::weights::{WeightPlan, checked_product};

/// The KV cache one device holds: per layer a K and a V tensor `[batch, kv_heads, seq, head_dim]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KvCacheShard {
    /// `[batch, kv_heads_per_device, seq_len, head_dim]` of one K (or V) tensor.
    pub shape: Vec<usize>,
    /// `shape` with tile padding on the last two dims.
    pub padded_shape: Vec<usize>,
    /// K and V tensors per device: `2 * layers`.
    pub tensors: usize,
    /// Devices holding each KV head's cache (1 = no replication).
    pub copies: usize,
    /// Bytes per cached token per batch row on one device, all layers, K and V (head_dim padded).
    pub bytes_per_token: u64,
    /// Bytes of the whole cache shard on one device (padded shape).
    pub bytes: u64,
    /// Bytes of one KV head slot of the shard (`bytes / kv_heads_per_device`): what each zero
    /// KV head of a padded plan costs.
    pub bytes_per_head: u64,
}

impl KvCacheShard {
    /// The cache shard for `seq_len` tokens of `batch` rows.
    pub(crate) fn new(
        dims: &DecoderDims,
        heads: &HeadPartition,
        profile: &DeviceProfile,
        seq_len: usize,
        batch: usize,
    ) -> Result<Self, PlanError> {
        let shape = vec![batch, heads.kv_heads_per_device, seq_len, dims.head_dim];
        let padded_shape = profile.pad_shape(&shape);
        let tensors = 2 * dims.layers;
        let per = [tensors as u64, dims.dtype_bytes as u64];
        let too_large = || PlanError::TooLarge {
            what: "the KV cache byte count".to_string(),
        };
        let bytes_per_token = checked_product(
            [heads.kv_heads_per_device as u64, padded_shape[3] as u64]
                .into_iter()
                .chain(per),
        )
        .ok_or_else(too_large)?;
        let bytes = checked_product(padded_shape.iter().map(|&d| d as u64).chain(per))
            .ok_or_else(too_large)?;
        let bytes_per_head = bytes / heads.kv_heads_per_device.max(1) as u64;
        Ok(Self {
            shape,
            padded_shape,
            tensors,
            copies: heads.kv_copies,
            bytes_per_token,
            bytes,
            bytes_per_head,
        })
    }
}

/// Memory use of one device.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceMemory {
    /// Device (row-major index).
    pub device: usize,
    /// Weight bytes stored (tile-padded shards).
    pub weight_bytes: u64,
    /// Of those, real checkpoint data.
    pub weight_data_bytes: u64,
    /// Per-layer weights (all layers).
    pub layer_weight_bytes: u64,
    /// KV cache shard bytes.
    pub kv_cache_bytes: u64,
    /// Of those, the cache of zero KV heads (padded plans; 0 otherwise).
    pub kv_cache_padding_bytes: u64,
    /// Weight bytes of zero heads (their Q, K, V rows and O columns; padded plans, else 0).
    /// Included in `weight_bytes`, not in `weight_data_bytes`.
    pub head_padding_weight_bytes: u64,
    /// Weights plus KV cache.
    pub total_bytes: u64,
    /// The profile's budget (`None` = unbounded).
    pub budget: Option<u64>,
}

/// Weight bytes over the whole mesh: what is stored equals checkpoint + padding + replication.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct WeightTotals {
    /// Bytes of the checkpoint's tensors (unpadded, each once).
    pub checkpoint_bytes: u64,
    /// Padding bytes on all devices (tile padding, padding to a multiple of the devices and
    /// zero heads).
    pub padding_bytes: u64,
    /// Extra copies of checkpoint data on all devices (replicated weights, shared KV heads,
    /// a tied LM head).
    pub replication_bytes: u64,
    /// Weight bytes stored on all devices together.
    pub stored_bytes: u64,
}

fn too_large(what: &str) -> PlanError {
    PlanError::TooLarge {
        what: what.to_string(),
    }
}

/// Memory of every device and totals over the mesh.
pub(crate) fn account(
    weights: &[WeightPlan],
    kv: &KvCacheShard,
    heads: &HeadPartition,
    dims: &DecoderDims,
    profile: &DeviceProfile,
    devices: usize,
) -> Result<(Vec<DeviceMemory>, WeightTotals), PlanError> {
    let sum = |f: &dyn Fn(&WeightPlan) -> u64| {
        weights
            .iter()
            .try_fold(0u64, |a, w| a.checked_add(f(w)))
            .ok_or_else(|| too_large("the weight byte total"))
    };
    let weight_bytes = sum(&|w| w.stored_bytes_per_device)?;
    let layer_weight_bytes = sum(&|w| {
        if w.kind.is_per_layer() {
            w.stored_bytes_per_device
        } else {
            0
        }
    })?;
    // Bytes of one head slot of a head-sliced weight, all layers (exact: heads never straddle a
    // tile, the plan checks head_dim against the tile).
    let per_head = |kind: WeightKind, slots: usize| {
        weights
            .iter()
            .find(|w| w.kind == kind)
            .map_or(0, |w| w.stored_bytes_per_device / slots.max(1) as u64)
    };
    let q_head = per_head(WeightKind::Q, heads.heads_per_device)
        + per_head(WeightKind::O, heads.heads_per_device);
    let kv_head = per_head(WeightKind::K, heads.kv_heads_per_device)
        + per_head(WeightKind::V, heads.kv_heads_per_device);
    let total_bytes = weight_bytes
        .checked_add(kv.bytes)
        .ok_or_else(|| too_large("weights plus KV cache"))?;
    let memory = (0..devices)
        .map(|device| {
            Ok(DeviceMemory {
                device,
                weight_bytes,
                weight_data_bytes: sum(&|w| w.data_bytes(device, dims.dtype_bytes))?,
                layer_weight_bytes,
                kv_cache_bytes: kv.bytes,
                kv_cache_padding_bytes: heads.devices.get(device).map_or(0, |h| {
                    (h.kv_padding() as u64).saturating_mul(kv.bytes_per_head)
                }),
                head_padding_weight_bytes: heads.devices.get(device).map_or(0, |h| {
                    (h.q_padding() as u64 * q_head).saturating_add(h.kv_padding() as u64 * kv_head)
                }),
                total_bytes,
                budget: profile.dram_bytes,
            })
        })
        .collect::<Result<Vec<_>, PlanError>>()?;
    let totals = WeightTotals {
        checkpoint_bytes: sum(&|w| w.checkpoint_bytes)?,
        padding_bytes: sum(&|w| w.padding_bytes)?,
        replication_bytes: sum(&|w| w.replication_bytes)?,
        stored_bytes: weight_bytes
            .checked_mul(devices as u64)
            .ok_or_else(|| too_large("the stored byte total"))?,
    };
    Ok((memory, totals))
}
