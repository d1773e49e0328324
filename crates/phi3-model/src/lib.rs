//! phi3-model: Phi-3 as a family of the generic decoder (`tt-decoder`).
//!
//! Only what is Phi-3 lives here; the decoder, the checkpoint reader, the tokenizer, generation
//! and the CLI are shared crates, re-exported under their old names so existing code keeps
//! working.
//!
//! Table of contents:
//! - [`config`]: `Phi3Config` from `config.json` (both rope spellings, LongRoPE, validation), and
//!   its view as a [`tt_decoder::DecoderConfig`] (fused projections, the LongRoPE spec).
//! - [`family`]: [`Phi3Family`], the [`tt_decoder::Family`] binaries register.
//! - [`bundled`]: where the bundled default model and tokenizer live.
//! - [`checkpoint`]: `tt_hf`'s checkpoint reader with Phi-3's tensor list.
//! - the `phi3` binary (`src/bin/phi3.rs`): `tt_decoder::cli` for the Phi-3 family.

pub mod bundled;
pub mod config;
pub mod family;

/// The checkpoint reader (`tt_hf::checkpoint`) and the tensors a Phi-3 checkpoint holds.
pub mod checkpoint {
    pub use tt_decoder::names::{LayerTensor, TensorName};
    pub use tt_hf::checkpoint::*;

    use crate::config::Phi3Config;
    use tt_decoder::FamilyConfig;

    /// Every tensor a Phi-3 model with this config needs, with its shape, in checkpoint order.
    pub fn expected_tensors(config: &Phi3Config) -> Vec<(String, Vec<usize>)> {
        tt_decoder::expected_tensors(&config.decoder_config())
    }

    /// A Phi-3 checkpoint.
    pub type Checkpoint = tt_hf::Checkpoint<Phi3Config>;

    /// Phi-3's check of a checkpoint's tensors.
    pub trait Phi3Tensors {
        /// Checks that every tensor a Phi-3 model of this config needs is present with its
        /// shape.
        fn check_phi3_tensors(&self) -> Result<(), tt_hf::CheckpointError>;
    }

    impl Phi3Tensors for Checkpoint {
        fn check_phi3_tensors(&self) -> Result<(), tt_hf::CheckpointError> {
            self.check_tensors(&expected_tensors(self.config()))
        }
    }
}

/// Typed errors (the decoder's and the checkpoint reader's).
pub mod error {
    pub use tt_decoder::error::*;
}

/// The tokenizer (`tt_hf::tokenizer`).
pub mod tokenizer {
    pub use tt_hf::tokenizer::*;
}

/// Sharding: the planner's view of a Phi-3 config.
pub mod sharding {
    pub use tt_decoder::sharding::{RuntimeOptions, WEIGHT_DTYPE_BYTES};

    use tt_decoder::FamilyConfig;

    use crate::config::Phi3Config;

    /// Phi-3's sizes as the planner describes a decoder (fused `[Q|K|V]` and `[gate|up]` rows).
    pub fn decoder_dims(config: &Phi3Config) -> tt_shard::DecoderDims {
        tt_decoder::decoder_dims(&config.decoder_config())
    }

    /// The tensor-parallel plan of `config` under `options`.
    pub fn plan(
        config: &Phi3Config,
        options: &RuntimeOptions,
    ) -> tt_decoder::Result<tt_shard::Plan> {
        tt_decoder::plan(&config.decoder_config(), options)
    }
}

pub use checkpoint::{Checkpoint, Phi3Tensors};
pub use config::{LongRopeConfig, Phi3Config, RopeConfig};
pub use family::{PHI3, Phi3Family};
pub use sharding::{RuntimeOptions, decoder_dims, plan};
pub use tt_decoder::{
    Error, GenerateOptions, GenerateTimings, Generated, KvCache, Logits, Result, Sampler, Sampling,
    SamplingError, SamplingParams, generate,
};
pub use tt_hf::{
    ChatMessage, CheckpointError, ConfigError, Dtype, Element, GenerationConfig, HubEnv,
    LoadProgress, PagePolicy, Residency, Role, StreamDecoder, TensorInfo, TokenizerError,
};
pub use tt_ops::{CosSin, RopeTables, RopeVariant};

/// A Phi-3 model on a mesh: the generic decoder model.
pub type Phi3Model = tt_decoder::Model;
/// The Phi-3 tokenizer: a checkpoint's tokenizer with its chat template.
pub type Phi3Tokenizer = tt_hf::Tokenizer;
