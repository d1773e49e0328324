//! The four fuzz targets: each feeds one input to a parser of the libraries and checks what an
//! accepted input promises. A target returns the [`Verdict`] on the input (accepted, or the typed
//! error it got), or a [`Finding`] when an accepted input breaks a promise. A panic inside a
//! parser is left to unwind: libFuzzer and the replay tests both catch it.
//!
//! - `config`: `Phi3Config::from_json_str` (and `GenerationConfig::from_json_str`); an accepted
//!   config must satisfy every invariant the model relies on, plan on a mesh without panicking,
//!   and give finite RoPE tables.
//! - `safetensors-header`: `checkpoint::parse_header` on the bytes of a whole file; accepted
//!   ranges lie inside the file, match shape x dtype and do not overlap. Accepted files are
//!   also written to disk and opened with `Checkpoint::open_dir`, and every tensor is read.
//! - `index`: `checkpoint::parse_index`; accepted shard names are plain file names and every
//!   tensor is listed once. Accepted indexes are opened in a checkpoint directory without
//!   shards (which must fail with a typed error).
//! - `reference`: `phi3_eval::Reference::from_json`; an accepted reference validates, survives
//!   a write/read round trip, and answers its accessors.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use phi3_eval::Reference;
use phi3_model::checkpoint::{TensorRecord, expected_tensors, parse_header, parse_index};
use phi3_model::{
    Checkpoint, GenerationConfig, Phi3Config, Phi3Tensors, RopeTables, RuntimeOptions,
};
use tt_mesh::MeshShape;

/// A tiny valid Phi-3 config (V 16, H 8, 2 heads, 1 KV head, head_dim 4, I 6, 1 layer,
/// LongRoPE): the config of the checkpoints the `safetensors-header` target opens.
pub const TINY_CONFIG: &str = r#"{"model_type": "phi3", "vocab_size": 16, "hidden_size": 8,
"intermediate_size": 6, "num_hidden_layers": 1, "num_attention_heads": 2,
"num_key_value_heads": 1, "max_position_embeddings": 64, "original_max_position_embeddings": 16,
"rms_norm_eps": 1e-5, "rope_theta": 10000.0, "rope_scaling": {"type": "longrope",
"short_factor": [1.0, 1.5], "long_factor": [2.0, 3.0]}, "sliding_window": null,
"tie_word_embeddings": false, "bos_token_id": 1, "eos_token_id": 2, "pad_token_id": 0}"#;

/// Largest head_dim for which the `config` target builds RoPE tables (they hold head_dim / 2
/// values per variant).
const MAX_ROPE_CHECK_HEAD_DIM: usize = 1 << 14;

/// A parser under test.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Target {
    /// `config.json` (and `generation_config.json`) parsing and validation.
    Config,
    /// The safetensors header: offsets, dtypes, shapes.
    SafetensorsHeader,
    /// `model.safetensors.index.json`.
    Index,
    /// The eval's HF reference file.
    Reference,
}

/// What a target made of one input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// The parser accepted it; the string summarises what it held.
    Accepted(String),
    /// The parser refused it with a typed error; the string is the error's `Debug` text.
    Rejected(String),
}

/// Something other than a typed error or a clean acceptance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Finding {
    /// An accepted input broke a promise of the parser (a bug, saved like a crash).
    Violation(String),
    /// The harness itself failed (e.g. a temporary file could not be written).
    Harness(String),
}

/// Result of one execution.
pub type Outcome = Result<Verdict, Finding>;

/// Scratch state of a target across executions.
#[derive(Debug, Default)]
pub struct Context {
    scratch: Option<tempfile::TempDir>,
}

impl Context {
    /// A fresh context (its scratch directory is made on first use).
    pub fn new() -> Self {
        Self::default()
    }

    fn dir(&mut self) -> Result<PathBuf, Finding> {
        if self.scratch.is_none() {
            let dir = tempfile::Builder::new()
                .prefix("phi3-fuzz-")
                .tempdir()
                .map_err(|e| Finding::Harness(format!("cannot make a scratch directory: {e}")))?;
            self.scratch = Some(dir);
        }
        self.scratch
            .as_ref()
            .map(|d| d.path().to_path_buf())
            .ok_or_else(|| Finding::Harness("no scratch directory".to_string()))
    }
}

impl Target {
    /// Every target, in documentation order.
    pub const ALL: [Target; 4] = [
        Target::Config,
        Target::SafetensorsHeader,
        Target::Index,
        Target::Reference,
    ];

    /// The command-line name (also the corpus and crash directory name).
    pub fn name(self) -> &'static str {
        match self {
            Target::Config => "config",
            Target::SafetensorsHeader => "safetensors-header",
            Target::Index => "index",
            Target::Reference => "reference",
        }
    }

    /// The target called `name`.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|t| t.name() == name)
    }

    /// Runs the parser on `input` and checks what it promises.
    pub fn run(self, input: &[u8], ctx: &mut Context) -> Outcome {
        match self {
            Target::Config => run_config(input),
            Target::SafetensorsHeader => run_header(input, ctx),
            Target::Index => run_index(input, ctx),
            Target::Reference => run_reference(input),
        }
    }
}

fn violation(message: impl Into<String>) -> Finding {
    Finding::Violation(message.into())
}

fn text_of(input: &[u8]) -> String {
    String::from_utf8_lossy(input).into_owned()
}

// ---------------------------------------------------------------------------------------------
// config

fn run_config(input: &[u8]) -> Outcome {
    let text = text_of(input);
    // Either answer is fine; a panic is not.
    let _ = GenerationConfig::from_json_str(&text);
    let config = match Phi3Config::from_json_str(&text) {
        Ok(c) => c,
        Err(e) => return Ok(Verdict::Rejected(format!("{e:?}"))),
    };
    check_config(&config)?;
    let plans = plan_on_meshes(&config);
    let rope = if config.rope.long_rope.is_some() {
        "longrope"
    } else {
        "rope"
    };
    Ok(Verdict::Accepted(format!(
        "{rope}, planned on {plans} of 2 meshes"
    )))
}

/// What an accepted config promises to the rest of the crate.
fn check_config(c: &Phi3Config) -> Result<(), Finding> {
    let sizes = [
        ("vocab_size", c.vocab_size),
        ("hidden_size", c.hidden_size),
        ("intermediate_size", c.intermediate_size),
        ("num_hidden_layers", c.num_hidden_layers),
        ("num_attention_heads", c.num_attention_heads),
        ("num_key_value_heads", c.num_key_value_heads),
        ("max_position_embeddings", c.max_position_embeddings),
        ("head_dim", c.head_dim()),
    ];
    if let Some((name, _)) = sizes.iter().find(|(_, v)| *v == 0) {
        return Err(violation(format!("accepted config has {name} = 0")));
    }
    if !c.num_attention_heads.is_multiple_of(c.num_key_value_heads) {
        return Err(violation(
            "accepted config: heads not divisible by KV heads",
        ));
    }
    if !c.head_dim().is_multiple_of(2) {
        return Err(violation("accepted config has an odd head_dim"));
    }
    if !(c.rms_norm_eps.is_finite() && c.rms_norm_eps > 0.0) {
        return Err(violation(format!(
            "accepted rms_norm_eps {}",
            c.rms_norm_eps
        )));
    }
    if let Some(l) = &c.rope.long_rope {
        let half = c.head_dim() / 2;
        if l.short_factor.len() != half || l.long_factor.len() != half {
            return Err(violation(
                "accepted LongRoPE factor lists of the wrong length",
            ));
        }
        if l.original_max_position_embeddings == 0 {
            return Err(violation("accepted original_max_position_embeddings = 0"));
        }
    }
    let _ = c.parameter_count();
    let _ = (c.qkv_size(), c.gate_up_size(), c.kv_group_size());
    if c.num_hidden_layers <= 4096 {
        let n = expected_tensors(c).len();
        let want = 6 * c.num_hidden_layers + 2 + usize::from(!c.tie_word_embeddings);
        if n != want {
            return Err(violation(format!(
                "expected_tensors lists {n}, want {want}"
            )));
        }
    }
    if c.head_dim() <= MAX_ROPE_CHECK_HEAD_DIM {
        check_rope(c)?;
    }
    Ok(())
}

/// The RoPE tables of an accepted config hold only finite numbers, at the first and last
/// positions the model supports, with both factor lists.
fn check_rope(c: &Phi3Config) -> Result<(), Finding> {
    let tables = RopeTables::new(&c.rope_spec());
    if !tables.attention_factor().is_finite() {
        return Err(violation(format!(
            "accepted config gives a non-finite RoPE attention factor {}",
            tables.attention_factor()
        )));
    }
    let last = c.max_position_embeddings - 1;
    let positions = [0, 1, last / 2, last];
    for variant in [
        phi3_model::RopeVariant::Short,
        phi3_model::RopeVariant::Long,
    ] {
        let cs = tables.cos_sin(variant, &positions);
        if let Some((i, v)) = cs
            .cos
            .iter()
            .chain(&cs.sin)
            .enumerate()
            .find(|(_, v)| !v.is_finite())
        {
            return Err(violation(format!(
                "accepted config gives a non-finite RoPE table value {v} ({variant:?}, element {i})"
            )));
        }
    }
    Ok(())
}

/// Plans the config on 1x1 and 2x4 host meshes: either outcome is fine, a panic is not.
/// Returns how many plans succeeded.
fn plan_on_meshes(c: &Phi3Config) -> usize {
    let mut planned = 0;
    for (rows, cols) in [(1, 1), (2, 4)] {
        let Ok(mesh) = MeshShape::new(rows, cols) else {
            continue;
        };
        let mut options = RuntimeOptions::new(mesh);
        options.max_seq_len = c.max_position_embeddings.min(1 << 20);
        planned += usize::from(phi3_model::plan(c, &options).is_ok());
    }
    planned
}

// ---------------------------------------------------------------------------------------------
// safetensors-header

fn run_header(input: &[u8], ctx: &mut Context) -> Outcome {
    let records = match parse_header(Path::new("fuzz.safetensors"), input) {
        Ok(r) => r,
        Err(e) => return Ok(Verdict::Rejected(format!("{e:?}"))),
    };
    check_records(input, &records)?;
    open_as_checkpoint(input, &records, ctx)?;
    let dtypes: BTreeSet<&str> = records.iter().map(|r| r.info.dtype.as_str()).collect();
    let ranks: BTreeSet<usize> = records.iter().map(|r| r.info.shape.len()).collect();
    Ok(Verdict::Accepted(format!(
        "{} tensors, dtypes {dtypes:?}, ranks {ranks:?}",
        records.len()
    )))
}

/// Accepted records lie inside the file, after the header, match shape x dtype, have unique
/// names and do not overlap.
fn check_records(file: &[u8], records: &[TensorRecord]) -> Result<(), Finding> {
    let mut prefix = [0u8; 8];
    prefix.copy_from_slice(
        file.get(..8)
            .ok_or_else(|| violation("accepted a file under 8 bytes"))?,
    );
    let data_start = usize::try_from(u64::from_le_bytes(prefix))
        .ok()
        .and_then(|n| n.checked_add(8))
        .ok_or_else(|| violation("accepted an absurd header length"))?;
    let mut names = BTreeSet::new();
    let mut ranges = Vec::new();
    for r in records {
        if !names.insert(r.name.as_str()) {
            return Err(violation(format!("tensor `{}` listed twice", r.name)));
        }
        if r.bytes.start < data_start || r.bytes.end > file.len() || r.bytes.start > r.bytes.end {
            return Err(violation(format!(
                "tensor `{}` at {:?} outside the data area {data_start}..{}",
                r.name,
                r.bytes,
                file.len()
            )));
        }
        if r.bytes.len() != r.info.byte_len() {
            return Err(violation(format!(
                "tensor `{}` has {} bytes for shape {:?} {:?}",
                r.name,
                r.bytes.len(),
                r.info.shape,
                r.info.dtype
            )));
        }
        if !r.bytes.is_empty() {
            ranges.push(r.bytes.clone());
        }
    }
    ranges.sort_by_key(|r| r.start);
    if let Some(w) = ranges.windows(2).find(|w| w[0].end > w[1].start) {
        return Err(violation(format!(
            "accepted overlapping ranges {:?} and {:?}",
            w[0], w[1]
        )));
    }
    Ok(())
}

/// Writes the accepted file into a checkpoint directory with [`TINY_CONFIG`], opens it and
/// reads every tensor whole and (2-D ones) by blocks.
fn open_as_checkpoint(
    file: &[u8],
    records: &[TensorRecord],
    ctx: &mut Context,
) -> Result<(), Finding> {
    let dir = ctx.dir()?;
    let io = |e: std::io::Error| Finding::Harness(format!("scratch write: {e}"));
    std::fs::write(dir.join("config.json"), TINY_CONFIG).map_err(io)?;
    std::fs::write(dir.join("model.safetensors"), file).map_err(io)?;
    let ckpt = Checkpoint::open_dir(&dir).map_err(|e| {
        violation(format!(
            "parse_header accepted the file but open_dir refused it: {e}"
        ))
    })?;
    let names = ckpt.tensor_names();
    if names.len() != records.len() {
        return Err(violation(
            "the checkpoint lists another number of tensors than the header",
        ));
    }
    for r in records {
        let all: Vec<f32> = ckpt
            .read_all(&r.name)
            .map_err(|e| violation(format!("read_all(`{}`): {e}", r.name)))?;
        if all.len() != r.info.numel() {
            return Err(violation(format!(
                "read_all(`{}`) gave {} values",
                r.name,
                all.len()
            )));
        }
        if let [rows, cols] = r.info.shape[..]
            && rows > 0
            && cols > 0
        {
            let block: Vec<f32> = ckpt
                .read_block_vec(&r.name, rows / 2..rows, cols / 2..cols)
                .map_err(|e| violation(format!("read_block(`{}`): {e}", r.name)))?;
            let want = all
                .chunks_exact(cols)
                .skip(rows / 2)
                .flat_map(|row| &row[cols / 2..]);
            if !block
                .iter()
                .map(|v| v.to_bits())
                .eq(want.map(|v| v.to_bits()))
            {
                return Err(violation(format!(
                    "block read of `{}` disagrees with read_all",
                    r.name
                )));
            }
            // A block past the end is a typed error.
            if ckpt
                .read_block_vec::<f32>(&r.name, 0..rows + 1, 0..cols)
                .is_ok()
            {
                return Err(violation(format!(
                    "read past the rows of `{}` accepted",
                    r.name
                )));
            }
        }
    }
    // Whatever the tensors, checking them against the config is a typed answer.
    let _ = ckpt.check_phi3_tensors();
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// index

fn run_index(input: &[u8], ctx: &mut Context) -> Outcome {
    let text = text_of(input);
    let shards = match parse_index(Path::new("model.safetensors.index.json"), &text) {
        Ok(s) => s,
        Err(e) => return Ok(Verdict::Rejected(format!("{e:?}"))),
    };
    let mut tensors = BTreeSet::new();
    for (shard, names) in &shards {
        let plain = !shard.is_empty()
            && shard != "."
            && shard != ".."
            && !shard.contains(['/', '\\', '\0']);
        if !plain {
            return Err(violation(format!("accepted shard name {shard:?}")));
        }
        if names.is_empty() {
            return Err(violation(format!("shard {shard:?} listed with no tensors")));
        }
        for n in names {
            if !tensors.insert(n.as_str()) {
                return Err(violation(format!("tensor {n:?} listed in two shards")));
            }
        }
    }
    // A checkpoint directory with this index and no shard files: a typed error, never Ok.
    let dir = ctx.dir()?;
    let io = |e: std::io::Error| Finding::Harness(format!("scratch write: {e}"));
    std::fs::write(dir.join("config.json"), TINY_CONFIG).map_err(io)?;
    std::fs::write(dir.join("model.safetensors.index.json"), input).map_err(io)?;
    if Checkpoint::open_dir(&dir).is_ok() {
        return Err(violation("a checkpoint without shard files opened"));
    }
    Ok(Verdict::Accepted(format!(
        "{} shards, {} tensors",
        shards.len(),
        tensors.len()
    )))
}

// ---------------------------------------------------------------------------------------------
// reference

fn run_reference(input: &[u8]) -> Outcome {
    let text = text_of(input);
    let _ = phi3_eval::prompt_text_of_file(&text);
    let r = match Reference::from_json(&text) {
        Ok(r) => r,
        Err(e) => return Ok(Verdict::Rejected(format!("{e:?}"))),
    };
    r.validate()
        .map_err(|e| violation(format!("an accepted reference does not validate: {e}")))?;
    let again = Reference::from_json(&r.to_json_pretty()).map_err(|e| {
        violation(format!(
            "an accepted reference does not read back after writing: {e}"
        ))
    })?;
    if again != r {
        return Err(violation(
            "an accepted reference changes in a write/read round trip",
        ));
    }
    if r.full_sequence().len() != r.prompt_len + r.decode_len() {
        return Err(violation("full_sequence length"));
    }
    if r.decode_len() > r.max_new_tokens {
        return Err(violation("more generated tokens than max_new_tokens"));
    }
    for step in 0..r.decode_len() {
        if r.hf_top5_ids(step).is_some() != r.hf_top5.is_some() {
            return Err(violation(format!(
                "hf_top5_ids({step}) disagrees with hf_top5"
            )));
        }
    }
    if r.check_prompt(&r.prompt_tokens).is_err() {
        return Err(violation("the reference refuses its own prompt"));
    }
    let mut other = r.prompt_tokens.clone();
    if let Some(first) = other.first_mut() {
        *first = first.wrapping_add(1);
    }
    if r.check_prompt(&other).is_ok() {
        return Err(violation("the reference accepts another prompt"));
    }
    Ok(Verdict::Accepted(format!(
        "prompt from {:?}, top-5: {}",
        r.prompt.source,
        r.hf_top5.is_some()
    )))
}
