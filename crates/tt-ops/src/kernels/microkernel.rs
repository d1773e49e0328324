//! The GEMM register tile: `MR` (6) weight rows x `NR` (16) activation rows over one K block.
//!
//! Per k step it loads 16 activations (two ymm, from the `[kc][NR]` panel), broadcasts 6 widened
//! weights (from 6 packed rows) and issues 12 FMAs into 12 ymm accumulators: 15 of the 16 ymm
//! registers, 8 loads per 12 FMAs, so the FMA ports set the pace. Results are a transposed tile
//! (`ct[q * ldct + l]` = out[row l, weight q]), stored or accumulated over K blocks.

use super::pack::{KC, MR, NR, WS};

/// Operands of one tile call.
pub(super) struct Tile<'a> {
    /// Depth of this K block.
    pub kc: usize,
    /// Packed weights: row `q` of the tile at `q * WS`, `kc` values each.
    pub wp: &'a [f32],
    /// Packed activations `[kc][NR]`.
    pub xt: &'a [f32],
    /// Whether this is the first K block (store) or a later one (accumulate).
    pub first: bool,
}

/// Portable tile: `ct[q * ldct + l] (+)= sum_kk wp[q*WS + kk] * xt[kk*NR + l]`.
pub(super) fn tile_scalar(t: &Tile<'_>, ct: &mut [f32], ldct: usize) {
    let mut acc = [[0.0f32; NR]; MR];
    for kk in 0..t.kc {
        let xs = &t.xt[kk * NR..(kk + 1) * NR];
        for (q, row) in acc.iter_mut().enumerate() {
            let b = t.wp[q * WS + kk];
            for (a, &xv) in row.iter_mut().zip(xs) {
                *a += b * xv;
            }
        }
    }
    for (q, row) in acc.iter().enumerate() {
        let dst = &mut ct[q * ldct..q * ldct + NR];
        if t.first {
            dst.copy_from_slice(row);
        } else {
            for (d, a) in dst.iter_mut().zip(row) {
                *d += a;
            }
        }
    }
}

/// AVX2+FMA form of [`tile_scalar`].
#[cfg(target_arch = "x86_64")]
#[inline]
#[target_feature(enable = "avx2,fma")]
pub(super) fn tile_avx2(t: &Tile<'_>, ct: &mut [f32], ldct: usize) {
    use std::arch::x86_64::*;
    let kc = t.kc;
    // These bounds make every raw access below in range.
    assert!(kc <= KC && t.wp.len() >= (MR - 1) * WS + kc && t.xt.len() >= kc * NR);
    assert!(ldct >= NR && ct.len() >= (MR - 1) * ldct + NR);
    let wp = t.wp.as_ptr();
    let xp = t.xt.as_ptr();
    let mut acc = [[_mm256_setzero_ps(); 2]; MR];
    // One k step: 2 activation loads, 6 weight broadcasts, 12 FMAs.
    let step = |acc: &mut [[__m256; 2]; MR], kk: usize| {
        // SAFETY: kk < kc, so kk*NR + 16 <= kc*NR <= xt.len().
        let (x0, x1) = unsafe {
            (
                _mm256_loadu_ps(xp.add(kk * NR)),
                _mm256_loadu_ps(xp.add(kk * NR + 8)),
            )
        };
        for (q, a) in acc.iter_mut().enumerate() {
            // SAFETY: q*WS + kk < (MR-1)*WS + kc <= wp.len().
            let b = unsafe { _mm256_broadcast_ss(&*wp.add(q * WS + kk)) };
            a[0] = _mm256_fmadd_ps(b, x0, a[0]);
            a[1] = _mm256_fmadd_ps(b, x1, a[1]);
        }
    };
    // Unrolled by 4 to thin the loop overhead.
    let mut kk = 0;
    while kk + 4 <= kc {
        step(&mut acc, kk);
        step(&mut acc, kk + 1);
        step(&mut acc, kk + 2);
        step(&mut acc, kk + 3);
        kk += 4;
    }
    while kk < kc {
        step(&mut acc, kk);
        kk += 1;
    }
    let cp = ct.as_mut_ptr();
    for (q, a) in acc.iter().enumerate() {
        for (h, &v) in a.iter().enumerate() {
            // SAFETY: q*ldct + 8h + 8 <= (MR-1)*ldct + NR <= ct.len().
            unsafe {
                let p = cp.add(q * ldct + 8 * h);
                let v = if t.first {
                    v
                } else {
                    _mm256_add_ps(v, _mm256_loadu_ps(p))
                };
                _mm256_storeu_ps(p, v);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::isa::Isa;

    #[test]
    fn tiles_agree_and_accumulate() {
        let kc = 37;
        let wp: Vec<f32> = (0..MR * WS)
            .map(|i| ((i * 7 % 13) as f32 - 6.0) * 0.25)
            .collect();
        let xt: Vec<f32> = (0..kc * NR)
            .map(|i| ((i * 5 % 11) as f32 - 5.0) * 0.5)
            .collect();
        let ldct = NR + 3;
        let mut want = vec![0.0f64; MR * ldct];
        for q in 0..MR {
            for l in 0..NR {
                want[q * ldct + l] = 2.0
                    * (0..kc)
                        .map(|kk| f64::from(wp[q * WS + kk] * xt[kk * NR + l]))
                        .sum::<f64>();
            }
        }
        for isa in Isa::available() {
            let mut ct = vec![0.0f32; MR * ldct];
            for first in [true, false] {
                let t = Tile {
                    kc,
                    wp: &wp,
                    xt: &xt,
                    first,
                };
                match isa {
                    Isa::Scalar => tile_scalar(&t, &mut ct, ldct),
                    #[cfg(target_arch = "x86_64")]
                    // SAFETY: this variant exists only when AVX2+FMA were detected.
                    Isa::Avx2Fma(_) => unsafe { tile_avx2(&t, &mut ct, ldct) },
                }
            }
            for q in 0..MR {
                for l in 0..NR {
                    let (g, w) = (ct[q * ldct + l], want[q * ldct + l]);
                    assert!(
                        (f64::from(g) - w).abs() <= 1e-4 * (1.0 + w.abs()),
                        "{isa:?} {q} {l}"
                    );
                }
            }
        }
    }
}
