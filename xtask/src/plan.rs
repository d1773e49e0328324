//! `cargo xtask plan`: print the tensor-parallel plan of an HF decoder config on a mesh.
//!
//! The HF `config.json` -> [`DecoderDims`] mapping lives here (tt-shard knows no checkpoint
//! format): sizes from the standard keys, `head_dim` defaulting to `hidden_size /
//! num_attention_heads`, `num_key_value_heads` to the head count, bytes per value from
//! `torch_dtype` (or `dtype`), and fused `[Q|K|V]` / `[gate|up]` layouts for `model_type` "phi3".

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, anyhow, bail};
use serde_json::Value;
use tt_shard::{DecoderDims, DeviceProfile, GateUpLayout, MeshShape, Plan, PlanOptions, QkvLayout};

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

/// Read and map an HF config file.
fn dims_from_config_file(path: &Path) -> Result<DecoderDims> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read config {}", path.display()))?;
    let config: Value = serde_json::from_str(&text)
        .with_context(|| format!("{} is not valid JSON", path.display()))?;
    dims_from_config(&config).with_context(|| format!("in config {}", path.display()))
}

/// Map an HF decoder config to [`DecoderDims`].
fn dims_from_config(c: &Value) -> Result<DecoderDims> {
    if !c.is_object() {
        bail!("config must be a JSON object");
    }
    let size = |key: &str| -> Result<Option<usize>> {
        match c.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(v) => v
                .as_u64()
                .and_then(|x| usize::try_from(x).ok())
                .map(Some)
                .ok_or_else(|| anyhow!("`{key}` must be a non-negative integer, got {v}")),
        }
    };
    let required = |key: &str| size(key)?.ok_or_else(|| anyhow!("missing required key `{key}`"));
    let hidden = required("hidden_size")?;
    let heads = required("num_attention_heads")?;
    let head_dim = match size("head_dim")? {
        Some(d) => d,
        None if heads > 0 && hidden % heads == 0 => hidden / heads,
        None => bail!(
            "no `head_dim` and hidden_size {hidden} is not a multiple of num_attention_heads {heads}"
        ),
    };
    let dtype_key = c.get("torch_dtype").or_else(|| c.get("dtype"));
    let dtype_bytes = match dtype_key.and_then(Value::as_str) {
        None => 2,
        Some("bfloat16" | "float16") => 2,
        Some("float32") => 4,
        Some(other) => bail!("unsupported torch_dtype {other:?}: use --dtype-bytes"),
    };
    let tied_embeddings = match c.get("tie_word_embeddings") {
        None | Some(Value::Null) => false,
        Some(v) => v
            .as_bool()
            .ok_or_else(|| anyhow!("`tie_word_embeddings` must be true or false, got {v}"))?,
    };
    let fused = c.get("model_type").and_then(Value::as_str) == Some("phi3");
    Ok(DecoderDims {
        hidden,
        heads,
        kv_heads: size("num_key_value_heads")?.unwrap_or(heads),
        head_dim,
        intermediate: required("intermediate_size")?,
        vocab: required("vocab_size")?,
        layers: required("num_hidden_layers")?,
        dtype_bytes,
        tied_embeddings,
        qkv_layout: if fused {
            QkvLayout::Fused
        } else {
            QkvLayout::Separate
        },
        gate_up_layout: if fused {
            GateUpLayout::Fused
        } else {
            GateUpLayout::Separate
        },
    })
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
    fn defaults_and_clear_errors() {
        let c = serde_json::json!({
            "hidden_size": 64, "num_attention_heads": 4, "intermediate_size": 128,
            "vocab_size": 100, "num_hidden_layers": 2, "tie_word_embeddings": true,
            "torch_dtype": "float32", "model_type": "llama"
        });
        let d = dims_from_config(&c).unwrap();
        assert_eq!((d.kv_heads, d.head_dim, d.dtype_bytes), (4, 16, 4));
        assert!(d.tied_embeddings);
        assert_eq!(d.qkv_layout, QkvLayout::Separate);
        let mut bad = c.clone();
        bad.as_object_mut().unwrap().remove("vocab_size");
        let err = dims_from_config(&bad).unwrap_err().to_string();
        assert!(err.contains("missing required key `vocab_size`"), "{err}");
        bad["vocab_size"] = serde_json::json!(-3);
        let err = dims_from_config(&bad).unwrap_err().to_string();
        assert!(
            err.contains("`vocab_size` must be a non-negative integer"),
            "{err}"
        );
        bad["vocab_size"] = serde_json::json!(100);
        bad["torch_dtype"] = serde_json::json!("int4");
        assert!(
            dims_from_config(&bad)
                .unwrap_err()
                .to_string()
                .contains("--dtype-bytes")
        );
        assert!(dims_from_config(&serde_json::json!([1])).is_err());
    }
}
