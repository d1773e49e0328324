//! The command line of a model binary (`tt-lm`, `phi3`): run a checkpoint on a simulated mesh.
//!
//! - `generate`: stream generated text (or one JSON object with `--json`).
//! - `logits`: write all-position logits as safetensors.
//! - `plan`: the sharding planner's report for a checkpoint on a mesh.
//!
//! A binary is [`main`] with its name and the families it runs; the family of a checkpoint is
//! the one its config.json's `model_type` names. Errors end the process with a non-zero exit
//! code and one paragraph on stderr; logs are quiet (warnings only) unless `-v` or `RUST_LOG`
//! asks for more.
//!
//! Under `mpirun -n R` (built with the `mpi` feature) the mesh is spread over the R processes:
//! each loads and holds only its own devices' shards, rank 0 prints and writes files, and an
//! error on any rank ends the whole job with that rank's message ([`crate::ranks`]).
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
use clap::{ArgGroup, Args, CommandFactory, FromArgMatches, Parser, Subcommand, ValueEnum};
use indicatif::{ProgressBar, ProgressStyle};
use tracing_subscriber::EnvFilter;
use tt_hf::{ChatMessage, Checkpoint, LoadProgress, StreamDecoder, Tokenizer, read_prompt_file};
use tt_mesh::{DeviceProfile, MeshShape};
use tt_numerics::Preset;
use tt_ops::Fidelity;

use crate::config::DecoderConfig;
use crate::family::{Family, open_checkpoint};
use crate::precision::parse_preset;
use crate::{
    GenerateOptions, Logits, Model, PackedCache, Ranks, RuntimeOptions, Sampler, Sampling,
    SamplingParams, generate,
};

/// What a binary runs: its name, the families it knows, and its default model.
#[derive(Debug, Clone)]
pub struct Binary {
    /// Program name (`tt-lm`, `phi3`).
    pub name: &'static str,
    /// One line of `--help`.
    pub about: &'static str,
    /// The families it runs, picked by config.json's `model_type`.
    pub families: Vec<&'static dyn Family>,
    /// The checkpoint used when `--model` is not given.
    pub default_model: PathBuf,
    /// Where to find `tokenizer.json` when a checkpoint has none.
    pub default_tokenizer_dir: PathBuf,
}

impl std::fmt::Debug for dyn Family {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

#[derive(Debug, Parser)]
struct Cli {
    /// More log output on stderr: -v info, -vv debug (RUST_LOG overrides).
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
    /// Print the precision presets: each op class's weight format, math fidelity, accumulation
    /// and output format, with the tt-metal file each setting was taken from.
    Presets(PresetsArgs),
}

#[derive(Debug, Args)]
struct PresetsArgs {
    /// One preset, with overrides (e.g. `performance,ff2.weights=bfp4`); default: every preset.
    spec: Option<String>,
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
    /// Precision preset: f32, bf16, seed, accuracy or performance, with optional per-op
    /// overrides (`accuracy,ff1_ff3.weights=bfp4,qkv.fidelity=hifi4`); see the `presets`
    /// command. Default: f32.
    #[arg(long, value_parser = parse_preset, conflicts_with = "fidelity")]
    precision: Option<Preset>,
    /// Alias of `--precision f32` / `--precision bf16`.
    #[arg(long, value_enum)]
    fidelity: Option<FidelityArg>,
    /// Device profile: host (this machine's memory split over the devices) or wormhole_b0.
    #[arg(long, default_value = "host")]
    profile: String,
    /// KV cache length (default: enough for the request).
    #[arg(long)]
    max_seq_len: Option<usize>,
    /// Packed-weight cache directory: a packed preset (accuracy, performance) maps its packed
    /// weights from here, after packing and writing them on the first load. Default:
    /// $TT_PHI3_PACKED_CACHE (`off`: none), else ~/.cache/tt-phi3/packed.
    #[arg(long, value_name = "DIR")]
    packed_cache: Option<PathBuf>,
    /// Neither read nor write the packed-weight cache: pack from the checkpoint at every load.
    #[arg(long, conflicts_with = "packed_cache")]
    no_packed_cache: bool,
    /// How a block-float prefill sums each K-tile of 32 products: in-order (the emulation: the
    /// same bits on every CPU) or matrix-unit (the AMX tile unit where the CPU has one: faster,
    /// the sums' last bits differ). Default: $TT_OPS_K_TILE_SUMS, else in-order.
    #[arg(long)]
    k_tile_sums: Option<tt_ops::KTileSums>,
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
    /// Wrap the prompt text in the checkpoint's chat template (as one user turn).
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

fn open(bin: &Binary, model: Option<&str>) -> Result<Checkpoint<DecoderConfig>> {
    let name = match model {
        Some(m) => m.to_string(),
        None => bin.default_model.display().to_string(),
    };
    Ok(open_checkpoint(&name, &bin.families)?)
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

/// Opens the checkpoint and loads it onto the mesh (this rank's devices, under MPI) with a
/// progress bar (rank 0's only); returns the load time.
fn load(bin: &Binary, args: &ModelArgs, needed_len: usize, ranks: &Ranks) -> Result<(Model, f64)> {
    let start = Instant::now();
    let mut ckpt = open(bin, args.model.as_deref())?;
    let bar = ProgressBar::new(ckpt.total_bytes());
    if std::io::stderr().is_terminal() && ranks.is_leader() {
        bar.set_style(
            ProgressStyle::with_template("loading {bar:40} {bytes}/{total_bytes} {eta}")
                .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
    } else {
        bar.set_draw_target(indicatif::ProgressDrawTarget::hidden());
    }
    ckpt.set_progress(Arc::new(Bar(bar.clone())));
    if let Some(sums) = args.k_tile_sums {
        tt_ops::set_k_tile_sums(sums);
    }
    let mut options = RuntimeOptions::new(args.mesh);
    options.profile = profile(&args.profile, args.mesh)?;
    options.fidelity = match args.fidelity {
        None | Some(FidelityArg::F32) => Fidelity::F32,
        Some(FidelityArg::Bf16) => Fidelity::Bf16,
    };
    options.precision = args.precision.clone();
    options.max_seq_len = args.max_seq_len.unwrap_or(needed_len);
    options.transport = ranks.transport();
    options.packed_cache = match (&args.packed_cache, args.no_packed_cache) {
        (_, true) => PackedCache::Off,
        (Some(dir), false) => PackedCache::At(dir.clone()),
        (None, false) => PackedCache::Default,
    };
    let model = Model::load(&ckpt, &options)?;
    bar.finish_and_clear();
    Ok((model, start.elapsed().as_secs_f64()))
}

fn tokenizer_for(bin: &Binary, ckpt: &Checkpoint<DecoderConfig>) -> Result<Tokenizer> {
    let dir = match ckpt.tokenizer_path() {
        Some(_) => ckpt.dir().to_path_buf(),
        None => bin.default_tokenizer_dir.clone(),
    };
    let tok = Tokenizer::from_dir(&dir)?;
    tok.check_fits(ckpt.config().vocab_size)?;
    Ok(tok)
}

/// The peak RSS of every rank, in rank order (this process's alone without ranks; 0 where the
/// OS does not report it).
fn per_rank_peak_rss(model: &Model) -> Result<Vec<u64>> {
    let mine = peak_rss_bytes().unwrap_or(0);
    let Some(transport) = model.mesh().transport() else {
        return Ok(vec![mine]);
    };
    let all = transport.all_gather(&mine.to_le_bytes())?;
    Ok(all
        .iter()
        .map(|b| <[u8; 8]>::try_from(b.as_slice()).map_or(0, u64::from_le_bytes))
        .collect())
}

/// Peak resident set size of this process (VmHWM), if the OS reports it.
fn peak_rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

fn run_generate(bin: &Binary, args: GenerateArgs, ranks: &Ranks) -> Result<()> {
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
    let ckpt = open(bin, args.model.model.as_deref())?;
    let tokenizer = match &text {
        Some(_) => Some(tokenizer_for(bin, &ckpt)?),
        None => tokenizer_for(bin, &ckpt).ok(),
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
        return Err(crate::Error::EmptyPrompt.into());
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
    let (model, load_s) = load(bin, &args.model, needed, ranks)?;
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
    // Every rank's peak RSS (a collective: every rank reaches this line).
    let peak_rss_per_rank = per_rank_peak_rss(&model)?;
    let steps = timings.decode_steps_s.len().max(1) as f64;
    let traffic = timings.decode_traffic;
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
            },
            "ranks": {
                "ranks": ranks.ranks(),
                "peak_rss_bytes": peak_rss_per_rank,
                "rank0_decode_messages_per_step": traffic.messages as f64 / steps,
                "rank0_decode_bytes_per_step": traffic.bytes as f64 / steps,
                "rank0_decode_exchange_us_per_step": traffic.exchange_ns as f64 / steps / 1e3,
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

fn run_logits(bin: &Binary, args: LogitsArgs, ranks: &Ranks) -> Result<()> {
    let (model, _) = load(bin, &args.model, args.tokens.len(), ranks)?;
    let mut cache = model.new_cache()?;
    let logits = model.prefill(&mut cache, 0, &args.tokens, Logits::All)?;
    if !ranks.is_leader() {
        return Ok(());
    }
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

fn run_presets(args: PresetsArgs) -> Result<()> {
    match args.spec {
        Some(spec) => print!("{}", Preset::parse(&spec)?),
        None => print!("{}", tt_numerics::table::all_presets_table()),
    }
    Ok(())
}

fn run_plan(bin: &Binary, args: PlanArgs) -> Result<()> {
    let ckpt = open(bin, args.model.as_deref())?;
    let mut options = RuntimeOptions::new(args.mesh);
    options.profile = profile(&args.profile, args.mesh)?;
    options.max_seq_len = args.seq_len;
    options.max_batch = args.batch;
    let plan = crate::plan(ckpt.config(), &options)?;
    if args.json {
        println!("{}", plan.to_json()?);
    } else {
        println!("{plan}");
    }
    Ok(())
}

/// Runs the binary `bin` on this process's command line; returns its exit code.
pub fn main(bin: &Binary) -> ExitCode {
    crate::freed_memory::keep_freed_memory();
    let matches = Cli::command().name(bin.name).about(bin.about).get_matches();
    let cli = match Cli::from_arg_matches(&matches) {
        Ok(cli) => cli,
        Err(err) => err.exit(),
    };
    let level = match cli.verbose {
        0 => "warn",
        1 => "info",
        _ => "debug",
    };
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(level)),
        )
        .init();
    // Under mpirun every rank runs this; rank 0 prints, the others only report errors.
    let ranks = match Ranks::from_env() {
        Ok(ranks) => ranks,
        Err(err) => {
            eprintln!("error: {}", tt_hf::one_paragraph(&err));
            return ExitCode::FAILURE;
        }
    };
    let ready = ranks.silence_followers().and_then(|()| ranks.share_cores());
    let result = ready
        .map_err(anyhow::Error::from)
        .and_then(|()| match cli.command {
            Command::Generate(args) => run_generate(bin, args, &ranks),
            Command::Logits(args) => run_logits(bin, args, &ranks),
            Command::Plan(args) => run_plan(bin, args),
            Command::Presets(args) => run_presets(args),
        });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) if ranks.ranks() > 1 => {
            // The other ranks may be waiting on this one: end the whole job.
            eprintln!(
                "rank {}: error: {}",
                ranks.rank(),
                tt_hf::one_paragraph(err.as_ref())
            );
            ranks.abort(1);
            ExitCode::FAILURE
        }
        Err(err) => {
            eprintln!("error: {}", tt_hf::one_paragraph(err.as_ref()));
            ExitCode::FAILURE
        }
    }
}
