//! A tt-shard plan and the mesh's memory ledger agree: placing every planned shard (as zeros) on
//! a wormhole_b0 mesh uses exactly the plan's bytes per device, and loading the shards by the
//! plan's ranges reassembles the checkpoint tensors.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::random;
use tt_mesh::{DeviceProfile, Distribution, Mesh, MeshComposer, MeshTensor, Topology};
use tt_ops::{DType, Tensor};
use tt_shard::{DecoderDims, GateUpLayout, Plan, PlanOptions, QkvLayout, WeightKind};

fn dims() -> DecoderDims {
    DecoderDims {
        hidden: 64,
        heads: 8,
        kv_heads: 2,
        head_dim: 32,
        intermediate: 256,
        vocab: 1000,
        layers: 2,
        dtype_bytes: 2,
        tied_embeddings: false,
        qkv_layout: QkvLayout::Fused,
        gate_up_layout: GateUpLayout::Fused,
    }
}

#[test]
fn mesh_memory_matches_the_plan() {
    let profile = DeviceProfile::wormhole_b0();
    let shape = "2x4".parse().unwrap();
    let plan = Plan::new(
        &dims(),
        shape,
        &profile,
        PlanOptions {
            seq_len: 100,
            batch: 3,
        },
    )
    .unwrap();
    let mesh = Mesh::new(shape, profile, Topology::Ring);
    let mut held = Vec::new();
    for w in plan.weights() {
        for _ in 0..w.count {
            let shards = (0..8)
                .map(|_| Tensor::zeros(&w.device_shape, DType::Bf16))
                .collect();
            held.push(MeshTensor::from_shards(&mesh, shards, Distribution::Unspecified).unwrap());
        }
    }
    for d in 0..8 {
        assert_eq!(mesh.memory(d).unwrap().used, plan.memory()[d].weight_bytes);
    }
    let kv = plan.kv_cache();
    for _ in 0..kv.tensors {
        held.push(
            MeshTensor::zeros(
                &mesh,
                &kv.shape,
                DType::Bf16,
                Distribution::Sharded { dim: 1 },
            )
            .unwrap(),
        );
    }
    for d in 0..8 {
        assert_eq!(mesh.memory(d).unwrap().used, plan.memory()[d].total_bytes);
    }
    drop(held);
    assert_eq!(mesh.memory(0).unwrap().used, 0);
}

#[test]
fn shards_loaded_by_plan_ranges_reassemble_the_checkpoint() {
    let d = dims();
    let shape = "2x4".parse().unwrap();
    let plan = Plan::new(&d, shape, &DeviceProfile::host(), PlanOptions::default()).unwrap();
    let mesh = Mesh::new(shape, DeviceProfile::host(), Topology::Linear);
    let qkv_rows = (d.heads + 2 * d.kv_heads) * d.head_dim;
    let qkv = random(&[qkv_rows, d.hidden], 5);
    let lm = random(&[d.vocab, d.hidden], 6);
    let rows = |t: &Tensor, r: std::ops::Range<usize>| t.narrow(0, r.start, r.len()).unwrap();
    // Q: each device its own heads' rows; concat over devices gives the Q part of the fused rows.
    let q_shards = (0..8)
        .map(|dev| rows(&qkv, plan.shard_of(WeightKind::Q, dev).unwrap().rows()))
        .collect();
    let q = MeshTensor::from_shards(&mesh, q_shards, Distribution::Sharded { dim: 0 }).unwrap();
    let q_all = mesh.compose(&q, MeshComposer::Concat { dim: 0 }).unwrap();
    assert_eq!(
        q_all.as_f32().unwrap(),
        rows(&qkv, 0..d.q_dim()).as_f32().unwrap()
    );
    // K with 2 KV heads on 8 devices: devices 0-3 hold head 0, devices 4-7 head 1.
    for dev in 0..8 {
        let k = plan.shard_of(WeightKind::K, dev).unwrap().rows();
        let head = dev / 4;
        assert_eq!(
            k,
            d.q_dim() + head * d.head_dim..d.q_dim() + (head + 1) * d.head_dim
        );
    }
    // LM head: 1000 rows -> 125 per device, padded to 128 under tiles (not on the host).
    let lm_shards = (0..8)
        .map(|dev| rows(&lm, plan.shard_of(WeightKind::LmHead, dev).unwrap().rows()))
        .collect();
    let lm_mt =
        MeshTensor::from_shards(&mesh, lm_shards, Distribution::Sharded { dim: 0 }).unwrap();
    let lm_all = mesh
        .compose(&lm_mt, MeshComposer::Concat { dim: 0 })
        .unwrap();
    assert_eq!(lm_all.as_f32().unwrap(), lm.as_f32().unwrap());
}
