//! Reading only what this process's devices hold, when the mesh spans several ranks.
//!
//! In one process the loader maps the checkpoint's files and every device's shard is a view of
//! the mapping (or a copy of the whole matrix, to be packed). A rank of a multi-process mesh
//! must not bring the other ranks' weights into its memory, and a mapping made resident holds
//! the whole file. So on a rank every matrix is read with `pread` into a buffer of the matrix's
//! full shape of which only this rank's devices' rows or columns ([`Part`]) are written: the rest
//! is zero pages the kernel never backs, because nothing touches them. The shards are then views
//! of that buffer exactly as they are views of the mapping in one process, so every device
//! computes with the same numbers in the same layout.

use std::ops::Range;

use half::bf16;
use tt_hf::Checkpoint;
use tt_hf::checkpoint::Dtype;
use tt_mesh::Mesh;
use tt_numerics::{OpSettings, StorageFormat};
use tt_ops::Tensor;
use tt_shard::{Plan, WeightKind};

use crate::config::DecoderConfig;
use crate::error::{Error, Result};
use crate::names::LayerTensor;

/// The part of a matrix this rank's devices hold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Part {
    /// The whole matrix (a replicated tensor).
    All,
    /// These row ranges.
    Rows(Vec<Range<usize>>),
    /// These column ranges, of every row.
    Cols(Vec<Range<usize>>),
}

/// The rows (or columns, for `o_proj` and `down_proj`) of layer tensor `t` that the devices of
/// this rank take, as the loader's views will take them: the plan's shard ranges, or for a plan
/// with padded heads the rows (columns) of each real head the devices' head sources name.
pub(crate) fn layer_part(
    mesh: &Mesh,
    plan: &Plan,
    config: &DecoderConfig,
    t: LayerTensor,
) -> Result<Part> {
    let dh = config.head_dim;
    let local = mesh.local_devices();
    let heads = |d: usize| plan.device_heads(d);
    let head_ranges = |base: usize, sources: &[Option<usize>]| -> Vec<Range<usize>> {
        sources
            .iter()
            .flatten()
            .map(|h| base + h * dh..base + (h + 1) * dh)
            .collect()
    };
    if plan.heads().is_padded() {
        let (q_size, kv_size) = (config.q_size(), config.kv_size());
        let mut rows = Vec::new();
        for d in local.clone() {
            let h = heads(d)?;
            match t {
                LayerTensor::QkvProj => {
                    rows.extend(head_ranges(0, &h.q_sources));
                    rows.extend(head_ranges(q_size, &h.kv_sources));
                    rows.extend(head_ranges(q_size + kv_size, &h.kv_sources));
                }
                LayerTensor::QProj => rows.extend(head_ranges(0, &h.q_sources)),
                LayerTensor::KProj | LayerTensor::VProj => {
                    rows.extend(head_ranges(0, &h.kv_sources));
                }
                LayerTensor::OProj => rows.extend(head_ranges(0, &h.q_sources)),
                _ => {}
            }
        }
        match t {
            LayerTensor::OProj => return Ok(Part::Cols(rows)),
            LayerTensor::QkvProj | LayerTensor::QProj | LayerTensor::KProj | LayerTensor::VProj => {
                return Ok(Part::Rows(rows));
            }
            _ => {}
        }
    }
    let (kinds, by_columns): (&[WeightKind], bool) = match t {
        LayerTensor::QkvProj => (&[WeightKind::Q, WeightKind::K, WeightKind::V], false),
        LayerTensor::QProj => (&[WeightKind::Q], false),
        LayerTensor::KProj => (&[WeightKind::K], false),
        LayerTensor::VProj => (&[WeightKind::V], false),
        LayerTensor::GateUpProj => (&[WeightKind::Gate, WeightKind::Up], false),
        LayerTensor::GateProj => (&[WeightKind::Gate], false),
        LayerTensor::UpProj => (&[WeightKind::Up], false),
        LayerTensor::OProj => (&[WeightKind::O], true),
        LayerTensor::DownProj => (&[WeightKind::Down], true),
        _ => return Ok(Part::All),
    };
    kind_part(mesh, plan, kinds, by_columns)
}

/// The rows (or columns) of `kinds` the devices of this rank take.
pub(crate) fn kind_part(
    mesh: &Mesh,
    plan: &Plan,
    kinds: &[WeightKind],
    by_columns: bool,
) -> Result<Part> {
    let mut ranges = Vec::new();
    for d in mesh.local_devices() {
        for &kind in kinds {
            let shard = plan.shard_of(kind, d)?;
            ranges.push(if by_columns {
                shard.cols()
            } else {
                shard.rows()
            });
        }
    }
    Ok(if by_columns {
        Part::Cols(ranges)
    } else {
        Part::Rows(ranges)
    })
}

/// Whether a matrix kept under `settings` is held as f32 (the device path packs from f32; an
/// exact f32 op on an F32 checkpoint keeps the file's numbers) rather than bf16.
fn held_as_f32(stored: Dtype, settings: &OpSettings) -> bool {
    !settings.is_exact_math() || (settings.weights == StorageFormat::F32 && stored == Dtype::F32)
}

/// Matrix `name` at its full shape with only `part` (all of it, or rows) read from the file (by
/// `pread`); the rest is zeros never touched. Columns are read by [`read_columns`]. Held as the one-process loader holds it under `settings` (f32 or
/// bf16), so the shards' numbers are the same.
pub(crate) fn read_part<C>(
    ckpt: &Checkpoint<C>,
    name: &str,
    part: &Part,
    settings: &OpSettings,
) -> Result<Tensor> {
    let info = ckpt.tensor_info(name)?;
    let shape = info.shape.clone();
    if held_as_f32(info.dtype, settings) {
        let data = read_into(ckpt, name, &shape, part, vec![0f32; numel(&shape)])?;
        Ok(Tensor::from_f32(data, &shape)?)
    } else {
        // `vec![0u16; n]` is allocated zeroed by the OS (untouched pages stay unbacked); bf16
        // has the same size and alignment as u16 and every bit pattern is a valid bf16.
        let zeros: Vec<bf16> = bytemuck::allocation::cast_vec(vec![0u16; numel(&shape)]);
        let data = read_into(ckpt, name, &shape, part, zeros)?;
        Ok(Tensor::from_bf16(data, &shape)?)
    }
}

/// Columns `first ..` of a matrix, held as one compact `[rows, n]` tensor: the whole matrix in
/// one process (`first` = 0), the span of this rank's devices' columns on a rank (so that a
/// row-parallel weight whose rows are shorter than a page costs only its own columns).
pub(crate) struct HeldColumns {
    held: Tensor,
    first: usize,
}

impl HeldColumns {
    /// The whole matrix.
    pub(crate) fn whole(t: Tensor) -> Self {
        Self { held: t, first: 0 }
    }

    /// The whole matrix, if every column is held.
    pub(crate) fn as_whole(&self) -> Option<&Tensor> {
        (self.first == 0).then_some(&self.held)
    }

    /// Columns `start .. start + len` of the matrix (a strided view).
    pub(crate) fn columns(&self, start: usize, len: usize) -> Result<Tensor> {
        let at = start.checked_sub(self.first).ok_or_else(|| {
            Error::Internal(format!(
                "column {start} is not held (this rank holds columns from {})",
                self.first
            ))
        })?;
        Ok(self.held.columns(at, len)?)
    }

    /// Rows of the matrix.
    pub(crate) fn rows(&self) -> Result<usize> {
        Ok(self.held.dim(0)?)
    }

    /// Element type.
    pub(crate) fn dtype(&self) -> tt_ops::DType {
        self.held.dtype()
    }
}

/// The span of `part`'s column ranges of matrix `name`, read by `pread` as a compact tensor
/// (held as [`read_part`] holds it).
pub(crate) fn read_columns<C>(
    ckpt: &Checkpoint<C>,
    name: &str,
    part: &Part,
    settings: &OpSettings,
) -> Result<HeldColumns> {
    let info = ckpt.tensor_info(name)?;
    let Part::Cols(ranges) = part else {
        return Ok(HeldColumns::whole(read_part(ckpt, name, part, settings)?));
    };
    let &[rows, cols] = info.shape.as_slice() else {
        return Err(Error::Internal(format!(
            "columns of {name} {:?}, which is not a matrix",
            info.shape
        )));
    };
    let first = ranges.iter().map(|r| r.start).min().unwrap_or(0);
    let end = ranges.iter().map(|r| r.end).max().unwrap_or(0).min(cols);
    let span = first..end.max(first);
    let shape = [rows, span.len()];
    let held = if held_as_f32(info.dtype, settings) {
        Tensor::from_f32(ckpt.read_block_vec::<f32>(name, 0..rows, span)?, &shape)?
    } else {
        Tensor::from_bf16(ckpt.read_block_vec::<bf16>(name, 0..rows, span)?, &shape)?
    };
    Ok(HeldColumns { held, first })
}

fn numel(shape: &[usize]) -> usize {
    shape.iter().product()
}

/// Reads `part` of `name` (shape `shape`) into `buf`, a row-major buffer of the whole tensor.
fn read_into<C, T: tt_hf::checkpoint::Element>(
    ckpt: &Checkpoint<C>,
    name: &str,
    shape: &[usize],
    part: &Part,
    mut buf: Vec<T>,
) -> Result<Vec<T>> {
    let cols = match shape {
        [_, cols] => *cols,
        _ if *part == Part::All => buf.len(),
        _ => {
            return Err(Error::Internal(format!(
                "a part of {name} {shape:?}, which is not a matrix"
            )));
        }
    };
    let rows = buf.len() / cols.max(1);
    let check = |r: &Range<usize>, len: usize| {
        if r.start > r.end || r.end > len {
            Err(Error::Internal(format!(
                "{name} {shape:?}: range {r:?} is outside the tensor"
            )))
        } else {
            Ok(())
        }
    };
    match part {
        Part::All => ckpt.read_flat(name, 0..buf.len(), &mut buf)?,
        Part::Rows(ranges) => {
            for r in ranges {
                check(r, rows)?;
                let flat = r.start * cols..r.end * cols;
                ckpt.read_flat(name, flat.clone(), &mut buf[flat])?;
            }
        }
        Part::Cols(_) => {
            return Err(Error::Internal(format!(
                "{name}: columns are read compact, by read_columns"
            )));
        }
    }
    Ok(buf)
}
