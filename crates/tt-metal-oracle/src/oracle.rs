//! Safe wrappers over tt-metal's packer (through the cxx bridge), in `tt-numerics` types.
//!
//! The scalar functions need nothing else. The tile functions ask tt-metal's `MetalContext` for
//! the L1 alignment, and the context starts without hardware only when `TT_METAL_RUNTIME_ROOT`
//! names the wheel's `ttnn/` directory and `TT_METAL_MOCK_CLUSTER_DESC_PATH` a one-chip cluster
//! descriptor: call [`configure_mock_device`] first.

use std::path::{Path, PathBuf};

use thiserror::Error;
use tt_numerics::BfpFormat;

use crate::ffi::bridge;

/// Errors from the oracle.
#[derive(Debug, Error)]
pub enum OracleError {
    /// tt-metal threw (a `TT_FATAL`, usually): its message.
    #[error("tt-metal: {0}")]
    TtMetal(String),
    /// The packed byte buffer is not a whole number of 32-bit words.
    #[error("packed tiles must be a whole number of 32-bit words, got {0} bytes")]
    NotWords(usize),
    /// Writing the mock cluster descriptor failed.
    #[error("writing the mock cluster descriptor {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
}

/// The wheel's `ttnn/` directory this crate was built against.
pub fn runtime_root() -> &'static str {
    env!("TT_METAL_ORACLE_RUNTIME_ROOT")
}

/// Writes the mock cluster descriptor into `dir` and points tt-metal at it and at the wheel.
///
/// # Safety
/// Sets process environment variables: no other thread may read or write the environment while
/// this runs (call it at the start of `main`, before spawning threads).
pub unsafe fn configure_mock_device(dir: &Path) -> Result<PathBuf, OracleError> {
    let path = dir.join("wormhole_n150_mock.yaml");
    std::fs::create_dir_all(dir)
        .and_then(|()| std::fs::write(&path, crate::MOCK_CLUSTER_YAML))
        .map_err(|source| OracleError::Io {
            path: path.clone(),
            source,
        })?;
    // SAFETY: the caller guarantees no concurrent access to the environment.
    unsafe {
        std::env::set_var("TT_METAL_RUNTIME_ROOT", runtime_root());
        std::env::set_var("TT_METAL_MOCK_CLUSTER_DESC_PATH", &path);
    }
    Ok(path)
}

/// tt-metal's `convert_u32_to_bfp<format, truncate>`: the code of f32 `bits` in a block whose
/// shared exponent is `shared_exp` (host packer: ties to even unless `truncate`).
pub fn convert_u32_to_bfp(format: BfpFormat, bits: u32, shared_exp: u8, truncate: bool) -> u8 {
    bridge::u32_to_bfp(
        format.tt_data_format(),
        bits,
        u32::from(shared_exp),
        truncate,
    )
}

/// tt-metal's `convert_bfp_to_u32`: the f32 bits of a code.
pub fn convert_bfp_to_u32(format: BfpFormat, code: u8, shared_exp: u8) -> u32 {
    bridge::bfp_to_u32(format.tt_data_format(), code, shared_exp)
}

/// tt-metal's `pack_as_bfp8_tiles<float>` / `pack_as_bfp4_tiles<float>`: `values` are whole
/// tiles, each 1024 values row-major; returns the packed bytes (little-endian words).
pub fn pack_tiles(format: BfpFormat, values: &[f32]) -> Result<Vec<u8>, OracleError> {
    let words = bridge::pack_tiles(format.tt_data_format(), values)
        .map_err(|e| OracleError::TtMetal(e.to_string()))?;
    Ok(words.iter().flat_map(|w| w.to_le_bytes()).collect())
}

/// tt-metal's `unpack_bfp8_tiles_into_float_vec` / `unpack_bfp4_...`: packed tiles back to
/// values, each tile row-major.
pub fn unpack_tiles(format: BfpFormat, bytes: &[u8]) -> Result<Vec<f32>, OracleError> {
    if !bytes.len().is_multiple_of(4) {
        return Err(OracleError::NotWords(bytes.len()));
    }
    let words: Vec<u32> = bytes
        .chunks_exact(4)
        .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect();
    let values = bridge::unpack_tiles(format.tt_data_format(), &words)
        .map_err(|e| OracleError::TtMetal(e.to_string()))?;
    Ok(values.to_vec())
}
