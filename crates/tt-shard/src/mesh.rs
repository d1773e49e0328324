//! Mesh shape: `rows x cols` devices, numbered in row-major order.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::error::MeshShapeError;

/// A 2-D mesh of devices. Device `d` sits at row `d / cols`, column `d % cols`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct MeshShape {
    rows: usize,
    cols: usize,
}

impl MeshShape {
    /// A mesh of `rows x cols` devices; both must be at least 1.
    pub fn new(rows: usize, cols: usize) -> Result<Self, MeshShapeError> {
        if rows == 0 || cols == 0 {
            return Err(MeshShapeError::Empty { rows, cols });
        }
        Ok(Self { rows, cols })
    }

    /// A single device (`1x1`).
    pub fn single() -> Self {
        Self { rows: 1, cols: 1 }
    }

    /// Rows of the mesh.
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Columns of the mesh.
    pub fn cols(&self) -> usize {
        self.cols
    }

    /// Total devices (`rows * cols`).
    pub fn num_devices(&self) -> usize {
        self.rows * self.cols
    }

    /// Row-major id of the device at (`row`, `col`), if inside the mesh.
    pub fn device_id(&self, row: usize, col: usize) -> Option<usize> {
        (row < self.rows && col < self.cols).then(|| row * self.cols + col)
    }

    /// (row, col) of device `device`, if inside the mesh.
    pub fn coords(&self, device: usize) -> Option<(usize, usize)> {
        (device < self.num_devices()).then(|| (device / self.cols, device % self.cols))
    }
}

impl fmt::Display for MeshShape {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}x{}", self.rows, self.cols)
    }
}

impl FromStr for MeshShape {
    type Err = MeshShapeError;

    /// Parses `RxC` (`2x4`, `2X4`, `2 x 4`) or a device count `N` (meaning `1xN`).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let parse_err = || MeshShapeError::Parse {
            text: s.to_string(),
        };
        let num = |t: &str| t.trim().parse::<usize>().map_err(|_| parse_err());
        let lower = s.to_ascii_lowercase();
        match lower.split_once('x') {
            Some((r, c)) => Self::new(num(r)?, num(c)?),
            None => Self::new(1, num(&lower)?),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_numbers_row_major() {
        let m: MeshShape = "2x4".parse().unwrap();
        assert_eq!((m.rows(), m.cols(), m.num_devices()), (2, 4, 8));
        assert_eq!(m.device_id(1, 2), Some(6));
        assert_eq!(m.coords(6), Some((1, 2)));
        assert_eq!(m.coords(8), None);
        assert_eq!(m.device_id(2, 0), None);
        assert_eq!(m.to_string(), "2x4");
        assert_eq!(
            "4 X 8".parse::<MeshShape>().unwrap(),
            MeshShape::new(4, 8).unwrap()
        );
        assert_eq!(
            "8".parse::<MeshShape>().unwrap(),
            MeshShape::new(1, 8).unwrap()
        );
        assert_eq!(MeshShape::single().num_devices(), 1);
    }

    #[test]
    fn rejects_bad_shapes() {
        assert!(matches!(
            "2x".parse::<MeshShape>(),
            Err(MeshShapeError::Parse { .. })
        ));
        assert!(matches!(
            "ax4".parse::<MeshShape>(),
            Err(MeshShapeError::Parse { .. })
        ));
        assert!(matches!(
            "-1x4".parse::<MeshShape>(),
            Err(MeshShapeError::Parse { .. })
        ));
        assert!(matches!(
            "0x4".parse::<MeshShape>(),
            Err(MeshShapeError::Empty { .. })
        ));
        assert!(matches!(
            MeshShape::new(3, 0),
            Err(MeshShapeError::Empty { .. })
        ));
    }
}
