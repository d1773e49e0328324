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
//! The aggregation ([`Stack`], [`Tally`]) is fed durations (the gap since a thread's previous
//! span event), so it is tested without a clock; [`Report`] renders the Markdown table (stdout,
//! or JSON with `--json`). Progress goes through `tracing` at info (`-v`).

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::ThreadId;
use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use serde::Serialize;
use tracing::Subscriber;
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing_subscriber::Layer;
use tracing_subscriber::filter::{Filtered, Targets};
use tracing_subscriber::layer::Context;
use tracing_subscriber::registry::LookupSpan;
use tt_decoder::{Logits, Model, Preset, RuntimeOptions, Sampler, parse_preset};
use tt_mesh::MeshShape;
use tt_mesh::memory::host_profile_within_memory;

use crate::bench::counts::synthetic_ids;

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

/// A preset's name, `*` when overridden (as `cargo xtask bench` labels it).
fn preset_label(preset: &Preset) -> String {
    match preset.is_overridden() {
        true => format!("{}*", preset.name()),
        false => preset.name().to_string(),
    }
}

/// Calls and busy time of one kind.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Totals {
    /// Spans made.
    pub calls: u64,
    /// Time inside its spans, summed over threads.
    pub busy: Duration,
}

/// Totals per kind (span name).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Tally(BTreeMap<&'static str, Totals>);

impl Tally {
    /// One more span of `kind`.
    pub fn call(&mut self, kind: &'static str) {
        self.0.entry(kind).or_default().calls += 1;
    }

    /// `busy` more thread time on `kind`.
    pub fn busy(&mut self, kind: &'static str, busy: Duration) {
        self.0.entry(kind).or_default().busy += busy;
    }

    /// Whether nothing was recorded.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The totals, by kind.
    pub fn iter(&self) -> impl Iterator<Item = (&'static str, Totals)> + '_ {
        self.0.iter().map(|(&k, &t)| (k, t))
    }
}

/// One span entered on a thread.
#[derive(Debug, Clone, Copy)]
struct Frame {
    span: u64,
    kind: &'static str,
    /// Threads this span holds on this thread ([`tt_mesh::trace::spread`]); at least 1.
    threads: u32,
}

/// The spans a thread is inside, innermost last. Each event gives the time since the thread's
/// previous event, which goes to the innermost span (times the threads it holds).
#[derive(Debug, Clone, Default)]
pub(crate) struct Stack(Vec<Frame>);

impl Stack {
    fn advance(&self, gap: Duration, tally: &mut Tally) {
        if let Some(top) = self.0.last() {
            tally.busy(top.kind, gap * top.threads);
        }
    }

    /// The thread enters `span` (of `kind`) `gap` after its previous event.
    pub fn enter(&mut self, span: u64, kind: &'static str, gap: Duration, tally: &mut Tally) {
        self.advance(gap, tally);
        self.0.push(Frame {
            span,
            kind,
            threads: 1,
        });
    }

    /// The thread leaves `span` `gap` after its previous event.
    pub fn exit(&mut self, span: u64, gap: Duration, tally: &mut Tally) {
        self.advance(gap, tally);
        if let Some(i) = self.0.iter().rposition(|f| f.span == span) {
            self.0.remove(i);
        }
    }

    /// `span` holds `threads` threads from now on (`gap` after the thread's previous event).
    pub fn set_threads(&mut self, span: u64, threads: u32, gap: Duration, tally: &mut Tally) {
        self.advance(gap, tally);
        if let Some(f) = self.0.iter_mut().rev().find(|f| f.span == span) {
            f.threads = threads.max(1);
        }
    }

    /// Whether the thread is inside no span.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// A thread's spans and the instant of its last event.
struct ThreadState {
    stack: Stack,
    last: Instant,
}

#[derive(Default)]
struct State {
    tally: Tally,
    threads: HashMap<ThreadId, ThreadState>,
}

/// The profiler's recorder: a `tracing` layer ([`SpanTimes::layer`]) that sums calls and busy
/// time per span name of the decoder's kinds of work; cheap to clone (shared state).
#[derive(Clone, Default)]
pub struct SpanTimes(Arc<Mutex<State>>);

impl SpanTimes {
    fn state(&self) -> MutexGuard<'_, State> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// This recorder as a layer that sees only the decoder's kind spans (target
    /// `tt_mesh::trace::TARGET`, TRACE level).
    pub fn layer<S>(&self) -> Filtered<Self, Targets, S>
    where
        S: Subscriber + for<'a> LookupSpan<'a>,
    {
        let targets = Targets::new().with_target(tt_mesh::trace::TARGET, tracing::Level::TRACE);
        self.clone().with_filter(targets)
    }

    /// Forgets what was recorded (threads inside spans stay inside them).
    pub fn reset(&self) {
        self.state().tally = Tally::default();
    }

    /// What was recorded since the last reset or take; starts afresh.
    pub(crate) fn take(&self) -> Tally {
        std::mem::take(&mut self.state().tally)
    }

    /// Runs `event` on this thread's stack with the gap since the thread's previous event.
    fn on_thread(&self, event: impl FnOnce(&mut Stack, Duration, &mut Tally)) {
        let now = Instant::now();
        let mut guard = self.state();
        let State { tally, threads } = &mut *guard;
        let thread = threads
            .entry(std::thread::current().id())
            .or_insert_with(|| ThreadState {
                stack: Stack::default(),
                last: now,
            });
        let gap = match thread.stack.is_empty() {
            true => Duration::ZERO,
            false => now.saturating_duration_since(thread.last),
        };
        event(&mut thread.stack, gap, tally);
        thread.last = now;
    }
}

/// The `threads` field of a span record.
struct ThreadsField(Option<u64>);

impl Visit for ThreadsField {
    fn record_u64(&mut self, field: &Field, value: u64) {
        if field.name() == "threads" {
            self.0 = Some(value);
        }
    }

    fn record_debug(&mut self, _: &Field, _: &dyn std::fmt::Debug) {}
}

impl<S> Layer<S> for SpanTimes
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn on_new_span(&self, attrs: &Attributes<'_>, _: &Id, _: Context<'_, S>) {
        self.state().tally.call(attrs.metadata().name());
    }

    fn on_enter(&self, id: &Id, ctx: Context<'_, S>) {
        if let Some(kind) = ctx.metadata(id).map(|m| m.name()) {
            self.on_thread(|stack, gap, tally| stack.enter(id.into_u64(), kind, gap, tally));
        }
    }

    fn on_exit(&self, id: &Id, _: Context<'_, S>) {
        self.on_thread(|stack, gap, tally| stack.exit(id.into_u64(), gap, tally));
    }

    fn on_record(&self, id: &Id, values: &Record<'_>, _: Context<'_, S>) {
        let mut threads = ThreadsField(None);
        values.record(&mut threads);
        if let Some(n) = threads.0 {
            let n = u32::try_from(n).unwrap_or(u32::MAX);
            self.on_thread(|stack, gap, tally| stack.set_threads(id.into_u64(), n, gap, tally));
        }
    }
}

/// What was profiled.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Phase {
    /// Decode steps of one token.
    Decode,
    /// Prefills of the prompt.
    Prefill,
}

/// The run a report describes.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Meta {
    pub model: String,
    pub mesh: String,
    pub precision: String,
    pub phase: Phase,
    /// Prompt tokens (decode: the context the first step starts at).
    pub context: usize,
    /// Threads of the pool.
    pub threads: usize,
}

/// One kind's row.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct KindRow {
    pub kind: String,
    pub calls_per_step: f64,
    pub busy_ms_per_step: f64,
    pub percent_of_busy: f64,
}

/// The profile: per kind, and the step as a whole (means over the steps).
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Report {
    #[serde(flatten)]
    pub meta: Meta,
    pub steps: usize,
    pub step_wall_ms: Vec<f64>,
    /// Kinds by busy time, most first.
    pub kinds: Vec<KindRow>,
    pub wall_ms_per_step: f64,
    pub busy_ms_per_step: f64,
    /// busy / wall: how many threads were busy on average.
    pub busy_over_wall: f64,
    /// wall x threads - busy.
    pub untracked_ms_per_step: f64,
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

impl Report {
    /// The report of `totals` over the steps whose wall times are `walls`.
    pub fn new(meta: Meta, totals: &Tally, walls: &[Duration]) -> Self {
        let steps = walls.len().max(1) as f64;
        let busy: Duration = totals.iter().map(|(_, t)| t.busy).sum();
        let busy_ms = ms(busy) / steps;
        let wall_ms = walls.iter().copied().map(ms).sum::<f64>() / steps;
        let mut kinds: Vec<KindRow> = totals
            .iter()
            .map(|(kind, t)| KindRow {
                kind: kind.to_string(),
                calls_per_step: t.calls as f64 / steps,
                busy_ms_per_step: ms(t.busy) / steps,
                percent_of_busy: match busy.is_zero() {
                    true => 0.0,
                    false => 100.0 * t.busy.as_secs_f64() / busy.as_secs_f64(),
                },
            })
            .collect();
        kinds.sort_by(|a, b| {
            b.busy_ms_per_step
                .total_cmp(&a.busy_ms_per_step)
                .then_with(|| a.kind.cmp(&b.kind))
        });
        Self {
            untracked_ms_per_step: wall_ms * meta.threads as f64 - busy_ms,
            busy_over_wall: if wall_ms > 0.0 {
                busy_ms / wall_ms
            } else {
                0.0
            },
            meta,
            steps: walls.len(),
            step_wall_ms: walls.iter().copied().map(ms).collect(),
            kinds,
            wall_ms_per_step: wall_ms,
            busy_ms_per_step: busy_ms,
        }
    }

    /// The Markdown table, with a heading line and the step's totals under it.
    pub fn table(&self) -> String {
        use std::fmt::Write;
        let m = &self.meta;
        let what = match m.phase {
            Phase::Decode => format!(
                "{} decode steps after a {}-token prompt",
                self.steps, m.context
            ),
            Phase::Prefill => format!("{} prefills of {} tokens", self.steps, m.context),
        };
        let mut out = format!(
            "Profile of {what}: {} on {}, precision {}, {} threads.\n\n",
            m.model, m.mesh, m.precision, m.threads
        );
        out.push_str("| op kind | calls/step | busy ms/step | % of busy |\n");
        out.push_str("|---|---:|---:|---:|\n");
        for k in &self.kinds {
            let _ = writeln!(
                out,
                "| {} | {} | {:.2} | {:.1} |",
                k.kind,
                fmt_calls(k.calls_per_step),
                k.busy_ms_per_step,
                k.percent_of_busy
            );
        }
        let _ = writeln!(
            out,
            "| **busy, all kinds** | | **{:.2}** | 100.0 |",
            self.busy_ms_per_step
        );
        let (lo, hi) = self
            .step_wall_ms
            .iter()
            .fold((f64::INFINITY, 0.0f64), |(lo, hi), &w| {
                (lo.min(w), hi.max(w))
            });
        let capacity = self.wall_ms_per_step * m.threads as f64;
        let _ = write!(
            out,
            "\nStep wall: {:.2} ms (mean of {}; min {lo:.2}, max {hi:.2}). \
             Busy/wall: {:.2} of {} threads. \
             Untracked (wall x threads - busy): {:.2} ms/step, {:.1}% of wall x threads.\n",
            self.wall_ms_per_step,
            self.steps,
            self.busy_over_wall,
            m.threads,
            self.untracked_ms_per_step,
            match capacity > 0.0 {
                true => 100.0 * self.untracked_ms_per_step / capacity,
                false => 0.0,
            }
        );
        out
    }
}

/// Calls per step: an integer when whole.
fn fmt_calls(calls: f64) -> String {
    match calls.fract() == 0.0 {
        true => format!("{calls:.0}"),
        false => format!("{calls:.2}"),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use clap::Parser;
    use tracing_subscriber::prelude::*;

    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn stack_gives_each_gap_to_the_innermost_span_times_its_threads() {
        let mut tally = Tally::default();
        let mut main = Stack::default();
        let mut helper = Stack::default();
        main.enter(1, "qkv", MS * 100, &mut tally); // outside any span: not counted
        main.enter(2, "all_reduce", MS * 3, &mut tally); // qkv +3
        helper.enter(1, "qkv", Duration::ZERO, &mut tally);
        helper.exit(1, MS * 4, &mut tally); // qkv +4 (another thread, same span)
        main.exit(2, MS * 2, &mut tally); // all_reduce +2
        main.set_threads(1, 4, MS, &mut tally); // qkv +1
        main.set_threads(1, 1, MS * 5, &mut tally); // qkv +5 x 4
        main.exit(1, MS * 2, &mut tally); // qkv +2
        assert!(main.is_empty() && helper.is_empty());
        main.exit(9, MS * 7, &mut tally); // an unknown span on an empty stack: nothing
        for _ in 0..3 {
            tally.call("qkv");
        }
        tally.call("all_reduce");
        let got: Vec<_> = tally.iter().collect();
        let want = [
            (
                "all_reduce",
                Totals {
                    calls: 1,
                    busy: MS * 2,
                },
            ),
            (
                "qkv",
                Totals {
                    calls: 3,
                    busy: MS * (3 + 4 + 1 + 20 + 2),
                },
            ),
        ];
        assert_eq!(got, want);
    }

    #[test]
    fn a_span_entered_twice_on_one_thread_counts_once() {
        let mut tally = Tally::default();
        let mut stack = Stack::default();
        stack.enter(1, "attention", Duration::ZERO, &mut tally);
        stack.enter(1, "attention", MS, &mut tally); // a device item on the step's thread
        stack.exit(1, MS * 2, &mut tally);
        stack.exit(1, MS * 3, &mut tally);
        assert_eq!(tally.iter().map(|(_, t)| t.busy).sum::<Duration>(), MS * 6);
    }

    fn fixed_report() -> Report {
        let mut tally = Tally::default();
        for (kind, calls, busy_ms) in [
            ("gate_up", 64, 120),
            ("down", 64, 60),
            ("qkv", 64, 45),
            ("attention", 64, 12),
            ("all_reduce", 128, 6),
            ("sample", 2, 1),
        ] {
            for _ in 0..calls {
                tally.call(kind);
            }
            tally.busy(kind, MS * busy_ms);
        }
        let meta = Meta {
            model: "synth".into(),
            mesh: "2x4".into(),
            precision: "accuracy".into(),
            phase: Phase::Decode,
            context: 155,
            threads: 2,
        };
        Report::new(meta, &tally, &[MS * 120, MS * 125])
    }

    #[test]
    fn report_sums_and_ranks_the_kinds() {
        let r = fixed_report();
        assert_eq!(r.steps, 2);
        assert_eq!(r.kinds[0].kind, "gate_up");
        assert!((r.kinds[0].calls_per_step - 32.0).abs() < 1e-9);
        assert!((r.busy_ms_per_step - 122.0).abs() < 1e-9);
        assert!((r.wall_ms_per_step - 122.5).abs() < 1e-9);
        assert!((r.untracked_ms_per_step - (245.0 - 122.0)).abs() < 1e-9);
        let percent: f64 = r.kinds.iter().map(|k| k.percent_of_busy).sum();
        assert!((percent - 100.0).abs() < 1e-9);
    }

    #[test]
    fn table_snapshot() {
        insta::assert_snapshot!(fixed_report().table());
    }

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
