//! Test support: the naive f64 reference product, random cases and the tolerance check.

use half::bf16;
use proptest::prelude::*;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::elem::WeightElem;

/// Relative max error allowed (see [`assert_close`]).
pub(crate) const REL_TOL: f64 = 1e-5;

/// The exact product and the scale its rounding error is judged against.
pub(crate) struct Expected {
    /// `out[i, j] = sum_kk x[i, kk] * w[j, kk]`, in f64 (each product of two f32 is exact in f64).
    pub values: Vec<f64>,
    /// `max_ij sum_kk |x[i, kk] * w[j, kk]|`: the size of the terms summed. An f32 dot product's
    /// rounding error is bounded relative to this, not to the (possibly cancelled) result.
    pub scale: f64,
}

/// The naive reference product of `x` (`[m, k]`) and `w^T` (`w` is `[n, k]`).
pub(crate) fn matmul_ref<W: WeightElem>(
    x: &[f32],
    w: &[W],
    m: usize,
    k: usize,
    n: usize,
) -> Expected {
    let mut values = vec![0.0; m * n];
    let mut scale = 0.0f64;
    for i in 0..m {
        for j in 0..n {
            let (mut s, mut a) = (0.0f64, 0.0f64);
            for kk in 0..k {
                let p = f64::from(x[i * k + kk]) * f64::from(w[j * k + kk].to_f32());
                s += p;
                a += p.abs();
            }
            values[i * n + j] = s;
            scale = scale.max(a);
        }
    }
    Expected { values, scale }
}

/// Random activations in [-1, 1) and independent f32 and bf16 weights in [-1, 1).
pub(crate) fn random_case(
    m: usize,
    k: usize,
    n: usize,
    seed: u64,
) -> (Vec<f32>, Vec<f32>, Vec<bf16>) {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let x = (0..m * k).map(|_| rng.random_range(-1.0f32..1.0)).collect();
    let wf = (0..n * k).map(|_| rng.random_range(-1.0f32..1.0)).collect();
    let wb = (0..n * k)
        .map(|_| bf16::from_f32(rng.random_range(-1.0f32..1.0)))
        .collect();
    (x, wf, wb)
}

/// Columns `c0 .. c0 + width` of a row-major matrix of `rows` rows, `ld` values apart, as a
/// contiguous `[rows, width]` copy (one device's block of a row-parallel product).
pub(crate) fn column_block<T: Copy>(
    v: &[T],
    rows: usize,
    ld: usize,
    c0: usize,
    width: usize,
) -> Vec<T> {
    (0..rows)
        .flat_map(|r| v[r * ld + c0..r * ld + c0 + width].iter().copied())
        .collect()
}

/// Panics unless every `got` is finite and `max |got - want| / max(scale, max |want|)` is at most
/// [`REL_TOL`]. (With random inputs a wrong or missing term shows up as an error of order `1/k`.)
pub(crate) fn assert_close(got: &[f32], want: &Expected, what: &str) {
    assert_eq!(got.len(), want.values.len(), "{what}: length");
    let scale = want
        .values
        .iter()
        .fold(want.scale, |a, v| a.max(v.abs()))
        .max(f64::MIN_POSITIVE);
    let mut worst = 0.0f64;
    for (i, (&g, &w)) in got.iter().zip(&want.values).enumerate() {
        assert!(g.is_finite(), "{what}: out[{i}] = {g}");
        worst = worst.max((f64::from(g) - w).abs());
    }
    let rel = worst / scale;
    assert!(
        rel <= REL_TOL,
        "{what}: relative max error {rel:e} > {REL_TOL:e}"
    );
}

/// Shapes `(m, k, n, seed)`: small, with tails everywhere, `m = 1` often, both sides of the
/// GEMV/GEMM switch.
pub(crate) fn case_strategy() -> impl Strategy<Value = (usize, usize, usize, u64)> {
    let m = prop_oneof![Just(1usize), 2..=8usize, 9..=40usize];
    (m, 1..=300usize, 1..=40usize, any::<u64>())
}

#[test]
fn tolerance_check_rejects_a_wrong_answer() {
    let want = Expected {
        values: vec![1.0, -2.0, 0.5],
        scale: 2.0,
    };
    assert_close(&[1.0, -2.0, 0.5], &want, "exact");
    let caught = std::panic::catch_unwind(|| assert_close(&[1.0, -2.0001, 0.5], &want, "off"));
    assert!(caught.is_err());
}

#[test]
fn scale_is_the_size_of_the_terms() {
    // 1*1 + 1*(-1): the result cancels to 0, the terms have size 2.
    let e = matmul_ref(&[1.0, 1.0], &[1.0f32, -1.0], 1, 2, 1);
    assert_eq!((e.values[0], e.scale), (0.0, 2.0));
}
