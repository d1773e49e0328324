//! `tt-lm`: run a checkpoint of any supported family (Phi-3, Llama) on a simulated device mesh.
//!
//! `tt-lm generate | logits | plan --model DIR ...`; the family comes from config.json's
//! `model_type`, and an unknown one is refused with the list of supported ones.

use std::process::ExitCode;

use phi3_model::bundled;
use tt_decoder::cli::{Binary, main as run};

fn main() -> ExitCode {
    run(&Binary {
        name: "tt-lm",
        about: "Decoder LLMs (phi3, llama) on a simulated tensor-parallel device mesh",
        families: tt_lm::families(),
        default_model: bundled::bundled_model_dir(),
        default_tokenizer_dir: bundled::bundled_tokenizer_dir(),
    })
}
