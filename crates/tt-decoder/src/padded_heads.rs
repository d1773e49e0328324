//! Attention weights of a plan with padded heads: each device's Q, K and V rows and `o_proj`
//! columns gathered from its head sources, zeros for a padding head (`tt_shard`'s
//! `DeviceHeads::q_sources` / `kv_sources`).

use tt_mesh::{
    ColumnParallelLinear, ColumnWeights, Mesh, MeshTensor, OutputGrouping, RowParallelLinear,
    RowWeights,
};
use tt_numerics::OpSettings;
use tt_ops::Tensor;
use tt_shard::{Plan, QkvLayout};

use crate::config::DecoderConfig;
use crate::error::Result;
use crate::local_read::HeldColumns;
use crate::names::LayerTensor;
use crate::weights::sharded;

/// Rows of the heads `sources` from `full`, whose head `h` starts at row `base + h * dh`
/// (`head_dim` rows each, zeros for a padding head): a view when the heads are consecutive
/// real heads, else a copy.
fn head_rows(full: &Tensor, base: usize, sources: &[Option<usize>], dh: usize) -> Result<Tensor> {
    if let Some(first) = consecutive(sources) {
        return Ok(full.narrow(0, base + first * dh, sources.len() * dh)?);
    }
    let width = full.dim(1)?;
    let pieces = sources
        .iter()
        .map(|s| match s {
            Some(h) => Ok(full.narrow(0, base + h * dh, dh)?.contiguous()),
            None => Ok(Tensor::zeros(&[dh, width], full.dtype())),
        })
        .collect::<Result<Vec<_>>>()?;
    let refs: Vec<&Tensor> = pieces.iter().collect();
    Ok(Tensor::cat(&refs, 0)?)
}

/// Input columns of the query heads `sources` from `o_proj` (`head_dim` columns each, zeros for
/// a padding head): a view when they are consecutive real heads, else a copy.
fn head_columns(full: &HeldColumns, sources: &[Option<usize>], dh: usize) -> Result<Tensor> {
    if let Some(first) = consecutive(sources) {
        return full.columns(first * dh, sources.len() * dh);
    }
    let rows = full.rows()?;
    let pieces = sources
        .iter()
        .map(|s| match s {
            Some(h) => Ok(full.columns(h * dh, dh)?.contiguous()),
            None => Ok(Tensor::zeros(&[rows, dh], full.dtype())),
        })
        .collect::<Result<Vec<_>>>()?;
    let refs: Vec<&Tensor> = pieces.iter().collect();
    Ok(Tensor::cat(&refs, 1)?)
}

/// The first head if `sources` are consecutive real heads.
fn consecutive(sources: &[Option<usize>]) -> Option<usize> {
    let first = (*sources.first()?)?;
    sources
        .iter()
        .enumerate()
        .all(|(i, s)| *s == Some(first + i))
        .then_some(first)
}

/// Attention of a plan with padded heads: each device's Q, K and V rows and `o_proj` columns
/// built from its head sources (zeros for padding heads); no fused pass.
pub(crate) fn padded_attention(
    mesh: &Mesh,
    plan: &Plan,
    config: &DecoderConfig,
    read: &dyn Fn(LayerTensor) -> Result<Tensor>,
    read_cols: &dyn Fn(LayerTensor) -> Result<HeldColumns>,
) -> Result<(ColumnParallelLinear, RowParallelLinear)> {
    let dh = config.head_dim;
    let (q_size, kv_size) = (config.q_size(), config.kv_size());
    // The Q, K and V matrices and the row where head 0 of each starts.
    let (q, k, v) = match config.qkv_layout {
        QkvLayout::Fused => {
            let qkv = read(LayerTensor::QkvProj)?;
            (
                (qkv.clone(), 0),
                (qkv.clone(), q_size),
                (qkv, q_size + kv_size),
            )
        }
        QkvLayout::Separate => (
            (read(LayerTensor::QProj)?, 0),
            (read(LayerTensor::KProj)?, 0),
            (read(LayerTensor::VProj)?, 0),
        ),
    };
    let o = read_cols(LayerTensor::OProj)?;
    let per_device = |f: &dyn Fn(usize) -> Result<Tensor>, dim: usize| -> Result<MeshTensor> {
        sharded(mesh, dim, f)
    };
    let q_rows = per_device(
        &|d| head_rows(&q.0, q.1, &plan.device_heads(d)?.q_sources, dh),
        0,
    )?;
    let k_rows = per_device(
        &|d| head_rows(&k.0, k.1, &plan.device_heads(d)?.kv_sources, dh),
        0,
    )?;
    let v_rows = per_device(
        &|d| head_rows(&v.0, v.1, &plan.device_heads(d)?.kv_sources, dh),
        0,
    )?;
    let o_cols = per_device(
        &|d| head_columns(&o, &plan.device_heads(d)?.q_sources, dh),
        1,
    )?;
    Ok((
        ColumnParallelLinear {
            weights: ColumnWeights::Host {
                outputs: vec![q_rows, k_rows, v_rows],
                fused: None,
            },
            grouping: OutputGrouping::Concat,
            settings: OpSettings::EXACT,
        },
        RowParallelLinear {
            weights: RowWeights::Host {
                weight: o_cols,
                blocks: None,
            },
            settings: OpSettings::EXACT,
        },
    ))
}
