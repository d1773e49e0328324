//! Could AVX512-BF16's `vdpbf16ps` serve the packed kernels (`tt_ops::packed_gemv`)? Two
//! questions, measured on this CPU:
//! 1. Order: does it add a pair's two products to the f32 lane one at a time, each rounded to
//!    nearest even, odd element first? Then with the term of `k` in the odd half it would give
//!    the emulation's bits. Counts, over 200,000 random 16-lane calls on normal bf16 values, the
//!    lanes equal to that model, to the even-first order and to one rounding of the exact sum.
//! 2. Speed: instructions per nanosecond of `vdpbf16ps` (two products per lane) against
//!    `vfmadd` (one), both on registers, eight independent chains, and each one's latency.
//!
//! On the Xeon of docs/PERFORMANCE.md the order is the emulation's, but one `vdpbf16ps` costs
//! more than two FMAs, so the kernels keep FMA. Needs AVX-512 F and BF16; prints why not
//! otherwise. Run: `cargo run --release -p tt-ops --example dpbf16_order`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

#[cfg(target_arch = "x86_64")]
fn main() {
    if !(is_x86_feature_detected!("avx512f") && is_x86_feature_detected!("avx512bf16")) {
        println!("this CPU has no AVX512-BF16: nothing to measure");
        return;
    }
    // SAFETY: the CPU has AVX-512 F and BF16 (checked above).
    let (odd, even, once, total) = unsafe { dp::order(200_000) };
    println!(
        "{total} lanes equal to: odd-first sequential adds {odd}; even-first {even}; exact sum rounded once {once}"
    );
    // SAFETY: as above.
    unsafe { dp::speed() };
}

#[cfg(not(target_arch = "x86_64"))]
fn main() {
    println!("not an x86-64 CPU: nothing to measure");
}

#[cfg(target_arch = "x86_64")]
mod dp {
    use std::arch::x86_64::*;
    use std::time::Instant;

    /// A 64-bit LCG step.
    fn next(s: &mut u64) -> u64 {
        *s = s
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        *s >> 11
    }

    /// A random normal bf16 with its exponent within `spread` of 1.0.
    fn bf16(s: &mut u64, spread: i32) -> u16 {
        let r = next(s);
        let e = (127 + (r >> 1) as i32 % (2 * spread + 1) - spread) as u16;
        (((r & 1) as u16) << 15) | (e << 7) | ((r >> 20) & 0x7f) as u16
    }

    fn f(b: u16) -> f32 {
        f32::from_bits(u32::from(b) << 16)
    }

    /// # Safety
    /// AVX-512 F and BF16.
    #[target_feature(enable = "avx512f,avx512bf16")]
    pub unsafe fn order(calls: usize) -> (usize, usize, usize, usize) {
        let mut s = 12345u64;
        let (mut odd, mut even, mut once) = (0, 0, 0);
        for _ in 0..calls {
            let (mut a, mut b, mut acc) = ([0u16; 32], [0u16; 32], [0f32; 16]);
            for i in 0..32 {
                a[i] = bf16(&mut s, 20);
                b[i] = bf16(&mut s, 20);
            }
            for v in acc.iter_mut() {
                *v = f32::from_bits(
                    (u32::from(bf16(&mut s, 30)) << 16) | (next(&mut s) as u32 & 0xffff),
                );
            }
            // SAFETY: 64-byte reads of 32 u16 and 16 f32.
            let (va, vb, vc) = unsafe {
                (
                    _mm512_loadu_si512(a.as_ptr().cast()),
                    _mm512_loadu_si512(b.as_ptr().cast()),
                    _mm512_loadu_ps(acc.as_ptr()),
                )
            };
            // SAFETY: same-size vector types, any bits valid.
            let r = unsafe {
                _mm512_dpbf16_ps(
                    vc,
                    std::mem::transmute::<__m512i, __m512bh>(va),
                    std::mem::transmute::<__m512i, __m512bh>(vb),
                )
            };
            let mut out = [0f32; 16];
            // SAFETY: a 64-byte write of 16 f32.
            unsafe { _mm512_storeu_ps(out.as_mut_ptr(), r) };
            for j in 0..16 {
                let (p0, p1) = (f(a[2 * j]) * f(b[2 * j]), f(a[2 * j + 1]) * f(b[2 * j + 1]));
                let exact = f64::from(acc[j]) + f64::from(p0) + f64::from(p1);
                odd += usize::from(out[j].to_bits() == ((acc[j] + p1) + p0).to_bits());
                even += usize::from(out[j].to_bits() == ((acc[j] + p0) + p1).to_bits());
                once += usize::from(out[j].to_bits() == (exact as f32).to_bits());
            }
        }
        (odd, even, once, calls * 16)
    }

    const N: usize = 20_000_000;

    /// # Safety
    /// AVX-512 F and BF16.
    #[target_feature(enable = "avx512f,avx512bf16")]
    pub unsafe fn speed() {
        let time = |what: &str, per_iter: usize, run: &dyn Fn() -> f32| {
            let start = Instant::now();
            let r = run();
            let ns = start.elapsed().as_secs_f64() * 1e9 / (N * per_iter) as f64;
            println!("{what}: {ns:.3} ns per instruction (result {r})");
        };
        let one = _mm512_set1_ps(1.0);
        let (b, c) = (_mm512_set1_ps(1.000_000_1), _mm512_set1_ps(1e-9));
        // SAFETY: same-size vector types; 0x3f80 is bf16 1.0.
        let ones =
            unsafe { std::mem::transmute::<__m512i, __m512bh>(_mm512_set1_epi32(0x3f80_3f80)) };
        time("vfmadd231ps, 8 chains", 8, &|| {
            let mut a = [one; 8];
            for _ in 0..N {
                for x in a.iter_mut() {
                    *x = _mm512_fmadd_ps(*x, b, c);
                }
            }
            a.iter().fold(0.0, |s, &x| s + _mm512_reduce_add_ps(x))
        });
        time("vdpbf16ps, 8 chains", 8, &|| {
            let mut a = [one; 8];
            for _ in 0..N {
                for x in a.iter_mut() {
                    *x = _mm512_dpbf16_ps(*x, ones, ones);
                }
            }
            a.iter().fold(0.0, |s, &x| s + _mm512_reduce_add_ps(x))
        });
        time("vfmadd231ps, 1 chain (latency)", 1, &|| {
            let mut a = one;
            for _ in 0..N {
                a = _mm512_fmadd_ps(a, b, c);
            }
            _mm512_reduce_add_ps(a)
        });
        time("vdpbf16ps, 1 chain (latency)", 1, &|| {
            let mut a = one;
            for _ in 0..N {
                a = _mm512_dpbf16_ps(a, ones, ones);
            }
            _mm512_reduce_add_ps(a)
        });
    }
}
