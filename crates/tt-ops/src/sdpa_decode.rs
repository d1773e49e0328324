//! `sdpa_decode`: one query token per user attending over a contiguous or paged KV cache.
//!
//! TTNN counterpart: `ttnn.transformer.scaled_dot_product_attention_decode(q, k, v, cur_pos=..)` and
//! its paged form (`paged_scaled_dot_product_attention_decode(.., page_table_tensor=..)`).
//! Contract: `q [1, B, nh, dh]` (f32); caches as described in [`crate::cache`] (f32 or bf16, K and V
//! of one shape and dtype); `cur_pos [B]`: user `b` attends to rows `0 ..= cur_pos[b]` (with a sliding
//! window `w`, rows `cur_pos[b] - w + 1 ..= cur_pos[b]`); `-1` skips the user, whose output is zeros.
//! GQA: query head `i` reads KV head `i / (nh / nkv)`. Output f32 `[1, B, nh, dh]`.
//!
//! Work is split into (user, KV head, row chunk) items run in parallel
//! ([`crate::team::for_each`]); each item streams its rows once, keeping every query head of the KV
//! head's group in registers/L1 (flash-decoding), and the partial softmax states of a user's chunks
//! are merged at the end.

use crate::cache::{Geometry, PageTable};
use crate::error::{OpError, Result};
use crate::simd::{self, Kernel, Lanes};
use crate::tensor::{DType, Tensor};

const OP: &str = "sdpa_decode";
/// Rows scored per softmax step inside a work item. Steps are aligned to multiples of this in the
/// user's logical row space, and paged blocks are multiples of it, so a paged and a contiguous cache
/// holding the same rows take identical steps and give bit-identical outputs.
const BLOCK_ROWS: usize = crate::cache::TILE;
/// Smallest row chunk worth a separate work item.
const MIN_CHUNK: usize = 256;
/// Below this many query-key products (rows x query heads x head dim) a call runs its items on the
/// calling thread.
const SERIAL_MAX_PRODUCTS: usize = 1 << 17;

/// Options of [`sdpa_decode`].
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct SdpaDecodeOptions {
    /// Score scale; `None` means `1 / sqrt(dh)`.
    pub scale: Option<f32>,
    /// Sliding window: a query at position `p` sees rows in `(p - w, p]`.
    pub sliding_window: Option<usize>,
}

/// One work item: rows `r0 .. r1` of user `b`, KV head `h`.
#[derive(Debug, Clone, Copy)]
struct Item {
    b: usize,
    h: usize,
    r0: usize,
    r1: usize,
}

struct DecodeChunk<'a, E> {
    /// The group's query heads, `[g, dh]`.
    q: &'a [f32],
    k: &'a [E],
    v: &'a [E],
    geom: &'a Geometry<'a>,
    item: Item,
    scale: f32,
    /// `[g, dh + 2]`: running max, running sum, unnormalised output.
    out: &'a mut [f32],
}

impl<E: Lanes> Kernel for DecodeChunk<'_, E> {
    type Out = ();

    #[inline(always)]
    fn run<const FMA: bool>(self) -> Self::Out {
        let dh = self.geom.dh;
        let g = self.q.len() / dh;
        let Item { b, h, r0, r1 } = self.item;
        let mut kbuf = vec![0.0f32; if g > 1 { dh } else { 0 }];
        let mut scores = vec![0.0f32; g * BLOCK_ROWS];
        let mut state = vec![(f32::NEG_INFINITY, 0.0f32); g];
        let mut acc = vec![0.0f32; g * dh];
        let mut r = r0;
        while r < r1 {
            let (off, run) = self.geom.locate(b, h, r);
            let n = run.min(r1 - r).min(BLOCK_ROWS - r % BLOCK_ROWS);
            let (kb, vb) = (&self.k[off..off + n * dh], &self.v[off..off + n * dh]);
            // The next block's rows, prefetched one row per row scored here: the misses of the
            // next block overlap this block's arithmetic, spread evenly so that one core keeps
            // many in flight without ever stalling on a full miss queue.
            let next = if r + n < r1 {
                let (at, run) = self.geom.locate(b, h, r + n);
                Some((at, run.min(r1 - r - n).min(BLOCK_ROWS)))
            } else {
                None
            };
            // Scores: one pass over the block's K rows for every query head of the group.
            for (j, krow) in kb.chunks_exact(dh).enumerate() {
                if let Some((at, rows)) = next
                    && j < rows
                {
                    let row = at + j * dh;
                    prefetch(&self.k[row..(row + dh).min(self.k.len())]);
                    prefetch(&self.v[row..(row + dh).min(self.v.len())]);
                }
                if g == 1 {
                    scores[j] = simd::dot::<FMA, E>(self.q, krow) * self.scale;
                } else {
                    simd::widen(krow, &mut kbuf);
                    for (i, qi) in self.q.chunks_exact(dh).enumerate() {
                        scores[i * BLOCK_ROWS + j] = simd::dot::<FMA, f32>(qi, &kbuf) * self.scale;
                    }
                }
            }
            // Online softmax, then the probability-weighted V rows into each head's output.
            for (i, ((m, l), ai)) in state.iter_mut().zip(acc.chunks_exact_mut(dh)).enumerate() {
                let p = &mut scores[i * BLOCK_ROWS..i * BLOCK_ROWS + n];
                let alpha = simd::online_softmax_step::<FMA>(m, l, p);
                if alpha != 1.0 {
                    simd::scale(alpha, ai);
                }
                simd::accumulate_rows::<FMA, E>(p, vb, ai);
            }
            r += n;
        }
        for (i, o) in self.out.chunks_exact_mut(dh + 2).enumerate() {
            o[0] = state[i].0;
            o[1] = state[i].1;
            o[2..].copy_from_slice(&acc[i * dh..(i + 1) * dh]);
        }
    }
}

/// Hints the CPU to fetch every cache line of `x` (no effect off x86-64).
#[inline(always)]
fn prefetch<E>(x: &[E]) {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::{_MM_HINT_T0, _mm_prefetch};
        let bytes = std::mem::size_of_val(x);
        let p = x.as_ptr().cast::<i8>();
        for at in (0..bytes).step_by(64) {
            // SAFETY: a prefetch is only a hint and never faults; the address is inside `x`.
            unsafe { _mm_prefetch::<_MM_HINT_T0>(p.add(at)) };
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = x;
}

/// Decode attention of `q [1, B, nh, dh]` over a KV cache; see the module docs for the contract.
pub fn sdpa_decode(
    q: &Tensor,
    k_cache: &Tensor,
    v_cache: &Tensor,
    cur_pos: &[i32],
    page_table: Option<&PageTable>,
    opts: &SdpaDecodeOptions,
) -> Result<Tensor> {
    let [one, batch, nh, dh] = q.dims::<4>().map_err(|_| {
        OpError::shape(OP, format!("q must be [1, B, nh, dh], got {:?}", q.shape()))
    })?;
    if k_cache.shape() != v_cache.shape() {
        return Err(OpError::shape(
            OP,
            format!(
                "K cache {:?} and V cache {:?} differ",
                k_cache.shape(),
                v_cache.shape()
            ),
        ));
    }
    if k_cache.dtype() != v_cache.dtype() {
        return Err(OpError::DType {
            op: OP,
            expected: k_cache.dtype(),
            got: v_cache.dtype(),
        });
    }
    let geom = Geometry::new(OP, k_cache, page_table)?;
    if one != 1 || dh != geom.dh || dh == 0 || batch != geom.batch || batch != cur_pos.len() {
        return Err(OpError::shape(
            OP,
            format!(
                "q {:?} must be [1, B, nh, dh] with B = cache batch {} = cur_pos.len() {} and dh = {}",
                q.shape(),
                geom.batch,
                cur_pos.len(),
                geom.dh
            ),
        ));
    }
    if geom.nkv == 0 || nh % geom.nkv != 0 {
        return Err(OpError::Heads {
            op: OP,
            nh,
            nkv: geom.nkv,
        });
    }
    let scale = opts.scale.unwrap_or(1.0 / (dh as f32).sqrt());
    if !scale.is_finite() || opts.sliding_window == Some(0) {
        return Err(OpError::invalid(
            OP,
            format!("need a finite scale and a non-zero window ({opts:?})"),
        ));
    }
    // Validate every position and every page a user's rows touch before any work.
    let mut ranges = Vec::with_capacity(batch);
    for (b, &p) in cur_pos.iter().enumerate() {
        if p == -1 {
            ranges.push(None);
            continue;
        }
        if p < 0 || p as i64 >= geom.capacity as i64 {
            return Err(OpError::out_of_range(
                OP,
                format!("cur_pos[{b}]"),
                p.into(),
                geom.capacity,
            ));
        }
        let hi = p as usize + 1;
        let lo = opts.sliding_window.map_or(0, |w| hi.saturating_sub(w));
        geom.check_rows(OP, b, lo, hi - lo)?;
        ranges.push(Some((lo, hi)));
    }
    let items = plan_items(&ranges, geom.nkv);
    let g = nh / geom.nkv;
    let mut partial = vec![0.0f32; items.len() * g * (dh + 2)];
    let qv = q.f32_values();
    match k_cache.dtype() {
        DType::F32 => run_items(
            &qv,
            k_cache.as_f32()?,
            v_cache.as_f32()?,
            &geom,
            &items,
            g,
            scale,
            &mut partial,
        ),
        DType::Bf16 => run_items(
            &qv,
            k_cache.as_bf16()?,
            v_cache.as_bf16()?,
            &geom,
            &items,
            g,
            scale,
            &mut partial,
        ),
    }
    let out = merge(&items, &partial, batch, nh, dh, geom.nkv);
    Tensor::from_f32(out, &[1, batch, nh, dh])
}

/// Split each active user's row range into chunks so that both cores get several items.
fn plan_items(ranges: &[Option<(usize, usize)>], nkv: usize) -> Vec<Item> {
    let active = ranges.iter().flatten().count() * nkv;
    let want = 4 * rayon::current_num_threads();
    let splits = want.div_ceil(active.max(1)).max(1);
    let mut items = Vec::new();
    for (b, range) in ranges.iter().enumerate() {
        let Some((lo, hi)) = *range else { continue };
        let chunk = (hi - lo).div_ceil(splits).max(MIN_CHUNK);
        for h in 0..nkv {
            let mut r0 = lo;
            while r0 < hi {
                let r1 = (r0 + chunk).min(hi);
                items.push(Item { b, h, r0, r1 });
                r0 = r1;
            }
        }
    }
    items
}

#[allow(clippy::too_many_arguments)]
fn run_items<E: Lanes>(
    q: &[f32],
    k: &[E],
    v: &[E],
    geom: &Geometry<'_>,
    items: &[Item],
    g: usize,
    scale: f32,
    partial: &mut [f32],
) {
    let dh = geom.dh;
    let nh = g * geom.nkv;
    let per_item = g * (dh + 2);
    if per_item == 0 {
        return;
    }
    let run = |(out, &item): (&mut [f32], &Item)| {
        let qs = &q[(item.b * nh + item.h * g) * dh..(item.b * nh + (item.h + 1) * g) * dh];
        simd::dispatch(DecodeChunk {
            q: qs,
            k,
            v,
            geom,
            item,
            scale,
            out,
        });
    };
    // Small caches stay on the calling thread: handing a few microseconds of work to the pool costs
    // more than it saves (measured: a 3.8B model's decode at contexts up to 155, one device per
    // thread, spent 7.3 ms per step here in parallel and 2.6 ms serially).
    let products: usize = items.iter().map(|it| (it.r1 - it.r0) * g * dh).sum();
    if products < SERIAL_MAX_PRODUCTS {
        partial.chunks_mut(per_item).zip(items).for_each(run);
    } else {
        let mut outs: Vec<&mut [f32]> = partial.chunks_mut(per_item).collect();
        crate::team::map_mut(&mut outs, |i, out| run((out, &items[i])));
    }
}

/// Combine the partial softmax states of each (user, head) into normalised outputs.
fn merge(
    items: &[Item],
    partial: &[f32],
    batch: usize,
    nh: usize,
    dh: usize,
    nkv: usize,
) -> Vec<f32> {
    let g = nh / nkv;
    let mut out = vec![0.0f32; batch * nh * dh];
    let mut state = vec![(f32::NEG_INFINITY, 0.0f32); batch * nh];
    // First pass: global max per (user, head).
    for (item, p) in items.iter().zip(partial.chunks_exact(g * (dh + 2))) {
        for i in 0..g {
            let s = &mut state[item.b * nh + item.h * g + i];
            s.0 = s.0.max(p[i * (dh + 2)]);
        }
    }
    for (item, p) in items.iter().zip(partial.chunks_exact(g * (dh + 2))) {
        for i in 0..g {
            let head = item.b * nh + item.h * g + i;
            let pi = &p[i * (dh + 2)..(i + 1) * (dh + 2)];
            if pi[0] == f32::NEG_INFINITY {
                continue;
            }
            let w = (pi[0] - state[head].0).exp();
            state[head].1 += pi[1] * w;
            for (o, a) in out[head * dh..(head + 1) * dh].iter_mut().zip(&pi[2..]) {
                *o += a * w;
            }
        }
    }
    for (head, (_, l)) in state.iter().enumerate() {
        if *l > 0.0 {
            for o in &mut out[head * dh..(head + 1) * dh] {
                *o /= l;
            }
        }
    }
    out
}

#[cfg(test)]
#[path = "sdpa_decode_tests.rs"]
mod tests;
