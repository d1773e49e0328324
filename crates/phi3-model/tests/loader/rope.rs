//! RoPE / LongRoPE tables against HF's own numbers and a plain f64 reference.

use phi3_model::{Phi3Config, RopeTables, RopeVariant};
use serde_json::{Value, json};

use crate::support::{repo_root, tiny_config};

fn mini_128k() -> Phi3Config {
    Phi3Config::from_file(&repo_root().join("fixtures/configs/phi3-mini-128k.json")).unwrap()
}

fn ulps(a: f32, b: f32) -> u32 {
    (a.to_bits() as i64 - b.to_bits() as i64).unsigned_abs() as u32
}

fn floats(v: &Value) -> Vec<f32> {
    v.as_array()
        .unwrap()
        .iter()
        .flat_map(|x| match x {
            Value::Array(row) => row.iter().map(|y| y.as_f64().unwrap() as f32).collect(),
            y => vec![y.as_f64().unwrap() as f32],
        })
        .collect()
}

/// Golden data: HF transformers 5.24 `Phi3RotaryEmbedding` on the real 128k config
/// (tests/data/gen_hf_rope.py). Each call is one forward with HF's per-call factor choice.
#[test]
fn matches_hf_phi3_mini_128k() {
    let text = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/data/hf_rope_phi3_mini_128k.json"),
    )
    .unwrap();
    let hf: Value = serde_json::from_str(&text).unwrap();
    let tables = RopeTables::new(&mini_128k().rope_spec());
    let hf_factor = hf["attention_factor"].as_f64().unwrap();
    assert!((tables.attention_factor() - hf_factor).abs() < 1e-15);
    assert!(
        (tables.attention_factor() - 1.190238).abs() < 1e-6,
        "FACTS: 1.190238"
    );

    let expected_variants = [RopeVariant::Short, RopeVariant::Long, RopeVariant::Long];
    let (mut same, mut total) = (0, 0);
    for (call, expected) in hf["calls"]
        .as_array()
        .unwrap()
        .iter()
        .zip(expected_variants)
    {
        let positions: Vec<usize> = call["positions"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p.as_u64().unwrap() as usize)
            .collect();
        let variant = tables.choose_for_positions(&positions);
        assert_eq!(variant, expected, "{positions:?}");
        assert!(call["second_half_equal"].as_bool().unwrap());

        // inv_freq: exactly rounded powers vs torch's vectorised powf; at most 1 ulp apart.
        let hf_inv = floats(&call["inv_freq"]);
        let ours = tables.inv_freq(variant);
        assert_eq!(ours.len(), 48);
        let diffs: Vec<u32> = ours
            .iter()
            .zip(&hf_inv)
            .map(|(a, b)| ulps(*a, *b))
            .collect();
        assert!(diffs.iter().all(|&d| d <= 1), "{diffs:?}");
        assert!(diffs.iter().filter(|&&d| d > 0).count() <= 2, "{diffs:?}");

        let cs = tables.cos_sin_for_call(&positions);
        assert_eq!(cs.variant, variant);
        for (key, ours) in [("cos_half", &cs.cos), ("sin_half", &cs.sin)] {
            let hf_rows = floats(&call[key]);
            for (row, hf_row) in ours.chunks(96).zip(hf_rows.chunks(48)) {
                assert_eq!(row[..48], row[48..], "halves are cat(f, f)");
                for (a, b) in row[..48].iter().zip(hf_row) {
                    // 1-ulp frequency differences grow with the position (131071 here).
                    assert!((a - b).abs() <= 2e-5, "{key}: {a} vs {b}");
                    total += 1;
                    same += usize::from(a == b);
                }
            }
        }
    }
    // Most values agree bit for bit.
    assert!(same * 100 >= total * 95, "{same}/{total} bit-identical");
}

#[test]
fn factor_choice_switches_after_original_max() {
    let t = RopeTables::new(&mini_128k().rope_spec());
    assert_eq!(t.original_max_position_embeddings(), Some(4096));
    assert_eq!(t.choose(4096), RopeVariant::Short);
    assert_eq!(t.choose(4097), RopeVariant::Long);
    assert_eq!(t.choose_for_positions(&[4095]), RopeVariant::Short);
    assert_eq!(t.choose_for_positions(&[0, 4096, 3]), RopeVariant::Long);
    assert_eq!(t.choose_for_positions(&[]), RopeVariant::Short);
    assert_ne!(
        t.inv_freq(RopeVariant::Short),
        t.inv_freq(RopeVariant::Long)
    );
}

/// Plain f64 reference of HF's formula.
fn reference_inv_freq(theta: f64, dim: usize, ext: &[f64]) -> Vec<f64> {
    (0..dim / 2)
        .map(|i| 1.0 / (ext[i] * theta.powf((2 * i) as f64 / dim as f64)))
        .collect()
}

#[test]
fn inv_freq_matches_f64_reference() {
    for (theta, short, long) in [
        (10000.0, vec![1.0, 1.5], vec![2.0, 3.0]),
        (500000.0, vec![1.0, 1.0], vec![7.25, 40.5]),
        (10.0, vec![0.5, 0.25], vec![1.0, 1.0]),
    ] {
        let mut v = tiny_config();
        v["rope_theta"] = json!(theta);
        v["rope_scaling"]["short_factor"] = json!(short);
        v["rope_scaling"]["long_factor"] = json!(long);
        let t = RopeTables::new(
            &Phi3Config::from_json_str(&v.to_string())
                .unwrap()
                .rope_spec(),
        );
        for (variant, ext) in [(RopeVariant::Short, &short), (RopeVariant::Long, &long)] {
            let reference = reference_inv_freq(theta, 4, ext);
            for (a, r) in t.inv_freq(variant).iter().zip(&reference) {
                assert!(ulps(*a, *r as f32) <= 2, "{theta} {variant:?}: {a} vs {r}");
            }
        }
    }
}

#[test]
fn attention_factor_rules() {
    // Default: sqrt(1 + ln(s)/ln(original)) with s = 64 / 16.
    let t = RopeTables::new(
        &Phi3Config::from_json_str(&tiny_config().to_string())
            .unwrap()
            .rope_spec(),
    );
    let expected = (1.0 + 4f64.ln() / 16f64.ln()).sqrt();
    assert!((t.attention_factor() - expected).abs() < 1e-15);
    // s <= 1: factor 1.
    let mut v = tiny_config();
    v["max_position_embeddings"] = json!(16);
    let t = RopeTables::new(
        &Phi3Config::from_json_str(&v.to_string())
            .unwrap()
            .rope_spec(),
    );
    assert_eq!(t.attention_factor(), 1.0);
    // An explicit `factor` replaces max / original.
    let mut v = tiny_config();
    v["rope_scaling"]["factor"] = json!(2.0);
    let t = RopeTables::new(
        &Phi3Config::from_json_str(&v.to_string())
            .unwrap()
            .rope_spec(),
    );
    assert!((t.attention_factor() - (1.0 + 2f64.ln() / 16f64.ln()).sqrt()).abs() < 1e-15);
    // An explicit attention_factor wins.
    let mut v = tiny_config();
    v["rope_scaling"]["attention_factor"] = json!(1.25);
    let t = RopeTables::new(
        &Phi3Config::from_json_str(&v.to_string())
            .unwrap()
            .rope_spec(),
    );
    assert_eq!(t.attention_factor(), 1.25);
    let cs = t.cos_sin(RopeVariant::Short, &[0]);
    assert_eq!(cs.cos, vec![1.25; 4], "cos(0) * factor");
    assert_eq!(cs.sin, vec![0.0; 4]);
}

#[test]
fn plain_rope_has_no_scaling() {
    let mut v = tiny_config();
    v["rope_scaling"] = Value::Null;
    let t = RopeTables::new(
        &Phi3Config::from_json_str(&v.to_string())
            .unwrap()
            .rope_spec(),
    );
    assert!(!t.is_long_rope());
    assert_eq!(t.attention_factor(), 1.0);
    assert_eq!(t.choose(1_000_000), RopeVariant::Short);
    let reference = reference_inv_freq(10000.0, 4, &[1.0, 1.0]);
    for (a, r) in t.inv_freq(RopeVariant::Short).iter().zip(&reference) {
        assert!(ulps(*a, *r as f32) <= 1);
    }
}

#[test]
fn cos_sin_rows_against_f64_reference() {
    let t = RopeTables::new(&mini_128k().rope_spec());
    let positions = [0usize, 1, 7, 4095, 4096, 60000, 131071];
    for variant in [RopeVariant::Short, RopeVariant::Long] {
        let cs = t.cos_sin(variant, &positions);
        assert_eq!((cs.head_dim, cs.cos.len()), (96, positions.len() * 96));
        let factor = t.attention_factor();
        for (r, &p) in positions.iter().enumerate() {
            for i in 0..48 {
                // The angle in f64 from the f32 frequency: the f32 product HF uses is exact
                // to 0.5 ulp, i.e. |angle| * 6e-8.
                let angle = p as f64 * t.inv_freq(variant)[i] as f64;
                let tol = 1e-6 + angle.abs() * 1.2e-7;
                for (vals, f) in [(&cs.cos, angle.cos()), (&cs.sin, angle.sin())] {
                    let got = vals[r * 96 + i] as f64;
                    assert!((got - f * factor).abs() <= tol * factor, "p {p} i {i}");
                    assert_eq!(vals[r * 96 + i], vals[r * 96 + i + 48]);
                }
            }
        }
        let mut cos = vec![0.0; positions.len() * 96];
        let mut sin = vec![0.0; positions.len() * 96];
        t.fill_cos_sin(variant, &positions, &mut cos, &mut sin);
        assert_eq!((cos, sin), (cs.cos, cs.sin));
    }
}
