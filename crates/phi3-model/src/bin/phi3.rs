//! `phi3`: run a Phi-3 checkpoint on a simulated device mesh (`tt_decoder::cli` for the Phi-3
//! family; `tt-lm` runs every family).
//!
//! Under the `host` profile each simulated device's budget is this machine's physical memory
//! split over the devices, so a KV cache (or model) that cannot fit in memory is refused with
//! the bytes needed and available before anything is allocated.

use std::process::ExitCode;

use phi3_model::{PHI3, bundled};
use tt_decoder::cli::{Binary, main as run};

fn main() -> ExitCode {
    run(&Binary {
        name: "phi3",
        about: "Phi-3 on a simulated tensor-parallel device mesh",
        families: vec![&PHI3],
        default_model: bundled::bundled_model_dir(),
        default_tokenizer_dir: bundled::bundled_tokenizer_dir(),
    })
}
