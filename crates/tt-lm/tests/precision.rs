//! Precision presets end to end on the tiny fixtures: the logits leave the device in the preset's
//! format, the device numbers stay close to the exact ones, the mesh's ledger holds packed bytes.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};

use tt_decoder::{Logits, Model, Preset, RuntimeOptions, open_checkpoint_dir};
use tt_mesh::MeshShape;
use tt_numerics::StorageFormat;
use tt_numerics::bf16::round_bf16;
use tt_ops::round_to_device_format;

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../fixtures")
        .join(name)
}

fn load(name: &str, mesh: (usize, usize), spec: &str) -> Model {
    let ckpt = open_checkpoint_dir(&fixture(name), &tt_lm::families()).unwrap();
    let mut opts = RuntimeOptions::new(MeshShape::new(mesh.0, mesh.1).unwrap());
    opts.precision = Some(Preset::parse(spec).unwrap());
    opts.max_seq_len = 32;
    Model::load(&ckpt, &opts).unwrap_or_else(|e| panic!("{name} {spec} on {mesh:?}: {e}"))
}

/// All-position logits of a fixed prompt.
fn logits(model: &Model) -> (Vec<f32>, usize) {
    let vocab = model.config().vocab_size;
    let tokens: Vec<u32> = (0..12).map(|i| (i * 37 + 5) % vocab as u32).collect();
    let mut cache = model.new_cache().unwrap();
    let out = model.prefill(&mut cache, 0, &tokens, Logits::All).unwrap();
    (out.to_f32_vec(), vocab)
}

/// Pearson correlation (the shared test helper's).
fn pcc(a: &[f32], b: &[f32]) -> f64 {
    tt_hf::testutil::compare(a, b).0
}

/// Bytes in use on device 0 (weights; no cache allocated yet).
fn device0_bytes(model: &Model) -> u64 {
    model.mesh().memory(0).unwrap().used
}

#[test]
fn logits_leave_the_device_in_the_preset_format() {
    for name in ["phi3-tiny", "llama-tiny-gqa"] {
        let (exact, vocab) = logits(&load(name, (1, 1), "f32"));
        // bf16 and seed: every logit is a bf16 value.
        for spec in ["bf16", "seed"] {
            let (l, _) = logits(&load(name, (1, 1), spec));
            assert!(l.iter().all(|&x| round_bf16(x) == x), "{name} {spec}");
            let p = pcc(&l, &exact);
            assert!(p > 0.999, "{name} {spec}: PCC {p}");
        }
        // accuracy and performance: bfloat8_b logits, 16 per shared exponent along the vocab.
        for (spec, min_pcc) in [("accuracy", 0.995), ("performance", 0.98)] {
            let (l, _) = logits(&load(name, (1, 1), spec));
            let mut again = l.clone();
            round_to_device_format(&mut again, vocab, StorageFormat::Bfp8B).unwrap();
            assert_eq!(again, l, "{name} {spec}: not bfp8 values");
            let mut bf16_only = l.clone();
            round_to_device_format(&mut bf16_only, vocab, StorageFormat::Bfp4B).unwrap();
            assert_ne!(bf16_only, l, "{name} {spec}: logits are coarser than bfp8");
            let p = pcc(&l, &exact);
            assert!(p > min_pcc, "{name} {spec}: PCC {p}");
            assert!(p < 1.0, "{name} {spec}: identical to f32");
        }
    }
}

#[test]
fn device_numerics_agree_across_meshes() {
    for name in ["phi3-tiny", "llama-tiny-odd"] {
        // bfloat4_b is coarse, and a device packs its own shard: where a shard's rows do not
        // start on a multiple of 16 (padded heads, uneven MLP slices) its exponent groups differ
        // from the whole matrix's.
        for (spec, min_pcc) in [("seed", 0.999), ("accuracy", 0.999), ("performance", 0.995)] {
            let (one, _) = logits(&load(name, (1, 1), spec));
            let (eight, _) = logits(&load(name, (2, 4), spec));
            // Sharded sums round differently (each device writes its partial in bf16), so the
            // meshes agree closely, not bit for bit.
            let p = pcc(&one, &eight);
            assert!(p > min_pcc, "{name} {spec}: 1x1 vs 2x4 PCC {p}");
        }
    }
}

#[test]
fn packed_weights_take_their_formats_bytes() {
    let bf16 = device0_bytes(&load("llama-tiny-gqa", (1, 1), "bf16"));
    let acc = device0_bytes(&load("llama-tiny-gqa", (1, 1), "accuracy"));
    let perf = device0_bytes(&load("llama-tiny-gqa", (1, 1), "performance"));
    // bfp8 tiles are 1088 B against bf16's 2048 B (the embedding stays bf16 and small
    // matrices pad to whole tiles, so the whole model is not exactly 8.5/16).
    assert!(acc < bf16, "accuracy {acc} vs bf16 {bf16}");
    assert!(perf < acc, "performance {perf} vs accuracy {acc}");
}

#[test]
fn overrides_reach_the_model() {
    // Setting every knob of `accuracy` back to exact gives the f32 logits exactly.
    let exact_again = "accuracy,qkv.weights=f32,o.weights=f32,ff1_ff3.weights=f32,ff2.weights=f32,\
        lm_head.weights=f32,qkv.fidelity=hifi4,o.fidelity=hifi4,ff1_ff3.fidelity=hifi4,\
        ff2.fidelity=hifi4,lm_head.fidelity=hifi4,qkv.acc=fp32,o.acc=fp32,ff1_ff3.acc=fp32,\
        ff2.acc=fp32,lm_head.acc=fp32,qkv.output=f32,o.output=f32,ff1_ff3.output=f32,\
        ff2.output=f32,lm_head.output=f32,kv_cache.weights=f32,activations.weights=f32";
    let (exact, _) = logits(&load("llama-tiny-gqa", (1, 2), "f32"));
    let (back, _) = logits(&load("llama-tiny-gqa", (1, 2), exact_again));
    assert_eq!(back, exact);
}
