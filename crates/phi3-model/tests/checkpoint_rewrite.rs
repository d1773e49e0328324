//! A checkpoint file truncated, replaced or rewritten while a checkpoint and a model loaded from
//! it are alive: every read through the checkpoint is a typed error ([`CheckpointError::FileChanged`]),
//! a model whose file was replaced keeps its old weights, and nothing raises SIGBUS.
//!
//! Each scenario runs in a child process (this test binary, filtered to the one test), so a
//! SIGBUS fails the test with the signal named instead of killing the test harness.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::Path;
use std::process::Command;

use phi3_model::{Checkpoint, CheckpointError, Logits, Phi3Model, RuntimeOptions};
use tt_mesh::MeshShape;

/// Set in the child process: run the scenario itself.
const CHILD: &str = "PHI3_CHECKPOINT_REWRITE_CHILD";
/// The shard the scenarios change: decoder layers and the final norm (the model reads its
/// BF16 weights in place from the mapping).
const SHARD: &str = "model-00002-of-00002.safetensors";
const IN_SHARD_2D: &str = "model.layers.1.self_attn.qkv_proj.weight";
const IN_SHARD_1D: &str = "model.norm.weight";
/// A tensor of the other shard, which nobody touches.
const IN_OTHER_SHARD: &str = "model.embed_tokens.weight";
const PROMPT: [u32; 4] = [450, 4996, 17354, 1701];

/// Runs `scenario` in a child process and fails unless it exits normally and passes.
fn in_child(test: &str, scenario: impl FnOnce()) {
    if std::env::var_os(CHILD).is_some() {
        scenario();
        return;
    }
    let out = Command::new(std::env::current_exe().unwrap())
        .args([test, "--exact", "--nocapture", "--test-threads=1"])
        .env(CHILD, "1")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    #[cfg(unix)]
    {
        use std::os::unix::process::ExitStatusExt;
        assert_eq!(
            out.status.signal(),
            None,
            "the child was killed by signal {:?} (7 is SIGBUS on Linux)\n{stdout}\n{stderr}",
            out.status.signal()
        );
    }
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert!(
        stdout.contains("1 passed"),
        "the child ran no test:\n{stdout}"
    );
}

/// A private copy of the bundled model (two shards; the first is large enough to be read again
/// into 2 MiB pages under the default page policy).
fn model_copy() -> tempfile::TempDir {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/phi3-tiny-en");
    let dir = tempfile::tempdir().unwrap();
    for entry in std::fs::read_dir(&src).unwrap() {
        let path = entry.unwrap().path();
        if path.is_file() {
            std::fs::copy(&path, dir.path().join(path.file_name().unwrap())).unwrap();
        }
    }
    dir
}

fn load(ckpt: &Checkpoint) -> Result<Phi3Model, phi3_model::Error> {
    let mut options = RuntimeOptions::new(MeshShape::new(1, 2).unwrap());
    options.max_seq_len = 16;
    Phi3Model::load(ckpt, &options)
}

fn logits(model: &Phi3Model) -> Vec<f32> {
    let mut cache = model.new_cache().unwrap();
    model
        .prefill(&mut cache, 0, &PROMPT, Logits::Last)
        .unwrap()
        .to_f32_vec()
}

fn truncate_to_half(path: &Path) {
    let len = std::fs::metadata(path).unwrap().len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(path)
        .unwrap()
        .set_len(len / 2)
        .unwrap();
}

fn assert_changed(result: Result<impl std::fmt::Debug, CheckpointError>, shard: &Path) {
    match result {
        Err(CheckpointError::FileChanged { path, .. }) => assert_eq!(path, shard),
        other => panic!(
            "expected FileChanged for {}, got {other:?}",
            shard.display()
        ),
    }
}

/// A live model's prefill and decode are `FileChanged` errors naming the changed file.
fn assert_model_refuses(model: &Phi3Model, shard: &Path) {
    let mut cache = model.new_cache().unwrap();
    for result in [
        model.prefill(&mut cache, 0, &PROMPT, Logits::Last),
        model.decode(&mut cache, &[Some(PROMPT[0])]),
    ] {
        match result {
            Err(phi3_model::Error::Checkpoint(CheckpointError::FileChanged { path, .. })) => {
                assert_eq!(path, shard)
            }
            other => panic!(
                "expected FileChanged for {}, got {other:?}",
                shard.display()
            ),
        }
    }
}

/// Every way into the checkpoint's changed file is a `FileChanged` error; the other file reads.
fn assert_checkpoint_refuses(ckpt: &Checkpoint, shard: &Path) {
    assert_changed(ckpt.check_unchanged(), shard);
    assert_changed(ckpt.watch().check(), shard);
    assert_changed(ckpt.bf16_tensor(IN_SHARD_2D).map(|_| ()), shard);
    assert_changed(ckpt.read_all::<f32>(IN_SHARD_1D), shard);
    assert_changed(ckpt.read_block_vec::<f32>(IN_SHARD_2D, 0..2, 0..3), shard);
    assert_changed(ckpt.make_resident(), shard);
    let err = load(ckpt)
        .err()
        .expect("a model load from a changed checkpoint");
    let message = err.to_string();
    assert!(
        message.contains("changed on disk while in use"),
        "{message}"
    );
    ckpt.bf16_tensor(IN_OTHER_SHARD).unwrap();
}

/// Truncated under a live model: the checkpoint reports it on every access, the model's next
/// prefill or decode is a `FileChanged` error (it checks its files before every forward call, so
/// it never reads in-place weights past the new end), and a fresh open calls the file truncated.
#[test]
fn truncated_under_a_live_model() {
    in_child("truncated_under_a_live_model", || {
        let dir = model_copy();
        let ckpt = Checkpoint::open_dir(dir.path()).unwrap();
        let watch = ckpt.watch();
        let model = load(&ckpt).unwrap();
        assert!(logits(&model).iter().all(|v| v.is_finite()));
        watch.check().unwrap();
        let shard = dir.path().join(SHARD);
        truncate_to_half(&shard);
        assert_checkpoint_refuses(&ckpt, &shard);
        assert_changed(watch.check(), &shard);
        // The model checks its files before every forward call: an error, not a SIGBUS.
        assert_model_refuses(&model, &shard);
        drop(model);
        let err = Checkpoint::open_dir(dir.path()).unwrap_err();
        assert!(matches!(err, CheckpointError::Truncated { .. }), "{err}");
    });
}

/// Truncated after the checkpoint opened it but before anything was mapped: loading a model
/// is an error, not a SIGBUS while mapping or reading.
#[test]
fn truncated_before_the_model_is_loaded() {
    in_child("truncated_before_the_model_is_loaded", || {
        let dir = model_copy();
        let ckpt = Checkpoint::open_dir(dir.path()).unwrap();
        let shard = dir.path().join(SHARD);
        truncate_to_half(&shard);
        assert_checkpoint_refuses(&ckpt, &shard);
    });
}

/// Replaced by a rename (as downloaders do) under a live model: the model keeps the weights it
/// had, bit for bit; the checkpoint reports the change; a fresh open reads the new file.
#[test]
fn replaced_under_a_live_model() {
    in_child("replaced_under_a_live_model", || {
        let dir = model_copy();
        let ckpt = Checkpoint::open_dir(dir.path()).unwrap();
        let model = load(&ckpt).unwrap();
        let before = logits(&model);
        let shard = dir.path().join(SHARD);
        let new = dir.path().join("new.tmp");
        let mut bytes = std::fs::read(&shard).unwrap();
        let half = bytes.len() / 2;
        bytes.truncate(half);
        std::fs::write(&new, &bytes).unwrap();
        std::fs::rename(&new, &shard).unwrap();
        assert!(before.iter().all(|v| v.is_finite()));
        // The model's files are not the checkpoint's any more: it refuses to run on.
        assert_model_refuses(&model, &shard);
        assert_checkpoint_refuses(&ckpt, &shard);
        assert!(Checkpoint::open_dir(dir.path()).is_err());
    });
}

/// Rewritten in place with the same size: seen through the file's times.
#[test]
fn rewritten_in_place_with_the_same_size() {
    in_child("rewritten_in_place_with_the_same_size", || {
        use std::io::{Seek, SeekFrom, Write};
        let dir = model_copy();
        let ckpt = Checkpoint::open_dir(dir.path()).unwrap();
        let shard = dir.path().join(SHARD);
        // Past the filesystem's timestamp granularity (checkpoint/file.rs).
        std::thread::sleep(std::time::Duration::from_millis(50));
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .open(&shard)
            .unwrap();
        let len = f.metadata().unwrap().len();
        f.seek(SeekFrom::Start(len - 64)).unwrap();
        f.write_all(&[0x7f; 64]).unwrap();
        drop(f);
        assert_checkpoint_refuses(&ckpt, &shard);
    });
}
