//! Deterministic benchmark data, shared by the benches and examples (included with `#[path]`).

/// `len` pseudo-random values in [-1, 1) from a 64-bit LCG seeded with `seed` (fast enough for a
/// gigabyte of weights).
pub fn values(len: usize, seed: u64) -> impl Iterator<Item = f32> {
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len).map(move |_| {
        s = s
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
    })
}
