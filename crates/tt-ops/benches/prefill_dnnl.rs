//! Prefill products on Phi-3-mini shapes: native kernels, our AMX tile kernel and oneDNN (AMX /
//! AVX-512 BF16).
//!
//! Cases: `m = 155` and `1024` rows of bf16-valued activations times bf16 weights, for each
//! projection of a layer and the LM head, whole (1x1 mesh) and as one device's shard of a 2x4 mesh
//! (an `N/8` row slice for column-parallel layers, a `K/8` column view read in place for the
//! row-parallel ones). Each is run with `set_gemm_mode(Native)`, `(Amx)` and `(Dnnl)`; the amx and
//! dnnl cases are skipped, with the reason printed, where AMX or oneDNN is not usable. Prints one summary line
//! per case: median and best GFLOP/s, and which path ran.
//!
//! Run: `cargo bench -p tt-ops --bench prefill_dnnl -- --warm-up-time 1 --measurement-time 3`
//! (filter with a substring, e.g. `m155`).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "support/lcg.rs"]
mod lcg;

use std::sync::Mutex;
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, Throughput};
use half::bf16;
use tt_ops::kernels::{
    DnnlStatus, GemmMode, amx_usable, dnnl_status, matmul_bf16_strided, path_counts, set_gemm_mode,
};

/// Deterministic pseudo-random bf16 values in [-1, 1).
fn fill(len: usize, seed: u64) -> Vec<bf16> {
    lcg::values(len, seed).map(bf16::from_f32).collect()
}

/// Per-call times recorded from criterion's timing loop.
#[derive(Default)]
struct Samples(Mutex<Vec<f64>>);

impl Samples {
    fn time(&self, iters: u64, mut f: impl FnMut()) -> Duration {
        let t = Instant::now();
        for _ in 0..iters {
            f();
        }
        let d = t.elapsed();
        self.0.lock().unwrap().push(d.as_secs_f64() / iters as f64);
        d
    }

    fn stats(&self) -> Option<(f64, f64)> {
        let mut v = self.0.lock().unwrap().clone();
        v.sort_by(f64::total_cmp);
        v.first().map(|&best| (v[v.len() / 2], best))
    }
}

/// One weight matrix `[n, ldw]` and the product read from it: `k` columns (all when `k == ldw`).
struct Case {
    name: &'static str,
    n: usize,
    k: usize,
    ldw: usize,
}

fn main() {
    let status = dnnl_status();
    eprintln!("rayon threads {}", rayon::current_num_threads());
    eprintln!("oneDNN: {status}");
    let dnnl_ok = !matches!(status, DnnlStatus::Unavailable(_));
    // Phi-3-mini: hidden 3072, intermediate 8192, vocabulary 32064; 2x4 shards are N/8 or K/8.
    let cases = [
        Case {
            name: "qkv",
            n: 9216,
            k: 3072,
            ldw: 3072,
        },
        Case {
            name: "o_proj",
            n: 3072,
            k: 3072,
            ldw: 3072,
        },
        Case {
            name: "gate_up",
            n: 16384,
            k: 3072,
            ldw: 3072,
        },
        Case {
            name: "down",
            n: 3072,
            k: 8192,
            ldw: 8192,
        },
        Case {
            name: "lm_head",
            n: 32064,
            k: 3072,
            ldw: 3072,
        },
        Case {
            name: "qkv/8",
            n: 1152,
            k: 3072,
            ldw: 3072,
        },
        Case {
            name: "o_proj/8",
            n: 3072,
            k: 384,
            ldw: 3072,
        },
        Case {
            name: "gate_up/8",
            n: 2048,
            k: 3072,
            ldw: 3072,
        },
        Case {
            name: "down/8",
            n: 3072,
            k: 1024,
            ldw: 8192,
        },
        Case {
            name: "lm_head/8",
            n: 4008,
            k: 3072,
            ldw: 3072,
        },
    ];
    let mut c = Criterion::default().sample_size(10).configure_from_args();
    let mut summary = Vec::new();
    for m in [155usize, 1024] {
        let mut group = c.benchmark_group(format!("prefill_m{m}"));
        for case in &cases {
            let w = fill(case.n * case.ldw, case.n as u64);
            let x: Vec<f32> = fill(m * case.k, m as u64)
                .iter()
                .map(|v| v.to_f32())
                .collect();
            let mut out = vec![0.0f32; m * case.n];
            let flops = 2.0 * (m * case.k * case.n) as f64;
            group.throughput(Throughput::Elements(flops as u64));
            for (label, mode) in [
                ("native", GemmMode::Native),
                ("amx", GemmMode::Amx),
                ("dnnl", GemmMode::Dnnl),
            ] {
                if mode == GemmMode::Dnnl && !dnnl_ok {
                    eprintln!("m={m} {} dnnl: skipped ({status})", case.name);
                    continue;
                }
                if mode == GemmMode::Amx && !amx_usable() {
                    eprintln!("m={m} {} amx: skipped (no AMX-BF16 tile state)", case.name);
                    continue;
                }
                set_gemm_mode(mode);
                let samples = Samples::default();
                let before = path_counts();
                group.bench_function(BenchmarkId::new(case.name, label), |b| {
                    b.iter_custom(|iters| {
                        samples.time(iters, || {
                            matmul_bf16_strided(&x, &w, case.ldw, &mut out, m, case.k, case.n)
                        })
                    })
                });
                let ran = path_counts().since(before);
                if let Some((median, best)) = samples.stats() {
                    summary.push(format!(
                        "m={m:4} {:10} {label:6} median {:7.1} GFLOP/s  best {:7.1} GFLOP/s  \
                         ({median:.4} s; calls gemm {} amx {} dnnl {})",
                        case.name,
                        flops / median / 1e9,
                        flops / best / 1e9,
                        ran.native,
                        ran.amx,
                        ran.dnnl
                    ));
                }
            }
        }
        group.finish();
    }
    set_gemm_mode(GemmMode::Auto);
    for line in summary {
        eprintln!("{line}");
    }
}
