//! tt-ops
