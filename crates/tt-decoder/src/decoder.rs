//! One decoder layer on the mesh (any family), and the attention cores of prefill and decode.
//!
//! Sharding contract of a layer (checked at the block boundaries):
//! - in: the residual stream `x [M, H]`, replicated (M = tokens of a prefill, users of a decode);
//! - attention: a [`tt_mesh::ColumnParallelLinear`] gives every device its own heads' Q, K and V
//!   side by side (`[M, (nq_d + 2 nkv_d) dh]`, the layout `nlp_create_qkv_heads` takes); each
//!   device writes its KV heads into its cache shard and attends; the `o_proj`
//!   [`RowParallelLinear`] multiplies by each device's columns and ends in its all_reduce, so the
//!   result is replicated again;
//! - MLP: the gate/up column-parallel layer gives every device its slices, `up * silu(gate)`, and
//!   the `down_proj` row-parallel layer sums over the mesh;
//! - out: `x + attn + mlp`, replicated.
//!
//! Each kind of work runs in a TRACE span (`tt_mesh::trace`): `norm`, `qkv`, `heads`, `rope`,
//! `kv_write`, `attention`, `o_proj` (with its `all_reduce`), `residual`, `gate_up`, `act`,
//! `down` (with its `all_reduce`); every family's layer maps to these same kinds.
//!
//! Replicated work (the norms, the residual adds) gives the same numbers on every device, so it is
//! computed once and shared by every device's storage.

use tt_mesh::trace::spread_when;
use tt_mesh::{Mesh, RowParallelLinear, op_span};
use tt_numerics::StorageFormat;
use tt_ops::{
    Fidelity, KvCache as LayerCache, SdpaDecodeOptions, SdpaOptions, Tensor, add_inplace,
    nlp_concat_heads, nlp_concat_heads_decode, nlp_create_qkv_heads, nlp_create_qkv_heads_decode,
    rms_norm, rotary_embedding, rotary_embedding_decode, round_to_device_format,
    scaled_dot_product_attention, silu_mul_rounded, team,
};

use crate::error::{Error, Result};
use crate::weights::LayerWeights;

/// What one forward call feeds the attention core.
pub(crate) enum AttentionStep<'a> {
    /// A prompt for one user at positions `0 .. M`; `cos`/`sin` are `[M, dh]`.
    Prefill {
        /// Cache row (user) to fill.
        user: usize,
        /// Rotary tables for positions `0 .. M`.
        cos: &'a Tensor,
        /// Rotary tables for positions `0 .. M`.
        sin: &'a Tensor,
    },
    /// One token per user; `positions[b]` is user b's position (`-1` skips the user);
    /// `cos`/`sin` are `[B, dh]`, row `b` for user `b`.
    Decode {
        /// Per-user positions.
        positions: &'a [i32],
        /// Per-user rotary rows.
        cos: &'a Tensor,
        /// Per-user rotary rows.
        sin: &'a Tensor,
    },
}

/// Everything a layer needs besides its weights and cache.
pub(crate) struct LayerContext<'a> {
    pub mesh: &'a Mesh,
    pub fidelity: Fidelity,
    /// The block-float format K and V are rounded to before entering the cache, if any.
    pub kv_format: Option<StorageFormat>,
    pub eps: f32,
    pub sliding_window: Option<usize>,
    /// Query and KV heads per device.
    pub heads: (usize, usize),
}

impl LayerContext<'_> {
    /// A row-parallel layer's replicated output, rounded.
    fn row_parallel(&self, layer: &RowParallelLinear, xs: &[Tensor]) -> Result<Tensor> {
        let sum = layer.forward(self.mesh, xs)?;
        Ok(self.fidelity.round(sum)?)
    }

    fn round(&self, t: Tensor) -> Result<Tensor> {
        Ok(self.fidelity.round(t)?)
    }

    /// K or V (`[.., dh]`) as the cache stores it: rounded to the cache's block-float format
    /// (16 values of a head row per exponent) when it has one.
    fn to_cache(&self, t: &Tensor) -> Result<Tensor> {
        let mut t = t.contiguous();
        let Some(format) = self.kv_format else {
            return Ok(t);
        };
        let dh = t.shape().last().copied().unwrap_or(1).max(1);
        round_to_device_format(t.as_f32_mut()?, dh, format)?;
        Ok(t)
    }

    /// One decoder layer: `x [M, H]` (replicated) is updated in place.
    ///
    /// Every kind of work runs in its span ([`tt_mesh::trace`]), made here on the step's
    /// thread and entered by whichever thread runs a device's part.
    pub fn forward(
        &self,
        w: &LayerWeights,
        cache: &mut [LayerCache],
        x: &mut Tensor,
        step: &AttentionStep<'_>,
    ) -> Result<()> {
        let m = x.dim(0)?;
        let h = op_span!("norm")
            .in_scope(|| self.round(rms_norm(x, w.attn_norm.replica()?, self.eps)?))?;

        // Attention: column-parallel QKV, local heads, row-parallel o_proj.
        let qkvs = op_span!("qkv").in_scope(|| w.qkv.forward(&h))?;
        if qkvs.len() != cache.len() {
            return Err(missing_output());
        }
        let spans = AttentionSpans::new(cache.len() == 1);
        // QKV arrives as the device wrote it: an output written as bf16 is already on the bf16
        // grid, where rounding to this fidelity changes no value, so that pass is skipped.
        let qkv_rounded = w.qkv.settings.output == StorageFormat::Bf16;
        let mut per_device: Vec<(&mut LayerCache, Vec<Tensor>)> =
            cache.iter_mut().zip(qkvs).collect();
        let attns = team::map_mut(&mut per_device, |_, (layer_cache, parts)| {
            let [qkv] =
                <[Tensor; 1]>::try_from(std::mem::take(parts)).map_err(|_| missing_output())?;
            let qkv = if qkv_rounded {
                qkv
            } else {
                spans.heads.in_scope(|| self.round(qkv))?
            };
            let attn = self.attention(qkv, layer_cache, step, &spans)?;
            spans
                .heads
                .in_scope(|| Ok(attn.reshape(&[m, attn.numel() / m.max(1)])?))
        })
        .into_iter()
        .collect::<Result<Vec<_>>>()?;
        let attn_out = op_span!("o_proj").in_scope(|| self.row_parallel(&w.o, &attns))?;
        self.residual(x, &attn_out)?;

        // MLP: column-parallel gate/up, row-parallel down.
        let h = op_span!("norm")
            .in_scope(|| self.round(rms_norm(x, w.mlp_norm.replica()?, self.eps)?))?;
        let mut gate_ups = op_span!("gate_up").in_scope(|| w.gate_up.forward(&h))?;
        let act = op_span!("act");
        let acts = team::map_mut(&mut gate_ups, |_, parts| {
            act.in_scope(|| {
                let [gate, mut up] =
                    <[Tensor; 2]>::try_from(std::mem::take(parts)).map_err(|_| missing_output())?;
                silu_mul_rounded(&gate, &mut up, self.fidelity)?;
                Ok(up)
            })
        })
        .into_iter()
        .collect::<Result<Vec<_>>>()?;
        drop(act);
        let mlp_out = op_span!("down").in_scope(|| self.row_parallel(&w.down, &acts))?;
        self.residual(x, &mlp_out)
    }

    /// `x += y`, rounded to the activations' fidelity.
    fn residual(&self, x: &mut Tensor, y: &Tensor) -> Result<()> {
        let _span = op_span!("residual").entered();
        add_inplace(x, y)?;
        Ok(self.fidelity.apply(x)?)
    }

    /// The attention core of one device: heads, rotary, cache write, sdpa, concat.
    /// `qkv [M, (nq + 2 nkv) dh]` -> `[M, nq dh]`.
    fn attention(
        &self,
        qkv: Tensor,
        cache: &mut LayerCache,
        step: &AttentionStep<'_>,
        spans: &AttentionSpans,
    ) -> Result<Tensor> {
        let (nq, nkv) = self.heads;
        let m = qkv.dim(0)?;
        let width = qkv.dim(1)?;
        match step {
            AttentionStep::Prefill { user, cos, sin } => {
                // [1, 1, M, (nq + 2 nkv) dh] -> Q [1, nq, M, dh], K/V [1, nkv, M, dh]
                let (q, k, v) = spans
                    .heads
                    .in_scope(|| nlp_create_qkv_heads(&qkv.reshape(&[1, 1, m, width])?, nq, nkv))?;
                // A prefill's rotary splits its rows over the pool (outside a team).
                let (q, k) = spans.rope.in_scope(|| {
                    spread_when(spans.alone, || -> Result<(Tensor, Tensor)> {
                        Ok((
                            self.round(rotary_embedding(&q, cos, sin, 0)?)?,
                            self.round(rotary_embedding(&k, cos, sin, 0)?)?,
                        ))
                    })
                })?;
                // The cache keeps what the device's packer writes; prefill attends to the K and
                // V it computed (as tt_transformers' prefill does).
                spans.kv_write.in_scope(|| -> Result<()> {
                    match self.kv_format {
                        Some(_) => {
                            cache.fill(&self.to_cache(&k)?, &self.to_cache(&v)?, *user, 0)?
                        }
                        None => cache.fill(&k, &v, *user, 0)?,
                    }
                    Ok(())
                })?;
                let opts = SdpaOptions {
                    causal: true,
                    scale: None,
                    sliding_window: self.sliding_window,
                    q_offset: 0,
                };
                let out = spans.attention.in_scope(|| {
                    spread_when(spans.alone, || {
                        self.round(scaled_dot_product_attention(&q, &k, &v, &opts)?)
                    })
                })?;
                // [1, nq, M, dh] -> [1, 1, M, nq dh]
                spans.heads.in_scope(|| Ok(nlp_concat_heads(&out)?))
            }
            AttentionStep::Decode {
                positions,
                cos,
                sin,
            } => {
                // [1, 1, B, (nq + 2 nkv) dh] -> Q [1, B, nq, dh], K/V [1, B, nkv, dh]
                let (q, k, v) = spans.heads.in_scope(|| {
                    nlp_create_qkv_heads_decode(&qkv.reshape(&[1, 1, m, width])?, nq, nkv)
                })?;
                let rows: Vec<i32> = positions
                    .iter()
                    .enumerate()
                    .map(|(b, &p)| if p < 0 { -1 } else { b as i32 })
                    .collect();
                let (q, k) = spans.rope.in_scope(|| -> Result<(Tensor, Tensor)> {
                    Ok((
                        self.round(rotary_embedding_decode(&q, cos, sin, &rows)?)?,
                        self.round(rotary_embedding_decode(&k, cos, sin, &rows)?)?,
                    ))
                })?;
                spans.kv_write.in_scope(|| -> Result<()> {
                    match self.kv_format {
                        Some(_) => {
                            cache.update(&self.to_cache(&k)?, &self.to_cache(&v)?, positions)?
                        }
                        None => cache.update(&k, &v, positions)?,
                    }
                    Ok(())
                })?;
                let opts = SdpaDecodeOptions {
                    scale: None,
                    sliding_window: self.sliding_window,
                };
                // A decode's attention splits over the team when one device runs it alone.
                let out = spans.attention.in_scope(|| {
                    spread_when(spans.alone, || {
                        self.round(cache.attend(&q, positions, &opts)?)
                    })
                })?;
                // [1, B, nq, dh] -> [1, 1, B, nq dh]
                spans.heads.in_scope(|| Ok(nlp_concat_heads_decode(&out)?))
            }
        }
    }
}

/// The spans of one layer's attention core, made on the step's thread and entered by every
/// device's part.
struct AttentionSpans {
    /// Splitting QKV into heads and concatenating them back (`nlp_*_heads`).
    heads: tracing::Span,
    /// Rotary embedding of Q and K.
    rope: tracing::Span,
    /// Writing K and V into the cache (rounded to its format).
    kv_write: tracing::Span,
    /// Scaled dot-product attention.
    attention: tracing::Span,
    /// Whether one device runs alone (on the step's thread, its kernels spread over the pool).
    alone: bool,
}

impl AttentionSpans {
    fn new(alone: bool) -> Self {
        Self {
            heads: op_span!("heads"),
            rope: op_span!("rope"),
            kv_write: op_span!("kv_write"),
            attention: op_span!("attention"),
            alone,
        }
    }
}

fn missing_output() -> Error {
    Error::Internal("a column-parallel projection returned the wrong number of outputs".into())
}

/// The head counts of every device must agree (the plan guarantees it); returns them.
pub(crate) fn uniform_heads(per_device: &[(usize, usize)]) -> Result<(usize, usize)> {
    let first = per_device.first().copied().unwrap_or((0, 0));
    if per_device.iter().any(|&h| h != first) {
        return Err(Error::Internal(format!(
            "devices hold different head counts: {per_device:?}"
        )));
    }
    Ok(first)
}
