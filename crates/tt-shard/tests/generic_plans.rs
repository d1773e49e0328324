//! Plans of other decoder shapes: a vocab that does not divide, GQA with fewer KV heads than
//! devices, tied embeddings, separate projections, and the tile/rotary constraints.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use tt_shard::{
    DecoderDims, DeviceProfile, GateUpLayout, MeshShape, Plan, PlanError, PlanOptions, QkvLayout,
    SourceTensor, WeightKind,
};

fn dims() -> DecoderDims {
    DecoderDims {
        hidden: 768,
        heads: 12,
        kv_heads: 12,
        head_dim: 64,
        intermediate: 3072,
        vocab: 50257,
        layers: 12,
        dtype_bytes: 2,
        tied_embeddings: true,
        qkv_layout: QkvLayout::Fused,
        gate_up_layout: GateUpLayout::Fused,
    }
}

fn mesh(s: &str) -> MeshShape {
    s.parse().unwrap()
}

#[test]
fn vocab_50257_on_4_devices_is_padded_and_reported() {
    let p = Plan::new(
        &dims(),
        mesh("1x4"),
        &DeviceProfile::wormhole_b0(),
        PlanOptions::default(),
    )
    .unwrap();
    let v = p.vocab_split();
    assert_eq!(
        (v.per_part, v.padded_total(), v.padding()),
        (12565, 50260, 3)
    );
    let lm = p.weight(WeightKind::LmHead).unwrap();
    assert_eq!(lm.device_shape, vec![12565, 768]);
    assert_eq!(lm.padded_shape, vec![12576, 768]);
    assert_eq!(
        p.shard_of(WeightKind::LmHead, 3).unwrap().rows(),
        37695..50257
    );
    // tied: the LM head reads the embedding table and counts as replication.
    assert_eq!(lm.source, SourceTensor::Embedding);
    assert!(!lm.in_checkpoint);
    assert_eq!(lm.checkpoint_bytes, 0);
    assert_eq!(lm.replication_bytes, 50257 * 768 * 2);
    // padding: 4 shards of 12576 rows hold 50257 real rows.
    assert_eq!(lm.padding_bytes, (4 * 12576 - 50257) * 768 * 2);
    let text = p.to_string();
    assert!(
        text.contains("vocab: 50257 (padded to 50260 = 3 rows of zeros at the end)"),
        "{text}"
    );
    assert!(text.contains("tile-padded to 12576"), "{text}");
    assert!(
        text.contains("lm_head (tied: a second copy of embedding)"),
        "{text}"
    );
}

#[test]
fn vocab_50257_on_8_devices() {
    let mut d = dims();
    d.heads = 16;
    d.kv_heads = 16;
    d.head_dim = 48;
    let p = Plan::new(
        &d,
        mesh("2x4"),
        &DeviceProfile::host(),
        PlanOptions::default(),
    )
    .unwrap();
    assert_eq!(p.vocab_split().per_part, 6283);
    assert_eq!(p.vocab_split().padding(), 7);
    assert_eq!(
        p.shard_of(WeightKind::LmHead, 7).unwrap().rows(),
        43981..50257
    );
}

#[test]
fn gqa_with_fewer_kv_heads_than_devices_replicates_them() {
    let d = DecoderDims {
        hidden: 4096,
        heads: 32,
        kv_heads: 4,
        head_dim: 128,
        intermediate: 14336,
        vocab: 128256,
        layers: 32,
        dtype_bytes: 2,
        tied_embeddings: false,
        qkv_layout: QkvLayout::Separate,
        gate_up_layout: GateUpLayout::Separate,
    };
    let p = Plan::new(
        &d,
        mesh("2x4"),
        &DeviceProfile::wormhole_b0(),
        PlanOptions::default(),
    )
    .unwrap();
    let h = p.heads();
    assert_eq!(
        (h.heads_per_device, h.kv_heads_per_device, h.kv_copies),
        (4, 1, 2)
    );
    let k = p.weight(WeightKind::K).unwrap();
    assert_eq!(k.source, SourceTensor::K);
    assert_eq!(k.copies, 2);
    assert_eq!(k.replication_bytes, 4 * 128 * 4096 * 2 * 32);
    // devices 2 and 3 both hold KV head 1.
    assert_eq!(p.shard_of(WeightKind::K, 2).unwrap().rows(), 128..256);
    assert_eq!(p.shard_of(WeightKind::V, 3).unwrap().rows(), 128..256);
    assert_eq!(p.shard_of(WeightKind::Up, 1).unwrap().rows(), 1792..3584);
    assert_eq!(p.kv_cache().copies, 2);
    assert_eq!(p.kv_cache().shape, vec![1, 1, 4096, 128]);
    let text = p.to_string();
    assert!(
        text.contains("each KV head replicated on 2 devices"),
        "{text}"
    );
    assert!(text.contains("k (x2), v (x2)"), "{text}");
}

#[test]
fn kv_heads_that_fit_neither_way_are_padded() {
    // 24 query / 6 KV heads on 4 devices: 6 KV heads neither split nor replicate evenly, so
    // each device gets 2 KV slots of 4 query heads; devices 2 and 3 hold one zero group each.
    let mut d = dims();
    d.heads = 24;
    d.kv_heads = 6;
    d.intermediate = 3072;
    let p = Plan::new(
        &d,
        mesh("1x4"),
        &DeviceProfile::host(),
        PlanOptions::default(),
    )
    .unwrap();
    let h = p.heads();
    assert!(h.is_padded());
    assert_eq!(
        (h.heads_per_device, h.kv_heads_per_device, h.local_group()),
        (8, 2, 4)
    );
    let d3 = p.device_heads(3).unwrap();
    assert_eq!((d3.q_heads.clone(), d3.kv_heads.clone()), (20..24, 5..6));
    assert_eq!(d3.kv_sources, [Some(5), None]);
    assert_eq!(d3.q_sources[..4], [20, 21, 22, 23].map(Some));
    assert_eq!(d3.q_padding(), 4);
    // shards: padded per-device shapes, real-head blocks as ranges.
    let q = p.weight(WeightKind::Q).unwrap();
    assert_eq!(q.device_shape, vec![8 * 64, 768]);
    assert_eq!(
        p.shard_of(WeightKind::Q, 3).unwrap().rows(),
        20 * 64..24 * 64
    );
    assert_eq!(
        p.shard_of(WeightKind::K, 3).unwrap().rows(),
        (24 + 5) * 64..(24 + 6) * 64
    );
    assert_eq!(
        p.shard_of(WeightKind::O, 2).unwrap().cols(),
        16 * 64..20 * 64
    );
    // 8 zero query heads (Q rows + O cols) and 2 zero KV heads (K + V rows), 12 layers.
    let per_head = 64 * 768 * 2 * 12;
    assert_eq!(q.padding_bytes, 8 * per_head);
    assert_eq!(p.weight(WeightKind::K).unwrap().padding_bytes, 2 * per_head);
    let m = &p.memory()[3];
    assert_eq!(m.head_padding_weight_bytes, 4 * 2 * per_head + 2 * per_head);
    assert_eq!(m.kv_cache_padding_bytes, p.kv_cache().bytes / 2);
    assert_eq!(p.memory()[0].kv_cache_padding_bytes, 0);
    let text = p.to_string();
    assert!(text.contains("8 (4 padded)"), "{text}");
    assert!(text.contains("20 21 22 23 - - - -"), "{text}");
}

#[test]
fn intermediate_that_does_not_divide_is_padded() {
    let mut d = dims();
    d.intermediate = 3000;
    d.heads = 16;
    d.kv_heads = 16;
    d.head_dim = 48;
    let p = Plan::new(
        &d,
        mesh("1x16"),
        &DeviceProfile::host(),
        PlanOptions::default(),
    )
    .unwrap();
    let i = p.intermediate_split();
    assert_eq!((i.per_part, i.padded_total(), i.padding()), (188, 3008, 8));
    // The last device holds 180 real rows and 8 zero rows of gate and up, 8 zero down columns.
    assert_eq!(p.shard_of(WeightKind::Gate, 15).unwrap().rows(), 2820..3000);
    assert_eq!(p.shard_of(WeightKind::Up, 15).unwrap().rows(), 5820..6000);
    assert_eq!(p.shard_of(WeightKind::Down, 15).unwrap().cols(), 2820..3000);
    assert_eq!(p.shard_of(WeightKind::Gate, 14).unwrap().rows(), 2632..2820);
    let gate = p.weight(WeightKind::Gate).unwrap();
    assert_eq!(gate.device_shape, vec![188, 768]);
    assert_eq!(gate.padding_bytes, 8 * 768 * 2 * 12);
    let down = p.weight(WeightKind::Down).unwrap();
    assert_eq!(down.device_shape, vec![768, 188]);
    assert_eq!(down.padding_bytes, 8 * 768 * 2 * 12);
    assert!(!p.heads().is_padded());
    let text = p.to_string();
    assert!(
        text.contains(
            "intermediate: 3000 (padded to 3008 = 8 zero gate/up rows and down columns at the end) \
             -> 188 per device"
        ),
        "{text}"
    );
}

#[test]
fn wormhole_tile_and_rotary_constraints() {
    let mut d = dims();
    d.head_dim = 80;
    d.heads = 12;
    let err = Plan::new(
        &d,
        mesh("1x4"),
        &DeviceProfile::wormhole_b0(),
        PlanOptions::default(),
    )
    .unwrap_err();
    assert!(matches!(
        err,
        PlanError::HeadDimNotTileAligned {
            head_dim: 80,
            tile: 32,
            ..
        }
    ));
    // the host has no tile constraint; rotary needs no padding there.
    let p = Plan::new(
        &d,
        mesh("1x4"),
        &DeviceProfile::host(),
        PlanOptions::default(),
    )
    .unwrap();
    assert_eq!(p.rotary_dim(), 80);
    let mut d = dims();
    d.hidden = 760;
    let err = Plan::new(
        &d,
        mesh("1x4"),
        &DeviceProfile::wormhole_b0(),
        PlanOptions::default(),
    )
    .unwrap_err();
    assert!(matches!(
        err,
        PlanError::HiddenNotTileAligned { hidden: 760, .. }
    ));
    let mut d = dims();
    d.head_dim = 63;
    let err = Plan::new(
        &d,
        mesh("1x4"),
        &DeviceProfile::host(),
        PlanOptions::default(),
    )
    .unwrap_err();
    assert!(matches!(err, PlanError::HeadDimOdd { head_dim: 63 }));
    // head_dim 96 passes the tile check and is padded to 128 for rotary.
    let mut d = dims();
    d.head_dim = 96;
    let p = Plan::new(
        &d,
        mesh("1x4"),
        &DeviceProfile::wormhole_b0(),
        PlanOptions::default(),
    )
    .unwrap();
    assert_eq!(p.rotary_dim(), 128);
    assert!(p.to_string().contains("rotary: head_dim 96 padded to 128"));
}

#[test]
fn absurd_sizes_are_errors_not_panics() {
    let mut d = dims();
    d.vocab = 1 << 40;
    assert!(matches!(
        Plan::new(
            &d,
            mesh("1x1"),
            &DeviceProfile::host(),
            PlanOptions::default()
        ),
        Err(PlanError::TooLarge { .. })
    ));
    let big = MeshShape::new(1 << 10, 1 << 10).unwrap();
    assert!(matches!(
        Plan::new(&dims(), big, &DeviceProfile::host(), PlanOptions::default()),
        Err(PlanError::TooLarge { .. })
    ));
    let opts = PlanOptions {
        seq_len: 0,
        batch: 1,
    };
    assert!(matches!(
        Plan::new(&dims(), mesh("1x1"), &DeviceProfile::host(), opts),
        Err(PlanError::ZeroDim { name: "seq_len" })
    ));
    let mut d = dims();
    d.layers = 1 << 28;
    d.hidden = 1 << 28;
    d.vocab = 1 << 28;
    assert!(matches!(
        Plan::new(
            &d,
            mesh("1x1"),
            &DeviceProfile::host(),
            PlanOptions::default()
        ),
        Err(PlanError::TooLarge { .. })
    ));
}
