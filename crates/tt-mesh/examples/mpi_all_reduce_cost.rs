//! What one all_reduce costs when the mesh spans MPI ranks: run under `mpirun -n R`.
//!
//! Every rank builds the same 2x4 mesh (linear topology, line algorithm) spread over the ranks
//! and runs `--calls` all_reduces of one decode row (`--width` values, f32 then bf16), all ranks
//! in step, after a warm-up. Rank 0 prints the microseconds per all_reduce, the messages and bytes
//! it sent per all_reduce, and, for scale, the same all_reduce on a one-process 2x4 mesh.
//!
//! ```text
//! cargo build --release -p tt-mesh --features mpi --example mpi_all_reduce_cost
//! mpirun -n 2 --oversubscribe target/release/examples/mpi_all_reduce_cost --width 3072 --calls 2000
//! ```

use std::error::Error;
use std::process::ExitCode;
use std::time::Instant;

use tt_mesh::mpi::Mpi;
use tt_mesh::{
    Algorithm, Collectives, DeviceProfile, Distribution, Mesh, MeshShape, MeshTensor, Topology,
};
use tt_ops::{DType, Tensor};

fn mesh() -> Result<Mesh, Box<dyn Error>> {
    Ok(Mesh::new(
        MeshShape::new(2, 4)?,
        DeviceProfile::host(),
        Topology::Linear,
    ))
}

/// Seconds per all_reduce of `[1, width]` in `dtype` over `calls` calls on `mesh`.
fn time_all_reduce(
    mesh: &Mesh,
    width: usize,
    dtype: DType,
    calls: usize,
) -> Result<f64, Box<dyn Error>> {
    let ccl = mesh.ccl_with(Algorithm::Line)?;
    let row = Tensor::from_f32(
        (0..width).map(|i| (i % 7) as f32 * 0.25).collect(),
        &[1, width],
    )?
    .to_dtype(dtype);
    let shards = || mesh.local_devices().map(|_| row.clone()).collect();
    for _ in 0..calls / 10 + 1 {
        let mut x = MeshTensor::from_shards(mesh, shards(), Distribution::PartialSum)?;
        ccl.all_reduce(&mut x)?;
    }
    let start = Instant::now();
    for _ in 0..calls {
        let mut x = MeshTensor::from_shards(mesh, shards(), Distribution::PartialSum)?;
        ccl.all_reduce(&mut x)?;
    }
    Ok(start.elapsed().as_secs_f64() / calls as f64)
}

fn arg(name: &str, default: usize) -> Result<usize, Box<dyn Error>> {
    let args: Vec<String> = std::env::args().collect();
    match args.iter().position(|a| a == name) {
        Some(i) => Ok(args.get(i + 1).ok_or("a value is missing")?.parse()?),
        None => Ok(default),
    }
}

fn run() -> Result<(), Box<dyn Error>> {
    let (width, calls) = (arg("--width", 3072)?, arg("--calls", 2000)?);
    let Some(mpi) = Mpi::init_if_launched()? else {
        return Err("run under mpirun -n R".into());
    };
    let ranked = mesh()?.with_transport(mpi.transport())?;
    for dtype in [DType::F32, DType::Bf16] {
        let before = ranked.rank_traffic();
        let per_call = time_all_reduce(&ranked, width, dtype, calls)?;
        let sent = ranked.rank_traffic().since(&before);
        let warm = (calls / 10 + 1 + calls) as f64;
        if mpi.rank() == 0 {
            let single = time_all_reduce(&mesh()?, width, dtype, calls)?;
            println!(
                "all_reduce [1, {width}] {dtype:?} on 2x4 over {} ranks: {:.1} us per call \
                 (one process: {:.1} us); rank 0 sent {:.1} messages, {:.0} bytes per call",
                mpi.ranks(),
                per_call * 1e6,
                single * 1e6,
                sent.messages as f64 / warm,
                sent.bytes as f64 / warm,
            );
        }
    }
    Ok(())
}

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
