//! Does AMX's `tdpbf16ps` sum a K-tile of 32 bf16 products the way the device-numerics
//! emulation does (products added one by one in f32, in order of k)? Runs 2000 random 16x16x32
//! tile products on this CPU's AMX unit and counts the f32 outputs that differ, bit for bit, from
//! three summation models: in order of k, odd element of each pair first (AVX512-BF16's
//! `vdpbf16ps` order), and the exact sum rounded once. Needs AMX-BF16 (Sapphire Rapids or later)
//! and Linux; prints why not otherwise. Run: `cargo run --release -p tt-ops --example amx_rounding`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

#[cfg(target_arch = "x86_64")]
fn main() {
    // CPUID, and Linux's grant of the tile state to this process.
    if !tt_ops::kernels::amx_usable() {
        println!("no usable AMX-BF16 here (CPU or kernel): nothing to measure");
        return;
    }
    let counts = amx::measure(2000);
    println!(
        "{} outputs: differ from sequential f32 adds in order of k: {}; odd-first pairs: {}; exact sum rounded once: {}",
        counts[0], counts[1], counts[2], counts[3]
    );
}

#[cfg(not(target_arch = "x86_64"))]
fn main() {
    println!("AMX exists on x86_64 only");
}

#[cfg(target_arch = "x86_64")]
mod amx {
    use std::arch::asm;

    fn to_bf16(x: f32) -> u16 {
        (x.to_bits() >> 16) as u16
    }

    fn from_bf16(b: u16) -> f32 {
        f32::from_bits(u32::from(b) << 16)
    }

    /// bf16 values of mixed magnitude (2^-12 .. 2^12), from an xorshift generator.
    struct Values(u64);

    impl Values {
        fn next(&mut self) -> f32 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            let r = self.0;
            let unit = (r >> 11) as f32 / (1u64 << 53) as f32 * 2.0 - 1.0;
            let scale = 2f32.powi((r >> 3) as i32 % 24 - 12);
            from_bf16(to_bf16(unit * scale))
        }
    }

    /// [outputs, differ from in-order adds, from odd-first pairs, from the exact sum].
    pub fn measure(trials: usize) -> [usize; 4] {
        // tmm0: C 16x16 f32; tmm1: A 16 rows x 32 bf16; tmm2: B 16 rows of 16 bf16 pairs (all
        // eight registers are 16 rows of 64 bytes; released when `_tiles` drops).
        let _tiles =
            tt_ops::kernels::TileRegisters::acquire().expect("main checked that AMX is usable");
        let mut values = Values(0x1234_5678);
        let mut counts = [0usize; 4];
        for _ in 0..trials {
            let a: Vec<u16> = (0..16 * 32).map(|_| to_bf16(values.next())).collect(); // [m][k]
            let b: Vec<f32> = (0..32 * 16).map(|_| values.next()).collect(); // [k][n]
            let mut pairs = vec![0u16; 16 * 32]; // row k/2 holds (k even, k odd) per n
            for k in 0..32 {
                for n in 0..16 {
                    pairs[(k / 2) * 32 + 2 * n + k % 2] = to_bf16(b[k * 16 + n]);
                }
            }
            let mut c = vec![0f32; 256];
            // SAFETY: `_tiles` configured this thread's tiles; a, pairs and c hold 16 rows of
            // 64 bytes each at a stride of 64.
            unsafe {
                asm!(
                    "tilezero tmm0",
                    "tileloadd tmm1, [{a} + {s}*1]",
                    "tileloadd tmm2, [{b} + {s}*1]",
                    "tdpbf16ps tmm0, tmm1, tmm2",
                    "tilestored [{c} + {s}*1], tmm0",
                    a = in(reg) a.as_ptr(),
                    b = in(reg) pairs.as_ptr(),
                    c = in(reg) c.as_mut_ptr(),
                    s = in(reg) 64usize,
                );
            }
            for m in 0..16 {
                for n in 0..16 {
                    let p = |k: usize| from_bf16(a[m * 32 + k]) * b[k * 16 + n];
                    let in_order = (0..32).fold(0f32, |s, k| s + p(k));
                    let odd_first = (0..16).fold(0f32, |s, j| s + p(2 * j + 1) + p(2 * j));
                    let exact = (0..32).map(|k| f64::from(p(k))).sum::<f64>() as f32;
                    let got = c[m * 16 + n].to_bits();
                    counts[0] += 1;
                    counts[1] += usize::from(got != in_order.to_bits());
                    counts[2] += usize::from(got != odd_first.to_bits());
                    counts[3] += usize::from(got != exact.to_bits());
                }
            }
        }
        counts
    }
}
