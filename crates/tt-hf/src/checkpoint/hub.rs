//! Offline resolution of a `--model` argument: a local directory, or an HF model id found in
//! the HuggingFace cache (`models--{org}--{name}/refs/main` -> `snapshots/{commit}/`).

use std::path::{Path, PathBuf};

use crate::error::CheckpointError;

/// Where the HuggingFace cache lives, from the environment variables HF uses.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HubEnv {
    /// `$HF_HUB_CACHE` (wins over everything).
    pub hf_hub_cache: Option<PathBuf>,
    /// `$HF_HOME` (cache in `$HF_HOME/hub`).
    pub hf_home: Option<PathBuf>,
    /// `$XDG_CACHE_HOME` (cache in `$XDG_CACHE_HOME/huggingface/hub`).
    pub xdg_cache_home: Option<PathBuf>,
    /// `$HOME` (cache in `~/.cache/huggingface/hub`).
    pub home: Option<PathBuf>,
}

impl HubEnv {
    /// Reads the process environment (empty variables count as unset).
    pub fn from_env() -> Self {
        let var = |name: &str| {
            std::env::var_os(name)
                .filter(|v| !v.is_empty())
                .map(PathBuf::from)
        };
        Self {
            hf_hub_cache: var("HF_HUB_CACHE"),
            hf_home: var("HF_HOME"),
            xdg_cache_home: var("XDG_CACHE_HOME"),
            home: var("HOME"),
        }
    }

    /// The hub cache directory HF would use (`None` only when no variable is set at all).
    pub fn hub_cache(&self) -> Option<PathBuf> {
        if let Some(dir) = &self.hf_hub_cache {
            return Some(dir.clone());
        }
        if let Some(home) = &self.hf_home {
            return Some(home.join("hub"));
        }
        if let Some(xdg) = &self.xdg_cache_home {
            return Some(xdg.join("huggingface").join("hub"));
        }
        self.home
            .as_ref()
            .map(|h| h.join(".cache").join("huggingface").join("hub"))
    }
}

/// Resolves `model` (a directory path or an `org/name` id) to a local directory.
pub fn resolve_model(model: &str, env: &HubEnv) -> Result<PathBuf, CheckpointError> {
    let as_path = Path::new(model);
    if as_path.is_dir() {
        return Ok(as_path.to_path_buf());
    }
    let mut looked_in = vec![as_path.to_path_buf()];
    if let (Some(cache), Some(repo_dir)) = (env.hub_cache(), repo_dir_name(model)) {
        let repo = cache.join(repo_dir);
        let snapshots = repo.join("snapshots");
        let refs_main = repo.join("refs").join("main");
        if let Ok(commit) = std::fs::read_to_string(&refs_main) {
            let snapshot = snapshots.join(commit.trim());
            if !commit.trim().is_empty() && snapshot.is_dir() {
                return Ok(snapshot);
            }
            looked_in.push(snapshot);
        } else if let Some(only) = single_snapshot(&snapshots) {
            // No refs/main (e.g. downloaded by commit): one snapshot is unambiguous.
            return Ok(only);
        } else {
            looked_in.push(refs_main);
        }
    }
    Err(CheckpointError::ModelNotFound {
        model: model.to_string(),
        looked_in,
    })
}

/// `org/name` -> `models--org--name`; `None` for strings that cannot be a model id.
fn repo_dir_name(model: &str) -> Option<String> {
    let parts: Vec<&str> = model.split('/').collect();
    let valid = |p: &&str| {
        !p.is_empty()
            && *p != "."
            && *p != ".."
            && p.chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
    };
    if parts.is_empty() || parts.len() > 2 || !parts.iter().all(valid) {
        return None;
    }
    Some(format!("models--{}", parts.join("--")))
}

fn single_snapshot(snapshots: &Path) -> Option<PathBuf> {
    let entries: Vec<PathBuf> = std::fs::read_dir(snapshots)
        .ok()?
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| p.is_dir())
        .collect();
    match entries.as_slice() {
        [only] => Some(only.clone()),
        _ => None,
    }
}
