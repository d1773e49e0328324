//! Weight element types (bf16, f32) and how each widens to f32, in scalar and AVX2 form.

#[cfg(target_arch = "x86_64")]
use std::arch::x86_64::*;

use half::bf16;

mod sealed {
    pub trait Sealed {}
    impl Sealed for half::bf16 {}
    impl Sealed for f32 {}
}

/// A weight element the kernels can stream: widened to f32 exactly, accumulated in f32.
pub(crate) trait WeightElem: sealed::Sealed + Copy + Send + Sync + 'static {
    /// True if [`WeightElem::load16_avx2`] returns the even and the odd elements of the chunk
    /// (then activations must be laid out to match, see `gemv`); false if it returns them in order.
    const PAIRS_EVEN_ODD: bool;

    /// The exact f32 value of this weight.
    fn to_f32(self) -> f32;

    /// The slice as bf16 weights, if that is what they are (the oneDNN path takes only those).
    fn as_bf16(w: &[Self]) -> Option<&[bf16]>;

    /// Loads 16 consecutive weights as two f32 vectors: in order (`[0..8]`, `[8..16]`) or, when
    /// [`WeightElem::PAIRS_EVEN_ODD`], as (even-indexed, odd-indexed) elements.
    ///
    /// # Safety
    /// `p..p+16` must be readable and the CPU must support AVX2 and FMA.
    #[cfg(target_arch = "x86_64")]
    unsafe fn load16_avx2(p: *const Self) -> (__m256, __m256);

    /// Loads 8 consecutive weights as f32, in order.
    ///
    /// # Safety
    /// `p..p+8` must be readable and the CPU must support AVX2 and FMA.
    #[cfg(target_arch = "x86_64")]
    unsafe fn load8_avx2(p: *const Self) -> __m256;
}

impl WeightElem for bf16 {
    const PAIRS_EVEN_ODD: bool = true;

    fn as_bf16(w: &[Self]) -> Option<&[bf16]> {
        Some(w)
    }

    #[inline(always)]
    fn to_f32(self) -> f32 {
        // bf16 is the upper half of an f32: widening is a 16-bit shift, exact for every value.
        f32::from_bits(u32::from(self.to_bits()) << 16)
    }

    #[cfg(target_arch = "x86_64")]
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn load16_avx2(p: *const Self) -> (__m256, __m256) {
        // SAFETY: the caller guarantees 16 readable bf16 (32 bytes); loadu has no alignment need.
        let v = unsafe { _mm256_loadu_si256(p.cast::<__m256i>()) };
        // Each 32-bit lane holds element 2i in its low half and 2i+1 in its high half (little
        // endian). Shifting left by 16 gives the f32 of the even element; masking off the low
        // half gives the f32 of the odd one. Two ALU ops widen 16 weights.
        let even = _mm256_castsi256_ps(_mm256_slli_epi32::<16>(v));
        let odd = _mm256_castsi256_ps(_mm256_and_si256(
            v,
            _mm256_set1_epi32(0xFFFF_0000_u32 as i32),
        ));
        (even, odd)
    }

    #[cfg(target_arch = "x86_64")]
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn load8_avx2(p: *const Self) -> __m256 {
        // SAFETY: the caller guarantees 8 readable bf16 (16 bytes); loadu has no alignment need.
        let v = unsafe { _mm_loadu_si128(p.cast::<__m128i>()) };
        _mm256_castsi256_ps(_mm256_slli_epi32::<16>(_mm256_cvtepu16_epi32(v)))
    }
}

impl WeightElem for f32 {
    const PAIRS_EVEN_ODD: bool = false;

    fn as_bf16(_: &[Self]) -> Option<&[bf16]> {
        None
    }

    #[inline(always)]
    fn to_f32(self) -> f32 {
        self
    }

    #[cfg(target_arch = "x86_64")]
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn load16_avx2(p: *const Self) -> (__m256, __m256) {
        // SAFETY: the caller guarantees 16 readable f32; loadu has no alignment need.
        unsafe { (_mm256_loadu_ps(p), _mm256_loadu_ps(p.add(8))) }
    }

    #[cfg(target_arch = "x86_64")]
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn load8_avx2(p: *const Self) -> __m256 {
        // SAFETY: the caller guarantees 8 readable f32.
        unsafe { _mm256_loadu_ps(p) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::isa::Isa;

    #[test]
    fn bf16_widening_is_exact() {
        for v in [0.0f32, -0.0, 1.0, -2.5, 3.0e38, 1.0e-38, f32::INFINITY, 0.1] {
            let b = bf16::from_f32(v);
            assert_eq!(b.to_f32().to_bits(), WeightElem::to_f32(b).to_bits(), "{v}");
        }
    }

    #[cfg(target_arch = "x86_64")]
    #[test]
    fn avx2_loads_match_scalar() {
        let Isa::Avx2Fma(_) = Isa::detect() else {
            return;
        };
        let src: Vec<bf16> = (0..16)
            .map(|i| bf16::from_f32(i as f32 * 1.5 - 7.0))
            .collect();
        let (mut even, mut odd, mut first) = ([0f32; 8], [0f32; 8], [0f32; 8]);
        // SAFETY: detect() confirmed AVX2+FMA; src holds 16 elements; the outputs hold 8 f32 each.
        unsafe {
            let (e, o) = bf16::load16_avx2(src.as_ptr());
            _mm256_storeu_ps(even.as_mut_ptr(), e);
            _mm256_storeu_ps(odd.as_mut_ptr(), o);
            _mm256_storeu_ps(first.as_mut_ptr(), bf16::load8_avx2(src.as_ptr()));
        }
        for i in 0..8 {
            assert_eq!(even[i], src[2 * i].to_f32());
            assert_eq!(odd[i], src[2 * i + 1].to_f32());
            assert_eq!(first[i], src[i].to_f32());
        }
    }
}
