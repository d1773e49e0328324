//! The bundled eval under `mpirun`: `xtask eval` with no arguments (the bundled model on a 2x4
//! mesh against its bundled reference) in one process and under `mpirun -n 2` must print the
//! same accuracy lines and the same `YT_METRICS` line.

use std::path::Path;
use std::time::Duration;

use anyhow::{Result, bail};
use phi3_model::bundled;

use super::process::{Outcome, mpirun, run_cmd, single};
use super::{Binaries, Row, row};

/// The ranks the eval is spread over.
const EVAL_RANKS: usize = 2;

/// The prefix of the eval's metrics line.
const METRICS_PREFIX: &str = "YT_METRICS=";

/// What the eval printed: its accuracy lines and its metrics line.
#[derive(Debug, Clone, PartialEq, Eq)]
struct EvalLines {
    /// `Top-1 accuracy: ...`, `Top-5 accuracy: ...`, ...
    accuracy: Vec<String>,
    /// `YT_METRICS={...}`.
    metrics: String,
}

impl EvalLines {
    /// The lines as a note, each indented.
    fn indented(&self) -> String {
        self.accuracy
            .iter()
            .chain([&self.metrics])
            .map(|l| format!("  {l}"))
            .collect::<Vec<_>>()
            .join("\n")
    }
}

/// The accuracy lines and the one `YT_METRICS=` line of the eval's stdout (an error if there is
/// none, or several: then more than rank 0 printed).
fn eval_lines(stdout: &str) -> Result<EvalLines> {
    let metrics: Vec<&str> = stdout
        .lines()
        .filter(|l| l.starts_with(METRICS_PREFIX))
        .collect();
    let metrics = match metrics.as_slice() {
        [one] => one.trim_end().to_string(),
        [] => bail!("no {METRICS_PREFIX} line on stdout"),
        many => bail!(
            "{} {METRICS_PREFIX} lines on stdout: ranks other than 0 printed",
            many.len()
        ),
    };
    let accuracy = stdout
        .lines()
        .filter(|l| l.starts_with("Top-"))
        .map(|l| l.trim_end().to_string())
        .collect();
    Ok(EvalLines { accuracy, metrics })
}

/// `xtask eval` (built with `mpi`) in one process, then under `mpirun -n 2`: the same accuracy
/// and `YT_METRICS` lines.
pub(super) fn eval_check(
    bins: &Binaries,
    root: &Path,
    limit: Duration,
    notes: &mut Vec<String>,
) -> Row {
    let check = "bundled eval";
    let model = bundled::bundled_model_dir().file_name().map_or_else(
        || "bundled".to_string(),
        |n| n.to_string_lossy().into_owned(),
    );
    let args = vec!["eval".to_string()];
    let lines = |o: Result<Outcome>| -> Result<(EvalLines, f64)> {
        let o = o?;
        if !o.success() {
            bail!("{}", o.describe());
        }
        Ok((eval_lines(&o.stdout)?, o.seconds))
    };
    let label = |ranks: &str| format!("{check} ({model}, 2x4, f32), {ranks}");

    let (base, base_s) = match lines(run_cmd(single(&bins.xtask, &args).current_dir(root), limit)) {
        Ok(l) => l,
        Err(e) => {
            notes.push(format!("{}: {e:#}", label("1 process")));
            return row(
                check,
                &model,
                "f32",
                "1",
                false,
                "one-process run failed".into(),
            );
        }
    };
    notes.push(format!(
        "{}, {base_s:.1} s:\n{}",
        label("1 process"),
        base.indented()
    ));
    let spread = format!("mpirun -n {EVAL_RANKS}");
    let (ok, figure) = match lines(run_cmd(
        mpirun(&[(EVAL_RANKS, &bins.xtask, args.clone())]).current_dir(root),
        limit,
    )) {
        Ok((l, s)) => {
            notes.push(format!("{}, {s:.1} s:\n{}", label(&spread), l.indented()));
            if l == base {
                (
                    true,
                    format!(
                        "same accuracy and YT_METRICS lines (1 process {base_s:.1} s, -n {EVAL_RANKS} {s:.1} s)"
                    ),
                )
            } else if l.metrics == base.metrics {
                (false, "same YT_METRICS, DIFFERENT accuracy lines".into())
            } else {
                (false, "DIFFERENT YT_METRICS line".into())
            }
        }
        Err(e) => {
            notes.push(format!("{}: {e:#}", label(&spread)));
            (false, "mpirun failed".into())
        }
    };
    row(check, &model, "f32", &EVAL_RANKS.to_string(), ok, figure)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn eval_lines_want_exactly_one_metrics_line() {
        let out = "Top-1 accuracy: 100.00% (1.0000)\nTop-5 accuracy: 100.00% (1.0000)\n\
                   YT_METRICS={\"top1\": 1.0}\n";
        let l = eval_lines(out).unwrap();
        assert_eq!(l.accuracy.len(), 2);
        assert_eq!(l.metrics, "YT_METRICS={\"top1\": 1.0}");
        assert!(l.indented().ends_with("\n  YT_METRICS={\"top1\": 1.0}"));
        assert!(eval_lines("Top-1 accuracy: 1\n").is_err());
        let twice = format!("{out}{out}");
        assert!(
            eval_lines(&twice)
                .unwrap_err()
                .to_string()
                .contains("ranks other than 0")
        );
    }
}
