//! Bad input to the model and to the `phi3` binary: typed errors that name the problem, and a
//! non-zero exit with a one-paragraph message (no backtrace) from the binary.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};
use std::process::Command;

use phi3_model::{Checkpoint, Error, Logits, Phi3Model, RuntimeOptions};
use tt_mesh::MeshShape;

fn tiny() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/phi3-tiny")
}

fn model(mesh: (usize, usize), max_seq_len: usize) -> Result<Phi3Model, Error> {
    let ckpt = Checkpoint::open_dir(&tiny()).unwrap();
    let mut opts = RuntimeOptions::new(MeshShape::new(mesh.0, mesh.1).unwrap());
    opts.max_seq_len = max_seq_len;
    Phi3Model::load(&ckpt, &opts)
}

#[test]
fn token_ids_past_the_vocab_are_refused() {
    let m = model((1, 2), 64).unwrap();
    let mut cache = m.new_cache().unwrap();
    let err = m
        .prefill(&mut cache, 0, &[1, 2, 1000], Logits::Last)
        .unwrap_err();
    assert!(matches!(
        err,
        Error::TokenOutOfRange {
            index: 2,
            token: 1000,
            vocab_size: 1000
        }
    ));
    assert!(err.to_string().contains("vocab_size is 1000"), "{err}");
}

#[test]
fn sequences_longer_than_the_cache_are_refused() {
    let m = model((1, 1), 32).unwrap();
    let mut cache = m.new_cache().unwrap();
    let tokens: Vec<u32> = (0..33).collect();
    let err = m.prefill(&mut cache, 0, &tokens, Logits::Last).unwrap_err();
    assert!(
        matches!(
            err,
            Error::SequenceTooLong {
                needed: 33,
                capacity: 32
            }
        ),
        "{err}"
    );
    // Decoding past the end is refused too, and the cache is left as it was.
    let full: Vec<u32> = (0..32).collect();
    m.prefill(&mut cache, 0, &full, Logits::Last).unwrap();
    let err = m.decode(&mut cache, &[Some(1)]).unwrap_err();
    assert!(
        matches!(
            err,
            Error::SequenceTooLong {
                needed: 33,
                capacity: 32
            }
        ),
        "{err}"
    );
    assert_eq!(cache.len(0), 32);
}

#[test]
fn empty_prompts_are_refused() {
    let m = model((1, 1), 32).unwrap();
    let mut cache = m.new_cache().unwrap();
    let err = m.prefill(&mut cache, 0, &[], Logits::Last).unwrap_err();
    assert!(matches!(err, Error::EmptyPrompt), "{err}");
}

#[test]
fn a_mesh_that_does_not_divide_the_heads_is_refused_before_loading() {
    let err = model((1, 3), 32).err().expect("1x3 cannot hold 8 heads");
    assert!(matches!(err, Error::Plan(_)), "{err}");
    assert!(
        err.to_string()
            .contains("8 query heads do not divide over 3 devices"),
        "{err}"
    );
}

fn phi3(args: &[&str]) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_phi3"))
        .args(args)
        .env("RUST_BACKTRACE", "1")
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn the_binary_exits_non_zero_with_one_paragraph() {
    let model = tiny().display().to_string();
    let cases: [(&[&str], &str); 4] = [
        (
            &[
                "generate",
                "--model",
                &model,
                "--mesh",
                "1x2",
                "--prompt-ids",
                "1,5000",
            ],
            "out of range",
        ),
        (
            &[
                "generate",
                "--model",
                &model,
                "--mesh",
                "1x3",
                "--prompt-ids",
                "1,2",
            ],
            "do not divide over 3 devices",
        ),
        (
            &[
                "generate",
                "--model",
                &model,
                "--mesh",
                "1x1",
                "--prompt-ids",
                "1,2",
                "--max-new-tokens",
                "8",
                "--max-seq-len",
                "4",
            ],
            "--max-seq-len is 4",
        ),
        (
            &[
                "logits",
                "--model",
                "/nonexistent/checkpoint",
                "--tokens",
                "1",
                "--out",
                "/tmp/x",
            ],
            "/nonexistent/checkpoint",
        ),
    ];
    for (args, needle) in cases {
        let (ok, stderr) = phi3(args);
        assert!(!ok, "{args:?} should fail");
        assert!(stderr.contains(needle), "{args:?}: {stderr}");
        assert!(stderr.starts_with("error: "), "{args:?}: {stderr}");
        assert!(!stderr.contains("stack backtrace"), "{args:?}: {stderr}");
        assert_eq!(stderr.trim_end().lines().count(), 1, "{args:?}: {stderr}");
    }
}

/// A copy of the tiny fixture whose config.json is edited by `edit`.
fn edited_copy(edit: impl Fn(&mut serde_json::Value)) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for entry in std::fs::read_dir(tiny()).unwrap() {
        let path = entry.unwrap().path();
        if path.is_file() {
            std::fs::copy(&path, dir.path().join(path.file_name().unwrap())).unwrap();
        }
    }
    let config_path = dir.path().join("config.json");
    let mut config: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&config_path).unwrap()).unwrap();
    edit(&mut config);
    std::fs::write(&config_path, serde_json::to_vec(&config).unwrap()).unwrap();
    dir
}

#[test]
fn the_binary_refuses_bad_configs_and_misshaped_tensors() {
    let unknown = edited_copy(|c| c["rope_scaling"]["type"] = "dynamic".into());
    let short = edited_copy(|c| {
        c["rope_scaling"]["long_factor"]
            .as_array_mut()
            .unwrap()
            .pop();
    });
    // The tensors no longer match the config: gate_up_proj is [1536, 384], the config says 1024 rows.
    let misshaped = edited_copy(|c| c["intermediate_size"] = 512.into());
    for (dir, needle) in [
        (&unknown, "dynamic"),
        (&short, "long_factor"),
        (&misshaped, "gate_up_proj"),
    ] {
        let model = dir.path().display().to_string();
        let (ok, stderr) = phi3(&["generate", "--model", &model, "--prompt-ids", "1,2"]);
        assert!(!ok);
        assert!(
            stderr.starts_with("error: ") && stderr.contains(needle),
            "{stderr}"
        );
        assert_eq!(stderr.trim_end().lines().count(), 1, "{stderr}");
    }
}
