//! Attention kernels on Phi-3-mini shapes, judged against the read bandwidth sampled in the same run.
//!
//! - decode: one token over one layer's cache at 4096 positions (32 heads, 32 KV heads, dh 96, bf16;
//!   K + V = 50.3 MB), contiguous and paged (block 64); the bench cycles over 4 distinct layer
//!   caches (201 MB) so the last-level cache cannot help. Figure: GB/s of cache bytes read.
//! - prefill: causal attention over 512 tokens, 32 heads, dh 96: f32, and bf16 Q, K, V on the
//!   native kernel and (with AMX-BF16) the tile unit. Figure: GFLOP/s (the causal half of
//!   `4 * S^2 * dh` per head).
//!
//! Also prints the plain-sum read bandwidth (before, around each decode case, after) and the
//! register-only FMA peak, sampled in the same run.
//!
//! Run: `cargo bench -p tt-ops --bench sdpa` (about a minute).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "support/lcg.rs"]
mod lcg;

use std::sync::Mutex;
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput};
use tt_ops::kernels::probe;
use tt_ops::{
    DType, PageTable, SdpaDecodeOptions, SdpaOptions, Tensor, attention_counts,
    scaled_dot_product_attention, sdpa_decode, set_native_attention,
};

const NH: usize = 32;
const DH: usize = 96;
const LEN: usize = 4096;
const LAYERS: usize = 4;
const PROBE_BYTES: usize = 1 << 30;

/// Deterministic pseudo-random values in [-1, 1).
fn fill(len: usize, seed: u64) -> Vec<f32> {
    lcg::values(len, seed).collect()
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

    /// Median seconds per call; `None` if criterion skipped the case (a filter).
    fn median(&self) -> Option<f64> {
        let mut v = self.0.lock().unwrap().clone();
        v.sort_by(f64::total_cmp);
        v.get(v.len() / 2).copied()
    }
}

fn main() {
    let threads = rayon::current_num_threads();
    let bw_before = probe::read_bandwidth_gbs(PROBE_BYTES, 5);
    let peak = probe::fma_peak_gflops();
    eprintln!("probe: register-only FMA peak: {peak:.1} GFLOP/s");
    eprintln!(
        "probe: rayon threads {threads}; read bandwidth (plain parallel sum, 1 GiB): {bw_before:.1} GB/s"
    );
    let mut c = Criterion::default().configure_from_args();
    let mut summary = Vec::new();

    // Decode over contiguous and paged bf16 caches.
    let shape = [1, NH, LEN, DH];
    let caches: Vec<(Tensor, Tensor)> = (0..LAYERS as u64)
        .map(|l| {
            let k =
                Tensor::from_f32_as(&fill(NH * LEN * DH, 2 * l + 1), &shape, DType::Bf16).unwrap();
            let v =
                Tensor::from_f32_as(&fill(NH * LEN * DH, 2 * l + 2), &shape, DType::Bf16).unwrap();
            (k, v)
        })
        .collect();
    let block = 64;
    let blocks = LEN / block;
    // Paged: the same rows, blocks in reversed order.
    let table = PageTable::new((0..blocks as i32).rev().collect(), 1, blocks).unwrap();
    let paged: Vec<(Tensor, Tensor)> = caches
        .iter()
        .map(|(k, v)| {
            let page = |t: &Tensor| {
                let src = t.as_bf16().unwrap();
                let mut dst = tt_ops::pages::zeroed_vec::<half::bf16>(src.len());
                for (logical, &phys) in table.entries().iter().enumerate() {
                    for h in 0..NH {
                        let s = (h * LEN + logical * block) * DH;
                        let d = ((phys as usize * NH + h) * block) * DH;
                        dst[d..d + block * DH].copy_from_slice(&src[s..s + block * DH]);
                    }
                }
                Tensor::from_bf16(dst, &[blocks, NH, block, DH]).unwrap()
            };
            (page(k), page(v))
        })
        .collect();
    let q = Tensor::from_f32(fill(NH * DH, 99), &[1, 1, NH, DH]).unwrap();
    let pos = [LEN as i32 - 1];
    let opts = SdpaDecodeOptions::default();
    let bytes = 2 * NH * LEN * DH * 2;
    {
        let mut group = c.benchmark_group("sdpa_decode");
        group
            .sample_size(40)
            .warm_up_time(Duration::from_secs(2))
            .measurement_time(Duration::from_secs(5));
        group.throughput(Throughput::BytesDecimal(bytes as u64));
        for (name, set, pt) in [
            ("contiguous", &caches, None),
            ("paged_block64", &paged, Some(&table)),
        ] {
            let samples = Samples::default();
            let mut next = 0;
            let bw_at = probe::read_bandwidth_gbs(PROBE_BYTES, 3);
            group.bench_function(format!("len{LEN}_nh{NH}_dh{DH}_bf16_{name}"), |b| {
                b.iter_custom(|iters| {
                    samples.time(iters, || {
                        let (k, v) = &set[next];
                        next = (next + 1) % LAYERS;
                        std::hint::black_box(sdpa_decode(&q, k, v, &pos, pt, &opts).unwrap());
                    })
                })
            });
            let bw_end = probe::read_bandwidth_gbs(PROBE_BYTES, 3);
            let Some(s) = samples.median() else {
                continue;
            };
            summary.push(format!(
                "sdpa_decode {name}: {LEN} positions, {NH} heads, dh {DH}, bf16 cache ({:.1} MB K+V, {LAYERS} \
                 layers cycled): {:.3} ms/call, {:.1} GB/s of cache bytes read (plain-sum bandwidth around it: \
                 {bw_at:.1} / {bw_end:.1} GB/s)",
                bytes as f64 / 1e6,
                s * 1e3,
                bytes as f64 / s / 1e9
            ));
        }
        group.finish();
    }

    // Prefill attention.
    {
        let s_len = 512;
        let q = Tensor::from_f32(fill(NH * s_len * DH, 7), &[1, NH, s_len, DH]).unwrap();
        let k = Tensor::from_f32(fill(NH * s_len * DH, 8), &[1, NH, s_len, DH]).unwrap();
        let v = Tensor::from_f32(fill(NH * s_len * DH, 9), &[1, NH, s_len, DH]).unwrap();
        let flops = NH as f64 * 4.0 * DH as f64 * (s_len * (s_len + 1) / 2) as f64;
        let mut group = c.benchmark_group("sdpa_prefill");
        group
            .sample_size(10)
            .warm_up_time(Duration::from_secs(1))
            .measurement_time(Duration::from_secs(4));
        group.throughput(Throughput::Elements(flops as u64));
        let samples = Samples::default();
        let o = SdpaOptions::default();
        group.bench_function(format!("causal_s{s_len}_nh{NH}_dh{DH}_f32"), |b| {
            b.iter_custom(|iters| {
                samples.time(iters, || {
                    std::hint::black_box(scaled_dot_product_attention(&q, &k, &v, &o).unwrap());
                })
            })
        });
        // The same with bf16 Q, K and V (every preset but f32): the native kernel, then the AMX
        // tile unit where this CPU has one.
        let as_bf16 = |t: &Tensor| t.to_dtype(DType::Bf16);
        let (kb, vb) = (as_bf16(&k), as_bf16(&v));
        let qb = Tensor::from_f32(as_bf16(&q).to_f32_vec(), q.shape()).unwrap();
        let mut bf16_samples = Vec::new();
        for native in [true, false] {
            set_native_attention(native);
            let before = attention_counts();
            scaled_dot_product_attention(&qb, &kb, &vb, &o).unwrap();
            let ran = attention_counts().since(before);
            let kernel = if ran.amx > 0 { "amx" } else { "native" };
            if !native && ran.amx == 0 {
                summary.push("sdpa prefill bf16 on the tile unit: no AMX-BF16 here".into());
                continue;
            }
            let samples = Samples::default();
            group.bench_function(
                format!("causal_s{s_len}_nh{NH}_dh{DH}_bf16_{kernel}"),
                |b| {
                    b.iter_custom(|iters| {
                        samples.time(iters, || {
                            std::hint::black_box(
                                scaled_dot_product_attention(&qb, &kb, &vb, &o).unwrap(),
                            );
                        })
                    })
                },
            );
            bf16_samples.push((kernel, samples.median()));
        }
        set_native_attention(false);
        group.finish();
        let f32_median = samples.median().map(|s| ("f32, native", s));
        let bf16_medians = bf16_samples
            .iter()
            .filter_map(|(kernel, s)| s.map(|s| (*kernel, s)))
            .map(|(kernel, s)| {
                (
                    if kernel == "amx" {
                        "bf16, amx"
                    } else {
                        "bf16, native"
                    },
                    s,
                )
            });
        for (what, s) in f32_median.into_iter().chain(bf16_medians) {
            summary.push(format!(
                "sdpa prefill causal S={s_len}, {NH} heads, dh {DH}, {what}: {:.2} ms/call, \
                 {:.1} GFLOP/s ({:.0}% of the measured FMA peak {peak:.1})",
                s * 1e3,
                flops / s / 1e9,
                100.0 * flops / s / 1e9 / peak
            ));
        }
    }

    let bw_after = probe::read_bandwidth_gbs(PROBE_BYTES, 5);
    eprintln!();
    eprintln!("==== sdpa summary ({threads} threads) ====");
    eprintln!(
        "read bandwidth (plain parallel sum): before {bw_before:.1} GB/s, after {bw_after:.1} GB/s"
    );
    for line in &summary {
        eprintln!("{line}");
    }
    c.final_summary();
}
