//! Even splits of a dimension over devices, padding the last shards when it does not divide.

use std::ops::Range;

use serde::{Deserialize, Serialize};

/// `total` units split over `parts` devices: each device's shard holds `per_part` units; the
/// last shards hold fewer real units (and zeros after them) when `total` does not divide.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct EvenSplit {
    /// Units to split.
    pub total: usize,
    /// Devices.
    pub parts: usize,
    /// Units per device shard (`ceil(total / parts)`).
    pub per_part: usize,
}

impl EvenSplit {
    /// Split `total` units over `parts` devices (`parts` >= 1).
    pub fn new(total: usize, parts: usize) -> Self {
        let parts = parts.max(1);
        Self {
            total,
            parts,
            per_part: total.div_ceil(parts),
        }
    }

    /// `total` padded to a multiple of the device count (`per_part * parts`).
    pub fn padded_total(&self) -> usize {
        self.per_part * self.parts
    }

    /// Units added by padding (`padded_total - total`).
    pub fn padding(&self) -> usize {
        self.padded_total() - self.total
    }

    /// Whether the split is exact (no padding).
    pub fn is_exact(&self) -> bool {
        self.padding() == 0
    }

    /// The real units device `part` takes (may be shorter than `per_part`, or empty, at the end).
    pub fn range(&self, part: usize) -> Range<usize> {
        let start = (part * self.per_part).min(self.total);
        let end = ((part + 1) * self.per_part).min(self.total);
        start..end
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exact_and_padded_splits() {
        let s = EvenSplit::new(32064, 8);
        assert_eq!((s.per_part, s.padding()), (4008, 0));
        assert_eq!(s.range(7), 28056..32064);
        let s = EvenSplit::new(50257, 8);
        assert_eq!(
            (s.per_part, s.padded_total(), s.padding()),
            (6283, 50264, 7)
        );
        assert_eq!(s.range(7), 43981..50257);
        let s = EvenSplit::new(3, 8);
        assert_eq!(s.range(2), 2..3);
        assert_eq!(s.range(5), 3..3);
    }
}
