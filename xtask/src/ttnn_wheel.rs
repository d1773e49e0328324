//! `cargo xtask ttnn-wheel`: fetch the PyPI wheel `ttnn` 0.81.1 with pip into a cache outside the
//! repository, check its sha256, unpack it, and print the unpacked directory on stdout (the
//! value of `TT_METAL_WHEEL_DIR` for `cargo test -p tt-metal-oracle --features tt-metal`).
//!
//! The wheel (~100 MB) carries `ttnn/build/lib/libtt_metal.so`, whose packer the oracle crate
//! binds. A second run finds the unpacked copy and only prints its path.

use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};
use sha2::{Digest, Sha256};

/// The pinned wheel.
const VERSION: &str = "0.81.1";
const WHEEL: &str = "ttnn-0.81.1-cp312-cp312-manylinux_2_34_x86_64.whl";
const SHA256: &str = "cc6df66162c8b5f5a5eb7347fe687b6095bf57bd64f9ba1be3d9b7f42e01d64f";

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
    let home = std::env::var_os("HOME").context("HOME is not set; pass --cache DIR")?;
    Ok(PathBuf::from(home)
        .join(".cache/tt-phi3")
        .join(format!("ttnn-{VERSION}")))
}

fn sha256_of(path: &Path) -> Result<String> {
    let mut file = fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = file
            .read(&mut buf)
            .with_context(|| format!("reading {}", path.display()))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hasher
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect())
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
    if fs::read_to_string(&marker).is_ok_and(|s| s.trim() == SHA256) {
        println!("{}", unpacked.display());
        return Ok(());
    }
    fs::create_dir_all(&cache).with_context(|| format!("creating {}", cache.display()))?;
    let wheel = cache.join(WHEEL);
    if !wheel.is_file() {
        tracing::info!("downloading ttnn=={VERSION} into {}", cache.display());
        run_checked(
            Command::new(&args.python)
                .args([
                    "-m",
                    "pip",
                    "download",
                    &format!("ttnn=={VERSION}"),
                    "--no-deps",
                ])
                .args(["--python-version", "3.12", "--only-binary=:all:"])
                .args(["--platform", "manylinux_2_34_x86_64", "--quiet", "-d"])
                .arg(&cache),
        )?;
    }
    let digest = sha256_of(&wheel)?;
    if digest != SHA256 {
        bail!(
            "{} has sha256 {digest}, expected {SHA256}; delete it and retry",
            wheel.display()
        );
    }
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
    fs::write(&marker, SHA256).with_context(|| format!("writing {}", marker.display()))?;
    println!("{}", unpacked.display());
    Ok(())
}
