//! Dense matrix kernels on raw slices: `out = x @ w^T` with f32 accumulation.
//!
//! `w` is row-major `[n, k]` (the HF `nn.Linear` layout, one output feature per row), `x` is row-major
//! `[m, k]` and `out` row-major `[m, n]`. Weights are bf16 or f32; activations and accumulation are f32.
//!
//! Two strategies, chosen by `m`:
//! - `m <= GEMV_MAX_M` (decode): [`gemv`] streams each weight row once, widening bf16 to f32 in
//!   registers, and serves every activation row from it. Bound by memory bandwidth. When the
//!   activations are bf16 values, AMD's AVX-512 BF16 takes the weights as they lie instead
//!   ([`gemv_avx512bf16`], `vdpbf16ps`; fewer instructions per byte, so one core streams more).
//! - larger `m` (prefill): [`gemm`] packs weight panels to f32 (the bf16 widening folded into the
//!   packing) and runs a register-blocked [`microkernel`] over cache blocks. Bound by FMA throughput.
//!
//! Both split their work with rayon on the global pool (no pool of their own), so calling them from
//! inside an outer `par_iter` (one task per simulated device) nests without oversubscribing cores.
//! AVX2+FMA code is selected at run time ([`isa`]); a portable scalar path serves other CPUs and the
//! tests check both against an f64 reference.
//!
//! Prefill-sized products with bf16 weights and bf16-valued activations may instead run on the
//! CPU's matrix units: our own AMX tile kernel ([`amx_gemm`], which reads the weights in place;
//! its tile-register steps, [`amx_tiles`], are shared with the block-float and attention kernels),
//! or oneDNN (AMX / AVX-512 BF16), loaded at run time when present. [`path`] decides per call and
//! reports which path ran; [`dnnl`] binds the library and [`dnnl_gemm`] runs its matmul.

pub(crate) mod amx_gemm;
pub(crate) mod amx_tiles;
mod dnnl;
mod dnnl_gemm;
mod elem;
mod gemm;
mod gemv;
#[cfg(target_arch = "x86_64")]
mod gemv_avx2;
#[cfg(target_arch = "x86_64")]
mod gemv_avx512bf16;
#[cfg(target_arch = "x86_64")]
mod gemv_blocks;
mod isa;
mod microkernel;
mod out;
mod pack;
pub mod path;
pub mod probe;
mod scratch;
mod transpose16;

#[cfg(test)]
mod amx_gemm_tests;
#[cfg(test)]
mod dnnl_tests;
#[cfg(test)]
mod reference;

use std::mem::MaybeUninit;

pub use amx_tiles::TileRegisters;
use elem::WeightElem;
use isa::Isa;
pub use path::{
    DNNL_MIN_M, DnnlStatus, GemmMode, GemmPath, PathCounts, amx_usable, describe_path, dnnl_status,
    gemm_mode, gemv_bf16_usable, path_counts, set_gemm_mode,
};

/// Largest `m` served by the streaming GEMV path; larger `m` uses the packed GEMM.
pub(crate) const GEMV_MAX_M: usize = 8;

/// `out[m*n] = x[m*k] @ w^T` where `w` is row-major `[n, k]` (HF `nn.Linear` layout) in bf16,
/// with f32 accumulation. Overwrites `out`.
///
/// Parallel internally (rayon, global pool). Callers validate shapes.
///
/// # Panics
/// If `x.len() != m*k`, `w.len() != n*k` or `out.len() != m*n` (a caller bug; checked once per call
/// because the fast paths read through raw pointers).
pub fn matmul_bf16(x: &[f32], w: &[half::bf16], out: &mut [f32], m: usize, k: usize, n: usize) {
    dispatch(x, w, k, out, m, k, n);
}

/// [`matmul_bf16`] with weight rows `ldw >= k` elements apart: row `j` of the `[n, k]` matrix is
/// `w[j*ldw .. j*ldw + k]`. Serves column blocks of a wider matrix without copying them (a
/// row-parallel shard read straight from a checkpoint).
///
/// # Panics
/// If `ldw < k`, `x.len() != m*k`, `w` is shorter than `(n-1)*ldw + k` or `out.len() != m*n`.
#[allow(clippy::too_many_arguments)]
pub fn matmul_bf16_strided(
    x: &[f32],
    w: &[half::bf16],
    ldw: usize,
    out: &mut [f32],
    m: usize,
    k: usize,
    n: usize,
) {
    dispatch(x, w, ldw, out, m, k, n);
}

/// `out[m*n] = x[m*k] @ w^T` where `w` is row-major `[n, k]` in f32. Overwrites `out`.
///
/// Same contract, strategy and panics as [`matmul_bf16`].
pub fn matmul_f32(x: &[f32], w: &[f32], out: &mut [f32], m: usize, k: usize, n: usize) {
    matmul_with(Isa::detect(), x, w, k, out, m, k, n);
}

/// [`matmul_f32`] with weight rows `ldw >= k` elements apart (see [`matmul_bf16_strided`]).
#[allow(clippy::too_many_arguments)]
pub fn matmul_f32_strided(
    x: &[f32],
    w: &[f32],
    ldw: usize,
    out: &mut [f32],
    m: usize,
    k: usize,
    n: usize,
) {
    matmul_with(Isa::detect(), x, w, ldw, out, m, k, n);
}

/// The row-parallel products of `blocks` devices in one pass: for each block `b`,
/// `out[b] = x[:, b*kb..(b+1)*kb] @ w[:, b*kb..(b+1)*kb]^T` with `kb = k / blocks`, `x [m, k]`
/// (the devices' activations side by side), `w [n, k]` contiguous bf16 and `out [blocks, m, n]`.
///
/// For small `m` with `kb` a multiple of 16 (on AVX2) it streams `w` once, left to right, instead
/// of reading each device's column block with a stride (see the `gemv_blocks` module); where the
/// AMX tile kernel takes the product, every block runs in one call of it; otherwise it runs one
/// strided [`matmul_bf16_strided`] per block. Results are the same either way.
///
/// # Panics
/// If `blocks` is 0 or does not divide `k`, or the slice lengths do not match.
#[allow(clippy::too_many_arguments)]
pub fn matmul_bf16_column_blocks(
    x: &[f32],
    w: &[half::bf16],
    out: &mut [f32],
    m: usize,
    k: usize,
    n: usize,
    blocks: usize,
) {
    column_blocks_with(Isa::detect(), true, x, w, out, m, k, n, blocks);
}

/// [`matmul_bf16_column_blocks`] with each block's result in a buffer of its own: `outs[b]`
/// (`[m, n]` each) instead of one `[blocks, m, n]` slice, so a caller can hand the buffers on
/// without copying them.
///
/// # Panics
/// If `outs` is empty, its length does not divide `k`, or the slice lengths do not match.
pub fn matmul_bf16_column_blocks_into(
    x: &[f32],
    w: &[half::bf16],
    outs: &mut [&mut [f32]],
    m: usize,
    k: usize,
    n: usize,
) {
    column_blocks_into(Isa::detect(), true, x, w, outs, m, k, n);
}

/// [`matmul_bf16_column_blocks`] with the instruction set chosen by the caller, and the matrix-unit
/// paths (AMX, oneDNN; [`path`]) allowed or not.
#[allow(clippy::too_many_arguments)]
pub(crate) fn column_blocks_with<W: WeightElem>(
    isa: Isa,
    matrix_units: bool,
    x: &[f32],
    w: &[W],
    out: &mut [f32],
    m: usize,
    k: usize,
    n: usize,
    blocks: usize,
) {
    assert!(
        blocks > 0 && Some(out.len()) == m.checked_mul(n).and_then(|e| e.checked_mul(blocks)),
        "matmul_column_blocks: slice lengths do not match m={m}, k={k}, n={n}, blocks={blocks}"
    );
    let mut outs: Vec<&mut [f32]> = if m * n == 0 {
        (0..blocks).map(|_| <&mut [f32]>::default()).collect()
    } else {
        out.chunks_exact_mut(m * n).collect()
    };
    column_blocks_into(isa, matrix_units, x, w, &mut outs, m, k, n);
}

/// [`matmul_bf16_column_blocks_into`] with the instruction set chosen by the caller, and the
/// matrix-unit paths allowed or not.
#[allow(clippy::too_many_arguments)]
pub(crate) fn column_blocks_into<W: WeightElem>(
    isa: Isa,
    matrix_units: bool,
    x: &[f32],
    w: &[W],
    outs: &mut [&mut [f32]],
    m: usize,
    k: usize,
    n: usize,
) {
    let blocks = outs.len();
    assert!(
        blocks > 0
            && k.is_multiple_of(blocks)
            && Some(x.len()) == m.checked_mul(k)
            && Some(w.len()) == n.checked_mul(k)
            && outs.iter().all(|o| Some(o.len()) == m.checked_mul(n)),
        "matmul_column_blocks: slice lengths do not match m={m}, k={k}, n={n}, blocks={blocks}"
    );
    let kb = k / blocks;
    if m == 0 || n == 0 {
        return;
    }
    if kb == 0 {
        outs.iter_mut().for_each(|o| o.fill(0.0));
        return;
    }
    #[cfg(target_arch = "x86_64")]
    if m <= GEMV_MAX_M
        && on_gemv_bf16(isa, x, w, |token, xb, wb| {
            gemv_avx512bf16::gemv_column_blocks(token, xb, wb, outs, m, k, n)
        })
    {
        return;
    }
    #[cfg(target_arch = "x86_64")]
    if let Isa::Avx2Fma(token) = isa
        && m <= GEMV_MAX_M
        && kb.is_multiple_of(16)
    {
        path::record(GemmPath::Gemv);
        gemv_blocks::gemv_column_blocks(token, x, w, outs, m, k, n);
        return;
    }
    // Every block in one pass of the AMX kernel, where it runs ...
    if matrix_units && let Some(wb) = W::as_bf16(w) {
        // SAFETY: the AMX kernel writes only f32 results through the views.
        let mut views: Vec<&mut [MaybeUninit<f32>]> = outs
            .iter_mut()
            .map(|o| unsafe { out::as_unwritten(o) })
            .collect();
        if path::try_amx_blocks(x, wb, k, &mut views, m, kb, n, false) {
            return;
        }
    }
    // ... else one strided product per block, on that block's activation columns copied out.
    let mut xb = vec![0.0f32; m * kb];
    for (b, out_b) in outs.iter_mut().enumerate() {
        for (i, row) in xb.chunks_exact_mut(kb).enumerate() {
            row.copy_from_slice(&x[i * k + b * kb..i * k + (b + 1) * kb]);
        }
        let wb = &w[b * kb..(n - 1) * k + (b + 1) * kb];
        if !(matrix_units && try_matrix_units(&xb, wb, k, out_b, m, kb, n)) {
            matmul_with(isa, &xb, wb, k, out_b, m, kb, n);
        }
    }
}

/// oneDNN if [`path`] sends the call there, else the native kernels on this CPU's best ISA.
#[allow(clippy::too_many_arguments)]
fn dispatch<W: WeightElem>(
    x: &[f32],
    w: &[W],
    ldw: usize,
    out: &mut [f32],
    m: usize,
    k: usize,
    n: usize,
) {
    if !try_matrix_units(x, w, ldw, out, m, k, n) {
        matmul_with(Isa::detect(), x, w, ldw, out, m, k, n);
    }
}

/// [`path::try_matrix_units`] for bf16 weights (after the same shape checks as the native kernels);
/// false for f32 weights.
#[allow(clippy::too_many_arguments)]
fn try_matrix_units<W: WeightElem>(
    x: &[f32],
    w: &[W],
    ldw: usize,
    out: &mut [f32],
    m: usize,
    k: usize,
    n: usize,
) -> bool {
    let Some(w) = W::as_bf16(w) else {
        return false;
    };
    let shapes_ok = Some(x.len()) == m.checked_mul(k)
        && ldw >= k
        && (n == 0 || n.checked_mul(ldw).and_then(|e| (e - ldw).checked_add(k)) <= Some(w.len()))
        && Some(out.len()) == m.checked_mul(n);
    shapes_ok && path::try_matrix_units(x, w, ldw, out, m, k, n)
}

/// Runs `run` on the AVX-512 BF16 GEMV ([`gemv_avx512bf16`]) and counts the call when the
/// caller's instruction set is the vector one, this CPU has that kernel, the weights are bf16 and
/// every activation is a bf16 value; false (nothing run) otherwise.
#[cfg(target_arch = "x86_64")]
fn on_gemv_bf16<W: WeightElem>(
    isa: Isa,
    x: &[f32],
    w: &[W],
    run: impl FnOnce(gemv_avx512bf16::GemvBf16, &[half::bf16], &[half::bf16]),
) -> bool {
    if let Isa::Avx2Fma(_) = isa
        && let Some(token) = gemv_avx512bf16::GemvBf16::detect()
        && let Some(wb) = W::as_bf16(w)
        && gemv_avx512bf16::with_bf16_activations(x, |xb| run(token, xb, wb)).is_some()
    {
        path::record(GemmPath::GemvBf16);
        return true;
    }
    false
}

/// The native kernels, with the instruction set chosen by the caller (tests force the scalar path
/// through it).
#[allow(clippy::too_many_arguments)]
pub(crate) fn matmul_with<W: WeightElem>(
    isa: Isa,
    x: &[f32],
    w: &[W],
    ldw: usize,
    out: &mut [f32],
    m: usize,
    k: usize,
    n: usize,
) {
    // Checked in release builds too: the kernels below read and write through raw pointers.
    assert!(
        Some(x.len()) == m.checked_mul(k)
            && ldw >= k
            && (n == 0
                || n.checked_mul(ldw).and_then(|e| (e - ldw).checked_add(k)) <= Some(w.len()))
            && Some(out.len()) == m.checked_mul(n),
        "matmul: slice lengths do not match m={m}, k={k}, n={n}, ldw={ldw}"
    );
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        out.fill(0.0);
        return;
    }
    if m <= GEMV_MAX_M {
        #[cfg(target_arch = "x86_64")]
        if on_gemv_bf16(isa, x, w, |token, xb, wb| {
            gemv_avx512bf16::gemv(token, xb, wb, ldw, out, m, k, n)
        }) {
            return;
        }
        path::record(GemmPath::Gemv);
        gemv::gemv(isa, x, w, ldw, out, m, k, n);
    } else {
        path::record(GemmPath::Native);
        gemm::gemm(isa, x, w, ldw, out, m, k, n);
    }
}

#[cfg(test)]
mod tests {
    use super::reference::{assert_close, case_strategy, matmul_ref, random_case};
    use super::*;
    use proptest::prelude::*;

    fn check_all_isas(m: usize, k: usize, n: usize, seed: u64) {
        let (x, wf, wb) = random_case(m, k, n, seed);
        let want_b = matmul_ref(&x, &wb, m, k, n);
        let want_f = matmul_ref(&x, &wf, m, k, n);
        for isa in Isa::available() {
            let mut got = vec![f32::NAN; m * n];
            matmul_with(isa, &x, &wb, k, &mut got, m, k, n);
            assert_close(&got, &want_b, &format!("bf16 {isa:?} m={m} k={k} n={n}"));
            let mut got = vec![f32::NAN; m * n];
            matmul_with(isa, &x, &wf, k, &mut got, m, k, n);
            assert_close(&got, &want_f, &format!("f32 {isa:?} m={m} k={k} n={n}"));
        }
    }

    #[test]
    fn public_entry_points_match_reference() {
        let (m, k, n) = (3, 40, 7);
        let (x, wf, wb) = random_case(m, k, n, 7);
        let mut got = vec![0.0; m * n];
        matmul_bf16(&x, &wb, &mut got, m, k, n);
        assert_close(&got, &matmul_ref(&x, &wb, m, k, n), "matmul_bf16");
        matmul_f32(&x, &wf, &mut got, m, k, n);
        assert_close(&got, &matmul_ref(&x, &wf, m, k, n), "matmul_f32");
    }

    /// A column block `c0..c0+k` of a wider `[n, ldw]` matrix, read in place (`ldw` apart) on
    /// every ISA and both paths, equals the product with the block copied out.
    fn check_strided(m: usize, k: usize, n: usize, extra: usize, c0: usize, seed: u64) {
        let ldw = k + extra;
        let c0 = c0.min(extra);
        let (x, _, _) = random_case(m, k, n, seed);
        let (_, wide_f, wide_b) = random_case(1, ldw, n, seed ^ 0x5eed);
        let block = |w: &[half::bf16]| -> Vec<half::bf16> {
            (0..n)
                .flat_map(|j| w[j * ldw + c0..j * ldw + c0 + k].to_vec())
                .collect()
        };
        let block_f: Vec<f32> = (0..n)
            .flat_map(|j| wide_f[j * ldw + c0..j * ldw + c0 + k].to_vec())
            .collect();
        let want_b = matmul_ref(&x, &block(&wide_b), m, k, n);
        let want_f = matmul_ref(&x, &block_f, m, k, n);
        // The view ends k elements into the last row: nothing past it may be read.
        let end = (n - 1) * ldw + c0 + k;
        for isa in Isa::available() {
            let mut got = vec![f32::NAN; m * n];
            matmul_with(isa, &x, &wide_b[c0..end], ldw, &mut got, m, k, n);
            assert_close(
                &got,
                &want_b,
                &format!("strided bf16 {isa:?} m={m} k={k} n={n} ldw={ldw}"),
            );
            let mut got = vec![f32::NAN; m * n];
            matmul_with(isa, &x, &wide_f[c0..end], ldw, &mut got, m, k, n);
            assert_close(
                &got,
                &want_f,
                &format!("strided f32 {isa:?} m={m} k={k} n={n} ldw={ldw}"),
            );
        }
    }

    #[test]
    fn strided_weights_on_both_paths() {
        for &(m, k, n, extra, c0) in &[
            (1, 96, 70, 288, 96),
            (1, 17, 3, 5, 5),
            (4, 384, 130, 1152, 384),
            (8, 33, 65, 1, 1),
            (9, 64, 13, 192, 128),
            (40, 520, 100, 8, 3),
            (130, 96, 7, 96, 0),
        ] {
            check_strided(m, k, n, extra, c0, (m * 31 + k + n) as u64);
        }
        let (x, _, wb) = random_case(2, 8, 3, 1);
        let mut got = vec![0.0; 6];
        matmul_bf16_strided(&x, &wb, 8, &mut got, 2, 8, 3);
        assert_close(&got, &matmul_ref(&x, &wb, 2, 8, 3), "matmul_bf16_strided");
    }

    /// Every block's product against the reference on the block copied out.
    fn check_column_blocks(m: usize, kb: usize, n: usize, blocks: usize, seed: u64) {
        let k = kb * blocks;
        let (x, wf, wb) = random_case(m, k, n, seed);
        let block = |b: usize| -> (Vec<f32>, Vec<half::bf16>) {
            let xb = (0..m).flat_map(|i| x[i * k + b * kb..i * k + (b + 1) * kb].to_vec());
            let wbk = (0..n).flat_map(|j| wb[j * k + b * kb..j * k + (b + 1) * kb].to_vec());
            (xb.collect(), wbk.collect())
        };
        for isa in Isa::available() {
            let mut got = vec![f32::NAN; blocks * m * n];
            column_blocks_with(isa, false, &x, &wb, &mut got, m, k, n, blocks);
            let mut got_f = vec![f32::NAN; blocks * m * n];
            column_blocks_with(isa, false, &x, &wf, &mut got_f, m, k, n, blocks);
            for b in 0..blocks {
                let (xb, wbb) = block(b);
                let at = b * m * n..(b + 1) * m * n;
                let what = format!("{isa:?} m={m} kb={kb} n={n} blocks={blocks} b={b}");
                assert_close(&got[at.clone()], &matmul_ref(&xb, &wbb, m, kb, n), &what);
                let wfb: Vec<f32> = (0..n)
                    .flat_map(|j| wf[j * k + b * kb..j * k + (b + 1) * kb].to_vec())
                    .collect();
                assert_close(&got_f[at], &matmul_ref(&xb, &wfb, m, kb, n), &what);
            }
        }
    }

    #[test]
    fn column_blocks_match_each_device_alone() {
        for &(m, kb, n, blocks) in &[
            (1, 384, 200, 8),
            (1, 16, 5, 3),
            (2, 32, 130, 4),
            (3, 48, 64, 2),
            (8, 96, 70, 8),
            (1, 17, 9, 3),
            (9, 32, 40, 2),
            (5, 0, 4, 3),
        ] {
            check_column_blocks(m, kb, n, blocks, (m * 131 + kb + n + blocks) as u64);
        }
    }

    #[test]
    #[should_panic(expected = "ldw=3")]
    fn stride_shorter_than_a_row_panics() {
        matmul_bf16_strided(&[1.0; 4], &[half::bf16::ONE; 16], 3, &mut [0.0; 4], 1, 4, 4);
    }

    #[test]
    fn degenerate_shapes() {
        // k = 0: the empty sum is zero and out is overwritten.
        let mut out = vec![5.0; 6];
        matmul_f32(&[], &[], &mut out, 2, 0, 3);
        assert_eq!(out, vec![0.0; 6]);
        // m = 0 or n = 0: nothing to write.
        matmul_bf16(&[], &[half::bf16::ONE; 4], &mut [], 0, 4, 1);
        matmul_bf16(&[1.0; 4], &[], &mut [], 1, 4, 0);
    }

    #[test]
    fn both_paths_on_block_boundaries() {
        // Shapes straddling the GEMV/GEMM switch, the 16-wide chunks, KC and the 6x16 tile.
        for &(m, k, n) in &[
            (1, 16, 4),
            (8, 33, 13),
            (9, 16, 6),
            (16, 257, 97),
            (17, 512, 12),
            (33, 300, 190),
        ] {
            check_all_isas(m, k, n, (m * 1000 + k * 10 + n) as u64);
        }
    }

    #[test]
    fn nested_inside_an_outer_parallel_loop() {
        // Eight simulated devices each calling the kernels from inside an outer rayon loop; shapes
        // large enough that the inner calls split their work too.
        use rayon::prelude::*;
        let cases: Vec<_> = (0..8u64)
            .map(|d| {
                let (m, k, n) = if d % 2 == 0 {
                    (1, 200, 700)
                } else {
                    (20, 130, 150)
                };
                (m, k, n, random_case(m, k, n, d))
            })
            .collect();
        let outs: Vec<Vec<f32>> = cases
            .par_iter()
            .map(|(m, k, n, (x, _, wb))| {
                let mut out = vec![f32::NAN; m * n];
                matmul_bf16(x, wb, &mut out, *m, *k, *n);
                out
            })
            .collect();
        for ((m, k, n, (x, _, wb)), got) in cases.iter().zip(&outs) {
            assert_close(
                got,
                &matmul_ref(x, wb, *m, *k, *n),
                &format!("device m={m}"),
            );
        }
    }

    #[test]
    #[should_panic(expected = "slice lengths")]
    fn mismatched_lengths_panic() {
        let mut out = vec![0.0; 2];
        matmul_f32(&[1.0; 3], &[1.0; 4], &mut out, 1, 2, 2);
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]
        #[test]
        fn random_shapes_match_reference((m, k, n, seed) in case_strategy()) {
            check_all_isas(m, k, n, seed);
        }

        #[test]
        fn random_column_blocks_match_reference(
            (m, k, n, seed) in case_strategy(),
            extra in 0usize..200,
            c0 in 0usize..200,
        ) {
            check_strided(m, k, n, extra, c0, seed);
        }

        #[test]
        fn random_column_blocks(m in 1usize..=12, kb16 in 0usize..6, odd in 0usize..2, n in 1usize..150,
                                blocks in 1usize..9, seed: u64) {
            let kb = kb16 * 16 + odd * 5;
            check_column_blocks(m, kb, n, blocks, seed);
        }
    }
}
