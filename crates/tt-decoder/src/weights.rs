//! The checkpoint's tensors, split into the shards the plan gives each device.
//!
//! Each device receives only its part: its own heads' Q, K and V rows (of the fused `qkv_proj`
//! or of `q_proj`, `k_proj`, `v_proj`), its own rows of gate and of up (fused or apart), its
//! column block of `o_proj` and `down_proj`, and its vocab rows of `lm_head`. Replicated tensors
//! (embedding, norms) are shared by every device's storage while their bytes are counted on each
//! device.
//!
//! How a matrix is kept follows its op class's settings in the precision preset
//! ([`crate::precision`]):
//! - settings a host matmul computes exactly keep host tensors: with f32 weights the
//!   checkpoint's own precision (an F32 checkpoint keeps f32 copies, so the reference path
//!   computes with the file's own numbers), else bf16. A BF16 checkpoint's bf16 tensors are not
//!   copied at all: each shard is a view (a row block, or a column block read with its row
//!   stride) of the tensor in the memory-mapped file ([`Checkpoint::bf16_tensor`]), so loading
//!   costs what reading the file from the page cache costs, and the process holds one copy of
//!   the weights (the page cache's). That is why Q, K and V (and gate and up) are separate
//!   per-device tensors rather than re-fused ones. When the devices' rows cover the fused
//!   checkpoint matrix exactly once, [`FusedRows`] keeps a handle on the whole matrix so the
//!   decoder can run every device's projection in one pass;
//! - any other settings read the matrix as an f32 copy (by `pread`, not through the mapping),
//!   split it the same way, and pack each device's shard in the op's storage format (bfloat8_b,
//!   bfloat4_b, or bf16 tiles for a bf16 op with device arithmetic); the copy is dropped once
//!   packed, so the process holds the packed bytes only.
//!
//! With a packed-weight cache ([`crate::packed_cache`]) the packed layers are instead mapped from
//! the cache's files when they are sound (their checkpoint tensors are then not read at all),
//! and written there after a load that packed them.
//!
//! On a rank of a mesh spread over several processes nothing is mapped: every matrix is read by
//! `pread`, and only the rows or columns of this rank's devices (`crate::local_read`), so a rank
//! holds its own devices' weights plus the replicated tensors.

use std::ops::Range;

use rayon::prelude::*;
use tt_hf::Checkpoint;
use tt_mesh::{
    ColumnParallelLinear, ColumnWeights, DeviceShards, Distribution, FusedRows, Mesh, MeshMapper,
    MeshTensor, OutputGrouping, RowParallelLinear, RowWeights,
};
use tt_numerics::{OpClass, OpSettings, StorageFormat};
use tt_ops::{Fidelity, Tensor};
use tt_shard::{GateUpLayout, Plan, QkvLayout, WeightKind};

use crate::config::DecoderConfig;
use crate::error::Result;
use crate::local_read::{HeldColumns, Part, kind_part, layer_part, read_columns, read_part};
use crate::names::{LayerTensor, TensorName, expected_tensors};
use crate::packed_cache::{LM_HEAD, Mapped, PackedCache, Session, layer_base};
use crate::padded_heads::padded_attention;
use crate::precision::Numerics;

/// One decoder layer's weights on the mesh.
pub struct LayerWeights {
    /// `[H]` f32, replicated.
    pub attn_norm: MeshTensor,
    /// Q, K and V: per device its heads' rows, outputs side by side (`[M, (nq_d + 2 nkv_d) dh]`).
    pub qkv: ColumnParallelLinear,
    /// `o_proj`: per device the input columns of its query heads; ends in an all_reduce.
    pub o: RowParallelLinear,
    /// `[H]` f32, replicated.
    pub mlp_norm: MeshTensor,
    /// Gate and up: per device its rows of each, returned apart.
    pub gate_up: ColumnParallelLinear,
    /// `down_proj`: per device its input columns; ends in an all_reduce.
    pub down: RowParallelLinear,
}

/// `full` with every device's rows of `kinds`, if those rows cover `full` exactly once and this
/// process hosts every device (a rank of a multi-process mesh touches only its own rows).
fn covering_rows(
    mesh: &Mesh,
    plan: &Plan,
    full: &Tensor,
    kinds: &[WeightKind],
) -> Result<Option<FusedRows>> {
    if mesh.ranks() > 1 {
        return Ok(None);
    }
    let parts = (0..plan.num_devices())
        .map(|d| {
            kinds
                .iter()
                .map(|&kind| Ok(plan.shard_of(kind, d)?.rows()))
                .collect::<Result<Vec<_>>>()
        })
        .collect::<Result<Vec<_>>>()?;
    let mut all: Vec<&Range<usize>> = parts.iter().flatten().collect();
    all.sort_by_key(|r| r.start);
    let mut next = 0;
    let exact = all.iter().all(|r| {
        let ok = r.start == next;
        next = r.end;
        ok
    }) && next == full.dim(0)?;
    Ok((exact && full.is_contiguous()).then(|| FusedRows {
        full: full.clone(),
        parts,
    }))
}

/// Every weight of the model, placed on the mesh as the plan says.
pub struct ModelWeights {
    /// `[V, H]` bf16, replicated.
    pub embed: MeshTensor,
    /// Decoder layers.
    pub layers: Vec<LayerWeights>,
    /// `[H]` f32, replicated.
    pub final_norm: MeshTensor,
    /// `[V_d, H]` per device (the device's real vocab rows; padding rows are not stored), one
    /// output.
    pub lm_head: ColumnParallelLinear,
}

/// A 1-D tensor read whole as f32.
fn read_vector<C>(ckpt: &Checkpoint<C>, name: &str, len: usize) -> Result<Tensor> {
    let mut data = vec![0.0f32; len];
    ckpt.read_flat(name, 0..len, &mut data)?;
    Ok(Tensor::from_f32(data, &[len])?)
}

/// One shard per device of this process, each a view of `full`, placed on the mesh.
pub(crate) fn sharded(
    mesh: &Mesh,
    dim: usize,
    view: impl Fn(usize) -> Result<Tensor>,
) -> Result<MeshTensor> {
    let shards = mesh.local_devices().map(view).collect::<Result<Vec<_>>>()?;
    Ok(MeshTensor::from_shards(
        mesh,
        shards,
        Distribution::Sharded { dim },
    )?)
}

/// Rows `rows` of a matrix (a view).
fn row_block(full: &Tensor, rows: Range<usize>) -> Result<Tensor> {
    Ok(full.narrow(0, rows.start, rows.len())?)
}

/// Each device's rows of `kind` in `full`, as a mesh tensor sharded along dim 0.
fn rows_of(mesh: &Mesh, plan: &Plan, full: &Tensor, kind: WeightKind) -> Result<MeshTensor> {
    sharded(mesh, 0, |d| row_block(full, plan.shard_of(kind, d)?.rows()))
}

/// `full` itself if device `d`'s columns of `kind` are its `d`-th equal block, in device order,
/// and this process hosts every device.
fn in_device_blocks(
    mesh: &Mesh,
    plan: &Plan,
    full: &Tensor,
    kind: WeightKind,
) -> Result<Option<Tensor>> {
    if mesh.ranks() > 1 {
        return Ok(None);
    }
    let devices = plan.num_devices();
    let width = full.dim(1)?;
    let blocks = (0..devices)
        .map(|d| Ok(plan.shard_of(kind, d)?.cols()))
        .collect::<Result<Vec<_>>>()?;
    let kb = width / devices.max(1);
    let equal = kb * devices == width
        && blocks
            .iter()
            .enumerate()
            .all(|(d, c)| c.start == d * kb && c.len() == kb);
    Ok((equal && full.is_contiguous()).then(|| full.clone()))
}

/// Each device's columns of `kind` in `full`, as a mesh tensor sharded along dim 1.
fn columns_of(
    mesh: &Mesh,
    plan: &Plan,
    full: &HeldColumns,
    kind: WeightKind,
) -> Result<MeshTensor> {
    sharded(mesh, 1, |d| {
        let cols = plan.shard_of(kind, d)?.cols();
        full.columns(cols.start, cols.len())
    })
}

/// A weight matrix read for `settings`: with f32 weights at the precision the checkpoint stores
/// it (an F32 checkpoint is the reference's own numbers), with exact bf16 weights as bf16 (a view
/// of the mapped file for a BF16 checkpoint), and for the device's arithmetic as an f32 copy to
/// be packed (read with `pread`, so the mapping's pages are not made resident).
fn matrix<C>(ckpt: &Checkpoint<C>, name: &str, settings: &OpSettings) -> Result<Tensor> {
    if !settings.is_exact_math() {
        let shape = ckpt.tensor_info(name)?.shape.clone();
        return Ok(Tensor::from_f32(ckpt.read_all::<f32>(name)?, &shape)?);
    }
    Ok(match settings.weights {
        StorageFormat::F32 => ckpt.tensor_as_stored(name)?,
        _ => ckpt.bf16_tensor(name)?,
    })
}

/// The op class whose settings a layer tensor is kept under.
fn op_class(t: LayerTensor) -> OpClass {
    match t {
        LayerTensor::QkvProj | LayerTensor::QProj | LayerTensor::KProj | LayerTensor::VProj => {
            OpClass::Qkv
        }
        LayerTensor::OProj => OpClass::O,
        LayerTensor::GateUpProj | LayerTensor::GateProj | LayerTensor::UpProj => OpClass::Ff1Ff3,
        _ => OpClass::Ff2,
    }
}

/// A column-parallel layer of packed shards (from the cache).
fn packed_column(
    shards: DeviceShards,
    grouping: OutputGrouping,
    settings: OpSettings,
) -> ColumnParallelLinear {
    ColumnParallelLinear {
        weights: ColumnWeights::Device(shards),
        grouping,
        settings,
    }
}

/// A row-parallel layer of packed shards (from the cache).
fn packed_row(shards: DeviceShards, settings: OpSettings) -> RowParallelLinear {
    RowParallelLinear {
        weights: RowWeights::Device(shards),
        settings,
    }
}

/// A column-parallel layer over `kinds`, each read from its own tensor or all from one fused
/// tensor (`fused`), as the checkpoint stores them.
fn column_parallel(
    mesh: &Mesh,
    plan: &Plan,
    kinds: &[WeightKind],
    fused: Option<Tensor>,
    separate: impl Fn(usize) -> Result<Tensor>,
    grouping: OutputGrouping,
) -> Result<ColumnParallelLinear> {
    let outputs = kinds
        .iter()
        .enumerate()
        .map(|(k, &kind)| match &fused {
            Some(full) => rows_of(mesh, plan, full, kind),
            None => rows_of(mesh, plan, &separate(k)?, kind),
        })
        .collect::<Result<Vec<_>>>()?;
    let fused = match &fused {
        Some(full) => covering_rows(mesh, plan, full, kinds)?,
        None => None,
    };
    Ok(ColumnParallelLinear {
        weights: ColumnWeights::Host { outputs, fused },
        grouping,
        settings: OpSettings::EXACT,
    })
}

/// A row-parallel layer over `kind` from the checkpoint matrix `full` (its columns held).
fn row_parallel(
    mesh: &Mesh,
    plan: &Plan,
    full: &HeldColumns,
    kind: WeightKind,
) -> Result<RowParallelLinear> {
    let blocks = match full.as_whole() {
        Some(whole) => in_device_blocks(mesh, plan, whole, kind)?,
        None => None,
    };
    Ok(RowParallelLinear {
        weights: RowWeights::Host {
            weight: columns_of(mesh, plan, full, kind)?,
            blocks,
        },
        settings: OpSettings::EXACT,
    })
}

impl LayerWeights {
    /// Layer `i`'s shards of every device.
    fn load<C>(
        ckpt: &Checkpoint<C>,
        config: &DecoderConfig,
        plan: &Plan,
        mesh: &Mesh,
        numerics: &Numerics,
        i: usize,
        cache: Option<&Mapped>,
    ) -> Result<Self> {
        let hidden = config.hidden_size;
        // The packed shards of op `op` (`outputs` per device) mapped from the cache, if any.
        let cached = |op: &str, outputs: usize| match cache {
            Some(c) => c.shards(mesh, &layer_base(i, op), outputs),
            None => Ok(None),
        };
        let name = |t: LayerTensor| config.family.tensor_name(TensorName::Layer(i, t));
        let replicate = |t: Tensor| mesh.distribute(&t, MeshMapper::Replicate);
        // On a rank of a multi-process mesh only this rank's rows are read, and of a
        // row-parallel weight the span of its devices' columns, compact.
        let settings = |t: LayerTensor| numerics.op(op_class(t));
        let part = |t: LayerTensor| layer_part(mesh, plan, config, t);
        let read = |t: LayerTensor| match mesh.ranks() {
            1 => matrix(ckpt, &name(t), &settings(t)),
            _ => read_part(ckpt, &name(t), &part(t)?, &settings(t)),
        };
        let read_cols = |t: LayerTensor| match mesh.ranks() {
            1 => Ok(HeldColumns::whole(read(t)?)),
            _ => read_columns(ckpt, &name(t), &part(t)?, &settings(t)),
        };
        let (qkv_settings, o_settings) = (numerics.op(OpClass::Qkv), numerics.op(OpClass::O));
        let (qkv_cached, o_cached) = (cached("qkv", 3)?, cached("o", 1)?);
        let (qkv, o) = match (qkv_cached, o_cached) {
            (Some(q), Some(o)) => (
                packed_column(q, OutputGrouping::Concat, qkv_settings),
                packed_row(o, o_settings),
            ),
            // Both are built from the same head sources.
            (q, o) if plan.heads().is_padded() => {
                let (qkv, o_layer) = padded_attention(mesh, plan, config, &read, &read_cols)?;
                (
                    match q {
                        Some(q) => packed_column(q, OutputGrouping::Concat, qkv_settings),
                        None => qkv.with_settings(mesh, qkv_settings)?,
                    },
                    match o {
                        Some(o) => packed_row(o, o_settings),
                        None => o_layer.with_settings(mesh, o_settings)?,
                    },
                )
            }
            (q, o) => {
                let qkv = match q {
                    Some(q) => packed_column(q, OutputGrouping::Concat, qkv_settings),
                    None => {
                        let qkv_fused = match config.qkv_layout {
                            QkvLayout::Fused => Some(read(LayerTensor::QkvProj)?),
                            QkvLayout::Separate => None,
                        };
                        let separate_qkv =
                            [LayerTensor::QProj, LayerTensor::KProj, LayerTensor::VProj];
                        column_parallel(
                            mesh,
                            plan,
                            &[WeightKind::Q, WeightKind::K, WeightKind::V],
                            qkv_fused,
                            |k| read(separate_qkv[k]),
                            OutputGrouping::Concat,
                        )?
                        .with_settings(mesh, qkv_settings)?
                    }
                };
                let o = match o {
                    Some(o) => packed_row(o, o_settings),
                    None => {
                        row_parallel(mesh, plan, &read_cols(LayerTensor::OProj)?, WeightKind::O)?
                            .with_settings(mesh, o_settings)?
                    }
                };
                (qkv, o)
            }
        };
        let gate_up_settings = numerics.op(OpClass::Ff1Ff3);
        let gate_up = match cached("gate_up", 2)? {
            Some(s) => packed_column(s, OutputGrouping::Apart, gate_up_settings),
            None => {
                let gate_up_fused = match config.gate_up_layout {
                    GateUpLayout::Fused => Some(read(LayerTensor::GateUpProj)?),
                    GateUpLayout::Separate => None,
                };
                let separate_gate_up = [LayerTensor::GateProj, LayerTensor::UpProj];
                column_parallel(
                    mesh,
                    plan,
                    &[WeightKind::Gate, WeightKind::Up],
                    gate_up_fused,
                    |k| read(separate_gate_up[k]),
                    OutputGrouping::Apart,
                )?
                .with_settings(mesh, gate_up_settings)?
            }
        };
        let down_settings = numerics.op(OpClass::Ff2);
        let down = match cached("down", 1)? {
            Some(s) => packed_row(s, down_settings),
            None => row_parallel(
                mesh,
                plan,
                &read_cols(LayerTensor::DownProj)?,
                WeightKind::Down,
            )?
            .with_settings(mesh, down_settings)?,
        };
        Ok(Self {
            attn_norm: replicate(read_vector(
                ckpt,
                &name(LayerTensor::InputLayerNorm),
                hidden,
            )?)?,
            qkv,
            o,
            mlp_norm: replicate(read_vector(
                ckpt,
                &name(LayerTensor::PostAttentionLayerNorm),
                hidden,
            )?)?,
            gate_up,
            down,
        })
    }
}

impl ModelWeights {
    /// Places every tensor of `ckpt` on `mesh` following `plan` (views of the mapped file for a
    /// BF16 checkpoint; layers in parallel, so their pages are made resident on every core).
    pub fn load<C: Sync>(
        ckpt: &Checkpoint<C>,
        config: &DecoderConfig,
        plan: &Plan,
        mesh: &Mesh,
        numerics: &Numerics,
    ) -> Result<Self> {
        Self::load_with_cache(ckpt, config, plan, mesh, numerics, &PackedCache::Off)
    }

    /// [`Self::load`], with the packed weights mapped from the packed-weight cache `cache` when
    /// its files for this load are sound, else packed and then written there.
    pub fn load_with_cache<C: Sync>(
        ckpt: &Checkpoint<C>,
        config: &DecoderConfig,
        plan: &Plan,
        mesh: &Mesh,
        numerics: &Numerics,
        cache: &PackedCache,
    ) -> Result<Self> {
        let session = match cache.root() {
            Some(root) => Session::new(&root, ckpt, config, plan, mesh, numerics)?,
            None => None,
        };
        let mapped = session.as_ref().and_then(Session::open);
        let weights = Self::load_from(ckpt, config, plan, mesh, numerics, mapped.as_ref())?;
        if let (Some(session), None) = (&session, &mapped) {
            session.store(&weights);
        }
        Ok(weights)
    }

    /// [`Self::load`], the packed layers taken from `cache` when given.
    fn load_from<C: Sync>(
        ckpt: &Checkpoint<C>,
        config: &DecoderConfig,
        plan: &Plan,
        mesh: &Mesh,
        numerics: &Numerics,
        cache: Option<&Mapped>,
    ) -> Result<Self> {
        let hidden = config.hidden_size;
        ckpt.check_tensors(&expected_tensors(config))?;
        let name = |t: TensorName| config.family.tensor_name(t);
        let replicate = |t: Tensor| mesh.distribute(&t, MeshMapper::Replicate);

        // The embedding table is a lookup, kept as the activations are stored.
        let embed_settings = match numerics.activations() {
            Fidelity::F32 => OpSettings::EXACT,
            Fidelity::Bf16 => numerics.preset().get(OpClass::Activations).to_owned(),
        };
        // With packed weights the process should hold the packed bytes only: the embedding is
        // then a view of its own bytes, read on demand and given back after each lookup
        // (`Model::embed`), not a view that makes its whole file resident, nor a copy (~0.2 s of
        // a warm load and ~200 MB for Phi-3-mini; `Checkpoint::bf16_tensor_on_demand`).
        let packs = [
            OpClass::Qkv,
            OpClass::O,
            OpClass::Ff1Ff3,
            OpClass::Ff2,
            OpClass::LmHead,
        ]
        .iter()
        .any(|&op| !numerics.op(op).is_exact_math());
        let embed_full = match (packs, embed_settings.weights) {
            (true, StorageFormat::Bf16) => ckpt.bf16_tensor_on_demand(&name(TensorName::Embed))?,
            _ if mesh.ranks() > 1 => {
                read_part(ckpt, &name(TensorName::Embed), &Part::All, &embed_settings)?
            }
            _ => matrix(ckpt, &name(TensorName::Embed), &embed_settings)?,
        };
        let embed = replicate(embed_full.clone())?;
        let final_norm = replicate(read_vector(ckpt, &name(TensorName::FinalNorm), hidden)?)?;
        let layers = (0..config.num_hidden_layers)
            .into_par_iter()
            .map(|i| LayerWeights::load(ckpt, config, plan, mesh, numerics, i, cache))
            .collect::<Result<Vec<_>>>()?;
        let head_settings = numerics.op(OpClass::LmHead);
        let lm_head = match cache {
            Some(c) => c.shards(mesh, LM_HEAD, 1)?,
            None => None,
        };
        let lm_head = match lm_head {
            Some(s) => packed_column(s, OutputGrouping::Concat, head_settings),
            None => Self::lm_head(
                ckpt,
                config,
                plan,
                mesh,
                embed_full,
                &embed_settings,
                head_settings,
            )?,
        };
        Ok(Self {
            embed,
            layers,
            final_norm,
            lm_head,
        })
    }

    /// The LM head read from the checkpoint (`embed_full` is the embedding as read, its own
    /// tensor when tied and kept alike).
    fn lm_head<C>(
        ckpt: &Checkpoint<C>,
        config: &DecoderConfig,
        plan: &Plan,
        mesh: &Mesh,
        embed_full: Tensor,
        embed_settings: &OpSettings,
        head_settings: OpSettings,
    ) -> Result<ColumnParallelLinear> {
        let name = |t: TensorName| config.family.tensor_name(t);
        let head_name = match config.tie_word_embeddings {
            true => name(TensorName::Embed),
            false => name(TensorName::LmHead),
        };
        let head_full = match (config.tie_word_embeddings, head_settings == *embed_settings) {
            (true, true) => embed_full,
            _ if mesh.ranks() > 1 => {
                let rows = kind_part(mesh, plan, &[WeightKind::LmHead], false)?;
                read_part(ckpt, &head_name, &rows, &head_settings)?
            }
            _ => matrix(ckpt, &head_name, &head_settings)?,
        };
        Ok(ColumnParallelLinear {
            weights: ColumnWeights::Host {
                outputs: vec![rows_of(mesh, plan, &head_full, WeightKind::LmHead)?],
                fused: None,
            },
            grouping: OutputGrouping::Concat,
            settings: OpSettings::EXACT,
        }
        .with_settings(mesh, head_settings)?)
    }
}
