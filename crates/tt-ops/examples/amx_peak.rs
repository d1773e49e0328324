//! The AMX tile unit's rate on this CPU with nothing but `tdpbf16ps`: four independent 16x16
//! accumulators, operand tiles already in registers, no loads or stores. One thread, then two at
//! once (on a 2-vCPU guest the two may share one core's tile unit). GFLOP/s counts 2 x 16 x 16 x
//! 32 per instruction. The ceiling against which the tile kernels' rates (`prefill_dnnl`,
//! `device_linear`, `sdpa` benches) can be read. Needs AMX-BF16 and Linux; prints why not
//! otherwise. Run: `cargo run --release -p tt-ops --example amx_peak [millions of steps]`
//! (default 20; each step is four instructions).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

#[cfg(target_arch = "x86_64")]
fn main() {
    // CPUID, and Linux's grant of the tile state to this process (permanent, process-wide).
    if !tt_ops::kernels::amx_usable() {
        println!("no usable AMX-BF16 here (CPU or kernel): nothing to measure");
        return;
    }
    let steps: u64 = std::env::args()
        .nth(1)
        .map_or(20, |a| a.parse().unwrap())
        .max(1)
        * 1_000_000;
    println!("1 thread: {:.1} GFLOP/s", tiles::rate(steps));
    let threads: Vec<_> = (0..2)
        .map(|_| std::thread::spawn(move || tiles::rate(steps)))
        .collect();
    let rates: Vec<f64> = threads.into_iter().map(|t| t.join().unwrap()).collect();
    println!(
        "2 threads at once: {:.1} + {:.1} = {:.1} GFLOP/s",
        rates[0],
        rates[1],
        rates[0] + rates[1]
    );
}

#[cfg(not(target_arch = "x86_64"))]
fn main() {
    println!("AMX exists on x86_64 only");
}

#[cfg(target_arch = "x86_64")]
mod tiles {
    use std::arch::asm;

    /// GFLOP/s of `steps` x 4 `tdpbf16ps` on this thread.
    pub fn rate(steps: u64) -> f64 {
        // tmm0-7 as 16 rows of 64 bytes, released when `_tiles` drops.
        let _tiles =
            tt_ops::kernels::TileRegisters::acquire().expect("main checked that AMX is usable");
        // Small bf16 operands (1.0), so the sums stay finite and normal.
        let ones = vec![0x3F80u16; 512];
        let start = std::time::Instant::now();
        // SAFETY: `_tiles` configured tmm0-7 as 16 rows of 64 bytes on this thread; the loads
        // read 16 rows of 64 bytes at `ones` (1 KiB, stride 64); nothing else on this thread
        // uses tile registers.
        unsafe {
            asm!(
                "tileloadd tmm4, [{p} + {s}*1]",
                "tileloadd tmm5, [{p} + {s}*1]",
                "tileloadd tmm6, [{p} + {s}*1]",
                "tileloadd tmm7, [{p} + {s}*1]",
                "tilezero tmm0",
                "tilezero tmm1",
                "tilezero tmm2",
                "tilezero tmm3",
                p = in(reg) ones.as_ptr(),
                s = in(reg) 64usize,
                options(nostack, readonly)
            );
            asm!(
                "2:",
                "tdpbf16ps tmm0, tmm4, tmm6",
                "tdpbf16ps tmm1, tmm4, tmm7",
                "tdpbf16ps tmm2, tmm5, tmm6",
                "tdpbf16ps tmm3, tmm5, tmm7",
                "dec {n}",
                "jnz 2b",
                n = inout(reg) steps => _,
                options(nostack, nomem)
            );
        }
        let seconds = start.elapsed().as_secs_f64();
        (steps * 4 * 2 * 16 * 16 * 32) as f64 / seconds / 1e9
    }
}
