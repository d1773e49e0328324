//! Running llama.cpp's `llama-bench` on one GGUF and reading its JSON (`-o json`) into the peer
//! figures of the report.
//!
//! Two invocations per model, so that each test runs where ours does:
//! - prefill: `-p P -n 0` (a prompt of P tokens into an empty cache, one batch);
//! - decode: `-p 0 -n N -d C` (N tokens generated one at a time after C tokens of context were
//!   prefilled untimed: llama-bench's `--n-depth`), i.e. at contexts C..C+N.
//!
//! Both with `-t threads -r reps -o json`; llama-bench reports the mean over the repetitions
//! (`avg_ts`, tokens per second) after one untimed warm-up run.
//!
//! First with llama.cpp's extra weight layouts (`--repack 1`, its default: repacked tiles, and the
//! AMX kernels where the CPU has AMX); if that run dies (on a VM that reports AMX but traps its
//! tile instructions, `tilezero` raises SIGILL), both tests run with `--repack 0` and the
//! figures say so (`repack: false`).

use std::path::Path;
use std::process::{Command, Stdio};

use anyhow::{Context, Result, bail, ensure};
use serde::Deserialize;
use serde_json::json;

/// The `engine` of the llama.cpp rows in the report's peers.
pub const ENGINE: &str = "llama.cpp";

/// One test of llama-bench's JSON output (the fields this benchmark reads).
#[derive(Debug, Clone, Deserialize)]
pub struct Test {
    /// llama.cpp commit of the build.
    pub build_commit: String,
    /// CPU as llama-bench names it.
    #[serde(default)]
    pub cpu_info: String,
    /// ggml's description of the model (`phi3 3B BF16`).
    #[serde(default)]
    pub model_type: String,
    /// Bytes of the model's tensors.
    pub model_size: u64,
    /// Threads.
    pub n_threads: u64,
    /// Prompt tokens of the test (0 in a generation test).
    pub n_prompt: u64,
    /// Generated tokens of the test (0 in a prompt test).
    pub n_gen: u64,
    /// Tokens in the cache before the timed part.
    #[serde(default)]
    pub n_depth: u64,
    /// Mean tokens per second over the repetitions.
    pub avg_ts: f64,
    /// Their standard deviation.
    pub stddev_ts: f64,
    /// Seconds of every repetition, in nanoseconds.
    pub samples_ns: Vec<u64>,
}

/// Parses llama-bench's `-o json` output: a JSON array of tests.
pub fn parse(stdout: &str) -> Result<Vec<Test>> {
    let tests: Vec<Test> =
        serde_json::from_str(stdout.trim()).context("llama-bench's -o json output")?;
    ensure!(!tests.is_empty(), "llama-bench reported no test");
    for t in &tests {
        ensure!(
            t.avg_ts.is_finite() && t.avg_ts > 0.0,
            "llama-bench reported {} tok/s",
            t.avg_ts
        );
    }
    Ok(tests)
}

/// What to run for one model.
#[derive(Debug, Clone)]
pub struct Request<'a> {
    /// The llama-bench binary.
    pub llama_bench: &'a Path,
    /// The GGUF file.
    pub gguf: &'a Path,
    /// The row's label (`bf16`, `Q8_0`).
    pub dtype: &'a str,
    /// Prompt tokens of the prefill test.
    pub prefill_len: usize,
    /// Tokens in the cache before the decode test.
    pub decode_context: usize,
    /// Tokens the decode test generates.
    pub decode_steps: usize,
    /// Threads (`-t`).
    pub threads: usize,
    /// Repetitions of each test (`-r`).
    pub reps: usize,
}

/// Runs llama-bench's prefill and decode tests and returns the peer figures
/// ([`peer_value`]).
pub fn run(request: &Request<'_>) -> Result<serde_json::Value> {
    let (prefill, repack) = match run_one(request, request.prefill_len, 0, 0, true) {
        Ok(test) => (test, true),
        Err(e) => {
            tracing::warn!("llama-bench failed with --repack 1 ({e:#}); running with --repack 0");
            (run_one(request, request.prefill_len, 0, 0, false)?, false)
        }
    };
    let decode = run_one(
        request,
        0,
        request.decode_steps,
        request.decode_context,
        repack,
    )?;
    let gguf = request.gguf.display().to_string();
    let mut value = peer_value(request.dtype, &gguf, &prefill, &decode)?;
    value["repack"] = repack.into();
    Ok(value)
}

/// One llama-bench invocation of one test.
fn run_one(
    request: &Request<'_>,
    prompt: usize,
    generated: usize,
    depth: usize,
    repack: bool,
) -> Result<Test> {
    tracing::info!(
        dtype = request.dtype,
        prompt,
        generated,
        depth,
        repack,
        "running {}",
        request.llama_bench.display()
    );
    let output = Command::new(request.llama_bench)
        .arg("-m")
        .arg(request.gguf)
        .args(["-p", &prompt.to_string(), "-n", &generated.to_string()])
        .args(["-d", &depth.to_string()])
        .args(["-t", &request.threads.to_string()])
        .args(["-r", &request.reps.to_string()])
        .args(["--repack", if repack { "1" } else { "0" }])
        .args(["-o", "json"])
        .stderr(Stdio::null())
        .output()
        .with_context(|| format!("cannot run {}", request.llama_bench.display()))?;
    if !output.status.success() {
        bail!(
            "{} failed ({}) on {}",
            request.llama_bench.display(),
            output.status,
            request.gguf.display()
        );
    }
    let mut tests = parse(&String::from_utf8_lossy(&output.stdout))?;
    ensure!(
        tests.len() == 1,
        "llama-bench ran {} tests, not 1",
        tests.len()
    );
    Ok(tests.remove(0))
}

/// The report's peer figures of one model, in the keys scripts/hf_bench.py prints
/// (`prefill_tok_s`, `decode_ms_per_token`, ...) plus llama-bench's own test entries.
pub fn peer_value(
    dtype: &str,
    gguf: &str,
    prefill: &Test,
    decode: &Test,
) -> Result<serde_json::Value> {
    ensure!(
        prefill.n_prompt > 0 && prefill.n_gen == 0,
        "the prefill test is pp{}+tg{}",
        prefill.n_prompt,
        prefill.n_gen
    );
    ensure!(
        decode.n_prompt == 0 && decode.n_gen > 0,
        "the decode test is pp{}+tg{}",
        decode.n_prompt,
        decode.n_gen
    );
    let test_json = |t: &Test| {
        json!({
            "n_prompt": t.n_prompt,
            "n_gen": t.n_gen,
            "n_depth": t.n_depth,
            "avg_ts": t.avg_ts,
            "stddev_ts": t.stddev_ts,
            "samples_ns": t.samples_ns,
        })
    };
    Ok(json!({
        "engine": ENGINE,
        "dtype": dtype,
        "gguf": gguf,
        "gguf_tensor_bytes": prefill.model_size,
        "model_type": prefill.model_type,
        "build_commit": prefill.build_commit,
        "cpu_info": prefill.cpu_info,
        "threads": prefill.n_threads,
        "repetitions": prefill.samples_ns.len(),
        "prefill_tokens": prefill.n_prompt,
        "prefill_tok_s": prefill.avg_ts,
        "decode_context": decode.n_depth,
        "decode_steps": decode.n_gen,
        "decode_tok_s": decode.avg_ts,
        "decode_ms_per_token": 1e3 / decode.avg_ts,
        "tests": [test_json(prefill), test_json(decode)],
    }))
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    /// Output of the build this module drives (llama-cpp-python 0.3.36's llama.cpp), recorded:
    /// `llama-bench -m synth-phi3-…-q8_0.gguf -p 0 -n 32 -d 155 -t 2 -r 2 --repack 0 -o json`
    /// (on a loaded machine: the figures are slow).
    const DECODE: &str = include_str!("llama_bench_decode.json");
    /// The same with `-p 155 -n 0 -d 0`.
    const PREFILL: &str = include_str!("llama_bench_prefill.json");

    #[test]
    fn parses_the_recorded_output() {
        let decode = parse(DECODE).unwrap();
        assert_eq!(decode.len(), 1);
        let d = &decode[0];
        assert_eq!(
            (d.n_prompt, d.n_gen, d.n_depth, d.n_threads),
            (0, 32, 155, 2)
        );
        assert_eq!(d.samples_ns.len(), 2);
        assert!(d.model_type.contains("Q8_0"), "{}", d.model_type);
        // avg_ts is the mean of the runs' rates.
        let rates: Vec<f64> = d
            .samples_ns
            .iter()
            .map(|&ns| 32.0 / (ns as f64 / 1e9))
            .collect();
        let mean = rates.iter().sum::<f64>() / rates.len() as f64;
        assert!(
            (d.avg_ts - mean).abs() / d.avg_ts < 1e-4,
            "{} {mean}",
            d.avg_ts
        );
        let p = &parse(PREFILL).unwrap()[0];
        assert_eq!((p.n_prompt, p.n_gen, p.n_depth), (155, 0, 0));
    }

    #[test]
    fn rejects_what_is_not_a_result() {
        assert!(parse("").is_err());
        assert!(parse("[]").is_err());
        assert!(parse("{\"avg_ts\": 1.0}").is_err());
        let zero = DECODE.replacen("\"avg_ts\": ", "\"avg_ts\": 0.0, \"x\": ", 1);
        assert!(parse(&zero).is_err());
    }

    #[test]
    fn peer_figures_of_the_two_tests() {
        let prefill = parse(PREFILL).unwrap().remove(0);
        let decode = parse(DECODE).unwrap().remove(0);
        let v = peer_value("Q8_0", "/c/m.gguf", &prefill, &decode).unwrap();
        assert_eq!(v["engine"], ENGINE);
        assert_eq!(v["prefill_tokens"], 155);
        assert_eq!(v["decode_context"], 155);
        assert_eq!(v["prefill_tok_s"], prefill.avg_ts);
        let ms = v["decode_ms_per_token"].as_f64().unwrap();
        assert!((ms * decode.avg_ts - 1e3).abs() < 1e-9);
        assert_eq!(v["tests"][1]["n_gen"], 32);
        // The tests swapped are refused.
        assert!(peer_value("Q8_0", "m", &decode, &prefill).is_err());
    }
}
