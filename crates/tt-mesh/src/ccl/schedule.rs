//! Step schedules of the ring and line algorithms: which device sends which chunk where.
//!
//! A tensor of `n` chunks is exchanged in `n - 1` steps per phase. In the reduce-scatter phase a
//! transfer adds the sender's chunk into the receiver's; afterwards device `c` holds the full sum
//! of chunk `c`. In the all-gather phase a transfer copies; device `c` starts as the owner of
//! chunk `c` and afterwards every device holds every chunk.
//!
//! Ring (unidirectional, `d -> d + 1 mod n`):
//! - reduce-scatter, step `s`: chunk `c` goes from `c + s + 1` to `c + s + 2` (mod n).
//! - all-gather, step `s`: chunk `c` goes from `c + s` to `c + s + 1` (mod n).
//!
//! Line (bidirectional, `d <-> d + 1`):
//! - reduce-scatter: the partial sum of chunk `c` over devices `< c` flows rightwards from
//!   device 0 (device `i` sends at step `n - 1 - c + i`), and the partial over devices `> c`
//!   flows leftwards from device `n - 1` (device `j` sends at step `c + n - 1 - j`); both reach
//!   device `c` at the last step.
//! - all-gather, step `s`: chunk `c` goes from `c + s` to `c + s + 1` and from `c - s` to
//!   `c - s - 1`, where those devices exist.

use crate::topology::Algorithm;

/// A phase of a collective.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Phase {
    /// Transfers add into the receiver's chunk.
    ReduceScatter,
    /// Transfers overwrite the receiver's chunk.
    AllGather,
}

/// One chunk moving over one directed link.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Transfer {
    pub(crate) src: usize,
    pub(crate) dst: usize,
}

/// The (at most two) transfers of chunk `c` at step `s` of `phase` on `n` devices.
pub(crate) fn transfers(
    algorithm: Algorithm,
    phase: Phase,
    n: usize,
    s: usize,
    c: usize,
) -> [Option<Transfer>; 2] {
    let t = |src, dst| Some(Transfer { src, dst });
    if n < 2 || s + 1 >= n || c >= n {
        return [None, None];
    }
    match (algorithm, phase) {
        (Algorithm::Ring, Phase::ReduceScatter) => [t((c + s + 1) % n, (c + s + 2) % n), None],
        (Algorithm::Ring, Phase::AllGather) => [t((c + s) % n, (c + s + 1) % n), None],
        (Algorithm::Line, Phase::ReduceScatter) => {
            // rightward sender i = s + c + 1 - n, while i < c
            let right = (s + c + 1)
                .checked_sub(n)
                .filter(|&i| i < c)
                .and_then(|i| t(i, i + 1));
            // leftward sender j = c + n - 1 - s, while j > c (always: s < n - 1) and j <= n - 1
            let left = (s >= c).then(|| c + n - 1 - s).and_then(|j| t(j, j - 1));
            [right, left]
        }
        (Algorithm::Line, Phase::AllGather) => {
            let right = (c + s + 1 < n)
                .then_some(())
                .and_then(|_| t(c + s, c + s + 1));
            let left = (c > s).then_some(()).and_then(|_| t(c - s, c - s - 1));
            [right, left]
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::needless_range_loop)]
    use super::*;

    /// Run the schedule on contribution sets: chunk `c` of device `d` starts as `{d}`.
    fn simulate(algorithm: Algorithm, n: usize) {
        let full: u64 = if n == 64 { u64::MAX } else { (1u64 << n) - 1 };
        let mut sets: Vec<Vec<u64>> = (0..n).map(|d| vec![1u64 << d; n]).collect();
        for phase in [Phase::ReduceScatter, Phase::AllGather] {
            for s in 0..n.saturating_sub(1) {
                for c in 0..n {
                    let ts: Vec<_> = transfers(algorithm, phase, n, s, c)
                        .into_iter()
                        .flatten()
                        .collect();
                    // No device both sends and receives chunk c within one step.
                    for a in &ts {
                        for b in &ts {
                            assert_ne!(a.src, b.dst, "{algorithm:?} n={n} s={s} c={c}");
                        }
                        assert!(a.src < n && a.dst < n && a.src != a.dst);
                        let linked = match algorithm {
                            Algorithm::Ring => a.dst == (a.src + 1) % n,
                            Algorithm::Line => a.src.abs_diff(a.dst) == 1,
                        };
                        assert!(linked, "{algorithm:?} n={n}: {a:?} is not a link");
                    }
                    for tr in ts {
                        let src = sets[tr.src][c];
                        match phase {
                            Phase::ReduceScatter => {
                                assert_eq!(sets[tr.dst][c] & src, 0, "double count");
                                sets[tr.dst][c] |= src;
                            }
                            Phase::AllGather => sets[tr.dst][c] = src,
                        }
                    }
                }
            }
            if phase == Phase::ReduceScatter {
                for (c, dev) in sets.iter().enumerate() {
                    assert_eq!(dev[c], full, "{algorithm:?} n={n}: owner of chunk {c}");
                }
            }
        }
        for (d, dev) in sets.iter().enumerate() {
            for (c, &set) in dev.iter().enumerate() {
                assert_eq!(set, full, "{algorithm:?} n={n}: device {d} chunk {c}");
            }
        }
    }

    #[test]
    fn schedules_reduce_every_chunk_once_and_gather_everywhere() {
        for n in 1..=17 {
            simulate(Algorithm::Ring, n);
            simulate(Algorithm::Line, n);
        }
    }
}
