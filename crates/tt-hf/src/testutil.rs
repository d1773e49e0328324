//! Helpers of the model test suites against HuggingFace references (`phi3-model`'s and `tt-lm`'s):
//! fixture paths, the reference files `cargo xtask fixtures` writes, PCC and max-abs error.
//!
//! For tests only: these panic with the failing file or tensor named instead of returning errors.
//! Not part of the crate's API.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};

use safetensors::SafeTensors;

/// `fixtures/<name>` of the repository.
pub fn fixture_dir(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../fixtures")
        .join(name)
}

/// A safetensors reference file (`reference/logits.safetensors`, `reference/hidden.safetensors`).
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

/// HF's greedy generation (`reference/generate.json`): prompt, settings, and every token.
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
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_slice(&bytes).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compare_gives_pcc_and_max_error() {
        let (pcc, max) = compare(&[1.0, 2.0, 3.0], &[2.0, 4.0, 6.0]);
        assert!((pcc - 1.0).abs() < 1e-12);
        assert_eq!(max, 3.0);
        let (pcc, _) = compare(&[1.0, 2.0, 3.0], &[3.0, 2.0, 1.0]);
        assert!((pcc + 1.0).abs() < 1e-12);
    }

    #[test]
    fn fixtures_are_found_from_this_crate() {
        assert!(fixture_dir("phi3-tiny").join("config.json").is_file());
    }
}
