//! The HF reference file (docs/EVAL.md): what HF fp32 greedy generation produced for a prompt,
//! with the identity of the model and tokenizer it was made with.
//!
//! [`Reference::from_json`] checks the format name and version before anything else, then the
//! fields, then their consistency; [`Reference::check_model_dir`] and
//! [`Reference::check_tokenizer_file`] refuse a reference made for another model or tokenizer.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::fingerprint::{is_sha256_hex, model_fingerprint, tokenizer_fingerprint};
use crate::scoring::TOP_K;

/// The value of the `format` field of every reference file.
pub const REFERENCE_FORMAT: &str = "tt-phi3-eval-reference";
/// The format version this crate reads and writes.
pub const REFERENCE_VERSION: u64 = 1;

/// Why a reference cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ReferenceError {
    /// A file could not be read.
    #[error("cannot read {path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The text is not JSON at all.
    #[error("the reference is not valid JSON: {0}")]
    BadJson(#[source] serde_json::Error),
    /// The JSON is not an eval reference (no or another `format`).
    #[error("not an eval reference: \"format\" is {found}, expected \"{REFERENCE_FORMAT}\"")]
    NotAReference {
        /// The `format` value found, as JSON (`null` when absent).
        found: String,
    },
    /// The reference was written in a format version this build does not read.
    #[error(
        "reference format version {found} is not supported (this build reads version {REFERENCE_VERSION}); remake it with `cargo xtask reference`"
    )]
    UnsupportedVersion {
        /// The `version` value found, as JSON.
        found: String,
    },
    /// A field is missing or has the wrong type.
    #[error("malformed reference at `{path}`: {message}")]
    Malformed {
        /// Where in the document (e.g. `generated_tokens[3]`).
        path: String,
        /// What is wrong there.
        message: String,
    },
    /// The fields contradict each other.
    #[error("inconsistent reference: {reason}")]
    Inconsistent {
        /// What contradicts what.
        reason: String,
    },
    /// The reference was made for another model (other config or weights).
    #[error(
        "the reference was made for another model: it records model \"{reference_model}\" with hash {expected}, \
         but {dir} hashes to {found}; make a reference for this model with `cargo xtask reference`"
    )]
    ModelMismatch {
        /// The model id recorded in the reference.
        reference_model: String,
        /// The model hash recorded in the reference.
        expected: String,
        /// The hash of the model directory being evaluated.
        found: String,
        /// The model directory being evaluated.
        dir: PathBuf,
    },
    /// The reference was made with another tokenizer.
    #[error(
        "the reference was made with another tokenizer: it records tokenizer hash {expected}, \
         but {path} hashes to {found}"
    )]
    TokenizerMismatch {
        /// The tokenizer hash recorded in the reference.
        expected: String,
        /// The hash of the tokenizer being used.
        found: String,
        /// The tokenizer file being used.
        path: PathBuf,
    },
    /// The model directory has no `config.json`.
    #[error("{dir} has no config.json")]
    MissingConfig {
        /// The model directory.
        dir: PathBuf,
    },
    /// The model directory has no `*.safetensors` file.
    #[error("{dir} has no *.safetensors weights")]
    MissingWeights {
        /// The model directory.
        dir: PathBuf,
    },
    /// The prompt given for the eval is not the reference's prompt.
    #[error(
        "the prompt differs from the reference's at token {index}: reference {expected:?}, given {found:?}"
    )]
    PromptMismatch {
        /// First differing index.
        index: usize,
        /// The reference's token there (`None`: the reference prompt is shorter).
        expected: Option<u32>,
        /// The given token there (`None`: the given prompt is shorter).
        found: Option<u32>,
    },
}

/// The identity of the model a reference was made with.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModelInfo {
    /// The model as it was named to the reference script: a directory or a HuggingFace id.
    pub id: String,
    /// The model hash (crate::fingerprint): config.json and the safetensors files.
    pub sha256: String,
    /// Length of HF's logits (config `vocab_size`).
    pub vocab_size: usize,
}

/// The identity of the tokenizer a reference was made with.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenizerInfo {
    /// SHA-256 of tokenizer.json.
    pub sha256: String,
}

/// What produced the reference.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GeneratorInfo {
    /// transformers version.
    pub transformers: String,
    /// torch version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub torch: Option<String>,
    /// Compute dtype of the HF model (always "float32" from our script).
    pub dtype: String,
    /// HF attention implementation used.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attn_implementation: Option<String>,
}

/// Where the prompt came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PromptSource {
    /// A text file, encoded with the tokenizer.
    Text,
    /// A file of token ids.
    Ids,
    /// The synthetic prompt builder (crate::synthetic).
    Synthetic,
}

/// The prompt's provenance (its tokens are [`Reference::prompt_tokens`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PromptInfo {
    /// Where the prompt came from.
    pub source: PromptSource,
    /// The file it was read from, as named to the script.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file: Option<String>,
    /// The prompt text that was encoded (text prompts).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
}

/// HF's ranking at one generation step: its 5 best tokens, best first (ties: lowest id first).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HfStep {
    /// Token ids, best first.
    pub ids: Vec<u32>,
    /// Their fp32 logits (may be empty).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub logits: Vec<f32>,
    /// Their probabilities, softmax over the whole vocabulary (may be empty).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub probs: Vec<f32>,
}

/// An HF reference: prompt tokens and the greedy tokens HF fp32 generated after them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Reference {
    /// Always [`REFERENCE_FORMAT`].
    pub format: String,
    /// Always [`REFERENCE_VERSION`].
    pub version: u64,
    /// The model it was made with.
    pub model: ModelInfo,
    /// The tokenizer it was made with.
    pub tokenizer: TokenizerInfo,
    /// What produced it.
    pub generator: GeneratorInfo,
    /// The prompt's provenance.
    pub prompt: PromptInfo,
    /// `prompt_tokens.len()`.
    pub prompt_len: usize,
    /// The prompt, as token ids (no BOS added unless the tokenizer adds one).
    pub prompt_tokens: Vec<u32>,
    /// The `max_new_tokens` asked of `generate`.
    pub max_new_tokens: usize,
    /// What `generate(prompt, max_new_tokens, do_sample=False)` returned after the prompt (shorter
    /// than `max_new_tokens` only if it stopped on a stop token, which is then the last one).
    pub generated_tokens: Vec<u32>,
    /// HF's top 5 at each generation step: entry `i` ranks the logits that produced
    /// `generated_tokens[i]`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hf_top5: Option<Vec<HfStep>>,
}

/// The prompt text of a prompt file: its contents without trailing `\r` and `\n` characters.
pub fn prompt_text_of_file(contents: &str) -> &str {
    contents.trim_end_matches(['\r', '\n'])
}

impl Reference {
    /// Parses and validates a reference document.
    pub fn from_json(text: &str) -> Result<Self, ReferenceError> {
        let value: serde_json::Value =
            serde_json::from_str(text).map_err(ReferenceError::BadJson)?;
        match value.get("format") {
            Some(serde_json::Value::String(f)) if f == REFERENCE_FORMAT => {}
            other => {
                return Err(ReferenceError::NotAReference {
                    found: json_text(other),
                });
            }
        }
        match value.get("version") {
            Some(v) if v.as_u64() == Some(REFERENCE_VERSION) => {}
            other => {
                return Err(ReferenceError::UnsupportedVersion {
                    found: json_text(other),
                });
            }
        }
        let reference: Reference =
            serde_path_to_error::deserialize(value).map_err(|e| ReferenceError::Malformed {
                path: e.path().to_string(),
                message: e.into_inner().to_string(),
            })?;
        reference.validate()?;
        Ok(reference)
    }

    /// Reads, parses and validates a reference file.
    pub fn load(path: &Path) -> Result<Self, ReferenceError> {
        let text = std::fs::read_to_string(path).map_err(|source| ReferenceError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        Self::from_json(&text)
    }

    /// The reference as pretty JSON (the layout of the Python writer may differ; the content is
    /// the same).
    pub fn to_json_pretty(&self) -> String {
        // Serialising plain structs of strings, numbers and vectors cannot fail.
        serde_json::to_string_pretty(self).unwrap_or_default()
    }

    /// Checks that the fields agree with each other (see docs/EVAL.md, "Validation").
    pub fn validate(&self) -> Result<(), ReferenceError> {
        let bad = |reason: String| Err(ReferenceError::Inconsistent { reason });
        if !is_sha256_hex(&self.model.sha256) {
            return bad(format!(
                "model.sha256 {:?} is not 64 lowercase hex digits",
                self.model.sha256
            ));
        }
        if !is_sha256_hex(&self.tokenizer.sha256) {
            return bad(format!(
                "tokenizer.sha256 {:?} is not 64 lowercase hex digits",
                self.tokenizer.sha256
            ));
        }
        if self.prompt_tokens.is_empty() {
            return bad("the prompt is empty".into());
        }
        if self.prompt_len != self.prompt_tokens.len() {
            return bad(format!(
                "prompt_len is {} but prompt_tokens has {} tokens",
                self.prompt_len,
                self.prompt_tokens.len()
            ));
        }
        if self.generated_tokens.is_empty() {
            return bad("generated_tokens is empty".into());
        }
        if self.generated_tokens.len() > self.max_new_tokens {
            return bad(format!(
                "{} generated tokens but max_new_tokens is {}",
                self.generated_tokens.len(),
                self.max_new_tokens
            ));
        }
        let vocab = self.model.vocab_size;
        if let Some((i, t)) = self
            .prompt_tokens
            .iter()
            .chain(&self.generated_tokens)
            .enumerate()
            .find(|(_, t)| !below(**t, vocab))
        {
            return bad(format!(
                "token {t} at position {i} is outside the vocabulary of {vocab}"
            ));
        }
        if let Some(steps) = &self.hf_top5 {
            if steps.len() != self.generated_tokens.len() {
                return bad(format!(
                    "hf_top5 has {} steps but there are {} generated tokens",
                    steps.len(),
                    self.generated_tokens.len()
                ));
            }
            for (i, (step, &generated)) in steps.iter().zip(&self.generated_tokens).enumerate() {
                validate_hf_step(i, step, generated, vocab).or_else(bad)?;
            }
        }
        Ok(())
    }

    /// How many generated tokens the reference holds (the most an eval can score).
    pub fn decode_len(&self) -> usize {
        self.generated_tokens.len()
    }

    /// Prompt followed by the generated tokens.
    pub fn full_sequence(&self) -> Vec<u32> {
        let mut all = self.prompt_tokens.clone();
        all.extend_from_slice(&self.generated_tokens);
        all
    }

    /// HF's top-5 ids at generation step `step`, when the reference has them.
    pub fn hf_top5_ids(&self, step: usize) -> Option<&[u32]> {
        self.hf_top5
            .as_ref()
            .and_then(|s| s.get(step))
            .map(|s| s.ids.as_slice())
    }

    /// Refuses a model whose hash differs from the recorded one.
    pub fn check_model_fingerprint(&self, found: &str, dir: &Path) -> Result<(), ReferenceError> {
        if found == self.model.sha256 {
            return Ok(());
        }
        Err(ReferenceError::ModelMismatch {
            reference_model: self.model.id.clone(),
            expected: self.model.sha256.clone(),
            found: found.to_owned(),
            dir: dir.to_path_buf(),
        })
    }

    /// Hashes a model directory and refuses it if the reference was made for another model.
    pub fn check_model_dir(&self, dir: &Path) -> Result<(), ReferenceError> {
        let found = model_fingerprint(dir)?;
        self.check_model_fingerprint(&found, dir)
    }

    /// Hashes a tokenizer.json and refuses it if the reference was made with another tokenizer.
    pub fn check_tokenizer_file(&self, tokenizer_json: &Path) -> Result<(), ReferenceError> {
        let found = tokenizer_fingerprint(tokenizer_json)?;
        if found == self.tokenizer.sha256 {
            return Ok(());
        }
        Err(ReferenceError::TokenizerMismatch {
            expected: self.tokenizer.sha256.clone(),
            found,
            path: tokenizer_json.to_path_buf(),
        })
    }

    /// Refuses a prompt (e.g. from `--prompt-file`) that is not the reference's prompt.
    pub fn check_prompt(&self, tokens: &[u32]) -> Result<(), ReferenceError> {
        let n = self.prompt_tokens.len().max(tokens.len());
        for index in 0..n {
            let expected = self.prompt_tokens.get(index).copied();
            let found = tokens.get(index).copied();
            if expected != found {
                return Err(ReferenceError::PromptMismatch {
                    index,
                    expected,
                    found,
                });
            }
        }
        Ok(())
    }
}

fn validate_hf_step(i: usize, step: &HfStep, generated: u32, vocab: usize) -> Result<(), String> {
    let k = step.ids.len();
    if k != TOP_K.min(vocab) {
        return Err(format!(
            "hf_top5[{i}] has {k} ids, expected {}",
            TOP_K.min(vocab)
        ));
    }
    if !step.logits.is_empty() && step.logits.len() != k {
        return Err(format!(
            "hf_top5[{i}] has {} logits for {k} ids",
            step.logits.len()
        ));
    }
    if !step.probs.is_empty() && step.probs.len() != k {
        return Err(format!(
            "hf_top5[{i}] has {} probs for {k} ids",
            step.probs.len()
        ));
    }
    // A number beyond f32's range parses as infinity (and would be written back as null).
    if let Some(v) = step.logits.iter().find(|v| !v.is_finite()) {
        return Err(format!(
            "hf_top5[{i}] has logit {v}, which is not a finite f32"
        ));
    }
    if let Some(v) = step.probs.iter().find(|v| !(**v >= 0.0 && **v <= 1.0)) {
        return Err(format!("hf_top5[{i}] has probability {v}, outside [0, 1]"));
    }
    if let Some(&t) = step.ids.iter().find(|&&t| !below(t, vocab)) {
        return Err(format!(
            "hf_top5[{i}] has id {t} outside the vocabulary of {vocab}"
        ));
    }
    for (a, id) in step.ids.iter().enumerate() {
        if step.ids[..a].contains(id) {
            return Err(format!("hf_top5[{i}] repeats id {id}"));
        }
    }
    if step.logits.windows(2).any(|w| w[0] < w[1]) {
        return Err(format!("hf_top5[{i}] logits are not in decreasing order"));
    }
    if step.ids.first() != Some(&generated) {
        return Err(format!(
            "hf_top5[{i}] ranks {:?} first but the generated token is {generated} (greedy picks the first)",
            step.ids.first()
        ));
    }
    Ok(())
}

fn below(token: u32, vocab: usize) -> bool {
    usize::try_from(token).is_ok_and(|t| t < vocab)
}

fn json_text(v: Option<&serde_json::Value>) -> String {
    v.map_or_else(|| "null".to_owned(), serde_json::Value::to_string)
}
