//! `torch_topk` against torch's own `torch.topk` on bf16 vectors with ties
//! (tests/fixtures/torch_topk.json, made by scripts/make_topk_fixture.py), and against `top_k`
//! where there are no ties.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::Path;

use phi3_eval::{Candidate, TieBreak, top_k, top_k_with, torch_topk};
use proptest::prelude::*;
use serde_json::Value;

/// A fixture value: a finite number, or "nan", "inf", "-inf", "-0".
fn value(v: &Value) -> f32 {
    match v {
        Value::Number(n) => {
            let x = n.as_f64().unwrap();
            let f = x as f32;
            assert_eq!(f64::from(f), x, "{x} is not exact in f32");
            f
        }
        Value::String(s) => match s.as_str() {
            "nan" => f32::NAN,
            "inf" => f32::INFINITY,
            "-inf" => f32::NEG_INFINITY,
            "-0" => -0.0,
            other => panic!("bad value {other:?}"),
        },
        other => panic!("bad value {other}"),
    }
}

/// A fixture vector: `hex` (bf16 bits, 4 hex digits each) or `default` plus `sparse` pairs.
fn vector(v: &Value) -> Vec<f32> {
    let n = usize::try_from(v["n"].as_u64().unwrap()).unwrap();
    let out: Vec<f32> = if let Some(hex) = v["hex"].as_str() {
        assert_eq!(hex.len(), 4 * n);
        (0..n)
            .map(|i| {
                let bits = u16::from_str_radix(&hex[4 * i..4 * i + 4], 16).unwrap();
                f32::from_bits(u32::from(bits) << 16)
            })
            .collect()
    } else {
        let mut out = vec![value(&v["default"]); n];
        for pair in v["sparse"].as_array().unwrap() {
            let i = usize::try_from(pair[0].as_u64().unwrap()).unwrap();
            out[i] = value(&pair[1]);
        }
        out
    };
    // Every value is a bf16 value.
    assert!(out.iter().all(|x| x.is_nan() || x.to_bits() & 0xffff == 0));
    out
}

fn same_value(a: f32, b: f32) -> bool {
    (a.is_nan() && b.is_nan()) || a.to_bits() == b.to_bits()
}

#[test]
fn torch_topk_matches_torch_on_every_fixture_case() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/torch_topk.json");
    let doc: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    assert!(doc["torch_version"].as_str().unwrap().starts_with('2'));
    let vectors: Vec<Vec<f32>> = doc["vectors"]
        .as_array()
        .unwrap()
        .iter()
        .map(vector)
        .collect();
    let cases = doc["cases"].as_array().unwrap();
    assert!(cases.len() >= 200, "{} cases", cases.len());

    let (mut partial_sort, mut nth_element, mut torch_differs_from_lowest_id) = (0, 0, 0);
    let mut failures = Vec::new();
    for case in cases {
        let name = case["name"].as_str().unwrap();
        let logits = &vectors[usize::try_from(case["vector"].as_u64().unwrap()).unwrap()];
        let k = usize::try_from(case["k"].as_u64().unwrap()).unwrap();
        let want_ids: Vec<u32> = case["indices"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| u32::try_from(i.as_u64().unwrap()).unwrap())
            .collect();
        let want_values: Vec<f32> = case["values"]
            .as_array()
            .unwrap()
            .iter()
            .map(value)
            .collect();
        if k * 64 <= logits.len() {
            partial_sort += 1;
        } else {
            nth_element += 1;
        }

        let got = torch_topk(logits, k);
        let got_ids: Vec<u32> = got.iter().map(|c| c.id).collect();
        if got_ids != want_ids {
            failures.push(format!(
                "{name} (n={}): got {got_ids:?}, torch {want_ids:?}",
                logits.len()
            ));
            continue;
        }
        for (c, &w) in got.iter().zip(&want_values) {
            assert!(same_value(c.logit, w), "{name}: value of {}", c.id);
            assert!(same_value(c.logit, logits[c.id as usize]));
        }
        assert_eq!(ids(&top_k_with(logits, k, TieBreak::TorchTopk)), got_ids);
        if ids(&top_k_with(logits, k, TieBreak::LowestId)) != got_ids {
            torch_differs_from_lowest_id += 1;
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} cases differ:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
    // Both of torch's paths are covered, and the ties matter.
    assert!(
        partial_sort >= 50 && nth_element >= 50,
        "{partial_sort} {nth_element}"
    );
    assert!(
        torch_differs_from_lowest_id >= 20,
        "{torch_differs_from_lowest_id}"
    );
}

/// Distinct values (a permutation of `0..n`, scaled), with the infinities: no two entries compare
/// equal, so any correct top-k order is the same. (No NaN: torch ranks NaN first, `top_k` last.)
fn distinct_logits() -> impl Strategy<Value = Vec<f32>> {
    (1usize..1500)
        .prop_flat_map(|n| (Just((0..n).collect::<Vec<_>>()).prop_shuffle(), 0u8..4))
        .prop_map(|(perm, special)| {
            let mut v: Vec<f32> = perm.iter().map(|&p| p as f32 * 0.25 - 100.0).collect();
            let n = v.len();
            match special {
                1 | 2 => v[n - 1] = f32::INFINITY,
                3 => v[0] = f32::NEG_INFINITY,
                _ => {}
            }
            v
        })
}

fn ids(c: &[Candidate]) -> Vec<u32> {
    c.iter().map(|c| c.id).collect()
}

proptest! {
    #[test]
    fn without_ties_torch_topk_is_top_k(logits in distinct_logits(), k in 0usize..40) {
        prop_assert_eq!(ids(&torch_topk(&logits, k)), ids(&top_k(&logits, k)));
    }

    /// With ties (and NaNs, which torch ranks first), only equal logits move: the values are those
    /// of a full sort (NaN first, then descending) position by position, and the ids are distinct.
    #[test]
    fn with_ties_only_equal_logits_move(
        raw in proptest::collection::vec(0u8..8, 1..1500),
        k in 0usize..40,
    ) {
        let logits: Vec<f32> = raw
            .iter()
            .map(|&r| match r {
                6 => f32::NAN,
                7 => -0.0,
                v => f32::from(v) - 2.0,
            })
            .collect();
        let torch = torch_topk(&logits, k);
        let mut sorted = logits.clone();
        sorted.sort_by(|a, b| b.is_nan().cmp(&a.is_nan()).then(b.total_cmp(a)));
        prop_assert_eq!(torch.len(), k.min(logits.len()));
        for (t, &s) in torch.iter().zip(&sorted) {
            prop_assert!((t.logit.is_nan() && s.is_nan()) || t.logit == s);
        }
        let mut seen = ids(&torch);
        seen.sort_unstable();
        seen.dedup();
        prop_assert_eq!(seen.len(), torch.len());
    }
}
