//! Conformance: tt-numerics' block-float packing and unpacking against tt-metal's own compiled
//! packer (libtt_metal.so from the ttnn 0.81.1 wheel), bit for bit.
//!
//! Runs only with the `tt-metal` feature (`required-features`). A plain test harness would run
//! checks on threads; this one is `harness = false` because tt-metal's `MetalContext` needs
//! environment variables set before any thread starts. It prints one line per check (values
//! compared, mismatches) and fails if any check has a mismatch.
//!
//! Inputs: random f32 bit patterns of every kind, and face rows built to hit every edge: all-zero
//! rows, denormals, exact ties at every rounding position (even and odd kept bits, and one ulp
//! either side), values that round past the largest magnitude (clamp), the largest finite
//! magnitudes, mixed signs, infinities and NaNs with several payloads.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::process::ExitCode;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use tt_metal_oracle::oracle;
use tt_numerics::StorageFormat;
use tt_numerics::bfp::{self, BfpFormat, Rounding};
use tt_numerics::tile::{TILE_VALUES, pack_tile, unpack_tile};

/// Tiles per tile check: 980 tiles = 1,003,520 values (>= 1,000,000).
const TILES: usize = 980;

fn storage(format: BfpFormat) -> StorageFormat {
    match format {
        BfpFormat::Bfp8B => StorageFormat::Bfp8B,
        BfpFormat::Bfp4B => StorageFormat::Bfp4B,
    }
}

/// One check's tally.
struct Tally {
    name: String,
    compared: u64,
    mismatches: u64,
    examples: Vec<String>,
}

impl Tally {
    fn new(name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            compared: 0,
            mismatches: 0,
            examples: Vec::new(),
        }
    }

    fn check(&mut self, equal: bool, what: impl FnOnce() -> String) {
        self.compared += 1;
        if !equal {
            self.mismatches += 1;
            if self.examples.len() < 8 {
                self.examples.push(what());
            }
        }
    }
}

/// f32 bits with the given sign, biased exponent and fraction.
fn f32_bits(sign: u32, exp: u32, fraction: u32) -> u32 {
    (sign << 31) | (exp << 23) | (fraction & 0x007f_ffff)
}

/// A face row (16 values as bits) of one of the edge kinds, for `format`.
fn edge_row(rng: &mut ChaCha8Rng, format: BfpFormat, kind: u32) -> [u32; 16] {
    let mut row = [0u32; 16];
    let sign = |rng: &mut ChaCha8Rng| u32::from(rng.random_bool(0.5));
    match kind {
        // Every bit pattern: NaNs, infinities, denormals, zeros and normals at random.
        0 => row.iter_mut().for_each(|b| *b = rng.random()),
        // Normal values of one order of magnitude, mixed signs.
        1 => {
            let e = rng.random_range(100..150);
            row.iter_mut()
                .for_each(|b| *b = f32_bits(sign(rng), e + rng.random_range(0..4), rng.random()));
        }
        // All zeros (+0 and -0).
        2 => row.iter_mut().for_each(|b| *b = sign(rng) << 31),
        // Denormals, mixed with zeros and tiny normals.
        3 => row.iter_mut().for_each(|b| {
            let exp = if rng.random_bool(0.2) {
                rng.random_range(1..3)
            } else {
                0
            };
            *b = f32_bits(sign(rng), exp, rng.random());
        }),
        // Ties at every rounding position: an anchor sets E; each other value sits k below it with
        // its dropped bits exactly half (or one ulp either side).
        4 => {
            let e_max = rng.random_range(30..254u32);
            row[0] = f32_bits(sign(rng), e_max, rng.random());
            let drop = 24 - format.magnitude_bits();
            for b in row.iter_mut().skip(1) {
                let k = rng.random_range(0..=(drop + 1).min(23));
                let e = e_max - k;
                // The aligned significand (after the shift by k) is kept·2^drop + half.
                let top = 23 - k; // bit where the hidden 1 lands after the shift
                let mut aligned: u32 = (1 << top) | (rng.random::<u32>() & ((1 << top) - 1));
                if top >= drop {
                    aligned = (aligned & !((1 << drop) - 1)) | (1 << (drop - 1));
                }
                let nudge: i64 = match rng.random_range(0..4) {
                    0 => -1,
                    1 => 1,
                    _ => 0,
                };
                let significand =
                    ((i64::from(aligned) << k) + nudge).clamp(1 << 23, (1 << 24) - 1) as u32;
                *b = f32_bits(sign(rng), e, significand);
            }
        }
        // Values that round past the largest magnitude (clamped) next to the largest finite ones.
        5 => {
            let e = rng.random_range(200..=254u32);
            row.iter_mut().for_each(|b| {
                let fraction = 0x007f_ffff - rng.random_range(0..0x4000);
                *b = f32_bits(
                    sign(rng),
                    if rng.random_bool(0.7) { e } else { 254 },
                    fraction,
                );
            });
        }
        // Infinities and NaNs among normal values (they set E = 255).
        6 => {
            let specials = [
                0x7f80_0000,
                0xff80_0000,
                0x7fc0_0000,
                0xffc0_0000,
                0x7f80_0001,
                0x7fff_ffff,
                0xff80_0001,
            ];
            row.iter_mut().for_each(|b| {
                *b = if rng.random_bool(0.3) {
                    specials[rng.random_range(0..specials.len())]
                } else {
                    f32_bits(sign(rng), rng.random_range(120..135), rng.random())
                };
            });
        }
        // Wide dynamic range in one row: most values shift out entirely.
        _ => row
            .iter_mut()
            .for_each(|b| *b = f32_bits(sign(rng), rng.random_range(1..255), rng.random())),
    }
    row
}

/// `tiles` tiles (row-major each) of face rows of random edge kinds.
fn edge_tiles(rng: &mut ChaCha8Rng, format: BfpFormat, tiles: usize) -> Vec<f32> {
    let mut out = vec![0f32; tiles * TILE_VALUES];
    for row16 in out.chunks_exact_mut(16) {
        let kind = rng.random_range(0..8);
        let bits = edge_row(rng, format, kind);
        row16
            .iter_mut()
            .zip(bits)
            .for_each(|(v, b)| *v = f32::from_bits(b));
    }
    out
}

fn check_scalar_encode(rng: &mut ChaCha8Rng, format: BfpFormat, tallies: &mut Vec<Tally>) {
    let mut rne = Tally::new(format!("{format} convert_u32_to_bfp (ties to even)"));
    let mut trunc = Tally::new(format!("{format} convert_u32_to_bfp (truncate)"));
    for kind in 0..8 {
        for _ in 0..1_000_000usize.div_ceil(8 * 16) {
            let row = edge_row(rng, format, kind);
            let e = bfp::shared_exponent(&row);
            for &bits in &row {
                let (ours, theirs) = (
                    bfp::encode(bits, e, format, Rounding::TiesToEven),
                    oracle::convert_u32_to_bfp(format, bits, e, false),
                );
                rne.check(ours == theirs, || {
                    format!("bits {bits:#010x} E {e}: ours {ours:#04x}, tt-metal {theirs:#04x}")
                });
                let (ours, theirs) = (
                    bfp::encode(bits, e, format, Rounding::Truncate),
                    oracle::convert_u32_to_bfp(format, bits, e, true),
                );
                trunc.check(ours == theirs, || {
                    format!("bits {bits:#010x} E {e}: ours {ours:#04x}, tt-metal {theirs:#04x}")
                });
            }
        }
    }
    tallies.push(rne);
    tallies.push(trunc);
}

fn check_scalar_decode(format: BfpFormat, tallies: &mut Vec<Tally>) {
    let mut t = Tally::new(format!(
        "{format} convert_bfp_to_u32 (every code x every E)"
    ));
    for code in 0..(1u16 << format.code_bits()) {
        for e in 0..=255u8 {
            let (ours, theirs) = (
                bfp::decode_scalar(code as u8, e, format),
                oracle::convert_bfp_to_u32(format, code as u8, e),
            );
            t.check(ours == theirs, || {
                format!("code {code:#04x} E {e}: ours {ours:#010x}, tt-metal {theirs:#010x}")
            });
        }
    }
    tallies.push(t);
}

fn ours_pack(format: BfpFormat, values: &[f32]) -> Vec<u8> {
    let tb = format.tile_bytes();
    let mut out = vec![0u8; values.len() / TILE_VALUES * tb];
    for (tile, dst) in values
        .chunks_exact(TILE_VALUES)
        .zip(out.chunks_exact_mut(tb))
    {
        pack_tile(
            tile.try_into().unwrap(),
            storage(format),
            Rounding::TiesToEven,
            dst,
        );
    }
    out
}

fn ours_unpack(format: BfpFormat, bytes: &[u8]) -> Vec<f32> {
    let tb = format.tile_bytes();
    let mut out = vec![0f32; bytes.len() / tb * TILE_VALUES];
    for (src, dst) in bytes
        .chunks_exact(tb)
        .zip(out.chunks_exact_mut(TILE_VALUES))
    {
        unpack_tile(src, storage(format), dst.try_into().unwrap());
    }
    out
}

fn check_tiles(rng: &mut ChaCha8Rng, format: BfpFormat, tallies: &mut Vec<Tally>) {
    let values = edge_tiles(rng, format, TILES);
    let theirs = oracle::pack_tiles(format, &values).expect("tt-metal pack");
    let ours = ours_pack(format, &values);
    let mut pack = Tally::new(format!(
        "{format} pack_as_{}_tiles<float> (values)",
        if format == BfpFormat::Bfp8B {
            "bfp8"
        } else {
            "bfp4"
        }
    ));
    let mut bytes_equal = Tally::new(format!("{format} packed bytes"));
    let tb = format.tile_bytes();
    assert_eq!(theirs.len(), TILES * tb, "tt-metal tile size");
    for (i, (a, b)) in ours.iter().zip(&theirs).enumerate() {
        bytes_equal.check(a == b, || {
            format!(
                "tile {} byte {}: ours {a:#04x}, tt-metal {b:#04x}",
                i / tb,
                i % tb
            )
        });
    }
    // Per value: a value matches when its exponent byte and its code match.
    for (t, (ot, tt)) in ours
        .chunks_exact(tb)
        .zip(theirs.chunks_exact(tb))
        .enumerate()
    {
        for idx in 0..TILE_VALUES {
            let row = idx / 16;
            let (oc, tc) = (
                tt_numerics::tile::get_code(&ot[64..], format, idx),
                tt_numerics::tile::get_code(&tt[64..], format, idx),
            );
            pack.check(ot[row] == tt[row] && oc == tc, || format!("tile {t} value {idx} (face order): ours E {} code {oc:#x}, tt-metal E {} code {tc:#x}", ot[row], tt[row]));
        }
    }
    tallies.push(pack);
    tallies.push(bytes_equal);

    // Unpacking what was packed, and unpacking arbitrary bytes (every exponent, every code).
    let mut random_bytes = vec![0u8; TILES * tb];
    rng.fill(&mut random_bytes[..]);
    for (label, bytes) in [("packed tiles", &theirs), ("random bytes", &random_bytes)] {
        let theirs_v = oracle::unpack_tiles(format, bytes).expect("tt-metal unpack");
        let ours_v = ours_unpack(format, bytes);
        let name = format!(
            "{format} unpack_{}_tiles_into_float_vec ({label})",
            if format == BfpFormat::Bfp8B {
                "bfp8"
            } else {
                "bfp4"
            }
        );
        let mut t = Tally::new(name);
        assert_eq!(theirs_v.len(), ours_v.len(), "unpacked length");
        for (i, (a, b)) in ours_v.iter().zip(&theirs_v).enumerate() {
            t.check(a.to_bits() == b.to_bits(), || {
                format!(
                    "value {i}: ours {:#010x}, tt-metal {:#010x}",
                    a.to_bits(),
                    b.to_bits()
                )
            });
        }
        tallies.push(t);
    }
}

fn main() -> ExitCode {
    let dir = std::env::temp_dir().join(format!("tt-metal-oracle-{}", std::process::id()));
    // SAFETY: first thing in main, before this process starts any thread.
    let yaml = unsafe { oracle::configure_mock_device(&dir) }.expect("mock cluster descriptor");
    println!(
        "tt-metal runtime root {} (ttnn {}), mock cluster {}",
        oracle::runtime_root(),
        tt_metal_oracle::TTNN_VERSION,
        yaml.display()
    );

    let mut rng = ChaCha8Rng::seed_from_u64(0x7e57_b0f8);
    let mut tallies = Vec::new();
    for format in [BfpFormat::Bfp8B, BfpFormat::Bfp4B] {
        check_scalar_encode(&mut rng, format, &mut tallies);
        check_scalar_decode(format, &mut tallies);
        check_tiles(&mut rng, format, &mut tallies);
    }
    let _ = std::fs::remove_dir_all(&dir);

    println!(
        "\n{:<72} {:>10} {:>10}",
        "check (tt-numerics vs tt-metal)", "compared", "mismatches"
    );
    let mut failed = false;
    for t in &tallies {
        println!("{:<72} {:>10} {:>10}", t.name, t.compared, t.mismatches);
        failed |= t.mismatches > 0;
    }
    for t in tallies.iter().filter(|t| t.mismatches > 0) {
        println!(
            "\nFAILED {}: {} of {} differ; first ones:",
            t.name, t.mismatches, t.compared
        );
        for e in &t.examples {
            println!("  {e}");
        }
    }
    if failed {
        println!("\nconformance: FAILED");
        ExitCode::FAILURE
    } else {
        println!("\nconformance: all {} checks bit-exact", tallies.len());
        ExitCode::SUCCESS
    }
}
