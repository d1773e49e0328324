//! How devices are linked, and which collective algorithm runs over the links.

use serde::{Deserialize, Serialize};

/// Links between the devices of a mesh, in row-major device order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Topology {
    /// Device `i` is linked to `i - 1` and `i + 1` (both directions).
    Linear,
    /// Linear plus a link between the last device and the first.
    Ring,
}

impl Topology {
    /// Whether devices `a` and `b` of an `n`-device mesh share a link.
    pub fn linked(self, n: usize, a: usize, b: usize) -> bool {
        if a >= n || b >= n || a == b {
            return false;
        }
        let adjacent = a.abs_diff(b) == 1;
        match self {
            Topology::Linear => adjacent,
            Topology::Ring => adjacent || a.abs_diff(b) == n - 1,
        }
    }

    /// The collective algorithm that fits this topology (ring on a ring, line on a line).
    pub fn default_algorithm(self) -> Algorithm {
        match self {
            Topology::Linear => Algorithm::Line,
            Topology::Ring => Algorithm::Ring,
        }
    }
}

/// A collective algorithm. Both run `N - 1` steps per phase and move the same total bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Algorithm {
    /// Unidirectional ring: at each step every device passes one chunk to `d + 1 mod N`. Each
    /// device sends `(N-1)/N` of the tensor per phase, `2 (N-1)/N` per all_reduce.
    Ring,
    /// Bidirectional line: chunk `c` is reduced from both ends towards device `c`, then
    /// broadcast from `c` both ways. Every directed link carries the whole tensor once per
    /// all_reduce.
    Line,
}
