//! A checkpoint's tokenizer (`tokenizer.json` through the `tokenizers` library), its chat
//! template ([`crate::chat`]) and streaming decode.
//!
//! Encoding follows HF's `tokenizer(text)`: the tokenizer's own post-processor decides whether a
//! BOS is added (Llama 3 adds one, Phi-3 and SmolLM2 do not); special tokens written in the text
//! are recognised. A chat is rendered by the checkpoint's template and encoded without adding
//! special tokens, as `apply_chat_template` does.

use std::path::{Path, PathBuf};

use crate::error::TokenizerError;

use serde::Deserialize;

use crate::chat::{ChatMessage, ChatTemplate};

/// A loaded tokenizer, with its chat template when the checkpoint has one.
#[derive(Clone)]
pub struct Tokenizer {
    inner: tokenizers::Tokenizer,
    path: PathBuf,
    max_id: u32,
    chat: Option<ChatTemplate>,
}

impl std::fmt::Debug for Tokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tokenizer")
            .field("path", &self.path)
            .field("max_id", &self.max_id)
            .finish_non_exhaustive()
    }
}

fn lib_err(e: tokenizers::Error) -> TokenizerError {
    TokenizerError::Library(e.to_string())
}

/// The keys of `tokenizer_config.json` this crate reads.
#[derive(Debug, Default, Deserialize)]
struct TokenizerConfig {
    chat_template: Option<TemplateField>,
    bos_token: Option<SpecialToken>,
    eos_token: Option<SpecialToken>,
}

/// `chat_template`: one template, or named ones (HF uses `default`).
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum TemplateField {
    One(String),
    Named(Vec<NamedTemplate>),
}

#[derive(Debug, Deserialize)]
struct NamedTemplate {
    name: String,
    template: String,
}

/// A special token: its text, or an `AddedToken` object with `content`.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum SpecialToken {
    Text(String),
    Added { content: String },
}

impl SpecialToken {
    fn text(self) -> String {
        match self {
            SpecialToken::Text(t) | SpecialToken::Added { content: t } => t,
        }
    }
}

/// tokenizer_config.json file name.
pub const TOKENIZER_CONFIG_FILE: &str = "tokenizer_config.json";
/// Stand-alone chat template file name (newer HF checkpoints).
pub const CHAT_TEMPLATE_FILE: &str = "chat_template.jinja";

/// The chat template of a checkpoint directory, if it has one.
fn chat_template(dir: &Path) -> Result<Option<ChatTemplate>, TokenizerError> {
    let config_path = dir.join(TOKENIZER_CONFIG_FILE);
    let config: TokenizerConfig = if config_path.is_file() {
        let text = std::fs::read_to_string(&config_path).map_err(|e| TokenizerError::Load {
            path: config_path.clone(),
            message: e.to_string(),
        })?;
        serde_json::from_str(&text).map_err(|e| TokenizerError::Load {
            path: config_path.clone(),
            message: e.to_string(),
        })?
    } else {
        TokenizerConfig::default()
    };
    let jinja = dir.join(CHAT_TEMPLATE_FILE);
    let source = if jinja.is_file() {
        Some(
            std::fs::read_to_string(&jinja).map_err(|e| TokenizerError::Load {
                path: jinja.clone(),
                message: e.to_string(),
            })?,
        )
    } else {
        match config.chat_template {
            Some(TemplateField::One(t)) => Some(t),
            Some(TemplateField::Named(list)) => list
                .into_iter()
                .find(|t| t.name == "default")
                .map(|t| t.template),
            None => None,
        }
    };
    let text = |t: Option<SpecialToken>| t.map(SpecialToken::text).unwrap_or_default();
    Ok(source.map(|s| ChatTemplate::new(s, dir, text(config.bos_token), text(config.eos_token))))
}

impl Tokenizer {
    /// Loads a `tokenizer.json` (without a chat template).
    pub fn from_file(path: &Path) -> Result<Self, TokenizerError> {
        let inner = tokenizers::Tokenizer::from_file(path).map_err(|e| TokenizerError::Load {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?;
        let max_id = inner
            .get_vocab(true)
            .values()
            .copied()
            .max()
            .ok_or_else(|| TokenizerError::Load {
                path: path.to_path_buf(),
                message: "the vocabulary is empty".to_string(),
            })?;
        Ok(Self {
            inner,
            path: path.to_path_buf(),
            max_id,
            chat: None,
        })
    }

    /// Loads `tokenizer.json` from a directory (a checkpoint or `fixtures/phi3-tokenizer`), with
    /// the chat template of its `tokenizer_config.json` or `chat_template.jinja`.
    pub fn from_dir(dir: &Path) -> Result<Self, TokenizerError> {
        let mut tok = Self::from_file(&dir.join("tokenizer.json"))?;
        tok.chat = chat_template(dir)?;
        Ok(tok)
    }

    /// The chat template, if the checkpoint has one.
    pub fn chat_template(&self) -> Option<&ChatTemplate> {
        self.chat.as_ref()
    }

    /// File the tokenizer came from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Largest token id the tokenizer can produce (added tokens included).
    pub fn max_token_id(&self) -> u32 {
        self.max_id
    }

    /// Errors unless every id the tokenizer can produce is below the model's `vocab_size`.
    pub fn check_fits(&self, vocab_size: usize) -> Result<(), TokenizerError> {
        if (self.max_id as usize) < vocab_size {
            Ok(())
        } else {
            Err(TokenizerError::VocabTooLarge {
                max_id: self.max_id,
                vocab_size,
            })
        }
    }

    /// Encodes text as HF's `tokenizer(text)` does: the post-processor adds BOS where the
    /// tokenizer says so; special tokens in the text are recognised.
    pub fn encode(&self, text: &str) -> Result<Vec<u32>, TokenizerError> {
        let enc = self.inner.encode(text, true).map_err(lib_err)?;
        Ok(enc.get_ids().to_vec())
    }

    /// Encodes text adding no special tokens at all.
    pub fn encode_plain(&self, text: &str) -> Result<Vec<u32>, TokenizerError> {
        let enc = self.inner.encode(text, false).map_err(lib_err)?;
        Ok(enc.get_ids().to_vec())
    }

    /// Decodes ids to text.
    pub fn decode(&self, ids: &[u32], skip_special_tokens: bool) -> Result<String, TokenizerError> {
        self.inner.decode(ids, skip_special_tokens).map_err(lib_err)
    }

    /// Id of a token string.
    pub fn token_to_id(&self, token: &str) -> Option<u32> {
        self.inner.token_to_id(token)
    }

    /// Token string of an id.
    pub fn id_to_token(&self, id: u32) -> Option<String> {
        self.inner.id_to_token(id)
    }

    /// Renders the chat template and encodes the text without adding special tokens, as HF's
    /// `apply_chat_template(..., tokenize=True)` does.
    pub fn encode_chat(
        &self,
        messages: &[ChatMessage],
        add_generation_prompt: bool,
    ) -> Result<Vec<u32>, TokenizerError> {
        let template = self
            .chat
            .as_ref()
            .ok_or_else(|| TokenizerError::NoChatTemplate {
                dir: self
                    .path
                    .parent()
                    .map(Path::to_path_buf)
                    .unwrap_or_default(),
            })?;
        self.encode_plain(&template.render(messages, add_generation_prompt)?)
    }
}

/// Reads a prompt file as text: a typed error when it cannot be read or is not UTF-8 (naming
/// the offset of the first bad byte). The text is returned as it is in the file.
pub fn read_prompt_file(path: &Path) -> Result<String, TokenizerError> {
    let bytes = std::fs::read(path).map_err(|source| TokenizerError::PromptIo {
        path: path.to_path_buf(),
        source,
    })?;
    String::from_utf8(bytes).map_err(|e| TokenizerError::PromptNotUtf8 {
        path: path.to_path_buf(),
        offset: e.utf8_error().valid_up_to(),
    })
}

/// Turns a stream of generated ids into text deltas. Byte-fallback pieces that do not yet
/// form a whole UTF-8 character are held back until they do, and the concatenated deltas (plus
/// [`StreamDecoder::flush`]) equal decoding all ids at once.
#[derive(Debug, Clone, Default)]
pub struct StreamDecoder {
    ids: Vec<u32>,
    prefix: usize,
    read: usize,
    skip_special_tokens: bool,
}

impl StreamDecoder {
    /// A decoder for a new stream.
    pub fn new(skip_special_tokens: bool) -> Self {
        Self {
            skip_special_tokens,
            ..Self::default()
        }
    }

    /// Ids pushed so far.
    pub fn ids(&self) -> &[u32] {
        &self.ids
    }

    /// Adds one id; returns the new text, if a complete piece is available.
    pub fn push(
        &mut self,
        tokenizer: &Tokenizer,
        id: u32,
    ) -> Result<Option<String>, TokenizerError> {
        self.ids.push(id);
        let skip = self.skip_special_tokens;
        let before = tokenizer.decode(&self.ids[self.prefix..self.read], skip)?;
        let now = tokenizer.decode(&self.ids[self.prefix..], skip)?;
        if now.len() <= before.len() || now.ends_with('\u{FFFD}') {
            return Ok(None);
        }
        let delta = match now.strip_prefix(before.as_str()) {
            Some(d) => d.to_string(),
            // The decoder rewrote earlier text; resynchronise on the whole window.
            None => now.get(before.len()..).map(str::to_string).unwrap_or(now),
        };
        self.prefix = self.read;
        self.read = self.ids.len();
        Ok(Some(delta))
    }

    /// Text still held back (e.g. an incomplete byte sequence at the end, shown as U+FFFD).
    pub fn flush(&mut self, tokenizer: &Tokenizer) -> Result<Option<String>, TokenizerError> {
        if self.read == self.ids.len() {
            return Ok(None);
        }
        let skip = self.skip_special_tokens;
        let before = tokenizer.decode(&self.ids[self.prefix..self.read], skip)?;
        let now = tokenizer.decode(&self.ids[self.prefix..], skip)?;
        self.prefix = self.read;
        self.read = self.ids.len();
        let delta = match now.strip_prefix(before.as_str()) {
            Some(d) => d.to_string(),
            None => now.get(before.len()..).map(str::to_string).unwrap_or(now),
        };
        Ok(Some(delta).filter(|d| !d.is_empty()))
    }
}
