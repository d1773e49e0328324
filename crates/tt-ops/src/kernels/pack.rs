//! Packing for the GEMM path: activations transposed into k-major micro-panels, weights widened to f32.
//!
//! Layouts (`KC` = K block, `NR` = activation rows per micro-panel, `MR` = weight rows per tile):
//! - activations, whole call: for each K block starting at `p0` (length `kc`), at offset `p0 * mp`,
//!   micro-panel `g` (rows `16g..16g+16`) is `[kc][NR]` at `g * NR * kc`; rows past `m` are zero.
//! - weights, per task and K block: row `r` of the task's `ncp` rows at `r * WS`, `kc` f32 each;
//!   rows past the real `nc` are zero. Only widening, no transpose: the microkernel broadcasts weights.

use rayon::prelude::*;

use super::elem::WeightElem;
use super::isa::Isa;

/// Weight rows per register tile (broadcast operand).
pub(super) const MR: usize = 6;
/// Activation rows per register tile (two 8-lane vectors).
pub(super) const NR: usize = 16;
/// K block: the depth of one packed panel.
pub(super) const KC: usize = 512;
/// Row stride of packed weights: `KC` plus one cache line, so the six rows a tile broadcasts from
/// fall in different L1 sets (a 2 KiB stride would put them in two sets only).
pub(super) const WS: usize = KC + 16;

/// Packs `x` (`[m, k]`) into `xt` (`mp * k`, `mp` = `m` rounded up to `NR`) as described above.
pub(super) fn pack_xt(x: &[f32], m: usize, k: usize, mp: usize, xt: &mut [f32]) {
    debug_assert!(mp.is_multiple_of(NR) && mp >= m && xt.len() == mp * k);
    xt.par_chunks_mut(KC * mp)
        .enumerate()
        .for_each(|(b, block)| {
            let p0 = b * KC;
            let kc = KC.min(k - p0);
            for (g, panel) in block.chunks_exact_mut(NR * kc).enumerate() {
                for l in 0..NR {
                    let row = g * NR + l;
                    if row < m {
                        let src = &x[row * k + p0..row * k + p0 + kc];
                        for (kk, &v) in src.iter().enumerate() {
                            panel[kk * NR + l] = v;
                        }
                    } else {
                        for kk in 0..kc {
                            panel[kk * NR + l] = 0.0;
                        }
                    }
                }
            }
        });
}

/// Widens weight rows `j0..j0+nc`, columns `p0..p0+kc` of `w` (rows `ldw` apart) into `wp` (row
/// stride `WS`), and zeroes rows `nc..ncp`.
#[allow(clippy::too_many_arguments)]
pub(super) fn pack_w<W: WeightElem>(
    isa: Isa,
    w: &[W],
    ldw: usize,
    j0: usize,
    nc: usize,
    ncp: usize,
    p0: usize,
    kc: usize,
    wp: &mut [f32],
) {
    debug_assert!(kc <= KC && wp.len() >= ncp * WS);
    for r in 0..ncp {
        let dst = &mut wp[r * WS..r * WS + kc];
        if r < nc {
            widen(isa, &w[(j0 + r) * ldw + p0..(j0 + r) * ldw + p0 + kc], dst);
        } else {
            dst.fill(0.0);
        }
    }
}

/// `dst[i] = src[i] as f32`.
fn widen<W: WeightElem>(isa: Isa, src: &[W], dst: &mut [f32]) {
    match isa {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: the token in `Avx2Fma` proves the CPU supports AVX2 and FMA.
        Isa::Avx2Fma(_) => unsafe { widen_avx2(src, dst) },
        Isa::Scalar => {
            for (d, s) in dst.iter_mut().zip(src) {
                *d = s.to_f32();
            }
        }
    }
}

/// AVX2 form of [`widen`].
///
/// # Safety
/// The CPU must support AVX2 and FMA.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn widen_avx2<W: WeightElem>(src: &[W], dst: &mut [f32]) {
    use std::arch::x86_64::_mm256_storeu_ps;
    let len = src.len().min(dst.len());
    let mut i = 0;
    while i + 8 <= len {
        // SAFETY: i + 8 <= len, so 8 elements are readable in src and writable in dst.
        unsafe { _mm256_storeu_ps(dst.as_mut_ptr().add(i), W::load8_avx2(src.as_ptr().add(i))) };
        i += 8;
    }
    for j in i..len {
        dst[j] = src[j].to_f32();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use half::bf16;

    #[test]
    fn xt_layout_and_zero_rows() {
        let (m, k) = (3, KC + 5);
        let mp = NR;
        let x: Vec<f32> = (0..m * k).map(|v| v as f32 + 1.0).collect();
        let mut xt = vec![f32::NAN; mp * k];
        pack_xt(&x, m, k, mp, &mut xt);
        // Block 0: [KC][NR]; block 1 (kc = 5) starts at KC * mp.
        assert_eq!(xt[0], x[0]);
        assert_eq!(xt[NR + 2], x[2 * k + 1]);
        assert_eq!(xt[3 * NR + 5], 0.0);
        assert_eq!(xt[KC * mp + 4 * NR + 1], x[k + KC + 4]);
        assert!(xt.iter().all(|v| !v.is_nan()));
    }

    #[test]
    fn w_widened_and_padded() {
        let (n, k) = (4, 21);
        let w: Vec<bf16> = (0..n * k).map(|v| bf16::from_f32(v as f32)).collect();
        for isa in Isa::available() {
            let mut wp = vec![f32::NAN; MR * WS];
            pack_w(isa, &w, k, 1, 3, MR, 2, 19, &mut wp);
            for r in 0..MR {
                for kk in 0..19 {
                    let want = if r < 3 {
                        ((1 + r) * k + 2 + kk) as f32
                    } else {
                        0.0
                    };
                    assert_eq!(wp[r * WS + kk], want, "{isa:?} r={r} kk={kk}");
                }
            }
        }
    }
}
