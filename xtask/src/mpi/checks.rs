//! The checks that one process and the same mesh spread over `mpirun` ranks agree: the
//! collectives example, all-position logits and greedy generation of each fixture model.

use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use serde_json::Value;

use super::fixtures::{Fixture, GeneratePlan, ids_arg, model_args, prompt_ids};
use super::process::{Outcome, mpirun, run_cmd, single};
use super::{Binaries, Row, row};

/// The collectives example under `mpirun -n ranks`.
pub(super) fn collectives_check(
    bins: &Binaries,
    ranks: usize,
    limit: Duration,
    notes: &mut Vec<String>,
) -> Row {
    let label = format!("collectives example -n {ranks}");
    let out = match run_cmd(&mut mpirun(&[(ranks, &bins.collectives, vec![])]), limit) {
        Ok(o) => o,
        Err(e) => {
            notes.push(format!("{label}: {e:#}"));
            return row(
                "collectives",
                "-",
                "f32+bf16",
                &ranks.to_string(),
                false,
                e.to_string(),
            );
        }
    };
    let summary = out
        .stdout
        .lines()
        .find(|l| l.starts_with("mpi_collectives:"))
        .unwrap_or("")
        .to_string();
    let ok = out.success() && summary.ends_with("PASS");
    if ok {
        notes.push(format!("{label}: {summary}"));
    } else {
        notes.push(format!("{label}: {summary}\n  {}", out.describe()));
    }
    let figure = if ok {
        "every shard bit-identical, link bytes equal"
    } else {
        "MISMATCH or failure"
    };
    row(
        "collectives",
        "-",
        "f32+bf16",
        &ranks.to_string(),
        ok,
        format!("{figure} ({:.1} s)", out.seconds),
    )
}

/// All-position logits of 40 tokens, one process against `-n r` for each `r`: identical bytes.
pub(super) fn logits_checks(
    bins: &Binaries,
    f: &Fixture,
    fidelity: &str,
    ranks: &[usize],
    scratch: &Path,
    limit: Duration,
    notes: &mut Vec<String>,
) -> Vec<Row> {
    let ids = ids_arg(&prompt_ids(40, f.vocab));
    let args = |out: &Path| {
        let mut a = vec!["logits".to_string()];
        a.extend(model_args(f, fidelity));
        a.extend(["--tokens".into(), ids.clone(), "--out".into()]);
        a.push(out.display().to_string());
        a
    };
    let label = |r: &str| format!("logits {} {fidelity} {r}", f.name);
    let single_path = scratch.join(format!("{}-{fidelity}-1.safetensors", f.name));
    let base = run_cmd(&mut single(&bins.tt_lm, &args(&single_path)), limit);
    let base = match base.map(|o| (std::fs::read(&single_path), o)) {
        Ok((Ok(bytes), o)) if o.success() => bytes,
        Ok((_, o)) => {
            notes.push(format!("{}: {}", label("1 process"), o.describe()));
            return vec![row(
                "logits",
                &f.name,
                fidelity,
                "1",
                false,
                "one-process run failed".into(),
            )];
        }
        Err(e) => {
            notes.push(format!("{}: {e:#}", label("1 process")));
            return vec![row("logits", &f.name, fidelity, "1", false, e.to_string())];
        }
    };
    ranks
        .iter()
        .map(|&r| {
            let path = scratch.join(format!("{}-{fidelity}-{r}.safetensors", f.name));
            let out = run_cmd(&mut mpirun(&[(r, &bins.tt_lm, args(&path))]), limit);
            let (ok, figure) = match out {
                Ok(o) if o.success() => match std::fs::read(&path) {
                    Ok(bytes) if bytes == base => (
                        true,
                        format!("identical {} B file ({:.1} s)", bytes.len(), o.seconds),
                    ),
                    Ok(bytes) => (
                        false,
                        format!("DIFFERENT file ({} B vs {} B)", bytes.len(), base.len()),
                    ),
                    Err(e) => (false, format!("no file: {e}")),
                },
                Ok(o) => {
                    notes.push(format!("{}: {}", label(&format!("-n {r}")), o.describe()));
                    (false, "mpirun failed".into())
                }
                Err(e) => (false, e.to_string()),
            };
            let _ = std::fs::remove_file(&path);
            row("logits", &f.name, fidelity, &r.to_string(), ok, figure)
        })
        .collect()
}

/// Greedy generation, one process against `-n r` for each `r`: identical tokens.
pub(super) fn generate_checks(
    bins: &Binaries,
    f: &Fixture,
    fidelity: &str,
    plan: GeneratePlan,
    ranks: &[usize],
    limit: Duration,
    notes: &mut Vec<String>,
) -> Vec<Row> {
    let mut args = vec!["generate".to_string()];
    args.extend(model_args(f, fidelity));
    args.extend([
        "--prompt-ids".into(),
        ids_arg(&prompt_ids(plan.prompt_len, f.vocab)),
        "--max-new-tokens".into(),
        plan.new_tokens.to_string(),
        // Stop tokens suppressed: every run generates all the tokens (and crosses).
        "--min-new-tokens".into(),
        plan.new_tokens.to_string(),
        "--json".into(),
    ]);
    let check = match plan.crossing {
        Some(m) => format!("generate (crosses {m})"),
        None => "generate".to_string(),
    };
    let label = |r: &str| format!("{check} {} {fidelity} {r}", f.name);
    let tokens = |o: Result<Outcome>| -> Result<(Vec<u64>, f64)> {
        let o = o?;
        if !o.success() {
            bail!("{}", o.describe());
        }
        Ok((json_tokens(&o.stdout)?, o.seconds))
    };
    let (base, _) = match tokens(run_cmd(&mut single(&bins.tt_lm, &args), limit)) {
        Ok(t) => t,
        Err(e) => {
            notes.push(format!("{}: {e:#}", label("1 process")));
            return vec![row(
                &check,
                &f.name,
                fidelity,
                "1",
                false,
                "one-process run failed".into(),
            )];
        }
    };
    let expected_len = plan.prompt_len + plan.new_tokens;
    if base.len() != expected_len {
        notes.push(format!(
            "{}: {} tokens, {expected_len} expected",
            label("1 process"),
            base.len()
        ));
        return vec![row(
            &check,
            &f.name,
            fidelity,
            "1",
            false,
            "wrong length".into(),
        )];
    }
    ranks
        .iter()
        .map(|&r| {
            let (ok, figure) = match tokens(run_cmd(
                &mut mpirun(&[(r, &bins.tt_lm, args.clone())]),
                limit,
            )) {
                Ok((t, s)) if t == base => (
                    true,
                    format!(
                        "identical {} tokens ({} new, {s:.1} s)",
                        t.len(),
                        plan.new_tokens
                    ),
                ),
                Ok((t, _)) => {
                    let first = t.iter().zip(&base).position(|(a, b)| a != b);
                    (
                        false,
                        format!(
                            "DIFFERENT tokens (first difference at {first:?}, {} vs {})",
                            t.len(),
                            base.len()
                        ),
                    )
                }
                Err(e) => {
                    notes.push(format!("{}: {e:#}", label(&format!("-n {r}"))));
                    (false, "mpirun failed".into())
                }
            };
            row(&check, &f.name, fidelity, &r.to_string(), ok, figure)
        })
        .collect()
}

/// The `tokens` of the one JSON object `tt-lm generate --json` printed (an error if there is
/// none, or several: then more than rank 0 printed).
fn json_tokens(stdout: &str) -> Result<Vec<u64>> {
    let objects: Vec<Value> = stdout
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l.trim()).ok())
        .filter(|v| v.get("tokens").is_some())
        .collect();
    match objects.as_slice() {
        [one] => one["tokens"]
            .as_array()
            .context("`tokens` is not an array")?
            .iter()
            .map(|t| t.as_u64().context("a token is not an integer"))
            .collect(),
        [] => bail!("no JSON object with `tokens` on stdout"),
        many => bail!(
            "{} JSON objects on stdout: ranks other than 0 printed",
            many.len()
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_tokens_wants_exactly_one_object() {
        let one = "log line\n{\"tokens\": [1, 2, 3], \"text\": \"\"}\n";
        assert_eq!(json_tokens(one).unwrap(), vec![1, 2, 3]);
        assert!(json_tokens("nothing").is_err());
        let two = format!("{one}{one}");
        assert!(
            json_tokens(&two)
                .unwrap_err()
                .to_string()
                .contains("ranks other than 0")
        );
    }
}
