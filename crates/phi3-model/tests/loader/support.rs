//! Shared helpers: repository paths, tiny configs, hand-written safetensors files.

use std::path::{Path, PathBuf};

/// Repository root (two levels above the crate).
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// A tiny valid Phi-3 config (V 16, H 8, 2 heads, 1 KV head, dh 4, I 6, 1 layer, LongRoPE).
pub fn tiny_config() -> serde_json::Value {
    serde_json::json!({
        "model_type": "phi3",
        "vocab_size": 16,
        "hidden_size": 8,
        "intermediate_size": 6,
        "num_hidden_layers": 1,
        "num_attention_heads": 2,
        "num_key_value_heads": 1,
        "max_position_embeddings": 64,
        "original_max_position_embeddings": 16,
        "rms_norm_eps": 1e-5,
        "rope_theta": 10000.0,
        "rope_scaling": {"type": "longrope", "short_factor": [1.0, 1.5], "long_factor": [2.0, 3.0]},
        "sliding_window": null,
        "tie_word_embeddings": false,
        "bos_token_id": 1,
        "eos_token_id": 2,
        "pad_token_id": 0
    })
}

/// One tensor to write: name, dtype string, shape, raw little-endian bytes.
pub struct RawTensor {
    pub name: String,
    pub dtype: String,
    pub shape: Vec<usize>,
    pub data: Vec<u8>,
}

impl RawTensor {
    pub fn f32(name: &str, shape: &[usize], values: &[f32]) -> Self {
        Self {
            name: name.to_string(),
            dtype: "F32".to_string(),
            shape: shape.to_vec(),
            data: values.iter().flat_map(|v| v.to_le_bytes()).collect(),
        }
    }

    pub fn bf16(name: &str, shape: &[usize], values: &[f32]) -> Self {
        Self {
            name: name.to_string(),
            dtype: "BF16".to_string(),
            shape: shape.to_vec(),
            data: values
                .iter()
                .flat_map(|v| half::bf16::from_f32(*v).to_bits().to_le_bytes())
                .collect(),
        }
    }

    pub fn f16(name: &str, shape: &[usize], values: &[f32]) -> Self {
        Self {
            name: name.to_string(),
            dtype: "F16".to_string(),
            shape: shape.to_vec(),
            data: values
                .iter()
                .flat_map(|v| half::f16::from_f32(*v).to_bits().to_le_bytes())
                .collect(),
        }
    }
}

/// Writes a well-formed safetensors file (tensors laid out in the given order).
pub fn write_safetensors(path: &Path, tensors: &[RawTensor]) {
    let mut header = serde_json::Map::new();
    header.insert(
        "__metadata__".to_string(),
        serde_json::json!({"format": "pt"}),
    );
    let mut offset = 0usize;
    for t in tensors {
        header.insert(
            t.name.clone(),
            serde_json::json!({
                "dtype": t.dtype,
                "shape": t.shape,
                "data_offsets": [offset, offset + t.data.len()],
            }),
        );
        offset += t.data.len();
    }
    let data: Vec<u8> = tensors.iter().flat_map(|t| t.data.clone()).collect();
    write_raw(path, &serde_json::Value::Object(header).to_string(), &data);
}

/// Writes length prefix + header text + data, with no checks (for corrupt files).
pub fn write_raw(path: &Path, header: &str, data: &[u8]) {
    let mut bytes = (header.len() as u64).to_le_bytes().to_vec();
    bytes.extend_from_slice(header.as_bytes());
    bytes.extend_from_slice(data);
    std::fs::write(path, bytes).unwrap();
}

/// Deterministic test values: `start + i * step`, exactly representable in bf16 for small i.
pub fn ramp(n: usize, start: f32, step: f32) -> Vec<f32> {
    (0..n).map(|i| start + i as f32 * step).collect()
}

/// Every tensor of a Phi-3 model with `tiny_config()`, as bf16 ramps.
pub fn tiny_model_tensors(config: &phi3_model::Phi3Config) -> Vec<RawTensor> {
    phi3_model::checkpoint::expected_tensors(config)
        .into_iter()
        .enumerate()
        .map(|(k, (name, shape))| {
            let n: usize = shape.iter().product();
            RawTensor::bf16(&name, &shape, &ramp(n, k as f32, 0.25))
        })
        .collect()
}

/// Writes a complete tiny single-file checkpoint into `dir`.
pub fn write_tiny_checkpoint(dir: &Path, config: &serde_json::Value) {
    std::fs::write(dir.join("config.json"), config.to_string()).unwrap();
    let cfg = phi3_model::Phi3Config::from_json_str(&config.to_string()).unwrap();
    write_safetensors(&dir.join("model.safetensors"), &tiny_model_tensors(&cfg));
}
