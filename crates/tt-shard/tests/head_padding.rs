//! Head counts that do not divide the mesh: the padded layout's invariants and memory
//! accounting over random head counts and meshes, the layer-level proof that a padded plan
//! computes the unpadded model's attention block, the SmolLM2-135M 2x4 report, and the mesh
//! that no padding can serve.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use proptest::prelude::*;
use tt_shard::{
    DecoderDims, DeviceProfile, GateUpLayout, MeshShape, Plan, PlanError, PlanOptions, QkvLayout,
    WeightKind,
};

/// Meshes of 1 to 8 devices: 1xN and 2xN.
const MESHES: [(usize, usize); 12] = [
    (1, 1),
    (1, 2),
    (1, 3),
    (1, 4),
    (1, 5),
    (1, 6),
    (1, 7),
    (1, 8),
    (2, 1),
    (2, 2),
    (2, 3),
    (2, 4),
];

fn dims(heads: usize, kv_heads: usize, head_dim: usize, hidden: usize, n: usize) -> DecoderDims {
    DecoderDims {
        hidden,
        heads,
        kv_heads,
        head_dim,
        intermediate: 8 * n,
        vocab: 50,
        layers: 2,
        dtype_bytes: 2,
        tied_embeddings: false,
        qkv_layout: QkvLayout::Fused,
        gate_up_layout: GateUpLayout::Separate,
    }
}

fn mesh(rows: usize, cols: usize) -> MeshShape {
    MeshShape::new(rows, cols).unwrap()
}

/// Whether the planner accepted this case before head padding (and so must lay it out as then).
fn divides(nh: usize, nkv: usize, n: usize) -> bool {
    nh.is_multiple_of(n) && (nkv.is_multiple_of(n) || n.is_multiple_of(nkv))
}

/// (kv_heads, group, head_dim, mesh index, seq_len, batch, wormhole, intermediate)
type PlanCase = (usize, usize, usize, usize, usize, usize, bool, usize);

fn plan_case() -> impl Strategy<Value = PlanCase> {
    (
        1usize..=12,
        1usize..=6,
        1usize..=4,
        0..MESHES.len(),
        1usize..=64,
        1usize..=3,
        any::<bool>(),
        1usize..=100,
    )
}

fn check_plan(
    (nkv, group, half_dh, m, seq_len, batch, tiled, inter): PlanCase,
) -> Result<(), TestCaseError> {
    let (rows, cols) = MESHES[m];
    let n = rows * cols;
    let nh = nkv * group;
    let (profile, dh, hidden) = if tiled {
        (DeviceProfile::wormhole_b0(), 32 * half_dh, 64)
    } else {
        (DeviceProfile::host(), 2 * half_dh, 12)
    };
    let mut d = dims(nh, nkv, dh, hidden, n);
    d.intermediate = inter;
    let options = PlanOptions { seq_len, batch };
    let result = Plan::new(&d, mesh(rows, cols), &profile, options);
    // The rule: every mesh of at most `heads` devices plans; more devices is a typed error.
    if n > nh {
        prop_assert!(
            matches!(result, Err(PlanError::MoreDevicesThanHeads { heads, kv_heads, devices })
                if heads == nh && kv_heads == nkv && devices == n),
            "{:?}",
            result
        );
        return Ok(());
    }
    let p = result.map_err(|e| TestCaseError::fail(format!("plan refused: {e}")))?;
    let h = p.heads();
    let (hpd, kpd) = (h.heads_per_device, h.kv_heads_per_device);
    prop_assert_eq!(hpd % kpd, 0);
    prop_assert_eq!(h.local_group(), hpd / kpd);
    // Optimal slot counts (see the heads module): fewest KV slots, then fewest query slots.
    if nkv <= n {
        prop_assert_eq!((kpd, hpd), (1, group.div_ceil(n / nkv)));
    } else {
        prop_assert_eq!((kpd, hpd), (nkv.div_ceil(n), nkv.div_ceil(n) * group));
    }
    // Unpadded exactly when the old planner accepted it, with the old layout.
    prop_assert_eq!(h.is_padded(), !divides(nh, nkv, n));
    if !h.is_padded() {
        let (old_hpd, old_kpd) = (nh / n, if nkv.is_multiple_of(n) { nkv / n } else { 1 });
        prop_assert_eq!((hpd, kpd), (old_hpd, old_kpd));
        for (dev, dh_) in h.devices.iter().enumerate() {
            prop_assert_eq!(dh_.q_heads.clone(), dev * hpd..(dev + 1) * hpd);
            let kv0 = dev * hpd / group;
            prop_assert_eq!(dh_.kv_heads.clone(), kv0..kv0 + kpd);
        }
    }
    // Every real query head on exactly one (device, local slot), next to its KV head.
    let mut q_seen = vec![0usize; nh];
    let mut kv_holders = vec![0usize; nkv];
    for dev in 0..n {
        let dh_ = p.device_heads(dev).unwrap();
        prop_assert_eq!(dh_.q_sources.len(), hpd);
        prop_assert_eq!(dh_.kv_sources.len(), kpd);
        prop_assert!(!dh_.q_heads.is_empty() && !dh_.kv_heads.is_empty());
        let real_q: Vec<usize> = dh_.q_sources.iter().flatten().copied().collect();
        let real_kv: Vec<usize> = dh_.kv_sources.iter().flatten().copied().collect();
        prop_assert_eq!(real_q.clone(), dh_.q_heads.clone().collect::<Vec<_>>());
        prop_assert_eq!(real_kv.clone(), dh_.kv_heads.clone().collect::<Vec<_>>());
        for (local, src) in dh_.q_sources.iter().enumerate() {
            if let Some(q) = *src {
                q_seen[q] += 1;
                prop_assert_eq!(dh_.kv_sources[h.local_kv_of(local)], Some(q / group));
            }
        }
        for kv in real_kv {
            kv_holders[kv] += 1;
        }
        // Shard ranges: the block of real heads; the stored shape is the padded one.
        let (k_off, q_rows) = (nh * dh, dh_.q_heads.start * dh..dh_.q_heads.end * dh);
        prop_assert_eq!(
            p.shard_of(WeightKind::Q, dev).unwrap().rows(),
            q_rows.clone()
        );
        prop_assert_eq!(p.shard_of(WeightKind::O, dev).unwrap().cols(), q_rows);
        prop_assert_eq!(
            p.shard_of(WeightKind::K, dev).unwrap().rows(),
            k_off + dh_.kv_heads.start * dh..k_off + dh_.kv_heads.end * dh
        );
    }
    // Head slices: one per slot, real ones inside the shard's block, tiling it when unpadded.
    for dev in 0..n {
        for kind in [WeightKind::Q, WeightKind::K, WeightKind::V, WeightKind::O] {
            let slices = p.head_slices(kind, dev).unwrap();
            let shard = p.shard_of(kind, dev).unwrap();
            let block = if kind == WeightKind::O {
                shard.cols()
            } else {
                shard.rows()
            };
            let slots = if matches!(kind, WeightKind::Q | WeightKind::O) {
                hpd
            } else {
                kpd
            };
            prop_assert_eq!(slices.len(), slots);
            let (srcs, off) = match kind {
                WeightKind::Q | WeightKind::O => (&p.device_heads(dev).unwrap().q_sources, 0),
                WeightKind::K => (&p.device_heads(dev).unwrap().kv_sources, nh * dh),
                _ => (&p.device_heads(dev).unwrap().kv_sources, (nh + nkv) * dh),
            };
            let want: Vec<_> = srcs
                .iter()
                .map(|s| s.map(|x| off + x * dh..off + (x + 1) * dh))
                .collect();
            prop_assert_eq!(&slices, &want);
            let real: Vec<_> = slices.iter().flatten().cloned().collect();
            for r in &real {
                prop_assert!(r.len() == dh && block.start <= r.start && r.end <= block.end);
            }
            prop_assert_eq!(real.iter().map(|r| r.len()).sum::<usize>(), block.len());
            if !h.is_padded() {
                prop_assert_eq!(real.first().map(|r| r.start), Some(block.start));
                prop_assert!(real.windows(2).all(|w| w[0].end == w[1].start));
            }
        }
    }
    let gate = p.head_slices(WeightKind::Gate, 0);
    let refused = matches!(
        gate,
        Err(PlanError::NotHeadSliced {
            kind: WeightKind::Gate
        })
    );
    prop_assert!(refused, "{:?}", gate);
    prop_assert!(q_seen.iter().all(|&c| c == 1), "{:?}", q_seen);
    prop_assert!(kv_holders.iter().all(|&c| c >= 1));
    prop_assert_eq!(h.kv_copies, kv_holders.iter().copied().max().unwrap());
    // Memory: stored >= real, padding = stored - real, per weight and over the mesh.
    let (layers, dt) = (d.layers as u64, d.dtype_bytes as u64);
    let head_w = (dh * hidden) as u64 * layers * dt;
    for kind in [WeightKind::Q, WeightKind::K, WeightKind::V, WeightKind::O] {
        let w = p.weight(kind).unwrap();
        let slots = if matches!(kind, WeightKind::Q | WeightKind::O) {
            hpd
        } else {
            kpd
        };
        prop_assert_eq!(w.stored_bytes_per_device, slots as u64 * head_w);
        let data: u64 = (0..n).map(|dev| w.data_bytes(dev, d.dtype_bytes)).sum();
        let stored = w.stored_bytes_per_device * n as u64;
        prop_assert!(stored >= data);
        prop_assert_eq!(w.padding_bytes, stored - data);
        prop_assert_eq!(w.replication_bytes, data - w.checkpoint_bytes);
    }
    prop_assert_eq!(
        p.weight(WeightKind::Q).unwrap().padding_bytes,
        h.q_padding() as u64 * head_w
    );
    prop_assert_eq!(
        p.weight(WeightKind::K).unwrap().padding_bytes,
        h.kv_padding() as u64 * head_w
    );
    // Intermediate: any width plans, zero rows (down: columns) at the end.
    let i = p.intermediate_split();
    prop_assert_eq!(i.per_part, inter.div_ceil(n));
    for kind in [WeightKind::Gate, WeightKind::Up, WeightKind::Down] {
        let w = p.weight(kind).unwrap();
        let covered: usize = w
            .shards
            .iter()
            .map(|s| s.ranges[w.split_dim.unwrap()].len())
            .sum();
        prop_assert_eq!(covered, inter);
        if !tiled {
            prop_assert_eq!(
                w.padding_bytes,
                (n * i.per_part - inter) as u64 * hidden as u64 * layers * dt
            );
        }
    }
    let t = p.totals();
    prop_assert_eq!(
        t.stored_bytes,
        t.checkpoint_bytes + t.padding_bytes + t.replication_bytes
    );
    let kv = p.kv_cache();
    let pad = |x: usize| profile.pad(x) as u64;
    let kv_head = 2 * layers * batch as u64 * pad(seq_len) * pad(dh) * dt;
    prop_assert_eq!(kv.bytes, kpd as u64 * kv_head);
    prop_assert_eq!(kv.bytes_per_head, kv_head);
    for (dev, m) in p.memory().iter().enumerate() {
        let dh_ = p.device_heads(dev).unwrap();
        prop_assert_eq!(m.kv_cache_padding_bytes, dh_.kv_padding() as u64 * kv_head);
        prop_assert_eq!(
            m.head_padding_weight_bytes,
            2 * head_w * (dh_.q_padding() + dh_.kv_padding()) as u64
        );
        prop_assert!(m.weight_bytes >= m.weight_data_bytes + m.head_padding_weight_bytes);
        prop_assert_eq!(m.total_bytes, m.weight_bytes + m.kv_cache_bytes);
    }
    Ok(())
}

/// A weight matrix `[rows, cols]`.
type Matrix = Vec<Vec<f64>>;

/// Q, K, V and O weights of one attention block (or of one device's shard of it).
type AttnWeights<'a> = (
    &'a [Vec<f64>],
    &'a [Vec<f64>],
    &'a [Vec<f64>],
    &'a [Vec<f64>],
);

/// A small deterministic generator for the weights of the numeric test.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> f64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 >> 11) as f64 / (1u64 << 53) as f64 * 2.0 - 1.0
    }

    fn matrix(&mut self, rows: usize, cols: usize) -> Matrix {
        (0..rows)
            .map(|_| (0..cols).map(|_| self.next()).collect())
            .collect()
    }
}

/// `x @ w^T` for `x [m, k]`, `w [n, k]`.
fn matmul_t(x: &[Vec<f64>], w: &[Vec<f64>]) -> Vec<Vec<f64>> {
    x.iter()
        .map(|r| {
            w.iter()
                .map(|c| r.iter().zip(c).map(|(a, b)| a * b).sum())
                .collect()
        })
        .collect()
}

/// Causal GQA attention followed by the output projection: `q_heads` query heads, query head
/// `j` attending with KV head `kv_of(j)`; `wq [q_heads*dh, H]`, `wk`/`wv [kv_heads*dh, H]`,
/// `wo [H, q_heads*dh]`.
fn attention_block(
    x: &[Vec<f64>],
    (wq, wk, wv, wo): AttnWeights<'_>,
    q_heads: usize,
    dh: usize,
    kv_of: impl Fn(usize) -> usize,
) -> Vec<Vec<f64>> {
    let (q, k, v) = (matmul_t(x, wq), matmul_t(x, wk), matmul_t(x, wv));
    let m = x.len();
    let scale = 1.0 / (dh as f64).sqrt();
    let mut ctx = vec![vec![0.0; q_heads * dh]; m];
    for head in 0..q_heads {
        let (qo, ko) = (head * dh, kv_of(head) * dh);
        for i in 0..m {
            let scores: Vec<f64> = (0..=i)
                .map(|j| (0..dh).map(|e| q[i][qo + e] * k[j][ko + e]).sum::<f64>() * scale)
                .collect();
            let max = scores.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            let exps: Vec<f64> = scores.iter().map(|s| (s - max).exp()).collect();
            let sum: f64 = exps.iter().sum();
            for e in 0..dh {
                ctx[i][qo + e] = (0..=i).map(|j| exps[j] / sum * v[j][ko + e]).sum();
            }
        }
    }
    matmul_t(&ctx, wo)
}

/// Rows `head * dh .. (head + 1) * dh` of `w` per source, zeros for `None`.
fn gather_rows(w: &[Vec<f64>], sources: &[Option<usize>], dh: usize) -> Vec<Vec<f64>> {
    let cols = w.first().map_or(0, Vec::len);
    sources
        .iter()
        .flat_map(|s| (0..dh).map(move |e| s.map_or(vec![0.0; cols], |h| w[h * dh + e].clone())))
        .collect()
}

/// Columns `head * dh .. (head + 1) * dh` of `w` per source, zeros for `None`.
fn gather_cols(w: &[Vec<f64>], sources: &[Option<usize>], dh: usize) -> Vec<Vec<f64>> {
    w.iter()
        .map(|row| {
            sources
                .iter()
                .flat_map(|s| (0..dh).map(move |e| s.map_or(0.0, |h| row[h * dh + e])))
                .collect()
        })
        .collect()
}

/// (kv_heads, group, mesh index, hidden, half head_dim, tokens, seed)
type NumCase = (usize, usize, usize, usize, usize, usize, u64);

fn check_numbers(
    (nkv, group, m, hidden, half_dh, tokens, seed): NumCase,
) -> Result<(), TestCaseError> {
    let (rows, cols) = MESHES[m];
    let n = rows * cols;
    let nh = nkv * group;
    prop_assume!(n <= nh);
    let dh = 2 * half_dh;
    let d = dims(nh, nkv, dh, hidden, n);
    let p = Plan::new(
        &d,
        mesh(rows, cols),
        &DeviceProfile::host(),
        PlanOptions::default(),
    )
    .map_err(|e| TestCaseError::fail(format!("plan refused: {e}")))?;
    let mut rng = Rng(seed | 1);
    let x = rng.matrix(tokens, hidden);
    let wq = rng.matrix(nh * dh, hidden);
    let wk = rng.matrix(nkv * dh, hidden);
    let wv = rng.matrix(nkv * dh, hidden);
    let wo = rng.matrix(hidden, nh * dh);
    let want = attention_block(&x, (&wq, &wk, &wv, &wo), nh, dh, |h| h / group);

    let h = p.heads();
    let local_group = h.heads_per_device / h.kv_heads_per_device;
    let mut got = vec![vec![0.0; hidden]; tokens];
    for dev in 0..n {
        let s = p.device_heads(dev).unwrap();
        let (q_src, kv_src) = (&s.q_sources, &s.kv_sources);
        let shards = (
            gather_rows(&wq, q_src, dh),
            gather_rows(&wk, kv_src, dh),
            gather_rows(&wv, kv_src, dh),
            gather_cols(&wo, q_src, dh),
        );
        // The one standard GQA kernel: local query head j uses local KV head j / local group.
        for j in 0..h.heads_per_device {
            prop_assert_eq!(h.local_kv_of(j), j / local_group);
        }
        let part = attention_block(
            &x,
            (&shards.0, &shards.1, &shards.2, &shards.3),
            h.heads_per_device,
            dh,
            |j| j / local_group,
        );
        // The all_reduce after o_proj.
        for (g, pr) in got.iter_mut().zip(&part) {
            for (a, b) in g.iter_mut().zip(pr) {
                *a += b;
            }
        }
    }
    let diff = want
        .iter()
        .flatten()
        .zip(got.iter().flatten())
        .map(|(a, b)| (a - b).abs())
        .fold(0.0, f64::max);
    prop_assert!(
        diff < 1e-9,
        "max abs diff {diff} on {rows}x{cols}, {nh}/{nkv} heads"
    );
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn any_head_count_plans_on_any_mesh_up_to_heads_devices(c in plan_case()) {
        check_plan(c)?;
    }

    #[test]
    fn a_padded_plan_computes_the_unpadded_attention_block(
        c in (1usize..=5, 1usize..=4, 0..MESHES.len(), 1usize..=6, 1usize..=2, 1usize..=5, any::<u64>())
    ) {
        check_numbers(c)?;
    }
}

fn smollm2_135m() -> DecoderDims {
    DecoderDims {
        hidden: 576,
        heads: 9,
        kv_heads: 3,
        head_dim: 64,
        intermediate: 1536,
        vocab: 49152,
        layers: 30,
        dtype_bytes: 2,
        tied_embeddings: true,
        qkv_layout: QkvLayout::Separate,
        gate_up_layout: GateUpLayout::Separate,
    }
}

#[test]
fn smollm2_135m_2x4_wormhole_report_snapshot() {
    let p = Plan::new(
        &smollm2_135m(),
        mesh(2, 4),
        &DeviceProfile::wormhole_b0(),
        PlanOptions::default(),
    )
    .unwrap();
    let h = p.heads();
    assert_eq!((h.heads_per_device, h.kv_heads_per_device), (2, 1));
    assert_eq!(p.device_heads(6).unwrap().q_sources, [Some(6), Some(7)]);
    assert_eq!(p.device_heads(7).unwrap().q_sources, [Some(8), None]);
    insta::assert_snapshot!("smollm2_135m_2x4_wormhole_b0", p.to_string());
}

#[test]
fn real_models_plan_on_the_bringup_meshes() {
    // (heads, kv_heads, head_dim, hidden, intermediate) of SmolLM2-135M, Qwen2.5-0.5B and
    // Phi-3-medium (Qwen's 4864 and Phi-3-medium's 17920 do not divide over 3 devices).
    for (nh, nkv, dh, hidden, inter) in [
        (9, 3, 64, 576, 1536),
        (14, 2, 64, 896, 4864),
        (40, 10, 128, 5120, 17920),
    ] {
        for (rows, cols) in [(1, 1), (1, 2), (1, 3), (1, 8), (2, 4)] {
            let mut d = dims(nh, nkv, dh, hidden, 1);
            (d.layers, d.intermediate) = (1, inter);
            let p = Plan::new(
                &d,
                mesh(rows, cols),
                &DeviceProfile::wormhole_b0(),
                PlanOptions::default(),
            )
            .unwrap_or_else(|e| panic!("{nh}/{nkv} on {rows}x{cols}: {e}"));
            let h = p.heads();
            assert_eq!(h.is_padded(), !divides(nh, nkv, rows * cols));
        }
    }
}

#[test]
fn a_mesh_no_padding_can_serve_is_refused_before_planning() {
    let err = Plan::new(
        &smollm2_135m(),
        mesh(2, 8),
        &DeviceProfile::wormhole_b0(),
        PlanOptions::default(),
    )
    .unwrap_err();
    assert!(
        matches!(
            err,
            PlanError::MoreDevicesThanHeads {
                heads: 9,
                kv_heads: 3,
                devices: 16
            }
        ),
        "{err}"
    );
    let msg = err.to_string();
    assert_eq!(
        msg,
        "a mesh of 16 devices cannot serve a model with 9 query heads (3 KV heads): every device \
         computes at least one real query head, and padding only adds zero heads. Use a mesh of 1 \
         to 9 devices (e.g. 1x9); any such mesh works for the heads, whether or not its device \
         count divides 9 query or 3 KV heads, because the planner pads each device with zero heads"
    );
    assert!(!msg.contains('\n'));
}
