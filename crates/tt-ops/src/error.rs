//! The typed error every tt-ops function returns on bad input.
//!
//! Ops never panic on anything a caller supplies: shapes, dtypes, positions, page tables and
//! indices are checked up front and reported through [`OpError`].

use crate::tensor::DType;

/// Result alias used across tt-ops.
pub type Result<T> = std::result::Result<T, OpError>;

/// What went wrong in a tensor constructor or an op.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OpError {
    /// A buffer's length does not match the product of the requested shape.
    #[error("data has {got} elements but shape {shape:?} needs {expected}")]
    DataLength {
        /// Requested shape.
        shape: Vec<usize>,
        /// Elements the shape needs.
        expected: usize,
        /// Elements supplied.
        got: usize,
    },
    /// A tensor's shape breaks the op's shape contract.
    #[error("{op}: {detail}")]
    Shape {
        /// Op (or tensor method) that rejected the shape.
        op: &'static str,
        /// Human-readable description of the contract that was broken.
        detail: String,
    },
    /// A tensor has the wrong storage type for the op.
    #[error("{op}: expected dtype {expected:?}, got {got:?}")]
    DType {
        /// Op that rejected the dtype.
        op: &'static str,
        /// Dtype the op needs.
        expected: DType,
        /// Dtype supplied.
        got: DType,
    },
    /// An index, position or range lies outside what a tensor holds.
    #[error("{op}: {what} = {index} is out of range (bound {bound})")]
    OutOfRange {
        /// Op that rejected the index.
        op: &'static str,
        /// What the index names (e.g. `ids[0]`, `cur_pos[3]`, `page_table[1][2]`).
        what: String,
        /// The offending value (may be negative).
        index: i64,
        /// Exclusive upper bound the value had to respect.
        bound: usize,
    },
    /// Query heads are not a whole multiple of key/value heads (GQA needs `nh % nkv == 0`).
    #[error("{op}: {nh} query heads are not a multiple of {nkv} key/value heads")]
    Heads {
        /// Op that rejected the head counts.
        op: &'static str,
        /// Query heads.
        nh: usize,
        /// Key/value heads.
        nkv: usize,
    },
    /// Any other invalid argument (a zero size, an unaligned update index, a NaN epsilon...).
    #[error("{op}: {detail}")]
    InvalidArgument {
        /// Op that rejected the argument.
        op: &'static str,
        /// What was wrong.
        detail: String,
    },
}

impl OpError {
    /// Shorthand for [`OpError::Shape`].
    pub(crate) fn shape(op: &'static str, detail: impl Into<String>) -> Self {
        Self::Shape {
            op,
            detail: detail.into(),
        }
    }

    /// Shorthand for [`OpError::InvalidArgument`].
    pub(crate) fn invalid(op: &'static str, detail: impl Into<String>) -> Self {
        Self::InvalidArgument {
            op,
            detail: detail.into(),
        }
    }

    /// Shorthand for [`OpError::OutOfRange`].
    pub(crate) fn out_of_range(
        op: &'static str,
        what: impl Into<String>,
        index: i64,
        bound: usize,
    ) -> Self {
        Self::OutOfRange {
            op,
            what: what.into(),
            index,
            bound,
        }
    }
}
