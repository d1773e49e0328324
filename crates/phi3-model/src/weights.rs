//! The checkpoint's tensors, split into the shards the plan gives each device.
//!
//! Each device receives only its part: its own heads' Q, K and V rows of the fused `qkv_proj`, its
//! own rows of gate and of up in `gate_up_proj`, its column block of `o_proj` and `down_proj`, and
//! its vocab rows of `lm_head`. Replicated tensors (embedding, norms) are shared by every device's
//! storage while their bytes are counted on each device.
//!
//! Every matrix stays bf16 and, for a BF16 checkpoint, is not copied at all: each shard is a view
//! (a row block, or a column block read with its row stride) of the tensor in the memory-mapped
//! file ([`Checkpoint::bf16_tensor`]), so loading costs what reading the file from the page cache
//! costs, and the process holds one copy of the weights (the page cache's). That is why Q, K and
//! V (and gate and up) are separate per-device tensors rather than re-fused ones: a device's Q, K
//! and V rows are three separate runs of the checkpoint tensor. When the devices' rows cover the
//! fused checkpoint matrix exactly once, [`FusedRows`] keeps a handle on the whole matrix so the
//! decoder can run every device's projection in one pass.

use std::ops::Range;

use rayon::prelude::*;
use tt_mesh::{Distribution, Mesh, MeshMapper, MeshTensor};
use tt_ops::Tensor;
use tt_shard::{Plan, WeightKind};

use crate::checkpoint::Checkpoint;
use crate::error::Result;

/// HF tensor names of one decoder layer.
pub struct LayerNames {
    /// `input_layernorm.weight`.
    pub attn_norm: String,
    /// `self_attn.qkv_proj.weight`, rows `[Q | K | V]`.
    pub qkv: String,
    /// `self_attn.o_proj.weight`.
    pub o: String,
    /// `post_attention_layernorm.weight`.
    pub mlp_norm: String,
    /// `mlp.gate_up_proj.weight`, rows `[gate | up]`.
    pub gate_up: String,
    /// `mlp.down_proj.weight`.
    pub down: String,
}

impl LayerNames {
    /// Names of layer `i`.
    pub fn new(i: usize) -> Self {
        let p = format!("model.layers.{i}");
        Self {
            attn_norm: format!("{p}.input_layernorm.weight"),
            qkv: format!("{p}.self_attn.qkv_proj.weight"),
            o: format!("{p}.self_attn.o_proj.weight"),
            mlp_norm: format!("{p}.post_attention_layernorm.weight"),
            gate_up: format!("{p}.mlp.gate_up_proj.weight"),
            down: format!("{p}.mlp.down_proj.weight"),
        }
    }
}

/// HF name of the embedding table.
pub const EMBED: &str = "model.embed_tokens.weight";
/// HF name of the final norm.
pub const FINAL_NORM: &str = "model.norm.weight";
/// HF name of the LM head (absent when tied to the embedding).
pub const LM_HEAD: &str = "lm_head.weight";

/// One decoder layer's weights on the mesh.
pub struct LayerWeights {
    /// `[H]` f32, replicated.
    pub attn_norm: MeshTensor,
    /// `[nq_d * dh, H]` bf16 per device: the device's query rows of `qkv_proj`.
    pub q: MeshTensor,
    /// `[nkv_d * dh, H]` bf16 per device: the device's key rows of `qkv_proj`.
    pub k: MeshTensor,
    /// `[nkv_d * dh, H]` bf16 per device: the device's value rows of `qkv_proj`.
    pub v: MeshTensor,
    /// `[H, nq_d * dh]` bf16 per device: the device's input columns of `o_proj` (a column view).
    pub o: MeshTensor,
    /// `[H]` f32, replicated.
    pub mlp_norm: MeshTensor,
    /// `[I_d, H]` bf16 per device: the device's gate rows of `gate_up_proj`.
    pub gate: MeshTensor,
    /// `[I_d, H]` bf16 per device: the device's up rows of `gate_up_proj`.
    pub up: MeshTensor,
    /// `[H, I_d]` bf16 per device: the device's input columns of `down_proj` (a column view).
    pub down: MeshTensor,
    /// The whole `o_proj`, when device `d` holds exactly its `d`-th equal column block: then all
    /// devices' products can run as one pass over it (`tt_ops::linear_column_blocks`). A host
    /// handle on the same storage as `o`'s views; its bytes are counted through `o`.
    pub o_blocks: Option<Tensor>,
    /// The whole `down_proj` under the same condition as `o_blocks`.
    pub down_blocks: Option<Tensor>,
    /// The whole `qkv_proj`, when the devices' Q, K and V rows cover it exactly once: then all
    /// devices' projections run as one pass over it and each device takes its columns of the
    /// product. A host handle on the same storage as the `q`, `k`, `v` views.
    pub qkv_all: Option<FusedRows>,
    /// The whole `gate_up_proj` under the same condition (parts: gate, then up).
    pub gate_up_all: Option<FusedRows>,
}

/// A column-parallel projection of every device as one matrix: device `d`'s outputs are the
/// columns `parts[d]` of `x @ full^T` (one range per weight kind, in the order the layer uses).
pub struct FusedRows {
    /// The whole checkpoint matrix, `[N, H]`.
    pub full: Tensor,
    /// Per device, its output column ranges.
    pub parts: Vec<Vec<Range<usize>>>,
}

/// `full` with every device's rows of `kinds`, if those rows cover `full` exactly once.
fn covering_rows(plan: &Plan, full: &Tensor, kinds: &[WeightKind]) -> Result<Option<FusedRows>> {
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
    /// `[V_d, H]` bf16 per device (the device's real vocab rows; padding rows are not stored).
    pub lm_head: MeshTensor,
}

/// A 1-D tensor read whole as f32.
fn read_vector(ckpt: &Checkpoint, name: &str, len: usize) -> Result<Tensor> {
    let mut data = vec![0.0f32; len];
    ckpt.read_flat(name, 0..len, &mut data)?;
    Ok(Tensor::from_f32(data, &[len])?)
}

/// One shard per device, each a view of `full`, placed on the mesh.
fn sharded(mesh: &Mesh, dim: usize, view: impl Fn(usize) -> Result<Tensor>) -> Result<MeshTensor> {
    let shards = (0..mesh.num_devices())
        .map(view)
        .collect::<Result<Vec<_>>>()?;
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

/// Columns `cols` of a matrix (a strided view).
fn column_block(full: &Tensor, cols: Range<usize>) -> Result<Tensor> {
    Ok(full.columns(cols.start, cols.len())?)
}

/// Each device's rows of `kind` in `full`, as a mesh tensor sharded along dim 0.
fn rows_of(mesh: &Mesh, plan: &Plan, full: &Tensor, kind: WeightKind) -> Result<MeshTensor> {
    sharded(mesh, 0, |d| row_block(full, plan.shard_of(kind, d)?.rows()))
}

/// `full` itself if device `d`'s columns of `kind` are its `d`-th equal block, in device order.
fn in_device_blocks(plan: &Plan, full: &Tensor, kind: WeightKind) -> Result<Option<Tensor>> {
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
fn columns_of(mesh: &Mesh, plan: &Plan, full: &Tensor, kind: WeightKind) -> Result<MeshTensor> {
    sharded(mesh, 1, |d| {
        column_block(full, plan.shard_of(kind, d)?.cols())
    })
}

impl LayerWeights {
    /// Layer `i`'s shards of every device.
    fn load(ckpt: &Checkpoint, plan: &Plan, mesh: &Mesh, i: usize) -> Result<Self> {
        let names = LayerNames::new(i);
        let hidden = ckpt.config().hidden_size;
        let replicate = |t: Tensor| mesh.distribute(&t, MeshMapper::Replicate);
        let qkv = ckpt.bf16_tensor(&names.qkv)?;
        let o = ckpt.bf16_tensor(&names.o)?;
        let gate_up = ckpt.bf16_tensor(&names.gate_up)?;
        let down = ckpt.bf16_tensor(&names.down)?;
        Ok(Self {
            attn_norm: replicate(read_vector(ckpt, &names.attn_norm, hidden)?)?,
            q: rows_of(mesh, plan, &qkv, WeightKind::Q)?,
            k: rows_of(mesh, plan, &qkv, WeightKind::K)?,
            v: rows_of(mesh, plan, &qkv, WeightKind::V)?,
            o: columns_of(mesh, plan, &o, WeightKind::O)?,
            mlp_norm: replicate(read_vector(ckpt, &names.mlp_norm, hidden)?)?,
            gate: rows_of(mesh, plan, &gate_up, WeightKind::Gate)?,
            up: rows_of(mesh, plan, &gate_up, WeightKind::Up)?,
            down: columns_of(mesh, plan, &down, WeightKind::Down)?,
            o_blocks: in_device_blocks(plan, &o, WeightKind::O)?,
            down_blocks: in_device_blocks(plan, &down, WeightKind::Down)?,
            qkv_all: covering_rows(plan, &qkv, &[WeightKind::Q, WeightKind::K, WeightKind::V])?,
            gate_up_all: covering_rows(plan, &gate_up, &[WeightKind::Gate, WeightKind::Up])?,
        })
    }
}

impl ModelWeights {
    /// Places every tensor of `ckpt` on `mesh` following `plan` (views of the mapped file for a
    /// BF16 checkpoint; layers in parallel, so their pages are made resident on every core).
    pub fn load(ckpt: &Checkpoint, plan: &Plan, mesh: &Mesh) -> Result<Self> {
        let config = ckpt.config();
        let hidden = config.hidden_size;
        ckpt.check_phi3_tensors()?;
        let replicate = |t: Tensor| mesh.distribute(&t, MeshMapper::Replicate);

        let embed_full = ckpt.bf16_tensor(EMBED)?;
        let embed = replicate(embed_full.clone())?;
        let final_norm = replicate(read_vector(ckpt, FINAL_NORM, hidden)?)?;
        let layers = (0..config.num_hidden_layers)
            .into_par_iter()
            .map(|i| LayerWeights::load(ckpt, plan, mesh, i))
            .collect::<Result<Vec<_>>>()?;
        let head_full = if config.tie_word_embeddings {
            embed_full
        } else {
            ckpt.bf16_tensor(LM_HEAD)?
        };
        let lm_head = rows_of(mesh, plan, &head_full, WeightKind::LmHead)?;
        Ok(Self {
            embed,
            layers,
            final_norm,
            lm_head,
        })
    }
}

#[cfg(test)]
mod tests {
    use tt_mesh::MeshShape;

    use super::*;
    use crate::sharding::{RuntimeOptions, plan};

    /// Layer 0 of a fixture checkpoint on a `rows x cols` mesh.
    fn layer0(fixture: &str, rows: usize, cols: usize) -> LayerWeights {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../fixtures")
            .join(fixture);
        let ckpt = Checkpoint::open_dir(&dir).unwrap();
        let options = RuntimeOptions::new(MeshShape::new(rows, cols).unwrap());
        let plan = plan(ckpt.config(), &options).unwrap();
        let mesh = Mesh::new(options.mesh, options.profile.clone(), options.topology);
        LayerWeights::load(&ckpt, &plan, &mesh, 0).unwrap()
    }

    #[test]
    fn fused_projections_cover_every_row_once_or_are_not_used() {
        // 8 query and 8 KV heads on 8 devices: Q, K and V rows partition qkv_proj.
        let w = layer0("phi3-tiny", 2, 4);
        let qkv = w.qkv_all.as_ref().unwrap();
        assert_eq!(qkv.parts.len(), 8);
        let (h, dh) = (qkv.full.dim(1).unwrap(), qkv.full.dim(0).unwrap() / 24);
        assert_eq!(
            qkv.parts[1],
            vec![dh..2 * dh, 9 * dh..10 * dh, 17 * dh..18 * dh]
        );
        let gate_up = w.gate_up_all.as_ref().unwrap();
        let i_d = gate_up.full.dim(0).unwrap() / 16;
        assert_eq!(gate_up.parts[7], vec![7 * i_d..8 * i_d, 15 * i_d..16 * i_d]);
        assert_eq!(gate_up.full.dim(1).unwrap(), h);
        // 2 KV heads on 8 devices: K and V rows are replicated, so the devices' rows overlap and
        // each device multiplies by its own views.
        let w = layer0("phi3-tiny-gqa", 2, 4);
        assert!(w.qkv_all.is_none());
        assert!(w.gate_up_all.is_some());
    }
}
