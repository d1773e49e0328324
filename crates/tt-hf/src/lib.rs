//! tt-hf: HuggingFace checkpoints for any model family.
//!
//! Nothing here knows a model family: a family parses its own `config.json` through
//! [`HfConfig`], and this crate finds, maps and reads everything else.
//!
//! Table of contents:
//! - [`checkpoint`]: find a checkpoint (a directory, or an HF id in the offline cache), memory-map
//!   its safetensors files (on 2 MiB pages), validate them, read tensor blocks or hand out BF16
//!   tensors in place.
//! - [`json`]: parsing HF JSON files with the failing key named; the checks of config keys.
//! - [`generation_config`]: stop tokens and sampling defaults from `generation_config.json`.
//! - [`tokenizer`]: `tokenizer.json`, encode/decode, streaming decode.
//! - [`chat`]: the checkpoint's own Jinja chat template, rendered as HF renders it.
//! - [`error`]: typed errors of all of the above, and [`one_paragraph`] to print them.

pub mod chat;
pub mod checkpoint;
pub mod error;
pub mod generation_config;
pub mod json;
#[doc(hidden)]
pub mod testutil;
pub mod tokenizer;

pub use chat::{ChatMessage, ChatTemplate, Role};
pub use checkpoint::{
    Checkpoint, Dtype, Element, HfConfig, HubEnv, LoadProgress, ModelConfig, PagePolicy, Residency,
    TensorInfo,
};
pub use error::{CheckpointError, ConfigError, TokenizerError, one_paragraph};
pub use generation_config::GenerationConfig;
pub use tokenizer::{StreamDecoder, Tokenizer, read_prompt_file};
