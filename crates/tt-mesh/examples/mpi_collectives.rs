//! MPI self-test of tt-mesh's collectives: under `mpirun -n R`, a 2x4 mesh spread over the `R`
//! ranks runs all_reduce, all_gather and reduce_scatter (f32 and bf16, line and ring
//! algorithms) and every rank checks its devices' results, bit for bit, and the mesh's link
//! bytes against the same collectives on a one-process 2x4 mesh. Rank 0 prints one summary
//! line; the exit code is non-zero on any mismatch (on any rank).
//!
//! ```text
//! cargo build --profile test --features mpi -p tt-mesh --example mpi_collectives
//! mpirun -n 2 target/debug/examples/mpi_collectives
//! ```
//!
//! Run on its own (no launcher) it checks a one-rank mesh against the reference; with
//! `--threads R` it runs `R` ranks as threads of one process joined by channels
//! ([`tt_mesh::ThreadRanks`]: the same schedule and messages without MPI).

use std::error::Error;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Instant;

use half::bf16;
use tt_mesh::mpi::Mpi;
use tt_mesh::{
    Algorithm, Collectives, DeviceProfile, Distribution, LinkBytes, Mesh, MeshShape, MeshTensor,
    ThreadRanks, Topology, Transport,
};
use tt_ops::{DType, Tensor};

/// One collective on shards of one shape.
#[derive(Debug, Clone, Copy)]
enum Op {
    AllReduce,
    AllGather { dim: usize },
    ReduceScatter { dim: usize },
}

/// Every case: shard shapes with odd sizes (chunks that do not divide evenly), outer and inner
/// dims.
const CASES: &[(Op, &[usize])] = &[
    (Op::AllReduce, &[3, 7]),
    (Op::AllReduce, &[2, 3072]),
    (Op::AllReduce, &[1]),
    (Op::AllGather { dim: 0 }, &[5, 6]),
    (Op::AllGather { dim: 1 }, &[3, 5, 4]),
    (Op::AllGather { dim: 2 }, &[2, 3, 9]),
    (Op::ReduceScatter { dim: 0 }, &[16, 3]),
    (Op::ReduceScatter { dim: 1 }, &[3, 40]),
    (Op::ReduceScatter { dim: 2 }, &[2, 3, 8]),
];

/// SplitMix64: deterministic data every rank can rebuild for every device.
struct SplitMix(u64);

impl SplitMix {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in [-1, 1), with the full 24 bits of an f32 mantissa.
    fn value(&mut self) -> f32 {
        ((self.next() >> 40) as f32 / (1u64 << 23) as f32) - 1.0
    }
}

/// Device `device`'s input shard of case `case`, in `dtype`.
fn shard(
    case: usize,
    device: usize,
    shape: &[usize],
    dtype: DType,
) -> Result<Tensor, Box<dyn Error>> {
    let mut rng = SplitMix(((case as u64) << 32) ^ (device as u64) ^ 0x5eed);
    let n: usize = shape.iter().product();
    let values: Vec<f32> = (0..n).map(|_| rng.value()).collect();
    Ok(match dtype {
        DType::F32 => Tensor::from_f32(values, shape)?,
        DType::Bf16 => Tensor::from_bf16(values.into_iter().map(bf16::from_f32).collect(), shape)?,
    })
}

/// The bits of a shard, for a bit-for-bit comparison.
fn bits(t: &Tensor) -> Result<Vec<u32>, Box<dyn Error>> {
    Ok(match t.dtype() {
        DType::F32 => t.as_f32()?.iter().map(|v| v.to_bits()).collect(),
        DType::Bf16 => t
            .as_bf16()?
            .iter()
            .map(|v| u32::from(v.to_bits()))
            .collect(),
    })
}

/// Runs `op` on `mesh` over `shards` (this mesh's local devices' shards).
fn run_op(
    mesh: &Mesh,
    algorithm: Algorithm,
    op: Op,
    shards: Vec<Tensor>,
) -> Result<MeshTensor, Box<dyn Error>> {
    let ccl = mesh.ccl_with(algorithm)?;
    let mut x = MeshTensor::from_shards(mesh, shards, Distribution::PartialSum)?;
    Ok(match op {
        Op::AllReduce => {
            ccl.all_reduce(&mut x)?;
            x
        }
        Op::AllGather { dim } => ccl.all_gather(&x, dim)?,
        Op::ReduceScatter { dim } => ccl.reduce_scatter(&x, dim)?,
    })
}

/// What one rank found.
#[derive(Debug, Default)]
struct Tally {
    runs: u64,
    shards: u64,
    mismatches: u64,
    link_mismatches: u64,
    link_bytes: u64,
}

/// This rank's checks; `transport` spreads the mesh over ranks (`None`: one process).
fn run(transport: Option<Arc<dyn Transport>>) -> Result<Tally, Box<dyn Error>> {
    let shape = MeshShape::new(2, 4)?;
    let mut tally = Tally::default();
    let mut case_id = 0;
    let setups = [
        (Topology::Linear, Algorithm::Line),
        (Topology::Ring, Algorithm::Line),
        (Topology::Ring, Algorithm::Ring),
    ];
    for (topology, algorithm) in setups {
        let reference = Mesh::new(shape, DeviceProfile::host(), topology);
        let mut mesh = Mesh::new(shape, DeviceProfile::host(), topology);
        if let Some(t) = &transport {
            mesh = mesh.with_transport(Arc::clone(t))?;
        }
        let n = mesh.num_devices();
        let local = mesh.local_devices();
        for dtype in [DType::F32, DType::Bf16] {
            for &(op, dims) in CASES {
                case_id += 1;
                let all = (0..n)
                    .map(|d| shard(case_id, d, dims, dtype))
                    .collect::<Result<Vec<_>, _>>()?;
                let mine = all[local.clone()].to_vec();
                let (ref_before, before) = (reference.link_bytes(), mesh.link_bytes());
                let want = run_op(&reference, algorithm, op, all)?;
                let got = run_op(&mesh, algorithm, op, mine)?;
                let ref_links: LinkBytes = reference.link_bytes().since(&ref_before);
                let links: LinkBytes = mesh.link_bytes().since(&before);
                tally.runs += 1;
                tally.link_bytes += links.total();
                if links != ref_links {
                    tally.link_mismatches += 1;
                    eprintln!(
                        "rank {}: {topology:?}/{algorithm:?} {dtype:?} {op:?} {dims:?}: link \
                         bytes {:?}, one process {:?}",
                        mesh.rank(),
                        links.nonzero(),
                        ref_links.nonzero()
                    );
                }
                if got.distribution() != want.distribution() {
                    tally.mismatches += 1;
                    eprintln!(
                        "rank {}: {topology:?}/{algorithm:?} {dtype:?} {op:?}: distribution {} \
                         != {}",
                        mesh.rank(),
                        got.distribution(),
                        want.distribution()
                    );
                }
                for d in local.clone() {
                    let (g, w) = (got.shard(d)?, want.shard(d)?);
                    tally.shards += 1;
                    if g.shape() != w.shape() || g.dtype() != w.dtype() || bits(g)? != bits(w)? {
                        tally.mismatches += 1;
                        eprintln!(
                            "rank {}: {topology:?}/{algorithm:?} {dtype:?} {op:?} {dims:?}: \
                             device {d} differs from the one-process mesh",
                            mesh.rank()
                        );
                    }
                }
            }
        }
    }
    Ok(tally)
}

/// Every rank's figures, gathered over the transport (this rank's alone without one).
fn gather(
    transport: Option<&Arc<dyn Transport>>,
    tally: &Tally,
) -> Result<Vec<[u64; 5]>, Box<dyn Error>> {
    let mine = [
        tally.runs,
        tally.shards,
        tally.mismatches,
        tally.link_mismatches,
        tally.link_bytes,
    ];
    let Some(transport) = transport else {
        return Ok(vec![mine]);
    };
    let bytes: Vec<u8> = mine.iter().flat_map(|v| v.to_le_bytes()).collect();
    transport
        .all_gather(&bytes)?
        .into_iter()
        .map(|b| {
            let mut out = [0u64; 5];
            if b.len() != 40 {
                return Err(
                    format!("a rank sent {} bytes of figures, 40 expected", b.len()).into(),
                );
            }
            for (o, c) in out.iter_mut().zip(b.chunks_exact(8)) {
                let mut w = [0u8; 8];
                w.copy_from_slice(c);
                *o = u64::from_le_bytes(w);
            }
            Ok(out)
        })
        .collect()
}

/// One rank: its checks, then every rank's figures.
fn rank_main(transport: Option<Arc<dyn Transport>>) -> Result<Vec<[u64; 5]>, Box<dyn Error>> {
    let tally = run(transport.clone())?;
    gather(transport.as_ref(), &tally)
}

/// `--threads R`, when given.
fn threads_arg() -> Result<Option<usize>, Box<dyn Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.as_slice() {
        [] => Ok(None),
        [flag, r] if flag == "--threads" => Ok(Some(r.parse()?)),
        _ => Err("usage: mpi_collectives [--threads R]  (or under mpirun -n R)".into()),
    }
}

fn main() -> ExitCode {
    let mpi = match Mpi::init_if_launched() {
        Ok(m) => m,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    let rank = mpi.as_ref().map_or(0, Mpi::rank);
    let start = Instant::now();
    let (ranks, figures) = match (&mpi, threads_arg()) {
        (_, Err(e)) => (1, Err(e)),
        (Some(mpi), Ok(_)) => (mpi.ranks(), rank_main(Some(mpi.transport()))),
        (None, Ok(None)) => (1, rank_main(None)),
        (None, Ok(Some(r))) => {
            let results: Vec<_> = std::thread::scope(|s| {
                let handles: Vec<_> = ThreadRanks::new(r)
                    .into_iter()
                    .map(|t| {
                        let t: Arc<dyn Transport> = Arc::new(t);
                        s.spawn(move || rank_main(Some(t)).map_err(|e| e.to_string()))
                    })
                    .collect();
                handles
                    .into_iter()
                    .map(|h| h.join().unwrap_or_else(|_| Err("a rank panicked".into())))
                    .collect()
            });
            // Every thread gathered every rank's figures; rank 0's copy is the job's.
            let first = results
                .into_iter()
                .collect::<Result<Vec<_>, String>>()
                .and_then(|all| all.into_iter().next().ok_or_else(|| "no ranks".into()));
            (r, first.map_err(Into::into))
        }
    };
    let figures = match figures {
        Ok(f) => f,
        Err(e) => {
            eprintln!("rank {rank}: error: {e}");
            if let Some(mpi) = &mpi {
                mpi.abort(2);
            }
            return ExitCode::from(2);
        }
    };
    let sum = |i: usize| figures.iter().map(|f| f[i]).sum::<u64>();
    let (shards, mismatches, link_mismatches) = (sum(1), sum(2), sum(3));
    let runs = figures.first().map_or(0, |f| f[0]);
    let link_bytes = figures.first().map_or(0, |f| f[4]);
    let ok = mismatches == 0 && link_mismatches == 0 && shards > 0;
    if rank == 0 {
        println!(
            "mpi_collectives: {ranks} ranks, 2x4 mesh, {runs} collectives (f32+bf16, line+ring), \
             {shards} device shards: {mismatches} differ from the one-process mesh, link bytes \
             {} ({link_bytes} B, {link_mismatches} runs differ), {:.2} s: {}",
            if link_mismatches == 0 {
                "identical"
            } else {
                "DIFFER"
            },
            start.elapsed().as_secs_f64(),
            if ok { "PASS" } else { "FAIL" }
        );
    }
    if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
