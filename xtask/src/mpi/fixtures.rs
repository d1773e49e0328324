//! The fixture models of the MPI tests: the tiny Phi-3 and Llama checkpoints under `fixtures/`,
//! the generation each is checked with, and the `tt-lm` arguments that run one.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use serde_json::Value;

/// The mesh every model runs on.
const MESH: &str = "2x4";

/// A fixture checkpoint directory with what the tests need from its config.json.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Fixture {
    pub(super) name: String,
    pub(super) dir: PathBuf,
    pub(super) model_type: String,
    pub(super) vocab: usize,
    pub(super) max_positions: usize,
    /// LongRoPE's `original_max_position_embeddings` (Phi-3 with `longrope` scaling).
    pub(super) longrope_original_max: Option<usize>,
}

/// Prompt length and new tokens of one model's generate check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct GeneratePlan {
    pub(super) prompt_len: usize,
    pub(super) new_tokens: usize,
    /// The LongRoPE original maximum the generation crosses.
    pub(super) crossing: Option<usize>,
}

/// Every fixture directory under `fixtures` whose config.json is a Phi-3 or Llama model with a
/// checkpoint beside it (names in `only`, if any), sorted by name.
pub(super) fn find_fixtures(fixtures: &Path, only: &[String]) -> Result<Vec<Fixture>> {
    let mut found = Vec::new();
    let entries =
        std::fs::read_dir(fixtures).with_context(|| format!("reading {}", fixtures.display()))?;
    for entry in entries {
        let dir = entry?.path();
        let Some(name) = dir.file_name().and_then(|n| n.to_str()).map(String::from) else {
            continue;
        };
        if !only.is_empty() && !only.contains(&name) {
            continue;
        }
        let config = dir.join("config.json");
        if !config.is_file() {
            continue;
        }
        let has_weights = std::fs::read_dir(&dir)?.any(|e| {
            e.ok()
                .is_some_and(|e| e.file_name().to_string_lossy().ends_with(".safetensors"))
        });
        if !has_weights {
            continue;
        }
        let text = std::fs::read_to_string(&config)
            .with_context(|| format!("reading {}", config.display()))?;
        if let Some(f) = fixture_from_config(&name, &dir, &text)? {
            found.push(f);
        }
    }
    for name in only {
        if !found.iter().any(|f| &f.name == name) {
            bail!("--only {name}: no Phi-3 or Llama checkpoint in fixtures/{name}");
        }
    }
    found.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(found)
}

/// A fixture from its config.json text; `None` for a family tt-lm does not run.
fn fixture_from_config(name: &str, dir: &Path, text: &str) -> Result<Option<Fixture>> {
    let c: Value = serde_json::from_str(text).with_context(|| format!("{name}/config.json"))?;
    let model_type = c["model_type"].as_str().unwrap_or_default().to_string();
    if model_type != "phi3" && model_type != "llama" {
        return Ok(None);
    }
    let usize_at = |v: &Value| v.as_u64().and_then(|n| usize::try_from(n).ok());
    let vocab = usize_at(&c["vocab_size"])
        .with_context(|| format!("{name}/config.json has no vocab_size"))?;
    let max_positions = usize_at(&c["max_position_embeddings"]).unwrap_or(2048);
    // The hub style keeps LongRoPE under `rope_scaling` with `original_max_position_embeddings`
    // at the top; transformers 5 writes `rope_parameters` (which may hold it too).
    let rope_type = ["rope_scaling", "rope_parameters"].iter().find_map(|k| {
        let r = &c[*k];
        r["rope_type"].as_str().or_else(|| r["type"].as_str())
    });
    let longrope_original_max = if model_type == "phi3" && rope_type == Some("longrope") {
        usize_at(&c["original_max_position_embeddings"])
            .or_else(|| usize_at(&c["rope_parameters"]["original_max_position_embeddings"]))
            .or_else(|| usize_at(&c["rope_scaling"]["original_max_position_embeddings"]))
    } else {
        None
    };
    Ok(Some(Fixture {
        name: name.to_string(),
        dir: dir.to_path_buf(),
        model_type,
        vocab,
        max_positions,
        longrope_original_max,
    }))
}

/// The generate check of `f`: a LongRoPE model whose original maximum is at most
/// `max_crossing` starts 16 tokens below it and generates 32, so that the sequence crosses it
/// half-way (the re-prefill with the long factors); other models prompt 40 tokens and
/// generate 24.
pub(super) fn generate_plan(f: &Fixture, max_crossing: usize) -> GeneratePlan {
    match f.longrope_original_max {
        Some(m) if m <= max_crossing && m > 16 && m + 16 <= f.max_positions => GeneratePlan {
            prompt_len: m - 16,
            new_tokens: 32,
            crossing: Some(m),
        },
        _ => GeneratePlan {
            prompt_len: 40,
            new_tokens: 24,
            crossing: None,
        },
    }
}

/// `n` deterministic token ids of a vocabulary of `vocab`, in `3 .. vocab - 13` (clear of the
/// fixtures' BOS 1 and their stop and pad tokens `V-10`, `V-9`, `V-3`).
pub(super) fn prompt_ids(n: usize, vocab: usize) -> Vec<u32> {
    let span = vocab.saturating_sub(16).max(1) as u64;
    (0..n as u64)
        .map(|i| ((i * 7919 + 11) % span + 3) as u32)
        .collect()
}

pub(super) fn ids_arg(ids: &[u32]) -> String {
    ids.iter().map(u32::to_string).collect::<Vec<_>>().join(",")
}

pub(super) fn model_args(f: &Fixture, fidelity: &str) -> Vec<String> {
    model_args_at(&f.dir, fidelity)
}

/// `--model dir --mesh 2x4 --fidelity fidelity`.
pub(super) fn model_args_at(dir: &Path, fidelity: &str) -> Vec<String> {
    vec![
        "--model".into(),
        dir.display().to_string(),
        "--mesh".into(),
        MESH.into(),
        "--fidelity".into(),
        fidelity.into(),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::workspace_root;

    #[test]
    fn configs_of_both_styles_give_the_longrope_original_max() {
        let dir = Path::new("/x");
        let hub = r#"{"model_type": "phi3", "vocab_size": 1000, "max_position_embeddings": 1024,
            "original_max_position_embeddings": 64,
            "rope_scaling": {"type": "longrope", "short_factor": [1], "long_factor": [2]}}"#;
        let f = fixture_from_config("a", dir, hub).unwrap().unwrap();
        assert_eq!(
            (f.vocab, f.max_positions, f.longrope_original_max),
            (1000, 1024, Some(64))
        );
        let tf = r#"{"model_type": "phi3", "vocab_size": 600, "max_position_embeddings": 1024,
            "rope_parameters": {"rope_type": "longrope", "original_max_position_embeddings": 64}}"#;
        let f = fixture_from_config("b", dir, tf).unwrap().unwrap();
        assert_eq!(f.longrope_original_max, Some(64));
        let llama = r#"{"model_type": "llama", "vocab_size": 600,
            "rope_scaling": {"rope_type": "llama3", "original_max_position_embeddings": 64}}"#;
        let f = fixture_from_config("c", dir, llama).unwrap().unwrap();
        assert_eq!((f.longrope_original_max, f.max_positions), (None, 2048));
        assert!(
            fixture_from_config("d", dir, r#"{"model_type": "gpt2"}"#)
                .unwrap()
                .is_none()
        );
    }

    #[test]
    fn the_fixtures_are_found() {
        let found = find_fixtures(&workspace_root().join("fixtures"), &[]).unwrap();
        let names: Vec<&str> = found.iter().map(|f| f.name.as_str()).collect();
        for want in ["phi3-tiny", "phi3-tiny-en", "llama-tiny-gqa"] {
            assert!(names.contains(&want), "{names:?}");
        }
        assert!(!names.contains(&"smollm2-135m-instruct"), "{names:?}");
        let tiny = found.iter().find(|f| f.name == "phi3-tiny").unwrap();
        assert_eq!(tiny.longrope_original_max, Some(64));
        assert!(find_fixtures(&workspace_root().join("fixtures"), &["nope".into()]).is_err());
    }

    #[test]
    fn generation_crosses_small_longrope_maxima_only() {
        let mut f = Fixture {
            name: "x".into(),
            dir: PathBuf::from("/x"),
            model_type: "phi3".into(),
            vocab: 600,
            max_positions: 1024,
            longrope_original_max: Some(64),
        };
        let p = generate_plan(&f, 256);
        assert_eq!(
            p,
            GeneratePlan {
                prompt_len: 48,
                new_tokens: 32,
                crossing: Some(64)
            }
        );
        assert!(p.prompt_len <= 64 && p.prompt_len + p.new_tokens > 64);
        f.longrope_original_max = Some(4096);
        f.max_positions = 131_072;
        assert_eq!(generate_plan(&f, 256).crossing, None);
        assert_eq!(generate_plan(&f, 4096).prompt_len, 4080);
        f.longrope_original_max = None;
        assert_eq!(generate_plan(&f, 1 << 20).crossing, None);
    }

    #[test]
    fn prompt_ids_avoid_bos_and_stop_tokens() {
        let ids = prompt_ids(5000, 600);
        assert!(ids.iter().all(|&t| (3..587).contains(&t)));
        assert_eq!(ids, prompt_ids(5000, 600));
        assert_eq!(ids_arg(&[1, 22, 3]), "1,22,3");
    }
}
