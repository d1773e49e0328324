//! Test helpers: deterministic random data and the comparison metrics used across the op tests.
//!
//! "Relative max error" is `max |got - want| / max |want|` (normwise, so near-zero entries do not
//! dominate).

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// `n` values uniform in `[-1, 1)` from `seed`.
pub(crate) fn rand_vec(n: usize, seed: u64) -> Vec<f32> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    (0..n).map(|_| rng.random_range(-1.0f32..1.0)).collect()
}

/// `n` values uniform in `[-scale, scale)` with every 53rd exactly zero: a linear layer's
/// weights or activations (the packed kernels' tests).
pub(crate) fn ordinary(n: usize, scale: f32, seed: u64) -> Vec<f32> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    (0..n)
        .map(|i| match i % 53 {
            0 => 0.0,
            _ => rng.random_range(-1.0f32..1.0) * scale,
        })
        .collect()
}

/// Asserts `got` equals `want` bit for bit (NaNs included), naming the first element that does
/// not.
pub(crate) fn assert_bits_eq(got: &[f32], want: &[f32], what: &str) {
    assert_eq!(got.len(), want.len(), "{what}");
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert_eq!(
            g.to_bits(),
            w.to_bits(),
            "{what}: element {i}: {g:e} vs {w:e}"
        );
    }
}

/// `max |got - want| / max |want|`.
pub(crate) fn rel_max_err(got: &[f32], want: &[f64]) -> f64 {
    assert_eq!(got.len(), want.len(), "length mismatch");
    let scale = want.iter().fold(0.0f64, |m, v| m.max(v.abs()));
    let err = got
        .iter()
        .zip(want)
        .fold(0.0f64, |m, (g, w)| m.max((*g as f64 - w).abs()));
    if scale == 0.0 { err } else { err / scale }
}

/// Asserts `rel_max_err(got, want) <= tol` and that nothing is NaN.
pub(crate) fn assert_close_f64(got: &[f32], want: &[f64], tol: f64) {
    assert!(got.iter().all(|v| v.is_finite()), "non-finite output");
    let e = rel_max_err(got, want);
    assert!(e <= tol, "relative max error {e:e} > {tol:e}");
}

/// Asserts an attention output close to its reference: `max |got - want|` at most `tol` times
/// the larger of `max |want|` and `v_max`, the largest value magnitude. Each output is a convex
/// combination of value rows, so the weights' relative error bounds its error by `v_max` times
/// that error; measured against `max |want|` alone, an output that cancels to near zero (one
/// head row of width 1, say) would fail on rounding alone. Nothing may be NaN.
pub(crate) fn assert_close_attention(got: &[f32], want: &[f64], v_max: f64, tol: f64) {
    assert!(got.iter().all(|v| v.is_finite()), "non-finite output");
    assert_eq!(got.len(), want.len(), "length mismatch");
    let scale = want.iter().fold(v_max, |m, v| m.max(v.abs()));
    let err = got
        .iter()
        .zip(want)
        .fold(0.0f64, |m, (g, w)| m.max((f64::from(*g) - w).abs()));
    assert!(
        err <= tol * scale,
        "max error {err:e} > {tol:e} x {scale:e} (the output's or the values' magnitude)"
    );
}

/// Softmax attention of one query over the given key/value rows, in f64.
pub(crate) fn attend_ref(q: &[f32], keys: &[&[f32]], vals: &[&[f32]], scale: f64) -> Vec<f64> {
    let dh = q.len();
    if keys.is_empty() {
        return vec![0.0; dh];
    }
    let s: Vec<f64> = keys
        .iter()
        .map(|k| {
            q.iter()
                .zip(*k)
                .map(|(a, b)| *a as f64 * *b as f64)
                .sum::<f64>()
                * scale
        })
        .collect();
    let m = s.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let e: Vec<f64> = s.iter().map(|v| (v - m).exp()).collect();
    let z: f64 = e.iter().sum();
    let mut out = vec![0.0; dh];
    for (w, v) in e.iter().zip(vals) {
        for (o, x) in out.iter_mut().zip(*v) {
            *o += w / z * *x as f64;
        }
    }
    out
}

/// A random page table: users' blocks drawn without replacement from `num_blocks` physical blocks.
pub(crate) fn random_page_table(
    batch: usize,
    blocks_per_seq: usize,
    num_blocks: usize,
    seed: u64,
) -> crate::cache::PageTable {
    use rand::seq::SliceRandom;
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut ids: Vec<i32> = (0..num_blocks as i32).collect();
    ids.shuffle(&mut rng);
    ids.truncate(batch * blocks_per_seq);
    crate::cache::PageTable::new(ids, batch, blocks_per_seq).unwrap()
}

/// The paged copy `[num_blocks, nkv, block, dh]` of a contiguous cache `[B, nkv, len, dh]`
/// (`len = blocks_per_seq * block`), with unused blocks filled by `junk`.
pub(crate) fn to_paged(
    contiguous: &crate::Tensor,
    table: &crate::cache::PageTable,
    num_blocks: usize,
    block: usize,
    junk: f32,
) -> crate::Tensor {
    let [b, nkv, len, dh] = contiguous.dims::<4>().unwrap();
    assert_eq!(len, table.blocks_per_seq() * block);
    let src = contiguous.to_f32_vec();
    let mut out = vec![junk; num_blocks * nkv * block * dh];
    for u in 0..b {
        for i in 0..table.blocks_per_seq() {
            let phys = table.entries()[u * table.blocks_per_seq() + i] as usize;
            for h in 0..nkv {
                for r in 0..block {
                    let s = ((u * nkv + h) * len + i * block + r) * dh;
                    let d = ((phys * nkv + h) * block + r) * dh;
                    out[d..d + dh].copy_from_slice(&src[s..s + dh]);
                }
            }
        }
    }
    crate::Tensor::from_f32_as(&out, &[num_blocks, nkv, block, dh], contiguous.dtype()).unwrap()
}
