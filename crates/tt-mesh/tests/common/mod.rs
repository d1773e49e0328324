//! Helpers shared by the tt-mesh integration tests: random tensors, naive matmuls, meshes.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use tt_mesh::{DeviceProfile, Execution, Mesh, MeshShape, Topology};
use tt_ops::Tensor;

/// An f32 tensor of `shape` with values uniform in [-1, 1) from `seed`.
pub fn random(shape: &[usize], seed: u64) -> Tensor {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let n: usize = shape.iter().product();
    let data = (0..n).map(|_| rng.random_range(-1.0f32..1.0)).collect();
    Tensor::from_f32(data, shape).unwrap()
}

/// `x [m, k] @ w [n, k]^T` with f32 accumulation in index order.
pub fn matmul_f32(x: &Tensor, w: &Tensor) -> Tensor {
    let [m, k] = x.dims::<2>().unwrap();
    let [n, k2] = w.dims::<2>().unwrap();
    assert_eq!(k, k2);
    let (xs, ws) = (x.as_f32().unwrap(), w.as_f32().unwrap());
    let mut y = vec![0f32; m * n];
    for i in 0..m {
        for j in 0..n {
            let mut acc = 0f32;
            for l in 0..k {
                acc += xs[i * k + l] * ws[j * k + l];
            }
            y[i * n + j] = acc;
        }
    }
    Tensor::from_f32(y, &[m, n]).unwrap()
}

/// `x [m, k] @ w [n, k]^T` in f64.
pub fn matmul_f64(x: &Tensor, w: &Tensor) -> Vec<f64> {
    let [m, k] = x.dims::<2>().unwrap();
    let [n, _] = w.dims::<2>().unwrap();
    let (xs, ws) = (x.as_f32().unwrap(), w.as_f32().unwrap());
    let mut y = vec![0f64; m * n];
    for i in 0..m {
        for j in 0..n {
            y[i * n + j] = (0..k)
                .map(|l| f64::from(xs[i * k + l]) * f64::from(ws[j * k + l]))
                .sum();
        }
    }
    y
}

/// Max-norm relative error of `got` against `want`.
pub fn rel_err(got: &[f32], want: &[f64]) -> f64 {
    assert_eq!(got.len(), want.len());
    let scale = want.iter().fold(0f64, |a, &b| a.max(b.abs())).max(1e-30);
    let err = got
        .iter()
        .zip(want)
        .fold(0f64, |a, (&g, &w)| a.max((f64::from(g) - w).abs()));
    err / scale
}

/// A host mesh of `n` devices as `rows x (n / rows)` with the given topology and execution.
pub fn mesh(n: usize, rows: usize, topology: Topology, parallel: bool) -> Mesh {
    let shape = MeshShape::new(rows, n / rows).unwrap();
    let exec = if parallel {
        Execution::Parallel
    } else {
        Execution::Sequential
    };
    Mesh::new(shape, DeviceProfile::host(), topology).with_execution(exec)
}

/// A divisor of `n` picked by `pick`.
pub fn divisor(n: usize, pick: usize) -> usize {
    let ds: Vec<usize> = (1..=n).filter(|d| n.is_multiple_of(*d)).collect();
    ds[pick % ds.len()]
}
