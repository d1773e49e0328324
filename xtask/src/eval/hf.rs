//! `cargo xtask eval --mode hf`: HF scored against itself by scripts/make_reference.py, with
//! run_eval.py's default prompt when none is given, and the options of the mesh run refused.

use std::ffi::OsString;

use super::Args;
use super::prompt::{PromptSource, prompt_script_args};

/// The options `--mode hf` refuses: those of the mesh model's run, which HF in Python has no
/// use for (run_eval.py's hf mode has none of them either).
pub(super) fn hf_mode_refused(args: &Args) -> Vec<&'static str> {
    let given = [
        (args.mesh.is_some(), "--mesh"),
        (args.fidelity.is_some(), "--fidelity"),
        (args.precision.is_some(), "--precision"),
        (args.prefill_decode, "--prefill-decode"),
        (args.reference.is_some(), "--reference"),
        (args.max_seq_len.is_some(), "--max-seq-len"),
        (args.table, "--table"),
        (args.report.is_some(), "--report"),
    ];
    given
        .into_iter()
        .filter_map(|(set, name)| set.then_some(name))
        .collect()
}

/// Script arguments of `--mode hf`: the model, the prompt (run_eval.py's default
/// `--prefill-len 20` when none is given; the script then generates 20 tokens) and the mode.
pub(super) fn hf_script_args(args: &Args, model: &str) -> Vec<OsString> {
    let prompt = PromptSource::of(args).unwrap_or(PromptSource::Synthetic(
        phi3_eval::synthetic::DEFAULT_PREFILL_LEN,
    ));
    let mut script: Vec<OsString> = vec!["--model".into(), model.into()];
    script.extend(prompt_script_args(prompt, args.max_new_tokens));
    script.extend(["--mode".into(), "hf".into()]);
    script
}

#[cfg(test)]
mod tests {
    use super::super::tests::{assert_contains, eval_error, parse};
    use super::*;

    /// Bare `--mode hf` asks the script for run_eval.py's default prompt and gets as far as
    /// looking for Python; the mesh run's options are refused, all named, before that.
    #[test]
    fn hf_mode_defaults_and_refusals() {
        let strings = |v: Vec<OsString>| -> Vec<String> {
            v.into_iter()
                .map(|s| s.to_string_lossy().into_owned())
                .collect()
        };
        let bare = parse(&["--mode", "hf"]);
        assert!(hf_mode_refused(&bare).is_empty());
        assert_eq!(
            strings(hf_script_args(&bare, "M")),
            ["--model", "M", "--prefill-len", "20", "--mode", "hf"]
        );
        let ids = parse(&[
            "--mode",
            "hf",
            "--prompt-ids-file",
            "ids.txt",
            "--max-new-tokens",
            "5",
        ]);
        assert_eq!(
            strings(hf_script_args(&ids, "M")),
            [
                "--model",
                "M",
                "--prompt-ids-file",
                "ids.txt",
                "--max-new-tokens",
                "5",
                "--mode",
                "hf"
            ]
        );
        assert_contains(
            &eval_error(&["--mode", "hf", "--venv", "/nonexistent/venv"]),
            &["no Python venv at /nonexistent/venv"],
        );
        let message = eval_error(&[
            "--mode",
            "hf",
            "--mesh",
            "1x2",
            "--fidelity",
            "f32",
            "--prefill-decode",
            "--reference",
            "r.json",
            "--max-seq-len",
            "64",
            "--table",
            "--report",
            "out.json",
            "--venv",
            "/nonexistent/venv",
        ]);
        assert_contains(
            &message,
            &[
                "--mode hf scores HF against itself in Python and does not take --mesh, \
               --fidelity, --prefill-decode, --reference, --max-seq-len, --table, --report",
            ],
        );
    }
}
