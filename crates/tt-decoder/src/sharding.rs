//! From a model's config to the planner's numbers, and the runtime options of a mesh model.
//!
//! This is the only place where a model's sizes meet `tt-shard`: the model never divides by the
//! device count itself, it asks the [`Plan`] built here for every range it loads.

use std::sync::Arc;

use tt_mesh::{DeviceProfile, MeshShape, Topology, Transport};
use tt_numerics::Preset;
use tt_ops::Fidelity;
use tt_shard::{DecoderDims, Plan, PlanOptions};

use crate::config::DecoderConfig;
use crate::error::Result;
use crate::packed_cache::PackedCache;
use crate::precision::{Numerics, preset_of_fidelity};

/// Bytes per stored weight value: the mesh keeps every matrix in bf16.
pub const WEIGHT_DTYPE_BYTES: usize = 2;

/// How a checkpoint is brought up: mesh, device profile, precision, cache size and where packed
/// weights are cached.
#[derive(Debug, Clone)]
pub struct RuntimeOptions {
    /// Mesh shape (devices in row-major order).
    pub mesh: MeshShape,
    /// Device constraints and memory budget.
    pub profile: DeviceProfile,
    /// Link topology used by the collectives.
    pub topology: Topology,
    /// The numbers the model computes with: a `tt-numerics` preset (`f32`, `bf16`, `seed`,
    /// `accuracy`, `performance`, with overrides). `None` means the preset `fidelity` names.
    pub precision: Option<Preset>,
    /// The `--fidelity` alias: `F32` is the preset `f32`, `Bf16` the preset `bf16`. Used only
    /// when `precision` is `None`.
    pub fidelity: Fidelity,
    /// KV cache length in tokens (checked against device budgets before allocating).
    pub max_seq_len: usize,
    /// Sequences decoded together (KV cache rows).
    pub max_batch: usize,
    /// The ranks hosting the mesh when it spans several processes (MPI ranks, or
    /// [`tt_mesh::ThreadRanks`]): each rank then loads and holds only its own block of devices.
    /// `None`: this process hosts every device.
    pub transport: Option<Arc<dyn Transport>>,
    /// Where a packed preset keeps its packed weights between loads
    /// ([`crate::packed_cache`]): by default `$TT_PHI3_PACKED_CACHE`, else
    /// `~/.cache/tt-phi3/packed`.
    pub packed_cache: PackedCache,
}

impl RuntimeOptions {
    /// A 2x4 mesh of host devices, f32 activations, a 4096-token cache for one sequence.
    pub fn new(mesh: MeshShape) -> Self {
        Self {
            mesh,
            profile: DeviceProfile::host(),
            topology: Topology::Linear,
            precision: None,
            fidelity: Fidelity::F32,
            max_seq_len: 4096,
            max_batch: 1,
            transport: None,
            packed_cache: PackedCache::Default,
        }
    }
}

impl RuntimeOptions {
    /// The preset in force: `precision`, else the one `fidelity` names.
    pub fn preset(&self) -> Preset {
        self.precision
            .clone()
            .unwrap_or_else(|| preset_of_fidelity(self.fidelity))
    }

    /// The preset in force, resolved for the decoder.
    pub fn numerics(&self) -> Result<Numerics> {
        Numerics::new(self.preset())
    }
}

/// The model's sizes as the planner describes a decoder.
pub fn decoder_dims(config: &DecoderConfig) -> DecoderDims {
    DecoderDims {
        hidden: config.hidden_size,
        heads: config.num_attention_heads,
        kv_heads: config.num_key_value_heads,
        head_dim: config.head_dim,
        intermediate: config.intermediate_size,
        vocab: config.vocab_size,
        layers: config.num_hidden_layers,
        dtype_bytes: WEIGHT_DTYPE_BYTES,
        tied_embeddings: config.tie_word_embeddings,
        qkv_layout: config.qkv_layout,
        gate_up_layout: config.gate_up_layout,
    }
}

/// The tensor-parallel plan of `config` under `options` (refuses impossible meshes and budgets).
pub fn plan(config: &DecoderConfig, options: &RuntimeOptions) -> Result<Plan> {
    let plan = Plan::new(
        &decoder_dims(config),
        options.mesh,
        &options.profile,
        PlanOptions {
            seq_len: options.max_seq_len,
            batch: options.max_batch,
        },
    )?;
    Ok(plan)
}
