//! `cargo xtask eval`: the teacher-forcing eval of the mesh model against an HF reference.
//!
//! With no arguments it runs the bundled model (`fixtures/phi3-tiny-en`) on a 2x4 mesh against
//! its bundled reference. With a prompt (`--prompt-file`, `--prompt-ids-file`, `--prefill-len`)
//! it first makes a fresh reference with HF in Python; with a prompt and `--reference`, the
//! reference must have been made for that prompt. `--mode hf` scores HF against itself (Python;
//! with no prompt, run_eval.py's default: `--prefill-len 20`, 20 tokens) and refuses the options
//! of the mesh run. Prints the seed's accuracy lines and one `YT_METRICS={...}` line; a progress
//! bar goes to stderr; the exit code is non-zero only on error.

mod hf;
mod prompt;

use std::ffi::OsString;
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use phi3_eval::{
    EvalMode, EvalOptions, EvalRun, ModelError, PrefillMode, Reference, TeacherForcedModel,
    TieBreak, run_teacher_forcing_with,
};
use phi3_model::{KvCache, LoadProgress, Logits, Phi3Tokenizer, RuntimeOptions, bundled};
use tt_decoder::{DecoderConfig, Model, Preset, parse_preset};
use tt_hf::Checkpoint;
use tt_mesh::MeshShape;
use tt_mesh::memory::host_profile_within_memory;
use tt_numerics::StorageFormat;
use tt_ops::Fidelity;

use self::hf::{hf_mode_refused, hf_script_args};
use self::prompt::{PromptSource, check_reference_prompt, prompt_script_args};
use crate::reference::{run_make_reference, venv_python};

/// Eval run mode, as run_eval.py names it.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum Mode {
    /// The mesh model.
    Tt,
    /// HF scored against itself (Python).
    Hf,
}

/// Activation fidelity.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum FidelityArg {
    /// f32 activations (reference).
    F32,
    /// bf16 between ops (device-like).
    Bf16,
}

/// Arguments of `cargo xtask eval`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Checkpoint directory or HF id [default: the bundled model].
    #[arg(long)]
    model: Option<String>,
    /// Mesh shape [default: 2x4].
    #[arg(long)]
    mesh: Option<MeshShape>,
    /// Prompt text file (a fresh HF reference is made with Python).
    #[arg(long, conflicts_with_all = ["prompt_ids_file", "prefill_len"])]
    prompt_file: Option<PathBuf>,
    /// Prompt token ids file (a fresh HF reference is made with Python).
    #[arg(long, conflicts_with = "prefill_len")]
    prompt_ids_file: Option<PathBuf>,
    /// Synthetic prompt of this many tokens (run_eval.py's builder; a fresh reference is made)
    /// [default with --mode hf: 20].
    #[arg(long)]
    prefill_len: Option<usize>,
    /// Tokens to score [default: all of the reference's].
    #[arg(long, alias = "decode-len")]
    max_new_tokens: Option<usize>,
    /// KV cache length [default: prompt + generated tokens].
    #[arg(long)]
    max_seq_len: Option<usize>,
    /// Feed the prompt token by token instead of one prefill.
    #[arg(long)]
    prefill_decode: bool,
    /// Precision preset (f32, bf16, seed, accuracy, performance, with per-op overrides such as
    /// `accuracy,ff1_ff3.weights=bfp4`) [default: f32]. `tt-lm presets` prints them.
    #[arg(long, value_parser = parse_preset, conflicts_with = "fidelity")]
    precision: Option<Preset>,
    /// Alias of `--precision f32` / `--precision bf16`.
    #[arg(long, value_enum)]
    fidelity: Option<FidelityArg>,
    /// Reference file [default: <model>/reference/eval_reference.json].
    #[arg(long)]
    reference: Option<PathBuf>,
    /// tt (the mesh model) or hf (HF against itself, through Python; takes only --model, a
    /// prompt, --max-new-tokens and --venv).
    #[arg(long, value_enum, default_value = "tt")]
    mode: Mode,
    /// Also print the per-step table.
    #[arg(long)]
    table: bool,
    /// Write the per-step report as JSON to this file.
    #[arg(long)]
    report: Option<PathBuf>,
    /// Python venv for references [default: $TT_PHI3_VENV or ~/.cache/tt-phi3/venv].
    #[arg(long)]
    venv: Option<PathBuf>,
}

/// The mesh model with its KV cache, driven one step at a time by the eval.
struct MeshModel {
    model: Model,
    cache: KvCache,
}

impl TeacherForcedModel for MeshModel {
    fn vocab_size(&self) -> usize {
        self.model.config().vocab_size
    }

    fn reset(&mut self) -> Result<(), ModelError> {
        self.cache.reset(0);
        Ok(())
    }

    fn prefill(&mut self, tokens: &[u32]) -> Result<Vec<f32>, ModelError> {
        let logits = self
            .model
            .prefill(&mut self.cache, 0, tokens, Logits::Last)?;
        Ok(logits.to_f32_vec())
    }

    fn decode(&mut self, token: u32) -> Result<Vec<f32>, ModelError> {
        Ok(self
            .model
            .decode(&mut self.cache, &[Some(token)])?
            .to_f32_vec())
    }
}

/// An indicatif bar fed by checkpoint reads.
struct LoadBar(ProgressBar);

impl LoadProgress for LoadBar {
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

fn bar(len: u64, template: &str) -> ProgressBar {
    let bar = ProgressBar::new(len);
    if std::io::stderr().is_terminal() {
        bar.set_style(
            ProgressStyle::with_template(template).unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
    } else {
        bar.set_draw_target(ProgressDrawTarget::hidden());
    }
    bar
}

/// The reference to score against: given, bundled with the model, or made now with Python.
fn reference_path(args: &Args, model: &str, dir: &Path) -> Result<PathBuf> {
    if let Some(r) = &args.reference {
        return Ok(r.clone());
    }
    match PromptSource::of(args) {
        None => Ok(dir.join("reference").join("eval_reference.json")),
        Some(prompt) => {
            let out = crate::workspace_root()
                .join("target")
                .join("eval-references")
                .join(format!("{}.json", model.replace(['/', '\\', '.'], "_")));
            if let Some(parent) = out.parent() {
                std::fs::create_dir_all(parent)?;
            }
            let mut script: Vec<OsString> = vec!["--model".into(), model.into()];
            script.extend(prompt_script_args(prompt, args.max_new_tokens));
            script.extend(["--out".into(), out.clone().into()]);
            run_make_reference(&venv_python(args.venv.as_deref())?, &script)?;
            Ok(out)
        }
    }
}

/// Loads `ckpt` on the mesh `options` describe and scores it against `reference` (progress
/// bars on stderr). Logits that leave the device in a device format (bf16, bfloat8_b) are ranked
/// as the seed's `torch.topk` on them ranks equal logits; f32 logits by lowest id first.
pub(crate) fn score_on_mesh(
    ckpt: &mut Checkpoint<DecoderConfig>,
    reference: &Reference,
    options: &RuntimeOptions,
    eval_options: &EvalOptions,
) -> Result<EvalRun> {
    let load_bar = bar(ckpt.total_bytes(), "loading {bar:40} {bytes}/{total_bytes}");
    ckpt.set_progress(Arc::new(LoadBar(load_bar.clone())));
    let model = Model::load(ckpt, options)?;
    load_bar.finish_and_clear();
    let tie = match model.numerics().logits_format() {
        StorageFormat::F32 => TieBreak::LowestId,
        _ => TieBreak::TorchTopk,
    };
    let cache = model.new_cache()?;
    let mut mesh_model = MeshModel { model, cache };
    let steps = bar(0, "eval {bar:40} {pos}/{len} model calls");
    let run = run_teacher_forcing_with(&mut mesh_model, reference, eval_options, tie, &mut |p| {
        steps.set_length(p.total as u64);
        steps.set_position(p.done as u64);
    })?;
    steps.finish_and_clear();
    Ok(run)
}

/// Runs the eval. An error comes back as one paragraph: its causes on one line, each once.
///
/// Under `mpirun -n R` (xtask built with `--features mpi`) the mesh is spread over the R ranks:
/// every rank scores, rank 0 prints and writes the report, and an error on any rank ends the job
/// with that rank's message.
pub fn run(args: Args) -> Result<()> {
    let one_paragraph =
        |e: anyhow::Error| anyhow::anyhow!(phi3_model::error::one_paragraph(e.as_ref()));
    let ranks = tt_decoder::Ranks::from_env()?;
    ranks.silence_followers()?;
    ranks.share_cores()?;
    let result = run_eval(args, &ranks).map_err(one_paragraph);
    if let Err(err) = &result
        && ranks.ranks() > 1
    {
        eprintln!("rank {}: error: {err}", ranks.rank());
        ranks.abort(1);
    }
    result
}

fn run_eval(args: Args, ranks: &tt_decoder::Ranks) -> Result<()> {
    if let Mode::Hf = args.mode {
        let refused = hf_mode_refused(&args);
        if !refused.is_empty() {
            bail!(
                "--mode hf scores HF against itself in Python and does not take {}: they are \
                 options of the mesh model's run (--mode tt); drop them",
                refused.join(", ")
            );
        }
    }
    // The prompt files are read before any Python runs or any model is read.
    let prompt = PromptSource::of(&args);
    let given = prompt.map(|p| p.read()).transpose()?;
    let model_name = match &args.model {
        Some(m) => m.clone(),
        None => bundled::bundled_model_dir().display().to_string(),
    };
    if let Mode::Hf = args.mode {
        let script = hf_script_args(&args, &model_name);
        return run_make_reference(&venv_python(args.venv.as_deref())?, &script);
    }

    // Any family `tt-lm` runs, picked by config.json's `model_type`.
    let mut ckpt = tt_decoder::open_checkpoint(&model_name, &tt_lm::families())?;
    let dir = ckpt.dir().to_path_buf();
    let reference_file = reference_path(&args, &model_name, &dir)?;
    let reference = Reference::load(&reference_file)
        .with_context(|| format!("reading the reference {}", reference_file.display()))?;
    reference.check_model_dir(&dir)?;
    let tokenizer_json = ckpt
        .tokenizer_path()
        .unwrap_or_else(|| bundled::bundled_tokenizer_dir().join("tokenizer.json"));
    reference.check_tokenizer_file(&tokenizer_json)?;
    // Whatever the prompt's source, the reference must have been made for it.
    if let (Some(prompt), Some(given)) = (prompt, &given) {
        let ids = given.ids(&tokenizer_json)?;
        check_reference_prompt(&reference, &reference_file, prompt, &ids)?;
    }

    let decode_len = args.max_new_tokens.unwrap_or(reference.max_new_tokens);
    let needed = reference.prompt_len + decode_len;
    let max_seq_len = args.max_seq_len.unwrap_or(needed);
    if max_seq_len < needed {
        bail!(
            "--max-seq-len {max_seq_len} is shorter than the prompt ({}) plus {decode_len} scored tokens",
            reference.prompt_len
        );
    }
    // Without --mesh: the T3000's 2x4.
    let mesh = match args.mesh {
        Some(mesh) => mesh,
        None => MeshShape::new(2, 4)?,
    };
    let mut options = RuntimeOptions::new(mesh);
    // Simulated devices live in host memory: a cache that cannot fit is refused, not attempted.
    options.profile = host_profile_within_memory(mesh.num_devices());
    options.fidelity = match args.fidelity {
        None | Some(FidelityArg::F32) => Fidelity::F32,
        Some(FidelityArg::Bf16) => Fidelity::Bf16,
    };
    options.precision = args.precision.clone();
    options.max_seq_len = max_seq_len;
    options.transport = ranks.transport();
    let eval_options = EvalOptions {
        prefill_mode: if args.prefill_decode {
            PrefillMode::PrefillDecode
        } else {
            PrefillMode::Prefill
        },
        decode_len: Some(decode_len),
    };
    let run = score_on_mesh(&mut ckpt, &reference, &options, &eval_options)?;
    let report = run.report;
    tracing::info!(
        prefill_s = run.prefill_time.as_secs_f64(),
        decode_s = run.decode_time.as_secs_f64(),
        mesh = %mesh,
        "eval done"
    );
    if args.table {
        let tokenizer = Phi3Tokenizer::from_file(&tokenizer_json).ok();
        let text = |id: u32| {
            tokenizer
                .as_ref()
                .and_then(|t| t.decode(&[id], false).ok())
                .unwrap_or_default()
        };
        println!("{}", report.table(&text));
    }
    if let Some(path) = args.report.as_ref().filter(|_| ranks.is_leader()) {
        std::fs::write(path, report.to_json_pretty())
            .with_context(|| format!("writing {}", path.display()))?;
    }
    print!("{}", report.accuracy_lines());
    println!("{}", report.yt_metrics(EvalMode::Tt, false, 1).to_line());
    Ok(())
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    /// `cargo xtask eval` arguments, parsed as the command line would be.
    #[derive(Debug, Parser)]
    struct EvalCli {
        #[command(flatten)]
        args: Args,
    }

    /// Runs the eval with `args` and returns what `main` would print: the error chain on one
    /// line (`error: {err:#}`), which must be a single paragraph.
    pub(super) fn eval_error(args: &[&str]) -> String {
        let cli =
            EvalCli::try_parse_from(std::iter::once("eval").chain(args.iter().copied())).unwrap();
        let err = run(cli.args).expect_err("the eval should refuse this input");
        let message = format!("error: {err:#}");
        assert_eq!(message.lines().count(), 1, "{message}");
        message
    }

    pub(super) fn assert_contains(message: &str, needles: &[&str]) {
        for needle in needles {
            assert!(message.contains(needle), "missing {needle:?} in: {message}");
        }
    }

    /// A copy of the bundled model's files in a temporary directory.
    fn bundled_copy() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        for entry in std::fs::read_dir(bundled::bundled_model_dir()).unwrap() {
            let path = entry.unwrap().path();
            if path.is_file() {
                std::fs::copy(&path, dir.path().join(path.file_name().unwrap())).unwrap();
            }
        }
        dir
    }

    fn bundled_reference() -> String {
        bundled::bundled_model_dir()
            .join("reference/eval_reference.json")
            .display()
            .to_string()
    }

    #[test]
    fn missing_model_or_not_a_checkpoint() {
        let message = eval_error(&["--model", "/nonexistent/model"]);
        assert_contains(&message, &["model `/nonexistent/model` not found"]);
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("notes.txt"), "hello").unwrap();
        let model = dir.path().display().to_string();
        let message = eval_error(&["--model", &model]);
        assert_contains(&message, &["is not a checkpoint: it holds no config.json"]);
    }

    #[test]
    fn a_reference_for_another_model_or_tokenizer() {
        let tiny = crate::workspace_root().join("fixtures/phi3-tiny");
        let tiny = tiny.display().to_string();
        let reference = bundled_reference();
        let message = eval_error(&["--model", &tiny, "--reference", &reference]);
        assert_contains(
            &message,
            &[
                "the reference was made for another model",
                "make a reference for this model",
            ],
        );
        // Same weights, another tokenizer.json (one more space: another hash).
        let dir = bundled_copy();
        let tok = dir.path().join("tokenizer.json");
        let mut bytes = std::fs::read(&tok).unwrap();
        bytes.push(b' ');
        std::fs::write(&tok, bytes).unwrap();
        let model = dir.path().display().to_string();
        let message = eval_error(&["--model", &model, "--reference", &reference]);
        assert_contains(&message, &["the reference was made with another tokenizer"]);
    }

    #[test]
    fn a_reference_that_is_not_one() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("reference.json");
        std::fs::write(&file, "{\"format\": ").unwrap();
        let reference = file.display().to_string();
        let message = eval_error(&["--reference", &reference]);
        assert_contains(
            &message,
            &[
                "reading the reference",
                "the reference is not valid JSON: EOF while parsing",
            ],
        );
    }

    /// The prompt file is checked before any Python runs (no venv is needed to get this error).
    #[test]
    fn a_prompt_file_that_is_not_utf8() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("prompt.txt");
        std::fs::write(&file, b"\xff\xfe prompt").unwrap();
        let prompt = file.display().to_string();
        for extra in [&[][..], &["--reference", &bundled_reference()][..]] {
            let mut args = vec![
                "--prompt-file",
                prompt.as_str(),
                "--venv",
                "/nonexistent/venv",
            ];
            args.extend_from_slice(extra);
            let message = eval_error(&args);
            assert_contains(
                &message,
                &[&format!(
                    "the prompt file {prompt} is not UTF-8 text (invalid byte at offset 0)"
                )],
            );
        }
    }

    pub(super) fn parse(args: &[&str]) -> Args {
        EvalCli::try_parse_from(std::iter::once("eval").chain(args.iter().copied()))
            .unwrap()
            .args
    }

    /// With `--reference`, every prompt option is checked against the reference's prompt
    /// before the model runs (and no Python runs: the venv does not exist).
    #[test]
    fn a_reference_for_another_prompt_whatever_the_prompt_option() {
        let reference = bundled_reference();
        let dir = tempfile::tempdir().unwrap();
        let ids = dir.path().join("ids.json");
        std::fs::write(&ids, "[450, 4996, 17354]").unwrap();
        let text = dir.path().join("prompt.txt");
        std::fs::write(&text, "Another prompt.\n").unwrap();
        let (ids, text) = (ids.display().to_string(), text.display().to_string());
        for (option, value) in [
            ("--prompt-ids-file", ids.as_str()),
            ("--prefill-len", "20"),
            ("--prompt-file", text.as_str()),
        ] {
            let message = eval_error(&[
                option,
                value,
                "--reference",
                &reference,
                "--venv",
                "/nonexistent/venv",
            ]);
            assert_contains(
                &message,
                &[
                    &format!(
                        "the reference {reference} was made for another prompt than {option} {value}"
                    ),
                    "the prompt differs from the reference's at token 0",
                ],
            );
        }
        // The reference's own prompt, as ids, passes and is scored.
        let prompt = Reference::load(Path::new(&reference))
            .unwrap()
            .prompt_tokens;
        let same = dir.path().join("same.txt");
        let listed: Vec<String> = prompt.iter().map(u32::to_string).collect();
        std::fs::write(&same, listed.join(", ")).unwrap();
        let same = same.display().to_string();
        let args = parse(&[
            "--prompt-ids-file",
            &same,
            "--reference",
            &reference,
            "--mesh",
            "1x1",
            "--max-new-tokens",
            "2",
            "--venv",
            "/nonexistent/venv",
        ]);
        run(args).unwrap();
    }

    #[test]
    fn a_corrupt_checkpoint() {
        let dir = bundled_copy();
        let shard = dir.path().join("model-00002-of-00002.safetensors");
        let bytes = std::fs::read(&shard).unwrap();
        std::fs::write(&shard, &bytes[..bytes.len() / 2]).unwrap();
        let model = dir.path().display().to_string();
        assert_contains(
            &eval_error(&["--model", &model]),
            &["is truncated", "download it again"],
        );

        let dir = bundled_copy();
        let config = dir.path().join("config.json");
        let mut v: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&config).unwrap()).unwrap();
        v.as_object_mut().unwrap().remove("num_attention_heads");
        std::fs::write(&config, v.to_string()).unwrap();
        let model = dir.path().display().to_string();
        assert_contains(
            &eval_error(&["--model", &model]),
            &["config.json: required field `num_attention_heads` is missing"],
        );
    }

    #[test]
    fn mesh_cache_and_prompt_length() {
        assert_contains(
            &eval_error(&["--mesh", "2x8"]),
            &["a mesh of 16 devices cannot serve a model with 8 query heads"],
        );
        assert_contains(
            &eval_error(&["--max-seq-len", "10"]),
            &["--max-seq-len 10 is shorter than the prompt (149) plus 100 scored tokens"],
        );
        // The host's memory bounds the simulated devices: a 200M-token cache is refused by the
        // plan, before any weight or cache byte is allocated.
        if tt_mesh::memory::host_memory_bytes().is_some_and(|m| m < 400_000_000_000) {
            assert_contains(
                &eval_error(&["--max-seq-len", "200000000"]),
                &["KV cache for 200000000 tokens x batch 1) but profile host has"],
            );
        }
    }

    /// The bundled model on a 2x4 mesh against its bundled HF reference: the seed's lines and,
    /// per step, the reference token, the mesh model's argmax and the hits.
    #[test]
    fn bundled_model_report_on_2x4() {
        let dir = bundled::bundled_model_dir();
        let ckpt = phi3_model::Checkpoint::open_dir(&dir).unwrap();
        let reference = Reference::load(&dir.join("reference/eval_reference.json")).unwrap();
        reference.check_model_dir(&dir).unwrap();
        let mut options = RuntimeOptions::new(MeshShape::new(2, 4).unwrap());
        options.max_seq_len = reference.prompt_len + reference.max_new_tokens;
        let model = Model::load(&ckpt, &options).unwrap();
        let cache = model.new_cache().unwrap();
        let mut mesh_model = MeshModel { model, cache };
        let run = phi3_eval::run_teacher_forcing(
            &mut mesh_model,
            &reference,
            &EvalOptions::default(),
            &mut |_| {},
        )
        .unwrap();
        let report = run.report;
        assert!(report.summary.top1 >= 0.99 && report.summary.top5 == 1.0);
        let mut text = report.accuracy_lines();
        for s in &report.steps {
            text.push_str(&format!(
                "step {:3} ref {:5} argmax {:5} top1 {} top5 {}\n",
                s.step, s.reference_token, s.device_top5[0], s.top1, s.top5
            ));
        }
        insta::assert_snapshot!(text);
    }
}
