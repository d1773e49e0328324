//! The mesh model against HuggingFace fp32 references (fixtures made by `cargo xtask fixtures`).
//!
//! For every fixture and mesh: all-position logits for a sequence shorter and one longer than
//! `original_max_position_embeddings` (PCC and max-abs error), HF's greedy `generate` tokens
//! exactly (the generation crosses the LongRoPE switch), and per-layer hidden states.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use phi3_model::{
    Checkpoint, GenerateOptions, Logits, Phi3Model, RuntimeOptions, Sampler, generate,
};
use tt_hf::testutil::{Reference, compare, fixture_dir, generate_ref};
use tt_mesh::MeshShape;
use tt_ops::{Fidelity, Tensor};

const FIXTURES: [&str; 4] = [
    "phi3-tiny",
    "phi3-tiny-gqa",
    "phi3-tiny-window",
    "phi3-tiny-tied",
];
// 1x3 pads the 8 heads (and the 2 KV heads of phi3-tiny-gqa) with zero heads.
const MESHES: [(usize, usize); 5] = [(1, 1), (1, 2), (1, 3), (1, 8), (2, 4)];

fn load(name: &str, mesh: (usize, usize), fidelity: Fidelity) -> Phi3Model {
    let ckpt = Checkpoint::open_dir(&fixture_dir(name)).unwrap();
    let mut opts = RuntimeOptions::new(MeshShape::new(mesh.0, mesh.1).unwrap());
    opts.fidelity = fidelity;
    opts.max_seq_len = 128;
    Phi3Model::load(&ckpt, &opts).unwrap()
}

fn logits_of(model: &Phi3Model, ids: &[u32]) -> Tensor {
    let mut cache = model.new_cache().unwrap();
    model.prefill(&mut cache, 0, ids, Logits::All).unwrap()
}

#[test]
fn f32_logits_match_hf_on_every_mesh() {
    for name in FIXTURES {
        let r = Reference::open(&fixture_dir(name).join("reference/logits.safetensors"));
        for mesh in MESHES {
            let model = load(name, mesh, Fidelity::F32);
            for seq in ["short", "long"] {
                let ids = r.ids(&format!("{seq}.input_ids"));
                let (want, shape) = r.f32(&format!("{seq}.logits"));
                let got = logits_of(&model, &ids);
                assert_eq!(got.shape(), shape.as_slice());
                let (pcc, max_err) = compare(&got.to_f32_vec(), &want);
                let scale = want.iter().fold(0.0f64, |m, &x| m.max(f64::from(x).abs()));
                assert!(
                    pcc >= 0.99999 && max_err <= 1e-3 * scale,
                    "{name} {mesh:?} {seq}: pcc {pcc}, max abs err {max_err} (max |logit| {scale})"
                );
            }
        }
    }
}

#[test]
fn bf16_logits_track_hf() {
    for name in FIXTURES {
        let r = Reference::open(&fixture_dir(name).join("reference/logits.safetensors"));
        let model = load(name, (2, 4), Fidelity::Bf16);
        for seq in ["short", "long"] {
            let ids = r.ids(&format!("{seq}.input_ids"));
            let (want, _) = r.f32(&format!("{seq}.logits"));
            let (pcc, _) = compare(&logits_of(&model, &ids).to_f32_vec(), &want);
            assert!(pcc >= 0.999, "{name} {seq}: bf16 pcc {pcc}");
        }
    }
}

#[test]
fn greedy_generate_reproduces_hf_tokens_on_every_mesh() {
    for name in FIXTURES {
        let r = generate_ref(&fixture_dir(name).join("reference/generate.json"));
        for mesh in MESHES {
            let model = load(name, mesh, Fidelity::F32);
            let mut cache = model.new_cache().unwrap();
            let opts = GenerateOptions {
                max_new_tokens: r.max_new_tokens,
                min_new_tokens: 0,
                stop_tokens: r.eos_token_id.clone(),
            };
            let (out, _) = generate(
                &model,
                &mut cache,
                std::slice::from_ref(&r.prompt_ids),
                &mut [Sampler::greedy()],
                &opts,
                &mut |_, _| {},
            )
            .unwrap();
            assert_eq!(out[0].tokens, r.output_ids, "{name} on {mesh:?}");
        }
    }
}

#[test]
fn hidden_states_match_hf_layer_by_layer() {
    for name in FIXTURES {
        let r = Reference::open(&fixture_dir(name).join("reference/hidden.safetensors"));
        let ids = r.ids("input_ids");
        let model = load(name, (2, 4), Fidelity::F32);
        let mut cache = model.new_cache().unwrap();
        let mut trace = Vec::new();
        model
            .prefill_traced(&mut cache, 0, &ids, Logits::All, Some(&mut trace))
            .unwrap();
        assert_eq!(trace.len(), model.config().num_hidden_layers + 2);
        for (stage, got) in &trace {
            let (want, shape) = r.f32(stage);
            assert_eq!(got.shape(), shape.as_slice(), "{name} {stage}");
            let (pcc, max_err) = compare(&got.to_f32_vec(), &want);
            assert!(
                pcc >= 0.9999,
                "{name}: first disagreement at {stage}: pcc {pcc}, max abs err {max_err}"
            );
        }
    }
}
