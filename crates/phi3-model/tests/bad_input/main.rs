//! Bad input to the model and to the `phi3` binary (docs/ROBUSTNESS.md): typed errors that
//! name the problem, and a non-zero exit with a one-paragraph message (no backtrace) from the
//! binary.
//!
//! - [`model`]: the library's errors (kind and message).
//! - [`cli`]: every row of docs/ROBUSTNESS.md through `phi3`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod cli;
mod model;
mod support;
