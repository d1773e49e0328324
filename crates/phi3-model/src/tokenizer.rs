//! The Phi-3 tokenizer (a `tokenizers` `tokenizer.json`), its chat template, and streaming
//! decode.
//!
//! Encoding never adds BOS (Phi-3's tokenizer has `add_bos_token = false`); special tokens
//! written in the text (`<|user|>`, ...) are recognised. The chat template is Phi-3's:
//! `<|user|>\n{text}<|end|>\n` per user turn (likewise `<|system|>`, `<|assistant|>`), then
//! `<|assistant|>\n` to prompt a reply.

use std::path::{Path, PathBuf};

use crate::error::TokenizerError;

/// End-of-text token (also closes a template without a generation prompt).
pub const ENDOFTEXT: &str = "<|endoftext|>";
/// Ends a chat turn.
pub const END: &str = "<|end|>";

/// A loaded tokenizer.
#[derive(Clone)]
pub struct Phi3Tokenizer {
    inner: tokenizers::Tokenizer,
    path: PathBuf,
    max_id: u32,
}

impl std::fmt::Debug for Phi3Tokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Phi3Tokenizer")
            .field("path", &self.path)
            .field("max_id", &self.max_id)
            .finish_non_exhaustive()
    }
}

/// Who speaks a chat message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// `<|system|>`.
    System,
    /// `<|user|>`.
    User,
    /// `<|assistant|>`.
    Assistant,
}

impl Role {
    /// The special token opening a turn of this role.
    pub fn tag(self) -> &'static str {
        match self {
            Role::System => "<|system|>",
            Role::User => "<|user|>",
            Role::Assistant => "<|assistant|>",
        }
    }
}

/// One chat turn.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChatMessage {
    /// Speaker.
    pub role: Role,
    /// Text of the turn.
    pub content: String,
}

impl ChatMessage {
    /// A user turn.
    pub fn user(content: impl Into<String>) -> Self {
        Self {
            role: Role::User,
            content: content.into(),
        }
    }

    /// A system turn.
    pub fn system(content: impl Into<String>) -> Self {
        Self {
            role: Role::System,
            content: content.into(),
        }
    }

    /// An assistant turn.
    pub fn assistant(content: impl Into<String>) -> Self {
        Self {
            role: Role::Assistant,
            content: content.into(),
        }
    }
}

/// Renders Phi-3's chat template: each turn `{tag}\n{content}<|end|>\n`, then
/// `<|assistant|>\n` if `add_generation_prompt`, else `<|endoftext|>`.
pub fn chat_prompt(messages: &[ChatMessage], add_generation_prompt: bool) -> String {
    let mut out = String::new();
    for m in messages {
        out.push_str(m.role.tag());
        out.push('\n');
        out.push_str(&m.content);
        out.push_str(END);
        out.push('\n');
    }
    if add_generation_prompt {
        out.push_str(Role::Assistant.tag());
        out.push('\n');
    } else {
        out.push_str(ENDOFTEXT);
    }
    out
}

fn lib_err(e: tokenizers::Error) -> TokenizerError {
    TokenizerError::Library(e.to_string())
}

impl Phi3Tokenizer {
    /// Loads a `tokenizer.json`.
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
        })
    }

    /// Loads `tokenizer.json` from a directory (a checkpoint or `fixtures/phi3-tokenizer`).
    pub fn from_dir(dir: &Path) -> Result<Self, TokenizerError> {
        Self::from_file(&dir.join("tokenizer.json"))
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

    /// Encodes text without adding BOS; special tokens in the text are recognised.
    pub fn encode(&self, text: &str) -> Result<Vec<u32>, TokenizerError> {
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

    /// Renders the chat template and encodes it. Errors if the tokenizer lacks a tag.
    pub fn encode_chat(
        &self,
        messages: &[ChatMessage],
        add_generation_prompt: bool,
    ) -> Result<Vec<u32>, TokenizerError> {
        let mut needed: Vec<&'static str> = messages.iter().map(|m| m.role.tag()).collect();
        needed.push(END);
        needed.push(if add_generation_prompt {
            Role::Assistant.tag()
        } else {
            ENDOFTEXT
        });
        if let Some(token) = needed.into_iter().find(|t| self.token_to_id(t).is_none()) {
            return Err(TokenizerError::MissingSpecialToken { token });
        }
        self.encode(&chat_prompt(messages, add_generation_prompt))
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
        tokenizer: &Phi3Tokenizer,
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
    pub fn flush(&mut self, tokenizer: &Phi3Tokenizer) -> Result<Option<String>, TokenizerError> {
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
