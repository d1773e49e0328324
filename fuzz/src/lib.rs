//! phi3-fuzz: fuzz targets for the parsers that read user files, run by a coverage-guided engine
//! (libFuzzer through cargo-fuzz; see fuzz/README.md) and replayed by `cargo test`.
//!
//! - [`targets`]: the four targets (`config`, `safetensors-header`, `index`, `reference`) and
//!   the promises an accepted input must keep.
//! - [`inputs`]: the committed seed corpus (`fuzz/corpus/<target>/`), the saved crash inputs
//!   (`fuzz/regressions/<target>/`) and libFuzzer's artifacts (`fuzz/artifacts/<target>/`).
//! - [`fuzz_one`]: the entry the libFuzzer binaries (`fuzz_targets/`, behind the `libfuzzer`
//!   feature) call for each input.
//!
//! The engine does the rest: mutation, coverage feedback, corpus growth, crash saving and
//! minimising, timeouts (`-timeout`) and memory limits (`-rss_limit_mb`).

pub mod inputs;
pub mod targets;

use std::cell::RefCell;

pub use targets::{Context, Finding, Outcome, Target, Verdict};

thread_local! {
    /// Scratch directory of the targets that write files, kept across executions.
    static CONTEXT: RefCell<Context> = RefCell::new(Context::new());
}

/// Runs `target` on one input for the engine: a broken promise or a harness failure becomes a
/// panic, which libFuzzer records as a crash (a panic inside a parser already is one).
#[allow(clippy::panic)] // Panicking is how a fuzz target reports a crash to libFuzzer.
pub fn fuzz_one(target: Target, input: &[u8]) {
    let outcome = CONTEXT.with(|ctx| target.run(input, &mut ctx.borrow_mut()));
    match outcome {
        Ok(_) => {}
        Err(Finding::Violation(message)) => {
            panic!("{}: broken promise: {message}", target.name())
        }
        Err(Finding::Harness(message)) => panic!("{}: harness failure: {message}", target.name()),
    }
}
