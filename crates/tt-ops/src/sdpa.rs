//! `scaled_dot_product_attention`: prefill attention with streaming (online) softmax.
//!
//! TTNN counterpart: `ttnn.transformer.scaled_dot_product_attention(q, k, v, is_causal, scale,
//! sliding_window_size)` (flash attention; TTNN's chunked variant takes a chunk start, here
//! [`SdpaOptions::q_offset`]).
//! Contract: `q [B, nh, Sq, dh]` (f32), `k`, `v [B, nkv, Sk, dh]` (f32 or bf16, same dtype), GQA when
//! `nh % nkv == 0` (query head `i` reads KV head `i / (nh / nkv)`). Query row `i` sits at position
//! `q_offset + i`. Causal: it sees keys `j <= q_offset + i` (needs `q_offset + Sq <= Sk`); with a
//! sliding window `w` (causal only) keys in `(q_offset + i - w, q_offset + i]`. Non-causal: all `Sk`
//! keys. Scores are `(q . k) * scale`, `scale` defaulting to `1 / sqrt(dh)`. Output f32 `[B, nh, Sq, dh]`.
//!
//! Memory is `O(block)` per work item: each (batch, head, query block) item walks the key blocks its
//! mask allows, keeping a running max, sum and output per query row (flash attention), so nothing of
//! size `Sq * Sk` is ever materialised.
//!
//! Two kernels, chosen per call: on a CPU with AMX-BF16, when Q, K and V are all bf16 values (every
//! preset but `f32`), `dh` is a multiple of 32 and there are at least 16 query rows, the products
//! run on the tile unit (`crate::sdpa_amx`: exact products, f32 sums, as here); otherwise the
//! native kernel below (AVX2 + FMA or portable). `TT_OPS_SDPA=native` keeps the native kernel
//! everywhere (for comparisons; also [`set_native_attention`]); [`attention_counts`] counts the
//! calls of each.

use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};

use rayon::prelude::*;

use crate::error::{OpError, Result};
use crate::simd::{self, Kernel, Lanes};
use crate::tensor::{DType, Tensor};

const OP: &str = "scaled_dot_product_attention";
/// Query rows per work item.
const Q_BLOCK: usize = 32;
/// Key rows per softmax step.
const K_BLOCK: usize = 64;

/// Options of [`scaled_dot_product_attention`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SdpaOptions {
    /// Causal mask.
    pub causal: bool,
    /// Score scale; `None` means `1 / sqrt(dh)`.
    pub scale: Option<f32>,
    /// Sliding window `w` (causal only): position `p` sees keys in `(p - w, p]`.
    pub sliding_window: Option<usize>,
    /// Position of the first query row (chunked prefill over a cache of `Sk` rows).
    pub q_offset: usize,
}

impl Default for SdpaOptions {
    fn default() -> Self {
        Self {
            causal: true,
            scale: None,
            sliding_window: None,
            q_offset: 0,
        }
    }
}

/// Key range `[lo, hi)` visible to a query at position `p`.
#[inline]
pub(crate) fn visible(p: usize, sk: usize, o: &SdpaOptions) -> (usize, usize) {
    if !o.causal {
        return (0, sk);
    }
    let hi = (p + 1).min(sk);
    let lo = o.sliding_window.map_or(0, |w| (p + 1).saturating_sub(w));
    (lo, hi)
}

struct QBlock<'a, E> {
    /// Query rows of this block, `[rows, dh]`.
    q: &'a [f32],
    /// The KV head's keys and values, `[Sk, dh]`.
    k: &'a [E],
    v: &'a [E],
    dh: usize,
    /// Position of the block's first row.
    p0: usize,
    opts: &'a SdpaOptions,
    scale: f32,
    out: &'a mut [f32],
}

impl<E: Lanes> Kernel for QBlock<'_, E> {
    type Out = ();

    #[inline(always)]
    fn run<const FMA: bool>(self) -> Self::Out {
        let dh = self.dh;
        let rows = self.q.len() / dh;
        let sk = self.k.len() / dh;
        let (lo, _) = visible(self.p0, sk, self.opts);
        let (_, hi) = visible(self.p0 + rows - 1, sk, self.opts);
        let mut scores = vec![0.0f32; rows * K_BLOCK];
        let mut state = vec![(f32::NEG_INFINITY, 0.0f32); rows];
        self.out.fill(0.0);
        let ranges: Vec<(usize, usize)> = (0..rows)
            .map(|i| visible(self.p0 + i, sk, self.opts))
            .collect();
        let mut j0 = lo - lo % K_BLOCK;
        while j0 < hi {
            let j1 = (j0 + K_BLOCK).min(hi);
            let n = j1 - j0;
            for (i, qi) in self.q.chunks_exact(dh).enumerate() {
                let (a, b) = ranges[i];
                let s = &mut scores[i * K_BLOCK..i * K_BLOCK + n];
                for (jj, sj) in s.iter_mut().enumerate() {
                    let j = j0 + jj;
                    *sj = if j >= a && j < b {
                        simd::dot::<FMA, E>(qi, &self.k[j * dh..(j + 1) * dh]) * self.scale
                    } else {
                        f32::NEG_INFINITY
                    };
                }
            }
            let vb = &self.v[j0 * dh..j1 * dh];
            for (i, ((m, l), oi)) in state
                .iter_mut()
                .zip(self.out.chunks_exact_mut(dh))
                .enumerate()
            {
                let p = &mut scores[i * K_BLOCK..i * K_BLOCK + n];
                let alpha = simd::online_softmax_step::<FMA>(m, l, p);
                if alpha != 1.0 {
                    simd::scale(alpha, oi);
                }
                // Trim masked (zero) probabilities at both ends of the row.
                let first = p.iter().position(|&x| x != 0.0).unwrap_or(n);
                let last = p.iter().rposition(|&x| x != 0.0).map_or(first, |x| x + 1);
                simd::accumulate_rows::<FMA, E>(&p[first..last], &vb[first * dh..last * dh], oi);
            }
            j0 = j1;
        }
        for (oi, (_, l)) in self.out.chunks_exact_mut(dh).zip(&state) {
            if *l > 0.0 {
                simd::scale(1.0 / l, oi);
            }
        }
    }
}

/// Flash attention of `q [B, nh, Sq, dh]` over `k`, `v [B, nkv, Sk, dh]`; see the module docs.
pub fn scaled_dot_product_attention(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    opts: &SdpaOptions,
) -> Result<Tensor> {
    let [b, nh, sq, dh] = q.dims::<4>().map_err(|_| {
        OpError::shape(OP, format!("q must be [B, nh, S, dh], got {:?}", q.shape()))
    })?;
    let [kb, nkv, sk, kdh] = k.dims::<4>().map_err(|_| {
        OpError::shape(
            OP,
            format!("k must be [B, nkv, S, dh], got {:?}", k.shape()),
        )
    })?;
    if v.shape() != k.shape() || kb != b || kdh != dh || dh == 0 {
        return Err(OpError::shape(
            OP,
            format!(
                "q {:?}, k {:?}, v {:?} do not agree on batch and head_dim",
                q.shape(),
                k.shape(),
                v.shape()
            ),
        ));
    }
    if k.dtype() != v.dtype() {
        return Err(OpError::DType {
            op: OP,
            expected: k.dtype(),
            got: v.dtype(),
        });
    }
    if nkv == 0 || nh % nkv != 0 {
        return Err(OpError::Heads { op: OP, nh, nkv });
    }
    let scale = opts.scale.unwrap_or(1.0 / (dh as f32).sqrt());
    if !scale.is_finite() {
        return Err(OpError::invalid(
            OP,
            format!("scale must be finite, got {scale}"),
        ));
    }
    if let Some(w) = opts.sliding_window
        && (w == 0 || !opts.causal)
    {
        return Err(OpError::invalid(
            OP,
            "a sliding window must be non-zero and needs causal attention",
        ));
    }
    if opts.causal && opts.q_offset.checked_add(sq).is_none_or(|e| e > sk) {
        return Err(OpError::out_of_range(
            OP,
            format!(
                "last query position (q_offset {} + Sq {sq} - 1)",
                opts.q_offset
            ),
            opts.q_offset.saturating_add(sq) as i64 - 1,
            sk,
        ));
    }
    if !opts.causal && sk == 0 && sq > 0 {
        return Err(OpError::shape(
            OP,
            "non-causal attention needs at least one key",
        ));
    }
    let mut out = vec![0.0f32; q.numel()];
    let qv = q.f32_values();
    match k.dtype() {
        DType::F32 => run(
            &qv,
            k.as_f32()?,
            v.as_f32()?,
            [b, nh, sq, dh],
            nkv,
            sk,
            opts,
            scale,
            &mut out,
        ),
        DType::Bf16 => run(
            &qv,
            k.as_bf16()?,
            v.as_bf16()?,
            [b, nh, sq, dh],
            nkv,
            sk,
            opts,
            scale,
            &mut out,
        ),
    }
    Tensor::from_f32(out, q.shape())
}

/// Prefill attention calls per kernel since the process started (take differences around a phase).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AttentionCounts {
    /// Calls on the AMX tile unit.
    pub amx: u64,
    /// Calls on the native kernel.
    pub native: u64,
}

impl AttentionCounts {
    /// The calls made since `earlier`.
    pub fn since(self, earlier: AttentionCounts) -> AttentionCounts {
        AttentionCounts {
            amx: self.amx - earlier.amx,
            native: self.native - earlier.native,
        }
    }
}

static AMX_CALLS: AtomicU64 = AtomicU64::new(0);
static NATIVE_CALLS: AtomicU64 = AtomicU64::new(0);

/// [`scaled_dot_product_attention`]'s calls per kernel so far.
pub fn attention_counts() -> AttentionCounts {
    AttentionCounts {
        amx: AMX_CALLS.load(Ordering::Relaxed),
        native: NATIVE_CALLS.load(Ordering::Relaxed),
    }
}

/// 0 until first read; 1 = any kernel, 2 = the native kernel only.
static NATIVE_ONLY: AtomicU8 = AtomicU8::new(0);

/// Whether every call stays on the native kernel: [`set_native_attention`]'s choice, else
/// `TT_OPS_SDPA=native` (read once).
fn native_only() -> bool {
    match NATIVE_ONLY.load(Ordering::Relaxed) {
        1 => false,
        2 => true,
        _ => {
            let native =
                std::env::var("TT_OPS_SDPA").is_ok_and(|v| v.trim().eq_ignore_ascii_case("native"));
            let code = if native { 2 } else { 1 };
            let _ = NATIVE_ONLY.compare_exchange(0, code, Ordering::Relaxed, Ordering::Relaxed);
            native_only()
        }
    }
}

/// Keeps every call of the process on the native kernel (`true`) or lets the tile unit take the
/// calls it can (`false`), overriding `TT_OPS_SDPA` (benchmarks comparing the kernels).
pub fn set_native_attention(native: bool) {
    NATIVE_ONLY.store(if native { 2 } else { 1 }, Ordering::Relaxed);
}

#[allow(clippy::too_many_arguments)]
fn run<E: Lanes>(
    q: &[f32],
    k: &[E],
    v: &[E],
    [b, nh, sq, dh]: [usize; 4],
    nkv: usize,
    sk: usize,
    opts: &SdpaOptions,
    scale: f32,
    out: &mut [f32],
) {
    if sq == 0 {
        return;
    }
    #[cfg(target_arch = "x86_64")]
    if !native_only() {
        let dims = crate::sdpa_amx::Dims {
            nh,
            sq,
            dh,
            nkv,
            sk,
        };
        if crate::sdpa_amx::attention(q, k, v, dims, opts, scale, out) {
            AMX_CALLS.fetch_add(1, Ordering::Relaxed);
            return;
        }
    }
    NATIVE_CALLS.fetch_add(1, Ordering::Relaxed);
    native(q, k, v, [b, nh, sq, dh], nkv, sk, opts, scale, out);
}

/// The native kernel: work items of [`Q_BLOCK`] query rows, each on the AVX2 + FMA or portable
/// code of [`QBlock`].
#[allow(clippy::too_many_arguments)]
pub(crate) fn native<E: Lanes>(
    q: &[f32],
    k: &[E],
    v: &[E],
    [_, nh, sq, dh]: [usize; 4],
    nkv: usize,
    sk: usize,
    opts: &SdpaOptions,
    scale: f32,
    out: &mut [f32],
) {
    let g = nh / nkv;
    let blocks = sq.div_ceil(Q_BLOCK);
    // Work items: (batch * head, query block); each writes its own rows of `out`.
    let mut tasks: Vec<(usize, usize, &mut [f32])> = Vec::new();
    for (bh, head_out) in out.chunks_mut(sq * dh).enumerate() {
        for (qb, rows) in head_out.chunks_mut(Q_BLOCK * dh).enumerate() {
            tasks.push((bh, qb, rows));
        }
    }
    debug_assert_eq!(tasks.len() % blocks, 0);
    tasks.into_par_iter().for_each(|(bh, qb, rows)| {
        let (bi, h) = (bh / nh, bh % nh);
        let kv = (bi * nkv + h / g) * sk * dh;
        let q0 = (bh * sq + qb * Q_BLOCK) * dh;
        simd::dispatch(QBlock {
            q: &q[q0..q0 + rows.len()],
            k: &k[kv..kv + sk * dh],
            v: &v[kv..kv + sk * dh],
            dh,
            p0: opts.q_offset + qb * Q_BLOCK,
            opts,
            scale,
            out: rows,
        });
    });
}

#[cfg(test)]
#[path = "sdpa_tests.rs"]
mod tests;
