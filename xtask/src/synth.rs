//! `cargo xtask synth`: write a random full-size Phi-3 checkpoint in HF layout.
//!
//! From an HF `config.json` this writes, into `--out`: the config (copied), the Phi-3
//! `generation_config.json` and tokenizer files (copied from `fixtures/phi3-tokenizer`), and
//! bf16 weights under every `Phi3ForCausalLM` tensor name, split over several
//! `model-0000k-of-0000N.safetensors` shards with `model.safetensors.index.json`.
//!
//! Each shard is written as its safetensors header (8-byte little-endian length, then the JSON
//! header padded with spaces to 8-byte alignment) followed by the tensors' data, generated in
//! fixed-size chunks by a seeded splitmix64 stream per chunk (so the bytes depend on the seed
//! only, not on the thread count) and written in order: memory stays at a few chunks however
//! large the model. Matrices are uniform with standard deviation `initializer_range` (0.02 by
//! default); norm weights are 1 plus the same noise.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result, bail};
use indicatif::{ProgressBar, ProgressStyle};
use phi3_model::Phi3Config;
use rayon::prelude::*;
use serde_json::{Value, json};
use tt_decoder::FamilyConfig;
use tt_decoder::names::{LayerTensor, TensorName, expected_names};

/// Options of `cargo xtask synth`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// HF `config.json` of the model (a Phi-3 decoder).
    #[arg(long, value_name = "FILE")]
    config: PathBuf,
    /// Output directory (created; keep it outside the repository).
    #[arg(long, value_name = "DIR")]
    out: PathBuf,
    /// Seed of the random weights.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Number of safetensors shards (default: about 2 GB each).
    #[arg(long, value_name = "N")]
    shards: Option<usize>,
    /// Directory holding tokenizer.json, tokenizer_config.json and generation_config.json.
    #[arg(long, value_name = "DIR")]
    tokenizer_dir: Option<PathBuf>,
}

/// Target shard size when `--shards` is not given.
const DEFAULT_SHARD_BYTES: u64 = 2_000_000_000;
/// Values generated per chunk (2 MiB of bf16).
const CHUNK_VALUES: usize = 1 << 20;
/// Bytes per bf16 value.
const BF16_BYTES: u64 = 2;
/// Files copied from the tokenizer directory.
const COPIED_FILES: [&str; 3] = [
    "tokenizer.json",
    "tokenizer_config.json",
    "generation_config.json",
];

/// How a tensor's values are drawn.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Fill {
    /// Uniform noise with standard deviation `std`.
    Matrix,
    /// 1 plus the same noise (RMSNorm weights).
    Norm,
}

/// One tensor to write.
#[derive(Debug, Clone, PartialEq)]
struct TensorSpec {
    name: String,
    shape: Vec<usize>,
    fill: Fill,
}

impl TensorSpec {
    fn new(name: String, shape: Vec<usize>, fill: Fill) -> Self {
        Self { name, shape, fill }
    }

    fn numel(&self) -> u64 {
        self.shape.iter().map(|&d| d as u64).product()
    }

    fn bytes(&self) -> u64 {
        self.numel() * BF16_BYTES
    }
}

/// What to write for an HF config: every tensor of the checkpoint and the noise's standard
/// deviation.
#[derive(Debug, Clone, PartialEq)]
struct Contents {
    tensors: Vec<TensorSpec>,
    std: f32,
}

impl Contents {
    /// Parses `text` with Phi-3's config parser (as loading the checkpoint will) and lists every
    /// tensor its decoder needs, with the checkpoint's names and shapes, in checkpoint order
    /// (`tt_decoder::names`).
    fn from_json_str(text: &str) -> Result<Self> {
        let config = Phi3Config::from_json_str(text)
            .context("synth writes Phi-3 (\"phi3\") checkpoints")?
            .decoder_config();
        let tensors = expected_names(&config)
            .into_iter()
            .map(|t| TensorSpec::new(config.family.tensor_name(t), t.shape(&config), fill_of(t)))
            .collect();
        let raw: Value = serde_json::from_str(text)?;
        let std = match raw.get("initializer_range") {
            None | Some(Value::Null) => 0.02,
            Some(v) => v
                .as_f64()
                .with_context(|| format!("config initializer_range is {v}, not a number"))?
                as f32,
        };
        Ok(Self { tensors, std })
    }
}

/// RMSNorm weights are 1 plus noise, everything else noise.
fn fill_of(tensor: TensorName) -> Fill {
    match tensor {
        TensorName::FinalNorm
        | TensorName::Layer(_, LayerTensor::InputLayerNorm | LayerTensor::PostAttentionLayerNorm) => {
            Fill::Norm
        }
        _ => Fill::Matrix,
    }
}

/// Splits `tensors` (in order) into `n` shards of roughly equal bytes, or into shards of at most
/// `DEFAULT_SHARD_BYTES` (a larger tensor gets a shard of its own) when `n` is `None`.
fn assign_shards(tensors: &[TensorSpec], n: Option<usize>) -> Result<Vec<Vec<TensorSpec>>> {
    let total: u64 = tensors.iter().map(TensorSpec::bytes).sum();
    let target = match n {
        Some(0) => bail!("--shards must be at least 1"),
        Some(n) if n > tensors.len() => {
            bail!("--shards {n} is more than the {} tensors", tensors.len())
        }
        Some(n) => total.div_ceil(n as u64),
        None => DEFAULT_SHARD_BYTES,
    };
    let mut shards: Vec<Vec<TensorSpec>> = vec![Vec::new()];
    let mut current = 0u64;
    for (k, t) in tensors.iter().enumerate() {
        let remaining_tensors = tensors.len() - k;
        let must_split = n.is_some_and(|n| n - shards.len() >= remaining_tensors);
        let full = current > 0 && current + t.bytes() > target;
        let room = n.is_none_or(|n| shards.len() < n);
        if (full || must_split) && room && current > 0 {
            shards.push(Vec::new());
            current = 0;
        }
        current += t.bytes();
        if let Some(last) = shards.last_mut() {
            last.push(t.clone());
        }
    }
    Ok(shards)
}

/// The shard file name, as HF writes it.
fn shard_name(k: usize, n: usize) -> String {
    format!("model-{:05}-of-{n:05}.safetensors", k + 1)
}

/// The safetensors header of `tensors`, padded with spaces to a multiple of 8 bytes.
fn header_bytes(tensors: &[TensorSpec]) -> Result<Vec<u8>> {
    let mut map = serde_json::Map::new();
    map.insert("__metadata__".into(), json!({ "format": "pt" }));
    let mut offset = 0u64;
    for t in tensors {
        let end = offset + t.bytes();
        map.insert(
            t.name.clone(),
            json!({ "dtype": "BF16", "shape": t.shape, "data_offsets": [offset, end] }),
        );
        offset = end;
    }
    let mut bytes = serde_json::to_vec(&Value::Object(map))?;
    while bytes.len() % 8 != 0 {
        bytes.push(b' ');
    }
    Ok(bytes)
}

/// splitmix64: one step of the generator.
fn splitmix64(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// f32 -> bf16 bits, round to nearest even (finite inputs).
fn bf16_bits(x: f32) -> u16 {
    let b = x.to_bits();
    ((b + 0x7FFF + ((b >> 16) & 1)) >> 16) as u16
}

/// Fills `out` (bf16 little-endian bytes) with chunk `chunk` of tensor number `tensor`.
fn fill_chunk(out: &mut [u8], seed: u64, tensor: usize, chunk: usize, fill: Fill, std: f32) {
    let mut state = seed
        ^ (tensor as u64).wrapping_mul(0xD1B5_4A32_D192_ED03)
        ^ (chunk as u64).wrapping_mul(0x8CB9_2BA7_2F3D_8DD7);
    splitmix64(&mut state);
    // Uniform on [-a, a) has standard deviation a / sqrt(3).
    let a = std * 3f32.sqrt();
    let scale = 2.0 * a / (1u32 << 24) as f32;
    let base = if fill == Fill::Norm { 1.0 - a } else { -a };
    let mut pairs = out.chunks_exact_mut(4);
    for pair in &mut pairs {
        let r = splitmix64(&mut state);
        let lo = base + ((r >> 8) as u32 & 0xFF_FFFF) as f32 * scale;
        let hi = base + (r >> 40) as f32 * scale;
        pair[..2].copy_from_slice(&bf16_bits(lo).to_le_bytes());
        pair[2..].copy_from_slice(&bf16_bits(hi).to_le_bytes());
    }
    let rest = pairs.into_remainder();
    if rest.len() == 2 {
        let r = splitmix64(&mut state);
        let v = base + (r >> 40) as f32 * scale;
        rest.copy_from_slice(&bf16_bits(v).to_le_bytes());
    }
}

/// Writes one shard; `first` is the index of its first tensor in the whole list (for seeding).
fn write_shard(
    path: &Path,
    tensors: &[TensorSpec],
    first: usize,
    seed: u64,
    std: f32,
    bar: &ProgressBar,
) -> Result<()> {
    let header = header_bytes(tensors)?;
    let file = File::create(path).with_context(|| format!("cannot create {}", path.display()))?;
    let mut w = BufWriter::with_capacity(8 << 20, file);
    w.write_all(&(header.len() as u64).to_le_bytes())?;
    w.write_all(&header)?;
    let batch = 2 * rayon::current_num_threads().max(1);
    let mut bufs: Vec<Vec<u8>> = Vec::new();
    for (k, t) in tensors.iter().enumerate() {
        let numel = usize::try_from(t.numel()).context("tensor too large for this machine")?;
        let chunks = numel.div_ceil(CHUNK_VALUES);
        let mut start = 0;
        while start < chunks {
            let end = (start + batch).min(chunks);
            bufs.resize_with(end - start, Vec::new);
            bufs.par_iter_mut().enumerate().for_each(|(j, buf)| {
                let c = start + j;
                let len = CHUNK_VALUES.min(numel - c * CHUNK_VALUES);
                buf.resize(len * 2, 0);
                fill_chunk(buf, seed, first + k, c, t.fill, std);
            });
            for buf in &bufs {
                w.write_all(buf)?;
                bar.inc(buf.len() as u64);
            }
            start = end;
        }
    }
    w.flush()
        .with_context(|| format!("cannot write {}", path.display()))?;
    Ok(())
}

/// Writes the checkpoint; returns (total weight bytes, shard count).
fn synth(
    config_path: &Path,
    out: &Path,
    seed: u64,
    shards: Option<usize>,
    tokenizer_dir: &Path,
    show_progress: bool,
) -> Result<(u64, usize)> {
    let text = std::fs::read_to_string(config_path)
        .with_context(|| format!("cannot read {}", config_path.display()))?;
    let Contents { tensors, std } = Contents::from_json_str(&text)
        .with_context(|| format!("cannot synthesize from {}", config_path.display()))?;
    let groups = assign_shards(&tensors, shards)?;
    let total: u64 = tensors.iter().map(TensorSpec::bytes).sum();
    std::fs::create_dir_all(out).with_context(|| format!("cannot create {}", out.display()))?;
    std::fs::write(out.join("config.json"), &text)?;
    for name in COPIED_FILES {
        let src = tokenizer_dir.join(name);
        std::fs::copy(&src, out.join(name))
            .with_context(|| format!("cannot copy {}", src.display()))?;
    }
    let bar = if show_progress {
        let bar = ProgressBar::new(total);
        bar.set_style(
            ProgressStyle::with_template(
                "{msg} [{bar:40}] {bytes}/{total_bytes} {binary_bytes_per_sec} eta {eta}",
            )?
            .progress_chars("=> "),
        );
        bar
    } else {
        ProgressBar::hidden()
    };
    let n = groups.len();
    let mut weight_map = BTreeMap::new();
    let mut first = 0;
    for (k, group) in groups.iter().enumerate() {
        let name = shard_name(k, n);
        bar.set_message(name.clone());
        write_shard(&out.join(&name), group, first, seed, std, &bar)?;
        for t in group {
            weight_map.insert(t.name.clone(), name.clone());
        }
        first += group.len();
    }
    bar.finish_and_clear();
    let index = json!({ "metadata": { "total_size": total }, "weight_map": weight_map });
    std::fs::write(
        out.join("model.safetensors.index.json"),
        serde_json::to_vec_pretty(&index)?,
    )?;
    Ok((total, n))
}

/// Writes the checkpoint and prints what was written.
pub fn run(args: Args) -> Result<()> {
    let tokenizer_dir = args
        .tokenizer_dir
        .unwrap_or_else(|| crate::workspace_root().join("fixtures/phi3-tokenizer"));
    let t0 = Instant::now();
    let (total, n) = synth(
        &args.config,
        &args.out,
        args.seed,
        args.shards,
        &tokenizer_dir,
        true,
    )?;
    let secs = t0.elapsed().as_secs_f64();
    println!(
        "wrote {} ({} bytes of bf16 weights in {n} shards) in {secs:.1} s ({:.2} GB/s)",
        args.out.display(),
        total,
        total as f64 / secs / 1e9
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use phi3_model::{Checkpoint, Phi3Tensors};

    fn tiny_config(tie: bool) -> Value {
        json!({
            "architectures": ["Phi3ForCausalLM"],
            "model_type": "phi3",
            "vocab_size": 300,
            "hidden_size": 64,
            "intermediate_size": 96,
            "num_hidden_layers": 3,
            "num_attention_heads": 8,
            "num_key_value_heads": 4,
            "max_position_embeddings": 256,
            "rms_norm_eps": 1e-5,
            "rope_theta": 10000.0,
            "tie_word_embeddings": tie,
            "bos_token_id": 1,
            "eos_token_id": 32000,
            "pad_token_id": 32000,
            "hidden_act": "silu",
            "torch_dtype": "bfloat16"
        })
    }

    fn synth_tiny(config: &Value, seed: u64, shards: Option<usize>) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        let cfg = dir.path().join("in.json");
        std::fs::write(&cfg, serde_json::to_vec(config).unwrap()).unwrap();
        let out = dir.path().join("ckpt");
        let tok = crate::workspace_root().join("fixtures/phi3-tokenizer");
        synth(&cfg, &out, seed, shards, &tok, false).unwrap();
        dir
    }

    fn mean_std(v: &[f32]) -> (f64, f64) {
        let n = v.len() as f64;
        let mean = v.iter().map(|&x| f64::from(x)).sum::<f64>() / n;
        let var = v
            .iter()
            .map(|&x| (f64::from(x) - mean).powi(2))
            .sum::<f64>()
            / n;
        (mean, var.sqrt())
    }

    #[test]
    fn tiny_checkpoint_opens_with_every_phi3_tensor() {
        for (tie, shards) in [(false, Some(3)), (true, None)] {
            let dir = synth_tiny(&tiny_config(tie), 7, shards);
            let ckpt_dir = dir.path().join("ckpt");
            let ckpt = Checkpoint::open_dir(&ckpt_dir).unwrap();
            ckpt.check_phi3_tensors().unwrap();
            assert_eq!(ckpt.files().len(), shards.unwrap_or(1));
            let expected = 2 + 6 * 3 + usize::from(!tie);
            assert_eq!(ckpt.tensor_names().len(), expected);
            assert_eq!(
                ckpt.generation_config().eos_token_ids,
                vec![32000, 32001, 32007]
            );
            assert!(ckpt.tokenizer_path().is_some());
            let index: Value = serde_json::from_slice(
                &std::fs::read(ckpt_dir.join("model.safetensors.index.json")).unwrap(),
            )
            .unwrap();
            assert_eq!(
                index["metadata"]["total_size"].as_u64(),
                Some(ckpt.total_bytes())
            );
            // qkv: (8 + 2*4) * 8 = 128 rows of 64.
            let qkv: Vec<f32> = ckpt
                .read_all("model.layers.1.self_attn.qkv_proj.weight")
                .unwrap();
            assert_eq!(qkv.len(), 128 * 64);
            let (mean, std) = mean_std(&qkv);
            assert!(mean.abs() < 0.002, "mean {mean}");
            assert!((std - 0.02).abs() < 0.002, "std {std}");
            let norm: Vec<f32> = ckpt.read_all("model.norm.weight").unwrap();
            let (mean, std) = mean_std(&norm);
            assert!((mean - 1.0).abs() < 0.01 && std < 0.03, "norm {mean} {std}");
        }
    }

    #[test]
    fn same_seed_same_bytes_other_seed_other_bytes() {
        let read = |seed| {
            let dir = synth_tiny(&tiny_config(false), seed, Some(2));
            let ckpt = Checkpoint::open_dir(&dir.path().join("ckpt")).unwrap();
            ckpt.read_all::<f32>("lm_head.weight").unwrap()
        };
        let a = read(1);
        assert_eq!(a, read(1));
        assert_ne!(a, read(2));
    }

    /// The tensors `synth` writes for the config `text`.
    fn tensor_list(text: &str) -> Vec<TensorSpec> {
        Contents::from_json_str(text).unwrap().tensors
    }

    #[test]
    fn full_size_phi3_mini_tensor_list() {
        let path = crate::workspace_root().join("fixtures/configs/phi3-mini-128k.json");
        let tensors = tensor_list(&std::fs::read_to_string(path).unwrap());
        let total: u64 = tensors.iter().map(TensorSpec::bytes).sum();
        // 3,821,079,552 parameters (Phi-3-mini, untied lm_head) in bf16.
        assert_eq!(total, 2 * 3_821_079_552);
        let shards = assign_shards(&tensors, None).unwrap();
        assert!((4..=5).contains(&shards.len()), "{} shards", shards.len());
        for s in &shards {
            assert!(s.iter().map(TensorSpec::bytes).sum::<u64>() <= DEFAULT_SHARD_BYTES);
        }
        assert_eq!(assign_shards(&tensors, Some(7)).unwrap().len(), 7);
    }

    /// The synthesized bytes, pinned: sha256 of every file of two tiny checkpoints (tied and
    /// untied, one and three shards) and of Phi-3-mini's `name shape` list, as the writer made
    /// them before it took its tensor list from `tt_decoder`.
    #[test]
    fn synthesized_checkpoints_are_pinned() {
        let mut got = Vec::new();
        for (tie, shards) in [(false, Some(3)), (true, None)] {
            let dir = synth_tiny(&tiny_config(tie), 7, shards);
            let mut files: Vec<_> = std::fs::read_dir(dir.path().join("ckpt"))
                .unwrap()
                .map(|e| e.unwrap().path())
                .collect();
            files.sort();
            for f in files {
                let name = f.file_name().unwrap().to_string_lossy().into_owned();
                got.push(format!(
                    "{tie} {name} {}",
                    crate::download::sha256_file(&f).unwrap()
                ));
            }
        }
        let path = crate::workspace_root().join("fixtures/configs/phi3-mini-128k.json");
        let listing: String = tensor_list(&std::fs::read_to_string(path).unwrap())
            .iter()
            .map(|t| format!("{} {:?}\n", t.name, t.shape))
            .collect();
        got.push(format!(
            "phi3-mini {}",
            crate::download::sha256_hex(listing.as_bytes())
        ));
        let want = [
            "false config.json 2c4a3300601b5727e9ad7108215431b290b12502b19fb60061eff9eb0e57ac9b",
            "false generation_config.json 826288ba947fee57b14e92e4e9f3ea1f8e4e297e37d5663f95bfcdd5852a4bb6",
            "false model-00001-of-00003.safetensors b0a04a94bda7879143d923476829481a6b851a2c1ab5fd2f7ffd87bff4d6147d",
            "false model-00002-of-00003.safetensors 93f9f283e1ffe05fa98b0a19aa5302ad3604d048c07f328b0a97b61bf26e9ea0",
            "false model-00003-of-00003.safetensors 866d6e76293260b2e27a6f82e22b4dc4b11a6047342d95a4415955e8683819e6",
            "false model.safetensors.index.json b9d61640bd4de0e0575a82a41c9ee8d7863d55e904a3fb9d620eb8fb09c1abaf",
            "false tokenizer.json 76a656e263dd843209678fb8285622f83c959f364b2b50a3224d0be69e4cb9d8",
            "false tokenizer_config.json 88ffbfd9557620bdb49a8f428af11da8736558b75a14c9d0e394feae557376ed",
            "true config.json 4204b4a559990de901e8e98ee8fb97a0b2147848591ec345fb3152943647e1cc",
            "true generation_config.json 826288ba947fee57b14e92e4e9f3ea1f8e4e297e37d5663f95bfcdd5852a4bb6",
            "true model-00001-of-00001.safetensors 6661a50c1ee2183355c4faa1c2323c86f8e25e7813cc64c152df99daf119e1fb",
            "true model.safetensors.index.json b685116ecc2f063770428d7355996202e0dc6df9f9beec9964761d3c0948a48e",
            "true tokenizer.json 76a656e263dd843209678fb8285622f83c959f364b2b50a3224d0be69e4cb9d8",
            "true tokenizer_config.json 88ffbfd9557620bdb49a8f428af11da8736558b75a14c9d0e394feae557376ed",
            "phi3-mini f51798ce3965d31d0a7d7a6da9ae0ac120e971e3e6683dd5f95fb99fa7658f6c",
        ];
        assert_eq!(got, want, "{got:#?}");
    }

    #[test]
    fn missing_or_bad_fields_are_named() {
        let mut c = tiny_config(false);
        c.as_object_mut().unwrap().remove("intermediate_size");
        let err = |c: &Value| {
            let e = Contents::from_json_str(&c.to_string()).unwrap_err();
            format!("{e:#}")
        };
        let e = err(&c);
        assert!(e.contains("intermediate_size"), "{e}");
        let mut c = tiny_config(false);
        c["hidden_size"] = json!("big");
        let e = err(&c);
        assert!(e.contains("hidden_size"), "{e}");
        let mut c = tiny_config(false);
        c["model_type"] = json!("llama");
        let e = err(&c);
        assert!(e.contains("phi3"), "{e}");
    }

    #[test]
    fn bf16_rounding_is_nearest_even() {
        assert_eq!(bf16_bits(1.0), 0x3F80);
        // 1 + 2^-8 lies halfway between 1 and 1 + 2^-7: ties go to the even mantissa (1.0).
        assert_eq!(bf16_bits(1.0 + 1.0 / 256.0), 0x3F80);
        assert_eq!(bf16_bits(1.0 + 3.0 / 256.0), 0x3F82);
        assert_eq!(bf16_bits(-0.02), 0xBCA4);
    }
}
