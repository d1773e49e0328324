//! `cargo xtask fixtures`: regenerate `fixtures/` with HuggingFace transformers.
//!
//! Python is only needed here, never by `cargo test`. The task makes a virtual environment outside
//! the repository if it is missing (`python3 -m venv`, then `pip install -r scripts/requirements.txt`)
//! and runs `scripts/make_fixtures.py --out fixtures` (the tiny Phi-3 models and ops/), then
//! `scripts/make_llama_fixtures.py --out fixtures` (the tiny Llama models) with it. Each script checks
//! the installed versions against the pins, writes every tiny checkpoint and its references, and
//! verifies them.

use std::ffi::OsString;
use std::io::ErrorKind;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};

/// Environment variable naming the venv directory (overridden by `--venv`).
const VENV_ENV: &str = "TT_PHI3_VENV";

/// Options of `cargo xtask fixtures`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Python virtual environment to run in; created if missing
    /// [default: $TT_PHI3_VENV, else ~/.cache/tt-phi3/venv].
    #[arg(long, value_name = "DIR")]
    venv: Option<PathBuf>,
    /// Python interpreter used to create the venv.
    #[arg(long, value_name = "PY", default_value = "python3")]
    python: PathBuf,
    /// Run `pip install -r scripts/requirements.txt` even if the venv exists.
    #[arg(long)]
    install: bool,
    /// Output directory [default: fixtures/ in the workspace].
    #[arg(long, value_name = "DIR")]
    out: Option<PathBuf>,
    /// Regenerate only this model (repeatable), e.g. `--only phi3-tiny` or `--only llama-tiny-gqa`;
    /// each script gets the names of its family (`llama-*` names go to make_llama_fixtures.py).
    #[arg(long, value_name = "NAME")]
    only: Vec<String>,
    /// Which scripts to run.
    #[arg(long, value_enum, default_value_t = Family::All)]
    family: Family,
    /// Further arguments for both scripts (after `--`), e.g. `-- --sha256`.
    #[arg(last = true, value_name = "SCRIPT_ARGS")]
    script_args: Vec<OsString>,
}

/// The fixture families, one script each.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Family {
    /// Both scripts.
    All,
    /// scripts/make_fixtures.py: the tiny Phi-3 models and ops/.
    Phi3,
    /// scripts/make_llama_fixtures.py: the tiny Llama models.
    Llama,
}

/// Make the venv if needed, then run `scripts/make_fixtures.py` and `scripts/make_llama_fixtures.py`.
pub fn run(args: Args) -> Result<()> {
    let root = crate::workspace_root();
    let venv = match &args.venv {
        Some(dir) => dir.clone(),
        None => default_venv()?,
    };
    let python = venv_python(&venv);
    let requirements = root.join("scripts").join("requirements.txt");
    if !python.exists() {
        tracing::info!(venv = %venv.display(), "creating the Python venv");
        check_python(&args.python)?;
        run_command(
            Command::new(&args.python).arg("-m").arg("venv").arg(&venv),
            "create the venv",
        )?;
        pip_install(&python, &requirements)?;
    } else if args.install {
        pip_install(&python, &requirements)?;
    }

    let out = args.out.clone().unwrap_or_else(|| root.join("fixtures"));
    let (llama_only, phi3_only): (Vec<_>, Vec<_>) = args
        .only
        .iter()
        .partition(|name| name.starts_with("llama-"));
    // With --only, a script runs only if some of the names are its family's.
    let scripts = [
        (Family::Phi3, "make_fixtures.py", phi3_only),
        (Family::Llama, "make_llama_fixtures.py", llama_only),
    ];
    for (family, script, only) in scripts {
        if !(args.family == Family::All || args.family == family)
            || (!args.only.is_empty() && only.is_empty())
        {
            continue;
        }
        let mut cmd = Command::new(&python);
        cmd.current_dir(&root)
            .arg(root.join("scripts").join(script))
            .arg("--out")
            .arg(&out);
        for name in only {
            cmd.arg("--only").arg(name);
        }
        cmd.args(&args.script_args);
        tracing::info!(out = %out.display(), python = %python.display(), "running {script}");
        run_command(&mut cmd, &format!("run scripts/{script}")).with_context(|| {
            format!(
                "if a package version is reported, update the venv: cargo xtask fixtures --install \
                 (or {} -m pip install -r {})",
                python.display(),
                requirements.display()
            )
        })?;
    }
    tracing::info!(out = %out.display(), "fixtures written");
    Ok(())
}

/// `$TT_PHI3_VENV`, else `~/.cache/tt-phi3/venv`.
pub(crate) fn default_venv() -> Result<PathBuf> {
    if let Some(dir) = std::env::var_os(VENV_ENV).filter(|v| !v.is_empty()) {
        return Ok(PathBuf::from(dir));
    }
    let home = std::env::var_os("HOME")
        .filter(|v| !v.is_empty())
        .context("HOME is not set: pass --venv DIR or set TT_PHI3_VENV")?;
    Ok(Path::new(&home).join(".cache").join("tt-phi3").join("venv"))
}

/// The interpreter inside a venv.
pub(crate) fn venv_python(venv: &Path) -> PathBuf {
    if cfg!(windows) {
        venv.join("Scripts").join("python.exe")
    } else {
        venv.join("bin").join("python")
    }
}

/// Fail with a clear message when the base interpreter is missing or is not Python 3.
fn check_python(python: &Path) -> Result<()> {
    let output = match Command::new(python).arg("--version").output() {
        Ok(output) => output,
        Err(e) if e.kind() == ErrorKind::NotFound => bail!(
            "Python not found ({}): install Python 3 with its venv module (e.g. apt-get install \
             python3 python3-venv), or pass --python /path/to/python3",
            python.display()
        ),
        Err(e) => {
            return Err(e).with_context(|| format!("could not run {} --version", python.display()));
        }
    };
    let version = String::from_utf8_lossy(&output.stdout).to_string()
        + &String::from_utf8_lossy(&output.stderr);
    let version = version
        .trim()
        .lines()
        .next()
        .unwrap_or_default()
        .to_string();
    if !output.status.success() || !version.starts_with("Python 3") {
        bail!(
            "{} does not look like Python 3 (it said {:?}); pass --python /path/to/python3",
            python.display(),
            version
        );
    }
    tracing::info!(python = %python.display(), version = %version, "base interpreter");
    Ok(())
}

/// Install the pinned packages into the venv.
fn pip_install(python: &Path, requirements: &Path) -> Result<()> {
    tracing::info!(requirements = %requirements.display(), "installing pinned packages (torch is large)");
    run_command(
        Command::new(python)
            .args(["-m", "pip", "install", "--upgrade", "pip"])
            .env("PIP_DISABLE_PIP_VERSION_CHECK", "1"),
        "upgrade pip in the venv",
    )?;
    run_command(
        Command::new(python)
            .args(["-m", "pip", "install", "-r"])
            .arg(requirements)
            .env("PIP_DISABLE_PIP_VERSION_CHECK", "1"),
        "pip install -r scripts/requirements.txt",
    )
}

/// Run a command with inherited stdio; error if it cannot start or exits unsuccessfully.
pub(crate) fn run_command(cmd: &mut Command, what: &str) -> Result<()> {
    let program = cmd.get_program().to_string_lossy().into_owned();
    let status = match cmd.status() {
        Ok(status) => status,
        Err(e) if e.kind() == ErrorKind::NotFound => {
            bail!("cannot {what}: {program} not found")
        }
        Err(e) => {
            return Err(e).with_context(|| format!("cannot {what}: failed to start {program}"));
        }
    };
    if !status.success() {
        bail!("failed to {what}: {program} exited with {status}");
    }
    Ok(())
}
