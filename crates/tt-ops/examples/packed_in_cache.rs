//! The packed kernels' own speed, without the memory: `device_linear` on a weight small enough
//! for the core's L2 cache (default 1024 x 1024, bfloat8_b HiFi2 and bfloat4_b LoFi, bf16
//! accumulation), best of many calls, with the kernel each call ran, and the bf16 `linear` of the
//! same weight beside them. Run one thread to time one
//! core: `RAYON_NUM_THREADS=1 cargo run --release -p tt-ops --example packed_in_cache -- [M] [K N]`
//! (`TT_OPS_DEVICE_KERNEL=avx2` times the AVX2 kernel on an AVX-512 CPU, `=avx512` the AVX-512 F
//! kernel where prefills would run the AVX-512 BF16 one).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use std::time::Instant;

use tt_numerics::{Accumulation, MathFidelity, OpSettings, StorageFormat};
use tt_ops::{DType, DeviceWeight, Tensor, device_kernel_counts, device_linear, linear};

fn main() {
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .map(|a| a.parse().expect("arguments are numbers: M [K N]"))
        .collect();
    let m = args.first().copied().unwrap_or(1);
    let (k, n) = match args[..] {
        [_, k, n, ..] => (k, n),
        _ => (1024, 1024),
    };
    let w: Vec<f32> = (0..n * k)
        .map(|i| ((i * 7919 % 1000) as f32 / 1000.0 - 0.5) * 0.1)
        .collect();
    let x: Vec<f32> = (0..m * k)
        .map(|i| (i * 104_729 % 1000) as f32 / 1000.0 - 0.5)
        .collect();
    let w = Tensor::from_f32_as(&w, &[n, k], DType::Bf16).unwrap();
    let x = Tensor::from_f32(x, &[m, k]).unwrap();
    let calls = (3_000_000_000 / (m * k * n).max(1)).clamp(5, 3000);
    let gflops = |best: f64| 2.0 * (m * k * n) as f64 / best / 1e9;
    for (format, fidelity) in [
        (StorageFormat::Bfp8B, MathFidelity::HiFi2),
        (StorageFormat::Bfp4B, MathFidelity::LoFi),
    ] {
        let s = OpSettings::new(
            format,
            fidelity,
            Accumulation::Bf16,
            StorageFormat::Bf16,
            "example",
        );
        let dw = DeviceWeight::pack(&w, format).unwrap();
        // The kernel of this call (a prefill may run another than a decode row).
        let before = device_kernel_counts();
        device_linear(&x, &dw, &s).unwrap();
        let kernel = device_kernel_counts()
            .since(&before)
            .first_used()
            .map_or("none", |k| k.name());
        let mut best = f64::MAX;
        for _ in 0..calls {
            let start = Instant::now();
            std::hint::black_box(device_linear(&x, &dw, &s).unwrap());
            best = best.min(start.elapsed().as_secs_f64());
        }
        println!(
            "{format} {fidelity} {}: m={m} k={k} n={n}: best of {calls} {:.1} us ({:.1} GFLOP/s)",
            kernel,
            best * 1e6,
            gflops(best)
        );
    }
    // Beside them, the bf16 preset's kernel on the same bf16 weight.
    let mut best = f64::MAX;
    for _ in 0..calls {
        let start = Instant::now();
        std::hint::black_box(linear(&x, &w).unwrap());
        best = best.min(start.elapsed().as_secs_f64());
    }
    println!(
        "bf16 linear: m={m} k={k} n={n}: best of {calls} {:.1} us ({:.1} GFLOP/s)",
        best * 1e6,
        gflops(best)
    );
}
