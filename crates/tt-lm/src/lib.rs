//! tt-lm: the families one binary runs, and where its default model lives.
//!
//! The `tt-lm` binary (`src/bin/tt-lm.rs`) is `tt_decoder::cli` over [`FAMILIES`]: the family
//! of a checkpoint is the one its config.json's `model_type` names.

use tt_decoder::Family;

/// Every family `tt-lm` runs.
pub fn families() -> Vec<&'static dyn Family> {
    vec![&phi3_model::PHI3, &llama_model::LLAMA]
}

/// The families' names, for help texts.
pub const FAMILIES: &str = "phi3, llama";
