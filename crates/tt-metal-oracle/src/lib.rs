//! tt-metal-oracle: tt-metal's own block-float packer, called from Rust, as the oracle that
//! `tt-numerics` is checked against bit for bit.
//!
//! With the `tt-metal` feature this crate binds `libtt_metal.so` from the PyPI wheel `ttnn`
//! 0.81.1 through [`cxx`](https://cxx.rs) and a small C++ shim that declares the exported
//! functions' prototypes (the wheel ships no headers). The build needs `TT_METAL_WHEEL_DIR`, the
//! unpacked wheel (`cargo xtask ttnn-wheel` fetches, checks and unpacks it and prints the path).
//! Without the feature the crate holds only the constants below, and its conformance test is not
//! built (`required-features`), so a plain `cargo test` needs no wheel.
//!
//! Code map:
//! - `oracle` (feature `tt-metal`): safe wrappers over the scalar and tile functions, and the
//!   mock-device setup the tile functions need.
//! - `ffi` (feature `tt-metal`): the cxx bridge.

#[cfg(feature = "tt-metal")]
mod ffi;
#[cfg(feature = "tt-metal")]
pub mod oracle;

/// The environment variable naming the unpacked ttnn wheel at build time.
pub const WHEEL_DIR_ENV: &str = "TT_METAL_WHEEL_DIR";

/// The ttnn wheel version the oracle is pinned to.
pub const TTNN_VERSION: &str = "0.81.1";

/// A one-chip Wormhole n150 cluster descriptor for tt-metal's mock cluster.
pub const MOCK_CLUSTER_YAML: &str = include_str!("../data/wormhole_n150_mock.yaml");
