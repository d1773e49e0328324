//! Machine probes printed beside effective kernel figures: plain-sum read bandwidth and the
//! register-only FMA peak, both on every thread of the rayon pool.
//!
//! They measure what this machine can do right now (its bandwidth changes state within seconds),
//! so benchmarks sample them in the same run as the kernels they judge.

use std::hint::black_box;
use std::time::Instant;

use rayon::prelude::*;

/// Read bandwidth in GB/s (1e9 bytes/s) of a plain parallel sum over a `bytes`-long buffer: the
/// median of `reps` passes (after one untimed pass that faults the pages in). Use a buffer well
/// past the last-level cache. The buffer is on 2 MiB pages where the kernel allows, as the
/// kernels' large buffers are ([`crate::pages`]).
pub fn read_bandwidth_gbs(bytes: usize, reps: usize) -> f64 {
    let words = (bytes / 8).max(1);
    let mut buf: Vec<u64> = crate::pages::zeroed_vec(words);
    for (i, v) in buf.iter_mut().enumerate() {
        *v = i as u64;
    }
    let chunk = words.div_ceil(rayon::current_num_threads() * 4).max(4096);
    let pass = || -> u64 {
        buf.par_chunks(chunk)
            .map(|c| c.iter().fold(0u64, |a, &v| a.wrapping_add(v)))
            .reduce(|| 0, u64::wrapping_add)
    };
    black_box(pass());
    let mut rates: Vec<f64> = (0..reps.max(1))
        .map(|_| {
            let t = Instant::now();
            black_box(pass());
            (words * 8) as f64 / t.elapsed().as_secs_f64() / 1e9
        })
        .collect();
    rates.sort_by(f64::total_cmp);
    rates[rates.len() / 2]
}

/// Independent accumulator chains in the FMA loop (latency 4 x 2 ports needs >= 8).
const CHAINS: usize = 12;
/// Iterations of one timed burst per thread (12 x 8 x 2 FLOP each; ~25 ms at 3.8 GHz). Bursts
/// last about as long as the kernel calls judged against them: 5 ms bursts on this machine read up
/// to 4% higher, a turbo transient that no 50 ms call sustains.
const ITERS: u64 = 16_000_000;
/// Timed bursts; the best one is the peak.
const BURSTS: usize = 10;

/// Peak f32 GFLOP/s of fused multiply-adds on register operands, all rayon threads at once: the
/// best of several ~25 ms bursts (the best, so that a burst undisturbed by other processes
/// counts). 256-bit AVX2+FMA where available (what the kernels use), else a portable loop the
/// compiler vectorises for the baseline target.
pub fn fma_peak_gflops() -> f64 {
    let threads = rayon::current_num_threads();
    black_box(rayon::broadcast(|_| fma_loop(black_box(ITERS))));
    (0..BURSTS)
        .map(|_| {
            let t = Instant::now();
            let sums: Vec<f32> = rayon::broadcast(|_| fma_loop(black_box(ITERS)));
            black_box(sums);
            let flops = threads as f64 * ITERS as f64 * (CHAINS * 8 * 2) as f64;
            flops / t.elapsed().as_secs_f64() / 1e9
        })
        .fold(0.0, f64::max)
}

/// `ITERS` rounds of `CHAINS` 8-lane FMAs on registers; returns a value depending on all of them.
fn fma_loop(iters: u64) -> f32 {
    #[cfg(target_arch = "x86_64")]
    if let super::isa::Isa::Avx2Fma(_) = super::isa::Isa::detect() {
        // SAFETY: detect() returned the AVX2+FMA variant, so the CPU supports both.
        return unsafe { fma_loop_avx2(iters) };
    }
    let mut acc = [[1.0f32; 8]; CHAINS];
    let (a, b) = (black_box(0.999_999f32), black_box(1e-7f32));
    for _ in 0..iters {
        for c in acc.iter_mut() {
            for v in c.iter_mut() {
                *v = *v * a + b;
            }
        }
    }
    acc.iter().flatten().sum()
}

/// AVX2 form of [`fma_loop`].
///
/// # Safety
/// The CPU must support AVX2 and FMA.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn fma_loop_avx2(iters: u64) -> f32 {
    use std::arch::x86_64::*;
    let a = _mm256_set1_ps(black_box(0.999_999));
    let b = _mm256_set1_ps(black_box(1e-7));
    let mut acc = [_mm256_set1_ps(1.0); CHAINS];
    for _ in 0..iters {
        for v in acc.iter_mut() {
            *v = _mm256_fmadd_ps(*v, a, b);
        }
    }
    let mut s = _mm256_setzero_ps();
    for v in acc {
        s = _mm256_add_ps(s, v);
    }
    super::gemv_avx2::hsum(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probes_return_plausible_rates() {
        let bw = read_bandwidth_gbs(8 << 20, 3);
        assert!(bw.is_finite() && bw > 0.1, "bandwidth {bw}");
        let peak = fma_peak_gflops();
        assert!(peak.is_finite() && peak > 0.1, "FMA peak {peak}");
    }
}
