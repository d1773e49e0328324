//! Collectives of a mesh spread over ranks ([`ThreadRanks`]: ranks as threads, exchanging
//! messages) equal those of one process bit for bit, with the same link byte counts.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::sync::Arc;

use common::random;
use tt_mesh::{
    Algorithm, Collectives, DeviceProfile, Distribution, LinkBytes, Mesh, MeshComposer, MeshError,
    MeshShape, MeshTensor, ThreadRanks, Topology,
};
use tt_ops::{DType, Tensor};

/// What one process (or one rank) saw: every collective's result as bits (this rank's devices'
/// shards of the reduce_scatter; the whole tensor otherwise), and the link bytes.
#[derive(Debug, PartialEq)]
struct Seen {
    all_reduce: Vec<u32>,
    all_gather: Vec<u32>,
    reduce_scatter: Vec<Vec<u32>>,
    composed: Vec<u32>,
    links: LinkBytes,
    /// Bytes this rank sent in the collectives (before the compose).
    sent: u64,
}

fn bits(t: &Tensor) -> Vec<u32> {
    t.to_f32_vec().iter().map(|v| v.to_bits()).collect()
}

/// Device `d`'s input: `[6, 40]` values from seed `d`, in `dtype`.
fn input(d: usize, dtype: DType) -> Tensor {
    let t = random(&[6, 40], 100 + d as u64);
    match dtype {
        DType::F32 => t,
        DType::Bf16 => t.to_dtype(DType::Bf16),
    }
}

fn collectives(mesh: &Mesh, algorithm: Algorithm, dtype: DType) -> Result<Seen, MeshError> {
    let ccl = mesh.ccl_with(algorithm)?;
    let shards = || mesh.local_devices().map(|d| input(d, dtype)).collect();
    let mut x = MeshTensor::from_shards(mesh, shards(), Distribution::PartialSum)?;
    ccl.all_reduce(&mut x)?;
    let all_reduce = bits(x.replica()?);
    let x = MeshTensor::from_shards(mesh, shards(), Distribution::Sharded { dim: 1 })?;
    let all_gather = bits(ccl.all_gather(&x, 1)?.replica()?);
    let rs = ccl.reduce_scatter(&x, 1)?;
    let reduce_scatter = rs.shards().iter().map(bits).collect();
    let sent = mesh.rank_traffic().bytes;
    let composed = bits(&mesh.compose(&rs, MeshComposer::Concat { dim: 1 })?);
    Ok(Seen {
        all_reduce,
        all_gather,
        reduce_scatter,
        composed,
        links: mesh.link_bytes(),
        sent,
    })
}

fn mesh(topology: Topology) -> Mesh {
    Mesh::new(
        MeshShape::new(2, 4).unwrap(),
        DeviceProfile::host(),
        topology,
    )
}

#[test]
fn collectives_over_ranks_equal_one_process() {
    for (topology, algorithm) in [
        (Topology::Linear, Algorithm::Line),
        (Topology::Ring, Algorithm::Ring),
    ] {
        for dtype in [DType::F32, DType::Bf16] {
            let single = collectives(&mesh(topology), algorithm, dtype).unwrap();
            for ranks in [2, 4, 8] {
                let per_rank = 8 / ranks;
                let seen: Vec<Seen> = std::thread::scope(|s| {
                    let handles: Vec<_> = ThreadRanks::new(ranks)
                        .into_iter()
                        .map(|t| {
                            s.spawn(move || {
                                let m = mesh(topology).with_transport(Arc::new(t)).unwrap();
                                collectives(&m, algorithm, dtype).unwrap()
                            })
                        })
                        .collect();
                    handles.into_iter().map(|h| h.join().unwrap()).collect()
                });
                let mut sent = 0;
                for (rank, got) in seen.iter().enumerate() {
                    let what = format!("{algorithm:?} {dtype:?} rank {rank} of {ranks}");
                    assert_eq!(got.all_reduce, single.all_reduce, "{what}: all_reduce");
                    assert_eq!(got.all_gather, single.all_gather, "{what}: all_gather");
                    let mine = &single.reduce_scatter[rank * per_rank..(rank + 1) * per_rank];
                    assert_eq!(got.reduce_scatter, mine, "{what}: reduce_scatter");
                    assert_eq!(got.composed, single.composed, "{what}: compose");
                    assert_eq!(got.links, single.links, "{what}: link bytes");
                    sent += got.sent;
                }
                // What crossed between ranks is exactly the link bytes between devices of
                // different ranks.
                let crossing: u64 = single
                    .links
                    .nonzero()
                    .iter()
                    .filter(|(s, d, _)| s / per_rank != d / per_rank)
                    .map(|(_, _, b)| b)
                    .sum();
                assert_eq!(sent, crossing, "{algorithm:?} {dtype:?} on {ranks} ranks");
                assert!(crossing > 0);
            }
        }
    }
}

#[test]
fn a_device_of_another_rank_is_a_typed_error() {
    let mut t = ThreadRanks::new(2);
    let m = mesh(Topology::Linear)
        .with_transport(Arc::new(t.remove(1)))
        .unwrap();
    assert_eq!(m.local_devices(), 4..8);
    assert!(matches!(
        m.allocate(0, 16),
        Err(MeshError::NotLocal {
            device: 0,
            first: 4,
            end: 8
        })
    ));
    let x = MeshTensor::zeros(&m, &[2], DType::F32, Distribution::Replicated).unwrap();
    assert!(matches!(x.shard(1), Err(MeshError::NotLocal { .. })));
    assert!(x.shard(5).is_ok());
    assert!(matches!(
        mesh(Topology::Linear).with_transport(Arc::new(ThreadRanks::new(3).remove(0))),
        Err(MeshError::RankSplit {
            devices: 8,
            ranks: 3
        })
    ));
}
