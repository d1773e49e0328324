//! Checkpoint opening, block reads with conversion, sharded indexes, and every corrupt-file error.
use phi3_model::Phi3Tensors;

use std::path::Path;
use std::sync::Arc;

use half::bf16;
use phi3_model::checkpoint::{ByteCounter, LayerTensor, expected_tensors};
use phi3_model::{Checkpoint, CheckpointError, ConfigError, Dtype, Phi3Config};
use serde_json::json;

use crate::support::{
    RawTensor, ramp, tiny_config, tiny_model_tensors, write_raw, write_safetensors,
    write_tiny_checkpoint,
};

fn tiny_dir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    write_tiny_checkpoint(dir.path(), &tiny_config());
    dir
}

/// A checkpoint dir with config.json and one given weights file.
fn dir_with_weights(tensors: &[RawTensor]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("config.json"), tiny_config().to_string()).unwrap();
    write_safetensors(&dir.path().join("model.safetensors"), tensors);
    dir
}

fn open(dir: &Path) -> Result<Checkpoint, CheckpointError> {
    Checkpoint::open_dir(dir)
}

#[test]
fn opens_tiny_checkpoint_and_checks_phi3_tensors() {
    let dir = tiny_dir();
    let ck = Checkpoint::open(dir.path().to_str().unwrap()).unwrap();
    assert_eq!(ck.config().hidden_size, 8);
    assert_eq!(ck.dir(), dir.path());
    ck.check_phi3_tensors().unwrap();
    let cfg = ck.config().clone();
    assert_eq!(ck.tensor_names().len(), expected_tensors(&cfg).len());
    let qkv = LayerTensor::QkvProj.name(0);
    assert_eq!(qkv, "model.layers.0.self_attn.qkv_proj.weight");
    let info = ck.tensor_info(&qkv).unwrap();
    assert_eq!((info.dtype, info.shape.clone()), (Dtype::BF16, vec![16, 8]));
    assert_eq!(ck.total_bytes(), 2 * cfg.parameter_count());
    assert_eq!(ck.files().len(), 1);
    assert!(ck.tokenizer_path().is_none());
    // No generation_config.json: HF falls back to config.json's ids.
    assert_eq!(ck.generation_config().eos_token_ids, vec![2]);
    std::fs::write(
        dir.path().join("generation_config.json"),
        r#"{"eos_token_id": [2, 9]}"#,
    )
    .unwrap();
    assert_eq!(
        open(dir.path()).unwrap().generation_config().eos_token_ids,
        vec![2, 9]
    );
}

#[test]
fn block_reads_are_exact_for_every_dtype() {
    // A 5 x 7 matrix; values k * 0.5 are exact in bf16 and f16 for k < 35.
    let values = ramp(35, 0.0, 0.5);
    let dir = dir_with_weights(&[
        RawTensor::bf16("b", &[5, 7], &values),
        RawTensor::f16("h", &[5, 7], &values),
        RawTensor::f32("f", &[5, 7], &values),
        RawTensor::f32("v", &[3], &[1.0, 2.0, 3.0]),
    ]);
    let ck = open(dir.path()).unwrap();
    for name in ["b", "h", "f"] {
        let got: Vec<f32> = ck.read_block_vec(name, 1..4, 2..6).unwrap();
        let want: Vec<f32> = (1..4)
            .flat_map(|r| (2..6).map(move |c| (r * 7 + c) as f32 * 0.5))
            .collect();
        assert_eq!(got, want, "{name} -> f32");
        let got: Vec<bf16> = ck.read_block_vec(name, 1..4, 2..6).unwrap();
        assert_eq!(
            got,
            want.iter().map(|&v| bf16::from_f32(v)).collect::<Vec<_>>(),
            "{name}"
        );
        let all: Vec<f32> = ck.read_all(name).unwrap();
        assert_eq!(all, values);
    }
    // Whole rows (a column-parallel shard) and whole columns (a row-parallel shard).
    let rows: Vec<f32> = ck.read_block_vec("b", 2..3, 0..7).unwrap();
    assert_eq!(rows, values[14..21]);
    let col: Vec<f32> = ck.read_block_vec("f", 0..5, 6..7).unwrap();
    assert_eq!(col, vec![3.0, 6.5, 10.0, 13.5, 17.0]);
    let mut v = [0f32; 2];
    ck.read_flat("v", 1..3, &mut v).unwrap();
    assert_eq!(v, [2.0, 3.0]);
    let empty: Vec<f32> = ck.read_block_vec("b", 1..1, 0..7).unwrap();
    assert!(empty.is_empty());
}

#[test]
fn f32_to_bf16_rounds_to_nearest_even() {
    let values = [1.0 + 1.0 / 256.0, 1.0 + 3.0 / 256.0, -2.5e-3, 65504.0, 1e30];
    let dir = dir_with_weights(&[
        RawTensor::f32("f", &[1, 5], &values),
        RawTensor::f16("h", &[1, 3], &[1.0 + 1.0 / 512.0, 1.0 + 3.0 / 512.0, -0.1]),
    ]);
    let ck = open(dir.path()).unwrap();
    let got: Vec<bf16> = ck.read_block_vec("f", 0..1, 0..5).unwrap();
    // 1 + 2^-8 is a tie between 1 and 1 + 2^-7: even mantissa (1.0) wins; 1 + 3*2^-8 -> 1 + 2^-6.
    assert_eq!(got[0].to_f32(), 1.0);
    assert_eq!(got[1].to_f32(), 1.015625);
    for (g, v) in got.iter().zip(values) {
        // Within half a bf16 ulp (2^-9 relative).
        assert!((g.to_f32() - v).abs() <= v.abs() / 256.0, "{v}");
    }
    let got: Vec<bf16> = ck.read_block_vec("h", 0..1, 0..3).unwrap();
    assert_eq!(got[0].to_f32(), 1.0);
    assert_eq!(got[1].to_f32(), 1.0078125);
    let exact: Vec<f32> = ck.read_block_vec("h", 0..1, 0..3).unwrap();
    assert_eq!(
        exact[2],
        half::f16::from_f32(-0.1).to_f32(),
        "f16 widens exactly"
    );
}

#[test]
fn bad_reads_are_errors() {
    let dir = dir_with_weights(&[
        RawTensor::f32("m", &[2, 3], &[0.0; 6]),
        RawTensor::f32("v", &[4], &[0.0; 4]),
    ]);
    let ck = open(dir.path()).unwrap();
    let mut buf = [0f32; 6];
    for (rows, cols, len) in [(0..3, 0..3, 9), (0..2, 1..4, 6), (0..2, 0..3, 5)] {
        let err = ck
            .read_block("m", rows, cols, &mut buf[..len.min(6)])
            .unwrap_err();
        assert!(matches!(err, CheckpointError::BadRead { .. }), "{err:?}");
    }
    let err = ck.read_block("v", 0..1, 0..4, &mut buf[..4]).unwrap_err();
    assert!(err.to_string().contains("needs a 2-D tensor"), "{err}");
    let err = ck.read_flat("v", 2..5, &mut buf[..3]).unwrap_err();
    assert!(matches!(err, CheckpointError::BadRead { .. }));
    let err = ck.tensor_info("nope").unwrap_err();
    assert!(matches!(&err, CheckpointError::MissingTensor { tensor, .. } if tensor == "nope"));
}

#[test]
fn missing_and_misshaped_phi3_tensors() {
    let cfg = Phi3Config::from_json_str(&tiny_config().to_string()).unwrap();
    let mut tensors = tiny_model_tensors(&cfg);
    // Drop lm_head: the model is not tied, so it is required.
    tensors.retain(|t| t.name != "lm_head.weight");
    let dir = dir_with_weights(&tensors);
    let err = open(dir.path()).unwrap().check_phi3_tensors().unwrap_err();
    assert!(
        matches!(&err, CheckpointError::MissingTensor { tensor, .. } if tensor == "lm_head.weight")
    );
    let msg = "tensor `lm_head.weight` is missing from the checkpoint in";
    assert!(err.to_string().starts_with(msg), "{err}");
    // With tied embeddings, lm_head is not needed.
    std::fs::write(
        dir.path().join("config.json"),
        {
            let mut v = tiny_config();
            v["tie_word_embeddings"] = json!(true);
            v
        }
        .to_string(),
    )
    .unwrap();
    open(dir.path()).unwrap().check_phi3_tensors().unwrap();

    // o_proj stored transposed.
    let mut tensors = tiny_model_tensors(&cfg);
    let o = tensors
        .iter_mut()
        .find(|t| t.name == LayerTensor::OProj.name(0))
        .unwrap();
    o.shape = vec![4, 16];
    let dir = dir_with_weights(&tensors);
    let err = open(dir.path()).unwrap().check_phi3_tensors().unwrap_err();
    match &err {
        CheckpointError::WrongShape {
            tensor,
            expected,
            actual,
        } => {
            assert_eq!(tensor, "model.layers.0.self_attn.o_proj.weight");
            assert_eq!(
                (expected.clone(), actual.clone()),
                (vec![8, 8], vec![4, 16])
            );
        }
        other => panic!("{other:?}"),
    }
    assert!(err.to_string().contains("[4, 16]"), "{err}");
}

#[test]
fn sharded_checkpoint_with_index() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("config.json"), tiny_config().to_string()).unwrap();
    write_safetensors(
        &dir.path().join("model-00001-of-00002.safetensors"),
        &[RawTensor::bf16("a", &[2, 2], &[1.0, 2.0, 3.0, 4.0])],
    );
    write_safetensors(
        &dir.path().join("model-00002-of-00002.safetensors"),
        &[
            RawTensor::f16("b", &[1, 2], &[5.0, 6.0]),
            RawTensor::f32("unlisted", &[1], &[0.0]),
        ],
    );
    let index = json!({"metadata": {"total_size": 16}, "weight_map": {
        "a": "model-00001-of-00002.safetensors", "b": "model-00002-of-00002.safetensors"}});
    let index_path = dir.path().join("model.safetensors.index.json");
    std::fs::write(&index_path, index.to_string()).unwrap();
    let ck = open(dir.path()).unwrap();
    assert_eq!(ck.tensor_names(), vec!["a", "b"]);
    assert_eq!(ck.files().len(), 2);
    assert_eq!(ck.read_all::<f32>("a").unwrap(), vec![1.0, 2.0, 3.0, 4.0]);
    assert_eq!(ck.read_all::<f32>("b").unwrap(), vec![5.0, 6.0]);

    // The index names a tensor its shard does not hold.
    let bad = json!({"weight_map": {"a": "model-00001-of-00002.safetensors",
        "c": "model-00001-of-00002.safetensors"}});
    std::fs::write(&index_path, bad.to_string()).unwrap();
    let err = open(dir.path()).unwrap_err();
    assert!(
        matches!(&err, CheckpointError::TensorNotInShard { tensor, .. } if tensor == "c"),
        "{err:?}"
    );
    let msg = "says `c` is in model-00001-of-00002.safetensors, but that file does not contain it";
    assert!(err.to_string().ends_with(msg), "{err}");

    // The index names a shard that is not there.
    let bad = json!({"weight_map": {"a": "model-00001-of-00002.safetensors",
        "z": "model-00003-of-00003.safetensors"}});
    std::fs::write(&index_path, bad.to_string()).unwrap();
    let err = open(dir.path()).unwrap_err();
    match &err {
        CheckpointError::MissingShard {
            shard,
            tensors,
            example,
            ..
        } => {
            assert_eq!(
                (shard.as_str(), *tensors, example.as_str()),
                ("model-00003-of-00003.safetensors", 1, "z")
            )
        }
        other => panic!("{other:?}"),
    }
    assert!(err.to_string().contains("fetch the missing shard"), "{err}");

    // Malformed indexes.
    for (text, needle) in [
        ("{", "EOF"),
        (r#"{"metadata": {}}"#, "weight_map"),
        (r#"{"weight_map": {}}"#, "empty"),
        (
            r#"{"weight_map": {"a": "../model.safetensors"}}"#,
            "not a file name",
        ),
        (r#"{"weight_map": {"a": 3}}"#, "invalid type"),
    ] {
        std::fs::write(&index_path, text).unwrap();
        let err = open(dir.path()).unwrap_err();
        assert!(
            matches!(err, CheckpointError::MalformedIndex { .. }),
            "{text}: {err:?}"
        );
        assert!(err.to_string().contains(needle), "{text}: {err}");
    }
}

fn weights_error(header: &str, data: &[u8]) -> CheckpointError {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("config.json"), tiny_config().to_string()).unwrap();
    write_raw(&dir.path().join("model.safetensors"), header, data);
    open(dir.path()).unwrap_err()
}

#[test]
fn truncated_files() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("config.json"), tiny_config().to_string()).unwrap();
    let path = dir.path().join("model.safetensors");
    for len in [0usize, 5] {
        std::fs::write(&path, vec![0u8; len]).unwrap();
        let err = open(dir.path()).unwrap_err();
        assert!(
            matches!(err, CheckpointError::Truncated { expected: 8, .. }),
            "{err:?}"
        );
    }
    // A good file cut short inside its data: the header is intact, the bytes are not.
    write_safetensors(
        &path,
        &[
            RawTensor::f32("a", &[4], &[0.0; 4]),
            RawTensor::f32("b", &[4], &[0.0; 4]),
        ],
    );
    let full = std::fs::read(&path).unwrap();
    std::fs::write(&path, &full[..full.len() - 6]).unwrap();
    let err = open(dir.path()).unwrap_err();
    match &err {
        CheckpointError::Truncated {
            expected, actual, ..
        } => {
            assert_eq!(
                (*expected, *actual),
                (full.len() as u64, full.len() as u64 - 6)
            )
        }
        other => panic!("{other:?}"),
    }
    assert!(err.to_string().contains("download it again"), "{err}");
}

#[test]
fn header_length_past_end() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("config.json"), tiny_config().to_string()).unwrap();
    let mut bytes = 1000u64.to_le_bytes().to_vec();
    bytes.extend_from_slice(b"{}");
    std::fs::write(dir.path().join("model.safetensors"), &bytes).unwrap();
    let err = open(dir.path()).unwrap_err();
    assert!(
        matches!(
            err,
            CheckpointError::HeaderPastEnd {
                header_len: 1000,
                file_len: 10,
                ..
            }
        ),
        "{err:?}"
    );
    let msg = "header length 1000 runs past the end of the 10-byte file; the file is truncated";
    assert!(err.to_string().contains(msg), "{err}");
    // An absurd length (e.g. a file that is not safetensors at all).
    let mut bytes = u64::MAX.to_le_bytes().to_vec();
    bytes.extend_from_slice(b"PK\x03\x04");
    std::fs::write(dir.path().join("model.safetensors"), &bytes).unwrap();
    assert!(matches!(
        open(dir.path()),
        Err(CheckpointError::HeaderPastEnd { .. })
    ));
}

#[test]
fn malformed_headers() {
    for (header, needle) in [
        ("{\"a\": {\"dtype\": \"F32\"", "EOF"),
        ("[1, 2]", "invalid type"),
        (
            r#"{"a": {"shape": [1], "data_offsets": [0, 4]}}"#,
            "missing field `dtype`",
        ),
        (
            r#"{"a": {"dtype": "F32", "shape": [-1], "data_offsets": [0, 4]}}"#,
            "entry `a`",
        ),
        (
            r#"{"a": {"dtype": "F32", "shape": [1], "data_offsets": [0]}}"#,
            "entry `a`",
        ),
        (r#"{"__metadata__": {"format": 1}}"#, "__metadata__"),
        ("\u{FEFF}garbage", "expected value"),
    ] {
        let err = weights_error(header, &[0u8; 4]);
        assert!(
            matches!(err, CheckpointError::MalformedHeader { .. }),
            "{header}: {err:?}"
        );
        assert!(err.to_string().contains(needle), "{header}: {err}");
    }
}

#[test]
fn unsupported_dtypes() {
    for dtype in ["I8", "U8", "F64", "BOOL", "F8_E4M3", "Q4"] {
        let header =
            format!(r#"{{"w": {{"dtype": "{dtype}", "shape": [4], "data_offsets": [0, 4]}}}}"#);
        let err = weights_error(&header, &[0u8; 4]);
        assert!(
            matches!(&err, CheckpointError::UnsupportedDtype { tensor, dtype: d, .. } if tensor == "w" && d == dtype),
            "{err:?}"
        );
        assert!(err.to_string().contains("only BF16, F16 and F32"), "{err}");
    }
}

#[test]
fn offsets_out_of_range_overlapping_or_mis_sized() {
    // End before begin.
    let err = weights_error(
        r#"{"w": {"dtype": "F32", "shape": [1], "data_offsets": [8, 4]}}"#,
        &[0; 8],
    );
    assert!(
        matches!(
            err,
            CheckpointError::OffsetsOutOfRange {
                begin: 8,
                end: 4,
                ..
            }
        ),
        "{err:?}"
    );
    let msg = "tensor `w` has data offsets [8, 4) outside the 8-byte data area; the header";
    assert!(err.to_string().contains(msg), "{err}");
    // Beyond the data area with a gap before it: a corrupt header, not a truncation.
    let err = weights_error(
        r#"{"a": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]},
            "w": {"dtype": "F32", "shape": [1], "data_offsets": [100, 104]}}"#,
        &[0; 8],
    );
    assert!(
        matches!(&err, CheckpointError::OffsetsOutOfRange { tensor, data_len: 8, .. } if tensor == "w"),
        "{err:?}"
    );
    assert!(
        err.to_string()
            .contains("tensor `w` has data offsets [100, 104) outside the 8-byte data area"),
        "{err}"
    );
    // An empty tensor placed past the end.
    let err = weights_error(
        r#"{"e": {"dtype": "F32", "shape": [0], "data_offsets": [64, 64]}}"#,
        &[0; 8],
    );
    assert!(
        matches!(err, CheckpointError::OffsetsOutOfRange { .. }),
        "{err:?}"
    );
    // Overlap.
    let err = weights_error(
        r#"{"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
            "b": {"dtype": "F32", "shape": [2], "data_offsets": [4, 12]}}"#,
        &[0; 12],
    );
    assert!(
        matches!(&err, CheckpointError::OverlappingTensors { first, second, .. } if first == "a" && second == "b"),
        "{err:?}"
    );
    let msg = "tensors `a` and `b` overlap in the file; the header is corrupt";
    assert!(err.to_string().ends_with(msg), "{err}");
    // Shape x dtype disagrees with the byte range.
    let err = weights_error(
        r#"{"w": {"dtype": "BF16", "shape": [3], "data_offsets": [0, 8]}}"#,
        &[0; 8],
    );
    assert!(
        matches!(
            err,
            CheckpointError::SizeMismatch {
                expected: 6,
                actual: 8,
                ..
            }
        ),
        "{err:?}"
    );
    let msg = "tensor `w` of shape [3] needs 6 bytes but its offsets give 8; the header is";
    assert!(err.to_string().contains(msg), "{err}");
    // A shape whose size overflows.
    let err = weights_error(
        r#"{"w": {"dtype": "F32", "shape": [4294967296, 4294967296], "data_offsets": [0, 8]}}"#,
        &[0; 8],
    );
    assert!(
        matches!(err, CheckpointError::SizeMismatch { .. }),
        "{err:?}"
    );
}

#[test]
fn directories_that_are_not_checkpoints() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("README.md"), "hello").unwrap();
    let err = open(dir.path()).unwrap_err();
    assert!(
        matches!(err, CheckpointError::NotACheckpoint { .. }),
        "{err:?}"
    );
    assert!(err.to_string().contains("is not a checkpoint"), "{err}");

    // Weights without config.json.
    write_safetensors(
        &dir.path().join("model.safetensors"),
        &[RawTensor::f32("a", &[1], &[0.0])],
    );
    let err = open(dir.path()).unwrap_err();
    assert!(
        matches!(
            err,
            CheckpointError::MissingFile {
                file: "config.json",
                ..
            }
        ),
        "{err:?}"
    );
    let msg = "has no config.json: download the model's config.json next to its weights";
    assert!(err.to_string().ends_with(msg), "{err}");

    // config.json with PyTorch weights only.
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("config.json"), tiny_config().to_string()).unwrap();
    std::fs::write(dir.path().join("pytorch_model.bin"), "x").unwrap();
    let err = open(dir.path()).unwrap_err();
    assert!(
        matches!(
            err,
            CheckpointError::MissingFile {
                file: "model.safetensors",
                ..
            }
        ),
        "{err:?}"
    );
    assert!(
        err.to_string()
            .contains(".bin checkpoints are not supported"),
        "{err}"
    );

    // Shards without their index.
    write_safetensors(
        &dir.path().join("model-00001-of-00002.safetensors"),
        &[RawTensor::f32("a", &[1], &[0.0])],
    );
    let err = open(dir.path()).unwrap_err();
    assert!(
        matches!(
            err,
            CheckpointError::MissingFile {
                file: "model.safetensors.index.json",
                ..
            }
        ),
        "{err:?}"
    );
}

#[test]
fn bad_config_inside_a_checkpoint() {
    let dir = tiny_dir();
    let mut v = tiny_config();
    v["rope_scaling"]["long_factor"] = json!([1.0]);
    std::fs::write(dir.path().join("config.json"), v.to_string()).unwrap();
    let err = open(dir.path()).unwrap_err();
    assert!(
        matches!(
            &err,
            CheckpointError::Config {
                source: ConfigError::FactorLength {
                    list: "long_factor",
                    ..
                },
                ..
            }
        ),
        "{err:?}"
    );
    assert!(err.to_string().contains("long_factor"), "{err}");
    std::fs::write(dir.path().join("config.json"), tiny_config().to_string()).unwrap();
    std::fs::write(
        dir.path().join("generation_config.json"),
        "{\"eos_token_id\": true}",
    )
    .unwrap();
    assert!(matches!(
        open(dir.path()),
        Err(CheckpointError::Config { .. })
    ));
}

#[test]
fn progress_counts_bytes_read() {
    let dir = tiny_dir();
    let mut ck = open(dir.path()).unwrap();
    let counter = Arc::new(ByteCounter::default());
    ck.set_progress(counter.clone());
    let _: Vec<bf16> = ck
        .read_block_vec(&LayerTensor::QkvProj.name(0), 0..4, 0..8)
        .unwrap();
    assert_eq!(counter.read(), 4 * 8 * 2);
    let _: Vec<f32> = ck.read_all("model.norm.weight").unwrap();
    assert_eq!(counter.read(), 4 * 8 * 2 + 8 * 2);
}
