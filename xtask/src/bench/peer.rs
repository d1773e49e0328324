//! The HF transformers peer (`--peer-hf`): scripts/hf_bench.py run with the venv's Python on the
//! same checkpoint directory, its one JSON line kept as it printed it.

use std::path::Path;
use std::process::{Command, Stdio};

use anyhow::{Context, Result, bail};

/// What to ask scripts/hf_bench.py for.
#[derive(Debug, Clone)]
pub struct PeerRequest<'a> {
    /// Checkpoint directory.
    pub model_dir: &'a Path,
    /// `bf16` or `f32`.
    pub dtype: &'a str,
    /// Prompt tokens (the synthetic prompt of the benchmark).
    pub prefill_len: usize,
    /// Greedy decode steps after the prompt.
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
        .args(["--prefill-len", &request.prefill_len.to_string()])
        .args(["--decode-steps", &request.decode_steps.to_string()])
        .args(["--threads", &request.threads.to_string()])
        .stderr(Stdio::inherit())
        .output()
        .with_context(|| format!("cannot run {}", python.display()))?;
    if !output.status.success() {
        bail!("{} failed ({})", script.display(), output.status);
    }
    parse_last_json_line(&String::from_utf8_lossy(&output.stdout))
        .with_context(|| format!("reading the output of {}", script.display()))
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
}
