//! Shared helpers of the model tests: fixture paths, HF reference files, PCC, loading.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, dead_code)]

use std::path::{Path, PathBuf};

use safetensors::SafeTensors;
use tt_decoder::{Model, RuntimeOptions, open_checkpoint_dir};
use tt_mesh::MeshShape;
use tt_ops::Fidelity;

/// `fixtures/<name>` of the repository.
pub fn fixture_dir(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../fixtures")
        .join(name)
}

/// A checkpoint of any family on a `rows x cols` mesh, as `tt-lm` opens it.
pub fn load(dir: &Path, mesh: (usize, usize), fidelity: Fidelity, max_seq_len: usize) -> Model {
    let ckpt = open_checkpoint_dir(dir, &tt_lm::families()).unwrap();
    let mut opts = RuntimeOptions::new(MeshShape::new(mesh.0, mesh.1).unwrap());
    opts.fidelity = fidelity;
    opts.max_seq_len = max_seq_len;
    Model::load(&ckpt, &opts).unwrap_or_else(|e| panic!("{} on {mesh:?}: {e}", dir.display()))
}

/// A safetensors reference file.
pub struct Reference {
    bytes: Vec<u8>,
}

impl Reference {
    /// Reads `path`.
    pub fn open(path: &Path) -> Self {
        Self {
            bytes: std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display())),
        }
    }

    /// An f32 tensor and its shape.
    pub fn f32(&self, name: &str) -> (Vec<f32>, Vec<usize>) {
        let st = SafeTensors::deserialize(&self.bytes).unwrap();
        let t = st.tensor(name).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(t.dtype(), safetensors::Dtype::F32, "{name}");
        let v = t
            .data()
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect();
        (v, t.shape().to_vec())
    }

    /// An I64 id tensor as u32 ids.
    pub fn ids(&self, name: &str) -> Vec<u32> {
        let st = SafeTensors::deserialize(&self.bytes).unwrap();
        let t = st.tensor(name).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(t.dtype(), safetensors::Dtype::I64, "{name}");
        t.data()
            .chunks_exact(8)
            .map(|b| i64::from_le_bytes(b.try_into().unwrap()) as u32)
            .collect()
    }
}

/// HF's greedy generation: prompt, settings, and every token.
#[derive(serde::Deserialize)]
pub struct GenerateRef {
    /// Prompt ids.
    pub prompt_ids: Vec<u32>,
    /// New tokens at most.
    pub max_new_tokens: usize,
    /// Stop ids.
    pub eos_token_id: Vec<u32>,
    /// Prompt then generated ids.
    pub output_ids: Vec<u32>,
}

/// Reads a `generate.json`.
pub fn generate_ref(path: &Path) -> GenerateRef {
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}

/// Pearson correlation and max |a - b|.
pub fn compare(a: &[f32], b: &[f32]) -> (f64, f64) {
    assert_eq!(a.len(), b.len());
    let n = a.len() as f64;
    let (ma, mb) = (
        a.iter().map(|&x| f64::from(x)).sum::<f64>() / n,
        b.iter().map(|&x| f64::from(x)).sum::<f64>() / n,
    );
    let (mut sab, mut saa, mut sbb, mut max) = (0.0, 0.0, 0.0, 0.0f64);
    for (&x, &y) in a.iter().zip(b) {
        let (dx, dy) = (f64::from(x) - ma, f64::from(y) - mb);
        sab += dx * dy;
        saa += dx * dx;
        sbb += dy * dy;
        max = max.max((f64::from(x) - f64::from(y)).abs());
    }
    (sab / (saa.sqrt() * sbb.sqrt()), max)
}
