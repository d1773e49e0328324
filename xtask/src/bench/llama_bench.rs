//! Running llama.cpp's `llama-bench` on one GGUF and reading its JSON (`-o json`) into the peer
//! figures of the report.
//!
//! Two invocations per model, so that each test runs where ours does:
//! - prefill: `-p P1,P2,.. -n 0` (one test per prompt length Pi of `--prefill-lens`: a prompt of
//!   Pi tokens into an empty cache, one batch; the JSON array has one entry per length);
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
    /// Prompt lengths of the prefill tests (distinct; one test each).
    pub prefill_lens: &'a [usize],
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
    let prompts = request.prefill_lens;
    let (prefill, repack) = match run_tests(request, prompts, 0, 0, true) {
        Ok(tests) => (tests, true),
        Err(e) => {
            tracing::warn!("llama-bench failed with --repack 1 ({e:#}); running with --repack 0");
            (run_tests(request, prompts, 0, 0, false)?, false)
        }
    };
    let prefill = prefill_tests(prefill, prompts)?;
    let mut decode = run_tests(
        request,
        &[0],
        request.decode_steps,
        request.decode_context,
        repack,
    )?;
    ensure!(
        decode.len() == 1,
        "llama-bench ran {} decode tests, not 1",
        decode.len()
    );
    let gguf = request.gguf.display().to_string();
    let mut value = peer_value(request.dtype, &gguf, &prefill, &decode.remove(0))?;
    value["repack"] = repack.into();
    Ok(value)
}

/// llama-bench's arguments after `-m <gguf>`: one test per prompt length of `prompts` (`-p` takes
/// a comma list), each generating `generated` tokens after `depth` tokens of context.
fn bench_args(
    request: &Request<'_>,
    prompts: &[usize],
    generated: usize,
    depth: usize,
    repack: bool,
) -> Vec<String> {
    let mut args = vec!["-p".to_string(), super::peer::comma_list(prompts)];
    for (flag, value) in [
        ("-n", generated),
        ("-d", depth),
        ("-t", request.threads),
        ("-r", request.reps),
    ] {
        args.extend([flag.to_string(), value.to_string()]);
    }
    args.extend(["--repack", if repack { "1" } else { "0" }].map(String::from));
    args.extend(["-o", "json"].map(String::from));
    args
}

/// One llama-bench invocation; its tests.
fn run_tests(
    request: &Request<'_>,
    prompts: &[usize],
    generated: usize,
    depth: usize,
    repack: bool,
) -> Result<Vec<Test>> {
    tracing::info!(
        dtype = request.dtype,
        ?prompts,
        generated,
        depth,
        repack,
        "running {}",
        request.llama_bench.display()
    );
    let output = Command::new(request.llama_bench)
        .arg("-m")
        .arg(request.gguf)
        .args(bench_args(request, prompts, generated, depth, repack))
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
    parse(&String::from_utf8_lossy(&output.stdout))
}

/// The prefill tests of one `-p P1,P2,..` run, in the order of `prompts`: exactly one test of
/// each length.
fn prefill_tests(mut tests: Vec<Test>, prompts: &[usize]) -> Result<Vec<Test>> {
    ensure!(
        tests.len() == prompts.len(),
        "llama-bench ran {} prefill tests for {} prompt lengths",
        tests.len(),
        prompts.len()
    );
    let mut out = Vec::with_capacity(prompts.len());
    for &len in prompts {
        let i = tests
            .iter()
            .position(|t| t.n_prompt == len as u64)
            .with_context(|| format!("llama-bench ran no test of a {len}-token prompt"))?;
        out.push(tests.remove(i));
    }
    Ok(out)
}

/// The report's peer figures of one model, in the keys scripts/hf_bench.py prints (`prefill`:
/// one `{tokens, tok_s}` per prompt length, `decode_ms_per_token`, ...) plus llama-bench's own
/// test entries (the prefill tests, then the decode test).
pub fn peer_value(
    dtype: &str,
    gguf: &str,
    prefill: &[Test],
    decode: &Test,
) -> Result<serde_json::Value> {
    let first = prefill.first().context("no prefill test")?;
    for p in prefill {
        ensure!(
            p.n_prompt > 0 && p.n_gen == 0,
            "a prefill test is pp{}+tg{}",
            p.n_prompt,
            p.n_gen
        );
    }
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
    let prefill_json: Vec<serde_json::Value> = prefill
        .iter()
        .map(|t| json!({"tokens": t.n_prompt, "tok_s": t.avg_ts, "stddev_tok_s": t.stddev_ts}))
        .collect();
    let tests: Vec<serde_json::Value> = prefill.iter().chain([decode]).map(test_json).collect();
    Ok(json!({
        "engine": ENGINE,
        "dtype": dtype,
        "gguf": gguf,
        "gguf_tensor_bytes": first.model_size,
        "model_type": first.model_type,
        "build_commit": first.build_commit,
        "cpu_info": first.cpu_info,
        "threads": first.n_threads,
        "repetitions": first.samples_ns.len(),
        "prefill": prefill_json,
        "decode_context": decode.n_depth,
        "decode_steps": decode.n_gen,
        "decode_tok_s": decode.avg_ts,
        "decode_ms_per_token": 1e3 / decode.avg_ts,
        "tests": tests,
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
    /// Two prompt lengths in one run, recorded (the machine quiet):
    /// `llama-bench -m gguf/synth-phi3-…-q8_0.gguf -p 16,32 -n 0 -d 0 -t 2 -r 2 --repack 0 -o json`.
    const PREFILL_LENS: &str = include_str!("llama_bench_prefill_lens.json");

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
        let prefill = parse(PREFILL).unwrap();
        let decode = parse(DECODE).unwrap().remove(0);
        let v = peer_value("Q8_0", "/c/m.gguf", &prefill, &decode).unwrap();
        assert_eq!(v["engine"], ENGINE);
        assert_eq!(v["prefill"][0]["tokens"], 155);
        assert_eq!(v["prefill"][0]["tok_s"], prefill[0].avg_ts);
        assert_eq!(v["prefill"].as_array().unwrap().len(), 1);
        assert_eq!(v["decode_context"], 155);
        let ms = v["decode_ms_per_token"].as_f64().unwrap();
        assert!((ms * decode.avg_ts - 1e3).abs() < 1e-9);
        assert_eq!(v["tests"][1]["n_gen"], 32);
        // The tests swapped are refused, and so is no prefill.
        assert!(peer_value("Q8_0", "m", std::slice::from_ref(&decode), &prefill[0]).is_err());
        assert!(peer_value("Q8_0", "m", &[], &decode).is_err());
    }

    #[test]
    fn several_prompt_lengths_in_one_run() {
        let tests = parse(PREFILL_LENS).unwrap();
        let got: Vec<(u64, u64, u64)> = tests
            .iter()
            .map(|t| (t.n_prompt, t.n_gen, t.n_depth))
            .collect();
        assert_eq!(got, [(16, 0, 0), (32, 0, 0)]);
        for t in &tests {
            // Each test's avg_ts is the mean of its own runs' rates.
            let mean = t
                .samples_ns
                .iter()
                .map(|&ns| t.n_prompt as f64 / (ns as f64 / 1e9))
                .sum::<f64>()
                / t.samples_ns.len() as f64;
            assert!((t.avg_ts - mean).abs() / t.avg_ts < 1e-4, "{t:?}");
        }
        // Put in the order asked, whatever llama-bench's order.
        let swapped = prefill_tests(tests.clone(), &[32, 16]).unwrap();
        assert_eq!((swapped[0].n_prompt, swapped[1].n_prompt), (32, 16));
        // A length llama-bench did not run, or a missing or extra test, is an error.
        assert!(prefill_tests(tests.clone(), &[16, 64]).is_err());
        assert!(prefill_tests(tests.clone(), &[16]).is_err());
        assert!(prefill_tests(tests.clone(), &[16, 32, 64]).is_err());

        let prefill = prefill_tests(tests, &[16, 32]).unwrap();
        let decode = parse(DECODE).unwrap().remove(0);
        let v = peer_value("Q8_0", "/c/m.gguf", &prefill, &decode).unwrap();
        assert_eq!(super::super::peer::prefill_lens(&v), [16, 32]);
        assert_eq!(
            super::super::peer::prefill_tok_s(&v, 32),
            Some(prefill[1].avg_ts)
        );
        assert_eq!(v["tests"].as_array().unwrap().len(), 3);
        assert_eq!(v["tests"][2]["n_depth"], 155);
    }

    #[test]
    fn one_run_for_every_prompt_length() {
        let request = Request {
            llama_bench: Path::new("llama-bench"),
            gguf: Path::new("m.gguf"),
            dtype: "Q8_0",
            prefill_lens: &[155, 1024],
            decode_context: 155,
            decode_steps: 32,
            threads: 2,
            reps: 3,
        };
        assert_eq!(
            bench_args(&request, request.prefill_lens, 0, 0, true).join(" "),
            "-p 155,1024 -n 0 -d 0 -t 2 -r 3 --repack 1 -o json"
        );
        assert_eq!(
            bench_args(&request, &[0], 32, 155, false).join(" "),
            "-p 0 -n 32 -d 155 -t 2 -r 3 --repack 0 -o json"
        );
    }
}
