//! `device_linear` (the host emulation of a Wormhole `ttnn.linear`) on Phi-3-mini-like shapes,
//! each through the kernel `device_linear` picks on this CPU (`fast`: the packed AVX-512 kernel
//! where it applies) and through the reference emulation (`reference`), same bits:
//! - decode: `m = 1`, `k = 3072`, `n = 8192`, bfp8 weights, HiFi2, bf16 accumulation; beside it
//!   the exact bf16-weight `linear` of the same shape (the `bf16` preset's kernel);
//! - decode, the performance preset's FF1/FF3: bfp4 weights, LoFi (on AMD's AVX-512 BF16,
//!   `packed_gemv_avx512bf16`);
//! - prefill: `m = 128`, `k = 3072`, `n = 1024`, bfp8, HiFi2 (on AVX2, `packed_prefill_avx2`; on
//!   AMD's AVX-512 BF16, `packed_prefill_avx512bf16`; `TT_OPS_DEVICE_KERNEL=avx512` times the
//!   AVX-512 F kernel there instead);
//!   where the CPU has AMX, also with each K-tile's sum on the tile unit
//!   (`KTileSums::MatrixUnit`, `_amx_k_tiles`; not the emulation's bits, see `k_tile_sums`).
//!
//! Also times `DeviceWeight::pack` of the decode weight. Run:
//! `cargo bench -p tt-ops --bench device_linear`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

#[path = "support/lcg.rs"]
mod lcg;

use std::time::Duration;

use criterion::{Criterion, Throughput};
use tt_numerics::{Accumulation, MathFidelity, OpSettings, StorageFormat};
use tt_ops::{
    DType, DeviceKernel, DeviceWeight, KTileSums, Tensor, device_kernel_counts, device_linear,
    device_linear_reference, linear, set_k_tile_sums,
};

const K: usize = 3072;

/// Deterministic pseudo-random values in [-1, 1).
fn fill(len: usize, seed: u64) -> Vec<f32> {
    lcg::values(len, seed).collect()
}

/// The kernel one call of `x` against `w` runs (a prefill may run another than a decode row,
/// bfloat4_b another than bfloat8_b).
fn kernel_of(x: &Tensor, w: &DeviceWeight, settings: &OpSettings) -> &'static str {
    let before = device_kernel_counts();
    device_linear(x, w, settings).unwrap();
    device_kernel_counts()
        .since(&before)
        .first_used()
        .map_or("none", |k| k.name())
}

fn main() {
    let mut c = Criterion::default().configure_from_args();
    let settings = OpSettings::new(
        StorageFormat::Bfp8B,
        MathFidelity::HiFi2,
        Accumulation::Bf16,
        StorageFormat::Bf16,
        "bench",
    );
    let mut group = c.benchmark_group("device_linear");
    group
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(4));
    for (m, n) in [(1usize, 8192usize), (128, 1024)] {
        let w = Tensor::from_f32_as(&fill(n * K, 1), &[n, K], DType::Bf16).unwrap();
        if m == 1 {
            group.throughput(Throughput::Elements((n * K) as u64));
            group.bench_function(format!("pack_n{n}_k{K}_bfp8"), |b| {
                b.iter(|| DeviceWeight::pack(&w, StorageFormat::Bfp8B).unwrap())
            });
        }
        let dw = DeviceWeight::pack(&w, StorageFormat::Bfp8B).unwrap();
        let x = Tensor::from_f32(fill(m * K, 2), &[m, K]).unwrap();
        group.throughput(Throughput::Elements((2 * m * n * K) as u64));
        let kernel = kernel_of(&x, &dw, &settings);
        group.bench_function(format!("m{m}_k{K}_n{n}_bfp8_hifi2_fast_{kernel}"), |b| {
            b.iter(|| device_linear(&x, &dw, &settings).unwrap())
        });
        group.bench_function(format!("m{m}_k{K}_n{n}_bfp8_hifi2_reference"), |b| {
            b.iter(|| device_linear_reference(&x, &dw, &settings).unwrap())
        });
        if m == 1 {
            group.bench_function(format!("m{m}_k{K}_n{n}_bf16_linear"), |b| {
                b.iter(|| linear(&x, &w).unwrap())
            });
        } else {
            // The K-tile sums on AMX, where one call shows that they ran there.
            set_k_tile_sums(KTileSums::MatrixUnit);
            let before = device_kernel_counts();
            device_linear(&x, &dw, &settings).unwrap();
            if device_kernel_counts()
                .since(&before)
                .get(DeviceKernel::MatrixUnit)
                > 0
            {
                group.bench_function(format!("m{m}_k{K}_n{n}_bfp8_hifi2_amx_k_tiles"), |b| {
                    b.iter(|| device_linear(&x, &dw, &settings).unwrap())
                });
            } else {
                eprintln!("no AMX on this CPU: the amx-k-tiles prefill is not measured");
            }
            set_k_tile_sums(KTileSums::InOrder);
        }
    }
    // The performance preset's FF1/FF3: bfloat4_b weights, LoFi, one decode row.
    let lofi = OpSettings::new(
        StorageFormat::Bfp4B,
        MathFidelity::LoFi,
        Accumulation::Bf16,
        StorageFormat::Bf16,
        "bench",
    );
    let n = 8192;
    let w = Tensor::from_f32_as(&fill(n * K, 1), &[n, K], DType::Bf16).unwrap();
    let dw = DeviceWeight::pack(&w, StorageFormat::Bfp4B).unwrap();
    let x = Tensor::from_f32(fill(K, 2), &[1, K]).unwrap();
    group.throughput(Throughput::Elements((2 * n * K) as u64));
    let kernel = kernel_of(&x, &dw, &lofi);
    group.bench_function(format!("m1_k{K}_n{n}_bfp4_lofi_fast_{kernel}"), |b| {
        b.iter(|| device_linear(&x, &dw, &lofi).unwrap())
    });
    group.bench_function(format!("m1_k{K}_n{n}_bfp4_lofi_reference"), |b| {
        b.iter(|| device_linear_reference(&x, &dw, &lofi).unwrap())
    });
    group.finish();
    c.final_summary();
}
