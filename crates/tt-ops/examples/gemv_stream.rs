//! The bf16 decode GEMV's memory side: one activation row against many bf16 weight matrices
//! that together are far larger than the caches, with f32 activations (the AVX2 kernel) and
//! with bf16-valued ones (the `bf16` preset's: the AVX-512 BF16 kernel where it runs), beside a
//! plain parallel sum of the same bytes. Prints GB/s of weights read (best of 6 passes), per
//! round. Threads: `RAYON_NUM_THREADS` (one thread shows what a single core streams). Run:
//! `cargo run --release -p tt-ops --example gemv_stream -- [L] [N] [rounds]` (default 12
//! matrices of 8192 x 3072, 600 MB; 3 rounds).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

#[path = "../benches/support/lcg.rs"]
mod lcg;

use std::time::Instant;

use half::bf16;
use tt_ops::kernels::{gemv_bf16_usable, path_counts, probe};
use tt_ops::{DType, Tensor, linear};

const K: usize = 3072;

/// Best seconds of 6 runs of `f`, after one untimed.
fn best(mut f: impl FnMut()) -> f64 {
    f();
    (0..6)
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed().as_secs_f64()
        })
        .fold(f64::MAX, f64::min)
}

fn main() {
    let mut args = std::env::args().skip(1);
    let layers: usize = args.next().map_or(12, |s| s.parse().unwrap());
    let n: usize = args.next().map_or(8192, |s| s.parse().unwrap());
    let rounds: usize = args.next().map_or(3, |s| s.parse().unwrap());
    let weights: Vec<Tensor> = (0..layers)
        .map(|l| {
            let v: Vec<f32> = lcg::values(n * K, l as u64 + 1).collect();
            Tensor::from_f32_as(&v, &[n, K], DType::Bf16).unwrap()
        })
        .collect();
    let x_f32: Vec<f32> = lcg::values(K, 99).collect();
    let x_bf16: Vec<f32> = x_f32.iter().map(|&v| bf16::from_f32(v).to_f32()).collect();
    let x_f32 = Tensor::from_f32(x_f32, &[1, K]).unwrap();
    let x_bf16 = Tensor::from_f32(x_bf16, &[1, K]).unwrap();
    let bytes = (layers * n * K * 2) as f64;
    println!(
        "{layers} matrices of {n} x {K} bf16 ({:.2} GB), one row, {} threads; AVX-512 BF16 GEMV here: {}",
        bytes / 1e9,
        rayon::current_num_threads(),
        gemv_bf16_usable()
    );
    let pass = |x: &Tensor| {
        for w in &weights {
            std::hint::black_box(linear(x, w).unwrap());
        }
    };
    for round in 0..rounds {
        let sum = probe::read_bandwidth_gbs(layers * n * K * 2, 3);
        let before = path_counts();
        let f32_acts = bytes / best(|| pass(&x_f32)) / 1e9;
        let mid = path_counts();
        let bf16_acts = bytes / best(|| pass(&x_bf16)) / 1e9;
        let (a, b) = (mid.since(before), path_counts().since(mid));
        println!(
            "round {round}: plain sum {sum:.1} GB/s; f32 activations {f32_acts:.1} GB/s (gemv x{}, gemv-bf16 x{}); bf16 activations {bf16_acts:.1} GB/s (gemv x{}, gemv-bf16 x{})",
            a.gemv, a.gemv_bf16, b.gemv, b.gemv_bf16
        );
    }
}
