//! The conversion of a `llama` GGUF (held in memory) into a HuggingFace checkpoint directory:
//! dequantize every tensor ([`super::dequant`]), un-permute q/k and map the names
//! ([`super::llama`]), write `model.safetensors` (F32, tensors sorted as safetensors sorts them,
//! metadata `{"format": "pt"}`), config.json, generation_config.json, tokenizer.json,
//! tokenizer_config.json and chat_template.jinja.

use std::fs;
use std::path::Path;

use anyhow::{Context, Result, ensure};
use indicatif::{ProgressBar, ProgressStyle};
use rayon::prelude::*;
use safetensors::{Dtype, tensor::TensorView};

use super::{Gguf, dequantize, llama};

/// Converts a `llama` GGUF into an HF checkpoint directory (the files of the manifest, minus it).
pub fn convert(gguf_bytes: &[u8], dir: &Path) -> Result<()> {
    let g = Gguf::parse(gguf_bytes)?;
    let dims = llama::LlamaDims::read(&g)?;
    tracing::info!(?dims.layers, ?dims.hidden, ?dims.heads, ?dims.kv_heads, ?dims.vocab, tensors = g.tensors.len(), version = g.version, alignment = g.alignment, "GGUF parsed");
    let bar = progress(g.tensors.len() as u64, "dequantize");
    let converted = g
        .tensors
        .par_iter()
        .filter_map(|t| llama::hf_name(&t.name).map(|name| (t, name)))
        .map(|(t, name)| {
            let shape = t.shape();
            let mut values = dequantize(
                t.ggml_type,
                g.tensor_bytes(gguf_bytes, t)?,
                t.numel() as usize,
            )
            .with_context(|| format!("tensor {}", t.name))?;
            let heads = if t.name.ends_with(".attn_q.weight") {
                Some(dims.heads)
            } else if t.name.ends_with(".attn_k.weight") {
                Some(dims.kv_heads)
            } else {
                None
            };
            if let Some(heads) = heads {
                ensure!(shape.len() == 2, "{} is not a matrix", t.name);
                values = llama::reverse_permute(&values, shape[0], shape[1], heads)?;
            }
            let bytes: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
            bar.inc(1);
            Ok((name, shape, bytes))
        })
        .collect::<Result<Vec<_>>>()?;
    bar.finish_and_clear();
    ensure!(
        converted.len() == 2 + 9 * dims.layers + usize::from(!dims.tied),
        "{} tensors map to HF names; a {}-layer Llama has {}",
        converted.len(),
        dims.layers,
        2 + 9 * dims.layers + usize::from(!dims.tied)
    );
    let views = converted
        .iter()
        .map(|(name, shape, bytes)| {
            Ok((
                name.clone(),
                TensorView::new(Dtype::F32, shape.clone(), bytes)?,
            ))
        })
        .collect::<Result<Vec<_>>>()?;
    let metadata = std::collections::HashMap::from([("format".to_string(), "pt".to_string())]);
    safetensors::serialize_to_file(views, Some(metadata), &dir.join("model.safetensors"))
        .context("write model.safetensors")?;

    write(
        dir,
        "config.json",
        &llama::to_python_json(&dims.config_json())?,
    )?;
    write(
        dir,
        "generation_config.json",
        &llama::to_python_json(&dims.generation_config_json())?,
    )?;
    let tokenizer: tokenizers::Tokenizer = serde_json::to_string(&llama::tokenizer_json(&g)?)?
        .parse()
        .map_err(|e| anyhow::anyhow!("the tokenizer built from the GGUF does not load: {e}"))?;
    let tokenizer = tokenizer
        .to_string(true)
        .map_err(|e| anyhow::anyhow!("serialize the tokenizer: {e}"))?;
    write(dir, "tokenizer.json", &tokenizer)?;
    let tc = llama::tokenizer_config_json(&g, &dims)?;
    write(dir, "tokenizer_config.json", &llama::to_python_json(&tc)?)?;
    write(
        dir,
        "chat_template.jinja",
        g.get_str("tokenizer.chat_template")?,
    )?;
    Ok(())
}

fn write(dir: &Path, name: &str, text: &str) -> Result<()> {
    fs::write(dir.join(name), text).with_context(|| format!("write {}", dir.join(name).display()))
}

/// A progress bar with a label.
pub fn progress(len: u64, what: &str) -> ProgressBar {
    let bar = ProgressBar::new(len);
    if let Ok(style) = ProgressStyle::with_template("{msg:>12} [{bar:40}] {pos}/{len} ({eta})") {
        bar.set_style(style.progress_chars("=> "));
    }
    bar.set_message(what.to_string());
    bar
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    /// A one-layer `llama` GGUF (hidden 32, 2 heads, 1 KV head, Q4_1/Q8_0/F32 tensors, a four-token
    /// byte-level vocabulary) converted end to end.
    #[test]
    fn converts_a_tiny_llama_gguf() {
        use crate::gguf::tests::{build, string_value};
        let u32v = |v: u32| v.to_le_bytes().to_vec();
        let f32v = |v: f32| v.to_le_bytes().to_vec();
        let strings = |items: &[&str]| {
            let mut out = 8u32.to_le_bytes().to_vec();
            out.extend((items.len() as u64).to_le_bytes());
            for s in items {
                out.extend(string_value(s));
            }
            out
        };
        let mut types = 5u32.to_le_bytes().to_vec();
        types.extend(4u64.to_le_bytes());
        for t in [3i32, 1, 1, 1] {
            types.extend(t.to_le_bytes());
        }
        let kv = vec![
            ("general.architecture", 8, string_value("llama")),
            ("general.name", 8, string_value("tiny")),
            ("llama.block_count", 4, u32v(1)),
            ("llama.context_length", 4, u32v(64)),
            ("llama.embedding_length", 4, u32v(32)),
            ("llama.feed_forward_length", 4, u32v(32)),
            ("llama.attention.head_count", 4, u32v(2)),
            ("llama.attention.head_count_kv", 4, u32v(1)),
            ("llama.rope.freq_base", 6, f32v(10000.0)),
            ("llama.attention.layer_norm_rms_epsilon", 6, f32v(1e-5)),
            ("tokenizer.ggml.model", 8, string_value("gpt2")),
            (
                "tokenizer.ggml.tokens",
                9,
                strings(&["<|endoftext|>", "a", "b", "ab"]),
            ),
            ("tokenizer.ggml.token_type", 9, types),
            ("tokenizer.ggml.merges", 9, strings(&["a b"])),
            ("tokenizer.ggml.bos_token_id", 4, u32v(0)),
            ("tokenizer.ggml.eos_token_id", 4, u32v(0)),
            ("tokenizer.chat_template", 8, string_value("{{ messages }}")),
        ];
        // Q4_1 rows of 32: d = 1, m = -8 - row, nibbles q = j % 16 (value q - 8 - row).
        let q4_1 = |rows: usize| -> Vec<u8> {
            let mut out = Vec::new();
            for r in 0..rows {
                out.extend(half::f16::from_f32(1.0).to_le_bytes());
                out.extend(half::f16::from_f32(-8.0 - r as f32).to_le_bytes());
                out.extend((0..16u8).map(|j| j | (j << 4)));
            }
            out
        };
        let mut embd = Vec::new();
        for r in 0..4 {
            embd.extend(half::f16::from_f32(0.5).to_le_bytes());
            embd.extend((0..32).map(|j| (j as i8 - r) as u8));
        }
        let norm: Vec<u8> = (0..32)
            .flat_map(|i| (1.0 + i as f32 / 32.0).to_le_bytes())
            .collect();
        let tensors: Vec<(&str, &[u64], u32, Vec<u8>)> = vec![
            ("token_embd.weight", &[32, 4], 8, embd),
            ("blk.0.attn_norm.weight", &[32], 0, norm.clone()),
            ("blk.0.ffn_norm.weight", &[32], 0, norm.clone()),
            ("blk.0.attn_q.weight", &[32, 32], 3, q4_1(32)),
            ("blk.0.attn_k.weight", &[32, 16], 3, q4_1(16)),
            ("blk.0.attn_v.weight", &[32, 16], 3, q4_1(16)),
            ("blk.0.attn_output.weight", &[32, 32], 3, q4_1(32)),
            ("blk.0.ffn_gate.weight", &[32, 32], 3, q4_1(32)),
            ("blk.0.ffn_up.weight", &[32, 32], 3, q4_1(32)),
            ("blk.0.ffn_down.weight", &[32, 32], 3, q4_1(32)),
            ("output_norm.weight", &[32], 0, norm),
        ];
        let file = build(&kv, &tensors);
        let dir = tempfile::tempdir().unwrap();
        convert(&file, dir.path()).unwrap();

        let bytes = fs::read(dir.path().join("model.safetensors")).unwrap();
        let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
        let mut names = st.names();
        names.sort();
        assert_eq!(names.len(), 11);
        assert!(!names.iter().any(|n| n.contains("lm_head")));
        let get = |name: &str| -> (Vec<usize>, Vec<f32>) {
            let t = st.tensor(name).unwrap();
            let v = t
                .data()
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect();
            (t.shape().to_vec(), v)
        };
        let (shape, embed) = get("model.embed_tokens.weight");
        assert_eq!(shape, [4, 32]);
        assert_eq!(embed[32 + 5], (5.0 - 1.0) * 0.5);
        // Row r of the GGUF q weight holds q - 8 - r; HF row h*16 + a*8 + j is GGUF row h*16 + 2j + a.
        let (shape, q) = get("model.layers.0.self_attn.q_proj.weight");
        assert_eq!(shape, [32, 32]);
        for (h, a, j) in [(0, 0, 0), (0, 1, 0), (0, 0, 3), (1, 1, 7)] {
            let gguf_row = h * 16 + 2 * j + a;
            let hf_row = h * 16 + a * 8 + j;
            assert_eq!(
                q[hf_row * 32 + 5],
                5.0 - 8.0 - gguf_row as f32,
                "row {hf_row}"
            );
        }
        // k has one head: HF row a*8 + j is GGUF row 2j + a.
        let (shape, k) = get("model.layers.0.self_attn.k_proj.weight");
        assert_eq!(shape, [16, 32]);
        assert_eq!(k[8 * 32], -8.0 - 1.0);
        // v is not permuted.
        let (_, v) = get("model.layers.0.self_attn.v_proj.weight");
        assert_eq!(v[3 * 32 + 20], 4.0 - 8.0 - 3.0);

        let config: serde_json::Value =
            serde_json::from_str(&fs::read_to_string(dir.path().join("config.json")).unwrap())
                .unwrap();
        assert_eq!(config["num_attention_heads"], 2);
        assert_eq!(config["num_key_value_heads"], 1);
        assert_eq!(config["head_dim"], 16);
        assert_eq!(config["tie_word_embeddings"], true);
        assert_eq!(config["vocab_size"], 4);
        assert_eq!(config["rope_parameters"]["rope_theta"], 10000.0);
        let raw = fs::read_to_string(dir.path().join("config.json")).unwrap();
        assert!(
            raw.contains("\"rms_norm_eps\": 9.999999747378752e-06"),
            "{raw}"
        );
        let tok = tokenizers::Tokenizer::from_file(dir.path().join("tokenizer.json")).unwrap();
        assert_eq!(
            tok.encode("ab<|endoftext|>a", false).unwrap().get_ids(),
            [3, 0, 1]
        );
        let tc: serde_json::Value = serde_json::from_str(
            &fs::read_to_string(dir.path().join("tokenizer_config.json")).unwrap(),
        )
        .unwrap();
        assert_eq!(tc["chat_template"], "{{ messages }}");
        assert_eq!(tc["eos_token"], "<|endoftext|>");
    }
}
