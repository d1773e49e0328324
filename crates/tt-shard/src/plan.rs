//! The 1-D tensor-parallel plan of a decoder over every device of a mesh.
//!
//! Column-parallel: Q, K, V (each device its own heads), gate, up (each device its own slice of
//! both) and the LM head (a vocab slice). Row-parallel: the attention output and MLP down
//! projections, each followed by an all_reduce. Replicated: embedding table and norms. The KV
//! cache is split by KV heads (replicated where devices outnumber KV heads). Head counts that do
//! not divide the mesh are padded with zero heads (see [`crate::heads`]); an intermediate width
//! or vocab that does not divide is padded with zero rows (columns for `down`) at the end.

use std::ops::Range;

use serde::{Deserialize, Serialize};

use crate::collective::CollectiveSummary;
use crate::dims::{DecoderDims, MAX_DIM, QkvLayout};
use crate::error::PlanError;
use crate::heads::{DeviceHeads, HeadPartition};
use crate::memory::{DeviceMemory, KvCacheShard, WeightTotals, account};
use crate::mesh::MeshShape;
use crate::placement::WeightKind;
use crate::profile::DeviceProfile;
use crate::split::EvenSplit;
use crate::weights::{DeviceShard, WeightPlan, plan_weights};

/// Most devices a plan accepts.
pub const MAX_DEVICES: usize = 1 << 16;

/// Runtime sizes the memory check plans for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlanOptions {
    /// KV cache length in tokens.
    pub seq_len: usize,
    /// Sequences decoded together (KV cache rows, rows per decode step).
    pub batch: usize,
}

impl Default for PlanOptions {
    /// 4096 tokens, batch 1.
    fn default() -> Self {
        Self {
            seq_len: 4096,
            batch: 1,
        }
    }
}

/// A validated tensor-parallel plan. Built once by [`Plan::new`]; read by models and reports.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Plan {
    dims: DecoderDims,
    mesh: MeshShape,
    profile: DeviceProfile,
    options: PlanOptions,
    heads: HeadPartition,
    intermediate: EvenSplit,
    vocab: EvenSplit,
    rotary_dim: usize,
    weights: Vec<WeightPlan>,
    kv_cache: KvCacheShard,
    memory: Vec<DeviceMemory>,
    totals: WeightTotals,
    collectives: CollectiveSummary,
}

impl Plan {
    /// Plans `dims` over all devices of `mesh` under `profile`, checking divisibility, layout
    /// constraints and memory (weights plus a KV cache of `options.seq_len` x `options.batch`).
    pub fn new(
        dims: &DecoderDims,
        mesh: MeshShape,
        profile: &DeviceProfile,
        options: PlanOptions,
    ) -> Result<Self, PlanError> {
        let n = mesh.num_devices();
        if n > MAX_DEVICES {
            return Err(PlanError::TooLarge {
                what: format!("a mesh of {n} devices"),
            });
        }
        for (name, v) in [("seq_len", options.seq_len), ("batch", options.batch)] {
            if v == 0 {
                return Err(PlanError::ZeroDim { name });
            }
            if v > MAX_DIM {
                return Err(PlanError::TooLarge {
                    what: format!("{name} = {v}"),
                });
            }
        }
        let heads = HeadPartition::new(dims, n)?;
        if profile.tile_padding {
            if !dims.head_dim.is_multiple_of(profile.tile) {
                return Err(PlanError::HeadDimNotTileAligned {
                    head_dim: dims.head_dim,
                    tile: profile.tile,
                    profile: profile.name.clone(),
                });
            }
            if !dims.hidden.is_multiple_of(profile.tile) {
                return Err(PlanError::HiddenNotTileAligned {
                    hidden: dims.hidden,
                    tile: profile.tile,
                    profile: profile.name.clone(),
                });
            }
        }
        let intermediate = EvenSplit::new(dims.intermediate, n);
        let vocab = EvenSplit::new(dims.vocab, n);
        let weights = plan_weights(dims, &heads, &intermediate, &vocab, profile)?;
        let kv_cache = KvCacheShard::new(dims, &heads, profile, options.seq_len, options.batch)?;
        let (memory, totals) = account(&weights, &kv_cache, &heads, dims, profile, n)?;
        if let Some(available) = profile.dram_bytes
            && let Some(m) = memory.iter().find(|m| m.total_bytes > available)
        {
            return Err(PlanError::OutOfMemory {
                device: m.device,
                needed: m.total_bytes,
                available,
                weights: m.weight_bytes,
                kv_cache: m.kv_cache_bytes,
                seq_len: options.seq_len,
                batch: options.batch,
                profile: profile.name.clone(),
            });
        }
        let collectives = CollectiveSummary::new(
            dims.layers,
            dims.hidden,
            vocab.padded_total(),
            options.batch,
            dims.dtype_bytes,
            n,
        )?;
        Ok(Self {
            dims: dims.clone(),
            mesh,
            profile: profile.clone(),
            options,
            heads,
            intermediate,
            vocab,
            rotary_dim: profile.rotary_dim(dims.head_dim),
            weights,
            kv_cache,
            memory,
            totals,
            collectives,
        })
    }

    /// The model's dimensions.
    pub fn dims(&self) -> &DecoderDims {
        &self.dims
    }

    /// The mesh shape.
    pub fn mesh(&self) -> MeshShape {
        self.mesh
    }

    /// The device profile.
    pub fn profile(&self) -> &DeviceProfile {
        &self.profile
    }

    /// Cache length and batch planned for.
    pub fn options(&self) -> PlanOptions {
        self.options
    }

    /// Devices in the plan (all devices of the mesh).
    pub fn num_devices(&self) -> usize {
        self.mesh.num_devices()
    }

    /// Query/KV head partition.
    pub fn heads(&self) -> &HeadPartition {
        &self.heads
    }

    /// The heads device `device` owns: its real heads and, per local slot, the global head it
    /// holds or `None` for a zero padding head.
    pub fn device_heads(&self, device: usize) -> Result<&DeviceHeads, PlanError> {
        self.heads
            .devices
            .get(device)
            .ok_or(PlanError::DeviceOutOfRange {
                device,
                devices: self.num_devices(),
            })
    }

    /// How the MLP intermediate width splits (padded with zero gate/up rows and down columns at
    /// the end when it does not divide: silu(0) * 0 = 0, so they add nothing).
    pub fn intermediate_split(&self) -> EvenSplit {
        self.intermediate
    }

    /// How the vocab splits (padded to a multiple of the device count when it does not divide).
    pub fn vocab_split(&self) -> EvenSplit {
        self.vocab
    }

    /// Width of the rotary op's input per head (head_dim padded per half to the profile's
    /// rotary multiple; equal to head_dim when unconstrained).
    pub fn rotary_dim(&self) -> usize {
        self.rotary_dim
    }

    /// Every weight's plan, in checkpoint order.
    pub fn weights(&self) -> &[WeightPlan] {
        &self.weights
    }

    /// The plan of weight `kind`.
    pub fn weight(&self, kind: WeightKind) -> Result<&WeightPlan, PlanError> {
        self.weights
            .iter()
            .find(|w| w.kind == kind)
            .ok_or(PlanError::NoSuchWeight { kind })
    }

    /// The checkpoint ranges device `device` takes for weight `kind` (in the coordinates of the
    /// weight's source tensor, e.g. the fused `[Q|K|V]` rows). Models load shards through this
    /// instead of dividing by the device count themselves.
    pub fn shard_of(&self, kind: WeightKind, device: usize) -> Result<&DeviceShard, PlanError> {
        self.weight(kind)?
            .shards
            .get(device)
            .ok_or(PlanError::DeviceOutOfRange {
                device,
                devices: self.num_devices(),
            })
    }

    /// Per local head slot of device `device`'s shard of a head-sliced weight (`Q`, `K`, `V`:
    /// rows; `O`: columns), in slot order: the `head_dim`-long range of the source tensor's
    /// split dim that fills the slot (inside the fused `[Q|K|V]` rows when fused), or `None`
    /// for a zero head. A loader builds the shard slot by slot from these; in an unpadded plan
    /// they tile [`Plan::shard_of`]'s range.
    pub fn head_slices(
        &self,
        kind: WeightKind,
        device: usize,
    ) -> Result<Vec<Option<Range<usize>>>, PlanError> {
        let h = self.device_heads(device)?;
        let d = &self.dims;
        let fused = d.qkv_layout == QkvLayout::Fused;
        let (sources, offset) = match kind {
            WeightKind::Q | WeightKind::O => (&h.q_sources, 0),
            WeightKind::K => (&h.kv_sources, if fused { d.q_dim() } else { 0 }),
            WeightKind::V => (
                &h.kv_sources,
                if fused { d.q_dim() + d.kv_dim() } else { 0 },
            ),
            _ => return Err(PlanError::NotHeadSliced { kind }),
        };
        let dh = d.head_dim;
        Ok(sources
            .iter()
            .map(|s| s.map(|head| offset + head * dh..offset + (head + 1) * dh))
            .collect())
    }

    /// The KV cache shard of each device.
    pub fn kv_cache(&self) -> &KvCacheShard {
        &self.kv_cache
    }

    /// Memory use per device (row-major order).
    pub fn memory(&self) -> &[DeviceMemory] {
        &self.memory
    }

    /// Weight bytes over the whole mesh.
    pub fn totals(&self) -> WeightTotals {
        self.totals
    }

    /// Collectives per token.
    pub fn collectives(&self) -> &CollectiveSummary {
        &self.collectives
    }

    /// The plan as pretty-printed JSON.
    pub fn to_json(&self) -> Result<String, serde_json::Error> {
        serde_json::to_string_pretty(self)
    }
}
