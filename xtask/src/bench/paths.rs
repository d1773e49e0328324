//! Which kernel each kind of op ran on in one bench run, per phase (prefill, batch-1 decode,
//! batched decode), with the calls counted in that run around the phase, not predicted:
//! - products with bf16/f32 weights (`tt_ops::linear`): [`tt_ops::kernels::path_counts`] per path
//!   (native GEMV, native GEMM, our AMX tile kernel, oneDNN);
//! - products with block-float weights (`tt_ops::device_linear`, the packed presets):
//!   [`tt_ops::device_kernel_counts`] per [`tt_ops::DeviceKernel`];
//! - attention: one kernel per phase (`scaled_dot_product_attention` in prefill, `sdpa_decode` in
//!   decode), named with the instruction set and the KV cache's element type; prefill's calls are
//!   counted per kernel ([`tt_ops::attention_counts`]: the AMX tile unit or the native kernel).
//!
//! [`KernelNames`] says what the path names stand for on this machine (the oneDNN build and the
//! implementation it picks, the native kernels' instruction set).

use serde::Serialize;
use tt_ops::kernels::{
    DNNL_MIN_M, GemmMode, PathCounts, amx_usable, describe_path, dnnl_status, gemm_mode,
    gemv_bf16_usable,
};
use tt_ops::{AttentionCounts, DType, DeviceKernelCounts, attention_counts, device_kernel_counts};

/// Both counters at one instant.
#[derive(Debug, Clone, Copy)]
pub struct Snapshot {
    linear: PathCounts,
    device: DeviceKernelCounts,
    attention: AttentionCounts,
}

impl Snapshot {
    /// The counters now.
    pub fn now() -> Self {
        Self {
            linear: tt_ops::kernels::path_counts(),
            device: device_kernel_counts(),
            attention: attention_counts(),
        }
    }

    /// Prefill attention calls per kernel since this snapshot.
    pub fn attention_since(&self) -> AttentionCounts {
        attention_counts().since(self.attention)
    }

    /// The calls between `earlier` and now, the phase's attention kernel beside them.
    pub fn phase_since(earlier: &Snapshot, attention: String) -> PhasePaths {
        let now = Self::now();
        let linear = now.linear.since(earlier.linear);
        let device = now.device.since(&earlier.device);
        PhasePaths {
            linear: LinearCalls {
                gemv: linear.gemv,
                gemv_bf16: linear.gemv_bf16,
                gemm: linear.native,
                amx: linear.amx,
                dnnl: linear.dnnl,
            },
            device_linear: device
                .iter()
                .map(|(kernel, calls)| KernelCalls {
                    kernel: kernel.name().to_string(),
                    calls,
                })
                .collect(),
            attention,
        }
    }
}

/// The attention kernel of a phase: `op` on the native instruction set, reading a KV cache of
/// `kv` values (attention always runs natively: one path, no counter).
pub fn attention_kernel(op: &str, kv: DType) -> String {
    let kv = match kv {
        DType::F32 => "f32",
        DType::Bf16 => "bf16",
    };
    format!("{op} {}, {kv} KV", native_isa())
}

/// Prefill attention (`scaled_dot_product_attention`) with the kernels its `calls` ran on: the
/// AMX tile unit (`amx-bf16`), the native kernel, or both with their call counts.
pub fn prefill_attention_kernel(kv: DType, calls: AttentionCounts) -> String {
    let native = attention_kernel("scaled_dot_product_attention", kv);
    if calls.amx == 0 {
        return native;
    }
    let (op_isa, kv) = native.split_once(", ").unwrap_or((&native, ""));
    let isa = op_isa.rsplit(' ').next().unwrap_or("native");
    if calls.native == 0 {
        format!("scaled_dot_product_attention amx-bf16, {kv}")
    } else {
        format!(
            "scaled_dot_product_attention amx-bf16 ({} calls) + {isa} ({} calls), {kv}",
            calls.amx, calls.native
        )
    }
}

/// The native kernels' instruction set (`avx2+fma` or `scalar`), as `tt_ops` reports it for its
/// GEMV; the attention kernels dispatch on the same AVX2 + FMA test.
fn native_isa() -> String {
    let gemv = describe_path(1);
    gemv.strip_prefix("native ")
        .and_then(|s| s.strip_suffix(" gemv"))
        .unwrap_or(&gemv)
        .to_string()
}

/// Calls of products with bf16/f32 weights, per path.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct LinearCalls {
    /// The native streaming GEMV (`m <= 8`).
    pub gemv: u64,
    /// The same on AVX-512 BF16 (bf16 weights and bf16-valued activations).
    pub gemv_bf16: u64,
    /// The native packed GEMM.
    pub gemm: u64,
    /// Our AMX tile kernel.
    pub amx: u64,
    /// oneDNN's matmul.
    pub dnnl: u64,
}

/// Calls of one kernel.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct KernelCalls {
    /// [`tt_ops::DeviceKernel::name`].
    pub kernel: String,
    /// Calls in the phase.
    pub calls: u64,
}

/// The kernels one phase of a run took.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PhasePaths {
    /// Products with bf16/f32 weights (`tt_ops::linear`).
    pub linear: LinearCalls,
    /// Products with block-float weights (`tt_ops::device_linear`), every [`tt_ops::DeviceKernel`] in
    /// order.
    pub device_linear: Vec<KernelCalls>,
    /// The attention kernel ([`attention_kernel`]).
    pub attention: String,
}

impl PhasePaths {
    /// Phase counts given directly (report tests).
    #[cfg(test)]
    pub fn fixed(
        linear: [u64; 3],
        device_linear: &[(tt_ops::DeviceKernel, u64)],
        attention: &str,
    ) -> Self {
        let [gemv, gemm, dnnl] = linear;
        Self {
            linear: LinearCalls {
                gemv,
                gemv_bf16: 0,
                gemm,
                amx: 0,
                dnnl,
            },
            device_linear: tt_ops::DeviceKernel::ALL
                .iter()
                .map(|k| KernelCalls {
                    kernel: k.name().to_string(),
                    calls: device_linear
                        .iter()
                        .find(|(d, _)| d == k)
                        .map_or(0, |(_, c)| *c),
                })
                .collect(),
            attention: attention.to_string(),
        }
    }

    /// `gemv x1, dnnl x96`: the paths that ran (`-` when none did).
    pub fn linear_cell(&self) -> String {
        let l = &self.linear;
        calls_cell([
            ("gemv", l.gemv),
            ("gemv-bf16", l.gemv_bf16),
            ("gemm", l.gemm),
            ("amx", l.amx),
            ("dnnl", l.dnnl),
        ])
    }

    /// `packed-avx512 x192`: the kernels that ran (`-` when none did).
    pub fn device_cell(&self) -> String {
        calls_cell(
            self.device_linear
                .iter()
                .map(|k| (k.kernel.as_str(), k.calls)),
        )
    }
}

/// `name xN` for every nonzero count, comma separated; `-` when all are zero.
fn calls_cell<'a>(calls: impl IntoIterator<Item = (&'a str, u64)>) -> String {
    let cells: Vec<String> = calls
        .into_iter()
        .filter(|(_, n)| *n > 0)
        .map(|(name, n)| format!("{name} x{n}"))
        .collect();
    match cells.is_empty() {
        true => "-".to_string(),
        false => cells.join(", "),
    }
}

/// The kernels of one run, per phase.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RunPaths {
    /// Every prefill of the run (all prompt lengths).
    pub prefill: PhasePaths,
    /// The timed batch-1 decode steps at every context (not the untimed first step).
    pub decode: PhasePaths,
    /// The batched decode steps, if run.
    pub batch: Option<PhasePaths>,
}

/// The paths table: one row per run and phase (`runs`: mesh, precision, paths), under a line
/// saying what was counted.
pub fn table<'a>(runs: impl IntoIterator<Item = (&'a str, &'a str, &'a RunPaths)>) -> String {
    let header = [
        "mesh",
        "precision",
        "phase",
        "linear (bf16/f32 weights)",
        "device_linear (block-float weights)",
        "attention",
    ]
    .map(String::from)
    .to_vec();
    let mut rows = Vec::new();
    for (mesh, precision, paths) in runs {
        let phases = [
            ("prefill", Some(&paths.prefill)),
            ("decode", Some(&paths.decode)),
        ];
        for (phase, p) in phases.into_iter().chain([("batch", paths.batch.as_ref())]) {
            if let Some(p) = p {
                rows.push(vec![
                    mesh.to_string(),
                    precision.to_string(),
                    phase.to_string(),
                    p.linear_cell(),
                    p.device_cell(),
                    p.attention.clone(),
                ]);
            }
        }
    }
    let mut out = "kernel paths, calls counted in each run (prefill: every prompt length; decode: the timed batch-1 steps at every context; batch: the batched steps; a call is one product on one device):\n\n".to_string();
    out.push_str(&super::report::markdown(&header, &rows, header.len()));
    out.push('\n');
    out
}

/// What the linear paths' names stand for on this machine (the same for every run).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct KernelNames {
    /// `gemv`: e.g. `native avx2+fma gemv`.
    pub gemv: String,
    /// `gemv-bf16`: the AVX-512 BF16 GEMV, or why it does not run here.
    pub gemv_bf16: String,
    /// `gemm`: e.g. `native avx2+fma gemm`.
    pub gemm: String,
    /// `amx`: our AMX tile kernel, or why it does not run here.
    pub amx: String,
    /// `dnnl`: `tt_ops::kernels::dnnl_status()`, e.g. `oneDNN 2.6.3 (brg:avx512_core_amx_bf16,
    /// isa avx512_core_amx)`, or why it is not used.
    pub dnnl: String,
    /// The rule sending a product to the AMX kernel or oneDNN (`TT_OPS_GEMM` mode and the
    /// smallest `m`).
    pub dnnl_rule: String,
}

impl KernelNames {
    /// This machine's.
    pub fn this_machine() -> Self {
        let isa = native_isa();
        let dnnl_rule = match gemm_mode() {
            GemmMode::Auto => format!(
                "TT_OPS_GEMM=auto: products of m >= {DNNL_MIN_M} rows with bf16 weights and bf16-valued activations, on amx where it runs (k a multiple of 32), else on oneDNN when it runs on bf16 hardware"
            ),
            GemmMode::Native => "TT_OPS_GEMM=native: never".to_string(),
            GemmMode::Amx => "TT_OPS_GEMM=amx: products of m > 8 rows with bf16 weights and bf16-valued activations, on amx (k a multiple of 32)".to_string(),
            GemmMode::Dnnl => "TT_OPS_GEMM=dnnl: products of m > 8 rows with bf16 weights and bf16-valued activations, on oneDNN".to_string(),
        };
        let amx = if amx_usable() {
            "AMX tile kernel (tdpbf16ps, weights read in place)".to_string()
        } else {
            "not here (no AMX-BF16 tile state)".to_string()
        };
        let gemv_bf16 = if gemv_bf16_usable() {
            "native avx512-bf16 gemv (vdpbf16ps; bf16 weights and bf16-valued activations)"
        } else {
            "not here (needs AVX-512 BF16 on an AMD CPU)"
        };
        Self {
            gemv: format!("native {isa} gemv"),
            gemv_bf16: gemv_bf16.to_string(),
            gemm: format!("native {isa} gemm"),
            amx,
            dnnl: dnnl_status().to_string(),
            dnnl_rule,
        }
    }

    /// The legend lines under the paths table.
    pub fn legend(&self) -> String {
        format!(
            "linear paths (bf16/f32 weights): gemv = {} (m <= 8 rows); gemv-bf16 = {}; gemm = {}; amx = {}; dnnl = {} ({})\n\
             device_linear kernels (block-float weights): packed-avx512 / packed-avx2 = tt_ops::packed_gemv on the packed tiles; packed-avx512-bf16 = the same on AVX-512 BF16 pairs (AMD: prefill and decode, both formats; same bits); amx-k-tiles = each K-tile's sum on the AMX tile unit (prefill of >= {} rows under --k-tile-sums matrix-unit; in force: {}); reference = the emulation (other fidelities, or activations out of the fast kernel's range)\n\
             attention: scaled_dot_product_attention (flash, prefill; amx-bf16 = its two products on the AMX tile unit when Q, K and V are bf16 values, exact products and f32 sums, else the native kernel) and sdpa_decode (flash-decoding), f32 math; norms, rotary and elementwise ops have one native path each\n",
            self.gemv,
            self.gemv_bf16,
            self.gemm,
            self.amx,
            self.dnnl,
            self.dnnl_rule,
            tt_ops::k_tile_sums::MATRIX_UNIT_MIN_ROWS,
            tt_ops::k_tile_sums(),
        )
    }
}

#[cfg(test)]
mod tests {
    use tt_ops::DeviceKernel;

    use super::*;

    #[test]
    fn cells_list_the_paths_that_ran() {
        let p = PhasePaths::fixed(
            [1, 0, 96],
            &[(DeviceKernel::PackedAvx512, 5)],
            "sdpa x, bf16 KV",
        );
        assert_eq!(p.linear_cell(), "gemv x1, dnnl x96");
        assert_eq!(p.device_cell(), "packed-avx512 x5");
        let mut amx = PhasePaths::fixed([0, 2, 0], &[], "a");
        amx.linear.amx = 64;
        assert_eq!(amx.linear_cell(), "gemm x2, amx x64");
        let none = PhasePaths::fixed([0, 0, 0], &[], "a");
        assert_eq!(
            (none.linear_cell(), none.device_cell()),
            ("-".into(), "-".into())
        );
        assert_eq!(none.device_linear.len(), DeviceKernel::ALL.len());
    }

    #[test]
    fn prefill_attention_names_the_kernels_its_calls_took() {
        let calls = |amx, native| AttentionCounts { amx, native };
        let isa = native_isa();
        assert_eq!(
            prefill_attention_kernel(DType::Bf16, calls(0, 32)),
            format!("scaled_dot_product_attention {isa}, bf16 KV")
        );
        assert_eq!(
            prefill_attention_kernel(DType::Bf16, calls(32, 0)),
            "scaled_dot_product_attention amx-bf16, bf16 KV"
        );
        assert_eq!(
            prefill_attention_kernel(DType::F32, calls(3, 29)),
            format!("scaled_dot_product_attention amx-bf16 (3 calls) + {isa} (29 calls), f32 KV")
        );
    }

    /// The counters move by what ran between two snapshots (other tests may add calls
    /// concurrently, so only lower bounds hold).
    #[test]
    fn snapshots_count_the_calls_between_them() {
        let before = Snapshot::now();
        let (m, k, n) = (1, 32, 16);
        let x = vec![0.5f32; m * k];
        let w = vec![half::bf16::from_f32(0.25); n * k];
        let mut out = vec![0f32; m * n];
        tt_ops::kernels::matmul_bf16(&x, &w, &mut out, m, k, n);
        let phase = Snapshot::phase_since(&before, attention_kernel("sdpa", DType::Bf16));
        // bf16-valued activations: the AVX-512 BF16 GEMV where it runs, else the AVX2 one.
        assert!(phase.linear.gemv + phase.linear.gemv_bf16 >= 1);
        if !gemv_bf16_usable() {
            assert!(phase.linear.gemv >= 1);
        }
        assert_eq!(out[0], 0.5 * 0.25 * 32.0);
        assert!(phase.attention.starts_with("sdpa ") && phase.attention.ends_with(", bf16 KV"));
        assert!(!native_isa().contains("gemv"));
    }
}
