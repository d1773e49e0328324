//! Property tests over random decoder shapes, mesh sizes and profiles: the ranges cover every
//! checkpoint element exactly `copies` times, and the bytes stored on all devices add up to the
//! unpadded checkpoint plus the reported padding and replication.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::HashMap;

use proptest::prelude::*;
use proptest::sample::Index;
use tt_shard::{
    DecoderDims, DeviceProfile, GateUpLayout, MeshShape, Placement, Plan, PlanOptions, QkvLayout,
    SourceTensor, WeightKind,
};

const MESHES: [(usize, usize); 10] = [
    (1, 1),
    (1, 2),
    (2, 1),
    (1, 3),
    (2, 2),
    (1, 6),
    (1, 8),
    (2, 4),
    (4, 4),
    (4, 8),
];

#[derive(Debug, Clone)]
struct Case {
    dims: DecoderDims,
    mesh: MeshShape,
    profile: DeviceProfile,
    options: PlanOptions,
}

fn case() -> impl Strategy<Value = Case> {
    (
        0..MESHES.len(),
        1usize..=3,
        any::<Index>(),
        1usize..=80,
        1usize..=64,
        1usize..=70_000,
        1usize..=3,
        1usize..=4,
        any::<bool>(),
        any::<(bool, bool, bool)>(),
        (1usize..=300, 1usize..=4),
    )
        .prop_map(
            |(m, hpd, kv_pick, half_dh, hidden_units, vocab, layers, dtype, tiled, flags, opts)| {
                let (rows, cols) = MESHES[m];
                let n = rows * cols;
                let heads = n * hpd;
                // KV heads: divisors of heads that split over, or replicate onto, n devices.
                let kvs: Vec<usize> = (1..=heads)
                    .filter(|k| heads % k == 0 && (k % n == 0 || n % k == 0))
                    .collect();
                let kv_heads = kvs[kv_pick.index(kvs.len())];
                let (profile, head_dim, hidden) = if tiled {
                    (
                        DeviceProfile::wormhole_b0(),
                        32 * half_dh.div_ceil(16),
                        32 * hidden_units,
                    )
                } else {
                    (DeviceProfile::host(), 2 * half_dh, hidden_units * 3)
                };
                let dims = DecoderDims {
                    hidden,
                    heads,
                    kv_heads,
                    head_dim,
                    intermediate: n * (hidden_units + 7),
                    vocab,
                    layers,
                    dtype_bytes: dtype,
                    tied_embeddings: flags.0,
                    qkv_layout: if flags.1 {
                        QkvLayout::Fused
                    } else {
                        QkvLayout::Separate
                    },
                    gate_up_layout: if flags.2 {
                        GateUpLayout::Fused
                    } else {
                        GateUpLayout::Separate
                    },
                };
                Case {
                    dims,
                    mesh: MeshShape::new(rows, cols).unwrap(),
                    profile,
                    options: PlanOptions {
                        seq_len: opts.0,
                        batch: opts.1,
                    },
                }
            },
        )
}

fn numel(shape: &[usize]) -> u64 {
    shape.iter().map(|&d| d as u64).product()
}

/// Checkpoint bytes of the model, from the dims alone.
fn checkpoint_bytes(d: &DecoderDims) -> u64 {
    let (h, dh) = (d.hidden as u64, d.head_dim as u64);
    let qkv = (d.heads + 2 * d.kv_heads) as u64 * dh * h;
    let layer = qkv + h * d.heads as u64 * dh + 3 * d.intermediate as u64 * h + 2 * h;
    let vh = d.vocab as u64 * h;
    let lm = if d.tied_embeddings { 0 } else { vh };
    (vh + d.layers as u64 * layer + h + lm) * d.dtype_bytes as u64
}

/// Row offset and row count of a weight's part in its source tensor (split dim 0), or column
/// count (split dim 1).
fn part(d: &DecoderDims, kind: WeightKind, source: SourceTensor) -> (usize, usize) {
    let (q, kv, i) = (d.q_dim(), d.kv_dim(), d.intermediate);
    match (kind, source) {
        (WeightKind::Q, SourceTensor::QkvFused) => (0, q),
        (WeightKind::K, SourceTensor::QkvFused) => (q, kv),
        (WeightKind::V, SourceTensor::QkvFused) => (q + kv, kv),
        (WeightKind::Q, _) | (WeightKind::O, _) => (0, q),
        (WeightKind::K, _) | (WeightKind::V, _) => (0, kv),
        (WeightKind::Gate, SourceTensor::GateUpFused) => (0, i),
        (WeightKind::Up, SourceTensor::GateUpFused) => (i, i),
        (WeightKind::Gate | WeightKind::Up | WeightKind::Down, _) => (0, i),
        (WeightKind::LmHead, _) => (0, d.vocab),
        _ => (0, 0),
    }
}

fn check(c: &Case) -> Result<(), TestCaseError> {
    let p = Plan::new(&c.dims, c.mesh, &c.profile, c.options)
        .map_err(|e| TestCaseError::fail(format!("plan refused: {e}")))?;
    let d = &c.dims;
    let n = c.mesh.num_devices();
    let dt = d.dtype_bytes as u64;
    let mut stored_all = 0u64;
    let mut padding = 0u64;
    let mut data_all = 0u64;
    for w in p.weights() {
        let per = w.count as u64 * dt;
        prop_assert_eq!(w.shards.len(), n);
        prop_assert_eq!(w.count, if w.kind.is_per_layer() { d.layers } else { 1 });
        // Padded shapes: at least the shard, tile multiples under a tiled profile.
        for (pd, sd) in w.padded_shape.iter().zip(&w.device_shape) {
            prop_assert!(pd >= sd);
            if c.profile.tile_padding {
                prop_assert_eq!(pd % c.profile.tile, 0);
            }
        }
        // Coverage of the source tensor along the split dim.
        let mut cover: HashMap<usize, usize> = HashMap::new();
        for (dev, s) in w.shards.iter().enumerate() {
            prop_assert_eq!(s.device, dev);
            prop_assert_eq!(s.ranges.len(), w.source_shape.len());
            for ((r, &len), &src) in s.ranges.iter().zip(&w.device_shape).zip(&w.source_shape) {
                prop_assert!(
                    r.len() <= len && r.end <= src,
                    "{:?} {:?} {:?}",
                    w.kind,
                    r,
                    src
                );
            }
            let stored = numel(&w.padded_shape) * per;
            let data = s.numel() * per;
            prop_assert_eq!(stored, w.stored_bytes_per_device);
            prop_assert_eq!(data, w.data_bytes(dev, d.dtype_bytes));
            stored_all += stored;
            padding += stored - data;
            data_all += data;
            if let Some(dim) = w.split_dim {
                for i in s.ranges[dim].clone() {
                    *cover.entry(i).or_default() += 1;
                }
                let other = 1 - dim;
                prop_assert_eq!(s.ranges[other].clone(), 0..w.source_shape[other]);
            } else {
                prop_assert_eq!(w.placement, Placement::Replicated);
                let full: Vec<_> = w.source_shape.iter().map(|&x| 0..x).collect();
                prop_assert_eq!(&s.ranges, &full);
            }
        }
        if w.split_dim.is_some() {
            let (off, len) = part(d, w.kind, w.source);
            prop_assert_eq!(
                cover.len(),
                len,
                "{:?} covers {} of {}",
                w.kind,
                cover.len(),
                len
            );
            for i in off..off + len {
                prop_assert_eq!(
                    cover.get(&i).copied(),
                    Some(w.copies),
                    "{:?} index {}",
                    w.kind,
                    i
                );
            }
        } else {
            prop_assert_eq!(w.copies, n);
        }
    }
    let t = p.totals();
    prop_assert_eq!(t.checkpoint_bytes, checkpoint_bytes(d));
    prop_assert_eq!(t.padding_bytes, padding);
    prop_assert_eq!(t.replication_bytes, data_all - t.checkpoint_bytes);
    prop_assert_eq!(t.stored_bytes, stored_all);
    prop_assert_eq!(
        stored_all,
        t.checkpoint_bytes + t.padding_bytes + t.replication_bytes
    );
    for m in p.memory() {
        prop_assert_eq!(m.weight_bytes * n as u64, stored_all);
        prop_assert_eq!(m.total_bytes, m.weight_bytes + p.kv_cache().bytes);
    }
    // Heads: each device's query heads find their KV head among its own.
    let h = p.heads();
    for dev in 0..n {
        let dh = p.device_heads(dev).unwrap();
        prop_assert_eq!(dh.q_heads.len(), d.heads / n);
        for (local, q) in dh.q_heads.clone().enumerate() {
            prop_assert_eq!(
                dh.kv_heads.start + h.local_kv_of(local),
                q / (d.heads / d.kv_heads)
            );
        }
        let k = p.shard_of(WeightKind::K, dev).unwrap().rows();
        let (k_off, _) = part(d, WeightKind::K, p.weight(WeightKind::K).unwrap().source);
        prop_assert_eq!(
            k,
            k_off + dh.kv_heads.start * d.head_dim..k_off + dh.kv_heads.end * d.head_dim
        );
    }
    // KV cache: per-token bytes times the planned tokens (host: no padding).
    let kv = p.kv_cache();
    prop_assert_eq!(
        kv.bytes_per_token,
        2 * d.layers as u64 * (h.kv_heads_per_device * c.profile.pad(d.head_dim)) as u64 * dt
    );
    if !c.profile.tile_padding {
        prop_assert_eq!(
            kv.bytes,
            kv.bytes_per_token * (c.options.seq_len * c.options.batch) as u64
        );
    }
    prop_assert_eq!(p.collectives().all_reduces_per_token, 2 * d.layers);
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn plan_bytes_add_up_and_ranges_cover_the_checkpoint(c in case()) {
        check(&c)?;
    }
}
