//! A row-parallel layer's prefill on a 2x4 mesh, piece by piece: the whole product (a 1x1 mesh),
//! every device's column block in one call (`kernels::matmul_bf16_column_blocks`), the same
//! through `linear_column_blocks` (tensors in and out), each block alone (strided or contiguous
//! weights), and what `linear_column_blocks` spends around the product (eight output buffers
//! zeroed by `vec!` or taken lazily from `pages::zeroed_vec`, then written; the activations
//! gathered into one matrix). Best of 3, after one untimed call. Run:
//! `cargo run --release -p tt-ops --example row_parallel_prefill -- [m] [k]` (default 1024 x 8192,
//! Phi-3-mini's `down_proj`; 3072 for `o_proj`). With xtask's allocator settings:
//! `MALLOC_MMAP_THRESHOLD_=268435456 MALLOC_TRIM_THRESHOLD_=67108864`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]
#[path = "../benches/support/lcg.rs"]
mod lcg;
use half::bf16;
use std::time::Instant;
fn main() {
    let mut a = std::env::args().skip(1);
    let m: usize = a.next().map_or(1024, |s| s.parse().unwrap());
    let k: usize = a.next().map_or(8192, |s| s.parse().unwrap());
    let n = 3072;
    let blocks = 8;
    let kb = k / blocks;
    let w: Vec<bf16> = lcg::values(n * k, 1).map(bf16::from_f32).collect();
    let x: Vec<f32> = lcg::values(m * k, 2)
        .map(|v| bf16::from_f32(v).to_f32())
        .collect();
    let flops = (2 * m * k * n) as f64;
    let t = |f: &mut dyn FnMut()| {
        f();
        let mut b = f64::MAX;
        for _ in 0..3 {
            let t = Instant::now();
            f();
            b = b.min(t.elapsed().as_secs_f64());
        }
        b
    };
    let mut out = vec![0f32; m * n];
    let whole = t(&mut || tt_ops::kernels::matmul_bf16(&x, &w, &mut out, m, k, n));
    // Line-aligned, as `linear_column_blocks` makes the model's outputs: the kernel's
    // streaming stores need it.
    let mut outb = vec![0f32; m * n * blocks + 16];
    let start = outb.as_ptr().align_offset(64);
    let outb = &mut outb[start..start + m * n * blocks];
    let cb = t(&mut || tt_ops::kernels::matmul_bf16_column_blocks(&x, &w, outb, m, k, n, blocks));
    // each block alone, weights as a strided view
    let mut xb = vec![0f32; m * kb];
    let alone = t(&mut || {
        for b in 0..blocks {
            for i in 0..m {
                xb[i * kb..(i + 1) * kb].copy_from_slice(&x[i * k + b * kb..i * k + (b + 1) * kb]);
            }
            tt_ops::kernels::matmul_bf16_strided(&xb, &w[b * kb..], k, &mut out, m, kb, n);
        }
    });
    // each block alone, contiguous weights
    let wc: Vec<Vec<bf16>> = (0..blocks)
        .map(|b| {
            (0..n)
                .flat_map(|j| w[j * k + b * kb..j * k + (b + 1) * kb].to_vec())
                .collect()
        })
        .collect();
    let contig = t(&mut || {
        for b in 0..blocks {
            for i in 0..m {
                xb[i * kb..(i + 1) * kb].copy_from_slice(&x[i * k + b * kb..i * k + (b + 1) * kb]);
            }
            tt_ops::kernels::matmul_bf16(&xb, &wc[b], &mut out, m, kb, n);
        }
    });
    let xs: Vec<tt_ops::Tensor> = (0..blocks)
        .map(|b| {
            tt_ops::Tensor::from_f32(
                (0..m)
                    .flat_map(|i| x[i * k + b * kb..i * k + (b + 1) * kb].to_vec())
                    .collect(),
                &[m, kb],
            )
            .unwrap()
        })
        .collect();
    let wt = tt_ops::Tensor::from_f32_as(
        &w.iter().map(|v| v.to_f32()).collect::<Vec<_>>(),
        &[n, k],
        tt_ops::DType::Bf16,
    )
    .unwrap();
    let refs: Vec<&tt_ops::Tensor> = xs.iter().collect();
    let lcb = t(&mut || {
        std::hint::black_box(tt_ops::linear_column_blocks(&refs, &wt).unwrap());
    });
    println!(
        "linear_column_blocks {:.1} GFLOP/s ({:.1} ms per call)",
        flops / lcb / 1e9,
        lcb * 1e3
    );
    let ta = t(&mut || {
        let mut v: Vec<Vec<f32>> = (0..blocks).map(|_| vec![0.0f32; m * n]).collect();
        for b in &mut v {
            b.fill(1.0);
        }
        std::hint::black_box(&v);
    });
    let tz = t(&mut || {
        let mut v: Vec<Vec<f32>> = (0..blocks)
            .map(|_| tt_ops::pages::zeroed_vec(m * n))
            .collect();
        for b in &mut v {
            b.fill(1.0);
        }
        std::hint::black_box(&v);
    });
    let tx = t(&mut || {
        let mut xa = vec![0.0f32; m * k];
        for (b, xt) in xs.iter().enumerate() {
            let xv = xt.as_f32().unwrap();
            for i in 0..m {
                xa[i * k + b * kb..i * k + (b + 1) * kb].copy_from_slice(&xv[i * kb..(i + 1) * kb]);
            }
        }
        std::hint::black_box(&xa);
    });
    println!(
        "8 outputs vec! + fill: {:.1} ms; zeroed_vec + fill: {:.1} ms; x_all: {:.1} ms",
        ta * 1e3,
        tz * 1e3,
        tx * 1e3
    );
    println!(
        "m={m} k={k} n={n}: whole {:.1} GFLOP/s; column_blocks {:.1}; 8 strided {:.1}; 8 contiguous {:.1}",
        flops / whole / 1e9,
        flops / cb / 1e9,
        flops / alone / 1e9,
        flops / contig / 1e9
    );
}
