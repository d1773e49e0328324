//! Per-weight plans: placement, the checkpoint ranges each device takes, shapes and bytes.

use std::ops::Range;

use serde::{Deserialize, Serialize};

use crate::dims::{DecoderDims, GateUpLayout, QkvLayout};
use crate::error::PlanError;
use crate::heads::HeadPartition;
use crate::placement::{Placement, SourceTensor, WeightKind};
use crate::profile::DeviceProfile;
use crate::split::EvenSplit;

/// The part of a checkpoint tensor one device holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceShard {
    /// Device (row-major index).
    pub device: usize,
    /// One index range per dimension of the source tensor. A shard's data is the block these
    /// ranges select; where a range is shorter than the weight's `device_shape` (a vocab that
    /// does not divide), the rest of the shard is zero padding.
    ///
    /// Head-sliced weights (Q, K, V rows; O columns) in a padded plan
    /// ([`HeadPartition::is_padded`]): the range is the block of the device's real heads
    /// ([`DeviceHeads::q_heads`] or [`DeviceHeads::kv_heads`] times `head_dim`), so `numel`
    /// counts real data, while the shard itself holds `heads_per_device` (or
    /// `kv_heads_per_device`) heads placed per [`DeviceHeads::q_sources`] /
    /// [`DeviceHeads::kv_sources`]: `head_dim` rows (O: columns) per local head, zeros for
    /// `None`. The sources are the ground truth; the block is not a contiguous prefix there.
    ///
    /// [`DeviceHeads::q_heads`]: crate::heads::DeviceHeads::q_heads
    /// [`DeviceHeads::kv_heads`]: crate::heads::DeviceHeads::kv_heads
    /// [`DeviceHeads::q_sources`]: crate::heads::DeviceHeads::q_sources
    /// [`DeviceHeads::kv_sources`]: crate::heads::DeviceHeads::kv_sources
    pub ranges: Vec<Range<usize>>,
}

impl DeviceShard {
    /// Range of the first dimension (rows of an `[out, in]` weight).
    pub fn rows(&self) -> Range<usize> {
        self.ranges.first().cloned().unwrap_or(0..0)
    }

    /// Range of the last dimension (columns of an `[out, in]` weight; the only dim of a 1-D one).
    pub fn cols(&self) -> Range<usize> {
        self.ranges.last().cloned().unwrap_or(0..0)
    }

    /// Elements of real (checkpoint) data in the shard.
    pub fn numel(&self) -> u64 {
        self.ranges.iter().map(|r| r.len() as u64).product()
    }
}

/// How one weight kind is laid out over the mesh (identical for every layer).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WeightPlan {
    /// Which weight.
    pub kind: WeightKind,
    /// The checkpoint tensor its data comes from.
    pub source: SourceTensor,
    /// Shape of that whole checkpoint tensor (e.g. all fused `[Q|K|V]` rows).
    pub source_shape: Vec<usize>,
    /// Placement across the devices.
    pub placement: Placement,
    /// Dim of the source tensor that is split (`None` when replicated).
    pub split_dim: Option<usize>,
    /// Instances in the model (the layer count for per-layer weights, else 1).
    pub count: usize,
    /// Shape of this weight alone, unsharded and unpadded (e.g. the Q part of the fused tensor).
    pub logical_shape: Vec<usize>,
    /// Shape of each device's shard (the same on every device; includes padding to a multiple
    /// of the device count, not tile padding).
    pub device_shape: Vec<usize>,
    /// `device_shape` with tile padding (what a device stores).
    pub padded_shape: Vec<usize>,
    /// Devices holding each element of the weight (1 = split, N = replicated). For K and V of
    /// a padded plan: the most devices holding one KV head (others may be on fewer).
    pub copies: usize,
    /// Whether the weight has its own checkpoint tensor (false for a tied LM head).
    pub in_checkpoint: bool,
    /// Per device, row-major order.
    pub shards: Vec<DeviceShard>,
    /// Bytes one device stores for all `count` instances (padded shape).
    pub stored_bytes_per_device: u64,
    /// Bytes of this weight in the checkpoint (0 when not `in_checkpoint`).
    pub checkpoint_bytes: u64,
    /// Padding bytes summed over all devices (stored minus real data).
    pub padding_bytes: u64,
    /// Extra copies of real data summed over all devices (a tied LM head counts fully).
    pub replication_bytes: u64,
}

impl WeightPlan {
    /// Bytes of real checkpoint data device `device` holds (all instances).
    pub fn data_bytes(&self, device: usize, dtype_bytes: usize) -> u64 {
        self.shards.get(device).map_or(0, |s| {
            s.numel()
                .saturating_mul(self.count as u64)
                .saturating_mul(dtype_bytes as u64)
        })
    }
}

/// What a weight is before its bytes are computed.
struct Spec {
    kind: WeightKind,
    source: SourceTensor,
    source_shape: Vec<usize>,
    placement: Placement,
    logical_shape: Vec<usize>,
    device_shape: Vec<usize>,
    copies: usize,
    in_checkpoint: bool,
    shards: Vec<DeviceShard>,
}

/// Every weight of `dims` planned over `heads.devices.len()` devices.
pub(crate) fn plan_weights(
    dims: &DecoderDims,
    heads: &HeadPartition,
    intermediate: &EvenSplit,
    vocab: &EvenSplit,
    profile: &DeviceProfile,
) -> Result<Vec<WeightPlan>, PlanError> {
    let n = heads.devices.len();
    let (h, dh, nh, nkv, i, v) = (
        dims.hidden,
        dims.head_dim,
        dims.heads,
        dims.kv_heads,
        dims.intermediate,
        dims.vocab,
    );
    let q_units: Vec<_> = heads.devices.iter().map(|d| d.q_heads.clone()).collect();
    let kv_units: Vec<_> = heads.devices.iter().map(|d| d.kv_heads.clone()).collect();
    let i_units: Vec<_> = (0..n).map(|d| intermediate.range(d)).collect();
    let v_units: Vec<_> = (0..n).map(|d| vocab.range(d)).collect();

    let (qkv_src, q_off, k_off, v_off) = match dims.qkv_layout {
        QkvLayout::Fused => {
            let shape = vec![(nh + 2 * nkv) * dh, h];
            let srcs = [SourceTensor::QkvFused; 3].map(|s| (s, shape.clone()));
            (srcs, 0, nh * dh, (nh + nkv) * dh)
        }
        QkvLayout::Separate => (
            [
                (SourceTensor::Q, vec![nh * dh, h]),
                (SourceTensor::K, vec![nkv * dh, h]),
                (SourceTensor::V, vec![nkv * dh, h]),
            ],
            0,
            0,
            0,
        ),
    };
    let (gu_src, gate_off, up_off) = match dims.gate_up_layout {
        GateUpLayout::Fused => {
            let shape = vec![2 * i, h];
            (
                [SourceTensor::GateUpFused; 2].map(|s| (s, shape.clone())),
                0,
                i,
            )
        }
        GateUpLayout::Separate => (
            [
                (SourceTensor::Gate, vec![i, h]),
                (SourceTensor::Up, vec![i, h]),
            ],
            0,
            0,
        ),
    };
    let [q_src, k_src, v_src] = qkv_src;
    let [g_src, u_src] = gu_src;
    let lm_src = if dims.tied_embeddings {
        (SourceTensor::Embedding, vec![v, h])
    } else {
        (SourceTensor::LmHead, vec![v, h])
    };

    let q = || Units {
        ranges: &q_units,
        per_device: heads.heads_per_device,
        total: nh,
        unit: dh,
    };
    let kv = || Units {
        ranges: &kv_units,
        per_device: heads.kv_heads_per_device,
        total: nkv,
        unit: dh,
    };
    let mlp = || Units {
        ranges: &i_units,
        per_device: intermediate.per_part,
        total: i,
        unit: 1,
    };
    let vocab_units = Units {
        ranges: &v_units,
        per_device: vocab.per_part,
        total: v,
        unit: 1,
    };
    let copies = heads.kv_copies;
    let specs = vec![
        replicated(
            WeightKind::Embedding,
            SourceTensor::Embedding,
            vec![v, h],
            n,
        ),
        replicated(WeightKind::AttnNorm, SourceTensor::AttnNorm, vec![h], n),
        column(WeightKind::Q, q_src, q_off, q(), h, 1),
        column(WeightKind::K, k_src, k_off, kv(), h, copies),
        column(WeightKind::V, v_src, v_off, kv(), h, copies),
        row(WeightKind::O, SourceTensor::O, h, q()),
        replicated(WeightKind::MlpNorm, SourceTensor::MlpNorm, vec![h], n),
        column(WeightKind::Gate, g_src, gate_off, mlp(), h, 1),
        column(WeightKind::Up, u_src, up_off, mlp(), h, 1),
        row(WeightKind::Down, SourceTensor::Down, h, mlp()),
        replicated(WeightKind::FinalNorm, SourceTensor::FinalNorm, vec![h], n),
        Spec {
            in_checkpoint: !dims.tied_embeddings,
            ..column(WeightKind::LmHead, lm_src, 0, vocab_units, h, 1)
        },
    ];
    specs
        .into_iter()
        .map(|s| finish(s, dims, profile))
        .collect()
}

fn replicated(kind: WeightKind, source: SourceTensor, shape: Vec<usize>, n: usize) -> Spec {
    let full: Vec<_> = shape.iter().map(|&d| 0..d).collect();
    Spec {
        kind,
        source,
        source_shape: shape.clone(),
        placement: Placement::Replicated,
        logical_shape: shape.clone(),
        device_shape: shape,
        copies: n,
        in_checkpoint: true,
        shards: (0..n)
            .map(|device| DeviceShard {
                device,
                ranges: full.clone(),
            })
            .collect(),
    }
}

/// A dimension split in units (heads of `head_dim` rows, or single rows/columns).
struct Units<'a> {
    /// Units each device takes.
    ranges: &'a [Range<usize>],
    /// Units in each device's shard (uniform, may exceed a range's length when padded).
    per_device: usize,
    /// Units in the whole weight.
    total: usize,
    /// Rows or columns per unit.
    unit: usize,
}

/// Output dim split: device `d` takes rows `offset + ranges[d] * unit` of the source.
fn column(
    kind: WeightKind,
    (source, source_shape): (SourceTensor, Vec<usize>),
    offset: usize,
    u: Units<'_>,
    cols: usize,
    copies: usize,
) -> Spec {
    Spec {
        kind,
        source,
        source_shape,
        placement: Placement::ColumnParallel,
        logical_shape: vec![u.total * u.unit, cols],
        device_shape: vec![u.per_device * u.unit, cols],
        copies,
        in_checkpoint: true,
        shards: u
            .ranges
            .iter()
            .enumerate()
            .map(|(device, r)| DeviceShard {
                device,
                ranges: vec![offset + r.start * u.unit..offset + r.end * u.unit, 0..cols],
            })
            .collect(),
    }
}

/// Input dim split: device `d` takes columns `ranges[d] * unit` of the source `[rows, total * unit]`.
fn row(kind: WeightKind, source: SourceTensor, rows: usize, u: Units<'_>) -> Spec {
    let shape = vec![rows, u.total * u.unit];
    Spec {
        kind,
        source,
        source_shape: shape.clone(),
        placement: Placement::RowParallel,
        logical_shape: shape,
        device_shape: vec![rows, u.per_device * u.unit],
        copies: 1,
        in_checkpoint: true,
        shards: u
            .ranges
            .iter()
            .enumerate()
            .map(|(device, r)| DeviceShard {
                device,
                ranges: vec![0..rows, r.start * u.unit..r.end * u.unit],
            })
            .collect(),
    }
}

fn too_large(kind: WeightKind) -> PlanError {
    PlanError::TooLarge {
        what: format!("the byte count of weight {kind}"),
    }
}

/// Checked product of `factors`.
pub(crate) fn checked_product(factors: impl IntoIterator<Item = u64>) -> Option<u64> {
    factors
        .into_iter()
        .try_fold(1u64, |acc, f| acc.checked_mul(f))
}

fn finish(s: Spec, dims: &DecoderDims, profile: &DeviceProfile) -> Result<WeightPlan, PlanError> {
    let count = if s.kind.is_per_layer() {
        dims.layers
    } else {
        1
    };
    let per_elem = count as u64 * dims.dtype_bytes as u64;
    let bytes_of = |shape: &[usize]| {
        checked_product(shape.iter().map(|&d| d as u64).chain([per_elem])).ok_or(too_large(s.kind))
    };
    let padded_shape = profile.pad_shape(&s.device_shape);
    let stored = bytes_of(&padded_shape)?;
    let logical = bytes_of(&s.logical_shape)?;
    let n = s.shards.len() as u64;
    let data_total = s
        .shards
        .iter()
        .try_fold(0u64, |acc, sh| {
            acc.checked_add(sh.numel().checked_mul(per_elem)?)
        })
        .ok_or(too_large(s.kind))?;
    let stored_total = stored.checked_mul(n).ok_or(too_large(s.kind))?;
    let checkpoint_bytes = if s.in_checkpoint { logical } else { 0 };
    let split_dim = match s.placement {
        Placement::Replicated => None,
        Placement::ColumnParallel => Some(0),
        Placement::RowParallel => Some(1),
    };
    Ok(WeightPlan {
        kind: s.kind,
        source: s.source,
        source_shape: s.source_shape,
        placement: s.placement,
        split_dim,
        count,
        logical_shape: s.logical_shape,
        device_shape: s.device_shape,
        padded_shape,
        copies: s.copies,
        in_checkpoint: s.in_checkpoint,
        shards: s.shards,
        stored_bytes_per_device: stored,
        checkpoint_bytes,
        padding_bytes: stored_total - data_total.min(stored_total),
        // Real data beyond one copy of the checkpoint tensor (a tied LM head counts fully;
        // KV heads of a padded plan may be on different numbers of devices).
        replication_bytes: data_total.saturating_sub(checkpoint_bytes),
    })
}
