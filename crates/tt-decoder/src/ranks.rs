//! The processes of one run: this process alone, or the MPI ranks of an `mpirun` launch.
//!
//! A binary calls [`Ranks::from_env`] first. Started on its own, it is one process hosting the
//! whole mesh. Started by `mpirun -n R` (and built with the cargo feature `mpi`), it is rank `r`
//! of `R`: its [`RuntimeOptions::transport`](crate::RuntimeOptions::transport) spreads the mesh
//! over the ranks, every rank runs the same program, rank 0 prints and writes files, and the
//! others are silent ([`Ranks::silence_followers`]). A rank that fails ends the whole job
//! ([`Ranks::abort`]) after printing its error under its rank, so no rank waits forever on one
//! that is gone.

use std::sync::Arc;

use tt_mesh::Transport;

use crate::error::{Error, Result};

/// This process's place in the run.
pub struct Ranks {
    #[cfg(feature = "mpi")]
    mpi: Option<tt_mesh::mpi::Mpi>,
}

impl std::fmt::Debug for Ranks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ranks")
            .field("rank", &self.rank())
            .field("ranks", &self.ranks())
            .finish()
    }
}

impl Ranks {
    /// One process hosting the whole mesh.
    pub fn single() -> Self {
        Self {
            #[cfg(feature = "mpi")]
            mpi: None,
        }
    }

    /// The ranks of an `mpirun` launch (MPI is initialised here), or a single process when no
    /// launcher started this one. A launch of more than one process by a binary built without
    /// the `mpi` feature is an error (the copies would each run the whole mesh).
    pub fn from_env() -> Result<Self> {
        #[cfg(feature = "mpi")]
        {
            let mpi = tt_mesh::mpi::Mpi::init_if_launched()?;
            Ok(Self { mpi })
        }
        #[cfg(not(feature = "mpi"))]
        match tt_mesh::transport::launched_world_size() {
            Some(n) if n > 1 => Err(Error::Mpi(format!(
                "started by an MPI launcher as one of {n} processes, but this binary was built \
                 without MPI: rebuild with `--features mpi`"
            ))),
            _ => Ok(Self::single()),
        }
    }

    /// This process's rank (0 alone).
    pub fn rank(&self) -> usize {
        #[cfg(feature = "mpi")]
        if let Some(mpi) = &self.mpi {
            return mpi.rank();
        }
        0
    }

    /// Ranks in the run (1 alone).
    pub fn ranks(&self) -> usize {
        #[cfg(feature = "mpi")]
        if let Some(mpi) = &self.mpi {
            return mpi.ranks();
        }
        1
    }

    /// Whether this process speaks for the run (rank 0).
    pub fn is_leader(&self) -> bool {
        self.rank() == 0
    }

    /// The transport a mesh spreads over, when there is more than one rank.
    pub fn transport(&self) -> Option<Arc<dyn Transport>> {
        #[cfg(feature = "mpi")]
        if let Some(mpi) = &self.mpi
            && mpi.ranks() > 1
        {
            return Some(mpi.transport());
        }
        None
    }

    /// Sizes the global rayon pool so that the ranks sharing this host share its cores (each
    /// gets `cores / ranks on this host`, at least 1), unless `RAYON_NUM_THREADS` is set. A
    /// no-op for a single process. Call before any parallel work.
    pub fn share_cores(&self) -> Result<()> {
        if self.ranks() == 1 || std::env::var_os("RAYON_NUM_THREADS").is_some() {
            return Ok(());
        }
        let local: usize = ["OMPI_COMM_WORLD_LOCAL_SIZE", "MPI_LOCALNRANKS"]
            .iter()
            .find_map(|k| std::env::var(k).ok()?.trim().parse().ok())
            .unwrap_or(1);
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        rayon::ThreadPoolBuilder::new()
            .num_threads((cores / local.max(1)).max(1))
            .build_global()
            .map_err(|e| Error::Mpi(format!("sizing the thread pool: {e}")))
    }

    /// Points this process's standard output at `/dev/null` unless it is rank 0, so that only
    /// rank 0 prints (standard error stays open for errors).
    pub fn silence_followers(&self) -> Result<()> {
        if self.is_leader() {
            return Ok(());
        }
        let null = std::fs::OpenOptions::new()
            .write(true)
            .open("/dev/null")
            .map_err(|e| Error::Mpi(format!("opening /dev/null: {e}")))?;
        use std::os::fd::AsRawFd;
        // SAFETY: `dup2` only duplicates descriptors: `null` is an open descriptor for the
        // duration of the call, and 1 is standard output, which `dup2` closes and reopens
        // atomically; Rust's `Stdout` keeps writing to descriptor 1, now `/dev/null`.
        let rc = unsafe { libc::dup2(null.as_raw_fd(), libc::STDOUT_FILENO) };
        if rc < 0 {
            return Err(Error::Mpi(format!(
                "redirecting standard output: {}",
                std::io::Error::last_os_error()
            )));
        }
        Ok(())
    }

    /// Ends every rank of the run with `code` (MPI_Abort) when there are several; returns
    /// otherwise, and the caller exits as usual.
    pub fn abort(&self, code: i32) {
        #[cfg(feature = "mpi")]
        if let Some(mpi) = &self.mpi
            && mpi.ranks() > 1
        {
            mpi.abort(code);
        }
        let _ = code;
    }
}
