//! `cargo xtask reference`: make an HF reference for the teacher-forcing eval with Python
//! transformers (scripts/make_reference.py; format in docs/EVAL.md).

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};

/// Environment variable naming the Python venv directory.
const VENV_ENV: &str = "TT_PHI3_VENV";

/// Arguments of `cargo xtask reference`.
#[derive(Debug, clap::Args)]
#[command(group(clap::ArgGroup::new("prompt").required(true).args(["prompt_file", "prompt_ids_file", "prefill_len"])))]
pub struct Args {
    /// Model: a directory in the HuggingFace layout, or a HuggingFace id (org/name).
    #[arg(long)]
    model: String,
    /// Prompt text file (trailing newlines removed, then encoded with the model's tokenizer.json).
    #[arg(long)]
    prompt_file: Option<PathBuf>,
    /// Prompt token ids: a JSON array, or integers separated by whitespace or commas.
    #[arg(long)]
    prompt_ids_file: Option<PathBuf>,
    /// Synthetic prompt of run_eval.py: "The quick brown fox..." token ids repeated to this length.
    #[arg(long)]
    prefill_len: Option<usize>,
    /// Tokens HF generates greedily after the prompt [default: 100, or 20 with --prefill-len].
    #[arg(long, alias = "decode-len")]
    max_new_tokens: Option<usize>,
    /// Output file [default: <model dir>/reference/eval_reference.json, or
    /// references/<org>--<name>/eval_reference.json for a HuggingFace id].
    #[arg(long)]
    out: Option<PathBuf>,
    /// Python venv to use [default: $TT_PHI3_VENV, else ~/.cache/tt-phi3/venv].
    #[arg(long)]
    venv: Option<PathBuf>,
}

/// Runs scripts/make_reference.py with the venv's Python.
pub fn run(args: Args) -> Result<()> {
    let python = venv_python(args.venv.as_deref())?;
    let out = match &args.out {
        Some(out) => out.clone(),
        None => default_out(&args.model),
    };
    let mut script_args: Vec<OsString> = vec!["--model".into(), args.model.clone().into()];
    if let Some(f) = &args.prompt_file {
        script_args.extend(["--prompt-file".into(), f.into()]);
    }
    if let Some(f) = &args.prompt_ids_file {
        script_args.extend(["--prompt-ids-file".into(), f.into()]);
    }
    if let Some(n) = args.prefill_len {
        script_args.extend(["--prefill-len".into(), n.to_string().into()]);
    }
    if let Some(n) = args.max_new_tokens {
        script_args.extend(["--max-new-tokens".into(), n.to_string().into()]);
    }
    script_args.extend(["--out".into(), out.clone().into()]);
    run_make_reference(&python, &script_args)?;
    tracing::info!(out = %out.display(), "reference written");
    Ok(())
}

/// Where a reference goes by default.
fn default_out(model: &str) -> PathBuf {
    let dir = Path::new(model);
    if dir.is_dir() {
        dir.join("reference").join("eval_reference.json")
    } else {
        Path::new("references")
            .join(model.replace('/', "--"))
            .join("eval_reference.json")
    }
}

/// The venv's interpreter: `--venv`, else `$TT_PHI3_VENV`, else `~/.cache/tt-phi3/venv`.
pub(crate) fn venv_python(venv: Option<&Path>) -> Result<PathBuf> {
    let venv = match venv {
        Some(v) => v.to_path_buf(),
        None => match std::env::var_os(VENV_ENV) {
            Some(v) => PathBuf::from(v),
            None => {
                let home = std::env::var_os("HOME")
                    .context("HOME is not set: pass --venv DIR or set TT_PHI3_VENV")?;
                Path::new(&home).join(".cache").join("tt-phi3").join("venv")
            }
        },
    };
    let python = if cfg!(windows) {
        venv.join("Scripts").join("python.exe")
    } else {
        venv.join("bin").join("python")
    };
    if !python.is_file() {
        bail!(
            "no Python venv at {} (make it with `cargo xtask fixtures`, or set {VENV_ENV})",
            venv.display()
        );
    }
    Ok(python)
}

/// Runs scripts/make_reference.py with `script_args` (also used for `--mode hf`); its stdout and
/// stderr pass through.
pub(crate) fn run_make_reference(python: &Path, script_args: &[OsString]) -> Result<()> {
    let script = crate::workspace_root()
        .join("scripts")
        .join("make_reference.py");
    tracing::info!(python = %python.display(), "running {}", script.display());
    let status = Command::new(python)
        .arg(&script)
        .args(script_args)
        .status()
        .with_context(|| format!("cannot run {}", python.display()))?;
    if !status.success() {
        bail!("{} failed ({status})", script.display());
    }
    Ok(())
}
