//! `cargo xtask mpi-bench`: one mesh in one process against the same mesh spread over MPI ranks
//! on this host, on a real-size checkpoint.
//!
//! Builds `tt-lm` in release with the cargo feature `mpi`, then runs `tt-lm generate --json`
//! (synthetic prompt ids, greedy, a fixed number of decode steps) once in one process and once
//! under `mpirun -n R` for each rank count. Prints, per run: load time, prefill tokens/s, median
//! decode ms/token, the peak RSS of every rank, and what rank 0 exchanged with the other ranks per
//! decode step (messages, bytes, and the microseconds spent sending and waiting for them), beside
//! the planner's all_reduce bytes per decode step. Each rank gets `cores / ranks` threads, so one
//! process and R ranks use the same cores.

use std::path::PathBuf;
use std::process::Command;

use anyhow::{Context, Result, bail};
use serde_json::Value;
use tt_mesh::MeshShape;

use crate::bench::counts::synthetic_ids;
use crate::mpi::mpirun;
use crate::workspace_root;

/// Arguments of `cargo xtask mpi-bench`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Checkpoint directory or HF id (e.g. a `cargo xtask synth` checkpoint) [default: the
    /// bundled tiny model, a smoke run].
    #[arg(long)]
    model: Option<String>,
    /// Mesh shape.
    #[arg(long, default_value = "2x4")]
    mesh: MeshShape,
    /// Rank counts to compare with one process.
    #[arg(long, value_delimiter = ',', default_value = "2")]
    ranks: Vec<usize>,
    /// Prompt tokens (synthetic ids).
    #[arg(long, default_value_t = 155)]
    prompt_len: usize,
    /// Decode steps timed.
    #[arg(long, default_value_t = 32)]
    decode_steps: usize,
    /// Precision preset (as `tt-lm --precision`) [default: bf16].
    #[arg(long, default_value = "bf16")]
    precision: String,
    /// Use the `tt-lm` already built in target/release instead of building it.
    #[arg(long)]
    no_build: bool,
}

/// One run's figures.
struct Run {
    label: String,
    json: Value,
}

impl Run {
    fn num(&self, path: &[&str]) -> f64 {
        path.iter()
            .try_fold(&self.json, |v, k| v.get(*k))
            .and_then(Value::as_f64)
            .unwrap_or(f64::NAN)
    }

    fn rss_gb(&self) -> Vec<f64> {
        self.json
            .pointer("/ranks/peak_rss_bytes")
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(Value::as_f64)
                    .map(|b| b / 1e9)
                    .collect()
            })
            .unwrap_or_default()
    }
}

/// The CPU's model name, from /proc/cpuinfo.
fn cpu_name() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|n| n.trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into())
}

/// Runs the benchmark.
pub fn run(args: Args) -> Result<()> {
    let root = workspace_root();
    if !args.no_build {
        let status = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
            .current_dir(&root)
            .args([
                "build",
                "--release",
                "--locked",
                "-p",
                "tt-lm",
                "--features",
                "mpi",
            ])
            .status()
            .context("running cargo build")?;
        if !status.success() {
            bail!("building tt-lm with --features mpi failed");
        }
    }
    let tt_lm: PathBuf = root.join("target/release/tt-lm");
    let model = match &args.model {
        Some(m) => m.clone(),
        None => phi3_model::bundled::bundled_model_dir()
            .display()
            .to_string(),
    };
    let ckpt = tt_decoder::open_checkpoint(&model, &tt_lm::families())?;
    let config = ckpt.config().clone();
    let ids = synthetic_ids(config.vocab_size, args.prompt_len);
    let ids: Vec<String> = ids.iter().map(u32::to_string).collect();
    let mut options = tt_decoder::RuntimeOptions::new(args.mesh);
    options.max_seq_len = args.prompt_len + args.decode_steps + 1;
    let plan = tt_decoder::plan(&config, &options)?;
    let planned = plan.collectives().all_reduce_bytes_per_step;
    drop(ckpt);
    let cli: Vec<String> = [
        "generate",
        "--model",
        &model,
        "--mesh",
        &args.mesh.to_string(),
        "--precision",
        &args.precision,
        "--prompt-ids",
        &ids.join(","),
        "--max-new-tokens",
        &(args.decode_steps + 1).to_string(),
        "--min-new-tokens",
        &(args.decode_steps + 1).to_string(),
        "--json",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();

    let mut runs = Vec::new();
    let mut single = Command::new(&tt_lm);
    single.args(&cli);
    runs.push(Run {
        label: "1 process".into(),
        json: run_json(&mut single)?,
    });
    for &r in &args.ranks {
        let mut cmd = mpirun(&[(r, tt_lm.as_path(), cli.clone())]);
        runs.push(Run {
            label: format!("mpirun -n {r}"),
            json: run_json(&mut cmd)?,
        });
    }

    println!(
        "mpi-bench: {model}, mesh {}, precision {}, prompt {} tokens, {} decode steps; CPU: {} ({} cores)",
        args.mesh,
        args.precision,
        args.prompt_len,
        args.decode_steps,
        cpu_name(),
        std::thread::available_parallelism().map_or(1, |n| n.get())
    );
    println!(
        "| run | load s | prefill tok/s | decode ms/token | peak RSS per rank (GB) | rank 0 msgs/step | rank 0 KB/step | rank 0 exchange us/step |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    for run in &runs {
        let prefill = run.num(&["timings", "prefill_tokens"]) / run.num(&["timings", "prefill_s"]);
        let rss: Vec<String> = run.rss_gb().iter().map(|g| format!("{g:.2}")).collect();
        println!(
            "| {} | {:.1} | {:.1} | {:.1} | {} | {:.0} | {:.1} | {:.0} |",
            run.label,
            run.num(&["timings", "load_s"]),
            prefill,
            run.num(&["timings", "decode_s_per_token"]) * 1e3,
            rss.join(" / "),
            run.num(&["ranks", "rank0_decode_messages_per_step"]),
            run.num(&["ranks", "rank0_decode_bytes_per_step"]) / 1e3,
            run.num(&["ranks", "rank0_decode_exchange_us_per_step"]),
        );
    }
    // On a line, the one link between two ranks' blocks carries one whole all_reduce tensor per
    // call in each direction; rank 0 also sends its devices' logits to the other ranks.
    let calls = plan.collectives().all_reduces_per_token as f64;
    let hidden = config.hidden_size as f64;
    let vocab_share = config.vocab_size as f64 / args.ranks.first().copied().unwrap_or(2) as f64;
    println!(
        "planner: {calls} all_reduces per token of {hidden} values ({:.1} KB per decode step at 2 bytes per value); \
         over the rank boundary of a line, one tensor per all_reduce: {:.1} KB at f32 partials, \
         plus rank 0's logits ({:.1} KB at f32)",
        planned as f64 / 1e3,
        calls * hidden * 4.0 / 1e3,
        vocab_share * 4.0 / 1e3,
    );
    Ok(())
}

/// Runs `cmd`, which prints one JSON object on stdout.
fn run_json(cmd: &mut Command) -> Result<Value> {
    let out = cmd.output().with_context(|| format!("running {cmd:?}"))?;
    if !out.status.success() {
        bail!(
            "{cmd:?} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let stdout = String::from_utf8_lossy(&out.stdout);
    let line = stdout
        .lines()
        .rev()
        .find(|l| l.trim_start().starts_with('{'))
        .context("no JSON line in tt-lm's output")?;
    serde_json::from_str(line).context("parsing tt-lm's JSON")
}
