//! The llama.cpp peer (`--peer-llama-cpp`): llama.cpp's `llama-bench` built once from the sources
//! vendored in the PyPI sdist of `llama-cpp-python` 0.3.36, and the checkpoint converted to GGUF
//! bf16 and Q8_0 by llama.cpp's own `convert_hf_to_gguf.py`, all cached outside the repository
//! (`~/.cache/tt-phi3/llama-cpp-0.3.36/`):
//!
//! - `llama_cpp_python-0.3.36.tar.gz`: the sdist (`pip download`, sha256 pinned here);
//! - `src/`: the sdist unpacked (`vendor/llama.cpp` is llama.cpp);
//! - `build/bin/llama-bench`: Release, CPU only, `GGML_NATIVE=ON` (a peer on this same machine),
//!   only the `llama-bench` target, `-j2`, with the cmake of PyPI's `cmake` package
//!   (scripts/requirements-llama-cpp.txt, installed into the venv); reused while
//!   `build/.tt-phi3-built` records the same sdist sha256 and cmake options;
//! - `gguf/<checkpoint>-<key>-<outtype>.gguf`: the conversions (scripts/llama_cpp_convert.py,
//!   a placeholder vocabulary), `key` hashing the checkpoint's file names, sizes and mtimes, the
//!   out type and the conversion script. A conversion of an older key is deleted (disk).

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Instant, UNIX_EPOCH};

use anyhow::{Context, Result, bail, ensure};

use crate::download::{sha256_file, sha256_hex};

/// The PyPI package whose sdist vendors llama.cpp.
const PACKAGE: &str = "llama-cpp-python";
/// Its pinned version.
pub const VERSION: &str = "0.3.36";
/// The sdist's file name (what pip writes).
const SDIST: &str = "llama_cpp_python-0.3.36.tar.gz";
/// sha256 of the sdist.
const SDIST_SHA256: &str = "832db0699007f1be95a7e41ef12e88926b02ba836461e36a36372db2760c1a2e";
/// llama.cpp inside the unpacked sdist.
const VENDORED: &str = "llama_cpp_python-0.3.36/vendor/llama.cpp";
/// cmake configure options of the build (recorded in its marker).
const CMAKE_OPTIONS: [&str; 9] = [
    "-DCMAKE_BUILD_TYPE=Release",
    "-DGGML_NATIVE=ON",
    "-DGGML_CCACHE=OFF",
    "-DLLAMA_BUILD_TESTS=OFF",
    "-DLLAMA_BUILD_EXAMPLES=OFF",
    "-DLLAMA_BUILD_SERVER=OFF",
    "-DLLAMA_BUILD_APP=OFF",
    "-DLLAMA_OPENSSL=OFF",
    "-DLLAMA_BUILD_TOOLS=ON",
];

/// The GGUF out types of the peer rows: (convert_hf_to_gguf's `--outtype`, the row's label).
pub const OUTTYPES: [(&str, &str); 2] = [("bf16", "bf16"), ("q8_0", "Q8_0")];

/// The built llama-bench and the converted checkpoint.
#[derive(Debug, Clone)]
pub struct Prepared {
    /// The llama-bench binary.
    pub llama_bench: PathBuf,
    /// (row label, GGUF file), one per [`OUTTYPES`] entry.
    pub ggufs: Vec<(&'static str, PathBuf)>,
}

/// `~/.cache/tt-phi3/llama-cpp-0.3.36`.
pub fn default_cache() -> Result<PathBuf> {
    Ok(crate::download::cache_dir("pass --llama-cpp-cache DIR")?
        .join(format!("llama-cpp-{VERSION}")))
}

/// Builds llama-bench and converts `model_dir` unless cached; `python` is the venv's.
pub fn prepare(python: &Path, cache: &Path, model_dir: &Path) -> Result<Prepared> {
    fs::create_dir_all(cache).with_context(|| format!("create {}", cache.display()))?;
    let sdist = fetch_sdist(python, cache)?;
    let src = unpack(python, cache, &sdist)?;
    let llama_bench = build(python, cache, &src)?;
    let mut ggufs = Vec::new();
    for (outtype, label) in OUTTYPES {
        ggufs.push((label, convert(python, cache, &src, model_dir, outtype)?));
    }
    Ok(Prepared { llama_bench, ggufs })
}

/// The checked sdist, `pip download`ed unless already there.
fn fetch_sdist(python: &Path, cache: &Path) -> Result<PathBuf> {
    let sdist = cache.join(SDIST);
    if sdist.is_file() && sha256_file(&sdist)? == SDIST_SHA256 {
        return Ok(sdist);
    }
    tracing::info!(dir = %cache.display(), "pip download {PACKAGE}=={VERSION} (sdist)");
    // Only the package itself from source: its build backend (needed for the metadata) comes
    // as wheels.
    run(Command::new(python)
        .args(["-m", "pip", "download", "--no-deps", "--no-binary", PACKAGE])
        .arg(format!("{PACKAGE}=={VERSION}"))
        .arg("-d")
        .arg(cache)
        .env("PIP_DISABLE_PIP_VERSION_CHECK", "1"))?;
    let sha = sha256_file(&sdist)?;
    ensure!(
        sha == SDIST_SHA256,
        "{} has sha256 {sha}, expected {SDIST_SHA256} ({PACKAGE}=={VERSION}); delete it and retry",
        sdist.display()
    );
    Ok(sdist)
}

/// The vendored llama.cpp of the unpacked sdist (unpacked unless its marker matches).
fn unpack(python: &Path, cache: &Path, sdist: &Path) -> Result<PathBuf> {
    let dir = cache.join("src");
    let marker = cache.join("src.tt-phi3-unpacked");
    if marker_matches(&marker, SDIST_SHA256) && dir.join(VENDORED).is_dir() {
        return Ok(dir.join(VENDORED));
    }
    tracing::info!(dir = %dir.display(), "unpacking {}", sdist.display());
    if dir.exists() {
        fs::remove_dir_all(&dir).with_context(|| format!("remove {}", dir.display()))?;
    }
    run(Command::new(python)
        .args(["-m", "tarfile", "-e"])
        .arg(sdist)
        .arg(&dir))?;
    ensure!(
        dir.join(VENDORED).join("convert_hf_to_gguf.py").is_file(),
        "{} has no {VENDORED}/convert_hf_to_gguf.py",
        sdist.display()
    );
    write_marker(&marker, SDIST_SHA256)?;
    Ok(dir.join(VENDORED))
}

/// What the build marker records.
fn build_identity() -> String {
    format!(
        "{PACKAGE}=={VERSION} sha256={SDIST_SHA256} cmake {}",
        CMAKE_OPTIONS.join(" ")
    )
}

/// `build/bin/llama-bench`, built unless the marker records this sdist and these options.
fn build(python: &Path, cache: &Path, src: &Path) -> Result<PathBuf> {
    let build = cache.join("build");
    let binary = build.join("bin").join("llama-bench");
    let marker = build.join(".tt-phi3-built");
    let identity = build_identity();
    if marker_matches(&marker, &identity) && binary.is_file() {
        return Ok(binary);
    }
    let requirements = crate::workspace_root().join("scripts/requirements-llama-cpp.txt");
    tracing::info!("pip install -r {}", requirements.display());
    run(Command::new(python)
        .args(["-m", "pip", "install", "--quiet", "-r"])
        .arg(&requirements)
        .env("PIP_DISABLE_PIP_VERSION_CHECK", "1"))?;
    let cmake = python.with_file_name("cmake");
    ensure!(cmake.is_file(), "pip installed no {}", cmake.display());
    let _ = fs::remove_file(&marker);
    let start = Instant::now();
    tracing::info!(build = %build.display(), "building llama-bench (several minutes the first time)");
    run(Command::new(&cmake)
        .arg("-S")
        .arg(src)
        .arg("-B")
        .arg(&build)
        .args(CMAKE_OPTIONS))?;
    run(Command::new(&cmake)
        .arg("--build")
        .arg(&build)
        .args(["--target", "llama-bench", "-j2"]))?;
    ensure!(binary.is_file(), "the build wrote no {}", binary.display());
    tracing::info!(seconds = start.elapsed().as_secs_f64(), "llama-bench built");
    write_marker(&marker, &identity)?;
    Ok(binary)
}

/// The checkpoint's identity: every regular file's name, size and mtime, sorted by name.
fn checkpoint_identity(model_dir: &Path) -> Result<String> {
    let mut lines = Vec::new();
    for entry in fs::read_dir(model_dir).with_context(|| format!("list {}", model_dir.display()))? {
        let entry = entry?;
        let meta = entry.metadata()?;
        if !meta.is_file() {
            continue;
        }
        let mtime = meta
            .modified()?
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        lines.push(format!(
            "{} {} {mtime}",
            entry.file_name().to_string_lossy(),
            meta.len()
        ));
    }
    ensure!(!lines.is_empty(), "{} holds no file", model_dir.display());
    lines.sort();
    Ok(lines.join("\n"))
}

/// The cache key of one conversion (16 hex digits).
fn conversion_key(checkpoint: &str, outtype: &str, script: &[u8]) -> String {
    let text = format!(
        "{checkpoint}\nouttype {outtype}\n{PACKAGE}=={VERSION}\nscript {}",
        sha256_hex(script)
    );
    sha256_hex(text.as_bytes())[..16].to_string()
}

/// `gguf/<checkpoint>-<key>-<outtype>.gguf`, converted unless there.
fn convert(
    python: &Path,
    cache: &Path,
    src: &Path,
    model_dir: &Path,
    outtype: &str,
) -> Result<PathBuf> {
    let script = crate::workspace_root().join("scripts/llama_cpp_convert.py");
    let script_bytes = fs::read(&script).with_context(|| format!("read {}", script.display()))?;
    let key = conversion_key(&checkpoint_identity(model_dir)?, outtype, &script_bytes);
    let name = model_dir
        .file_name()
        .map_or("model".to_string(), |n| n.to_string_lossy().into_owned());
    let dir = cache.join("gguf");
    let gguf = dir.join(format!("{name}-{key}-{outtype}.gguf"));
    if gguf.is_file() {
        return Ok(gguf);
    }
    fs::create_dir_all(&dir).with_context(|| format!("create {}", dir.display()))?;
    remove_stale(&dir, &name, outtype)?;
    let partial = gguf.with_extension("gguf.partial");
    let start = Instant::now();
    tracing::info!(gguf = %gguf.display(), "converting {} to GGUF {outtype}", model_dir.display());
    run(Command::new(python)
        .arg(&script)
        .arg("--llama-cpp")
        .arg(src)
        .arg("--model")
        .arg(model_dir)
        .args(["--outtype", outtype])
        .arg("--outfile")
        .arg(&partial))?;
    fs::rename(&partial, &gguf).with_context(|| format!("rename into {}", gguf.display()))?;
    tracing::info!(seconds = start.elapsed().as_secs_f64(), "converted");
    Ok(gguf)
}

/// Deletes earlier conversions of a checkpoint of this name to this out type (and partial ones).
fn remove_stale(dir: &Path, name: &str, outtype: &str) -> Result<()> {
    for entry in fs::read_dir(dir).with_context(|| format!("list {}", dir.display()))? {
        let path = entry?.path();
        let file = path
            .file_name()
            .map(|f| f.to_string_lossy().into_owned())
            .unwrap_or_default();
        let ours = file.starts_with(&format!("{name}-"))
            && (file.ends_with(&format!("-{outtype}.gguf"))
                || file.ends_with(&format!("-{outtype}.gguf.partial")));
        if ours {
            tracing::info!(file = %path.display(), "removing a stale conversion");
            fs::remove_file(&path).with_context(|| format!("remove {}", path.display()))?;
        }
    }
    Ok(())
}

fn marker_matches(marker: &Path, identity: &str) -> bool {
    fs::read_to_string(marker).is_ok_and(|s| s.trim() == identity)
}

fn write_marker(marker: &Path, identity: &str) -> Result<()> {
    fs::write(marker, identity).with_context(|| format!("write {}", marker.display()))
}

/// Runs `cmd` to completion, its stdout sent to our stderr (stdout carries the report or JSON).
fn run(cmd: &mut Command) -> Result<()> {
    let status = cmd
        .stdout(Stdio::from(std::io::stderr()))
        .status()
        .with_context(|| format!("cannot run {cmd:?}"))?;
    if !status.success() {
        bail!("{cmd:?} failed ({status})");
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    #[test]
    fn a_cached_build_is_reused_only_with_its_identity() {
        let dir = tempfile::tempdir().unwrap();
        let bin = dir.path().join("build/bin");
        fs::create_dir_all(&bin).unwrap();
        fs::write(bin.join("llama-bench"), b"").unwrap();
        let marker = dir.path().join("build/.tt-phi3-built");
        fs::write(&marker, "llama-cpp-python==0.3.35").unwrap();
        assert!(!marker_matches(&marker, &build_identity()));
        write_marker(&marker, &build_identity()).unwrap();
        // No python, no cmake: a matching marker builds nothing.
        let got = build(Path::new("/nonexistent/python"), dir.path(), dir.path()).unwrap();
        assert_eq!(got, bin.join("llama-bench"));
        assert!(build_identity().contains(SDIST_SHA256));
    }

    #[test]
    fn the_key_follows_the_checkpoint_and_the_outtype() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("config.json"), b"{}").unwrap();
        fs::write(dir.path().join("model.safetensors"), b"1234").unwrap();
        fs::create_dir(dir.path().join("sub")).unwrap();
        let id = checkpoint_identity(dir.path()).unwrap();
        let lines: Vec<&str> = id.lines().collect();
        assert_eq!(lines.len(), 2);
        assert!(lines[0].starts_with("config.json 2 "), "{id}");
        assert!(lines[1].starts_with("model.safetensors 4 "), "{id}");
        let key = conversion_key(&id, "bf16", b"script");
        assert_eq!(key.len(), 16);
        assert_ne!(key, conversion_key(&id, "q8_0", b"script"));
        assert_ne!(key, conversion_key(&id, "bf16", b"script v2"));
        fs::write(dir.path().join("model.safetensors"), b"12345").unwrap();
        let changed = checkpoint_identity(dir.path()).unwrap();
        assert_ne!(key, conversion_key(&changed, "bf16", b"script"));
    }

    #[test]
    fn stale_conversions_of_the_same_outtype_go() {
        let dir = tempfile::tempdir().unwrap();
        for f in [
            "synth-phi3-aaaa-bf16.gguf",
            "synth-phi3-bbbb-bf16.gguf.partial",
            "synth-phi3-aaaa-q8_0.gguf",
            "other-aaaa-bf16.gguf",
        ] {
            fs::write(dir.path().join(f), b"").unwrap();
        }
        remove_stale(dir.path(), "synth-phi3", "bf16").unwrap();
        let mut left: Vec<String> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        left.sort();
        assert_eq!(left, ["other-aaaa-bf16.gguf", "synth-phi3-aaaa-q8_0.gguf"]);
    }
}
