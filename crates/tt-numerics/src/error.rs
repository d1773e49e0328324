//! Typed errors of the numerics crate.

use thiserror::Error;

/// What went wrong, and what to change.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum NumericsError {
    /// A value buffer does not hold `rows * cols` values.
    #[error("expected {expected} values ({rows} x {cols}), got {got}")]
    ShapeMismatch {
        /// Rows asked for.
        rows: usize,
        /// Columns asked for.
        cols: usize,
        /// `rows * cols`.
        expected: usize,
        /// Values given.
        got: usize,
    },
    /// A packed byte buffer has the wrong length for its shape and format.
    #[error("expected {expected} packed bytes for this shape and format, got {got}")]
    ByteLength {
        /// Bytes the shape and format need.
        expected: usize,
        /// Bytes given.
        got: usize,
    },
    /// A row index past the matrix.
    #[error("row {row} out of range: the matrix has {rows} rows")]
    RowOutOfRange {
        /// Row asked for.
        row: usize,
        /// Rows of the matrix.
        rows: usize,
    },
    /// An output buffer of the wrong length.
    #[error("output buffer holds {got} values, the row has {expected}")]
    OutputLength {
        /// Values the row has.
        expected: usize,
        /// Values the buffer holds.
        got: usize,
    },
    /// A matrix with no rows or no columns.
    #[error("a packed matrix needs at least one row and one column (got {rows} x {cols})")]
    EmptyShape {
        /// Rows asked for.
        rows: usize,
        /// Columns asked for.
        cols: usize,
    },
    /// Two operand slices of a dot product differ in length.
    #[error("dot product operands differ in length: {weights} weights, {acts} activations")]
    DotLength {
        /// Weights given.
        weights: usize,
        /// Activations given.
        acts: usize,
    },
    /// A name that is not one of the known ones.
    #[error("unknown {what} `{got}`; expected one of: {expected}")]
    UnknownName {
        /// What kind of name (format, fidelity, preset, ...).
        what: &'static str,
        /// The name given.
        got: String,
        /// The names accepted.
        expected: &'static str,
    },
    /// An override that is not `op.field=value`.
    #[error("bad precision override `{0}`: write op.field=value, e.g. ff1_ff3.weights=bfp4")]
    BadOverride(String),
}
