//! `cargo xtask profile`: where the time of one decode step (or of a prefill) goes.
//!
//! The decoder runs each kind of work of a step (`qkv`, `attention`, `all_reduce`, ...) in a
//! TRACE span (`tt_mesh::trace` states the contract). This command loads a model, prefills a
//! synthetic prompt, then runs `--steps` decode steps (each: one token through the model, then
//! greedy sampling) with [`SpanTimes`] installed as a layer of the global subscriber (by
//! `main`, for this command only). Per kind it sums the calls and the busy time: each
//! thread's time inside the kind's span, summed over threads (a span entered inside another
//! pauses it, so kinds never count the same instant twice on one thread). Each step's wall time
//! is measured around the step. What no span covers, on any thread, is untracked:
//! `wall x threads - busy` (team threads waiting for the slowest device, glue between ops).
//!
//! - [`record`]: the recorder ([`SpanTimes`], a `tracing` layer) and its aggregation, fed
//!   durations (the gap since a thread's previous span event), so it is tested without a clock.
//! - [`report`]: the figures per kind and per step, and their Markdown table (stdout, or JSON
//!   with `--json`).
//!
//! Progress goes through `tracing` at info (`-v`).

mod record;
mod report;

use std::time::Instant;

use anyhow::{Result, bail};
use tt_decoder::{Logits, Model, Preset, RuntimeOptions, Sampler, parse_preset};
use tt_mesh::MeshShape;
use tt_mesh::memory::host_profile_within_memory;

use crate::bench::counts::synthetic_ids;
use crate::bench::preset_label;
pub use record::SpanTimes;
use report::{Meta, Phase, Report};

/// Arguments of `cargo xtask profile`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Checkpoint directory or HF id, any family tt-lm runs [default: the bundled tiny model].
    #[arg(long)]
    model: Option<String>,
    /// Mesh shape.
    #[arg(long, default_value = "2x4")]
    mesh: MeshShape,
    /// Precision preset, with overrides as in `cargo xtask bench` (`bf16`, `f32`, `accuracy`,
    /// `performance`, `NAME,op.field=value`).
    #[arg(long, value_parser = parse_preset, default_value = "bf16")]
    precision: Preset,
    /// Tokens of the synthetic prompt prefilled before the decode steps (with --prefill: the
    /// prompt each profiled prefill runs).
    #[arg(long, default_value_t = 155)]
    context: usize,
    /// Decode steps profiled (with --prefill: prefills profiled, after one untimed).
    #[arg(long, default_value_t = 8)]
    steps: usize,
    /// Profile the prefill of the prompt (and the sampling of its next token) instead.
    #[arg(long)]
    prefill: bool,
    /// Print the figures as JSON on stdout instead of the table.
    #[arg(long)]
    json: bool,
}

/// Loads the model, runs the profiled steps with `times` recording, prints the report.
pub fn run(args: Args, times: &SpanTimes) -> Result<()> {
    let model = match &args.model {
        Some(m) => m.clone(),
        None => phi3_model::bundled::bundled_model_dir()
            .display()
            .to_string(),
    };
    let report = profile(&model, &args, times)?;
    match args.json {
        true => println!("{}", serde_json::to_string_pretty(&report)?),
        false => print!("{}", report.table()),
    }
    Ok(())
}

/// The profile of `args`' steps on `model`, recorded by `times` (which must be installed).
fn profile(model: &str, args: &Args, times: &SpanTimes) -> Result<Report> {
    if args.context == 0 || args.steps == 0 {
        bail!("--context and --steps must be at least 1");
    }
    let mut options = RuntimeOptions::new(args.mesh);
    options.profile = host_profile_within_memory(args.mesh.num_devices());
    options.precision = Some(args.precision.clone());
    options.max_seq_len = args.context + args.steps;
    tracing::info!(model, mesh = %args.mesh, precision = %preset_label(&args.precision), "loading");
    let ckpt = tt_decoder::open_checkpoint(model, &tt_lm::families())?;
    let loaded = Model::load(&ckpt, &options)?;
    drop(ckpt);
    let ids = synthetic_ids(loaded.config().vocab_size, args.context);
    let mut cache = loaded.new_cache()?;
    let mut sampler = Sampler::greedy();
    let prefill = |cache: &mut tt_decoder::KvCache, sampler: &mut Sampler| -> Result<u32> {
        let logits = loaded.prefill(cache, 0, &ids, Logits::Last)?;
        Ok(sampler.sample(&logits.f32_values(), &[])?)
    };
    tracing::info!(tokens = args.context, "prefill (untimed)");
    let mut token = prefill(&mut cache, &mut sampler)?;
    times.reset();
    let mut walls = Vec::with_capacity(args.steps);
    for step in 0..args.steps {
        tracing::info!(step, "profiled step");
        let start = Instant::now();
        token = match args.prefill {
            true => prefill(&mut cache, &mut sampler)?,
            false => {
                let logits = loaded.decode(&mut cache, &[Some(token)])?;
                sampler.sample(&logits.f32_values(), &[])?
            }
        };
        walls.push(start.elapsed());
    }
    let totals = times.take();
    if totals.is_empty() {
        bail!("no span was recorded: the profiler's layer is not installed");
    }
    let meta = Meta {
        model: model.to_string(),
        mesh: args.mesh.to_string(),
        precision: preset_label(&args.precision),
        phase: match args.prefill {
            true => Phase::Prefill,
            false => Phase::Decode,
        },
        context: args.context,
        threads: rayon::current_num_threads(),
    };
    Ok(Report::new(meta, &totals, &walls))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use clap::Parser;
    use tracing_subscriber::prelude::*;

    use super::*;

    #[derive(Debug, Parser)]
    struct ProfileCli {
        #[command(flatten)]
        args: Args,
    }

    fn parse(args: &[&str]) -> Args {
        ProfileCli::try_parse_from(std::iter::once("profile").chain(args.iter().copied()))
            .unwrap()
            .args
    }

    #[test]
    fn arguments_default_as_documented() {
        let args = parse(&[]);
        assert_eq!(args.mesh, "2x4".parse().unwrap());
        assert_eq!(args.precision.name().to_string(), "bf16");
        assert_eq!((args.context, args.steps, args.prefill), (155, 8, false));
        let args = parse(&["--mesh", "1x1", "--precision", "accuracy", "--prefill"]);
        assert_eq!(preset_label(&args.precision), "accuracy");
        assert!(args.prefill);
    }

    /// Every kind a step of any family runs, and how many spans of it a step makes (`rope`: each
    /// layer's, and the step's rotary rows).
    fn expected_calls(layers: f64) -> Vec<(&'static str, f64)> {
        vec![
            ("act", layers),
            ("all_gather", 1.0),
            ("all_reduce", 2.0 * layers),
            ("attention", layers),
            ("down", layers),
            ("embed", 1.0),
            ("gate_up", layers),
            ("heads", layers),
            ("kv_write", layers),
            ("lm_head", 1.0),
            ("norm", 2.0 * layers + 1.0),
            ("o_proj", layers),
            ("qkv", layers),
            ("residual", 2.0 * layers),
            ("rope", layers + 1.0),
            ("sample", 1.0),
        ]
    }

    /// Profiles a fixture with a recorder installed on a pool of its own (every thread of it
    /// reports to the recorder, as every thread does under `main`'s global subscriber).
    fn profile_fixture(fixture: &str, cli: &[&str]) -> (Report, usize) {
        let dir = phi3_model::bundled::fixtures_dir().join(fixture);
        let dir = dir.display().to_string();
        let times = SpanTimes::default();
        let dispatch = tracing::Dispatch::new(tracing_subscriber::registry().with(times.layer()));
        let pool = {
            let dispatch = dispatch.clone();
            rayon::ThreadPoolBuilder::new()
                .num_threads(2)
                .start_handler(move |_| {
                    // Kept for the thread's life: the pool's threads report to this recorder.
                    std::mem::forget(tracing::dispatcher::set_default(&dispatch));
                })
                .build()
                .unwrap()
        };
        let args = parse(cli);
        let report = pool.install(|| {
            tracing::dispatcher::with_default(&dispatch, || profile(&dir, &args, &times))
        });
        let ckpt = tt_decoder::open_checkpoint(&dir, &tt_lm::families()).unwrap();
        (report.unwrap(), ckpt.config().num_hidden_layers)
    }

    /// Would fail if the decoder stopped emitting a kind, or emitted it on the wrong count.
    #[test]
    fn the_decoder_emits_every_kind_once_per_layer() {
        for (fixture, cli) in [
            // Phi-3: fused qkv and gate_up; host bf16 weights spread over the pool.
            (
                "phi3-tiny",
                &["--mesh", "2x4", "--context", "5", "--steps", "2"][..],
            ),
            // Llama: separate projections, packed device weights, one device.
            (
                "llama-tiny-gqa",
                &[
                    "--mesh",
                    "1x1",
                    "--precision",
                    "accuracy",
                    "--context",
                    "5",
                    "--steps",
                    "2",
                ],
            ),
            // A prefill makes the same kinds.
            (
                "llama-tiny-gqa",
                &[
                    "--mesh",
                    "1x2",
                    "--context",
                    "6",
                    "--steps",
                    "1",
                    "--prefill",
                ],
            ),
        ] {
            let (report, layers) = profile_fixture(fixture, cli);
            let mut got: Vec<(&str, f64)> = report
                .kinds
                .iter()
                .map(|k| (k.kind.as_str(), k.calls_per_step))
                .collect();
            got.sort_by(|a, b| a.0.cmp(b.0));
            assert_eq!(got, expected_calls(layers as f64), "{fixture} {cli:?}");
            assert!(
                report.kinds.iter().all(|k| k.busy_ms_per_step > 0.0),
                "{fixture}: {:?}",
                report.kinds
            );
            assert!(report.wall_ms_per_step > 0.0 && report.busy_ms_per_step > 0.0);
        }
    }
}
