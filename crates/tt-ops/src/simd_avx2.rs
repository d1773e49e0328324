//! AVX2+FMA bodies of the hot attention helpers in [`crate::simd`].
//!
//! Every function here is `unsafe` and `#[inline(always)]`: it may only run on a CPU with AVX2 and
//! FMA, and it is only reached from code instantiated with `FMA = true`, which
//! [`crate::simd::dispatch`] runs inside its `#[target_feature(enable = "avx2,fma")]` trampoline
//! after detecting both features. Inlined there, the intrinsics compile to single instructions.

use std::arch::x86_64::*;

use half::bf16;

/// Storage elements loadable 8 at a time as f32 lanes.
pub(crate) trait Lanes: crate::tensor::Element {
    /// Load 8 consecutive elements at `p`, widened to f32.
    ///
    /// # Safety
    /// `p .. p + 8` must be readable and the CPU must support AVX2.
    unsafe fn load8(p: *const Self) -> __m256;
}

impl Lanes for f32 {
    #[inline(always)]
    unsafe fn load8(p: *const Self) -> __m256 {
        // SAFETY: forwarded from the caller.
        unsafe { _mm256_loadu_ps(p) }
    }
}

impl Lanes for bf16 {
    #[inline(always)]
    unsafe fn load8(p: *const Self) -> __m256 {
        // SAFETY: forwarded from the caller; bf16 is the upper half of an f32, so zero-extend the
        // 16-bit patterns to 32 bits and shift them into place.
        unsafe {
            let h = _mm_loadu_si128(p.cast::<__m128i>());
            _mm256_castsi256_ps(_mm256_slli_epi32::<16>(_mm256_cvtepu16_epi32(h)))
        }
    }
}

/// Horizontal sum of 8 lanes.
#[inline(always)]
unsafe fn hsum(v: __m256) -> f32 {
    // SAFETY: AVX is available (caller contract).
    unsafe {
        let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps::<1>(v));
        let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
        let s = _mm_add_ss(s, _mm_movehdup_ps(s));
        _mm_cvtss_f32(s)
    }
}

/// `sum a[i] * b[i]` over the common length.
///
/// # Safety
/// AVX2 and FMA must be available.
#[inline(always)]
pub(crate) unsafe fn dot<E: Lanes>(a: &[f32], b: &[E]) -> f32 {
    let n = a.len().min(b.len());
    let (pa, pb) = (a.as_ptr(), b.as_ptr());
    // SAFETY: every load covers indices below `n`, the common length; AVX2+FMA by contract.
    unsafe {
        let mut acc = [_mm256_setzero_ps(); 4];
        let mut i = 0;
        while i + 32 <= n {
            for (k, a) in acc.iter_mut().enumerate() {
                let at = i + 8 * k;
                *a = _mm256_fmadd_ps(_mm256_loadu_ps(pa.add(at)), E::load8(pb.add(at)), *a);
            }
            i += 32;
        }
        while i + 8 <= n {
            acc[0] = _mm256_fmadd_ps(_mm256_loadu_ps(pa.add(i)), E::load8(pb.add(i)), acc[0]);
            i += 8;
        }
        let mut s = hsum(_mm256_add_ps(
            _mm256_add_ps(acc[0], acc[1]),
            _mm256_add_ps(acc[2], acc[3]),
        ));
        while i < n {
            s = a[i].mul_add(b[i].to_f32(), s);
            i += 1;
        }
        s
    }
}

/// `acc[d] += sum_j p[j] * rows[j * dh + d]`, `dh = acc.len()`, 32 columns per pass with the
/// accumulators in registers across all rows.
///
/// # Safety
/// AVX2 and FMA must be available; `rows.len() >= p.len() * acc.len()`.
#[inline(always)]
pub(crate) unsafe fn accumulate_rows<E: Lanes>(p: &[f32], rows: &[E], acc: &mut [f32]) {
    let dh = acc.len();
    debug_assert!(rows.len() >= p.len() * dh);
    let (pr, pacc) = (rows.as_ptr(), acc.as_mut_ptr());
    // SAFETY: column offsets stay below `dh` and rows below `p.len()`; AVX2+FMA by contract.
    unsafe {
        let mut c = 0;
        while c + 32 <= dh {
            let mut a = [
                _mm256_loadu_ps(pacc.add(c)),
                _mm256_loadu_ps(pacc.add(c + 8)),
                _mm256_loadu_ps(pacc.add(c + 16)),
                _mm256_loadu_ps(pacc.add(c + 24)),
            ];
            for (j, &pj) in p.iter().enumerate() {
                let w = _mm256_set1_ps(pj);
                let row = pr.add(j * dh + c);
                for (k, a) in a.iter_mut().enumerate() {
                    *a = _mm256_fmadd_ps(w, E::load8(row.add(8 * k)), *a);
                }
            }
            for (k, a) in a.iter().enumerate() {
                _mm256_storeu_ps(pacc.add(c + 8 * k), *a);
            }
            c += 32;
        }
        while c + 8 <= dh {
            let mut a = _mm256_loadu_ps(pacc.add(c));
            for (j, &pj) in p.iter().enumerate() {
                a = _mm256_fmadd_ps(_mm256_set1_ps(pj), E::load8(pr.add(j * dh + c)), a);
            }
            _mm256_storeu_ps(pacc.add(c), a);
            c += 8;
        }
        for d in c..dh {
            let mut s = acc[d];
            for (j, &pj) in p.iter().enumerate() {
                s = pj.mul_add(rows[j * dh + d].to_f32(), s);
            }
            acc[d] = s;
        }
    }
}

/// Eight lanes of the polynomial exp of [`crate::simd::exp_approx`] (same constants and steps).
#[inline(always)]
unsafe fn exp8(x: __m256) -> __m256 {
    use crate::simd::exp_consts as k;
    // SAFETY: AVX2+FMA by contract.
    unsafe {
        let lo_ok = _mm256_cmp_ps::<_CMP_GE_OQ>(x, _mm256_set1_ps(k::LO));
        let xc = _mm256_min_ps(
            _mm256_max_ps(x, _mm256_set1_ps(k::LO)),
            _mm256_set1_ps(k::HI),
        );
        let round = _mm256_set1_ps(k::ROUND);
        let t = _mm256_fmadd_ps(xc, _mm256_set1_ps(k::LOG2E), round);
        let n = _mm256_sub_ps(t, round);
        let r = _mm256_fnmadd_ps(n, _mm256_set1_ps(k::LN2_HI), xc);
        let r = _mm256_fnmadd_ps(n, _mm256_set1_ps(k::LN2_LO), r);
        let mut p = _mm256_set1_ps(k::P[0]);
        for &c in &k::P[1..] {
            p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(c));
        }
        let e = _mm256_add_ps(
            _mm256_fmadd_ps(p, _mm256_mul_ps(r, r), r),
            _mm256_set1_ps(1.0),
        );
        let ni = _mm256_sub_epi32(_mm256_castps_si256(t), _mm256_castps_si256(round));
        let pow2 = _mm256_castsi256_ps(_mm256_slli_epi32::<23>(_mm256_add_epi32(
            ni,
            _mm256_set1_epi32(127),
        )));
        let out = _mm256_and_ps(_mm256_mul_ps(e, pow2), lo_ok);
        // NaN in, NaN out: a corrupt score must not vanish from a softmax.
        _mm256_blendv_ps(out, x, _mm256_cmp_ps::<_CMP_UNORD_Q>(x, x))
    }
}

/// `x[i] = exp(x[i] - shift)` in place; returns the sum.
///
/// # Safety
/// AVX2 and FMA must be available.
#[inline(always)]
pub(crate) unsafe fn exp_shifted_sum(x: &mut [f32], shift: f32) -> f32 {
    let n = x.len();
    let px = x.as_mut_ptr();
    // SAFETY: loads and stores stay below `n`; AVX2+FMA by contract.
    unsafe {
        let sh = _mm256_set1_ps(shift);
        let mut acc = _mm256_setzero_ps();
        let mut i = 0;
        while i + 8 <= n {
            let e = exp8(_mm256_sub_ps(_mm256_loadu_ps(px.add(i)), sh));
            _mm256_storeu_ps(px.add(i), e);
            acc = _mm256_add_ps(acc, e);
            i += 8;
        }
        let mut s = hsum(acc);
        for v in &mut x[i..] {
            *v = crate::simd::exp_approx::<true>(*v - shift);
            s += *v;
        }
        s
    }
}

/// Largest value (`-inf` for an empty slice; NaN if any value is NaN).
///
/// # Safety
/// AVX must be available.
#[inline(always)]
pub(crate) unsafe fn max(x: &[f32]) -> f32 {
    let n = x.len();
    // SAFETY: loads stay below `n`; AVX by contract.
    unsafe {
        let mut m = _mm256_set1_ps(f32::NEG_INFINITY);
        let mut nan = _mm256_setzero_ps();
        let mut i = 0;
        while i + 8 <= n {
            let v = _mm256_loadu_ps(x.as_ptr().add(i));
            m = _mm256_max_ps(m, v);
            nan = _mm256_or_ps(nan, _mm256_cmp_ps::<_CMP_UNORD_Q>(v, v));
            i += 8;
        }
        let mut lanes = [0.0f32; 8];
        _mm256_storeu_ps(lanes.as_mut_ptr(), m);
        let mut out = lanes.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let mut any_nan = _mm256_movemask_ps(nan) != 0;
        for &v in &x[i..] {
            out = out.max(v);
            any_nan |= v.is_nan();
        }
        if any_nan { f32::NAN } else { out }
    }
}
