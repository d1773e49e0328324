//! Which kernel serves a bf16-weight product: the native kernels, our AMX tile kernel or oneDNN,
//! chosen at run time.
//!
//! A matrix-unit path takes a call when all of these hold:
//! - the mode ([`GemmMode`], from `TT_OPS_GEMM=auto|native|amx|dnnl`, default `auto`, or
//!   [`set_gemm_mode`]) allows it;
//! - `m >= DNNL_MIN_M` in `auto` mode (prefill; decode keeps the streaming GEMV), `m > GEMV_MAX_M`
//!   when forced;
//! - every activation is exactly a bf16 value (as under `Fidelity::Bf16`, where activations are
//!   rounded between ops), so handing bf16 activations to the matrix units loses nothing: the
//!   products are exact on every path and only the f32 summation order differs. f32 activations
//!   (the `f32` preset) are never rounded: such a call stays native.
//!
//! In `auto` mode the AMX tile kernel ([`super::amx_gemm`]) runs when the CPU has AMX-BF16 and
//! `k` is a multiple of 32; otherwise oneDNN ([`super::dnnl_gemm`]) runs when `libdnnl.so.2` loads
//! and dispatches to bf16 matrix hardware (AVX-512 BF16 or AMX; emulated bf16 would be slower than
//! the native kernels). `amx` and `dnnl` force one of them (for comparisons).
//!
//! Anything else, or a oneDNN error, runs the native kernels; [`path_counts`] counts each path.

use std::mem::MaybeUninit;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};

use half::bf16;

use super::GEMV_MAX_M;
use super::amx_gemm::{self, Amx};
use super::dnnl::{ISA_AVX512_CORE_BF16, isa_name};
use super::dnnl_gemm::{Ctx, matmul};
use super::out::as_unwritten;

/// Smallest `m` sent to oneDNN in [`GemmMode::Auto`].
pub const DNNL_MIN_M: usize = 32;

/// How bf16-weight products choose their kernel.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GemmMode {
    /// oneDNN for prefill-sized products when it runs on bf16 matrix hardware, else native.
    Auto,
    /// Always the native kernels.
    Native,
    /// The AMX tile kernel wherever it can run (any `m > GEMV_MAX_M`), else native.
    Amx,
    /// oneDNN whenever it loads and the activations are bf16 values (any `m > GEMV_MAX_M`),
    /// whatever ISA it dispatches to.
    Dnnl,
}

impl GemmMode {
    /// Parses `auto`, `native`, `amx` or `dnnl`.
    pub fn parse(s: &str) -> Option<GemmMode> {
        match s.trim().to_ascii_lowercase().as_str() {
            "auto" | "" => Some(GemmMode::Auto),
            "native" => Some(GemmMode::Native),
            "amx" => Some(GemmMode::Amx),
            "dnnl" | "onednn" => Some(GemmMode::Dnnl),
            _ => None,
        }
    }

    fn code(self) -> u8 {
        match self {
            GemmMode::Auto => 1,
            GemmMode::Native => 2,
            GemmMode::Dnnl => 3,
            GemmMode::Amx => 4,
        }
    }
}

/// 0 until first read; then a [`GemmMode::code`].
static MODE: AtomicU8 = AtomicU8::new(0);

/// The current mode: [`set_gemm_mode`]'s, else `TT_OPS_GEMM`'s (read once; an unknown value
/// means `auto`).
pub fn gemm_mode() -> GemmMode {
    match MODE.load(Ordering::Relaxed) {
        2 => GemmMode::Native,
        3 => GemmMode::Dnnl,
        4 => GemmMode::Amx,
        1 => GemmMode::Auto,
        _ => {
            let mode = std::env::var("TT_OPS_GEMM")
                .ok()
                .and_then(|v| GemmMode::parse(&v))
                .unwrap_or(GemmMode::Auto);
            let _ = MODE.compare_exchange(0, mode.code(), Ordering::Relaxed, Ordering::Relaxed);
            gemm_mode()
        }
    }
}

/// Sets the mode for the whole process (benchmarks comparing paths), overriding `TT_OPS_GEMM`.
pub fn set_gemm_mode(mode: GemmMode) {
    MODE.store(mode.code(), Ordering::Relaxed);
}

/// The kernel one product ran on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GemmPath {
    /// The native streaming GEMV (`m <= GEMV_MAX_M`).
    Gemv,
    /// The native packed GEMM.
    Native,
    /// oneDNN's matmul.
    Dnnl,
    /// Our AMX tile kernel.
    Amx,
    /// The native GEMV on AVX-512 BF16 (`vdpbf16ps`; bf16-valued activations).
    GemvBf16,
}

static COUNTS: [AtomicU64; 5] = [
    AtomicU64::new(0),
    AtomicU64::new(0),
    AtomicU64::new(0),
    AtomicU64::new(0),
    AtomicU64::new(0),
];

/// Products run on each path since the process started (take differences around an op).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PathCounts {
    /// Native GEMV calls.
    pub gemv: u64,
    /// Native GEMM calls.
    pub native: u64,
    /// oneDNN calls.
    pub dnnl: u64,
    /// AMX tile kernel calls.
    pub amx: u64,
    /// Native GEMV calls on AVX-512 BF16 (counted apart from `gemv`).
    pub gemv_bf16: u64,
}

impl PathCounts {
    /// The calls counted in `self` but not in `earlier`.
    pub fn since(self, earlier: PathCounts) -> PathCounts {
        PathCounts {
            gemv: self.gemv - earlier.gemv,
            native: self.native - earlier.native,
            dnnl: self.dnnl - earlier.dnnl,
            amx: self.amx - earlier.amx,
            gemv_bf16: self.gemv_bf16 - earlier.gemv_bf16,
        }
    }
}

/// The calls of each path so far.
pub fn path_counts() -> PathCounts {
    let c = |p: GemmPath| COUNTS[p as usize].load(Ordering::Relaxed);
    PathCounts {
        gemv: c(GemmPath::Gemv),
        native: c(GemmPath::Native),
        dnnl: c(GemmPath::Dnnl),
        amx: c(GemmPath::Amx),
        gemv_bf16: c(GemmPath::GemvBf16),
    }
}

/// Counts one call on `path`.
pub(crate) fn record(path: GemmPath) {
    record_many(path, 1);
}

/// Counts `calls` products on `path` (a row-parallel call counts one per block).
pub(crate) fn record_many(path: GemmPath, calls: u64) {
    COUNTS[path as usize].fetch_add(calls, Ordering::Relaxed);
}

/// What oneDNN would run bf16 products on here, or why it is not used.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DnnlStatus {
    /// Loaded; runs on bf16 matrix hardware.
    Ready {
        /// `major.minor.patch`.
        version: String,
        /// oneDNN's widest ISA on this CPU, e.g. `avx512_core_amx`.
        isa: &'static str,
        /// The implementation of a prefill-sized product, e.g. `brg:avx512_core_amx_bf16`.
        implementation: String,
    },
    /// Loaded, but without bf16 hardware: `auto` keeps the native kernels (`dnnl` mode still
    /// uses it).
    NoBf16Hardware {
        /// `major.minor.patch`.
        version: String,
        /// oneDNN's widest ISA on this CPU.
        isa: &'static str,
    },
    /// Not usable: the reason.
    Unavailable(String),
}

impl std::fmt::Display for DnnlStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DnnlStatus::Ready {
                version,
                isa,
                implementation,
            } => write!(f, "oneDNN {version} ({implementation}, isa {isa})"),
            DnnlStatus::NoBf16Hardware { version, isa } => {
                write!(f, "oneDNN {version} without bf16 hardware (isa {isa})")
            }
            DnnlStatus::Unavailable(why) => write!(f, "oneDNN unavailable: {why}"),
        }
    }
}

/// oneDNN's state on this machine (probed once: loads the library and creates one primitive).
pub fn dnnl_status() -> &'static DnnlStatus {
    static STATUS: OnceLock<DnnlStatus> = OnceLock::new();
    STATUS.get_or_init(|| {
        let ctx = match Ctx::get() {
            Ok(c) => c,
            Err(why) => return DnnlStatus::Unavailable(why),
        };
        let api = ctx.api();
        let (a, b, c) = api.version;
        let version = format!("{a}.{b}.{c}");
        let isa_code = api.effective_isa();
        let isa = isa_name(isa_code);
        if isa_code & ISA_AVX512_CORE_BF16 != ISA_AVX512_CORE_BF16 {
            return DnnlStatus::NoBf16Hardware { version, isa };
        }
        match ctx.impl_name(DNNL_MIN_M, 256, 256) {
            Ok(implementation) => DnnlStatus::Ready {
                version,
                isa,
                implementation,
            },
            Err(e) => DnnlStatus::Unavailable(e.to_string()),
        }
    })
}

/// A one-line description of the path bf16 products of `m` rows take now (for reports).
pub fn describe_path(m: usize) -> String {
    let native = format!("native {}", super::isa::Isa::detect().name());
    if m <= GEMV_MAX_M {
        return format!("{native} gemv");
    }
    let mode = gemm_mode();
    let mut paths = Vec::new();
    if min_m(mode).is_some_and(|min| m >= min) {
        if amx_allowed(mode).is_some() {
            paths.push(
                "AMX tile kernel (tdpbf16ps) for bf16 activations and k a multiple of 32"
                    .to_string(),
            );
        }
        if dnnl_allowed(mode) {
            paths.push(format!("{} for bf16 activations", dnnl_status()));
        }
    }
    paths.push(format!("{native} gemm"));
    paths.join(", else ")
}

/// Whether small-`m` products with bf16 weights and bf16-valued activations run on the AVX-512
/// BF16 GEMV here ([`GemmPath::GemvBf16`]; AMD CPUs with AVX-512 BF16, unless `TT_OPS_GEMV=avx2`).
pub fn gemv_bf16_usable() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        super::gemv_avx512bf16::GemvBf16::detect().is_some()
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// The smallest `m` a matrix-unit path takes in `mode` (`None`: never).
fn min_m(mode: GemmMode) -> Option<usize> {
    match mode {
        GemmMode::Native => None,
        GemmMode::Auto => Some(DNNL_MIN_M),
        GemmMode::Amx | GemmMode::Dnnl => Some(GEMV_MAX_M + 1),
    }
}

/// The AMX kernel's token when `mode` lets it run and this CPU has it.
fn amx_allowed(mode: GemmMode) -> Option<Amx> {
    match mode {
        GemmMode::Auto | GemmMode::Amx => Amx::detect(),
        GemmMode::Native | GemmMode::Dnnl => None,
    }
}

/// Whether `mode` lets oneDNN run here (in `auto`, only on bf16 matrix hardware).
fn dnnl_allowed(mode: GemmMode) -> bool {
    match mode {
        GemmMode::Auto => matches!(dnnl_status(), DnnlStatus::Ready { .. }),
        GemmMode::Dnnl => !matches!(dnnl_status(), DnnlStatus::Unavailable(_)),
        GemmMode::Native | GemmMode::Amx => false,
    }
}

/// Whether this CPU and kernel let the AMX tile kernel run (AMX-BF16 and the tile state).
pub fn amx_usable() -> bool {
    Amx::detect().is_some()
}

/// Runs `out = x @ w^T` on a matrix-unit path if the rules above send it there; false (with `out`
/// untouched or to be overwritten) when the native kernels must run instead.
#[allow(clippy::too_many_arguments)]
pub(crate) fn try_matrix_units(
    x: &[f32],
    w: &[bf16],
    ldw: usize,
    out: &mut [f32],
    m: usize,
    k: usize,
    n: usize,
) -> bool {
    let mode = gemm_mode();
    if !takes(mode, m, k, n) {
        return false;
    }
    // SAFETY: the AMX kernel writes only f32 results through the view.
    if run_amx(
        mode,
        x,
        w,
        ldw,
        &mut [unsafe { as_unwritten(out) }],
        m,
        k,
        n,
        false,
    ) {
        return true;
    }
    if !dnnl_allowed(mode) {
        return false;
    }
    let Ok(ctx) = Ctx::get() else {
        return false;
    };
    let Some(xb) = to_bf16_exact(x) else {
        return false;
    };
    if matmul(ctx, &xb, w, ldw, out, m, k, n).is_ok() {
        record(GemmPath::Dnnl);
        true
    } else {
        false
    }
}

/// The row-parallel products of `outs.len()` blocks (see `amx_gemm::matmul_blocks`) in one
/// call on the AMX kernel, if the rules above send a product of these sizes there; false (with
/// `outs` untouched) otherwise. Only the AMX kernel takes every block at once; oneDNN runs one
/// block at a time through [`try_matrix_units`]. When it returns true, every element of `outs`
/// has been written (rounded to bf16 as the device's packer rounds, with `round_bf16`): they
/// may start uninitialized.
#[allow(clippy::too_many_arguments)]
pub(crate) fn try_amx_blocks(
    x: &[f32],
    w: &[bf16],
    ldw: usize,
    outs: &mut [&mut [MaybeUninit<f32>]],
    m: usize,
    kb: usize,
    n: usize,
    round_bf16: bool,
) -> bool {
    let mode = gemm_mode();
    takes(mode, m, kb, n) && run_amx(mode, x, w, ldw, outs, m, kb, n, round_bf16)
}

/// Whether `mode` sends a product of these sizes to a matrix-unit path at all.
fn takes(mode: GemmMode, m: usize, k: usize, n: usize) -> bool {
    min_m(mode).is_some_and(|min| m >= min) && k > 0 && n > 0
}

/// The AMX kernel on `outs.len()` column blocks (one block: a plain product), if `mode` lets it
/// run here and it takes the operands; counts one call per block.
#[allow(clippy::too_many_arguments)]
fn run_amx(
    mode: GemmMode,
    x: &[f32],
    w: &[bf16],
    ldw: usize,
    outs: &mut [&mut [MaybeUninit<f32>]],
    m: usize,
    kb: usize,
    n: usize,
    round_bf16: bool,
) -> bool {
    let Some(amx) = amx_allowed(mode) else {
        return false;
    };
    let ran = amx_gemm::matmul_blocks(amx, x, w, ldw, outs, m, kb, n, round_bf16);
    if ran {
        record_many(GemmPath::Amx, outs.len() as u64);
    }
    ran
}

/// `x` as bf16 if every value is exactly a bf16 (its low 16 bits are zero), else `None`.
pub(crate) fn to_bf16_exact(x: &[f32]) -> Option<Vec<bf16>> {
    let mut out = Vec::with_capacity(x.len());
    for &v in x {
        let bits = v.to_bits();
        if bits & 0xFFFF != 0 {
            return None;
        }
        out.push(bf16::from_bits((bits >> 16) as u16));
    }
    Some(out)
}
