//! `cargo xtask plan`: print the tensor-parallel plan of an HF decoder config on a mesh.
//!
//! The config is read by the family its `model_type` names (`tt_lm::families()`: phi3, llama),
//! exactly as the model crates read it, and mapped to the planner's [`DecoderDims`] by
//! `tt_decoder::decoder_dims`, with bytes per value from `torch_dtype` (or `dtype`; 2 when
//! absent) unless `--dtype-bytes` says otherwise.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, anyhow};
use tt_shard::{DecoderDims, DeviceProfile, MeshShape, Plan, PlanOptions};
#[cfg(test)]
use tt_shard::{GateUpLayout, QkvLayout};

/// Options of `cargo xtask plan`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// HF `config.json` of the model.
    #[arg(long, value_name = "FILE")]
    config: PathBuf,
    /// Mesh shape, rows x cols (all devices form one tensor-parallel group).
    #[arg(long, value_name = "RxC", default_value = "2x4")]
    mesh: MeshShape,
    /// Device profile.
    #[arg(long, default_value = "wormhole_b0",
          value_parser = clap::builder::PossibleValuesParser::new(DeviceProfile::NAMES))]
    profile: String,
    /// KV cache length (tokens) to plan memory for.
    #[arg(long, value_name = "N", default_value_t = 4096)]
    seq_len: usize,
    /// Sequences per decode step (KV cache rows).
    #[arg(long, value_name = "B", default_value_t = 1)]
    batch: usize,
    /// Override bytes per stored value (default: from torch_dtype, 2 when absent).
    #[arg(long, value_name = "BYTES")]
    dtype_bytes: Option<usize>,
    /// Print the plan as JSON instead of a text report.
    #[arg(long)]
    json: bool,
}

/// Read the config, build the plan, print it.
pub fn run(args: Args) -> Result<()> {
    let mut dims = dims_from_config_file(&args.config)?;
    if let Some(b) = args.dtype_bytes {
        dims.dtype_bytes = b;
    }
    let profile = DeviceProfile::by_name(&args.profile)
        .ok_or_else(|| anyhow!("unknown profile {:?}", args.profile))?;
    let options = PlanOptions {
        seq_len: args.seq_len,
        batch: args.batch,
    };
    let plan = Plan::new(&dims, args.mesh, &profile, options).with_context(|| {
        format!(
            "cannot plan {} on mesh {} with profile {}",
            args.config.display(),
            args.mesh,
            profile.name
        )
    })?;
    if args.json {
        println!("{}", plan.to_json()?);
    } else {
        print!("{plan}");
    }
    Ok(())
}

/// Read an HF config file and map it with the family its `model_type` names.
fn dims_from_config_file(path: &Path) -> Result<DecoderDims> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read config {}", path.display()))?;
    dims_from_config(&text).with_context(|| format!("in config {}", path.display()))
}

/// Map an HF decoder config to [`DecoderDims`] through its family's parser (`tt-lm` knows
/// every family); bytes per value from `torch_dtype` (or `dtype`), 2 when absent.
fn dims_from_config(text: &str) -> Result<DecoderDims> {
    let config = tt_decoder::family_for(text, &tt_lm::families())?.parse_config(text)?;
    let mut dims = tt_decoder::decoder_dims(&config);
    let json: serde_json::Value = serde_json::from_str(text)?;
    let dtype = json.get("torch_dtype").or_else(|| json.get("dtype"));
    dims.dtype_bytes = match dtype.and_then(serde_json::Value::as_str) {
        None | Some("bfloat16" | "float16") => 2,
        Some("float32") => 4,
        Some(other) => anyhow::bail!("unsupported torch_dtype {other:?}: use --dtype-bytes"),
    };
    Ok(dims)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maps_the_phi3_mini_config() {
        let path = crate::workspace_root().join("fixtures/configs/phi3-mini-128k.json");
        let d = dims_from_config_file(&path).unwrap();
        assert_eq!(
            (d.hidden, d.heads, d.kv_heads, d.head_dim),
            (3072, 32, 32, 96)
        );
        assert_eq!(
            (d.intermediate, d.vocab, d.layers, d.dtype_bytes),
            (8192, 32064, 32, 2)
        );
        assert!(!d.tied_embeddings);
        assert_eq!(d.qkv_layout, QkvLayout::Fused);
        assert_eq!(d.gate_up_layout, GateUpLayout::Fused);
    }

    #[test]
    fn llama_defaults_and_clear_errors() {
        let c = serde_json::json!({
            "hidden_size": 64, "num_attention_heads": 4, "intermediate_size": 128,
            "vocab_size": 100, "num_hidden_layers": 2, "tie_word_embeddings": true,
            "torch_dtype": "float32", "model_type": "llama"
        });
        let d = dims_from_config(&c.to_string()).unwrap();
        assert_eq!((d.kv_heads, d.head_dim, d.dtype_bytes), (4, 16, 4));
        assert!(d.tied_embeddings);
        assert_eq!(d.qkv_layout, QkvLayout::Separate);
        assert_eq!(d.gate_up_layout, GateUpLayout::Separate);
        let mut bad = c.clone();
        bad.as_object_mut().unwrap().remove("vocab_size");
        let err = format!("{:#}", dims_from_config(&bad.to_string()).unwrap_err());
        assert!(err.contains("`vocab_size` is missing"), "{err}");
        bad["vocab_size"] = serde_json::json!(-3);
        let err = format!("{:#}", dims_from_config(&bad.to_string()).unwrap_err());
        assert!(err.contains("vocab_size"), "{err}");
        bad["vocab_size"] = serde_json::json!(100);
        bad["torch_dtype"] = serde_json::json!("int4");
        let err = format!("{:#}", dims_from_config(&bad.to_string()).unwrap_err());
        assert!(err.contains("--dtype-bytes"), "{err}");
        bad["torch_dtype"] = serde_json::json!("float32");
        bad["model_type"] = serde_json::json!("gpt2");
        let err = format!("{:#}", dims_from_config(&bad.to_string()).unwrap_err());
        assert!(err.contains("`gpt2` model, not `phi3` or `llama`"), "{err}");
        assert!(dims_from_config("[1]").is_err());
    }
}
