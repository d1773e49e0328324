//! Property tests of mappers, parallel matmuls and collectives over random shapes, dims and
//! mesh sizes (each at least 256 cases).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::{divisor, matmul_f32, matmul_f64, mesh, random, rel_err};
use proptest::prelude::*;
use tt_mesh::{
    Algorithm, Collectives, Distribution, MeshComposer, MeshError, MeshMapper, MeshTensor, Topology,
};
use tt_ops::Tensor;

const CASES: u32 = 256;

fn topology_for(algorithm: Algorithm) -> Topology {
    match algorithm {
        Algorithm::Ring => Topology::Ring,
        Algorithm::Line => Topology::Linear,
    }
}

fn algorithm() -> impl Strategy<Value = Algorithm> {
    prop_oneof![Just(Algorithm::Ring), Just(Algorithm::Line)]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(CASES))]

    /// Shard along a dim then concat along it is the identity; so is Shard2d then Concat2d;
    /// replicate puts the whole tensor on every device.
    #[test]
    fn shard_then_concat_is_identity(
        n in 1usize..=12,
        rows_pick in 0usize..8,
        rank in 1usize..=4,
        dims in proptest::collection::vec(1usize..=5, 4),
        dim_pick in 0usize..4,
        dim2_pick in 0usize..4,
        seed in any::<u64>(),
    ) {
        let rows = divisor(n, rows_pick);
        let cols = n / rows;
        let m = mesh(n, rows, Topology::Linear, false);
        let dim = dim_pick % rank;
        let mut shape = dims[..rank].to_vec();
        shape[dim] *= n;
        let t = random(&shape, seed);
        let mt = m.distribute(&t, MeshMapper::Shard { dim }).unwrap();
        prop_assert_eq!(mt.distribution(), Distribution::Sharded { dim });
        for s in mt.shards() {
            prop_assert_eq!(s.shape()[dim], shape[dim] / n);
        }
        let back = m.compose(&mt, MeshComposer::Concat { dim }).unwrap();
        prop_assert_eq!(back.shape(), t.shape());
        prop_assert_eq!(back.as_f32().unwrap(), t.as_f32().unwrap());

        let rep = m.distribute(&t, MeshMapper::Replicate).unwrap();
        for s in rep.shards() {
            prop_assert_eq!(s.as_f32().unwrap(), t.as_f32().unwrap());
        }

        if rank >= 2 {
            let d2 = (dim + 1 + dim2_pick % (rank - 1)) % rank;
            let mut shape2 = dims[..rank].to_vec();
            shape2[dim] *= rows;
            shape2[d2] *= cols;
            let t2 = random(&shape2, seed ^ 1);
            let mt2 = m.distribute(&t2, MeshMapper::Shard2d { dims: [Some(dim), Some(d2)] }).unwrap();
            let back2 = m.compose(&mt2, MeshComposer::Concat2d { dims: [dim, d2] }).unwrap();
            prop_assert_eq!(back2.as_f32().unwrap(), t2.as_f32().unwrap());
            // Replicate along mesh rows, split along columns: each row of the mesh holds it all.
            let mt3 = m.distribute(&t2, MeshMapper::Shard2d { dims: [None, Some(d2)] }).unwrap();
            for r in 0..rows {
                let row: Vec<&Tensor> = mt3.shards()[r * cols..(r + 1) * cols].iter().collect();
                let back3 = Tensor::cat(&row, d2).unwrap();
                prop_assert_eq!(back3.as_f32().unwrap(), t2.as_f32().unwrap());
            }
        }
    }

    /// Column-parallel: W [out, in] split on out; each device X @ W_d^T; concat = full matmul.
    #[test]
    fn column_parallel_matmul_then_concat_is_full_matmul(
        n in 1usize..=8,
        m_rows in 1usize..=6,
        k in 1usize..=24,
        per in 1usize..=6,
        seed in any::<u64>(),
        parallel in any::<bool>(),
    ) {
        let mesh = mesh(n, divisor(n, seed as usize), Topology::Linear, parallel);
        let x = random(&[m_rows, k], seed);
        let w = random(&[n * per, k], seed.wrapping_add(1));
        let full = matmul_f32(&x, &w);
        let xs = mesh.distribute(&x, MeshMapper::Replicate).unwrap();
        let ws = mesh.distribute(&w, MeshMapper::Shard { dim: 0 }).unwrap();
        let ys = xs
            .map(Distribution::Sharded { dim: 1 }, |d, xd| -> Result<Tensor, MeshError> {
                Ok(matmul_f32(xd, ws.shard(d)?))
            })
            .unwrap();
        let y = mesh.compose(&ys, MeshComposer::Concat { dim: 1 }).unwrap();
        prop_assert_eq!(y.shape(), full.shape());
        prop_assert_eq!(y.as_f32().unwrap(), full.as_f32().unwrap());
        prop_assert!(rel_err(y.as_f32().unwrap(), &matmul_f64(&x, &w)) <= 1e-5);
    }

    /// Row-parallel: X and W split on the input dim; partial products summed by all_reduce
    /// equal the full matmul on every device.
    #[test]
    fn row_parallel_partials_then_all_reduce_are_full_matmul(
        n in 1usize..=8,
        m_rows in 1usize..=6,
        per in 1usize..=12,
        out in 1usize..=24,
        alg in algorithm(),
        seed in any::<u64>(),
        parallel in any::<bool>(),
    ) {
        let mesh = mesh(n, divisor(n, seed as usize), topology_for(alg), parallel);
        let k = n * per;
        let x = random(&[m_rows, k], seed);
        let w = random(&[out, k], seed.wrapping_add(7));
        let want = matmul_f64(&x, &w);
        let xs = mesh.distribute(&x, MeshMapper::Shard { dim: 1 }).unwrap();
        let ws = mesh.distribute(&w, MeshMapper::Shard { dim: 1 }).unwrap();
        let mut partial = xs
            .map(Distribution::PartialSum, |d, xd| -> Result<Tensor, MeshError> {
                Ok(matmul_f32(xd, ws.shard(d)?))
            })
            .unwrap();
        partial.expect(Distribution::PartialSum, "row-parallel output").unwrap();
        mesh.ccl_with(alg).unwrap().all_reduce(&mut partial).unwrap();
        prop_assert_eq!(partial.distribution(), Distribution::Replicated);
        let first = partial.shard(0).unwrap().as_f32().unwrap().to_vec();
        prop_assert!(rel_err(&first, &want) <= 1e-5, "rel err {}", rel_err(&first, &want));
        for s in partial.shards() {
            prop_assert_eq!(s.as_f32().unwrap(), first.as_slice());
        }
    }

    /// Ring and line all_reduce equal the plain sum, identically on every device, whatever the
    /// execution policy; reduce_scatter and all_gather agree with the sum and the concat.
    #[test]
    fn all_reduce_equals_plain_sum(
        n in 1usize..=12,
        shape in proptest::collection::vec(1usize..=9, 1..=3),
        alg in algorithm(),
        seed in any::<u64>(),
    ) {
        let inputs: Vec<Tensor> = (0..n).map(|d| random(&shape, seed.wrapping_add(d as u64))).collect();
        let numel: usize = shape.iter().product();
        let sum: Vec<f64> = (0..numel)
            .map(|i| inputs.iter().map(|t| f64::from(t.as_f32().unwrap()[i])).sum())
            .collect();
        let mut results = Vec::new();
        for parallel in [false, true] {
            let mesh = mesh(n, 1, topology_for(alg), parallel);
            let mut x = MeshTensor::from_shards(&mesh, inputs.clone(), Distribution::PartialSum).unwrap();
            mesh.ccl_with(alg).unwrap().all_reduce(&mut x).unwrap();
            let first = x.shard(0).unwrap().as_f32().unwrap().to_vec();
            prop_assert!(rel_err(&first, &sum) <= 1e-5);
            for s in x.shards() {
                prop_assert_eq!(s.as_f32().unwrap(), first.as_slice());
            }
            results.push(first);
        }
        prop_assert_eq!(&results[0], &results[1]);

        // reduce_scatter along a dim that divides, then all_gather: the sum again.
        let mesh = mesh(n, 1, topology_for(alg), true);
        let dim = shape.len() - 1;
        let mut shape_rs = shape.clone();
        shape_rs[dim] *= n;
        let ins: Vec<Tensor> = (0..n).map(|d| random(&shape_rs, seed ^ (d as u64 + 99))).collect();
        let total: usize = shape_rs.iter().product();
        let sum_rs: Vec<f64> = (0..total)
            .map(|i| ins.iter().map(|t| f64::from(t.as_f32().unwrap()[i])).sum())
            .collect();
        let x = MeshTensor::from_shards(&mesh, ins, Distribution::PartialSum).unwrap();
        let ccl = mesh.ccl_with(alg).unwrap();
        let rs = ccl.reduce_scatter(&x, dim).unwrap();
        prop_assert_eq!(rs.distribution(), Distribution::Sharded { dim });
        let ag = ccl.all_gather(&rs, dim).unwrap();
        let g0 = ag.shard(0).unwrap().as_f32().unwrap().to_vec();
        prop_assert_eq!(ag.shard(0).unwrap().shape(), shape_rs.as_slice());
        prop_assert!(rel_err(&g0, &sum_rs) <= 1e-5);
        for s in ag.shards() {
            prop_assert_eq!(s.as_f32().unwrap(), g0.as_slice());
        }
    }

    /// Bytes per directed link match each algorithm's formula.
    #[test]
    fn link_bytes_match_the_formulas(
        n in 1usize..=12,
        elems in 1usize..=200,
        alg in algorithm(),
        bf16 in any::<bool>(),
        seed in any::<u64>(),
    ) {
        let mesh = mesh(n, 1, topology_for(alg), seed % 2 == 0);
        let dtype = if bf16 { tt_ops::DType::Bf16 } else { tt_ops::DType::F32 };
        let b = dtype.size_bytes() as u64;
        let shards: Vec<Tensor> = (0..n).map(|d| random(&[elems], seed ^ d as u64).to_dtype(dtype)).collect();
        let ccl = mesh.ccl_with(alg).unwrap();
        // all_reduce
        let mut x = MeshTensor::from_shards(&mesh, shards.clone(), Distribution::PartialSum).unwrap();
        let before = mesh.link_bytes();
        ccl.all_reduce(&mut x).unwrap();
        let ar = mesh.link_bytes().since(&before);
        let chunk = |c: usize| (elems / n + usize::from(c < elems % n)) as u64;
        let e = elems as u64;
        for src in 0..n {
            for dst in 0..n {
                let want = match alg {
                    _ if n == 1 => 0,
                    Algorithm::Ring if dst == (src + 1) % n => (2 * e - chunk(src) - chunk((src + 1) % n)) * b,
                    Algorithm::Line if src.abs_diff(dst) == 1 => e * b,
                    _ => 0,
                };
                prop_assert_eq!(ar.get(src, dst), want, "all_reduce {:?} n={} {}->{}", alg, n, src, dst);
            }
        }
        if alg == Algorithm::Ring && elems % n == 0 {
            for d in 0..n {
                // 2 (N-1)/N of the tensor per device
                prop_assert_eq!(ar.sent_by(d) * n as u64, 2 * (n as u64 - 1) * e * b);
            }
        }
        prop_assert_eq!(ar.total(), 2 * (n as u64 - 1) * e * b);

        // all_gather of equal shards of `elems` each: (N-1) shards sent per device on a ring;
        // on a line link i -> i+1 carries shards 0..=i and link i+1 -> i shards i+1..N.
        let y = MeshTensor::from_shards(&mesh, shards.clone(), Distribution::Sharded { dim: 0 }).unwrap();
        let before = mesh.link_bytes();
        let g = ccl.all_gather(&y, 0).unwrap();
        let ag = mesh.link_bytes().since(&before);
        prop_assert_eq!(g.shard(0).unwrap().shape(), &[n * elems]);
        for src in 0..n {
            for dst in 0..n {
                let want = match alg {
                    _ if n == 1 => 0,
                    Algorithm::Ring if dst == (src + 1) % n => (n as u64 - 1) * e * b,
                    Algorithm::Line if dst == src + 1 => (src as u64 + 1) * e * b,
                    Algorithm::Line if src == dst + 1 => (n - 1 - dst) as u64 * e * b,
                    _ => 0,
                };
                prop_assert_eq!(ag.get(src, dst), want, "all_gather {:?} n={} {}->{}", alg, n, src, dst);
            }
        }

        // reduce_scatter of [n * elems]: chunks of `elems`; ring: each device sends N-1 chunks;
        // line: link i -> i+1 carries chunks i+1..N, link i+1 -> i chunks 0..=i.
        let big: Vec<Tensor> = (0..n).map(|d| random(&[n * elems], seed ^ (d as u64 + 5)).to_dtype(dtype)).collect();
        let z = MeshTensor::from_shards(&mesh, big, Distribution::PartialSum).unwrap();
        let before = mesh.link_bytes();
        let r = ccl.reduce_scatter(&z, 0).unwrap();
        let rs = mesh.link_bytes().since(&before);
        prop_assert_eq!(r.shard(0).unwrap().shape(), &[elems]);
        for src in 0..n {
            for dst in 0..n {
                let want = match alg {
                    _ if n == 1 => 0,
                    Algorithm::Ring if dst == (src + 1) % n => (n as u64 - 1) * e * b,
                    Algorithm::Line if dst == src + 1 => (n - 1 - src) as u64 * e * b,
                    Algorithm::Line if src == dst + 1 => (dst as u64 + 1) * e * b,
                    _ => 0,
                };
                prop_assert_eq!(rs.get(src, dst), want, "reduce_scatter {:?} n={} {}->{}", alg, n, src, dst);
            }
        }
    }
}
