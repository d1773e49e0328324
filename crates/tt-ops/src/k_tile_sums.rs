//! How [`crate::device_linear()`] sums the 32 products of one K-tile when a prefill runs on
//! block-float weights: in order of k (the emulation, the same bits on every CPU), or on the
//! CPU's matrix unit in its own order (several times faster where AMX exists).
//!
//! The emulation's order inside a K-tile (32 f32 adds in order of k) is a model choice: a
//! Tensix core sums in its own order, which is not documented. AMX's `tdpbf16ps` sums a K-tile
//! in yet another order and rounding (`cargo run --release -p tt-ops --example amx_rounding`), so
//! it cannot give the emulation's bits. [`KTileSums::MatrixUnit`] lets it anyway, for prefill
//! (at least [`MATRIX_UNIT_MIN_ROWS`] rows): each K-tile's sum comes from the tile unit,
//! starting from zero, and everything else (operands per fidelity, the destination's fp32 or bf16
//! accumulation K-tile by K-tile, the output format) is the emulation's. A result then differs
//! from the emulation's by the rounding of 32-term f32 sums (and, with a bf16 destination, the
//! bf16 roundings those flip); `packed_amx`'s tests bound it.
//!
//! The default is [`KTileSums::InOrder`], so that a run's numbers do not depend on the machine.
//! `TT_OPS_K_TILE_SUMS=matrix-unit` or [`set_k_tile_sums`] (the CLIs' `--k-tile-sums`) choose
//! the matrix unit; decode (one row per call) always runs in order.

use std::str::FromStr;
use std::sync::atomic::{AtomicU8, Ordering};

use crate::error::OpError;

/// Fewest rows (tokens) a call must have to run on the matrix unit; fewer run the GEMV kernels.
pub const MATRIX_UNIT_MIN_ROWS: usize = 16;

/// How a K-tile's products are summed in a block-float prefill.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum KTileSums {
    /// In order of k, one f32 add at a time: the emulation, the same bits on every CPU.
    #[default]
    InOrder,
    /// On the CPU's matrix unit (AMX-BF16) where it has one, in the unit's order; elsewhere in
    /// order.
    MatrixUnit,
}

impl KTileSums {
    /// The name the CLIs and `TT_OPS_K_TILE_SUMS` take.
    pub fn name(self) -> &'static str {
        match self {
            Self::InOrder => "in-order",
            Self::MatrixUnit => "matrix-unit",
        }
    }
}

impl std::fmt::Display for KTileSums {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for KTileSums {
    type Err = OpError;

    fn from_str(s: &str) -> Result<Self, OpError> {
        match s {
            "in-order" => Ok(Self::InOrder),
            "matrix-unit" => Ok(Self::MatrixUnit),
            other => Err(OpError::InvalidArgument {
                op: "k_tile_sums",
                detail: format!("unknown K-tile summation {other:?} (in-order, matrix-unit)"),
            }),
        }
    }
}

/// 0: not chosen yet (the environment decides on first use); else 1 + the choice's position.
static CHOSEN: AtomicU8 = AtomicU8::new(0);

fn encode(s: KTileSums) -> u8 {
    match s {
        KTileSums::InOrder => 1,
        KTileSums::MatrixUnit => 2,
    }
}

/// Chooses the summation of every later block-float prefill in this process.
pub fn set_k_tile_sums(sums: KTileSums) {
    CHOSEN.store(encode(sums), Ordering::Relaxed);
}

/// The summation in force: [`set_k_tile_sums`]'s choice, else `TT_OPS_K_TILE_SUMS` (an
/// unknown value counts as the default), else [`KTileSums::InOrder`].
pub fn k_tile_sums() -> KTileSums {
    match CHOSEN.load(Ordering::Relaxed) {
        1 => KTileSums::InOrder,
        2 => KTileSums::MatrixUnit,
        _ => {
            let sums = std::env::var("TT_OPS_K_TILE_SUMS")
                .ok()
                .and_then(|v| v.parse().ok())
                .unwrap_or_default();
            // Only the first reader of the environment stores its answer.
            let _ = CHOSEN.compare_exchange(0, encode(sums), Ordering::Relaxed, Ordering::Relaxed);
            sums
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn names_round_trip_and_unknown_names_are_errors() {
        for s in [KTileSums::InOrder, KTileSums::MatrixUnit] {
            assert_eq!(s.name().parse::<KTileSums>().unwrap(), s);
        }
        let err = "fast".parse::<KTileSums>().unwrap_err().to_string();
        assert!(err.contains("in-order, matrix-unit"), "{err}");
        assert_eq!(KTileSums::default(), KTileSums::InOrder);
    }
}
