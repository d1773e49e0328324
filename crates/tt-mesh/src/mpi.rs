//! Ranks as MPI processes (cargo feature `mpi`): a mesh spread over the processes of an
//! `mpirun` job, on one host or many, through rsmpi on the system's MPI library.
//!
//! Every process of the job runs the same program. [`Mpi::init_if_launched`] initialises MPI
//! when a launcher started the process (and does nothing otherwise, so the same binary runs on
//! its own); [`Mpi::transport`] is the world communicator as a [`Transport`] for
//! [`crate::Mesh::with_transport`].
//!
//! A transfer is one point-to-point message on [`MpiTransport`]'s fixed tag. Messages between
//! two ranks on one communicator and tag arrive in the order they were sent (MPI's
//! non-overtaking rule), and every rank makes the same sequence of [`Transport::exchange`]
//! calls, so the `k`-th message a rank receives from a peer is the one the peer sent in the
//! `k`-th matching exchange.
//!
//! Failures: MPI's default error handler on the world communicator is `MPI_ERRORS_ARE_FATAL`,
//! so a peer that dies ends the whole job (the launcher kills the other ranks and names the one
//! that died); [`Mpi::abort`] ends it on purpose. What this module can check itself (ranks out
//! of range, the thread level MPI provides) is a [`MeshError::Transport`].

use std::fmt;
use std::sync::{Arc, Mutex};

use mpi::Rank;
use mpi::environment::Universe;
use mpi::point_to_point::MatchedReceiveVec;
use mpi::topology::SimpleCommunicator;
use mpi::traits::{Communicator, Destination, Source};
use mpi::{Tag, Threading};

use crate::error::MeshError;
use crate::transport::{Transport, launched_world_size};

/// The one tag of every message tt-mesh sends.
const TAG: Tag = 0x7474; // "tt"

/// The MPI environment of a process launched by mpirun: owns rsmpi's Universe (MPI_Finalize on
/// drop, once the last [`MpiTransport`] made from it has dropped too).
pub struct Mpi {
    universe: Arc<Universe>,
    /// Serialises the MPI calls of every transport made from this environment.
    lock: Arc<Mutex<()>>,
    rank: usize,
    ranks: usize,
    threading: Threading,
}

impl fmt::Debug for Mpi {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Mpi")
            .field("rank", &self.rank)
            .field("ranks", &self.ranks)
            .field("threading", &self.threading)
            .finish()
    }
}

/// This process's rank as the launcher's environment states it (for errors before MPI can say).
fn launched_rank() -> usize {
    ["OMPI_COMM_WORLD_RANK", "PMIX_RANK", "PMI_RANK"]
        .iter()
        .find_map(|k| std::env::var(k).ok()?.trim().parse().ok())
        .unwrap_or(0)
}

impl Mpi {
    /// Initialises MPI (thread level: requests `Threading::Multiple`, accepts at least
    /// `Serialized`, otherwise a typed error) when `crate::transport::launched_world_size()` is
    /// `Some`, else `Ok(None)`.
    pub fn init_if_launched() -> Result<Option<Mpi>, MeshError> {
        if launched_world_size().is_none() {
            return Ok(None);
        }
        let Some((universe, threading)) = mpi::initialize_with_threading(Threading::Multiple)
        else {
            return Err(MeshError::Transport {
                rank: launched_rank(),
                detail: "MPI is already initialised in this process".into(),
            });
        };
        let world = universe.world();
        let (rank, ranks) = (world.rank(), world.size());
        let rank = usize::try_from(rank).map_err(|_| MeshError::Transport {
            rank: launched_rank(),
            detail: format!("MPI reports a negative rank {rank}"),
        })?;
        let ranks = usize::try_from(ranks).map_err(|_| MeshError::Transport {
            rank,
            detail: format!("MPI reports a world of {ranks} ranks"),
        })?;
        if threading < Threading::Serialized {
            return Err(MeshError::Transport {
                rank,
                detail: format!(
                    "the MPI library provides thread level {threading:?}; tt-mesh needs at \
                     least Serialized (collectives may run on any thread)"
                ),
            });
        }
        Ok(Some(Mpi {
            universe: Arc::new(universe),
            lock: Arc::new(Mutex::new(())),
            rank,
            ranks,
            threading,
        }))
    }

    /// This process's rank in the world communicator.
    pub fn rank(&self) -> usize {
        self.rank
    }

    /// Ranks in the job.
    pub fn ranks(&self) -> usize {
        self.ranks
    }

    /// The thread level MPI provides (`Serialized` or `Multiple`).
    pub fn threading(&self) -> Threading {
        self.threading
    }

    /// The world communicator as a [`crate::Transport`]. Every transport made here shares one
    /// lock, so their MPI calls never overlap (as MPI's `Serialized` level requires); their
    /// messages share the world communicator and one tag, so, like the collectives of one mesh,
    /// they must be used in the same order on every rank.
    pub fn transport(&self) -> Arc<dyn Transport> {
        Arc::new(MpiTransport {
            _universe: Arc::clone(&self.universe),
            rank: self.rank,
            ranks: self.ranks,
            lock: Arc::clone(&self.lock),
        })
    }

    /// `MPI_Abort` on the world communicator: ends every rank of the job with `code`.
    pub fn abort(&self, code: i32) -> ! {
        self.universe.world().abort(code)
    }
}

/// Point-to-point messages over MPI's world communicator (see [`Mpi::transport`]). Calls are
/// serialised by a lock shared with every transport of the same [`Mpi`], so MPI is only ever
/// called from one thread at a time.
pub struct MpiTransport {
    /// Keeps MPI initialised while the transport lives.
    _universe: Arc<Universe>,
    rank: usize,
    ranks: usize,
    lock: Arc<Mutex<()>>,
}

impl fmt::Debug for MpiTransport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MpiTransport")
            .field("rank", &self.rank)
            .field("ranks", &self.ranks)
            .finish()
    }
}

impl MpiTransport {
    /// `peer` as an MPI rank, when it is one of the job's ranks other than this one.
    fn peer(&self, peer: usize) -> Result<Rank, MeshError> {
        let bad = |detail: String| MeshError::Transport { rank: peer, detail };
        if peer >= self.ranks {
            return Err(bad(format!("no such rank (the job has {})", self.ranks)));
        }
        if peer == self.rank {
            return Err(bad("a rank does not send messages to itself".into()));
        }
        Rank::try_from(peer).map_err(|_| bad("rank out of MPI's range".into()))
    }
}

impl Transport for MpiTransport {
    fn rank(&self) -> usize {
        self.rank
    }

    fn ranks(&self) -> usize {
        self.ranks
    }

    fn exchange(
        &self,
        sends: Vec<(usize, Vec<u8>)>,
        receives: &[usize],
    ) -> Result<Vec<Vec<u8>>, MeshError> {
        // Check every rank before the first MPI call, so an error never leaves a send in flight.
        let sends = sends
            .into_iter()
            .map(|(dst, bytes)| Ok((self.peer(dst)?, bytes)))
            .collect::<Result<Vec<_>, MeshError>>()?;
        let sources = receives
            .iter()
            .map(|&src| self.peer(src))
            .collect::<Result<Vec<_>, _>>()?;
        if sends.is_empty() && sources.is_empty() {
            return Ok(Vec::new());
        }
        let _serialised = self.lock.lock().map_err(|_| MeshError::Transport {
            rank: self.rank,
            detail: "the MPI transport lock is poisoned (a thread panicked mid-exchange)".into(),
        })?;
        let world = SimpleCommunicator::world();
        let received = mpi::request::scope(|scope| {
            let requests: Vec<_> = sends
                .iter()
                .map(|(dst, bytes)| {
                    world.process_at_rank(*dst).immediate_send_with_tag(
                        scope,
                        bytes.as_slice(),
                        TAG,
                    )
                })
                .collect();
            // Message sizes are not known in advance: probe, then receive the matched message.
            let received: Vec<Vec<u8>> = sources
                .iter()
                .map(|&src| {
                    let (bytes, _status) = world
                        .process_at_rank(src)
                        .matched_probe_with_tag(TAG)
                        .matched_receive_vec::<u8>();
                    bytes
                })
                .collect();
            for request in requests {
                request.wait();
            }
            received
        });
        Ok(received)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_process_started_on_its_own_does_not_initialise_mpi() {
        if launched_world_size().is_none() {
            assert!(matches!(Mpi::init_if_launched(), Ok(None)));
        }
    }
}
