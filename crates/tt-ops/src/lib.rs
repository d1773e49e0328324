//! tt-ops: device-local tensors and the kernels of a TTNN-style op set.
//!
//! Ops take device-local tensors and return device-local tensors; they never see a mesh. Each op
//! module documents its TTNN counterpart and shape contract. Activations are f32 tensors (rounded to
//! bf16 values between ops under [`Fidelity::Bf16`]); weights and KV caches may be bf16. Bad input
//! returns an [`OpError`], never a panic.
//!
//! | module | ops |
//! |---|---|
//! | [`tensor`] | [`Tensor`], [`DType`], [`Element`] (contiguous tensors, and column views of matrices) |
//! | [`pages`] | [`pages::zeroed_vec`]: large buffers on 2 MiB pages |
//! | [`storage`] | [`SharedElements`]: storage borrowed from elsewhere, e.g. a mapped checkpoint |
//! | [`fidelity`] | [`Fidelity`] |
//! | [`mod@embedding`] | [`embedding()`] |
//! | [`mod@linear`] | [`linear()`], [`linear_into`], [`linear_column_blocks`], and both with the output as the device writes it ([`linear_stored`], [`linear_column_blocks_stored`]) (dense kernels in [`kernels`]; prefill on the AMX tile unit or oneDNN where the CPU has bf16 matrix units: [`kernels::path`]) |
//! | [`mod@device_linear`] | [`device_linear()`] on a [`DeviceWeight`] (packed tiles), [`round_to_device_format`] and [`write_in_format`] (the output packer): `ttnn.linear` as a Wormhole device computes it |
//! | [`device_kernel_counts`] | [`device_kernel_counts()`]: calls per [`DeviceKernel`] so far (reports) |
//! | [`packed_gemv`] | its fast kernels on bfloat8_b / bfloat4_b tiles read in place (AVX-512, AVX2), bit-equal to the emulation |
//! | [`k_tile_sums`] | [`KTileSums`], [`set_k_tile_sums`]: block-float prefill's K-tile sums in order (default) or on the AMX tile unit (`packed_amx`) |
//! | [`norm`] | [`rms_norm`], [`rms_norm_into`] |
//! | [`eltwise`] | [`add`], [`add_inplace`], [`mul`], [`silu`], [`silu_mul`], [`silu_mul_rounded`] |
//! | [`rope`] | [`RopeTables`] from a [`RopeSpec`]: plain, LongRoPE and Llama 3 scaling |
//! | [`rotary`] | [`rotary_embedding`], [`rotary_embedding_decode`], [`rope_tables`], [`RotaryPadding`] |
//! | [`heads`] | [`nlp_create_qkv_heads`], [`nlp_create_qkv_heads_decode`], [`nlp_concat_heads`], [`nlp_concat_heads_decode`] |
//! | [`sdpa`] | [`scaled_dot_product_attention`] |
//! | [`mod@sdpa_decode`] | [`sdpa_decode()`] |
//! | [`cache`] | [`fill_cache`], [`paged_fill_cache`], [`paged_update_cache`], [`PageTable`] |
//! | [`kv_cache`] | [`KvCache`] |
//! | [`team`] | [`team::with_team`], [`team::for_each`], [`team::map`], [`team::map_mut`]: spinning threads for a burst of short loops (a decode step) |

pub mod cache;
mod device_format;
pub mod device_kernel_counts;
pub mod device_linear;
pub mod eltwise;
pub mod embedding;
pub mod error;
pub mod fidelity;
pub mod heads;
pub mod k_tile_sums;
pub mod kernels;
pub mod kv_cache;
pub mod linear;
pub mod norm;
#[cfg(target_arch = "x86_64")]
mod packed_amx;
#[cfg(not(target_arch = "x86_64"))]
#[path = "packed_amx_none.rs"]
mod packed_amx;
pub mod packed_gemv;
#[cfg(target_arch = "x86_64")]
mod packed_gemv_avx2;
#[cfg(target_arch = "x86_64")]
mod packed_gemv_avx512;
#[cfg(target_arch = "x86_64")]
mod packed_gemv_avx512bf16;
#[cfg(target_arch = "x86_64")]
mod packed_prefill_avx2;
#[cfg(target_arch = "x86_64")]
mod packed_prefill_avx512bf16;
pub mod pages;
pub mod rope;
pub mod rotary;
pub mod sdpa;
#[cfg(target_arch = "x86_64")]
mod sdpa_amx;
pub mod sdpa_decode;
mod simd;
#[cfg(target_arch = "x86_64")]
mod simd_avx2;
pub mod storage;
pub mod team;
pub mod tensor;
#[cfg(test)]
mod testutil;

pub use cache::{PageTable, TILE, fill_cache, paged_fill_cache, paged_update_cache};
pub use device_kernel_counts::{DeviceKernelCounts, device_kernel_counts};
pub use device_linear::{
    DeviceKernel, DeviceWeight, device_linear, device_linear_reference, round_to_device_format,
    write_in_format,
};
pub use eltwise::{add, add_inplace, mul, silu, silu_mul, silu_mul_rounded};
pub use embedding::embedding;
pub use error::{OpError, Result};
pub use fidelity::{Fidelity, round_bf16};
pub use heads::{
    nlp_concat_heads, nlp_concat_heads_decode, nlp_create_qkv_heads, nlp_create_qkv_heads_decode,
};
pub use k_tile_sums::{KTileSums, k_tile_sums, set_k_tile_sums};
pub use kv_cache::KvCache;
pub use linear::{
    linear, linear_column_blocks, linear_column_blocks_stored, linear_into, linear_stored,
};
pub use norm::{rms_norm, rms_norm_into};
pub use rope::{CosSin, RopeScaling, RopeSpec, RopeTables, RopeVariant};
pub use rotary::{RotaryPadding, rope_tables, rotary_embedding, rotary_embedding_decode};
pub use sdpa::{
    AttentionCounts, SdpaOptions, attention_counts, scaled_dot_product_attention,
    set_native_attention,
};
pub use sdpa_decode::{SdpaDecodeOptions, sdpa_decode};
pub use storage::SharedElements;
pub use tensor::{DType, Element, Tensor};
