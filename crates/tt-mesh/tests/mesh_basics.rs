//! Memory accounting, mapper and topology errors, contracts, single-device collectives.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::random;
use half::bf16;
use tt_mesh::{
    Algorithm, Collectives, DeviceProfile, Distribution, Mesh, MeshComposer, MeshError, MeshMapper,
    MeshShape, MeshTensor, Topology,
};
use tt_ops::{DType, Tensor};

fn shape(s: &str) -> MeshShape {
    s.parse().unwrap()
}

#[test]
fn allocations_past_the_budget_are_typed_errors_and_frees_are_tracked() {
    let mesh = Mesh::new(
        shape("1x2"),
        DeviceProfile::host_with_budget(1000),
        Topology::Linear,
    );
    let a = mesh.allocate(1, 600).unwrap();
    let err = mesh.allocate(1, 500).unwrap_err();
    assert_eq!(
        err,
        MeshError::OutOfMemory {
            device: 1,
            needed: 500,
            available: 400,
            in_use: 600,
            budget: 1000
        }
    );
    assert!(err.to_string().contains("500 bytes needed, 400 available"));
    let s = mesh.memory(1).unwrap();
    assert_eq!((s.used, s.peak, s.allocations, s.frees), (600, 600, 1, 0));
    assert_eq!(mesh.memory(0).unwrap().used, 0);
    drop(a);
    let s = mesh.memory(1).unwrap();
    assert_eq!((s.used, s.peak, s.allocations, s.frees), (0, 600, 1, 1));
    mesh.allocate(1, 1000).unwrap();
    assert!(matches!(
        mesh.memory(2),
        Err(MeshError::DeviceOutOfRange {
            device: 2,
            devices: 2
        })
    ));
}

#[test]
fn mesh_tensors_count_tile_padded_bytes_per_device_and_free_on_drop() {
    let mesh = Mesh::new(shape("2x4"), DeviceProfile::wormhole_b0(), Topology::Linear);
    // An lm_head-like shard of 4008 rows is stored as 4032 under 32x32 tiles.
    let w = Tensor::zeros(&[8 * 4008, 64], DType::Bf16);
    let mt = mesh.distribute(&w, MeshMapper::Shard { dim: 0 }).unwrap();
    for d in 0..8 {
        assert_eq!(mt.device_bytes(d), 4032 * 64 * 2);
        assert_eq!(mesh.memory(d).unwrap().used, 4032 * 64 * 2);
    }
    // Replicas share host storage but each device counts its own copy.
    let e = Tensor::zeros(&[100, 64], DType::F32);
    let rep = mesh.distribute(&e, MeshMapper::Replicate).unwrap();
    assert!(rep.shard(3).unwrap().shares_storage(&e));
    assert_eq!(mesh.memory(3).unwrap().used, 4032 * 64 * 2 + 128 * 64 * 4);
    drop(mt);
    drop(rep);
    let s = mesh.memory(5).unwrap();
    assert_eq!((s.used, s.allocations, s.frees), (0, 2, 2));
}

#[test]
fn distributing_past_a_budget_fails_before_anything_is_kept() {
    let mesh = Mesh::new(
        shape("1x2"),
        DeviceProfile::host_with_budget(1024),
        Topology::Linear,
    );
    // 1600 bytes: 800 per device sharded, 1600 per device replicated.
    let t = Tensor::zeros(&[2, 200], DType::F32);
    let _sharded = mesh.distribute(&t, MeshMapper::Shard { dim: 0 }).unwrap();
    let err = mesh.distribute(&t, MeshMapper::Replicate).unwrap_err();
    assert!(
        matches!(
            err,
            MeshError::OutOfMemory {
                needed: 1600,
                available: 224,
                ..
            }
        ),
        "{err}"
    );
    assert_eq!(mesh.memory(0).unwrap().used, 800);
    assert_eq!(mesh.memory(1).unwrap().used, 800);
}

#[test]
fn update_recounts_memory() {
    let mesh = Mesh::new(
        shape("1x2"),
        DeviceProfile::host_with_budget(100),
        Topology::Linear,
    );
    let mut x = MeshTensor::zeros(&mesh, &[4], DType::F32, Distribution::Replicated).unwrap();
    x.update(|d, t| -> Result<(), MeshError> {
        *t = Tensor::full(&[8], d as f32, DType::F32);
        Ok(())
    })
    .unwrap();
    assert_eq!(mesh.memory(1).unwrap().used, 32);
    let err = x
        .update(|_, t| -> Result<(), MeshError> {
            *t = Tensor::zeros(&[40], DType::F32);
            Ok(())
        })
        .unwrap_err();
    assert!(matches!(err, MeshError::OutOfMemory { needed: 128, .. }));
}

#[test]
fn mapper_and_composer_errors() {
    let mesh = Mesh::new(shape("2x4"), DeviceProfile::host(), Topology::Ring);
    let t = random(&[6, 8], 1);
    assert!(matches!(
        mesh.distribute(&t, MeshMapper::Shard { dim: 0 }),
        Err(MeshError::NotDivisible {
            dim: 0,
            size: 6,
            parts: 8,
            ..
        })
    ));
    assert!(matches!(
        mesh.distribute(&t, MeshMapper::Shard { dim: 2 }),
        Err(MeshError::InvalidDim {
            dim: 2,
            rank: 2,
            ..
        })
    ));
    assert!(matches!(
        mesh.distribute(
            &t,
            MeshMapper::Shard2d {
                dims: [Some(1), Some(1)]
            }
        ),
        Err(MeshError::InvalidArgument { .. })
    ));
    // 2-D: rows split dim 0 over 2 mesh rows, dim 1 over 4 mesh columns.
    let mt = mesh
        .distribute(
            &t,
            MeshMapper::Shard2d {
                dims: [Some(0), Some(1)],
            },
        )
        .unwrap();
    assert_eq!(mt.shard(5).unwrap().shape(), &[3, 2]);
    assert_eq!(
        mt.shard(5).unwrap().as_f32().unwrap()[0],
        t.as_f32().unwrap()[3 * 8 + 2]
    );
    assert!(matches!(
        mesh.compose(&mt, MeshComposer::Concat { dim: 4 }),
        Err(MeshError::InvalidDim { .. })
    ));
    let rep = mesh
        .compose(&mt, MeshComposer::Replica { device: 5 })
        .unwrap();
    assert_eq!(rep.shape(), &[3, 2]);
    let wrong = MeshTensor::from_shards(&mesh, vec![t.clone()], Distribution::Replicated);
    assert!(matches!(
        wrong,
        Err(MeshError::DeviceCount {
            expected: 8,
            got: 1
        })
    ));
}

#[test]
fn contracts_are_checked() {
    let mesh = Mesh::new(shape("1x2"), DeviceProfile::host(), Topology::Linear);
    let x = mesh
        .distribute(&random(&[2, 4], 3), MeshMapper::Shard { dim: 1 })
        .unwrap();
    x.expect(Distribution::Sharded { dim: 1 }, "mlp input")
        .unwrap();
    let err = x
        .expect(Distribution::Replicated, "attention input")
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "attention input: expected a replicated mesh tensor, got sharded(dim 1)"
    );
}

#[test]
fn ring_needs_a_ring_topology_beyond_two_devices() {
    let line = Mesh::new(shape("2x4"), DeviceProfile::host(), Topology::Linear);
    assert!(matches!(
        line.ccl_with(Algorithm::Ring),
        Err(MeshError::NoRingLink {
            devices: 8,
            last: 7
        })
    ));
    assert_eq!(line.ccl().algorithm(), Algorithm::Line);
    let ring = Mesh::new(shape("2x4"), DeviceProfile::host(), Topology::Ring);
    assert_eq!(ring.ccl().algorithm(), Algorithm::Ring);
    assert_eq!(
        ring.ccl_with(Algorithm::Line).unwrap().algorithm(),
        Algorithm::Line
    );
    let two = Mesh::new(shape("1x2"), DeviceProfile::host(), Topology::Linear);
    two.ccl_with(Algorithm::Ring).unwrap();
    assert!(Topology::Ring.linked(8, 7, 0));
    assert!(!Topology::Linear.linked(8, 7, 0));
    assert!(Topology::Linear.linked(8, 3, 4));
}

#[test]
fn single_device_collectives_are_no_ops() {
    let mesh = Mesh::new(MeshShape::single(), DeviceProfile::host(), Topology::Linear);
    let t = random(&[3, 5], 9);
    let mut x = MeshTensor::from_shards(&mesh, vec![t.clone()], Distribution::PartialSum).unwrap();
    mesh.all_reduce(&mut x).unwrap();
    assert_eq!(x.shard(0).unwrap().as_f32().unwrap(), t.as_f32().unwrap());
    assert_eq!(x.distribution(), Distribution::Replicated);
    let g = mesh.all_gather(&x, 1).unwrap();
    assert_eq!(g.shard(0).unwrap().as_f32().unwrap(), t.as_f32().unwrap());
    let r = mesh.reduce_scatter(&x, 0).unwrap();
    assert_eq!(r.shard(0).unwrap().shape(), &[3, 5]);
    assert_eq!(mesh.link_bytes().total(), 0);
}

#[test]
fn bf16_collectives_and_gather_along_an_inner_dim() {
    let mesh = Mesh::new(shape("1x4"), DeviceProfile::host(), Topology::Ring);
    let shards: Vec<Tensor> = (0..4)
        .map(|d| {
            let v: Vec<bf16> = (0..6)
                .map(|i| bf16::from_f32((d * 10 + i) as f32))
                .collect();
            Tensor::from_bf16(v, &[2, 3]).unwrap()
        })
        .collect();
    let x =
        MeshTensor::from_shards(&mesh, shards.clone(), Distribution::Sharded { dim: 1 }).unwrap();
    let g = mesh.all_gather(&x, 1).unwrap();
    let want = Tensor::cat(&shards.iter().collect::<Vec<_>>(), 1).unwrap();
    for s in g.shards() {
        assert_eq!(s.shape(), &[2, 12]);
        assert_eq!(s.to_f32_vec(), want.to_f32_vec());
    }
    let mut y = MeshTensor::from_shards(&mesh, shards, Distribution::PartialSum).unwrap();
    mesh.all_reduce(&mut y).unwrap();
    // sum over d of (10 d + i) = 60 + 4 i, exact in bf16
    let expect: Vec<f32> = (0..6).map(|i| (60 + 4 * i) as f32).collect();
    for s in y.shards() {
        assert_eq!(s.dtype(), DType::Bf16);
        assert_eq!(s.to_f32_vec(), expect);
    }
    // reduce_scatter along the inner dim of [2, 8]: device d gets columns 2d..2d+2 of the sum.
    let ins: Vec<Tensor> = (0..4).map(|d| random(&[2, 8], 40 + d)).collect();
    let z = MeshTensor::from_shards(&mesh, ins.clone(), Distribution::PartialSum).unwrap();
    let r = mesh.reduce_scatter(&z, 1).unwrap();
    for d in 0..4 {
        let got = r.shard(d).unwrap().as_f32().unwrap().to_vec();
        for row in 0..2 {
            for c in 0..2 {
                let col = 2 * d + c;
                let want: f32 = ins.iter().map(|t| t.as_f32().unwrap()[row * 8 + col]).sum();
                assert!((got[row * 2 + c] - want).abs() < 1e-5);
            }
        }
    }
    assert!(matches!(
        mesh.reduce_scatter(&z, 0),
        Err(MeshError::NotDivisible {
            dim: 0,
            size: 2,
            parts: 4,
            ..
        })
    ));
}

#[test]
fn collectives_refuse_foreign_and_mismatched_tensors() {
    let a = Mesh::new(shape("1x2"), DeviceProfile::host(), Topology::Linear);
    let b = Mesh::new(shape("1x2"), DeviceProfile::host(), Topology::Linear);
    let mut x = a
        .distribute(&random(&[4], 1), MeshMapper::Replicate)
        .unwrap();
    assert!(matches!(
        b.all_reduce(&mut x),
        Err(MeshError::ForeignTensor)
    ));
    let mut y = MeshTensor::from_shards(
        &a,
        vec![random(&[4], 1), random(&[5], 2)],
        Distribution::PartialSum,
    )
    .unwrap();
    assert!(matches!(
        a.all_reduce(&mut y),
        Err(MeshError::ShardMismatch { .. })
    ));
}
