//! `device_linear`: `ttnn.linear` as a Tenstorrent Wormhole device computes it, so that a host
//! run predicts the device's accuracy (not its speed).
//!
//! The weight is a [`DeviceWeight`]: HF's `w [N, K]` transposed to `[K, N]` and packed in 32x32
//! tiles of one [`StorageFormat`] by tt-metal's host packer (ties to even), as tt_transformers
//! does (transpose, then `ttnn.as_tensor`). Face rows run along N, so in bfp8/bfp4 the 16 output
//! features of one input feature share an exponent.
//!
//! Numerics model of [`device_linear`] (`y [.., N] = x [.., K] @ W`), under an [`OpSettings`]'s
//! fidelity, accumulation and output format:
//! 1. Activations (SrcB): each x value is rounded to bf16, ties to even (device inputs are bf16
//!    tensors). `b_hi` keeps its top 7 significant bits (the bf16's last mantissa bit masked off),
//!    `b_lo = b - b_hi`.
//! 2. Weights (SrcA): the values dequantized from the packed tiles (exact bf16 values for bf16,
//!    bfp8 and bfp4; f32 weights are rounded to bf16, ties to even, since the matrix engine
//!    multiplies bf16). `a_hi` keeps the top 5 significant bits (low 3 mantissa bits masked off),
//!    `a_lo = a - a_hi`.
//! 3. Products per fidelity (as [`tt_numerics::fidelity::product`]): LoFi `a_hi·b_hi`, HiFi2
//!    `a·b_hi`, HiFi3 `a·b_hi + a_hi·b_lo`, HiFi4 `a·b`. Each has at most 16 significant bits, so
//!    it is exact in f32. Zero and subnormal operands count as zero.
//! 4. Accumulation: K runs in tiles of 32 (the last may be partial). Within a K-tile the products
//!    are summed in f32, in order of k, starting from 0. The tile sum is then added to the
//!    destination (starting at 0): `Fp32` → `dest += tile_sum` in f32; `Bf16` →
//!    `dest = round_bf16(dest + tile_sum)` (ties to even).
//! 5. Output: `dest` written in the output format by the device's packer: f32 unchanged; bf16
//!    rounded ties away from zero; bfp8/bfp4 per run of 16 along each output row, ties away from
//!    zero ([`round_to_device_format`]).
//!
//! Non-finite values follow IEEE arithmetic on the split parts (no special cases). Results are
//! the same for any number of threads: every output element's operations run in a fixed order.
//!
//! Kernels ([`DeviceKernel`]): on block-float weights under LoFi, HiFi2 or HiFi4, CPUs with
//! AVX-512 or AVX2 + FMA run [`crate::packed_gemv`], which reads the packed tiles in place and gives the same
//! bits as the rules above (that module says why, and which inputs fall back). Everything else
//! runs the reference emulation: per K-tile the weight panel `[32, block of N]` is dequantized
//! once, then every row of x accumulates into a contiguous f32 row buffer (`acc[n] += b ·
//! panel[k][n]`). Either way work is split over column blocks of N (and row chunks of x when
//! there are few blocks) over the pool's threads ([`crate::team::map`]) when `M·K·N` is large. [`device_linear_reference`] always
//! runs the emulation (tests, benchmarks).

use std::sync::OnceLock;

use rayon::prelude::*;
use tt_numerics::bf16::round_bf16;
use tt_numerics::bfp::{BfpFormat, Rounding, decode};

pub use crate::device_format::{round_to_device_format, write_in_format};
use tt_numerics::tile::{FACE, FACE_VALUES, TILE, TILE_EXPONENTS, TILE_VALUES, pack_tile};
use tt_numerics::{Accumulation, MathFidelity, OpSettings, PackedMatrix, StorageFormat};

use crate::error::{OpError, Result};
use crate::k_tile_sums::{KTileSums, k_tile_sums};
use crate::packed_gemv::{self, B_HI_MASK, Choice, ExponentRange};
use crate::tensor::{DType, Element, Tensor};

const OP: &str = "device_linear";
/// Above this many multiply-adds (`M·K·N`) the work is spread over rayon's threads.
const PARALLEL_WORK: usize = 1 << 20;
/// Output columns per parallel task (a multiple of the tile width).
const BLOCK_COLS: usize = 256;
/// bf16 bits kept in `a_hi` (sign, exponent, top 4 mantissa bits) as an f32 mask.
const A_HI_MASK: u32 = 0xfff8_0000;

/// A linear layer's weight as the device stores it: `w [N, K]` (HF nn.Linear layout) transposed
/// to `[K, N]` and packed in tiles of one StorageFormat (what tt_transformers does: it transposes
/// the weight, then ttnn.as_tensor tiles it). Face rows of 16 therefore run along N: 16 output
/// features of one input feature share a bfp exponent.
#[derive(Debug, Clone)]
pub struct DeviceWeight {
    packed: PackedMatrix,
    /// Shared-exponent range of a block-float matrix the fast kernel may read.
    range: Option<ExponentRange>,
}

/// Which kernel computes a [`device_linear()`] call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeviceKernel {
    /// [`crate::packed_gemv`]'s AVX-512 kernel on the packed block-float tiles.
    PackedAvx512,
    /// [`crate::packed_gemv`]'s AVX-512 BF16 kernels (`vdpbf16ps`) on the packed tiles: prefill
    /// and decode, bfloat8_b and bfloat4_b; the same bits as the others.
    PackedAvx512Bf16,
    /// [`crate::packed_gemv`]'s AVX2 + FMA kernel on the packed block-float tiles.
    PackedAvx2,
    /// The AMX tile unit on the packed tiles decoded to bf16 (prefill under
    /// [`KTileSums::MatrixUnit`]; not the emulation's bits, see [`crate::k_tile_sums`]).
    MatrixUnit,
    /// The reference emulation (any weight format, fidelity and CPU).
    Reference,
}

impl DeviceKernel {
    /// Every kernel, in declaration order (reports and counters list them so; a new variant
    /// goes here too).
    pub const ALL: &[DeviceKernel] = &[
        Self::PackedAvx512,
        Self::PackedAvx512Bf16,
        Self::PackedAvx2,
        Self::MatrixUnit,
        Self::Reference,
    ];

    /// The kernel's position in [`DeviceKernel::ALL`] (its declaration order).
    pub const fn index(self) -> usize {
        self as usize
    }

    /// A short name for reports.
    pub fn name(self) -> &'static str {
        match self {
            Self::PackedAvx512 => "packed-avx512",
            Self::PackedAvx512Bf16 => "packed-avx512-bf16",
            Self::PackedAvx2 => "packed-avx2",
            Self::MatrixUnit => "amx-k-tiles",
            Self::Reference => "reference",
        }
    }
}

impl DeviceWeight {
    /// Packs `w [N, K]` (f32 or bf16, contiguous or a column view) with tt-metal's host packer
    /// (ties to even). Errors unless `w` is a non-empty matrix.
    pub fn pack(w: &Tensor, format: StorageFormat) -> Result<Self> {
        const OP: &str = "DeviceWeight::pack";
        let [n, k] = w.dims::<2>().map_err(|_| {
            OpError::shape(OP, format!("weight must be [N, K], got {:?}", w.shape()))
        })?;
        if n == 0 || k == 0 {
            return Err(OpError::shape(
                OP,
                format!("weight must not be empty, got {:?}", w.shape()),
            ));
        }
        let bytes = match w.dtype() {
            DType::F32 => {
                let (src, stride) = w.f32_rows()?;
                pack_transposed(src, stride, n, k, format)
            }
            DType::Bf16 => {
                let (src, stride) = w.bf16_rows()?;
                pack_transposed(src, stride, n, k, format)
            }
        };
        let packed = PackedMatrix::from_bytes(k, n, format, bytes)
            .map_err(|e| OpError::invalid(OP, e.to_string()))?;
        Ok(Self::from_packed(packed))
    }

    /// Wraps a matrix already packed as `[K, N]` tiles (e.g. read back from a cache).
    pub fn from_packed(packed: PackedMatrix) -> Self {
        let range = packed_gemv::exponent_range(&packed);
        Self { packed, range }
    }

    /// The kernel a call with `settings` runs on this CPU when its activations fit (finite, in
    /// exponent range; else the call runs [`DeviceKernel::Reference`]; and for
    /// [`DeviceKernel::PackedAvx512Bf16`], no product a multiple of less than `2^-126`, else the
    /// call runs [`DeviceKernel::PackedAvx512`]).
    pub fn kernel(&self, settings: &OpSettings) -> DeviceKernel {
        packed_gemv::plan(self.format(), self.range, settings, Choice::Best)
            .map_or(DeviceKernel::Reference, |plan| plan.kernel())
    }

    /// Input features `K` (the packed matrix's rows).
    pub fn in_features(&self) -> usize {
        self.packed.rows()
    }

    /// Output features `N` (the packed matrix's columns).
    pub fn out_features(&self) -> usize {
        self.packed.cols()
    }

    /// The storage format of the tiles.
    pub fn format(&self) -> StorageFormat {
        self.packed.format()
    }

    /// Bytes of the packed tiles (padding included).
    pub fn byte_size(&self) -> usize {
        self.packed.byte_size()
    }

    /// The packed `[K, N]` matrix.
    pub fn packed(&self) -> &PackedMatrix {
        &self.packed
    }

    /// The stored values back in HF layout: an f32 `[N, K]` tensor (for tests and debugging).
    pub fn dequantize(&self) -> Tensor {
        let (k, n) = (self.in_features(), self.out_features());
        let kn = self.packed.unpack();
        let mut nk = vec![0f32; n * k];
        for (kk, row) in kn.chunks_exact(n).enumerate() {
            for (nn, &v) in row.iter().enumerate() {
                nk[nn * k + kk] = v;
            }
        }
        // The length is n * k by construction, so this cannot fail.
        Tensor::from_f32(nk, &[n, k]).unwrap_or_else(|_| Tensor::zeros(&[n, k], DType::F32))
    }
}

/// Tile rows one packing task covers.
const PACK_BAND: usize = 16;

/// Packs `src` (rows of `w [N, K]`, `stride` apart) transposed to `[K, N]` tiles, bands of tile
/// rows in parallel, without a transposed copy of the whole matrix.
fn pack_transposed<T: Element>(
    src: &[T],
    stride: usize,
    n: usize,
    k: usize,
    format: StorageFormat,
) -> Vec<u8> {
    let (tiles_k, tiles_n) = (k.div_ceil(TILE), n.div_ceil(TILE));
    let tile_bytes = format.tile_bytes();
    let mut bytes = vec![0u8; tiles_k * tiles_n * tile_bytes];
    // A task packs a band of tile rows, tile column by tile column: the 32 weight rows of a
    // tile column are read along K for the whole band (PACK_BAND · 64 bytes of each), instead
    // of 64 bytes of every weight row per tile row (a stride of a whole row between reads,
    // which the prefetchers and the TLB do not follow).
    bytes
        .par_chunks_mut(PACK_BAND * tiles_n * tile_bytes)
        .enumerate()
        .for_each(|(band, band_bytes)| {
            let mut tile = [0f32; TILE_VALUES];
            let kt0 = band * PACK_BAND;
            let band_tiles = band_bytes.len() / (tiles_n * tile_bytes);
            for nt in 0..tiles_n {
                let n0 = nt * TILE;
                for dk in 0..band_tiles {
                    let k0 = (kt0 + dk) * TILE;
                    let kv = TILE.min(k - k0);
                    tile.fill(0.0);
                    for nn in 0..TILE.min(n - n0) {
                        let start = (n0 + nn) * stride + k0;
                        for (kk, v) in src[start..start + kv].iter().enumerate() {
                            tile[kk * TILE + nn] = v.to_f32();
                        }
                    }
                    let at = (dk * tiles_n + nt) * tile_bytes;
                    pack_tile(
                        &tile,
                        format,
                        Rounding::TiesToEven,
                        &mut band_bytes[at..at + tile_bytes],
                    );
                }
            }
        });
    bytes
}

/// A matrix-engine operand: `x` rounded to bf16 (ties to even), zero and subnormals flushed to +0.
#[inline(always)]
pub(crate) fn operand(x: f32) -> f32 {
    let r = round_bf16(x);
    if r.to_bits() & 0x7f80_0000 == 0 {
        0.0
    } else {
        r
    }
}

/// `x` with the bits outside `mask` cleared.
#[inline(always)]
fn masked(x: f32, mask: u32) -> f32 {
    f32::from_bits(x.to_bits() & mask)
}

/// Operand values of every (shared exponent, code) pair of a block-float format: index
/// `exponent * codes + code`, decoded as tt-metal's tile unpacker does, then as [`operand`].
fn bfp_table(format: BfpFormat) -> &'static [f32] {
    static BFP8: OnceLock<Vec<f32>> = OnceLock::new();
    static BFP4: OnceLock<Vec<f32>> = OnceLock::new();
    let cell = match format {
        BfpFormat::Bfp8B => &BFP8,
        BfpFormat::Bfp4B => &BFP4,
    };
    cell.get_or_init(|| {
        let codes = 1u16 << format.code_bits();
        let mut table = Vec::with_capacity(256 * usize::from(codes));
        for e in 0..=255u8 {
            for c in 0..codes {
                table.push(operand(f32::from_bits(decode(c as u8, e, format))));
            }
        }
        table
    })
}

/// Dequantizes row `r` of a tile, columns `0..out.len()` (at most 32), as matrix-engine operands.
fn unpack_operand_row(tile: &[u8], format: StorageFormat, r: usize, out: &mut [f32]) {
    let (face_base, fr) = ((r / FACE) * 2, r % FACE);
    for (h, half) in out.chunks_mut(FACE).enumerate() {
        let face = face_base + h;
        let first = face * FACE_VALUES + fr * FACE;
        let len = half.len();
        match format {
            StorageFormat::F32 => {
                let raw = &tile[first * 4..(first + len) * 4];
                for (o, b) in half.iter_mut().zip(raw.chunks_exact(4)) {
                    *o = operand(f32::from_le_bytes([b[0], b[1], b[2], b[3]]));
                }
            }
            StorageFormat::Bf16 => {
                let raw = &tile[first * 2..(first + len) * 2];
                for (o, b) in half.iter_mut().zip(raw.chunks_exact(2)) {
                    *o = operand(f32::from_bits(
                        u32::from(u16::from_le_bytes([b[0], b[1]])) << 16,
                    ));
                }
            }
            StorageFormat::Bfp8B => {
                let e = usize::from(tile[face * FACE + fr]) * 256;
                // A fixed-size slice: indexing it with a u8 needs no bounds check.
                let Ok(lut) = <&[f32; 256]>::try_from(&bfp_table(BfpFormat::Bfp8B)[e..e + 256])
                else {
                    continue; // never: the table has 256 entries per exponent
                };
                let codes = &tile[TILE_EXPONENTS + first..TILE_EXPONENTS + first + len];
                for (o, &c) in half.iter_mut().zip(codes) {
                    *o = lut[usize::from(c)];
                }
            }
            StorageFormat::Bfp4B => {
                let e = usize::from(tile[face * FACE + fr]) * 16;
                let Ok(lut) = <&[f32; 16]>::try_from(&bfp_table(BfpFormat::Bfp4B)[e..e + 16])
                else {
                    continue; // never: the table has 16 entries per exponent
                };
                // `first` is even: value j sits in byte j / 2, low nibble first.
                let data =
                    &tile[TILE_EXPONENTS + first / 2..TILE_EXPONENTS + (first + len).div_ceil(2)];
                for (pair, &byte) in half.chunks_mut(2).zip(data) {
                    for (o, nibble) in pair.iter_mut().zip([byte & 0x0f, byte >> 4]) {
                        *o = lut[usize::from(nibble)];
                    }
                }
            }
        }
    }
}

/// One parallel task: rows `r0 .. r0 + rows` of x against output columns `n0 .. n0 + cols`.
#[derive(Clone, Copy)]
struct Task {
    r0: usize,
    rows: usize,
    n0: usize,
    cols: usize,
}

/// Computes one task's `dest [rows, cols]` (before output rounding), rules 1-4 of the module doc.
/// `xb` holds the activations already as operands (rounded to bf16, flushed), `[M, K]`.
fn run_task(
    xb: &[f32],
    k: usize,
    w: &PackedMatrix,
    task: Task,
    fidelity: MathFidelity,
    accumulation: Accumulation,
) -> Vec<f32> {
    let Task { r0, rows, n0, cols } = task;
    let need_hi = matches!(fidelity, MathFidelity::LoFi | MathFidelity::HiFi3);
    let mut panel = vec![0f32; TILE * cols];
    let mut panel_hi = if need_hi {
        vec![0f32; TILE * cols]
    } else {
        Vec::new()
    };
    let mut acc = vec![0f32; cols];
    let mut dest = vec![0f32; rows * cols];
    let tc0 = n0 / TILE;
    for kt in 0..k.div_ceil(TILE) {
        let k0 = kt * TILE;
        let kv = TILE.min(k - k0);
        for (kk, prow) in panel.chunks_exact_mut(cols).take(kv).enumerate() {
            for (j, chunk) in prow.chunks_mut(TILE).enumerate() {
                match w.tile(kt, tc0 + j) {
                    Some(tile) => unpack_operand_row(tile, w.format(), kk, chunk),
                    None => chunk.fill(0.0), // never: the task lies inside the matrix
                }
            }
        }
        if need_hi {
            for (h, &a) in panel_hi.iter_mut().zip(&panel).take(kv * cols) {
                *h = masked(a, A_HI_MASK);
            }
        }
        for (row, drow) in dest.chunks_exact_mut(cols).enumerate() {
            let xs = &xb[(r0 + row) * k + k0..(r0 + row) * k + k0 + kv];
            acc.fill(0.0);
            for (kk, &b) in xs.iter().enumerate() {
                let pa = &panel[kk * cols..(kk + 1) * cols];
                let b_hi = masked(b, B_HI_MASK);
                match fidelity {
                    MathFidelity::LoFi => {
                        let ph = &panel_hi[kk * cols..(kk + 1) * cols];
                        for (s, &a) in acc.iter_mut().zip(ph) {
                            *s += b_hi * a;
                        }
                    }
                    MathFidelity::HiFi2 => {
                        for (s, &a) in acc.iter_mut().zip(pa) {
                            *s += b_hi * a;
                        }
                    }
                    MathFidelity::HiFi3 => {
                        let ph = &panel_hi[kk * cols..(kk + 1) * cols];
                        let b_lo = b - b_hi;
                        for ((s, &a), &ah) in acc.iter_mut().zip(pa).zip(ph) {
                            *s += b_hi * a + b_lo * ah;
                        }
                    }
                    MathFidelity::HiFi4 => {
                        for (s, &a) in acc.iter_mut().zip(pa) {
                            *s += b * a;
                        }
                    }
                }
            }
            match accumulation {
                Accumulation::Fp32 => {
                    for (d, &s) in drow.iter_mut().zip(&acc) {
                        *d += s;
                    }
                }
                Accumulation::Bf16 => {
                    for (d, &s) in drow.iter_mut().zip(&acc) {
                        *d = round_bf16(*d + s);
                    }
                }
            }
        }
    }
    dest
}

/// Splits `[m, n]` into tasks: column blocks of `block` columns (a multiple of the tile width),
/// and row chunks when there are fewer blocks than about two per thread. One task covering
/// everything when the work is small.
fn plan_tasks(m: usize, k: usize, n: usize, block: usize) -> Vec<Task> {
    let work = m.saturating_mul(k).saturating_mul(n);
    if work <= PARALLEL_WORK {
        return vec![Task {
            r0: 0,
            rows: m,
            n0: 0,
            cols: n,
        }];
    }
    let col_blocks = n.div_ceil(block);
    let want = 2 * rayon::current_num_threads();
    let row_chunks = want.div_ceil(col_blocks).clamp(1, m);
    let rows_per = m.div_ceil(row_chunks);
    let mut tasks = Vec::new();
    for r0 in (0..m).step_by(rows_per) {
        for n0 in (0..n).step_by(block) {
            tasks.push(Task {
                r0,
                rows: rows_per.min(m - r0),
                n0,
                cols: block.min(n - n0),
            });
        }
    }
    tasks
}

/// `x [.., K] @ W` as the device computes it under `settings` (only fidelity, accumulation, output
/// are used; the weight's format is the DeviceWeight's). Returns an f32 tensor `[.., N]` holding
/// the values of the output format. Errors unless x's last dimension is `K`.
pub fn device_linear(x: &Tensor, w: &DeviceWeight, settings: &OpSettings) -> Result<Tensor> {
    device_linear_with(x, w, settings, Choice::Best)
}

/// [`device_linear()`] always through the reference emulation (the same bits, slower): for
/// tests and benchmarks of the fast kernel.
pub fn device_linear_reference(
    x: &Tensor,
    w: &DeviceWeight,
    settings: &OpSettings,
) -> Result<Tensor> {
    device_linear_with(x, w, settings, Choice::Reference)
}

/// [`device_linear()`] with the kernels `choice` allows.
pub(crate) fn device_linear_with(
    x: &Tensor,
    w: &DeviceWeight,
    settings: &OpSettings,
    choice: Choice,
) -> Result<Tensor> {
    device_linear_sums(x, w, settings, choice, k_tile_sums())
}

/// [`device_linear_with`] with prefill's K-tile sums chosen by `sums`.
pub(crate) fn device_linear_sums(
    x: &Tensor,
    w: &DeviceWeight,
    settings: &OpSettings,
    choice: Choice,
    sums: KTileSums,
) -> Result<Tensor> {
    let (k, n) = (w.in_features(), w.out_features());
    let Some((&xk, lead)) = x.shape().split_last() else {
        return Err(OpError::shape(OP, "x must have at least one dimension"));
    };
    if xk != k {
        return Err(OpError::shape(
            OP,
            format!(
                "x {:?} has K = {xk} but the weight has K = {k} (N = {n})",
                x.shape()
            ),
        ));
    }
    let m: usize = lead.iter().product();
    let mut shape = lead.to_vec();
    shape.push(n);
    let xb: Vec<f32> = x.f32_values().iter().map(|&v| operand(v)).collect();
    let mut out = vec![0f32; m * n];
    if m > 0 {
        let (fidelity, accumulation) = (settings.fidelity, settings.accumulation);
        let kp = k.div_ceil(TILE) * TILE;
        let fast = packed_gemv::plan(w.format(), w.range, settings, choice)
            .map(|plan| (plan, packed_gemv::operands(&xb, m, k, kp, &plan)))
            .and_then(|(plan, xs)| plan.for_call(&xs).map(|plan| (plan, xs)));
        let amx = fast
            .as_ref()
            .and_then(|(plan, xs)| crate::packed_amx::prepare(plan, xs, m, kp, sums));
        crate::device_kernel_counts::record(match (&amx, &fast) {
            (Some(_), _) => DeviceKernel::MatrixUnit,
            (None, Some(f)) => f.0.kernel(),
            (None, None) => DeviceKernel::Reference,
        });
        // The fast kernel streams a task's tiles of one K-tile row as one run, so it gets wide
        // column blocks (about two per thread), and serially (one device of a mesh) the whole
        // call: blocks would only cut its runs short (a 2x4 qkv shard's 36 tiles per K-tile row
        // into four runs of 9).
        let tasks = match fast {
            Some(_) if crate::team::serial_here() => vec![Task {
                r0: 0,
                rows: m,
                n0: 0,
                cols: n,
            }],
            Some(_) => {
                let block = n
                    .div_ceil(2 * rayon::current_num_threads())
                    .next_multiple_of(TILE)
                    .max(BLOCK_COLS);
                plan_tasks(m, k, n, block)
            }
            None => plan_tasks(m, k, n, BLOCK_COLS),
        };
        let run = |t: &Task| {
            let on_tiles = amx.as_ref().and_then(|call| {
                crate::packed_amx::run_task(call, &w.packed, t.r0, t.rows, t.n0, t.cols)
            });
            if let Some(dest) = on_tiles {
                return dest;
            }
            let fast = fast.as_ref().and_then(|(plan, xs)| {
                packed_gemv::run_task(plan, xs, kp, &w.packed, t.r0, t.rows, t.n0, t.cols)
            });
            fast.unwrap_or_else(|| run_task(&xb, k, &w.packed, *t, fidelity, accumulation))
        };
        let parts: Vec<Vec<f32>> = if tasks.len() > 1 {
            // The team's threads when a decode step runs one (rayon outside one); serial when
            // this call is itself an item of a loop (one device of a mesh).
            crate::team::map(tasks.len(), |i| run(&tasks[i]))
        } else {
            tasks.iter().map(run).collect()
        };
        for (t, dest) in tasks.iter().zip(&parts) {
            for (row, src) in dest.chunks_exact(t.cols).enumerate() {
                let at = (t.r0 + row) * n + t.n0;
                out[at..at + t.cols].copy_from_slice(src);
            }
        }
    }
    round_to_device_format(&mut out, n, settings.output)?;
    Tensor::from_f32(out, &shape)
}

#[cfg(test)]
#[path = "device_linear_tests.rs"]
mod tests;
