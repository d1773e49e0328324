//! all_reduce cost on 8 simulated devices: decode-sized (1 x 3072, 32 x 3072) and prefill-sized
//! (512 x 3072) f32 activations, ring and line, sequential and parallel steps.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use tt_mesh::{
    Algorithm, Collectives, DeviceProfile, Distribution, Execution, Mesh, MeshShape, MeshTensor,
    Topology,
};
use tt_ops::{DType, Tensor};

fn bench_all_reduce(c: &mut Criterion) {
    let mut group = c.benchmark_group("all_reduce_8dev");
    for rows in [1usize, 32, 512] {
        for (name, exec) in [("seq", Execution::Sequential), ("par", Execution::Parallel)] {
            for alg in [Algorithm::Ring, Algorithm::Line] {
                let mesh = Mesh::new(
                    MeshShape::new(2, 4).unwrap(),
                    DeviceProfile::host(),
                    Topology::Ring,
                )
                .with_execution(exec);
                let shards = (0..8)
                    .map(|d| Tensor::full(&[rows, 3072], d as f32, DType::F32))
                    .collect();
                let mut x =
                    MeshTensor::from_shards(&mesh, shards, Distribution::PartialSum).unwrap();
                let ccl = mesh.ccl_with(alg).unwrap();
                let id = BenchmarkId::new(format!("{alg:?}_{name}"), format!("{rows}x3072"));
                group.bench_function(id, |b| b.iter(|| ccl.all_reduce(&mut x).unwrap()));
            }
        }
    }
    group.finish();
}

criterion_group!(benches, bench_all_reduce);
criterion_main!(benches);
