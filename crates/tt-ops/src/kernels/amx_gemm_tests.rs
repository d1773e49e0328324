//! Tests of the AMX tile kernel against the f64 reference. They run where the CPU has AMX-BF16
//! and Linux grants the tile state, and print why they are skipped elsewhere.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use half::bf16;

use std::mem::MaybeUninit;

use super::amx_gemm::{Amx, STREAM_MIN_BYTES, matmul, matmul_blocks, pair_interleave};
use super::out::as_unwritten;
use super::reference::{assert_close, column_block, matmul_ref, random_case};

/// The token, or `None` after printing why the test is skipped.
fn amx_or_skip(test: &str) -> Option<Amx> {
    let amx = Amx::detect();
    if amx.is_none() {
        println!("{test}: skipped, this CPU or kernel gives no AMX-BF16 tile state");
    }
    amx
}

/// `out` as the kernel's output type.
fn view(out: &mut [f32]) -> &mut [MaybeUninit<f32>] {
    // SAFETY: the kernel writes only f32 results through the view.
    unsafe { as_unwritten(out) }
}

/// Random activations rounded to bf16 (as under `Fidelity::Bf16`) and bf16 weights.
fn bf16_case(m: usize, k: usize, n: usize, seed: u64) -> (Vec<f32>, Vec<bf16>) {
    let (x, _, w) = random_case(m, k, n, seed);
    let x = x.iter().map(|&v| bf16::from_f32(v).to_f32()).collect();
    (x, w)
}

#[test]
fn matches_the_f64_reference() {
    let Some(amx) = amx_or_skip("matches_the_f64_reference") else {
        return;
    };
    // Tails in m (tile halves, pairs, chunks) and n (short panels, tasks); Phi-3's K and shard K.
    for &(m, k, n) in &[
        (1, 32, 1),
        (9, 64, 5),
        (17, 96, 33),
        (32, 32, 32),
        (33, 128, 257),
        (64, 384, 300),
        (155, 3072, 100),
        (200, 8192, 40),
        (700, 1024, 70),
    ] {
        let (x, w) = bf16_case(m, k, n, (m * 7 + k * 3 + n) as u64);
        let mut got = vec![f32::NAN; m * n];
        assert!(matmul(amx, &x, &w, k, &mut got, m, k, n));
        assert_close(
            &got,
            &matmul_ref(&x, &w, m, k, n),
            &format!("amx m={m} k={k} n={n}"),
        );
    }
}

#[test]
fn strided_weights_read_in_place() {
    let Some(amx) = amx_or_skip("strided_weights_read_in_place") else {
        return;
    };
    // A column block of a wider matrix, as a row-parallel shard is read: rows ldw apart, the
    // view ending k values into its last row.
    let (m, k, n, ldw, c0) = (40, 384, 70, 3072, 768);
    let (x, _) = bf16_case(m, k, n, 3);
    let (_, wide) = bf16_case(1, ldw, n, 4);
    let block: Vec<bf16> = (0..n)
        .flat_map(|j| wide[j * ldw + c0..j * ldw + c0 + k].to_vec())
        .collect();
    let end = (n - 1) * ldw + c0 + k;
    let mut got = vec![f32::NAN; m * n];
    assert!(matmul(amx, &x, &wide[c0..end], ldw, &mut got, m, k, n));
    assert_close(&got, &matmul_ref(&x, &block, m, k, n), "strided amx");
}

#[test]
fn a_column_does_not_depend_on_its_task_or_panel() {
    let Some(amx) = amx_or_skip("a_column_does_not_depend_on_its_task_or_panel") else {
        return;
    };
    let (m, k, n) = (50, 256, 300);
    let (x, w) = bf16_case(m, k, n, 11);
    let mut all = vec![0.0; m * n];
    assert!(matmul(amx, &x, &w, k, &mut all, m, k, n));
    // Columns 270..300 alone: a short panel of their own, in another task.
    let (j0, nj) = (270, 30);
    let mut part = vec![0.0; m * nj];
    assert!(matmul(amx, &x, &w[j0 * k..], k, &mut part, m, k, nj));
    assert_columns_bitwise(&part, &all, n, j0);
}

/// `part` (`m` rows of `nj` values) equals columns `j0 .. j0 + nj` of `all` (rows of `n`) bit
/// for bit.
fn assert_columns_bitwise(part: &[f32], all: &[f32], n: usize, j0: usize) {
    let nj = part.len() / (all.len() / n);
    for (i, row) in part.chunks_exact(nj).enumerate() {
        for (j, v) in row.iter().enumerate() {
            assert_eq!(
                v.to_bits(),
                all[i * n + j0 + j].to_bits(),
                "row {i} column {}",
                j0 + j
            );
        }
    }
}

#[test]
fn a_streamed_output_equals_the_same_columns_stored_normally() {
    let Some(amx) = amx_or_skip("a_streamed_output_equals_the_same_columns_stored_normally") else {
        return;
    };
    // 32.03 MiB of output from a line-aligned buffer: the streaming stores run; 256 columns at
    // a time (1 MiB), normal stores do.
    let (m, k, n) = (1024, 32, 8200);
    assert!(m * n * 4 >= STREAM_MIN_BYTES && m * 256 * 4 < STREAM_MIN_BYTES);
    let (x, w) = bf16_case(m, k, n, 21);
    let mut buf = vec![f32::NAN; m * n + 16];
    let start = buf.as_ptr().align_offset(64);
    let all = &mut buf[start..start + m * n];
    assert!(matmul(amx, &x, &w, k, all, m, k, n));
    assert_close(all, &matmul_ref(&x, &w, m, k, n), "streamed amx");
    for j0 in (0..n).step_by(256) {
        let nj = 256.min(n - j0);
        let mut part = vec![f32::NAN; m * nj];
        assert!(matmul(amx, &x, &w[j0 * k..], k, &mut part, m, k, nj));
        assert_columns_bitwise(&part, all, n, j0);
    }
}

#[test]
fn blocks_in_one_pass_equal_each_block_alone() {
    let Some(amx) = amx_or_skip("blocks_in_one_pass_equal_each_block_alone") else {
        return;
    };
    // A row-parallel layer's devices: kb below, at and above one k chunk (512), tails in m and n.
    for &(m, kb, n, blocks) in &[(33, 64, 70, 3), (155, 384, 200, 8), (40, 544, 33, 2)] {
        let k = kb * blocks;
        let (x, w) = bf16_case(m, k, n, (m + kb + n + blocks) as u64);
        let mut outs = vec![vec![f32::NAN; m * n]; blocks];
        let mut views: Vec<&mut [MaybeUninit<f32>]> = outs.iter_mut().map(|o| view(o)).collect();
        assert!(matmul_blocks(amx, &x, &w, k, &mut views, m, kb, n, false));
        for (b, got) in outs.iter().enumerate() {
            let xb = column_block(&x, m, k, b * kb, kb);
            let wb = column_block(&w, n, k, b * kb, kb);
            let mut alone = vec![f32::NAN; m * n];
            assert!(matmul(amx, &xb, &w[b * kb..], k, &mut alone, m, kb, n));
            let what = format!("block {b} of {blocks}, m={m} kb={kb} n={n}");
            for (i, (g, a)) in got.iter().zip(&alone).enumerate() {
                assert_eq!(g.to_bits(), a.to_bits(), "{what}: element {i}");
            }
            assert_close(got, &matmul_ref(&xb, &wb, m, kb, n), &what);
        }
    }
    // kb not a multiple of 32: declined, nothing written.
    let (x, w) = bf16_case(40, 96, 8, 9);
    let mut outs = vec![vec![7.0f32; 40 * 8]; 2];
    let mut views: Vec<&mut [MaybeUninit<f32>]> = outs.iter_mut().map(|o| view(o)).collect();
    assert!(!matmul_blocks(
        amx, &x, &w, 96, &mut views, 40, 48, 8, false
    ));
    assert!(outs.iter().flatten().all(|&v| v == 7.0));
}

#[test]
fn declines_what_it_cannot_run() {
    let Some(amx) = amx_or_skip("declines_what_it_cannot_run") else {
        return;
    };
    // k not a multiple of 32.
    let (x, w) = bf16_case(40, 48, 8, 5);
    let mut out = vec![7.0; 40 * 8];
    assert!(!matmul(amx, &x, &w, 48, &mut out, 40, 48, 8));
    assert!(out.iter().all(|&v| v == 7.0));
    // An activation that is not a bf16 value.
    let (mut x, w) = bf16_case(40, 64, 8, 6);
    x[100] = 1.0 + f32::EPSILON;
    assert!(!matmul(amx, &x, &w, 64, &mut out, 40, 64, 8));
    assert!(out.iter().all(|&v| v == 7.0));
}

#[test]
fn pair_interleave_layout() {
    // Runs everywhere: the rearrangement is plain code.
    let (m, k) = (20, 64);
    let x: Vec<f32> = (0..m * k)
        .map(|i| bf16::from_f32(i as f32).to_f32())
        .collect();
    let v = pair_interleave(&x, m, k).unwrap();
    assert_eq!(v.len(), 32 * k);
    for i in 0..32 {
        for kk in 0..k {
            let (b, j, p, e) = (i / 16, i % 16, kk / 2, kk % 2);
            let got = v[((b * k / 2 + p) * 16 + j) * 2 + e];
            let want = if i < m {
                bf16::from_f32(x[i * k + kk]).to_bits()
            } else {
                0
            };
            assert_eq!(got, want, "row {i} k {kk}");
        }
    }
    assert!(pair_interleave(&[1.0 + f32::EPSILON, 0.0], 1, 2).is_none());
}
