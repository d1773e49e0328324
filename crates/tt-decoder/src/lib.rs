//! tt-decoder: one tensor-parallel decoder for many model families.
//!
//! A model family ([`Family`]) says how its `config.json` reads and what its tensors are called;
//! everything else is here, once: the planner's view of a config, the loader that gives each
//! device its shards, the decoder layer built from `tt-mesh`'s parallel layers, the model loop,
//! the mesh-wide KV cache, generation and sampling, and the command-line plumbing of a model
//! binary.
//!
//! Table of contents:
//! - [`family`]: the family seam ([`Family`], [`FamilyConfig`]) and opening a checkpoint with the
//!   family its `model_type` names.
//! - [`config`]: [`DecoderConfig`], what the decoder knows of a model.
//! - [`names`]: the tensors of a decoder checkpoint, their HF names and shapes.
//! - [`sharding`]: the config as the planner's numbers; runtime options (mesh, precision, cache).
//! - [`precision`]: a `tt-numerics` precision preset resolved for the decoder ([`Numerics`]).
//! - [`weights`]: the checkpoint split into each device's shards (parallel layers).
//! - `padded_heads` (private): the attention weights of a plan with padded heads.
//! - [`packed_cache`]: the packed-weight cache: packed presets map each device's packed weights
//!   from disk instead of packing them at every load.
//! - `local_read` (private): on a rank of a multi-process mesh, reading only its devices' rows
//!   and columns.
//! - [`kv_cache`]: the KV cache, split by KV heads, per layer and device.
//! - `decoder` (private): one decoder layer on the mesh; the attention cores of prefill and
//!   decode.
//! - [`model`]: [`Model`]: load, prefill, decode.
//! - [`generate`]: HF-style generation (with the LongRoPE cache recompute), batches, streaming.
//! - [`sampling`]: greedy and seeded top-k/top-p sampling.
//! - [`ranks`]: this process alone, or the MPI ranks of an `mpirun` launch ([`Ranks`]).
//! - [`cli`]: the `generate` / `logits` / `plan` commands of a model binary.
//! - [`freed_memory`]: a binary's allocator keeps freed buffers for reuse (fewer page faults).
//! - [`error`]: typed errors.

pub mod cli;
pub mod config;
mod decoder;
pub mod error;
pub mod family;
pub mod freed_memory;
pub mod generate;
pub mod kv_cache;
mod local_read;
pub mod model;
pub mod names;
pub mod packed_cache;
mod padded_heads;
pub mod precision;
pub mod ranks;
pub mod sampling;
pub mod sharding;
pub mod weights;

pub use config::DecoderConfig;
pub use error::{Error, Result, SamplingError};
pub use family::{Family, FamilyConfig, family_for, open_checkpoint, open_checkpoint_dir};
pub use generate::{GenerateOptions, GenerateTimings, Generated, generate};
pub use kv_cache::KvCache;
pub use model::{Logits, Model};
pub use names::{LayerTensor, TensorName, expected_tensors};
pub use packed_cache::{PackedCache, cache_files, cache_ready};
pub use precision::{Numerics, parse_preset, preset_of_fidelity};
pub use ranks::Ranks;
pub use sampling::{Sampler, Sampling, SamplingParams};
pub use sharding::{RuntimeOptions, decoder_dims, plan};
pub use tt_numerics::{OpClass, Preset, PresetName};
