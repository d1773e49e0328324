//! Where the bundled default model and tokenizer live in this repository.
//!
//! `phi3` and `cargo xtask eval` use the bundled model when no `--model` is given: a tiny Phi-3
//! with the real Phi-3 tokenizer and vocab, committed under `fixtures/phi3-tiny-en`.

use std::path::PathBuf;

/// The repository's `fixtures/` directory (resolved at build time).
pub fn fixtures_dir() -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../../fixtures"))
}

/// The bundled default model (`fixtures/phi3-tiny-en`).
pub fn bundled_model_dir() -> PathBuf {
    fixtures_dir().join("phi3-tiny-en")
}

/// The bundled Phi-3 tokenizer (`fixtures/phi3-tokenizer`), used for checkpoints without one.
pub fn bundled_tokenizer_dir() -> PathBuf {
    fixtures_dir().join("phi3-tokenizer")
}
