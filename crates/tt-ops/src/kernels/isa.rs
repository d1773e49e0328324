//! Run-time choice of the instruction set the kernels use.
//!
//! The AVX2+FMA variant carries an [`Avx2Fma`] token that can only be made after
//! `is_x86_feature_detected!` confirmed both features, so holding one is the proof that calling a
//! `#[target_feature(enable = "avx2,fma")]` function is sound.

/// Proof that this CPU executes AVX2 and FMA instructions (only [`Isa::detect`] makes one).
#[cfg(target_arch = "x86_64")]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Avx2Fma(());

/// The instruction set a kernel call runs with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Isa {
    /// Portable Rust; the compiler may vectorise it for the baseline target.
    Scalar,
    /// 256-bit AVX2 with fused multiply-add.
    #[cfg(target_arch = "x86_64")]
    Avx2Fma(Avx2Fma),
}

impl Isa {
    /// The best instruction set this CPU supports (std caches the CPUID probe, so this is cheap).
    pub(crate) fn detect() -> Self {
        #[cfg(target_arch = "x86_64")]
        {
            if std::arch::is_x86_feature_detected!("avx2")
                && std::arch::is_x86_feature_detected!("fma")
            {
                return Isa::Avx2Fma(Avx2Fma(()));
            }
        }
        Isa::Scalar
    }

    /// A short name for reports: `avx2+fma` or `scalar`.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Isa::Scalar => "scalar",
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2Fma(_) => "avx2+fma",
        }
    }

    /// Every instruction set usable on this CPU, scalar first (for tests that check each path).
    #[cfg(test)]
    pub(crate) fn available() -> Vec<Isa> {
        let mut all = vec![Isa::Scalar];
        let best = Isa::detect();
        if best != Isa::Scalar {
            all.push(best);
        }
        all
    }
}
