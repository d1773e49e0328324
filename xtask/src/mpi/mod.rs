//! `cargo xtask mpi-test`: the MPI tests of a mesh spread over processes, on this host.
//!
//! Builds `tt-lm`, tt-mesh's `mpi_collectives` example and `xtask` itself with the cargo feature
//! `mpi` (one cargo invocation, test profile, so CI reuses its test build), then runs them under
//! `mpirun` (Open MPI) and checks:
//! - the collectives example under `mpirun -n 2` and `-n 4` (every collective bit-identical to
//!   one process, link bytes equal);
//! - for every tiny fixture model (the `fixtures/` directories holding a Phi-3 or Llama
//!   checkpoint), 2x4 mesh, `--fidelity f32` and `bf16`: `tt-lm logits` writes a byte-identical
//!   file under `mpirun -n 2` / `-n 4` as in one process, and `tt-lm generate --json` gives the
//!   same greedy tokens; on a LongRoPE (Phi-3) model the generation crosses
//!   `original_max_position_embeddings`, i.e. includes the re-prefill with the long factors;
//! - the bundled eval (`xtask eval`) under `mpirun -n 2` prints the same accuracy lines and
//!   `YT_METRICS` line as in one process;
//! - a rank killed (SIGKILL) mid-decode ends the job with an error naming it within 10 s;
//! - a rank that fails to load (MPMD launch, one rank given a missing checkpoint) ends the job
//!   with an error naming it within 10 s.
//!
//! Every `mpirun` runs with `--oversubscribe` (more ranks than cores), `--bind-to none`, the
//! environment that allows running as root, and `--mca btl_vader_single_copy_mechanism none`
//! (containers often forbid the cross-memory attach the shared-memory transport uses for large
//! messages); each is killed (with every process it started) after `--timeout-s`. Prints a table
//! of what ran and the figures; fails if any check failed.

mod bundled_eval;
mod checks;
mod failures;
mod fixtures;
mod process;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result, bail};

use self::bundled_eval::eval_check;
use self::checks::{collectives_check, generate_checks, logits_checks};
use self::failures::{kill_check, load_failure_check};
use self::fixtures::{find_fixtures, generate_plan};
pub(crate) use self::process::mpirun;
use crate::workspace_root;

/// Arguments of `cargo xtask mpi-test`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Rank counts to run each check with (each compared with one process).
    #[arg(long, value_delimiter = ',', default_value = "2,4")]
    ranks: Vec<usize>,
    /// Only these fixture models (directory names under fixtures/) [default: every tiny Phi-3
    /// and Llama fixture].
    #[arg(long, value_delimiter = ',')]
    only: Vec<String>,
    /// A LongRoPE model whose `original_max_position_embeddings` exceeds this generates without
    /// crossing it (a crossing prefills that many tokens, twice, per run; the bundled
    /// phi3-tiny-en's 4096 takes about 15 s per run).
    #[arg(long, default_value_t = 256)]
    max_crossing: usize,
    /// Kill an mpirun (and every process it started) after this many seconds.
    #[arg(long, default_value_t = 300)]
    timeout_s: u64,
    /// Use the binaries already built in the target directory (the eval needs target/debug/xtask
    /// built with `--features mpi`, which `cargo run` of this task replaces: add --no-eval).
    #[arg(long)]
    no_build: bool,
    /// Skip the two failure tests (a rank killed mid-decode, a rank that fails to load).
    #[arg(long)]
    no_failures: bool,
    /// Skip the bundled eval (`xtask eval`, one process against `mpirun -n 2`).
    #[arg(long)]
    no_eval: bool,
}

/// The binaries under test.
#[derive(Debug, Clone)]
struct Binaries {
    tt_lm: PathBuf,
    collectives: PathBuf,
    /// This task's own binary, built with `mpi` (for the bundled eval).
    xtask: PathBuf,
}

/// One line of the final table.
#[derive(Debug, Clone)]
struct Row {
    check: String,
    model: String,
    fidelity: String,
    ranks: String,
    ok: bool,
    figure: String,
}

/// Runs the MPI tests.
pub fn run(args: Args) -> Result<()> {
    let root = workspace_root();
    check_mpirun()?;
    if !args.no_build {
        build(&root)?;
    }
    let bins = binaries(&root, !args.no_eval)?;
    let fixtures = find_fixtures(&root.join("fixtures"), &args.only)?;
    if fixtures.is_empty() {
        bail!(
            "no fixture model found under fixtures/ (--only {:?})",
            args.only
        );
    }
    let scratch = std::env::temp_dir().join(format!("tt-mpi-test-{}", std::process::id()));
    std::fs::create_dir_all(&scratch).with_context(|| format!("creating {}", scratch.display()))?;
    let timeout = Duration::from_secs(args.timeout_s);
    let mut rows = Vec::new();
    let mut notes = Vec::new();

    for &r in &args.ranks {
        rows.push(collectives_check(&bins, r, timeout, &mut notes));
    }
    for f in &fixtures {
        let plan = generate_plan(f, args.max_crossing);
        for fidelity in ["f32", "bf16"] {
            rows.extend(logits_checks(
                &bins,
                f,
                fidelity,
                &args.ranks,
                &scratch,
                timeout,
                &mut notes,
            ));
            rows.extend(generate_checks(
                &bins,
                f,
                fidelity,
                plan,
                &args.ranks,
                timeout,
                &mut notes,
            ));
        }
    }
    if !args.no_eval {
        rows.push(eval_check(&bins, &root, timeout, &mut notes));
    }
    if !args.no_failures {
        let long = fixtures
            .iter()
            .max_by_key(|f| (f.longrope_original_max.is_some(), f.max_positions))
            .unwrap_or(&fixtures[0]);
        rows.push(kill_check(&bins, long, timeout, &mut notes));
        let small = fixtures
            .iter()
            .min_by_key(|f| f.vocab * f.max_positions)
            .unwrap_or(&fixtures[0]);
        rows.push(load_failure_check(&bins, small, timeout, &mut notes));
    }
    let _ = std::fs::remove_dir_all(&scratch);

    println!("{}", table(&rows));
    for note in &notes {
        println!("{note}");
    }
    let failed: Vec<&Row> = rows.iter().filter(|r| !r.ok).collect();
    if !failed.is_empty() {
        bail!(
            "{} of {} MPI checks failed: {}",
            failed.len(),
            rows.len(),
            failed
                .iter()
                .map(|r| format!("{} {} {} -n {}", r.check, r.model, r.fidelity, r.ranks))
                .collect::<Vec<_>>()
                .join("; ")
        );
    }
    println!("mpi-test: all {} checks passed", rows.len());
    Ok(())
}

/// `mpirun` must exist (Open MPI: `openmpi-bin`).
fn check_mpirun() -> Result<()> {
    let out = Command::new("mpirun").arg("--version").output().context(
        "running `mpirun --version`: install Open MPI (apt-get install openmpi-bin \
             libopenmpi-dev libclang-dev)",
    )?;
    let version = String::from_utf8_lossy(&out.stdout);
    println!(
        "== {}",
        version.lines().next().unwrap_or("mpirun (unknown version)")
    );
    Ok(())
}

/// The cargo that runs this task (or the one on PATH).
fn cargo() -> Command {
    Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
}

/// Builds tt-lm, the collectives example and xtask with MPI, in the test profile: one cargo
/// invocation, so the features of the libraries they share are unified once. The new xtask
/// replaces the file of the one running (cargo writes a new file, so the running process keeps
/// its own); a plain `cargo xtask` or `cargo test` rebuilds it without MPI.
fn build(root: &Path) -> Result<()> {
    println!("== building tt-lm, tt-mesh's mpi_collectives and xtask with --features mpi");
    let status = cargo()
        .current_dir(root)
        .args(["build", "--profile", "test", "--locked"])
        .args(["-p", "tt-lm", "--bin", "tt-lm"])
        .args(["-p", "tt-mesh", "--example", "mpi_collectives"])
        .args(["-p", "xtask", "--bin", "xtask"])
        .args(["--features", "tt-lm/mpi,tt-mesh/mpi,xtask/mpi"])
        .status()
        .context("running cargo build")?;
    if !status.success() {
        bail!("cargo build of the MPI binaries failed ({status})");
    }
    Ok(())
}

/// The test profile's binaries (its output directory is `debug`); `with_xtask`: xtask's too.
fn binaries(root: &Path, with_xtask: bool) -> Result<Binaries> {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .map(|t| if t.is_relative() { root.join(t) } else { t })
        .unwrap_or_else(|| root.join("target"));
    let debug = target.join("debug");
    let bins = Binaries {
        tt_lm: debug.join("tt-lm"),
        collectives: debug.join("examples").join("mpi_collectives"),
        xtask: debug.join("xtask"),
    };
    let needed = [&bins.tt_lm, &bins.collectives, &bins.xtask];
    for p in &needed[..if with_xtask { 3 } else { 2 }] {
        if !p.is_file() {
            bail!("{} is missing (build it, or drop --no-build)", p.display());
        }
    }
    Ok(bins)
}

fn row(check: &str, model: &str, fidelity: &str, ranks: &str, ok: bool, figure: String) -> Row {
    Row {
        check: check.to_string(),
        model: model.to_string(),
        fidelity: fidelity.to_string(),
        ranks: ranks.to_string(),
        ok,
        figure,
    }
}

/// The rows as an aligned text table.
fn table(rows: &[Row]) -> String {
    let header = ["check", "model", "fidelity", "ranks", "ok", "figures"];
    let cells: Vec<[String; 6]> = rows
        .iter()
        .map(|r| {
            [
                r.check.clone(),
                r.model.clone(),
                r.fidelity.clone(),
                r.ranks.clone(),
                if r.ok { "yes" } else { "NO" }.to_string(),
                r.figure.clone(),
            ]
        })
        .collect();
    let mut widths = header.map(str::len);
    for c in &cells {
        for (w, s) in widths.iter_mut().zip(c) {
            *w = (*w).max(s.len());
        }
    }
    let line = |c: &[String]| {
        c.iter()
            .zip(&widths)
            .map(|(s, w)| format!("{s:<w$}"))
            .collect::<Vec<_>>()
            .join("  ")
            .trim_end()
            .to_string()
    };
    let mut out = vec![line(&header.map(String::from))];
    out.extend(cells.iter().map(|c| line(c)));
    out.join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_aligns_columns() {
        let rows = vec![
            row("logits", "phi3-tiny", "f32", "2", true, "identical".into()),
            row(
                "generate (crosses 64)",
                "m",
                "bf16",
                "4",
                false,
                "DIFFERENT".into(),
            ),
        ];
        let t = table(&rows);
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(lines.len(), 3);
        let col = lines[0].find("model").unwrap();
        assert_eq!(lines[1].find("phi3-tiny"), Some(col));
        assert!(lines[2].contains("NO"));
    }
}
