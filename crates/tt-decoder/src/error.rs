//! Typed errors of the decoder, gathered in [`Error`] with those of the checkpoint crate.
//!
//! Every message says what is wrong and, where it helps, what to do about it: these strings are
//! what a user of `tt-lm` or `phi3` reads ([`one_paragraph`] prints them).

pub use tt_hf::{CheckpointError, ConfigError, TokenizerError, one_paragraph};

/// Any error of this crate.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// `config.json` or `generation_config.json` is unusable.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// A checkpoint cannot be found, opened or read.
    #[error(transparent)]
    Checkpoint(#[from] CheckpointError),
    /// The tokenizer cannot be loaded or used.
    #[error(transparent)]
    Tokenizer(#[from] TokenizerError),
    /// Sampling settings or logits are unusable.
    #[error(transparent)]
    Sampling(#[from] SamplingError),
    /// The sharding planner refused the model on this mesh.
    #[error("sharding plan: {0}")]
    Plan(#[from] tt_shard::PlanError),
    /// A device op refused its inputs.
    #[error("device op: {0}")]
    Op(#[from] tt_ops::OpError),
    /// The mesh refused an allocation or a collective.
    #[error("mesh: {0}")]
    Mesh(#[from] tt_mesh::MeshError),
    /// A token id is not a row of the embedding table.
    #[error(
        "token {token} at index {index} is out of range: the model's vocab_size is {vocab_size}; check that the tokenizer belongs to this model"
    )]
    TokenOutOfRange {
        /// Index in the given sequence.
        index: usize,
        /// The id.
        token: u32,
        /// Rows of the embedding.
        vocab_size: usize,
    },
    /// Nothing to run.
    #[error("the prompt is empty: give at least one token")]
    EmptyPrompt,
    /// A sequence does not fit the KV cache.
    #[error(
        "the sequence needs {needed} positions but the KV cache holds {capacity}; raise --max-seq-len (memory permitting) or shorten the prompt"
    )]
    SequenceTooLong {
        /// Positions needed.
        needed: usize,
        /// Positions the cache holds.
        capacity: usize,
    },
    /// A cache row that does not exist.
    #[error("user {user} is outside the KV cache's batch of {batch}")]
    UserOutOfRange {
        /// Requested row.
        user: usize,
        /// Rows in the cache.
        batch: usize,
    },
    /// A decode call's batch does not match the cache.
    #[error(
        "{given} sequences were given but the KV cache was made for a batch of {batch}; raise the batch size"
    )]
    BatchMismatch {
        /// Sequences given.
        given: usize,
        /// Cache rows.
        batch: usize,
    },
    /// NaN or infinity appeared.
    #[error(
        "non-finite value {value} in {what} (element {index}); the checkpoint or the input is corrupt"
    )]
    NonFinite {
        /// Where it was found (names the layer).
        what: String,
        /// Flat index of the first bad element.
        index: usize,
        /// The value.
        value: f32,
    },
    /// The model needs something the decoder does not implement.
    #[error("{0}")]
    Unsupported(String),
    /// The MPI ranks of the run could not be set up.
    #[error("MPI: {0}")]
    Mpi(String),
    /// A precision preset the decoder cannot run.
    #[error("precision: {0}")]
    Precision(String),
    /// An invariant of this crate broke (a bug: please report it).
    #[error("internal error: {0}")]
    Internal(String),
}

/// Result with the crate's [`Error`] by default.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Problems with sampling settings or logits.
#[derive(Debug, thiserror::Error)]
pub enum SamplingError {
    /// Temperature is not a positive finite number.
    #[error("temperature must be a positive finite number, got {0}")]
    BadTemperature(f32),
    /// top_p outside (0, 1].
    #[error("top_p must be in (0, 1], got {0}")]
    BadTopP(f32),
    /// top_k of zero.
    #[error("top_k must be at least 1")]
    BadTopK,
    /// No logits were given.
    #[error("cannot sample from an empty logits vector")]
    EmptyLogits,
    /// A NaN in the logits.
    #[error("logits contain NaN at token {index}; the model produced invalid numbers")]
    NanLogit {
        /// First NaN position.
        index: usize,
    },
    /// Every token is suppressed or has -inf logit.
    #[error("every token is suppressed or has probability zero; nothing to sample")]
    NoCandidates,
}
