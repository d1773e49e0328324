//! Tests of the loading pieces of phi3-model: config, generation config, rope, checkpoint,
//! hub resolution, tokenizer and sampling. One test binary (one link) with a module per piece.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod checkpoint;
mod config;
mod fixtures;
mod generation;
mod hub;
mod robust;
mod rope;
mod sampling;
mod support;
mod tokenizer;
