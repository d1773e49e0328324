//! A 16x16 f32 tile written out transposed, with AVX-512: how the AMX kernel ([`super::amx_gemm`])
//! stores its result tiles, which hold `out^T`. Four rounds of in-register shuffles (64 in all)
//! replace 256 scalar loads and stores; a row-parallel prefill on a 2x4 mesh writes every output
//! once per device, so this write is a real share of the kernel's time there.
//!
//! Streaming. An output far larger than the L2 cache is written with non-temporal stores: each
//! 64-byte line goes to memory whole, without first being read in for ownership (a normal store
//! to a line not in cache reads it before writing it), and without evicting the operands the
//! kernel is still using. Only whole, 64-byte aligned lines stream; the rest are normal stores.
//!
//! Rounding. An op whose output the device writes as bf16 has each value rounded as its packer
//! does (ties away from zero, `tt_numerics::bf16::round_bf16_device`) on its way out, instead of
//! in a pass of its own over the written output.

#[cfg(target_arch = "x86_64")]
use std::arch::x86_64::*;

/// How result rows are written out (see the module docs).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Writes {
    /// Whole aligned lines with non-temporal stores.
    pub stream: bool,
    /// Every value rounded to bf16 as the device's packer rounds.
    pub bf16: bool,
}

/// Writes the transpose of `tile` (`[16 rows][16 columns]`, row-major): column `j` of the tile
/// becomes `dst` row `j`, for `j < rows_out`; each such row gets the tile's first `cols_out`
/// rows. Row `j` of `dst` starts at `dst + j * ld`. With `writes.stream`, rows that are a whole
/// aligned 64-byte line are written with non-temporal stores (see the module docs); the caller
/// then runs [`end_stream`] before any other thread reads them. With `writes.bf16`, each value
/// is rounded to bf16 first.
///
/// # Safety
/// The CPU has AVX-512 F; `rows_out <= 16`, `cols_out <= 16`; for each `j < rows_out`,
/// `cols_out` f32 values at `dst + j * ld` are writable and no other thread touches them.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
pub(crate) unsafe fn store_transposed(
    tile: &[u32; 256],
    dst: *mut f32,
    ld: usize,
    rows_out: usize,
    cols_out: usize,
    writes: Writes,
) {
    let p = tile.as_ptr().cast::<f32>();
    // SAFETY: 16 rows of 16 values in `tile`.
    let r: [__m512; 16] = std::array::from_fn(|i| unsafe { _mm512_loadu_ps(p.add(16 * i)) });
    // Round 1: pairs of rows interleaved within 128-bit lanes.
    let mut a = [_mm512_setzero_ps(); 16];
    for i in 0..8 {
        a[2 * i] = _mm512_unpacklo_ps(r[2 * i], r[2 * i + 1]);
        a[2 * i + 1] = _mm512_unpackhi_ps(r[2 * i], r[2 * i + 1]);
    }
    // Round 2: b[4g + c], lane l = rows 4g .. 4g + 4 of column 4l + c.
    let mut b = [_mm512_setzero_ps(); 16];
    for g in 0..4 {
        let (lo, hi) = (a[4 * g], a[4 * g + 1]);
        let (lo2, hi2) = (a[4 * g + 2], a[4 * g + 3]);
        b[4 * g] = _mm512_shuffle_ps::<0x44>(lo, lo2);
        b[4 * g + 1] = _mm512_shuffle_ps::<0xEE>(lo, lo2);
        b[4 * g + 2] = _mm512_shuffle_ps::<0x44>(hi, hi2);
        b[4 * g + 3] = _mm512_shuffle_ps::<0xEE>(hi, hi2);
    }
    let mask: __mmask16 = if cols_out >= 16 {
        0xFFFF
    } else {
        (1u16 << cols_out) - 1
    };
    // Rounds 3 and 4: 128-bit lanes gathered across registers; column 4l + c of the tile.
    for c in 0..4 {
        let c0 = _mm512_shuffle_f32x4::<0x88>(b[c], b[4 + c]);
        let c1 = _mm512_shuffle_f32x4::<0xDD>(b[c], b[4 + c]);
        let c2 = _mm512_shuffle_f32x4::<0x88>(b[8 + c], b[12 + c]);
        let c3 = _mm512_shuffle_f32x4::<0xDD>(b[8 + c], b[12 + c]);
        let cols = [
            _mm512_shuffle_f32x4::<0x88>(c0, c2),
            _mm512_shuffle_f32x4::<0x88>(c1, c3),
            _mm512_shuffle_f32x4::<0xDD>(c0, c2),
            _mm512_shuffle_f32x4::<0xDD>(c1, c3),
        ];
        for (l, v) in cols.into_iter().enumerate() {
            let j = 4 * l + c;
            if j < rows_out {
                let v = if writes.bf16 { round_bf16_device(v) } else { v };
                // SAFETY: row j < rows_out of dst has cols_out writable values (the caller's
                // contract); the mask writes only those, and a streaming store writes all 16
                // only when cols_out is 16, at a 64-byte aligned address as it requires.
                unsafe {
                    let at = dst.add(j * ld);
                    if writes.stream && cols_out == 16 && (at as usize).is_multiple_of(64) {
                        _mm512_stream_ps(at, v);
                    } else {
                        _mm512_mask_storeu_ps(at, mask, v);
                    }
                }
            }
        }
    }
}

/// Each lane rounded to bf16, ties away from zero, as `tt_numerics::bf16::round_bf16_device`:
/// NaN stays NaN with its sign and a quiet bit; values past the largest bf16 become infinite.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
fn round_bf16_device(v: __m512) -> __m512 {
    let bits = _mm512_castps_si512(v);
    let high = _mm512_set1_epi32(0xFFFF_0000_u32 as i32);
    let rounded = _mm512_and_si512(_mm512_add_epi32(bits, _mm512_set1_epi32(0x8000)), high);
    let quiet = _mm512_or_si512(_mm512_and_si512(bits, high), _mm512_set1_epi32(0x0040_0000));
    let nan = _mm512_cmp_ps_mask::<_CMP_UNORD_Q>(v, v);
    _mm512_castsi512_ps(_mm512_mask_blend_epi32(nan, rounded, quiet))
}

/// Orders this thread's earlier non-temporal stores before its later stores (`sfence`), so a
/// thread that synchronizes with it afterwards sees them. Run after the last streaming
/// [`store_transposed`] of a task.
#[cfg(target_arch = "x86_64")]
pub(crate) fn end_stream() {
    // SAFETY: sfence needs only SSE, which every x86_64 CPU has; it touches no memory.
    unsafe { _mm_sfence() };
}

#[cfg(all(test, target_arch = "x86_64"))]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    #[test]
    fn equals_the_scalar_transpose_with_every_edge() {
        if !is_x86_feature_detected!("avx512f") {
            println!("equals_the_scalar_transpose_with_every_edge: skipped, no AVX-512 F");
            return;
        }
        let tile: [u32; 256] = std::array::from_fn(|i| (i as f32 * 1.5 - 7.0).to_bits());
        // ld 21: no row is a whole line; ld 32 from a line boundary: every row is (the
        // streaming stores run).
        for (ld, stream) in [(21, false), (21, true), (32, false), (32, true)] {
            let writes = Writes {
                stream,
                bf16: false,
            };
            for rows_out in [0, 1, 5, 15, 16] {
                for cols_out in [0, 1, 7, 16] {
                    let mut buf = vec![-1.0f32; 16 * ld + 16];
                    let start = buf.as_ptr().align_offset(64);
                    let dst = &mut buf[start..start + 16 * ld];
                    // SAFETY: AVX-512 F checked; dst has 16 rows of ld >= 16 values.
                    unsafe {
                        store_transposed(&tile, dst.as_mut_ptr(), ld, rows_out, cols_out, writes)
                    };
                    end_stream();
                    for j in 0..16 {
                        for i in 0..ld {
                            let want = if j < rows_out && i < cols_out {
                                f32::from_bits(tile[i * 16 + j])
                            } else {
                                -1.0
                            };
                            assert_eq!(
                                dst[j * ld + i],
                                want,
                                "ld {ld} stream {stream}: rows {rows_out} cols {cols_out} at ({j}, {i})"
                            );
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn rounded_writes_equal_the_scalar_device_rounding() {
        if !is_x86_feature_detected!("avx512f") {
            println!("rounded_writes_equal_the_scalar_device_rounding: skipped, no AVX-512 F");
            return;
        }
        // Ties both ways and both signs, values just off a tie, the largest finite values (one
        // rounds to infinity), infinities, NaNs of both signs (one signalling), subnormals.
        let special: [u32; 16] = [
            0x3F80_8000,
            0xBF80_8000,
            0x3F81_8000,
            0x3F80_7FFF,
            0x3F80_8001,
            0x7F7F_7FFF,
            0x7F7F_8000,
            0xFF7F_FFFF,
            0x7F80_0000,
            0xFF80_0000,
            0x7FC0_0001,
            0xFF80_0001,
            0x0000_8000,
            0x8000_7FFF,
            0x0000_0000,
            0x8000_0000,
        ];
        let mut seed = 0x2545_F491_4F6C_DD1Du64;
        let tile: [u32; 256] = std::array::from_fn(|i| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            if i % 16 == 3 {
                special[i / 16]
            } else {
                seed as u32
            }
        });
        for stream in [false, true] {
            let writes = Writes { stream, bf16: true };
            let mut buf = vec![0.0f32; 16 * 32 + 16];
            let start = buf.as_ptr().align_offset(64);
            let dst = &mut buf[start..start + 16 * 32];
            // SAFETY: AVX-512 F checked; dst has 16 rows of 32 >= 16 values.
            unsafe { store_transposed(&tile, dst.as_mut_ptr(), 32, 16, 16, writes) };
            end_stream();
            for j in 0..16 {
                for i in 0..16 {
                    let want =
                        tt_numerics::bf16::round_bf16_device(f32::from_bits(tile[i * 16 + j]));
                    let got = dst[j * 32 + i];
                    assert_eq!(got.to_bits(), want.to_bits(), "{:#010x}", tile[i * 16 + j]);
                }
            }
        }
    }
}
