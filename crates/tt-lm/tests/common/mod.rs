//! Shared helpers of the model tests: loading a checkpoint as `tt-lm` does; fixture paths, HF
//! reference files and PCC are tt-hf's test helpers (shared with phi3-model's tests).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    dead_code,
    unused_imports
)]

use std::path::Path;

use tt_decoder::{Model, RuntimeOptions, open_checkpoint_dir};
use tt_mesh::MeshShape;
use tt_ops::Fidelity;

pub use tt_hf::testutil::{Reference, compare, fixture_dir, generate_ref};

/// A checkpoint of any family on a `rows x cols` mesh, as `tt-lm` opens it.
pub fn load(dir: &Path, mesh: (usize, usize), fidelity: Fidelity, max_seq_len: usize) -> Model {
    let ckpt = open_checkpoint_dir(dir, &tt_lm::families()).unwrap();
    let mut opts = RuntimeOptions::new(MeshShape::new(mesh.0, mesh.1).unwrap());
    opts.fidelity = fidelity;
    opts.max_seq_len = max_seq_len;
    Model::load(&ckpt, &opts).unwrap_or_else(|e| panic!("{} on {mesh:?}: {e}", dir.display()))
}
