//! Prefill attention of one device of a 2x4 Phi-3-mini mesh (4 heads, dh 96, causal) with bf16
//! Q, K and V, on each kernel this CPU has: the native one and (with AMX-BF16) the tile unit,
//! alternated. Prints the median ms per call and GFLOP/s (the causal half of `4 S^2 dh` per head).
//! A quick loop to profile under `perf record`; `cargo bench -p tt-ops --bench sdpa` is the
//! criterion benchmark.
//!
//! Run: `cargo run --release -p tt-ops --example sdpa_prefill [S] [calls] [amx|native|both]`
//! (defaults 1024, 20, both).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use std::time::Instant;

use tt_ops::{
    DType, SdpaOptions, Tensor, attention_counts, scaled_dot_product_attention,
    set_native_attention,
};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let s: usize = args.get(1).map_or(1024, |a| a.parse().unwrap());
    let calls: usize = args.get(2).map_or(20, |a| a.parse().unwrap());
    let which = args.get(3).map_or("both", String::as_str);
    let (nh, dh) = (4, 96);
    let n = nh * s * dh;
    // Deterministic values in [-2, 2), bf16.
    let vals = |seed: u64| -> Vec<f32> {
        let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        (0..n)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                let u = (x >> 40) as f32 / (1u64 << 24) as f32;
                half::bf16::from_f32(4.0 * u - 2.0).to_f32()
            })
            .collect()
    };
    let shape = [1, nh, s, dh];
    let q = Tensor::from_f32(vals(1), &shape).unwrap();
    let k = Tensor::from_f32_as(&vals(2), &shape, DType::Bf16).unwrap();
    let v = Tensor::from_f32_as(&vals(3), &shape, DType::Bf16).unwrap();
    let o = SdpaOptions::default();
    let flops = nh as f64 * 4.0 * dh as f64 * (s * (s + 1) / 2) as f64;
    let kernels: &[bool] = match which {
        "amx" => &[false],
        "native" => &[true],
        _ => &[true, false],
    };
    let mut times: Vec<Vec<f64>> = vec![Vec::new(); kernels.len()];
    for _ in 0..calls {
        for (i, &native) in kernels.iter().enumerate() {
            set_native_attention(native);
            let before = attention_counts();
            let t = Instant::now();
            std::hint::black_box(scaled_dot_product_attention(&q, &k, &v, &o).unwrap());
            times[i].push(t.elapsed().as_secs_f64());
            if !native && attention_counts().since(before).amx == 0 {
                println!("no AMX-BF16 here: the tile unit did not run");
                return;
            }
        }
    }
    for (&native, mut t) in kernels.iter().zip(times) {
        t.sort_by(f64::total_cmp);
        let median = t[t.len() / 2];
        println!(
            "S={s}, {nh} heads, dh {dh}, {}: {:.2} ms per call (median of {calls}), {:.1} GFLOP/s",
            if native { "native" } else { "amx" },
            median * 1e3,
            flops / median / 1e9
        );
    }
}
