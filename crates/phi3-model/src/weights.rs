//! The checkpoint's tensors, split into the shards the plan gives each device.
//!
//! Each device receives only its part: its own heads' Q, K and V rows (split out of the fused
//! `qkv_proj` and re-fused per device as `[Q_d | K_d | V_d]`), its own slices of gate and of up
//! (re-fused as `[gate_d | up_d]`), its column block of `o_proj` and `down_proj`, and its vocab
//! rows of `lm_head`. Replicated tensors (embedding, norms) are read once and shared by every
//! device's storage while their bytes are counted on each device. Every matrix is stored bf16.

use std::ops::Range;

use half::bf16;
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
    /// `[(nq_d + 2 nkv_d) * dh, H]` bf16 per device: the device's Q, K and V rows.
    pub qkv: MeshTensor,
    /// `[H, nq_d * dh]` bf16 per device: the device's input columns of `o_proj`.
    pub o: MeshTensor,
    /// `[H]` f32, replicated.
    pub mlp_norm: MeshTensor,
    /// `[2 * I_d, H]` bf16 per device: `[gate_d | up_d]`.
    pub gate_up: MeshTensor,
    /// `[H, I_d]` bf16 per device: the device's input columns of `down_proj`.
    pub down: MeshTensor,
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

/// Reads `rows` of several row blocks of a 2-D tensor (all columns in `cols`) into one bf16
/// matrix, blocks stacked in order.
fn read_rows(
    ckpt: &Checkpoint,
    name: &str,
    blocks: &[Range<usize>],
    cols: Range<usize>,
) -> Result<Tensor> {
    let width = cols.len();
    let rows: usize = blocks.iter().map(Range::len).sum();
    let mut data = vec![bf16::ZERO; rows * width];
    let mut at = 0;
    for block in blocks {
        let n = block.len() * width;
        ckpt.read_block(name, block.clone(), cols.clone(), &mut data[at..at + n])?;
        at += n;
    }
    Ok(Tensor::from_bf16(data, &[rows, width])?)
}

/// One block `rows` x `cols` of a 2-D tensor as a bf16 matrix.
fn read_block(
    ckpt: &Checkpoint,
    name: &str,
    rows: Range<usize>,
    cols: Range<usize>,
) -> Result<Tensor> {
    read_rows(ckpt, name, std::slice::from_ref(&rows), cols)
}

/// A 1-D tensor read whole as f32.
fn read_vector(ckpt: &Checkpoint, name: &str, len: usize) -> Result<Tensor> {
    let mut data = vec![0.0f32; len];
    ckpt.read_flat(name, 0..len, &mut data)?;
    Ok(Tensor::from_f32(data, &[len])?)
}

/// One shard per device, built in parallel and placed on the mesh.
fn sharded(
    mesh: &Mesh,
    dim: usize,
    build: impl Fn(usize) -> Result<Tensor> + Sync,
) -> Result<MeshTensor> {
    let shards = (0..mesh.num_devices())
        .into_par_iter()
        .map(&build)
        .collect::<Result<Vec<_>>>()?;
    Ok(MeshTensor::from_shards(
        mesh,
        shards,
        Distribution::Sharded { dim },
    )?)
}

impl ModelWeights {
    /// Loads and shards every tensor of `ckpt` onto `mesh` following `plan`.
    pub fn load(ckpt: &Checkpoint, plan: &Plan, mesh: &Mesh) -> Result<Self> {
        let config = ckpt.config();
        let hidden = config.hidden_size;
        ckpt.check_phi3_tensors()?;
        let replicate = |t: Tensor| mesh.distribute(&t, MeshMapper::Replicate);
        let all = 0..hidden;

        let embed = replicate(read_block(ckpt, EMBED, 0..config.vocab_size, all.clone())?)?;
        let final_norm = replicate(read_vector(ckpt, FINAL_NORM, hidden)?)?;

        let mut layers = Vec::with_capacity(config.num_hidden_layers);
        for i in 0..config.num_hidden_layers {
            let names = LayerNames::new(i);
            let qkv = sharded(mesh, 0, |d| {
                let blocks = [
                    plan.shard_of(WeightKind::Q, d)?.rows(),
                    plan.shard_of(WeightKind::K, d)?.rows(),
                    plan.shard_of(WeightKind::V, d)?.rows(),
                ];
                read_rows(ckpt, &names.qkv, &blocks, all.clone())
            })?;
            let o = sharded(mesh, 1, |d| {
                let cols = plan.shard_of(WeightKind::O, d)?.cols();
                read_block(ckpt, &names.o, 0..hidden, cols)
            })?;
            let gate_up = sharded(mesh, 0, |d| {
                let blocks = [
                    plan.shard_of(WeightKind::Gate, d)?.rows(),
                    plan.shard_of(WeightKind::Up, d)?.rows(),
                ];
                read_rows(ckpt, &names.gate_up, &blocks, all.clone())
            })?;
            let down = sharded(mesh, 1, |d| {
                let cols = plan.shard_of(WeightKind::Down, d)?.cols();
                read_block(ckpt, &names.down, 0..hidden, cols)
            })?;
            layers.push(LayerWeights {
                attn_norm: replicate(read_vector(ckpt, &names.attn_norm, hidden)?)?,
                qkv,
                o,
                mlp_norm: replicate(read_vector(ckpt, &names.mlp_norm, hidden)?)?,
                gate_up,
                down,
            });
        }

        let head_name = if config.tie_word_embeddings {
            EMBED
        } else {
            LM_HEAD
        };
        let lm_head = sharded(mesh, 0, |d| {
            let rows = plan.shard_of(WeightKind::LmHead, d)?.rows();
            read_block(ckpt, head_name, rows, all.clone())
        })?;
        Ok(Self {
            embed,
            layers,
            final_norm,
            lm_head,
        })
    }
}
