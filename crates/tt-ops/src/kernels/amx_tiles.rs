//! The tile registers as every AMX kernel of this crate uses them: eight tiles of 16 rows of 64
//! bytes; tmm0-3 hold a 32 x 32 f32 result as four 16 x 16 tiles (`[row half][column half]`),
//! tmm4-5 the left operand's two row halves (bf16 pairs), tmm6-7 the right operand's two column
//! halves (pair-interleaved: row `p` of a tile holds `(b[2p][j], b[2p + 1][j])` for its 16
//! columns `j`). One [`step`] adds 32 summed values of the product with four `tdpbf16ps`.
//!
//! The bf16 GEMM ([`super::amx_gemm`]), the block-float prefill's K-tile sums
//! (`crate::packed_amx`) and the prefill attention (`crate::sdpa_amx`) are all made of these
//! four sequences ([`zero`], [`load`], [`step`], [`store`]); they differ only in where the
//! operands and results lie, which [`Quad`] and the strides say. The compiler never uses tile
//! registers, so they keep their values from one `asm!` block to the next.

use super::amx_gemm::Amx;

/// The 64-byte `ldtilecfg` operand (palette 1).
#[repr(C, align(64))]
struct TileConfig {
    palette: u8,
    start_row: u8,
    reserved: [u8; 14],
    colsb: [u16; 16],
    rows: [u8; 16],
}

/// tmm0-7 configured as 16 rows of 64 bytes each on this thread, released when dropped. Only
/// [`TileRegisters::configure`] (with an [`Amx`] token) and [`TileRegisters::acquire`] make one:
/// holding one proves this thread may run tile instructions on all eight registers.
pub struct TileRegisters {
    /// Not `Send`: the configuration belongs to the thread that loaded it.
    _thread: std::marker::PhantomData<*const ()>,
}

impl TileRegisters {
    /// The configured registers on this thread, or `None` when this CPU or kernel gives no
    /// AMX-BF16 tile state (see [`super::amx_usable`]). For code outside this crate that runs
    /// its own tile instructions (the `amx_peak` and `amx_rounding` examples).
    pub fn acquire() -> Option<TileRegisters> {
        Amx::detect().map(TileRegisters::configure)
    }

    /// Loads the configuration on this thread.
    pub(crate) fn configure(_amx: Amx) -> TileRegisters {
        let mut cfg = TileConfig {
            palette: 1,
            start_row: 0,
            reserved: [0; 14],
            colsb: [0; 16],
            rows: [0; 16],
        };
        for t in 0..8 {
            cfg.colsb[t] = 64;
            cfg.rows[t] = 16;
        }
        load_config(&cfg);
        TileRegisters {
            _thread: std::marker::PhantomData,
        }
    }
}

impl Drop for TileRegisters {
    fn drop(&mut self) {
        release();
    }
}

/// Where the four result tiles of tmm0-3 lie in memory: tile `[i][j]` (row half `i`, column half
/// `j`) starts at `base + i·lower + j·right`, its 16 rows of 64 bytes `stride` bytes apart.
#[derive(Clone, Copy, Debug)]
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
pub(crate) struct Quad {
    base: *mut u8,
    stride: usize,
    lower: usize,
    right: usize,
}

impl Quad {
    /// Four whole tiles, 1 KiB each and contiguous, in the order `[0][0], [0][1], [1][0],
    /// [1][1]`, from `c`.
    pub(crate) fn tiles<T>(c: *mut T) -> Quad {
        Quad {
            base: c.cast(),
            stride: 64,
            lower: 2048,
            right: 1024,
        }
    }

    /// A 32 x 32 f32 matrix, row-major, rows `stride` bytes apart, from `c`.
    pub(crate) fn rows(c: *mut f32, stride: usize) -> Quad {
        Quad {
            base: c.cast(),
            stride,
            lower: 16 * stride,
            right: 64,
        }
    }

    /// The start of tile `[i][j]`.
    #[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
    fn at(&self, i: usize, j: usize) -> *mut u8 {
        self.base.wrapping_add(i * self.lower + j * self.right)
    }
}

/// Zeroes the result tiles.
///
/// # Safety
/// This thread holds a [`TileRegisters`].
pub(crate) unsafe fn zero() {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: the caller's contract; tile instructions touch no memory here.
    unsafe {
        std::arch::asm!(
            "tilezero tmm0",
            "tilezero tmm1",
            "tilezero tmm2",
            "tilezero tmm3",
            options(nostack, nomem)
        )
    };
}

/// Loads the result tiles from `c`.
///
/// # Safety
/// As [`zero`], and the four tiles `c` describes are readable.
pub(crate) unsafe fn load(c: &Quad) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: the caller's contract.
    unsafe {
        std::arch::asm!(
            "tileloadd tmm0, [{c00} + {s}*1]",
            "tileloadd tmm1, [{c01} + {s}*1]",
            "tileloadd tmm2, [{c10} + {s}*1]",
            "tileloadd tmm3, [{c11} + {s}*1]",
            c00 = in(reg) c.at(0, 0),
            c01 = in(reg) c.at(0, 1),
            c10 = in(reg) c.at(1, 0),
            c11 = in(reg) c.at(1, 1),
            s = in(reg) c.stride,
            options(nostack, readonly)
        )
    };
    #[cfg(not(target_arch = "x86_64"))]
    let _ = c;
}

/// Stores the result tiles to `c`.
///
/// # Safety
/// As [`zero`], and the four tiles `c` describes are writable, with nothing else referring to
/// them.
pub(crate) unsafe fn store(c: &Quad) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: the caller's contract.
    unsafe {
        std::arch::asm!(
            "tilestored [{c00} + {s}*1], tmm0",
            "tilestored [{c01} + {s}*1], tmm1",
            "tilestored [{c10} + {s}*1], tmm2",
            "tilestored [{c11} + {s}*1], tmm3",
            c00 = in(reg) c.at(0, 0),
            c01 = in(reg) c.at(0, 1),
            c10 = in(reg) c.at(1, 0),
            c11 = in(reg) c.at(1, 1),
            s = in(reg) c.stride,
            options(nostack)
        )
    };
    #[cfg(not(target_arch = "x86_64"))]
    let _ = c;
}

/// Adds one step of 32 summed values to the result tiles: the left operand's row halves at `a0`
/// and `a1` (16 rows of 64 bytes each, `a_stride` bytes apart), the right operand's column halves
/// at `b0` and `b1` (1 KiB each, rows 64 bytes apart).
///
/// # Safety
/// As [`zero`], and those bytes are readable.
pub(crate) unsafe fn step(
    a0: *const u16,
    a1: *const u16,
    a_stride: usize,
    b0: *const u16,
    b1: *const u16,
) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: the caller's contract.
    unsafe {
        std::arch::asm!(
            "tileloadd tmm4, [{a0} + {sa}*1]",
            "tileloadd tmm5, [{a1} + {sa}*1]",
            "tileloadd tmm6, [{b0} + {s64}*1]",
            "tileloadd tmm7, [{b1} + {s64}*1]",
            "tdpbf16ps tmm0, tmm4, tmm6",
            "tdpbf16ps tmm1, tmm4, tmm7",
            "tdpbf16ps tmm2, tmm5, tmm6",
            "tdpbf16ps tmm3, tmm5, tmm7",
            a0 = in(reg) a0,
            a1 = in(reg) a1,
            sa = in(reg) a_stride,
            b0 = in(reg) b0,
            b1 = in(reg) b1,
            s64 = in(reg) 64usize,
            options(nostack, readonly)
        )
    };
    #[cfg(not(target_arch = "x86_64"))]
    let _ = (a0, a1, a_stride, b0, b1);
}

#[cfg(target_arch = "x86_64")]
fn load_config(cfg: &TileConfig) {
    // SAFETY: only reachable with an `Amx` token, so the CPU has AMX and the process holds the
    // tile state; `cfg` is a valid, 64-byte aligned palette-1 configuration. The compiler never
    // uses tile registers itself, so configuring them disturbs nothing of its.
    unsafe {
        std::arch::asm!("ldtilecfg [{}]", in(reg) cfg as *const TileConfig, options(nostack, readonly))
    };
}

#[cfg(target_arch = "x86_64")]
fn release() {
    // SAFETY: as in `load_config`; returns the tile registers to their initial state.
    unsafe { std::arch::asm!("tilerelease", options(nostack, nomem)) };
}

#[cfg(not(target_arch = "x86_64"))]
fn load_config(_cfg: &TileConfig) {}

#[cfg(not(target_arch = "x86_64"))]
fn release() {}
