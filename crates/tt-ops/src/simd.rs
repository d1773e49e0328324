//! Vectorisable inner loops for the attention ops, compiled twice: portable and AVX2+FMA.
//!
//! A hot work item implements [`Kernel`]; [`dispatch`] runs it through a
//! `#[target_feature(enable = "avx2,fma")]` trampoline when the CPU has those features, so the
//! `#[inline(always)]` helpers below are vectorised with 256-bit registers and fused multiply-adds
//! there, and with the baseline target elsewhere. The helpers take `const FMA: bool` so the portable
//! build never calls the (slow, software) `fmaf`.

use crate::tensor::Element;

#[cfg(target_arch = "x86_64")]
pub(crate) use crate::simd_avx2::Lanes;

/// Storage elements the vector helpers accept (f32 and bf16).
#[cfg(not(target_arch = "x86_64"))]
pub(crate) trait Lanes: Element {}
#[cfg(not(target_arch = "x86_64"))]
impl<E: Element> Lanes for E {}

/// A unit of work whose body is compiled per instruction set.
pub(crate) trait Kernel {
    /// What the work returns.
    type Out;
    /// Run with fused multiply-add (`FMA = true`) or with separate multiply and add.
    fn run<const FMA: bool>(self) -> Self::Out;
}

/// Whether this CPU has AVX2 and FMA (std caches the CPUID probe).
#[inline]
pub(crate) fn has_avx2_fma() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// Run `k` with the best instruction set available.
#[inline]
pub(crate) fn dispatch<K: Kernel>(k: K) -> K::Out {
    #[cfg(target_arch = "x86_64")]
    {
        if has_avx2_fma() {
            // SAFETY: the CPU supports avx2 and fma (checked just above).
            return unsafe { run_avx2_fma(k) };
        }
    }
    k.run::<false>()
}

/// Run `k` with the portable code path (tests compare both paths).
#[cfg(test)]
pub(crate) fn dispatch_portable<K: Kernel>(k: K) -> K::Out {
    k.run::<false>()
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
fn run_avx2_fma<K: Kernel>(k: K) -> K::Out {
    k.run::<true>()
}

/// `a * b + c`, fused when `FMA`.
#[inline(always)]
pub(crate) fn fmadd<const FMA: bool>(a: f32, b: f32, c: f32) -> f32 {
    if FMA { a.mul_add(b, c) } else { a * b + c }
}

const LANES: usize = 16;

/// Dot product of `a` with `b` (widened to f32 on the fly), 16 independent accumulators.
#[inline(always)]
pub(crate) fn dot<const FMA: bool, E: Lanes>(a: &[f32], b: &[E]) -> f32 {
    #[cfg(target_arch = "x86_64")]
    if FMA {
        // SAFETY: `FMA = true` is only instantiated under `run_avx2_fma`, after detection.
        return unsafe { crate::simd_avx2::dot(a, b) };
    }
    let n = a.len().min(b.len());
    let (a, b) = (&a[..n], &b[..n]);
    let (ac, ar) = a.as_chunks::<LANES>();
    let (bc, br) = b.as_chunks::<LANES>();
    let mut acc = [0.0f32; LANES];
    for (x, y) in ac.iter().zip(bc) {
        for l in 0..LANES {
            acc[l] = fmadd::<FMA>(x[l], y[l].to_f32(), acc[l]);
        }
    }
    let mut tail = 0.0f32;
    for (x, y) in ar.iter().zip(br) {
        tail = fmadd::<FMA>(*x, y.to_f32(), tail);
    }
    hsum(&acc) + tail
}

/// `acc[d] += sum_j p[j] * rows[j * dh + d]` for `rows` holding `p.len()` rows of width
/// `dh = acc.len()`: a weighted sum of value rows. Columns are processed 32 at a time with the
/// accumulators held in registers across all rows.
#[inline(always)]
pub(crate) fn accumulate_rows<const FMA: bool, E: Lanes>(p: &[f32], rows: &[E], acc: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if FMA && rows.len() >= p.len() * acc.len() {
        // SAFETY: as in `dot`; the length check is the function's other precondition.
        return unsafe { crate::simd_avx2::accumulate_rows(p, rows, acc) };
    }
    const W: usize = 32;
    let dh = acc.len();
    let full = dh / W * W;
    for c in (0..full).step_by(W) {
        let mut a = [0.0f32; W];
        a.copy_from_slice(&acc[c..c + W]);
        for (j, &pj) in p.iter().enumerate() {
            let v = &rows[j * dh + c..j * dh + c + W];
            for l in 0..W {
                a[l] = fmadd::<FMA>(pj, v[l].to_f32(), a[l]);
            }
        }
        acc[c..c + W].copy_from_slice(&a);
    }
    if full < dh {
        for (j, &pj) in p.iter().enumerate() {
            let v = &rows[j * dh + full..(j + 1) * dh];
            for (o, x) in acc[full..].iter_mut().zip(v) {
                *o = fmadd::<FMA>(pj, x.to_f32(), *o);
            }
        }
    }
}

/// Sum of 16 lanes as a pairwise tree.
#[inline(always)]
fn hsum(acc: &[f32; LANES]) -> f32 {
    let mut h = [0.0f32; 8];
    for l in 0..8 {
        h[l] = acc[l] + acc[l + 8];
    }
    let q = [h[0] + h[4], h[1] + h[5], h[2] + h[6], h[3] + h[7]];
    (q[0] + q[2]) + (q[1] + q[3])
}

/// `y *= alpha`.
#[inline(always)]
pub(crate) fn scale(alpha: f32, y: &mut [f32]) {
    for v in y {
        *v *= alpha;
    }
}

/// Widen `src` into `dst` (same length).
#[inline(always)]
pub(crate) fn widen<E: Element>(src: &[E], dst: &mut [f32]) {
    for (d, s) in dst.iter_mut().zip(src) {
        *d = s.to_f32();
    }
}

/// Largest value (`-inf` for an empty slice; NaN if any value is NaN).
#[inline(always)]
pub(crate) fn max<const FMA: bool>(x: &[f32]) -> f32 {
    #[cfg(target_arch = "x86_64")]
    if FMA {
        // SAFETY: as in `dot`.
        return unsafe { crate::simd_avx2::max(x) };
    }
    let mut m = [f32::NEG_INFINITY; 8];
    let (c, r) = x.as_chunks::<8>();
    for v in c {
        for l in 0..8 {
            m[l] = m[l].max(v[l]);
        }
    }
    let mut out = m.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    for &v in r {
        out = out.max(v);
    }
    if x.iter().any(|v| v.is_nan()) {
        f32::NAN
    } else {
        out
    }
}

/// `x[i] = exp(x[i] - shift)` in place, returning the sum of the results.
///
/// Branch-free polynomial exp (range reduction by ln 2, degree-6 minimax polynomial), accurate to
/// about 2 ulp; arguments below -87.3 give 0 (softmax arguments are <= 0 here).
#[inline(always)]
pub(crate) fn exp_shifted_sum<const FMA: bool>(x: &mut [f32], shift: f32) -> f32 {
    #[cfg(target_arch = "x86_64")]
    if FMA {
        // SAFETY: as in `dot`.
        return unsafe { crate::simd_avx2::exp_shifted_sum(x, shift) };
    }
    let mut acc = [0.0f32; 8];
    let (c, r) = x.as_chunks_mut::<8>();
    for v in c {
        for l in 0..8 {
            v[l] = exp_approx::<FMA>(v[l] - shift);
            acc[l] += v[l];
        }
    }
    let mut s = acc.iter().sum::<f32>();
    for v in r {
        *v = exp_approx::<FMA>(*v - shift);
        s += *v;
    }
    s
}

/// Scalar polynomial exp; see [`exp_shifted_sum`].
#[inline(always)]
pub(crate) fn exp_approx<const FMA: bool>(x: f32) -> f32 {
    use exp_consts as k;
    if x.is_nan() {
        // NaN in, NaN out: a corrupt score must not vanish from a softmax.
        return x;
    }
    let lo_ok = x >= k::LO;
    let xc = x.clamp(k::LO, k::HI);
    let t = fmadd::<FMA>(xc, k::LOG2E, k::ROUND);
    let n = t - k::ROUND;
    let r = fmadd::<FMA>(-n, k::LN2_HI, xc);
    let r = fmadd::<FMA>(-n, k::LN2_LO, r);
    let mut p = k::P[0];
    for &c in &k::P[1..] {
        p = fmadd::<FMA>(p, r, c);
    }
    let e = fmadd::<FMA>(p, r * r, r) + 1.0;
    // 2^n from the integer in the low mantissa bits of `t` (n in [-126, 127]).
    let ni = (t.to_bits() as i32).wrapping_sub(k::ROUND.to_bits() as i32);
    let pow2 = f32::from_bits(((ni + 127) as u32) << 23);
    if lo_ok { e * pow2 } else { 0.0 }
}

/// Constants of the polynomial exp (shared with the AVX2 version).
pub(crate) mod exp_consts {
    /// log2(e).
    pub(crate) const LOG2E: f32 = std::f32::consts::LOG2_E;
    /// ln 2 split into a part exact in few bits and a correction.
    pub(crate) const LN2_HI: f32 = 0.693_359_4;
    /// Correction part of ln 2.
    pub(crate) const LN2_LO: f32 = -2.121_944_4e-4;
    /// Adding then subtracting 1.5 * 2^23 rounds to the nearest integer.
    pub(crate) const ROUND: f32 = 12_582_912.0;
    /// Below this the result is flushed to 0.
    pub(crate) const LO: f32 = -87.3;
    /// Arguments are clamped to this from above (2^127 stays finite).
    pub(crate) const HI: f32 = 88.0;
    /// Minimax coefficients of (e^r - 1 - r) / r^2 on [-ln2/2, ln2/2], highest degree first.
    pub(crate) const P: [f32; 6] = [
        1.987_569_1e-4,
        1.398_199_9e-3,
        8.333_452e-3,
        4.166_579_6e-2,
        1.666_666_5e-1,
        0.5,
    ];
}

/// One step of online softmax for one query row.
///
/// Folds a block of raw scores `s` (masked entries `-inf`) into the running max `m` and running sum
/// `l`, turns `s` into the block's unnormalised probabilities `exp(s - m_new)`, and returns the factor
/// `exp(m_old - m_new)` by which the caller must rescale its running output.
#[inline(always)]
pub(crate) fn online_softmax_step<const FMA: bool>(m: &mut f32, l: &mut f32, s: &mut [f32]) -> f32 {
    let block_max = max::<FMA>(s);
    // A NaN score poisons the row (f32::max alone would skip it).
    let m_new = if block_max.is_nan() {
        block_max
    } else {
        m.max(block_max)
    };
    if m_new == f32::NEG_INFINITY {
        s.fill(0.0);
        return 1.0;
    }
    let alpha = if *m == f32::NEG_INFINITY {
        0.0
    } else {
        exp_approx::<FMA>(*m - m_new)
    };
    let sum = exp_shifted_sum::<FMA>(s, m_new);
    *l = fmadd::<FMA>(*l, alpha, sum);
    *m = m_new;
    alpha
}

#[cfg(test)]
mod tests {
    use super::*;

    struct ExpCheck(Vec<f32>);
    impl Kernel for ExpCheck {
        type Out = f64;
        fn run<const FMA: bool>(self) -> f64 {
            let mut worst = 0.0f64;
            for &x in &self.0 {
                let want = (x as f64).exp();
                let got = exp_approx::<FMA>(x) as f64;
                if want > 1e-37 {
                    worst = worst.max(((got - want) / want).abs());
                } else {
                    assert!((got - want).abs() <= 2e-38, "exp({x}) = {got}");
                }
            }
            worst
        }
    }

    #[test]
    fn exp_approx_is_within_a_few_ulp() {
        let xs: Vec<f32> = (0..200_001).map(|i| -100.0 + i as f32 * 0.000_94).collect();
        for worst in [
            dispatch(ExpCheck(xs.clone())),
            dispatch_portable(ExpCheck(xs)),
        ] {
            assert!(worst < 4e-7, "worst relative error {worst}");
        }
    }

    /// A NaN or infinite score anywhere in a block (vector lanes and scalar tail) makes the
    /// softmax NaN instead of vanishing; masked (-inf) scores still give 0.
    struct NanCheck(usize);
    impl Kernel for NanCheck {
        type Out = (bool, bool, f32);
        fn run<const FMA: bool>(self) -> Self::Out {
            let mut s: Vec<f32> = (0..11).map(|i| i as f32 * 0.1).collect();
            s[self.0] = f32::NAN;
            let (mut m, mut l) = (f32::NEG_INFINITY, 0.0);
            online_softmax_step::<FMA>(&mut m, &mut l, &mut s);
            let nan_out = l.is_nan() && s[self.0].is_nan();
            let mut t: Vec<f32> = (0..11).map(|i| i as f32).collect();
            t[self.0] = f32::INFINITY;
            let (mut m2, mut l2) = (f32::NEG_INFINITY, 0.0);
            online_softmax_step::<FMA>(&mut m2, &mut l2, &mut t);
            let mut masked = vec![f32::NEG_INFINITY; 11];
            masked[0] = 0.0;
            let (mut m3, mut l3) = (f32::NEG_INFINITY, 0.0);
            online_softmax_step::<FMA>(&mut m3, &mut l3, &mut masked);
            (nan_out, l2.is_nan(), l3)
        }
    }

    #[test]
    fn non_finite_scores_poison_the_softmax() {
        for at in [0, 5, 10] {
            for (nan, inf, masked) in [dispatch(NanCheck(at)), dispatch_portable(NanCheck(at))] {
                assert!(nan, "a NaN score at {at} vanished");
                assert!(inf, "an infinite score at {at} vanished");
                assert_eq!(masked, 1.0, "masked scores must still give 0");
            }
        }
    }

    /// Runs every helper on `a` (f32 query-like data) and `b` (rows, f32 or bf16).
    struct Helpers<E>(Vec<f32>, Vec<E>);
    impl<E: Lanes> Kernel for Helpers<E> {
        type Out = (f32, Vec<f32>, Vec<f32>, f32, f32);
        fn run<const FMA: bool>(self) -> Self::Out {
            let n = self.0.len();
            let d = dot::<FMA, E>(&self.0, &self.1);
            // weights a[..rows] over `rows` rows of width n / rows
            let rows = 3.min(n);
            let dh = n.checked_div(rows).unwrap_or(0);
            let mut acc = vec![0.5f32; dh];
            accumulate_rows::<FMA, E>(&self.0[..rows], &self.1[..rows * dh], &mut acc);
            let mut z = self.0.clone();
            let s = exp_shifted_sum::<FMA>(&mut z, 1.0);
            (d, acc, z, s, max::<FMA>(&self.0))
        }
    }

    fn check_helpers<E: Lanes>(a: &[f32], b: &[E]) {
        let n = a.len();
        let bf: Vec<f64> = b.iter().map(|x| x.to_f32() as f64).collect();
        let want: f64 = a.iter().zip(&bf).map(|(x, y)| *x as f64 * y).sum();
        let rows = 3.min(n);
        let dh = n.checked_div(rows).unwrap_or(0);
        let want_acc: Vec<f64> = (0..dh)
            .map(|c| 0.5 + (0..rows).map(|j| a[j] as f64 * bf[j * dh + c]).sum::<f64>())
            .collect();
        let want_z: Vec<f64> = a.iter().map(|x| (*x as f64 - 1.0).exp()).collect();
        let want_max = a.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        for (d, acc, z, s, m) in [
            dispatch(Helpers(a.to_vec(), b.to_vec())),
            dispatch_portable(Helpers(a.to_vec(), b.to_vec())),
        ] {
            assert!((d as f64 - want).abs() < 1e-5, "n={n}: {d} vs {want}");
            for (g, w) in acc.iter().zip(&want_acc) {
                assert!((*g as f64 - w).abs() < 1e-5, "n={n}: {g} vs {w}");
            }
            for (g, w) in z.iter().zip(&want_z) {
                assert!((*g as f64 - w).abs() <= 4e-7 * w, "n={n}: {g} vs {w}");
            }
            assert!((s as f64 - want_z.iter().sum::<f64>()).abs() <= 1e-6 * s as f64 + 1e-30);
            assert_eq!(m, want_max);
        }
    }

    #[test]
    fn helpers_match_f64_on_both_paths_and_dtypes() {
        for n in [0usize, 1, 7, 8, 16, 17, 31, 32, 33, 96, 131, 200] {
            let a: Vec<f32> = (0..n).map(|i| ((i * 7 % 13) as f32 - 6.0) / 5.0).collect();
            let b: Vec<f32> = (0..n).map(|i| ((i * 5 % 11) as f32 - 5.0) / 3.0).collect();
            check_helpers(&a, &b);
            check_helpers(
                &a,
                &b.iter()
                    .map(|&x| half::bf16::from_f32(x))
                    .collect::<Vec<_>>(),
            );
        }
    }
}
