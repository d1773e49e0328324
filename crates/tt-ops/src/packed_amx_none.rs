//! No tile unit off x86_64: [`prepare`] never offers a call.

use tt_numerics::PackedMatrix;

use crate::k_tile_sums::KTileSums;
use crate::packed_gemv::FastPlan;

/// Never made off x86_64.
pub(crate) enum AmxCall {}

/// Always `None` off x86_64.
pub(crate) fn prepare(
    _plan: &FastPlan,
    _xs: &[f32],
    _m: usize,
    _kp: usize,
    _sums: KTileSums,
) -> Option<AmxCall> {
    None
}

/// Unreachable: no [`AmxCall`] exists.
pub(crate) fn run_task(
    call: &AmxCall,
    _w: &PackedMatrix,
    _r0: usize,
    _rows: usize,
    _n0: usize,
    _cols: usize,
) -> Option<Vec<f32>> {
    match *call {}
}
