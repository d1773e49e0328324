//! `cargo xtask accuracy`: how accurate will a model be on the device? The teacher-forcing eval
//! run in every precision preset, and an attribution of where the accuracy goes.
//!
//! - `cargo xtask accuracy table`: every preset (f32, bf16, seed, accuracy, performance) on
//!   every model given (default: the bundled Phi-3 and SmolLM2-135M-Instruct) and mesh (default
//!   1x1 and 2x4), top-1 / top-5 against the HF fp32 reference, as a markdown table.
//! - `cargo xtask accuracy attribution`: from one preset (default `performance`), one knob at a
//!   time set back to exact (a weight format per op class, the math fidelity of every op, the
//!   accumulation of every op, the logits' format, the KV cache's format, the activations'
//!   format), the top-1 / top-5 each run scores; then the PCC of every layer's hidden states
//!   against the f32 run over the whole reference sequence.

use anyhow::{Context, Result, bail};
use phi3_eval::{EvalOptions, EvalReport, PrefillMode, Reference};
use phi3_model::{RuntimeOptions, bundled};
use tt_decoder::{DecoderConfig, Logits, Model, OpClass, Preset, PresetName, parse_preset};
use tt_hf::Checkpoint;
use tt_mesh::MeshShape;
use tt_mesh::memory::host_profile_within_memory;
use tt_ops::Tensor;

use crate::eval::score_on_mesh;

/// Arguments of `cargo xtask accuracy`.
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, clap::Subcommand)]
enum Command {
    /// Every preset on every model and mesh: top-1 / top-5 against HF fp32.
    Table(TableArgs),
    /// Where the accuracy of one preset goes: one knob at a time back to exact, and per-layer
    /// PCC of the hidden states against the f32 run.
    Attribution(AttributionArgs),
}

#[derive(Debug, clap::Args)]
struct TableArgs {
    /// Checkpoint directories or HF ids, comma separated, each `MODEL` (its reference is
    /// `<dir>/reference/eval_reference.json`) or `MODEL=REFERENCE` [default: the bundled Phi-3
    /// and the converted SmolLM2-135M-Instruct (`cargo xtask smollm2`) with
    /// fixtures/smollm2-135m-instruct/reference/eval_reference.json].
    #[arg(long, value_delimiter = ',')]
    models: Vec<String>,
    /// Presets, one per flag [default: f32, seed, accuracy, performance].
    #[arg(long, value_parser = parse_preset)]
    precision: Vec<Preset>,
    /// Meshes, comma separated.
    #[arg(long, value_delimiter = ',', default_value = "1x1,2x4")]
    meshes: Vec<MeshShape>,
}

#[derive(Debug, clap::Args)]
struct AttributionArgs {
    /// `MODEL` or `MODEL=REFERENCE`, as for `table` [default: the converted
    /// SmolLM2-135M-Instruct with its reference in fixtures/].
    #[arg(long)]
    model: Option<String>,
    /// The preset to attribute.
    #[arg(long, value_parser = parse_preset, default_value = "performance")]
    precision: Preset,
    /// Mesh shape.
    #[arg(long, default_value = "1x1")]
    mesh: MeshShape,
    /// Set the knobs back cumulatively (each run keeps the previous knobs exact), ending at
    /// the f32 preset's numbers, instead of one at a time.
    #[arg(long)]
    cumulative: bool,
}

/// Runs the command.
pub fn run(args: Args) -> Result<()> {
    match args.command {
        Command::Table(a) => table(a),
        Command::Attribution(a) => attribution(a),
    }
}

/// The models of the default table.
fn default_models() -> Result<Vec<String>> {
    Ok(vec![
        bundled::bundled_model_dir().display().to_string(),
        smollm2_with_reference()?,
    ])
}

/// The converted SmolLM2 checkpoint with its reference in fixtures/.
fn smollm2_with_reference() -> Result<String> {
    let reference = crate::workspace_root()
        .join("fixtures/smollm2-135m-instruct/reference/eval_reference.json");
    Ok(format!(
        "{}={}",
        crate::smollm2::default_dir()?.display(),
        reference.display()
    ))
}

/// A checkpoint and its reference, from `MODEL` or `MODEL=REFERENCE`.
fn open(spec: &str) -> Result<(Checkpoint<DecoderConfig>, Reference)> {
    let (model, file) = match spec.split_once('=') {
        Some((m, r)) => (m, Some(std::path::PathBuf::from(r))),
        None => (spec, None),
    };
    let ckpt = tt_decoder::open_checkpoint(model, &tt_lm::families())?;
    let file = file.unwrap_or_else(|| ckpt.dir().join("reference").join("eval_reference.json"));
    let reference = Reference::load(&file)
        .with_context(|| format!("reading the reference {}", file.display()))?;
    reference.check_model_dir(ckpt.dir())?;
    Ok((ckpt, reference))
}

fn options(mesh: MeshShape, preset: &Preset, reference: &Reference) -> RuntimeOptions {
    let mut options = RuntimeOptions::new(mesh);
    options.profile = host_profile_within_memory(mesh.num_devices());
    options.precision = Some(preset.clone());
    options.max_seq_len = reference.prompt_len + reference.decode_len();
    options
}

/// Scores `preset` on `mesh`.
fn score(
    ckpt: &mut Checkpoint<DecoderConfig>,
    reference: &Reference,
    mesh: MeshShape,
    preset: &Preset,
) -> Result<EvalReport> {
    let eval_options = EvalOptions {
        prefill_mode: PrefillMode::Prefill,
        decode_len: None,
    };
    let run = score_on_mesh(
        ckpt,
        reference,
        &options(mesh, preset, reference),
        &eval_options,
    )?;
    tracing::info!(
        preset = %preset.name(),
        %mesh,
        top1 = run.report.summary.top1,
        "scored"
    );
    Ok(run.report)
}

fn percent(x: f64) -> String {
    format!("{:.0}", x * 100.0)
}

fn model_label(ckpt: &Checkpoint<DecoderConfig>) -> String {
    let dir = ckpt.dir();
    dir.file_name()
        .map_or_else(|| dir.display().to_string(), |n| n.to_string_lossy().into())
}

fn table(args: TableArgs) -> Result<()> {
    let models = match args.models.is_empty() {
        true => default_models()?,
        false => args.models,
    };
    let presets = match args.precision.is_empty() {
        true => [
            PresetName::F32,
            PresetName::Seed,
            PresetName::Accuracy,
            PresetName::Performance,
        ]
        .map(Preset::named)
        .to_vec(),
        false => args.precision,
    };
    let meshes: Vec<String> = args.meshes.iter().map(ToString::to_string).collect();
    println!(
        "| model | steps | preset | {} |",
        meshes
            .iter()
            .map(|m| format!("{m} top-1 / top-5 %"))
            .collect::<Vec<_>>()
            .join(" | ")
    );
    println!("|---|---|---|{}", "---|".repeat(meshes.len()));
    for model in &models {
        let (mut ckpt, reference) = open(model)?;
        let label = model_label(&ckpt);
        for preset in &presets {
            let mut cells = Vec::new();
            let mut steps = 0;
            for &mesh in &args.meshes {
                let report = score(&mut ckpt, &reference, mesh, preset)?;
                let s = &report.summary;
                steps = s.total;
                cells.push(format!("{} / {}", percent(s.top1), percent(s.top5)));
            }
            println!(
                "| {label} | {steps} | {} | {} |",
                preset.name(),
                cells.join(" | ")
            );
        }
    }
    Ok(())
}

/// The knobs of the attribution: a label and the override that sets it back to exact.
fn knobs(preset: &Preset) -> Vec<(String, Vec<String>)> {
    const LINEAR: [OpClass; 5] = [
        OpClass::Qkv,
        OpClass::O,
        OpClass::Ff1Ff3,
        OpClass::Ff2,
        OpClass::LmHead,
    ];
    let mut knobs = Vec::new();
    for op in LINEAR {
        let weights = preset.get(op).weights;
        if weights != tt_numerics::StorageFormat::F32 {
            knobs.push((
                format!("{} weights {weights} -> f32", op.name()),
                vec![format!("{}.weights=f32", op.name())],
            ));
        }
    }
    let mut with_ops = |label: &str, ops: &[OpClass], field: &str, value: &str| {
        knobs.push((
            label.to_string(),
            ops.iter()
                .map(|op| format!("{}.{field}={value}", op.name()))
                .collect(),
        ));
    };
    let with_sdpa = [LINEAR.as_slice(), &[OpClass::Sdpa]].concat();
    with_ops(
        "fidelity -> hifi4 (every op)",
        &with_sdpa,
        "fidelity",
        "hifi4",
    );
    with_ops("accumulation -> fp32 (every op)", &with_sdpa, "acc", "fp32");
    with_ops(
        "logits (lm_head output) -> f32",
        &[OpClass::LmHead],
        "output",
        "f32",
    );
    with_ops("kv cache -> f32", &[OpClass::KvCache], "weights", "f32");
    with_ops(
        "activations and op outputs -> f32",
        &[LINEAR.as_slice(), &[OpClass::Sdpa, OpClass::Activations]].concat(),
        "output",
        "f32",
    );
    // `activations` has no output field: its storage is its weights.
    if let Some((_, overrides)) = knobs.last_mut() {
        overrides.retain(|o| !o.starts_with("activations."));
        overrides.push("activations.weights=f32".into());
    }
    knobs
}

/// Pearson correlation of two equally long slices (f64).
fn pcc(a: &[f32], b: &[f32]) -> f64 {
    let n = a.len().min(b.len()) as f64;
    let mean = |x: &[f32]| x.iter().map(|&v| f64::from(v)).sum::<f64>() / n;
    let (ma, mb) = (mean(a), mean(b));
    let (mut sab, mut saa, mut sbb) = (0.0, 0.0, 0.0);
    for (&x, &y) in a.iter().zip(b) {
        let (dx, dy) = (f64::from(x) - ma, f64::from(y) - mb);
        sab += dx * dy;
        saa += dx * dx;
        sbb += dy * dy;
    }
    sab / (saa.sqrt() * sbb.sqrt()).max(f64::MIN_POSITIVE)
}

/// Every traced hidden state of one prefill of `tokens`.
fn trace(
    ckpt: &Checkpoint<DecoderConfig>,
    options: &RuntimeOptions,
    tokens: &[u32],
) -> Result<Vec<(String, Tensor)>> {
    let model = Model::load(ckpt, options)?;
    let mut cache = model.new_cache()?;
    let mut trace = Vec::new();
    let logits = model.prefill_traced(&mut cache, 0, tokens, Logits::All, Some(&mut trace))?;
    trace.push(("logits".into(), logits));
    Ok(trace)
}

fn attribution(args: AttributionArgs) -> Result<()> {
    let model = match args.model {
        Some(m) => m,
        None => smollm2_with_reference()?,
    };
    let (mut ckpt, reference) = open(&model)?;
    let base = args.precision;
    if base.is_overridden() {
        bail!("attribute a named preset; its knobs are set back one at a time");
    }
    let exact = score(
        &mut ckpt,
        &reference,
        args.mesh,
        &Preset::named(PresetName::F32),
    )?;
    let start = score(&mut ckpt, &reference, args.mesh, &base)?;
    let (e, s) = (&exact.summary, &start.summary);
    println!(
        "model {} on {}, {} steps: f32 top-1 {} / top-5 {}; `{}` top-1 {} / top-5 {}",
        model_label(&ckpt),
        args.mesh,
        s.total,
        percent(e.top1),
        percent(e.top5),
        base.name(),
        percent(s.top1),
        percent(s.top5)
    );
    println!();
    let header = match args.cumulative {
        true => "knobs set back to exact, cumulatively",
        false => "knob set back to exact",
    };
    println!("| {header} | top-1 % | top-5 % | top-1 recovered (points) |");
    println!("|---|---|---|---|");
    let mut kept = base.clone();
    for (label, overrides) in knobs(&base) {
        let mut preset = match args.cumulative {
            true => kept.clone(),
            false => base.clone(),
        };
        let label = match args.cumulative {
            true => format!("+ {label}"),
            false => label,
        };
        for o in &overrides {
            preset.apply_override(o)?;
        }
        let r = score(&mut ckpt, &reference, args.mesh, &preset)?;
        kept = preset;
        println!(
            "| {label} | {} | {} | {:+.0} |",
            percent(r.summary.top1),
            percent(r.summary.top5),
            (r.summary.top1 - s.top1) * 100.0
        );
    }

    let tokens = reference.full_sequence();
    let tokens = &tokens[..tokens.len().saturating_sub(1).max(1)];
    let f32_trace = trace(
        &ckpt,
        &options(args.mesh, &Preset::named(PresetName::F32), &reference),
        tokens,
    )?;
    let base_trace = trace(&ckpt, &options(args.mesh, &base, &reference), tokens)?;
    println!();
    println!(
        "PCC of `{}` against f32, prefill of the reference's {} tokens:",
        base.name(),
        tokens.len()
    );
    println!("| hidden state | PCC | max abs diff |");
    println!("|---|---|---|");
    for ((name, a), (_, b)) in f32_trace.iter().zip(&base_trace) {
        let (a, b) = (a.f32_values(), b.f32_values());
        let max = a
            .iter()
            .zip(b.iter())
            .map(|(x, y)| (x - y).abs())
            .fold(0.0f32, f32::max);
        println!("| {name} | {:.6} | {max:.4} |", pcc(&a, &b));
    }
    Ok(())
}
