//! Tests of the oneDNN path against the f64 reference and the native kernels. They run where
//! `libdnnl.so.2` loads and print why they are skipped where it does not.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use half::bf16;

use super::dnnl_gemm::{Ctx, NB, matmul};
use super::path::{self, to_bf16_exact};
use super::reference::{assert_close, column_block, matmul_ref, random_case};
use super::{GEMV_MAX_M, Isa, matmul_with};

/// `dnnl_unimplemented`: this oneDNN has no implementation of the primitive for this CPU.
const UNIMPLEMENTED: super::dnnl::Status = 3;

/// The context, or `None` after printing why these tests are skipped: oneDNN does not load, or
/// it has no bf16 matmul for this CPU (oneDNN 2.6 on a CPU without AVX-512, for one). Any other
/// failure of a 1x1x1 product fails the test.
fn ctx_or_skip(test: &str) -> Option<&'static Ctx> {
    let ctx = match Ctx::get() {
        Ok(c) => c,
        Err(why) => {
            println!("{test}: skipped, oneDNN is not usable here: {why}");
            return None;
        }
    };
    let one = [bf16::ONE];
    let mut out = [0f32];
    match matmul(ctx, &one, &one, 1, &mut out, 1, 1, 1) {
        Err(e) if e.status == UNIMPLEMENTED => {
            println!("{test}: skipped, this oneDNN has no bf16 matmul for this CPU ({e})");
            None
        }
        Err(e) => panic!("{test}: a 1x1x1 product failed: {e}"),
        Ok(()) => {
            assert_eq!(out[0], 1.0, "{test}: 1 x 1");
            Some(ctx)
        }
    }
}

/// Random activations rounded to bf16 (as under `Fidelity::Bf16`), as f32 and as bf16.
fn bf16_case(m: usize, k: usize, n: usize, seed: u64) -> (Vec<f32>, Vec<bf16>, Vec<bf16>) {
    let (x, _, w) = random_case(m, k, n, seed);
    let xb: Vec<bf16> = x.iter().map(|&v| bf16::from_f32(v)).collect();
    let xf = xb.iter().map(|v| v.to_f32()).collect();
    (xf, xb, w)
}

#[test]
fn matches_the_f64_reference() {
    let Some(ctx) = ctx_or_skip("matches_the_f64_reference") else {
        return;
    };
    // Odd and tail shapes in every dimension, one column block and several, Phi-3's K.
    for &(m, k, n) in &[
        (1, 1, 1),
        (9, 3, 5),
        (17, 33, 257),
        (31, 100, 600),
        (40, 512, 2 * NB),
        (155, 3072, 300),
        (64, 1024, NB + 1),
    ] {
        let (xf, xb, w) = bf16_case(m, k, n, (m * 7 + k * 3 + n) as u64);
        let mut got = vec![f32::NAN; m * n];
        matmul(ctx, &xb, &w, k, &mut got, m, k, n).unwrap();
        assert_close(
            &got,
            &matmul_ref(&xf, &w, m, k, n),
            &format!("dnnl m={m} k={k} n={n}"),
        );
    }
}

#[test]
fn strided_weights_read_in_place() {
    let Some(ctx) = ctx_or_skip("strided_weights_read_in_place") else {
        return;
    };
    // Columns c0..c0+k of a [n, ldw] matrix (a row-parallel shard), read with stride ldw.
    let (m, k, n, ldw, c0) = (33, 96, 300, 384, 192);
    let (xf, xb, _) = bf16_case(m, k, n, 3);
    let (_, _, wide) = bf16_case(1, ldw, n, 4);
    let block: Vec<bf16> = (0..n)
        .flat_map(|j| wide[j * ldw + c0..j * ldw + c0 + k].to_vec())
        .collect();
    let end = (n - 1) * ldw + c0 + k;
    let mut got = vec![f32::NAN; m * n];
    matmul(ctx, &xb, &wide[c0..end], ldw, &mut got, m, k, n).unwrap();
    assert_close(&got, &matmul_ref(&xf, &block, m, k, n), "strided");
    let mut copied = vec![f32::NAN; m * n];
    matmul(ctx, &xb, &block, k, &mut copied, m, k, n).unwrap();
    assert_eq!(got, copied, "a view and its copy give the same bits");
}

#[test]
fn results_do_not_depend_on_threads_or_column_blocks() {
    let Some(ctx) = ctx_or_skip("results_do_not_depend_on_threads_or_column_blocks") else {
        return;
    };
    let (m, k, n) = (155, 3072, 3 * NB + 40);
    let (_, xb, w) = bf16_case(m, k, n, 11);
    let run = |threads: usize| {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap();
        pool.install(|| {
            let mut out = vec![f32::NAN; m * n];
            matmul(ctx, &xb, &w, k, &mut out, m, k, n).unwrap();
            out
        })
    };
    let one = run(1);
    assert_eq!(one, run(2), "1 thread vs 2");
    assert_eq!(one, run(3), "1 thread vs 3");
    // A device's shard of the output rows, multiplied alone (as on its own MPI rank): columns
    // j0..j0+nj straddle block boundaries of the whole product at other offsets and widths.
    for &(m, k, n, j0, nj) in &[
        (155, 3072, 3 * NB + 40, 100, 400),
        (40, 1024, 2 * NB, 3, 300),
        (33, 100, NB + 7, 250, 13),
        (64, 33, 600, 1, 511),
        (1024, 384, 2 * NB + 1, 200, 100),
    ] {
        let (_, xb, w) = bf16_case(m, k, n, (m + k + n) as u64);
        let mut whole = vec![f32::NAN; m * n];
        matmul(ctx, &xb, &w, k, &mut whole, m, k, n).unwrap();
        let mut part = vec![f32::NAN; m * nj];
        matmul(ctx, &xb, &w[j0 * k..(j0 + nj) * k], k, &mut part, m, k, nj).unwrap();
        for i in 0..m {
            assert_eq!(
                &part[i * nj..(i + 1) * nj],
                &whole[i * n + j0..i * n + j0 + nj],
                "m={m} k={k} row {i}: a column's value depends on the block it falls in"
            );
        }
    }
}

#[test]
fn dispatch_takes_only_bf16_activations() {
    if ctx_or_skip("dispatch_takes_only_bf16_activations").is_none() {
        return;
    }
    let (m, k, n) = (48, 64, 40);
    let (x, _, w) = random_case(m, k, n, 5);
    // Full f32 activations (the f32 preset) are never rounded to bf16.
    assert!(to_bf16_exact(&x).is_none());
    let mut out = vec![f32::NAN; m * n];
    assert!(!path::try_matrix_units(&x, &w, k, &mut out, m, k, n));
    assert!(out.iter().all(|v| v.is_nan()), "out untouched");
    // bf16 activations convert exactly, both ways.
    let (xf, xb, _) = bf16_case(m, k, n, 5);
    assert_eq!(to_bf16_exact(&xf).unwrap(), xb);
    // And whichever path the mode picks, the public entry point agrees with the native kernel
    // to within the reference tolerance.
    let mut public = vec![f32::NAN; m * n];
    super::matmul_bf16(&xf, &w, &mut public, m, k, n);
    assert_close(&public, &matmul_ref(&xf, &w, m, k, n), "matmul_bf16");
}

#[test]
fn column_blocks_on_dnnl_equal_each_block_alone() {
    let Some(ctx) = ctx_or_skip("column_blocks_on_dnnl_equal_each_block_alone") else {
        return;
    };
    let (m, kb, n, blocks) = (GEMV_MAX_M + 33, 96, 70, 4);
    let k = kb * blocks;
    let (xf, _, w) = bf16_case(m, k, n, 8);
    let mut got = vec![f32::NAN; blocks * m * n];
    super::column_blocks_with(Isa::detect(), true, &xf, &w, &mut got, m, k, n, blocks);
    for b in 0..blocks {
        let xb = column_block(&xf, m, k, b * kb, kb);
        let wb = column_block(&w, n, k, b * kb, kb);
        let at = b * m * n..(b + 1) * m * n;
        assert_close(
            &got[at.clone()],
            &matmul_ref(&xb, &wb, m, kb, n),
            &format!("block {b}"),
        );
        // Bit-equal to the block multiplied alone on whichever path the mode picks.
        let mut alone = vec![f32::NAN; m * n];
        if !path::try_matrix_units(&xb, &wb, kb, &mut alone, m, kb, n) {
            matmul_with(Isa::detect(), &xb, &wb, kb, &mut alone, m, kb, n);
        }
        assert_eq!(&got[at], &alone[..], "block {b}");
    }
    let _ = ctx;
}

#[test]
fn status_names_the_path() {
    let status = path::dnnl_status();
    let text = status.to_string();
    assert!(text.starts_with("oneDNN"), "{text}");
    println!("{text}; m=155: {}", path::describe_path(155));
    assert!(path::describe_path(1).contains("gemv"));
}
