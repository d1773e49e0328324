//! Typed errors of the crate: config files, checkpoints, tokenizers.
//!
//! Every message says what is wrong and, where it helps, what to do about it: these strings are
//! what a user of a binary reads. Model families add their own words (which family, which rope
//! types) through the fields, never by a message written for one family.

use std::path::PathBuf;

/// Result with a [`CheckpointError`] by default.
pub type Result<T, E = CheckpointError> = std::result::Result<T, E>;

/// Problems in `config.json` / `generation_config.json`.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read {path}: {source}")]
    Io {
        /// File that failed.
        path: PathBuf,
        /// Underlying error.
        source: std::io::Error,
    },
    /// The text is not JSON (or not a JSON object).
    #[error("{file} is not valid JSON: {message}; re-download or fix the file")]
    Json {
        /// Which file (`config.json`, `generation_config.json`).
        file: &'static str,
        /// Parser message with line and column.
        message: String,
    },
    /// A key holds a value of the wrong type.
    #[error("{file}: field `{field}` has the wrong type: {message}")]
    WrongType {
        /// Which file.
        file: &'static str,
        /// Path of the key, e.g. `hidden_size` or `rope_scaling.long_factor[3]`.
        field: String,
        /// What was expected and found.
        message: String,
    },
    /// A required key is absent.
    #[error(
        "config.json: required field `{field}` is missing; is this a decoder model's config.json?"
    )]
    MissingField {
        /// The key.
        field: &'static str,
    },
    /// A size is zero or negative.
    #[error("config.json: `{field}` must be a positive integer, got {value}")]
    NonPositive {
        /// The key.
        field: &'static str,
        /// The value found.
        value: i64,
    },
    /// A float parameter is not finite or out of its range.
    #[error("config.json: `{field}` = {} is invalid: {expected}", show_number(*value))]
    InvalidValue {
        /// The key.
        field: &'static str,
        /// The value found.
        value: f64,
        /// What would be valid.
        expected: &'static str,
    },
    /// `model_type` names a family this tool does not run.
    #[error(
        "config.json describes a `{model_type}` model, not {expected}; this tool runs only those \
         model families (config.json's `model_type` picks the family)"
    )]
    WrongModelType {
        /// The family found (empty when config.json has no `model_type`).
        model_type: String,
        /// The `model_type` values accepted, quoted, e.g. "`phi3`".
        expected: String,
    },
    /// The hidden size does not split evenly into heads.
    #[error(
        "config.json: hidden_size {hidden_size} is not divisible by num_attention_heads {heads} \
         (and no head_dim is given)"
    )]
    HiddenNotDivisibleByHeads {
        /// hidden_size.
        hidden_size: usize,
        /// num_attention_heads.
        heads: usize,
    },
    /// Query heads do not group evenly over KV heads.
    #[error(
        "config.json: num_attention_heads {heads} is not divisible by num_key_value_heads {kv_heads}"
    )]
    HeadsNotDivisibleByKvHeads {
        /// num_attention_heads.
        heads: usize,
        /// num_key_value_heads.
        kv_heads: usize,
    },
    /// Rotary embeddings need an even head dimension.
    #[error("config.json: head_dim {head_dim} is odd; rotary embeddings need an even head_dim")]
    OddHeadDim {
        /// The head dimension.
        head_dim: usize,
    },
    /// A rope type this crate does not implement.
    #[error(
        "config.json: rope type `{rope_type}` is not supported; this model family knows {supported}"
    )]
    UnsupportedRopeType {
        /// The type found.
        rope_type: String,
        /// What the family supports, in words.
        supported: &'static str,
    },
    /// Partial rotary embeddings are not supported.
    #[error(
        "config.json: partial_rotary_factor {value} is not supported; only full rotary embeddings \
         (partial_rotary_factor = 1.0) are implemented"
    )]
    UnsupportedPartialRotary {
        /// The factor found.
        value: f64,
    },
    /// A key the chosen rope type needs is absent.
    #[error("config.json: rope type `{rope_type}` needs `{key}` in its rope dictionary")]
    MissingRopeKey {
        /// The rope type.
        rope_type: &'static str,
        /// The missing key.
        key: &'static str,
    },
    /// A LongRoPE factor list has the wrong length.
    #[error(
        "config.json: rope `{list}` has {actual} values, expected {expected} (head_dim / 2); the \
         factor lists do not belong to this model's head size"
    )]
    FactorLength {
        /// `short_factor` or `long_factor`.
        list: &'static str,
        /// head_dim / 2.
        expected: usize,
        /// Length found.
        actual: usize,
    },
    /// A rope factor is outside the accepted range.
    #[error(
        "config.json: rope `{list}`[{index}] = {} is outside [0.001, 1e6]; LongRoPE factors \
         are positive frequency divisors (Phi-3 uses 1 to about 60)",
        show_number(*value)
    )]
    BadFactor {
        /// `short_factor` or `long_factor`.
        list: &'static str,
        /// Position in the list.
        index: usize,
        /// The value.
        value: f64,
    },
    /// An activation the model does not implement.
    #[error("config.json: hidden_act `{act}` is not supported; the decoder implements \"silu\"")]
    UnsupportedActivation {
        /// The activation found.
        act: String,
    },
}

/// Problems finding, opening or reading a checkpoint.
#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    /// Neither a local directory nor a cached HF model id.
    #[error(
        "model `{model}` not found: it is not a local directory and not in the HuggingFace cache \
         (looked in: {}); pass a checkpoint directory, or download the model first (this tool \
         never goes online)",
        display_paths(looked_in)
    )]
    ModelNotFound {
        /// The argument given.
        model: String,
        /// Directories searched.
        looked_in: Vec<PathBuf>,
    },
    /// A directory that holds no checkpoint files at all.
    #[error(
        "{dir} is not a checkpoint: it holds no config.json and no *.safetensors files; point \
         --model at the directory that contains them"
    )]
    NotACheckpoint {
        /// The directory.
        dir: PathBuf,
    },
    /// A checkpoint file the loader needs is absent.
    #[error("{dir} has no {file}: {hint}")]
    MissingFile {
        /// The directory.
        dir: PathBuf,
        /// The file name.
        file: &'static str,
        /// What to do.
        hint: &'static str,
    },
    /// I/O error on a checkpoint file.
    #[error("cannot read {path}: {source}")]
    Io {
        /// File that failed.
        path: PathBuf,
        /// Underlying error.
        source: std::io::Error,
    },
    /// The file is shorter than its header says.
    #[error(
        "{path} is truncated: {expected} bytes expected, {actual} present; the download is \
         probably incomplete, download it again"
    )]
    Truncated {
        /// The file.
        path: PathBuf,
        /// Bytes the header implies.
        expected: u64,
        /// Bytes present.
        actual: u64,
    },
    /// The 8-byte header length points past the end of the file.
    #[error(
        "{path}: safetensors header length {header_len} runs past the end of the {file_len}-byte \
         file; the file is truncated or not a safetensors file"
    )]
    HeaderPastEnd {
        /// The file.
        path: PathBuf,
        /// Header length read from the first 8 bytes.
        header_len: u64,
        /// Total file length.
        file_len: u64,
    },
    /// The JSON header is not valid.
    #[error(
        "{path}: malformed safetensors header: {message}; the file is corrupt, download it again"
    )]
    MalformedHeader {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// A tensor dtype other than BF16, F16, F32.
    #[error(
        "{path}: tensor `{tensor}` has dtype {dtype}; only BF16, F16 and F32 checkpoints are \
         supported (quantized checkpoints are not)"
    )]
    UnsupportedDtype {
        /// The file.
        path: PathBuf,
        /// Tensor name.
        tensor: String,
        /// Dtype string from the header.
        dtype: String,
    },
    /// The byte range does not match shape x dtype.
    #[error(
        "{path}: tensor `{tensor}` of shape {shape:?} needs {expected} bytes but its offsets give \
         {actual}; the header is corrupt"
    )]
    SizeMismatch {
        /// The file.
        path: PathBuf,
        /// Tensor name.
        tensor: String,
        /// Shape from the header.
        shape: Vec<usize>,
        /// Bytes implied by shape and dtype.
        expected: u64,
        /// Bytes implied by the offsets.
        actual: u64,
    },
    /// Offsets are reversed or beyond the data area.
    #[error(
        "{path}: tensor `{tensor}` has data offsets [{begin}, {end}) outside the {data_len}-byte \
         data area; the header is corrupt"
    )]
    OffsetsOutOfRange {
        /// The file.
        path: PathBuf,
        /// Tensor name.
        tensor: String,
        /// Start offset.
        begin: u64,
        /// End offset.
        end: u64,
        /// Size of the data area.
        data_len: u64,
    },
    /// Two tensors share bytes.
    #[error("{path}: tensors `{first}` and `{second}` overlap in the file; the header is corrupt")]
    OverlappingTensors {
        /// The file.
        path: PathBuf,
        /// One tensor.
        first: String,
        /// The other.
        second: String,
    },
    /// The shard index is not usable.
    #[error("{path}: malformed index: {message}")]
    MalformedIndex {
        /// The index file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// The index names a shard file that is absent.
    #[error(
        "{index} names shard `{shard}` (holding {tensors} tensors, e.g. `{example}`) but the file \
         is not there; the download is incomplete, fetch the missing shard"
    )]
    MissingShard {
        /// The index file.
        index: PathBuf,
        /// Shard file name.
        shard: String,
        /// How many tensors the index puts in it.
        tensors: usize,
        /// One of them.
        example: String,
    },
    /// The index puts a tensor in a shard whose header lacks it.
    #[error("{index} says `{tensor}` is in {shard}, but that file does not contain it")]
    TensorNotInShard {
        /// The index file.
        index: PathBuf,
        /// Tensor name.
        tensor: String,
        /// Shard file name.
        shard: String,
    },
    /// A tensor the model needs is absent.
    #[error(
        "tensor `{tensor}` is missing from the checkpoint in {dir}; the checkpoint does not match \
         its config.json's model family"
    )]
    MissingTensor {
        /// Checkpoint directory.
        dir: PathBuf,
        /// Tensor name.
        tensor: String,
    },
    /// A tensor has another shape than the config implies.
    #[error(
        "tensor `{tensor}` has shape {actual:?} but config.json implies {expected:?}; the weights \
         do not belong to this config"
    )]
    WrongShape {
        /// Tensor name.
        tensor: String,
        /// Shape from the config.
        expected: Vec<usize>,
        /// Shape in the file.
        actual: Vec<usize>,
    },
    /// A block read outside the tensor, or into a wrongly sized buffer.
    #[error("bad read of tensor `{tensor}` (shape {shape:?}): {message}")]
    BadRead {
        /// Tensor name.
        tensor: String,
        /// Its shape.
        shape: Vec<usize>,
        /// What is wrong.
        message: String,
    },
    /// A checkpoint file changed on disk while the checkpoint had it open: written or truncated
    /// in place, replaced, or deleted. Nothing of the new contents is used.
    #[error(
        "{path} changed on disk while in use: {what}; checkpoint files must not be rewritten \
         while a checkpoint or a model loaded from it is in use, open the checkpoint again"
    )]
    FileChanged {
        /// The file.
        path: PathBuf,
        /// What changed.
        what: String,
    },
    /// The config inside the checkpoint is unusable (the message names the file).
    #[error("{dir}: {source}")]
    Config {
        /// Checkpoint directory.
        dir: PathBuf,
        /// The config problem.
        source: ConfigError,
    },
}

/// Problems loading or using the tokenizer.
#[derive(Debug, thiserror::Error)]
pub enum TokenizerError {
    /// tokenizer.json could not be loaded.
    #[error("cannot load tokenizer {path}: {message}")]
    Load {
        /// The file.
        path: PathBuf,
        /// Library message.
        message: String,
    },
    /// Encoding or decoding failed inside the tokenizers library.
    #[error("tokenizer failed: {0}")]
    Library(String),
    /// The tokenizer can produce ids the model has no embedding for.
    #[error(
        "the tokenizer has ids up to {max_id}, but the model's vocab_size is {vocab_size}; this \
         tokenizer does not belong to this model"
    )]
    VocabTooLarge {
        /// Largest id the tokenizer can emit.
        max_id: u32,
        /// Model vocabulary size.
        vocab_size: usize,
    },
    /// A prompt file could not be read.
    #[error("cannot read the prompt file {path}: {source}")]
    PromptIo {
        /// The file.
        path: PathBuf,
        /// Underlying error.
        source: std::io::Error,
    },
    /// A prompt file holds bytes that are not UTF-8 text.
    #[error(
        "the prompt file {path} is not UTF-8 text (invalid byte at offset {offset}); save it as \
         UTF-8"
    )]
    PromptNotUtf8 {
        /// The file.
        path: PathBuf,
        /// Offset of the first byte that is not valid UTF-8.
        offset: usize,
    },
    /// The checkpoint has no chat template (tokenizer_config.json `chat_template` or
    /// chat_template.jinja).
    #[error(
        "{dir} has no chat template (no `chat_template` in tokenizer_config.json and no \
         chat_template.jinja); run without --chat and write the prompt in the model's format"
    )]
    NoChatTemplate {
        /// The checkpoint or tokenizer directory.
        dir: PathBuf,
    },
    /// The chat template failed to parse or render.
    #[error("the chat template of {dir} failed: {message}")]
    ChatTemplate {
        /// The checkpoint or tokenizer directory.
        dir: PathBuf,
        /// The template engine's message.
        message: String,
    },
    /// A special token named by tokenizer_config.json is not in the vocabulary.
    #[error(
        "the tokenizer has no `{token}` token, which tokenizer_config.json names as its {role}"
    )]
    MissingSpecialToken {
        /// The token text.
        token: String,
        /// `bos_token`, `eos_token`, ...
        role: &'static str,
    },
}

/// `err` and its causes on one line, as the binaries print it after `error: `. Each cause is
/// appended after `": "` unless its text is already part of the message (many errors quote
/// their source in their own text), and line breaks become spaces.
pub fn one_paragraph(err: &(dyn std::error::Error + 'static)) -> String {
    let mut out = err.to_string();
    let mut cause = err.source();
    while let Some(c) = cause {
        let text = c.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        cause = c.source();
    }
    out.replace(['\r', '\n'], " ")
}

/// A number as a config file would hold it: whole numbers without a fraction, others in Rust's
/// shortest form (`1e-310`, not 310 zeros).
fn show_number(value: f64) -> String {
    if value.fract() == 0.0 && value.abs() < 1e16 {
        format!("{value:.0}")
    } else {
        format!("{value:?}")
    }
}

fn display_paths(paths: &[PathBuf]) -> String {
    let parts: Vec<String> = paths.iter().map(|p| p.display().to_string()).collect();
    parts.join(", ")
}
