//! Decode's memory side: one activation row against many weight matrices that together are far
//! larger than the caches (as a decode step reads every layer's weights once), packed
//! (bfloat8_b HiFi2 and bfloat4_b LoFi, the `accuracy` and `performance` presets' kernels)
//! against bf16 `linear`. Prints ms per pass over all matrices and the weight bytes read per
//! second. Weights are 3072 x N (default 8192, Phi-3-mini's FF1 shape; a 2x4 mesh's devices hold
//! shards such as N = 1152), `L` of them (default 12: 600 MB in bf16). Run:
//! `cargo run --release -p tt-ops --example packed_stream -- [L] [passes] [N]`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

#[path = "../benches/support/lcg.rs"]
mod lcg;

use std::time::Instant;

use tt_numerics::{Accumulation, MathFidelity, OpSettings, StorageFormat};
use tt_ops::{DType, DeviceWeight, Tensor, device_kernel_counts, device_linear, linear};

const K: usize = 3072;

/// Deterministic pseudo-random values in [-1, 1).
fn fill(len: usize, seed: u64) -> Vec<f32> {
    lcg::values(len, seed).collect()
}

/// Best and median ms of `passes` runs of `f` over every matrix.
fn time(passes: usize, mut f: impl FnMut()) -> (f64, f64) {
    f();
    let mut v: Vec<f64> = (0..passes)
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed().as_secs_f64() * 1e3
        })
        .collect();
    v.sort_by(f64::total_cmp);
    (v[0], v[v.len() / 2])
}

fn main() {
    let mut args = std::env::args().skip(1);
    let layers: usize = args.next().map_or(12, |s| s.parse().unwrap());
    let passes: usize = args.next().map_or(10, |s| s.parse().unwrap());
    let n: usize = args.next().map_or(8192, |s| s.parse().unwrap());
    let x = Tensor::from_f32(fill(K, 2), &[1, K]).unwrap();
    let bf16: Vec<Tensor> = (0..layers)
        .map(|l| Tensor::from_f32_as(&fill(n * K, l as u64 + 1), &[n, K], DType::Bf16).unwrap())
        .collect();
    let presets = [
        (StorageFormat::Bfp8B, MathFidelity::HiFi2, "bfp8 HiFi2"),
        (StorageFormat::Bfp4B, MathFidelity::LoFi, "bfp4 LoFi"),
    ];
    println!(
        "{layers} matrices of {n} x {K}, one row, {} threads",
        rayon::current_num_threads()
    );
    let (best, median) = time(passes, || {
        for w in &bf16 {
            std::hint::black_box(linear(&x, w).unwrap());
        }
    });
    let bytes = (layers * n * K * 2) as f64;
    println!(
        "bf16 linear: best {best:.2} ms, median {median:.2} ms per pass, {:.1} GB/s (best)",
        bytes / best / 1e6
    );
    for (format, fidelity, name) in presets {
        let settings = OpSettings::new(
            format,
            fidelity,
            Accumulation::Bf16,
            StorageFormat::Bf16,
            "packed_stream",
        );
        let packed: Vec<DeviceWeight> = bf16
            .iter()
            .map(|w| DeviceWeight::pack(w, format).unwrap())
            .collect();
        let bytes: usize = packed.iter().map(DeviceWeight::byte_size).sum();
        // The kernel one call runs (bfloat4_b rows may take another than bfloat8_b).
        let before = device_kernel_counts();
        device_linear(&x, &packed[0], &settings).unwrap();
        let kernel = device_kernel_counts()
            .since(&before)
            .first_used()
            .map_or("none", |k| k.name());
        let (best, median) = time(passes, || {
            for w in &packed {
                std::hint::black_box(device_linear(&x, w, &settings).unwrap());
            }
        });
        println!(
            "{name} ({kernel}): best {best:.2} ms, median {median:.2} ms per pass, {:.1} GB/s (best)",
            bytes as f64 / best / 1e6
        );
    }
}
