//! The Llama family on the mesh against HuggingFace fp32 references (fixtures made by
//! `scripts/make_llama_fixtures.py`), through the same entry points `tt-lm` uses.
//!
//! For every fixture and mesh (head counts that do not divide the mesh are padded): all-position
//! logits of a short and a long sequence (PCC >= 0.99999, max abs error <= 1e-3 x max |logit|),
//! HF's greedy `generate` tokens exactly, and per-layer hidden states.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::{Reference, compare, fixture_dir, generate_ref, load};
use tt_decoder::{GenerateOptions, Logits, Sampler, generate};
use tt_ops::Fidelity;

const FIXTURES: [&str; 4] = [
    "llama-tiny-gqa",
    "llama-tiny-tied",
    "llama-tiny-llama3",
    "llama-tiny-odd",
];
const MESHES: [(usize, usize); 5] = [(1, 1), (1, 2), (1, 3), (1, 8), (2, 4)];

#[test]
fn f32_logits_match_hf_on_every_mesh() {
    for name in FIXTURES {
        let r = Reference::open(&fixture_dir(name).join("reference/logits.safetensors"));
        for mesh in MESHES {
            let model = load(&fixture_dir(name), mesh, Fidelity::F32, 128);
            for seq in ["short", "long"] {
                let ids = r.ids(&format!("{seq}.input_ids"));
                let (want, shape) = r.f32(&format!("{seq}.logits"));
                let mut cache = model.new_cache().unwrap();
                let got = model.prefill(&mut cache, 0, &ids, Logits::All).unwrap();
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
fn greedy_generate_reproduces_hf_tokens_on_every_mesh() {
    for name in FIXTURES {
        let r = generate_ref(&fixture_dir(name).join("reference/generate.json"));
        for mesh in MESHES {
            let model = load(&fixture_dir(name), mesh, Fidelity::F32, 128);
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
        let model = load(&fixture_dir(name), (2, 4), Fidelity::F32, 128);
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

#[test]
fn bf16_logits_track_hf() {
    for name in FIXTURES {
        let r = Reference::open(&fixture_dir(name).join("reference/logits.safetensors"));
        let model = load(&fixture_dir(name), (2, 4), Fidelity::Bf16, 128);
        for seq in ["short", "long"] {
            let ids = r.ids(&format!("{seq}.input_ids"));
            let (want, _) = r.f32(&format!("{seq}.logits"));
            let mut cache = model.new_cache().unwrap();
            let got = model.prefill(&mut cache, 0, &ids, Logits::All).unwrap();
            let (pcc, _) = compare(&got.to_f32_vec(), &want);
            assert!(pcc >= 0.999, "{name} {seq}: bf16 pcc {pcc}");
        }
    }
}
