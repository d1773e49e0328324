//! Built-in seeds of each target (`phi3-fuzz <target> --write-seeds DIR` writes them) and the
//! default corpus and crash directories.

use std::path::{Path, PathBuf};

use phi3_model::Phi3Config;
use phi3_model::checkpoint::expected_tensors;

use crate::targets::{TINY_CONFIG, Target};

/// A safetensors file from `(name, dtype, shape, bytes)` entries laid out in order.
pub fn safetensors_file(tensors: &[(&str, &str, &[usize], Vec<u8>)]) -> Vec<u8> {
    let mut header = serde_json::Map::new();
    header.insert(
        "__metadata__".to_string(),
        serde_json::json!({"format": "pt"}),
    );
    let mut offset = 0usize;
    for (name, dtype, shape, data) in tensors {
        header.insert(
            (*name).to_string(),
            serde_json::json!({"dtype": dtype, "shape": shape, "data_offsets": [offset, offset + data.len()]}),
        );
        offset += data.len();
    }
    let header = serde_json::Value::Object(header).to_string();
    let mut out = (header.len() as u64).to_le_bytes().to_vec();
    out.extend_from_slice(header.as_bytes());
    for (_, _, _, data) in tensors {
        out.extend_from_slice(data);
    }
    out
}

fn bf16_ramp(n: usize, start: f32) -> Vec<u8> {
    (0..n)
        .flat_map(|i| {
            let v = start + i as f32 * 0.25;
            // bf16 = the high half of the f32 bits (truncation is fine for seeds).
            ((v.to_bits() >> 16) as u16).to_le_bytes()
        })
        .collect()
}

/// Built-in seeds of a target (what `--write-seeds` writes), as (file name, bytes).
pub fn builtin_seeds(target: Target) -> Vec<(String, Vec<u8>)> {
    match target {
        Target::Config => vec![
            ("tiny-longrope.json".to_string(), TINY_CONFIG.as_bytes().to_vec()),
            (
                "tiny-plain-rope-parameters.json".to_string(),
                br#"{"model_type": "phi3", "vocab_size": 32, "hidden_size": 16, "intermediate_size": 32, "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 4, "max_position_embeddings": 128, "rope_parameters": {"rope_type": "default", "rope_theta": 500000.0}, "sliding_window": 64, "tie_word_embeddings": true, "eos_token_id": [2, 7], "dtype": "bfloat16"}"#.to_vec(),
            ),
            (
                "generation_config.json".to_string(),
                br#"{"bos_token_id": 1, "eos_token_id": [32000, 32001, 32007], "pad_token_id": 32000, "do_sample": true, "temperature": 0.7, "top_k": 40, "top_p": 0.9, "max_new_tokens": 64}"#.to_vec(),
            ),
        ],
        Target::SafetensorsHeader => {
            let tiny: Vec<(String, Vec<usize>)> = Phi3Config::from_json_str(TINY_CONFIG)
                .map(|c| expected_tensors(&c))
                .unwrap_or_default();
            let tiny_tensors: Vec<(&str, &str, &[usize], Vec<u8>)> = tiny
                .iter()
                .enumerate()
                .map(|(k, (name, shape))| {
                    let n = shape.iter().product();
                    (name.as_str(), "BF16", shape.as_slice(), bf16_ramp(n, k as f32))
                })
                .collect();
            vec![
                (
                    "three-dtypes.safetensors".to_string(),
                    safetensors_file(&[
                        ("a", "BF16", &[2, 3], bf16_ramp(6, 1.0)),
                        ("b", "F32", &[4], [1.0f32, -2.0, 0.5, 8.0].iter().flat_map(|v| v.to_le_bytes()).collect()),
                        ("c", "F16", &[1, 1], vec![0x00, 0x3C]),
                    ]),
                ),
                ("header-only.safetensors".to_string(), safetensors_file(&[])),
                (
                    "empty-and-scalar.safetensors".to_string(),
                    safetensors_file(&[
                        ("empty", "F32", &[0, 4], Vec::new()),
                        ("scalar", "F32", &[], 3.0f32.to_le_bytes().to_vec()),
                    ]),
                ),
                ("tiny-phi3.safetensors".to_string(), safetensors_file(&tiny_tensors)),
            ]
        }
        Target::Index => vec![
            (
                "minimal.index.json".to_string(),
                br#"{"weight_map": {"model.embed_tokens.weight": "model-00001-of-00001.safetensors"}}"#.to_vec(),
            ),
            (
                "two-shards.index.json".to_string(),
                br#"{"metadata": {"total_size": 1232}, "weight_map": {"lm_head.weight": "model-00002-of-00002.safetensors", "model.embed_tokens.weight": "model-00001-of-00002.safetensors", "model.layers.0.input_layernorm.weight": "model-00001-of-00002.safetensors", "model.norm.weight": "model-00002-of-00002.safetensors"}}"#.to_vec(),
            ),
        ],
        Target::Reference => vec![(
            "ids-no-top5.json".to_string(),
            br#"{"format": "tt-phi3-eval-reference", "version": 1, "model": {"id": "fuzz/model", "sha256": "1111111111111111111111111111111111111111111111111111111111111111", "vocab_size": 8}, "tokenizer": {"sha256": "2222222222222222222222222222222222222222222222222222222222222222"}, "generator": {"transformers": "5.24.0", "dtype": "float32"}, "prompt": {"source": "ids"}, "prompt_len": 2, "prompt_tokens": [1, 2], "max_new_tokens": 3, "generated_tokens": [3, 4, 5]}"#.to_vec(),
        )],
    }
}

/// The committed corpus directory of a target: `fuzz/corpus/<target>`.
pub fn default_corpus_dir(target: Target) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("corpus")
        .join(target.name())
}

/// Where crashes of a target are saved by default: `fuzz/crashes/<target>`.
pub fn default_crash_dir(target: Target) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("crashes")
        .join(target.name())
}
