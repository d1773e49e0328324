//! `phi3`: run a Phi-3 checkpoint on a simulated device mesh.
//!
//! - `phi3 generate`: stream generated text (or one JSON object with `--json`).
//! - `phi3 logits`: write all-position logits as safetensors.
//! - `phi3 plan`: the sharding planner's report for a checkpoint on a mesh.
//!
//! Errors end the process with a non-zero exit code and one paragraph on stderr.
//!
//! Under the `host` profile each simulated device's budget is this machine's physical memory
//! split over the devices, so a KV cache (or model) that cannot fit in memory is refused with
//! the bytes needed and available before anything is allocated.

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use clap::{ArgGroup, Args, Parser, Subcommand, ValueEnum};
use indicatif::{ProgressBar, ProgressStyle};
use phi3_model::tokenizer::read_prompt_file;
use phi3_model::{
    ChatMessage, Checkpoint, GenerateOptions, LoadProgress, Logits, Phi3Model, Phi3Tokenizer,
    RuntimeOptions, Sampler, Sampling, SamplingParams, StreamDecoder, bundled, generate,
};
use tracing_subscriber::EnvFilter;
use tt_mesh::{DeviceProfile, MeshShape};
use tt_ops::Fidelity;

#[derive(Debug, Parser)]
#[command(
    name = "phi3",
    about = "Phi-3 on a simulated tensor-parallel device mesh"
)]
struct Cli {
    /// More log lines on stderr: -v info, -vv debug, -vvv trace [default: warnings only, or
    /// RUST_LOG when set].
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    verbose: u8,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Generate text from a prompt.
    Generate(GenerateArgs),
    /// Write all-position logits of a token sequence as safetensors (tensor `logits`, f32 [T, V]).
    Logits(LogitsArgs),
    /// Print the sharding plan of a checkpoint on a mesh.
    Plan(PlanArgs),
}

/// Activation fidelity on the command line.
#[derive(Debug, Clone, Copy, ValueEnum)]
enum FidelityArg {
    /// f32 activations (the reference path).
    F32,
    /// Activations rounded to bf16 between ops, as a device does.
    Bf16,
}

#[derive(Debug, Args)]
struct ModelArgs {
    /// Checkpoint directory or HF model id (resolved offline in the HF cache); default: the
    /// bundled model.
    #[arg(long)]
    model: Option<String>,
    /// Mesh shape, rows x cols.
    #[arg(long, default_value = "2x4")]
    mesh: MeshShape,
    /// Activation fidelity.
    #[arg(long, value_enum, default_value = "f32")]
    fidelity: FidelityArg,
    /// Device profile: host (this machine's memory split over the devices) or wormhole_b0.
    #[arg(long, default_value = "host")]
    profile: String,
    /// KV cache length (default: enough for the request).
    #[arg(long)]
    max_seq_len: Option<usize>,
}

#[derive(Debug, Args)]
#[command(group(ArgGroup::new("input").required(true).args(["prompt", "prompt_file", "prompt_ids"])))]
#[command(group(ArgGroup::new("text").args(["prompt", "prompt_file"])))]
struct GenerateArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// Prompt text.
    #[arg(long)]
    prompt: Option<String>,
    /// Prompt text from a UTF-8 file (trailing newlines are dropped, as `cargo xtask
    /// reference` does).
    #[arg(long)]
    prompt_file: Option<PathBuf>,
    /// Wrap the prompt text in the Phi-3 chat template.
    #[arg(long, requires = "text")]
    chat: bool,
    /// Prompt token ids, comma separated.
    #[arg(long, value_delimiter = ',')]
    prompt_ids: Option<Vec<u32>>,
    /// Tokens to generate at most.
    #[arg(long, default_value_t = 64)]
    max_new_tokens: usize,
    /// Stop tokens are suppressed until this many tokens are generated.
    #[arg(long, default_value_t = 0)]
    min_new_tokens: usize,
    /// Sampling temperature (omit for greedy decoding).
    #[arg(long)]
    temperature: Option<f32>,
    /// Keep the k most likely tokens when sampling.
    #[arg(long)]
    top_k: Option<usize>,
    /// Nucleus sampling threshold.
    #[arg(long)]
    top_p: Option<f32>,
    /// Seed of the sampler.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Print one JSON object (tokens, text, timings) instead of streaming text.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Args)]
struct LogitsArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// Token ids, comma separated.
    #[arg(long, value_delimiter = ',', required = true)]
    tokens: Vec<u32>,
    /// Output safetensors file.
    #[arg(long)]
    out: PathBuf,
}

#[derive(Debug, Args)]
struct PlanArgs {
    /// Checkpoint directory or HF model id; default: the bundled model.
    #[arg(long)]
    model: Option<String>,
    /// Mesh shape, rows x cols.
    #[arg(long, default_value = "2x4")]
    mesh: MeshShape,
    /// Device profile: host (this machine's memory split over the devices) or wormhole_b0.
    #[arg(long, default_value = "wormhole_b0")]
    profile: String,
    /// KV cache length.
    #[arg(long, default_value_t = 4096)]
    seq_len: usize,
    /// Sequences decoded together.
    #[arg(long, default_value_t = 1)]
    batch: usize,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

/// An indicatif bar fed by checkpoint reads.
struct Bar(ProgressBar);

impl LoadProgress for Bar {
    fn start(&self, total_bytes: u64) {
        self.0.set_length(total_bytes);
    }
    fn advance(&self, _tensor: &str, bytes: u64) {
        self.0.inc(bytes);
    }
    fn finish(&self) {
        self.0.finish_and_clear();
    }
}

fn open_checkpoint(model: Option<&str>) -> Result<Checkpoint> {
    let name = match model {
        Some(m) => m.to_string(),
        None => bundled::bundled_model_dir().display().to_string(),
    };
    Ok(Checkpoint::open(&name)?)
}

/// The named profile; `host` gets this machine's memory split over the mesh's devices.
fn profile(name: &str, mesh: MeshShape) -> Result<DeviceProfile> {
    if name == "host" {
        return Ok(tt_mesh::memory::host_profile_within_memory(
            mesh.num_devices(),
        ));
    }
    DeviceProfile::by_name(name)
        .with_context(|| format!("unknown device profile {name:?}; use host or wormhole_b0"))
}

/// Opens the checkpoint and loads it onto the mesh with a progress bar; returns the load time.
fn load(args: &ModelArgs, needed_len: usize) -> Result<(Checkpoint, Phi3Model, f64)> {
    let start = Instant::now();
    let mut ckpt = open_checkpoint(args.model.as_deref())?;
    let bar = ProgressBar::new(ckpt.total_bytes());
    if std::io::stderr().is_terminal() {
        bar.set_style(
            ProgressStyle::with_template("loading {bar:40} {bytes}/{total_bytes} {eta}")
                .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
    } else {
        bar.set_draw_target(indicatif::ProgressDrawTarget::hidden());
    }
    ckpt.set_progress(Arc::new(Bar(bar.clone())));
    let mut options = RuntimeOptions::new(args.mesh);
    options.profile = profile(&args.profile, args.mesh)?;
    options.fidelity = match args.fidelity {
        FidelityArg::F32 => Fidelity::F32,
        FidelityArg::Bf16 => Fidelity::Bf16,
    };
    options.max_seq_len = args.max_seq_len.unwrap_or(needed_len);
    let model = Phi3Model::load(&ckpt, &options)?;
    bar.finish_and_clear();
    Ok((ckpt, model, start.elapsed().as_secs_f64()))
}

fn tokenizer_for(ckpt: &Checkpoint) -> Result<Phi3Tokenizer> {
    let path = ckpt
        .tokenizer_path()
        .unwrap_or_else(|| bundled::bundled_tokenizer_dir().join("tokenizer.json"));
    let tok = Phi3Tokenizer::from_file(&path)?;
    tok.check_fits(ckpt.config().vocab_size)?;
    Ok(tok)
}

/// Peak resident set size of this process (VmHWM), if the OS reports it.
fn peak_rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

fn run_generate(args: GenerateArgs) -> Result<()> {
    // User input first (the prompt file), then the checkpoint.
    let text = match (&args.prompt, &args.prompt_file) {
        (Some(text), _) => Some(text.clone()),
        (None, Some(file)) => Some(
            read_prompt_file(file)?
                .trim_end_matches(['\r', '\n'])
                .to_string(),
        ),
        (None, None) => None,
    };
    // The prompt needs the tokenizer, which lives beside the checkpoint: peek at it first.
    let ckpt = open_checkpoint(args.model.model.as_deref())?;
    let tokenizer = match &text {
        Some(_) => Some(tokenizer_for(&ckpt)?),
        None => tokenizer_for(&ckpt).ok(),
    };
    let prompt = match (&text, &args.prompt_ids) {
        (Some(text), _) => {
            let tok = tokenizer.as_ref().context("no tokenizer")?;
            if args.chat {
                tok.encode_chat(&[ChatMessage::user(text.clone())], true)?
            } else {
                tok.encode(text)?
            }
        }
        (None, Some(ids)) => ids.clone(),
        (None, None) => bail!("give --prompt, --prompt-file or --prompt-ids"),
    };
    if prompt.is_empty() {
        return Err(phi3_model::Error::EmptyPrompt.into());
    }
    let stop_tokens = ckpt.generation_config().eos_token_ids;
    drop(ckpt);

    let needed = prompt.len() + args.max_new_tokens;
    if let Some(cap) = args.model.max_seq_len
        && needed > cap
    {
        bail!(
            "the prompt ({} tokens) plus --max-new-tokens {} needs {needed} positions but --max-seq-len is {cap}",
            prompt.len(),
            args.max_new_tokens
        );
    }
    let sampling = match args.temperature {
        None => Sampling::Greedy,
        Some(temperature) => Sampling::Random(SamplingParams {
            temperature,
            top_k: args.top_k,
            top_p: args.top_p,
            seed: args.seed,
        }),
    };
    let mut samplers = [Sampler::new(sampling)?];
    let (_, model, load_s) = load(&args.model, needed)?;
    let options = GenerateOptions {
        max_new_tokens: args.max_new_tokens,
        min_new_tokens: args.min_new_tokens,
        stop_tokens,
    };
    let mut cache = model.new_cache()?;
    let mut stream = StreamDecoder::new(true);
    let mut stdout = std::io::stdout().lock();
    let stream_text = !args.json && tokenizer.is_some();
    let mut on_token = |_: usize, id: u32| {
        if let (true, Some(tok)) = (stream_text, tokenizer.as_ref())
            && let Ok(Some(piece)) = stream.push(tok, id)
        {
            let _ = write!(stdout, "{piece}");
            let _ = stdout.flush();
        }
    };
    let (out, timings) = generate(
        &model,
        &mut cache,
        std::slice::from_ref(&prompt),
        &mut samplers,
        &options,
        &mut on_token,
    )?;
    let generated = &out[0];
    let text = match &tokenizer {
        Some(tok) => tok.decode(generated.new_tokens(), true)?,
        None => String::new(),
    };
    if args.json {
        let json = serde_json::json!({
            "tokens": generated.tokens,
            "prompt_len": generated.prompt_len,
            "text": text,
            "stopped": generated.stopped,
            "timings": {
                "load_s": load_s,
                "prefill_s": timings.prefill_s,
                "prefill_tokens": timings.prefill_tokens,
                "decode_s_per_token": timings.decode_median_s(),
                "decode_steps": timings.decode_steps_s.len(),
                "peak_rss_bytes": peak_rss_bytes(),
            }
        });
        println!("{json}");
    } else if let Some(tok) = tokenizer.as_ref() {
        if let Some(rest) = stream.flush(tok)? {
            print!("{rest}");
        }
        println!();
    } else {
        let ids: Vec<String> = generated.new_tokens().iter().map(u32::to_string).collect();
        println!("{}", ids.join(","));
    }
    Ok(())
}

fn run_logits(args: LogitsArgs) -> Result<()> {
    let (_, model, _) = load(&args.model, args.tokens.len())?;
    let mut cache = model.new_cache()?;
    let logits = model.prefill(&mut cache, 0, &args.tokens, Logits::All)?;
    write_logits(&args.out, &logits.to_f32_vec(), logits.shape())?;
    tracing::info!(out = %args.out.display(), shape = ?logits.shape(), "wrote logits");
    Ok(())
}

fn write_logits(path: &Path, values: &[f32], shape: &[usize]) -> Result<()> {
    let bytes: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
    let view =
        safetensors::tensor::TensorView::new(safetensors::Dtype::F32, shape.to_vec(), &bytes)
            .context("logits tensor")?;
    let data = safetensors::serialize([("logits", view)], None).context("serialising logits")?;
    std::fs::write(path, data).with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}

fn run_plan(args: PlanArgs) -> Result<()> {
    let ckpt = open_checkpoint(args.model.as_deref())?;
    let mut options = RuntimeOptions::new(args.mesh);
    options.profile = profile(&args.profile, args.mesh)?;
    options.max_seq_len = args.seq_len;
    options.max_batch = args.batch;
    let plan = phi3_model::plan(ckpt.config(), &options)?;
    if args.json {
        println!("{}", plan.to_json()?);
    } else {
        println!("{plan}");
    }
    Ok(())
}

/// The log filter: `-v` flags if given, else `RUST_LOG` if set, else warnings and errors only.
fn log_filter(verbose: u8) -> EnvFilter {
    let level = match verbose {
        0 => return EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("warn")),
        1 => "info",
        2 => "debug",
        _ => "trace",
    };
    EnvFilter::new(level)
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_env_filter(log_filter(cli.verbose))
        .init();
    let result = match cli.command {
        Command::Generate(args) => run_generate(args),
        Command::Logits(args) => run_logits(args),
        Command::Plan(args) => run_plan(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {}", phi3_model::error::one_paragraph(err.as_ref()));
            ExitCode::FAILURE
        }
    }
}
