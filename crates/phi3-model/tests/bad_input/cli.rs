//! Every bad input of docs/ROBUSTNESS.md through the `phi3` binary: a non-zero exit and one
//! paragraph, `error: ...`, naming the problem (no panic, no backtrace even with
//! RUST_BACKTRACE=1).

use std::path::Path;

use serde_json::{Value, json};

use crate::support::{
    SHARD1, SHARD2, assert_refused, copy_of, data_len, edit_header, edit_json, fixture, phi3,
    poke_bf16, tiny, tiny_with_config, write_tile_aligned,
};

/// An edit of a config.json.
type ConfigEdit = Box<dyn Fn(&mut Value)>;

/// `phi3 generate` on `model` with prompt ids 1,2 and `extra` arguments.
fn generate(model: &Path, extra: &[&str]) -> crate::support::Run {
    let model = model.display().to_string();
    let mut args = vec!["generate", "--model", model.as_str()];
    if !extra.contains(&"--mesh") {
        args.extend(["--mesh", "1x2"]);
    }
    args.extend_from_slice(extra);
    if !extra.iter().any(|a| a.starts_with("--prompt")) {
        args.extend(["--prompt-ids", "1,2"]);
    }
    args.extend(["--max-new-tokens", "2"]);
    phi3(&args)
}

#[test]
fn truncated_shard() {
    let dir = copy_of("phi3-tiny");
    let file = dir.path().join(SHARD2);
    let bytes = std::fs::read(&file).unwrap();
    std::fs::write(&file, &bytes[..bytes.len() - 100]).unwrap();
    assert_refused(
        &generate(dir.path(), &[]),
        &[
            &format!(
                "{SHARD2} is truncated: {} bytes expected, {} present",
                bytes.len(),
                bytes.len() - 100
            ),
            "download it again",
        ],
    );
}

#[test]
fn header_length_past_the_end() {
    let dir = copy_of("phi3-tiny");
    let file = dir.path().join(SHARD1);
    let mut bytes = std::fs::read(&file).unwrap();
    let len = bytes.len() as u64;
    bytes[..8].copy_from_slice(&(len + 1000).to_le_bytes());
    std::fs::write(&file, &bytes).unwrap();
    assert_refused(
        &generate(dir.path(), &[]),
        &[&format!(
            "safetensors header length {} runs past the end of the {len}-byte file",
            len + 1000
        )],
    );
}

#[test]
fn malformed_header_json() {
    let dir = copy_of("phi3-tiny");
    let file = dir.path().join(SHARD1);
    let mut bytes = std::fs::read(&file).unwrap();
    bytes[8] = b'!';
    std::fs::write(&file, &bytes).unwrap();
    assert_refused(
        &generate(dir.path(), &[]),
        &[
            "malformed safetensors header: expected value at line 1 column 1",
            "the file is corrupt",
        ],
    );
}

#[test]
fn offsets_out_of_range() {
    let dir = copy_of("phi3-tiny");
    let file = dir.path().join(SHARD2);
    let end = data_len(&file);
    edit_header(&file, |h| {
        h["model.layers.1.input_layernorm.weight"]["data_offsets"] = json!([end + 64, end + 832]);
    });
    assert_refused(
        &generate(dir.path(), &[]),
        &[&format!(
            "tensor `model.layers.1.input_layernorm.weight` has data offsets [{}, {}) outside the {end}-byte data area",
            end + 64,
            end + 832
        )],
    );
}

#[test]
fn overlapping_tensors() {
    let dir = copy_of("phi3-tiny");
    let file = dir.path().join(SHARD1);
    edit_header(&file, |h| {
        let offsets = h["model.layers.0.input_layernorm.weight"]["data_offsets"].clone();
        h["model.layers.0.post_attention_layernorm.weight"]["data_offsets"] = offsets;
    });
    assert_refused(
        &generate(dir.path(), &[]),
        &[
            "tensors `model.layers.0.input_layernorm.weight` and `model.layers.0.post_attention_layernorm.weight` overlap",
        ],
    );
}

#[test]
fn unsupported_dtype() {
    let dir = copy_of("phi3-tiny");
    edit_header(&dir.path().join(SHARD1), |h| {
        h["model.layers.0.self_attn.o_proj.weight"]["dtype"] = json!("I8");
    });
    assert_refused(
        &generate(dir.path(), &[]),
        &["tensor `model.layers.0.self_attn.o_proj.weight` has dtype I8; only BF16, F16 and F32"],
    );
}

#[test]
fn missing_tensor() {
    let dir = copy_of("phi3-tiny");
    edit_json(&dir.path().join("model.safetensors.index.json"), |v| {
        v["weight_map"]
            .as_object_mut()
            .unwrap()
            .remove("model.layers.1.mlp.down_proj.weight");
    });
    assert_refused(
        &generate(dir.path(), &[]),
        &["tensor `model.layers.1.mlp.down_proj.weight` is missing from the checkpoint"],
    );
}

#[test]
fn tensor_of_the_wrong_shape() {
    let dir = copy_of("phi3-tiny");
    edit_header(&dir.path().join(SHARD1), |h| {
        h["model.layers.0.self_attn.o_proj.weight"]["shape"] = json!([192, 768]);
    });
    assert_refused(
        &generate(dir.path(), &[]),
        &[
            "tensor `model.layers.0.self_attn.o_proj.weight` has shape [192, 768] but config.json implies [384, 384]",
        ],
    );
}

#[test]
fn index_names_a_missing_shard() {
    let dir = copy_of("phi3-tiny");
    std::fs::remove_file(dir.path().join(SHARD2)).unwrap();
    assert_refused(
        &generate(dir.path(), &[]),
        &[
            &format!("names shard `{SHARD2}`"),
            "fetch the missing shard",
        ],
    );
}

#[test]
fn config_missing_field_wrong_type_or_non_positive_sizes() {
    let cases: [(ConfigEdit, &str); 4] = [
        (
            Box::new(|c| {
                c.as_object_mut().unwrap().remove("hidden_size");
            }),
            "config.json: required field `hidden_size` is missing",
        ),
        (
            Box::new(|c| c["hidden_size"] = json!("384")),
            "config.json: field `hidden_size` has the wrong type: invalid type: string \"384\", expected i64",
        ),
        (
            Box::new(|c| c["num_hidden_layers"] = json!(0)),
            "config.json: `num_hidden_layers` must be a positive integer, got 0",
        ),
        (
            Box::new(|c| c["vocab_size"] = json!(-1000)),
            "config.json: `vocab_size` must be a positive integer, got -1000",
        ),
    ];
    for (edit, needle) in cases {
        let dir = tiny_with_config(edit);
        assert_refused(&generate(dir.path(), &[]), &[needle]);
    }
}

#[test]
fn rope_factor_lists_of_the_wrong_length() {
    let dir = tiny_with_config(|c| {
        c["rope_scaling"]["short_factor"]
            .as_array_mut()
            .unwrap()
            .push(json!(1.0));
    });
    assert_refused(
        &generate(dir.path(), &[]),
        &["rope `short_factor` has 25 values, expected 24 (head_dim / 2)"],
    );
}

#[test]
fn tokenizer_that_does_not_fit_the_vocab() {
    // phi3-tiny (vocab 1000) has no tokenizer: the bundled Phi-3 one (ids up to 32010) is used.
    assert_refused(
        &generate(&tiny(), &["--prompt", "hello"]),
        &["the tokenizer has ids up to 32010, but the model's vocab_size is 1000"],
    );
}

#[test]
fn token_id_out_of_range() {
    assert_refused(
        &generate(&tiny(), &["--prompt-ids", "1,5000"]),
        &["token 5000 at index 1 is out of range: the model's vocab_size is 1000"],
    );
}

#[test]
fn empty_prompt() {
    let en = fixture("phi3-tiny-en");
    assert_refused(
        &generate(&en, &["--prompt", ""]),
        &["the prompt is empty: give at least one token"],
    );
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("empty.txt");
    std::fs::write(&file, "\n").unwrap();
    assert_refused(
        &generate(&en, &["--prompt-file", file.to_str().unwrap()]),
        &["the prompt is empty"],
    );
}

#[test]
fn prompt_longer_than_max_seq_len() {
    assert_refused(
        &generate(&tiny(), &["--prompt-ids", "1,2,3", "--max-seq-len", "4"]),
        &["the prompt (3 tokens) plus --max-new-tokens 2 needs 5 positions but --max-seq-len is 4"],
    );
    let model = tiny().display().to_string();
    let out = tempfile::tempdir().unwrap();
    let out = out.path().join("logits.safetensors");
    let run = phi3(&[
        "logits",
        "--model",
        &model,
        "--mesh",
        "1x1",
        "--tokens",
        "1,2,3",
        "--max-seq-len",
        "2",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert_refused(
        &run,
        &["the sequence needs 3 positions but the KV cache holds 2"],
    );
    assert!(!out.exists());
}

#[test]
fn kv_cache_over_the_device_budget() {
    let dir = tempfile::tempdir().unwrap();
    write_tile_aligned(dir.path());
    assert_refused(
        &generate(
            dir.path(),
            &["--profile", "wormhole_b0", "--max-seq-len", "100000000"],
        ),
        &[
            "device 0 needs 12.800 GB",
            "KV cache for 100000000 tokens x batch 1) but profile wormhole_b0 has 12.000 GB",
        ],
    );
    let model = dir.path().display().to_string();
    assert_refused(
        &phi3(&[
            "plan",
            "--model",
            &model,
            "--mesh",
            "1x2",
            "--seq-len",
            "4096",
            "--batch",
            "200000",
        ]),
        &["KV cache for 4096 tokens x batch 200000) but profile wormhole_b0 has 12.000 GB"],
    );
    // The host profile's budget is this machine's memory: phi3-tiny's planned cache is 2 layers
    // x (K, V) x 8 heads x 48 x 2 bytes = 3 kB per token, 614 GB for 200M tokens.
    if tt_mesh::memory::host_memory_bytes().is_some_and(|m| m < 600_000_000_000) {
        assert_refused(
            &generate(&tiny(), &["--mesh", "1x1", "--max-seq-len", "200000000"]),
            &["KV cache for 200000000 tokens x batch 1) but profile host has"],
        );
    }
}

#[test]
fn non_finite_weights() {
    let dir = copy_of("phi3-tiny");
    poke_bf16(
        dir.path(),
        "model.layers.1.mlp.down_proj.weight",
        0,
        f32::NAN,
    );
    assert_refused(
        &generate(dir.path(), &[]),
        &[
            "non-finite value NaN in the output of layer 1",
            "the checkpoint or the input is corrupt",
        ],
    );
}

#[test]
fn mesh_that_no_head_padding_can_serve() {
    assert_refused(
        &generate(&tiny(), &["--mesh", "2x8"]),
        &["a mesh of 16 devices cannot serve a model with 8 query heads"],
    );
}

#[test]
fn prompt_file_that_is_not_utf8() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("latin1.txt");
    std::fs::write(&file, b"caf\xe9 au lait\n").unwrap();
    assert_refused(
        &generate(
            &fixture("phi3-tiny-en"),
            &["--prompt-file", file.to_str().unwrap()],
        ),
        &[&format!(
            "the prompt file {} is not UTF-8 text (invalid byte at offset 3)",
            file.display()
        )],
    );
    assert_refused(
        &generate(&tiny(), &["--prompt-file", "/nonexistent/prompt.txt"]),
        &["cannot read the prompt file /nonexistent/prompt.txt"],
    );
}

#[test]
fn directory_that_is_not_a_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("README.md"), "notes").unwrap();
    assert_refused(
        &generate(dir.path(), &[]),
        &["is not a checkpoint: it holds no config.json and no *.safetensors files"],
    );
    assert_refused(
        &generate(Path::new("/nonexistent/checkpoint"), &[]),
        &["model `/nonexistent/checkpoint` not found"],
    );
}

#[test]
fn other_bad_configs() {
    let cases: [(ConfigEdit, &str); 3] = [
        (
            Box::new(|c| c["model_type"] = json!("llama")),
            "config.json describes a `llama` model, not `phi3`",
        ),
        (
            Box::new(|c| c["rope_scaling"]["type"] = json!("dynamic")),
            "rope type `dynamic` is not supported",
        ),
        (
            Box::new(|c| c["rope_scaling"]["long_factor"][0] = json!(1e-310)),
            "rope `long_factor`[0] = 1e-310 is outside [0.001, 1e6]",
        ),
    ];
    for (edit, needle) in cases {
        let dir = tiny_with_config(edit);
        assert_refused(&generate(dir.path(), &[]), &[needle]);
    }
    // The config of another model: phi3-tiny's weights under a config with other sizes.
    let dir = tiny_with_config(|c| c["intermediate_size"] = json!(512));
    assert_refused(
        &generate(dir.path(), &[]),
        &[
            "tensor `model.layers.0.mlp.gate_up_proj.weight` has shape [1536, 384] but config.json implies [1024, 384]",
        ],
    );
    assert_refused(
        &generate(&tiny(), &["--profile", "gpu"]),
        &["unknown device profile \"gpu\"; use host or wormhole_b0"],
    );
}

#[test]
fn bad_sampling_settings_are_refused_before_loading() {
    assert_refused(
        &generate(&tiny(), &["--temperature", "0"]),
        &["temperature must be a positive finite number, got 0"],
    );
    assert_refused(
        &generate(&tiny(), &["--temperature", "0.7", "--top-p", "1.5"]),
        &["top_p must be in (0, 1], got 1.5"],
    );
}
