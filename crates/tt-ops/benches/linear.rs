//! Linear (matmul) kernels on Phi-3-mini shapes, judged against machine probes taken in the same run.
//!
//! Prints, besides criterion's own lines: the plain-sum read bandwidth sampled before and after
//! (this machine flips between two bandwidth states within seconds), the register-only FMA peak,
//! and one summary line per case (median over criterion's samples, and the best sample):
//! - decode: `m = 1` (and `m = 8`), `k = 3072`, `n = 9216`, bf16 weights, cycling over more than
//!   1 GB of distinct weight matrices so caches cannot help; figure = GB/s of weight bytes;
//! - prefill: `m = 128, 512` x `n = 1152, 9216`, `k = 3072`, bf16 weights; figure = GFLOP/s and its
//!   share of the measured FMA peak.
//!
//! Run: `cargo bench -p tt-ops --bench linear` (about one minute).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "support/lcg.rs"]
mod lcg;

use std::sync::Mutex;
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, SamplingMode, Throughput};
use half::bf16;
use tt_ops::kernels::{matmul_bf16, probe};

const K: usize = 3072;
/// Bytes of distinct weights the decode case cycles through.
const DECODE_SET_BYTES: usize = 1_100_000_000;
/// Buffer for the read-bandwidth probe (past every cache level).
const PROBE_BYTES: usize = 1 << 30;

/// Per-iteration times recorded from criterion's timing loop, so the summary uses the same samples.
#[derive(Default)]
struct Samples(Mutex<Vec<f64>>);

impl Samples {
    /// Times `iters` calls of `f`, records the per-call time, returns the total for criterion.
    fn time(&self, iters: u64, mut f: impl FnMut()) -> Duration {
        let t = Instant::now();
        for _ in 0..iters {
            f();
        }
        let d = t.elapsed();
        self.0.lock().unwrap().push(d.as_secs_f64() / iters as f64);
        d
    }

    /// (median, best) seconds per call; `None` if criterion skipped the case (a filter).
    fn stats(&self) -> Option<(f64, f64)> {
        let mut v = self.0.lock().unwrap().clone();
        v.sort_by(f64::total_cmp);
        v.first().map(|&best| (v[v.len() / 2], best))
    }
}

fn main() {
    let threads = rayon::current_num_threads();
    let peak_start = probe::fma_peak_gflops();
    let bw_before = probe::read_bandwidth_gbs(PROBE_BYTES, 5);
    eprintln!("probe: rayon threads {threads}");
    eprintln!("probe: read bandwidth (plain parallel sum, 1 GiB) before: {bw_before:.1} GB/s");
    eprintln!("probe: register-only FMA peak at start: {peak_start:.1} GFLOP/s");

    let mut c = Criterion::default().configure_from_args();
    let mut summary = Vec::new();

    // Decode: GEMV over many distinct matrices.
    {
        let n = 9216;
        let per = n * K;
        let count = DECODE_SET_BYTES.div_ceil(per * 2);
        // Allocated as the kernels' own large buffers are: on 2 MiB pages where the kernel allows.
        let mut weights = tt_ops::pages::zeroed_vec::<bf16>(per * count);
        for (w, v) in weights.iter_mut().zip(lcg::values(per * count, 1)) {
            *w = bf16::from_f32(v);
        }
        let mut group = c.benchmark_group("linear_decode");
        group.sample_size(30).warm_up_time(Duration::from_secs(2));
        group.measurement_time(Duration::from_secs(6));
        // f32 activations (the AVX2 GEMV) and bf16-valued ones (the `bf16` preset's: the AVX-512
        // BF16 GEMV where it runs, `tt_ops::kernels::gemv_bf16_usable`).
        for (m, acts) in [
            (1usize, "f32"),
            (1, "bf16"),
            (4, "f32"),
            (4, "bf16"),
            (8, "f32"),
            (8, "bf16"),
        ] {
            let x: Vec<f32> = lcg::values(m * K, 2)
                .map(|v| match acts {
                    "bf16" => bf16::from_f32(v).to_f32(),
                    _ => v,
                })
                .collect();
            let mut out = vec![0.0f32; m * n];
            let samples = Samples::default();
            let mut next = 0;
            group.throughput(Throughput::BytesDecimal((per * 2) as u64));
            let bw_at = probe::read_bandwidth_gbs(PROBE_BYTES, 3);
            group.bench_function(
                BenchmarkId::new(format!("m{m}_k{K}_n{n}_bf16_x{acts}_cycled"), count),
                |b| {
                    b.iter_custom(|iters| {
                        samples.time(iters, || {
                            let w = &weights[next * per..(next + 1) * per];
                            next = (next + 1) % count;
                            matmul_bf16(&x, w, &mut out, m, K, n);
                        })
                    })
                },
            );
            let bw_end = probe::read_bandwidth_gbs(PROBE_BYTES, 3);
            let Some((s, best)) = samples.stats() else {
                continue;
            };
            summary.push(format!(
                "linear m={m} k={K} n={n} bf16, {acts} activations, {count} distinct matrices ({:.2} GB): {:.3} ms/call, \
                 {:.1} GB/s of weight bytes (best sample {:.1} GB/s; plain-sum bandwidth just before / \
                 after: {bw_at:.1} / {bw_end:.1} GB/s)",
                (per * 2 * count) as f64 / 1e9,
                s * 1e3,
                (per * 2) as f64 / s / 1e9,
                (per * 2) as f64 / best / 1e9,
            ));
        }
        group.finish();
    }

    // Prefill: packed GEMM, judged against the higher of two FMA-peak samples (a sample disturbed
    // by another process can only read low).
    let peak_prefill = probe::fma_peak_gflops();
    let peak = peak_start.max(peak_prefill);
    eprintln!("probe: register-only FMA peak before prefill: {peak_prefill:.1} GFLOP/s");
    {
        let mut group = c.benchmark_group("linear_prefill");
        group.sample_size(10).sampling_mode(SamplingMode::Flat);
        group
            .warm_up_time(Duration::from_secs(1))
            .measurement_time(Duration::from_secs(4));
        for n in [1152usize, 9216] {
            let w: Vec<bf16> = lcg::values(n * K, 3).map(bf16::from_f32).collect();
            for m in [128usize, 512] {
                let x: Vec<f32> = lcg::values(m * K, 4).collect();
                let mut out = vec![0.0f32; m * n];
                let flops = 2 * m * K * n;
                let samples = Samples::default();
                group.throughput(Throughput::Elements(flops as u64));
                group.bench_function(format!("m{m}_k{K}_n{n}_bf16_flop"), |b| {
                    b.iter_custom(|iters| {
                        samples.time(iters, || matmul_bf16(&x, &w, &mut out, m, K, n))
                    })
                });
                let Some((s, best)) = samples.stats() else {
                    continue;
                };
                let gflops = flops as f64 / s / 1e9;
                summary.push(format!(
                    "linear m={m} k={K} n={n} bf16: {:.2} ms/call, {gflops:.1} GFLOP/s = {:.1}% of the \
                     measured FMA peak ({peak:.1}) (best sample {:.1} GFLOP/s)",
                    s * 1e3,
                    100.0 * gflops / peak,
                    flops as f64 / best / 1e9,
                ));
            }
        }
        group.finish();
    }

    let bw_after = probe::read_bandwidth_gbs(PROBE_BYTES, 5);
    eprintln!();
    eprintln!("==== linear summary ({threads} threads) ====");
    eprintln!(
        "read bandwidth (plain parallel sum): before {bw_before:.1} GB/s, after {bw_after:.1} GB/s"
    );
    eprintln!(
        "register-only FMA peak: {peak:.1} GFLOP/s (samples: {peak_start:.1} at start, \
         {peak_prefill:.1} before prefill)"
    );
    for line in &summary {
        eprintln!("{line}");
    }
    c.final_summary();
}
