//! Execution of a schedule on real device buffers.
//!
//! Each device's buffer is cut into its chunks, and the chunk slices are arranged chunk-major
//! (all devices' chunk 0, then chunk 1, ...). A step is one pass over the chunks: chunk `c`'s
//! transfers read one device's slice and write another's, so chunks run concurrently without
//! locks or copies through staging buffers; steps are separated by the pass's join (the
//! barrier a device waits at before forwarding what it received).

use std::ops::Range;

use rayon::prelude::*;
use tt_ops::Element;

use crate::ccl::schedule::{Phase, Transfer, transfers};
use crate::error::MeshError;
use crate::links::LinkCounters;
use crate::topology::Algorithm;

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
