//! tt-ops against the torch op fixtures in `fixtures/ops` (made by `scripts/op_fixtures.py`).
//!
//! f32 path: relative max error (`max |got - want| / max |want|`) <= 1e-5 and PCC >= 0.99999.
//! bf16 fidelity path (inputs, weights and caches rounded to bf16, outputs rounded as a device
//! does): PCC >= 0.999 against the same float references.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::PathBuf;

use half::bf16;
use safetensors::{Dtype, SafeTensors};
use tt_ops::*;

struct Fixture(Vec<u8>);

impl Fixture {
    fn load(name: &str) -> Self {
        let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join(format!("../../fixtures/ops/{name}.safetensors"));
        Self(std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display())))
    }

    fn view(&self, key: &str) -> (Dtype, Vec<usize>, Vec<u8>) {
        let st = SafeTensors::deserialize(&self.0).unwrap();
        let t = st.tensor(key).unwrap_or_else(|e| panic!("{key}: {e}"));
        (t.dtype(), t.shape().to_vec(), t.data().to_vec())
    }

    /// An f32 or bf16 tensor as stored.
    fn tensor(&self, key: &str) -> Tensor {
        let (dt, shape, data) = self.view(key);
        match dt {
            Dtype::F32 => Tensor::from_f32(
                data.chunks_exact(4)
                    .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
                    .collect(),
                &shape,
            )
            .unwrap(),
            Dtype::BF16 => Tensor::from_bf16(
                data.chunks_exact(2)
                    .map(|b| bf16::from_le_bytes(b.try_into().unwrap()))
                    .collect(),
                &shape,
            )
            .unwrap(),
            other => panic!("{key}: unexpected dtype {other:?}"),
        }
    }

    fn ints(&self, key: &str) -> Vec<i64> {
        let (dt, _, data) = self.view(key);
        assert_eq!(dt, Dtype::I64, "{key}");
        data.chunks_exact(8)
            .map(|b| i64::from_le_bytes(b.try_into().unwrap()))
            .collect()
    }

    fn scalar(&self, key: &str) -> f32 {
        self.tensor(key).to_f32_vec()[0]
    }
}

fn rel_max_err(got: &[f32], want: &[f32]) -> f64 {
    assert_eq!(got.len(), want.len());
    let scale = want.iter().fold(0.0f64, |m, w| m.max(f64::from(w.abs())));
    let err = got.iter().zip(want).fold(0.0f64, |m, (g, w)| {
        m.max((f64::from(*g) - f64::from(*w)).abs())
    });
    err / scale
}

fn pcc(a: &[f32], b: &[f32]) -> f64 {
    let n = a.len() as f64;
    let ma = a.iter().map(|&v| f64::from(v)).sum::<f64>() / n;
    let mb = b.iter().map(|&v| f64::from(v)).sum::<f64>() / n;
    let (mut sab, mut saa, mut sbb) = (0.0, 0.0, 0.0);
    for (x, y) in a.iter().zip(b) {
        let (dx, dy) = (f64::from(*x) - ma, f64::from(*y) - mb);
        sab += dx * dy;
        saa += dx * dx;
        sbb += dy * dy;
    }
    sab / (saa * sbb).sqrt()
}

/// The f32-path acceptance check.
fn check_f32(what: &str, got: &Tensor, want: &Tensor) {
    assert_eq!(got.shape(), want.shape(), "{what}: shape");
    let (g, w) = (got.to_f32_vec(), want.to_f32_vec());
    let (e, p) = (rel_max_err(&g, &w), pcc(&g, &w));
    eprintln!("{what}: f32 relative max error {e:.2e}, PCC {p:.8}");
    assert!(
        e <= 1e-5 && p >= 0.99999,
        "{what}: relative max error {e:e}, PCC {p}"
    );
}

/// The bf16-fidelity acceptance check (the output is rounded to bf16 first).
fn check_bf16(what: &str, got: Tensor, want: &Tensor) {
    let got = Fidelity::Bf16.round(got).unwrap();
    let (g, w) = (got.to_f32_vec(), want.to_f32_vec());
    let p = pcc(&g, &w);
    eprintln!("{what}: bf16 fidelity PCC {p:.6}");
    assert!(p >= 0.999, "{what}: bf16 PCC {p}");
    assert!(
        rel_max_err(&g, &w) > 0.0,
        "{what}: bf16 path did not round anything"
    );
}

fn bf16_act(t: &Tensor) -> Tensor {
    Fidelity::Bf16.round(t.to_dtype(DType::F32)).unwrap()
}

#[test]
fn rms_norm_matches_torch() {
    let f = Fixture::load("rms_norm");
    let (x, w, want) = (f.tensor("x"), f.tensor("weight"), f.tensor("out"));
    let eps = f.scalar("eps");
    check_f32("rms_norm", &rms_norm(&x, &w, eps).unwrap(), &want);
    let wb = w.to_dtype(DType::Bf16);
    check_bf16(
        "rms_norm",
        rms_norm(&bf16_act(&x), &wb, eps).unwrap(),
        &want,
    );
}

#[test]
fn rotary_tables_and_op_match_torch() {
    let f = Fixture::load("rotary");
    let inv = f.tensor("inv_freq").to_f32_vec();
    let factor = f.scalar("attention_factor");
    let (tc, ts) = (f.tensor("cos"), f.tensor("sin"));
    let (cos, sin) = rope_tables(&inv, factor, 0, tc.shape()[0]).unwrap();
    // Tables agree with torch's float32 cos/sin to within an ulp or two.
    for (mine, theirs) in [(&cos, &tc), (&sin, &ts)] {
        let e = rel_max_err(&mine.to_f32_vec(), &theirs.to_f32_vec());
        eprintln!("rope table vs torch: relative max error {e:.2e}");
        assert!(e <= 4e-7, "rope table relative max error {e:e}");
    }
    let offset = f.ints("offset")[0] as usize;
    let (xp, xd) = (f.tensor("x_prefill"), f.tensor("x_decode"));
    let positions: Vec<i32> = f.ints("positions").iter().map(|&p| p as i32).collect();
    check_f32(
        "rotary prefill",
        &rotary_embedding(&xp, &cos, &sin, offset).unwrap(),
        &f.tensor("out_prefill"),
    );
    check_f32(
        "rotary decode",
        &rotary_embedding_decode(&xd, &cos, &sin, &positions).unwrap(),
        &f.tensor("out_decode"),
    );
    // the padded (head_dim 96 -> 128) device layout gives the same numbers
    let pad = RotaryPadding::new(96).unwrap();
    let (pc, ps) = pad.pad_tables(&cos, &sin).unwrap();
    let padded = pad
        .unpad(&rotary_embedding(&pad.pad(&xp, 0.0).unwrap(), &pc, &ps, offset).unwrap())
        .unwrap();
    check_f32("rotary padded", &padded, &f.tensor("out_prefill"));
    // bf16 fidelity: bf16 activations and tables
    let (cb, sb) = (cos.to_dtype(DType::Bf16), sin.to_dtype(DType::Bf16));
    check_bf16(
        "rotary prefill",
        rotary_embedding(&bf16_act(&xp), &cb, &sb, offset).unwrap(),
        &f.tensor("out_prefill"),
    );
    check_bf16(
        "rotary decode",
        rotary_embedding_decode(&bf16_act(&xd), &cb, &sb, &positions).unwrap(),
        &f.tensor("out_decode"),
    );
}

fn sdpa_case(name: &str, opts: SdpaOptions) {
    let f = Fixture::load(name);
    let (q, k, v, want) = (f.tensor("q"), f.tensor("k"), f.tensor("v"), f.tensor("out"));
    check_f32(
        name,
        &scaled_dot_product_attention(&q, &k, &v, &opts).unwrap(),
        &want,
    );
    let (kb, vb) = (k.to_dtype(DType::Bf16), v.to_dtype(DType::Bf16));
    check_bf16(
        name,
        scaled_dot_product_attention(&bf16_act(&q), &kb, &vb, &opts).unwrap(),
        &want,
    );
}

#[test]
fn causal_sdpa_matches_torch() {
    sdpa_case("sdpa_causal", SdpaOptions::default());
}

#[test]
fn sliding_window_sdpa_matches_torch() {
    let w = Fixture::load("sdpa_sliding").ints("window")[0] as usize;
    sdpa_case(
        "sdpa_sliding",
        SdpaOptions {
            sliding_window: Some(w),
            ..SdpaOptions::default()
        },
    );
}

#[test]
fn gqa_sdpa_matches_torch() {
    sdpa_case("sdpa_gqa", SdpaOptions::default());
}

#[test]
fn sdpa_decode_matches_torch_on_contiguous_and_paged_caches() {
    let f = Fixture::load("sdpa_decode");
    let (q, k, v, want) = (
        f.tensor("q"),
        f.tensor("k_cache"),
        f.tensor("v_cache"),
        f.tensor("out"),
    );
    let pos: Vec<i32> = f.ints("cur_pos").iter().map(|&p| p as i32).collect();
    let o = SdpaDecodeOptions::default();
    let contiguous = sdpa_decode(&q, &k, &v, &pos, None, &o).unwrap();
    check_f32("sdpa_decode", &contiguous, &want);
    // The same rows in a paged cache, blocks scattered by a page table, through the cache ops.
    let [b, nkv, len, dh] = k.dims::<4>().unwrap();
    let blocks = len / TILE;
    let entries: Vec<i32> = (0..b * blocks)
        .map(|i| ((i * 5 + 3) % (b * blocks)) as i32)
        .collect();
    let table = PageTable::new(entries, b, blocks).unwrap();
    for dtype in [DType::F32, DType::Bf16] {
        let mut cache = KvCache::paged(b * blocks, nkv, TILE, dh, dtype, table.clone()).unwrap();
        for u in 0..b {
            let ku = k.select(u).unwrap().reshape(&[1, nkv, len, dh]).unwrap();
            let vu = v.select(u).unwrap().reshape(&[1, nkv, len, dh]).unwrap();
            cache.fill(&ku, &vu, u, 0).unwrap();
        }
        let paged = cache.attend(&q, &pos, &o).unwrap();
        if dtype == DType::F32 {
            assert_eq!(paged.as_f32().unwrap(), contiguous.as_f32().unwrap());
        } else {
            check_bf16(
                "sdpa_decode paged bf16",
                cache.attend(&bf16_act(&q), &pos, &o).unwrap(),
                &want,
            );
        }
    }
}

#[test]
fn linear_with_bf16_weights_matches_torch() {
    let f = Fixture::load("linear");
    let (x, w, want) = (f.tensor("x"), f.tensor("weight_bf16"), f.tensor("out"));
    assert_eq!(w.dtype(), DType::Bf16);
    check_f32("linear", &linear(&x, &w).unwrap(), &want);
    check_bf16("linear", linear(&bf16_act(&x), &w).unwrap(), &want);
}

#[test]
fn mlp_gate_matches_torch() {
    let f = Fixture::load("mlp_gate");
    let (g, u, want) = (f.tensor("gate"), f.tensor("up"), f.tensor("out"));
    check_f32("silu_mul", &silu_mul(&g, &u).unwrap(), &want);
    check_f32("mul(silu)", &mul(&u, &silu(&g).unwrap()).unwrap(), &want);
    check_bf16(
        "silu_mul",
        silu_mul(&bf16_act(&g), &bf16_act(&u)).unwrap(),
        &want,
    );
}
