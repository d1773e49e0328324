//! Plans for Phi-3-mini-128k (dims read from fixtures/configs/phi3-mini-128k.json) on the
//! meshes of the bringup, the report snapshot, and refusals that name the broken constraint.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use tt_shard::{
    CollectiveOp, DecoderDims, DeviceProfile, GateUpLayout, Placement, Plan, PlanError,
    PlanOptions, QkvLayout, WeightKind,
};

/// Reads the sizes out of the HF config (test-only mapping; xtask has the real one).
fn phi3_mini() -> DecoderDims {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../fixtures/configs/phi3-mini-128k.json"
    );
    let text = std::fs::read_to_string(path).unwrap();
    let c: serde_json::Value = serde_json::from_str(&text).unwrap();
    let u = |k: &str| c[k].as_u64().unwrap() as usize;
    DecoderDims {
        hidden: u("hidden_size"),
        heads: u("num_attention_heads"),
        kv_heads: u("num_key_value_heads"),
        head_dim: u("hidden_size") / u("num_attention_heads"),
        intermediate: u("intermediate_size"),
        vocab: u("vocab_size"),
        layers: u("num_hidden_layers"),
        dtype_bytes: 2,
        tied_embeddings: c["tie_word_embeddings"].as_bool().unwrap(),
        qkv_layout: QkvLayout::Fused,
        gate_up_layout: GateUpLayout::Fused,
    }
}

fn plan(
    mesh: &str,
    profile: &DeviceProfile,
    seq_len: usize,
    batch: usize,
) -> Result<Plan, PlanError> {
    Plan::new(
        &phi3_mini(),
        mesh.parse().unwrap(),
        profile,
        PlanOptions { seq_len, batch },
    )
}

#[test]
fn phi3_mini_2x4_wormhole_report_snapshot() {
    let p = plan("2x4", &DeviceProfile::wormhole_b0(), 4096, 1).unwrap();
    insta::assert_snapshot!("phi3_mini_128k_2x4_wormhole_b0", p.to_string());
}

#[test]
fn phi3_mini_2x4_wormhole_numbers() {
    let p = plan("2x4", &DeviceProfile::wormhole_b0(), 4096, 1).unwrap();
    let m = &p.memory()[0];
    // 0.906 GB of layer matmul shards + norms, the 4032-row lm_head shard, the replicated table.
    let layer_matmuls: u64 = [WeightKind::Q, WeightKind::K, WeightKind::V, WeightKind::O]
        .into_iter()
        .chain([WeightKind::Gate, WeightKind::Up, WeightKind::Down])
        .map(|k| p.weight(k).unwrap().stored_bytes_per_device)
        .sum();
    assert_eq!(layer_matmuls, 905_969_664);
    assert_eq!(m.layer_weight_bytes, 905_969_664 + 2 * 32 * 3072 * 2);
    let lm = p.weight(WeightKind::LmHead).unwrap();
    assert_eq!(lm.device_shape, vec![4008, 3072]);
    assert_eq!(lm.padded_shape, vec![4032, 3072]);
    assert_eq!(lm.stored_bytes_per_device, 4032 * 3072 * 2);
    let emb = p.weight(WeightKind::Embedding).unwrap();
    assert_eq!(emb.placement, Placement::Replicated);
    assert_eq!(emb.stored_bytes_per_device, 32064 * 3072 * 2);
    assert_eq!(emb.stored_bytes_per_device, 197_001_216);
    assert_eq!(
        m.weight_bytes,
        905_969_664 + 4032 * 3072 * 2 + 197_001_216 + 65 * 3072 * 2
    );
    assert_eq!(m.weight_bytes, 1_128_142_848);
    assert!((m.weight_bytes as f64 / 1e9 - 1.128).abs() < 5e-4);
    // All 8 devices: checkpoint once + tile padding of the lm_head + 7 extra copies of the
    // replicated tensors.
    let t = p.totals();
    assert_eq!(t.checkpoint_bytes, 3_821_079_552 * 2);
    assert_eq!(t.padding_bytes, 8 * 24 * 3072 * 2);
    assert_eq!(
        t.replication_bytes,
        7 * (197_001_216 + (2 * 32 + 1) * 3072 * 2)
    );
    assert_eq!(t.stored_bytes, 8 * m.weight_bytes);
    // 64 all_reduces per decode token of 3072 values each; the vocab gathered once.
    let c = p.collectives();
    assert_eq!(c.all_reduces_per_token, 64);
    let ar: Vec<_> = c
        .steps
        .iter()
        .filter(|s| s.op == CollectiveOp::AllReduce)
        .collect();
    assert_eq!(ar.len(), 2);
    assert!(
        ar.iter()
            .all(|s| s.values_per_token == 3072 && s.calls_per_token == 32)
    );
    assert_eq!(ar[0].after, WeightKind::O);
    assert_eq!(ar[1].after, WeightKind::Down);
    assert_eq!(ar[0].ring_bytes_per_device, 2 * 7 * 6144 / 8);
    let gather = c
        .steps
        .iter()
        .find(|s| s.op == CollectiveOp::Gather)
        .unwrap();
    assert_eq!(
        (gather.after, gather.values_per_token),
        (WeightKind::LmHead, 32064)
    );
    // KV cache: 4 KV heads x 96 x K,V x 32 layers x 2 B per token per device.
    let kv = p.kv_cache();
    assert_eq!(kv.shape, vec![1, 4, 4096, 96]);
    assert_eq!(kv.bytes_per_token, 4 * 96 * 2 * 32 * 2);
    assert_eq!(kv.bytes, 4096 * kv.bytes_per_token);
    assert_eq!(p.rotary_dim(), 128);
}

#[test]
fn batch_32_all_reduce_is_196608_bytes() {
    let p = plan("2x4", &DeviceProfile::wormhole_b0(), 256, 32).unwrap();
    let s = &p.collectives().steps[0];
    assert_eq!(s.bytes_per_call, 196_608);
    assert_eq!(p.kv_cache().shape, vec![32, 4, 256, 96]);
}

#[test]
fn fused_ranges_give_each_device_its_own_heads() {
    let p = plan("2x4", &DeviceProfile::wormhole_b0(), 4096, 1).unwrap();
    for d in 0..8 {
        let q = p.shard_of(WeightKind::Q, d).unwrap().rows();
        let k = p.shard_of(WeightKind::K, d).unwrap().rows();
        let v = p.shard_of(WeightKind::V, d).unwrap().rows();
        assert_eq!(q, 384 * d..384 * (d + 1));
        assert_eq!(k, 3072 + 384 * d..3072 + 384 * (d + 1));
        assert_eq!(v, 6144 + 384 * d..6144 + 384 * (d + 1));
        let gate = p.shard_of(WeightKind::Gate, d).unwrap().rows();
        let up = p.shard_of(WeightKind::Up, d).unwrap().rows();
        assert_eq!(gate, 1024 * d..1024 * (d + 1));
        assert_eq!(up, 8192 + 1024 * d..8192 + 1024 * (d + 1));
        let o = p.shard_of(WeightKind::O, d).unwrap();
        assert_eq!((o.rows(), o.cols()), (0..3072, 384 * d..384 * (d + 1)));
        let down = p.shard_of(WeightKind::Down, d).unwrap();
        assert_eq!(
            (down.rows(), down.cols()),
            (0..3072, 1024 * d..1024 * (d + 1))
        );
        assert_eq!(
            p.shard_of(WeightKind::LmHead, d).unwrap().rows(),
            4008 * d..4008 * (d + 1)
        );
        assert_eq!(p.device_heads(d).unwrap().q_heads, 4 * d..4 * (d + 1));
    }
    assert!(matches!(
        p.shard_of(WeightKind::Q, 8),
        Err(PlanError::DeviceOutOfRange {
            device: 8,
            devices: 8
        })
    ));
}

#[test]
fn plans_exist_for_all_bringup_meshes() {
    for profile in [DeviceProfile::host(), DeviceProfile::wormhole_b0()] {
        for (mesh, heads, inter, vocab) in [
            ("1x1", 32, 8192, 32064),
            ("1x2", 16, 4096, 16032),
            ("1x8", 4, 1024, 4008),
            ("2x4", 4, 1024, 4008),
            ("4x8", 1, 256, 1002),
        ] {
            let p = plan(mesh, &profile, 4096, 1).unwrap();
            assert_eq!(p.heads().heads_per_device, heads, "{mesh}");
            assert_eq!(p.heads().kv_heads_per_device, heads, "{mesh}");
            assert_eq!(p.intermediate_split().per_part, inter, "{mesh}");
            assert_eq!(p.vocab_split().per_part, vocab, "{mesh}");
            let lm = p.weight(WeightKind::LmHead).unwrap();
            assert_eq!(lm.padded_shape[0], profile.pad(vocab), "{mesh}");
            assert_eq!(p.collectives().noop, mesh == "1x1");
        }
    }
    // 4x8 under wormhole: 1002 logits per device pad to 1024.
    let p = plan("4x8", &DeviceProfile::wormhole_b0(), 4096, 1).unwrap();
    assert_eq!(
        p.weight(WeightKind::LmHead).unwrap().padded_shape,
        vec![1024, 3072]
    );
    assert_eq!(
        p.shard_of(WeightKind::K, 31).unwrap().rows(),
        3072 + 31 * 96..3072 + 32 * 96
    );
}

#[test]
fn impossible_mesh_is_refused_naming_the_constraint() {
    // 64 devices: more than the 32 query heads, which no padding can serve.
    let err = plan("8x8", &DeviceProfile::host(), 16, 1).unwrap_err();
    assert!(matches!(
        err,
        PlanError::MoreDevicesThanHeads {
            heads: 32,
            kv_heads: 32,
            devices: 64
        }
    ));
    let msg = err.to_string();
    assert!(
        msg.contains("a mesh of 64 devices cannot serve a model with 32 query heads"),
        "{msg}"
    );
    assert!(msg.contains("Use a mesh of 1 to 32 devices"), "{msg}");
    // 6 devices plan: 32 heads pad to 6 x 6, 8192 intermediate to 6 x 1366.
    let p = plan("1x6", &DeviceProfile::wormhole_b0(), 4096, 1).unwrap();
    assert!(p.heads().is_padded());
    assert_eq!(p.heads().heads_per_device, 6);
    assert_eq!(p.intermediate_split().padded_total(), 8196);
}

#[test]
fn memory_overflow_reports_needed_and_available() {
    // One chip: 7.64 GB of weights + 393,216 B/token of cache; 131072 tokens do not fit.
    let err = plan("1x1", &DeviceProfile::wormhole_b0(), 131_072, 1).unwrap_err();
    let PlanError::OutOfMemory {
        needed,
        available,
        weights,
        kv_cache,
        ..
    } = err.clone()
    else {
        panic!("expected OutOfMemory, got {err}");
    };
    assert_eq!(available, 12_000_000_000);
    assert_eq!(kv_cache, 131_072 * 393_216);
    assert_eq!(needed, weights + kv_cache);
    assert!(err.to_string().contains("use more devices"), "{err}");
    // The same cache fits on 8 chips.
    plan("2x4", &DeviceProfile::wormhole_b0(), 131_072, 1).unwrap();
    // The host is unbounded unless given a budget.
    plan("1x1", &DeviceProfile::host(), 131_072, 1).unwrap();
    assert!(matches!(
        plan("1x1", &DeviceProfile::host_with_budget(1 << 30), 16, 1),
        Err(PlanError::OutOfMemory {
            available: 1_073_741_824,
            ..
        })
    ));
}

#[test]
fn json_report_carries_the_numbers() {
    let p = plan("2x4", &DeviceProfile::wormhole_b0(), 4096, 1).unwrap();
    let v: serde_json::Value = serde_json::from_str(&p.to_json().unwrap()).unwrap();
    assert_eq!(v["memory"][0]["weight_bytes"], 1_128_142_848u64);
    assert_eq!(v["vocab"]["per_part"], 4008);
    assert_eq!(v["collectives"]["all_reduces_per_token"], 64);
    assert_eq!(v["kv_cache"]["bytes_per_token"], 49_152);
    assert_eq!(v["mesh"]["rows"], 2);
    let lm = v["weights"]
        .as_array()
        .unwrap()
        .iter()
        .find(|w| w["kind"] == "LmHead")
        .unwrap();
    assert_eq!(lm["padded_shape"], serde_json::json!([4032, 3072]));
    assert_eq!(
        lm["shards"][1]["ranges"][0],
        serde_json::json!({"start": 4008, "end": 8016})
    );
    let back: Plan = serde_json::from_value(v).unwrap();
    assert_eq!(back, p);
}
