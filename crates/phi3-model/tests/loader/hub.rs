//! Offline HF cache resolution.
use phi3_model::Phi3Tensors;

use std::path::{Path, PathBuf};

use phi3_model::checkpoint::{HubEnv, resolve_model};
use phi3_model::{Checkpoint, CheckpointError};

use crate::support::{tiny_config, write_tiny_checkpoint};

/// Builds `cache/models--org--name` as huggingface_hub does: blobs, a snapshot of symlinks,
/// and refs/main holding the commit hash.
fn fake_cache(cache: &Path, repo: &str, commit: &str, with_ref: bool) -> PathBuf {
    let repo_dir = cache.join(format!("models--{}", repo.replace('/', "--")));
    let blobs = repo_dir.join("blobs");
    let snapshot = repo_dir.join("snapshots").join(commit);
    std::fs::create_dir_all(&blobs).unwrap();
    std::fs::create_dir_all(&snapshot).unwrap();
    let staging = tempfile::tempdir().unwrap();
    write_tiny_checkpoint(staging.path(), &tiny_config());
    for (i, name) in ["config.json", "model.safetensors"].iter().enumerate() {
        let blob = blobs.join(format!("blob{i}"));
        std::fs::copy(staging.path().join(name), &blob).unwrap();
        std::os::unix::fs::symlink(
            Path::new("../../blobs").join(format!("blob{i}")),
            snapshot.join(name),
        )
        .unwrap();
    }
    if with_ref {
        std::fs::create_dir_all(repo_dir.join("refs")).unwrap();
        std::fs::write(repo_dir.join("refs/main"), format!("{commit}\n")).unwrap();
    }
    snapshot
}

#[test]
fn cache_location_follows_hf_precedence() {
    let env = HubEnv {
        hf_hub_cache: Some("/a".into()),
        hf_home: Some("/b".into()),
        xdg_cache_home: Some("/c".into()),
        home: Some("/d".into()),
    };
    assert_eq!(env.hub_cache(), Some(PathBuf::from("/a")));
    let env = HubEnv {
        hf_hub_cache: None,
        ..env
    };
    assert_eq!(env.hub_cache(), Some(PathBuf::from("/b/hub")));
    let env = HubEnv {
        hf_home: None,
        ..env
    };
    assert_eq!(env.hub_cache(), Some(PathBuf::from("/c/huggingface/hub")));
    let env = HubEnv {
        xdg_cache_home: None,
        ..env
    };
    assert_eq!(
        env.hub_cache(),
        Some(PathBuf::from("/d/.cache/huggingface/hub"))
    );
    assert_eq!(HubEnv::default().hub_cache(), None);
}

#[test]
fn resolves_model_ids_through_refs_and_symlinks() {
    let home = tempfile::tempdir().unwrap();
    let cache = home.path().join("hub");
    let snapshot = fake_cache(&cache, "microsoft/Phi-3-mini-128k-instruct", "abc123", true);
    let env = HubEnv {
        hf_home: Some(home.path().to_path_buf()),
        ..HubEnv::default()
    };
    assert_eq!(
        resolve_model("microsoft/Phi-3-mini-128k-instruct", &env).unwrap(),
        snapshot
    );
    let ck = Checkpoint::open_with_env("microsoft/Phi-3-mini-128k-instruct", &env).unwrap();
    ck.check_phi3_tensors().unwrap();
    assert_eq!(ck.config().vocab_size, 16);

    // Without refs/main, a single snapshot is used.
    let snapshot = fake_cache(&cache, "org/other", "def456", false);
    assert_eq!(resolve_model("org/other", &env).unwrap(), snapshot);

    // A local directory wins over the cache.
    let local = tempfile::tempdir().unwrap();
    let arg = local.path().to_str().unwrap();
    assert_eq!(resolve_model(arg, &env).unwrap(), local.path());
}

#[test]
fn unknown_model_lists_where_it_looked() {
    let cache = tempfile::tempdir().unwrap();
    let env = HubEnv {
        hf_hub_cache: Some(cache.path().to_path_buf()),
        ..HubEnv::default()
    };
    let err = resolve_model("org/missing", &env).unwrap_err();
    match &err {
        CheckpointError::ModelNotFound { model, looked_in } => {
            assert_eq!(model, "org/missing");
            assert_eq!(looked_in.len(), 2);
            assert_eq!(
                looked_in[1],
                cache.path().join("models--org--missing/refs/main")
            );
        }
        other => panic!("{other:?}"),
    }
    let msg = err.to_string();
    assert!(
        msg.contains("models--org--missing") && msg.contains("never goes online"),
        "{msg}"
    );

    // refs/main names a snapshot that is not there.
    let repo = cache.path().join("models--org--stale");
    std::fs::create_dir_all(repo.join("refs")).unwrap();
    std::fs::write(repo.join("refs/main"), "feedbeef").unwrap();
    let err = resolve_model("org/stale", &env).unwrap_err();
    assert!(err.to_string().contains("snapshots/feedbeef"), "{err}");

    // Paths that cannot be ids are only tried as directories.
    let err = resolve_model("/no/such/dir/at/all", &env).unwrap_err();
    assert!(
        matches!(&err, CheckpointError::ModelNotFound { looked_in, .. } if looked_in.len() == 1)
    );
}
