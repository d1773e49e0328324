//! tt-mesh
