//! The peers: HF transformers (`--peer-hf`: scripts/hf_bench.py run with the venv's Python on the
//! same checkpoint directory, its one JSON line kept as it printed it), and [`run_all`], which
//! times every peer asked for (llama.cpp through `llama_bench`).
//!
//! Every peer's figures (HF's, and llama.cpp's from `llama_bench::peer_value`) give their prefills
//! in the shape of our own runs' `prefill`: an array of `{"tokens": N, "tok_s": ...}`, one per
//! prompt length measured ([`prefill_tok_s`] reads it).

use std::path::Path;
use std::process::{Command, Stdio};

use anyhow::{Context, Result, bail, ensure};

/// What to ask scripts/hf_bench.py for.
#[derive(Debug, Clone)]
pub struct PeerRequest<'a> {
    /// Checkpoint directory.
    pub model_dir: &'a Path,
    /// `bf16` or `f32`.
    pub dtype: &'a str,
    /// Prompt lengths to prefill, each once into a fresh cache (the synthetic prompts of the
    /// benchmark).
    pub prefill_lens: &'a [usize],
    /// Greedy decode steps after the prompt of the first length.
    pub decode_steps: usize,
    /// torch threads.
    pub threads: usize,
}

/// Runs scripts/hf_bench.py with `python` (its stderr passes through) and returns its JSON.
pub fn run_hf_bench(python: &Path, request: &PeerRequest<'_>) -> Result<serde_json::Value> {
    let script = crate::workspace_root().join("scripts").join("hf_bench.py");
    tracing::info!(python = %python.display(), dtype = request.dtype, "running {}", script.display());
    let output = Command::new(python)
        .arg(&script)
        .arg("--model")
        .arg(request.model_dir)
        .args(["--dtype", request.dtype])
        .args(["--prefill-lens", &comma_list(request.prefill_lens)])
        .args(["--decode-steps", &request.decode_steps.to_string()])
        .args(["--threads", &request.threads.to_string()])
        .stderr(Stdio::inherit())
        .output()
        .with_context(|| format!("cannot run {}", python.display()))?;
    if !output.status.success() {
        bail!("{} failed ({})", script.display(), output.status);
    }
    let value = parse_last_json_line(&String::from_utf8_lossy(&output.stdout))
        .with_context(|| format!("reading the output of {}", script.display()))?;
    ensure_prefills(&value, request.prefill_lens)
        .with_context(|| format!("reading the output of {}", script.display()))?;
    Ok(value)
}

/// `155,1024`: a command-line list of lengths.
pub fn comma_list(lens: &[usize]) -> String {
    lens.iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(",")
}

/// Tokens per second of a peer's prefill of `tokens` tokens, if it measured that length.
pub fn prefill_tok_s(peer: &serde_json::Value, tokens: usize) -> Option<f64> {
    prefills(peer)
        .find(|&(t, _)| t == Some(tokens as u64))
        .and_then(|(_, tok_s)| tok_s)
}

/// The prompt lengths a peer measured, in its order.
pub fn prefill_lens(peer: &serde_json::Value) -> Vec<u64> {
    prefills(peer).filter_map(|(t, _)| t).collect()
}

/// (tokens, tok/s) of each entry of a peer's `prefill` array.
fn prefills(peer: &serde_json::Value) -> impl Iterator<Item = (Option<u64>, Option<f64>)> + '_ {
    peer.get("prefill")
        .and_then(serde_json::Value::as_array)
        .into_iter()
        .flatten()
        .map(|p| {
            (
                p.get("tokens").and_then(serde_json::Value::as_u64),
                p.get("tok_s").and_then(serde_json::Value::as_f64),
            )
        })
}

/// Checks that `peer` has a positive prefill rate for each of `lens`.
fn ensure_prefills(peer: &serde_json::Value, lens: &[usize]) -> Result<()> {
    for &len in lens {
        let tok_s = prefill_tok_s(peer, len);
        ensure!(
            tok_s.is_some_and(|r| r.is_finite() && r > 0.0),
            "no prefill of {len} tokens in {peer}"
        );
    }
    Ok(())
}

/// The last non-empty line of `stdout`, which must be a JSON object.
fn parse_last_json_line(stdout: &str) -> Result<serde_json::Value> {
    let line = stdout
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .context("it printed nothing")?;
    let value: serde_json::Value = serde_json::from_str(line).context("not a JSON line")?;
    if !value.is_object() {
        bail!("not a JSON object: {line}");
    }
    Ok(value)
}

/// Times the peers asked for (HF transformers per fidelity, then llama.cpp per GGUF).
pub fn run_all(
    args: &super::Args,
    python: Option<&Path>,
    llama: Option<&super::llama_cpp::Prepared>,
    model_dir: &Path,
) -> Result<Vec<serde_json::Value>> {
    let mut peers = Vec::new();
    let peer_prefill_lens = args.distinct_prefill_lens();
    if let (Some(python), true) = (python, args.peer_hf) {
        for &fidelity in &args.fidelities {
            let request = PeerRequest {
                model_dir,
                dtype: fidelity.name(),
                prefill_lens: &peer_prefill_lens,
                decode_steps: args.peer_decode_steps,
                threads: rayon::current_num_threads(),
            };
            peers.push(run_hf_bench(python, &request)?);
        }
    }
    if let Some(llama) = llama {
        for (dtype, gguf) in &llama.ggufs {
            peers.push(super::llama_bench::run(&super::llama_bench::Request {
                llama_bench: &llama.llama_bench,
                gguf,
                dtype,
                prefill_lens: &peer_prefill_lens,
                decode_context: args
                    .decode_contexts
                    .first()
                    .copied()
                    .unwrap_or(args.prefill_lens[0]),
                decode_steps: args.peer_decode_steps,
                threads: rayon::current_num_threads(),
                reps: args.peer_llama_reps,
            })?);
        }
    }
    Ok(peers)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_last_json_line_is_the_figures() {
        let v =
            parse_last_json_line("warming up\n{\"dtype\": \"bf16\", \"load_s\": 1.5}\n\n").unwrap();
        assert_eq!(v["load_s"], 1.5);
        assert!(parse_last_json_line("").is_err());
        assert!(parse_last_json_line("[1, 2]\n").is_err());
        assert!(parse_last_json_line("{\"a\": \n").is_err());
    }

    /// The `prefill` array as scripts/hf_bench.py prints it (`--prefill-lens 16,32`, recorded on
    /// fixtures/phi3-tiny-en).
    const HF_LINE: &str = r#"{"engine": "hf-transformers", "dtype": "bf16", "load_s": 0.215, "first_step_s": 0.0534, "prefill": [{"tokens": 16, "seconds": 0.02058440400287509, "tok_s": 777.2875035762623}, {"tokens": 32, "seconds": 0.017758517002221197, "tok_s": 1801.9522686493196}], "decode_steps": 3, "decode_context": 16, "decode_ms_per_token": 6.14022598892916}"#;

    #[test]
    fn prefills_per_length() {
        let v = parse_last_json_line(HF_LINE).unwrap();
        assert_eq!(prefill_lens(&v), [16, 32]);
        assert_eq!(prefill_tok_s(&v, 16), Some(777.2875035762623));
        assert_eq!(prefill_tok_s(&v, 32), Some(1801.9522686493196));
        assert_eq!(prefill_tok_s(&v, 155), None);
        assert!(ensure_prefills(&v, &[16, 32]).is_ok());
        assert!(ensure_prefills(&v, &[32]).is_ok());
        let err = ensure_prefills(&v, &[16, 1024]).unwrap_err().to_string();
        assert!(err.starts_with("no prefill of 1024 tokens"), "{err}");
        // A single-length line of the old shape has no per-length figures.
        let old = serde_json::json!({"prefill_tokens": 155, "prefill_tok_s": 40.0});
        assert!(prefill_lens(&old).is_empty() && ensure_prefills(&old, &[155]).is_err());
        let zero = serde_json::json!({"prefill": [{"tokens": 16, "tok_s": 0.0}]});
        assert!(ensure_prefills(&zero, &[16]).is_err());
        assert_eq!(comma_list(&[155, 1024]), "155,1024");
        assert_eq!(comma_list(&[7]), "7");
    }
}
