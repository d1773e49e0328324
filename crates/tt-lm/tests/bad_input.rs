//! `tt-lm` refuses bad input with one paragraph on stderr and a non-zero exit code: a config of
//! an unknown family, a Llama checkpoint missing a tensor, and a mesh no head padding can serve.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::path::Path;
use std::process::Command;

use common::fixture_dir;
use serde_json::Value;

/// A copy of the files of fixture `name` in a temporary directory.
fn copy_of(name: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for entry in std::fs::read_dir(fixture_dir(name)).unwrap() {
        let path = entry.unwrap().path();
        if path.is_file() {
            std::fs::copy(&path, dir.path().join(path.file_name().unwrap())).unwrap();
        }
    }
    dir
}

/// Edits a JSON file in place.
fn edit_json(path: &Path, edit: impl FnOnce(&mut Value)) {
    let mut value: Value = serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap();
    edit(&mut value);
    std::fs::write(path, serde_json::to_vec_pretty(&value).unwrap()).unwrap();
}

/// Runs `tt-lm args`; returns stderr after checking the exit code is non-zero and stderr is
/// one `error:` paragraph containing every `needle`.
fn refused(args: &[&str], needles: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_tt-lm"))
        .args(args)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!out.status.success(), "tt-lm {args:?} succeeded: {stderr}");
    assert!(
        stderr.starts_with("error: ") && stderr.trim_end().lines().count() == 1,
        "not one paragraph: {stderr}"
    );
    for n in needles {
        assert!(stderr.contains(n), "missing {n:?} in: {stderr}");
    }
    stderr
}

#[test]
fn a_config_of_an_unknown_family_names_the_supported_ones() {
    let dir = copy_of("llama-tiny-gqa");
    edit_json(&dir.path().join("config.json"), |c| {
        c["model_type"] = "gpt_neox".into();
    });
    let path = dir.path().to_str().unwrap();
    refused(
        &["plan", "--model", path],
        &["`gpt_neox` model, not `phi3` or `llama`"],
    );
    refused(
        &["generate", "--model", path, "--prompt-ids", "1,2,3"],
        &["`gpt_neox` model"],
    );
}

#[test]
fn a_llama_checkpoint_missing_a_tensor_is_refused_before_loading() {
    let dir = copy_of("llama-tiny-gqa");
    let missing = "model.layers.1.self_attn.k_proj.weight";
    edit_json(&dir.path().join("model.safetensors.index.json"), |c| {
        c["weight_map"].as_object_mut().unwrap().remove(missing);
    });
    refused(
        &[
            "generate",
            "--model",
            dir.path().to_str().unwrap(),
            "--prompt-ids",
            "1,2,3",
            "--mesh",
            "1x2",
        ],
        &[&format!("tensor `{missing}` is missing")],
    );
}

#[test]
fn a_mesh_no_head_padding_can_serve_is_refused_before_loading() {
    // 9 query heads cannot give each of 16 devices a real head.
    let path = fixture_dir("llama-tiny-odd");
    let stderr = refused(
        &[
            "generate",
            "--model",
            path.to_str().unwrap(),
            "--prompt-ids",
            "1,2,3",
            "--mesh",
            "2x8",
        ],
        &["9", "16"],
    );
    assert!(stderr.contains("head"), "{stderr}");
}
