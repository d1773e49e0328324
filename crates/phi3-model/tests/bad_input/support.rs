//! Helpers: copies of a fixture checkpoint with one thing broken, a tile-aligned synthetic
//! checkpoint for the `wormhole_b0` profile, and the `phi3` binary.

use std::ops::Range;
use std::path::{Path, PathBuf};
use std::process::Command;

use phi3_model::checkpoint::parse_header;
use serde_json::{Map, Value, json};

/// A fixture directory (`fixtures/<name>`).
pub fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../fixtures")
        .join(name)
}

/// `fixtures/phi3-tiny`: 2 layers, 8 heads of 48, vocab 1000, two shards, no tokenizer.
pub fn tiny() -> PathBuf {
    fixture("phi3-tiny")
}

/// The first shard of phi3-tiny (embedding, layer 0, layer 1's o_proj).
pub const SHARD1: &str = "model-00001-of-00002.safetensors";
/// The second shard of phi3-tiny (lm_head, the rest of layer 1, the final norm).
pub const SHARD2: &str = "model-00002-of-00002.safetensors";

/// A copy of the files of fixture `name` in a temporary directory.
pub fn copy_of(name: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for entry in std::fs::read_dir(fixture(name)).unwrap() {
        let path = entry.unwrap().path();
        if path.is_file() {
            std::fs::copy(&path, dir.path().join(path.file_name().unwrap())).unwrap();
        }
    }
    dir
}

/// Edits a JSON file in place.
pub fn edit_json(path: &Path, edit: impl FnOnce(&mut Value)) {
    let mut value: Value = serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap();
    edit(&mut value);
    std::fs::write(path, serde_json::to_vec_pretty(&value).unwrap()).unwrap();
}

/// A copy of phi3-tiny whose config.json is edited by `edit`.
pub fn tiny_with_config(edit: impl FnOnce(&mut Value)) -> tempfile::TempDir {
    let dir = copy_of("phi3-tiny");
    edit_json(&dir.path().join("config.json"), edit);
    dir
}

/// The file holding `tensor` in a sharded checkpoint, and the tensor's byte range in it.
pub fn locate(dir: &Path, tensor: &str) -> (PathBuf, Range<usize>) {
    let index: Value =
        serde_json::from_slice(&std::fs::read(dir.join("model.safetensors.index.json")).unwrap())
            .unwrap();
    let file = dir.join(index["weight_map"][tensor].as_str().unwrap());
    let bytes = std::fs::read(&file).unwrap();
    let records = parse_header(&file, &bytes).unwrap();
    let rec = records.iter().find(|r| r.name == tensor).unwrap();
    assert_eq!(rec.info.dtype, phi3_model::Dtype::BF16);
    (file, rec.bytes.clone())
}

/// Overwrites element `index` of the bf16 tensor `tensor` with `value`.
pub fn poke_bf16(dir: &Path, tensor: &str, index: usize, value: f32) {
    let (file, range) = locate(dir, tensor);
    let mut bytes = std::fs::read(&file).unwrap();
    let at = range.start + 2 * index;
    assert!(at + 2 <= range.end);
    bytes[at..at + 2].copy_from_slice(&half::bf16::from_f32(value).to_bits().to_le_bytes());
    std::fs::write(&file, bytes).unwrap();
}

/// Sets every element of the bf16 tensor `tensor` to `value`.
pub fn fill_bf16(dir: &Path, tensor: &str, value: f32) {
    let (file, range) = locate(dir, tensor);
    let mut bytes = std::fs::read(&file).unwrap();
    let bits = half::bf16::from_f32(value).to_bits().to_le_bytes();
    for pair in bytes[range].chunks_exact_mut(2) {
        pair.copy_from_slice(&bits);
    }
    std::fs::write(&file, bytes).unwrap();
}

/// Rewrites the JSON header of a safetensors file (the data area is kept as it is).
pub fn edit_header(file: &Path, edit: impl FnOnce(&mut Map<String, Value>)) {
    let bytes = std::fs::read(file).unwrap();
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let mut header: Map<String, Value> = serde_json::from_slice(&bytes[8..8 + n]).unwrap();
    edit(&mut header);
    let text = serde_json::to_vec(&header).unwrap();
    let mut out = (text.len() as u64).to_le_bytes().to_vec();
    out.extend_from_slice(&text);
    out.extend_from_slice(&bytes[8 + n..]);
    std::fs::write(file, out).unwrap();
}

/// Size of the data area of a safetensors file.
pub fn data_len(file: &Path) -> u64 {
    let bytes = std::fs::read(file).unwrap();
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap());
    bytes.len() as u64 - 8 - n
}

/// A config whose sizes fit the `wormhole_b0` tiles: H 64, 2 heads of 32, I 64, V 64, 1 layer.
pub fn tile_aligned_config() -> Value {
    json!({
        "model_type": "phi3", "vocab_size": 64, "hidden_size": 64, "intermediate_size": 64,
        "num_hidden_layers": 1, "num_attention_heads": 2, "num_key_value_heads": 2,
        "max_position_embeddings": 256, "rms_norm_eps": 1e-5, "rope_theta": 10000.0,
        "tie_word_embeddings": false, "bos_token_id": 1, "eos_token_id": 2
    })
}

/// Writes a single-file checkpoint of `tile_aligned_config()` (small bf16 ramps) into `dir`.
pub fn write_tile_aligned(dir: &Path) {
    let config = tile_aligned_config();
    std::fs::write(dir.join("config.json"), config.to_string()).unwrap();
    let cfg = phi3_model::Phi3Config::from_json_str(&config.to_string()).unwrap();
    let mut header = Map::new();
    let mut data = Vec::new();
    for (k, (name, shape)) in phi3_model::checkpoint::expected_tensors(&cfg)
        .into_iter()
        .enumerate()
    {
        let n: usize = shape.iter().product();
        let start = data.len();
        for i in 0..n {
            let v = 0.01 * ((i * 7 + k) % 13) as f32 - 0.06;
            data.extend_from_slice(&half::bf16::from_f32(v).to_bits().to_le_bytes());
        }
        header.insert(
            name,
            json!({"dtype": "BF16", "shape": shape, "data_offsets": [start, data.len()]}),
        );
    }
    let text = Value::Object(header).to_string();
    let mut out = (text.len() as u64).to_le_bytes().to_vec();
    out.extend_from_slice(text.as_bytes());
    out.extend_from_slice(&data);
    std::fs::write(dir.join("model.safetensors"), out).unwrap();
}

/// What a run of the `phi3` binary printed.
pub struct Run {
    pub success: bool,
    pub stderr: String,
}

/// Runs the `phi3` binary with `RUST_BACKTRACE=1` (a panic would print a backtrace).
pub fn phi3(args: &[&str]) -> Run {
    let out = Command::new(env!("CARGO_BIN_EXE_phi3"))
        .args(args)
        .env("RUST_BACKTRACE", "1")
        .env_remove("RUST_LOG")
        .output()
        .unwrap();
    Run {
        success: out.status.success(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// Asserts that `run` failed with exactly one paragraph, `error: ...`, holding every needle,
/// and no panic or backtrace.
pub fn assert_refused(run: &Run, needles: &[&str]) {
    let e = &run.stderr;
    assert!(!run.success, "expected a failure, got success; stderr: {e}");
    assert!(e.starts_with("error: "), "{e}");
    assert_eq!(e.trim_end().lines().count(), 1, "not one paragraph: {e}");
    assert!(!e.contains("panicked") && !e.contains("backtrace"), "{e}");
    // Each cause once: the message does not repeat itself.
    let parts: Vec<&str> = e.trim_end().split(": ").filter(|p| p.len() > 20).collect();
    for (i, p) in parts.iter().enumerate() {
        assert!(!parts[i + 1..].contains(p), "repeated {p:?} in: {e}");
    }
    for needle in needles {
        assert!(e.contains(needle), "missing {needle:?} in: {e}");
    }
}
