//! Phi-3's fused `qkv_proj` and `gate_up_proj` run as one pass over the whole matrix exactly
//! when the devices' rows partition it.
#![allow(clippy::unwrap_used)]

use phi3_model::{Checkpoint, RuntimeOptions};
use tt_decoder::FamilyConfig;
use tt_decoder::weights::{LayerWeights, ModelWeights};
use tt_mesh::{Mesh, MeshShape};

/// Layer 0 of a fixture checkpoint on a `rows x cols` mesh.
fn layer0(fixture: &str, rows: usize, cols: usize) -> LayerWeights {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../fixtures")
        .join(fixture);
    let ckpt = Checkpoint::open_dir(&dir).unwrap();
    let options = RuntimeOptions::new(MeshShape::new(rows, cols).unwrap());
    let config = ckpt.config().decoder_config();
    let plan = tt_decoder::plan(&config, &options).unwrap();
    let mesh = Mesh::new(options.mesh, options.profile.clone(), options.topology);
    let mut weights =
        ModelWeights::load(&ckpt, &config, &plan, &mesh, &options.numerics().unwrap()).unwrap();
    weights.layers.swap_remove(0)
}

#[test]
fn fused_projections_cover_every_row_once_or_are_not_used() {
    // 8 query and 8 KV heads on 8 devices: Q, K and V rows partition qkv_proj.
    let w = layer0("phi3-tiny", 2, 4);
    let qkv = w.qkv.fused().unwrap();
    assert_eq!(qkv.parts.len(), 8);
    let (h, dh) = (qkv.full.dim(1).unwrap(), qkv.full.dim(0).unwrap() / 24);
    assert_eq!(
        qkv.parts[1],
        vec![dh..2 * dh, 9 * dh..10 * dh, 17 * dh..18 * dh]
    );
    let gate_up = w.gate_up.fused().unwrap();
    let i_d = gate_up.full.dim(0).unwrap() / 16;
    assert_eq!(gate_up.parts[7], vec![7 * i_d..8 * i_d, 15 * i_d..16 * i_d]);
    assert_eq!(gate_up.full.dim(1).unwrap(), h);
    // 2 KV heads on 8 devices: K and V rows are replicated, so the devices' rows overlap and
    // each device multiplies by its own views.
    let w = layer0("phi3-tiny-gqa", 2, 4);
    assert!(w.qkv.fused().is_none());
    assert!(w.gate_up.fused().is_some());
}
