//! Processes ("ranks") that together host one mesh, and the messages between them.
//!
//! A mesh can span several processes: rank `r` of `R` hosts the contiguous block of devices
//! `r * n / R .. (r + 1) * n / R` and holds only their shards. Collectives run the same ring or
//! line schedule as in one process; a transfer between two devices of one rank is a copy in
//! memory, and a transfer between ranks is a point-to-point message. A [`Transport`] carries
//! those messages:
//! - [`crate::mpi::MpiTransport`] (cargo feature `mpi`): MPI ranks, one per process, on one host
//!   or many;
//! - [`ThreadRanks`]: ranks as threads of one process, joined by channels; tests and the
//!   simulation of a multi-process run use it (same schedule, same messages, no MPI).
//!
//! Every rank runs the same program, so every rank makes the same sequence of calls: one
//! [`Transport::exchange`] per step of a collective, with matching sends and receives.

use std::fmt;
use std::sync::Mutex;
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender, channel};
use std::time::Duration;

use crate::error::MeshError;

/// Point-to-point messages between the ranks hosting one mesh.
pub trait Transport: Send + Sync + fmt::Debug {
    /// This process's rank.
    fn rank(&self) -> usize;

    /// Ranks in the job.
    fn ranks(&self) -> usize;

    /// Sends every `(rank, bytes)` of `sends` and receives one message from each rank of
    /// `receives`, in that order; returns the received messages. Sends and receives of one call
    /// may be in flight together, so a step whose ranks all send before they receive cannot
    /// deadlock. At most one message per destination (and per source) per call.
    fn exchange(
        &self,
        sends: Vec<(usize, Vec<u8>)>,
        receives: &[usize],
    ) -> Result<Vec<Vec<u8>>, MeshError>;

    /// Every rank's `mine`, in rank order (the caller's own included).
    fn all_gather(&self, mine: &[u8]) -> Result<Vec<Vec<u8>>, MeshError> {
        let (me, n) = (self.rank(), self.ranks());
        let others: Vec<usize> = (0..n).filter(|&r| r != me).collect();
        let sends = others.iter().map(|&r| (r, mine.to_vec())).collect();
        let mut received = self.exchange(sends, &others)?.into_iter();
        (0..n)
            .map(|r| {
                if r == me {
                    Ok(mine.to_vec())
                } else {
                    received.next().ok_or_else(|| MeshError::Transport {
                        rank: r,
                        detail: "a message is missing from an all_gather".into(),
                    })
                }
            })
            .collect()
    }
}

/// The number of processes of the MPI job this process belongs to, when a launcher (`mpirun`,
/// `mpiexec`, `srun`) started it: read from the environment the launcher sets (Open MPI's
/// `OMPI_COMM_WORLD_SIZE`, PMIx's `PMIX_SIZE`, MPICH's and Slurm's `PMI_SIZE`), without
/// initialising MPI. `None` for a process started on its own.
pub fn launched_world_size() -> Option<usize> {
    ["OMPI_COMM_WORLD_SIZE", "PMIX_SIZE", "PMI_SIZE"]
        .iter()
        .find_map(|k| std::env::var(k).ok()?.trim().parse().ok())
}

/// Ranks as threads of one process: [`ThreadRanks::new`] makes one transport per rank, to be
/// moved into one thread each. A receive waits at most the given timeout, then fails naming
/// the rank it waited for (a rank that ended early never hangs the others).
pub struct ThreadRanks {
    rank: usize,
    /// `to[r]`: the channel into rank `r`'s inbox from this rank.
    to: Vec<Sender<Vec<u8>>>,
    /// `from[r]`: this rank's inbox from rank `r`.
    from: Vec<Mutex<Receiver<Vec<u8>>>>,
    timeout: Duration,
}

impl fmt::Debug for ThreadRanks {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ThreadRanks")
            .field("rank", &self.rank)
            .field("ranks", &self.to.len())
            .finish()
    }
}

impl ThreadRanks {
    /// One transport per rank for `ranks` ranks; receives time out after 60 s.
    pub fn new(ranks: usize) -> Vec<ThreadRanks> {
        Self::with_timeout(ranks, Duration::from_secs(60))
    }

    /// [`ThreadRanks::new`] with another receive timeout.
    pub fn with_timeout(ranks: usize, timeout: Duration) -> Vec<ThreadRanks> {
        // channels[src][dst]
        let mut senders: Vec<Vec<Option<Sender<Vec<u8>>>>> = Vec::with_capacity(ranks);
        let mut receivers: Vec<Vec<Option<Receiver<Vec<u8>>>>> = (0..ranks)
            .map(|_| (0..ranks).map(|_| None).collect())
            .collect();
        for src in 0..ranks {
            let mut row = Vec::with_capacity(ranks);
            for receiver_row in receivers.iter_mut() {
                let (tx, rx) = channel();
                row.push(Some(tx));
                receiver_row[src] = Some(rx);
            }
            senders.push(row);
        }
        senders
            .into_iter()
            .zip(receivers)
            .enumerate()
            .map(|(rank, (to, from))| ThreadRanks {
                rank,
                to: to.into_iter().flatten().collect(),
                from: from.into_iter().flatten().map(Mutex::new).collect(),
                timeout,
            })
            .collect()
    }
}

impl Transport for ThreadRanks {
    fn rank(&self) -> usize {
        self.rank
    }

    fn ranks(&self) -> usize {
        self.to.len()
    }

    fn exchange(
        &self,
        sends: Vec<(usize, Vec<u8>)>,
        receives: &[usize],
    ) -> Result<Vec<Vec<u8>>, MeshError> {
        let gone = |rank: usize, what: &str| MeshError::Transport {
            rank,
            detail: what.to_string(),
        };
        for (dst, bytes) in sends {
            let tx = self.to.get(dst).ok_or_else(|| gone(dst, "no such rank"))?;
            tx.send(bytes)
                .map_err(|_| gone(dst, "the rank has ended (its inbox is closed)"))?;
        }
        receives
            .iter()
            .map(|&src| {
                let rx = self
                    .from
                    .get(src)
                    .ok_or_else(|| gone(src, "no such rank"))?;
                let rx = rx.lock().map_err(|_| gone(src, "inbox lock poisoned"))?;
                rx.recv_timeout(self.timeout).map_err(|e| match e {
                    RecvTimeoutError::Timeout => {
                        gone(src, &format!("no message within {:?}", self.timeout))
                    }
                    RecvTimeoutError::Disconnected => {
                        gone(src, "the rank has ended without sending")
                    }
                })
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thread_ranks_exchange_and_gather() {
        let ranks = ThreadRanks::new(3);
        let out: Vec<Vec<Vec<u8>>> = std::thread::scope(|s| {
            let handles: Vec<_> = ranks
                .iter()
                .map(|t| s.spawn(move || t.all_gather(&[t.rank() as u8; 2]).unwrap()))
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        for got in out {
            assert_eq!(got, vec![vec![0, 0], vec![1, 1], vec![2, 2]]);
        }
    }

    #[test]
    fn a_rank_that_ended_is_named_not_waited_for() {
        let mut ranks = ThreadRanks::with_timeout(2, Duration::from_millis(200));
        let survivor = ranks.remove(0);
        drop(ranks); // rank 1 ends
        let err = survivor.exchange(vec![], &[1]).unwrap_err();
        assert!(matches!(err, MeshError::Transport { rank: 1, .. }), "{err}");
    }
}
