//! phi3-model: Phi-3 from a HuggingFace checkpoint, ready for a tensor-parallel mesh.
//!
//! Table of contents:
//! - [`config`]: `Phi3Config` from `config.json` (both rope spellings, validation).
//! - [`generation_config`]: stop tokens and sampling defaults from `generation_config.json`.
//! - [`rope`]: plain RoPE and LongRoPE tables exactly as HF computes them.
//! - [`checkpoint`]: find (offline), memory-map (on 2 MiB pages) and validate safetensors; read
//!   tensor blocks.
//! - [`tokenizer`]: encode/decode, the Phi-3 chat template, streaming decode.
//! - [`sampling`]: greedy and seeded top-k/top-p sampling.
//! - [`bundled`]: where the bundled default model and tokenizer live.
//! - [`sharding`]: the config as the planner's numbers; runtime options (mesh, fidelity, cache).
//! - [`weights`]: the checkpoint split into each device's shards.
//! - [`kv_cache`]: the KV cache, split by KV heads, per layer and device.
//! - [`decoder`] (private): one decoder layer on the mesh, attention cores of prefill and decode.
//! - [`model`]: [`Phi3Model`]: load, prefill, decode.
//! - [`generate`]: HF-style generation (with the LongRoPE cache recompute), batches, streaming.
//! - [`error`]: the typed errors of all of the above.

pub mod bundled;
pub mod checkpoint;
pub mod config;
mod decoder;
pub mod error;
pub mod generate;
pub mod generation_config;
pub mod kv_cache;
pub mod model;
pub mod rope;
pub mod sampling;
pub mod sharding;
pub mod tokenizer;
pub mod weights;

pub use checkpoint::{
    Checkpoint, Dtype, Element, HubEnv, LoadProgress, PagePolicy, Residency, TensorInfo,
};
pub use config::{LongRopeConfig, Phi3Config, RopeConfig};
pub use error::{CheckpointError, ConfigError, Error, Result, SamplingError, TokenizerError};
pub use generate::{GenerateOptions, GenerateTimings, Generated, generate};
pub use generation_config::GenerationConfig;
pub use kv_cache::KvCache;
pub use model::{Logits, Phi3Model};
pub use rope::{CosSin, RopeTables, RopeVariant};
pub use sampling::{Sampler, Sampling, SamplingParams};
pub use sharding::{RuntimeOptions, decoder_dims, plan};
pub use tokenizer::{ChatMessage, Phi3Tokenizer, Role, StreamDecoder, chat_prompt};
