//! Execution of a schedule on real device buffers.
//!
//! Each device's buffer is cut into its chunks, and the chunk slices are arranged chunk-major
//! (all devices' chunk 0, then chunk 1, ...). A step is one pass over the chunks: chunk `c`'s
//! transfers read one device's slice and write another's, so chunks run concurrently without
//! locks or copies through staging buffers; steps are separated by the pass's join (the
//! barrier a device waits at before forwarding what it received).

use std::collections::BTreeMap;
use std::ops::Range;

use rayon::prelude::*;
use tt_ops::Element;

use crate::ccl::schedule::{Phase, Transfer, transfers};
use crate::error::MeshError;
use crate::links::LinkCounters;
use crate::mesh::Mesh;
use crate::topology::Algorithm;
use crate::transport::Transport;
use crate::wire::Wire;

/// `src` and `dst` slices of one chunk column (`src != dst`).
fn pair<'a, T>(col: &'a mut [&mut [T]], t: Transfer) -> (&'a [T], &'a mut [T]) {
    if t.src < t.dst {
        let (lo, hi) = col.split_at_mut(t.dst);
        (&*lo[t.src], &mut *hi[0])
    } else {
        let (lo, hi) = col.split_at_mut(t.src);
        (&*hi[0], &mut *lo[t.dst])
    }
}

#[inline]
fn add_into<T: Element>(dst: &mut [T], src: &[T]) {
    for (d, s) in dst.iter_mut().zip(src) {
        *d = T::from_f32(d.to_f32() + s.to_f32());
    }
}

/// Balanced contiguous chunks of `len` elements over `n` devices (the first `len % n` one longer).
pub(crate) fn balanced_chunks(len: usize, n: usize) -> Vec<Range<usize>> {
    let n = n.max(1);
    let (base, extra) = (len / n, len % n);
    let mut start = 0;
    (0..n)
        .map(|k| {
            let size = base + usize::from(k < extra);
            let r = start..start + size;
            start += size;
            r
        })
        .collect()
}

/// Run `phases` of `algorithm` over the device buffers `bufs` (equal lengths) cut into `chunks`
/// (contiguous, covering each buffer, one per device), counting bytes per link.
pub(crate) fn run<T: Element>(
    bufs: &mut [&mut [T]],
    chunks: &[Range<usize>],
    algorithm: Algorithm,
    phases: &[Phase],
    links: &LinkCounters,
    parallel: bool,
) -> Result<(), MeshError> {
    let n = bufs.len();
    if n < 2 {
        return Ok(());
    }
    let len = bufs.first().map_or(0, |b| b.len());
    let covers = chunks.len() == n
        && chunks.first().is_some_and(|r| r.start == 0)
        && chunks.windows(2).all(|w| w[0].end == w[1].start)
        && chunks.last().is_some_and(|r| r.end == len);
    if !covers || bufs.iter().any(|b| b.len() != len) {
        return Err(MeshError::ShardMismatch {
            op: "collective",
            detail: format!(
                "{n} buffers of lengths {:?} cannot be cut into {chunks:?}",
                bufs.iter().map(|b| b.len()).collect::<Vec<_>>()
            ),
        });
    }
    // Chunk-major slices: flat[c * n + d] is chunk c of device d.
    let mut per_device: Vec<std::vec::IntoIter<&mut [T]>> = Vec::with_capacity(n);
    for buf in bufs.iter_mut() {
        let mut rest: &mut [T] = buf;
        let mut pieces = Vec::with_capacity(n);
        for r in chunks {
            let (head, tail) = std::mem::take(&mut rest).split_at_mut(r.len());
            pieces.push(head);
            rest = tail;
        }
        per_device.push(pieces.into_iter());
    }
    let mut flat: Vec<&mut [T]> = Vec::with_capacity(n * n);
    for _ in 0..n {
        flat.extend(per_device.iter_mut().filter_map(Iterator::next));
    }
    let elem = std::mem::size_of::<T>() as u64;
    for &phase in phases {
        for step in 0..n - 1 {
            let work = |(c, col): (usize, &mut [&mut [T]])| {
                for t in transfers(algorithm, phase, n, step, c)
                    .into_iter()
                    .flatten()
                {
                    let (src, dst) = pair(col, t);
                    match phase {
                        Phase::ReduceScatter => add_into(dst, src),
                        Phase::AllGather => dst.copy_from_slice(src),
                    }
                    links.add(t.src, t.dst, src.len() as u64 * elem);
                }
            };
            if parallel {
                flat.par_chunks_mut(n).enumerate().for_each(work);
            } else {
                flat.chunks_mut(n).enumerate().for_each(work);
            }
        }
    }
    Ok(())
}

/// [`run`] on a mesh spread over ranks: `bufs` are this rank's devices' buffers (devices
/// `first ..`), of the `n` devices of the mesh. Each step runs the whole schedule's transfers:
/// between two local devices in memory, to or from another rank as one message per rank pair
/// (the step's chunks for that pair, in schedule order). Every transfer of the schedule is
/// counted on the links, as in one process; the messages this rank sends are counted apart.
///
/// The arithmetic is [`run`]'s, transfer for transfer, so the results are bit-identical.
#[allow(clippy::too_many_arguments)]
pub(crate) fn run_ranked<T: Wire>(
    bufs: &mut [&mut [T]],
    first: usize,
    n: usize,
    chunks: &[Range<usize>],
    algorithm: Algorithm,
    phases: &[Phase],
    mesh: &Mesh,
    transport: &dyn Transport,
) -> Result<(), MeshError> {
    let links = mesh.links();
    let local = first..first + bufs.len();
    let len = bufs.first().map_or(0, |b| b.len());
    let covers = chunks.len() == n
        && chunks.first().is_some_and(|r| r.start == 0)
        && chunks.windows(2).all(|w| w[0].end == w[1].start)
        && chunks.last().is_some_and(|r| r.end == len);
    if !covers || bufs.iter().any(|b| b.len() != len) || local.end > n {
        return Err(MeshError::ShardMismatch {
            op: "collective",
            detail: format!(
                "{} local buffers of devices {local:?} of {n} cannot be cut into {chunks:?}",
                bufs.len()
            ),
        });
    }
    let elem = std::mem::size_of::<T>() as u64;
    let apply = |phase: Phase, dst: &mut [T], src: &[T]| match phase {
        Phase::ReduceScatter => add_into(dst, src),
        Phase::AllGather => dst.copy_from_slice(src),
    };
    for &phase in phases {
        for step in 0..n.saturating_sub(1) {
            let all: Vec<(usize, Transfer)> = (0..n)
                .flat_map(|c| {
                    transfers(algorithm, phase, n, step, c)
                        .into_iter()
                        .flatten()
                        .map(move |t| (c, t))
                })
                .collect();
            let mut outgoing: BTreeMap<usize, Vec<u8>> = BTreeMap::new();
            let mut incoming: BTreeMap<usize, Vec<(usize, Transfer)>> = BTreeMap::new();
            for &(c, t) in &all {
                links.add(t.src, t.dst, chunks[c].len() as u64 * elem);
                match (local.contains(&t.src), local.contains(&t.dst)) {
                    (true, false) => {
                        let out = outgoing.entry(mesh.rank_of(t.dst)).or_default();
                        T::put(&bufs[t.src - first][chunks[c].clone()], out);
                    }
                    (false, true) => incoming
                        .entry(mesh.rank_of(t.src))
                        .or_default()
                        .push((c, t)),
                    _ => {}
                }
            }
            let sends: Vec<(usize, Vec<u8>)> = outgoing.into_iter().collect();
            for (_, bytes) in &sends {
                links.add_message(bytes.len() as u64);
            }
            let sources: Vec<usize> = incoming.keys().copied().collect();
            let started = std::time::Instant::now();
            let received = transport.exchange(sends, &sources)?;
            links.add_exchange_time(started.elapsed());
            if received.len() != sources.len() {
                return Err(MeshError::Transport {
                    rank: transport.rank(),
                    detail: format!(
                        "expected {} messages, got {}",
                        sources.len(),
                        received.len()
                    ),
                });
            }
            let mut cursors: BTreeMap<usize, (&[u8], usize)> = BTreeMap::new();
            for (bytes, (rank, list)) in received.iter().zip(&incoming) {
                let expected: usize = list.iter().map(|(c, _)| chunks[*c].len() * T::BYTES).sum();
                if bytes.len() != expected {
                    return Err(MeshError::Transport {
                        rank: *rank,
                        detail: format!(
                            "a collective step's message holds {} bytes, {expected} expected",
                            bytes.len()
                        ),
                    });
                }
                cursors.insert(*rank, (bytes.as_slice(), 0));
            }
            // Apply every transfer into a local device in schedule order, as `run` does: a
            // device receiving one chunk from both sides adds them in the same order. A device
            // never sends and receives one chunk in one step, so no transfer reads a value
            // another transfer of the step writes.
            let mut scratch = Vec::new();
            for &(c, t) in &all {
                if !local.contains(&t.dst) {
                    continue;
                }
                let r = chunks[c].clone();
                scratch.resize(r.len(), T::from_f32(0.0));
                if local.contains(&t.src) {
                    scratch.copy_from_slice(&bufs[t.src - first][r.clone()]);
                } else {
                    let rank = mesh.rank_of(t.src);
                    let (bytes, at) = cursors.get_mut(&rank).ok_or(MeshError::Transport {
                        rank,
                        detail: "no message for a transfer of this step".into(),
                    })?;
                    T::get(&bytes[*at..*at + r.len() * T::BYTES], &mut scratch);
                    *at += r.len() * T::BYTES;
                }
                apply(phase, &mut bufs[t.dst - first][r], &scratch);
            }
        }
    }
    Ok(())
}
